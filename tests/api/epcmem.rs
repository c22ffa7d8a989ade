//! ODS GP practice memberships (epcmem, the whole October 2019 release): one concept per
//! membership with its join and left dates as validity, and the practice → parent ConceptMap whose
//! `$translate` answers which organisation a practice belonged to on a date. Expected values are
//! read from the shipped file.

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use fhir_registers::AppState;
use serde_json::{Value as Json, json};

use super::support::*;

const MEMBERSHIPS: &str = "https://fhir-registers.org/fhir/CodeSystem/ods-gp-practice-memberships";
const ODS: &str = "https://fhir.nhs.uk/Id/ods-organization-code";
const MAP: &str = "/fhir/ConceptMap/gp-practice-commissioner/$translate";
const FILE: &str = "mappings/data/ods/epcmem_2019-10.csv.gz";
const RELEASE: &str = "2019-10-01";

/// One row of the file: practice, parent, join date, left date (`YYYY-MM-DD`, or empty).
struct Row {
    practice: String,
    parent: String,
    joined: String,
    left: String,
}

fn day(yyyymmdd: &str) -> String {
    if yyyymmdd.is_empty() {
        return String::new();
    }
    format!("{}-{}-{}", &yyyymmdd[..4], &yyyymmdd[4..6], &yyyymmdd[6..8])
}

fn rows() -> &'static Vec<Row> {
    static ROWS: OnceLock<Vec<Row>> = OnceLock::new();
    ROWS.get_or_init(|| {
        gz_rows(FILE)
            .iter()
            .map(|r| Row {
                practice: r[0].to_string(),
                parent: r[1].to_string(),
                joined: day(&r[3]),
                left: day(&r[4]),
            })
            .collect()
    })
}

impl Row {
    fn code(&self) -> String {
        format!(
            "{}-{}-{}",
            self.practice,
            self.parent,
            self.joined.replace('-', "")
        )
    }
    fn held_on(&self, d: &str) -> bool {
        self.joined.as_str() <= d && (self.left.is_empty() || d <= self.left.as_str())
    }
}

/// The memberships, and the ODS organisation CodeSystem's CCGs (eccg 2024-07) that name parents.
fn state() -> Arc<AppState> {
    static STATE: OnceLock<Arc<AppState>> = OnceLock::new();
    STATE
        .get_or_init(|| {
            let dir = tempfile::tempdir().expect("dir").keep();
            let set = shipped();
            import_list(
                &set,
                &dir,
                &[
                    ("ods-epcmem", "../../".to_string() + FILE, RELEASE),
                    (
                        "ods-eccg",
                        "../../mappings/data/ods/eccg_2024-07.csv".into(),
                        "2024-07-01",
                    ),
                ]
                .iter()
                .map(|(id, f, v)| (*id, f.as_str(), *v))
                .collect::<Vec<_>>(),
            );
            Arc::new(AppState::new(
                fhir_registers::registers::build_registry(&set, &dir, &[]).expect("registry"),
            ))
        })
        .clone()
}

async fn ask(uri: String) -> (StatusCode, Json) {
    let r = send_to(state(), Request::get(uri).body(Body::empty()).expect("req")).await;
    (r.status, r.json())
}

/// The target codes of a `$translate` answer (or the sources, reversed).
fn matched(t: &Json, part: &str) -> Vec<String> {
    let mut out: Vec<String> = all_parts(t, "match")
        .into_iter()
        .filter_map(|m| part_value(m, part))
        .filter_map(|c| c["code"].as_str().map(str::to_string))
        .collect();
    out.sort();
    out
}

/// Practices with several memberships, spread over the file.
fn sample_practices() -> Vec<&'static str> {
    let mut practices: Vec<&str> = rows().iter().map(|r| r.practice.as_str()).collect();
    practices.dedup();
    practices
        .into_iter()
        .step_by(401)
        .filter(|p| rows().iter().filter(|r| r.practice == *p).count() > 1)
        .take(25)
        .collect()
}

