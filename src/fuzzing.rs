//! Entry points for the fuzz targets in `fuzz/` and for the test that replays their committed
//! corpus (`tests/fuzz_corpus.rs`): each takes arbitrary bytes, runs one piece of untrusted-input
//! handling through the library's public API, and must return without panicking whatever the
//! bytes are. Errors are the expected outcome for most inputs and are dropped.
//!
//! Not part of the server's API: nothing here is called by the server itself.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use serde_json::{Value as Json, json};

use crate::fhir::format::{Body, parse_body};
use crate::fhir::params::OperationParams;
use crate::mapping::{self, Mapping, MappingSet};
use crate::store::{Registry, matches_text, words};
use crate::terminology::compose::Compose;
use crate::terminology::expand::{ExpandLimits, ExpandRequest, expand};
use crate::terminology::lookup::{LookupRequest, lookup};
use crate::terminology::resources::code_system_version_from_fhir;
use crate::terminology::subsumes::{SubsumesRequest, subsumes};
use crate::terminology::translate::{TranslateRequest, translate};
use crate::terminology::validate::{Target, ValidateRequest, validate_code};

/// Limits for fuzzed expansions: small, so that one input stays cheap.
const LIMITS: ExpandLimits = ExpandLimits {
    max_unpaged: 1_000,
    max_unpaged_supplied: 1_000,
    max_count: 1_000,
    max_filter_chars: 512,
    max_filter_words: 32,
};

/// A mapping file's text: parsed and compiled, and when it compiles, its resources derived.
pub fn mapping_toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(m) = Mapping::from_text(Path::new("fuzz.toml"), text) else {
        return;
    };
    let _ = mapping::value_set_resources(&m);
    let _ = crate::registers::derived_concept_maps(&m);
    let _ = MappingSet::from_mappings(vec![m]);
}

/// The shipped mappings (`mappings/` of this repository), loaded once.
pub fn shipped_mappings() -> &'static [Mapping] {
    static SET: OnceLock<Vec<Mapping>> = OnceLock::new();
    SET.get_or_init(|| {
        MappingSet::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings"))
            .map(|s| s.mappings)
            .unwrap_or_default()
    })
}

/// Register rows: the first line names a shipped mapping by id (any other first line picks one
/// by its first byte), the rest is the (uncompressed) file, read through it into a release.
pub fn csv_rows(data: &[u8]) {
    let mappings = shipped_mappings();
    let split = data.iter().position(|b| *b == b'\n').unwrap_or(data.len());
    let (first_line, rest) = (&data[..split], data.get(split + 1..).unwrap_or_default());
    let named = mappings.iter().find(|m| m.id().as_bytes() == first_line);
    let picked = data
        .first()
        .and_then(|b| mappings.get(usize::from(*b) % mappings.len().max(1)));
    let Some(m) = named.or(picked) else {
        return;
    };
    let _ = mapping::read_release_from(m, rest, "fuzz.csv", "1", &mut |_| {});
}

/// A request body in JSON (`application/fhir+json`): read as `Parameters`, then as each
/// operation's request.
pub fn parameters_json(data: &[u8]) {
    parameters(Some("application/fhir+json"), data);
}

/// A request body in XML (`application/fhir+xml`): as [`parameters_json`].
pub fn parameters_xml(data: &[u8]) {
    parameters(Some("application/fhir+xml"), data);
}

fn parameters(content_type: Option<&str>, data: &[u8]) {
    let Ok(Body::Resource(body)) = parse_body(content_type, data) else {
        return;
    };
    let Ok(p) = OperationParams::from_parameters(&body) else {
        return;
    };
    let registry = small_registry();
    if let Ok(req) = ExpandRequest::from_params(&p) {
        let _ = expand(registry, &req, LIMITS);
    }
    if let Ok(req) = LookupRequest::from_params(&p) {
        let _ = lookup(registry, &req);
    }
    for target in [Target::CodeSystem, Target::ValueSet] {
        if let Ok(req) = ValidateRequest::from_params(&p, target) {
            let _ = validate_code(registry, &req);
        }
    }
    if let Ok(req) = SubsumesRequest::from_params(&p, None) {
        let _ = subsumes(registry, &req);
    }
    if let Ok(req) = TranslateRequest::from_params(&p) {
        let _ = translate(registry, &req);
    }
}

/// The small hierarchical CodeSystem the compose and filter targets work over.
pub const SMALL_CODE_SYSTEM: &str = "http://example.org/fuzz/shapes";

