//! CodeSystem version semantics through the real router: wildcard versions in a ValueSet include,
//! and the `system-version`, `force-system-version` and `check-system-version` parameters, over
//! two versions of a CodeSystem supplied with each request (`tx-resource`).

use axum::http::StatusCode;
use serde_json::{Value as Json, json};

use super::support::*;

const CS: &str = "http://example.org/cs/shapes";

fn shapes(version: &str, codes: &[&str]) -> Json {
    json!({"resourceType": "CodeSystem", "url": CS, "version": version, "status": "active",
        "content": "complete",
        "concept": codes.iter().map(|c| json!({"code": c, "display": format!("{c} ({version})")})).collect::<Vec<_>>()})
}

/// A Parameters body: `params`, then both CodeSystem versions and a ValueSet including the
/// system with `include_version` (none: versionless).
fn body(include_version: Option<&str>, params: Vec<Json>) -> Json {
    let mut include = json!({"system": CS});
    if let Some(v) = include_version {
        include["version"] = json!(v);
    }
    let vs = json!({"resourceType": "ValueSet", "url": "http://example.org/vs/shapes",
        "version": "1", "status": "active", "compose": {"include": [include]}});
    let mut all = params;
    all.push(json!({"name": "tx-resource", "resource": shapes("1.0.0", &["circle", "square"])}));
    all.push(
        json!({"name": "tx-resource", "resource": shapes("1.2.0", &["circle", "square", "star"])}),
    );
    all.push(json!({"name": "tx-resource", "resource": vs}));
    json!({"resourceType": "Parameters", "parameter": all})
}

fn url() -> Json {
    json!({"name": "url", "valueUri": "http://example.org/vs/shapes"})
}

fn used_code_system(vs: &Json) -> Vec<String> {
    vs["expansion"]["parameter"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["name"] == "used-codesystem")
        .filter_map(|p| p["valueUri"].as_str().map(str::to_string))
        .collect()
}

fn echoed<'a>(vs: &'a Json, name: &str) -> Option<&'a Json> {
    vs["expansion"]["parameter"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)
}

#[tokio::test]
async fn wildcard_include_versions_pick_the_latest_match_and_force_overrides_them() {
    let e = post("/fhir/ValueSet/$expand", &body(Some("1.x.x"), vec![url()])).await;
    assert_eq!(e.status, StatusCode::OK, "{}", e.text());
    let e = e.json();
    assert_eq!(used_code_system(&e), vec![format!("{CS}|1.2.0")]);
    assert_eq!(codes(&e).len(), 3);

    let forced = vec![
        url(),
        json!({"name": "force-system-version", "valueCanonical": format!("{CS}|1.0.x")}),
    ];
    let e = post("/fhir/ValueSet/$expand", &body(Some("1.2.0"), forced))
        .await
        .json();
    assert_eq!(used_code_system(&e), vec![format!("{CS}|1.0.0")]);
    assert_eq!(codes(&e), vec!["circle", "square"]);
    assert_eq!(
        echoed(&e, "force-system-version").expect("echoed")["valueUri"],
        format!("{CS}|1.0.x"),
        "echoed as valueUri because it was used"
    );

    let missing = post("/fhir/ValueSet/$expand", &body(Some("1"), vec![url()])).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(
        outcome(&missing.json()).1,
        format!(
            "A definition for CodeSystem '{CS}' version '1' could not be found, so the value set cannot be expanded. Valid versions: 1.0.0 or 1.2.0"
        )
    );
}

#[tokio::test]
async fn system_version_is_only_a_default_and_check_system_version_rejects_other_versions() {
    let default =
        |v: &str| json!({"name": "system-version", "valueCanonical": format!("{CS}|{v}")});
    let e = post(
        "/fhir/ValueSet/$expand",
        &body(None, vec![url(), default("1.0.0")]),
    )
    .await
    .json();
    assert_eq!(used_code_system(&e), vec![format!("{CS}|1.0.0")]);
    assert!(echoed(&e, "system-version").is_some());
    let e = post(
        "/fhir/ValueSet/$expand",
        &body(Some("1.2.0"), vec![url(), default("1.0.0")]),
    )
    .await
    .json();
    assert_eq!(used_code_system(&e), vec![format!("{CS}|1.2.0")]);
    assert!(
        echoed(&e, "system-version").is_none(),
        "not used, so not echoed"
    );

    let check = json!({"name": "check-system-version", "valueCanonical": format!("{CS}|1.0.x")});
    let r = post(
        "/fhir/ValueSet/$expand",
        &body(Some("1.2.0"), vec![url(), check.clone()]),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text());
    let oo = r.json();
    assert_eq!(oo["issue"][0]["code"], "exception");
    assert_eq!(
        oo["issue"][0]["details"]["coding"][0]["code"],
        "version-error"
    );
    assert_eq!(
        oo["issue"][0]["details"]["text"],
        format!(
            "The version '1.2.0' is not allowed for system '{CS}': required to be '1.0.x' by a version-check parameter"
        )
    );

    let v = post(
        "/fhir/ValueSet/$validate-code",
        &body(
            Some("1.2.0"),
            vec![
                url(),
                json!({"name": "system", "valueUri": CS}),
                json!({"name": "code", "valueCode": "circle"}),
                check,
            ],
        ),
    )
    .await
    .json();
    assert_eq!(param(&v, "result"), Some(&json!(false)));
    assert_eq!(param(&v, "version"), Some(&json!("1.2.0")));
}

#[tokio::test]
async fn validate_code_reports_a_coding_version_that_differs_from_the_value_set() {
    async fn validate(include: Option<&str>, version: &str) -> Json {
        let coding = json!({"system": CS, "version": version, "code": "circle"});
        let params = vec![url(), json!({"name": "coding", "valueCoding": coding})];
        post("/fhir/ValueSet/$validate-code", &body(include, params))
            .await
            .json()
    }
    let ok = validate(Some("1.x.x"), "1.0.0").await;
    assert_eq!(param(&ok, "result"), Some(&json!(true)));
    assert_eq!(
        param(&ok, "version"),
        Some(&json!("1.0.0")),
        "the coding's version, which the wildcard allows"
    );

    let differs = validate(Some("1.2.0"), "1.0.0").await;
    assert_eq!(param(&differs, "result"), Some(&json!(false)));
    assert_eq!(
        param(&differs, "message"),
        Some(&json!(format!(
            "The code system '{CS}' version '1.2.0' in the ValueSet include is different to the one in the value ('1.0.0')"
        )))
    );

    let unknown = validate(None, "2.4.0").await;
    assert_eq!(param(&unknown, "result"), Some(&json!(false)));
    assert_eq!(
        param(&unknown, "message"),
        Some(&json!(format!(
            "A definition for CodeSystem '{CS}' version '2.4.0' could not be found, so the code cannot be validated. Valid versions: 1.0.0 or 1.2.0"
        )))
    );
    assert_eq!(
        param(&unknown, "x-caused-by-unknown-system"),
        Some(&json!(format!("{CS}|2.4.0")))
    );
}
