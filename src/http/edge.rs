//! What every request meets before routing: a path that does not percent-decode to UTF-8 is
//! refused (400 OperationOutcome; no resource here has such a name), a trailing slash is trimmed
//! (`/fhir/metadata/` is `/fhir/metadata`, `/fhir/` is the base `/fhir`), and — applied by the
//! connection loop in [`super::serve`] — the URL and header-size limits of [`RequestLimits`].
//! Everything refused here is an OperationOutcome in the format the request negotiates.

use axum::Router;
use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::Response;
use tower_http::normalize_path::NormalizePath;

use super::request::refuse;
use crate::error::FhirError;

/// Puts the edge in front of a router: undecodable paths are refused and trailing slashes are
/// trimmed before the router picks a route. (A layer added with `Router::layer` runs after
/// routing, too late to change which route a path names, so the router is wrapped instead.)
pub fn in_front_of(router: Router) -> Router {
    Router::new()
        .fallback_service(NormalizePath::trim_trailing_slash(router))
        .layer(middleware::from_fn(refuse_undecodable_path))
}

/// A path whose percent-encoded bytes are not UTF-8 (`/fhir/CodeSystem/%FF`) names nothing
/// on this server: 400 `invalid`, rather than the path extractor's plain-text rejection.
async fn refuse_undecodable_path(req: Request, next: Next) -> Response {
    if percent_encoding::percent_decode_str(req.uri().path())
        .decode_utf8()
        .is_err()
    {
        let error = FhirError::Invalid(format!(
            "The request path '{}' is not valid UTF-8 once percent-decoded",
            req.uri().path()
        ));
        return refuse(req.uri(), req.headers(), error);
    }
    next.run(req).await
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
