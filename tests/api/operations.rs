//! Operational endpoints and headers beside the FHIR API: `/ready`, CORS on the FHIR base, and
//! `X-Request-Id` on every answer.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use fhir_registers::http::CorsOrigins;
use fhir_registers::store::Registry;
use fhir_registers::{AppState, app};
use tower::ServiceExt;

use crate::support::state;

async fn send(state: Arc<AppState>, req: Request<Body>) -> axum::response::Response {
    app(state).oneshot(req).await.expect("router answers")
}

fn header_of<'a>(resp: &'a axum::response::Response, name: &str) -> Option<&'a str> {
    resp.headers().get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn ready_is_503_until_the_indexes_are_built_then_200() {
    let s = Arc::new(AppState::new(Registry::default()));
    let get = || Request::get("/ready").body(Body::empty()).expect("request");
    let before = send(s.clone(), get()).await;
    assert_eq!(before.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header_of(&before, "retry-after"), Some("1"));
    // Liveness does not wait for readiness.
    let health = send(
        s.clone(),
        Request::get("/health")
            .body(Body::empty())
            .expect("request"),
    )
    .await;
    assert_eq!(health.status(), StatusCode::OK);
    s.warm_up();
    assert!(s.is_ready());
    let after = send(s, get()).await;
    assert_eq!(after.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_fhir_base_answers_cors_preflights_and_names_any_origin_by_default() {
    let preflight = Request::builder()
        .method(Method::OPTIONS)
        .uri("/fhir/CodeSystem/$lookup")
        .header(header::ORIGIN, "https://forms.example.org")
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "content-type")
        .body(Body::empty())
        .expect("request");
    let resp = send(state(), preflight).await;
    assert!(resp.status().is_success(), "{}", resp.status());
    assert_eq!(header_of(&resp, "access-control-allow-origin"), Some("*"));
    let methods = header_of(&resp, "access-control-allow-methods").unwrap_or("");
    assert!(
        methods.contains("POST") && methods.contains("GET"),
        "{methods}"
    );
    let headers = header_of(&resp, "access-control-allow-headers").unwrap_or("");
    assert!(headers.contains("content-type"), "{headers}");

    let read = Request::get("/fhir/metadata")
        .header(header::ORIGIN, "https://forms.example.org")
        .body(Body::empty())
        .expect("request");
    let resp = send(state(), read).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header_of(&resp, "access-control-allow-origin"), Some("*"));

    // Outside the FHIR base: no CORS headers.
    let health = Request::get("/health")
        .header(header::ORIGIN, "https://forms.example.org")
        .body(Body::empty())
        .expect("request");
    let resp = send(state(), health).await;
    assert_eq!(header_of(&resp, "access-control-allow-origin"), None);
}

#[tokio::test]
async fn cors_origins_can_be_listed_or_switched_off() {
    let with = |cors: CorsOrigins| {
        let mut s = AppState::new(Registry::default());
        s.cors = cors;
        Arc::new(s)
    };
    let from = |origin: &str| {
        Request::get("/fhir/metadata")
            .header(header::ORIGIN, origin)
            .body(Body::empty())
            .expect("request")
    };
    let listed =
        with(CorsOrigins::parse("https://a.example.org, https://b.example.org").expect("parses"));
    let resp = send(listed.clone(), from("https://b.example.org")).await;
    assert_eq!(
        header_of(&resp, "access-control-allow-origin"),
        Some("https://b.example.org")
    );
    let resp = send(listed, from("https://evil.example.net")).await;
    assert_eq!(header_of(&resp, "access-control-allow-origin"), None);
    let off = with(CorsOrigins::parse("none").expect("parses"));
    let resp = send(off, from("https://a.example.org")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header_of(&resp, "access-control-allow-origin"), None);
    assert!(
        CorsOrigins::parse("a.example.org").is_err(),
        "an origin needs its scheme"
    );
}

#[tokio::test]
async fn every_answer_carries_a_request_id_echoed_or_made_up() {
    let sent = Request::get("/fhir/CodeSystem/$lookup?system=http://example.org/none&code=x")
        .header("x-request-id", "engine-42")
        .body(Body::empty())
        .expect("request");
    let resp = send(state(), sent).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND, "errors carry it too");
    assert_eq!(header_of(&resp, "x-request-id"), Some("engine-42"));

    let mut ids = Vec::new();
    for _ in 0..2 {
        let resp = send(
            state(),
            Request::get("/fhir/metadata")
                .body(Body::empty())
                .expect("request"),
        )
        .await;
        let id = header_of(&resp, "x-request-id")
            .expect("made up")
            .to_string();
        assert_eq!(id.len(), 36, "a UUID: {id}");
        ids.push(id);
    }
    assert_ne!(ids[0], ids[1], "each request gets its own id");
}

#[tokio::test]
async fn the_fhir_base_can_be_the_root_or_a_path() {
    async fn ask(base: &str, path: &str) -> axum::response::Response {
        let req = Request::get(path)
            .header(header::ORIGIN, "https://forms.example.org")
            .body(Body::empty())
            .expect("request");
        fhir_registers::http::app_at(state(), base)
            .oneshot(req)
            .await
            .expect("router answers")
    }
    let lookup = "/CodeSystem/$lookup?system=http://hl7.org/fhir/sid/icd-10&code=J45.9";
    for (base, prefix) in [("/", ""), ("", ""), ("/r4", "/r4"), ("/r4/", "/r4")] {
        let found = ask(base, &format!("{prefix}{lookup}")).await;
        assert_eq!(found.status(), StatusCode::OK, "{base}");
        assert_eq!(header_of(&found, "access-control-allow-origin"), Some("*"));
        // Under the base, a path naming nothing is a FHIR 404 with CORS headers.
        let missing = ask(base, &format!("{prefix}/Patient/1")).await;
        assert_eq!(missing.status(), StatusCode::NOT_FOUND, "{base}");
        assert_eq!(
            header_of(&missing, "access-control-allow-origin"),
            Some("*")
        );
        let health = ask(base, "/health").await;
        assert_eq!(health.status(), StatusCode::OK, "{base}");
        assert_eq!(header_of(&health, "access-control-allow-origin"), None);
    }
    // Outside a base path: not a FHIR endpoint, and no CORS headers.
    let outside = ask("/r4", "/fhir/metadata").await;
    assert_eq!(outside.status(), StatusCode::NOT_FOUND);
    assert_eq!(header_of(&outside, "access-control-allow-origin"), None);
    let body = axum::body::to_bytes(outside.into_body(), 1 << 20)
        .await
        .expect("body");
    assert!(
        String::from_utf8_lossy(&body).contains("not a FHIR endpoint"),
        "{}",
        String::from_utf8_lossy(&body)
    );
}
