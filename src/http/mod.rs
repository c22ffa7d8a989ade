//! The HTTP layer (axum only): the routes table, shared state, and thin handlers that parse,
//! call one domain function, and render. Handlers live in one file per resource.

mod batch;
mod code_system;
mod concept_map;
pub mod metadata;
pub mod request;
mod search;
mod value_set;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::Router;
use axum::response::Response;
use axum::routing::{MethodRouter, get};
use serde_json::Value as Json;

use crate::error::FhirError;
use crate::fhir::params::{Answer, OperationParams, ParamValue};
use crate::store::{CodeSystemVersion, Registry};
use crate::terminology::expand::ExpandLimits;
use request::{FhirRequest, respond};

/// Shared server state: the current registry snapshot and settings.
pub struct AppState {
    registry: RwLock<Arc<Registry>>,
    /// Expansion limits.
    pub limits: ExpandLimits,
    /// Time budget of one operation.
    pub request_timeout: Duration,
    /// Most bytes the answers of one batch may take together (then `too-costly` entries).
    pub max_batch_bytes: usize,
    tx_cache: Mutex<HashMap<String, Arc<CodeSystemVersion>>>,
    /// `$cache-control` caches: id → resources sent with `tx-resource` under that id.
    client_caches: Mutex<HashMap<String, Vec<Json>>>,
}

impl AppState {
    /// State over a registry with default limits.
    pub fn new(registry: Registry) -> Self {
        Self {
            registry: RwLock::new(Arc::new(registry)),
            limits: ExpandLimits::default(),
            request_timeout: Duration::from_secs(30),
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
            tx_cache: Mutex::new(HashMap::new()),
            client_caches: Mutex::new(HashMap::new()),
        }
    }

