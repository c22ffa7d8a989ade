//! Register history: `CodeSystem/$concept-history` (one code through every version) and
//! `CodeSystem/$diff` (what changed between two versions). Both compare concepts field by field
//! through [`comparable`], so "changed" means the same thing in both: a difference in the display,
//! definition, designations, status, inactive flag, parents, business validity or any mapped
//! property. Within a feed, releases share unchanged records, so most concepts are known to be
//! unchanged without being compared at all.
//!
//! Operation definitions: `conformance/OperationDefinition-CodeSystem-concept-history.json` and
//! `conformance/OperationDefinition-CodeSystem-diff.json`.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value as Json, json};

use super::{resolve_code_system, value_json};
use crate::error::FhirError;
use crate::fhir::params::{OperationParams, ParametersOut, Part, part, part_of};
use crate::store::{CodeSystemVersion, Concept, ConceptRef, IndexedRelease, Registry, Value};

/// Largest page of `$diff` concepts.
pub const MAX_DIFF_COUNT: usize = 1000;
/// `$diff` page size when `count` is not given.
pub const DEFAULT_DIFF_COUNT: usize = 100;

/// A concept as compared: every field that can change, by name, with its values (sorted, so
/// that the order a register lists multi-valued properties in does not count as a change).
pub fn comparable(c: &Concept) -> BTreeMap<String, Vec<Value>> {
    let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut put = |k: &str, v: Value| out.entry(k.to_string()).or_default().push(v);
    if let Some(d) = &c.display {
        put("display", Value::String(d.clone()));
    }
    if let Some(d) = &c.definition {
        put("definition", Value::String(d.clone()));
    }
    for d in &c.designations {
        let label = match (&d.language, &d.use_) {
            (Some(l), Some(u)) => format!("{l} {}: {}", u.code, d.value),
            (Some(l), None) => format!("{l}: {}", d.value),
            (None, Some(u)) => format!("{}: {}", u.code, d.value),
            (None, None) => d.value.to_string(),
        };
        put("designation", Value::String(label.into()));
    }
    if let Some(s) = &c.status {
        put("status", Value::Code(s.clone()));
    }
    put("inactive", Value::Boolean(c.inactive));
    if c.not_selectable {
        put("notSelectable", Value::Boolean(true));
    }
    for p in &c.parents {
        put("parent", Value::Code(p.clone()));
    }
    if let Some(d) = &c.valid_from {
        put("validFrom", Value::DateTime(d.clone()));
    }
    if let Some(d) = &c.valid_to {
        put("validTo", Value::DateTime(d.clone()));
    }
    for (k, v) in &c.properties {
        out.entry(k.to_string()).or_default().push(v.clone());
    }
    for values in out.values_mut() {
        values.sort_by(|a, b| a.as_text().cmp(&b.as_text()));
    }
    out
}

/// One property's change: the values before and after (either may be empty).
#[derive(Debug, Clone, PartialEq)]
pub struct PropertyChange {
    /// Property (or field) name.
    pub code: String,
    /// Values before.
    pub from: Vec<Value>,
    /// Values after.
    pub to: Vec<Value>,
}

/// The properties that differ between two concepts, limited to `only` when it is not empty.
pub fn changes(old: &Concept, new: &Concept, only: &[String]) -> Vec<PropertyChange> {
    let (a, b) = (comparable(old), comparable(new));
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| only.is_empty() || only.iter().any(|o| o == *k))
        .filter_map(|k| {
            let (from, to) = (a.get(k).cloned(), b.get(k).cloned());
            (from != to).then(|| PropertyChange {
                code: k.clone(),
                from: from.unwrap_or_default(),
                to: to.unwrap_or_default(),
            })
        })
        .collect()
}

fn change_parts(changes: &[PropertyChange]) -> Vec<Part> {
    changes
        .iter()
        .map(|ch| {
            let mut parts = vec![part("code", "valueCode", json!(ch.code))];
            for (name, values) in [("from", &ch.from), ("to", &ch.to)] {
                for v in values {
                    let (key, value) = value_json(v);
                    parts.push(part(name, key, value));
                }
            }
            part_of("property", parts)
        })
        .collect()
}

