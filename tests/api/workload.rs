//! No request can starve or exhaust the server: text filter limits, the size of supplied
//! CodeSystems, linear hierarchy filters over them, bounded `$cache-control` caches, and the
//! lanes that keep cheap requests answered (over a real bound port) while expensive ones run
//! and stop at their deadline or when their client goes away.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use fhir_registers::AppState;
use fhir_registers::terminology::budget::{LaneSettings, Lanes};
use fhir_registers::terminology::overlay::{Overlay, SuppliedLimits};
use fhir_registers::terminology::request_cache::{CacheLimits, RequestCaches};
use serde_json::{Value as Json, json};

use super::support::*;

const ICD10: &str = "http://hl7.org/fhir/sid/icd-10";
const CHAPTER_X: &str = "https://fhir-registers.org/fhir/ValueSet/icd-10-chapter-x";
const CHAIN: &str = "http://example.org/fhir/CodeSystem/chain";

/// Fresh server state over the fixture registry (its own caches, lanes and limits).
fn fresh_state(adjust: impl FnOnce(&mut AppState)) -> Arc<AppState> {
    let registry = state()
        .registry()
        .overlay(Vec::new(), Vec::new(), Vec::new());
    let mut s = AppState::new(registry);
    adjust(&mut s);
    Arc::new(s)
}

/// A CodeSystem whose concepts form one chain `c0 ← c1 ← … ← cN` (each the parent of the next).
fn chain(n: usize) -> Json {
    let concepts: Vec<Json> = (0..=n)
        .map(|i| {
            let mut c = json!({ "code": format!("c{i}"), "display": format!("Link {i}") });
            if i > 0 {
                c["property"] = json!([{ "code": "parent", "valueCode": format!("c{}", i - 1) }]);
            }
            c
        })
        .collect();
    json!({
        "resourceType": "CodeSystem", "url": CHAIN, "version": "1", "status": "active",
        "content": "complete", "hierarchyMeaning": "is-a", "concept": concepts
    })
}

/// `$expand` of an inline ValueSet over the chain with one filter, the chain supplied.
fn expand_chain(cs: &Json, op: &str, value: &str) -> Json {
    json!({"resourceType": "Parameters", "parameter": [
        {"name": "tx-resource", "resource": cs},
        {"name": "valueSet", "resource": {"resourceType": "ValueSet", "status": "active",
            "compose": {"include": [{"system": CHAIN,
                "filter": [{"property": "concept", "op": op, "value": value}]}]}}}
    ]})
}

async fn post_to(state: &Arc<AppState>, path: &str, body: &Json, cache: Option<&str>) -> Reply {
    let mut req = Request::post(path).header(header::CONTENT_TYPE, "application/fhir+json");
    if let Some(id) = cache {
        req = req.header("x-cache-id", id);
    }
    send_to(
        state.clone(),
        req.body(Body::from(body.to_string())).expect("request"),
    )
    .await
}

async fn get_from(state: &Arc<AppState>, path: &str, cache: Option<&str>) -> Reply {
    let mut req = Request::get(path);
    if let Some(id) = cache {
        req = req.header("x-cache-id", id);
    }
    send_to(state.clone(), req.body(Body::empty()).expect("request")).await
}

