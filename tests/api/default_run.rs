//! What a newcomer gets from the default run: the shipped registers imported from
//! `mappings/data` (exactly as `serve` does on first start) answer the README's examples.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use fhir_registers::{AppState, registers};
use serde_json::json;

use super::support::*;

#[tokio::test]
async fn shipped_registers_import_once_and_answer() {
    let dir = tempfile::tempdir().expect("dir");
    let set = shipped();
    let first = registers::import_defaults(&set, dir.path(), &mut |_, _, _| {})
        .await
        .expect("imports");
    assert_eq!(
        first.len(),
        set.mappings
            .iter()
            .map(|m| m.default_releases().len())
            .sum::<usize>()
    );
    let epraccur = first
        .iter()
        .find(|i| i.info.feed == "ods-epraccur" && i.info.version == "2020-01-01")
        .expect("epraccur");
    assert_eq!(
        epraccur.info.concepts, 14_357,
        "every row of epraccur 2020-01 (SOURCES.md)"
    );
    let again = registers::import_defaults(&set, dir.path(), &mut |_, _, _| {})
        .await
        .expect("no-op");
    assert!(again.is_empty(), "a second start re-imports nothing");

    let registry = registers::build_registry(
        &set,
        dir.path(),
        &registers::load_resources(&repo().join("mappings")).expect("resources"),
    )
    .expect("registry");
    let state = Arc::new(AppState::new(registry));
    let ask = |uri: String| Request::get(uri).body(Body::empty()).expect("req");
    let ods = enc("https://fhir.nhs.uk/Id/ods-organization-code");

    let a81001 = send_to(
        state.clone(),
        ask(format!("/fhir/CodeSystem/$lookup?system={ods}&code=A81001")),
    )
    .await
    .json();
    assert_eq!(
        param(&a81001, "display"),
        Some(&json!("THE DENSHAM SURGERY"))
    );
    let a81003 = send_to(
        state.clone(),
        ask(format!(
            "/fhir/CodeSystem/$lookup?system={ods}&code=A81003&property=inactive&property=opEndDate"
        )),
    )
    .await
    .json();
    let props = properties(&a81003);
    assert!(props.contains(&("inactive".into(), json!(true))));
    assert!(props.contains(&("opEndDate".into(), json!("2017-10-31"))));

    let j459 = send_to(
        state.clone(),
        ask(format!(
            "/fhir/CodeSystem/$lookup?system={}&code=J45.9",
            enc("http://hl7.org/fhir/sid/icd-10")
        )),
    )
    .await
    .json();
    assert_eq!(param(&j459, "display"), Some(&json!("Asthma, unspecified")));
    assert!(properties(&j459).contains(&("parent".into(), json!("J45"))));

    // OPCS-4 as HES used it in 2023-24 (the latest of its twelve financial-year releases).
    let k401 = send_to(
        state.clone(),
        ask(format!(
            "/fhir/CodeSystem/$lookup?system={}&code=K40.1",
            enc("http://fhir.hl7.org.uk/CodeSystem/OPCS-4")
        )),
    )
    .await
    .json();
    let k401_title = data_text("mappings/data/opcs4/opcs4_hes_2023-04_to_2024-03.csv.gz")
        .lines()
        .find_map(|l| l.strip_prefix("K40.1,"))
        .and_then(|rest| rest.split(',').next())
        .map(str::to_string)
        .expect("K40.1 in the 2023-24 file");
    assert_eq!(param(&k401, "display"), Some(&json!(k401_title)));
    assert_eq!(param(&k401, "version"), Some(&json!("2023-04-01")));
    assert!(properties(&k401).contains(&("parent".into(), json!("K40"))));

    let densham = send_to(
        state.clone(),
        ask(format!(
            "/fhir/ValueSet/$expand?url={}&filter=densham",
            enc("https://fhir-registers.org/fhir/ValueSet/ods-gp-practices")
        )),
    )
    .await
    .json();
    let found = codes(&densham);
    assert!(found.contains(&"A81001".to_string()), "{found:?}");
    assert_eq!(densham["expansion"]["total"], found.len());

    let bad = send_to(
        state.clone(),
        ask(format!(
            "/fhir/CodeSystem/$validate-code?url={ods}&code=MADEUP1"
        )),
    )
    .await
    .json();
    assert_eq!(param(&bad, "result"), Some(&json!(false)));
    assert!(param(&bad, "message").is_some());

    // GP practices as of mid-2020 (epraccur 2020-01: prescribing setting 4) and today (the
    // 2026-02 release in the new layout: role code RO76 in field 26), counted from the files.
    let all_gp = send_to(
        state.clone(),
        ask(format!(
            "/fhir/ValueSet/$expand?url={}&count=0&date=2020-06-30",
            enc("https://fhir-registers.org/fhir/ValueSet/ods-gp-practices")
        )),
    )
    .await;
    assert_eq!(all_gp.status, StatusCode::OK);
    let gp_rows = gz_rows("mappings/data/ods/epraccur_2020-01.csv.gz")
        .iter()
        .filter(|r| &r[25] == "4")
        .count();
    assert_eq!(all_gp.json()["expansion"]["total"], gp_rows);
    let gp_now = send_to(
        state.clone(),
        ask(format!(
            "/fhir/ValueSet/$expand?url={}&count=0",
            enc("https://fhir-registers.org/fhir/ValueSet/ods-gp-practices")
        )),
    )
    .await
    .json();
    let gp_rows_now = gz_rows("mappings/data/ods/epraccur_2026-02_dse-format.csv.gz")
        .iter()
        .filter(|r| r[25].split('|').any(|x| x == "RO76"))
        .count();
    assert_eq!(gp_now["expansion"]["total"], gp_rows_now);
    assert!(gp_rows_now > 8000, "{gp_rows_now}");

    let postcode = send_to(
        state,
        ask(format!(
            "/fhir/CodeSystem/$lookup?system={}&code=TS181HU",
            enc("https://digital.nhs.uk/services/organisation-data-service/CodeSystem/postcode")
        )),
    )
    .await
    .json();
    assert_eq!(param(&postcode, "display"), Some(&json!("TS18 1HU")));
}

#[tokio::test]
async fn a_changed_mapping_re_imports_its_default_release() {
    let dir = tempfile::tempdir().expect("dir");
    let mut set = shipped();
    set.mappings.retain(|m| m.feed() == "ods-roles");
    let first = registers::import_defaults(&set, dir.path(), &mut |_, _, _| {})
        .await
        .expect("imports");
    assert_eq!(first.len(), 1);
    set.mappings[0].hash = "changed".into();
    let second = registers::import_defaults(&set, dir.path(), &mut |_, _, _| {})
        .await
        .expect("re-imports");
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].info.mapping_hash, "changed");
    assert!(second[0].replaced);
}