fn properties_of(new: &Concept, only: &[String]) -> Vec<PropertyChange> {
    comparable(new)
        .into_iter()
        .filter(|(k, _)| only.is_empty() || only.iter().any(|o| o == k))
        .map(|(code, to)| PropertyChange {
            code,
            from: Vec::new(),
            to,
        })
        .collect()
}

/// A `$concept-history` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRequest {
    /// CodeSystem URL.
    pub system: String,
    /// The code.
    pub code: String,
    /// Only these properties (empty: all).
    pub properties: Vec<String>,
}

impl HistoryRequest {
    /// Reads `system`, `code` and `property`.
    pub fn from_params(p: &OperationParams) -> Result<Self, FhirError> {
        let system = p
            .text("system")?
            .or(p.text("url")?)
            .ok_or_else(|| FhirError::Required("$concept-history needs 'system'".into()))?;
        let code = p
            .text("code")?
            .filter(|c| !c.is_empty())
            .ok_or_else(|| FhirError::Required("$concept-history needs 'code'".into()))?;
        Ok(Self {
            system,
            code,
            properties: p.texts("property"),
        })
    }
}

fn release_labels(cs: &CodeSystemVersion, code: &str) -> Vec<String> {
    cs.parts
        .iter()
        .filter(|p| p.find(code).is_some())
        .map(|p| format!("{}|{}", p.info.feed, p.info.version))
        .collect()
}

