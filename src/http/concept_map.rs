//! ConceptMap read, search and `$translate`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::Response;
use serde_json::Value as Json;

use super::request::{FhirRequest, RequestAddress, respond};
use super::search::{search_controls, search_matches, searchset};
use super::{AppState, as_is};
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

fn do_translate(registry: &Registry, p: &OperationParams) -> Result<Json, FhirError> {
    translate(registry, &TranslateRequest::from_params(p)?)
}

/// `ConceptMap/$translate` (GET and POST).
/// <http://hl7.org/fhir/R4/conceptmap-operation-translate.html>
pub async fn translate_code(State(state): State<Arc<AppState>>, req: FhirRequest) -> Response {
    state.operate(&req, as_is, true, do_translate).await
}

/// `ConceptMap/{id}/$translate`.
pub async fn translate_code_in(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    req: FhirRequest,
) -> Response {
    let adjust = move |registry: &Registry, mut p: OperationParams| {
        let m = registry.concept_map_by_id(&id).ok_or_else(|| {
            FhirError::NotFound(format!("ConceptMap/{id} is not known to this server"))
        })?;
        p.params.retain(|(n, _)| n != "url");
        p.params
            .push(("url".into(), ParamValue::Text(m.url.clone())));
        Ok(p)
    };
    state.operate(&req, adjust, true, do_translate).await
}
