//! The request/response edge: an extractor that gathers query, negotiated format and parsed body
//! (never rejecting — problems surface as OperationOutcomes), and the renderer for results and
//! errors.

use std::borrow::Cow;

use axum::body::Body as HttpBody;
use axum::extract::FromRequest;
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode, Uri, header};
use axum::response::Response;
use serde_json::Value as Json;

use crate::error::FhirError;
use crate::fhir::format::{self, Body, Format};
use crate::fhir::params::{Answer, OperationParams, Original};

/// Limits on what one request may carry, read by the [`FhirRequest`] extractor from the state.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// Largest request body, in bytes (larger is 413 `too-long`).
    pub max_body_bytes: usize,
    /// Most parameters in one request: query pairs plus the body's top-level `parameter`s or
    /// form fields (more is 400).
    pub max_parameters: usize,
    /// Time a client has to send the whole body once the head is in (then 408 `timeout`): a body
    /// trickled a byte at a time cannot hold a connection and a worker.
    pub body_read_timeout: std::time::Duration,
}

impl Default for BodyLimits {
    fn default() -> Self {
        Self {
            max_body_bytes: 32 * 1024 * 1024,
            max_parameters: 10_000,
            body_read_timeout: std::time::Duration::from_secs(30),
        }
    }
}

impl axum::extract::FromRef<std::sync::Arc<super::AppState>> for BodyLimits {
    fn from_ref(state: &std::sync::Arc<super::AppState>) -> Self {
        state.body_limits
    }
}

/// Everything a handler needs from an HTTP request.
#[derive(Debug)]
pub struct FhirRequest {
    /// The request target; its query pairs are read from it as borrowed views ([`Self::query`]).
    uri: Uri,
    /// The negotiated response format (or why none fits).
    pub format: Result<Format, FhirError>,
    /// `_pretty=true`.
    pub pretty: bool,
    /// The parsed body, if there was one.
    pub body: Option<Result<Body, FhirError>>,
    /// The `Accept-Language` header, if any.
    pub accept_language: Option<String>,
    /// The `X-Cache-Id` header: a `$cache-control` cache whose resources this request uses.
    pub cache_id: Option<String>,
    /// Most parameters this request may carry.
    pub max_parameters: usize,
}

impl FhirRequest {
    /// Whether the response is compact JSON (what an answer written straight to JSON bytes,
    /// [`Answer::CompactJson`], is sent as without being read again).
    pub fn compact_json(&self) -> bool {
        matches!(self.format, Ok(Format::Json)) && !self.pretty
    }

    /// The operation parameters: the query for GET, the `Parameters` body (plus query) for POST.
    pub fn params(&self) -> Result<OperationParams, FhirError> {
        let mut p = self.params_as_sent()?;
        if let Some(lang) = &self.accept_language
            && p.all("displayLanguage").next().is_none()
        {
            p.params.push((
                "displayLanguage".into(),
                crate::fhir::params::ParamValue::Text(lang.clone()),
            ));
            p.original.push(Original::Sent(
                serde_json::json!({ "name": "displayLanguage", "valueCode": lang }),
            ));
        }
        Ok(p)
    }

    fn params_as_sent(&self) -> Result<OperationParams, FhirError> {
        let p = self.params_unchecked()?;
        if p.params.len() > self.max_parameters {
            return Err(FhirError::Invalid(format!(
                "the request carries {} parameters; at most {} are accepted",
                p.params.len(),
                self.max_parameters
            )));
        }
        Ok(p)
    }

    fn params_unchecked(&self) -> Result<OperationParams, FhirError> {
        match &self.body {
            None => Ok(OperationParams::from_pairs(self.query())),
            Some(Err(e)) => Err(e.clone()),
            Some(Ok(Body::Form(form))) => {
                let mut p = OperationParams::from_query(form);
                p.extend_from_pairs(self.query());
                Ok(p)
            }
            Some(Ok(Body::Resource(r))) => {
                let mut p = OperationParams::from_parameters(r)?;
                p.extend_from_pairs(self.query());
                Ok(p)
            }
        }
    }

    /// The query pairs (including `_format` etc.), percent-decoded, in the order sent: views of
    /// the request target, copied only where decoding changed them.
    pub fn query(&self) -> QueryPairs<'_> {
        query_pairs(&self.uri)
    }

    /// The first value of a query parameter.
    pub fn query_value(&self, name: &str) -> Option<Cow<'_, str>> {
        query_value(&self.uri, name)
    }
}

