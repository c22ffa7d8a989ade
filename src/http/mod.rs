//! The HTTP layer (axum only): the routes table, shared state, and thin handlers that parse,
//! call one domain function, and render. Handlers live in one file per resource. Beside them,
//! not inside them: [`edge`] (what every request meets before routing), [`serve`] (the
//! connection loop that serves the router over TCP, with its timeouts and limits) and `observe`
//! (request metrics, access log lines and `GET /metrics`).

pub mod admin;
mod batch;
mod code_system;
mod concept_map;
mod connection;
mod cors;
pub mod edge;
pub mod metadata;
mod observe;
pub mod request;
mod search;
pub mod serve;
mod value_set;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::response::Response;
use axum::routing::{MethodRouter, any, get};

use crate::error::FhirError;
use crate::fhir::params::{Answer, OperationParams};
use crate::store::Registry;
use crate::terminology::budget::{CancelOnDrop, Lanes};
use crate::terminology::expand::ExpandLimits;
use crate::terminology::overlay::{Overlay, registry_on};
use crate::terminology::request_cache::RequestCaches;
use request::{FhirRequest, respond};

/// Shared server state: the current registry snapshot and settings.
pub struct AppState {
    /// The registry being served (swapped whole when a release is published).
    pub live: Arc<crate::registers::Live>,
    /// Expansion limits.
    pub limits: ExpandLimits,
    /// Time budget of one operation.
    pub request_timeout: Duration,
    /// The fast and slow lanes operations run in.
    pub lanes: Lanes,
    /// Request-supplied resources (`tx-resource`), read once per content.
    pub overlay: Overlay,
    /// `$cache-control` caches.
    pub caches: RequestCaches,
    /// Most bytes the answers of one batch may take together (then `too-costly` entries).
    pub max_batch_bytes: usize,
    /// Most entries in one batch.
    pub max_batch_entries: usize,
    /// Largest body and most parameters of one request.
    pub body_limits: request::BodyLimits,
    /// Which browser origins may call the FHIR API (CORS).
    pub cors: CorsOrigins,
    /// The admin API (token and syncs); `None`: no `/admin` routes.
    pub admin: Option<admin::Admin>,
    /// Request, sync, import and publish metrics (`GET /metrics`); share it with the sync
    /// service and the publisher so that theirs show too.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Most concepts the register browser keeps in computed diffs, together.
    pub browser_kept_diff_concepts: usize,
    /// Set once the latest versions' indexes are built: `/ready` answers 200 from then on.
    ready: std::sync::atomic::AtomicBool,
}

/// Which browser origins may call the FHIR API (CORS headers on the FHIR base only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigins {
    /// Any origin (`Access-Control-Allow-Origin: *`): the default, for open terminology reads.
    Any,
    /// Only these origins.
    List(Vec<axum::http::HeaderValue>),
    /// No CORS headers (browsers then refuse cross-origin calls).
    Off,
}

impl CorsOrigins {
    /// From the `--cors-origins` setting: `*`, `none`, or a comma-separated list of origins.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.trim() {
            "*" => Ok(Self::Any),
            "" | "none" => Ok(Self::Off),
            list => list
                .split(',')
                .map(str::trim)
                .filter(|o| !o.is_empty())
                .map(|o| {
                    if !(o.starts_with("http://") || o.starts_with("https://")) {
                        return Err(format!(
                            "'{o}' is not an origin (scheme://host[:port]), '*' or 'none'"
                        ));
                    }
                    axum::http::HeaderValue::from_str(o.trim_end_matches('/'))
                        .map_err(|_| format!("'{o}' is not a valid origin"))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Self::List),
        }
    }

    fn layer(&self) -> Option<cors::CorsLayer> {
        match self {
            Self::Off => None,
            Self::Any => Some(cors::CorsLayer::new(cors::Allowed::Any)),
            Self::List(list) => Some(cors::CorsLayer::new(cors::Allowed::List(
                list.as_slice().into(),
            ))),
        }
    }
}

