//! The register browser: server-rendered HTML pages at `/` that show every register, concept,
//! release and change. Pages are made with `maud` (compile-time checked templates, every value
//! escaped) and get their data from the same [`crate::terminology`] functions the FHIR operations
//! use — `$lookup`'s [`find_concept`](crate::terminology::lookup::find_concept), `$expand`'s
//! [`expansion_page`](crate::terminology::expand::expansion_page), `$concept-history` and `$diff`
//! ([`crate::terminology::history`]) — over the registry being served: no second query path and
//! no HTTP calls to the server itself.
//!
//! What lives here: the routes table ([`routes`]), one file per page group, the shared layout
//! ([`layout`]) and the embedded CSS and JavaScript ([`assets`]). Every page works without
//! JavaScript; the script only adds search-as-you-type (it fetches the same page with the typed
//! text and swaps the results in). HTML answers carry a strict `Content-Security-Policy` and the
//! usual security headers ([`SECURITY_HEADERS`]); the FHIR API's answers do not change.
//!
//! What does not live here: the FHIR API (`crate::http`) and any query logic (`terminology`).

pub mod assets;
mod concept;
mod diff;
mod home;
pub mod layout;
mod register;
mod timeline;
mod value_set;

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use maud::Markup;

use crate::error::FhirError;
use crate::http::AppState;
use crate::store::Registry;

/// The `Content-Security-Policy` of every HTML page: nothing but this server's own stylesheet and
/// script, no inline script or style, no framing, forms post only here.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; \
     frame-ancestors 'none'";

/// The security headers every HTML answer carries (pages and error pages alike).
pub const SECURITY_HEADERS: [(HeaderName, &str); 5] = [
    (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::REFERRER_POLICY, "no-referrer"),
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::CACHE_CONTROL, "no-cache"),
];

/// Default of `--browser-kept-diff-concepts`: four million concepts (about 64 MB) in the diffs
/// kept for paging.
pub const DEFAULT_KEPT_DIFF_CONCEPTS: usize = 4_000_000;

/// Rows of one page of a concept list (register search, ValueSet expansion, diff).
pub const PAGE_SIZE: usize = 50;

/// What the pages share besides the [`AppState`]: where the FHIR API is (for the equivalent
/// requests a page shows) and the timeline counts already computed.
#[derive(Clone)]
pub struct Browser {
    state: Arc<AppState>,
    /// The FHIR base path (`/fhir`).
    fhir_base: Arc<str>,
    timelines: Arc<timeline::Timelines>,
}

/// The browser's routes, for the FHIR API at `fhir_base`: `/` (home), `/search`,
/// `/registers/{id}` (with `/concepts/{code}` and `/diff`), `/valuesets/{id}` and `/assets/…`.
pub fn routes<S>(state: Arc<AppState>, fhir_base: &str) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let browser = Browser {
        timelines: Arc::new(timeline::Timelines::new(state.browser_kept_diff_concepts)),
        state,
        fhir_base: fhir_base.into(),
    };
    Router::new()
        .route("/", get(home::home_page))
        .route("/search", get(home::search_page))
        .route("/registers/{id}", get(register::register_page))
        .route(
            "/registers/{id}/concepts/{code}",
            get(concept::concept_page),
        )
        .route("/registers/{id}/diff", get(diff::diff_page))
        .route("/valuesets/{id}", get(value_set::value_set_page))
        .route("/assets/{name}", get(assets::asset))
        .with_state(browser)
}

/// The paths the browser's routes start with.
pub const PREFIXES: [&str; 4] = ["/registers", "/valuesets", "/search", "/assets"];

/// Whether the browser can be served beside a FHIR base at `base` (trailing `/` trimmed): not
/// when the FHIR API is at the root (`/` is then the FHIR base) or under one of the browser's
/// own [`PREFIXES`].
pub fn fits_beside(base: &str) -> bool {
    !base.is_empty()
        && !PREFIXES.iter().any(|p| {
            base == *p
                || base
                    .strip_prefix(p)
                    .is_some_and(|rest| rest.starts_with('/'))
        })
}

