//! ValueSet `compose` semantics: include/exclude of whole systems, listed concepts, filters and
//! imported ValueSets, evaluated either as a whole expansion or as a membership test for one code
//! (what `$validate-code` needs, without expanding a 2-million-code ValueSet).

use std::collections::HashSet;
use std::sync::Arc;

use regex::Regex;
use serde_json::Value as Json;

use super::budget::tick;
use super::versions::{self, Origin, Purpose, Usage, VersionRules};
use crate::error::FhirError;
use crate::store::{CodeSystemVersion, Concept, ConceptRef, Registry, matches_text, matches_words};

/// Filter operators the server implements.
pub const FILTER_OPS: [&str; 11] = [
    "=",
    "is-a",
    "descendent-of",
    "is-not-a",
    "regex",
    "in",
    "not-in",
    "exists",
    "generalizes",
    "child-of",
    "descendent-leaf",
];

/// The filter operators of R4's required value set `filter-operator`: the only ones an R4
/// resource may carry (`CodeSystem.filter.operator`, `ValueSet.compose.include.filter.op`). The
/// server also accepts `child-of` and `descendent-leaf` (R5) in the filters it is sent.
/// <http://hl7.org/fhir/R4/valueset-filter-operator.html>
pub const R4_FILTER_OPS: [&str; 9] = [
    "=",
    "is-a",
    "descendent-of",
    "is-not-a",
    "regex",
    "in",
    "not-in",
    "generalizes",
    "exists",
];

/// How deep ValueSet imports may nest (cycles end here with an error).
const MAX_IMPORT_DEPTH: usize = 16;

/// Longest `regex` filter value, in characters (a longer pattern is a 400).
pub const MAX_REGEX_CHARS: usize = 1_000;

/// One compose filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterRule {
    /// Property.
    pub property: String,
    /// Operator.
    pub op: String,
    /// Value.
    pub value: String,
}

/// One include/exclude rule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rule {
    /// System URL.
    pub system: Option<String>,
    /// System version.
    pub version: Option<String>,
    /// Listed concepts (code, display).
    pub concepts: Vec<(String, Option<String>)>,
    /// Filters (all must hold).
    pub filters: Vec<FilterRule>,
    /// Imported ValueSet canonicals (intersected).
    pub value_sets: Vec<String>,
}

/// A ValueSet's compose.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Compose {
    /// `compose.inactive`: `Some(false)` leaves inactive codes out.
    pub inactive: Option<bool>,
    /// Include rules.
    pub include: Vec<Rule>,
    /// Exclude rules.
    pub exclude: Vec<Rule>,
}

fn str_field(obj: &Json, key: &str) -> Option<String> {
    obj.get(key).and_then(Json::as_str).map(str::to_string)
}

impl Compose {
    /// Reads `compose` from a ValueSet resource. A ValueSet without compose is an error.
    pub fn from_value_set(vs: &Json) -> Result<Self, FhirError> {
        let url = str_field(vs, "url").unwrap_or_else(|| "(inline)".into());
        let Some(compose) = vs.get("compose") else {
            return Err(FhirError::Unprocessable(format!(
                "ValueSet '{url}' has no compose, so it cannot be expanded"
            )));
        };
        let rules = |key: &str| -> Result<Vec<Rule>, FhirError> {
            let Some(items) = compose.get(key) else {
                return Ok(Vec::new());
            };
            let items = items.as_array().ok_or_else(|| {
                FhirError::Invalid(format!("ValueSet '{url}': compose.{key} must be an array"))
            })?;
            items
                .iter()
                .enumerate()
                .map(|(n, i)| rule_from_json(i, &url, key, n))
                .collect()
        };
        Ok(Self {
            inactive: compose.get("inactive").and_then(Json::as_bool),
            include: rules("include")?,
            exclude: rules("exclude")?,
        })
    }
}

