//! Batches: a FHIR `Bundle` of type `batch` posted to the base runs each entry through the router
//! and answers a `batch-response`; `ValueSet/$batch-validate-code` validates several codings
//! against one ValueSet in one call.
//!
//! A batch's entries run one after another, each answer written into the response as bytes and
//! streamed as soon as it is ready: memory holds one entry's answer at a time, whatever the
//! number of entries. The answers together may take at most [`AppState::max_batch_bytes`]; the
//! entry that would pass it, and every entry after it, is answered `too-costly` instead.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::{Value as Json, json};
use tower::ServiceExt;

use super::request::{FhirRequest, RequestAddress, origin_of, respond};
use super::{AppState, as_is};
use crate::error::FhirError;
use crate::fhir::bundle::BatchResponseWriter;
use crate::fhir::format::Body as ParsedBody;
use crate::fhir::params::{OperationParams, ParamValue, ParametersOut};
use crate::store::Registry;
use crate::terminology::validate::{Target, ValidateRequest, validate_code};

/// Headers of the batch request passed on to each entry, so that what an entry's answer says
/// about where it was asked (search links) is true of the batch.
const PASSED_ON: [&str; 3] = ["host", "x-forwarded-host", "x-forwarded-proto"];

fn reason(status: u16) -> &'static str {
    StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("")
}

/// The entries of a posted `batch` Bundle.
fn batch_entries(
    body: Option<Result<ParsedBody, FhirError>>,
    max_entries: usize,
) -> Result<Vec<Json>, FhirError> {
    let mut bundle = match body {
        Some(Ok(ParsedBody::Resource(r))) => r,
        Some(Err(e)) => return Err(e),
        _ => {
            return Err(FhirError::Required(
                "POST to the base needs a Bundle of type batch".into(),
            ));
        }
    };
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
    let entries = match bundle.get_mut("entry").map(Json::take) {
        Some(Json::Array(entries)) => entries,
        Some(Json::Null) | None => Vec::new(),
        Some(_) => return Err(FhirError::Invalid("Bundle.entry must be an array".into())),
    };
    if entries.len() > max_entries {
        return Err(FhirError::TooCostly(format!(
            "the batch holds {} entries; a batch may hold at most {max_entries}",
            entries.len()
        )));
    }
    Ok(entries)
}

/// `POST /` with a `Bundle` of type `batch`: a `batch-response` whose entries are streamed as
/// they are answered. <http://hl7.org/fhir/R4/http.html#transaction>
pub async fn run_batch(
    State(state): State<Arc<AppState>>,
    address: RequestAddress,
    headers: HeaderMap,
    mut req: FhirRequest,
) -> Response {
    let entries = match batch_entries(req.body.take(), state.max_batch_entries) {
        Ok(entries) => entries,
        Err(e) => return respond(&req, Err(e)),
    };
    let format = match &req.format {
        Ok(format) => *format,
        Err(e) => return respond(&req, Err(e.clone())),
    };
    let base = address.path.trim_end_matches('/').to_string();
    let passed_on = PASSED_ON
        .iter()
        .filter_map(|name| Some((*name, headers.get(*name)?.clone())))
        .collect();
    let run = BatchRun {
        router: super::app_at(state.clone(), &base),
        base,
        origin: address.origin,
        passed_on,
        writer: BatchResponseWriter::new(format, req.pretty),
        entries: entries.into_iter(),
        budget: state.max_batch_bytes,
        used: 0,
        exhausted: false,
        stage: Stage::Open,
    };
    let chunks = futures_util::stream::unfold(run, BatchRun::next_chunk);
    let mut resp = (StatusCode::OK, Body::from_stream(chunks)).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    resp
}

/// Where the streamed response stands.
enum Stage {
    Open,
    Entries,
    Done,
}

/// One batch being answered: the entries still to run and the budget left.
struct BatchRun {
    router: axum::Router,
    /// The FHIR base path the batch was posted to (`/fhir`; empty at the root).
    base: String,
    /// `scheme://host[:port]` the batch was sent to, if it said.
    origin: Option<String>,
    passed_on: Vec<(&'static str, HeaderValue)>,
    writer: BatchResponseWriter,
    entries: std::vec::IntoIter<Json>,
    budget: usize,
    used: usize,
    /// The budget ran out: every entry left is answered `too-costly`.
    exhausted: bool,
    stage: Stage,
}

/// What running one entry gave.
enum Answered {
    /// Its status and answer (a FHIR resource in JSON).
    Done(u16, Bytes),
    /// Its answer is larger than the budget left.
    TooLarge,
}

impl BatchRun {
    /// The next piece of the response body: the Bundle's start, one entry, or its end.
    async fn next_chunk(mut self) -> Option<(Result<Bytes, Infallible>, Self)> {
        let chunk = match self.stage {
            Stage::Open => {
                self.stage = Stage::Entries;
                self.writer.open()
            }
            Stage::Entries => match self.entries.next() {
                Some(entry) => self.answer(entry).await,
                None => {
                    self.stage = Stage::Done;
                    self.writer.close()
                }
            },
            Stage::Done => return None,
        };
        Some((Ok(Bytes::from(chunk)), self))
    }

