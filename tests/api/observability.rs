//! Watching the server run (issue 15): `GET /metrics` read back with a Prometheus text-format
//! parser after real requests through the router, one JSON access line per request from the
//! real binary, and a graceful stop on SIGTERM with a request in flight.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use fhir_registers::AppState;
use fhir_registers::mapping::MappingSet;
use fhir_registers::store::Registry;
use prometheus_parse::{Sample, Scrape, Value};
use serde_json::{Value as Json, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::support::*;

const ICD10: &str = "http://hl7.org/fhir/sid/icd-10";
const ROLES: &str =
    "https://digital.nhs.uk/services/organisation-data-service/CodeSystem/ODSOrganisationRole";

/// A state with metrics of its own over the shared fixture registry (other tests' requests do
/// not count in it).
fn counted_state() -> Arc<AppState> {
    let mut counted = AppState::new(Registry::default());
    counted.live = state().live.clone();
    Arc::new(counted)
}

async fn scrape(state: &Arc<AppState>) -> Vec<Sample> {
    let reply = send_to(
        state.clone(),
        Request::get("/metrics")
            .body(Body::empty())
            .expect("request"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.content_type, "text/plain; version=0.0.4; charset=utf-8",
        "the Prometheus text format"
    );
    let text = reply.text();
    Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("parses")
        .samples
}

/// The one sample called `metric` whose labels include `labels`.
fn sample<'a>(samples: &'a [Sample], metric: &str, labels: &[(&str, &str)]) -> Option<&'a Sample> {
    let mut found = samples
        .iter()
        .filter(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)));
    let first = found.next();
    assert!(found.next().is_none(), "several {metric} {labels:?}");
    first
}

fn number(samples: &[Sample], metric: &str, labels: &[(&str, &str)]) -> f64 {
    match sample(samples, metric, labels).map(|s| &s.value) {
        Some(Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v)) => *v,
        other => panic!("{metric} {labels:?}: {other:?}"),
    }
}

fn requests(samples: &[Sample], operation: &str, status: &str) -> f64 {
    sample(
        samples,
        "fhir_registers_http_requests_total",
        &[("operation", operation), ("status", status)],
    )
    .map_or(0.0, |s| match s.value {
        Value::Counter(v) => v,
        ref other => panic!("not a counter: {other:?}"),
    })
}

