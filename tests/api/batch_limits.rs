//! Batches within their byte budget, streamed entry by entry; batch entries with absolute URLs;
//! and paging through searchsets with `_count`, `_offset` and the Bundle's links.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use fhir_registers::AppState;
use http_body_util::BodyExt;
use serde_json::{Value as Json, json};
use tower::ServiceExt;

use super::support::*;

const ICD10: &str = "http://hl7.org/fhir/sid/icd-10";
const HOST: &str = "tx.example.org:8080";

/// The fixture registry behind a state whose batches may answer `max_batch_bytes` in all.
fn state_with_batch_budget(max_batch_bytes: usize) -> Arc<AppState> {
    let dir = tempfile::tempdir().expect("dir").keep();
    let set = shipped();
    import_fixtures(&set, &dir);
    let registry = fhir_registers::registers::build_registry(&set, &dir, &[]).expect("registry");
    let mut state = AppState::new(registry);
    state.max_batch_bytes = max_batch_bytes;
    Arc::new(state)
}

/// A batch of `entries` as the request of a client at `HOST`.
fn batch_request(entries: Vec<Json>, accept: &str) -> Request<Body> {
    let bundle = json!({"resourceType": "Bundle", "type": "batch", "entry": entries});
    Request::post("/fhir")
        .header(header::HOST, HOST)
        .header(header::ACCEPT, accept)
        .header(header::CONTENT_TYPE, "application/fhir+json")
        .body(Body::from(bundle.to_string()))
        .expect("request")
}

fn get_entry(url: &str) -> Json {
    json!({"request": {"method": "GET", "url": url}})
}