fn rule_from_json(item: &Json, url: &str, key: &str, index: usize) -> Result<Rule, FhirError> {
    let concepts = item
        .get("concept")
        .and_then(Json::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|c| Some((str_field(c, "code")?, str_field(c, "display"))))
                .collect()
        })
        .unwrap_or_default();
    let filters = item
        .get("filter")
        .and_then(Json::as_array)
        .map(|a| {
            a.iter()
                .enumerate()
                .map(|(j, f)| {
                    let get = |k: &str| {
                        str_field(f, k).ok_or_else(|| {
                            FhirError::Invalid(format!(
                                "ValueSet '{url}': a compose.{key}.filter has no '{k}'"
                            ))
                        })
                    };
                    let (property, op) = (get("property")?, get("op")?);
                    let Some(value) = f.get("value").map(|v| match v {
                        Json::String(s) => s.clone(),
                        other => other.to_string(),
                    }) else {
                        return Err(FhirError::InvalidValueSet {
                            text: format!(
                                "The system {} filter with property = {property}, op = {op} has no value",
                                str_field(item, "system").unwrap_or_default()
                            ),
                            location: format!("ValueSet.compose.{key}[{index}].filter[{j}]"),
                        });
                    };
                    Ok(FilterRule { property, op, value })
                })
                .collect::<Result<Vec<_>, FhirError>>()
        })
        .transpose()?
        .unwrap_or_default();
    let value_sets = item
        .get("valueSet")
        .and_then(Json::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let rule = Rule {
        system: str_field(item, "system"),
        version: str_field(item, "version"),
        concepts,
        filters,
        value_sets,
    };
    if rule.system.is_none() && rule.value_sets.is_empty() {
        return Err(FhirError::Invalid(format!(
            "ValueSet '{url}': a compose.{key} needs a system or a valueSet"
        )));
    }
    Ok(rule)
}

/// Which concept field a filter reads.
#[derive(Debug, Clone)]
enum Field {
    Code,
    Display,
    Status,
    Inactive,
    Parent,
    /// The `notSelectable` property, under the CodeSystem's own code for it: `true`, `false`,
    /// or no value when a concept does not state it (registers state it for every concept).
    NotSelectable(String),
    Named(String),
}

#[derive(Debug, Clone)]
enum Pred {
    IsA(String),
    DescendentOf(String),
    IsNotA(String),
    Generalizes(String),
    ChildOf(String),
    DescendentLeaf(String),
    Eq(Field, String),
    In(Field, HashSet<String>),
    NotIn(Field, HashSet<String>),
    Regex(Field, Regex),
    Exists(Field, bool),
    /// A hierarchy filter resolved for a whole expansion: the concepts it keeps (or, `negated`,
    /// leaves out), found once by walking the hierarchy down (or, for `generalizes`, up).
    Among {
        set: HashSet<ConceptRef>,
        negated: bool,
        leaves_only: bool,
    },
}

fn field_values(cs: &CodeSystemVersion, c: &Concept, f: &Field) -> Vec<String> {
    match f {
        Field::NotSelectable(own) => {
            let stated: Vec<String> = c
                .properties
                .iter()
                .filter(|(k, _)| super::is_not_selectable(k, own))
                .map(|(_, v)| v.as_text().to_ascii_lowercase())
                .collect();
            if !stated.is_empty() {
                stated
            } else if c.not_selectable {
                vec!["true".into()]
            } else if cs.meta.feeds.iter().any(|f| !f.starts_with("resource:")) {
                // A mapped register decides abstractness for every concept.
                vec!["false".into()]
            } else {
                Vec::new()
            }
        }
        Field::Code => vec![c.code.to_string()],
        Field::Display => c.display.iter().map(|d| d.to_string()).collect(),
        Field::Status => c.status.iter().map(|s| s.to_string()).collect(),
        Field::Inactive => vec![c.inactive.to_string()],
        Field::Parent => c.parents.iter().map(|p| p.to_string()).collect(),
        Field::Named(n) => c.property(n).map(|v| v.as_text().into_owned()).collect(),
    }
}

