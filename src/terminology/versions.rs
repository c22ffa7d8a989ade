//! Which version of a CodeSystem or ValueSet an operation uses, shared by `$expand` and
//! `$validate-code`:
//!
//! * version patterns: `1.x.x`, `1.0.x`, `1.0.*` match every version equal piece by piece where
//!   the pattern does not say `x` or `*`; the latest matching version is used. A date-like
//!   prefix (`2020`, `2020-01`) also matches a release date (`2020-01-01`);
//! * the request parameters that steer the choice, each `url|version`:
//!   `force-system-version` replaces any version a ValueSet include gives, `system-version` is
//!   the default where none is given, and `check-system-version` makes a version that does not
//!   match it an error (and is the default where none is given and no `system-version` is);
//!   `default-valueset-version` is the version of a ValueSet imported without one;
//! * the messages clients expect when a version is missing, differs or is not allowed.
//!
//! What is not here: compose evaluation itself ([`super::compose`]) and the shape of the
//! operations' answers.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_json::{Value as Json, json};

use super::compose::Compose;
use crate::error::FhirError;
use crate::fhir::params::OperationParams;
use crate::store::{CodeSystemVersion, Registry};

/// Where the version used for a ValueSet include came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// `force-system-version`.
    Forced,
    /// The include's own `version` (or none: the latest).
    Include,
    /// `system-version`.
    Default,
    /// `check-system-version`, used as the default.
    Check,
    /// `default-valueset-version` (for imported ValueSets).
    ValueSetDefault,
}

impl Origin {
    /// The request parameter this origin stands for, if any.
    pub fn parameter(self) -> Option<&'static str> {
        match self {
            Self::Forced => Some("force-system-version"),
            Self::Include => None,
            Self::Default => Some("system-version"),
            Self::Check => Some("check-system-version"),
            Self::ValueSetDefault => Some("default-valueset-version"),
        }
    }
}

/// The extensions by which a ValueSet's `compose` states default expansion parameters: the
/// core one and the FHIR tools IG's earlier one, both read by the reference server.
pub const EXPANSION_PARAMETER_EXTENSIONS: [&str; 2] = [
    "http://hl7.org/fhir/StructureDefinition/valueset-expansion-parameter",
    "http://hl7.org/fhir/tools/StructureDefinition/valueset-expansion-parameter",
];

/// The `(name, value)` of each expansion parameter a ValueSet's `compose.extension` states, in
/// order; a value is read from its `value[x]` whatever its primitive type.
pub fn compose_expansion_parameters(vs: &Json) -> Vec<(&str, &str)> {
    let stated = vs.get("compose").and_then(|c| c.get("extension"));
    super::extensions_with_urls(stated, &EXPANSION_PARAMETER_EXTENSIONS)
        .filter_map(|e| {
            let parts = e.get("extension")?.as_array()?;
            let part = |name: &str| {
                parts
                    .iter()
                    .find(|p| p.get("url").and_then(Json::as_str) == Some(name))?
                    .as_object()?
                    .iter()
                    .find(|(k, _)| k.starts_with("value"))?
                    .1
                    .as_str()
            };
            Some((part("name")?, part("value")?))
        })
        .collect()
}

/// The version-steering parameters of one request, each as `(url, version)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VersionRules {
    /// `system-version`: the default where none is given.
    pub defaults: Vec<(String, String)>,
    /// `force-system-version`: replaces any version a ValueSet gives.
    pub forced: Vec<(String, String)>,
    /// `check-system-version`: the version used must match.
    pub checks: Vec<(String, String)>,
    /// `default-valueset-version`: the version of a ValueSet imported without one.
    pub value_set_defaults: Vec<(String, String)>,
}

/// The version a ValueSet include asks for, after the request's rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncludeVersion {
    /// The version (or pattern) to use; `None` is the latest.
    pub pattern: Option<String>,
    /// Where it came from.
    pub origin: Origin,
    /// The version the include itself states.
    pub stated: Option<String>,
}

fn lookup<'a>(list: &'a [(String, String)], url: &str) -> Option<&'a str> {
    list.iter().find(|(u, _)| u == url).map(|(_, v)| v.as_str())
}