fn statuses(bundle: &Json) -> Vec<String> {
    bundle["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["response"]["status"].as_str().unwrap_or("").to_string())
        .collect()
}

const EXPAND: &str = "ValueSet/postcodes-all/$expand?count=50";

#[tokio::test]
async fn a_batch_past_its_byte_budget_answers_the_rest_too_costly() {
    // One answer's size, from the same server outside a batch.
    let one = get(&format!("/fhir/{EXPAND}")).await;
    assert_eq!(one.status, StatusCode::OK, "{}", one.text());
    assert_eq!(codes(&one.json()).len(), 50);
    let budget = one.body.len() * 5 / 2;
    let state = state_with_batch_budget(budget);
    let reply = send_to(
        state,
        batch_request(
            (0..6).map(|_| get_entry(EXPAND)).collect(),
            "application/fhir+json",
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    fhir_xml::validate_json(&reply.text()).expect("the batch-response is a valid FHIR Bundle");
    let bundle = reply.json();
    assert_eq!(bundle["type"], "batch-response");
    assert_eq!(
        statuses(&bundle),
        vec![
            "200 OK",
            "200 OK",
            "422 Unprocessable Entity",
            "422 Unprocessable Entity",
            "422 Unprocessable Entity",
            "422 Unprocessable Entity"
        ],
        "two answers fit in two and a half answers' bytes; the third would pass the budget"
    );
    for (i, entry) in bundle["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .enumerate()
    {
        if i < 2 {
            assert_eq!(codes(&entry["resource"]).len(), 50);
        } else {
            assert!(entry.get("resource").is_none());
            let (code, text) = outcome(&entry["response"]["outcome"]);
            assert_eq!(code, "too-costly");
            assert!(text.contains(&budget.to_string()), "{text}");
        }
    }
    assert!(
        reply.body.len() < budget + 4 * 600,
        "beyond the budget only the four short too-costly entries are written ({} bytes)",
        reply.body.len()
    );
}

#[tokio::test]
async fn batch_entries_are_streamed_one_by_one() {
    let entries: Vec<Json> = (0..4).map(|_| get_entry(EXPAND)).collect();
    let resp = fhir_registers::app(state())
        .oneshot(batch_request(entries, "application/fhir+json"))
        .await
        .expect("router answers");
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers().get(header::CONTENT_LENGTH).is_none(),
        "a streamed body has no length up front"
    );
    let mut body = resp.into_body();
    let mut frames = 0;
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.expect("frame");
        if let Some(data) = frame.data_ref() {
            frames += 1;
            bytes.extend_from_slice(data);
        }
    }
    assert_eq!(
        frames, 6,
        "the Bundle's start, one frame per entry, its end"
    );
    let bundle: Json = serde_json::from_slice(&bytes).expect("JSON");
    assert_eq!(statuses(&bundle), vec!["200 OK"; 4]);
}

#[tokio::test]
async fn a_batch_answers_in_xml_and_pretty_json() {
    let entries = vec![
        get_entry(&format!("CodeSystem/$lookup?system={ICD10}&code=J45.9")),
        get_entry(&format!("CodeSystem/$lookup?system={ICD10}&code=NOPE")),
    ];
    let xml = send_to(
        state(),
        batch_request(entries.clone(), "application/fhir+xml"),
    )
    .await;
    assert_eq!(xml.status, StatusCode::OK);
    assert!(xml.content_type.starts_with("application/fhir+xml"));
    let from_xml: Json = serde_json::from_str(
        &fhir_xml::xml_to_json(&xml.text()).unwrap_or_else(|e| panic!("{e}: {}", xml.text())),
    )
    .expect("JSON");
    let json = send_to(
        state(),
        batch_request(entries.clone(), "application/fhir+json"),
    )
    .await;
    assert_eq!(
        from_xml,
        json.json(),
        "the XML Bundle says what the JSON one does"
    );
    assert_eq!(statuses(&from_xml), vec!["200 OK", "404 Not Found"]);
    let pretty = send_to(
        state(),
        Request::post("/fhir?_pretty=true")
            .header(header::CONTENT_TYPE, "application/fhir+json")
            .body(Body::from(
                json!({"resourceType": "Bundle", "type": "batch", "entry": entries}).to_string(),
            ))
            .expect("request"),
    )
    .await;
    assert_eq!(pretty.text(), pretty_json(&json.json()));
}

fn pretty_json(v: &Json) -> String {
    serde_json::to_string_pretty(v).expect("serialises")
}

#[tokio::test]
async fn batch_entries_with_absolute_urls_on_this_server_run() {
    let lookup = format!("CodeSystem/$lookup?system={ICD10}&code=J45.9");
    let entries = vec![
        get_entry(&format!("http://{HOST}/fhir/{lookup}")),
        get_entry(&format!("http://elsewhere.example.org/fhir/{lookup}")),
        get_entry(&format!("http://{HOST}/other/{lookup}")),
        get_entry(&format!("/fhir/{lookup}")),
        json!({"request": {"method": "POST", "url": format!("http://{HOST}/fhir/ValueSet/$validate-code")},
            "resource": {"resourceType": "Parameters", "parameter": [
                {"name": "url", "valueUri": "https://fhir-registers.org/fhir/ValueSet/icd-10-chapter-x"},
                {"name": "coding", "valueCoding": {"system": ICD10, "code": "J45.9"}}]}}),
    ];
    let reply = send_to(state(), batch_request(entries, "application/fhir+json")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let bundle = reply.json();
    assert_eq!(
        statuses(&bundle),
        vec![
            "200 OK",
            "400 Bad Request",
            "404 Not Found",
            "200 OK",
            "200 OK"
        ]
    );
    let entry = |i: usize| &bundle["entry"][i];
    assert_eq!(
        param(&entry(0)["resource"], "display"),
        Some(&json!("Asthma, unspecified"))
    );
    assert_eq!(entry(0)["resource"], entry(3)["resource"]);
    let (code, text) = outcome(&entry(1)["response"]["outcome"]);
    assert_eq!(code, "not-supported");
    assert!(
        text.contains("is not on this server") && text.contains(&format!("http://{HOST}/fhir")),
        "{text}"
    );
    let (code, text) = outcome(&entry(2)["response"]["outcome"]);
    assert_eq!(code, "not-found");
    assert!(text.contains("not under this server's FHIR base"), "{text}");
    assert_eq!(param(&entry(4)["resource"], "result"), Some(&json!(true)));
}

/// A GET to an absolute link this server made, sent as a client would.
async fn follow(link: &str) -> Json {
    let origin = format!("http://{HOST}");
    let path = link
        .strip_prefix(&origin)
        .unwrap_or_else(|| panic!("link '{link}' is not absolute on {origin}"));
    let reply = send_to(
        state(),
        Request::get(path)
            .header(header::HOST, HOST)
            .body(Body::empty())
            .expect("request"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{link}: {}", reply.text());
    reply.json()
}

fn link(bundle: &Json, relation: &str) -> Option<String> {
    bundle["link"]
        .as_array()?
        .iter()
        .find(|l| l["relation"] == relation)
        .and_then(|l| l["url"].as_str())
        .map(str::to_string)
}

fn ids(bundle: &Json) -> Vec<String> {
    bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| e["resource"]["id"].as_str().unwrap_or("").to_string())
        .collect()
}

/// Pages through a search of `kind` by `_count=page`: following `next` from the first page, and
/// `previous` back from the last, each yields every match of the unpaged search exactly once.
async fn pages_through(kind: &str, page: usize) {
    let origin = format!("http://{HOST}");
    let all = follow(&format!("{origin}/fhir/{kind}")).await;
    let every = ids(&all);
    assert_eq!(all["total"], every.len());
    assert!(
        every.len() > page,
        "{kind}: {} matches fit on one page of {page}",
        every.len()
    );
    assert_eq!(link(&all, "next"), None, "an unpaged search is one page");
    let mut bundle = follow(&format!("{origin}/fhir/{kind}?_count={page}")).await;
    assert_eq!(bundle["total"], every.len(), "total counts every match");
    assert_eq!(link(&bundle, "previous"), None);
    let first = link(&bundle, "first").expect("first link");
    let last = link(&bundle, "last").expect("last link");
    assert_eq!(ids(&follow(&first).await), ids(&bundle));
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let on_page = ids(&bundle);
        assert!(
            !on_page.is_empty() && on_page.len() <= page,
            "{kind}: {on_page:?}"
        );
        seen.extend(on_page);
        pages += 1;
        assert!(pages <= every.len(), "{kind}: next links never end");
        if pages > 1 {
            assert!(
                link(&bundle, "previous").is_some(),
                "{kind}: page {pages} has no previous"
            );
        }
        match link(&bundle, "next") {
            Some(next) => bundle = follow(&next).await,
            None => break,
        }
    }
    assert_eq!(
        seen, every,
        "{kind}: next links yield every match once, in order"
    );
    assert_eq!(pages, every.len().div_ceil(page));
    assert_eq!(
        link(&bundle, "self"),
        Some(last.clone()),
        "the page without next is the last"
    );
    let mut back = Vec::new();
    let mut bundle = follow(&last).await;
    loop {
        back.splice(0..0, ids(&bundle));
        match link(&bundle, "previous") {
            Some(previous) => bundle = follow(&previous).await,
            None => break,
        }
    }
    assert_eq!(
        back, every,
        "{kind}: previous links lead back through every page"
    );
}

#[tokio::test]
async fn code_system_search_pages_with_count_and_offset() {
    pages_through("CodeSystem", 2).await;
    let page = follow(&format!(
        "http://{HOST}/fhir/CodeSystem?_count=2&_offset=5&_summary=true"
    ))
    .await;
    assert_eq!(
        link(&page, "self").as_deref(),
        Some(format!("http://{HOST}/fhir/CodeSystem?_count=2&_offset=5&_summary=true").as_str())
    );
    assert_eq!(
        link(&page, "previous").as_deref(),
        Some(format!("http://{HOST}/fhir/CodeSystem?_count=2&_summary=true&_offset=3").as_str()),
        "other parameters are kept"
    );
    let full_url = page["entry"][0]["fullUrl"].as_str().expect("fullUrl");
    assert!(
        full_url.starts_with(&format!("http://{HOST}/fhir/CodeSystem/")),
        "{full_url}"
    );
    let beyond = follow(&format!(
        "http://{HOST}/fhir/CodeSystem?_count=2&_offset=100"
    ))
    .await;
    assert!(beyond.get("entry").is_none());
    assert_eq!(link(&beyond, "next"), None);
    assert!(link(&beyond, "previous").is_some());
}

#[tokio::test]
async fn value_set_search_pages_with_count_and_offset() {
    pages_through("ValueSet", 3).await;
}

#[tokio::test]
async fn concept_map_search_pages_with_count_and_offset() {
    pages_through("ConceptMap", 1).await;
}

#[tokio::test]
async fn bad_paging_controls_are_400_outcomes() {
    for kind in ["CodeSystem", "ValueSet", "ConceptMap"] {
        for query in ["_offset=-1", "_offset=two", "_count=-2", "_count=1.5"] {
            let r = get(&format!("/fhir/{kind}?{query}")).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{kind}?{query}");
            let (code, text) = outcome(&r.json());
            assert_eq!(code, "invalid");
            assert!(text.contains("non-negative integer"), "{text}");
        }
    }
}

#[tokio::test]
async fn search_links_in_a_batch_name_the_server_the_batch_was_sent_to() {
    let reply = send_to(
        state(),
        batch_request(
            vec![get_entry("CodeSystem?_count=2")],
            "application/fhir+json",
        ),
    )
    .await;
    let page = &reply.json()["entry"][0]["resource"];
    assert_eq!(
        link(page, "next").as_deref(),
        Some(format!("http://{HOST}/fhir/CodeSystem?_count=2&_offset=2").as_str())
    );
}