fn compile_filter(cs: &CodeSystemVersion, f: &FilterRule) -> Result<Pred, FhirError> {
    let hierarchical = matches!(f.property.as_str(), "concept" | "code");
    let abstract_code = super::not_selectable_code(&cs.meta.properties);
    let is_abstract = super::is_not_selectable(&f.property, abstract_code);
    let field = || -> Result<Field, FhirError> {
        Ok(match f.property.as_str() {
            p if super::is_not_selectable(p, abstract_code) => {
                Field::NotSelectable(abstract_code.to_string())
            }
            "concept" | "code" => Field::Code,
            "display" => Field::Display,
            "status" => Field::Status,
            "inactive" => Field::Inactive,
            "parent" => Field::Parent,
            other => {
                let declared = cs.meta.properties.iter().any(|p| p.code == other);
                if !declared && !cs.meta.properties.is_empty() {
                    return Err(FhirError::Unprocessable(format!(
                        "The filter property '{other}' is not known for CodeSystem '{}'",
                        cs.meta.url
                    )));
                }
                Field::Named(other.to_string())
            }
        })
    };
    // Boolean values compare without case (`TRUE` is `true`).
    let v = if is_abstract {
        f.value.to_ascii_lowercase()
    } else {
        f.value.clone()
    };
    let list = || {
        v.split(',')
            .map(|s| s.trim().to_string())
            .collect::<HashSet<_>>()
    };
    Ok(match (f.op.as_str(), hierarchical) {
        ("is-a", true) => Pred::IsA(v),
        ("descendent-of", true) => Pred::DescendentOf(v),
        ("is-not-a", true) => Pred::IsNotA(v),
        ("generalizes", true) => Pred::Generalizes(v),
        ("child-of", true) => Pred::ChildOf(v),
        ("descendent-leaf", true) => Pred::DescendentLeaf(v),
        ("=", _) => Pred::Eq(field()?, v),
        ("in", _) => Pred::In(field()?, list()),
        ("not-in", _) => Pred::NotIn(field()?, list()),
        ("regex", _) => {
            if v.chars().count() > MAX_REGEX_CHARS {
                return Err(FhirError::Invalid(format!(
                    "The regex filter value is longer than {MAX_REGEX_CHARS} characters, the most this server accepts"
                )));
            }
            let re = Regex::new(&format!("^(?:{v})$")).map_err(|e| {
                FhirError::Invalid(format!(
                    "The regex filter value '{v}' is not a valid regular expression: {e}"
                ))
            })?;
            Pred::Regex(field()?, re)
        }
        ("exists", _) => match v.as_str() {
            "true" => Pred::Exists(field()?, true),
            "false" => Pred::Exists(field()?, false),
            _ => {
                return Err(FhirError::Invalid(format!(
                    "The 'exists' filter value must be true or false, not '{v}'"
                )));
            }
        },
        (op, false)
            if [
                "is-a",
                "descendent-of",
                "is-not-a",
                "generalizes",
                "child-of",
                "descendent-leaf",
            ]
            .contains(&op) =>
        {
            return Err(FhirError::NotSupported(format!(
                "The filter operator '{op}' applies to the 'concept' property, not '{}'",
                f.property
            )));
        }
        (op, _) => {
            return Err(FhirError::NotSupported(format!(
                "The filter operator '{op}' is not supported (supported: {})",
                FILTER_OPS.join(", ")
            )));
        }
    })
}

/// The ancestors of a code (not including it), each once, following parents upward.
fn ancestors(cs: &CodeSystemVersion, code: &str) -> Result<HashSet<ConceptRef>, FhirError> {
    let mut out = HashSet::new();
    let mut stack: Vec<String> = cs
        .find(code)
        .map(|r| {
            cs.concept(r)
                .parents
                .iter()
                .map(|p| p.to_string())
                .collect()
        })
        .unwrap_or_default();
    while let Some(c) = stack.pop() {
        tick()?;
        let Some(r) = cs.find(&c) else {
            continue;
        };
        if out.insert(r) {
            stack.extend(cs.concept(r).parents.iter().map(|p| p.to_string()));
        }
    }
    Ok(out)
}

/// A hierarchy filter as the set of concepts it keeps, for testing many concepts: each test is
/// then a set lookup, not a walk up the hierarchy (which made `is-a` over a deep hierarchy
/// quadratic). Other filters stay as they are.
fn resolve_hierarchy(cs: &CodeSystemVersion, p: Pred) -> Result<Pred, FhirError> {
    let below = |a: &str, with_self: bool| -> Result<HashSet<ConceptRef>, FhirError> {
        let mut set = HashSet::new();
        for r in cs.descendants(a) {
            tick()?;
            set.insert(r);
        }
        if with_self {
            set.extend(cs.find(a));
        }
        Ok(set)
    };
    Ok(match p {
        Pred::IsA(a) => Pred::Among {
            set: below(&a, true)?,
            negated: false,
            leaves_only: false,
        },
        Pred::DescendentOf(a) => Pred::Among {
            set: below(&a, false)?,
            negated: false,
            leaves_only: false,
        },
        Pred::IsNotA(a) => Pred::Among {
            set: below(&a, true)?,
            negated: true,
            leaves_only: false,
        },
        Pred::DescendentLeaf(a) => Pred::Among {
            set: below(&a, false)?,
            negated: false,
            leaves_only: true,
        },
        Pred::Generalizes(a) => {
            let mut set = ancestors(cs, &a)?;
            set.extend(cs.find(&a));
            Pred::Among {
                set,
                negated: false,
                leaves_only: false,
            }
        }
        other => other,
    })
}

