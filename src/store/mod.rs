//! Versioned concepts and their indexes, and persistence of imported releases.
//!
//! A *release* is one import of one register feed. A *CodeSystem version* is a set of releases
//! (one per feed) shared by `Arc`: a new release of one feed makes a new version that reuses the
//! other feeds' releases unchanged. The [`Registry`] is an immutable snapshot of every CodeSystem
//! version and ValueSet the server answers from; imports build a new registry and swap it in, so a
//! failed import leaves the previous one serving.

mod codec;
mod concept;
mod concept_map;
mod error;
mod index;
mod list;
mod mapped;
mod patch;
pub mod persist;
mod release;
mod rows;
mod segment;
mod version;
mod view;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

pub use concept::{Concept, Designation, DesignationUse, STANDARDS_STATUS, Value};
pub use concept_map::{
    ConceptMapEntry, DerivedMap, MapElement, MapGroup, MapKind, MapSide, MapTarget,
};
pub use error::PersistError;
pub use index::{IndexedRelease, matches_text, matches_words, words};
pub use list::ConceptList;
pub use release::{Release, ReleaseInfo};
pub use version::{compare_versions, date_param, split_versioned_id, version_id, version_start};
pub use view::{ConceptView, DesignationUseView, DesignationView, ValueView};

/// A property a CodeSystem advertises (`CodeSystem.property`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PropertyDecl {
    /// Property code.
    pub code: String,
    /// FHIR type (`code`, `string`, `Coding`, …).
    pub kind: String,
    /// Formal URI.
    pub uri: Option<String>,
    /// Meaning.
    pub description: Option<String>,
}

/// A filter a CodeSystem advertises (`CodeSystem.filter`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilterDecl {
    /// Property the filter works on.
    pub code: String,
    /// Operators.
    pub op: Vec<String>,
    /// What the value must be.
    pub value: String,
    /// Meaning.
    pub description: Option<String>,
}

/// CodeSystem resource metadata (everything but concepts and version).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CodeSystemMeta {
    /// Canonical URL.
    pub url: String,
    /// Logical id.
    pub id: String,
    /// Computer-friendly name.
    pub name: Option<String>,
    /// Human title.
    pub title: Option<String>,
    /// Publication status.
    pub status: String,
    /// Custodian.
    pub publisher: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Copyright.
    pub copyright: Option<String>,
    /// Case sensitivity of codes.
    pub case_sensitive: bool,
    /// `complete`, `fragment`, …
    pub content: String,
    /// Hierarchy meaning.
    pub hierarchy_meaning: Option<String>,
    /// Declared properties.
    pub properties: Vec<PropertyDecl>,
    /// Declared filters.
    pub filters: Vec<FilterDecl>,
    /// Feeds (mapping `register.id`s) that make this CodeSystem.
    pub feeds: Vec<String>,
    /// Other top-level elements of a plain FHIR CodeSystem (echoed on read).
    pub extra: Option<serde_json::Map<String, Json>>,
    /// For a plain FHIR CodeSystem: each concept's place in the resource's own (definition,
    /// depth-first) order, by its index in code order. Empty for registers, whose order is
    /// code order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub definition_rank: Vec<u32>,
}

/// A concept's place in a CodeSystem version: which release, which index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConceptRef {
    /// Index into [`CodeSystemVersion::parts`].
    pub part: u16,
    /// Index into that release's concepts.
    pub index: u32,
}

/// One version of a CodeSystem: metadata plus one release per feed.
#[derive(Debug, Clone)]
pub struct CodeSystemVersion {
    /// Metadata.
    pub meta: Arc<CodeSystemMeta>,
    /// Version string (the newest release date among its parts).
    pub version: String,
    /// The releases, one per feed.
    pub parts: Vec<Arc<IndexedRelease>>,
    /// CodeSystem supplements (`content: supplement`) a request asked for with `useSupplement`:
    /// their designations and properties add to this version's concepts. Never persisted.
    pub supplements: Vec<Arc<CodeSystemVersion>>,
    children: HashMap<Box<str>, Vec<ConceptRef>>,
}

