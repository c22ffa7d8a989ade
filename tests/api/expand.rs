//! `ValueSet/$expand`: shipped ValueSets, inline compose rules, text filter, paging, limits.
//! Expected counts are computed from the fixture files directly, not copied from the server.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use fhir_registers::AppState;
use serde_json::{Value as Json, json};

use super::support::*;

const ICD10: &str = "http://hl7.org/fhir/sid/icd-10";
const VS: &str = "https://fhir-registers.org/fhir/ValueSet/";

fn icd_rows() -> Vec<(String, String, String)> {
    let mut r = csv::Reader::from_path(fixture("icd10/who_icd10_2019_slice.csv")).expect("fixture");
    r.records()
        .map(|x| {
            let x = x.expect("row");
            (x[0].to_string(), x[1].to_string(), x[3].to_string())
        })
        .collect()
}

/// Codes of the fixture under `root` (inclusive), walking the parent column.
fn icd_is_a(root: &str) -> HashSet<String> {
    let parent: HashMap<String, String> = icd_rows().into_iter().map(|(c, _, p)| (c, p)).collect();
    parent
        .keys()
        .filter(|c| {
            let mut cur = Some(c.as_str());
            while let Some(x) = cur {
                if x == root {
                    return true;
                }
                cur = parent.get(x).map(String::as_str).filter(|p| !p.is_empty());
            }
            false
        })
        .cloned()
        .collect()
}