#[tokio::test]
async fn a_practice_translates_to_the_organisation_it_belonged_to_on_each_date() {
    let sample = sample_practices();
    assert!(sample.len() >= 10, "{sample:?}");
    for practice in sample {
        let memberships: Vec<&Row> = rows().iter().filter(|r| r.practice == practice).collect();
        // Without a date: every parent the practice ever had.
        let (status, t) = ask(format!("{MAP}?system={}&code={practice}", enc(ODS))).await;
        assert_eq!(status, StatusCode::OK, "{t}");
        let mut all: Vec<String> = memberships.iter().map(|r| r.parent.clone()).collect();
        all.sort();
        assert_eq!(matched(&t, "concept"), all, "{practice}");
        // On the first day of each membership, and on its last: that parent only.
        for m in &memberships {
            for d in [m.joined.as_str(), m.left.as_str()] {
                if d.is_empty() {
                    continue;
                }
                let (status, t) = ask(format!(
                    "{MAP}?system={}&code={practice}&date={d}",
                    enc(ODS)
                ))
                .await;
                assert_eq!(status, StatusCode::OK, "{t}");
                let expected: Vec<String> = memberships
                    .iter()
                    .filter(|r| r.held_on(d))
                    .map(|r| r.parent.clone())
                    .collect();
                assert_eq!(expected, vec![m.parent.clone()], "the file: {practice} {d}");
                assert_eq!(matched(&t, "concept"), expected, "{practice} on {d}: {t}");
            }
        }
        // Before the practice joined anything: no translation.
        let (status, t) = ask(format!(
            "{MAP}?system={}&code={practice}&date=1990-06-01",
            enc(ODS)
        ))
        .await;
        assert_eq!(status, StatusCode::OK, "{t}");
        assert_eq!(param(&t, "result"), Some(&json!(false)), "{t}");
    }
    // A parent the server knows comes with its display, from the ODS CodeSystem.
    let (_, t) = ask(format!(
        "{MAP}?system={}&code=A81001&date=2015-01-01",
        enc(ODS)
    ))
    .await;
    let concept = part_value(all_parts(&t, "match")[0], "concept").expect("concept");
    assert_eq!(concept["code"], json!("00K"), "{t}");
    let eccg = data_text("mappings/data/ods/eccg_2024-07.csv");
    let name = eccg
        .lines()
        .find(|l| l.starts_with("\"00K\""))
        .and_then(|l| l.split(',').nth(1))
        .map(|n| n.trim_matches('"').to_string())
        .expect("00K in eccg");
    assert_eq!(concept["display"].as_str(), Some(name.as_str()), "{t}");
}

#[tokio::test]
async fn reversed_translation_lists_the_practices_a_parent_had_on_a_date() {
    for (parent, d) in [("00K", "2015-01-01"), ("5E1", "2005-06-01")] {
        let mut expected: Vec<String> = rows()
            .iter()
            .filter(|r| r.parent == parent && r.held_on(d))
            .map(|r| r.practice.clone())
            .collect();
        expected.sort();
        assert!(!expected.is_empty(), "{parent} on {d}");
        let (status, t) = ask(format!(
            "{MAP}?targetSystem={}&targetCode={parent}&date={d}",
            enc(ODS)
        ))
        .await;
        assert_eq!(status, StatusCode::OK, "{t}");
        // Reversed, each match's concept is a practice and its source the parent.
        assert_eq!(matched(&t, "concept"), expected, "{parent} on {d}");
        assert!(matched(&t, "source").iter().all(|s| s == parent), "{t}");
    }
}

#[tokio::test]
async fn a_bad_date_is_a_client_error() {
    let (status, t) = ask(format!(
        "{MAP}?system={}&code=A81001&date=2005-13-01",
        enc(ODS)
    ))
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{t}");
    assert_eq!(outcome(&t).0, "invalid", "{t}");
}