impl CodeSystemVersion {
    /// Assembles a version from releases and builds its hierarchy index.
    pub fn new(
        meta: Arc<CodeSystemMeta>,
        version: String,
        parts: Vec<Arc<IndexedRelease>>,
    ) -> Self {
        let mut v = Self {
            meta,
            version,
            parts,
            supplements: Vec::new(),
            children: HashMap::new(),
        };
        let mut children: HashMap<Box<str>, Vec<ConceptRef>> = HashMap::new();
        for (p, part) in v.parts.iter().enumerate() {
            if !part.has_parents() {
                continue;
            }
            for (index, c) in part.iter().enumerate() {
                for parent in &c.parents {
                    children
                        .entry(parent.clone())
                        .or_default()
                        .push(ConceptRef {
                            part: p as u16,
                            index: index as u32,
                        });
                }
            }
        }
        v.children = children;
        v
    }

    /// Builds what is otherwise built on first use: the releases' text indexes and case-folded
    /// code orders. `serve` runs this in the background once it is listening.
    pub fn warm(&self) {
        for part in &self.parts {
            part.warm();
        }
    }

    /// The concept at a reference (decoded now when its release is read in place).
    pub fn concept(&self, r: ConceptRef) -> Cow<'_, Concept> {
        self.parts[r.part as usize].concept(r.index)
    }

    /// The concept at a reference into `view`, borrowed from its records (see [`ConceptView`]).
    pub fn view<'a>(&'a self, r: ConceptRef, view: &mut ConceptView<'a>) {
        self.parts[r.part as usize].view(r.index, view);
    }

    /// The code at a reference, without decoding the concept.
    pub fn code(&self, r: ConceptRef) -> &str {
        self.parts[r.part as usize].code(r.index)
    }

    /// The display at a reference, without decoding the concept.
    pub fn display(&self, r: ConceptRef) -> Option<&str> {
        self.parts[r.part as usize].display(r.index)
    }

    /// This version with `supplement` applied (see [`CodeSystemVersion::supplements`]).
    pub fn with_supplement(&self, supplement: Arc<CodeSystemVersion>) -> Self {
        let mut v = self.clone();
        v.supplements.push(supplement);
        v
    }

    /// `url|version` of a CodeSystem version (`url` alone when it has no version).
    pub fn canonical(&self) -> String {
        if self.version.is_empty() {
            self.meta.url.clone()
        } else {
            format!("{}|{}", self.meta.url, self.version)
        }
    }

    /// The designations the applied supplements give a code, each with the canonical
    /// (`url|version`) of the supplement it comes from.
    pub fn supplement_designations(&self, code: &str) -> Vec<(Designation, String)> {
        self.supplements
            .iter()
            .filter_map(|s| Some((s, s.find(code)?)))
            .flat_map(|(s, r)| {
                let canonical = s.canonical();
                s.concept(r)
                    .into_owned()
                    .designations
                    .into_iter()
                    .map(move |d| (d, canonical.clone()))
            })
            .collect()
    }

    /// The properties the applied supplements give a code.
    pub fn supplement_properties(&self, code: &str) -> Vec<(Box<str>, Value)> {
        self.supplements
            .iter()
            .filter_map(|s| Some((s, s.find(code)?)))
            .flat_map(|(s, r)| s.concept(r).into_owned().properties)
            .collect()
    }

    /// Finds a code (exactly, or case-folded when the CodeSystem is not case sensitive).
    pub fn find(&self, code: &str) -> Option<ConceptRef> {
        for (p, part) in self.parts.iter().enumerate() {
            if let Some(index) = part.find(code) {
                return Some(ConceptRef {
                    part: p as u16,
                    index,
                });
            }
        }
        if self.meta.case_sensitive {
            return None;
        }
        self.parts.iter().enumerate().find_map(|(p, part)| {
            Some(ConceptRef {
                part: p as u16,
                index: part.find_folded(code)?,
            })
        })
    }

    /// Every reference, part by part, each part in code order.
    pub fn refs(&self) -> impl Iterator<Item = ConceptRef> + '_ {
        self.parts.iter().enumerate().flat_map(|(p, part)| {
            (0..part.len() as u32).map(move |index| ConceptRef {
                part: p as u16,
                index,
            })
        })
    }

    /// A concept's place in the CodeSystem's definition order (its place in code order when
    /// the CodeSystem has no other).
    pub fn definition_rank(&self, r: ConceptRef) -> usize {
        match self.meta.definition_rank.get(r.index as usize) {
            Some(rank) if r.part == 0 && self.parts.len() == 1 => *rank as usize,
            _ => {
                self.parts[..r.part as usize]
                    .iter()
                    .map(|p| p.len())
                    .sum::<usize>()
                    + r.index as usize
            }
        }
    }

    /// Whether this version was supplied with the request (`tx-resource`), not served by the
    /// registry.
    pub fn is_supplied(&self) -> bool {
        self.parts.iter().any(|p| p.info.source == "tx-resource")
    }

    /// Every concept, part by part, each part in code order.
    pub fn iter(&self) -> impl Iterator<Item = (ConceptRef, Cow<'_, Concept>)> + '_ {
        self.refs().map(|r| (r, self.concept(r)))
    }

    /// The `i`-th concept in [`CodeSystemVersion::iter`] order, found without walking there.
    pub fn nth(&self, i: usize) -> Option<ConceptRef> {
        let mut rest = i;
        for (p, part) in self.parts.iter().enumerate() {
            if rest < part.len() {
                return Some(ConceptRef {
                    part: p as u16,
                    index: rest as u32,
                });
            }
            rest -= part.len();
        }
        None
    }

    /// Number of concepts.
    pub fn len(&self) -> usize {
        self.parts.iter().map(|p| p.len()).sum()
    }

    /// Whether the version has no concepts.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Direct children of a code.
    pub fn children(&self, code: &str) -> &[ConceptRef] {
        self.children.get(code).map(Vec::as_slice).unwrap_or(&[])
    }

    /// All descendants of a code (not including it), depth-first, each once.
    pub fn descendants(&self, code: &str) -> Vec<ConceptRef> {
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut stack: Vec<ConceptRef> = self.children(code).iter().rev().copied().collect();
        while let Some(r) = stack.pop() {
            if !seen.insert(r) {
                continue;
            }
            out.push(r);
            stack.extend(self.children(self.code(r)).iter().rev().copied());
        }
        out
    }

    /// Whether `code` is `ancestor` or one of its descendants (following parents upward).
    pub fn subsumed_by(&self, code: &str, ancestor: &str) -> bool {
        let mut seen = std::collections::HashSet::new();
        let mut stack = vec![code.to_string()];
        while let Some(c) = stack.pop() {
            if c == ancestor {
                return true;
            }
            if !seen.insert(c.clone()) {
                continue;
            }
            if let Some(r) = self.find(&c) {
                stack.extend(self.concept(r).parents.iter().map(|p| p.to_string()));
            }
        }
        false
    }

    /// The concepts having `property` with one of `values`, part by part (see
    /// [`IndexedRelease::with_property`]).
    pub fn with_property(&self, property: &str, values: &[String]) -> Vec<ConceptRef> {
        self.in_each_part(|part| part.with_property(property, values))
    }

    /// Concepts with a value of `property` that `keep` accepts (see
    /// [`IndexedRelease::with_property_where`]).
    pub fn with_property_where(
        &self,
        property: &str,
        keep: &dyn Fn(&str) -> bool,
    ) -> Vec<ConceptRef> {
        self.in_each_part(|part| part.with_property_where(property, keep))
    }

    /// What `find` gives for each part, as references into this version.
    fn in_each_part(&self, find: impl Fn(&IndexedRelease) -> Vec<u32>) -> Vec<ConceptRef> {
        let mut out = Vec::new();
        for (p, part) in self.parts.iter().enumerate() {
            out.extend(find(part).into_iter().map(|index| ConceptRef {
                part: p as u16,
                index,
            }));
        }
        out
    }

    /// Concepts whose code `keep` accepts, read without decoding the concepts.
    pub fn codes_where(&self, keep: &dyn Fn(&str) -> bool) -> Vec<ConceptRef> {
        self.refs().filter(|&r| keep(self.code(r))).collect()
    }

    /// Word-prefix text search: concepts whose code/display words start with every filter word.
    pub fn text_search(&self, filter_words: &[String]) -> Vec<ConceptRef> {
        let Some(driver) = filter_words.iter().max_by_key(|w| w.len()) else {
            return self.refs().collect();
        };
        let mut out = Vec::new();
        for (p, part) in self.parts.iter().enumerate() {
            for index in part.word_prefix(driver) {
                let r = ConceptRef {
                    part: p as u16,
                    index,
                };
                if filter_words.len() == 1
                    || matches_text(part.code(index), part.display(index), filter_words)
                {
                    out.push(r);
                }
            }
        }
        out
    }
}