#[tokio::test]
async fn text_filters_over_the_length_or_word_limits_are_refused_naming_the_limit() {
    let url = enc(CHAPTER_X);
    let long = get(&format!(
        "/fhir/ValueSet/$expand?url={url}&filter={}",
        "a".repeat(513)
    ))
    .await;
    assert_eq!(long.status, StatusCode::BAD_REQUEST, "{}", long.text());
    let (code, text) = outcome(&long.json());
    assert_eq!(code, "invalid");
    assert!(
        text.contains("513 characters") && text.contains("512"),
        "{text}"
    );
    // The shape of the filter ("t " over and over), short enough in characters.
    let wordy = get(&format!(
        "/fhir/ValueSet/$expand?url={url}&filter={}",
        enc(&"t ".repeat(33))
    ))
    .await;
    assert_eq!(wordy.status, StatusCode::BAD_REQUEST, "{}", wordy.text());
    let (_, text) = outcome(&wordy.json());
    assert!(text.contains("33 words") && text.contains("32"), "{text}");
    // A real search is untouched: the longest ICD-10 display as a filter (25 words).
    let display = "Occupant of three-wheeled motor vehicle injured in collision with two- or \
                   three-wheeled motor vehicle, person on outside of vehicle injured in \
                   nontraffic accident";
    let real = get(&format!(
        "/fhir/ValueSet/$expand?url={url}&filter={}",
        enc(display)
    ))
    .await;
    assert_eq!(real.status, StatusCode::OK, "{}", real.text());
    let fine = get(&format!(
        "/fhir/ValueSet/$expand?url={url}&filter=asth+unspec"
    ))
    .await;
    assert_eq!(codes(&fine.json()), vec!["J45.9"]);
}