/// An HTML answer: the page with its status and the [`SECURITY_HEADERS`].
pub fn html(status: StatusCode, page: Markup) -> Response {
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        page.into_string(),
    )
        .into_response();
    let headers = response.headers_mut();
    for (name, value) in SECURITY_HEADERS {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// The page for an error: the status, `issue.code` meaning and text the FHIR API would answer
/// (one error boundary: [`FhirError::classify`]), as HTML.
pub fn error_page(fhir_base: &str, e: &FhirError) -> Response {
    let (status, _, _) = e.classify();
    if status.is_server_error() {
        tracing::error!(error = %e, "register browser page failed");
    }
    let title = match e {
        FhirError::UnknownCode(_) => "No such code",
        FhirError::NotFound(_) => "Not found",
        FhirError::Invalid(_) | FhirError::Required(_) => "Bad request",
        FhirError::TooCostly(_) | FhirError::Busy(_) | FhirError::Overloaded(_) => {
            "Too costly or too busy"
        }
        _ => "Error",
    };
    html(
        status,
        layout::error(fhir_base, status, title, &e.client_text()),
    )
}

/// A page's data are read on the blocking pool, within the same lanes and time budget as a FHIR
/// operation (and cancelled when the client goes away): a search over millions of postcodes must
/// not hold up the threads that answer other requests.
pub async fn render<F, P>(browser: &Browser, build: F) -> Response
where
    F: FnOnce(&Arc<Registry>) -> Result<P, FhirError> + Send + 'static,
    P: Into<Page> + Send + 'static,
{
    let registry = browser.state.registry();
    let result = browser
        .state
        .in_lanes("page", move || build(&registry).map(Into::into))
        .await;
    match result {
        Ok(Page(status, page)) => html(status, page),
        Err(e) => error_page(&browser.fhir_base, &e),
    }
}

/// The `Host` a request was sent to (for the `curl` commands pages show), when it looks like a
/// host name; `127.0.0.1:8080` otherwise.
pub fn host_of(headers: &axum::http::HeaderMap) -> String {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
        })
        .unwrap_or("127.0.0.1:8080")
        .to_string()
}

/// A rendered page and its status (200 for a plain [`Markup`]).
pub struct Page(pub StatusCode, pub Markup);

impl From<Markup> for Page {
    fn from(page: Markup) -> Self {
        Self(StatusCode::OK, page)
    }
}

/// The registry as it stood on `date` (`YYYY-MM-DD`, or a FHIR date or dateTime), or the
/// registry itself without one; a malformed date is a 400.
pub fn registry_as_of(
    registry: &Arc<Registry>,
    date: Option<&str>,
) -> Result<Arc<Registry>, FhirError> {
    match date.map(str::trim).filter(|d| !d.is_empty()) {
        None => Ok(registry.clone()),
        Some(d) => {
            let day = crate::store::date_param(d).ok_or_else(|| {
                FhirError::Invalid(format!(
                    "'{d}' is not a date: give the date as YYYY-MM-DD (or YYYY-MM, or YYYY)"
                ))
            })?;
            Ok(registry.as_of_shared(&day))
        }
    }
}

/// The latest version of the register with resource id `id` on the registry as of `date`; a 404
/// naming the cause otherwise: no such register, or no release of it in force on that date.
pub fn register_on(
    live: &Registry,
    dated: &Registry,
    id: &str,
    date: Option<&str>,
) -> Result<Arc<crate::store::CodeSystemVersion>, FhirError> {
    if let Some(cs) = dated.code_system_by_id(id) {
        return Ok(cs);
    }
    match (live.code_system_by_id(id), date) {
        (Some(cs), Some(date)) => {
            let first = live
                .code_system_versions(&cs.meta.url)
                .first()
                .map(|v| v.version.clone())
                .unwrap_or_default();
            Err(FhirError::NotFound(format!(
                "No release of the register '{}' was in force on {date}: its first release is {first}",
                cs.meta.title.as_deref().unwrap_or(&cs.meta.id)
            )))
        }
        _ => Err(FhirError::NotFound(format!(
            "There is no register '{id}' on this server"
        ))),
    }
}
