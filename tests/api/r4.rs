//! Every resource the server emits is valid FHIR R4, as strict R4 clients check it: fhirbolt's
//! strict parser (element names, types, choices), plus the rules it does not check — minimum
//! cardinalities, required bindings and the JSON rules of R4 (no empty arrays, objects or
//! strings) — read from the R4 definitions in `tests/fixtures/r4/r4-rules.json`.
//!
//! The resources are collected through the real router: searches, every shipped CodeSystem,
//! ValueSet and ConceptMap read by id (with `_summary` variants), the CapabilityStatement and
//! TerminologyCapabilities, every operation (answers and errors), batches, and the `preview`
//! command's bundle for every shipped mapping.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{Request, header};
use fhir_registers::commands::preview_bundle;
use fhir_registers::mapping;
use fhir_registers::{AppState, registers};
use serde_json::{Map, Value as Json, json};

use super::support::*;

/// One element of the R4 definitions: minimum cardinality, type(s), required binding.
#[derive(serde::Deserialize)]
struct Element {
    min: u32,
    types: Vec<String>,
    binding: Option<String>,
}

/// The R4 definitions the checker needs, indexed by parent path.
struct R4Rules {
    /// Parent path (`ConceptMap.group`, `Coding`) → (child name, its definition). A choice child
    /// is named `value[x]`.
    children: HashMap<String, Vec<(String, Element)>>,
    /// Required value sets: canonical URL → codes.
    value_sets: HashMap<String, HashSet<String>>,
}

fn rules() -> &'static R4Rules {
    static RULES: OnceLock<R4Rules> = OnceLock::new();
    RULES.get_or_init(|| {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct File {
            elements: HashMap<String, Element>,
            value_sets: HashMap<String, Vec<String>>,
        }
        let text = std::fs::read_to_string(fixture("r4/r4-rules.json")).expect("R4 rules");
        let file: File = serde_json::from_str(&text).expect("R4 rules parse");
        let mut children: HashMap<String, Vec<(String, Element)>> = HashMap::new();
        for (path, e) in file.elements {
            let (parent, name) = path.rsplit_once('.').expect("a path has a parent");
            children
                .entry(parent.to_string())
                .or_default()
                .push((name.to_string(), e));
        }
        R4Rules {
            children,
            value_sets: file
                .value_sets
                .into_iter()
                .map(|(k, v)| (k, v.into_iter().collect()))
                .collect(),
        }
    })
}

/// `valueCoding` for the choice `value[x]` with type `Coding`.
fn choice_key(base: &str, ty: &str) -> String {
    let mut chars = ty.chars();
    match chars.next() {
        Some(first) => format!("{base}{}{}", first.to_ascii_uppercase(), chars.as_str()),
        None => base.to_string(),
    }
}

impl R4Rules {
    /// The definition of child `key` of `path`, and the concrete type it has there.
    fn child(&self, path: &str, key: &str) -> Option<(&Element, String)> {
        for (name, e) in self.children.get(path)? {
            if name == key {
                return Some((e, e.types[0].clone()));
            }
            if let Some(base) = name.strip_suffix("[x]")
                && let Some(ty) = e.types.iter().find(|t| choice_key(base, t) == key)
            {
                return Some((e, ty.clone()));
            }
        }
        None
    }

    /// Every rule a resource breaks, each as `location: what is wrong`.
    fn violations(&self, resource: &Json) -> Vec<String> {
        let mut out = Vec::new();
        if let Err(e) = fhir_xml::validate_json(&resource.to_string()) {
            out.push(format!("fhirbolt strict R4: {e}"));
        }
        self.resource(resource, "", &mut out);
        out
    }

    fn resource(&self, value: &Json, at: &str, out: &mut Vec<String>) {
        let Some(kind) = value.get("resourceType").and_then(Json::as_str) else {
            out.push(format!("{at}: a resource without resourceType"));
            return;
        };
        if !self.children.contains_key(kind) {
            out.push(format!(
                "{at}: no R4 rules for {kind} in r4-rules.json (regenerate it with that type)"
            ));
            return;
        }
        let at = if at.is_empty() {
            kind.to_string()
        } else {
            format!("{at}({kind})")
        };
        self.object(value, kind, &at, out);
    }

