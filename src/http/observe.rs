//! Watching the server from outside: every request is timed, counted in [`Metrics`] under a
//! short operation name taken from its matched route, and logged once when answered (target
//! `fhir_registers::access`); `GET /metrics` renders the metrics. Handlers know nothing of
//! this: the edge (`super::edge`) calls the [`Observer`] around each request, and the route a
//! request matched travels back on its response (see [`TagRouteLayer`]).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::metrics::{self, Metrics};

/// What the edge needs to observe requests: where to count, and the FHIR base the routes are
/// under.
#[derive(Clone)]
pub(super) struct Observer {
    metrics: Arc<Metrics>,
    base: Arc<str>,
}

/// One request being observed: when it arrived and, only while access lines are logged, what
/// its line names.
pub(super) struct Observation {
    started: Instant,
    logged: Option<(Method, Uri)>,
}

impl Observer {
    /// Counts in `metrics`; FHIR routes are under `base` (`/fhir`, or empty for the root).
    pub(super) fn new(metrics: Arc<Metrics>, base: &str) -> Self {
        Self {
            metrics,
            base: base.trim_end_matches('/').into(),
        }
    }

    /// A request arrives (before routing).
    pub(super) fn start(&self, req: &Request) -> Observation {
        let logged = tracing::enabled!(target: ACCESS, tracing::Level::INFO)
            .then(|| (req.method().clone(), req.uri().clone()));
        Observation {
            started: Instant::now(),
            logged,
        }
    }

    /// Its response head is ready: counts it under its operation and status, with its latency,
    /// and logs one access line (`method`, `route`, `status`, `latency_ms`, `request_id`).
    pub(super) fn finish(
        &self,
        observation: &Observation,
        response: &Response,
        request_id: &HeaderValue,
    ) {
        let elapsed = observation.started.elapsed();
        let status = response.status().as_u16();
        let matched = response.extensions().get::<MatchedPath>();
        let operation = operation(matched.map(MatchedPath::as_str), &self.base);
        self.metrics.record_request(operation, status, elapsed);
        if let Some((method, uri)) = &observation.logged {
            tracing::info!(
                target: ACCESS,
                method = method.as_str(),
                route = matched.map_or(uri.path(), MatchedPath::as_str),
                status,
                latency_ms = elapsed.as_secs_f64() * 1000.0,
                request_id = request_id.to_str().unwrap_or("-"),
                "answered"
            );
        }
    }
}

/// The target of the access lines.
const ACCESS: &str = "fhir_registers::access";

/// Inside the router: copies the route the request matched onto its response, for the edge
/// outside it (which runs before routing, so cannot read it from the request). Requests that
/// matched no route carry none. A plain layer rather than `from_fn`, which would clone and box
/// the route and box a future per request.
#[derive(Clone, Copy)]
pub(super) struct TagRouteLayer;

impl<S> tower::Layer<S> for TagRouteLayer {
    type Service = TagRoute<S>;

    fn layer(&self, inner: S) -> TagRoute<S> {
        TagRoute(inner)
    }
}

/// See [`TagRouteLayer`].
#[derive(Clone)]
pub(super) struct TagRoute<S>(S);

impl<S> tower::Service<Request> for TagRoute<S>
where
    S: tower::Service<Request, Response = Response>,
    S::Future: Unpin,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Tagged<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let matched = req.extensions().get::<MatchedPath>().cloned();
        Tagged {
            inner: self.0.call(req),
            matched,
        }
    }
}

/// A response on its way, to be tagged with the matched route.
pub(super) struct Tagged<F> {
    inner: F,
    matched: Option<MatchedPath>,
}

impl<F, E> Future for Tagged<F>
where
    F: Future<Output = Result<Response, E>> + Unpin,
{
    type Output = Result<Response, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut response = std::task::ready!(Pin::new(&mut self.inner).poll(cx))?;
        if let Some(matched) = self.matched.take() {
            response.extensions_mut().insert(matched);
        }
        Poll::Ready(Ok(response))
    }
}

/// The short name a matched route is counted under: one per operation (`$validate-code` on
/// CodeSystems and on ValueSets apart), `read` and `search` for resources, the endpoints outside
/// the base by name, `other` for whatever matched no route.
fn operation(route: Option<&str>, base: &str) -> &'static str {
    let Some(route) = route else { return "other" };
    match route {
        "/health" => return "health",
        "/ready" => return "ready",
        "/metrics" => return "metrics",
        _ if route.starts_with("/admin/") => return "admin",
        _ => {}
    }
    let Some(rest) = route.strip_prefix(base) else {
        return "other";
    };
    let last = rest.rsplit('/').next().unwrap_or_default();
    match last {
        "" => "batch",
        "$lookup" => "lookup",
        "$validate-code" if rest.starts_with("/CodeSystem/") => "cs-validate-code",
        "$validate-code" => "vs-validate-code",
        "$batch-validate-code" => "batch-validate-code",
        "$subsumes" => "subsumes",
        "$expand" => "expand",
        "$translate" => "translate",
        "$diff" => "diff",
        "$concept-history" => "concept-history",
        "$cache-control" => "cache-control",
        "$versions" => "versions",
        "metadata" => "metadata",
        "CodeSystem" | "ValueSet" | "ConceptMap" => "search",
        "{id}" => "read",
        _ => "other",
    }
}

/// `GET /metrics` (outside the FHIR base): the Prometheus text exposition format (0.0.4).
pub(super) async fn render_metrics(State(state): State<Arc<AppState>>) -> Response {
    let registry = state.registry();
    match state
        .metrics
        .render(&registry, state.is_ready(), state.live.generation())
    {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(metrics::CONTENT_TYPE),
            )],
            text,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "the metrics cannot be rendered");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::operation;

    #[test]
    fn routes_map_to_short_operation_names() {
        let cases = [
            ("/fhir", "batch"),
            ("/fhir/CodeSystem/$lookup", "lookup"),
            ("/fhir/CodeSystem/{id}/$lookup", "lookup"),
            ("/fhir/CodeSystem/$validate-code", "cs-validate-code"),
            ("/fhir/CodeSystem/{id}/$validate-code", "cs-validate-code"),
            ("/fhir/ValueSet/$validate-code", "vs-validate-code"),
            ("/fhir/ValueSet/{id}/$validate-code", "vs-validate-code"),
            ("/fhir/ValueSet/$batch-validate-code", "batch-validate-code"),
            ("/fhir/CodeSystem/$subsumes", "subsumes"),
            ("/fhir/ValueSet/{id}/$expand", "expand"),
            ("/fhir/ConceptMap/$translate", "translate"),
            ("/fhir/CodeSystem/{id}/$diff", "diff"),
            ("/fhir/CodeSystem/$concept-history", "concept-history"),
            ("/fhir/$cache-control", "cache-control"),
            ("/fhir/$versions", "versions"),
            ("/fhir/metadata", "metadata"),
            ("/fhir/ValueSet", "search"),
            ("/fhir/ConceptMap/{id}", "read"),
            ("/health", "health"),
            ("/ready", "ready"),
            ("/metrics", "metrics"),
            ("/admin/sync/{register}", "admin"),
            ("/fhir/{*__private__axum_fallback}", "other"),
            ("/elsewhere", "other"),
        ];
        for (route, expected) in cases {
            assert_eq!(operation(Some(route), "/fhir"), expected, "{route}");
        }
        assert_eq!(operation(None, "/fhir"), "other");
        assert_eq!(operation(Some("/"), ""), "batch");
        assert_eq!(operation(Some("/CodeSystem/$lookup"), ""), "lookup");
    }
}