async fn expand_inline(compose: Json, extra: &[Json]) -> Json {
    let mut params = vec![
        json!({"name": "valueSet", "resource": {"resourceType": "ValueSet", "status": "active", "compose": compose}}),
    ];
    params.extend_from_slice(extra);
    let r = post(
        "/fhir/ValueSet/$expand",
        &json!({"resourceType": "Parameters", "parameter": params}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    r.json()
}

#[tokio::test]
async fn gp_practices_filtered_by_name_find_densham_with_a_true_total() {
    let vs = get(&format!(
        "/fhir/ValueSet/$expand?url={}&filter=densham",
        enc(&format!("{VS}ods-gp-practices"))
    ))
    .await
    .json();
    assert_eq!(codes(&vs), vec!["A81001"]);
    assert_eq!(vs["expansion"]["total"], 1);
    assert_eq!(
        vs["expansion"]["contains"][0]["display"],
        "THE DENSHAM SURGERY"
    );
    let params: Vec<_> = vs["expansion"]["parameter"]
        .as_array()
        .expect("parameters")
        .iter()
        .map(|p| p["name"].as_str().unwrap_or(""))
        .collect();
    assert!(
        params.contains(&"filter") && params.contains(&"used-codesystem"),
        "{params:?}"
    );
}

#[tokio::test]
async fn shipped_ods_value_sets_match_counts_taken_from_the_file() {
    let rows = ods_rows("ods/epraccur_2020-01_slice.csv");
    let gp = rows.iter().filter(|r| r[25] == "4").count();
    let active_gp = rows.iter().filter(|r| r[25] == "4" && r[12] == "A").count();
    let of_00k = rows.iter().filter(|r| r[14] == "00K").count();
    for (id, expected) in [
        ("ods-gp-practices", gp),
        ("ods-active-gp-practices", active_gp),
        ("ods-gp-practices-00k", of_00k),
    ] {
        let vs = get(&format!(
            "/fhir/ValueSet/$expand?url={}&count=1000",
            enc(&format!("{VS}{id}"))
        ))
        .await
        .json();
        assert_eq!(vs["expansion"]["total"], expected, "{id}");
        assert_eq!(codes(&vs).len(), expected, "{id}");
    }
    assert!(gp > active_gp && active_gp > 0);
}

#[tokio::test]
async fn inline_is_a_filter_expands_the_asthma_and_copd_block() {
    let vs = expand_inline(json!({"include": [{"system": ICD10, "filter": [{"property": "concept", "op": "is-a", "value": "J40-J47"}]}]}), &[]).await;
    let got: HashSet<String> = codes(&vs).into_iter().collect();
    let want = icd_is_a("J40-J47");
    assert_eq!(got, want);
    assert!(got.contains("J45.9") && got.contains("J44.1") && got.contains("J40-J47"));
    assert_eq!(vs["expansion"]["total"], want.len());
}

#[tokio::test]
async fn hierarchy_operators_differ_as_the_spec_says() {
    let f = |op: &str, v: &str| json!({"include": [{"system": ICD10, "filter": [{"property": "concept", "op": op, "value": v}]}]});
    let desc: HashSet<String> = codes(&expand_inline(f("descendent-of", "J45"), &[]).await)
        .into_iter()
        .collect();
    assert_eq!(
        desc,
        ["J45.0", "J45.1", "J45.8", "J45.9"]
            .map(String::from)
            .into_iter()
            .collect()
    );
    let child = codes(&expand_inline(f("child-of", "J40-J47"), &[]).await);
    assert_eq!(child.len(), 8, "J40 … J47: {child:?}");
    let not_a = codes(&expand_inline(f("is-not-a", "X"), &[]).await);
    assert!(
        not_a.iter().all(|c| c.starts_with('A') || c == "I"),
        "{not_a:?}"
    );
    let generalized = codes(&expand_inline(f("generalizes", "J45.9"), &[]).await);
    let generalized: HashSet<_> = generalized.into_iter().collect();
    assert_eq!(
        generalized,
        ["J45.9", "J45", "J40-J47", "X"]
            .map(String::from)
            .into_iter()
            .collect()
    );
}

#[tokio::test]
async fn property_filters_regex_in_exists_and_excludes() {
    let kinds = expand_inline(json!({"include": [{"system": ICD10, "filter": [{"property": "kind", "op": "in", "value": "chapter,block"}]}]}), &[]).await;
    let expected_blocks = icd_rows()
        .iter()
        .filter(|(c, _, p)| p.is_empty() || c.contains('-'))
        .count();
    assert_eq!(codes(&kinds).len(), expected_blocks);
    let regex = expand_inline(json!({"include": [{"system": ICD10, "filter": [{"property": "code", "op": "regex", "value": "J45\\.[0-9]"}]}]}), &[]).await;
    assert_eq!(codes(&regex).len(), 4);
    let exclude = expand_inline(
        json!({"include": [{"system": ICD10, "filter": [{"property": "concept", "op": "is-a", "value": "J45"}]}],
               "exclude": [{"system": ICD10, "concept": [{"code": "J45.9"}]}]}),
        &[],
    )
    .await;
    let got: HashSet<String> = codes(&exclude).into_iter().collect();
    assert_eq!(
        got,
        ["J45", "J45.0", "J45.1", "J45.8"]
            .map(String::from)
            .into_iter()
            .collect()
    );
    let listed = expand_inline(json!({"include": [{"system": ICD10, "concept": [{"code": "J45.9", "display": "Asthma NOS"}, {"code": "A00"}]}]}), &[]).await;
    assert_eq!(codes(&listed), vec!["J45.9", "A00"], "listed order is kept");
    assert_eq!(listed["expansion"]["contains"][0]["display"], "Asthma NOS");
    let imported = expand_inline(
        json!({"include": [{"valueSet": [format!("{VS}icd-10-chapter-x")], "system": ICD10, "filter": [{"property": "concept", "op": "is-a", "value": "J45"}]}]}),
        &[],
    )
    .await;
    assert_eq!(codes(&imported).len(), 5);
}

#[tokio::test]
async fn paging_walks_the_whole_expansion_without_gaps() {
    let url = enc(&format!("{VS}icd-10-chapter-x"));
    let all = get(&format!("/fhir/ValueSet/$expand?url={url}"))
        .await
        .json();
    let total = all["expansion"]["total"].as_u64().expect("total") as usize;
    assert_eq!(total, icd_is_a("X").len());
    let mut paged = Vec::new();
    let mut offset = 0;
    while offset < total {
        let page = get(&format!(
            "/fhir/ValueSet/$expand?url={url}&offset={offset}&count=40"
        ))
        .await
        .json();
        assert_eq!(page["expansion"]["total"], total);
        assert_eq!(
            page["expansion"]["offset"].as_u64().unwrap_or(0) as usize,
            offset,
            "offset is given when not 0"
        );
        let c = codes(&page);
        assert!(c.len() <= 40 && !c.is_empty());
        paged.extend(c);
        offset += 40;
    }
    assert_eq!(paged, codes(&all));
    let beyond = get(&format!(
        "/fhir/ValueSet/$expand?url={url}&offset={}&count=10",
        total + 5
    ))
    .await
    .json();
    assert!(codes(&beyond).is_empty());
}

#[tokio::test]
async fn active_only_and_multi_word_filters() {
    let url = enc(&format!("{VS}ods-gp-practices-00k"));
    let all = get(&format!("/fhir/ValueSet/$expand?url={url}&count=500"))
        .await
        .json();
    let active = get(&format!(
        "/fhir/ValueSet/$expand?url={url}&count=500&activeOnly=true"
    ))
    .await
    .json();
    let inactive_rows = ods_rows("ods/epraccur_2020-01_slice.csv")
        .iter()
        .filter(|r| r[14] == "00K" && r[12] == "C")
        .count();
    assert_eq!(
        all["expansion"]["total"].as_u64().expect("n")
            - active["expansion"]["total"].as_u64().expect("n"),
        inactive_rows as u64
    );
    assert!(
        all["expansion"]["contains"]
            .as_array()
            .expect("c")
            .iter()
            .any(|c| c["inactive"] == true)
    );
    let two_words = get(&format!(
        "/fhir/ValueSet/$expand?url={}&filter={}",
        enc(&format!("{VS}icd-10-chapter-x")),
        enc("asth unspec")
    ))
    .await
    .json();
    assert_eq!(codes(&two_words), vec!["J45.9"]);
    let by_code = get(&format!(
        "/fhir/ValueSet/$expand?url={}&filter=J45",
        enc(&format!("{VS}icd-10-chapter-x"))
    ))
    .await
    .json();
    assert_eq!(by_code["expansion"]["total"], 5);
}

#[tokio::test]
async fn designations_and_properties_are_added_on_request() {
    let vs = get(&format!(
        "/fhir/ValueSet/$expand?url={}&filter=densham&property=postcode&property=status",
        enc(&format!("{VS}ods-gp-practices"))
    ))
    .await
    .json();
    let ext = vs["expansion"]["contains"][0]["extension"]
        .as_array()
        .expect("property extensions");
    let values: Vec<&Json> = ext.iter().map(|e| &e["extension"][1]).collect();
    assert!(
        values.iter().any(|v| v["valueString"] == "TS18 1HU"),
        "{values:?}"
    );
    assert!(
        values.iter().any(|v| v["valueCode"] == "active"),
        "{values:?}"
    );
}

#[tokio::test]
async fn too_large_expansions_without_count_are_too_costly() {
    let dir = tempfile::tempdir().expect("dir").keep();
    let set = shipped();
    import_fixtures(&set, &dir);
    let mut small = AppState::new(
        fhir_registers::registers::build_registry(&set, &dir, &[]).expect("registry"),
    );
    small.limits.max_unpaged = 10;
    small.limits.max_count = 100;
    let state = Arc::new(small);
    let url = enc(&format!("{VS}icd-10-chapter-x"));
    let req = |q: String| {
        Request::get(format!("/fhir/ValueSet/$expand?url={url}{q}"))
            .body(Body::empty())
            .expect("req")
    };
    let r = send_to(state.clone(), req(String::new())).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(outcome(&r.json()).0, "too-costly");
    let r = send_to(state.clone(), req("&offset=1".into())).await;
    assert_eq!(
        r.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "an offset alone does not get round the limit"
    );
    let r = send_to(state.clone(), req("&count=5".into())).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = send_to(state, req("&count=500".into())).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn instance_expand_and_unknown_value_sets() {
    let vs = get("/fhir/ValueSet/icd-10-chapter-x/$expand?filter=asthma")
        .await
        .json();
    assert!(codes(&vs).contains(&"J45".to_string()));
    let r = get("/fhir/ValueSet/$expand?url=http://example.org/ValueSet/nope").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = get("/fhir/ValueSet/nope/$expand").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = expand_unknown_system().await;
    assert_eq!(r, StatusCode::NOT_FOUND);
}

async fn expand_unknown_system() -> StatusCode {
    post(
        "/fhir/ValueSet/$expand",
        &json!({"resourceType": "Parameters", "parameter": [{"name": "valueSet", "resource": {"resourceType": "ValueSet", "compose": {"include": [{"system": "http://example.org/none"}]}}}]}),
    )
    .await
    .status
}

#[tokio::test]
async fn a_whole_code_system_is_paged_directly_with_the_same_pages_as_a_full_expansion() {
    // `postcodes-all` includes the whole postcode CodeSystem: paged without walking to the page.
    // With `activeOnly` (every postcode is active) the same ValueSet takes the general path.
    let page = |offset: usize, extra: &str| {
        format!("/fhir/ValueSet/postcodes-all/$expand?count=20&offset={offset}{extra}")
    };
    let all = get("/fhir/ValueSet/postcodes-all/$expand?count=0")
        .await
        .json();
    let total = all["expansion"]["total"].as_u64().expect("total") as usize;
    assert!(total > 100, "{total}");
    for offset in [0, 20, 100, total - 7, total + 5] {
        let direct = get(&page(offset, "")).await.json();
        let general = get(&page(offset, "&activeOnly=true")).await.json();
        assert_eq!(direct["expansion"]["total"], general["expansion"]["total"]);
        assert_eq!(codes(&direct), codes(&general), "offset {offset}");
        assert_eq!(
            codes(&direct).len(),
            total.saturating_sub(offset).min(20),
            "offset {offset}"
        );
    }
}

/// Expands an inline compose against a given server state.
async fn expand_inline_on(state: Arc<AppState>, compose: Json) -> Json {
    let body = json!({"resourceType": "Parameters", "parameter": [
        {"name": "valueSet", "resource": {"resourceType": "ValueSet", "status": "active", "compose": compose}},
        {"name": "count", "valueInteger": 1000}
    ]});
    let req = Request::post("/fhir/ValueSet/$expand")
        .header("content-type", "application/fhir+json")
        .body(Body::from(body.to_string()))
        .expect("request");
    let r = send_to(state, req).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    r.json()
}

#[tokio::test]
async fn property_filters_find_exactly_the_rows_with_those_area_codes() {
    const POSTCODE: &str =
        "https://digital.nhs.uk/services/organisation-data-service/CodeSystem/postcode";
    // Postcode (no spaces) → ward, district, from the fixture itself.
    let rows: Vec<(String, String, String)> =
        gz_rows("tests/fixtures/postcodes/codepoint_TS18_slice.csv.gz")
            .iter()
            .filter(|r| &r[0] != "Postcode")
            .map(|r| (r[0].replace(' ', ""), r[9].to_string(), r[8].to_string()))
            .collect();
    let mut wards: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
    wards.sort_unstable();
    wards.dedup();
    assert!(wards.len() >= 3, "the slice spans several wards");
    let (w1, w2) = (wards[0], wards[wards.len() - 1]);
    let want_in: HashSet<String> = rows
        .iter()
        .filter(|r| r.1 == w1 || r.1 == w2)
        .map(|r| r.0.clone())
        .collect();
    let want_both: HashSet<String> = rows
        .iter()
        .filter(|r| r.1 == w1 && r.2 == "E06000004")
        .map(|r| r.0.clone())
        .collect();
    // Decoded records (the small fixture state) and records read in place (the history state).
    for state in [state(), history_state()] {
        let vs = expand_inline_on(
            state.clone(),
            json!({"include": [{"system": POSTCODE, "filter": [
                {"property": "EW", "op": "in", "value": format!("{w1},{w2}")}
            ]}]}),
        )
        .await;
        let got: HashSet<String> = codes(&vs).into_iter().collect();
        assert_eq!(got, want_in);
        assert_eq!(vs["expansion"]["total"], json!(want_in.len()));
        let vs = expand_inline_on(
            state,
            json!({"include": [{"system": POSTCODE, "filter": [
                {"property": "EW", "op": "=", "value": w1},
                {"property": "adminDistrict", "op": "=", "value": "E06000004"}
            ]}]}),
        )
        .await;
        let got: HashSet<String> = codes(&vs).into_iter().collect();
        assert_eq!(got, want_both);
        assert!(!want_both.is_empty());
    }
}