    fn object(&self, value: &Json, path: &str, at: &str, out: &mut Vec<String>) {
        let Some(obj) = value.as_object() else {
            out.push(format!("{at}: {path} must be a JSON object, not {value}"));
            return;
        };
        if obj.is_empty() {
            out.push(format!(
                "{at}: empty object (R4 JSON: an element has a value or children)"
            ));
        }
        self.required_children(obj, path, at, out);
        for (key, v) in obj {
            if key == "resourceType" || key.starts_with('_') {
                continue;
            }
            // Unknown names are fhirbolt's to report.
            let Some((element, ty)) = self.child(path, key) else {
                continue;
            };
            let items: Vec<&Json> = match v {
                Json::Array(a) if a.is_empty() => {
                    out.push(format!(
                        "{at}.{key}: empty array (R4 JSON: omit it instead)"
                    ));
                    continue;
                }
                Json::Array(a) => a.iter().collect(),
                other => vec![other],
            };
            for (i, item) in items.iter().enumerate() {
                let here = if v.is_array() {
                    format!("{at}.{key}[{i}]")
                } else {
                    format!("{at}.{key}")
                };
                self.item(item, element, &ty, &format!("{path}.{key}"), &here, out);
            }
        }
    }

    fn item(
        &self,
        item: &Json,
        element: &Element,
        ty: &str,
        full_path: &str,
        at: &str,
        out: &mut Vec<String>,
    ) {
        if let Some(vs) = &element.binding {
            let codes = &self.value_sets[vs];
            match item.as_str() {
                Some(code) if codes.contains(code) => {}
                _ => out.push(format!(
                    "{at}: {item} is not in the required R4 value set {vs}"
                )),
            }
        }
        if ty == "Resource" {
            self.resource(item, at, out);
        } else if let Some(target) = ty.strip_prefix('#') {
            self.object(item, target, at, out);
        } else if (ty == "BackboneElement" || ty == "Element")
            && self.children.contains_key(full_path)
        {
            // A BackboneElement's children are listed under its own path.
            self.object(item, full_path, at, out);
        } else if self.children.contains_key(ty) {
            self.object(item, ty, at, out);
        } else if item.as_str() == Some("") {
            out.push(format!("{at}: empty string (R4 JSON: omit it instead)"));
        } else if item.is_null() {
            out.push(format!("{at}: null"));
        }
    }

    fn required_children(
        &self,
        obj: &Map<String, Json>,
        path: &str,
        at: &str,
        out: &mut Vec<String>,
    ) {
        for (name, e) in self.children.get(path).into_iter().flatten() {
            if e.min == 0 {
                continue;
            }
            let present = match name.strip_suffix("[x]") {
                Some(base) => e
                    .types
                    .iter()
                    .any(|t| obj.contains_key(&choice_key(base, t))),
                None => obj.contains_key(name) || obj.contains_key(&format!("_{name}")),
            };
            if !present {
                out.push(format!("{at}: {path}.{name} is required (min {})", e.min));
            }
        }
    }
}

