//! Batches: a FHIR `Bundle` of type `batch` posted to the base runs each entry through the router
//! and answers a `batch-response`; `ValueSet/$batch-validate-code` validates several codings
//! against one ValueSet in one call.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{Method, Request, header};
use axum::response::Response;
use http_body_util::BodyExt;
use serde_json::{Value as Json, json};
use tower::ServiceExt;

use super::request::{FhirRequest, respond};
use super::{AppState, as_is};
use crate::error::FhirError;
use crate::fhir::format::Body as ParsedBody;
use crate::fhir::params::{OperationParams, ParamValue, ParametersOut};
use crate::store::Registry;
use crate::terminology::validate::{Target, ValidateRequest, validate_code};

/// Most entries one batch may hold.
const MAX_ENTRIES: usize = 1_000;

fn reason(status: u16) -> &'static str {
    axum::http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("")
}

/// `POST /` with a `Bundle` of type `batch`.
pub async fn run_batch(State(state): State<Arc<AppState>>, req: FhirRequest) -> Response {
    let bundle = match &req.body {
        Some(Ok(ParsedBody::Resource(r))) => r.clone(),
        Some(Err(e)) => return respond(&req, Err(e.clone())),
        _ => {
            return respond(
                &req,
                Err(FhirError::Required(
                    "POST to the base needs a Bundle of type batch".into(),
                )),
            );
        }
    };
    let result = async {
        if bundle.get("resourceType").and_then(Json::as_str) != Some("Bundle") {
            return Err(FhirError::Invalid("POST to the base takes a Bundle".into()));
        }
        match bundle.get("type").and_then(Json::as_str) {
            Some("batch") => {}
            Some(other) => {
                return Err(FhirError::NotSupported(format!(
                    "Bundle type '{other}' is not supported (only batch)"
                )));
            }
            None => return Err(FhirError::Invalid("the Bundle has no type".into())),
        }
        let entries = bundle
            .get("entry")
            .and_then(Json::as_array)
            .cloned()
            .unwrap_or_default();
        if entries.len() > MAX_ENTRIES {
            return Err(FhirError::TooCostly(format!(
                "a batch may hold at most {MAX_ENTRIES} entries"
            )));
        }
        let router = super::app_at(state.clone(), "/fhir");
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
            let (status, resource) = run_entry(router.clone(), &entry).await;
            let mut response =
                json!({ "status": format!("{status} {}", reason(status)).trim_end().to_string() });
            if (200..300).contains(&status) {
                out.push(json!({ "resource": resource, "response": response }));
            } else {
                response["outcome"] = resource;
                out.push(json!({ "response": response }));
            }
        }
        Ok(json!({ "resourceType": "Bundle", "type": "batch-response", "entry": out }))
    }
    .await;
    respond(&req, result)
}

async fn run_entry(router: axum::Router, entry: &Json) -> (u16, Json) {
    let fail = |e: FhirError| (e.classify().0.as_u16(), e.to_operation_outcome());
    let Some(request) = entry.get("request") else {
        return fail(FhirError::Invalid("a batch entry has no request".into()));
    };
    let method = request
        .get("method")
        .and_then(Json::as_str)
        .unwrap_or("GET");
    let Some(url) = request.get("url").and_then(Json::as_str) else {
        return fail(FhirError::Invalid(
            "a batch entry request has no url".into(),
        ));
    };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return fail(FhirError::Invalid(format!(
            "'{method}' is not an HTTP method"
        )));
    };
    let path = url.trim_start_matches('/');
    let path = path.strip_prefix("fhir/").unwrap_or(path);
    let body = entry
        .get("resource")
        .map(|r| Body::from(r.to_string()))
        .unwrap_or_else(Body::empty);
    let Ok(http) = Request::builder()
        .method(method)
        .uri(format!("/fhir/{path}"))
        .header(header::CONTENT_TYPE, "application/fhir+json")
        .header(header::ACCEPT, "application/fhir+json")
        .body(body)
    else {
        return fail(FhirError::Invalid(format!(
            "'{url}' is not a valid request url"
        )));
    };
    let Ok(resp) = router.oneshot(http).await;
    let status = resp.status().as_u16();
    let bytes = match resp.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return fail(FhirError::Internal(e.to_string())),
    };
    match serde_json::from_slice(&bytes) {
        Ok(json) => (status, json),
        Err(e) => fail(FhirError::Internal(format!(
            "batch entry answer is not JSON: {e}"
        ))),
    }
}

fn do_batch_validate(registry: &Registry, p: &OperationParams) -> Result<Json, FhirError> {
    let shared: Vec<(String, ParamValue)> = p
        .params
        .iter()
        .filter(|(n, _)| n != "validation" && n != "tx-resource")
        .cloned()
        .collect();
    let mut out = ParametersOut::new();
    for v in p.all("validation") {
        crate::terminology::budget::check()?;
        let ParamValue::Resource(inner) = v else {
            return Err(FhirError::Invalid(
                "each 'validation' must be a Parameters resource".into(),
            ));
        };
        let inner = OperationParams::from_parameters(inner)?;
        let mut params = OperationParams {
            params: shared.clone(),
            original: p.original.clone(),
        };
        params.params.extend(inner.params);
        params.original.extend(inner.original);
        let result = ValidateRequest::from_params(&params, Target::ValueSet)
            .and_then(|r| validate_code(registry, &r))
            .unwrap_or_else(|e| e.to_operation_outcome());
        out.resource("validation", result);
    }
    Ok(out.build())
}

/// `ValueSet/$batch-validate-code`: every `validation` Parameters checked against the shared
/// parameters (`url`, `valueSet`, `tx-resource`, …).
pub async fn batch_validate_codes(
    State(state): State<Arc<AppState>>,
    req: FhirRequest,
) -> Response {
    state.operate(&req, as_is, true, do_batch_validate).await
}

/// `$cache-control`: open (`mode=start`) or drop (`mode=end`) a cache of request resources.
pub async fn cache_control(State(state): State<Arc<AppState>>, req: FhirRequest) -> Response {
    let result = req.params().and_then(|p| {
        let mode = p.text("mode")?;
        let id = p.text("cache-id")?.or_else(|| req.cache_id.clone());
        state.cache_control(mode.as_deref(), id.as_deref())
    });
    respond(&req, result)
}

/// `GET /$versions`: the FHIR versions this server speaks.
pub async fn versions(req: FhirRequest) -> Response {
    let mut out = ParametersOut::new();
    out.value("version", "valueCode", json!("4.0"));
    out.value("default", "valueCode", json!("4.0"));
    respond(&req, Ok(out.build()))
}
