//! Watching the server from outside: every request is timed, counted in [`Metrics`] under a
//! short operation name taken from its matched route, and logged once when answered (target
//! `fhir_registers::access`); `GET /metrics` renders the metrics. Handlers know nothing of
//! this: the route a request matched travels back on its response (see [`tag_route`]).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::metrics::{self, Metrics};

/// What [`observe`] needs: where to count, and the FHIR base the routes are under.
#[derive(Clone)]
pub(super) struct Observer {
    metrics: Arc<Metrics>,
    base: Arc<str>,
}

impl Observer {
    /// Counts in `metrics`; FHIR routes are under `base` (`/fhir`, or empty for the root).
    pub(super) fn new(metrics: Arc<Metrics>, base: &str) -> Self {
        Self {
            metrics,
            base: base.trim_end_matches('/').into(),
        }
    }
}

/// Inside the router: copies the route the request matched onto its response, for [`observe`]
/// outside it (which runs before routing, so cannot read it from the request). Requests that
/// matched no route carry none.
pub(super) async fn tag_route(req: Request, next: Next) -> Response {
    let matched = req.extensions().get::<MatchedPath>().cloned();
    let mut response = next.run(req).await;
    if let Some(matched) = matched {
        response.extensions_mut().insert(matched);
    }
    response
}

/// Outermost but for the request id: times the request, counts it, and logs one access line
/// (`method`, `route`, `status`, `latency_ms`, `request_id`) when its response head is ready.
pub(super) async fn observe(
    State(observer): State<Observer>,
    req: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let uri = req.uri().clone();
    let request_id = req.headers().get("x-request-id").cloned();
    let response = next.run(req).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    let matched = response.extensions().get::<MatchedPath>();
    let operation = operation(matched.map(MatchedPath::as_str), &observer.base);
    observer.metrics.record_request(operation, status, elapsed);
    tracing::info!(
        target: "fhir_registers::access",
        method = method.as_str(),
        route = matched.map_or(uri.path(), MatchedPath::as_str),
        status,
        latency_ms = elapsed.as_secs_f64() * 1000.0,
        request_id = request_id
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-"),
        "answered"
    );
    response
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