/// A ValueSet the server knows: its resource (without expansion) and identity.
#[derive(Debug, Clone)]
pub struct ValueSetEntry {
    /// Logical id.
    pub id: String,
    /// Canonical URL.
    pub url: String,
    /// Business version, if any.
    pub version: Option<String>,
    /// The ValueSet resource as FHIR JSON.
    pub resource: Json,
}

/// An immutable snapshot of everything the server answers from.
#[derive(Debug, Default)]
pub struct Registry {
    code_systems: BTreeMap<String, Vec<Arc<CodeSystemVersion>>>,
    value_sets: BTreeMap<String, Vec<Arc<ValueSetEntry>>>,
    concept_maps: BTreeMap<String, Vec<Arc<ConceptMapEntry>>>,
    /// Per mapped CodeSystem, what its versions were built from (the stored release files of its
    /// feeds), so that a rebuild reuses the versions of CodeSystems whose files did not change.
    built_from: BTreeMap<String, String>,
    /// The registries as of the dates asked for lately, by the number of version start dates on
    /// or before the date (see [`Registry::as_of_shared`]).
    dated: std::sync::Mutex<HashMap<usize, Arc<Registry>>>,
    /// Every CodeSystem version's start date, sorted, without repeats (built on first use).
    starts: std::sync::OnceLock<Vec<String>>,
}

