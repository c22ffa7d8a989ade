//! The NHS Data Dictionary code lists (the 88 UK Core CodeSystems in `mappings/datadictionary/`),
//! served as they are with a ValueSet of all codes each: every one answers `$lookup`,
//! `$validate-code` and `$expand` as its own file says.

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use fhir_registers::{AppState, registers};
use serde_json::{Value as Json, json};

use super::support::*;

fn state() -> Arc<AppState> {
    static STATE: OnceLock<Arc<AppState>> = OnceLock::new();
    STATE
        .get_or_init(|| {
            let data = tempfile::tempdir().expect("dir");
            let resources =
                registers::load_resources(&repo().join("mappings")).expect("resources load");
            let registry =
                registers::build_registry(&shipped(), data.path(), &resources).expect("registry");
            Arc::new(AppState::new(registry))
        })
        .clone()
}

/// Every concept (code, display) of a CodeSystem resource, nested ones included.
fn concepts(cs: &Json) -> Vec<(String, Option<String>)> {
    fn walk(list: Option<&Json>, out: &mut Vec<(String, Option<String>)>) {
        for c in list.and_then(Json::as_array).into_iter().flatten() {
            out.push((
                c["code"].as_str().unwrap_or_default().to_string(),
                c["display"].as_str().map(str::to_string),
            ));
            walk(c.get("concept"), out);
        }
    }
    let mut out = Vec::new();
    walk(cs.get("concept"), &mut out);
    out
}

async fn ask(uri: String) -> Json {
    let r = send_to(state(), Request::get(uri).body(Body::empty()).expect("req")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    r.json()
}

#[tokio::test]
async fn every_code_list_answers_lookup_validate_code_and_expand_from_its_file() {
    let dir = repo().join("mappings/datadictionary");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("folder")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "xml"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 88, "the 88 UK Core CodeSystems of SOURCES.md");
    let mut with_concepts = 0;
    for f in files {
        let xml = std::fs::read_to_string(&f).expect("read");
        let cs: Json = serde_json::from_str(&fhir_xml::xml_to_json(&xml).expect("valid FHIR XML"))
            .expect("json");
        let url = cs["url"].as_str().expect("url");
        let id = cs["id"].as_str().expect("id");
        let all = concepts(&cs);
        let expanded = ask(format!("/fhir/ValueSet/{id}-all/$expand?count=0")).await;
        assert_eq!(
            expanded["expansion"]["total"],
            json!(all.len()),
            "{}: the all-codes ValueSet has every concept",
            f.display()
        );
        let (Some(first), Some(last)) = (all.first(), all.last()) else {
            continue;
        };
        with_concepts += 1;
        for (code, display) in [first, last] {
            let looked = ask(format!(
                "/fhir/CodeSystem/$lookup?system={}&code={}",
                enc(url),
                enc(code)
            ))
            .await;
            if let Some(d) = display {
                assert_eq!(param(&looked, "display"), Some(&json!(d)), "{url} {code}");
            }
            let valid = ask(format!(
                "/fhir/ValueSet/$validate-code?url={}&system={}&code={}",
                enc(&format!(
                    "https://fhir-registers.org/fhir/ValueSet/{id}-all"
                )),
                enc(url),
                enc(code)
            ))
            .await;
            assert_eq!(param(&valid, "result"), Some(&json!(true)), "{url} {code}");
        }
        let unknown = ask(format!(
            "/fhir/CodeSystem/$validate-code?url={}&code=NOT-A-CODE-XYZ",
            enc(url)
        ))
        .await;
        assert_eq!(param(&unknown, "result"), Some(&json!(false)), "{url}");
    }
    assert!(
        with_concepts >= 80,
        "{with_concepts} code lists with concepts"
    );
}

#[tokio::test]
async fn ethnic_category_england_reads_as_the_data_dictionary_has_it() {
    let url = "https://fhir.hl7.org.uk/CodeSystem/UKCore-EthnicCategoryEngland";
    let a = ask(format!(
        "/fhir/CodeSystem/$lookup?system={}&code=A",
        enc(url)
    ))
    .await;
    let xml = std::fs::read_to_string(
        repo().join("mappings/datadictionary/CodeSystem-UKCore-EthnicCategoryEngland.xml"),
    )
    .expect("read");
    assert!(xml.contains(&format!(
        "<display value=\"{}\"",
        param(&a, "display").and_then(Json::as_str).expect("display")
    )));
    let filtered = ask(format!(
        "/fhir/ValueSet/UKCore-EthnicCategoryEngland-all/$expand?filter={}",
        enc("white")
    ))
    .await;
    let codes = codes(&filtered);
    assert!(codes.contains(&"A".to_string()), "{codes:?}");
    assert!(!codes.is_empty() && codes.len() < 18, "{codes:?}");
}