    fn too_costly(&self, this_one: bool) -> FhirError {
        let budget = self.budget;
        FhirError::TooCostly(if this_one {
            format!(
                "This entry's answer would take the batch response past this server's limit of {budget} bytes for one batch; ask for less (a smaller count) or send it in another batch"
            )
        } else {
            format!(
                "This entry was not run: the answers before it used up this server's limit of {budget} bytes for one batch response; send it in another batch"
            )
        })
    }

    /// Runs one entry (unless the budget is spent) and writes its part of the Bundle.
    async fn answer(&mut self, entry: Json) -> Vec<u8> {
        let answered = if self.exhausted {
            Err(self.too_costly(false))
        } else {
            let left = self.budget.saturating_sub(self.used);
            self.run(entry, left).await
        };
        let written = match answered {
            Ok(Answered::Done(status, answer)) => {
                let line = format!("{status} {}", reason(status));
                self.writer
                    .entry(line.trim_end(), (200..300).contains(&status), &answer)
                    .and_then(|bytes| {
                        if self.used.saturating_add(bytes.len()) > self.budget {
                            Err(self.too_costly(true))
                        } else {
                            Ok(bytes)
                        }
                    })
            }
            Ok(Answered::TooLarge) => Err(self.too_costly(true)),
            Err(e) => Err(e),
        };
        let bytes = written.unwrap_or_else(|e| {
            if matches!(e, FhirError::TooCostly(_)) {
                self.exhausted = true;
            }
            self.failed_entry(&e)
        });
        self.used = self.used.saturating_add(bytes.len());
        bytes
    }

    /// An entry answered with an error.
    fn failed_entry(&mut self, e: &FhirError) -> Vec<u8> {
        if let FhirError::Internal(detail) = e {
            tracing::error!(%detail, "batch entry failed");
        }
        let status = e.classify().0;
        let line = format!("{} {}", status.as_u16(), reason(status.as_u16()));
        let outcome = e.to_operation_outcome().to_string();
        self.writer
            .entry(line.trim_end(), false, outcome.as_bytes())
            .unwrap_or_default()
    }

    /// Runs one entry through the router, reading at most `limit` bytes of its answer.
    async fn run(&self, mut entry: Json, limit: usize) -> Result<Answered, FhirError> {
        let body = match entry.get_mut("resource").map(Json::take) {
            Some(resource) => Body::from(resource.to_string()),
            None => Body::empty(),
        };
        let Some(request) = entry.get("request") else {
            return Err(FhirError::Invalid("a batch entry has no request".into()));
        };
        let method = request
            .get("method")
            .and_then(Json::as_str)
            .unwrap_or("GET");
        let Ok(method) = Method::from_bytes(method.as_bytes()) else {
            return Err(FhirError::Invalid(format!(
                "'{method}' is not an HTTP method"
            )));
        };
        let Some(url) = request.get("url").and_then(Json::as_str) else {
            return Err(FhirError::Invalid(
                "a batch entry request has no url".into(),
            ));
        };
        let target = entry_target(url, &self.base, self.origin.as_deref())?;
        let mut http = Request::builder()
            .method(method)
            .uri(format!("{}/{target}", self.base))
            .header(header::CONTENT_TYPE, "application/fhir+json")
            .header(header::ACCEPT, "application/fhir+json");
        for (name, value) in &self.passed_on {
            http = http.header(*name, value.clone());
        }
        let Ok(http) = http.body(body) else {
            return Err(FhirError::Invalid(format!(
                "'{url}' is not a valid request url"
            )));
        };
        let Ok(resp) = self.router.clone().oneshot(http).await;
        let status = resp.status().as_u16();
        let json = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/fhir+json"));
        if !json {
            return Err(FhirError::Internal(format!(
                "batch entry '{url}' was not answered with a FHIR JSON resource"
            )));
        }
        match Limited::new(resp.into_body(), limit).collect().await {
            Ok(body) => Ok(Answered::Done(status, body.to_bytes())),
            Err(e) if e.is::<LengthLimitError>() => Ok(Answered::TooLarge),
            Err(e) => Err(FhirError::Internal(format!(
                "batch entry answer could not be read: {e}"
            ))),
        }
    }
}

/// The path and query, relative to the FHIR base, that a batch entry's `request.url` addresses:
/// a URL relative to the base (`CodeSystem/$lookup?…`, with or without the base path in front),
/// or an absolute one on this server (`origin` followed by `base`). An absolute URL on another
/// server, or one not under the base, is an error. `_format` and `_pretty` are dropped: entries
/// are answered in JSON and the batch renders them in its own format.
fn entry_target(url: &str, base: &str, origin: Option<&str>) -> Result<String, FhirError> {
    let url = url.trim();
    let here = || format!("{}{base}", origin.unwrap_or(""));
    let rest = match url::Url::parse(url) {
        Ok(absolute) => {
            if origin.is_none() || origin_of(url).as_deref() != origin {
                return Err(FhirError::NotSupported(format!(
                    "The batch entry url '{url}' is not on this server: an entry may address only the server the batch was sent to, with a URL relative to its base or an absolute one under {}",
                    here()
                )));
            }
            let path = absolute.path();
            let rest = if base.is_empty() {
                Some(path)
            } else {
                path.strip_prefix(base)
                    .filter(|r| r.is_empty() || r.starts_with('/'))
            };
            let Some(rest) = rest else {
                return Err(FhirError::NotFound(format!(
                    "The batch entry url '{url}' is not under this server's FHIR base {}",
                    here()
                )));
            };
            match absolute.query() {
                Some(q) => format!("{}?{q}", rest.trim_start_matches('/')),
                None => rest.trim_start_matches('/').to_string(),
            }
        }
        Err(_) => {
            let rest = url.trim_start_matches('/');
            let base = base.trim_start_matches('/');
            let under_base = if base.is_empty() {
                None
            } else {
                rest.strip_prefix(base)
                    .filter(|r| r.is_empty() || r.starts_with(['/', '?']))
            };
            under_base
                .map_or(rest, |r| r.trim_start_matches('/'))
                .to_string()
        }
    };
    let (path, query) = match rest.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (rest.as_str(), None),
    };
    if path.is_empty() {
        return Err(FhirError::NotSupported(format!(
            "The batch entry url '{url}' addresses the base itself; an entry names a resource type or an operation (a batch inside a batch is not supported)"
        )));
    }
    let Some(query) = query else {
        return Ok(path.to_string());
    };
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    if !pairs.iter().any(|(k, _)| k == "_format" || k == "_pretty") {
        return Ok(rest);
    }
    let mut kept = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs
        .iter()
        .filter(|(k, _)| k != "_format" && k != "_pretty")
    {
        kept.append_pair(k, v);
    }
    Ok(format!("{path}?{}", kept.finish()))
}

