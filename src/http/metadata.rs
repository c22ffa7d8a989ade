//! `GET /metadata`: the CapabilityStatement, listing exactly what the router implements.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use serde_json::{Value as Json, json};

use super::AppState;
use super::request::{FhirRequest, respond};

/// Operations the server implements: (resource type, operation name, OperationDefinition).
pub const OPERATIONS: [(&str, &str, &str); 6] = [
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
        "ConceptMap",
        "translate",
        "http://hl7.org/fhir/OperationDefinition/ConceptMap-translate",
    ),
];

/// Search parameters implemented for CodeSystem and ValueSet.
pub const SEARCH_PARAMS: [(&str, &str); 5] = [
    ("url", "uri"),
    ("version", "token"),
    ("name", "string"),
    ("title", "string"),
    ("status", "token"),
];

/// The CapabilityStatement.
pub fn capability_statement() -> Json {
    let resource = |kind: &str| {
        json!({
            "type": kind,
            "profile": format!("http://hl7.org/fhir/StructureDefinition/{kind}"),
            "interaction": [{ "code": "read" }, { "code": "search-type" }],
            "versioning": "versioned",
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
        "id": "fhir-registers",
        "name": "FhirRegisters",
        "title": "fhir-registers terminology server",
        "status": "active",
        "date": "2026-11-24",
        "publisher": "fhir-registers",
        "kind": "instance",
        "software": { "name": "fhir-registers", "version": env!("CARGO_PKG_VERSION") },
        "implementation": { "description": "National reference-data registers (ODS, postcodes, ICD-10) as FHIR R4 terminology" },
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "application/fhir+xml", "json", "xml"],
        "rest": [{
            "mode": "server",
            "resource": [resource("CodeSystem"), resource("ValueSet"), resource("ConceptMap")]
        }]
    })
}

/// `GET /metadata`.
pub async fn capabilities(State(_state): State<Arc<AppState>>, req: FhirRequest) -> Response {
    respond(&req, Ok(capability_statement()))
}