impl AppState {
    /// State over a registry with default limits.
    pub fn new(registry: Registry) -> Self {
        Self {
            live: Arc::new(crate::registers::Live::new(registry)),
            limits: ExpandLimits::default(),
            request_timeout: Duration::from_secs(30),
            lanes: Lanes::default(),
            overlay: Overlay::default(),
            caches: RequestCaches::default(),
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
            max_batch_entries: DEFAULT_MAX_BATCH_ENTRIES,
            body_limits: request::BodyLimits::default(),
            cors: CorsOrigins::Any,
            admin: None,
            metrics: Arc::default(),
            browser_kept_diff_concepts: crate::web::DEFAULT_KEPT_DIFF_CONCEPTS,
            ready: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Builds the text and code indexes of the latest version of every CodeSystem (older
    /// versions build theirs on first use), then marks the server ready.
    pub fn warm_up(&self) {
        crate::registers::warm(&self.registry());
        self.ready.store(true, std::sync::atomic::Ordering::Release);
    }

    /// Whether the registry is loaded and its latest versions' indexes are built.
    pub fn is_ready(&self) -> bool {
        self.ready.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The current registry snapshot.
    pub fn registry(&self) -> Arc<Registry> {
        self.live.get()
    }

    /// `$cache-control`: `mode=start` opens a cache and returns its id; `mode=end` drops one.
    pub fn cache_control(
        &self,
        mode: Option<&str>,
        id: Option<&str>,
    ) -> Result<serde_json::Value, FhirError> {
        self.caches.control(mode, id, &self.overlay)
    }

    /// Parameters, registry (with supplied and cached resources, on the request's `date` unless
    /// the operation reads it itself) and the operation itself, in that order.
    fn run<A, F, T>(
        &self,
        p: OperationParams,
        cache_id: Option<&str>,
        dating: Dating,
        adjust: A,
        op: F,
    ) -> Result<Answer, FhirError>
    where
        A: FnOnce(&Registry, OperationParams) -> Result<OperationParams, FhirError>,
        F: FnOnce(&Registry, &OperationParams) -> Result<T, FhirError>,
        T: Into<Answer>,
    {
        self.caches.sweep(&self.overlay);
        let mut supplied = self.overlay.supplied(&p)?;
        if let Some(id) = cache_id {
            let others = self.caches.use_cache(id, &supplied, &self.overlay)?;
            supplied.extend(others);
        }
        let registry =
            self.overlay
                .registry(self.registry(), &supplied, &p.texts("useSupplement"))?;
        drop(supplied);
        let p = adjust(&registry, p)?;
        let registry = match (dating, p.text("date")?) {
            (Dating::RegistryOn, Some(date)) => registry_on(&registry, &p, &date)?,
            _ => registry,
        };
        op(&registry, &p).map(Into::into)
    }

    /// Runs an operation: parameters from the request, the registry it sees (with its
    /// `tx-resource`s and cache), an optional instance adjustment, then the domain function.
    /// Inline when it is cheap (`blocking` false and nothing supplied); otherwise on the blocking
    /// pool, in the [`Lanes`], within the time budget, and cancelled when the client goes away.
    pub async fn operate<A, F, T>(
        self: &Arc<Self>,
        req: &FhirRequest,
        adjust: A,
        blocking: bool,
        op: F,
    ) -> Response
    where
        A: FnOnce(&Registry, OperationParams) -> Result<OperationParams, FhirError>
            + Send
            + 'static,
        F: FnOnce(&Registry, &OperationParams) -> Result<T, FhirError> + Send + 'static,
        T: Into<Answer> + Send + 'static,
    {
        self.operate_dated(req, Dating::RegistryOn, adjust, blocking, op)
            .await
    }

    /// [`AppState::operate`], with the request's `date` read as `dating` says.
    pub async fn operate_dated<A, F, T>(
        self: &Arc<Self>,
        req: &FhirRequest,
        dating: Dating,
        adjust: A,
        blocking: bool,
        op: F,
    ) -> Response
    where
        A: FnOnce(&Registry, OperationParams) -> Result<OperationParams, FhirError>
            + Send
            + 'static,
        F: FnOnce(&Registry, &OperationParams) -> Result<T, FhirError> + Send + 'static,
        T: Into<Answer> + Send + 'static,
    {
        let result = match req.params() {
            Err(e) => Err(e),
            Ok(p) => {
                let supplies = req.cache_id.is_some()
                    || p.all("tx-resource").next().is_some()
                    || p.all("useSupplement").next().is_some();
                if !blocking && !supplies {
                    self.run(p, None, dating, adjust, op)
                } else {
                    self.run_in_lanes(p, req.cache_id.clone(), dating, adjust, op)
                        .await
                }
            }
        };
        request::respond_with(req.format.clone(), req.pretty, result)
    }

    async fn run_in_lanes<A, F, T>(
        self: &Arc<Self>,
        p: OperationParams,
        cache_id: Option<String>,
        dating: Dating,
        adjust: A,
        op: F,
    ) -> Result<Answer, FhirError>
    where
        A: FnOnce(&Registry, OperationParams) -> Result<OperationParams, FhirError>
            + Send
            + 'static,
        F: FnOnce(&Registry, &OperationParams) -> Result<T, FhirError> + Send + 'static,
        T: Into<Answer> + Send + 'static,
    {
        let state = self.clone();
        self.in_lanes("operation", move || {
            state.run(p, cache_id.as_deref(), dating, adjust, op)
        })
        .await
    }

    /// Runs `work` on the blocking pool, in the [`Lanes`], within the request time budget, and
    /// cancels it when the caller's future is dropped (the client went away). `what` names the
    /// work in the error a failed task gives. FHIR operations and the register browser's pages
    /// both run this way.
    pub async fn in_lanes<T: Send + 'static>(
        &self,
        what: &'static str,
        work: impl FnOnce() -> Result<T, FhirError> + Send + 'static,
    ) -> Result<T, FhirError> {
        let budget = self.lanes.budget(self.request_timeout);
        // Dropped with this future: when the client goes away, or the wait below ends.
        let cancel = CancelOnDrop(budget.clone());
        let within = budget.clone();
        let task = tokio::task::spawn_blocking(move || {
            within.run(|| {
                // The time spent waiting for a thread counts against the budget.
                crate::terminology::budget::check()?;
                work()
            })
        });
        // The work stops itself at its deadline; this is the backstop for work between two
        // checks.
        let result = match tokio::time::timeout(self.request_timeout + BACKSTOP, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(FhirError::Internal(format!("{what} task failed: {join}"))),
            Err(_) => Err(budget.timeout_error()),
        };
        drop(cancel);
        result
    }
}

/// What a request's `date` parameter means to an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dating {
    /// The operation sees the registry as it stood that day (a 404 before a register's first
    /// release): `$lookup`, `$validate-code`, `$expand`, ….
    RegistryOn,
    /// The operation reads `date` itself and sees the whole registry: `$translate`, whose `date`
    /// is the day the mappings held (see [`TranslateRequest::date`]).
    ///
    /// [`TranslateRequest::date`]: crate::terminology::translate::TranslateRequest::date
    Operation,
}

/// How long past its time budget an operation that has not checked it is waited for.
const BACKSTOP: Duration = Duration::from_secs(1);
/// Default of [`AppState::max_batch_bytes`]: 64 MiB.
pub const DEFAULT_MAX_BATCH_BYTES: usize = 64 * 1024 * 1024;
/// Default of [`AppState::max_batch_entries`].
pub const DEFAULT_MAX_BATCH_ENTRIES: usize = 1_000;

/// No instance adjustment.
pub fn as_is(_: &Registry, p: OperationParams) -> Result<OperationParams, FhirError> {
    Ok(p)
}

/// `GET /health` (outside the FHIR base): `ok` once the server answers. A liveness check for
/// orchestrators, and the trivial endpoint the load benchmark measures as this stack's ceiling.
async fn health() -> &'static str {
    "ok"
}

/// `GET /ready` (outside the FHIR base): 503 until the registry is loaded and the latest
/// versions' indexes are built, then 200. A readiness probe for load balancers and orchestrators.
async fn ready(axum::extract::State(state): axum::extract::State<Arc<AppState>>) -> Response {
    use axum::response::IntoResponse;
    if state.is_ready() {
        (axum::http::StatusCode::OK, "ready").into_response()
    } else {
        (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            [(axum::http::header::RETRY_AFTER, "1")],
            "warming up",
        )
            .into_response()
    }
}

/// Methods other than the route's own get a 405 OperationOutcome.
fn with_405(route: MethodRouter<Arc<AppState>>) -> MethodRouter<Arc<AppState>> {
    route.fallback(|req: FhirRequest| async move {
        respond(
            &req,
            Err(FhirError::MethodNotAllowed(
                "this HTTP method is not supported on this path".into(),
            )),
        )
    })
}

/// The router: FHIR base at `/fhir` (see [`app_at`] for another base path).
pub fn app(state: Arc<AppState>) -> Router {
    app_at(state, "/fhir")
}

/// The router with the FHIR base at `base_path`.
///
/// The FHIR routes are registered with the base in their paths rather than nested under it:
/// a nested router strips the prefix from every request's URI (a new URI, parsed again) and
/// routes it a second time.
pub fn app_at(state: Arc<AppState>, base_path: &str) -> Router {
    let base = base_path.trim_end_matches('/');
    // `/` is the base itself.
    let at = |path: &str| match path {
        "/" if !base.is_empty() => base.to_string(),
        _ => format!("{base}{path}"),
    };
    let fhir = Router::new()
        .route(&at("/"), with_405(axum::routing::post(batch::run_batch)))
        .route(&at("/$versions"), with_405(get(batch::versions)))
        .route(
            &at("/$cache-control"),
            with_405(get(batch::cache_control).post(batch::cache_control)),
        )
        .route(
            &at("/ValueSet/$batch-validate-code"),
            with_405(get(batch::batch_validate_codes).post(batch::batch_validate_codes)),
        )
        .route(&at("/metadata"), with_405(get(metadata::capabilities)))
        .route(
            &at("/CodeSystem"),
            with_405(get(code_system::search_code_systems)),
        )
        .route(
            &at("/CodeSystem/$lookup"),
            with_405(get(code_system::lookup_code).post(code_system::lookup_code)),
        )
        .route(
            &at("/CodeSystem/$validate-code"),
            with_405(
                get(code_system::validate_code_in_code_system)
                    .post(code_system::validate_code_in_code_system),
            ),
        )
        .route(
            &at("/CodeSystem/$subsumes"),
            with_405(get(code_system::subsumes_codes).post(code_system::subsumes_codes)),
        )
        .route(
            &at("/CodeSystem/$concept-history"),
            with_405(get(code_system::concept_history_of).post(code_system::concept_history_of)),
        )
        .route(
            &at("/CodeSystem/$diff"),
            with_405(get(code_system::diff_of).post(code_system::diff_of)),
        )
        .route(
            &at("/CodeSystem/{id}"),
            with_405(get(code_system::read_code_system)),
        )
        .route(
            &at("/CodeSystem/{id}/$concept-history"),
            with_405(get(code_system::concept_history_in).post(code_system::concept_history_in)),
        )
        .route(
            &at("/CodeSystem/{id}/$diff"),
            with_405(get(code_system::diff_in).post(code_system::diff_in)),
        )
        .route(
            &at("/CodeSystem/{id}/$lookup"),
            with_405(get(code_system::lookup_code_in).post(code_system::lookup_code_in)),
        )
        .route(
            &at("/CodeSystem/{id}/$validate-code"),
            with_405(
                get(code_system::validate_code_in_code_system_in)
                    .post(code_system::validate_code_in_code_system_in),
            ),
        )
        .route(
            &at("/CodeSystem/{id}/$subsumes"),
            with_405(get(code_system::subsumes_codes_in).post(code_system::subsumes_codes_in)),
        )
        .route(
            &at("/ValueSet"),
            with_405(get(value_set::search_value_sets)),
        )
        .route(
            &at("/ValueSet/$expand"),
            with_405(get(value_set::expand_value_set).post(value_set::expand_value_set)),
        )
        .route(
            &at("/ValueSet/$validate-code"),
            with_405(
                get(value_set::validate_code_in_value_set)
                    .post(value_set::validate_code_in_value_set),
            ),
        )
        .route(
            &at("/ValueSet/{id}"),
            with_405(get(value_set::read_value_set)),
        )
        .route(
            &at("/ValueSet/{id}/$expand"),
            with_405(get(value_set::expand_value_set_in).post(value_set::expand_value_set_in)),
        )
        .route(
            &at("/ValueSet/{id}/$validate-code"),
            with_405(
                get(value_set::validate_code_in_value_set_in)
                    .post(value_set::validate_code_in_value_set_in),
            ),
        )
        .route(
            &at("/ConceptMap"),
            with_405(get(concept_map::search_concept_maps)),
        )
        .route(
            &at("/ConceptMap/$translate"),
            with_405(get(concept_map::translate_code).post(concept_map::translate_code)),
        )
        .route(
            &at("/ConceptMap/{id}"),
            with_405(get(concept_map::read_concept_map)),
        )
        .route(
            &at("/ConceptMap/{id}/$translate"),
            with_405(get(concept_map::translate_code_in).post(concept_map::translate_code_in)),
        );
    // CORS headers on the FHIR base only; the route each request matched is copied onto its
    // response for the metrics and the access log (one layer, so one more boxed service per
    // route, not two).
    let cors = state.cors.layer();
    // At the root, whatever matches no route is a FHIR path.
    let fhir = if base.is_empty() {
        fhir.fallback(fhir_not_found)
    } else {
        fhir
    };
    let fhir = match &cors {
        Some(cors) => fhir.layer(
            tower::ServiceBuilder::new()
                .layer(observe::TagRouteLayer)
                .layer(cors.clone()),
        ),
        None => fhir.layer(observe::TagRouteLayer),
    };
    // Under the base, a path that names nothing. Not tagged: it matched no route, and is
    // counted and logged as such.
    let fhir = if base.is_empty() {
        fhir
    } else {
        let not_found = any(fhir_not_found);
        let not_found = match cors {
            Some(cors) => not_found.layer(cors),
            None => not_found,
        };
        fhir.route(&format!("{base}/{{*path}}"), not_found)
    };
    let others = Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(observe::render_metrics));
    let others = if state.admin.is_some() {
        others.merge(admin::routes())
    } else {
        others
    };
    let router = fhir.merge(others.layer(observe::TagRouteLayer));
    // The register browser at `/`, beside a FHIR base of its own (not when the FHIR base is the
    // root or one of the browser's paths).
    let router = if crate::web::fits_beside(base) {
        router.merge(crate::web::routes(state.clone(), base).layer(observe::TagRouteLayer))
    } else {
        router
    };
    let router = if base.is_empty() {
        router
    } else {
        router.fallback(|req: FhirRequest| async move {
            respond(
                &req,
                Err(FhirError::NotFound(
                    "not a FHIR endpoint of this server".into(),
                )),
            )
        })
    };
    let observer = observe::Observer::new(state.metrics.clone(), base);
    // Every answer carries the request's `X-Request-Id`, made up (a UUID) when the client sent
    // none, so a client and the server's operators can name one request; the access log line
    // and the metrics see every request, including those the edge refuses.
    edge::in_front_of(router.with_state(state), observer, panic_response)
}

/// Under the FHIR base, a path that names no resource type or operation.
async fn fhir_not_found(req: FhirRequest) -> Response {
    respond(
        &req,
        Err(FhirError::NotFound(
            "no such resource type or operation on this server (see /metadata)".into(),
        )),
    )
}

/// A panic in a handler is a bug: log it and answer 500 with an OperationOutcome.
fn panic_response(err: Box<dyn std::any::Any + Send>) -> axum::response::Response {
    let detail = err
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panic".into());
    request::respond_with(
        Ok(crate::fhir::format::Format::Json),
        false,
        Err(FhirError::Internal(format!("handler panicked: {detail}"))),
    )
}