impl VersionRules {
    /// Reads `system-version`, `force-system-version`, `check-system-version` and
    /// `default-valueset-version`.
    pub fn from_params(p: &OperationParams) -> Result<Self, FhirError> {
        let read = |name: &str| -> Result<Vec<(String, String)>, FhirError> {
            p.texts(name)
                .into_iter()
                .map(|sv| {
                    sv.split_once('|')
                        .map(|(u, v)| (u.to_string(), v.to_string()))
                        .ok_or_else(|| {
                            FhirError::Invalid(format!(
                                "The parameter '{name}' value '{sv}' must be a canonical url|version"
                            ))
                        })
                })
                .collect()
        };
        Ok(Self {
            defaults: read("system-version")?,
            forced: read("force-system-version")?,
            checks: read("check-system-version")?,
            value_set_defaults: read("default-valueset-version")?,
        })
    }

    /// These rules with the version-steering parameters a ValueSet states for itself
    /// (`compose.extension` of [`EXPANSION_PARAMETER_EXTENSIONS`], each with a `name` and a
    /// `value` part), as the reference server reads them (FHIRsmith `tx/workers/validate.js`
    /// and `expand.js`, `seeValueSet`; `tx/params.js`, `seeParameter`). They add to the
    /// request's rules and come after them, so that a rule the request gives for the same
    /// CodeSystem wins.
    pub fn with_value_set(&self, vs: &Json) -> Result<Self, FhirError> {
        let mut out = self.clone();
        for (name, value) in compose_expansion_parameters(vs) {
            let list = match name {
                "system-version" => &mut out.defaults,
                "force-system-version" => &mut out.forced,
                "check-system-version" => &mut out.checks,
                "default-valueset-version" => &mut out.value_set_defaults,
                _ => continue,
            };
            let (u, v) = value.split_once('|').ok_or_else(|| {
                FhirError::Invalid(format!(
                    "The ValueSet's expansion parameter '{name}' value '{value}' must be a canonical url|version"
                ))
            })?;
            list.push((u.to_string(), v.to_string()));
        }
        Ok(out)
    }

    /// The version an include of `url` that states `stated` uses: forced, else stated, else the
    /// `system-version` default, else the `check-system-version` pattern, else the latest.
    pub fn for_include(&self, url: &str, stated: Option<&str>) -> IncludeVersion {
        let (pattern, origin) = if let Some(v) = lookup(&self.forced, url) {
            (Some(v), Origin::Forced)
        } else if let Some(v) = stated {
            (Some(v), Origin::Include)
        } else if let Some(v) = lookup(&self.defaults, url) {
            (Some(v), Origin::Default)
        } else if let Some(v) = lookup(&self.checks, url) {
            (Some(v), Origin::Check)
        } else {
            (None, Origin::Include)
        };
        IncludeVersion {
            pattern: pattern.map(str::to_string),
            origin,
            stated: stated.map(str::to_string),
        }
    }

    /// The version a code given with `stated` (outside any ValueSet include) is checked against.
    pub fn for_coding(&self, url: &str, stated: Option<&str>) -> IncludeVersion {
        self.for_include(url, stated)
    }

    /// The version of an imported ValueSet given without one.
    pub fn value_set_default(&self, url: &str) -> Option<&str> {
        lookup(&self.value_set_defaults, url)
    }

    /// The error text when `version` of `url` is not allowed by `check-system-version`.
    pub fn check(&self, url: &str, version: &str) -> Option<String> {
        let required = lookup(&self.checks, url)?;
        (!matches(required, version)).then(|| {
            format!(
                "The version '{version}' is not allowed for system '{url}': required to be '{required}' by a version-check parameter"
            )
        })
    }
}

fn is_wild(piece: &str) -> bool {
    matches!(piece, "x" | "X" | "*")
}

/// Whether `version` is what `pattern` asks for: equal, equal piece by piece where the pattern
/// is not a wildcard (`1.0.x`, `1.x.x`, `1.*`), or a release date the pattern is a prefix of.
pub fn matches(pattern: &str, version: &str) -> bool {
    if pattern == version {
        return true;
    }
    let p: Vec<&str> = pattern.split('.').collect();
    if p.iter().any(|x| is_wild(x)) {
        let v: Vec<&str> = version.split('.').collect();
        return p.iter().enumerate().all(|(i, want)| match v.get(i) {
            Some(got) => is_wild(want) || want == got,
            None => is_wild(want),
        }) && (v.len() <= p.len() || p.last().is_some_and(|x| is_wild(x)));
    }
    version
        .strip_prefix(pattern)
        .is_some_and(|rest| rest.starts_with('-'))
}