impl<S> FromRequest<S> for FhirRequest
where
    S: Send + Sync,
    BodyLimits: axum::extract::FromRef<S>,
{
    type Rejection = Response;

    async fn from_request(req: Request<HttpBody>, state: &S) -> Result<Self, Self::Rejection> {
        let limits = <BodyLimits as axum::extract::FromRef<S>>::from_ref(state);
        let (parts, body) = req.into_parts();
        let (format, pretty) = negotiated(&parts.uri, &parts.headers);
        let accept_language = parts
            .headers
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string);
        let cache_id = parts
            .headers
            .get("x-cache-id")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string);
        let content_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let max = limits.max_body_bytes;
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let too_large = || {
            Some(Err(FhirError::PayloadTooLarge(format!(
                "the request body is larger than the {max} bytes this server accepts"
            ))))
        };
        let body = if declared.is_some_and(|n| n > max as u64) {
            too_large()
        } else if http_body::Body::is_end_stream(&body) {
            // No body (a GET): nothing to wait for.
            None
        } else {
            let timeout = limits.body_read_timeout;
            match tokio::time::timeout(timeout, axum::body::to_bytes(body, max)).await {
                Err(_) => Some(Err(FhirError::RequestTimeout(format!(
                    "the request body did not arrive within {} s",
                    timeout.as_secs_f64()
                )))),
                Ok(Ok(bytes)) if bytes.is_empty() => None,
                Ok(Ok(bytes)) => Some(format::parse_body(content_type.as_deref(), &bytes)),
                Ok(Err(e)) if is_length_limit(&e) => too_large(),
                Ok(Err(e)) => Some(Err(FhirError::Invalid(format!(
                    "the request body could not be read: {e}"
                )))),
            }
        };
        Ok(Self {
            uri: parts.uri,
            format,
            pretty,
            body,
            accept_language,
            cache_id,
            max_parameters: limits.max_parameters,
        })
    }
}

/// Whether reading a body failed on its length limit (axum wraps http-body-util's error).
fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// The query pairs of a request target, percent-decoded as they are read.
fn query_pairs(uri: &Uri) -> QueryPairs<'_> {
    QueryPairs {
        rest: uri.query().unwrap_or(""),
    }
}

/// The `name=value` pairs of a query string, decoded as `application/x-www-form-urlencoded`
/// (what `form_urlencoded::parse` gives, the tests check): a part with nothing to decode is
/// borrowed, and one with escapes is copied in runs between them, not byte by byte.
#[derive(Debug, Clone)]
pub struct QueryPairs<'a> {
    rest: &'a str,
}

impl<'a> Iterator for QueryPairs<'a> {
    type Item = (Cow<'a, str>, Cow<'a, str>);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.rest.is_empty() {
                return None;
            }
            let (pair, rest) = self.rest.split_once('&').unwrap_or((self.rest, ""));
            self.rest = rest;
            if pair.is_empty() {
                continue;
            }
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            return Some((form_decoded(name), form_decoded(value)));
        }
    }
}

/// A query component decoded: `+` is a space, `%XX` a byte (a `%` not followed by two hex
/// digits stands for itself), and bytes that are not UTF-8 are replaced.
fn form_decoded(s: &str) -> Cow<'_, str> {
    let escape = |b: &u8| *b == b'%' || *b == b'+';
    let bytes = s.as_bytes();
    let Some(first) = bytes.iter().position(escape) else {
        return Cow::Borrowed(s);
    };
    let hex = |b: Option<&u8>| b.and_then(|b| (*b as char).to_digit(16)).map(|d| d as u8);
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(&bytes[..first]);
    let mut i = first;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => match (hex(bytes.get(i + 1)), hex(bytes.get(i + 2))) {
                (Some(high), Some(low)) => {
                    out.push(high << 4 | low);
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            _ => {
                let end = bytes[i..]
                    .iter()
                    .position(escape)
                    .map_or(bytes.len(), |n| i + n);
                out.extend_from_slice(&bytes[i..end]);
                i = end;
            }
        }
    }
    Cow::Owned(match String::from_utf8(out) {
        Ok(text) => text,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    })
}

