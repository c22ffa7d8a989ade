//! Limits on request bodies that would otherwise exhaust the parser: XML depth, attributes,
//! namespace declarations and DOCTYPE (the guard in front of fhirbolt), and JSON depth. The
//! deep-nesting tests run against the real binary on a bound port, because before the guard such
//! a body overflowed a tokio worker's stack and aborted the whole process.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::{Value as Json, json};

use super::support::*;

const FHIR_NS: &str = r#"xmlns="http://hl7.org/fhir""#;
const ICD10: &str = "http://hl7.org/fhir/sid/icd-10";

/// POSTs an XML body through the router.
async fn post_xml(path: &str, xml: String) -> Reply {
    let req = Request::post(path)
        .header(header::CONTENT_TYPE, "application/fhir+xml")
        .header(header::ACCEPT, "application/fhir+json")
        .body(Body::from(xml))
        .expect("request");
    send_to(state(), req).await
}

/// A CodeSystem sent with the request (`tx-resource`): the spawned server imports no register.
const TX_CS: &str = "http://example.org/fhir/CodeSystem/deep";

/// A `$lookup` of code `a` in XML, in a `tx-resource` CodeSystem, with one more parameter `deep`
/// whose `part`s nest `parts` levels: its deepest element is at `parts + 3` (Parameters,
/// parameter, the parts, a name).
fn lookup_with_nested_parts_xml(parts: usize) -> String {
    let mut xml = format!(
        r#"<Parameters {FHIR_NS}><parameter><name value="system"/><valueUri value="{TX_CS}"/></parameter><parameter><name value="code"/><valueCode value="a"/></parameter><parameter><name value="tx-resource"/><resource><CodeSystem><url value="{TX_CS}"/><version value="1"/><status value="active"/><content value="complete"/><concept><code value="a"/><display value="A"/></concept></CodeSystem></resource></parameter><parameter><name value="deep"/>"#
    );
    xml.push_str(&r#"<part><name value="p"/>"#.repeat(parts));
    xml.push_str(r#"<valueString value="leaf"/>"#);
    xml.push_str(&"</part>".repeat(parts));
    xml + "</parameter></Parameters>"
}

/// A `$lookup` of ICD-10 J45.9 in JSON, with one more parameter `deep` whose `part`s nest
/// `parts` levels: the innermost part object is at depth `3 + 2 × parts`.
fn lookup_with_nested_parts_json(parts: usize) -> String {
    let mut deep = json!({ "name": "p", "valueString": "leaf" });
    for _ in 1..parts {
        deep = json!({ "name": "p", "part": [deep] });
    }
    json!({
        "resourceType": "Parameters",
        "parameter": [
            { "name": "system", "valueUri": ICD10 },
            { "name": "code", "valueCode": "J45.9" },
            { "name": "deep", "part": [deep] }
        ]
    })
    .to_string()
}

fn refusal_text(reply: &Reply) -> String {
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text());
    let (code, text) = outcome(&reply.json());
    assert_eq!(code, "invalid", "{text}");
    text
}

#[tokio::test]
async fn parameters_nest_parts_to_the_documented_depth_in_json() {
    // serde_json reads 127 levels, so 62 levels of `part`. (The same in XML, 61 levels, is
    // checked against the real binary below: before the guard, deep XML aborted the process.)
    let json_post = |body: String| {
        let req = Request::post("/fhir/CodeSystem/$lookup")
            .header(header::CONTENT_TYPE, "application/fhir+json")
            .body(Body::from(body))
            .expect("request");
        send_to(state(), req)
    };
    let ok = json_post(lookup_with_nested_parts_json(62)).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text());
    assert_eq!(
        param(&ok.json(), "display"),
        Some(&json!("Asthma, unspecified"))
    );
    let text = refusal_text(&json_post(lookup_with_nested_parts_json(63)).await);
    assert!(text.contains("recursion limit exceeded"), "{text}");
}

#[tokio::test]
async fn deep_json_is_a_400_not_a_crash() {
    let body = format!(
        r#"{{"resourceType":"Parameters","parameter":{}"#,
        "[".repeat(100_000)
    );
    let req = Request::post("/fhir/CodeSystem/$lookup")
        .header(header::CONTENT_TYPE, "application/fhir+json")
        .body(Body::from(body))
        .expect("request");
    let text = refusal_text(&send_to(state(), req).await);
    assert!(text.contains("not valid JSON"), "{text}");
}