/// Asserts that every resource is valid R4, listing every violation of every resource.
fn assert_all_valid(emitted: &[(String, Json)]) {
    let failures: Vec<String> = emitted
        .iter()
        .flat_map(|(origin, resource)| {
            rules()
                .violations(resource)
                .into_iter()
                .map(move |v| format!("{origin}: {v}"))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} violations of R4:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn the_checker_rejects_what_strict_r4_clients_reject() {
    let rules = rules();
    let bad = [
        (
            json!({"resourceType": "ConceptMap", "status": "active", "group": [{"source": "a", "target": "b"}]}),
            "ConceptMap.group.element is required",
        ),
        (
            json!({"resourceType": "CodeSystem", "status": "active", "content": "complete",
                "filter": [{"code": "concept", "operator": ["is-a", "child-of"], "value": "a code"}]}),
            "\"child-of\" is not in the required R4 value set http://hl7.org/fhir/ValueSet/filter-operator",
        ),
        (
            json!({"resourceType": "CodeSystem", "content": "complete"}),
            "CodeSystem.status is required",
        ),
        (
            json!({"resourceType": "ConceptMap", "status": "active", "group": [{"element": []}]}),
            "empty array",
        ),
        (
            json!({"resourceType": "Parameters", "parameter": [{"name": "x", "part": [{"valueString": "y"}]}]}),
            "Parameters.parameter.name is required",
        ),
        (
            json!({"resourceType": "OperationOutcome", "issue": [{"severity": "fatal", "code": "wrong"}]}),
            "\"wrong\" is not in the required R4 value set http://hl7.org/fhir/ValueSet/issue-type",
        ),
        (
            json!({"resourceType": "Bundle", "type": "batch-response", "entry": [{"resource":
                {"resourceType": "ValueSet", "status": "draft", "expansion": {"timestamp": "2020-01-01", "contains": [{"code": "a", "designation": [{"value": ""}]}]}}}]}),
            "empty string",
        ),
        (
            json!({"resourceType": "CodeSystem", "status": "active", "content": "complete", "nonsense": 1}),
            "fhirbolt strict R4",
        ),
    ];
    for (resource, expected) in bad {
        let found = rules.violations(&resource);
        assert!(
            found.iter().any(|v| v.contains(expected)),
            "{resource}: expected a violation containing {expected:?}, found {found:?}"
        );
    }
    let good = json!({"resourceType": "ConceptMap", "status": "active", "group": [{"source": "a", "target": "b",
        "element": [{"code": "1", "target": [{"code": "2", "equivalence": "wider"}]}]}],
        "extension": [{"url": "http://example.org/x", "valueCoding": {"code": "y"}}]});
    assert_eq!(rules.violations(&good), Vec::<String>::new());
}

/// What one request returned, for the list of emitted resources.
async fn collect(state: &Arc<AppState>, req: Request<Body>, out: &mut Vec<(String, Json)>) {
    let origin = format!("{} {}", req.method(), req.uri());
    let reply = send_to(state.clone(), req).await;
    assert!(
        reply.content_type.starts_with("application/fhir+json"),
        "{origin}: {} {}",
        reply.content_type,
        reply.text()
    );
    out.push((format!("{origin} ({})", reply.status), reply.json()));
}

fn get_req(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).expect("request")
}

fn post_req(uri: &str, body: &Json) -> Request<Body> {
    Request::post(uri)
        .header(header::CONTENT_TYPE, "application/fhir+json")
        .body(Body::from(body.to_string()))
        .expect("request")
}

/// The ids of a searchset's entries.
fn ids(bundle: &Json) -> Vec<String> {
    bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["resource"]["id"].as_str().map(str::to_string))
        .collect()
}

const ODS: &str = "https://fhir.nhs.uk/Id/ods-organization-code";
const ICD10: &str = "http://hl7.org/fhir/sid/icd-10";
const POSTCODE: &str = "https://fhir-registers.org/fhir/CodeSystem/postcode";

/// A server before its first import: the shipped mappings over an empty data directory, so the
/// derived ConceptMaps have no concepts to list, plus a plain CodeSystem resource whose filters
/// use R5's `child-of`.
fn state_before_import() -> Arc<AppState> {
    let dir = tempfile::tempdir().expect("tempdir");
    let plain = json!({"resourceType": "CodeSystem", "id": "shapes", "url": "http://example.org/cs/shapes",
        "version": "1", "status": "active", "content": "complete", "hierarchyMeaning": "is-a",
        "filter": [
            {"code": "concept", "operator": ["is-a", "child-of"], "value": "a shape"},
            {"code": "concept", "operator": ["child-of"], "value": "a shape"}],
        "concept": [{"code": "polygon", "concept": [{"code": "square"}]}]});
    let registry =
        registers::build_registry(&shipped(), dir.path(), &[("shapes.json".into(), plain)])
            .expect("registry builds");
    Arc::new(AppState::new(registry))
}