fn holds(cs: &CodeSystemVersion, r: ConceptRef, c: &Concept, p: &Pred) -> bool {
    match p {
        Pred::Among {
            set,
            negated,
            leaves_only,
        } => set.contains(&r) != *negated && (!leaves_only || cs.children(&c.code).is_empty()),
        Pred::IsA(a) => cs.subsumed_by(&c.code, a),
        Pred::DescendentOf(a) => *c.code != **a && cs.subsumed_by(&c.code, a),
        Pred::IsNotA(a) => !cs.subsumed_by(&c.code, a),
        Pred::Generalizes(a) => cs.subsumed_by(a, &c.code),
        Pred::ChildOf(a) => c.parents.iter().any(|p| **p == **a),
        Pred::DescendentLeaf(a) => {
            *c.code != **a && cs.subsumed_by(&c.code, a) && cs.children(&c.code).is_empty()
        }
        Pred::Eq(f, v) => field_values(cs, c, f).iter().any(|x| x == v),
        Pred::In(f, vs) => field_values(cs, c, f).iter().any(|x| vs.contains(x)),
        Pred::NotIn(f, vs) => !field_values(cs, c, f).iter().any(|x| vs.contains(x)),
        Pred::Regex(f, re) => field_values(cs, c, f).iter().any(|x| re.is_match(x)),
        Pred::Exists(f, want) => field_values(cs, c, f).is_empty() != *want,
    }
}

/// Candidate concepts for a set of predicates: a hierarchy walk or a property index when one applies,
/// else `None` (meaning every concept).
/// With the candidates, the predicate they satisfy exactly when one does (an index lookup gives
/// precisely the concepts the predicate holds for, so it need not be tested again).
fn candidates(cs: &CodeSystemVersion, preds: &[Pred]) -> Option<(Vec<ConceptRef>, Option<usize>)> {
    // Narrow sources first (a hierarchy walk, an exact value); a regular expression or `exists`
    // only when no filter gives one.
    let exact = |p: &Pred| {
        matches!(
            p,
            Pred::Eq(Field::Named(_), _)
                | Pred::In(Field::Named(_), _)
                | Pred::Regex(Field::Code | Field::Named(_), _)
                | Pred::Exists(Field::Named(_), true)
        )
    };
    let narrow = preds.iter().enumerate().find_map(|(i, p)| {
        Some((
            i,
            match p {
                Pred::IsA(a) => {
                    let mut v = cs.descendants(a);
                    v.extend(cs.find(a));
                    v
                }
                Pred::DescendentOf(a) | Pred::DescendentLeaf(a) => cs.descendants(a),
                Pred::Among {
                    set,
                    negated: false,
                    ..
                } => set.iter().copied().collect(),
                Pred::ChildOf(a) => cs.children(a).to_vec(),
                Pred::Eq(Field::Code, v) => cs.find(v).into_iter().collect(),
                Pred::Eq(Field::Named(n), v) => cs.with_property(n, std::slice::from_ref(v)),
                Pred::In(Field::Named(n), vs) => {
                    let mut values: Vec<String> = vs.iter().cloned().collect();
                    values.sort_unstable();
                    cs.with_property(n, &values)
                }
                _ => return None,
            },
        ))
    });
    // A regular expression runs once per distinct value of the property's index, or over the
    // codes alone, rather than on every decoded concept.
    let broad = || {
        preds.iter().enumerate().find_map(|(i, p)| {
            Some((
                i,
                match p {
                    Pred::Regex(Field::Named(n), re) => {
                        cs.with_property_where(n, &|v| re.is_match(v))
                    }
                    Pred::Regex(Field::Code, re) => cs.codes_where(&|c| re.is_match(c)),
                    Pred::Exists(Field::Named(n), true) => cs.with_property_where(n, &|_| true),
                    _ => return None,
                },
            ))
        })
    };
    let (i, mut out) = narrow.or_else(broad)?;
    out.sort_unstable();
    out.dedup();
    Some((out, exact(&preds[i]).then_some(i)))
}

/// A membership hit: the CodeSystem version, the concept, and the display the ValueSet gives it.
pub type Hit = (Arc<CodeSystemVersion>, ConceptRef, Option<String>);

/// A code found in an expansion or membership test.
#[derive(Debug, Clone)]
pub struct Member {
    /// Index into [`Expansion::systems`].
    pub system: usize,
    /// The concept.
    pub concept: ConceptRef,
    /// Display given by the ValueSet's concept list, if any.
    pub display: Option<String>,
}

/// The (unpaged) result of expanding a compose.
#[derive(Debug, Default)]
pub struct Expansion {
    /// CodeSystem versions used.
    pub systems: Vec<Arc<CodeSystemVersion>>,
    /// Members in expansion order.
    pub members: Vec<Member>,
}

impl Expansion {
    fn system_index(&mut self, cs: &Arc<CodeSystemVersion>) -> usize {
        if let Some(i) = self.systems.iter().position(|s| Arc::ptr_eq(s, cs)) {
            return i;
        }
        self.systems.push(cs.clone());
        self.systems.len() - 1
    }

    /// The concept of a member.
    pub fn concept(&self, m: &Member) -> std::borrow::Cow<'_, Concept> {
        self.systems[m.system].concept(m.concept)
    }

    /// The code of a member (without decoding its concept).
    pub fn code(&self, m: &Member) -> &str {
        self.systems[m.system].code(m.concept)
    }
}