#[tokio::test]
async fn a_start_tag_with_80000_attributes_is_refused_at_once() {
    // RUSTSEC-2026-0194: fhirbolt's quick-xml 0.25 checks these for duplicates in quadratic time
    // (seconds of CPU for this 1 MB body); the guard stops at the 33rd.
    let attributes: String = (0..80_000).map(|i| format!(" a{i}=\"\"")).collect();
    let xml = format!("<Parameters {FHIR_NS}{attributes}/>");
    let started = Instant::now();
    let reply = post_xml("/fhir/CodeSystem/$lookup", xml).await;
    let elapsed = started.elapsed();
    let text = refusal_text(&reply);
    assert!(
        text.contains("an element has more than 32 attributes"),
        "{text}"
    );
    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
}

#[tokio::test]
async fn namespace_declaration_floods_are_refused() {
    // RUSTSEC-2026-0195: fhirbolt's quick-xml 0.25 stores every declaration in scope.
    let on_one_tag: String = (0..20)
        .map(|i| format!(" xmlns:p{i}=\"urn:p{i}\""))
        .collect();
    let text = refusal_text(
        &post_xml(
            "/fhir/CodeSystem/$lookup",
            format!("<Parameters {FHIR_NS}{on_one_tag}/>"),
        )
        .await,
    );
    assert!(
        text.contains("more than 16 namespace declarations are in scope"),
        "{text}"
    );
    // One a level, 20 levels deep (within the depth limit).
    let mut nested = format!("<Parameters {FHIR_NS}>");
    for i in 0..20 {
        nested.push_str(&format!("<parameter xmlns:p{i}=\"urn:p{i}\">"));
    }
    nested.push_str(&"</parameter>".repeat(20));
    nested.push_str("</Parameters>");
    let text = refusal_text(&post_xml("/fhir/CodeSystem/$lookup", nested).await);
    assert!(text.contains("namespace declarations"), "{text}");
}

#[tokio::test]
async fn a_doctype_is_refused_before_parsing() {
    let xml = format!(
        r#"<?xml version="1.0"?><!DOCTYPE Parameters [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;">]><Parameters {FHIR_NS}><parameter><name value="code"/><valueCode value="&b;"/></parameter></Parameters>"#
    );
    let text = refusal_text(&post_xml("/fhir/CodeSystem/$lookup", xml).await);
    assert!(
        text.contains("a DOCTYPE declaration is not allowed in FHIR XML"),
        "{text}"
    );
}

#[tokio::test]
async fn a_batch_posted_as_xml_is_answered() {
    let bundle = format!(
        r#"<Bundle {FHIR_NS}><type value="batch"/><entry><request><method value="GET"/><url value="CodeSystem/$lookup?system={ICD10}&amp;code=J45.9"/></request></entry><entry><resource><Parameters><parameter><name value="system"/><valueUri value="{ICD10}"/></parameter><parameter><name value="code"/><valueCode value="J45.9"/></parameter></Parameters></resource><request><method value="POST"/><url value="CodeSystem/$lookup"/></request></entry></Bundle>"#
    );
    let reply = post_xml("/fhir", bundle).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let answer = reply.json();
    assert_eq!(answer["type"], "batch-response", "{answer}");
    for entry in answer["entry"].as_array().expect("entries") {
        assert_eq!(entry["response"]["status"], "200 OK", "{entry}");
        assert_eq!(
            param(&entry["resource"], "display"),
            Some(&json!("Asthma, unspecified"))
        );
    }
}

