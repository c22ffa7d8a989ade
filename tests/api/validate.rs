//! `$validate-code` on CodeSystems and ValueSets.

use axum::http::StatusCode;
use serde_json::json;

use super::support::*;

const ODS: &str = "https://fhir.nhs.uk/Id/ods-organization-code";
const ICD10: &str = "http://hl7.org/fhir/sid/icd-10";
const GP: &str = "https://fhir-registers.org/fhir/ValueSet/ods-gp-practices";

/// The issues of a `$validate-code` answer as (severity, tx-issue-type).
fn issue_types(p: &serde_json::Value) -> Vec<(String, String)> {
    validation_issues(p)
        .into_iter()
        .map(|(severity, _, tx, _)| (severity, tx))
        .collect()
}

#[tokio::test]
async fn good_code_is_valid_with_its_display() {
    let p = get(&format!(
        "/fhir/CodeSystem/$validate-code?url={}&code=J45.9",
        enc(ICD10)
    ))
    .await
    .json();
    assert_eq!(param(&p, "result"), Some(&json!(true)));
    assert_eq!(param(&p, "display"), Some(&json!("Asthma, unspecified")));
    assert_eq!(param(&p, "version"), Some(&json!("2019")));
    assert!(param(&p, "message").is_none());
}

#[tokio::test]
async fn made_up_code_is_false_with_a_message_not_an_error() {
    let r = get(&format!(
        "/fhir/CodeSystem/$validate-code?url={}&code=Q99.99X",
        enc(ICD10)
    ))
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let p = r.json();
    assert_eq!(param(&p, "result"), Some(&json!(false)));
    assert_eq!(
        param(&p, "message"),
        Some(&json!(
            "Unknown code 'Q99.99X' in the CodeSystem 'http://hl7.org/fhir/sid/icd-10' version '2019'"
        ))
    );
    assert_eq!(
        issue_types(&p),
        vec![("error".into(), "invalid-code".into())]
    );
}

#[tokio::test]
async fn wrong_display_fails_unless_lenient() {
    let q = format!(
        "/fhir/CodeSystem/$validate-code?url={}&code=A81001&display={}",
        enc(ODS),
        enc("Densham Clinic")
    );
    let strict = get(&q).await.json();
    assert_eq!(param(&strict, "result"), Some(&json!(false)));
    assert_eq!(
        issue_types(&strict),
        vec![("error".into(), "invalid-display".into())]
    );
    assert!(
        param(&strict, "message")
            .and_then(|m| m.as_str())
            .is_some_and(|m| m.contains("Valid display is 'THE DENSHAM SURGERY'"))
    );
    let lenient = get(&format!("{q}&lenient-display-validation=true"))
        .await
        .json();
    assert_eq!(param(&lenient, "result"), Some(&json!(true)));
    assert_eq!(
        issue_types(&lenient),
        vec![("warning".into(), "invalid-display".into())]
    );
    let spaces = get(&format!(
        "/fhir/CodeSystem/$validate-code?url={}&code=A81001&display={}",
        enc(ODS),
        enc("THE  DENSHAM SURGERY")
    ))
    .await
    .json();
    assert_eq!(
        param(&spaces, "result"),
        Some(&json!(false)),
        "displays must match exactly, as reference servers require"
    );
}

#[tokio::test]
async fn inactive_code_is_valid_with_a_warning() {
    let p = get(&format!(
        "/fhir/CodeSystem/$validate-code?url={}&code=A81003",
        enc(ODS)
    ))
    .await
    .json();
    assert_eq!(param(&p, "result"), Some(&json!(true)));
    assert_eq!(param(&p, "inactive"), Some(&json!(true)));
    assert_eq!(
        issue_types(&p),
        vec![("warning".into(), "code-comment".into())]
    );
    let active_only = get(&format!(
        "/fhir/ValueSet/$validate-code?url={}&system={}&code=A81003&activeOnly=true",
        enc(GP),
        enc(ODS)
    ))
    .await
    .json();
    assert_eq!(param(&active_only, "result"), Some(&json!(false)));
}

#[tokio::test]
async fn value_set_membership_is_checked_without_expanding() {
    let good = get(&format!(
        "/fhir/ValueSet/$validate-code?url={}&system={}&code=A81001",
        enc(GP),
        enc(ODS)
    ))
    .await
    .json();
    assert_eq!(param(&good, "result"), Some(&json!(true)));
    // RD3 is an NHS trust: a real code, but not a GP practice.
    let trust = get(&format!(
        "/fhir/ValueSet/$validate-code?url={}&system={}&code=RD3",
        enc(GP),
        enc(ODS)
    ))
    .await
    .json();
    assert_eq!(param(&trust, "result"), Some(&json!(false)));
    assert_eq!(
        issue_types(&trust),
        vec![("error".into(), "not-in-vs".into())]
    );
    let made_up = get(&format!(
        "/fhir/ValueSet/$validate-code?url={}&system={}&code=ZZZ999",
        enc(GP),
        enc(ODS)
    ))
    .await
    .json();
    let types: Vec<String> = issue_types(&made_up).into_iter().map(|(_, t)| t).collect();
    assert_eq!(types, vec!["not-in-vs", "invalid-code"]);
}

#[tokio::test]
async fn codings_and_codeable_concepts() {
    let p = post(
        "/fhir/ValueSet/$validate-code",
        &json!({"resourceType": "Parameters", "parameter": [
            {"name": "url", "valueUri": GP},
            {"name": "codeableConcept", "valueCodeableConcept": {"coding": [
                {"system": ODS, "code": "RD3"},
                {"system": ODS, "code": "A81001", "display": "THE DENSHAM SURGERY"}
            ]}}
        ]}),
    )
    .await
    .json();
    assert_eq!(
        param(&p, "result"),
        Some(&json!(true)),
        "one valid coding is enough: {p}"
    );
    assert_eq!(param(&p, "code"), Some(&json!("A81001")));
    assert!(param(&p, "codeableConcept").is_some());
    let coding = get(&format!(
        "/fhir/CodeSystem/$validate-code?coding={}",
        enc(&format!("{ICD10}|J45.9"))
    ))
    .await
    .json();
    assert_eq!(param(&coding, "result"), Some(&json!(true)));
}

#[tokio::test]
async fn unknown_system_and_value_set() {
    let p = get("/fhir/CodeSystem/$validate-code?url=http://example.org/cs&code=x")
        .await
        .json();
    assert_eq!(param(&p, "result"), Some(&json!(false)));
    assert_eq!(issue_types(&p), vec![("error".into(), "not-found".into())]);
    let r = get("/fhir/ValueSet/$validate-code?url=http://example.org/vs&system=http://example.org/cs&code=x").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = get("/fhir/ValueSet/$validate-code?url=http://example.org/vs").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // Nothing to validate: `invalid`, in the reference server's words.
    assert_eq!(outcome(&r.json()).0, "invalid");
}
