//! Read, search, metadata and `$subsumes`.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value as Json, json};

use super::support::*;

const ODS: &str = "https://fhir.nhs.uk/Id/ods-organization-code";
const ICD10: &str = "http://hl7.org/fhir/sid/icd-10";

#[tokio::test]
async fn small_code_system_is_read_with_concepts_and_summary_drops_them() {
    let cs = get("/fhir/CodeSystem/icd-10").await.json();
    assert_eq!(cs["resourceType"], "CodeSystem");
    assert_eq!(cs["url"], ICD10);
    let n = cs["concept"].as_array().expect("concepts").len();
    assert_eq!(cs["count"], n);
    assert_eq!(n, 363);
    let j459 = cs["concept"]
        .as_array()
        .expect("c")
        .iter()
        .find(|c| c["code"] == "J45.9")
        .expect("J45.9");
    assert!(
        j459["property"]
            .as_array()
            .expect("p")
            .contains(&json!({"code": "parent", "valueCode": "J45"}))
    );
    let summary = get("/fhir/CodeSystem/icd-10?_summary=true").await.json();
    assert!(summary.get("concept").is_none());
    assert_eq!(summary["meta"]["tag"][0]["code"], "SUBSETTED");
    assert_eq!(summary["count"], 363);
}

#[tokio::test]
async fn every_version_is_readable_and_searchable() {
    let bundle = get(&format!("/fhir/CodeSystem?url={}", enc(ODS)))
        .await
        .json();
    assert_eq!(bundle["type"], "searchset");
    assert_eq!(bundle["total"], 3);
    let ids: Vec<&str> = bundle["entry"]
        .as_array()
        .expect("e")
        .iter()
        .map(|e| e["resource"]["id"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        ids,
        vec![
            "ods-organization-code--2020-01-01",
            "ods-organization-code--2020-10-01",
            "ods-organization-code"
        ]
    );
    assert!(
        bundle["entry"][0]["resource"].get("concept").is_none(),
        "search returns summaries"
    );
    let old = get("/fhir/CodeSystem/ods-organization-code--2020-01-01")
        .await
        .json();
    assert_eq!(old["version"], "2020-01-01");
    let epraccur_rows = ods_rows("ods/epraccur_2020-01_slice.csv").len();
    assert_eq!(old["count"], epraccur_rows);
    let by_version = get(&format!(
        "/fhir/CodeSystem?url={}&version=2020-10-01",
        enc(ODS)
    ))
    .await
    .json();
    assert_eq!(by_version["total"], 1);
    let by_name = get("/fhir/CodeSystem?name=icd").await.json();
    assert_eq!(by_name["total"], 1);
    let count = get("/fhir/CodeSystem?_summary=count").await.json();
    assert_eq!(count["total"], 7);
    assert!(count.get("entry").is_none());
    let vs = get("/fhir/ValueSet/ods-gp-practices").await.json();
    assert_eq!(vs["compose"]["include"][0]["system"], ODS);
    let vs_search = get("/fhir/ValueSet?title=ODS").await.json();
    assert!(vs_search["total"].as_u64().expect("n") >= 5);
    assert_eq!(
        get("/fhir/CodeSystem/nope").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get("/fhir/ValueSet/nope").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get("/fhir/CodeSystem?_count=x").await.status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn capability_statement_advertises_only_routes_that_exist() {
    let cs = get("/fhir/metadata").await.json();
    let mut shown = cs.clone();
    shown["software"]["version"] = serde_json::json!("[version]");
    insta::assert_snapshot!("capability_statement", pretty(&shown));
    for resource in cs["rest"][0]["resource"].as_array().expect("resources") {
        let kind = resource["type"].as_str().expect("type");
        for op in resource["operation"].as_array().expect("ops") {
            let name = op["name"].as_str().expect("name");
            for method in ["GET", "POST"] {
                let req = Request::builder()
                    .method(method)
                    .uri(format!("/fhir/{kind}/${name}"))
                    .body(Body::empty())
                    .expect("req");
                let r = send_to(state(), req).await;
                assert!(
                    r.status != StatusCode::NOT_FOUND && r.status != StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {kind}/${name} is advertised but answers {}",
                    r.status
                );
            }
        }
        let r = get(&format!("/fhir/{kind}")).await;
        assert_eq!(r.status, StatusCode::OK, "search-type on {kind}");
    }
}

#[tokio::test]
async fn subsumes_follows_the_hierarchy() {
    let ask = |a: &str, b: &str| {
        format!(
            "/fhir/CodeSystem/$subsumes?system={}&codeA={}&codeB={}",
            enc(ICD10),
            enc(a),
            enc(b)
        )
    };
    for (a, b, outcome) in [
        ("J45", "J45.9", "subsumes"),
        ("J45.9", "J40-J47", "subsumed-by"),
        ("J45.9", "J45.9", "equivalent"),
        ("J45.9", "J44.1", "not-subsumed"),
        ("X", "J45.9", "subsumes"),
    ] {
        let p = get(&ask(a, b)).await.json();
        assert_eq!(param(&p, "outcome"), Some(&json!(outcome)), "{a} vs {b}");
    }
    let ods = get(&format!(
        "/fhir/CodeSystem/$subsumes?system={}&codeA=00K&codeB=A81001",
        enc(ODS)
    ))
    .await
    .json();
    assert_eq!(
        param(&ods, "outcome"),
        Some(&json!("subsumes")),
        "a commissioner subsumes its practices"
    );
    assert_eq!(get(&ask("J45", "NOPE")).await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        get("/fhir/CodeSystem/$subsumes?codeA=J45").await.status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn resources_supplied_with_a_request_are_used_for_that_request_only() {
    let cs = json!({"resourceType": "CodeSystem", "url": "http://example.org/cs/colours", "version": "1", "status": "active", "content": "complete",
        "concept": [{"code": "red", "display": "Red", "concept": [{"code": "crimson", "display": "Crimson"}]}, {"code": "blue", "display": "Blue"}]});
    let vs = json!({"resourceType": "ValueSet", "url": "http://example.org/vs/reds", "status": "active",
        "compose": {"include": [{"system": "http://example.org/cs/colours", "filter": [{"property": "concept", "op": "is-a", "value": "red"}]}]}});
    let with = |mut params: Vec<serde_json::Value>| {
        params.push(json!({"name": "tx-resource", "resource": cs.clone()}));
        params.push(json!({"name": "tx-resource", "resource": vs.clone()}));
        json!({"resourceType": "Parameters", "parameter": params})
    };
    let p = post(
        "/fhir/CodeSystem/$lookup",
        &with(vec![
            json!({"name": "system", "valueUri": "http://example.org/cs/colours"}),
            json!({"name": "code", "valueCode": "crimson"}),
        ]),
    )
    .await
    .json();
    assert_eq!(param(&p, "display"), Some(&json!("Crimson")));
    assert!(properties(&p).contains(&("parent".into(), json!("red"))));
    let e = post(
        "/fhir/ValueSet/$expand",
        &with(vec![
            json!({"name": "url", "valueUri": "http://example.org/vs/reds"}),
        ]),
    )
    .await
    .json();
    // In the CodeSystem's definition order (red, then its child crimson).
    assert_eq!(codes(&e), vec!["red", "crimson"]);
    let v = post(
        "/fhir/ValueSet/$validate-code",
        &with(vec![
            json!({"name": "url", "valueUri": "http://example.org/vs/reds"}),
            json!({"name": "system", "valueUri": "http://example.org/cs/colours"}),
            json!({"name": "code", "valueCode": "blue"}),
        ]),
    )
    .await
    .json();
    assert_eq!(param(&v, "result"), Some(&json!(false)));
    let later = get("/fhir/CodeSystem/$lookup?system=http://example.org/cs/colours&code=red").await;
    assert_eq!(
        later.status,
        StatusCode::NOT_FOUND,
        "not kept after the request"
    );
}

#[tokio::test]
async fn a_supplement_adds_designations_only_when_a_request_uses_it() {
    let cs = json!({"resourceType": "CodeSystem", "url": "http://example.org/cs/colours", "status": "active", "content": "complete",
        "concept": [{"code": "red", "display": "Red"}]});
    let supplement = json!({"resourceType": "CodeSystem", "url": "http://example.org/cs/colours-nl", "version": "2", "status": "active",
        "content": "supplement", "supplements": "http://example.org/cs/colours",
        "concept": [{"code": "red", "designation": [{"language": "nl", "value": "Rood"}]}]});
    let with = |mut params: Vec<Json>| {
        params.push(json!({"name": "tx-resource", "resource": cs.clone()}));
        params.push(json!({"name": "tx-resource", "resource": supplement.clone()}));
        json!({"resourceType": "Parameters", "parameter": params})
    };
    let lookup = |extra: Option<&str>| {
        let mut params = vec![
            json!({"name": "system", "valueUri": "http://example.org/cs/colours"}),
            json!({"name": "code", "valueCode": "red"}),
        ];
        if let Some(s) = extra {
            params.push(json!({"name": "useSupplement", "valueCanonical": s}));
        }
        with(params)
    };
    let designations = |p: &Json| -> Vec<Json> {
        p["parameter"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|x| x["name"] == "designation")
            .cloned()
            .collect()
    };

    let plain = post("/fhir/CodeSystem/$lookup", &lookup(None)).await.json();
    assert!(designations(&plain).is_empty(), "{plain}");
    assert_eq!(param(&plain, "used-supplement"), None);

    let used = post(
        "/fhir/CodeSystem/$lookup",
        &lookup(Some("http://example.org/cs/colours-nl")),
    )
    .await
    .json();
    assert_eq!(
        designations(&used),
        vec![json!({"name": "designation", "part": [
            {"name": "language", "valueCode": "nl"},
            {"name": "source", "valueCanonical": "http://example.org/cs/colours-nl|2"},
            {"name": "value", "valueString": "Rood"}
        ]})]
    );
    assert_eq!(
        param(&used, "used-supplement"),
        Some(&json!("http://example.org/cs/colours-nl|2"))
    );

    let validate = |extra: Option<&str>| {
        let mut params = vec![
            json!({"name": "url", "valueUri": "http://example.org/cs/colours"}),
            json!({"name": "code", "valueCode": "red"}),
            json!({"name": "display", "valueString": "Rood"}),
        ];
        if let Some(s) = extra {
            params.push(json!({"name": "useSupplement", "valueCanonical": s}));
        }
        with(params)
    };
    let without = post("/fhir/CodeSystem/$validate-code", &validate(None))
        .await
        .json();
    assert_eq!(param(&without, "result"), Some(&json!(false)));
    let with_it = post(
        "/fhir/CodeSystem/$validate-code",
        &validate(Some("http://example.org/cs/colours-nl")),
    )
    .await
    .json();
    assert_eq!(param(&with_it, "result"), Some(&json!(true)), "{with_it}");

    let missing = post(
        "/fhir/CodeSystem/$lookup",
        &lookup(Some("http://example.org/cs/colours-fr")),
    )
    .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(
        missing.json()["issue"][0]["details"]["text"],
        json!("Required supplement not found: http://example.org/cs/colours-fr")
    );
}

#[tokio::test]
async fn a_batch_runs_each_entry_and_reports_each_status() {
    let bundle = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": "CodeSystem/$lookup?system=http://hl7.org/fhir/sid/icd-10&code=J45.9"}},
        {"request": {"method": "GET", "url": "CodeSystem/$lookup?system=http://hl7.org/fhir/sid/icd-10&code=NOPE"}},
        {"request": {"method": "POST", "url": "ValueSet/$validate-code"}, "resource": {"resourceType": "Parameters", "parameter": [
            {"name": "url", "valueUri": "https://fhir-registers.org/fhir/ValueSet/icd-10-chapter-x"},
            {"name": "coding", "valueCoding": {"system": ICD10, "code": "A00"}}]}}
    ]});
    let r = post("/fhir", &bundle).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let b = r.json();
    assert_eq!(b["type"], "batch-response");
    let statuses: Vec<&str> = b["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["response"]["status"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(statuses, vec!["200 OK", "404 Not Found", "200 OK"]);
    assert_eq!(
        param(&b["entry"][0]["resource"], "display"),
        Some(&json!("Asthma, unspecified"))
    );
    assert_eq!(
        b["entry"][1]["response"]["outcome"]["resourceType"],
        "OperationOutcome"
    );
    assert_eq!(
        param(&b["entry"][2]["resource"], "result"),
        Some(&json!(false))
    );
    let shown = {
        let mut s = b.clone();
        s["entry"][0]["resource"] = json!("[lookup]");
        s
    };
    insta::assert_snapshot!("batch_response", pretty(&shown));
    let not_batch = post(
        "/fhir",
        &json!({"resourceType": "Bundle", "type": "transaction"}),
    )
    .await;
    assert_eq!(not_batch.status, StatusCode::BAD_REQUEST);
    let versions = get("/fhir/$versions").await.json();
    assert_eq!(param(&versions, "default"), Some(&json!("4.0")));
}

#[tokio::test]
async fn batch_validate_code_checks_every_coding() {
    let p = post("/fhir/ValueSet/$batch-validate-code", &json!({"resourceType": "Parameters", "parameter": [
        {"name": "url", "valueUri": "https://fhir-registers.org/fhir/ValueSet/icd-10-chapter-x"},
        {"name": "validation", "resource": {"resourceType": "Parameters", "parameter": [{"name": "coding", "valueCoding": {"system": ICD10, "code": "J45.9"}}]}},
        {"name": "validation", "resource": {"resourceType": "Parameters", "parameter": [{"name": "coding", "valueCoding": {"system": ICD10, "code": "A00"}}]}}
    ]})).await.json();
    let results: Vec<Json> = p["parameter"]
        .as_array()
        .expect("p")
        .iter()
        .map(|v| param(&v["resource"], "result").cloned().unwrap_or_default())
        .collect();
    assert_eq!(results, vec![json!(true), json!(false)]);
}

#[tokio::test]
async fn terminology_capabilities_list_code_systems_with_their_versions() {
    let tc = get("/fhir/metadata?mode=terminology").await.json();
    assert_eq!(tc["resourceType"], "TerminologyCapabilities");
    let ods = tc["codeSystem"]
        .as_array()
        .expect("systems")
        .iter()
        .find(|c| c["uri"] == ODS)
        .expect("ODS");
    let versions: Vec<&str> = ods["version"]
        .as_array()
        .expect("v")
        .iter()
        .map(|v| v["code"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(versions, vec!["2020-01-01", "2020-10-01", "2024-07-01"]);
    assert_eq!(ods["version"][2]["isDefault"], true);
    let params: Vec<&str> = tc["expansion"]["parameter"]
        .as_array()
        .expect("p")
        .iter()
        .map(|p| p["name"].as_str().unwrap_or(""))
        .collect();
    assert!(params.contains(&"filter") || params.contains(&"count"));
    insta::assert_snapshot!("terminology_capabilities", pretty(&tc));
    assert_eq!(
        get("/fhir/metadata?mode=bogus").await.status,
        StatusCode::BAD_REQUEST
    );
    let xml = get("/fhir/metadata?mode=terminology&_format=xml").await;
    assert_eq!(xml.status, StatusCode::OK, "{}", xml.text());
    assert!(xml.text().contains("<TerminologyCapabilities"));
}

#[tokio::test]
async fn cache_control_keeps_request_resources_between_calls() {
    use axum::http::header;
    let start = get("/fhir/$cache-control?mode=start").await.json();
    let id = param(&start, "cache-id")
        .and_then(|v| v.as_str())
        .expect("cache id")
        .to_string();
    let cs = json!({"resourceType": "CodeSystem", "url": "http://example.org/cs/cached", "status": "active", "content": "complete",
        "concept": [{"code": "a", "display": "Alpha"}]});
    let with_header = |req: axum::http::request::Builder| req.header("x-cache-id", id.as_str());
    let first = Request::post("/fhir/CodeSystem/$lookup")
        .header(header::CONTENT_TYPE, "application/fhir+json");
    let body = json!({"resourceType": "Parameters", "parameter": [
        {"name": "tx-resource", "resource": cs},
        {"name": "system", "valueUri": "http://example.org/cs/cached"}, {"name": "code", "valueCode": "a"}]});
    let r = send_to(
        state(),
        with_header(first)
            .body(Body::from(body.to_string()))
            .expect("req"),
    )
    .await;
    assert_eq!(param(&r.json(), "display"), Some(&json!("Alpha")));
    let again = with_header(Request::get(
        "/fhir/CodeSystem/$lookup?system=http://example.org/cs/cached&code=a",
    ));
    let r = send_to(state(), again.body(Body::empty()).expect("req")).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "the cached CodeSystem is used without being sent again: {}",
        r.text()
    );
    let without = get("/fhir/CodeSystem/$lookup?system=http://example.org/cs/cached&code=a").await;
    assert_eq!(
        without.status,
        StatusCode::NOT_FOUND,
        "other requests do not see the cache"
    );
    let end = with_header(Request::get("/fhir/$cache-control?mode=end"));
    let r = send_to(state(), end.body(Body::empty()).expect("req")).await;
    assert_eq!(param(&r.json(), "result"), Some(&json!(true)));
    let after = with_header(Request::get(
        "/fhir/CodeSystem/$lookup?system=http://example.org/cs/cached&code=a",
    ));
    assert_eq!(
        send_to(state(), after.body(Body::empty()).expect("req"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get("/fhir/$cache-control?mode=sideways").await.status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn every_operation_answers_in_xml_too() {
    let ods = enc(ODS);
    let icd = enc(ICD10);
    let gp = enc("https://fhir-registers.org/fhir/ValueSet/ods-gp-practices");
    let calls = [
        ("/fhir/metadata".to_string(), "<CapabilityStatement"),
        ("/fhir/metadata?mode=terminology".to_string(), "<TerminologyCapabilities"),
        (format!("/fhir/CodeSystem/$lookup?system={ods}&code=A81001"), "<Parameters"),
        (format!("/fhir/CodeSystem/$validate-code?url={icd}&code=J45.9"), "<Parameters"),
        (format!("/fhir/ValueSet/$validate-code?url={gp}&system={ods}&code=A81003"), "<Parameters"),
        (format!("/fhir/ValueSet/$expand?url={gp}&filter=densham&property=postcode&includeDesignations=true"), "<ValueSet"),
        (format!("/fhir/CodeSystem/$subsumes?system={icd}&codeA=J45&codeB=J45.9"), "<Parameters"),
        ("/fhir/ConceptMap/$translate?system=https%3A%2F%2Ffhir-registers.org%2Ffhir%2FCodeSystem%2Ficd-10-alt-code&code=J459".to_string(), "<Parameters"),
        ("/fhir/CodeSystem/icd-10".to_string(), "<CodeSystem"),
        ("/fhir/CodeSystem?url=https%3A%2F%2Ffhir.nhs.uk%2FId%2Fods-organization-code".to_string(), "<Bundle"),
        ("/fhir/ValueSet/ods-gp-practices".to_string(), "<ValueSet"),
        ("/fhir/ConceptMap/postcode-to-district".to_string(), "<ConceptMap"),
        ("/fhir/CodeSystem/$lookup?system=http://hl7.org/fhir/sid/icd-10&code=NOPE".to_string(), "<OperationOutcome"),
    ];
    for (uri, root) in calls {
        let xml = format!(
            "{uri}{}_format=xml",
            if uri.contains('?') { "&" } else { "?" }
        );
        let r = get(&xml).await;
        assert!(
            r.content_type.starts_with("application/fhir+xml"),
            "{uri}: {}",
            r.content_type
        );
        assert!(r.text().contains(root), "{uri} in XML: {}", r.text());
        assert_ne!(
            r.status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "{uri}: {}",
            r.text()
        );
    }
}

#[tokio::test]
async fn subsumes_shape_is_stable() {
    let p = get(&format!(
        "/fhir/CodeSystem/$subsumes?system={}&codeA=J40-J47&codeB=J45.9",
        enc(ICD10)
    ))
    .await
    .json();
    insta::assert_snapshot!("subsumes_icd10_block_code", pretty(&p));
}