#[tokio::test]
async fn hierarchy_filters_over_a_deep_supplied_chain_are_linear() {
    const N: usize = 20_000;
    // The whole expansion, unpaged: past the default limit for supplied content.
    let s = fresh_state(|s| s.limits.max_unpaged_supplied = N + 1);
    let cs = chain(N);
    let started = Instant::now();
    let r = post_to(
        &s,
        "/fhir/ValueSet/$expand",
        &expand_chain(&cs, "is-a", "c0"),
        None,
    )
    .await;
    let took = started.elapsed();
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let all = r.json();
    assert_eq!(all["expansion"]["total"], N + 1);
    assert_eq!(codes(&all).len(), N + 1);
    // Quadratic, this took minutes (58 s of CPU in a release build); linear, well under a
    // second in release and a few seconds unoptimised.
    assert!(took < Duration::from_secs(15), "is-a took {took:?}");
    for (op, value, total) in [
        ("descendent-of", "c0", N),
        ("generalizes", &*format!("c{N}"), N + 1),
        ("descendent-leaf", "c0", 1),
        ("is-not-a", "c10", 10),
    ] {
        let r = post_to(
            &s,
            "/fhir/ValueSet/$expand",
            &expand_chain(&cs, op, value),
            None,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{op}: {}", r.text());
        assert_eq!(r.json()["expansion"]["total"], total, "{op} {value}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "five expansions took {:?}",
        started.elapsed()
    );
    // Membership of the deepest code walks up once.
    let mut validate = expand_chain(&cs, "is-a", "c0");
    validate["parameter"]
        .as_array_mut()
        .expect("parameters")
        .extend([
            json!({"name": "system", "valueUri": CHAIN}),
            json!({"name": "code", "valueCode": format!("c{N}")}),
        ]);
    let r = post_to(&s, "/fhir/ValueSet/$validate-code", &validate, None).await;
    assert_eq!(
        param(&r.json(), "result"),
        Some(&json!(true)),
        "{}",
        r.text()
    );
    // The chain was compiled once, for every request.
    assert_eq!(s.overlay.memo_stats().0, 1);
}

#[tokio::test]
async fn a_supplied_code_system_over_the_concept_limit_is_refused_naming_the_limit() {
    let s = fresh_state(|s| {
        s.overlay = Overlay::new(SuppliedLimits {
            max_concepts: 1_000,
        });
    });
    let at_limit = post_to(
        &s,
        "/fhir/ValueSet/$expand",
        &expand_chain(&chain(999), "is-a", "c0"),
        None,
    )
    .await;
    assert_eq!(at_limit.status, StatusCode::OK, "{}", at_limit.text());
    assert_eq!(at_limit.json()["expansion"]["total"], 1_000);
    let over = post_to(
        &s,
        "/fhir/ValueSet/$expand",
        &expand_chain(&chain(1_000), "is-a", "c0"),
        None,
    )
    .await;
    assert_eq!(
        over.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        over.text()
    );
    let (code, text) = outcome(&over.json());
    assert_eq!(code, "too-costly");
    assert!(
        text.contains(CHAIN) && text.contains("more than 1000 concepts"),
        "{text}"
    );
    // Refused before it is compiled: only the first is in the memo.
    assert_eq!(s.overlay.memo_stats().0, 1);
    // A lookup supplying it is refused the same way.
    let lookup = json!({"resourceType": "Parameters", "parameter": [
        {"name": "tx-resource", "resource": chain(1_000)},
        {"name": "system", "valueUri": CHAIN}, {"name": "code", "valueCode": "c1"}]});
    let r = post_to(&s, "/fhir/CodeSystem/$lookup", &lookup, None).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text());
}

/// Opens a cache on `s`, returning its id.
async fn start_cache(s: &Arc<AppState>) -> String {
    let r = get_from(s, "/fhir/$cache-control?mode=start", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    param(&r.json(), "cache-id")
        .and_then(Json::as_str)
        .expect("cache id")
        .to_string()
}

/// A small CodeSystem of its own url for cache tests.
fn small_cs(n: usize) -> Json {
    json!({"resourceType": "CodeSystem", "url": format!("http://example.org/cs/cached-{n}"),
        "status": "active", "content": "complete",
        "concept": [{"code": "a", "display": format!("Alpha {n}")}]})
}

/// `$lookup` of `a` in `small_cs(n)` under a cache, sending the CodeSystem or not.
async fn lookup_cached(s: &Arc<AppState>, id: &str, n: usize, send: bool) -> Reply {
    if send {
        let body = json!({"resourceType": "Parameters", "parameter": [
            {"name": "tx-resource", "resource": small_cs(n)},
            {"name": "system", "valueUri": format!("http://example.org/cs/cached-{n}")},
            {"name": "code", "valueCode": "a"}]});
        post_to(s, "/fhir/CodeSystem/$lookup", &body, Some(id)).await
    } else {
        let path = format!(
            "/fhir/CodeSystem/$lookup?system={}&code=a",
            enc(&format!("http://example.org/cs/cached-{n}"))
        );
        get_from(s, &path, Some(id)).await
    }
}

#[tokio::test]
async fn starting_more_caches_than_the_bound_evicts_the_least_recently_used() {
    let s = fresh_state(|s| {
        s.caches = RequestCaches::new(CacheLimits {
            max_caches: 3,
            ..CacheLimits::default()
        });
    });
    let mut ids = Vec::new();
    for n in 0..3 {
        let id = start_cache(&s).await;
        assert_eq!(lookup_cached(&s, &id, n, true).await.status, StatusCode::OK);
        ids.push(id);
    }
    // The first is used again, so the second is now the least recently used.
    assert_eq!(
        lookup_cached(&s, &ids[0], 0, false).await.status,
        StatusCode::OK
    );
    let fourth = start_cache(&s).await;
    assert_eq!(s.caches.stats().0, 3);
    let evicted = lookup_cached(&s, &ids[1], 1, false).await;
    assert_eq!(evicted.status, StatusCode::NOT_FOUND, "{}", evicted.text());
    for (id, n) in [(&ids[0], 0), (&ids[2], 2)] {
        let r = lookup_cached(&s, id, n, false).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
    assert_eq!(
        lookup_cached(&s, &fourth, 3, true).await.status,
        StatusCode::OK
    );
    // Hundreds of starts are never refused.
    for _ in 0..300 {
        start_cache(&s).await;
    }
    assert_eq!(s.caches.stats().0, 3);
}

#[tokio::test]
async fn caches_are_bounded_by_bytes_and_an_idle_cache_expires() {
    let one = small_cs(0).to_string().len();
    let s = fresh_state(|s| {
        s.caches = RequestCaches::new(CacheLimits {
            ttl: Duration::from_millis(400),
            max_bytes: 2 * one + one / 2,
            ..CacheLimits::default()
        });
    });
    let a = start_cache(&s).await;
    let b = start_cache(&s).await;
    assert_eq!(lookup_cached(&s, &a, 0, true).await.status, StatusCode::OK);
    assert_eq!(lookup_cached(&s, &b, 1, true).await.status, StatusCode::OK);
    assert_eq!(lookup_cached(&s, &b, 2, true).await.status, StatusCode::OK);
    // Three resources do not fit: the least recently used cache (a) went.
    assert_eq!(
        lookup_cached(&s, &a, 0, false).await.status,
        StatusCode::NOT_FOUND
    );
    let (open, bytes) = s.caches.stats();
    assert_eq!(open, 1);
    assert!(bytes <= 2 * one + one / 2, "{bytes}");
    // One resource larger than all caches may hold is refused, not evicting the others.
    let c = start_cache(&s).await;
    let mut big = small_cs(9);
    big["description"] = json!("x".repeat(3 * one));
    let body = json!({"resourceType": "Parameters", "parameter": [
        {"name": "tx-resource", "resource": big},
        {"name": "system", "valueUri": "http://example.org/cs/cached-9"},
        {"name": "code", "valueCode": "a"}]});
    let r = post_to(&s, "/fhir/CodeSystem/$lookup", &body, Some(&c)).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text());
    assert_eq!(outcome(&r.json()).0, "too-costly");
    assert_eq!(lookup_cached(&s, &b, 1, false).await.status, StatusCode::OK);
    // Idle past the time to live: gone.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let r = lookup_cached(&s, &b, 1, false).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text());
    assert!(outcome(&r.json()).1.contains("expire"));
    assert_eq!(s.caches.stats(), (0, 0));
}

#[tokio::test]
async fn ending_a_cache_frees_its_resources_and_compiled_code_systems() {
    let s = fresh_state(|_| {});
    let id = start_cache(&s).await;
    assert_eq!(lookup_cached(&s, &id, 0, true).await.status, StatusCode::OK);
    assert_eq!(
        lookup_cached(&s, &id, 0, false).await.status,
        StatusCode::OK
    );
    assert!(s.caches.stats().1 > 0);
    assert_eq!(
        s.overlay.memo_stats().0,
        1,
        "compiled once, held for the cache"
    );
    let end = get_from(&s, "/fhir/$cache-control?mode=end", Some(&id)).await;
    assert_eq!(param(&end.json(), "result"), Some(&json!(true)));
    assert_eq!(s.caches.stats(), (0, 0));
    assert_eq!(
        s.overlay.memo_stats(),
        (0, 0),
        "the compiled CodeSystem only the cache held is gone"
    );
    let after = lookup_cached(&s, &id, 0, false).await;
    assert_eq!(after.status, StatusCode::NOT_FOUND, "{}", after.text());
    let again = get_from(&s, "/fhir/$cache-control?mode=end", Some(&id)).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
}

/// An expensive but legal `$expand`: a ValueSet including the ICD-10 fixture thousands of
/// times over (each include is evaluated, the duplicates dropped).
fn heavy_expand(includes: usize) -> Json {
    let include: Vec<Json> = (0..includes).map(|_| json!({ "system": ICD10 })).collect();
    json!({"resourceType": "Parameters", "parameter": [
        {"name": "valueSet", "resource": {"resourceType": "ValueSet", "status": "active",
            "compose": {"include": include}}}]})
}

/// Serves `state` on a loopback port from a runtime sized as `main` sizes it.
fn serve(state: Arc<AppState>) -> (tokio::runtime::Runtime, std::net::SocketAddr) {
    let lanes = state.lanes.settings();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(lanes.blocking_threads())
        .enable_all()
        .build()
        .expect("runtime");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    listener.set_nonblocking(true).expect("non-blocking");
    rt.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
        let _ = axum::serve(listener, fhir_registers::app(state)).await;
    });
    (rt, addr)
}

