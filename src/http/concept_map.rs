//! ConceptMap read, search and `$translate`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::Response;
use serde_json::Value as Json;

use super::request::{FhirRequest, RequestAddress, respond};
use super::search::{search_controls, search_matches, searchset};
use super::{AppState, Dating};
use crate::error::FhirError;
use crate::fhir::params::{OperationParams, ParamValue};
use crate::store::Registry;
use crate::terminology::translate::{TranslateRequest, concept_map_json, translate};

/// Derived maps over CodeSystems with at most this many concepts are read with their elements.
const ELEMENTS_IN_READ: usize = 20_000;

/// `GET /ConceptMap/{id}` — read.
pub async fn read_concept_map(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    req: FhirRequest,
) -> Response {
    let registry = state.registry();
    let result = registry
        .concept_map_by_id(&id)
        .map(|m| concept_map_json(&registry, &m, ELEMENTS_IN_READ))
        .ok_or_else(|| FhirError::NotFound(format!("ConceptMap/{id} is not known to this server")));
    respond(&req, result)
}

/// `GET /ConceptMap?url=&name=&title=&status=&_count=`.
pub async fn search_concept_maps(
    State(state): State<Arc<AppState>>,
    address: RequestAddress,
    req: FhirRequest,
) -> Response {
    let result = search_controls(&req).and_then(|controls| {
        let registry = state.registry();
        let matches: Vec<_> = registry
            .all_concept_maps()
            .filter(|m| {
                let get = |k: &str| match k {
                    "_id" => Some(m.id.clone()),
                    "url" => Some(m.url.clone()),
                    "version" => m.version.clone(),
                    other => m
                        .resource
                        .get(other)
                        .and_then(Json::as_str)
                        .map(str::to_string),
                };
                search_matches(&req, &get)
            })
            .collect();
        // Search lists the maps; their elements come with a read.
        searchset(&req, &address, controls, matches, |m| {
            let mut r = m.resource.clone();
            if let Some(o) = r.as_object_mut() {
                o.remove("group");
            }
            Ok(r)
        })
    });
    respond(&req, result)
}

/// Runs `$translate`, optionally on one ConceptMap (the instance form). `date` is the day the
/// mappings should hold on, which `$translate` reads itself ([`Dating::Operation`]): the registry
/// as it stood that day holds no release for a day before a register's first, though registers
/// that record their own history (ODS memberships, NSPL) describe such days.
async fn translate_on(state: Arc<AppState>, req: FhirRequest, id: Option<String>) -> Response {
    let adjust = move |registry: &Registry, mut p: OperationParams| {
        if let Some(id) = id {
            let m = registry.concept_map_by_id(&id).ok_or_else(|| {
                FhirError::NotFound(format!("ConceptMap/{id} is not known to this server"))
            })?;
            p.params.retain(|(n, _)| n != "url");
            p.params
                .push(("url".into(), ParamValue::Text(m.url.clone())));
        }
        Ok(p)
    };
    let op = |registry: &Registry, p: &OperationParams| {
        translate(registry, &TranslateRequest::from_params(p)?)
    };
    state
        .operate_dated(&req, Dating::Operation, adjust, true, op)
        .await
}

/// `ConceptMap/$translate` (GET and POST).
/// <http://hl7.org/fhir/R4/conceptmap-operation-translate.html>
pub async fn translate_code(State(state): State<Arc<AppState>>, req: FhirRequest) -> Response {
    translate_on(state, req, None).await
}

/// `ConceptMap/{id}/$translate`.
pub async fn translate_code_in(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    req: FhirRequest,
) -> Response {
    translate_on(state, req, Some(id)).await
}
