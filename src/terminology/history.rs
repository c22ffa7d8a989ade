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
use crate::store::{
    CodeSystemVersion, Concept, ConceptRef, ConceptView, IndexedRelease, Registry, Value,
};

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

/// The names of the fields that differ between two concepts (as [`changes`] names them),
/// limited to `only` when it is not empty; without building [`comparable`] maps when the two
/// list the same properties in the same order (a register read with one mapping), which is what
/// makes a `$diff` over millions of changed concepts affordable.
pub fn changed_fields(old: &Concept, new: &Concept, only: &[String]) -> Vec<String> {
    let mut names = Vec::new();
    if fields_changed(
        &ConceptView::of(old),
        &ConceptView::of(new),
        only,
        &mut names,
    ) {
        names.into_iter().map(str::to_string).collect()
    } else {
        changes(old, new, only)
            .into_iter()
            .map(|c| c.code)
            .collect()
    }
}

/// [`changed_fields`] over two concepts read in place, into `out` (sorted): `false`, with `out`
/// left as it was, when the two do not list the same properties in the same order, or otherwise
/// need [`changes`] to be compared as it compares them.
pub fn fields_changed<'v>(
    old: &ConceptView<'v>,
    new: &ConceptView<'v>,
    only: &[String],
    out: &mut Vec<&'v str>,
) -> bool {
    const FIELDS: [&str; 9] = [
        "display",
        "definition",
        "designation",
        "status",
        "inactive",
        "notSelectable",
        "parent",
        "validFrom",
        "validTo",
    ];
    let same_shape = old.properties.len() == new.properties.len()
        && old
            .properties
            .iter()
            .zip(&new.properties)
            .all(|((a, _), (b, _))| a == b);
    // A property named like a field shares its entry in `comparable`: compared that way.
    let collides = || old.properties.iter().any(|(c, _)| FIELDS.contains(c));
    if !same_shape
        || collides()
        || old.designations != new.designations && !old.designations.is_empty()
        || old.parents.len() != new.parents.len()
    {
        return false;
    }
    let start = out.len();
    let mut put = |name: &'v str| {
        if (only.is_empty() || only.iter().any(|o| o == name)) && !out[start..].contains(&name) {
            out.push(name);
        }
    };
    if old.display != new.display {
        put("display");
    }
    if old.definition != new.definition {
        put("definition");
    }
    if old.designations != new.designations {
        put("designation");
    }
    if old.status != new.status {
        put("status");
    }
    if old.inactive != new.inactive {
        put("inactive");
    }
    if old.not_selectable != new.not_selectable {
        put("notSelectable");
    }
    if old.parents != new.parents {
        let (mut a, mut b) = (old.parents.clone(), new.parents.clone());
        a.sort_unstable();
        b.sort_unstable();
        if a != b {
            put("parent");
        }
    }
    if old.valid_from != new.valid_from {
        put("validFrom");
    }
    if old.valid_to != new.valid_to {
        put("validTo");
    }
    for (&(code, a), &(_, b)) in old.properties.iter().zip(&new.properties) {
        if a == b {
            continue;
        }
        // A property listed more than once: compared as a set of values, as `comparable` does.
        let repeated = old.properties.iter().filter(|(c, _)| *c == code).count() > 1;
        if repeated {
            let values = |c: &ConceptView<'v>| {
                let mut v: Vec<std::borrow::Cow<'v, str>> = c
                    .properties
                    .iter()
                    .filter(|(p, _)| *p == code)
                    .map(|(_, v)| v.as_text())
                    .collect();
                v.sort_unstable();
                v
            };
            if values(old) == values(new) {
                continue;
            }
        }
        put(code);
    }
    out[start..].sort_unstable();
    true
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

