//! The register browser's HTML pages over the real router: status codes, content, the security
//! headers on HTML (and only there), the pages for things that do not exist, and agreement with
//! the FHIR operations the pages are built on (`$diff`, `$concept-history`, `$expand`).

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use fhir_registers::app;
use http_body_util::BodyExt;
use tower::ServiceExt;

use super::support::*;

const ODS: &str = "https://fhir.nhs.uk/Id/ods-organization-code";

/// A page: status, headers and body text.
struct Page {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    text: String,
}

async fn page(path: &str) -> Page {
    let resp = app(history_state())
        .oneshot(
            Request::get(path)
                .header(header::HOST, "registers.example:8080")
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("router answers");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    Page {
        status,
        headers,
        text: String::from_utf8(body.to_vec()).expect("utf-8"),
    }
}

fn header_of<'a>(p: &'a Page, name: &str) -> &'a str {
    p.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no {name} header"))
}

/// Every HTML answer, error pages included, is HTML with the strict security headers.
fn assert_html(p: &Page) {
    assert_eq!(header_of(p, "content-type"), "text/html; charset=utf-8");
    let csp = header_of(p, "content-security-policy");
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(header_of(p, "x-content-type-options"), "nosniff");
    assert_eq!(header_of(p, "referrer-policy"), "no-referrer");
    assert!(p.text.starts_with("<!DOCTYPE html>"), "{}", &p.text[..80]);
    assert!(p.text.contains(r#"<html lang="en">"#));
    // No inline script or style: the CSP would refuse them.
    assert!(!p.text.contains("<script>"), "inline script");
    assert!(!p.text.contains("<style"), "inline style");
    assert!(!p.text.contains(" style="), "inline style attribute");
    assert!(!p.text.contains(" onclick="), "inline handler");
}

/// The `data-count` number of one of the diff page's counts.
fn count(text: &str, name: &str) -> usize {
    let marker = format!(r#"data-count="{name}">"#);
    let at = text
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} count"))
        + marker.len();
    text[at..]
        .chars()
        .take_while(|c| *c != '<')
        .filter(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .expect("a number")
}

#[tokio::test]
async fn home_lists_registers_value_sets_and_concept_maps() {
    let p = page("/").await;
    assert_eq!(p.status, StatusCode::OK);
    assert_html(&p);
    for text in [
        "ODS Organisation Code",
        "ICD-10 (WHO 2019)",
        r#"href="/registers/ods-organization-code""#,
        ODS,
        "NHS England",
        "Open Government Licence",
        r#"href="/valuesets/ods-gp-practices-00k""#,
        "ConceptMaps",
        r#"action="/search""#,
    ] {
        assert!(p.text.contains(text), "home page lacks {text}");
    }
}

#[tokio::test]
async fn the_fhir_api_is_unchanged_and_gets_no_html_headers() {
    let fhir = page("/fhir/metadata").await;
    assert_eq!(fhir.status, StatusCode::OK);
    assert!(fhir.headers.get("content-security-policy").is_none());
    assert!(header_of(&fhir, "content-type").contains("fhir+json"));
    let health = page("/health").await;
    assert_eq!(health.text, "ok");
    // Paths outside the browser's and the API's still answer a FHIR 404.
    let other = page("/nothing-here").await;
    assert_eq!(other.status, StatusCode::NOT_FOUND);
    assert!(other.text.contains("OperationOutcome"));
}

#[tokio::test]
async fn register_page_shows_metadata_timeline_and_codes() {
    let p = page("/registers/ods-organization-code").await;
    assert_eq!(p.status, StatusCode::OK);
    assert_html(&p);
    for text in [
        "<h1>ODS Organisation Code</h1>",
        "2019-10-01",
        "2020-01-01",
        "2026-02-01",
        r#"href="/registers/ods-organization-code/diff?from=2019-10-01&amp;to=2020-01-01""#,
        "Declared properties (",
        "commissioner",
        r#"data-live="results""#,
    ] {
        assert!(p.text.contains(text), "register page lacks {text}");
    }
}

#[tokio::test]
async fn register_search_filters_on_words_and_pages() {
    let p = page("/registers/ods-organization-code?q=densham").await;
    assert_eq!(p.status, StatusCode::OK);
    assert!(
        p.text
            .contains(r#"href="/registers/ods-organization-code/concepts/A81001""#)
    );
    assert!(p.text.contains("THE DENSHAM SURGERY"));
    assert!(
        p.text.contains("Showing 1–1 of 1"),
        "one practice is called Densham"
    );
    // Without a filter: pages of 50, with a next link and no previous one.
    let first = page("/registers/icd-10").await;
    assert!(first.text.contains("Showing 1–50 of"));
    assert!(
        first
            .text
            .contains(r#"rel="next" href="/registers/icd-10?offset=50""#)
    );
    assert!(!first.text.contains(r#"rel="prev""#));
    let second = page("/registers/icd-10?offset=50").await;
    assert!(second.text.contains("Showing 51–100 of"));
    assert!(second.text.contains(r#"rel="prev""#));
}

#[tokio::test]
async fn register_as_of_a_date_shows_the_release_in_force() {
    let p = page("/registers/ods-organization-code?date=2019-12-24").await;
    assert_eq!(p.status, StatusCode::OK);
    assert!(p.text.contains("version 2019-10-01"));
    assert!(
        !p.text.contains(">2026-02-01<"),
        "a later release is listed"
    );
    let before = page("/registers/ods-organization-code?date=2001-01-01").await;
    assert_eq!(before.status, StatusCode::NOT_FOUND);
    assert_html(&before);
    assert!(before.text.contains("No release of the register"));
    assert!(before.text.contains("its first release is 2019-10-01"));
    let bad = page("/registers/ods-organization-code?date=yesterday").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.text.contains("is not a date"));
    let offset = page("/registers/ods-organization-code?offset=many").await;
    assert_eq!(offset.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn unknown_register_and_code_are_404_pages() {
    let p = page("/registers/no-such-register").await;
    assert_eq!(p.status, StatusCode::NOT_FOUND);
    assert_html(&p);
    assert!(
        p.text
            .contains("There is no register &#39;no-such-register&#39;")
            || p.text.contains("There is no register 'no-such-register'")
    );
    let c = page("/registers/icd-10/concepts/NOPE").await;
    assert_eq!(c.status, StatusCode::NOT_FOUND);
    assert_html(&c);
    assert!(c.text.contains("No such code"));
    assert!(c.text.contains("Unknown code"));
    let vs = page("/valuesets/no-such-value-set").await;
    assert_eq!(vs.status, StatusCode::NOT_FOUND);
    assert_html(&vs);
}

#[tokio::test]
async fn concept_page_shows_hierarchy_properties_history_and_the_fhir_request() {
    let p = page("/registers/icd-10/concepts/J45").await;
    assert_eq!(p.status, StatusCode::OK);
    assert_html(&p);
    assert!(p.text.contains("<h1>J45 Asthma</h1>"));
    // Up to the block, down to the subcategories.
    assert!(
        p.text
            .contains(r#"href="/registers/icd-10/concepts/J40-J47""#)
    );
    assert!(
        p.text
            .contains(r#"href="/registers/icd-10/concepts/J45.9""#)
    );
    assert!(p.text.contains(
        "/fhir/CodeSystem/$lookup?system=http%3A%2F%2Fhl7.org%2Ffhir%2Fsid%2Ficd-10&amp;code=J45"
    ));
    assert!(p.text.contains("curl -H &#39;Accept: application/fhir+json&#39; &#39;http://registers.example:8080/fhir/CodeSystem/$lookup?") || p.text.contains("curl -H 'Accept: application/fhir+json' 'http://registers.example:8080/fhir/CodeSystem/$lookup?"));
    // A practice: its commissioner is its parent; its history has a row per release.
    let a = page("/registers/ods-organization-code/concepts/A81001").await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.text.contains("THE DENSHAM SURGERY"));
    assert!(
        a.text
            .contains(r#"href="/registers/ods-organization-code/concepts/00K""#)
            || a.text.contains("00K")
    );
    let history = send_to(
        history_state(),
        Request::get(format!(
            "/fhir/CodeSystem/$concept-history?system={}&code=A81001",
            enc(ODS)
        ))
        .body(Body::empty())
        .expect("request"),
    )
    .await
    .json();
    let versions = all_parts(&history, "version");
    assert!(versions.len() >= 2);
    let section = &a.text[a.text.find(r#"id="history""#).expect("history section")..];
    let rows = section[..section.find("</table>").expect("table")]
        .matches("<tr>")
        .count();
    assert_eq!(
        rows,
        versions.len() + 1,
        "a header row and one row per version"
    );
    assert!(section.contains("change-added"));
}

#[tokio::test]
async fn diff_page_agrees_with_the_diff_operation() {
    let p = page("/registers/ods-organization-code/diff?from=2019-10-01&to=2020-01-01").await;
    assert_eq!(p.status, StatusCode::OK);
    assert_html(&p);
    let d = send_to(
        history_state(),
        Request::get(format!(
            "/fhir/CodeSystem/$diff?url={}&fromVersion=2019-10-01&toVersion=2020-01-01",
            enc(ODS)
        ))
        .body(Body::empty())
        .expect("request"),
    )
    .await
    .json();
    for name in ["added", "removed", "changed", "unchanged"] {
        let expected = param(&d, name).and_then(|v| v.as_u64()).expect(name) as usize;
        assert_eq!(count(&p.text, name), expected, "{name}");
    }
    assert!(count(&p.text, "added") > 0);
    assert!(p.text.contains("Changed concepts by property"));
    assert!(p.text.contains("→"));
    // Without versions: the latest against the one before it.
    let latest = page("/registers/ods-organization-code/diff").await;
    assert_eq!(latest.status, StatusCode::OK);
    assert!(latest.text.contains("to 2026-02-01"));
    let unknown = page("/registers/ods-organization-code/diff?from=1999-01-01").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert!(unknown.text.contains("is not a version"));
}

#[tokio::test]
async fn value_set_page_shows_rules_in_words_and_the_expansion() {
    let p = page("/valuesets/ods-gp-practices-00k").await;
    assert_eq!(p.status, StatusCode::OK);
    assert_html(&p);
    assert!(p.text.contains("Include the codes of"));
    assert!(p.text.contains("<code>RE4</code> is <code>00K</code>"));
    assert!(
        p.text
            .contains(r#"href="/registers/ods-organization-code/concepts/"#)
    );
    // A81001 was commissioned by 00K until 2021 (then by 16C).
    let now = page("/valuesets/ods-gp-practices-00k?q=densham").await;
    assert!(now.text.contains("No results"));
    let then = page("/valuesets/ods-gp-practices-00k?q=densham&date=2020-06-30").await;
    assert_eq!(then.status, StatusCode::OK);
    assert!(then.text.contains("Showing 1–1 of 1"));
    assert!(
        then.text
            .contains(r#"href="/registers/ods-organization-code/concepts/A81001?date=2020-06-30""#)
    );
    let chapter = page("/valuesets/icd-10-chapter-x").await;
    assert_eq!(chapter.status, StatusCode::OK);
    assert!(chapter.text.contains("is under"));
}

#[tokio::test]
async fn search_across_registers_finds_codes_in_each() {
    let p = page("/search?q=asthma").await;
    assert_eq!(p.status, StatusCode::OK);
    assert_html(&p);
    assert!(p.text.contains(r#"href="/registers/icd-10/concepts/J45""#));
    let none = page("/search?q=zzzzzzqqq").await;
    assert!(
        none.text
            .contains("No register has a code or display matching that.")
    );
}

#[tokio::test]
async fn assets_are_served_with_their_types() {
    let css = page("/assets/style.css").await;
    assert_eq!(css.status, StatusCode::OK);
    assert_eq!(header_of(&css, "content-type"), "text/css; charset=utf-8");
    assert_eq!(header_of(&css, "x-content-type-options"), "nosniff");
    let js = page("/assets/search.js").await;
    assert_eq!(
        header_of(&js, "content-type"),
        "text/javascript; charset=utf-8"
    );
    assert!(js.text.contains("DOMParser"));
    let missing = page("/assets/other.js").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_code_removed_since_is_a_404_with_its_history() {
    // A practice the latest release no longer lists, found with `$diff`.
    let d = send_to(
        history_state(),
        Request::get(format!(
            "/fhir/CodeSystem/$diff?url={}&fromVersion=2024-07-01&count=1000",
            enc(ODS)
        ))
        .body(Body::empty())
        .expect("request"),
    )
    .await
    .json();
    let removed = all_parts(&d, "concept")
        .into_iter()
        .find(|parts| part_value(parts, "change") == Some(&serde_json::json!("removed")))
        .and_then(|parts| part_value(parts, "code")?.as_str().map(str::to_string))
        .expect("the latest release removes a code");
    let p = page(&format!(
        "/registers/ods-organization-code/concepts/{removed}"
    ))
    .await;
    assert_eq!(p.status, StatusCode::NOT_FOUND);
    assert_html(&p);
    assert!(p.text.contains("<h1>No such code</h1>"));
    assert!(p.text.contains(r#"id="history""#));
    assert!(p.text.contains("change-removed"));
    // As it stood before, the code is there.
    let then = page(&format!(
        "/registers/ods-organization-code/concepts/{removed}?date=2024-07-01"
    ))
    .await;
    assert_eq!(then.status, StatusCode::OK);
}

#[tokio::test]
async fn the_browser_stays_out_of_the_way_of_a_fhir_base_at_its_paths() {
    for base in ["", "/", "/registers", "/assets/fhir"] {
        let resp = fhir_registers::http::app_at(history_state(), base)
            .oneshot(
                Request::get("/health")
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("router answers");
        assert_eq!(resp.status(), StatusCode::OK, "{base}");
    }
    // Beside `/r4`, the browser is at `/` and the FHIR API at `/r4`.
    let home = fhir_registers::http::app_at(history_state(), "/r4")
        .oneshot(Request::get("/").body(Body::empty()).expect("request"))
        .await
        .expect("router answers");
    assert_eq!(home.status(), StatusCode::OK);
    let body = home.into_body().collect().await.expect("body").to_bytes();
    assert!(String::from_utf8_lossy(&body).contains(r#"href="/r4/metadata""#));
}
