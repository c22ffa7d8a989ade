//! The ONS postcode directory (NSPL, November 2021; the shipped HG and ZE slice): postcodes with
//! their introduction and termination as validity, health geographies as properties, and
//! ConceptMaps to LSOA, CCG and ICB footprint. Expected values are read from the shipped file.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use fhir_registers::AppState;
use serde_json::{Value as Json, json};

use super::support::*;

const NSPL: &str = "https://fhir-registers.org/fhir/CodeSystem/ons-nspl";
const FILE: &str = "mappings/data/postcodes/nspl_nov_2021_HG_ZE.csv.gz";

/// The shipped slice's rows, by column name.
fn rows() -> &'static Vec<HashMap<String, String>> {
    static ROWS: OnceLock<Vec<HashMap<String, String>>> = OnceLock::new();
    ROWS.get_or_init(|| {
        let file = std::fs::File::open(repo().join(FILE)).expect("file");
        let mut csv = csv::Reader::from_reader(flate2::read::MultiGzDecoder::new(file));
        let headers = csv.headers().expect("header").clone();
        csv.records()
            .map(|r| {
                let r = r.expect("row");
                headers
                    .iter()
                    .zip(r.iter())
                    .map(|(h, v)| (h.to_string(), v.to_string()))
                    .collect()
            })
            .collect()
    })
}

fn state() -> Arc<AppState> {
    static STATE: OnceLock<Arc<AppState>> = OnceLock::new();
    STATE
        .get_or_init(|| one_register_state("ons-nspl", FILE, "2021-11-01", &[]))
        .clone()
}

async fn ask(uri: String) -> (StatusCode, Json) {
    let r = send_to(state(), Request::get(uri).body(Body::empty()).expect("req")).await;
    (r.status, r.json())
}

fn property_text(params: &Json, code: &str) -> Option<String> {
    properties(params)
        .into_iter()
        .find(|(c, _)| c == code)
        .map(|(_, v)| {
            v.as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string())
        })
}

#[tokio::test]
async fn a_live_postcode_looks_up_with_its_geographies_from_the_file() {
    let row = rows()
        .iter()
        .find(|r| r["doterm"].is_empty() && r["lsoa11"].starts_with("E01"))
        .expect("a live English postcode");
    let code = row["pcd"].replace(' ', "");
    let (status, p) = ask(format!(
        "/fhir/CodeSystem/$lookup?system={}&code={code}",
        enc(NSPL)
    ))
    .await;
    assert_eq!(status, StatusCode::OK, "{p}");
    assert_eq!(param(&p, "display"), Some(&json!(row["pcds"])));
    for (prop, column) in [
        ("lsoa11", "lsoa11"),
        ("ccg", "ccg"),
        ("stp", "stp"),
        ("nhsRegion", "nhser"),
    ] {
        assert_eq!(
            property_text(&p, prop).as_deref(),
            Some(row[column].as_str()),
            "{prop}"
        );
    }
    assert_eq!(property_text(&p, "inactive").as_deref(), Some("false"));
}

#[tokio::test]
async fn a_terminated_postcode_is_inactive_and_pseudo_codes_are_left_out() {
    let row = rows()
        .iter()
        .find(|r| !r["doterm"].is_empty())
        .expect("a terminated postcode");
    let code = row["pcd"].replace(' ', "");
    let (_, p) = ask(format!(
        "/fhir/CodeSystem/$lookup?system={}&code={code}",
        enc(NSPL)
    ))
    .await;
    assert_eq!(property_text(&p, "inactive").as_deref(), Some("true"));
    let doterm = &row["doterm"];
    assert_eq!(
        property_text(&p, "terminated").as_deref(),
        Some(format!("{}-{}", &doterm[..4], &doterm[4..]).as_str())
    );
    let scottish = rows()
        .iter()
        .find(|r| r["nhser"] == "S99999999")
        .expect("a Scottish postcode");
    let (_, s) = ask(format!(
        "/fhir/CodeSystem/$lookup?system={}&code={}",
        enc(NSPL),
        scottish["pcd"].replace(' ', "")
    ))
    .await;
    assert_eq!(
        property_text(&s, "nhsRegion"),
        None,
        "no NHS England region"
    );
    assert_eq!(
        property_text(&s, "ccg").as_deref(),
        Some(scottish["ccg"].as_str())
    );
}