/// What a code was in one CodeSystem version of its history.
#[derive(Debug, Clone)]
pub struct HistoryEntry {
    /// The CodeSystem version.
    pub version: String,
    /// `added`, `changed`, `unchanged` or `removed` (against the previous entry).
    pub change: &'static str,
    /// The releases (`feed|version`) that hold the code in this version.
    pub releases: Vec<String>,
    /// The concept in this version (`None` once removed).
    pub concept: Option<Concept>,
    /// What changed against the previous entry (every field when added).
    pub changes: Vec<PropertyChange>,
}

/// A code through every version of its CodeSystem: what `$concept-history` answers.
#[derive(Debug, Clone)]
pub struct ConceptHistory {
    /// CodeSystem URL.
    pub system: String,
    /// The code.
    pub code: String,
    /// One entry per version in which the code exists or from which it disappeared, oldest
    /// first.
    pub entries: Vec<HistoryEntry>,
}

/// A code's history, typed: one entry per CodeSystem version in which the code exists or from
/// which it disappeared, oldest first (see [`concept_history`] for the FHIR answer).
pub fn concept_history_entries(
    registry: &Registry,
    req: &HistoryRequest,
) -> Result<ConceptHistory, FhirError> {
    let latest = resolve_code_system(registry, &req.system, None)?;
    let versions = registry.code_system_versions(&latest.meta.url);
    let mut entries = Vec::new();
    let mut previous: Option<(&Arc<CodeSystemVersion>, ConceptRef)> = None;
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
        entries.push(HistoryEntry {
            version: cs.version.clone(),
            change,
            releases: release_labels(cs, &req.code),
            concept: now.map(std::borrow::Cow::into_owned),
            changes: props,
        });
        previous = found.map(|r| (cs, r));
    }
    if entries.is_empty() {
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
    Ok(ConceptHistory {
        system: latest.meta.url.clone(),
        code: req.code.clone(),
        entries,
    })
}

/// Answers `$concept-history`: one `version` part per CodeSystem version in which the code
/// exists or from which it disappeared, oldest first.
pub fn concept_history(registry: &Registry, req: &HistoryRequest) -> Result<Json, FhirError> {
    let history = concept_history_entries(registry, req)?;
    let mut out = ParametersOut::new();
    out.value("system", "valueUri", json!(history.system));
    out.value("code", "valueCode", json!(history.code));
    for entry in &history.entries {
        let mut parts = vec![
            part("version", "valueString", json!(entry.version)),
            part("change", "valueCode", json!(entry.change)),
        ];
        for label in &entry.releases {
            parts.push(part("release", "valueString", json!(label)));
        }
        if let Some(c) = &entry.concept {
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
        parts.extend(change_parts(&entry.changes));
        out.parts("version", parts);
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

/// A concept of a release: the release and its index there.
pub type At<'a> = (&'a IndexedRelease, u32);

/// What a diff found.
#[derive(Debug, Default)]
pub struct Diff<'a> {
    /// Concepts only in the newer version (release, index).
    pub added: Vec<At<'a>>,
    /// Concepts only in the older version.
    pub removed: Vec<At<'a>>,
    /// Concepts in both whose compared fields differ: (older, newer).
    pub changed: Vec<(At<'a>, At<'a>)>,
    /// How many changed concepts changed each field.
    pub per_field: BTreeMap<String, usize>,
    /// Concepts in both, the same.
    pub unchanged: usize,
}

/// The two concepts and the field names one comparison reads, kept from pair to pair so that
/// comparing millions of pairs allocates nothing per pair.
#[derive(Default)]
struct Scratch<'a> {
    old: ConceptView<'a>,
    new: ConceptView<'a>,
    names: Vec<&'a str>,
}

