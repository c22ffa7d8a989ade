//! The HTTP edge over a real bound port, through the server's own connection loop: the idle and
//! header-read timeouts, the connection cap, and OperationOutcomes for what a client can get
//! wrong before any handler runs (long URLs, large or malformed heads, undecodable paths), plus
//! trailing slashes. Requests are written as raw bytes, as the malformed ones must be.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use fhir_registers::http::edge::RequestLimits;
use fhir_registers::http::serve::{EdgeSettings, serve};
use serde_json::Value as Json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::support::*;

/// Long enough for nothing in these tests to time out unless a test means it to.
const PATIENT: Duration = Duration::from_secs(5);

fn settings() -> EdgeSettings {
    EdgeSettings {
        header_read_timeout: PATIENT,
        idle_timeout: PATIENT,
        max_connections: 64,
        limits: RequestLimits {
            max_url_bytes: 1024,
            max_header_bytes: 2048,
        },
        shutdown_timeout: Duration::from_secs(1),
    }
}

/// A server on a loopback port; it stops when the returned sender is dropped or sent to.
struct Server {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<()>,
}

async fn start(settings: EdgeSettings) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let app = fhir_registers::app(state());
    let done = tokio::spawn(serve(listener, app, settings, async {
        let _ = stopped.await;
    }));
    Server {
        addr,
        stop: Some(stop),
        done,
    }
}

/// An answer read off the wire.
#[derive(Debug)]
struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn content_type(&self) -> &str {
        self.header("content-type").unwrap_or("")
    }

    fn json(&self) -> Json {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {} {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The answer is a JSON OperationOutcome with this status and issue code.
    fn assert_outcome(&self, status: u16, code: &str) -> String {
        assert_eq!(self.status, status, "{self:?}");
        assert!(
            self.content_type().starts_with("application/fhir+json"),
            "{self:?}"
        );
        let (issue, text) = outcome(&self.json());
        assert_eq!(issue, code, "{text}");
        assert!(!text.is_empty());
        text
    }
}

/// Reads one answer (head, then `content-length` bytes of body).
async fn read_answer(stream: &mut TcpStream) -> Raw {
    tokio::time::timeout(PATIENT, async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = stream.read(&mut chunk).await.expect("read");
            assert!(
                n > 0,
                "closed without an answer: {}",
                String::from_utf8_lossy(&buf)
            );
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.get(9..12))
            .and_then(|s| s.parse().ok())
            .expect("status line");
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = buf[head_end..].to_vec();
        while body.len() < length {
            let n = stream.read(&mut chunk).await.expect("read body");
            assert!(n > 0, "closed in the body");
            body.extend_from_slice(&chunk[..n]);
        }
        Raw {
            status,
            headers,
            body,
        }
    })
    .await
    .expect("an answer in time")
}

/// Sends `request` on a new connection and reads the answer.
async fn exchange(addr: SocketAddr, request: &[u8]) -> Raw {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    // A server that refuses early may close before taking every byte; the answer still counts.
    let _ = stream.write_all(request).await;
    read_answer(&mut stream).await
}

fn get(path: &str, headers: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nhost: localhost\r\n{headers}\r\n").into_bytes()
}

/// How long until the server closes the connection (reading and dropping anything it sends).
async fn closed_after(stream: &mut TcpStream, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut chunk = [0u8; 4096];
    tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return started.elapsed(),
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
}

