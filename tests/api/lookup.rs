//! `CodeSystem/$lookup` over the fixture registers.

use axum::http::StatusCode;
use serde_json::json;

use super::support::*;

const ODS: &str = "https://fhir.nhs.uk/Id/ods-organization-code";
const ICD10: &str = "http://hl7.org/fhir/sid/icd-10";
const POSTCODE: &str =
    "https://digital.nhs.uk/services/organisation-data-service/CodeSystem/postcode";

fn prop<'a>(props: &'a [(String, serde_json::Value)], code: &str) -> Vec<&'a serde_json::Value> {
    props
        .iter()
        .filter(|(c, _)| c == code)
        .map(|(_, v)| v)
        .collect()
}

#[tokio::test]
async fn gp_practice_has_its_name_and_ods_properties() {
    let r = get(&format!(
        "/fhir/CodeSystem/$lookup?system={}&code=A81001",
        enc(ODS)
    ))
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(r.content_type.starts_with("application/fhir+json"));
    let p = r.json();
    assert_eq!(param(&p, "display"), Some(&json!("THE DENSHAM SURGERY")));
    assert_eq!(param(&p, "name"), Some(&json!("ODSOrganisationCode")));
    let props = properties(&p);
    assert_eq!(prop(&props, "status"), vec![&json!("active")]);
    assert_eq!(prop(&props, "inactive"), vec![&json!(false)]);
    assert_eq!(prop(&props, "postcode"), vec![&json!("TS18 1HU")]);
    assert_eq!(prop(&props, "opStartDate"), vec![&json!("1974-04-01")]);
    assert!(prop(&props, "opEndDate").is_empty());
    assert_eq!(prop(&props, "RE4"), vec![&json!("00K")]);
    assert_eq!(prop(&props, "parent"), vec![&json!("00K")]);
    assert_eq!(
        prop(&props, "primaryRole"),
        vec![
            &json!({"system": "https://digital.nhs.uk/services/organisation-data-service/CodeSystem/ODSOrganisationRole", "code": "RO177"})
        ]
    );
}

#[tokio::test]
async fn closed_practice_is_inactive_with_its_close_date() {
    let r = get(&format!(
        "/fhir/CodeSystem/$lookup?system={}&code=A81003&property=inactive&property=status&property=opEndDate",
        enc(ODS)
    ))
    .await;
    let p = r.json();
    let props = properties(&p);
    assert_eq!(prop(&props, "inactive"), vec![&json!(true)]);
    assert_eq!(prop(&props, "status"), vec![&json!("inactive")]);
    assert_eq!(prop(&props, "opEndDate"), vec![&json!("2017-10-31")]);
    assert!(
        prop(&props, "name").is_empty(),
        "only the asked properties: {props:?}"
    );
}

#[tokio::test]
async fn icd10_code_has_parent_and_children_from_the_hierarchy() {
    let p = get(&format!(
        "/fhir/CodeSystem/$lookup?system={}&code=J45.9",
        enc(ICD10)
    ))
    .await
    .json();
    assert_eq!(param(&p, "display"), Some(&json!("Asthma, unspecified")));
    assert_eq!(param(&p, "version"), Some(&json!("2019")));
    assert_eq!(prop(&properties(&p), "parent"), vec![&json!("J45")]);
    let p = get(&format!(
        "/fhir/CodeSystem/$lookup?system={}&code=J45&property=child",
        enc(ICD10)
    ))
    .await
    .json();
    let children: Vec<_> = prop(&properties(&p), "child")
        .into_iter()
        .cloned()
        .collect();
    assert_eq!(
        children,
        vec![
            json!("J45.0"),
            json!("J45.1"),
            json!("J45.8"),
            json!("J45.9")
        ]
    );
    let chapter = get(&format!(
        "/fhir/CodeSystem/$lookup?system={}&code=X",
        enc(ICD10)
    ))
    .await
    .json();
    assert_eq!(
        param(&chapter, "abstract"),
        Some(&json!(true)),
        "chapters are not selectable"
    );
}

#[tokio::test]
async fn post_parameters_with_a_coding_gives_the_same_answer_as_get() {
    let via_get = get(&format!(
        "/fhir/CodeSystem/$lookup?system={}&code=J45.9",
        enc(ICD10)
    ))
    .await
    .json();
    let via_post = post(
        "/fhir/CodeSystem/$lookup",
        &json!({"resourceType": "Parameters", "parameter": [
            {"name": "coding", "valueCoding": {"system": ICD10, "code": "J45.9"}}
        ]}),
    )
    .await
    .json();
    assert_eq!(via_get, via_post);
}

#[tokio::test]
async fn postcodes_are_looked_up_by_compact_code_and_shown_spaced() {
    let p = get(&format!(
        "/fhir/CodeSystem/$lookup?system={}&code=TS181HU",
        enc(POSTCODE)
    ))
    .await
    .json();
    assert_eq!(param(&p, "display"), Some(&json!("TS18 1HU")));
    let props = properties(&p);
    assert_eq!(prop(&props, "adminDistrict"), vec![&json!("E06000004")]);
    assert!(!prop(&props, "eastings").is_empty());
}