/// What evaluation may use: the registry, and per-request options.
pub struct Evaluator<'a> {
    /// Where CodeSystems and ValueSets are found.
    pub registry: &'a Registry,
    /// Leave inactive codes out.
    pub active_only: bool,
    /// Leave abstract (`notSelectable`) codes out (`$expand`'s `excludeNotForUI`).
    pub exclude_not_for_ui: bool,
    /// The request's version rules (`system-version`, `force-system-version`, …).
    pub versions: &'a VersionRules,
    /// Which of those rules were used.
    pub version_usage: Usage,
    /// The CodeSystem version every include of its system uses (`$validate-code` decides it,
    /// coding by coding, from the coding's version and the ValueSet's).
    pub pinned: std::cell::RefCell<Option<Arc<CodeSystemVersion>>>,
    /// Resources contained in the ValueSet being evaluated (`#id` references).
    pub extra_value_sets: &'a [Json],
    /// ValueSets imported while evaluating (for `used-valueset` and status warnings).
    pub imported: std::cell::RefCell<Vec<Json>>,
    /// The ValueSets being evaluated, outermost first (the one asked for, then each import
    /// being followed): a ValueSet met again is a circular import.
    pub chain: std::cell::RefCell<Vec<String>>,
}

/// How a ValueSet is named in the import chain: `url|version`, its url, or the canonical it was
/// imported by.
pub fn chain_name(canonical: &str, vs: &Json) -> String {
    match (
        vs.get("url").and_then(Json::as_str),
        vs.get("version").and_then(Json::as_str),
    ) {
        (Some(u), Some(v)) => format!("{u}|{v}"),
        (Some(u), None) => u.to_string(),
        _ => canonical.to_string(),
    }
}