/// The latest version of a CodeSystem that `pattern` matches (the latest of all without one).
pub fn find_code_system(
    registry: &Registry,
    url: &str,
    pattern: Option<&str>,
) -> Option<Arc<CodeSystemVersion>> {
    let list = registry.code_system_versions(url);
    match pattern {
        None => list.last().cloned(),
        Some(p) => list
            .iter()
            .rev()
            .find(|c| c.version == p)
            .or_else(|| list.iter().rev().find(|c| matches(p, &c.version)))
            .cloned(),
    }
}

/// Why a CodeSystem was being looked for (ends the not-found message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// `$validate-code`.
    Validate,
    /// `$expand`.
    Expand,
}

/// "A definition for CodeSystem '…' version '…' could not be found, so …. Valid versions: …"
pub fn unknown_version_text(
    registry: &Registry,
    url: &str,
    version: Option<&str>,
    purpose: Purpose,
) -> String {
    let so = match purpose {
        Purpose::Validate => "the code cannot be validated",
        Purpose::Expand => "the value set cannot be expanded",
    };
    let known: Vec<&str> = registry
        .code_system_versions(url)
        .iter()
        .map(|c| c.version.as_str())
        .collect();
    match version {
        Some(v) if !known.is_empty() => format!(
            "A definition for CodeSystem '{url}' version '{v}' could not be found, so {so}. Valid versions: {}",
            or_list(&known)
        ),
        Some(v) => format!(
            "A definition for CodeSystem '{url}' version '{v}' could not be found, so {so}. No versions of this code system are known"
        ),
        None => format!("A definition for CodeSystem '{url}' could not be found, so {so}"),
    }
}

