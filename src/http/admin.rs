//! The admin API, outside the FHIR base and behind a bearer token: `POST /admin/sync` (every
//! register), `POST /admin/sync/{register}` (one) run a sync now and answer what it imported;
//! `GET /admin/status` shows each register's upstream and sync history. With no token
//! configured these routes do not exist. Answers are plain JSON, not FHIR resources.

use std::sync::Arc;

use axum::Json;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use super::AppState;
use crate::sync::schedule::Service;
use crate::sync::{Secret, constant_time_eq};

/// The admin API's token and the sync service it drives.
pub struct Admin {
    token: Secret,
    /// The syncs.
    pub service: Arc<Service>,
}

impl Admin {
    /// Admin access with this token (must not be empty).
    pub fn new(token: Secret, service: Arc<Service>) -> Self {
        Self { token, service }
    }
}

/// The admin routes (for a state whose `admin` is set).
pub fn routes() -> axum::Router<Arc<AppState>> {
    axum::Router::new()
        .route("/admin/sync", post(sync_all))
        .route("/admin/sync/{register}", post(sync_one))
        .route("/admin/status", get(status))
}

/// A request with the right bearer token (compared in constant time); otherwise 401 with
/// `WWW-Authenticate`.
struct Authorized(Arc<Service>);

impl FromRequestParts<Arc<AppState>> for Authorized {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let Some(admin) = &state.admin else {
            return Err(error(StatusCode::NOT_FOUND, "no admin API on this server"));
        };
        let given = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, token) = v.trim().split_once(' ')?;
                scheme
                    .eq_ignore_ascii_case("bearer")
                    .then(|| token.trim().to_string())
            });
        let (challenge, message) = match given {
            None => (
                r#"Bearer realm="fhir-registers admin""#,
                "this needs Authorization: Bearer <admin token>",
            ),
            Some(token) if constant_time_eq(token.as_bytes(), admin.token.expose().as_bytes()) => {
                return Ok(Self(admin.service.clone()));
            }
            Some(_) => (
                r#"Bearer realm="fhir-registers admin", error="invalid_token""#,
                "the bearer token is not the admin token",
            ),
        };
        let mut response = error(StatusCode::UNAUTHORIZED, message);
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static(challenge),
        );
        Err(response)
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// 200 when every sync succeeded, 502 when an upstream failed (the reports say how).
fn reports_status(failed: bool) -> StatusCode {
    if failed {
        StatusCode::BAD_GATEWAY
    } else {
        StatusCode::OK
    }
}

async fn sync_all(Authorized(service): Authorized) -> Response {
    let reports = service.sync_all().await;
    let failed = reports.iter().any(|r| r.failed());
    (reports_status(failed), Json(json!({ "reports": reports }))).into_response()
}

async fn sync_one(Authorized(service): Authorized, Path(register): Path<String>) -> Response {
    match service.sync_one(&register).await {
        Ok(report) => (reports_status(report.failed()), Json(json!(report))).into_response(),
        Err(e) => error(StatusCode::NOT_FOUND, &e.0),
    }
}

async fn status(Authorized(service): Authorized, State(state): State<Arc<AppState>>) -> Response {
    let mut body = tokio::task::spawn_blocking(move || service.status())
        .await
        .unwrap_or_else(|e| json!({ "error": format!("status failed: {e}") }));
    body["registryGeneration"] = json!(state.live.generation());
    Json(body).into_response()
}