#[tokio::test]
async fn metrics_count_requests_by_operation_and_describe_the_registry() {
    let state = counted_state();
    let ask = |uri: String| Request::get(uri).body(Body::empty()).expect("request");
    let lookup = format!("/fhir/CodeSystem/$lookup?system={}&code=J45.9", enc(ICD10));
    for _ in 0..3 {
        let r = send_to(state.clone(), ask(lookup.clone())).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
    let unknown = send_to(
        state.clone(),
        ask(format!(
            "/fhir/CodeSystem/$lookup?system={}&code=NOT-A-CODE",
            enc(ICD10)
        )),
    )
    .await;
    let put = send_to(
        state.clone(),
        Request::put(lookup.clone())
            .body(Body::empty())
            .expect("request"),
    )
    .await;
    assert_eq!(put.status, StatusCode::METHOD_NOT_ALLOWED);
    let cs_validate = send_to(
        state.clone(),
        ask(format!(
            "/fhir/CodeSystem/$validate-code?url={}&code=J45.9",
            enc(ICD10)
        )),
    )
    .await;
    assert_eq!(cs_validate.status, StatusCode::OK, "{}", cs_validate.text());
    let not_fhir = send_to(state.clone(), ask("/fhir/Patient/1".into())).await;
    assert_eq!(not_fhir.status, StatusCode::NOT_FOUND);
    let elsewhere = send_to(state.clone(), ask("/elsewhere".into())).await;
    assert_eq!(elsewhere.status, StatusCode::NOT_FOUND);
    let undecodable = send_to(state.clone(), ask("/fhir/CodeSystem/%FF".into())).await;
    assert_eq!(undecodable.status, StatusCode::BAD_REQUEST);
    let health = send_to(state.clone(), ask("/health".into())).await;
    assert_eq!(health.status, StatusCode::OK);

    let samples = scrape(&state).await;
    assert_eq!(requests(&samples, "lookup", "200"), 3.0);
    assert_eq!(
        requests(&samples, "lookup", unknown.status.as_str()),
        1.0,
        "an unknown code is a lookup too"
    );
    assert_eq!(requests(&samples, "lookup", "405"), 1.0);
    assert_eq!(requests(&samples, "cs-validate-code", "200"), 1.0);
    assert_eq!(requests(&samples, "vs-validate-code", "200"), 0.0);
    assert_eq!(
        requests(&samples, "other", "404"),
        2.0,
        "unknown paths, in the base or not, are `other`"
    );
    assert_eq!(
        requests(&samples, "other", "400"),
        1.0,
        "requests the edge refuses are counted"
    );
    assert_eq!(requests(&samples, "health", "200"), 1.0);
    assert_eq!(
        requests(&samples, "metrics", "200"),
        0.0,
        "a scrape is counted once answered"
    );
    let histogram = sample(
        &samples,
        "fhir_registers_http_request_duration_seconds",
        &[("operation", "lookup")],
    )
    .expect("a latency histogram for lookup");
    let Value::Histogram(buckets) = &histogram.value else {
        panic!("not a histogram: {histogram:?}");
    };
    let all = buckets
        .iter()
        .find(|b| b.less_than.is_infinite())
        .expect("+Inf bucket");
    assert_eq!(all.count, 5.0, "every lookup, whatever its status");
    assert!(buckets.len() > 10, "{buckets:?}");
    assert_eq!(
        number(
            &samples,
            "fhir_registers_http_request_duration_seconds_count",
            &[("operation", "lookup")]
        ),
        5.0
    );

    // What the registry holds, counted from it.
    let registry = state.registry();
    let icd10 = registry.code_system(ICD10, None).expect("ICD-10");
    assert!(icd10.len() > 100, "{}", icd10.len());
    assert_eq!(
        number(
            &samples,
            "fhir_registers_concepts",
            &[("code_system", ICD10)]
        ),
        icd10.len() as f64
    );
    assert_eq!(
        samples
            .iter()
            .filter(|s| s.metric == "fhir_registers_concepts")
            .count(),
        registry.latest_code_systems().count()
    );
    assert_eq!(
        number(&samples, "fhir_registers_code_systems", &[]),
        registry.latest_code_systems().count() as f64
    );
    assert_eq!(
        number(&samples, "fhir_registers_code_system_versions", &[]),
        registry.all_code_systems().count() as f64
    );
    assert_eq!(
        number(&samples, "fhir_registers_value_sets", &[]),
        registry.all_value_sets().count() as f64
    );
    assert_eq!(
        number(&samples, "fhir_registers_registry_generation", &[]),
        0.0
    );
    assert_eq!(
        number(
            &samples,
            "fhir_registers_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    assert_eq!(number(&samples, "fhir_registers_ready", &[]), 0.0);

    state.warm_up();
    let samples = scrape(&state).await;
    assert_eq!(number(&samples, "fhir_registers_ready", &[]), 1.0);
    assert_eq!(requests(&samples, "metrics", "200"), 1.0);
}

/// The real binary serving the ODS roles fixture on a free loopback port, its stderr read line
/// by line as it comes.
struct Server {
    child: Child,
    port: u16,
    lines: Receiver<String>,
    seen: Vec<String>,
    _mappings: tempfile::TempDir,
    _data: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    async fn start(extra: &[&str]) -> Self {
        let mappings = tempfile::tempdir().expect("dir");
        std::fs::copy(
            repo().join("mappings/ods-roles.toml"),
            mappings.path().join("ods-roles.toml"),
        )
        .expect("copy");
        let data = tempfile::tempdir().expect("dir");
        import_list(
            &MappingSet::load_dir(mappings.path()).expect("mappings"),
            data.path(),
            &[("ods-roles", "ods/ods_organisation_roles.csv", "2023-01-01")],
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_fhir-registers"))
            .arg("serve")
            .arg("--no-default-imports")
            .arg("--mappings")
            .arg(mappings.path())
            .arg("--data-dir")
            .arg(data.path())
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .args(extra)
            .env("RUST_LOG", "info")
            .env_remove("FHIR_REGISTERS_LOG_FORMAT")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the server binary starts");
        let stderr = child.stderr.take().expect("stderr");
        let (send, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = Self {
            child,
            port,
            lines,
            seen: Vec::new(),
            _mappings: mappings,
            _data: data,
        };
        let started = Instant::now();
        loop {
            let client = reqwest::Client::new();
            if let Ok(r) = client.get(server.url("/health")).send().await
                && r.status() == StatusCode::OK
            {
                break;
            }
            assert!(
                matches!(server.child.try_wait(), Ok(None)),
                "the server exited while starting: {:?}",
                server.drain()
            );
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the server did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// SIGTERM, as an orchestrator stops a container.
    fn terminate(&self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Waits for a stderr line containing `text`.
    fn wait_for_line(&mut self, text: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(text) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("no line with {text:?} within {within:?}: {:?}", self.seen)
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("stderr closed before a line with {text:?}: {:?}", self.seen)
                }
            }
        }
    }

    /// Waits for the process to end; its exit status.
    async fn exit_status(&mut self, within: Duration) -> std::process::ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                started.elapsed() < within,
                "the server did not exit within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every stderr line, once the process has ended.
    fn drain(&mut self) -> Vec<String> {
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        self.seen.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_have_one_access_line_per_request_with_its_request_id() {
    let mut server = Server::start(&["--log-format", "json"]).await;
    let lookup = server.url(&format!(
        "/fhir/CodeSystem/$lookup?system={}&code=RO76",
        enc(ROLES)
    ));
    let client = reqwest::Client::new();
    let named = client
        .get(&lookup)
        .header("x-request-id", "test-123")
        .send()
        .await
        .expect("lookup");
    assert_eq!(named.status(), StatusCode::OK);
    assert_eq!(named.headers()["x-request-id"], "test-123");
    let anonymous = client
        .get(server.url("/fhir/nothing-here"))
        .send()
        .await
        .expect("request");
    assert_eq!(anonymous.status(), StatusCode::NOT_FOUND);
    let made_up = anonymous.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_string();
    drop(client);
    server.terminate();
    assert!(server.exit_status(Duration::from_secs(15)).await.success());

    let lines = server.drain();
    let objects: Vec<Json> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    let access: Vec<&Json> = objects
        .iter()
        .filter(|o| o["target"] == "fhir_registers::access")
        .collect();
    let line = access
        .iter()
        .find(|o| o["request_id"] == "test-123")
        .unwrap_or_else(|| panic!("no access line for test-123 in {lines:#?}"));
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["method"], "GET");
    assert_eq!(line["route"], "/fhir/CodeSystem/$lookup");
    assert_eq!(line["status"], 200);
    let latency = line["latency_ms"].as_f64().expect("latency_ms is a number");
    assert!((0.0..10_000.0).contains(&latency), "{latency}");
    assert!(line["timestamp"].is_string(), "{line}");
    assert!(line.get("fields").is_none(), "fields are flattened: {line}");
    let other = access
        .iter()
        .find(|o| o["request_id"] == json!(made_up))
        .unwrap_or_else(|| panic!("no access line for {made_up} in {lines:#?}"));
    assert_eq!(other["route"], "/fhir/nothing-here", "unmatched: the path");
    assert_eq!(other["status"], 404);
    // `/health`, polled while starting, is logged too; each request once.
    assert_eq!(
        access
            .iter()
            .filter(|o| o["request_id"] == "test-123")
            .count(),
        1
    );
    assert!(
        objects.iter().any(|o| o["message"]
            .as_str()
            .is_some_and(|m| m.contains("shutting down"))),
        "{lines:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_request_in_flight_finish_refuses_new_connections_and_exits_0() {
    let mut server = Server::start(&["--shutdown-timeout", "20"]).await;
    let body = json!({
        "resourceType": "Parameters",
        "parameter": [
            { "name": "system", "valueUri": ROLES },
            { "name": "code", "valueCode": "RO76" }
        ]
    })
    .to_string();
    let (first, rest) = body.as_bytes().split_at(body.len() / 2);
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
        .await
        .expect("connect");
    let head = format!(
        "POST /fhir/CodeSystem/$lookup HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/fhir+json\r\naccept: application/fhir+json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("head");
    stream.write_all(first).await.expect("half the body");
    // The server is reading the body when it is told to stop.
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.terminate();
    server.wait_for_line("shutting down", Duration::from_secs(10));

    let refused = tokio::net::TcpStream::connect(("127.0.0.1", server.port)).await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused),
        "a new connection after SIGTERM is refused: {refused:?}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        matches!(server.child.try_wait(), Ok(None)),
        "the server waits for the request in flight"
    );

    stream.write_all(rest).await.expect("the rest of the body");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("answered within 10 s")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("\r\nconnection: close\r\n"),
        "{answer}"
    );
    let (_, json_body) = answer.split_once("\r\n\r\n").expect("head and body");
    let params: Json = serde_json::from_str(json_body).expect("JSON Parameters");
    assert_eq!(param(&params, "display"), Some(&json!("GP PRACTICE")));

    let status = server.exit_status(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "{:?}", server.drain());
}

#[tokio::test]
async fn the_metrics_endpoint_is_outside_the_fhir_base_and_has_no_cors() {
    let state = counted_state();
    let reply = send_to(
        state.clone(),
        Request::get("/fhir/metrics")
            .body(Body::empty())
            .expect("request"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let resp = tower::ServiceExt::oneshot(
        fhir_registers::app(state),
        Request::get("/metrics")
            .header(header::ORIGIN, "https://app.example.org")
            .body(Body::empty())
            .expect("request"),
    )
    .await
    .expect("answers");
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()
            .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .is_none()
    );
}
