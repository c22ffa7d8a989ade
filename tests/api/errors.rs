//! Every client mistake is an OperationOutcome with the right status; XML in and out.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};

use super::support::*;

async fn call(method: &str, uri: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    let mut b = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send_to(state(), b.body(Body::from(body.to_string())).expect("req")).await
}

#[tokio::test]
async fn client_mistakes_get_operation_outcomes_with_the_right_status() {
    let lookup = "/fhir/CodeSystem/$lookup";
    let json_ct = [("content-type", "application/fhir+json")];
    let cases: Vec<(&str, Reply, StatusCode, &str)> = vec![
        ("malformed_json", call("POST", lookup, &json_ct, "{bad").await, StatusCode::BAD_REQUEST, "invalid"),
        ("wrong_resource", call("POST", lookup, &json_ct, r#"{"resourceType":"Patient"}"#).await, StatusCode::BAD_REQUEST, "invalid"),
        ("parameter_without_value", call("POST", lookup, &json_ct, r#"{"resourceType":"Parameters","parameter":[{"name":"code"}]}"#).await, StatusCode::BAD_REQUEST, "invalid"),
        ("missing_parameters", call("GET", lookup, &[], "").await, StatusCode::BAD_REQUEST, "required"),
        ("unsupported_media_type", call("POST", lookup, &[("content-type", "text/plain")], "code=x").await, StatusCode::UNSUPPORTED_MEDIA_TYPE, "not-supported"),
        ("not_acceptable", call("GET", "/fhir/metadata", &[("accept", "text/html")], "").await, StatusCode::NOT_ACCEPTABLE, "not-supported"),
        ("bad_format", call("GET", "/fhir/metadata?_format=turtle", &[], "").await, StatusCode::NOT_ACCEPTABLE, "not-supported"),
        ("method_not_allowed", call("DELETE", "/fhir/CodeSystem/icd-10", &[], "").await, StatusCode::METHOD_NOT_ALLOWED, "not-supported"),
        ("unknown_path", call("GET", "/fhir/Patient/1", &[], "").await, StatusCode::NOT_FOUND, "not-found"),
        ("negative_count", call("GET", "/fhir/ValueSet/$expand?url=x&count=-1", &[], "").await, StatusCode::BAD_REQUEST, "invalid"),
        ("bad_boolean", call("GET", "/fhir/ValueSet/$expand?url=x&activeOnly=maybe", &[], "").await, StatusCode::BAD_REQUEST, "invalid"),
        ("bad_regex", call("POST", "/fhir/ValueSet/$expand", &json_ct, r#"{"resourceType":"Parameters","parameter":[{"name":"valueSet","resource":{"resourceType":"ValueSet","compose":{"include":[{"system":"http://hl7.org/fhir/sid/icd-10","filter":[{"property":"code","op":"regex","value":"(("}]}]}}}]}"#).await, StatusCode::BAD_REQUEST, "invalid"),
        ("unknown_filter_op", call("POST", "/fhir/ValueSet/$expand", &json_ct, r#"{"resourceType":"Parameters","parameter":[{"name":"valueSet","resource":{"resourceType":"ValueSet","compose":{"include":[{"system":"http://hl7.org/fhir/sid/icd-10","filter":[{"property":"concept","op":"sounds-like","value":"x"}]}]}}}]}"#).await, StatusCode::BAD_REQUEST, "not-supported"),
        ("value_set_without_compose", call("POST", "/fhir/ValueSet/$expand", &json_ct, r#"{"resourceType":"Parameters","parameter":[{"name":"valueSet","resource":{"resourceType":"ValueSet"}}]}"#).await, StatusCode::UNPROCESSABLE_ENTITY, "processing"),
        ("duplicate_parameter", call("GET", "/fhir/CodeSystem/$lookup?system=a&system=b&code=c", &[], "").await, StatusCode::BAD_REQUEST, "invalid"),
    ];
    for (name, reply, status, code) in cases {
        assert_eq!(reply.status, status, "{name}: {}", reply.text());
        assert!(
            reply.content_type.starts_with("application/fhir+json"),
            "{name}"
        );
        let oo = reply.json();
        assert_eq!(outcome(&oo).0, code, "{name}: {oo}");
        assert!(
            !outcome(&oo).1.is_empty(),
            "{name}: the text says what is wrong"
        );
        insta::assert_snapshot!(format!("error_{name}"), pretty(&oo));
    }
}

#[tokio::test]
async fn xml_in_and_out() {
    let r = call(
        "GET",
        "/fhir/CodeSystem/$lookup?system=http://hl7.org/fhir/sid/icd-10&code=J45.9&_format=xml",
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.content_type.starts_with("application/fhir+xml"),
        "{}",
        r.content_type
    );
    insta::assert_snapshot!("lookup_xml", r.text());
    let body = r#"<Parameters xmlns="http://hl7.org/fhir"><parameter><name value="system"/><valueUri value="http://hl7.org/fhir/sid/icd-10"/></parameter><parameter><name value="code"/><valueCode value="J45.9"/></parameter></Parameters>"#;
    let r = call(
        "POST",
        "/fhir/CodeSystem/$lookup",
        &[
            ("content-type", "application/fhir+xml"),
            ("accept", "application/fhir+json"),
        ],
        body,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(
        param(&r.json(), "display"),
        Some(&serde_json::json!("Asthma, unspecified"))
    );
    let r = call(
        "POST",
        "/fhir/CodeSystem/$lookup",
        &[("content-type", "application/fhir+xml")],
        "<Parameters xmlns=\"http://hl7.org/fhir\"><bogus/></Parameters>",
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = call(
        "GET",
        "/fhir/CodeSystem/$lookup",
        &[(header::ACCEPT.as_str(), "application/fhir+xml")],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.text().contains("<OperationOutcome"),
        "errors follow the negotiated format: {}",
        r.text()
    );
}

#[tokio::test]
async fn operation_shapes_are_stable() {
    let lookup = get("/fhir/CodeSystem/$lookup?system=https%3A%2F%2Ffhir.nhs.uk%2FId%2Fods-organization-code&code=A81001").await.json();
    insta::assert_snapshot!("lookup_ods_a81001", pretty(&lookup));
    let expand = get("/fhir/ValueSet/$expand?url=https%3A%2F%2Ffhir-registers.org%2Ffhir%2FValueSet%2Ficd-10-chapter-x&filter=asthma").await.json();
    insta::assert_snapshot!("expand_icd10_asthma", pretty(&redact_expansion(expand)));
    let validate = get("/fhir/ValueSet/$validate-code?url=https%3A%2F%2Ffhir-registers.org%2Ffhir%2FValueSet%2Fods-gp-practices&system=https%3A%2F%2Ffhir.nhs.uk%2FId%2Fods-organization-code&code=A81003&display=VICTORIA").await.json();
    insta::assert_snapshot!("validate_inactive_wrong_display", pretty(&validate));
}
