//! `ConceptMap/$translate`: maps derived from register columns, and plain ConceptMaps.

use axum::http::StatusCode;
use serde_json::{Value as Json, json};

use super::support::*;

const ALT: &str = "https://fhir-registers.org/fhir/CodeSystem/icd-10-alt-code";
const GEO: &str =
    "https://digital.nhs.uk/services/organisation-data-service/CodeSystem/geography-name";

fn matched(p: &Json) -> Vec<(String, String)> {
    p["parameter"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|x| x["name"] == "match")
        .filter_map(|m| {
            let c = m["part"]
                .as_array()?
                .iter()
                .find(|x| x["name"] == "concept")?;
            Some((
                c["valueCoding"]["system"].as_str()?.to_string(),
                c["valueCoding"]["code"].as_str()?.to_string(),
            ))
        })
        .collect()
}

#[tokio::test]
async fn nhs_alt_codes_translate_to_dotted_icd10() {
    for (alt, dotted) in [("J459", "J45.9"), ("A09X", "A09"), ("J45X", "J45")] {
        let p = get(&format!(
            "/fhir/ConceptMap/$translate?system={}&code={alt}",
            enc(ALT)
        ))
        .await
        .json();
        assert_eq!(param(&p, "result"), Some(&json!(true)), "{alt}: {p}");
        assert_eq!(
            matched(&p),
            vec![(
                "http://hl7.org/fhir/sid/icd-10".to_string(),
                dotted.to_string()
            )],
            "{alt}"
        );
    }
    let p = get(&format!(
        "/fhir/ConceptMap/$translate?system={}&code=J40-J47",
        enc(ALT)
    ))
    .await
    .json();
    assert_eq!(
        param(&p, "result"),
        Some(&json!(false)),
        "blocks have no ALT form"
    );
    assert!(param(&p, "message").is_some());
}

#[tokio::test]
async fn postcodes_translate_to_their_areas() {
    let p = get(&format!(
        "/fhir/ConceptMap/$translate?url={}&system={}&code=TS181HU",
        enc("https://fhir-registers.org/fhir/ConceptMap/postcode-to-district"),
        enc("https://digital.nhs.uk/services/organisation-data-service/CodeSystem/postcode")
    ))
    .await
    .json();
    assert_eq!(
        matched(&p),
        vec![(GEO.to_string(), "E06000004".to_string())]
    );
    let m = &p["parameter"]
        .as_array()
        .expect("params")
        .iter()
        .find(|x| x["name"] == "match")
        .expect("match")["part"];
    assert!(
        m.as_array()
            .expect("parts")
            .contains(&json!({"name": "equivalence", "valueCode": "wider"}))
    );
    insta::assert_snapshot!("translate_postcode_district", pretty(&p));
    let all = get(&format!(
        "/fhir/ConceptMap/$translate?system={}&code=TS181HU&targetsystem={}",
        enc("https://digital.nhs.uk/services/organisation-data-service/CodeSystem/postcode"),
        enc(GEO)
    ))
    .await
    .json();
    assert_eq!(
        matched(&all).len(),
        2,
        "health authority and district: {all}"
    );
}

#[tokio::test]
async fn plain_concept_maps_translate_both_ways() {
    let map = json!({"resourceType": "ConceptMap", "url": "http://example.org/cm", "version": "1", "status": "active",
        "group": [{"source": "http://example.org/a", "target": "http://example.org/b",
            "element": [{"code": "a1", "target": [{"code": "b1", "relationship": "equivalent"}]},
                        {"code": "a2", "target": [{"code": "b2", "equivalence": "narrower"}]}],
            "unmapped": {"mode": "fixed", "code": "b0", "relationship": "related-to"}}]});
    let call = |params: Vec<Json>| {
        let mut params = params;
        params.push(json!({"name": "tx-resource", "resource": map.clone()}));
        json!({"resourceType": "Parameters", "parameter": params})
    };
    let fwd = post(
        "/fhir/ConceptMap/$translate",
        &call(vec![
            json!({"name": "sourceSystem", "valueUri": "http://example.org/a"}),
            json!({"name": "sourceCode", "valueCode": "a2"}),
        ]),
    )
    .await
    .json();
    assert_eq!(
        matched(&fwd),
        vec![("http://example.org/b".to_string(), "b2".to_string())]
    );
    let unmapped = post(
        "/fhir/ConceptMap/$translate",
        &call(vec![
            json!({"name": "system", "valueUri": "http://example.org/a"}),
            json!({"name": "code", "valueCode": "zz"}),
        ]),
    )
    .await
    .json();
    assert_eq!(
        matched(&unmapped),
        vec![("http://example.org/b".to_string(), "b0".to_string())]
    );
    let back = post(
        "/fhir/ConceptMap/$translate",
        &call(vec![
            json!({"name": "targetSystem", "valueUri": "http://example.org/b"}),
            json!({"name": "targetCode", "valueCode": "b1"}),
        ]),
    )
    .await
    .json();
    let source = back["parameter"]
        .as_array()
        .expect("p")
        .iter()
        .find(|x| x["name"] == "match")
        .expect("m")["part"]
        .as_array()
        .expect("parts")
        .iter()
        .find(|x| x["name"] == "source")
        .expect("source")["valueCoding"]
        .clone();
    assert_eq!(
        source,
        json!({"system": "http://example.org/a", "code": "a1"})
    );
}

#[tokio::test]
async fn concept_maps_are_readable_and_errors_are_outcomes() {
    let cm = get("/fhir/ConceptMap/icd-10-alt-code-to-icd-10")
        .await
        .json();
    assert_eq!(cm["resourceType"], "ConceptMap");
    let elements = cm["group"][0]["element"]
        .as_array()
        .expect("elements of a small map");
    assert!(elements.contains(
        &json!({"code": "J459", "target": [{"code": "J45.9", "equivalence": "equivalent"}]})
    ));
    let search = get("/fhir/ConceptMap").await.json();
    let derived: usize = shipped()
        .mappings
        .iter()
        .map(|m| m.spec.concept_maps.len())
        .sum();
    assert_eq!(search["total"], json!(derived), "every derived ConceptMap");
    assert_eq!(
        get("/fhir/ConceptMap/$translate?url=http://example.org/none&system=a&code=b")
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get("/fhir/ConceptMap/$translate").await.status,
        StatusCode::BAD_REQUEST
    );
}