#[tokio::test]
async fn validate_code_and_the_live_value_set_agree_with_the_file() {
    let live = rows().iter().filter(|r| r["doterm"].is_empty()).count();
    let (_, e) = ask("/fhir/ValueSet/ons-nspl-live/$expand?count=0".into()).await;
    assert_eq!(e["expansion"]["total"], json!(live));
    let first = rows()[0]["pcd"].replace(' ', "");
    let (_, v) = ask(format!(
        "/fhir/CodeSystem/$validate-code?url={}&code={first}",
        enc(NSPL)
    ))
    .await;
    assert_eq!(param(&v, "result"), Some(&json!(true)));
    let (_, v) = ask(format!(
        "/fhir/CodeSystem/$validate-code?url={}&code=TS181HU",
        enc(NSPL)
    ))
    .await;
    assert_eq!(param(&v, "result"), Some(&json!(false)), "not in the slice");
}

#[tokio::test]
async fn postcodes_translate_to_their_lsoa_and_icb_footprint_as_of_a_date() {
    let row = rows()
        .iter()
        .find(|r| r["stp"].starts_with("E54"))
        .expect("an English postcode");
    let code = row["pcd"].replace(' ', "");
    for (map, column) in [("postcode-to-lsoa", "lsoa11"), ("postcode-to-icb", "stp")] {
        let (status, t) = ask(format!(
            "/fhir/ConceptMap/{map}/$translate?system={}&code={code}&date=2022-01-01",
            enc(NSPL)
        ))
        .await;
        assert_eq!(status, StatusCode::OK, "{t}");
        assert_eq!(param(&t, "result"), Some(&json!(true)), "{t}");
        assert!(t.to_string().contains(&row[column]), "{map}: {t}");
    }
}

/// `date` is the day the mappings should hold on: the release that describes it (the first, for
/// a day before it: NSPL records its postcodes' history), and only postcodes live that day.
#[tokio::test]
async fn translation_on_a_date_follows_the_postcodes_introduction_and_termination() {
    let translates_on = |row: &HashMap<String, String>, d: &'static str| {
        let code = row["pcd"].replace(' ', "");
        async move {
            let (status, t) = ask(format!(
                "/fhir/ConceptMap/postcode-to-lsoa/$translate?system={}&code={code}&date={d}",
                enc(NSPL)
            ))
            .await;
            assert_eq!(status, StatusCode::OK, "{t}");
            param(&t, "result") == Some(&json!(true))
        }
    };
    let english = |r: &&HashMap<String, String>| r["lsoa11"].starts_with("E01");
    let old = rows()
        .iter()
        .filter(english)
        .find(|r| r["doterm"].is_empty() && r["dointr"].as_str() < "201801")
        .expect("a postcode live since before 2018");
    assert!(translates_on(old, "2019-01-01").await, "before the release");
    let new = rows()
        .iter()
        .filter(english)
        .find(|r| r["dointr"].as_str() > "201902")
        .expect("a postcode introduced after January 2019");
    assert!(
        !translates_on(new, "2019-01-01").await,
        "not yet introduced"
    );
    assert!(translates_on(new, "2021-11-30").await, "introduced by then");
    let gone = rows()
        .iter()
        .filter(english)
        .find(|r| !r["doterm"].is_empty() && r["doterm"].as_str() < "201801")
        .expect("a postcode terminated before 2018");
    assert!(
        !translates_on(gone, "2019-01-01").await,
        "terminated by then"
    );
    let introduced: &'static str =
        Box::leak(format!("{}-{}-01", &gone["dointr"][..4], &gone["dointr"][4..]).into_boxed_str());
    assert!(
        translates_on(gone, introduced).await,
        "live when introduced"
    );
}