/// A registry holding one small CodeSystem (a hierarchy with properties, designations and an
/// inactive code) and a ConceptMap over it, built once.
pub fn small_registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let cs = json!({
            "resourceType": "CodeSystem", "url": SMALL_CODE_SYSTEM, "version": "1",
            "status": "active", "content": "complete", "hierarchyMeaning": "is-a",
            "property": [{"code": "sides", "type": "integer"}, {"code": "colour", "type": "code"}],
            "concept": [
                {"code": "shape", "display": "Shape", "concept": [
                    {"code": "polygon", "display": "Polygon", "concept": [
                        {"code": "triangle", "display": "Triangle", "property": [{"code": "sides", "valueInteger": 3}]},
                        {"code": "square", "display": "Square", "property": [{"code": "sides", "valueInteger": 4}, {"code": "colour", "valueCode": "red"}],
                            "designation": [{"language": "fr", "value": "Carré"}]},
                        {"code": "pentagon", "display": "Pentagon (retired)", "property": [{"code": "status", "valueCode": "retired"}]}]},
                    {"code": "circle", "display": "Circle", "property": [{"code": "colour", "valueCode": "blue"}]},
                    {"code": "ellipse", "display": "Ellipse", "property": [{"code": "notSelectable", "valueBoolean": true}]}]}
            ]
        });
        let map = json!({
            "resourceType": "ConceptMap", "url": "http://example.org/fuzz/shape-to-colour", "status": "active",
            "group": [{"source": SMALL_CODE_SYSTEM, "target": "http://example.org/fuzz/colour", "element": [
                {"code": "square", "target": [{"code": "red", "equivalence": "equivalent"}]},
                {"code": "circle", "target": [{"code": "blue", "equivalence": "wider"}]}]}]
        });
        let mut registry = Registry::default();
        if let Ok(v) = code_system_version_from_fhir(&cs, "fuzz") {
            registry.add_code_system_arc(Arc::new(v));
        }
        if let Ok(m) = crate::terminology::translate::concept_map_from_fhir(&map) {
            registry.add_concept_map(m);
        }
        registry
    })
}

/// A ValueSet (JSON; `compose` alone is taken too) expanded over [`small_registry`], and a few
/// codes tested for membership.
pub fn compose(data: &[u8]) {
    let Ok(mut vs) = serde_json::from_slice::<Json>(data) else {
        return;
    };
    if vs.get("resourceType").is_none() && vs.is_object() {
        vs = json!({"resourceType": "ValueSet", "status": "active", "compose": vs});
    }
    let registry = small_registry();
    let req = ExpandRequest {
        value_set: Some(vs.clone()),
        count: Some(50),
        ..ExpandRequest::default()
    };
    let _ = expand(registry, &req, LIMITS);
    let _ = Compose::from_value_set(&vs);
    for code in ["square", "shape", "nope"] {
        let p = OperationParams::from_query(&[
            ("system".into(), SMALL_CODE_SYSTEM.into()),
            ("code".into(), code.into()),
        ]);
        if let Ok(mut req) = ValidateRequest::from_params(&p, Target::ValueSet) {
            req.value_set = Some(vs.clone());
            let _ = validate_code(registry, &req);
        }
    }
}

/// The text and regex filters: the bytes (UTF-8) are the `filter` of an `$expand` over
/// [`small_registry`], the value of a `regex` compose filter on codes and on a property, and the
/// words matched against a code and display.
pub fn filters(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let registry = small_registry();
    let all = json!({"resourceType": "ValueSet", "status": "active",
        "compose": {"include": [{"system": SMALL_CODE_SYSTEM}]}});
    let _ = expand(
        registry,
        &ExpandRequest {
            value_set: Some(all),
            filter: Some(text.to_string()),
            ..ExpandRequest::default()
        },
        LIMITS,
    );
    for property in ["code", "colour", "display"] {
        let vs = json!({"resourceType": "ValueSet", "status": "active",
            "compose": {"include": [{"system": SMALL_CODE_SYSTEM,
                "filter": [{"property": property, "op": "regex", "value": text}]}]}});
        let _ = expand(
            registry,
            &ExpandRequest {
                value_set: Some(vs),
                ..ExpandRequest::default()
            },
            LIMITS,
        );
    }
    let words: Vec<String> = words(text).collect();
    let _ = matches_text("J45.9", Some("Asthma, unspecified"), &words);
    let _ = matches_text(text, Some(text), &words);
}