/// Parameters that may be given several times and add up rather than replace each other.
const ACCUMULATING: [&str; 8] = [
    "system-version",
    "force-system-version",
    "check-system-version",
    "default-valueset-version",
    "property",
    "designation",
    "useSupplement",
    "tx-resource",
];

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
        // An entry's own parameter replaces the batch's of the same name, except those that
        // accumulate (version rules, properties, designations, supplements), as the reference
        // reads a request's parameters over defaults (FHIRsmith `tx/params.js`, `seeParameter`).
        let replaced = |name: &str| {
            !ACCUMULATING.contains(&name) && inner.params.iter().any(|(n, _)| n == name)
        };
        let mut params = OperationParams {
            params: shared
                .iter()
                .filter(|(n, _)| !replaced(n))
                .cloned()
                .collect(),
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

#[cfg(test)]
mod tests {
    use super::*;

    const HERE: Option<&str> = Some("http://localhost:8080");

    #[test]
    fn entry_urls_resolve_against_the_base() {
        let target = |url| entry_target(url, "/fhir", HERE);
        assert_eq!(
            target("CodeSystem/$lookup?code=A"),
            Ok("CodeSystem/$lookup?code=A".into())
        );
        assert_eq!(target("/CodeSystem/x"), Ok("CodeSystem/x".into()));
        assert_eq!(target("fhir/CodeSystem/x"), Ok("CodeSystem/x".into()));
        assert_eq!(target("/fhir/ValueSet?url=a"), Ok("ValueSet?url=a".into()));
        assert_eq!(
            target("http://localhost:8080/fhir/CodeSystem/$lookup?system=http://s&code=A"),
            Ok("CodeSystem/$lookup?system=http://s&code=A".into())
        );
        assert_eq!(
            target("HTTP://LOCALHOST:8080/fhir/metadata"),
            Ok("metadata".into())
        );
        assert_eq!(
            target("ValueSet/$expand?url=x&_format=xml&_pretty=true"),
            Ok("ValueSet/$expand?url=x".into())
        );
        assert_eq!(
            entry_target("http://h/CodeSystem", "", Some("http://h")),
            Ok("CodeSystem".into())
        );
    }

    #[test]
    fn entry_urls_elsewhere_are_errors() {
        let target = |url| entry_target(url, "/fhir", HERE);
        assert!(matches!(
            target("http://elsewhere:8080/fhir/metadata"),
            Err(FhirError::NotSupported(_))
        ));
        assert!(matches!(
            target("https://localhost:8080/fhir/metadata"),
            Err(FhirError::NotSupported(_))
        ));
        assert!(matches!(
            target("urn:uuid:1234"),
            Err(FhirError::NotSupported(_))
        ));
        assert!(matches!(
            target("http://localhost:8080/fhirx/metadata"),
            Err(FhirError::NotFound(_))
        ));
        assert!(matches!(
            target("http://localhost:8080/health"),
            Err(FhirError::NotFound(_))
        ));
        assert!(matches!(target(""), Err(FhirError::NotSupported(_))));
        assert!(matches!(target("/fhir"), Err(FhirError::NotSupported(_))));
        assert!(matches!(
            entry_target("http://localhost:8080/fhir/metadata", "/fhir", None),
            Err(FhirError::NotSupported(_))
        ));
    }
}