/// How many dates' registries [`Registry::as_of_shared`] keeps.
const DATED_KEPT: usize = 256;

impl Registry {
    /// Records what the versions of the mapped CodeSystem `url` were built from.
    pub fn set_built_from(&mut self, url: &str, fingerprint: String) {
        self.built_from.insert(url.to_string(), fingerprint);
    }

    /// What the versions of the mapped CodeSystem `url` were built from.
    pub fn built_from(&self, url: &str) -> Option<&str> {
        self.built_from.get(url).map(String::as_str)
    }

    /// Adds a CodeSystem version (versions are kept sorted; the last is the latest).
    pub fn add_code_system(&mut self, v: CodeSystemVersion) {
        self.add_code_system_arc(Arc::new(v));
    }

    /// Adds a ValueSet (replacing one with the same url and version).
    pub fn add_value_set(&mut self, v: ValueSetEntry) {
        self.add_value_set_arc(Arc::new(v));
    }

    /// Adds a shared ValueSet (replacing one with the same url and version).
    pub fn add_value_set_arc(&mut self, v: Arc<ValueSetEntry>) {
        let list = self.value_sets.entry(v.url.clone()).or_default();
        list.retain(|x| x.version != v.version);
        list.push(v);
        list.sort_by(|a, b| {
            compare_versions(
                a.version.as_deref().unwrap_or(""),
                b.version.as_deref().unwrap_or(""),
            )
        });
    }

    /// A copy of this registry with more CodeSystem versions and ValueSets (request-supplied
    /// resources); the originals are shared, not copied.
    pub fn overlay(
        &self,
        code_systems: Vec<Arc<CodeSystemVersion>>,
        value_sets: Vec<Arc<ValueSetEntry>>,
        concept_maps: Vec<Arc<ConceptMapEntry>>,
    ) -> Registry {
        let mut out = Registry {
            code_systems: self.code_systems.clone(),
            value_sets: self.value_sets.clone(),
            concept_maps: self.concept_maps.clone(),
            built_from: BTreeMap::new(),
            dated: Default::default(),
            starts: Default::default(),
        };
        for cm in concept_maps {
            out.add_concept_map_arc(cm);
        }
        for cs in code_systems {
            out.add_code_system_arc(cs);
        }
        for vs in value_sets {
            out.add_value_set_arc(vs);
        }
        out
    }

    /// Adds a shared CodeSystem version.
    pub fn add_code_system_arc(&mut self, v: Arc<CodeSystemVersion>) {
        let list = self.code_systems.entry(v.meta.url.clone()).or_default();
        list.retain(|x| x.version != v.version);
        list.push(v);
        list.sort_by(|a, b| compare_versions(&a.version, &b.version));
    }

