//! ICD-10 as used in HES Admitted Patient Care: one ValueSet per financial year over the WHO
//! ICD-10 CodeSystem (`mappings/icd10-hes/`). Membership is checked against the HES usage file
//! itself (in `../shared/data`), converted from the ALT_CODE form as the ConceptMap does.

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use fhir_registers::{AppState, registers};
use serde_json::{Value as Json, json};

use super::support::*;

const ICD: &str = "http://hl7.org/fhir/sid/icd-10";

fn hes_file() -> std::path::PathBuf {
    repo().join("../shared/data/icd10/nhs_hes_icd10_code_usage_2012-2024.csv.gz")
}

fn state() -> Arc<AppState> {
    static STATE: OnceLock<Arc<AppState>> = OnceLock::new();
    STATE
        .get_or_init(|| {
            let resources = registers::load_resources(&repo().join("mappings")).expect("resources");
            one_register_state(
                "icd10-who",
                "mappings/data/icd10/who_icd10_2019_flat.csv",
                "2019",
                &resources,
            )
        })
        .clone()
}

/// The WHO codes HES used in the financial year starting `start`, from the usage file.
fn used_in(start: &str) -> BTreeSet<String> {
    let who: BTreeSet<String> =
        csv::Reader::from_path(repo().join("mappings/data/icd10/who_icd10_2019_flat.csv"))
            .expect("who")
            .records()
            .map(|r| r.expect("row")[0].to_string())
            .collect();
    let file = std::fs::File::open(hes_file()).expect("hes");
    csv::Reader::from_reader(flate2::read::MultiGzDecoder::new(file))
        .records()
        .map(|r| r.expect("row"))
        .filter(|r| &r[0] == start)
        .map(|r| {
            let alt = r[2].trim().to_uppercase();
            match (alt.len(), alt.ends_with('X')) {
                (4, true) => alt[..3].to_string(),
                (4, false) => format!("{}.{}", &alt[..3], &alt[3..]),
                _ => alt,
            }
        })
        .filter(|c| who.contains(c))
        .collect()
}

async fn ask(uri: String) -> Json {
    let r = send_to(state(), Request::get(uri).body(Body::empty()).expect("req")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    r.json()
}

#[tokio::test]
async fn each_financial_year_holds_the_codes_hes_used_that_year() {
    if !hes_file().exists() {
        eprintln!("skipped: ../shared/data is missing");
        return;
    }
    let mut seen = Vec::new();
    for (fy, start) in [("2012-13", "2012-04-01"), ("2023-24", "2023-04-01")] {
        let expected = used_in(start);
        let e = ask(format!(
            "/fhir/ValueSet/icd-10-hes-apc-{fy}/$expand?count=0"
        ))
        .await;
        assert_eq!(e["expansion"]["total"], json!(expected.len()), "{fy}");
        seen.push(expected);
    }
    // A code HES started using after 2012-13 is in the later year's ValueSet only.
    let newer = seen[1]
        .difference(&seen[0])
        .next()
        .expect("a code new since 2012")
        .clone();
    let older = seen[0]
        .difference(&seen[1])
        .next()
        .expect("a code dropped since 2012")
        .clone();
    for (fy, code, member) in [
        ("2023-24", &newer, true),
        ("2012-13", &newer, false),
        ("2012-13", &older, true),
        ("2023-24", &older, false),
    ] {
        let v = ask(format!(
            "/fhir/ValueSet/$validate-code?url={}&system={}&code={}",
            enc(&format!(
                "https://fhir-registers.org/fhir/ValueSet/icd-10-hes-apc-{fy}"
            )),
            enc(ICD),
            enc(code)
        ))
        .await;
        assert_eq!(param(&v, "result"), Some(&json!(member)), "{code} in {fy}");
    }
    let j459 =
        ask("/fhir/ValueSet/icd-10-hes-apc-2023-24/$expand?filter=asthma&count=50".to_string())
            .await;
    assert!(codes(&j459).contains(&"J45.9".to_string()), "{j459}");
}
