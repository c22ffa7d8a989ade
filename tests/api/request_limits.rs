//! Limits on what one request may carry: body size (413), parameter count (400) and batch entries
//! (422), each set from the server's configuration and answered as an OperationOutcome.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use fhir_registers::AppState;
use fhir_registers::http::request::BodyLimits;
use fhir_registers::store::Registry;
use serde_json::json;

use crate::support::{send_to, state};

/// A state over an empty registry with the given request limits: the limits are checked before
/// any register is consulted.
fn limited(
    max_body_bytes: usize,
    max_parameters: usize,
    max_batch_entries: usize,
) -> Arc<AppState> {
    let mut state = AppState::new(Registry::default());
    state.body_limits = BodyLimits {
        max_body_bytes,
        max_parameters,
        body_read_timeout: std::time::Duration::from_millis(300),
    };
    state.max_batch_entries = max_batch_entries;
    Arc::new(state)
}

fn issue_code(body: &serde_json::Value) -> &str {
    body["issue"][0]["code"].as_str().unwrap_or("")
}

fn post(path: &str, body: String) -> Request<Body> {
    Request::post(path)
        .header(header::CONTENT_TYPE, "application/fhir+json")
        .body(Body::from(body))
        .expect("request")
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_too_long() {
    let state = limited(1024, 10_000, 1_000);
    let params = json!({ "resourceType": "Parameters", "parameter": [
        { "name": "code", "valueCode": "x".repeat(2_000) } ] });
    // Declared by Content-Length, and streamed without one (chunked): both refused.
    let reply = send_to(
        state.clone(),
        post("/fhir/CodeSystem/$lookup", params.to_string()),
    )
    .await;
    assert_eq!(
        reply.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        reply.text()
    );
    let body = reply.json();
    assert_eq!(body["resourceType"], "OperationOutcome");
    assert_eq!(issue_code(&body), "too-long");
    assert!(reply.text().contains("1024 bytes"), "{}", reply.text());

    let chunks = futures_util::stream::iter(
        (0..4).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b' '; 512]))),
    );
    let streamed = Request::post("/fhir/CodeSystem/$lookup")
        .header(header::CONTENT_TYPE, "application/fhir+json")
        .body(Body::from_stream(chunks))
        .expect("request");
    let reply = send_to(state.clone(), streamed).await;
    assert_eq!(
        reply.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        reply.text()
    );

    // Under the limit the same server reads the body (and answers about the code, not the size).
    let small = json!({ "resourceType": "Parameters", "parameter": [
        { "name": "system", "valueUri": "http://example.org/none" },
        { "name": "code", "valueCode": "x" } ] });
    let reply = send_to(state, post("/fhir/CodeSystem/$lookup", small.to_string())).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.text());
}

#[tokio::test]
async fn parameters_over_the_limit_are_a_400() {
    let state = limited(1 << 20, 5, 1_000);
    let query: Vec<String> = (0..6).map(|i| format!("property=p{i}")).collect();
    let req = Request::get(format!("/fhir/CodeSystem/$lookup?{}", query.join("&")))
        .body(Body::empty())
        .expect("request");
    let reply = send_to(state.clone(), req).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text());
    assert_eq!(issue_code(&reply.json()), "invalid");
    assert!(
        reply.text().contains("6 parameters; at most 5"),
        "{}",
        reply.text()
    );

    let params = json!({ "resourceType": "Parameters", "parameter":
        (0..6).map(|i| json!({ "name": "property", "valueCode": format!("p{i}") })).collect::<Vec<_>>() });
    let reply = send_to(
        state.clone(),
        post("/fhir/CodeSystem/$lookup", params.to_string()),
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text());

    // Five are fine: the request goes on to the lookup itself (no such system here).
    let req = Request::get("/fhir/CodeSystem/$lookup?system=http://example.org/none&code=a&property=a&property=b&property=c")
        .body(Body::empty())
        .expect("request");
    let reply = send_to(state, req).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.text());
}

#[tokio::test]
async fn a_batch_over_the_entry_limit_is_too_costly() {
    let entry = json!({ "request": { "method": "GET", "url": "metadata" } });
    let bundle = |n: usize| json!({ "resourceType": "Bundle", "type": "batch", "entry": vec![entry.clone(); n] });
    let state = limited(1 << 20, 10_000, 3);
    let reply = send_to(state.clone(), post("/fhir", bundle(4).to_string())).await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.text()
    );
    assert_eq!(issue_code(&reply.json()), "too-costly");
    assert!(reply.text().contains("at most 3"), "{}", reply.text());
    let reply = send_to(state, post("/fhir", bundle(3).to_string())).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["entry"].as_array().map(Vec::len), Some(3));
    // The default server takes the same batch.
    let reply = send_to(state_default(), post("/fhir", bundle(4).to_string())).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
}

fn state_default() -> Arc<AppState> {
    state()
}

#[tokio::test]
async fn a_body_trickled_past_the_read_timeout_is_408() {
    // The first bytes come at once, the rest never within the (test) timeout of 300 ms.
    let state = limited(1 << 20, 10_000, 1_000);
    let chunks = futures_util::stream::unfold(0u8, |n| async move {
        match n {
            0 => Some((
                Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"{\"resourceType\"")),
                1,
            )),
            _ => {
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                None
            }
        }
    });
    let started = std::time::Instant::now();
    let slow = Request::post("/fhir/CodeSystem/$lookup")
        .header(header::CONTENT_TYPE, "application/fhir+json")
        .body(Body::from_stream(chunks))
        .expect("request");
    let reply = send_to(state, slow).await;
    assert_eq!(
        reply.status,
        StatusCode::REQUEST_TIMEOUT,
        "{}",
        reply.text()
    );
    assert_eq!(issue_code(&reply.json()), "timeout");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "answered at the timeout, not when the client finished: {:?}",
        started.elapsed()
    );
}