/// `a`, `a or b`, `a, b or c`.
fn or_list(items: &[&str]) -> String {
    match items.split_last() {
        None => String::new(),
        Some((last, [])) => last.to_string(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

/// Which version rules an evaluation used, for an expansion's parameters.
#[derive(Debug, Default)]
pub struct Usage {
    rules: RefCell<Vec<(Origin, String, String)>>,
    missing_value_set: RefCell<Option<String>>,
}

impl Usage {
    /// Records that a rule decided the version of `url` (`pattern` is what it said).
    pub fn rule(&self, origin: Origin, url: &str, pattern: &str) {
        let mut rules = self.rules.borrow_mut();
        if !rules
            .iter()
            .any(|(o, u, p)| *o == origin && u == url && p == pattern)
        {
            rules.push((origin, url.to_string(), pattern.to_string()));
        }
    }

    /// Records an imported ValueSet (`url` or `url|version`) that could not be found.
    pub fn missing_value_set(&self, canonical: String) {
        *self.missing_value_set.borrow_mut() = Some(canonical);
    }

    /// The imported ValueSet that could not be found, if any.
    pub fn missing(&self) -> Option<String> {
        self.missing_value_set.borrow().clone()
    }

    /// The expansion parameters naming the rules that were used (`force-system-version`,
    /// `system-version`, `check-system-version`, `default-valueset-version`), as `valueUri`.
    pub fn expansion_parameters(&self) -> Vec<Json> {
        self.rules
            .borrow()
            .iter()
            .filter_map(|(origin, url, pattern)| {
                Some(json!({ "name": origin.parameter()?, "valueUri": format!("{url}|{pattern}") }))
            })
            .collect()
    }
}

/// Systems a compose includes with several different stated versions (their expansion
/// entries say which version each code comes from, even when the versions resolve alike).
pub fn systems_with_several_versions(compose: &Compose) -> HashSet<&str> {
    let mut first: HashMap<&str, Option<&str>> = HashMap::new();
    let mut out = HashSet::new();
    for r in &compose.include {
        if let Some(system) = r.system.as_deref() {
            let v = r.version.as_deref();
            if *first.entry(system).or_insert(v) != v {
                out.insert(system);
            }
        }
    }
    out
}

/// The versions of `url` a compose's includes resolve to (after the request's rules), newest
/// first, each once. With more than one, a coding without a version is checked against the
/// newest of them whose includes hold the code (the newest when none does), as the reference
/// server picks it (FHIRsmith `tx/workers/validate.js`: includes sorted by descending
/// version, `pickApplicableVersion`).
pub fn included_versions(
    registry: &Registry,
    rules: &VersionRules,
    compose: &Compose,
    url: &str,
) -> Vec<Arc<CodeSystemVersion>> {
    let mut found: Vec<Arc<CodeSystemVersion>> = compose
        .include
        .iter()
        .filter(|r| r.system.as_deref() == Some(url))
        .filter_map(|r| {
            let spec = rules.for_include(url, r.version.as_deref());
            find_code_system(registry, url, spec.pattern.as_deref())
        })
        .collect();
    found.sort_by(|a, b| compare_versions(&b.version, &a.version));
    found.dedup_by(|a, b| a.version == b.version);
    found
}

/// Orders two versions: piece by piece (`.`-separated), numerically where both pieces are
/// numbers (`1.10` after `1.9`), else as text.
pub fn compare_versions(a: &str, b: &str) -> std::cmp::Ordering {
    let mut x = a.split(['.', '-']);
    let mut y = b.split(['.', '-']);
    loop {
        match (x.next(), y.next()) {
            (None, None) => return std::cmp::Ordering::Equal,
            (None, Some(_)) => return std::cmp::Ordering::Less,
            (Some(_), None) => return std::cmp::Ordering::Greater,
            (Some(p), Some(q)) => {
                let o = match (p.parse::<u64>(), q.parse::<u64>()) {
                    (Ok(m), Ok(n)) => m.cmp(&n),
                    _ => p.cmp(q),
                };
                if o != std::cmp::Ordering::Equal {
                    return o;
                }
            }
        }
    }
}

/// A problem with versions found by [`reconcile`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// A version that does not exist (error, `not-found`, at `system`).
    Unknown(String),
    /// The coding's version differs from the ValueSet's (`vs-invalid` at `version`; an error
    /// unless the include gives no version at all).
    Mismatch {
        /// Whether it fails the validation.
        error: bool,
        /// The message.
        text: String,
    },
    /// The version used is not allowed by `check-system-version` (error, `version-error`).
    NotAllowed(String),
}

/// How a coding's version and a ValueSet's version of its system were reconciled.
#[derive(Debug, Default)]
pub struct Reconciled {
    /// The CodeSystem version the code is checked against.
    pub used: Option<Arc<CodeSystemVersion>>,
    /// Whether ValueSet membership can be tested (not when the include's version is unknown).
    pub testable: bool,
    /// Whether the ValueSet names the system in an include of its own (so membership should be
    /// tested in [`Reconciled::used`]).
    pub pin: bool,
    /// Problems found.
    pub problems: Vec<Problem>,
    /// `url|version` that could not be found (`x-caused-by-unknown-system`).
    pub unknown: Option<String>,
}

/// Decides which version of `url` a `$validate-code` checks a code against, given the version
/// the coding states, the ValueSet's includes of that system (`compose`, none for
/// `CodeSystem/$validate-code`) and the request's rules; reports versions that are missing,
/// differ or are not allowed. `url` must be a known CodeSystem. (A coding without a version,
/// against a ValueSet that includes several versions of its system, is then settled by
/// membership: see [`included_versions`].)
pub fn reconcile(
    registry: &Registry,
    rules: &VersionRules,
    compose: Option<&Compose>,
    url: &str,
    stated: Option<&str>,
) -> Reconciled {
    let mut out = Reconciled {
        testable: true,
        ..Reconciled::default()
    };
    let specs: Vec<IncludeVersion> = compose
        .map(|c| {
            c.include
                .iter()
                .filter(|r| r.system.as_deref() == Some(url))
                .map(|r| rules.for_include(url, r.version.as_deref()))
                .collect()
        })
        .unwrap_or_default();
    let unknown = |out: &mut Reconciled, v: &str| {
        out.problems.push(Problem::Unknown(unknown_version_text(
            registry,
            url,
            Some(v),
            Purpose::Validate,
        )));
        out.unknown.get_or_insert_with(|| format!("{url}|{v}"));
    };
    let coding_side = |out: &mut Reconciled| {
        let spec = rules.for_coding(url, stated);
        match find_code_system(registry, url, spec.pattern.as_deref()) {
            Some(cs) => Some(cs),
            None => {
                if let Some(p) = &spec.pattern {
                    unknown(out, p);
                }
                None
            }
        }
    };
    let chosen = specs
        .iter()
        .find(|s| match (&s.pattern, stated) {
            (Some(p), Some(cv)) => matches(p, cv),
            _ => true,
        })
        .or(specs.first());
    match chosen {
        None => {
            out.used = coding_side(&mut out);
        }
        Some(spec) => {
            out.pin = true;
            match (&spec.pattern, stated) {
                (None, None) => out.used = find_code_system(registry, url, None),
                (None, Some(cv)) => match find_code_system(registry, url, Some(cv)) {
                    Some(cs) => out.used = Some(cs),
                    None => {
                        unknown(&mut out, cv);
                        let latest = find_code_system(registry, url, None);
                        if let Some(l) = &latest {
                            out.problems.push(Problem::Mismatch {
                                error: false,
                                text: format!(
                                    "The code system '{url}' version '{}' for the versionless include in the ValueSet include is different to the one in the value ('{cv}')",
                                    l.version
                                ),
                            });
                        }
                        out.used = latest;
                    }
                },
                (Some(p), cv) => {
                    let from_include = find_code_system(registry, url, Some(p));
                    if let Some(cv) = cv
                        && !matches(p, cv)
                    {
                        let text = match spec.origin {
                            Origin::Include => format!(
                                "The code system '{url}' version '{p}' in the ValueSet include is different to the one in the value ('{cv}')"
                            ),
                            _ => format!(
                                "The code system '{url}' version '{p}' resulting from the version '{}' in the ValueSet include is different to the one in the value ('{cv}')",
                                spec.stated.as_deref().unwrap_or("")
                            ),
                        };
                        out.problems.push(Problem::Mismatch { error: true, text });
                    }
                    if from_include.is_none() {
                        unknown(&mut out, p);
                        out.testable = false;
                    }
                    let from_coding = match cv {
                        Some(cv) => {
                            let found = find_code_system(registry, url, Some(cv));
                            if found.is_none() {
                                unknown(&mut out, cv);
                            }
                            found
                        }
                        None => None,
                    };
                    out.used = match (cv, from_coding, from_include) {
                        (Some(cv), Some(c), _) if matches(p, cv) => Some(c),
                        (_, _, Some(i)) => Some(i),
                        (_, Some(c), None) => Some(c),
                        (None, None, None) => coding_side(&mut out),
                        (Some(_), None, None) => None,
                    };
                }
            }
        }
    }
    if let Some(cs) = &out.used
        && let Some(text) = rules.check(url, &cs.version)
    {
        out.problems.push(Problem::NotAllowed(text));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_piece_by_piece() {
        assert!(matches("1.x.x", "1.2.0"));
        assert!(matches("1.0.x", "1.0.0"));
        assert!(!matches("1.0.x", "1.2.0"));
        assert!(matches("1.*", "1.2.0"));
        assert!(!matches("1", "1.2.0"));
        assert!(matches("2020", "2020-01-01"));
        assert!(!matches("2.x", "1.2"));
        assert_eq!(or_list(&["a"]), "a");
        assert_eq!(or_list(&["a", "b", "c"]), "a, b or c");
    }

    #[test]
    fn force_beats_the_include_and_defaults_fill_gaps() {
        let rules = VersionRules {
            defaults: vec![("s".into(), "1.0.0".into())],
            forced: vec![("f".into(), "2.x".into())],
            checks: vec![("c".into(), "3.x".into())],
            value_set_defaults: Vec::new(),
        };
        assert_eq!(rules.for_include("f", Some("1")).origin, Origin::Forced);
        assert_eq!(rules.for_include("s", Some("9")).origin, Origin::Include);
        assert_eq!(rules.for_include("s", None).origin, Origin::Default);
        assert_eq!(rules.for_include("c", None).origin, Origin::Check);
        assert!(rules.check("c", "3.1").is_none());
        assert!(rules.check("c", "4.0").is_some());
    }
}