    /// A CodeSystem by canonical URL and optional version (the latest when none is given).
    /// A version may be given as a prefix (`2020` matches `2020-01-01`).
    pub fn code_system(&self, url: &str, version: Option<&str>) -> Option<Arc<CodeSystemVersion>> {
        let list = self.code_systems.get(url)?;
        match version {
            None => list.last().cloned(),
            Some(v) => list
                .iter()
                .rev()
                .find(|x| x.version == v)
                .or_else(|| list.iter().rev().find(|x| x.version.starts_with(v)))
                .cloned(),
        }
    }

    /// This registry as it stood on `date` (`YYYY-MM-DD`): CodeSystem versions released after it
    /// are left out, so "the latest" is the release in force then. Versions that are not dates
    /// (`4.0.1`) are kept. The versions are shared, not copied.
    pub fn as_of(&self, date: &str) -> Registry {
        let mut out = Registry {
            code_systems: self.code_systems.clone(),
            value_sets: self.value_sets.clone(),
            concept_maps: self.concept_maps.clone(),
            built_from: BTreeMap::new(),
            dated: Default::default(),
            starts: Default::default(),
        };
        for list in out.code_systems.values_mut() {
            list.retain(|v| version_start(&v.version).is_none_or(|d| d.as_str() <= date));
        }
        out.code_systems.retain(|_, list| !list.is_empty());
        out
    }

    /// [`Registry::as_of`], shared: the registries of the last [`DATED_KEPT`] dates asked for
    /// (dates between the same two version start dates count as one) are kept with this registry (and go with it when a new one is published), so a request
    /// with `date=` does not copy the registry's maps every time.
    pub fn as_of_shared(&self, date: &str) -> Arc<Registry> {
        // Every date between two version start dates sees the same registry.
        let starts = self.starts.get_or_init(|| {
            let mut all: Vec<String> = self
                .code_systems
                .values()
                .flatten()
                .filter_map(|v| version_start(&v.version))
                .collect();
            all.sort();
            all.dedup();
            all
        });
        let key = starts.partition_point(|s| s.as_str() <= date);
        let mut kept = self
            .dated
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(r) = kept.get(&key) {
            return r.clone();
        }
        let r = Arc::new(self.as_of(date));
        if kept.len() >= DATED_KEPT {
            kept.clear();
        }
        kept.insert(key, r.clone());
        r
    }

    /// The first dated version of a CodeSystem, when every version is later than `date`.
    pub fn first_release_after(&self, url: &str, date: &str) -> Option<&str> {
        let list = self.code_systems.get(url)?;
        let all_later = list
            .iter()
            .all(|v| version_start(&v.version).is_some_and(|d| d.as_str() > date));
        all_later.then(|| list.first().map(|v| v.version.as_str()))?
    }

    /// The version of a CodeSystem that describes `day` (`YYYY-MM-DD`) best: the newest release
    /// in force on that day or, when the day precedes every release, the first release (the
    /// earliest account of a register that records its own history, such as ODS memberships
    /// with join and left dates or postcodes with introduction and termination dates).
    pub fn code_system_describing(&self, url: &str, day: &str) -> Option<Arc<CodeSystemVersion>> {
        let list = self.code_systems.get(url)?;
        list.iter()
            .rev()
            .find(|v| version_start(&v.version).is_none_or(|d| d.as_str() <= day))
            .or_else(|| list.first())
            .cloned()
    }

