//! CodeSystem read, search and operations (`$lookup`, `$validate-code`, `$subsumes`,
//! `$concept-history`, `$diff`).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::Response;
use serde_json::{Value as Json, json};

use super::request::{FhirRequest, respond};
use super::{AppState, as_is};
use crate::error::FhirError;
use crate::fhir::params::{OperationParams, ParamValue, ParametersOut};
use crate::store::{CodeSystemVersion, Registry};
use crate::terminology::history::{DiffRequest, HistoryRequest, concept_history, diff_versions};
use crate::terminology::lookup::{LookupRequest, lookup_parameters};
use crate::terminology::resources::{code_system_json, code_system_resource_id};
use crate::terminology::subsumes::{SubsumesRequest, subsumes};
use crate::terminology::validate::{Target, ValidateRequest, validate_code_parameters};

/// CodeSystems with at most this many concepts are read with their concepts by default.
pub const CONCEPTS_IN_READ: usize = 10_000;

fn is_latest(registry: &Registry, cs: &CodeSystemVersion) -> bool {
    registry
        .code_system(&cs.meta.url, None)
        .is_some_and(|l| l.version == cs.version)
}

/// Renders one CodeSystem version for read/search, deciding whether concepts are included:
/// `_summary=true` never, `_summary=false` up to the expansion limit, otherwise when small.
fn render(
    state: &AppState,
    registry: &Registry,
    cs: &CodeSystemVersion,
    summary: Option<&str>,
) -> Result<Json, FhirError> {
    let with_concepts = match summary {
        Some("true") | Some("count") | Some("text") => false,
        Some("false") | Some("data") => {
            if cs.len() > state.limits.max_unpaged {
                return Err(FhirError::TooCostly(format!(
                    "CodeSystem '{}' has {} concepts, more than the {} that can be returned in one resource; use $lookup, $validate-code or $expand with paging",
                    cs.meta.url,
                    cs.len(),
                    state.limits.max_unpaged
                )));
            }
            true
        }
        _ => cs.len() <= CONCEPTS_IN_READ,
    };
    Ok(code_system_json(cs, is_latest(registry, cs), with_concepts))
}

/// `GET /CodeSystem/{id}` — read (`{id}--{version}` reads an older version).
pub async fn read_code_system(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    req: FhirRequest,
) -> Response {
    let registry = state.registry();
    let result = registry
        .code_system_by_id(&id)
        .ok_or_else(|| FhirError::NotFound(format!("CodeSystem/{id} is not known to this server")))
        .and_then(|cs| render(&state, &registry, &cs, req.query_value("_summary")));
    respond(&req, result)
}

/// A searchset Bundle of resources.
pub fn searchset(resources: Vec<Json>, self_link: &str) -> Json {
    let total = resources.len();
    json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "total": total,
        "link": [{ "relation": "self", "url": self_link }],
        "entry": resources.into_iter().map(|r| {
            let full = format!("{}/{}", r["resourceType"].as_str().unwrap_or(""), r["id"].as_str().unwrap_or(""));
            json!({ "fullUrl": full, "resource": r, "search": { "mode": "match" } })
        }).collect::<Vec<_>>()
    })
}

fn self_link(kind: &str, req: &FhirRequest) -> String {
    let q: Vec<String> = req.query.iter().map(|(k, v)| format!("{k}={v}")).collect();
    if q.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}?{}", q.join("&"))
    }
}

/// Text search parameters shared by CodeSystem and ValueSet search: exact match on `url` and
/// `version`, case-insensitive starts-with on `name` and `title`, exact `status`.
pub fn search_matches(req: &FhirRequest, get: &dyn Fn(&str) -> Option<String>) -> bool {
    req.query.iter().all(|(k, v)| {
        let field = get(k.split(':').next().unwrap_or(k));
        match k.as_str() {
            "url" | "version" | "status" | "_id" | "system" => field.as_deref() == Some(v.as_str()),
            "name" | "title" | "publisher" => {
                field.is_some_and(|f| f.to_lowercase().starts_with(&v.to_lowercase()))
            }
            "name:contains" | "title:contains" => {
                field.is_some_and(|f| f.to_lowercase().contains(&v.to_lowercase()))
            }
            "name:exact" | "title:exact" => field.as_deref() == Some(v.as_str()),
            _ => true,
        }
    })
}

/// Validates the common search controls (`_count`, `_summary`).
pub fn search_controls(req: &FhirRequest) -> Result<Option<usize>, FhirError> {
    let count = match req.query_value("_count") {
        None => None,
        Some(c) => Some(c.parse::<usize>().map_err(|_| {
            FhirError::Invalid(format!("_count must be a non-negative integer, not '{c}'"))
        })?),
    };
    if let Some(s) = req.query_value("_summary")
        && !["true", "false", "count", "text", "data"].contains(&s)
    {
        return Err(FhirError::Invalid(format!(
            "_summary must be true, false, count, text or data, not '{s}'"
        )));
    }
    Ok(count)
}