#[tokio::test]
async fn a_request_head_sent_a_byte_at_a_time_is_cut_off_after_the_header_timeout() {
    let server = start(EdgeSettings {
        header_read_timeout: Duration::from_millis(500),
        ..settings()
    })
    .await;
    let stream = TcpStream::connect(server.addr).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let started = Instant::now();
    let trickle = tokio::spawn(async move {
        let head = b"GET /fhir/metadata HTTP/1.1\r\nhost: localhost\r\nx-slow: ";
        for byte in head.iter().chain(std::iter::repeat(&b'a')) {
            if writer.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            if started.elapsed() > PATIENT {
                break;
            }
        }
    });
    let mut bytes = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(2), reader.read_to_end(&mut bytes)).await;
    let elapsed = started.elapsed();
    trickle.abort();
    assert!(
        read.is_ok(),
        "the slow connection is still open after 2 s: {}",
        String::from_utf8_lossy(&bytes)
    );
    assert!(elapsed >= Duration::from_millis(450), "{elapsed:?}");
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.starts_with("HTTP/1.1 408 "), "{text}");
    assert!(text.contains("application/fhir+json"), "{text}");
    assert!(text.contains(r#""code":"timeout""#), "{text}");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let server = start(EdgeSettings {
        idle_timeout: Duration::from_millis(800),
        ..settings()
    })
    .await;
    // A connection that never sends anything.
    let mut silent = TcpStream::connect(server.addr).await.expect("connect");
    let closed = closed_after(&mut silent, Duration::from_secs(2)).await;
    let closed = closed.expect("a silent connection is closed within 2 s");
    assert!(closed >= Duration::from_millis(700), "{closed:?}");

    // A kept-alive connection serves requests until it has been idle for the timeout.
    let mut kept = TcpStream::connect(server.addr).await.expect("connect");
    for _ in 0..3 {
        kept.write_all(&get("/fhir/metadata", ""))
            .await
            .expect("write");
        let answer = read_answer(&mut kept).await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.json()["resourceType"], "CapabilityStatement");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let closed = closed_after(&mut kept, Duration::from_secs(2)).await;
    let closed = closed.expect("an idle kept-alive connection is closed within 2 s");
    assert!(closed >= Duration::from_millis(100), "{closed:?}");
}

