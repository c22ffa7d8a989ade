//! CodeSystem read, search and operations (`$lookup`, `$validate-code`, `$subsumes`,
//! `$concept-history`, `$diff`).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::Response;
use serde_json::Value as Json;

use super::request::{FhirRequest, RequestAddress, respond};
use super::search::{search_controls, search_matches, searchset};
use super::{AppState, as_is};
use crate::error::FhirError;
use crate::fhir::params::{Answer, OperationParams, ParamValue, ParametersOut};
use crate::store::{CodeSystemVersion, Registry};
use crate::terminology::history::{DiffRequest, HistoryRequest, concept_history, diff_versions};
use crate::terminology::lookup::{LookupRequest, lookup_json, lookup_parameters};
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
        .and_then(|cs| {
            render(
                &state,
                &registry,
                &cs,
                req.query_value("_summary").as_deref(),
            )
        });
    respond(&req, result)
}

/// `GET /CodeSystem?url=&version=&name=&title=&status=&_summary=&_count=` — every version
/// matches separately; summary (no concepts) unless `_summary=false`.
pub async fn search_code_systems(
    State(state): State<Arc<AppState>>,
    address: RequestAddress,
    req: FhirRequest,
) -> Response {
    let result = search_controls(&req).and_then(|controls| {
        let registry = state.registry();
        let matches: Vec<_> = registry
            .all_code_systems()
            .filter(|cs| {
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
                search_matches(&req, &get)
            })
            .collect();
        let summary = req.query_value("_summary");
        let summary = summary.as_deref().or(Some("true"));
        searchset(&req, &address, controls, matches, |cs| {
            render(&state, &registry, cs, summary)
        })
    });
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

/// A `$lookup`, written straight to compact JSON when that is what the response is.
fn do_lookup(
    compact_json: bool,
) -> impl FnOnce(&Registry, &OperationParams) -> Result<Answer, FhirError> + Send + 'static {
    move |registry, p| {
        let req = LookupRequest::from_params(p)?;
        if compact_json {
            lookup_json(registry, &req).map(Answer::CompactJson)
        } else {
            lookup_parameters(registry, &req).map(Answer::from)
        }
    }
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
    let op = do_lookup(req.compact_json());
    state.operate(&req, as_is, false, op).await
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
            do_lookup(req.compact_json()),
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