/// `GET /CodeSystem?url=&version=&name=&title=&status=&_summary=&_count=` — every version
/// matches separately; summary (no concepts) unless `_summary=false`.
pub async fn search_code_systems(State(state): State<Arc<AppState>>, req: FhirRequest) -> Response {
    let result = (|| {
        let count = search_controls(&req)?;
        let registry = state.registry();
        let mut out = Vec::new();
        for cs in registry.all_code_systems() {
            let get = |k: &str| -> Option<String> {
                match k {
                    "url" | "system" => Some(cs.meta.url.clone()),
                    "version" => Some(cs.version.clone()),
                    "name" => cs.meta.name.clone(),
                    "title" => cs.meta.title.clone(),
                    "status" => Some(cs.meta.status.clone()),
                    "publisher" => cs.meta.publisher.clone(),
                    "_id" => Some(code_system_resource_id(cs, is_latest(&registry, cs))),
                    _ => None,
                }
            };
            if search_matches(&req, &get) {
                out.push(cs.clone());
            }
        }
        let total = out.len();
        if req.query_value("_summary") == Some("count") {
            return Ok(json!({ "resourceType": "Bundle", "type": "searchset", "total": total }));
        }
        let summary = req.query_value("_summary").or(Some("true"));
        let resources = out
            .iter()
            .take(count.unwrap_or(usize::MAX))
            .map(|cs| render(&state, &registry, cs, summary))
            .collect::<Result<Vec<_>, _>>()?;
        let mut bundle = searchset(resources, &self_link("CodeSystem", &req));
        bundle["total"] = json!(total);
        Ok(bundle)
    })();
    respond(&req, result)
}

/// Adds `system` (and `version`) of an instance-level call to the parameters.
fn instance_params(
    registry: &Registry,
    id: &str,
    mut p: OperationParams,
    system_name: &str,
) -> Result<OperationParams, FhirError> {
    let cs = registry.code_system_by_id(id).ok_or_else(|| {
        FhirError::NotFound(format!("CodeSystem/{id} is not known to this server"))
    })?;
    p.params.retain(|(n, _)| n != system_name);
    p.params
        .push((system_name.into(), ParamValue::Text(cs.meta.url.clone())));
    if id.contains("--") && !p.params.iter().any(|(n, _)| n == "version") {
        p.params
            .push(("version".into(), ParamValue::Text(cs.version.clone())));
    }
    Ok(p)
}

fn do_lookup(registry: &Registry, p: &OperationParams) -> Result<ParametersOut, FhirError> {
    lookup_parameters(registry, &LookupRequest::from_params(p)?)
}

fn do_validate(registry: &Registry, p: &OperationParams) -> Result<ParametersOut, FhirError> {
    validate_code_parameters(
        registry,
        &ValidateRequest::from_params(p, Target::CodeSystem)?,
    )
}

fn do_subsumes(registry: &Registry, p: &OperationParams) -> Result<Json, FhirError> {
    subsumes(registry, &SubsumesRequest::from_params(p, None)?)
}

/// `CodeSystem/$lookup` (GET and POST).
/// <http://hl7.org/fhir/R4/codesystem-operation-lookup.html>
pub async fn lookup_code(State(state): State<Arc<AppState>>, req: FhirRequest) -> Response {
    state.operate(&req, as_is, false, do_lookup).await
}

/// `CodeSystem/{id}/$lookup`.
pub async fn lookup_code_in(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    req: FhirRequest,
) -> Response {
    state
        .operate(
            &req,
            move |r, p| instance_params(r, &id, p, "system"),
            false,
            do_lookup,
        )
        .await
}

/// `CodeSystem/$validate-code` (GET and POST).
/// <http://hl7.org/fhir/R4/codesystem-operation-validate-code.html>
pub async fn validate_code_in_code_system(
    State(state): State<Arc<AppState>>,
    req: FhirRequest,
) -> Response {
    state.operate(&req, as_is, false, do_validate).await
}

/// `CodeSystem/{id}/$validate-code`.
pub async fn validate_code_in_code_system_in(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    req: FhirRequest,
) -> Response {
    state
        .operate(
            &req,
            move |r, p| instance_params(r, &id, p, "url"),
            false,
            do_validate,
        )
        .await
}

/// `CodeSystem/$subsumes` (GET and POST).
/// <http://hl7.org/fhir/R4/codesystem-operation-subsumes.html>
pub async fn subsumes_codes(State(state): State<Arc<AppState>>, req: FhirRequest) -> Response {
    state.operate(&req, as_is, false, do_subsumes).await
}

/// `CodeSystem/{id}/$subsumes`.
pub async fn subsumes_codes_in(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    req: FhirRequest,
) -> Response {
    state
        .operate(
            &req,
            move |r, p| instance_params(r, &id, p, "system"),
            false,
            do_subsumes,
        )
        .await
}

fn do_history(registry: &Registry, p: &OperationParams) -> Result<Json, FhirError> {
    concept_history(registry, &HistoryRequest::from_params(p)?)
}

fn do_diff(registry: &Registry, p: &OperationParams) -> Result<Json, FhirError> {
    diff_versions(registry, &DiffRequest::from_params(p)?)
}

/// `CodeSystem/$concept-history` (GET and POST): one code through every version.
/// `conformance/OperationDefinition-CodeSystem-concept-history.json`
pub async fn concept_history_of(State(state): State<Arc<AppState>>, req: FhirRequest) -> Response {
    state.operate(&req, as_is, false, do_history).await
}

/// `CodeSystem/{id}/$concept-history`.
pub async fn concept_history_in(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    req: FhirRequest,
) -> Response {
    state
        .operate(
            &req,
            move |r, p| instance_params(r, &id, p, "system"),
            false,
            do_history,
        )
        .await
}

/// `CodeSystem/$diff` (GET and POST): what changed between two versions.
/// `conformance/OperationDefinition-CodeSystem-diff.json`
pub async fn diff_of(State(state): State<Arc<AppState>>, req: FhirRequest) -> Response {
    state.operate(&req, as_is, true, do_diff).await
}

/// `CodeSystem/{id}/$diff`.
pub async fn diff_in(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    req: FhirRequest,
) -> Response {
    state
        .operate(
            &req,
            move |r, p| instance_params(r, &id, p, "url"),
            true,
            do_diff,
        )
        .await
}