#[tokio::test]
async fn connections_over_the_cap_are_answered_503_throttled() {
    let server = start(EdgeSettings {
        max_connections: 2,
        ..settings()
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(server.addr).await.expect("connect");
        stream
            .write_all(&get("/fhir/metadata", ""))
            .await
            .expect("write");
        assert_eq!(read_answer(&mut stream).await.status, 200);
        held.push(stream);
    }
    let over = exchange(server.addr, &get("/fhir/metadata", "")).await;
    let text = over.assert_outcome(503, "throttled");
    assert!(text.contains("2 connections"), "{text}");
    assert_eq!(over.header("retry-after"), Some("1"));

    // A slot frees when a connection closes.
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let answer = exchange(server.addr, &get("/fhir/metadata", "")).await;
        if answer.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "no slot freed: {answer:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_url_over_the_limit_is_a_414_operation_outcome() {
    let server = start(settings()).await;
    let long = format!("/fhir/metadata?x={}", "a".repeat(2000));
    let text = exchange(server.addr, &get(&long, ""))
        .await
        .assert_outcome(414, "too-long");
    assert!(text.contains("at most 1024"), "{text}");
    let xml = exchange(server.addr, &get(&long, "accept: application/fhir+xml\r\n")).await;
    assert_eq!(xml.status, 414);
    assert!(xml.content_type().starts_with("application/fhir+xml"));
    let body = String::from_utf8_lossy(&xml.body);
    assert!(body.contains("<OperationOutcome"), "{body}");
    assert!(body.contains(r#"<code value="too-long"/>"#), "{body}");

    // Past what the HTTP parser reads at all: still a 414 OperationOutcome.
    let huge = format!("/fhir/metadata?x={}", "a".repeat(70_000));
    exchange(server.addr, &get(&huge, ""))
        .await
        .assert_outcome(414, "too-long");
}

#[tokio::test]
async fn header_fields_over_the_limit_are_a_431_operation_outcome() {
    let server = start(settings()).await;
    let big = format!("x-big: {}\r\n", "b".repeat(3000));
    let text = exchange(server.addr, &get("/fhir/metadata", &big))
        .await
        .assert_outcome(431, "too-long");
    assert!(text.contains("at most 2048"), "{text}");
    let xml = exchange(
        server.addr,
        &get(
            "/fhir/metadata",
            &format!("{big}accept: application/fhir+xml\r\n"),
        ),
    )
    .await;
    assert_eq!(xml.status, 431);
    assert!(xml.content_type().starts_with("application/fhir+xml"));
    assert!(String::from_utf8_lossy(&xml.body).contains(r#"<code value="too-long"/>"#));

    // More fields than the HTTP parser takes, each small.
    let many: String = (0..150).map(|i| format!("x-{i}: 1\r\n")).collect();
    let text = exchange(server.addr, &get("/fhir/metadata", &many))
        .await
        .assert_outcome(431, "too-long");
    assert!(text.contains("100 fields"), "{text}");
}

#[tokio::test]
async fn a_malformed_request_head_is_a_400_operation_outcome() {
    let server = start(settings()).await;
    for request in [
        &b"GET /fhir/meta data HTTP/1.1\r\nhost: localhost\r\n\r\n"[..],
        &b"GET /fhir/CodeSystem/\xff HTTP/1.1\r\nhost: localhost\r\n\r\n"[..],
        &b"GET /fhir/metadata HTTP/1.1\r\nhost: localhost\r\nx-bad\x01: 1\r\n\r\n"[..],
    ] {
        let answer = exchange(server.addr, request).await;
        let text = answer.assert_outcome(400, "invalid");
        assert!(text.contains("not valid HTTP/1.1"), "{text}");
        assert_eq!(answer.header("connection"), Some("close"));
    }
}

#[tokio::test]
async fn a_path_that_is_not_utf8_once_decoded_is_an_operation_outcome() {
    let server = start(settings()).await;
    let text = exchange(server.addr, &get("/fhir/CodeSystem/%FF", ""))
        .await
        .assert_outcome(400, "invalid");
    assert!(text.contains("/fhir/CodeSystem/%FF"), "{text}");
    let xml = exchange(
        server.addr,
        &get(
            "/fhir/CodeSystem/%FF/$lookup?code=x",
            "accept: application/fhir+xml\r\n",
        ),
    )
    .await;
    assert_eq!(xml.status, 400);
    assert!(xml.content_type().starts_with("application/fhir+xml"));
    assert!(String::from_utf8_lossy(&xml.body).contains("<OperationOutcome"));
}

#[tokio::test]
async fn a_trailing_slash_names_the_same_resource() {
    let server = start(settings()).await;
    let metadata = exchange(server.addr, &get("/fhir/metadata/", "")).await;
    assert_eq!(metadata.status, 200);
    assert_eq!(metadata.json()["resourceType"], "CapabilityStatement");

    let read = exchange(server.addr, &get("/fhir/CodeSystem/icd-10/", "")).await;
    assert_eq!(read.status, 200);
    assert_eq!(read.json()["id"], "icd-10");

    let lookup = exchange(
        server.addr,
        &get(
            "/fhir/CodeSystem/$lookup/?system=http://hl7.org/fhir/sid/icd-10&code=J45.9",
            "",
        ),
    )
    .await;
    assert_eq!(lookup.status, 200);
    assert_eq!(
        param(&lookup.json(), "display"),
        Some(&serde_json::json!("Asthma, unspecified"))
    );

    let base = exchange(server.addr, &get("/fhir", "")).await;
    let base_slash = exchange(server.addr, &get("/fhir/", "")).await;
    assert_eq!(base.status, base_slash.status);
    assert_eq!(base.body, base_slash.body);
}

#[tokio::test]
async fn shutdown_stops_accepting_and_closes_idle_connections() {
    let mut server = start(settings()).await;
    let mut idle = TcpStream::connect(server.addr).await.expect("connect");
    idle.write_all(&get("/fhir/metadata", ""))
        .await
        .expect("write");
    assert_eq!(read_answer(&mut idle).await.status, 200);

    let _ = server.stop.take().map(|stop| stop.send(()));
    tokio::time::timeout(Duration::from_secs(2), &mut server.done)
        .await
        .expect("the loop returns once its connections are closed")
        .expect("the loop does not panic");
    assert!(
        closed_after(&mut idle, Duration::from_secs(1))
            .await
            .is_some(),
        "the idle connection is closed"
    );
    assert!(
        TcpStream::connect(server.addr).await.is_err(),
        "no longer accepting"
    );
}