/// The first value of a query parameter. Only names are decoded on the way to it (borrowed
/// where they have no escapes), not the values of other parameters.
fn query_value<'a>(uri: &'a Uri, name: &str) -> Option<Cow<'a, str>> {
    uri.query()?.split('&').find_map(|pair| {
        let (raw_name, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        (form_decoded(raw_name) == name).then(|| form_decoded(raw_value))
    })
}

/// The response format (`_format` wins over `Accept`) and `_pretty` a request asks for.
fn negotiated(uri: &Uri, headers: &HeaderMap) -> (Result<Format, FhirError>, bool) {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    // One pass over the query; the first of each counts (as `query_value` says), and only those
    // two values are decoded.
    let (mut format, mut pretty) = (None, None);
    for pair in uri.query().unwrap_or_default().split('&') {
        let (raw_name, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match &*form_decoded(raw_name) {
            "_format" => &mut format,
            "_pretty" => &mut pretty,
            _ => continue,
        };
        if slot.is_none() {
            *slot = Some(form_decoded(raw_value));
        }
        if format.is_some() && pretty.is_some() {
            break;
        }
    }
    (
        format::negotiate(format.as_deref(), accept),
        pretty.as_deref() == Some("true"),
    )
}

/// Renders an error for a request no handler sees (refused at the edge: limits, undecodable
/// paths) as an OperationOutcome in the format the request negotiates.
pub fn refuse(uri: &Uri, headers: &HeaderMap, error: FhirError) -> Response {
    let (format, pretty) = negotiated(uri, headers);
    respond_with(format, pretty, Err(error))
}

/// Renders a resource (200) or an error (its status, as an OperationOutcome), in the negotiated
/// format.
pub fn respond(req: &FhirRequest, result: Result<Json, FhirError>) -> Response {
    respond_with(req.format.clone(), req.pretty, result.map(Answer::Json))
}

/// Renders with an explicit format choice.
pub fn respond_with(
    format: Result<Format, FhirError>,
    pretty: bool,
    result: Result<Answer, FhirError>,
) -> Response {
    let (format, result) = match format {
        Ok(f) => (f, result),
        Err(e) => (Format::Json, Err(e)),
    };
    let (status, resource) = match result {
        // Output parameters in compact JSON are written straight from their parts.
        Ok(Answer::Parameters(p)) if format == Format::Json && !pretty => {
            return fhir_response(StatusCode::OK, format, p.to_json_bytes());
        }
        Ok(Answer::CompactJson(bytes)) if format == Format::Json && !pretty => {
            return fhir_response(StatusCode::OK, format, bytes);
        }
        Ok(r) => (StatusCode::OK, r.into_json()),
        Err(e) => {
            if let FhirError::Internal(detail) = &e {
                tracing::error!(%detail, "internal error");
            }
            (e.classify().0, e.to_operation_outcome())
        }
    };
    match format::render(&resource, format, pretty) {
        // A busy server says when to try again.
        Ok(bytes) if status == StatusCode::SERVICE_UNAVAILABLE => {
            let mut resp = fhir_response(status, format, bytes);
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            resp
        }
        Ok(bytes) => fhir_response(status, format, bytes),
        Err(e) => {
            tracing::error!(error = %e, "rendering failed");
            let oo = FhirError::Internal(e.to_string()).to_operation_outcome();
            let bytes = serde_json::to_vec(&oo).unwrap_or_default();
            fhir_response(StatusCode::INTERNAL_SERVER_ERROR, Format::Json, bytes)
        }
    }
}

fn fhir_response(status: StatusCode, format: Format, bytes: Vec<u8>) -> Response {
    let mut resp = Response::new(HttpBody::from(bytes));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    resp
}

/// Where a request was addressed: the origin (`scheme://host[:port]`) it was sent to and its path
/// as received, before a nested router stripped the FHIR base. Search links and batch entries
/// with absolute URLs are built from it.
#[derive(Debug, Clone, Default)]
pub struct RequestAddress {
    /// `scheme://host[:port]` from `X-Forwarded-Proto`/`X-Forwarded-Host` (set by a proxy) or the
    /// `Host` header; `None` when the request named no (valid) host.
    pub origin: Option<String>,
    /// The path as received (`/fhir/CodeSystem`).
    pub path: String,
}

impl RequestAddress {
    /// The address of a request from its parts.
    pub fn of(parts: &axum::http::request::Parts) -> Self {
        let path = parts
            .extensions
            .get::<axum::extract::OriginalUri>()
            .map_or(parts.uri.path(), |u| u.0.path())
            .to_string();
        // A proxy may list several values; the first is the client's.
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
                .map(str::trim)
                .filter(|v| !v.is_empty())
        };
        let host = header("x-forwarded-host")
            .or_else(|| header(header::HOST.as_str()))
            .or_else(|| parts.uri.authority().map(|a| a.as_str()));
        let scheme = header("x-forwarded-proto")
            .or_else(|| parts.uri.scheme_str())
            .unwrap_or("http");
        let origin = host.and_then(|host| origin_of(&format!("{scheme}://{host}")));
        Self { origin, path }
    }
}

