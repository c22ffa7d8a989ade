//! What every request meets before routing, in one service ([`Edge`]) rather than a stack of
//! middleware: its `X-Request-Id` (the client's, or a made-up UUID), echoed on the answer; a path
//! that does not percent-decode to UTF-8 refused (400 OperationOutcome; no resource here has such
//! a name); a trailing slash trimmed (`/fhir/metadata/` is `/fhir/metadata`, `/fhir/` is the base
//! `/fhir`); a panic in a handler turned into a 500 OperationOutcome; and the request timed,
//! counted and logged once answered (see `observe`). The URL and header-size limits of
//! [`RequestLimits`] are applied before this, by the connection loop in [`super::serve`].
//! Everything refused here is an OperationOutcome in the format the request negotiates.
//!
//! One hand-written service costs a request far less than the same steps as separate layers:
//! each `from_fn` middleware or `Router` layer clones and boxes a service and boxes a future per
//! request, and this edge runs on every request the server answers.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::response::Response;
use tower::Service;
use tower_http::normalize_path::NormalizePath;

use super::observe::{Observation, Observer};
use super::request::refuse;
use crate::error::FhirError;

/// The header naming a request (sent by the client, or made up here) and echoed on its answer.
static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Puts the edge in front of a router: every request gets its id and is observed, undecodable
/// paths are refused and trailing slashes are trimmed before the router picks a route, and a
/// handler's panic becomes a 500 (`panic_response`). (A layer added with `Router::layer` runs
/// after routing, too late to change which route a path names, so the router is wrapped
/// instead.)
pub(super) fn in_front_of(
    router: Router,
    observer: Observer,
    panic_response: fn(Box<dyn Any + Send>) -> Response,
) -> Router {
    Router::new().fallback_service(Edge {
        inner: NormalizePath::trim_trailing_slash(router),
        observer,
        panic_response,
    })
}

/// The edge service (see the module docs).
#[derive(Clone)]
struct Edge {
    inner: NormalizePath<Router>,
    observer: Observer,
    panic_response: fn(Box<dyn Any + Send>) -> Response,
}

impl Service<Request> for Edge {
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = EdgeFuture<<NormalizePath<Router> as Service<Request>>::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        <NormalizePath<Router> as Service<Request>>::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let request_id = match req.headers().get(&X_REQUEST_ID) {
            Some(id) => id.clone(),
            None => {
                let id = made_up_request_id();
                req.headers_mut().insert(X_REQUEST_ID.clone(), id.clone());
                id
            }
        };
        let observation = self.observer.start(&req);
        let state = if let Some(error) = undecodable_path(&req) {
            State::Answered(Some(refuse(req.uri(), req.headers(), error)))
        } else {
            // A handler that panics before its future exists (while being called) is caught too.
            match std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(req))) {
                Ok(future) => State::Routed(future),
                Err(panic) => State::Answered(Some((self.panic_response)(panic))),
            }
        };
        EdgeFuture {
            state,
            request_id,
            observation,
            observer: self.observer.clone(),
            panic_response: self.panic_response,
        }
    }
}

/// A request id made up for a request that came without one: a random (version 4) UUID.
fn made_up_request_id() -> HeaderValue {
    let mut text = uuid::Uuid::encode_buffer();
    let id = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut text);
    // A hyphenated UUID is always a valid header value.
    HeaderValue::from_str(id).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

/// The answer of one request at the edge: the router's, or one made here.
pub(super) struct EdgeFuture<F> {
    state: State<F>,
    request_id: HeaderValue,
    observation: Observation,
    observer: Observer,
    panic_response: fn(Box<dyn Any + Send>) -> Response,
}

enum State<F> {
    Routed(F),
    /// Refused before routing, or a handler panicked (taken when the future completes).
    Answered(Option<Response>),
}

impl<F> Future for EdgeFuture<F>
where
    F: Future<Output = Result<Response, std::convert::Infallible>> + Unpin,
{
    type Output = Result<Response, std::convert::Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let mut response = match &mut this.state {
            State::Routed(future) => {
                match std::panic::catch_unwind(AssertUnwindSafe(|| Pin::new(future).poll(cx))) {
                    Ok(Poll::Pending) => return Poll::Pending,
                    Ok(Poll::Ready(Ok(response))) => response,
                    Ok(Poll::Ready(Err(never))) => match never {},
                    Err(panic) => (this.panic_response)(panic),
                }
            }
            State::Answered(response) => response
                .take()
                .unwrap_or_else(|| (this.panic_response)(Box::new("edge future polled again"))),
        };
        // The router's answer may name the request itself; otherwise it carries the request's.
        if !response.headers().contains_key(&X_REQUEST_ID) {
            response
                .headers_mut()
                .insert(X_REQUEST_ID.clone(), this.request_id.clone());
        }
        this.observer
            .finish(&this.observation, &response, &this.request_id);
        Poll::Ready(Ok(response))
    }
}

/// A path whose percent-encoded bytes are not UTF-8 (`/fhir/CodeSystem/%FF`) names nothing
/// on this server: 400 `invalid`, rather than the path extractor's plain-text rejection.
fn undecodable_path(req: &Request) -> Option<FhirError> {
    let path = req.uri().path();
    // Only a path with escapes can fail to decode (the URI itself is ASCII).
    if !path.contains('%')
        || percent_encoding::percent_decode_str(path)
            .decode_utf8()
            .is_ok()
    {
        return None;
    }
    Some(FhirError::Invalid(format!(
        "The request path '{path}' is not valid UTF-8 once percent-decoded"
    )))
}

/// The largest request head the server reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    /// Longest request target (path and query, with scheme and authority if sent), in bytes.
    pub max_url_bytes: usize,
    /// Largest total of the header fields (`name: value` plus line end, each), in bytes.
    pub max_header_bytes: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self {
            max_url_bytes: 8 * 1024,
            max_header_bytes: 16 * 1024,
        }
    }
}

impl RequestLimits {
    /// Why a request is over the limits (414 or 431, `too-long`), if it is.
    pub fn check<B>(&self, req: &axum::http::Request<B>) -> Result<(), FhirError> {
        let uri = req.uri();
        let url_bytes = uri.path_and_query().map_or(0, |pq| pq.as_str().len())
            + uri.authority().map_or(0, |a| {
                a.as_str().len() + uri.scheme_str().map_or(0, |s| s.len() + "://".len())
            });
        if url_bytes > self.max_url_bytes {
            return Err(FhirError::UriTooLong(format!(
                "The request URL is {url_bytes} bytes long; this server accepts at most {} (send long parameter lists in a POST body)",
                self.max_url_bytes
            )));
        }
        let header_bytes: usize = req
            .headers()
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + ": \r\n".len())
            .sum();
        if header_bytes > self.max_header_bytes {
            return Err(FhirError::HeadersTooLarge(format!(
                "The request's header fields take {header_bytes} bytes; this server accepts at most {}",
                self.max_header_bytes
            )));
        }
        Ok(())
    }
}