    /// The current registry snapshot.
    pub fn registry(&self) -> Arc<Registry> {
        match self.registry.read() {
            Ok(r) => r.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Swaps in a new registry (requests in flight keep the old one).
    pub fn replace_registry(&self, registry: Registry) {
        let mut guard = match self.registry.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        *guard = Arc::new(registry);
    }

    /// The registry a request sees: the shared one, plus the CodeSystems, ValueSets and
    /// ConceptMaps it supplies as `tx-resource` parameters (compiled once per distinct content
    /// and cached), with the CodeSystem supplements named by `useSupplement` applied.
    pub fn registry_for(&self, params: &OperationParams) -> Result<Arc<Registry>, FhirError> {
        let base = self.registry();
        let supplied: Vec<&Json> = params
            .all("tx-resource")
            .filter_map(|v| match v {
                ParamValue::Resource(r) => Some(r),
                _ => None,
            })
            .collect();
        let use_supplements = params.texts("useSupplement");
        if supplied.is_empty() && use_supplements.is_empty() {
            return Ok(base);
        }
        let mut code_systems = Vec::new();
        let mut value_sets = Vec::new();
        let mut concept_maps = Vec::new();
        for r in supplied {
            match r.get("resourceType").and_then(Json::as_str) {
                Some("CodeSystem") => code_systems.push(self.compiled_code_system(r)?),
                Some("ValueSet") => value_sets.push(crate::registers::value_set_entry(r.clone())),
                Some("ConceptMap") => {
                    concept_maps.push(crate::terminology::translate::concept_map_from_fhir(r)?)
                }
                Some(_) | None => {}
            }
        }
        let mut registry = base.overlay(code_systems, value_sets, concept_maps);
        crate::terminology::resources::apply_supplements(&mut registry, &use_supplements)?;
        Ok(Arc::new(registry))
    }

    /// A request under `X-Cache-Id`: its `tx-resource`s join the cache, and the cache's other
    /// resources are added to its parameters.
    fn with_cached_resources(&self, id: &str, p: &mut OperationParams) -> Result<(), FhirError> {
        let mut caches = match self.client_caches.lock() {
            Ok(c) => c,
            Err(e) => e.into_inner(),
        };
        let Some(cache) = caches.get_mut(id) else {
            return Err(FhirError::NotFound(format!(
                "The cache '{id}' is not known (start one with $cache-control?mode=start)"
            )));
        };
        let sent: Vec<Json> = p
            .all("tx-resource")
            .filter_map(|v| match v {
                ParamValue::Resource(r) => Some(r.clone()),
                _ => None,
            })
            .collect();
        for r in &sent {
            if !cache.contains(r) {
                if cache.len() >= MAX_CACHED_RESOURCES {
                    return Err(FhirError::TooCostly(format!(
                        "a cache holds at most {MAX_CACHED_RESOURCES} resources"
                    )));
                }
                cache.push(r.clone());
            }
        }
        for r in cache.iter().filter(|r| !sent.contains(r)) {
            p.params
                .push(("tx-resource".into(), ParamValue::Resource(r.clone())));
        }
        Ok(())
    }

    /// `$cache-control`: `mode=start` opens a cache and returns its id; `mode=end` drops one.
    pub fn cache_control(&self, mode: Option<&str>, id: Option<&str>) -> Result<Json, FhirError> {
        let mut caches = match self.client_caches.lock() {
            Ok(c) => c,
            Err(e) => e.into_inner(),
        };
        let mut out = crate::fhir::params::ParametersOut::new();
        match (mode, id) {
            (Some("start"), _) => {
                if caches.len() >= MAX_CLIENT_CACHES {
                    return Err(FhirError::TooCostly(format!(
                        "at most {MAX_CLIENT_CACHES} caches may be open at once; end one first"
                    )));
                }
                let id = crate::terminology::expand::new_uuid()
                    .trim_start_matches("urn:uuid:")
                    .to_string();
                caches.insert(id.clone(), Vec::new());
                out.value("cache-id", "valueString", serde_json::json!(id));
            }
            (Some("end"), Some(id)) => {
                if caches.remove(id).is_none() {
                    return Err(FhirError::NotFound(format!(
                        "The cache '{id}' is not known"
                    )));
                }
                out.value("result", "valueBoolean", serde_json::json!(true));
            }
            (Some("end"), None) => {
                return Err(FhirError::Required(
                    "mode=end needs the cache id (X-Cache-Id header or cache-id parameter)".into(),
                ));
            }
            (other, _) => {
                return Err(FhirError::Invalid(format!(
                    "$cache-control needs mode=start or mode=end, not {other:?}"
                )));
            }
        }
        Ok(out.build())
    }

    fn compiled_code_system(&self, resource: &Json) -> Result<Arc<CodeSystemVersion>, FhirError> {
        let text = resource.to_string();
        let key = crate::source::ContentHash::of(text.as_bytes());
        let mut cache = match self.tx_cache.lock() {
            Ok(c) => c,
            Err(p) => p.into_inner(),
        };
        if let Some(cs) = cache.get(&key) {
            return Ok(cs.clone());
        }
        let cs = Arc::new(
            crate::terminology::resources::code_system_version_from_fhir(resource, "tx-resource")?,
        );
        if cache.len() >= TX_CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(key, cs.clone());
        Ok(cs)
    }

    /// Runs an operation: parameters from the request, the registry it sees (with its
    /// `tx-resource`s), an optional instance adjustment, then the domain function — on the
    /// blocking pool within the time budget when `blocking`, inline otherwise.
    pub async fn operate<A, F, T>(
        self: &Arc<Self>,
        req: &FhirRequest,
        adjust: A,
        blocking: bool,
        op: F,
    ) -> Response
    where
        A: FnOnce(&Registry, OperationParams) -> Result<OperationParams, FhirError>,
        F: FnOnce(&Registry, &OperationParams) -> Result<T, FhirError> + Send + 'static,
        T: Into<Answer> + Send + 'static,
    {
        let prepared = req.params().and_then(|mut p| {
            if let Some(id) = &req.cache_id {
                self.with_cached_resources(id, &mut p)?;
            }
            let registry = self.registry_for(&p)?;
            let p = adjust(&registry, p)?;
            let registry = match p.text("date")? {
                Some(date) => Arc::new(registry_on(&registry, &p, &date)?),
                None => registry,
            };
            Ok((registry, p))
        });
        let result = match prepared {
            Err(e) => Err(e),
            Ok((registry, p)) if !blocking => op(&registry, &p).map(Into::into),
            Ok((registry, p)) => {
                let task = tokio::task::spawn_blocking(move || {
                    op(&registry, &p).map(Into::<Answer>::into)
                });
                match tokio::time::timeout(self.request_timeout, task).await {
                    Ok(Ok(result)) => result,
                    Ok(Err(join)) => Err(FhirError::Internal(format!(
                        "operation task failed: {join}"
                    ))),
                    Err(_) => Err(FhirError::TooCostly(format!(
                        "the operation did not finish within its time budget of {} s",
                        self.request_timeout.as_secs()
                    ))),
                }
            }
        };
        request::respond_with(req.format.clone(), req.pretty, result)
    }
}

/// The registry as it stood on the request's `date`: each CodeSystem answers from the release in
/// force then. A CodeSystem the request names (`system`, a coding, or an include of the ValueSet
/// asked for) whose first release came later is a 404, not an empty answer.
fn registry_on(
    registry: &Registry,
    p: &OperationParams,
    date: &str,
) -> Result<Registry, FhirError> {
    let day = crate::store::date_param(date).ok_or_else(|| {
        FhirError::Invalid(format!(
            "The parameter 'date' value '{date}' is not a FHIR date or dateTime (YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm:ss+zz:zz)"
        ))
    })?;
    let mut systems: Vec<String> = p.texts("system");
    let mut value_sets: Vec<String> = p.texts("valueSet");
    for url in p.texts("url") {
        if registry.knows_code_system(&url) {
            systems.push(url);
        } else {
            value_sets.push(url);
        }
    }
    if let Ok(Some(c)) = p.coding("coding") {
        systems.extend(c.system);
    }
    if let Ok(Some(codings)) = p.codeable_concept("codeableConcept") {
        systems.extend(codings.into_iter().filter_map(|c| c.system));
    }
    for canonical in value_sets {
        let (url, version) = match canonical.split_once('|') {
            Some((u, v)) => (u, Some(v)),
            None => (canonical.as_str(), None),
        };
        if let Some(vs) = registry.value_set(url, version) {
            let includes = vs.resource["compose"]["include"].as_array().cloned();
            systems.extend(
                includes
                    .into_iter()
                    .flatten()
                    .filter_map(|i| i["system"].as_str().map(str::to_string)),
            );
        }
    }
    for system in systems {
        let url = system.split('|').next().unwrap_or(&system);
        if let Some(first) = registry.first_release_after(url, &day) {
            return Err(FhirError::NotFound(format!(
                "No release of the CodeSystem '{url}' was in force on {date}: its first release is {first}"
            )));
        }
    }
    Ok(registry.as_of(&day))
}

/// Default of [`AppState::max_batch_bytes`]: 64 MiB.
pub const DEFAULT_MAX_BATCH_BYTES: usize = 64 * 1024 * 1024;

/// Most `$cache-control` caches open at once, and most resources in one.
const MAX_CLIENT_CACHES: usize = 256;
const MAX_CACHED_RESOURCES: usize = 5_000;

/// How many compiled `tx-resource` CodeSystems are cached.
const TX_CACHE_ENTRIES: usize = 256;

/// No instance adjustment.
pub fn as_is(_: &Registry, p: OperationParams) -> Result<OperationParams, FhirError> {
    Ok(p)
}

/// `GET /health` (outside the FHIR base): `ok` once the server answers. A liveness check for
/// orchestrators, and the trivial endpoint the load benchmark measures as this stack's ceiling.
async fn health() -> &'static str {
    "ok"
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
pub fn app_at(state: Arc<AppState>, base_path: &str) -> Router {
    let fhir = Router::new()
        .route("/", with_405(axum::routing::post(batch::run_batch)))
        .route("/$versions", with_405(get(batch::versions)))
        .route(
            "/$cache-control",
            with_405(get(batch::cache_control).post(batch::cache_control)),
        )
        .route(
            "/ValueSet/$batch-validate-code",
            with_405(get(batch::batch_validate_codes).post(batch::batch_validate_codes)),
        )
        .route("/metadata", with_405(get(metadata::capabilities)))
        .route(
            "/CodeSystem",
            with_405(get(code_system::search_code_systems)),
        )
        .route(
            "/CodeSystem/$lookup",
            with_405(get(code_system::lookup_code).post(code_system::lookup_code)),
        )
        .route(
            "/CodeSystem/$validate-code",
            with_405(
                get(code_system::validate_code_in_code_system)
                    .post(code_system::validate_code_in_code_system),
            ),
        )
        .route(
            "/CodeSystem/$subsumes",
            with_405(get(code_system::subsumes_codes).post(code_system::subsumes_codes)),
        )
        .route(
            "/CodeSystem/$concept-history",
            with_405(get(code_system::concept_history_of).post(code_system::concept_history_of)),
        )
        .route(
            "/CodeSystem/$diff",
            with_405(get(code_system::diff_of).post(code_system::diff_of)),
        )
        .route(
            "/CodeSystem/{id}",
            with_405(get(code_system::read_code_system)),
        )
        .route(
            "/CodeSystem/{id}/$concept-history",
            with_405(get(code_system::concept_history_in).post(code_system::concept_history_in)),
        )
        .route(
            "/CodeSystem/{id}/$diff",
            with_405(get(code_system::diff_in).post(code_system::diff_in)),
        )
        .route(
            "/CodeSystem/{id}/$lookup",
            with_405(get(code_system::lookup_code_in).post(code_system::lookup_code_in)),
        )
        .route(
            "/CodeSystem/{id}/$validate-code",
            with_405(
                get(code_system::validate_code_in_code_system_in)
                    .post(code_system::validate_code_in_code_system_in),
            ),
        )
        .route(
            "/CodeSystem/{id}/$subsumes",
            with_405(get(code_system::subsumes_codes_in).post(code_system::subsumes_codes_in)),
        )
        .route("/ValueSet", with_405(get(value_set::search_value_sets)))
        .route(
            "/ValueSet/$expand",
            with_405(get(value_set::expand_value_set).post(value_set::expand_value_set)),
        )
        .route(
            "/ValueSet/$validate-code",
            with_405(
                get(value_set::validate_code_in_value_set)
                    .post(value_set::validate_code_in_value_set),
            ),
        )
        .route("/ValueSet/{id}", with_405(get(value_set::read_value_set)))
        .route(
            "/ValueSet/{id}/$expand",
            with_405(get(value_set::expand_value_set_in).post(value_set::expand_value_set_in)),
        )
        .route(
            "/ValueSet/{id}/$validate-code",
            with_405(
                get(value_set::validate_code_in_value_set_in)
                    .post(value_set::validate_code_in_value_set_in),
            ),
        )
        .route(
            "/ConceptMap",
            with_405(get(concept_map::search_concept_maps)),
        )
        .route(
            "/ConceptMap/$translate",
            with_405(get(concept_map::translate_code).post(concept_map::translate_code)),
        )
        .route(
            "/ConceptMap/{id}",
            with_405(get(concept_map::read_concept_map)),
        )
        .route(
            "/ConceptMap/{id}/$translate",
            with_405(get(concept_map::translate_code_in).post(concept_map::translate_code_in)),
        )
        .fallback(|req: FhirRequest| async move {
            respond(
                &req,
                Err(FhirError::NotFound(
                    "no such resource type or operation on this server (see /metadata)".into(),
                )),
            )
        });
    let base = base_path.trim_end_matches('/');
    let router = if base.is_empty() {
        fhir
    } else {
        Router::new()
            .nest(base, fhir)
            .fallback(|req: FhirRequest| async move {
                respond(
                    &req,
                    Err(FhirError::NotFound(
                        "not a FHIR endpoint of this server".into(),
                    )),
                )
            })
    };
    router
        .route("/health", get(health))
        .with_state(state)
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            panic_response,
        ))
}

/// A panic in a handler is a bug: log it and answer 500 with an OperationOutcome.
fn panic_response(err: Box<dyn std::any::Any + Send + 'static>) -> axum::response::Response {
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
