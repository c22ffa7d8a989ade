//! `GET /metadata`: the CapabilityStatement (listing exactly what the router implements), or with
//! `mode=terminology` the TerminologyCapabilities (code systems and their versions, expansion
//! parameters, what validate-code and translate support).

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use serde_json::{Value as Json, json};

use super::AppState;
use super::request::{FhirRequest, respond};
use crate::error::FhirError;
use crate::store::Registry;

/// Instance and type operations: (resource type, operation name, OperationDefinition).
pub const OPERATIONS: [(&str, &str, &str); 9] = [
    (
        "CodeSystem",
        "lookup",
        "http://hl7.org/fhir/OperationDefinition/CodeSystem-lookup",
    ),
    (
        "CodeSystem",
        "validate-code",
        "http://hl7.org/fhir/OperationDefinition/CodeSystem-validate-code",
    ),
    (
        "CodeSystem",
        "subsumes",
        "http://hl7.org/fhir/OperationDefinition/CodeSystem-subsumes",
    ),
    (
        "CodeSystem",
        "concept-history",
        "https://fhir-registers.org/fhir/OperationDefinition/CodeSystem-concept-history",
    ),
    (
        "CodeSystem",
        "diff",
        "https://fhir-registers.org/fhir/OperationDefinition/CodeSystem-diff",
    ),
    (
        "ValueSet",
        "expand",
        "http://hl7.org/fhir/OperationDefinition/ValueSet-expand",
    ),
    (
        "ValueSet",
        "validate-code",
        "http://hl7.org/fhir/OperationDefinition/ValueSet-validate-code",
    ),
    (
        "ValueSet",
        "batch-validate-code",
        "http://hl7.org/fhir/uv/tx-ecosystem/OperationDefinition/ValueSet-batch-validate-code",
    ),
    (
        "ConceptMap",
        "translate",
        "http://hl7.org/fhir/OperationDefinition/ConceptMap-translate",
    ),
];

/// System-level operations: (name, OperationDefinition).
pub const SYSTEM_OPERATIONS: [(&str, &str); 2] = [
    (
        "versions",
        "http://hl7.org/fhir/OperationDefinition/CapabilityStatement-versions",
    ),
    (
        "cache-control",
        "https://fhir-registers.org/fhir/OperationDefinition/cache-control",
    ),
];

/// Search parameters implemented for CodeSystem, ValueSet and ConceptMap.
pub const SEARCH_PARAMS: [(&str, &str); 5] = [
    ("url", "uri"),
    ("version", "token"),
    ("name", "string"),
    ("title", "string"),
    ("status", "token"),
];

/// Expansion parameters `$expand` understands.
pub const EXPANSION_PARAMETERS: [&str; 12] = [
    "activeOnly",
    "check-system-version",
    "count",
    "displayLanguage",
    "excludeNested",
    "force-system-version",
    "includeDefinition",
    "includeDesignations",
    "offset",
    "property",
    "system-version",
    "tx-resource",
];

const RELEASE_DATE: &str = "2026-11-24";

fn feature(definition: &str, value: Option<&str>) -> Json {
    let mut v = json!({ "url": "value" });
    if let Some(x) = value {
        v["valueCode"] = json!(x);
    }
    json!({
        "url": "http://hl7.org/fhir/uv/application-feature/StructureDefinition/feature",
        "extension": [{ "url": "definition", "valueCanonical": definition }, v]
    })
}