    /// Every version of a CodeSystem, oldest first.
    pub fn code_system_versions(&self, url: &str) -> &[Arc<CodeSystemVersion>] {
        self.code_systems.get(url).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Whether a CodeSystem url is known (any version).
    pub fn knows_code_system(&self, url: &str) -> bool {
        self.code_systems.contains_key(url)
    }

    /// The latest version of each CodeSystem.
    pub fn latest_code_systems(&self) -> impl Iterator<Item = &Arc<CodeSystemVersion>> {
        self.code_systems.values().filter_map(|l| l.last())
    }

    /// Every CodeSystem version.
    pub fn all_code_systems(&self) -> impl Iterator<Item = &Arc<CodeSystemVersion>> {
        self.code_systems.values().flatten()
    }

    /// A ValueSet by canonical URL and optional version.
    pub fn value_set(&self, url: &str, version: Option<&str>) -> Option<Arc<ValueSetEntry>> {
        pick_version(self.value_sets.get(url)?, version, |x| x.version.as_deref())
    }

    /// Adds a ConceptMap.
    pub fn add_concept_map(&mut self, m: ConceptMapEntry) {
        self.add_concept_map_arc(Arc::new(m));
    }

    /// Adds a shared ConceptMap.
    pub fn add_concept_map_arc(&mut self, m: Arc<ConceptMapEntry>) {
        // Maps sharing url and version are all kept: their groups add up in `$translate`.
        let list = self.concept_maps.entry(m.url.clone()).or_default();
        list.push(m);
        list.sort_by(|a, b| {
            compare_versions(
                a.version.as_deref().unwrap_or(""),
                b.version.as_deref().unwrap_or(""),
            )
        });
    }

    /// A ConceptMap by canonical URL (`url|version` allowed) and optional version.
    pub fn concept_map(&self, url: &str, version: Option<&str>) -> Option<Arc<ConceptMapEntry>> {
        let (url, version) = match url.split_once('|') {
            Some((u, v)) => (u, Some(v)),
            None => (url, version),
        };
        pick_version(self.concept_maps.get(url)?, version, |x| {
            x.version.as_deref()
        })
    }

    /// Every ConceptMap.
    pub fn all_concept_maps(&self) -> impl Iterator<Item = &Arc<ConceptMapEntry>> {
        self.concept_maps.values().flatten()
    }

    /// A ConceptMap by resource id.
    pub fn concept_map_by_id(&self, id: &str) -> Option<Arc<ConceptMapEntry>> {
        self.all_concept_maps().find(|m| m.id == id).cloned()
    }

    /// Every ValueSet.
    pub fn all_value_sets(&self) -> impl Iterator<Item = &Arc<ValueSetEntry>> {
        self.value_sets.values().flatten()
    }

    /// A CodeSystem version by resource id: `{id}` is the latest version, `{id}--{version}` a
    /// specific one.
    pub fn code_system_by_id(&self, id: &str) -> Option<Arc<CodeSystemVersion>> {
        let (base, version) = split_versioned_id(id);
        self.all_code_systems()
            .filter(|c| c.meta.id == base)
            .filter(|c| version.is_none_or(|v| version_id(&c.version) == v))
            .max_by(|a, b| compare_versions(&a.version, &b.version))
            .cloned()
    }

    /// A ValueSet by resource id.
    pub fn value_set_by_id(&self, id: &str) -> Option<Arc<ValueSetEntry>> {
        self.all_value_sets().find(|v| v.id == id).cloned()
    }
}

/// From a list sorted oldest first: the latest, or the newest with exactly that version.
fn pick_version<T>(
    list: &[Arc<T>],
    version: Option<&str>,
    of: impl Fn(&T) -> Option<&str>,
) -> Option<Arc<T>> {
    match version {
        None => list.last().cloned(),
        Some(v) => list.iter().rev().find(|x| of(x) == Some(v)).cloned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Dates between the same two version start dates share one registry; the next start date
    /// gives another, with the later version.
    #[test]
    fn dated_registries_are_shared_between_start_dates() {
        let meta = Arc::new(CodeSystemMeta {
            url: "http://example.org/cs".into(),
            ..CodeSystemMeta::default()
        });
        let mut r = Registry::default();
        for v in ["2021-01-01", "2021-02-01", "2021-03-01"] {
            r.add_code_system(CodeSystemVersion::new(meta.clone(), v.into(), Vec::new()));
        }
        let versions = |r: &Registry| -> Vec<String> {
            r.code_system_versions("http://example.org/cs")
                .iter()
                .map(|v| v.version.clone())
                .collect()
        };
        let a = r.as_of_shared("2021-01-10");
        let b = r.as_of_shared("2021-01-31");
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(versions(&a), ["2021-01-01"]);
        let c = r.as_of_shared("2021-02-01");
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(versions(&c), ["2021-01-01", "2021-02-01"]);
        assert_eq!(versions(&r.as_of_shared("2030-01-01")).len(), 3);
        assert!(versions(&r.as_of_shared("2020-12-31")).is_empty());
    }
}