impl<'a> Diff<'a> {
    /// Counts one code found in both versions as unchanged or changed.
    fn compare(
        &mut self,
        (a, i): (&'a IndexedRelease, u32),
        (b, j): (&'a IndexedRelease, u32),
        only: &[String],
        s: &mut Scratch<'a>,
    ) {
        if a.record_id(i) == b.record_id(j) {
            self.unchanged += 1;
            return;
        }
        a.view(i, &mut s.old);
        // Most often the newer record is patched from the older one: only the patches are read.
        b.view_over(j, &mut s.new, a, i, &s.old);
        s.names.clear();
        let changed = if fields_changed(&s.old, &s.new, only, &mut s.names) {
            for &f in &s.names {
                self.count_field(f);
            }
            !s.names.is_empty()
        } else {
            // Another shape: compared whole, as `changes` compares (rare).
            let fields = changes(&s.old.to_concept(), &s.new.to_concept(), only);
            for f in &fields {
                self.count_field(&f.code);
            }
            !fields.is_empty()
        };
        if changed {
            self.changed.push(((a, i), (b, j)));
        } else {
            self.unchanged += 1;
        }
    }

    fn count_field(&mut self, name: &str) {
        match self.per_field.get_mut(name) {
            Some(n) => *n += 1,
            None => {
                self.per_field.insert(name.to_string(), 1);
            }
        }
    }

    /// Adds what another stretch of the comparison found, after this one's (code order).
    fn append(&mut self, other: Self) {
        self.added.extend(other.added);
        self.removed.extend(other.removed);
        self.changed.extend(other.changed);
        for (f, n) in other.per_field {
            *self.per_field.entry(f).or_default() += n;
        }
        self.unchanged += other.unchanged;
    }
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

/// Releases of more than this many concepts (on either side) are compared in two halves at
/// once, on two threads (a thread costs tens of microseconds; a register this size takes
/// milliseconds to compare).
const SPLIT_AT: usize = 1 << 14;

/// How many threads a comparison of two large releases runs on: two where there are two
/// cores (the second carries the operation's time budget, see [`walk_split`]).
fn walk_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(2))
}

/// Compares two releases of one feed in code order, in two halves at once when they are large
/// and there are two cores: the older release is cut at its middle code, the newer one where
/// that code is or would be, and each half is walked on its own thread. The second thread runs
/// under the operation's budget ([`super::budget::Budget::run_helper`]), so that it stops at the
/// same deadline, or when the client goes away, as the first.
fn walk_split<'a>(a: &'a IndexedRelease, b: &'a IndexedRelease, only: &[String]) -> Diff<'a> {
    let (na, nb) = (a.len() as u32, b.len() as u32);
    if na.max(nb) as usize <= SPLIT_AT || walk_threads() < 2 || na == 0 {
        return walk(a, 0..na, b, 0..nb, only);
    }
    let mid_a = na / 2;
    let code = a.code(mid_a);
    // The first position of `b` whose code is not before `code`.
    let (mut lo, mut hi) = (0u32, nb);
    while lo < hi {
        let m = lo + (hi - lo) / 2;
        if b.code(m) < code {
            lo = m + 1;
        } else {
            hi = m;
        }
    }
    let mid_b = lo;
    let budget = super::budget::current();
    std::thread::scope(|scope| {
        let second = scope.spawn(|| {
            let work = || walk(a, mid_a..na, b, mid_b..nb, only);
            match &budget {
                Some(budget) => budget.run_helper(work),
                None => work(),
            }
        });
        let mut d = walk(a, 0..mid_a, b, 0..mid_b, only);
        match second.join() {
            Ok(rest) => d.append(rest),
            Err(panic) => std::panic::resume_unwind(panic),
        }
        d
    })
}

/// Compares positions `ia` of `a` with positions `jb` of `b` in code order (two stretches
/// holding the same range of codes).
fn walk<'a>(
    a: &'a IndexedRelease,
    ia: std::ops::Range<u32>,
    b: &'a IndexedRelease,
    jb: std::ops::Range<u32>,
    only: &[String],
) -> Diff<'a> {
    let mut d = Diff::default();
    let mut scratch = Scratch::default();
    let (mut i, na) = (ia.start, ia.end);
    let (mut j, nb) = (jb.start, jb.end);
    let mut hints = [0, 0];
    while i < na || j < nb {
        // Out of time: stop here; `diff_versions` reports it.
        if super::budget::tick().is_err() {
            break;
        }
        // A stretch of the very same records in both: unchanged, no code read.
        if i < na && j < nb {
            let same = a
                .same_records_from(i, b, j, &mut hints)
                .min(na - i)
                .min(nb - j);
            if same > 0 {
                d.unchanged += same as usize;
                i += same;
                j += same;
                continue;
            }
        }
        let order = match (i < na, j < nb) {
            (true, true) => a.code(i).cmp(b.code(j)),
            (true, false) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        match order {
            std::cmp::Ordering::Less => {
                d.removed.push((a, i));
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                d.added.push((b, j));
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                d.compare((a, i), (b, j), only, &mut scratch);
                i += 1;
                j += 1;
            }
        }
    }
    d
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
            (Some(a), Some(b)) => d.append(walk_split(a, b, only)),
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
    let removed = d.removed.clone();
    let mut scratch = Scratch::default();
    for &(a, i) in &removed {
        let Some((b, j)) = elsewhere(new, (a, i)) else {
            continue;
        };
        moved.insert(a.code(i));
        d.compare((a, i), (b, j), only, &mut scratch);
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

/// One concept of a `$diff` page.
#[derive(Debug, Clone)]
pub struct DiffEntry {
    /// The code.
    pub code: String,
    /// `added`, `removed` or `changed`.
    pub change: &'static str,
    /// Its display (in the newer version, or the older one when removed).
    pub display: Option<String>,
    /// What changed (`changed` entries only).
    pub changes: Vec<PropertyChange>,
}

/// What `$diff` answers, typed: the counts and one page of concepts.
#[derive(Debug, Clone)]
pub struct DiffPage {
    /// CodeSystem URL.
    pub url: String,
    /// The older version.
    pub from_version: String,
    /// The newer version.
    pub to_version: String,
    /// Concepts added.
    pub added: usize,
    /// Concepts removed.
    pub removed: usize,
    /// Concepts changed.
    pub changed: usize,
    /// Concepts unchanged.
    pub unchanged: usize,
    /// How many changed concepts changed each property (or field).
    pub per_field: BTreeMap<String, usize>,
    /// First concept of the page.
    pub offset: usize,
    /// Added, removed and changed concepts together.
    pub total: usize,
    /// The page: added, then removed, then changed, in code order within each kind.
    pub concepts: Vec<DiffEntry>,
}

/// A diff by reference into its two versions: what [`diff`] found, owned, so that it can be kept
/// and paged through without comparing the versions again.
#[derive(Debug, Default)]
pub struct DiffIndex {
    /// Concepts only in the newer version.
    pub added: Vec<ConceptRef>,
    /// Concepts only in the older version.
    pub removed: Vec<ConceptRef>,
    /// Concepts in both whose compared fields differ: (in the older, in the newer).
    pub changed: Vec<(ConceptRef, ConceptRef)>,
    /// How many changed concepts changed each field.
    pub per_field: BTreeMap<String, usize>,
    /// Concepts in both, the same.
    pub unchanged: usize,
}

impl DiffIndex {
    /// Compares two versions (see [`diff`]), limited to the properties `only` names (all when
    /// empty); an error when the time budget ran out before the comparison ended.
    pub fn of(
        old: &CodeSystemVersion,
        new: &CodeSystemVersion,
        only: &[String],
    ) -> Result<Self, FhirError> {
        let d = diff(old, new, only);
        super::budget::check()?;
        // Every release a diff names is one of its version's parts.
        let at = |cs: &CodeSystemVersion, (release, index): At| {
            cs.parts
                .iter()
                .position(|p| std::ptr::eq(&**p, release))
                .map(|part| ConceptRef {
                    part: part as u16,
                    index,
                })
        };
        Ok(Self {
            added: d.added.iter().filter_map(|&c| at(new, c)).collect(),
            removed: d.removed.iter().filter_map(|&c| at(old, c)).collect(),
            changed: d
                .changed
                .iter()
                .filter_map(|&(a, b)| Some((at(old, a)?, at(new, b)?)))
                .collect(),
            per_field: d.per_field,
            unchanged: d.unchanged,
        })
    }

    /// The added, removed and changed counts.
    pub fn counts(&self) -> DiffCounts {
        DiffCounts {
            added: self.added.len(),
            removed: self.removed.len(),
            changed: self.changed.len(),
        }
    }

    /// One page of the concepts (added, then removed, then changed), with what changed in each
    /// (limited to `only` when it is not empty).
    pub fn page(
        &self,
        old: &CodeSystemVersion,
        new: &CodeSystemVersion,
        only: &[String],
        offset: usize,
        count: usize,
    ) -> DiffPage {
        let total = self.added.len() + self.removed.len() + self.changed.len();
        // Only the page's changes are spelled out.
        let entries = self
            .added
            .iter()
            .map(|&r| ("added", new, r, None))
            .chain(self.removed.iter().map(|&r| ("removed", old, r, None)))
            .chain(
                self.changed
                    .iter()
                    .map(|&(o, n)| ("changed", new, n, Some(o))),
            );
        let concepts = entries
            .skip(offset)
            .take(count)
            .map(|(change, cs, r, was)| DiffEntry {
                code: cs.code(r).to_string(),
                change,
                display: cs.display(r).map(str::to_string),
                changes: was
                    .map_or_else(Vec::new, |o| changes(&old.concept(o), &cs.concept(r), only)),
            })
            .collect();
        DiffPage {
            url: new.meta.url.clone(),
            from_version: old.version.clone(),
            to_version: new.version.clone(),
            added: self.added.len(),
            removed: self.removed.len(),
            changed: self.changed.len(),
            unchanged: self.unchanged,
            per_field: self.per_field.clone(),
            offset,
            total,
            concepts,
        }
    }
}

/// The two versions a `$diff` request compares (the newer defaults to the latest), or the 404
/// naming the versions there are.
pub fn diff_versions_of(
    registry: &Registry,
    req: &DiffRequest,
) -> Result<(Arc<CodeSystemVersion>, Arc<CodeSystemVersion>), FhirError> {
    let latest = resolve_code_system(registry, &req.url, None)?;
    let url = latest.meta.url.clone();
    let old = exact_version(registry, &url, &req.from_version, "fromVersion")?;
    let new = match &req.to_version {
        Some(v) => exact_version(registry, &url, v, "toVersion")?,
        None => latest,
    };
    Ok((old, new))
}

/// A `$diff`, typed (see [`diff_versions`] for the FHIR answer).
pub fn diff_page(registry: &Registry, req: &DiffRequest) -> Result<DiffPage, FhirError> {
    let (old, new) = diff_versions_of(registry, req)?;
    let index = DiffIndex::of(&old, &new, &req.properties)?;
    Ok(index.page(&old, &new, &req.properties, req.offset, req.count))
}

/// Added, removed and changed counts of one version against another.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiffCounts {
    /// Concepts added.
    pub added: usize,
    /// Concepts removed.
    pub removed: usize,
    /// Concepts changed.
    pub changed: usize,
}

/// Answers `$diff`: counts, per-property change counts, and a page of changed concepts (added,
/// removed and changed, in code order within each kind).
pub fn diff_versions(registry: &Registry, req: &DiffRequest) -> Result<Json, FhirError> {
    let page = diff_page(registry, req)?;
    let mut out = ParametersOut::new();
    out.value("url", "valueUri", json!(page.url));
    out.value("fromVersion", "valueString", json!(page.from_version));
    out.value("toVersion", "valueString", json!(page.to_version));
    out.value("added", "valueInteger", json!(page.added));
    out.value("removed", "valueInteger", json!(page.removed));
    out.value("changed", "valueInteger", json!(page.changed));
    out.value("unchanged", "valueInteger", json!(page.unchanged));
    for (p, n) in &page.per_field {
        out.parts(
            "propertyChanges",
            vec![
                part("property", "valueCode", json!(p)),
                part("count", "valueInteger", json!(n)),
            ],
        );
    }
    out.value("offset", "valueInteger", json!(page.offset));
    out.value("total", "valueInteger", json!(page.total));
    for c in &page.concepts {
        let mut parts = vec![
            part("code", "valueCode", json!(c.code)),
            part("change", "valueCode", json!(c.change)),
        ];
        if let Some(d) = &c.display {
            parts.push(part("display", "valueString", json!(d)));
        }
        parts.extend(change_parts(&c.changes));
        out.parts("concept", parts);
    }
    Ok(out.build())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn concept(display: &str, props: &[(&str, &str)]) -> Concept {
        let mut c = Concept::new("X1");
        c.display = Some(display.into());
        c.properties = props
            .iter()
            .map(|(k, v)| ((*k).into(), Value::Code((*v).into())))
            .collect();
        c
    }

    /// The fast comparison names exactly the fields the full one does.
    #[test]
    fn changed_fields_agree_with_changes() {
        let base = concept(
            "A",
            &[
                ("ward", "E1"),
                ("district", "D1"),
                ("tag", "t1"),
                ("tag", "t2"),
            ],
        );
        let cases = [
            concept(
                "A",
                &[
                    ("ward", "E1"),
                    ("district", "D1"),
                    ("tag", "t1"),
                    ("tag", "t2"),
                ],
            ),
            concept(
                "B",
                &[
                    ("ward", "E1"),
                    ("district", "D1"),
                    ("tag", "t1"),
                    ("tag", "t2"),
                ],
            ),
            concept(
                "A",
                &[
                    ("ward", "E2"),
                    ("district", "D1"),
                    ("tag", "t1"),
                    ("tag", "t2"),
                ],
            ),
            concept(
                "A",
                &[
                    ("ward", "E2"),
                    ("district", "D2"),
                    ("tag", "t1"),
                    ("tag", "t2"),
                ],
            ),
            // Multi-valued in another order: unchanged; another value: changed.
            concept(
                "A",
                &[
                    ("ward", "E1"),
                    ("district", "D1"),
                    ("tag", "t2"),
                    ("tag", "t1"),
                ],
            ),
            concept(
                "A",
                &[
                    ("ward", "E1"),
                    ("district", "D1"),
                    ("tag", "t1"),
                    ("tag", "t3"),
                ],
            ),
            // Another shape: a property gone, another added.
            concept("A", &[("ward", "E1"), ("tag", "t1"), ("tag", "t2")]),
            concept(
                "A",
                &[
                    ("ward", "E1"),
                    ("district", "D1"),
                    ("tag", "t1"),
                    ("tag", "t2"),
                    ("new", "n"),
                ],
            ),
            // A property named like a field.
            concept(
                "A",
                &[
                    ("status", "E1"),
                    ("district", "D1"),
                    ("tag", "t1"),
                    ("tag", "t2"),
                ],
            ),
        ];
        for (k, new) in cases.iter().enumerate() {
            let mut inactive = new.clone();
            inactive.inactive = k % 2 == 1;
            for new in [new, &inactive] {
                for only in [
                    vec![],
                    vec!["ward".to_string()],
                    vec!["display".to_string()],
                ] {
                    let full: Vec<String> = changes(&base, new, &only)
                        .into_iter()
                        .map(|c| c.code)
                        .collect();
                    assert_eq!(
                        changed_fields(&base, new, &only),
                        full,
                        "case {k}, only {only:?}"
                    );
                }
            }
        }
    }
}
