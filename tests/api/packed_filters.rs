//! Property and hierarchy filters give the same expansion whether a release is decoded into
//! memory or read in place (packed), as `serve` reads large registers: `=`, `in`, `not-in`,
//! `exists` and `regex` on mapped properties and on the code, `notSelectable`, and `is-a`,
//! `descendent-of`, `child-of`, `is-not-a` and `generalizes` on the hierarchy, over the ODS,
//! postcode, ICD-10 and OPCS-4 fixtures. A few counts are checked against the fixture files too.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use fhir_registers::AppState;
use serde_json::{Value as Json, json};

use super::support::*;

const ODS: &str = "https://fhir.nhs.uk/Id/ods-organization-code";
const POSTCODE: &str =
    "https://digital.nhs.uk/services/organisation-data-service/CodeSystem/postcode";
const ICD10: &str = "http://hl7.org/fhir/sid/icd-10";
const OPCS4: &str = "http://fhir.hl7.org.uk/CodeSystem/OPCS-4";

/// `(system, property, op, value)`.
const FILTERS: &[(&str, &str, &str, &str)] = &[
    (ODS, "RE4", "=", "00K"),
    (ODS, "RE4", "in", "00K,00M"),
    (ODS, "RE4", "not-in", "00K,00D,00M"),
    (ODS, "opEndDate", "exists", "true"),
    (ODS, "opEndDate", "exists", "false"),
    (ODS, "postcode", "regex", "TS1[78] .*"),
    (ODS, "status", "=", "inactive"),
    (POSTCODE, "EW", "=", "E05001549"),
    (POSTCODE, "EW", "in", "E05001541,E05001544"),
    (POSTCODE, "EW", "regex", "E0500154[14]"),
    (POSTCODE, "code", "regex", "TS181A.*"),
    (POSTCODE, "adminCounty", "exists", "false"),
    (POSTCODE, "EW", "exists", "true"),
    (ICD10, "kind", "=", "category"),
    (ICD10, "kind", "in", "chapter,block"),
    (ICD10, "notSelectable", "=", "true"),
    (ICD10, "concept", "is-a", "I"),
    (ICD10, "concept", "descendent-of", "A00-A09"),
    (ICD10, "concept", "child-of", "A00"),
    (ICD10, "concept", "is-a", "J45"),
    (ICD10, "concept", "descendent-of", "J40-J47"),
    (ICD10, "concept", "child-of", "X"),
    (ICD10, "concept", "is-not-a", "X"),
    (ICD10, "concept", "generalizes", "J45.9"),
    (OPCS4, "concept", "is-a", "A01"),
    (OPCS4, "concept", "child-of", "A"),
];

async fn expand_in(state: Arc<AppState>, system: &str, filter: Json) -> Vec<String> {
    let vs = json!({
        "resourceType": "ValueSet",
        "status": "active",
        "compose": { "include": [{ "system": system, "filter": [filter] }] }
    });
    let body = json!({
        "resourceType": "Parameters",
        "parameter": [
            { "name": "valueSet", "resource": vs },
            { "name": "count", "valueInteger": 10000 }
        ]
    });
    let r = send_to(
        state,
        Request::post("/fhir/ValueSet/$expand")
            .header("content-type", "application/fhir+json")
            .body(Body::from(body.to_string()))
            .expect("request"),
    )
    .await;
    let e = r.json();
    assert_eq!(r.status, StatusCode::OK, "{filter}: {e}");
    let mut out = codes(&e);
    assert_eq!(
        e["expansion"]["total"].as_u64(),
        Some(out.len() as u64),
        "{filter}: the whole expansion in one page"
    );
    out.sort();
    out
}

#[tokio::test]
async fn every_filter_expands_the_same_packed_and_decoded() {
    for (system, property, op, value) in FILTERS {
        let filter = json!({ "property": property, "op": op, "value": value });
        let decoded = expand_in(state(), system, filter.clone()).await;
        let packed = expand_in(packed_state(), system, filter.clone()).await;
        assert!(!decoded.is_empty(), "{system} {filter}: nothing matched");
        assert_eq!(packed, decoded, "{system} {filter}");
    }
}

#[tokio::test]
async fn filter_counts_agree_with_the_fixture_files() {
    // Postcodes by ward (column 10), and by code pattern.
    let rows = gz_rows("tests/fixtures/postcodes/codepoint_TS18_slice.csv.gz");
    let in_ward = |w: &str| rows.iter().filter(|r| &r[9] == w).count();
    let got = expand_in(
        packed_state(),
        POSTCODE,
        json!({"property": "EW", "op": "=", "value": "E05001549"}),
    )
    .await;
    assert_eq!(got.len(), in_ward("E05001549"));
    let got = expand_in(
        packed_state(),
        POSTCODE,
        json!({"property": "EW", "op": "in", "value": "E05001541,E05001544"}),
    )
    .await;
    assert_eq!(got.len(), in_ward("E05001541") + in_ward("E05001544"));
    let got = expand_in(
        packed_state(),
        POSTCODE,
        json!({"property": "code", "op": "regex", "value": "TS181A.*"}),
    )
    .await;
    assert_eq!(
        got.len(),
        rows.iter().filter(|r| r[0].starts_with("TS181A")).count()
    );
    let got = expand_in(
        packed_state(),
        POSTCODE,
        json!({"property": "EW", "op": "regex", "value": "E0500154[14]"}),
    )
    .await;
    assert_eq!(got.len(), in_ward("E05001541") + in_ward("E05001544"));
    // ODS organisations with a close date (field 12), over the three ODS fixtures.
    let closed: usize = [
        "ods/epraccur_2020-01_slice.csv",
        "ods/etr_2020-10_slice.csv",
        "ods/eccg_2024-07_slice.csv",
    ]
    .iter()
    .map(|f| {
        ods_rows(f)
            .iter()
            .filter(|r| !r[11].trim().is_empty())
            .count()
    })
    .sum();
    let got = expand_in(
        packed_state(),
        ODS,
        json!({"property": "opEndDate", "op": "exists", "value": "true"}),
    )
    .await;
    assert_eq!(got.len(), closed);
    // ICD-10: J45 and its subcategories; the children of chapter X are its blocks.
    let icd = data_text("tests/fixtures/icd10/who_icd10_2019_slice.csv");
    let with = |pred: &dyn Fn(&[&str]) -> bool| {
        let mut v: Vec<String> = icd
            .lines()
            .skip(1)
            .map(|l| l.split(',').collect::<Vec<_>>())
            .filter(|f| pred(f))
            .map(|f| f[0].to_string())
            .collect();
        v.sort();
        v
    };
    let got = expand_in(
        packed_state(),
        ICD10,
        json!({"property": "concept", "op": "is-a", "value": "J45"}),
    )
    .await;
    assert_eq!(got, with(&|f| f[0] == "J45" || f[0].starts_with("J45.")));
    let got = expand_in(
        packed_state(),
        ICD10,
        json!({"property": "concept", "op": "child-of", "value": "X"}),
    )
    .await;
    assert_eq!(
        got,
        with(&|f| f.get(2) == Some(&"block") && f.get(3) == Some(&"X"))
    );
}