#[tokio::test]
async fn every_emitted_resource_is_valid_r4() {
    let mut emitted: Vec<(String, Json)> = Vec::new();
    for state in [state(), history_state(), state_before_import()] {
        // Searches, then every resource they list, read by id (every version), with and without
        // its concepts.
        for kind in ["CodeSystem", "ValueSet", "ConceptMap"] {
            for query in ["", "?_summary=false", "?_summary=count", "?_count=1"] {
                collect(
                    &state,
                    get_req(&format!("/fhir/{kind}{query}")),
                    &mut emitted,
                )
                .await;
            }
            let search = send_to(state.clone(), get_req(&format!("/fhir/{kind}")))
                .await
                .json();
            let listed = ids(&search);
            assert!(!listed.is_empty(), "{kind}: the fixtures give some");
            for id in listed {
                for query in ["", "?_summary=true", "?_summary=false"] {
                    collect(
                        &state,
                        get_req(&format!("/fhir/{kind}/{id}{query}")),
                        &mut emitted,
                    )
                    .await;
                }
            }
        }
    }
    let state = state();
    let (ods, icd, postcode) = (enc(ODS), enc(ICD10), enc(POSTCODE));
    let gp = enc("https://fhir-registers.org/fhir/ValueSet/ods-gp-practices");
    let chapter_x = enc("https://fhir-registers.org/fhir/ValueSet/icd-10-chapter-x");
    let district = enc("https://fhir-registers.org/fhir/ConceptMap/postcode-to-district");
    let geography =
        enc("https://digital.nhs.uk/services/organisation-data-service/CodeSystem/geography-name");
    let gets = [
        "/fhir/metadata".to_string(),
        "/fhir/metadata?mode=terminology".to_string(),
        "/fhir/$versions".to_string(),
        // $lookup
        format!("/fhir/CodeSystem/$lookup?system={ods}&code=A81001"),
        format!(
            "/fhir/CodeSystem/$lookup?system={ods}&code=A81003&property=inactive&property=opEndDate"
        ),
        format!("/fhir/CodeSystem/$lookup?system={icd}&code=J45&property=child&property=parent"),
        format!("/fhir/CodeSystem/$lookup?system={postcode}&code=TS181HU"),
        "/fhir/CodeSystem/icd-10/$lookup?code=J45.9".to_string(),
        format!("/fhir/CodeSystem/$lookup?system={icd}&code=NOPE"),
        "/fhir/CodeSystem/$lookup".to_string(),
        // $validate-code
        format!("/fhir/CodeSystem/$validate-code?url={icd}&code=J45.9"),
        format!(
            "/fhir/CodeSystem/$validate-code?url={ods}&code=A81001&display={}",
            enc("wrong name")
        ),
        format!("/fhir/CodeSystem/$validate-code?url={ods}&code=A81003"),
        format!("/fhir/CodeSystem/$validate-code?url={ods}&code=MADEUP1"),
        format!("/fhir/ValueSet/$validate-code?url={gp}&system={ods}&code=A81003"),
        format!("/fhir/ValueSet/$validate-code?url={chapter_x}&system={icd}&code=A00"),
        format!(
            "/fhir/ValueSet/$validate-code?url={chapter_x}&system={icd}&code=J45.9&display=Asthma"
        ),
        // $expand
        format!(
            "/fhir/ValueSet/$expand?url={gp}&filter=densham&property=postcode&includeDesignations=true"
        ),
        format!("/fhir/ValueSet/$expand?url={chapter_x}&count=5&offset=3"),
        format!("/fhir/ValueSet/$expand?url={chapter_x}&count=0"),
        format!("/fhir/ValueSet/$expand?url={chapter_x}&filter=asthma&activeOnly=true"),
        format!(
            "/fhir/ValueSet/$expand?url={}",
            enc(&format!("{ICD10}?fhir_vs"))
        ),
        "/fhir/ValueSet/$expand?url=http://example.org/ValueSet/nope".to_string(),
        "/fhir/ValueSet/$expand?url=x&count=-1".to_string(),
        // $subsumes
        format!("/fhir/CodeSystem/$subsumes?system={icd}&codeA=J45&codeB=J45.9"),
        format!("/fhir/CodeSystem/$subsumes?system={icd}&codeA=J40-J47&codeB=J45.9"),
        format!("/fhir/CodeSystem/$subsumes?system={icd}&codeA=J45.9&codeB=A00"),
        "/fhir/CodeSystem/$subsumes?codeA=J45".to_string(),
        // $translate
        format!("/fhir/ConceptMap/$translate?url={district}&system={postcode}&code=TS181HU"),
        format!(
            "/fhir/ConceptMap/$translate?system={postcode}&code=TS181HU&targetsystem={geography}"
        ),
        "/fhir/ConceptMap/postcode-to-district/$translate?code=TS181HU".to_string(),
        format!(
            "/fhir/ConceptMap/$translate?system={}&code=J459",
            enc("https://fhir-registers.org/fhir/CodeSystem/icd-10-alt-code")
        ),
        format!("/fhir/ConceptMap/$translate?system={postcode}&code=ZZ999ZZ"),
        "/fhir/ConceptMap/$translate".to_string(),
        // $cache-control
        "/fhir/$cache-control?mode=sideways".to_string(),
        // errors of the HTTP layer
        "/fhir/Patient/1".to_string(),
        "/fhir/CodeSystem/nope".to_string(),
        "/fhir/CodeSystem?_count=x".to_string(),
        "/fhir/CodeSystem/$lookup?system=a&system=b&code=c".to_string(),
        format!("/fhir/CodeSystem/$validate-code?url={icd}&code=J45.9&_format=text/csv"),
        format!(
            "/fhir/ValueSet/$expand?url={gp}&filter=densham&property=postcode&includeDesignations=true&_pretty=true"
        ),
    ];
    for uri in &gets {
        collect(&state, get_req(uri), &mut emitted).await;
    }
    let start = send_to(state.clone(), get_req("/fhir/$cache-control?mode=start"))
        .await
        .json();
    emitted.push(("GET /fhir/$cache-control?mode=start".into(), start.clone()));
    if let Some(id) = param(&start, "cache-id").and_then(Json::as_str) {
        collect(
            &state,
            get_req(&format!("/fhir/$cache-control?mode=end&cache-id={id}")),
            &mut emitted,
        )
        .await;
    }
    let cs = json!({"resourceType": "CodeSystem", "url": "http://example.org/cs/colours", "version": "1", "status": "active", "content": "complete",
        "concept": [{"code": "red", "display": "Red", "concept": [{"code": "crimson", "display": "Crimson"}]}, {"code": "blue", "display": "Blue"}]});
    let vs = json!({"resourceType": "ValueSet", "url": "http://example.org/vs/reds", "status": "active",
        "compose": {"include": [{"system": "http://example.org/cs/colours", "filter": [{"property": "concept", "op": "is-a", "value": "red"}]}]}});
    let params = |mut p: Vec<Json>| {
        p.push(json!({"name": "tx-resource", "resource": cs}));
        p.push(json!({"name": "tx-resource", "resource": vs}));
        json!({"resourceType": "Parameters", "parameter": p})
    };
    let posts = [
        (
            "/fhir/CodeSystem/$lookup",
            params(vec![
                json!({"name": "system", "valueUri": "http://example.org/cs/colours"}),
                json!({"name": "code", "valueCode": "crimson"}),
            ]),
        ),
        (
            "/fhir/ValueSet/$expand",
            params(vec![
                json!({"name": "url", "valueUri": "http://example.org/vs/reds"}),
            ]),
        ),
        (
            "/fhir/ValueSet/$validate-code",
            params(vec![
                json!({"name": "url", "valueUri": "http://example.org/vs/reds"}),
                json!({"name": "coding", "valueCoding": {"system": "http://example.org/cs/colours", "code": "blue"}}),
            ]),
        ),
        (
            "/fhir/ValueSet/$expand",
            json!({"resourceType": "Parameters", "parameter": [{"name": "valueSet", "resource":
            {"resourceType": "ValueSet", "status": "active", "compose": {"include": [{"system": ICD10, "filter": [{"property": "concept", "op": "child-of", "value": "J40-J47"}]}]}}}]}),
        ),
        (
            "/fhir/ValueSet/$batch-validate-code",
            json!({"resourceType": "Parameters", "parameter": [
            {"name": "url", "valueUri": "https://fhir-registers.org/fhir/ValueSet/icd-10-chapter-x"},
            {"name": "validation", "resource": {"resourceType": "Parameters", "parameter": [{"name": "coding", "valueCoding": {"system": ICD10, "code": "J45.9"}}]}},
            {"name": "validation", "resource": {"resourceType": "Parameters", "parameter": [{"name": "coding", "valueCoding": {"system": ICD10, "code": "A00"}}]}}]}),
        ),
        (
            "/fhir",
            json!({"resourceType": "Bundle", "type": "batch", "entry": [
            {"request": {"method": "GET", "url": "CodeSystem/$lookup?system=http://hl7.org/fhir/sid/icd-10&code=J45.9"}},
            {"request": {"method": "GET", "url": "CodeSystem/$lookup?system=http://hl7.org/fhir/sid/icd-10&code=NOPE"}},
            {"request": {"method": "GET", "url": "ConceptMap/postcode-to-district"}},
            {"request": {"method": "POST", "url": "ValueSet/$validate-code"}, "resource": {"resourceType": "Parameters", "parameter": [
                {"name": "url", "valueUri": "https://fhir-registers.org/fhir/ValueSet/icd-10-chapter-x"},
                {"name": "coding", "valueCoding": {"system": ICD10, "code": "A00"}}]}}]}),
        ),
        (
            "/fhir",
            json!({"resourceType": "Bundle", "type": "transaction"}),
        ),
        (
            "/fhir/CodeSystem/$lookup",
            json!({"resourceType": "Patient"}),
        ),
    ];
    for (uri, body) in &posts {
        collect(&state, post_req(uri, body), &mut emitted).await;
    }
    // Operations over several releases.
    let history = history_state();
    let history_gets = [
        format!("/fhir/CodeSystem/$concept-history?system={ods}&code=A83075"),
        format!("/fhir/CodeSystem/$concept-history?system={ods}&code=A81069&property=status"),
        format!("/fhir/CodeSystem/$concept-history?system={ods}&code=NOPE1"),
        format!(
            "/fhir/CodeSystem/$diff?url={ods}&fromVersion=2019-10-01&toVersion=2020-01-01&count=3"
        ),
        format!(
            "/fhir/CodeSystem/$diff?url={}&fromVersion=2017-05-01&toVersion=2020-08-01&count=3",
            enc("https://fhir-registers.org/fhir/CodeSystem/postcode")
        ),
        format!("/fhir/CodeSystem/$lookup?system={ods}&code=A81001&version=2019-10-01"),
        format!("/fhir/CodeSystem/$validate-code?url={ods}&code=A81069&date=2019-12-01"),
        format!("/fhir/ValueSet/$expand?url={gp}&count=3&date=2020-06-30"),
        "/fhir/metadata?mode=terminology".to_string(),
    ];
    for uri in &history_gets {
        collect(&history, get_req(uri), &mut emitted).await;
    }
    // The `preview` command's bundle for every shipped mapping over its fixture.
    let set = shipped();
    for m in set.mappings {
        let Some((_, rel, version)) = FIXTURES
            .iter()
            .chain(HISTORY_FIXTURES.iter())
            .find(|(id, _, _)| *id == m.id())
        else {
            continue;
        };
        let name = m.id().to_string();
        let release =
            mapping::read_release(&m, &local(rel), version, &mut |_| {}).expect("imports");
        emitted.push((format!("preview {name}"), preview_bundle(m, release, 3)));
    }

    let kinds: BTreeSet<String> = emitted
        .iter()
        .filter_map(|(_, r)| r["resourceType"].as_str().map(str::to_string))
        .collect();
    let expected: BTreeSet<String> = [
        "Bundle",
        "CapabilityStatement",
        "CodeSystem",
        "ConceptMap",
        "OperationOutcome",
        "Parameters",
        "TerminologyCapabilities",
        "ValueSet",
    ]
    .into_iter()
    .map(str::to_string)
    .collect();
    assert_eq!(
        kinds, expected,
        "every kind of resource the server emits is checked"
    );
    assert_all_valid(&emitted);
}

/// A client's ValueSet with an empty array, expanded and asked for in XML: the echo of its
/// `compose` used to reach fhirbolt, which panics on an empty JSON array (a 500).
#[tokio::test]
async fn an_empty_array_sent_by_a_client_is_not_a_500_in_xml() {
    let body = json!({"resourceType": "Parameters", "parameter": [{"name": "valueSet", "resource":
        {"resourceType": "ValueSet", "status": "active", "identifier": [], "compose": {"include": [
            {"system": ICD10, "concept": [{"code": "J45.9", "designation": []}], "filter": []}]}}}]});
    let r = send_to(
        state(),
        post_req("/fhir/ValueSet/$expand?_format=xml", &body),
    )
    .await;
    assert_eq!(r.status, axum::http::StatusCode::OK, "{}", r.text());
    assert!(r.text().contains("<code value=\"J45.9\"/>"), "{}", r.text());
}