#[tokio::test]
async fn instance_level_lookup_uses_the_code_system_of_the_path() {
    let p = get("/fhir/CodeSystem/icd-10/$lookup?code=J45.9")
        .await
        .json();
    assert_eq!(param(&p, "display"), Some(&json!("Asthma, unspecified")));
}

#[tokio::test]
async fn versions_hold_the_feeds_released_by_then() {
    // RD3 comes from the etr feed (2020-10-01); the version made of epraccur 2020-01-01 alone lacks it.
    let latest = get(&format!(
        "/fhir/CodeSystem/$lookup?system={}&code=RD3",
        enc(ODS)
    ))
    .await;
    assert_eq!(latest.status, StatusCode::OK);
    assert_eq!(param(&latest.json(), "version"), Some(&json!("2024-07-01")));
    let old = get(&format!(
        "/fhir/CodeSystem/$lookup?system={}&code=RD3&version=2020-01-01",
        enc(ODS)
    ))
    .await;
    assert_eq!(old.status, StatusCode::NOT_FOUND, "{}", old.text());
    let practice = get(&format!(
        "/fhir/CodeSystem/$lookup?system={}&code=A81001&version=2020-01-01",
        enc(ODS)
    ))
    .await;
    assert_eq!(
        param(&practice.json(), "version"),
        Some(&json!("2020-01-01"))
    );
    let missing = get(&format!(
        "/fhir/CodeSystem/$lookup?system={}&code=A81001&version=1999",
        enc(ODS)
    ))
    .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(
        outcome(&missing.json())
            .1
            .contains("known versions: 2020-01-01, 2020-10-01, 2024-07-01")
    );
}

#[tokio::test]
async fn unknown_code_and_system_are_404_operation_outcomes() {
    let r = get(&format!(
        "/fhir/CodeSystem/$lookup?system={}&code=NOPE1",
        enc(ICD10)
    ))
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let oo = r.json();
    assert_eq!(outcome(&oo), ("not-found".into(), "Unknown code 'NOPE1' in the CodeSystem 'http://hl7.org/fhir/sid/icd-10' version '2019'".into()));
    assert_eq!(
        oo["issue"][0]["details"]["coding"][0]["code"],
        "invalid-code"
    );
    let r = get("/fhir/CodeSystem/$lookup?system=http://example.org/nope&code=x").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(outcome(&r.json()).1.contains("could not be found"));
}

#[tokio::test]
async fn split_values_give_several_values_of_one_property() {
    // eccg field 14 for 36L is "RO319|RO326": both roles.
    let raw = ods_rows("ods/eccg_2024-07_slice.csv");
    let row = raw
        .iter()
        .find(|r| r[0] == "36L")
        .expect("36L in the fixture");
    assert_eq!(row[13], "RO319|RO326");
    let p = get(&format!(
        "/fhir/CodeSystem/$lookup?system={}&code=36L&property=role",
        enc(ODS)
    ))
    .await
    .json();
    let roles: Vec<String> = prop(&properties(&p), "role")
        .iter()
        .map(|v| v["code"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(roles, vec!["RO319", "RO326"]);
}

/// `$lookup` written straight to JSON (how the server answers in compact JSON) gives the very
/// bytes its parameters render to, for concepts of every fixture CodeSystem (every concept of a
/// small one, an even spread of a large one), decoded and read in place, with and without
/// property and language choices.
#[test]
fn lookup_written_straight_to_json_is_the_rendered_parameters() {
    use fhir_registers::terminology::lookup::{LookupRequest, lookup_json, lookup_parameters};
    let variants: [(&[&str], Option<&str>); 4] = [
        (&[], None),
        (&["*"], None),
        (
            &[
                "parent",
                "child",
                "designation",
                "inactive",
                "status",
                "notSelectable",
                "label",
                "order",
            ],
            None,
        ),
        (&[], Some("en")),
    ];
    let mut compared = 0;
    let mut with_parents = 0;
    for state in [state(), packed_state()] {
        let registry = state.registry();
        for cs in registry.all_code_systems() {
            let step = (cs.len() / 400).max(1);
            for r in cs.refs().step_by(step) {
                let c = cs.concept(r);
                with_parents += usize::from(!c.parents.is_empty());
                for (properties, language) in variants {
                    let req = LookupRequest {
                        system: cs.meta.url.clone(),
                        code: c.code.to_string(),
                        version: Some(cs.version.clone()).filter(|v| !v.is_empty()),
                        properties: properties.iter().map(|p| p.to_string()).collect(),
                        display_language: language.map(Into::into),
                    };
                    let rendered = lookup_parameters(&registry, &req)
                        .expect("found")
                        .to_json_bytes();
                    let direct = lookup_json(&registry, &req).expect("found");
                    assert_eq!(
                        String::from_utf8_lossy(&direct),
                        String::from_utf8_lossy(&rendered),
                        "{} {} {properties:?} {language:?}",
                        cs.meta.url,
                        c.code
                    );
                    compared += 1;
                }
            }
        }
    }
    assert!(compared > 5_000, "{compared} lookups compared");
    // (No fixture register has designations: `conformance2` compares those, with supplements.)
    assert!(with_parents > 0, "concepts with parents are among them");
}
