//! Tests over a real bound loopback port: the server itself, and importing a register from an
//! http URL served by a real local HTTP server.

use std::net::SocketAddr;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use fhir_registers::registers;
use fhir_registers::store::persist::{self, SaveOutcome};

use super::support::*;

async fn spawn(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    addr
}

#[tokio::test]
async fn server_answers_over_a_real_socket() {
    let addr = spawn(fhir_registers::app(state())).await;
    let client = reqwest::Client::new();
    let resp = client
        .get(format!(
            "http://{addr}/fhir/CodeSystem/$lookup?system=http://hl7.org/fhir/sid/icd-10&code=J45.9"
        ))
        .header("accept", "application/fhir+json")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .expect("ct")
            .starts_with("application/fhir+json")
    );
    let body: serde_json::Value =
        serde_json::from_slice(&resp.bytes().await.expect("body")).expect("json");
    assert_eq!(
        param(&body, "display"),
        Some(&serde_json::json!("Asthma, unspecified"))
    );
    // The health endpoint sits outside the FHIR base.
    let health = client
        .get(format!("http://{addr}/health"))
        .send()
        .await
        .expect("request");
    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(health.text().await.expect("body"), "ok");
}

#[tokio::test]
async fn registers_import_from_an_http_url_and_failures_store_nothing() {
    let bytes = std::fs::read(fixture("ods/epraccur_2020-01_slice.csv")).expect("fixture");
    let upstream = Router::new()
        .route(
            "/ods/epraccur.csv",
            get(move || async move { bytes.clone() }),
        )
        .route(
            "/broken.csv",
            get(|| async { "\"A81001\",\"X\"\n\"A81001\",\"Y\"\n" }),
        );
    let addr = spawn(upstream).await;
    let set = shipped();
    let m = set.mapping("ods-epraccur").expect("epraccur");
    let data = tempfile::tempdir().expect("dir");

    let info = registers::import(
        &set,
        m,
        &format!("http://{addr}/ods/epraccur.csv"),
        "2020-01-01",
        data.path(),
        false,
        &mut |_, _| {},
    )
    .await
    .expect("imports over http");
    let SaveOutcome::Stored(saved) = info else {
        panic!("a first import stores")
    };
    let info = saved.info;
    assert_eq!(
        info.concepts as usize,
        ods_rows("ods/epraccur_2020-01_slice.csv").len()
    );
    assert_eq!(info.source, format!("http://{addr}/ods/epraccur.csv"));
    assert_eq!(persist::release_files(data.path()).len(), 1);

    let missing = registers::import(
        &set,
        m,
        &format!("http://{addr}/nope.csv"),
        "2020-02-01",
        data.path(),
        false,
        &mut |_, _| {},
    )
    .await;
    let text = missing.expect_err("404 upstream").to_string();
    assert!(text.contains("404"), "{text}");
    let broken = registers::import(
        &set,
        m,
        &format!("http://{addr}/broken.csv"),
        "2020-03-01",
        data.path(),
        false,
        &mut |_, _| {},
    )
    .await;
    assert!(broken.is_err());
    assert_eq!(
        persist::release_files(data.path()).len(),
        1,
        "failed imports leave the store as it was"
    );
    let leftovers: Vec<_> = std::fs::read_dir(data.path())
        .expect("dir")
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().starts_with(".download"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "downloads are cleaned up: {leftovers:?}"
    );
}