/// The CapabilityStatement.
pub fn capability_statement() -> Json {
    let resource = |kind: &str| {
        json!({
            "type": kind,
            "interaction": [{ "code": "read" }, { "code": "search-type" }],
            "searchParam": SEARCH_PARAMS.iter().map(|(n, t)| json!({
                "name": n,
                "definition": format!("http://hl7.org/fhir/SearchParameter/conformance-{n}"),
                "type": t
            })).collect::<Vec<_>>(),
            "operation": OPERATIONS.iter().filter(|(k, _, _)| *k == kind).map(|(_, name, def)| json!({
                "name": name,
                "definition": def
            })).collect::<Vec<_>>()
        })
    };
    json!({
        "resourceType": "CapabilityStatement",
        "extension": [
            feature("http://hl7.org/fhir/uv/tx-tests/FeatureDefinition/test-version", Some("1.7.0")),
            feature("http://hl7.org/fhir/uv/tx-ecosystem/FeatureDefinition/CodeSystemAsParameter", None)
        ],
        "url": "https://fhir-registers.org/fhir/CapabilityStatement/fhir-registers",
        "version": env!("CARGO_PKG_VERSION"),
        "name": "FhirRegisters",
        "title": "fhir-registers terminology server",
        "status": "active",
        "date": RELEASE_DATE,
        "kind": "instance",
        "instantiates": ["http://hl7.org/fhir/CapabilityStatement/terminology-server"],
        "software": { "name": "fhir-registers", "version": env!("CARGO_PKG_VERSION"), "releaseDate": RELEASE_DATE },
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "application/fhir+xml"],
        "rest": [{
            "mode": "server",
            "resource": [resource("CodeSystem"), resource("ValueSet"), resource("ConceptMap")],
            "interaction": [{ "code": "batch" }],
            "operation": SYSTEM_OPERATIONS.iter().map(|(name, def)| json!({ "name": name, "definition": def })).collect::<Vec<_>>()
        }]
    })
}

/// The TerminologyCapabilities: every CodeSystem with its versions, and what the operations take.
pub fn terminology_capabilities(registry: &Registry) -> Json {
    let mut systems: Vec<(String, Vec<String>)> = Vec::new();
    for cs in registry.all_code_systems() {
        match systems.iter_mut().find(|(u, _)| *u == cs.meta.url) {
            Some((_, versions)) => versions.push(cs.version.clone()),
            None => systems.push((cs.meta.url.clone(), vec![cs.version.clone()])),
        }
    }
    json!({
        "resourceType": "TerminologyCapabilities",
        "url": "https://fhir-registers.org/fhir/TerminologyCapabilities/fhir-registers",
        "version": env!("CARGO_PKG_VERSION"),
        "name": "FhirRegisters",
        "title": "fhir-registers terminology capabilities",
        "status": "active",
        "date": RELEASE_DATE,
        "kind": "instance",
        "software": { "name": "fhir-registers", "version": env!("CARGO_PKG_VERSION") },
        "codeSystem": systems.iter().map(|(url, versions)| {
            let latest = versions.last().cloned().unwrap_or_default();
            json!({
                "uri": url,
                "version": versions.iter().filter(|v| !v.is_empty()).map(|v| json!({ "code": v, "isDefault": *v == latest })).collect::<Vec<_>>()
            })
        }).collect::<Vec<_>>(),
        "expansion": {
            "hierarchical": false,
            "paging": true,
            "parameter": EXPANSION_PARAMETERS.iter().map(|p| json!({ "name": p })).collect::<Vec<_>>(),
            "textFilter": "Word-prefix match, case-insensitive, over code and display; every word must match"
        },
        "codeSearch": "all",
        "validateCode": { "translations": false },
        "translation": { "needsMap": false },
        "closure": { "translation": false }
    })
}

/// `GET /metadata` (`?mode=terminology` for TerminologyCapabilities).
pub async fn capabilities(State(state): State<Arc<AppState>>, req: FhirRequest) -> Response {
    let result = match req.query_value("mode").as_deref() {
        None | Some("full") | Some("normative") => Ok(capability_statement()),
        Some("terminology") => Ok(terminology_capabilities(&state.registry())),
        Some(other) => Err(FhirError::Invalid(format!(
            "metadata mode '{other}' is not supported (full, normative or terminology)"
        ))),
    };
    respond(&req, result)
}