/// Waits until no operation runs in `state`'s lanes; how long that took.
async fn until_idle(state: &AppState, at_most: Duration) -> Duration {
    let started = Instant::now();
    while state.lanes.active() > 0 && started.elapsed() < at_most {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cheap_requests_are_answered_while_expensive_ones_run_and_those_stop_on_time() {
    let s = fresh_state(|s| {
        s.request_timeout = Duration::from_secs(12);
        s.lanes = Lanes::new(LaneSettings {
            slow_after: Duration::from_millis(50),
            slow_threads: 2,
            slow_queue: 3,
            fast_threads: 4,
        });
    });
    let (rt, addr) = serve(s.clone());
    let client = reqwest::Client::new();
    // Far past the 12 s budget even on an idle machine (a loaded CI machine parses the six bodies
    // slowly, and each budget starts once its body is read) (20,000 includes took 3–8 s in a debug
    // build, so some finished in time): every running one must be stopped by the budget.
    let heavy = heavy_expand(100_000).to_string();
    let send_heavy = |client: reqwest::Client| {
        let body = heavy.clone();
        async move {
            let started = Instant::now();
            let r = client
                .post(format!("http://{addr}/fhir/ValueSet/$expand"))
                .header("content-type", "application/fhir+json")
                .body(body)
                .send()
                .await
                .expect("heavy answered");
            let retry_after = r.headers().get("retry-after").cloned();
            (r.status(), started.elapsed(), retry_after)
        }
    };
    // Six at once: two run in the slow lane, three wait, one is refused as the server is busy.
    let heavies: Vec<_> = (0..6)
        .map(|_| tokio::spawn(send_heavy(client.clone())))
        .collect();
    let filling = Instant::now();
    while s.lanes.slow_lane() != (2, 3) && filling.elapsed() < Duration::from_secs(12) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(s.lanes.slow_lane(), (2, 3), "the slow lane is full");
    assert!(
        s.lanes.active() >= 5,
        "the expensive ones still run while the cheap ones are sent"
    );
    let mut slowest = Duration::ZERO;
    for _ in 0..5 {
        let started = Instant::now();
        let r = client
            .get(format!(
                "http://{addr}/fhir/ValueSet/$expand?url={}&filter=asthma",
                enc(CHAPTER_X)
            ))
            .send()
            .await
            .expect("cheap answered");
        slowest = slowest.max(started.elapsed());
        assert_eq!(r.status(), StatusCode::OK);
    }
    assert!(
        slowest < Duration::from_secs(1),
        "a cheap $expand took {slowest:?} while expensive ones ran"
    );
    assert!(
        s.lanes.active() >= 5,
        "the expensive ones were still running"
    );
    let mut statuses = Vec::new();
    for h in heavies {
        let (status, took, retry_after) = h.await.expect("joins");
        assert!(
            took < Duration::from_secs(30),
            "stopped at its budget: {took:?}"
        );
        if status == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(
                retry_after.as_ref().and_then(|v| v.to_str().ok()),
                Some("1"),
                "a busy answer says when to try again"
            );
        }
        statuses.push(status.as_u16());
    }
    statuses.sort_unstable();
    assert_eq!(
        statuses,
        [422, 422, 422, 422, 422, 503],
        "five ran out of time, one found the slow lane full"
    );
    // Timed out means stopped: no work goes on after the answers.
    let idle = until_idle(&s, Duration::from_secs(5)).await;
    assert!(idle < Duration::from_millis(500), "work went on {idle:?}");
    assert_eq!(s.lanes.slow_lane(), (0, 0));
    rt.shutdown_background();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expensive_request_stops_when_its_client_goes_away() {
    let s = fresh_state(|s| s.request_timeout = Duration::from_secs(60));
    let (rt, addr) = serve(s.clone());
    let request = reqwest::Client::new()
        .post(format!("http://{addr}/fhir/ValueSet/$expand"))
        .header("content-type", "application/fhir+json")
        .body(heavy_expand(20_000).to_string())
        .send();
    let client = tokio::spawn(request);
    let waiting = Instant::now();
    while s.lanes.active() == 0 && waiting.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(s.lanes.active(), 1, "the operation runs");
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The client goes away: its connection closes.
    client.abort();
    assert!(
        client.await.is_err(),
        "the client gave up before the answer"
    );
    // The operation was running; it stops within a moment, long before its 60 s budget (and
    // before the 8 s the same request runs in the test above).
    let idle = until_idle(&s, Duration::from_secs(10)).await;
    assert!(
        idle < Duration::from_millis(1_500),
        "the work went on {idle:?} after the client left"
    );
    rt.shutdown_background();
}