#[tokio::test]
async fn a_membership_looks_up_with_its_practice_parent_and_dates() {
    let ended = rows().iter().find(|r| !r.left.is_empty()).expect("ended");
    let open = rows().iter().find(|r| r.left.is_empty()).expect("open");
    for (row, inactive) in [(ended, "true"), (open, "false")] {
        let (status, p) = ask(format!(
            "/fhir/CodeSystem/$lookup?system={}&code={}",
            enc(MEMBERSHIPS),
            row.code()
        ))
        .await;
        assert_eq!(status, StatusCode::OK, "{p}");
        let props = properties(&p);
        let text = |code: &str| -> Option<String> {
            props
                .iter()
                .find(|(c, _)| c == code)
                .map(|(_, v)| v.as_str().map(str::to_string).unwrap_or(v.to_string()))
        };
        assert_eq!(text("practice").as_deref(), Some(row.practice.as_str()));
        assert_eq!(
            text("parentOrganisation").as_deref(),
            Some(row.parent.as_str())
        );
        assert_eq!(text("joined").as_deref(), Some(row.joined.as_str()));
        assert_eq!(
            text("left"),
            (!row.left.is_empty()).then(|| row.left.clone())
        );
        assert_eq!(text("inactive").as_deref(), Some(inactive));
    }
}

#[tokio::test]
async fn validate_code_checks_the_membership_held_on_the_date() {
    let url = |r: &Row| {
        format!(
            "/fhir/CodeSystem/$validate-code?url={}&code={}",
            enc(MEMBERSHIPS),
            r.code()
        )
    };
    let open = rows().iter().find(|r| r.left.is_empty()).expect("open");
    let (_, v) = ask(format!("{}&date={RELEASE}", url(open))).await;
    assert_eq!(param(&v, "result"), Some(&json!(true)), "{v}");
    // The release holds a membership that has ended, but it did not hold on the release date.
    let ended = rows().iter().find(|r| !r.left.is_empty()).expect("ended");
    let (_, v) = ask(url(ended)).await;
    assert_eq!(param(&v, "result"), Some(&json!(true)), "{v}");
    let (status, v) = ask(format!("{}&date={RELEASE}", url(ended))).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(param(&v, "result"), Some(&json!(false)), "{v}");
    assert!(
        v.to_string()
            .contains(&format!("it ended on {}", ended.left)),
        "{v}"
    );
    // `$validate-code` answers from the release in force on the date, as everywhere but
    // `$translate`: before the first release there is none.
    let (status, v) = ask(format!("{}&date={}", url(ended), ended.joined)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    let (_, v) = ask(format!(
        "/fhir/CodeSystem/$validate-code?url={}&code=A81001-00K-20130402",
        enc(MEMBERSHIPS)
    ))
    .await;
    assert_eq!(param(&v, "result"), Some(&json!(false)), "{v}");
}

#[tokio::test]
async fn current_memberships_and_a_practice_filter_expand_as_the_file_says() {
    let current = rows()
        .iter()
        .filter(|r| r.left.is_empty() || r.left.as_str() > RELEASE)
        .count();
    let (status, e) = ask(
        "/fhir/ValueSet/$expand?url=https://fhir-registers.org/fhir/ValueSet/ods-gp-practice-memberships-current&count=0"
            .into(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{e}");
    assert_eq!(e["expansion"]["total"], json!(current));
    // An inline ValueSet over one practice's memberships.
    let practice = sample_practices()[0];
    let vs = json!({
        "resourceType": "ValueSet",
        "status": "active",
        "compose": { "include": [{
            "system": MEMBERSHIPS,
            "filter": [{ "property": "practice", "op": "=", "value": practice }]
        }]}
    });
    let r = send_to(
        state(),
        Request::post("/fhir/ValueSet/$expand")
            .header("content-type", "application/fhir+json")
            .body(Body::from(
                json!({
                    "resourceType": "Parameters",
                    "parameter": [{ "name": "valueSet", "resource": vs }]
                })
                .to_string(),
            ))
            .expect("req"),
    )
    .await;
    let e = r.json();
    assert_eq!(r.status, StatusCode::OK, "{e}");
    let mut expected: Vec<String> = rows()
        .iter()
        .filter(|r| r.practice == practice)
        .map(Row::code)
        .collect();
    expected.sort();
    let mut got = codes(&e);
    got.sort();
    assert_eq!(got, expected);
}
