//! The registry one request sees: the shared registry, plus the CodeSystems, ValueSets and
//! ConceptMaps the request supplies as `tx-resource` parameters (or that its `$cache-control`
//! cache holds), with the supplements `useSupplement` names applied, as it stood on the request's
//! `date`. Supplied CodeSystems are compiled once per distinct content (hierarchy index
//! included) and kept in a small memo bounded by count and bytes, least recently used first out.
//! A supplied CodeSystem with more concepts than [`SuppliedLimits::max_concepts`] is refused
//! before it is compiled.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use serde_json::Value as Json;

use super::budget;
use crate::error::FhirError;
use crate::fhir::params::{OperationParams, ParamValue};
use crate::store::{CodeSystemVersion, ConceptMapEntry, Registry, ValueSetEntry};

/// Most compiled CodeSystems the memo keeps.
const MEMO_ENTRIES: usize = 256;
/// Most bytes (of their JSON) of compiled CodeSystems the memo keeps when no cache holds them.
pub const MEMO_BYTES: usize = 64 * 1024 * 1024;

/// Bounds on what one request may supply.
#[derive(Debug, Clone, Copy)]
pub struct SuppliedLimits {
    /// Most concepts (nested ones included) in one supplied CodeSystem.
    pub max_concepts: usize,
}

impl Default for SuppliedLimits {
    fn default() -> Self {
        Self {
            max_concepts: 100_000,
        }
    }
}

/// One supplied resource, read once: identified by its content, sized by its JSON text.
#[derive(Debug, Clone)]
pub struct Supplied {
    /// Identity of the content (two hashes and the length of the JSON text).
    pub key: String,
    /// Length of the resource's JSON text.
    pub bytes: usize,
    kind: SuppliedKind,
}

#[derive(Debug, Clone)]
enum SuppliedKind {
    CodeSystem(Arc<CodeSystemVersion>),
    ValueSet(Arc<ValueSetEntry>),
    ConceptMap(Arc<ConceptMapEntry>),
    /// Another resource type: kept (a cache holds what it was sent) but not used.
    Other,
}

#[derive(Debug, Default)]
struct Memo {
    entries: HashMap<String, MemoEntry>,
    bytes: usize,
    clock: u64,
}

#[derive(Debug)]
struct MemoEntry {
    code_system: Arc<CodeSystemVersion>,
    bytes: usize,
    used: u64,
}

/// Reads supplied resources and builds the registry a request sees (see the module docs).
#[derive(Debug, Default)]
pub struct Overlay {
    limits: SuppliedLimits,
    memo: Mutex<Memo>,
}

/// The identity of a JSON text: FNV-1a, SipHash under keys random per process (so that no
/// client can make two contents collide on purpose), and the length.
fn content_key(text: &str) -> String {
    static KEYS: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
    let mut sip = KEYS.get_or_init(Default::default).build_hasher();
    sip.write(text.as_bytes());
    format!(
        "{}-{:016x}-{}",
        crate::source::ContentHash::of(text.as_bytes()),
        sip.finish(),
        text.len()
    )
}

/// Concepts in a CodeSystem resource, nested ones included; stops counting past `limit`.
fn concept_count(resource: &Json, limit: usize) -> usize {
    let mut n = 0usize;
    let mut stack: Vec<&Json> = vec![resource];
    while let Some(node) = stack.pop() {
        if let Some(list) = node.get("concept").and_then(Json::as_array) {
            n += list.len();
            if n > limit {
                return n;
            }
            stack.extend(list.iter());
        }
    }
    n
}

impl Overlay {
    /// An overlay with these limits.
    pub fn new(limits: SuppliedLimits) -> Self {
        Self {
            limits,
            memo: Mutex::new(Memo::default()),
        }
    }

    /// The limits.
    pub fn limits(&self) -> SuppliedLimits {
        self.limits
    }

    /// Compiled CodeSystems the memo holds now, and the bytes of their JSON.
    pub fn memo_stats(&self) -> (usize, usize) {
        let memo = self.memo.lock().unwrap_or_else(PoisonError::into_inner);
        (memo.entries.len(), memo.bytes)
    }

    /// The `tx-resource`s of a request, each read once.
    pub fn supplied(&self, params: &OperationParams) -> Result<Vec<Supplied>, FhirError> {
        params
            .all("tx-resource")
            .filter_map(|v| match v {
                ParamValue::Resource(r) => Some(self.read(r)),
                _ => None,
            })
            .collect()
    }

    /// Reads one supplied resource (a CodeSystem from the memo when its content was seen).
    pub fn read(&self, resource: &Json) -> Result<Supplied, FhirError> {
        let text = resource.to_string();
        let key = content_key(&text);
        let bytes = text.len();
        drop(text);
        let kind = match resource.get("resourceType").and_then(Json::as_str) {
            Some("CodeSystem") => {
                SuppliedKind::CodeSystem(self.code_system(resource, &key, bytes)?)
            }
            Some("ValueSet") => SuppliedKind::ValueSet(Arc::new(
                crate::registers::value_set_entry(resource.clone()),
            )),
            Some("ConceptMap") => SuppliedKind::ConceptMap(Arc::new(
                super::translate::concept_map_from_fhir(resource)?,
            )),
            Some(_) | None => SuppliedKind::Other,
        };
        Ok(Supplied { key, bytes, kind })
    }

