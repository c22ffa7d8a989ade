//! ValueSet read, search and operations (`$expand`, `$validate-code`).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::Response;
use serde_json::Value as Json;

use super::request::{FhirRequest, RequestAddress, respond};
use super::search::{search_controls, search_matches, searchset};
use super::{AppState, as_is};
use crate::error::FhirError;
use crate::fhir::params::{OperationParams, ParamValue, ParametersOut};
use crate::store::Registry;
use crate::terminology::expand::{ExpandLimits, ExpandRequest, expand};
use crate::terminology::validate::{Target, ValidateRequest, validate_code_parameters};

/// `GET /ValueSet/{id}` — read.
pub async fn read_value_set(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    req: FhirRequest,
) -> Response {
    let result = state
        .registry()
        .value_set_by_id(&id)
        .map(|v| v.resource.clone())
        .ok_or_else(|| FhirError::NotFound(format!("ValueSet/{id} is not known to this server")));
    respond(&req, result)
}

/// `GET /ValueSet?url=&version=&name=&title=&status=&_count=`.
pub async fn search_value_sets(
    State(state): State<Arc<AppState>>,
    address: RequestAddress,
    req: FhirRequest,
) -> Response {
    let result = search_controls(&req).and_then(|controls| {
        let registry = state.registry();
        let matches: Vec<_> = registry
            .all_value_sets()
            .filter(|vs| {
                let get = |k: &str| match k {
                    "_id" => Some(vs.id.clone()),
                    "url" => Some(vs.url.clone()),
                    "version" => vs.version.clone(),
                    other => vs
                        .resource
                        .get(other)
                        .and_then(|v| v.as_str())
                        .map(str::to_string),
                };
                search_matches(&req, &get)
            })
            .collect();
        searchset(&req, &address, controls, matches, |vs| {
            Ok(vs.resource.clone())
        })
    });
    respond(&req, result)
}

fn with_instance(
    registry: &Registry,
    id: &str,
    mut p: OperationParams,
) -> Result<OperationParams, FhirError> {
    let vs = registry
        .value_set_by_id(id)
        .ok_or_else(|| FhirError::NotFound(format!("ValueSet/{id} is not known to this server")))?;
    p.params.retain(|(n, _)| n != "url" && n != "valueSet");
    p.params
        .push(("valueSet".into(), ParamValue::Resource(vs.resource.clone())));
    Ok(p)
}

fn do_expand(
    limits: ExpandLimits,
) -> impl FnOnce(&Registry, &OperationParams) -> Result<Json, FhirError> + Send + 'static {
    move |registry, p| expand(registry, &ExpandRequest::from_params(p)?, limits)
}

fn do_validate(registry: &Registry, p: &OperationParams) -> Result<ParametersOut, FhirError> {
    validate_code_parameters(
        registry,
        &ValidateRequest::from_params(p, Target::ValueSet)?,
    )
}

/// `ValueSet/$expand` (GET and POST).
/// <http://hl7.org/fhir/R4/valueset-operation-expand.html>
pub async fn expand_value_set(State(state): State<Arc<AppState>>, req: FhirRequest) -> Response {
    let op = do_expand(state.limits);
    state.operate(&req, as_is, true, op).await
}

/// `ValueSet/{id}/$expand`.
pub async fn expand_value_set_in(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    req: FhirRequest,
) -> Response {
    let op = do_expand(state.limits);
    state
        .operate(&req, move |r, p| with_instance(r, &id, p), true, op)
        .await
}

/// `ValueSet/$validate-code` (GET and POST).
/// <http://hl7.org/fhir/R4/valueset-operation-validate-code.html>
pub async fn validate_code_in_value_set(
    State(state): State<Arc<AppState>>,
    req: FhirRequest,
) -> Response {
    state.operate(&req, as_is, true, do_validate).await
}

/// `ValueSet/{id}/$validate-code`.
pub async fn validate_code_in_value_set_in(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    req: FhirRequest,
) -> Response {
    state
        .operate(
            &req,
            move |r, p| with_instance(r, &id, p),
            true,
            do_validate,
        )
        .await
}
