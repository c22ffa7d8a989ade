//! What the server's hot path costs per request, as bytes allocated on the thread that answers
//! (jemalloc's per-thread counter; see the allocator in `main.rs`): the trivial `/health` and a
//! served `CodeSystem/$lookup`, through the whole router in-process. Budgets, not measurements
//! of speed: they fail when a change makes every request build what it need not (a middleware
//! layer that clones and boxes per request, a query copied into owned pairs, a parameter echo
//! built and thrown away), which is what kept `$lookup` far below the trivial endpoint's rate.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

use super::support::*;

const POSTCODE: &str =
    "https://digital.nhs.uk/services/organisation-data-service/CodeSystem/postcode";

/// Bytes allocated, on average, to answer one GET of each path (answers read in full).
async fn allocated_per_request(paths: &[String]) -> u64 {
    let router = fhir_registers::app(state());
    let answer = |path: &str| {
        let req = Request::get(path).body(Body::empty()).expect("request");
        let router = router.clone();
        async move {
            let resp = router.oneshot(req).await.expect("router answers");
            assert_eq!(resp.status(), StatusCode::OK);
            resp.into_body().collect().await.expect("body").to_bytes()
        }
    };
    // Warm: indexes and caches built on first use are not the hot path.
    for path in paths {
        answer(path).await;
    }
    let counter = tikv_jemalloc_ctl::thread::allocatedp::mib()
        .and_then(|mib| mib.read())
        .expect("jemalloc's thread counter");
    let before = counter.get();
    for path in paths {
        answer(path).await;
    }
    (counter.get() - before) / paths.len() as u64
}

#[tokio::test(flavor = "current_thread")]
async fn health_and_lookup_allocate_within_their_budgets() {
    let health: Vec<String> = (0..20).map(|i| format!("/health?x={i}")).collect();
    let lookups: Vec<String> = ["TS181HU", "TS181AA", "TS181LL", "TS181XQ", "TS182JF"]
        .iter()
        .cycle()
        .take(20)
        .map(|code| {
            format!(
                "/fhir/CodeSystem/$lookup?system={}&code={code}",
                enc(POSTCODE)
            )
        })
        .collect();
    let health = allocated_per_request(&health).await;
    let lookup = allocated_per_request(&lookups).await;
    eprintln!("allocated per request: /health {health} B, $lookup {lookup} B");
    assert!(health <= HEALTH_BUDGET, "/health allocates {health} B");
    assert!(lookup <= LOOKUP_BUDGET, "$lookup allocates {lookup} B");
}

/// Bytes one `/health` may allocate: 3.3 KiB when written (request id, routing, response
/// head); 9.7 KiB before the edge became one service.
const HEALTH_BUDGET: u64 = 4 * 1024;
/// Bytes one served `$lookup` may allocate: 9.4 KiB since its answer is written straight to JSON
/// from the record read in place (no decoded concept, no parts in between, the query decoded
/// without copies where it has no escapes); 14.9 KiB before that; 26.3 KiB before (nested
/// routing, the query copied twice, a JSON echo of every parameter, the concept decoded twice).
const LOOKUP_BUDGET: u64 = 12 * 1024;