impl Evaluator<'_> {
    /// Follows an import of `vs`: a ValueSet already in the chain is a circular import.
    fn enter(&self, canonical: &str, vs: &Json) -> Result<(), FhirError> {
        let name = chain_name(canonical, vs);
        let url = name.split('|').next().unwrap_or(&name).to_string();
        let mut chain = self.chain.borrow_mut();
        if chain.contains(&name) {
            return Err(FhirError::ValueSetImports(format!(
                "Circular reference detected in the ValueSet '{url}': it imports itself through [{}]",
                chain.join(", ")
            )));
        }
        chain.push(name);
        Ok(())
    }

    fn leave(&self) {
        self.chain.borrow_mut().pop();
    }

    /// Follows every import of a compose, to any depth, before anything is evaluated (as the
    /// reference server prepares a ValueSet): a circular or too deep import is an error even
    /// where evaluation would stop early. Imports that cannot be found are left to evaluation.
    pub fn check_imports(&self, compose: &Compose) -> Result<(), FhirError> {
        self.check_imports_depth(compose, 0)
    }

    fn check_imports_depth(&self, compose: &Compose, depth: usize) -> Result<(), FhirError> {
        if depth > MAX_IMPORT_DEPTH {
            return Err(self.too_deep());
        }
        for rule in compose.include.iter().chain(&compose.exclude) {
            for canonical in &rule.value_sets {
                tick()?;
                let Ok(vs) = self.find_value_set(canonical) else {
                    continue;
                };
                let Ok(inner) = Compose::from_value_set(&vs) else {
                    continue;
                };
                self.enter(canonical, &vs)?;
                let checked = self.check_imports_depth(&inner, depth + 1);
                self.leave();
                checked?;
            }
        }
        Ok(())
    }

    fn too_deep(&self) -> FhirError {
        let chain = self.chain.borrow();
        FhirError::ValueSetImports(format!(
            "The imports of the ValueSet '{}' nest more than {MAX_IMPORT_DEPTH} deep: [{}]",
            chain
                .first()
                .map(String::as_str)
                .unwrap_or("(unidentified)"),
            chain.join(", ")
        ))
    }

    /// Resolves the CodeSystem version an include of `url` stating `version` uses, after the
    /// request's version rules; a version `check-system-version` does not allow is an error.
    pub fn code_system(
        &self,
        url: &str,
        version: Option<&str>,
    ) -> Result<Arc<CodeSystemVersion>, FhirError> {
        if let Some(cs) = self
            .pinned
            .borrow()
            .as_ref()
            .filter(|cs| cs.meta.url == url)
        {
            return Ok(cs.clone());
        }
        let spec = self.versions.for_include(url, version);
        let cs = versions::find_code_system(self.registry, url, spec.pattern.as_deref())
            .ok_or_else(|| {
                FhirError::NotFound(versions::unknown_version_text(
                    self.registry,
                    url,
                    spec.pattern.as_deref(),
                    Purpose::Expand,
                ))
            })?;
        if let Some(p) = &spec.pattern {
            self.version_usage.rule(spec.origin, url, p);
        }
        if let Some(text) = self.versions.check(url, &cs.version) {
            return Err(FhirError::VersionNotAllowed(text));
        }
        Ok(cs)
    }

    /// Resolves a ValueSet canonical (`url` or `url|version`).
    pub fn value_set(&self, canonical: &str) -> Result<Json, FhirError> {
        let found = self.find_value_set(canonical)?;
        let mut imported = self.imported.borrow_mut();
        if !canonical.starts_with('#') && !imported.contains(&found) {
            imported.push(found.clone());
        }
        Ok(found)
    }

    fn find_value_set(&self, canonical: &str) -> Result<Json, FhirError> {
        if let Some(id) = canonical.strip_prefix('#') {
            return self
                .extra_value_sets
                .iter()
                .find(|r| {
                    r.get("resourceType").and_then(Json::as_str) == Some("ValueSet")
                        && r.get("id").and_then(Json::as_str) == Some(id)
                })
                .cloned()
                .ok_or_else(|| {
                    FhirError::NotFound(format!(
                        "A definition for the value Set '{canonical}' could not be found"
                    ))
                });
        }
        let (url, version) = match canonical.split_once('|') {
            Some((u, v)) => (u, Some(v)),
            None => (canonical, None),
        };
        let defaulted = version
            .is_none()
            .then(|| self.versions.value_set_default(url))
            .flatten();
        if let Some(v) = defaulted {
            self.version_usage.rule(Origin::ValueSetDefault, url, v);
        }
        let version = version.or(defaulted);
        if let Some(vs) = self.extra_value_sets.iter().find(|v| {
            v.get("url").and_then(Json::as_str) == Some(url)
                && version.is_none_or(|ver| v.get("version").and_then(Json::as_str) == Some(ver))
        }) {
            return Ok(vs.clone());
        }
        self.registry
            .value_set(url, version)
            .map(|v| v.resource.clone())
            .ok_or_else(|| match (defaulted, version) {
                (Some(v), _) => {
                    self.version_usage.missing_value_set(format!("{url}|{v}"));
                    FhirError::NotFound(format!(
                        "Unable to find included value set '{url}' version '{v}'"
                    ))
                }
                _ => {
                    self.version_usage.missing_value_set(canonical.to_string());
                    FhirError::NotFound(format!(
                        "A definition for the value Set '{canonical}' could not be found"
                    ))
                }
            })
    }

    /// Expands a compose fully (no paging); `text` pushes a word-prefix filter down to the text
    /// index.
    pub fn expand(
        &self,
        compose: &Compose,
        text: Option<&[String]>,
    ) -> Result<Expansion, FhirError> {
        self.expand_depth(compose, text, 0)
    }

    /// One page of the expansion: `(members from offset on, at most count of them; total)`.
    /// A compose that is one whole CodeSystem (no filters, text, imports, excludes or inactive
    /// rule) is paged without walking the codes before the page; any other is expanded whole.
    pub fn expand_page(
        &self,
        compose: &Compose,
        text: Option<&[String]>,
        offset: usize,
        count: Option<usize>,
    ) -> Result<(Expansion, usize), FhirError> {
        let whole_system = match compose.include.as_slice() {
            [rule] => rule.system.as_deref().filter(|_| {
                compose.exclude.is_empty()
                    && text.is_none()
                    && rule.concepts.is_empty()
                    && rule.filters.is_empty()
                    && rule.value_sets.is_empty()
                    && !self.active_only
                    && !self.exclude_not_for_ui
                    && compose.inactive != Some(false)
            }),
            _ => None,
        };
        // A CodeSystem with its own definition order is paged in that order, from the whole
        // expansion; one in code order is paged without walking the codes before the page.
        let whole = match whole_system {
            Some(system) => {
                let cs = self.code_system(system, compose.include[0].version.as_deref())?;
                cs.meta.definition_rank.is_empty().then_some(cs)
            }
            None => None,
        };
        let Some(cs) = whole else {
            let mut all = self.expand(compose, text)?;
            let total = all.members.len();
            let start = offset.min(total);
            let end = count.map_or(total, |c| start.saturating_add(c).min(total));
            all.members.truncate(end);
            all.members.drain(..start);
            return Ok((all, total));
        };
        let mut out = Expansion::default();
        let s = out.system_index(&cs);
        let total = cs.len();
        let end = count.map_or(total, |c| offset.saturating_add(c).min(total));
        out.members = (offset.min(total)..end)
            .filter_map(|i| cs.nth(i))
            .map(|concept| Member {
                system: s,
                concept,
                display: None,
            })
            .collect();
        Ok((out, total))
    }

    fn expand_depth(
        &self,
        compose: &Compose,
        text: Option<&[String]>,
        depth: usize,
    ) -> Result<Expansion, FhirError> {
        if depth > MAX_IMPORT_DEPTH {
            return Err(self.too_deep());
        }
        let active_only = self.active_only || compose.inactive == Some(false);
        let mut out = Expansion::default();
        let single = compose.include.len() == 1 && compose.exclude.is_empty();
        let mut seen: HashSet<(usize, ConceptRef)> = HashSet::new();
        // (system, version when the exclude names one, code): an exclude of one version of a
        // system leaves the other versions' codes in.
        let mut excluded: HashSet<(String, Option<String>, String)> = HashSet::new();
        for rule in &compose.exclude {
            let part = self.eval_rule(rule, None, depth)?;
            for m in &part.members {
                tick()?;
                let cs = &part.systems[m.system];
                excluded.insert((
                    cs.meta.url.clone(),
                    rule.version.is_some().then(|| cs.version.clone()),
                    part.code(m).to_string(),
                ));
            }
        }
        for rule in &compose.include {
            let part = self.eval_rule(rule, text, depth)?;
            for cs in &part.systems {
                out.system_index(cs);
            }
            for m in part.members {
                tick()?;
                let cs = &part.systems[m.system];
                if active_only || self.exclude_not_for_ui {
                    let c = cs.concept(m.concept);
                    if (active_only && c.inactive) || (self.exclude_not_for_ui && c.not_selectable)
                    {
                        continue;
                    }
                }
                if !excluded.is_empty() {
                    let (url, code) = (cs.meta.url.clone(), cs.code(m.concept).to_string());
                    if excluded.contains(&(url.clone(), None, code.clone()))
                        || excluded.contains(&(url, Some(cs.version.clone()), code))
                    {
                        continue;
                    }
                }
                let system = out.system_index(cs);
                if !single && !seen.insert((system, m.concept)) {
                    continue;
                }
                out.members.push(Member {
                    system,
                    concept: m.concept,
                    display: m.display,
                });
            }
        }
        Ok(out)
    }

    fn eval_rule(
        &self,
        rule: &Rule,
        text: Option<&[String]>,
        depth: usize,
    ) -> Result<Expansion, FhirError> {
        let mut out = Expansion::default();
        let mut imported: Vec<Expansion> = Vec::new();
        for canonical in &rule.value_sets {
            let vs = self.value_set(canonical)?;
            let compose = Compose::from_value_set(&vs)?;
            self.enter(canonical, &vs)?;
            let part = self.expand_depth(&compose, text, depth + 1);
            self.leave();
            imported.push(part?);
        }
        // Each import's members by (system, code), so that testing a concept against the
        // imports is a lookup, not a scan.
        let mut import_sets: Vec<HashSet<(&str, &str)>> = Vec::with_capacity(imported.len());
        for e in &imported {
            let mut set = HashSet::with_capacity(e.members.len());
            for m in &e.members {
                tick()?;
                set.insert((e.systems[m.system].meta.url.as_str(), e.code(m)));
            }
            import_sets.push(set);
        }
        let in_imports =
            |url: &str, code: &str| import_sets.iter().all(|set| set.contains(&(url, code)));
        let Some(system) = &rule.system else {
            // Only imports: their intersection, in the first import's order.
            let Some(first) = imported.first() else {
                return Ok(out);
            };
            for m in &first.members {
                tick()?;
                let cs = &first.systems[m.system];
                if in_imports(&cs.meta.url, first.code(m)) {
                    let s = out.system_index(cs);
                    out.members.push(Member {
                        system: s,
                        concept: m.concept,
                        display: m.display.clone(),
                    });
                }
            }
            return Ok(out);
        };
        let cs = self.code_system(system, rule.version.as_deref())?;
        let preds = rule
            .filters
            .iter()
            .map(|f| compile_filter(&cs, f).and_then(|p| resolve_hierarchy(&cs, p)))
            .collect::<Result<Vec<_>, _>>()?;
        let s = out.system_index(&cs);
        // Everything but the text filter, then with it.
        let keep_found = |r: ConceptRef, c: &Concept| {
            preds.iter().all(|p| holds(&cs, r, c, p))
                && (imported.is_empty() || in_imports(&cs.meta.url, &c.code))
        };
        let keep = |r: ConceptRef, c: &Concept| {
            keep_found(r, c) && text.is_none_or(|w| matches_words(c, w))
        };
        if !rule.concepts.is_empty() {
            for (code, display) in &rule.concepts {
                tick()?;
                if let Some(r) = cs.find(code)
                    && keep(r, &cs.concept(r))
                {
                    out.members.push(Member {
                        system: s,
                        concept: r,
                        display: display.clone(),
                    });
                }
            }
            return Ok(out);
        }
        // Candidates from the text index already match the text filter: it is not tested again.
        let mut satisfied = None;
        let (refs, text_tested): (Box<dyn Iterator<Item = ConceptRef>>, bool) =
            match (candidates(&cs, &preds), text) {
                (Some((c, exact)), _) => {
                    satisfied = exact;
                    (Box::new(c.into_iter()), false)
                }
                (None, Some(words)) => (Box::new(cs.text_search(words).into_iter()), true),
                (None, None) => (Box::new(cs.refs().collect::<Vec<_>>().into_iter()), false),
            };
        // The filters the candidates do not already satisfy.
        let rest: Vec<&Pred> = preds
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != satisfied)
            .map(|(_, p)| p)
            .collect();
        let keep_rest = |r: ConceptRef, c: &Concept| {
            rest.iter().all(|p| holds(&cs, r, c, p))
                && (imported.is_empty() || in_imports(&cs.meta.url, &c.code))
        };
        // The text test reads code and display only; the concept is decoded only when a filter
        // or an import has to look at it.
        let codes_only = rest.is_empty() && imported.is_empty();
        for r in refs {
            tick()?;
            let kept = (text_tested
                || text.is_none_or(|w| matches_text(cs.code(r), cs.display(r), w)))
                && (codes_only || keep_rest(r, &cs.concept(r)));
            if kept {
                out.members.push(Member {
                    system: s,
                    concept: r,
                    display: None,
                });
            }
        }
        // In the CodeSystem's own order (the reference lists concepts as they are defined).
        if !cs.meta.definition_rank.is_empty() {
            out.members.sort_by_key(|m| cs.definition_rank(m.concept));
        }
        Ok(out)
    }

    /// Tests whether `system#code` is in the compose, without expanding it. Returns the member
    /// (with the CodeSystem version it was found in) or `None`.
    pub fn contains(
        &self,
        compose: &Compose,
        system: &str,
        code: &str,
    ) -> Result<Option<Hit>, FhirError> {
        self.contains_depth(compose, system, code, 0)
    }

    fn contains_depth(
        &self,
        compose: &Compose,
        system: &str,
        code: &str,
        depth: usize,
    ) -> Result<Option<Hit>, FhirError> {
        if depth > MAX_IMPORT_DEPTH {
            return Err(self.too_deep());
        }
        for rule in &compose.exclude {
            if self.rule_contains(rule, system, code, depth)?.is_some() {
                return Ok(None);
            }
        }
        for rule in &compose.include {
            if let Some(hit) = self.rule_contains(rule, system, code, depth)? {
                let inactive = hit.0.concept(hit.1).inactive;
                if inactive && (self.active_only || compose.inactive == Some(false)) {
                    continue;
                }
                return Ok(Some(hit));
            }
        }
        Ok(None)
    }

    fn rule_contains(
        &self,
        rule: &Rule,
        system: &str,
        code: &str,
        depth: usize,
    ) -> Result<Option<Hit>, FhirError> {
        let mut imported_hit = None;
        for canonical in &rule.value_sets {
            let vs = self.value_set(canonical)?;
            let compose = Compose::from_value_set(&vs)?;
            self.enter(canonical, &vs)?;
            let found = self.contains_depth(&compose, system, code, depth + 1);
            self.leave();
            match found? {
                Some(hit) => imported_hit = Some(hit),
                None => return Ok(None),
            }
        }
        let Some(rule_system) = &rule.system else {
            return Ok(imported_hit);
        };
        if rule_system != system {
            return Ok(None);
        }
        // With the version decided for the coding, an include (or exclude) of another version
        // of the system does not apply to it.
        if let Some(pinned) = self.pinned.borrow().as_ref()
            && pinned.meta.url == *rule_system
            && let Some(p) = self
                .versions
                .for_include(rule_system, rule.version.as_deref())
                .pattern
            && p != pinned.version
            && !versions::matches(&p, &pinned.version)
        {
            return Ok(None);
        }
        let cs = self.code_system(rule_system, rule.version.as_deref())?;
        let Some(r) = cs.find(code) else {
            return Ok(None);
        };
        let c = cs.concept(r);
        let mut display = None;
        if !rule.concepts.is_empty() {
            match rule.concepts.iter().find(|(k, _)| **k == *c.code) {
                Some((_, d)) => display = d.clone(),
                None => return Ok(None),
            }
        }
        for f in &rule.filters {
            if !holds(&cs, r, &c, &compile_filter(&cs, f)?) {
                return Ok(None);
            }
        }
        Ok(Some((cs, r, display)))
    }
}