/// The real server binary on a free loopback port (killed when dropped), serving the shipped
/// mappings' resources with an empty data directory.
struct Server {
    child: Child,
    base: String,
    _data: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let data = tempfile::tempdir().expect("dir");
        let child = Command::new(env!("CARGO_BIN_EXE_fhir-registers"))
            .arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--mappings")
            .arg(repo().join("mappings"))
            .arg("--data-dir")
            .arg(data.path())
            .arg("--no-default-imports")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the server binary starts");
        let mut server = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            _data: data,
        };
        let started = Instant::now();
        while !server.answers_health().await {
            assert!(server.is_running(), "the server exited while starting");
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the server did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server
    }

    fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    async fn answers_health(&self) -> bool {
        match reqwest::get(format!("{}/health", self.base)).await {
            Ok(r) => r.status() == StatusCode::OK,
            Err(_) => false,
        }
    }

    async fn post(&self, path: &str, content_type: &str, body: String) -> (StatusCode, Vec<u8>) {
        let reply = reqwest::Client::new()
            .post(format!("{}{path}", self.base))
            .header("content-type", content_type)
            .header("accept", "application/fhir+json")
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: no answer (did the server abort?): {e}"));
        let status = reply.status();
        (status, reply.bytes().await.expect("body").to_vec())
    }
}

#[tokio::test]
async fn deep_bodies_get_an_answer_and_the_server_keeps_running() {
    let mut server = Server::start().await;
    let xml = "application/fhir+xml";
    let refused = |(status, body): (StatusCode, Vec<u8>)| -> String {
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "{}",
            String::from_utf8_lossy(&body)
        );
        outcome(&serde_json::from_slice::<Json>(&body).expect("an OperationOutcome")).1
    };

    // The issue's body: 1,500 nested elements, about 10 KB.
    let flood = format!("<Parameters {FHIR_NS}>{}", "<a>".repeat(1_500));
    let text = refused(server.post("/fhir/CodeSystem/$lookup", xml, flood).await);
    assert!(text.contains("nest more than 64 deep"), "{text}");

    // The same inside a batch.
    let batch = format!(
        r#"<Bundle {FHIR_NS}><type value="batch"/><entry><resource><Parameters>{}"#,
        "<a>".repeat(1_500)
    );
    let text = refused(server.post("/fhir", xml, batch).await);
    assert!(text.contains("nest more than 64 deep"), "{text}");

    // Within the limits, typed: 61 levels of `part` (64 elements deep) are read. From about 50
    // levels fhirbolt needs more than a worker's 2 MiB of stack (some 40 KiB a level).
    let (status, body) = server
        .post(
            "/fhir/CodeSystem/$lookup",
            xml,
            lookup_with_nested_parts_xml(61),
        )
        .await;
    let body: Json = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(param(&body, "display"), Some(&json!("A")));
    // One more is refused.
    let text = refused(
        server
            .post(
                "/fhir/CodeSystem/$lookup",
                xml,
                lookup_with_nested_parts_xml(62),
            )
            .await,
    );
    assert!(
        text.contains("the XML body was refused: elements nest more than 64 deep"),
        "{text}"
    );

    // Deep JSON that comes back in the answer, asked for as XML: a CodeableConcept with 60
    // nested extensions (depth 124 of serde_json's 127) is echoed by $validate-code.
    let mut extension = json!({ "url": "urn:x", "valueString": "leaf" });
    for _ in 1..60 {
        extension = json!({ "url": "urn:x", "extension": [extension] });
    }
    let cs = TX_CS;
    let validate = json!({
        "resourceType": "Parameters",
        "parameter": [
            { "name": "url", "valueUri": cs },
            { "name": "codeableConcept", "valueCodeableConcept": {
                "extension": [extension],
                "coding": [{ "system": cs, "code": "a" }]
            }},
            { "name": "tx-resource", "resource": {
                "resourceType": "CodeSystem", "url": cs, "version": "1", "status": "active",
                "content": "complete", "concept": [{ "code": "a", "display": "A" }]
            }}
        ]
    });
    let reply = reqwest::Client::new()
        .post(format!(
            "{}/fhir/CodeSystem/$validate-code?_format=xml",
            server.base
        ))
        .header("content-type", "application/fhir+json")
        .body(validate.to_string())
        .send()
        .await
        .expect("an answer (did the server abort?)");
    assert_eq!(reply.status(), StatusCode::OK);
    let answer = reply.text().await.expect("body");
    assert!(
        answer.contains(r#"<valueBoolean value="true"/>"#),
        "{answer}"
    );
    assert_eq!(answer.matches("<extension url=\"urn:x\">").count(), 60);

    assert!(server.is_running(), "the server process is still running");
    assert!(server.answers_health().await, "and still answers");
}