    fn code_system(
        &self,
        resource: &Json,
        key: &str,
        bytes: usize,
    ) -> Result<Arc<CodeSystemVersion>, FhirError> {
        {
            let mut memo = self.memo.lock().unwrap_or_else(PoisonError::into_inner);
            memo.clock += 1;
            let now = memo.clock;
            if let Some(e) = memo.entries.get_mut(key) {
                e.used = now;
                return Ok(e.code_system.clone());
            }
        }
        let max = self.limits.max_concepts;
        let count = concept_count(resource, max);
        if count > max {
            let url = resource.get("url").and_then(Json::as_str).unwrap_or("");
            return Err(FhirError::TooCostly(format!(
                "The supplied CodeSystem '{url}' has more than {max} concepts, the most a tx-resource may have on this server (its size is {bytes} bytes)"
            )));
        }
        budget::check()?;
        let compiled = Arc::new(super::resources::code_system_version_from_fhir(
            resource,
            "tx-resource",
        )?);
        budget::check()?;
        let mut memo = self.memo.lock().unwrap_or_else(PoisonError::into_inner);
        memo.clock += 1;
        let now = memo.clock;
        memo.bytes += bytes;
        let previous = memo.entries.insert(
            key.to_string(),
            MemoEntry {
                code_system: compiled.clone(),
                bytes,
                used: now,
            },
        );
        if let Some(p) = previous {
            memo.bytes -= p.bytes;
        }
        // Least recently used out, past the bounds (the one just added stays).
        while memo.entries.len() > MEMO_ENTRIES || memo.bytes > MEMO_BYTES {
            let Some(oldest) = memo
                .entries
                .iter()
                .filter(|(k, _)| k.as_str() != key)
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(e) = memo.entries.remove(&oldest) {
                memo.bytes -= e.bytes;
            }
        }
        Ok(compiled)
    }

    /// Forgets the compiled CodeSystems of `resources` that nothing else holds (a cache that
    /// ended or expired gives its memory back).
    pub fn release(&self, resources: Vec<Supplied>) {
        let keys: Vec<String> = resources
            .iter()
            .filter(|s| matches!(s.kind, SuppliedKind::CodeSystem(_)))
            .map(|s| s.key.clone())
            .collect();
        drop(resources);
        let mut memo = self.memo.lock().unwrap_or_else(PoisonError::into_inner);
        for key in keys {
            let unused = memo
                .entries
                .get(&key)
                .is_some_and(|e| Arc::strong_count(&e.code_system) == 1);
            if unused && let Some(e) = memo.entries.remove(&key) {
                memo.bytes -= e.bytes;
            }
        }
    }

    /// The registry a request sees: `base` plus `supplied` (later ones win for the same canonical
    /// and version), with the supplements named by `use_supplements` applied.
    pub fn registry(
        &self,
        base: Arc<Registry>,
        supplied: &[Supplied],
        use_supplements: &[String],
    ) -> Result<Arc<Registry>, FhirError> {
        if supplied.is_empty() && use_supplements.is_empty() {
            return Ok(base);
        }
        let mut code_systems = Vec::new();
        let mut value_sets = Vec::new();
        let mut concept_maps = Vec::new();
        for s in supplied {
            match &s.kind {
                SuppliedKind::CodeSystem(cs) => code_systems.push(cs.clone()),
                SuppliedKind::ValueSet(vs) => value_sets.push(vs.clone()),
                SuppliedKind::ConceptMap(cm) => concept_maps.push(cm.clone()),
                SuppliedKind::Other => {}
            }
        }
        let mut registry = base.overlay(code_systems, value_sets, concept_maps);
        super::resources::apply_supplements(&mut registry, use_supplements)?;
        Ok(Arc::new(registry))
    }
}

/// The registry as it stood on the request's `date`: each CodeSystem answers from the release in
/// force then. A CodeSystem the request names (`system`, a coding, or an include of the ValueSet
/// asked for) whose first release came later is a 404, not an empty answer.
pub fn registry_on(
    registry: &Registry,
    p: &OperationParams,
    date: &str,
) -> Result<Arc<Registry>, FhirError> {
    let day = crate::store::date_param(date).ok_or_else(|| {
        FhirError::Invalid(format!(
            "The parameter 'date' value '{date}' is not a FHIR date or dateTime (YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm:ss+zz:zz)"
        ))
    })?;
    let mut systems: Vec<String> = p.texts("system");
    let mut value_sets: Vec<String> = p.texts("valueSet");
    for url in p.texts("url") {
        if registry.knows_code_system(&url) {
            systems.push(url);
        } else {
            value_sets.push(url);
        }
    }
    if let Ok(Some(c)) = p.coding("coding") {
        systems.extend(c.system);
    }
    if let Ok(Some(codings)) = p.codeable_concept("codeableConcept") {
        systems.extend(codings.into_iter().filter_map(|c| c.system));
    }
    for canonical in value_sets {
        let (url, version) = match canonical.split_once('|') {
            Some((u, v)) => (u, Some(v)),
            None => (canonical.as_str(), None),
        };
        if let Some(vs) = registry.value_set(url, version) {
            let includes = vs.resource["compose"]["include"].as_array().cloned();
            systems.extend(
                includes
                    .into_iter()
                    .flatten()
                    .filter_map(|i| i["system"].as_str().map(str::to_string)),
            );
        }
    }
    for system in systems {
        let url = system.split('|').next().unwrap_or(&system);
        if let Some(first) = registry.first_release_after(url, &day) {
            return Err(FhirError::NotFound(format!(
                "No release of the CodeSystem '{url}' was in force on {date}: its first release is {first}"
            )));
        }
    }
    Ok(registry.as_of_shared(&day))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn concepts_are_counted_nested_and_the_count_stops_past_the_limit() {
        let cs = json!({"concept": [{"code": "a", "concept": [{"code": "b"}, {"code": "c"}]}, {"code": "d"}]});
        assert_eq!(concept_count(&cs, 100), 4);
        assert!(concept_count(&cs, 1) > 1);
        assert_ne!(content_key("{\"a\":1}"), content_key("{\"a\":2}"));
    }
}