/// `scheme://host[:port]` of an http(s) URL (default ports dropped), or `None` if it is not one.
pub fn origin_of(url: &str) -> Option<String> {
    let url = url::Url::parse(url).ok()?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return None;
    }
    match url.origin() {
        url::Origin::Tuple(..) => Some(url.origin().ascii_serialization()),
        url::Origin::Opaque(_) => None,
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for RequestAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self::of(parts))
    }
}

#[cfg(test)]
mod tests {
    use url::form_urlencoded;

    use super::*;

    #[test]
    fn query_pairs_decode_as_form_urlencoded_does() {
        let mut queries: Vec<String> = [
            "system=https%3A%2F%2Fdigital.nhs.uk%2Fx&code=AB1+2CD",
            "a=%&b=%4&c=%4g&d=%%41&e=%41%&f=%zz%41",
            "x=1&&y&=z&==&+=+&%2B=%2b",
            "n=caf%C3%A9&bad=%C3%28&half=%E2%82&lone=%FF",
            "k=a=b=c&%26=%3D&%20%20",
            "",
            "&&&",
            "%E2%82%AC+%e2%82%ac",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        // And every short string over an alphabet of the interesting bytes.
        let alphabet = ["%", "4", "1", "g", "+", "=", "&", "a", "C3", "A9", "%C3"];
        let mut grown = vec![String::new()];
        for _ in 0..4 {
            grown = grown
                .iter()
                .flat_map(|s| alphabet.iter().map(move |a| format!("{s}{a}")))
                .collect();
            queries.extend(grown.iter().cloned());
        }
        for q in &queries {
            let uri: Uri = format!("/fhir/x?{q}").parse().expect("uri");
            let ours: Vec<(String, String)> = query_pairs(&uri)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            let theirs: Vec<(String, String)> = form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            assert_eq!(ours, theirs, "{q}");
        }
        let plain: Uri = "/x?code=AB12&system=urn:x".parse().expect("uri");
        assert!(
            query_pairs(&plain)
                .all(|(k, v)| matches!((k, v), (Cow::Borrowed(_), Cow::Borrowed(_)))),
            "a part without escapes is borrowed"
        );
    }

    #[test]
    fn a_query_value_is_the_first_decoded_value_of_its_decoded_name() {
        let queries = [
            "_format=xml&_pretty=true",
            "code=a&_format=json&_format=xml",
            "%5Fformat=xml",
            "_form%61t=application%2Ffhir%2Bxml",
            "x=1&&_format&y",
            "_format=a=b&_pretty=tr%75e",
            "_pretty=true&_format=xml&_pretty=false&_format=json",
            "_pretty=false&_pretty=true",
            "url=http%3A%2F%2Fx&name=a+b&name%3Acontains=c",
            "na+me=1&na%20me=2",
            "",
        ];
        for q in queries {
            let uri: Uri = format!("/fhir/x?{q}").parse().expect("uri");
            let pairs: Vec<_> = form_urlencoded::parse(q.as_bytes()).collect();
            for name in [
                "_format",
                "_pretty",
                "url",
                "name",
                "name:contains",
                "na me",
                "y",
            ] {
                let expected = pairs
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone());
                assert_eq!(query_value(&uri, name), expected, "{name} in {q}");
            }
            // The one-pass negotiation reads the same first values.
            let headers = HeaderMap::new();
            let first = |name| query_value(&uri, name);
            let (format, pretty) = negotiated(&uri, &headers);
            assert_eq!(
                format.ok(),
                format::negotiate(first("_format").as_deref(), None).ok(),
                "{q}"
            );
            assert_eq!(pretty, first("_pretty").as_deref() == Some("true"), "{q}");
        }
        let none: Uri = "/fhir/x".parse().expect("uri");
        assert_eq!(query_value(&none, "_format"), None);
    }
}