/// Answers `$concept-history`: one `version` part per CodeSystem version in which the code
/// exists or from which it disappeared, oldest first.
pub fn concept_history(registry: &Registry, req: &HistoryRequest) -> Result<Json, FhirError> {
    let latest = resolve_code_system(registry, &req.system, None)?;
    let versions = registry.code_system_versions(&latest.meta.url);
    let mut out = ParametersOut::new();
    out.value("system", "valueUri", json!(latest.meta.url));
    out.value("code", "valueCode", json!(req.code));
    let mut previous: Option<(&Arc<CodeSystemVersion>, ConceptRef)> = None;
    let mut entries = 0;
    for cs in versions {
        let found = cs.find(&req.code);
        let now = found.map(|r| cs.concept(r));
        let (change, props) = match (previous, &now) {
            (None, None) => continue,
            (None, Some(c)) => ("added", properties_of(c, &req.properties)),
            (Some(_), None) => ("removed", Vec::new()),
            (Some((pcs, pr)), Some(_)) if found.is_some_and(|r| same_record(pcs, pr, cs, r)) => {
                ("unchanged", Vec::new())
            }
            (Some((pcs, pr)), Some(c)) => {
                let ch = changes(&pcs.concept(pr), c, &req.properties);
                if ch.is_empty() {
                    ("unchanged", ch)
                } else {
                    ("changed", ch)
                }
            }
        };
        let mut parts = vec![
            part("version", "valueString", json!(cs.version)),
            part("change", "valueCode", json!(change)),
        ];
        for label in release_labels(cs, &req.code) {
            parts.push(part("release", "valueString", json!(label)));
        }
        if let Some(c) = &now {
            if let Some(d) = &c.display {
                parts.push(part("display", "valueString", json!(d)));
            }
            if let Some(s) = &c.status {
                parts.push(part("status", "valueCode", json!(s)));
            }
            parts.push(part("inactive", "valueBoolean", json!(c.inactive)));
            if let Some(d) = &c.valid_from {
                parts.push(part("validFrom", "valueDateTime", json!(d)));
            }
            if let Some(d) = &c.valid_to {
                parts.push(part("validTo", "valueDateTime", json!(d)));
            }
        }
        parts.extend(change_parts(&props));
        out.parts("version", parts);
        entries += 1;
        previous = found.map(|r| (cs, r));
    }
    if entries == 0 {
        return Err(FhirError::UnknownCode(format!(
            "Unknown code '{}' in the CodeSystem '{}': it is in none of its {} versions ({})",
            req.code,
            latest.meta.url,
            versions.len(),
            versions
                .iter()
                .map(|v| v.version.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(out.build())
}

/// A `$diff` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffRequest {
    /// CodeSystem URL.
    pub url: String,
    /// The older version.
    pub from_version: String,
    /// The newer version (default: the latest).
    pub to_version: Option<String>,
    /// Only these properties (empty: all).
    pub properties: Vec<String>,
    /// First concept of the page.
    pub offset: usize,
    /// Page size.
    pub count: usize,
}

impl DiffRequest {
    /// Reads `url` (or `system`), `fromVersion`, `toVersion`, `property`, `offset`, `count`.
    pub fn from_params(p: &OperationParams) -> Result<Self, FhirError> {
        let url = p
            .text("url")?
            .or(p.text("system")?)
            .ok_or_else(|| FhirError::Required("$diff needs 'url'".into()))?;
        let from_version = p
            .text("fromVersion")?
            .ok_or_else(|| FhirError::Required("$diff needs 'fromVersion'".into()))?;
        let count = p.unsigned("count")?.unwrap_or(DEFAULT_DIFF_COUNT);
        if count > MAX_DIFF_COUNT {
            return Err(FhirError::Invalid(format!(
                "'count' is {count}; at most {MAX_DIFF_COUNT} concepts are returned per page"
            )));
        }
        Ok(Self {
            url,
            from_version,
            to_version: p.text("toVersion")?,
            properties: p.texts("property"),
            offset: p.unsigned("offset")?.unwrap_or(0),
            count,
        })
    }
}

/// What a diff found.
#[derive(Debug, Default)]
pub struct Diff<'a> {
    /// Concepts only in the newer version (release, index).
    pub added: Vec<(&'a IndexedRelease, u32)>,
    /// Concepts only in the older version.
    pub removed: Vec<(&'a IndexedRelease, u32)>,
    /// Concepts in both whose compared fields differ: (newer, changes).
    pub changed: Vec<((&'a IndexedRelease, u32), Vec<PropertyChange>)>,
    /// Concepts in both, the same.
    pub unchanged: usize,
}

/// Whether two concepts are the very same stored record (then they are equal).
fn same_record(
    a: &CodeSystemVersion,
    ra: ConceptRef,
    b: &CodeSystemVersion,
    rb: ConceptRef,
) -> bool {
    a.parts[ra.part as usize].record_id(ra.index) == b.parts[rb.part as usize].record_id(rb.index)
}

fn part_for<'a>(cs: &'a CodeSystemVersion, feed: &str) -> Option<&'a Arc<IndexedRelease>> {
    cs.parts.iter().find(|p| p.info.feed == feed)
}

/// Compares two versions of one CodeSystem, feed by feed, each code once: a code that moved
/// from one feed to another is compared with itself like any other (a version never has one code
/// in two feeds: see `registers::build_registry`).
pub fn diff<'a>(
    old: &'a CodeSystemVersion,
    new: &'a CodeSystemVersion,
    only: &[String],
) -> Diff<'a> {
    let mut d = Diff::default();
    let mut feeds: Vec<&str> = old
        .parts
        .iter()
        .chain(new.parts.iter())
        .map(|p| p.info.feed.as_str())
        .collect();
    feeds.sort_unstable();
    feeds.dedup();
    for feed in feeds {
        match (part_for(old, feed), part_for(new, feed)) {
            (Some(a), Some(b)) if Arc::ptr_eq(a, b) => d.unchanged += a.len(),
            (Some(a), None) => d.removed.extend((0..a.len() as u32).map(|i| (&**a, i))),
            (None, Some(b)) => d.added.extend((0..b.len() as u32).map(|j| (&**b, j))),
            (Some(a), Some(b)) => {
                let (mut i, mut j) = (0u32, 0u32);
                let (na, nb) = (a.len() as u32, b.len() as u32);
                while i < na || j < nb {
                    // Out of time: stop here; `diff_versions` reports it.
                    if super::budget::tick().is_err() {
                        break;
                    }
                    let order = match (i < na, j < nb) {
                        (true, true) => a.code(i).cmp(b.code(j)),
                        (true, false) => std::cmp::Ordering::Less,
                        _ => std::cmp::Ordering::Greater,
                    };
                    match order {
                        std::cmp::Ordering::Less => {
                            d.removed.push((&**a, i));
                            i += 1;
                        }
                        std::cmp::Ordering::Greater => {
                            d.added.push((&**b, j));
                            j += 1;
                        }
                        std::cmp::Ordering::Equal => {
                            let ch = if a.record_id(i) == b.record_id(j) {
                                Vec::new()
                            } else {
                                changes(&a.concept(i), &b.concept(j), only)
                            };
                            if ch.is_empty() {
                                d.unchanged += 1;
                            } else {
                                d.changed.push(((&**b, j), ch));
                            }
                            i += 1;
                            j += 1;
                        }
                    }
                }
            }
            (None, None) => {}
        }
    }
    // Codes that left one feed for another: found in the other version's other feeds.
    let elsewhere = |cs: &'a CodeSystemVersion, (r, i): (&IndexedRelease, u32)| {
        cs.parts
            .iter()
            .filter(|p| p.info.feed != r.info.feed)
            .find_map(|p| Some((&**p, p.find(r.code(i))?)))
    };
    let mut moved = std::collections::HashSet::new();
    for &(a, i) in &d.removed {
        let Some((b, j)) = elsewhere(new, (a, i)) else {
            continue;
        };
        moved.insert(a.code(i));
        let ch = changes(&a.concept(i), &b.concept(j), only);
        if ch.is_empty() {
            d.unchanged += 1;
        } else {
            d.changed.push(((b, j), ch));
        }
    }
    if !moved.is_empty() {
        d.removed.retain(|&(a, i)| !moved.contains(a.code(i)));
        d.added.retain(|&(b, j)| !moved.contains(b.code(j)));
    }
    d
}

fn exact_version(
    registry: &Registry,
    url: &str,
    version: &str,
    name: &str,
) -> Result<Arc<CodeSystemVersion>, FhirError> {
    let versions = registry.code_system_versions(url);
    versions
        .iter()
        .find(|v| v.version == version)
        .cloned()
        .ok_or_else(|| {
            FhirError::NotFound(format!(
                "'{name}' {version} is not a version of the CodeSystem '{url}' (versions: {})",
                versions
                    .iter()
                    .map(|v| v.version.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
}

/// Answers `$diff`: counts, per-property change counts, and a page of changed concepts (added,
/// removed and changed, in code order within each kind).
pub fn diff_versions(registry: &Registry, req: &DiffRequest) -> Result<Json, FhirError> {
    let latest = resolve_code_system(registry, &req.url, None)?;
    let url = latest.meta.url.clone();
    let old = exact_version(registry, &url, &req.from_version, "fromVersion")?;
    let new = match &req.to_version {
        Some(v) => exact_version(registry, &url, v, "toVersion")?,
        None => latest,
    };
    let d = diff(&old, &new, &req.properties);
    super::budget::check()?;
    let mut per_property: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, ch) in &d.changed {
        for c in ch {
            *per_property.entry(c.code.as_str()).or_default() += 1;
        }
    }
    let mut out = ParametersOut::new();
    out.value("url", "valueUri", json!(url));
    out.value("fromVersion", "valueString", json!(old.version));
    out.value("toVersion", "valueString", json!(new.version));
    out.value("added", "valueInteger", json!(d.added.len()));
    out.value("removed", "valueInteger", json!(d.removed.len()));
    out.value("changed", "valueInteger", json!(d.changed.len()));
    out.value("unchanged", "valueInteger", json!(d.unchanged));
    for (p, n) in &per_property {
        out.parts(
            "propertyChanges",
            vec![
                part("property", "valueCode", json!(p)),
                part("count", "valueInteger", json!(n)),
            ],
        );
    }
    let total = d.added.len() + d.removed.len() + d.changed.len();
    out.value("offset", "valueInteger", json!(req.offset));
    out.value("total", "valueInteger", json!(total));
    let entries = d
        .added
        .iter()
        .map(|c| ("added", *c, Vec::new()))
        .chain(d.removed.iter().map(|c| ("removed", *c, Vec::new())))
        .chain(d.changed.into_iter().map(|(c, ch)| ("changed", c, ch)));
    for (change, (release, i), ch) in entries.skip(req.offset).take(req.count) {
        let mut parts = vec![
            part("code", "valueCode", json!(release.code(i))),
            part("change", "valueCode", json!(change)),
        ];
        if let Some(d) = release.display(i) {
            parts.push(part("display", "valueString", json!(d)));
        }
        parts.extend(change_parts(&ch));
        out.parts("concept", parts);
    }
    Ok(out.build())
}
