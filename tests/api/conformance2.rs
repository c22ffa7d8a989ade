//! Conformance, round 2 (issue 14): behaviours of the FHIR terminology specification that the
//! reference server (tx.fhir.org, FHIRsmith) has and the 15 ecosystem suites do not exercise.
//! Each test sends CodeSystems and ValueSets written for it (`tests/fixtures/conformance2/`, or
//! inline) as `tx-resource` parameters through the real router.

use serde_json::{Value as Json, json};

use crate::support::{all_parts, codes, fixture, param, post, validation_issues};

/// A fixture resource of `tests/fixtures/conformance2/`.
fn resource(name: &str) -> Json {
    let path = fixture(&format!("conformance2/{name}"));
    serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture")).expect("JSON")
}

/// A `Parameters` of `params` plus one `tx-resource` per resource.
fn with_resources(params: Vec<Json>, resources: &[Json]) -> Json {
    let mut all = params;
    for r in resources {
        all.push(json!({"name": "tx-resource", "resource": r}));
    }
    json!({"resourceType": "Parameters", "parameter": all})
}

/// A ValueSet over the whole of `system` with these compose filters.
fn filtered(system: &str, filters: Json) -> Json {
    json!({"resourceType": "ValueSet", "url": "http://example.org/fhir/ValueSet/c2-filtered",
        "version": "1", "status": "active",
        "compose": {"include": [{"system": system, "filter": filters}]}})
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

const RENAMED: &str = "http://example.org/fhir/CodeSystem/c2-abstract-renamed";
const STANDARD: &str = "http://example.org/fhir/CodeSystem/c2-abstract-standard";
const ICD10: &str = "http://hl7.org/fhir/sid/icd-10";

// 1. Not-selectable concepts.

#[tokio::test]
async fn not_selectable_is_recognised_by_its_uri_or_its_code_and_marks_expansions_abstract() {
    for (file, system) in [
        ("codesystem-abstract-renamed.json", RENAMED),
        ("codesystem-abstract-standard.json", STANDARD),
    ] {
        let cs = resource(file);
        let vs = json!({"resourceType": "ValueSet", "url": "http://example.org/fhir/ValueSet/c2-all",
            "status": "active", "compose": {"include": [{"system": system}]}});
        let e = post(
            "/fhir/ValueSet/$expand",
            &with_resources(
                vec![json!({"name": "valueSet", "resource": vs.clone()})],
                std::slice::from_ref(&cs),
            ),
        )
        .await
        .json();
        let contains = e["expansion"]["contains"]
            .as_array()
            .expect("contains")
            .clone();
        let abstract_codes: Vec<&str> = contains
            .iter()
            .filter(|c| c["abstract"] == true)
            .filter_map(|c| c["code"].as_str())
            .collect();
        assert_eq!(abstract_codes, vec!["group"], "{system}: {e}");
        // excludeNotForUI leaves the abstract concept out (and the total says so).
        let e = post(
            "/fhir/ValueSet/$expand",
            &with_resources(
                vec![
                    json!({"name": "valueSet", "resource": vs}),
                    json!({"name": "excludeNotForUI", "valueBoolean": true}),
                ],
                &[cs],
            ),
        )
        .await
        .json();
        assert_eq!(
            sorted(codes(&e)),
            vec!["member", "selectable", "unstated"],
            "{system}: {e}"
        );
        assert_eq!(e["expansion"]["total"], 3, "{e}");
    }
}

#[tokio::test]
async fn not_selectable_filters_work_with_equals_in_not_in_and_exists_for_true_and_false() {
    // `false` matches only concepts that say so; `not-in true` also takes those that say nothing;
    // `exists` tells stated from unstated (the reference's notSelectable suite).
    let cases: [(&str, &str, &[&str]); 8] = [
        ("=", "true", &["group"]),
        ("=", "TRUE", &["group"]),
        ("=", "false", &["selectable"]),
        ("in", "true", &["group"]),
        ("in", "false,true", &["group", "selectable"]),
        ("not-in", "true", &["member", "selectable", "unstated"]),
        ("exists", "true", &["group", "selectable"]),
        ("exists", "false", &["member", "unstated"]),
    ];
    for (file, system) in [
        ("codesystem-abstract-renamed.json", RENAMED),
        ("codesystem-abstract-standard.json", STANDARD),
    ] {
        let cs = resource(file);
        for (op, value, want) in cases {
            let vs = filtered(
                system,
                json!([{"property": "notSelectable", "op": op, "value": value}]),
            );
            let e = post(
                "/fhir/ValueSet/$expand",
                &with_resources(
                    vec![json!({"name": "valueSet", "resource": vs})],
                    std::slice::from_ref(&cs),
                ),
            )
            .await
            .json();
            assert_eq!(
                sorted(codes(&e)),
                want,
                "{system} notSelectable {op} {value}: {e}"
            );
        }
    }
    // The CodeSystem's own code for the property works too.
    let vs = filtered(
        RENAMED,
        json!([{"property": "grouper", "op": "=", "value": "true"}]),
    );
    let e = post(
        "/fhir/ValueSet/$expand",
        &with_resources(
            vec![json!({"name": "valueSet", "resource": vs})],
            &[resource("codesystem-abstract-renamed.json")],
        ),
    )
    .await
    .json();
    assert_eq!(codes(&e), vec!["group"], "{e}");
}

#[tokio::test]
async fn validate_code_with_abstract_false_rejects_an_abstract_code_with_the_reference_message() {
    let cs = resource("codesystem-abstract-renamed.json");
    let vs = json!({"resourceType": "ValueSet", "url": "http://example.org/fhir/ValueSet/c2-all",
        "version": "1", "status": "active", "compose": {"include": [{"system": RENAMED}]}});
    let coding = json!({"name": "coding", "valueCoding": {"system": RENAMED, "code": "group"}});
    // Abstract codes are allowed unless the client says otherwise.
    let p = post(
        "/fhir/ValueSet/$validate-code",
        &with_resources(
            vec![
                json!({"name": "valueSet", "resource": vs.clone()}),
                coding.clone(),
            ],
            std::slice::from_ref(&cs),
        ),
    )
    .await
    .json();
    assert_eq!(param(&p, "result"), Some(&json!(true)), "{p}");
    let p = post(
        "/fhir/ValueSet/$validate-code",
        &with_resources(
            vec![
                json!({"name": "valueSet", "resource": vs.clone()}),
                coding.clone(),
                json!({"name": "abstract", "valueBoolean": false}),
            ],
            std::slice::from_ref(&cs),
        ),
    )
    .await
    .json();
    assert_eq!(param(&p, "result"), Some(&json!(false)), "{p}");
    let abstract_text =
        format!("Code '{RENAMED}#group' is abstract, and not allowed in this context");
    let found = validation_issues(&p);
    assert!(
        found.contains(&(
            "error".into(),
            "business-rule".into(),
            "code-rule".into(),
            abstract_text.clone()
        )),
        "{p}"
    );
    assert!(
        found.iter().any(|i| i.2 == "not-in-vs"
            && i.3 == format!("The provided code '{RENAMED}#group' was not found in the value set 'http://example.org/fhir/ValueSet/c2-all|1'")),
        "{p}"
    );
    assert!(
        param(&p, "message")
            .and_then(Json::as_str)
            .is_some_and(|m| m.contains(&abstract_text)),
        "{p}"
    );
    // A selectable code is still valid with abstract=false.
    let p = post(
        "/fhir/ValueSet/$validate-code",
        &with_resources(
            vec![
                json!({"name": "valueSet", "resource": vs}),
                json!({"name": "coding", "valueCoding": {"system": RENAMED, "code": "member"}}),
                json!({"name": "abstract", "valueBoolean": false}),
            ],
            std::slice::from_ref(&cs),
        ),
    )
    .await
    .json();
    assert_eq!(param(&p, "result"), Some(&json!(true)), "{p}");
    // CodeSystem/$validate-code: the same rule, without the value set issue.
    let p = post(
        "/fhir/CodeSystem/$validate-code",
        &with_resources(
            vec![
                json!({"name": "url", "valueUri": RENAMED}),
                json!({"name": "code", "valueCode": "group"}),
                json!({"name": "abstract", "valueBoolean": false}),
            ],
            &[cs],
        ),
    )
    .await
    .json();
    assert_eq!(param(&p, "result"), Some(&json!(false)), "{p}");
    assert_eq!(
        validation_issues(&p)
            .iter()
            .map(|i| i.3.as_str())
            .collect::<Vec<_>>(),
        vec![abstract_text.as_str()],
        "{p}"
    );
}

#[tokio::test]
async fn not_selectable_rules_hold_for_a_mapped_register() {
    // ICD-10's chapters and blocks are not selectable (the mapping's `not_selectable`).
    let chapters_and_blocks = |filters: Json| async move {
        let vs = filtered(ICD10, filters);
        post(
            "/fhir/ValueSet/$expand",
            &json!({"resourceType": "Parameters", "parameter": [
                {"name": "valueSet", "resource": vs}, {"name": "count", "valueInteger": 1000}]}),
        )
        .await
        .json()
    };
    let e = chapters_and_blocks(json!([{"property": "notSelectable", "op": "=", "value": "true"}]))
        .await;
    let abstract_codes = codes(&e);
    assert!(!abstract_codes.is_empty(), "{e}");
    assert!(abstract_codes.contains(&"I".to_string()), "{e}");
    assert!(abstract_codes.contains(&"A00-A09".to_string()), "{e}");
    assert!(
        e["expansion"]["contains"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|c| c["abstract"] == true),
        "{e}"
    );
    let selectable =
        chapters_and_blocks(json!([{"property": "notSelectable", "op": "=", "value": "false"}]))
            .await;
    let not_in = chapters_and_blocks(
        json!([{"property": "notSelectable", "op": "not-in", "value": "true"}]),
    )
    .await;
    assert_eq!(codes(&selectable), codes(&not_in));
    assert!(
        codes(&selectable).contains(&"A00".to_string()),
        "{selectable}"
    );
    assert!(
        !codes(&selectable)
            .iter()
            .any(|c| abstract_codes.contains(c))
    );
    // A register states the property for every concept: `exists false` is empty.
    let none = chapters_and_blocks(
        json!([{"property": "notSelectable", "op": "exists", "value": "false"}]),
    )
    .await;
    assert_eq!(none["expansion"]["total"], 0, "{none}");
    let p = post(
        "/fhir/CodeSystem/$validate-code",
        &json!({"resourceType": "Parameters", "parameter": [
            {"name": "url", "valueUri": ICD10}, {"name": "code", "valueCode": "I"},
            {"name": "abstract", "valueBoolean": false}]}),
    )
    .await
    .json();
    assert_eq!(param(&p, "result"), Some(&json!(false)), "{p}");
    assert!(
        validation_issues(&p).iter().any(
            |i| i.3 == format!("Code '{ICD10}#I' is abstract, and not allowed in this context")
        ),
        "{p}"
    );
}

// 5. Fragments.

const FRAGMENT: &str = "http://example.org/fhir/CodeSystem/c2-fragment";

fn fragment_warning(code: &str) -> String {
    format!(
        "Unknown Code '{code}' in the CodeSystem '{FRAGMENT}' version '2.0.0' - note that the code system is labeled as a fragment, so the code may be valid in some other fragment"
    )
}

#[tokio::test]
async fn a_code_a_fragment_does_not_hold_is_valid_with_a_warning_naming_the_fragment() {
    let cs = resource("codesystem-fragment.json");
    // CodeSystem/$validate-code.
    let p = post(
        "/fhir/CodeSystem/$validate-code",
        &with_resources(
            vec![
                json!({"name": "url", "valueUri": FRAGMENT}),
                json!({"name": "code", "valueCode": "elsewhere"}),
            ],
            std::slice::from_ref(&cs),
        ),
    )
    .await
    .json();
    assert_eq!(param(&p, "result"), Some(&json!(true)), "{p}");
    assert_eq!(
        validation_issues(&p),
        vec![(
            "warning".to_string(),
            "code-invalid".to_string(),
            "invalid-code".to_string(),
            fragment_warning("elsewhere")
        )],
        "{p}"
    );
    assert_eq!(param(&p, "message"), None, "a warning only: {p}");
    assert_eq!(param(&p, "system"), Some(&json!(FRAGMENT)), "{p}");
    assert_eq!(param(&p, "version"), Some(&json!("2.0.0")), "{p}");
    // ValueSet/$validate-code over the whole fragment: the same.
    let all = json!({"resourceType": "ValueSet", "url": "http://example.org/fhir/ValueSet/c2-fragment-all",
        "version": "1", "status": "active", "compose": {"include": [{"system": FRAGMENT}]}});
    let p = post(
        "/fhir/ValueSet/$validate-code",
        &with_resources(
            vec![
                json!({"name": "valueSet", "resource": all.clone()}),
                json!({"name": "coding", "valueCoding": {"system": FRAGMENT, "code": "elsewhere"}}),
            ],
            std::slice::from_ref(&cs),
        ),
    )
    .await
    .json();
    assert_eq!(param(&p, "result"), Some(&json!(true)), "{p}");
    assert_eq!(
        validation_issues(&p)
            .iter()
            .map(|i| i.3.clone())
            .collect::<Vec<_>>(),
        vec![fragment_warning("elsewhere")],
        "{p}"
    );
    // A ValueSet that lists its codes does not hold an unlisted one, fragment or not.
    let listed = json!({"resourceType": "ValueSet", "url": "http://example.org/fhir/ValueSet/c2-fragment-listed",
        "version": "1", "status": "active",
        "compose": {"include": [{"system": FRAGMENT, "concept": [{"code": "known1"}]}]}});
    let p = post(
        "/fhir/ValueSet/$validate-code",
        &with_resources(
            vec![
                json!({"name": "valueSet", "resource": listed}),
                json!({"name": "coding", "valueCoding": {"system": FRAGMENT, "code": "elsewhere"}}),
            ],
            std::slice::from_ref(&cs),
        ),
    )
    .await
    .json();
    assert_eq!(param(&p, "result"), Some(&json!(false)), "{p}");
    // The same CodeSystem said to be complete: an unknown code is an error again.
    let mut complete = cs.clone();
    complete["content"] = json!("complete");
    let p = post(
        "/fhir/CodeSystem/$validate-code",
        &with_resources(
            vec![
                json!({"name": "url", "valueUri": FRAGMENT}),
                json!({"name": "code", "valueCode": "elsewhere"}),
            ],
            &[complete],
        ),
    )
    .await
    .json();
    assert_eq!(param(&p, "result"), Some(&json!(false)), "{p}");
    // $expand names the fragment it drew on.
    let e = post(
        "/fhir/ValueSet/$expand",
        &with_resources(vec![json!({"name": "valueSet", "resource": all})], &[cs]),
    )
    .await
    .json();
    let used: Vec<(&str, &str)> = e["expansion"]["parameter"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| Some((p["name"].as_str()?, p["valueUri"].as_str()?)))
        .collect();
    assert!(
        used.contains(&(
            "used-fragment",
            "http://example.org/fhir/CodeSystem/c2-fragment|2.0.0"
        )),
        "{e}"
    );
    assert!(
        used.contains(&(
            "used-codesystem",
            "http://example.org/fhir/CodeSystem/c2-fragment|2.0.0"
        )),
        "{e}"
    );
}

// 7. Languages.

const NO_LANGUAGE: &str = "http://example.org/fhir/CodeSystem/c2-no-language";

#[tokio::test]
async fn an_invalid_display_language_is_a_4xx_invalid_error() {
    let cs = resource("codesystem-no-language.json");
    let vs = json!({"resourceType": "ValueSet", "url": "http://example.org/fhir/ValueSet/c2-no-language",
        "status": "active", "compose": {"include": [{"system": NO_LANGUAGE}]}});
    for (path, first) in [
        (
            "/fhir/ValueSet/$expand",
            json!({"name": "valueSet", "resource": vs.clone()}),
        ),
        (
            "/fhir/ValueSet/$validate-code",
            json!({"name": "valueSet", "resource": vs.clone()}),
        ),
        (
            "/fhir/CodeSystem/$validate-code",
            json!({"name": "url", "valueUri": NO_LANGUAGE}),
        ),
    ] {
        for bad in ["-", "en_GB", "en;q=7"] {
            let r = post(
                path,
                &with_resources(
                    vec![
                        first.clone(),
                        json!({"name": "coding", "valueCoding": {"system": NO_LANGUAGE, "code": "one"}}),
                        json!({"name": "displayLanguage", "valueCode": bad}),
                    ],
                    std::slice::from_ref(&cs),
                ),
            )
            .await;
            assert!(r.status.is_client_error(), "{path} {bad}: {}", r.status);
            let oo = r.json();
            assert_eq!(oo["resourceType"], "OperationOutcome", "{oo}");
            assert_eq!(oo["issue"][0]["code"], "invalid", "{oo}");
            assert_eq!(
                oo["issue"][0]["details"]["text"],
                format!("Invalid displayLanguage: '{bad}'"),
                "{oo}"
            );
        }
        // A well-formed list is accepted.
        let r = post(
            path,
            &with_resources(
                vec![
                    first.clone(),
                    json!({"name": "coding", "valueCoding": {"system": NO_LANGUAGE, "code": "one"}}),
                    json!({"name": "displayLanguage", "valueCode": "de-CH, en;q=0.5"}),
                ],
                std::slice::from_ref(&cs),
            ),
        )
        .await;
        assert!(r.status.is_success(), "{path}: {}", r.text());
    }
}

#[tokio::test]
async fn a_wrong_display_for_a_code_system_without_a_language_says_which_languages_were_checked() {
    let cs = resource("codesystem-no-language.json");
    let vs = json!({"resourceType": "ValueSet", "url": "http://example.org/fhir/ValueSet/c2-no-language",
        "status": "active", "compose": {"include": [{"system": NO_LANGUAGE}]}});
    let coding = json!({"name": "coding", "valueCoding": {"system": NO_LANGUAGE, "code": "one", "display": "Wrong"}});
    // No language asked for: '--'; one asked for: that one (the display counts for any language).
    for (language, checked) in [(None, "--"), (Some("de"), "de")] {
        let mut params = vec![
            json!({"name": "valueSet", "resource": vs.clone()}),
            coding.clone(),
        ];
        if let Some(l) = language {
            params.push(json!({"name": "displayLanguage", "valueCode": l}));
        }
        let p = post(
            "/fhir/ValueSet/$validate-code",
            &with_resources(params, std::slice::from_ref(&cs)),
        )
        .await
        .json();
        let want = format!(
            "Wrong Display Name 'Wrong' for {NO_LANGUAGE}#one. Valid display is 'First' (for the language(s) '{checked}')"
        );
        assert_eq!(param(&p, "result"), Some(&json!(false)), "{p}");
        assert_eq!(param(&p, "message"), Some(&json!(want)), "{p}");
        assert!(
            validation_issues(&p)
                .iter()
                .any(|i| i.2 == "invalid-display" && i.3 == want),
            "{p}"
        );
    }
}

// 2. CodeableConcept validation.

#[tokio::test]
async fn a_codeable_concept_with_an_unknown_code_in_a_known_code_system_is_not_valid() {
    let cs = resource("codesystem-no-language.json");
    let vs = json!({"resourceType": "ValueSet", "url": "http://example.org/fhir/ValueSet/c2-cc",
        "version": "1", "status": "active", "compose": {"include": [{"system": NO_LANGUAGE}]}});
    let validate = |codings: Json| {
        let body = with_resources(
            vec![
                json!({"name": "valueSet", "resource": vs.clone()}),
                json!({"name": "codeableConcept", "valueCodeableConcept": {"coding": codings}}),
            ],
            std::slice::from_ref(&cs),
        );
        async move { post("/fhir/ValueSet/$validate-code", &body).await.json() }
    };
    // One coding in the value set, one unknown in the same (known) CodeSystem.
    let p = validate(json!([
        {"system": NO_LANGUAGE, "code": "one"},
        {"system": NO_LANGUAGE, "code": "zzz", "display": "Mystery"}
    ]))
    .await;
    assert_eq!(param(&p, "result"), Some(&json!(false)), "{p}");
    let unknown = format!("Unknown code 'zzz' in the CodeSystem '{NO_LANGUAGE}' version '1.0.0'");
    let found = validation_issues(&p);
    assert!(
        found.contains(&(
            "error".into(),
            "code-invalid".into(),
            "invalid-code".into(),
            unknown.clone()
        )),
        "{p}"
    );
    // The code outside the value set is named with the display it was sent with.
    assert!(
        found.contains(&(
            "information".into(),
            "code-invalid".into(),
            "this-code-not-in-vs".into(),
            format!("The provided code '{NO_LANGUAGE}#zzz ('Mystery')' was not found in the value set 'http://example.org/fhir/ValueSet/c2-cc|1'")
        )),
        "{p}"
    );
    assert_eq!(param(&p, "message"), Some(&json!(unknown)), "{p}");
    // The coding that was found is the one reported.
    assert_eq!(param(&p, "code"), Some(&json!("one")), "{p}");
    // Both in the value set: valid.
    let p = validate(json!([
        {"system": NO_LANGUAGE, "code": "one"},
        {"system": NO_LANGUAGE, "code": "two"}
    ]))
    .await;
    assert_eq!(param(&p, "result"), Some(&json!(true)), "{p}");
    // A coding of an unknown CodeSystem does not veto one that is in the value set.
    let p = validate(json!([
        {"system": "http://example.org/fhir/CodeSystem/nobody-knows", "code": "x"},
        {"system": NO_LANGUAGE, "code": "one"}
    ]))
    .await;
    assert_eq!(param(&p, "result"), Some(&json!(true)), "{p}");
}

#[tokio::test]
async fn not_in_the_value_set_names_the_code_with_its_version_and_submitted_display() {
    let cs = resource("codesystem-no-language.json");
    let vs = json!({"resourceType": "ValueSet", "url": "http://example.org/fhir/ValueSet/c2-only-one",
        "version": "1", "status": "active",
        "compose": {"include": [{"system": NO_LANGUAGE, "concept": [{"code": "one"}]}]}});
    let p = post(
        "/fhir/ValueSet/$validate-code",
        &with_resources(
            vec![
                json!({"name": "valueSet", "resource": vs}),
                json!({"name": "coding", "valueCoding": {"system": NO_LANGUAGE, "version": "1.0.0", "code": "two", "display": "Second"}}),
            ],
            &[cs],
        ),
    )
    .await
    .json();
    assert_eq!(param(&p, "result"), Some(&json!(false)), "{p}");
    let want = format!(
        "The provided code '{NO_LANGUAGE}|1.0.0#two ('Second')' was not found in the value set 'http://example.org/fhir/ValueSet/c2-only-one|1'"
    );
    assert_eq!(param(&p, "message"), Some(&json!(want)), "{p}");
}

// 6. Expansion limits and paging.

/// A supplied CodeSystem of `n` concepts, `c0001` … (defined in that order).
fn numbered_code_system(n: usize) -> Json {
    let concepts: Vec<Json> = (1..=n)
        .map(|i| json!({"code": format!("c{i:04}"), "display": format!("Concept {i}")}))
        .collect();
    json!({"resourceType": "CodeSystem", "url": "http://example.org/fhir/CodeSystem/c2-numbered",
        "version": "1", "status": "active", "content": "complete", "concept": concepts})
}

#[tokio::test]
async fn supplied_content_gets_the_reference_default_limit_and_registers_keep_theirs() {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use fhir_registers::AppState;
    use std::sync::Arc;

    let dir = tempfile::tempdir().expect("dir").keep();
    let set = crate::support::shipped();
    crate::support::import_fixtures(&set, &dir);
    let mut state = AppState::new(
        fhir_registers::registers::build_registry(&set, &dir, &[]).expect("registry"),
    );
    state.limits.max_unpaged_supplied = 20;
    let state = Arc::new(state);
    let send = |body: Json| {
        let state = state.clone();
        async move {
            let req = Request::post("/fhir/ValueSet/$expand")
                .header("content-type", "application/fhir+json")
                .body(Body::from(body.to_string()))
                .expect("request");
            crate::support::send_to(state, req).await
        }
    };
    let cs = numbered_code_system(30);
    let vs = json!({"resourceType": "ValueSet", "url": "http://example.org/fhir/ValueSet/c2-numbered",
        "status": "active", "compose": {"include": [{"system": "http://example.org/fhir/CodeSystem/c2-numbered"}]}});
    let r = send(with_resources(
        vec![json!({"name": "valueSet", "resource": vs.clone()})],
        std::slice::from_ref(&cs),
    ))
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text());
    let oo = r.json();
    assert_eq!(oo["issue"][0]["code"], "too-costly", "{oo}");
    assert_eq!(
        oo["issue"][0]["details"]["text"],
        "The value set 'http://example.org/fhir/ValueSet/c2-numbered' expansion has too many codes to display (>20)",
        "{oo}"
    );
    // Paged, it is answered.
    let r = send(with_resources(
        vec![
            json!({"name": "valueSet", "resource": vs}),
            json!({"name": "count", "valueInteger": 10}),
            json!({"name": "offset", "valueInteger": 20}),
        ],
        &[cs],
    ))
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let e = r.json();
    assert_eq!(codes(&e).len(), 10, "{e}");
    assert_eq!(e["expansion"]["total"], 30, "{e}");
    // A register's ValueSet larger than the supplied-content limit is still answered whole.
    let icd = json!({"resourceType": "ValueSet", "status": "active",
        "compose": {"include": [{"system": ICD10}]}});
    let r = send(
        json!({"resourceType": "Parameters", "parameter": [{"name": "valueSet", "resource": icd}]}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(codes(&r.json()).len() > 20);
}

#[tokio::test]
async fn pages_are_cut_from_the_code_system_definition_order() {
    // Defined out of code order, with a nested concept.
    let cs = json!({"resourceType": "CodeSystem", "url": "http://example.org/fhir/CodeSystem/c2-ordered",
    "version": "1", "status": "active", "content": "complete", "hierarchyMeaning": "is-a",
    "concept": [
        {"code": "zulu", "display": "Zulu"},
        {"code": "alpha", "display": "Alpha", "concept": [{"code": "mike", "display": "Mike"}]},
        {"code": "bravo", "display": "Bravo"}
    ]});
    let all = json!({"resourceType": "ValueSet", "url": "http://example.org/fhir/ValueSet/c2-ordered",
        "status": "active", "compose": {"include": [{"system": "http://example.org/fhir/CodeSystem/c2-ordered"}]}});
    let expand = |extra: Vec<Json>, vs: Json| {
        let mut params = vec![json!({"name": "valueSet", "resource": vs})];
        params.extend(extra);
        let body = with_resources(params, std::slice::from_ref(&cs));
        async move { post("/fhir/ValueSet/$expand", &body).await.json() }
    };
    let e = expand(vec![], all.clone()).await;
    assert_eq!(codes(&e), vec!["zulu", "alpha", "mike", "bravo"], "{e}");
    let e = expand(
        vec![
            json!({"name": "offset", "valueInteger": 1}),
            json!({"name": "count", "valueInteger": 2}),
        ],
        all,
    )
    .await;
    assert_eq!(codes(&e), vec!["alpha", "mike"], "{e}");
    assert_eq!(e["expansion"]["offset"], 1, "{e}");
    assert_eq!(e["expansion"]["total"], 4, "{e}");
    // A filtered include keeps the same order.
    let not_alpha = json!({"resourceType": "ValueSet", "status": "active",
        "compose": {"include": [{"system": "http://example.org/fhir/CodeSystem/c2-ordered",
            "filter": [{"property": "concept", "op": "is-not-a", "value": "alpha"}]}]}});
    let e = expand(vec![], not_alpha).await;
    assert_eq!(codes(&e), vec!["zulu", "bravo"], "{e}");
}

#[tokio::test]
async fn a_circular_value_set_import_is_a_vs_invalid_error_naming_the_value_set() {
    let cs = resource("codesystem-no-language.json");
    let a = json!({"resourceType": "ValueSet", "url": "http://example.org/fhir/ValueSet/c2-circle-a",
        "status": "active", "compose": {"include": [{"valueSet": ["http://example.org/fhir/ValueSet/c2-circle-b"]}]}});
    let b = json!({"resourceType": "ValueSet", "url": "http://example.org/fhir/ValueSet/c2-circle-b",
        "status": "active", "compose": {"include": [
            {"system": NO_LANGUAGE},
            {"valueSet": ["http://example.org/fhir/ValueSet/c2-circle-a"]}]}});
    for (path, extra) in [
        ("/fhir/ValueSet/$expand", None),
        (
            "/fhir/ValueSet/$validate-code",
            Some(json!({"name": "coding", "valueCoding": {"system": NO_LANGUAGE, "code": "one"}})),
        ),
    ] {
        let mut params = vec![
            json!({"name": "url", "valueUri": "http://example.org/fhir/ValueSet/c2-circle-a"}),
        ];
        params.extend(extra);
        let r = post(
            path,
            &with_resources(params, &[cs.clone(), a.clone(), b.clone()]),
        )
        .await;
        assert_eq!(r.status.as_u16(), 400, "{path}: {}", r.text());
        let oo = r.json();
        assert_eq!(oo["issue"][0]["code"], "processing", "{oo}");
        assert_eq!(
            oo["issue"][0]["details"]["coding"][0]["code"], "vs-invalid",
            "{oo}"
        );
        let text = oo["issue"][0]["details"]["text"].as_str().unwrap_or("");
        assert!(
            text.contains("Circular reference")
                && text.contains("http://example.org/fhir/ValueSet/c2-circle-a"),
            "{oo}"
        );
    }
}

// 3. Several versions of one CodeSystem in one ValueSet.

const VERSIONED: &str = "http://example.org/fhir/CodeSystem/c2-versioned";

fn both_versions(exclude: Option<Json>) -> Json {
    let mut vs = json!({"resourceType": "ValueSet", "url": "http://example.org/fhir/ValueSet/c2-both-versions",
        "version": "1", "status": "active", "compose": {"include": [
            {"system": VERSIONED, "version": "1.0.0"},
            {"system": VERSIONED, "version": "2.0.0"}]}});
    if let Some(x) = exclude {
        vs["compose"]["exclude"] = json!([x]);
    }
    vs
}

async fn validate_in(vs: &Json, coding: Json) -> Json {
    post(
        "/fhir/ValueSet/$validate-code",
        &with_resources(
            vec![
                json!({"name": "valueSet", "resource": vs}),
                json!({"name": "coding", "valueCoding": coding}),
            ],
            &[
                resource("codesystem-versioned-1.json"),
                resource("codesystem-versioned-2.json"),
            ],
        ),
    )
    .await
    .json()
}

#[tokio::test]
async fn an_unversioned_code_is_checked_against_the_newest_included_version_that_has_it() {
    let vs = both_versions(None);
    for (code, version) in [("a", "2.0.0"), ("b", "1.0.0"), ("c", "2.0.0")] {
        let p = validate_in(&vs, json!({"system": VERSIONED, "code": code})).await;
        assert_eq!(param(&p, "result"), Some(&json!(true)), "{code}: {p}");
        assert_eq!(param(&p, "version"), Some(&json!(version)), "{code}: {p}");
    }
    // A code neither version has: reported against the newest, with its version.
    let p = validate_in(&vs, json!({"system": VERSIONED, "code": "zz"})).await;
    assert_eq!(param(&p, "result"), Some(&json!(false)), "{p}");
    assert!(
        validation_issues(&p)
            .iter()
            .any(|i| i.3
                == format!("Unknown code 'zz' in the CodeSystem '{VERSIONED}' version '2.0.0'")),
        "{p}"
    );
}

#[tokio::test]
async fn an_expansion_lists_each_included_version_and_an_exclude_of_one_version_leaves_the_other() {
    let expand = |vs: Json| async move {
        post(
            "/fhir/ValueSet/$expand",
            &with_resources(
                vec![json!({"name": "valueSet", "resource": vs})],
                &[
                    resource("codesystem-versioned-1.json"),
                    resource("codesystem-versioned-2.json"),
                ],
            ),
        )
        .await
        .json()
    };
    let members = |e: &Json| -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = e["expansion"]["contains"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                (
                    c["code"].as_str().unwrap_or("").to_string(),
                    c["version"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let pair = |c: &str, v: &str| (c.to_string(), v.to_string());
    let e = expand(both_versions(None)).await;
    assert_eq!(
        members(&e),
        vec![
            pair("a", "1.0.0"),
            pair("a", "2.0.0"),
            pair("b", "1.0.0"),
            pair("c", "2.0.0")
        ],
        "{e}"
    );
    let used: Vec<&str> = e["expansion"]["parameter"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["name"] == "used-codesystem")
        .filter_map(|p| p["valueUri"].as_str())
        .collect();
    assert!(used.contains(&format!("{VERSIONED}|1.0.0").as_str()), "{e}");
    assert!(used.contains(&format!("{VERSIONED}|2.0.0").as_str()), "{e}");
    // Excluding `a` of 1.0.0 keeps `a` of 2.0.0.
    let vs = both_versions(Some(
        json!({"system": VERSIONED, "version": "1.0.0", "concept": [{"code": "a"}]}),
    ));
    let e = expand(vs.clone()).await;
    assert_eq!(
        members(&e),
        vec![pair("a", "2.0.0"), pair("b", "1.0.0"), pair("c", "2.0.0")],
        "{e}"
    );
    let p = validate_in(&vs, json!({"system": VERSIONED, "code": "a"})).await;
    assert_eq!(param(&p, "result"), Some(&json!(true)), "{p}");
    assert_eq!(param(&p, "version"), Some(&json!("2.0.0")), "{p}");
    let p = validate_in(
        &vs,
        json!({"system": VERSIONED, "version": "1.0.0", "code": "a"}),
    )
    .await;
    assert_eq!(param(&p, "result"), Some(&json!(false)), "{p}");
}

// 4. Supplements.

const SUPPLEMENTED: &str = "http://example.org/fhir/CodeSystem/c2-supplemented";
const SUPPLEMENT: &str = "http://example.org/fhir/CodeSystem/c2-supplement";

/// A ValueSet over the supplemented CodeSystem naming `supplement` with the standard extension.
fn naming_supplement(supplement: &str) -> Json {
    json!({"resourceType": "ValueSet", "url": "http://example.org/fhir/ValueSet/c2-supplemented",
        "version": "1", "status": "active",
        "extension": [{"url": "http://hl7.org/fhir/StructureDefinition/valueset-supplement", "valueCanonical": supplement}],
        "compose": {"include": [{"system": SUPPLEMENTED}]}})
}

fn supplement_resources() -> [Json; 2] {
    [
        resource("codesystem-supplemented.json"),
        resource("codesystem-supplement.json"),
    ]
}

const CONTAINS_PROPERTY: &str =
    "http://hl7.org/fhir/5.0/StructureDefinition/extension-ValueSet.expansion.contains.property";

/// The extensions of one code's `contains` entry in an expansion.
fn contains_extension_list(e: &Json, code: &str) -> Vec<Json> {
    e["expansion"]["contains"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["code"] == code)
        .and_then(|c| c["extension"].as_array())
        .cloned()
        .unwrap_or_default()
}

/// The `value[x]` of an extension (or of a part), whatever its type.
fn value_of(x: &Json) -> Option<&Json> {
    x.as_object()?
        .iter()
        .find(|(k, _)| k.starts_with("value"))
        .map(|(_, v)| v)
}

/// The R5 `contains.property` of one code (carried in R4 as the cross-version extension) as
/// (code, value JSON).
fn contains_properties(e: &Json, code: &str) -> Vec<(String, Json)> {
    contains_extension_list(e, code)
        .iter()
        .filter(|x| x["url"] == CONTAINS_PROPERTY)
        .filter_map(|x| {
            let parts = x["extension"].as_array()?;
            let code = parts.iter().find(|p| p["url"] == "code")?["valueCode"].as_str()?;
            let value = value_of(parts.iter().find(|p| p["url"] == "value[x]")?)?;
            Some((code.to_string(), value.clone()))
        })
        .collect()
}

#[tokio::test]
async fn a_value_set_supplement_is_applied_echoed_and_its_properties_returned() {
    let e = post(
        "/fhir/ValueSet/$expand",
        &with_resources(
            vec![json!({"name": "valueSet", "resource": naming_supplement(&format!("{SUPPLEMENT}|1"))})],
            &supplement_resources(),
        ),
    )
    .await
    .json();
    let parameters = e["expansion"]["parameter"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        parameters
            .iter()
            .any(|p| p["name"] == "used-supplement" && p["valueUri"] == format!("{SUPPLEMENT}|1")),
        "{e}"
    );
    let x = contains_properties(&e, "x");
    assert!(x.contains(&("label".into(), json!("(x)"))), "{e}");
    assert!(x.contains(&("weight".into(), json!(2.5))), "{e}");
    assert!(contains_properties(&e, "y").is_empty(), "{e}");
    // The properties are declared with their concept-properties URIs.
    let declared: Vec<(String, String)> = e["expansion"]["extension"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| {
            let parts = d["extension"].as_array()?;
            Some((
                parts.iter().find(|p| p["url"] == "code")?["valueCode"]
                    .as_str()?
                    .to_string(),
                parts.iter().find(|p| p["url"] == "uri")?["valueUri"]
                    .as_str()?
                    .to_string(),
            ))
        })
        .collect();
    assert!(
        declared.contains(&(
            "label".into(),
            "http://hl7.org/fhir/concept-properties#label".into()
        )),
        "{e}"
    );
    assert!(
        declared.contains(&(
            "weight".into(),
            "http://hl7.org/fhir/concept-properties#itemWeight".into()
        )),
        "{e}"
    );
}

#[tokio::test]
async fn an_unknown_supplement_named_by_a_value_set_is_a_404() {
    for path in ["/fhir/ValueSet/$expand", "/fhir/ValueSet/$validate-code"] {
        let r = post(
            path,
            &with_resources(
                vec![
                    json!({"name": "valueSet", "resource": naming_supplement("http://example.org/fhir/CodeSystem/nope")}),
                    json!({"name": "coding", "valueCoding": {"system": SUPPLEMENTED, "code": "x"}}),
                ],
                &supplement_resources(),
            ),
        )
        .await;
        assert_eq!(r.status.as_u16(), 404, "{path}: {}", r.text());
        let oo = r.json();
        assert_eq!(oo["issue"][0]["code"], "not-found", "{oo}");
        assert_eq!(
            oo["issue"][0]["details"]["text"],
            "Required supplement not found: http://example.org/fhir/CodeSystem/nope",
            "{oo}"
        );
    }
}

#[tokio::test]
async fn a_supplement_is_not_a_coding_system_and_its_designations_count_for_displays() {
    // The supplement's canonical as Coding.system.
    let p = post(
        "/fhir/CodeSystem/$validate-code",
        &with_resources(
            vec![json!({"name": "coding", "valueCoding": {"system": SUPPLEMENT, "code": "x"}})],
            &supplement_resources(),
        ),
    )
    .await
    .json();
    assert_eq!(param(&p, "result"), Some(&json!(false)), "{p}");
    assert_eq!(
        validation_issues(&p),
        vec![(
            "error".to_string(),
            "invalid".to_string(),
            "invalid-data".to_string(),
            format!(
                "CodeSystem {SUPPLEMENT}|1 is a supplement, so can't be used as a value in Coding.system"
            )
        )],
        "{p}"
    );
    // A German display the supplement gives, checked in German.
    let check = |vs: Json| {
        let body = with_resources(
            vec![
                json!({"name": "valueSet", "resource": vs}),
                json!({"name": "coding", "valueCoding": {"system": SUPPLEMENTED, "code": "x", "display": "Iks"}}),
                json!({"name": "displayLanguage", "valueCode": "de"}),
            ],
            &supplement_resources(),
        );
        async move { post("/fhir/ValueSet/$validate-code", &body).await.json() }
    };
    let p = check(naming_supplement(SUPPLEMENT)).await;
    assert_eq!(param(&p, "result"), Some(&json!(true)), "{p}");
    let mut plain = naming_supplement(SUPPLEMENT);
    plain.as_object_mut().expect("object").remove("extension");
    let p = check(plain).await;
    assert_eq!(
        param(&p, "result"),
        Some(&json!(false)),
        "without the supplement: {p}"
    );
}

// 9. Property-filtered $expand on registers at scale: tests/api/packed_filters.rs.

// 5. Status markers and concept extensions.

const MARKED: &str = "http://example.org/fhir/CodeSystem/c2-marked";
const MARKED_SUPPLEMENT: &str = "http://example.org/fhir/CodeSystem/c2-marked-supplement";

fn marked_resources() -> [Json; 2] {
    [
        resource("codesystem-marked.json"),
        resource("codesystem-marked-supplement.json"),
    ]
}

/// The answer to `path` with these parameters and the marked CodeSystem and its supplement
/// supplied.
async fn with_marked(path: &str, params: Vec<Json>) -> Json {
    post(path, &with_resources(params, &marked_resources()))
        .await
        .json()
}

/// `$expand` of `vs` with the marked CodeSystem and its supplement supplied.
async fn expand_marked(vs: Json) -> Json {
    with_marked(
        "/fhir/ValueSet/$expand",
        vec![json!({"name": "valueSet", "resource": vs})],
    )
    .await
}

/// The extensions of one code in an expansion, other than its properties, as (url, value).
fn contains_extensions(e: &Json, code: &str) -> Vec<(String, Json)> {
    contains_extension_list(e, code)
        .iter()
        .filter(|x| x["url"] != CONTAINS_PROPERTY)
        .filter_map(|x| Some((x["url"].as_str()?.to_string(), value_of(x)?.clone())))
        .collect()
}

#[tokio::test]
async fn an_expansion_copies_the_concept_extensions_and_status_the_reference_copies() {
    let vs = json!({"resourceType": "ValueSet", "url": "http://example.org/fhir/ValueSet/c2-marked",
        "version": "1", "status": "active",
        "extension": [{"url": "http://hl7.org/fhir/StructureDefinition/valueset-supplement", "valueCanonical": MARKED_SUPPLEMENT}],
        "compose": {"include": [{"system": MARKED}]}});
    let e = expand_marked(vs).await;
    // Rendering extensions are copied as they are; an extension the reference does not copy is
    // left out.
    assert_eq!(
        contains_extensions(&e, "styled"),
        vec![
            (
                "http://hl7.org/fhir/StructureDefinition/rendering-style".to_string(),
                json!("font-weight: bold")
            ),
            (
                "http://hl7.org/fhir/StructureDefinition/rendering-xhtml".to_string(),
                json!("<b>Styled</b>")
            ),
        ],
        "{e}"
    );
    // A supplement's concept extensions are copied too.
    assert_eq!(
        contains_extensions(&e, "plain"),
        vec![(
            "http://hl7.org/fhir/StructureDefinition/rendering-style".to_string(),
            json!("font-style: italic")
        )],
        "{e}"
    );
    // A deprecated concept, by its standards-status extension or its status property, has the
    // status property without being asked for it; an active one has none.
    for code in ["old", "older"] {
        assert_eq!(
            contains_properties(&e, code),
            vec![("status".to_string(), json!("deprecated"))],
            "{code}: {e}"
        );
    }
    assert!(contains_properties(&e, "styled").is_empty(), "{e}");
    let declared = e["expansion"]["extension"].to_string();
    assert!(
        declared.contains("http://hl7.org/fhir/concept-properties#status"),
        "{e}"
    );
    // `$lookup` does not list the copied extensions as properties.
    let l = with_marked(
        "/fhir/CodeSystem/$lookup",
        vec![
            json!({"name": "system", "valueUri": MARKED}),
            json!({"name": "code", "valueCode": "styled"}),
        ],
    )
    .await;
    assert!(!l.to_string().contains("rendering-style"), "{l}");
    assert_eq!(param(&l, "display"), Some(&json!("Styled")), "{l}");
}

#[tokio::test]
async fn a_listed_concept_keeps_only_the_extensions_the_reference_copies() {
    let vs = json!({"resourceType": "ValueSet", "url": "http://example.org/fhir/ValueSet/c2-marked-listed",
    "version": "1", "status": "active",
    "compose": {"include": [{"system": MARKED, "concept": [
        {"code": "plain", "extension": [
            {"url": "http://hl7.org/fhir/StructureDefinition/valueset-deprecated", "valueBoolean": true},
            {"url": "http://hl7.org/fhir/StructureDefinition/valueset-label", "valueString": "p."},
            {"url": "http://example.org/fhir/StructureDefinition/not-copied", "valueString": "no"}
        ]},
        {"code": "styled", "extension": [
            {"url": "http://hl7.org/fhir/StructureDefinition/valueset-concept-definition", "valueString": "Another definition"}
        ]}
    ]}]}});
    let e = expand_marked(vs).await;
    assert_eq!(
        contains_extensions(&e, "plain"),
        vec![(
            "http://hl7.org/fhir/StructureDefinition/valueset-deprecated".to_string(),
            json!(true)
        )],
        "{e}"
    );
    let styled = contains_extensions(&e, "styled");
    assert!(
        styled.contains(&(
            "http://hl7.org/fhir/StructureDefinition/valueset-concept-definition".to_string(),
            json!("Another definition")
        )),
        "{e}"
    );
    assert!(
        styled
            .iter()
            .any(|(u, _)| u == "http://hl7.org/fhir/StructureDefinition/rendering-style"),
        "{e}"
    );
}

#[tokio::test]
async fn a_deprecated_concept_is_valid_with_the_reference_deprecation_warning() {
    for code in ["old", "older"] {
        let p = with_marked(
            "/fhir/CodeSystem/$validate-code",
            vec![
                json!({"name": "url", "valueUri": MARKED}),
                json!({"name": "code", "valueCode": code}),
            ],
        )
        .await;
        assert_eq!(param(&p, "result"), Some(&json!(true)), "{p}");
        assert_eq!(param(&p, "status"), Some(&json!("deprecated")), "{p}");
        assert_eq!(
            validation_issues(&p),
            vec![(
                "warning".to_string(),
                "business-rule".to_string(),
                "code-comment".to_string(),
                format!("The concept '{code}' is deprecated and its use should be reviewed"),
            )],
            "{p}"
        );
    }
    // An active concept has no such warning.
    let p = with_marked(
        "/fhir/CodeSystem/$validate-code",
        vec![
            json!({"name": "url", "valueUri": MARKED}),
            json!({"name": "code", "valueCode": "plain"}),
        ],
    )
    .await;
    assert!(validation_issues(&p).is_empty(), "{p}");
}

// 6. Version-steering parameters a ValueSet states for itself.

/// A ValueSet over the versioned CodeSystem (the include states `version`, if any) whose
/// compose states the expansion parameter `name` = `value` with the extension `url`.
fn steering(url: &str, name: &str, value: &str, version: Option<&str>) -> Json {
    let mut include = json!({"system": VERSIONED});
    if let Some(v) = version {
        include["version"] = json!(v);
    }
    json!({"resourceType": "ValueSet", "url": "http://example.org/fhir/ValueSet/c2-steering",
        "version": "1", "status": "active",
        "compose": {
            "extension": [{"url": url, "extension": [
                {"url": "name", "valueCode": name},
                {"url": "value", "valueUri": value}]}],
            "include": [include]}})
}

const EXPANSION_PARAMETER: &str =
    "http://hl7.org/fhir/StructureDefinition/valueset-expansion-parameter";
const TOOLS_EXPANSION_PARAMETER: &str =
    "http://hl7.org/fhir/tools/StructureDefinition/valueset-expansion-parameter";

async fn expand_versioned(vs: &Json, extra: Vec<Json>) -> Json {
    let mut params = vec![json!({"name": "valueSet", "resource": vs})];
    params.extend(extra);
    post(
        "/fhir/ValueSet/$expand",
        &with_resources(
            params,
            &[
                resource("codesystem-versioned-1.json"),
                resource("codesystem-versioned-2.json"),
            ],
        ),
    )
    .await
    .json()
}

fn named_parameters(e: &Json, name: &str) -> Vec<String> {
    e["expansion"]["parameter"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["name"] == name)
        .filter_map(|p| p["valueUri"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test]
async fn a_compose_expansion_parameter_steers_the_version_and_is_echoed() {
    let pinned = format!("{VERSIONED}|1.0.0");
    for url in [EXPANSION_PARAMETER, TOOLS_EXPANSION_PARAMETER] {
        let vs = steering(url, "system-version", &pinned, None);
        let e = expand_versioned(&vs, vec![]).await;
        assert_eq!(sorted(codes(&e)), vec!["a", "b"], "{url}: {e}");
        assert_eq!(
            named_parameters(&e, "used-codesystem"),
            vec![pinned.clone()],
            "{e}"
        );
        assert_eq!(
            named_parameters(&e, "system-version"),
            vec![pinned.clone()],
            "{e}"
        );
        // Validation reads it too: `b` is only in 1.0.0.
        let p = validate_in(&vs, json!({"system": VERSIONED, "code": "b"})).await;
        assert_eq!(param(&p, "result"), Some(&json!(true)), "{p}");
        assert_eq!(param(&p, "version"), Some(&json!("1.0.0")), "{p}");
    }
    // The request's own rule for the same CodeSystem wins.
    let vs = steering(EXPANSION_PARAMETER, "system-version", &pinned, None);
    let e = expand_versioned(
        &vs,
        vec![json!({"name": "system-version", "valueUri": format!("{VERSIONED}|2.0.0")})],
    )
    .await;
    assert_eq!(sorted(codes(&e)), vec!["a", "c"], "{e}");
    // `force-system-version` overrides the version the include states.
    let vs = steering(
        EXPANSION_PARAMETER,
        "force-system-version",
        &pinned,
        Some("2.0.0"),
    );
    let e = expand_versioned(&vs, vec![]).await;
    assert_eq!(sorted(codes(&e)), vec!["a", "b"], "{e}");
    assert_eq!(
        named_parameters(&e, "force-system-version"),
        vec![pinned.clone()],
        "{e}"
    );
    // A value that is not `url|version` is the ValueSet's mistake, reported as invalid.
    let vs = steering(EXPANSION_PARAMETER, "system-version", VERSIONED, None);
    let r = post(
        "/fhir/ValueSet/$expand",
        &with_resources(
            vec![json!({"name": "valueSet", "resource": vs})],
            &[resource("codesystem-versioned-1.json")],
        ),
    )
    .await;
    assert_eq!(r.status.as_u16(), 400, "{}", r.text());
    assert!(r.text().contains("url|version"), "{}", r.text());
}

#[tokio::test]
async fn a_concept_status_warning_is_in_the_message_beside_the_errors() {
    let p = with_marked(
        "/fhir/CodeSystem/$validate-code",
        vec![
            json!({"name": "url", "valueUri": MARKED}),
            json!({"name": "code", "valueCode": "old"}),
            json!({"name": "display", "valueString": "Not the display"}),
        ],
    )
    .await;
    assert_eq!(param(&p, "result"), Some(&json!(false)), "{p}");
    let message = param(&p, "message")
        .and_then(Json::as_str)
        .unwrap_or_default()
        .to_string();
    assert!(
        message.contains("The concept 'old' is deprecated and its use should be reviewed"),
        "{p}"
    );
    assert!(
        message.contains("Wrong Display Name 'Not the display'"),
        "{p}"
    );
}

// 7. Batch validation.

#[tokio::test]
async fn a_batch_entry_overrides_the_batch_parameters_and_a_code_outside_the_value_set_gets_its_display_checked()
 {
    let vs = json!({"resourceType": "ValueSet", "url": "http://example.org/fhir/ValueSet/c2-plain-only",
        "version": "1", "status": "active",
        "compose": {"include": [{"system": MARKED, "concept": [{"code": "plain"}]}]}});
    let entry = |params: Vec<Json>| json!({"name": "validation", "resource": {"resourceType": "Parameters", "parameter": params}});
    let b = with_marked(
        "/fhir/ValueSet/$batch-validate-code",
            vec![
                json!({"name": "valueSet", "resource": vs}),
                json!({"name": "lenient-display-validation", "valueBoolean": true}),
                entry(vec![
                    json!({"name": "coding", "valueCoding": {"system": MARKED, "code": "plain", "display": "xx"}}),
                    json!({"name": "lenient-display-validation", "valueBoolean": false}),
                ]),
                entry(vec![
                    json!({"name": "codingX", "valueCoding": {"system": MARKED, "code": "plain"}}),
                ]),
                entry(vec![
                    json!({"name": "coding", "valueCoding": {"system": MARKED, "code": "styled", "display": "xx"}}),
                ]),
            ],
)
.await;
    let results: Vec<Json> = b["parameter"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["name"] == "validation")
        .map(|p| p["resource"].clone())
        .collect();
    assert_eq!(results.len(), 3, "{b}");
    // The entry's own `lenient-display-validation=false` wins over the batch's `true`.
    assert_eq!(param(&results[0], "result"), Some(&json!(false)), "{b}");
    assert!(
        validation_issues(&results[0])
            .iter()
            .any(|i| i.0 == "error" && i.2 == "invalid-display"),
        "{b}"
    );
    // No code to validate: the reference's wording, as an invalid request.
    assert_eq!(results[1]["resourceType"], "OperationOutcome", "{b}");
    assert_eq!(results[1]["issue"][0]["code"], "invalid", "{b}");
    assert!(
        results[1]["issue"][0]["details"]["text"]
            .as_str()
            .unwrap_or_default()
            .starts_with("Unable to find code to validate"),
        "{b}"
    );
    // A code of the CodeSystem that the ValueSet leaves out still has its display checked
    // (leniently, as the batch asks), and the message says both.
    assert_eq!(param(&results[2], "result"), Some(&json!(false)), "{b}");
    assert!(
        validation_issues(&results[2])
            .iter()
            .any(|i| i.0 == "warning" && i.2 == "invalid-display"),
        "{b}"
    );
    let message = param(&results[2], "message")
        .and_then(Json::as_str)
        .unwrap_or_default();
    assert!(message.contains("was not found in the value set"), "{b}");
    assert!(message.contains("Wrong Display Name 'xx'"), "{b}");
}

// 8. Unknown systems.

#[tokio::test]
async fn an_unknown_system_the_value_set_includes_is_the_cause_not_a_missing_member() {
    const NOWHERE: &str = "http://example.org/fhir/CodeSystem/c2-nowhere";
    let vs = json!({"resourceType": "ValueSet", "url": "http://example.org/fhir/ValueSet/c2-nowhere",
        "version": "1", "status": "active", "compose": {"include": [{"system": NOWHERE}]}});
    let validate = |system: &'static str| {
        let vs = vs.clone();
        async move {
            post(
                "/fhir/ValueSet/$validate-code",
                &with_resources(
                    vec![
                        json!({"name": "valueSet", "resource": vs}),
                        json!({"name": "system", "valueUri": system}),
                        json!({"name": "code", "valueCode": "x"}),
                    ],
                    &[],
                ),
            )
            .await
            .json()
        }
    };
    // The system the ValueSet includes: only the unknown system, as the cause.
    let p = validate(NOWHERE).await;
    assert_eq!(param(&p, "result"), Some(&json!(false)), "{p}");
    assert_eq!(
        validation_issues(&p)
            .iter()
            .map(|i| (i.1.as_str(), i.2.as_str()))
            .collect::<Vec<_>>(),
        vec![("not-found", "not-found")],
        "{p}"
    );
    assert_eq!(
        param(&p, "x-caused-by-unknown-system"),
        Some(&json!(NOWHERE)),
        "{p}"
    );
    assert_eq!(param(&p, "x-unknown-system"), None, "{p}");
    // Another unknown system: not in the ValueSet, and unknown.
    let p = validate("http://example.org/fhir/CodeSystem/c2-elsewhere").await;
    assert_eq!(param(&p, "result"), Some(&json!(false)), "{p}");
    let types: Vec<String> = validation_issues(&p).into_iter().map(|i| i.2).collect();
    assert!(types.contains(&"not-in-vs".to_string()), "{p}");
    assert!(types.contains(&"not-found".to_string()), "{p}");
    assert_eq!(
        param(&p, "x-unknown-system"),
        Some(&json!("http://example.org/fhir/CodeSystem/c2-elsewhere")),
        "{p}"
    );
}

#[tokio::test]
async fn a_value_set_or_a_local_reference_as_a_coding_system_is_reported_as_such() {
    let vs = json!({"resourceType": "ValueSet", "url": "http://example.org/fhir/ValueSet/c2-marked-all",
        "version": "1", "status": "active", "compose": {"include": [{"system": MARKED}]}});
    let validate = |system: &'static str| {
        let vs = vs.clone();
        async move {
            post(
                "/fhir/ValueSet/$validate-code",
                &with_resources(
                    vec![
                        json!({"name": "url", "valueUri": "http://example.org/fhir/ValueSet/c2-marked-all"}),
                        json!({"name": "coding", "valueCoding": {"system": system, "code": "plain"}}),
                    ],
                    &[vs, resource("codesystem-marked.json")],
                ),
            )
            .await
            .json()
        }
    };
    let texts =
        |p: &Json| -> Vec<String> { validation_issues(p).into_iter().map(|i| i.3).collect() };
    // A ValueSet's canonical: the wrong kind of thing, not an unknown system.
    let p = validate("http://example.org/fhir/ValueSet/c2-marked-all").await;
    assert_eq!(param(&p, "result"), Some(&json!(false)), "{p}");
    assert!(
        texts(&p).contains(
            &"The Coding references a value set, not a code system ('http://example.org/fhir/ValueSet/c2-marked-all')"
                .to_string()
        ),
        "{p}"
    );
    assert!(
        !texts(&p)
            .iter()
            .any(|t| t.starts_with("A definition for CodeSystem")),
        "{p}"
    );
    assert_eq!(param(&p, "x-unknown-system"), None, "{p}");
    // A local reference: said, beside the system being unknown.
    let p = validate("Local1").await;
    assert_eq!(param(&p, "result"), Some(&json!(false)), "{p}");
    let t = texts(&p);
    assert!(
        t.contains(
            &"Coding.system must be an absolute reference, not a local reference".to_string()
        ),
        "{p}"
    );
    assert!(
        t.iter()
            .any(|t| t.starts_with("A definition for CodeSystem 'Local1'")),
        "{p}"
    );
}

#[tokio::test]
async fn an_unknown_system_with_a_version_is_named_with_it() {
    let p = post(
        "/fhir/CodeSystem/$validate-code",
        &json!({"resourceType": "Parameters", "parameter": [
            {"name": "coding", "valueCoding": {"system": "http://example.org/fhir/CodeSystem/c2-nowhere", "version": "1.2", "code": "x"}}
        ]}),
    )
    .await
    .json();
    assert_eq!(param(&p, "result"), Some(&json!(false)), "{p}");
    assert!(
        validation_issues(&p).iter().any(|i| i.3
            == "A definition for CodeSystem 'http://example.org/fhir/CodeSystem/c2-nowhere' version '1.2' could not be found, so the code cannot be validated. No versions of this code system are known"),
        "{p}"
    );
}

#[tokio::test]
async fn membership_only_says_whether_codes_are_in_the_value_set_and_nothing_else() {
    let vs = json!({"resourceType": "ValueSet", "url": "http://example.org/fhir/ValueSet/c2-plain-only",
        "version": "1", "status": "active",
        "compose": {"include": [{"system": MARKED, "concept": [{"code": "plain"}]}]}});
    let validate = |membership_only: bool| {
        let vs = vs.clone();
        async move {
            with_marked(
                "/fhir/ValueSet/$validate-code",
                vec![
                    json!({"name": "valueSet", "resource": vs}),
                    json!({"name": "valueset-membership-only", "valueBoolean": membership_only}),
                    json!({"name": "codeableConcept", "valueCodeableConcept": {"coding": [
                            {"system": MARKED, "code": "styled", "display": "xx"},
                            {"system": MARKED, "code": "nothing"}]}}),
                ],
            )
            .await
        }
    };
    let p = validate(true).await;
    assert_eq!(param(&p, "result"), Some(&json!(false)), "{p}");
    let types: Vec<String> = validation_issues(&p).into_iter().map(|i| i.2).collect();
    assert!(types.contains(&"this-code-not-in-vs".to_string()), "{p}");
    assert!(!types.contains(&"invalid-code".to_string()), "{p}");
    assert!(!types.contains(&"invalid-display".to_string()), "{p}");
    assert_eq!(param(&p, "version"), None, "{p}");
    // Without it, the unknown code and the wrong display are said too.
    let p = validate(false).await;
    let types: Vec<String> = validation_issues(&p).into_iter().map(|i| i.2).collect();
    assert!(types.contains(&"invalid-code".to_string()), "{p}");
    assert!(types.contains(&"invalid-display".to_string()), "{p}");
}

/// Item 8: issues carry `expression` and not the deprecated `location`, as the reference writes
/// them, in `$validate-code` answers and in an invalid ValueSet's OperationOutcome.
#[tokio::test]
async fn issues_carry_expression_without_location() {
    let answer = post(
        "/fhir/CodeSystem/$validate-code",
        &json!({"resourceType": "Parameters", "parameter": [
            {"name": "url", "valueUri": ICD10},
            {"name": "code", "valueCode": "A00.0"},
            {"name": "display", "valueString": "Not the display"}
        ]}),
    )
    .await
    .json();
    let issues = answer["parameter"]
        .as_array()
        .expect("parameters")
        .iter()
        .find(|p| p["name"] == "issues")
        .map(|p| p["resource"]["issue"].clone())
        .expect("issues");
    let display = issues
        .as_array()
        .expect("issue list")
        .iter()
        .find(|i| i["details"]["coding"][0]["code"] == "invalid-display")
        .unwrap_or_else(|| panic!("a wrong-display issue: {issues}"));
    assert_eq!(display["expression"], json!(["display"]), "{display}");
    assert!(display.get("location").is_none(), "{display}");

    // An invalid compose: the error's path is in `expression` only.
    let vs = json!({"resourceType": "ValueSet", "url": "http://example.org/fhir/ValueSet/c2-no-value",
        "status": "active", "compose": {"include": [{"system": ICD10,
            "filter": [{"property": "concept", "op": "is-a"}]}]}});
    let resp = post(
        "/fhir/ValueSet/$expand",
        &json!({"resourceType": "Parameters", "parameter": [{"name": "valueSet", "resource": vs}]}),
    )
    .await;
    assert_eq!(resp.status.as_u16(), 400, "{}", resp.text());
    let oo = resp.json();
    let issue = &oo["issue"][0];
    assert_eq!(
        issue["expression"],
        json!(["ValueSet.compose.include[0].filter[0]"]),
        "{oo}"
    );
    assert!(issue.get("location").is_none(), "{oo}");
}

/// A CodeSystem whose designations carry extensions: a withdrawn one, and one with a SNOMED CT
/// description id.
fn designated_code_system() -> Json {
    json!({"resourceType": "CodeSystem", "url": "http://example.org/fhir/CodeSystem/c2-designated",
    "version": "1", "status": "active", "content": "complete",
    "concept": [
        {"code": "k1", "display": "Kestrel", "designation": [
            {"language": "de", "value": "Turmfalke", "extension": [
                {"url": "http://hl7.org/fhir/StructureDefinition/coding-sctdescid", "valueId": "1001"}]},
            {"language": "de", "value": "Rüttelfalke", "extension": [
                {"url": "http://hl7.org/fhir/StructureDefinition/structuredefinition-standards-status", "valueCode": "withdrawn"}]}
        ]},
        {"code": "k2", "display": "Merlin"}
    ]})
}

/// Item 4, designations: a display that matches only a withdrawn designation is still valid,
/// with the reference's `INACTIVE_DISPLAY_FOUND` warning naming the status and the displays in
/// use; a current designation gets no warning.
#[tokio::test]
async fn a_display_that_only_a_withdrawn_designation_has_is_valid_with_the_reference_warning() {
    let validate = |display: &str| {
        with_resources(
            vec![
                json!({"name": "url", "valueUri": "http://example.org/fhir/CodeSystem/c2-designated"}),
                json!({"name": "code", "valueCode": "k1"}),
                json!({"name": "display", "valueString": display}),
            ],
            &[designated_code_system()],
        )
    };
    let answer = post("/fhir/CodeSystem/$validate-code", &validate("Rüttelfalke"))
        .await
        .json();
    assert_eq!(param(&answer, "result"), Some(&json!(true)), "{answer}");
    assert_eq!(
        validation_issues(&answer),
        vec![(
            "warning".to_string(),
            "invalid".to_string(),
            "display-comment".to_string(),
            "'Rüttelfalke' is no longer considered a correct display for code 'k1' (status = withdrawn). The correct display is one of Kestrel,Turmfalke".to_string()
        )]
    );
    let issues = param(&answer, "issues").expect("issues");
    assert_eq!(
        issues["issue"][0]["expression"],
        json!(["display"]),
        "{answer}"
    );
    // A current designation, and the display itself: no warning.
    for display in ["Turmfalke", "Kestrel"] {
        let answer = post("/fhir/CodeSystem/$validate-code", &validate(display))
            .await
            .json();
        assert!(validation_issues(&answer).is_empty(), "{display}: {answer}");
    }
}

/// Item 4, designations in expansions: a CodeSystem designation keeps its extensions; the
/// ValueSet's own designations of a listed concept follow, with only the extensions the
/// reference keeps; and the ValueSet's order and label for a listed concept win over the
/// CodeSystem's.
#[tokio::test]
async fn expansions_carry_designation_extensions_and_the_value_sets_own_designations() {
    let vs = json!({"resourceType": "ValueSet", "url": "http://example.org/fhir/ValueSet/c2-designated",
    "status": "active", "compose": {"include": [{"system": "http://example.org/fhir/CodeSystem/c2-designated",
        "concept": [
            {"code": "k1"},
            {"code": "k2", "extension": [
                {"url": "http://hl7.org/fhir/StructureDefinition/valueset-conceptOrder", "valueInteger": 7},
                {"url": "http://hl7.org/fhir/StructureDefinition/valueset-label", "valueString": "b)"}],
             "designation": [{"language": "fr", "value": "Faucon émerillon", "extension": [
                {"url": "http://hl7.org/fhir/StructureDefinition/coding-sctdescid", "valueId": "2002"},
                {"url": "http://example.org/fhir/StructureDefinition/ignored", "valueString": "x"}]}]}
        ]}]}});
    let e = post(
        "/fhir/ValueSet/$expand",
        &with_resources(
            vec![
                json!({"name": "valueSet", "resource": vs}),
                json!({"name": "includeDesignations", "valueBoolean": true}),
            ],
            &[designated_code_system()],
        ),
    )
    .await
    .json();
    let contains = e["expansion"]["contains"].as_array().expect("contains");
    let k1 = contains.iter().find(|c| c["code"] == "k1").expect("k1");
    let withdrawn = k1["designation"]
        .as_array()
        .expect("designations")
        .iter()
        .find(|d| d["value"] == "Rüttelfalke")
        .unwrap_or_else(|| panic!("{k1}"));
    assert_eq!(
        withdrawn["extension"][0]["valueCode"], "withdrawn",
        "{withdrawn}"
    );
    let k2 = contains.iter().find(|c| c["code"] == "k2").expect("k2");
    assert_eq!(
        k2["designation"],
        json!([{"language": "fr", "value": "Faucon émerillon", "extension": [
            {"url": "http://hl7.org/fhir/StructureDefinition/coding-sctdescid", "valueId": "2002"}]}]),
        "{k2}"
    );
    let props = contains_properties(&e, "k2");
    assert!(
        props.contains(&("order".to_string(), json!(7))),
        "{props:?}"
    );
    assert!(
        props.contains(&("label".to_string(), json!("b)"))),
        "{props:?}"
    );
}

/// `$lookup` answered in compact JSON is written straight to bytes; pretty JSON is rendered from
/// the parameters built as parts. Both give the same resource, with designations (the
/// CodeSystem's own, in two languages with a use and extensions, and a supplement's, with its
/// source), a hierarchy, and the supplement's properties.
#[tokio::test]
async fn lookup_in_compact_and_pretty_json_gives_the_same_parameters() {
    const SYSTEM: &str = "http://example.org/fhir/CodeSystem/c2-designated";
    const SUPPLEMENT: &str = "http://example.org/fhir/CodeSystem/c2-designated-de";
    let cs = json!({"resourceType": "CodeSystem", "url": SYSTEM, "version": "1", "status": "active",
        "language": "en", "content": "complete", "hierarchyMeaning": "is-a",
        "property": [{"code": "rank", "type": "integer"}, {"code": "kind", "type": "code"}],
        "concept": [{"code": "top", "display": "Top \"quoted\"", "definition": "The top",
            "designation": [
                {"language": "fr", "use": {"system": "http://snomed.info/sct", "code": "900000000000013009", "display": "Synonym"}, "value": "Haut"},
                {"language": "en-GB", "value": "Uppermost",
                 "extension": [{"url": "http://hl7.org/fhir/StructureDefinition/coding-sctdescid", "valueId": "12345"}]}],
            "property": [{"code": "rank", "valueInteger": 1}, {"code": "kind", "valueCode": "root"}],
            "concept": [{"code": "below", "display": "Below", "property": [{"code": "rank", "valueInteger": -2}]}]}]});
    let supplement = json!({"resourceType": "CodeSystem", "url": SUPPLEMENT, "version": "2", "status": "active",
        "content": "supplement", "supplements": format!("{SYSTEM}|1"),
        "property": [{"code": "note", "type": "string"}],
        "concept": [{"code": "below", "designation": [{"language": "de", "value": "Unten"}],
            "property": [{"code": "note", "valueString": "from the supplement"}]}]});
    let mut designations = 0;
    for code in ["top", "below"] {
        for extra in [
            vec![],
            vec![json!({"name": "displayLanguage", "valueCode": "de"})],
            vec![
                json!({"name": "property", "valueCode": "designation"}),
                json!({"name": "property", "valueCode": "parent"}),
            ],
        ] {
            let mut params = vec![
                json!({"name": "system", "valueUri": SYSTEM}),
                json!({"name": "code", "valueCode": code}),
                json!({"name": "useSupplement", "valueCanonical": SUPPLEMENT}),
            ];
            params.extend(extra.clone());
            let body = with_resources(params, &[cs.clone(), supplement.clone()]);
            let compact = post("/fhir/CodeSystem/$lookup?_format=json", &body).await;
            let pretty = post("/fhir/CodeSystem/$lookup?_format=json&_pretty=true", &body).await;
            assert_eq!(compact.status.as_u16(), 200, "{}", compact.text());
            assert!(pretty.text().contains("\n  "), "pretty JSON is indented");
            assert!(!compact.text().contains('\n'), "compact JSON is one line");
            assert_eq!(compact.json(), pretty.json(), "{code} {extra:?}");
            designations += all_parts(&compact.json(), "designation").len();
            if code == "below" && extra.is_empty() {
                let p = compact.json();
                let text = compact.text();
                assert!(text.contains("\"valueCanonical\":\"http://example.org/fhir/CodeSystem/c2-designated-de|2\""), "{text}");
                assert!(
                    text.contains("\"valueString\":\"from the supplement\""),
                    "{text}"
                );
                assert!(param(&p, "used-supplement").is_some(), "{text}");
            }
        }
    }
    assert!(designations >= 6, "{designations} designations compared");
}
