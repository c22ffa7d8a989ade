//! OPCS-4 as Hospital Episode Statistics use it (`mappings/opcs4-hes.toml`): the twelve shipped
//! financial-year releases, imported as the default run imports them, answer `$lookup`,
//! `$validate-code`, `$expand`, `$diff`, `$concept-history` and `$translate`. Every expected value
//! is read from the shipped release files (`mappings/data/opcs4`), not written down here.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use fhir_registers::mapping::version_from_name;
use fhir_registers::{AppState, registers};
use serde_json::{Value as Json, json};
use tokio::sync::OnceCell;

use super::support::*;

const OPCS4: &str = "http://fhir.hl7.org.uk/CodeSystem/OPCS-4";
const HES_CODE: &str = "https://fhir-registers.org/fhir/CodeSystem/opcs-4-hes-code";
const VS: &str = "https://fhir-registers.org/fhir/ValueSet/";
const FIRST: &str = "mappings/data/opcs4/opcs4_hes_2012-04_to_2013-03.csv.gz";
const Y2019: &str = "mappings/data/opcs4/opcs4_hes_2019-04_to_2020-03.csv.gz";
const Y2020: &str = "mappings/data/opcs4/opcs4_hes_2020-04_to_2021-03.csv.gz";
const LATEST: &str = "mappings/data/opcs4/opcs4_hes_2023-04_to_2024-03.csv.gz";

/// One row of a shipped release file (`code,display,kind,title_source`).
#[derive(Debug, Clone, PartialEq)]
struct Row {
    display: String,
    kind: String,
    title_source: String,
}

/// A shipped release file by code.
fn release(rel: &str) -> BTreeMap<String, Row> {
    let mut reader = csv::Reader::from_reader(open_data(rel));
    assert_eq!(
        reader.headers().expect("header"),
        vec!["code", "display", "kind", "title_source"]
    );
    reader
        .records()
        .map(|r| {
            let r = r.expect("record");
            (
                r[0].to_string(),
                Row {
                    display: r[1].to_string(),
                    kind: r[2].to_string(),
                    title_source: r[3].to_string(),
                },
            )
        })
        .collect()
}

/// The codes of a release of one kind.
fn of_kind<'a>(rows: &'a BTreeMap<String, Row>, kind: &str) -> BTreeSet<&'a str> {
    rows.iter()
        .filter(|(_, r)| r.kind == kind)
        .map(|(c, _)| c.as_str())
        .collect()
}

/// The shipped releases of the mapping, as (file relative to the repository, version).
fn shipped_releases() -> Vec<(String, String)> {
    let set = shipped();
    let m = set.mapping("opcs4-hes").expect("opcs4-hes mapping");
    let root = repo();
    m.default_releases()
        .into_iter()
        .map(|(file, version)| {
            let rel = std::path::Path::new(&file)
                .strip_prefix(&root)
                .expect("a shipped file")
                .display()
                .to_string();
            (rel, version)
        })
        .collect()
}

/// A server over every shipped OPCS-4 release, imported by the default run's own import (built
/// once for this module).
async fn opcs4_state() -> Arc<AppState> {
    static STATE: OnceCell<Arc<AppState>> = OnceCell::const_new();
    STATE
        .get_or_init(|| async {
            let dir = tempfile::tempdir().expect("dir").keep();
            let mut set = shipped();
            set.mappings.retain(|m| m.feed() == "opcs4-hes");
            let saved = registers::import_defaults(&set, &dir, &mut |_, _, _| {})
                .await
                .expect("imports");
            assert_eq!(saved.len(), 12, "one release per financial year");
            let registry = registers::build_registry(&set, &dir, &[]).expect("registry");
            Arc::new(AppState::new(registry))
        })
        .await
        .clone()
}

async fn ask(uri: String) -> Reply {
    let req = Request::get(uri).body(Body::empty()).expect("request");
    send_to(opcs4_state().await, req).await
}

async fn ask_json(uri: String) -> Json {
    let reply = ask(uri).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    reply.json()
}

fn property_values(params: &Json, code: &str) -> Vec<Json> {
    properties(params)
        .into_iter()
        .filter(|(c, _)| c == code)
        .map(|(_, v)| v)
        .collect()
}

#[test]
fn twelve_financial_years_ship_with_their_versions_in_the_file_names() {
    let releases = shipped_releases();
    let versions: Vec<&str> = releases.iter().map(|(_, v)| v.as_str()).collect();
    let mut expected: Vec<String> = (2012..=2023).map(|y| format!("{y}-04-01")).collect();
    expected.rotate_right(1); // the default file (the latest year) comes first
    assert_eq!(versions, expected);
    for (file, version) in &releases {
        assert_eq!(
            version_from_name(file).as_deref(),
            Some(version.as_str()),
            "`fhir-registers import {file}` reads the version from the name"
        );
    }
    // Every row's parent is in the same file, and the codes are in OPCS-4's dotted form.
    let mut titles: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (file, _) in &releases {
        let rows = release(file);
        for (code, row) in &rows {
            let (parent, shape) = match row.kind.as_str() {
                "chapter" => (None, code.len() == 1),
                "category" => (Some(&code[..1]), code.len() == 3),
                "subcategory" => (
                    Some(&code[..3]),
                    code.len() == 5 && code.as_bytes()[3] == b'.',
                ),
                other => panic!("{file}: {code} has kind {other}"),
            };
            assert!(shape, "{file}: {code} is not a {}", row.kind);
            if let Some(p) = parent {
                assert!(
                    rows.contains_key(p),
                    "{file}: {code}'s parent {p} is missing"
                );
            }
            if row.kind == "subcategory" {
                assert_eq!(row.title_source, "hes", "{file}: {code}");
                titles
                    .entry(code.clone())
                    .or_default()
                    .insert(row.display.clone());
            }
        }
    }
    assert_eq!(titles.len(), 9_857, "SOURCES.md: 9,857 distinct codes");
    assert_eq!(
        titles.values().filter(|t| t.len() > 1).count(),
        99,
        "SOURCES.md: 99 codes changed title across the years"
    );
}

#[tokio::test]
async fn lookup_gives_the_hes_title_the_parent_from_the_code_and_the_hes_form() {
    let latest = release(LATEST);
    let lookup = |code: &str| {
        format!(
            "/fhir/CodeSystem/$lookup?system={}&code={code}&property=*",
            enc(OPCS4)
        )
    };
    let k401 = ask_json(lookup("K40.1")).await;
    assert_eq!(param(&k401, "version"), Some(&json!("2023-04-01")));
    assert_eq!(
        param(&k401, "display"),
        Some(&json!(latest["K40.1"].display))
    );
    assert_eq!(property_values(&k401, "parent"), vec![json!("K40")]);
    assert_eq!(property_values(&k401, "hesCode"), vec![json!("K401")]);
    assert_eq!(property_values(&k401, "kind"), vec![json!("subcategory")]);
    assert_eq!(property_values(&k401, "titleSource"), vec![json!("hes")]);

    // The category: a title derived from its .9/.8 code, the chapter above, its codes below.
    let k40 = ask_json(lookup("K40")).await;
    assert_eq!(param(&k40, "display"), Some(&json!(latest["K40"].display)));
    assert_eq!(latest["K40"].title_source, "derived");
    assert_eq!(property_values(&k40, "titleSource"), vec![json!("derived")]);
    assert_eq!(property_values(&k40, "parent"), vec![json!("K")]);
    assert_eq!(property_values(&k40, "notSelectable"), vec![json!(true)]);
    let children: BTreeSet<String> = property_values(&k40, "child")
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    let in_file: BTreeSet<String> = of_kind(&latest, "subcategory")
        .into_iter()
        .filter(|c| c.starts_with("K40."))
        .map(str::to_string)
        .collect();
    assert_eq!(children, in_file);
    assert!(
        property_values(&k40, "hesCode").is_empty(),
        "HES has no 3-character form"
    );

    // A category HES gives no title for, and a chapter: placeholders, said as such.
    let o11 = ask_json(lookup("O11")).await;
    assert_eq!(param(&o11, "display"), Some(&json!(latest["O11"].display)));
    assert_eq!(
        property_values(&o11, "titleSource"),
        vec![json!("placeholder")]
    );
    let k = ask_json(lookup("K")).await;
    assert_eq!(param(&k, "display"), Some(&json!(latest["K"].display)));
    assert!(
        property_values(&k, "parent").is_empty(),
        "a chapter is a root"
    );
}

#[tokio::test]
async fn validate_code_knows_which_codes_each_year_used() {
    let first = release(FIRST);
    let latest = release(LATEST);
    let validate = |code: &str, extra: &str| {
        format!(
            "/fhir/CodeSystem/$validate-code?url={}&code={code}{extra}",
            enc(OPCS4)
        )
    };
    let ok = ask_json(validate("K40.1", "")).await;
    assert_eq!(param(&ok, "result"), Some(&json!(true)));
    assert_eq!(param(&ok, "display"), Some(&json!(latest["K40.1"].display)));
    let wrong_display = ask_json(validate("K40.1", "&display=Appendicectomy")).await;
    assert_eq!(param(&wrong_display, "result"), Some(&json!(false)));

    // The HES form is not an OPCS-4 code: it is translated (see below), not validated.
    let undotted = ask_json(validate("K401", "")).await;
    assert_eq!(param(&undotted, "result"), Some(&json!(false)));
    assert!(param(&undotted, "message").is_some());

    // A code HES listed in 2012-13 but not in 2023-24: unknown now, valid in its year.
    let gone = of_kind(&first, "subcategory")
        .difference(&of_kind(&latest, "subcategory"))
        .next()
        .copied()
        .expect("some 2012-13 code went out of use");
    let now = ask_json(validate(gone, "")).await;
    assert_eq!(param(&now, "result"), Some(&json!(false)), "{gone}");
    let then = ask_json(validate(gone, "&date=2012-06-30")).await;
    assert_eq!(param(&then, "result"), Some(&json!(true)), "{gone}");
    assert_eq!(param(&then, "display"), Some(&json!(first[gone].display)));
}

#[tokio::test]
async fn expand_lists_each_years_codes_and_filters_by_text_and_hierarchy() {
    let first = release(FIRST);
    let latest = release(LATEST);
    let total = |vs: &str, extra: &str| {
        let uri = format!(
            "/fhir/ValueSet/$expand?url={}&count=0{extra}",
            enc(&format!("{VS}{vs}"))
        );
        async move { ask_json(uri).await["expansion"]["total"].clone() }
    };
    assert_eq!(
        total("opcs4-hes-codes", "").await,
        json!(of_kind(&latest, "subcategory").len())
    );
    assert_eq!(total("opcs4-hes-all", "").await, json!(latest.len()));
    assert_eq!(
        total("opcs4-hes-codes", "&date=2012-06-30").await,
        json!(of_kind(&first, "subcategory").len()),
        "the 2012-13 release answers for a date in that year"
    );

    // Text filter: every code with a title word starting "neurostimulator".
    let vs = ask_json(format!(
        "/fhir/ValueSet/$expand?url={}&filter=neurostimulator&count=1000",
        enc(&format!("{VS}opcs4-hes-codes"))
    ))
    .await;
    let found: BTreeSet<String> = codes(&vs).into_iter().collect();
    let expected: BTreeSet<String> = latest
        .iter()
        .filter(|(_, r)| r.kind == "subcategory")
        .filter(|(_, r)| {
            r.display
                .split(|c: char| !c.is_alphanumeric())
                .any(|w| w.to_lowercase().starts_with("neurostimulator"))
        })
        .map(|(c, _)| c.clone())
        .collect();
    assert!(expected.len() > 10, "{expected:?}");
    assert_eq!(found, expected);
    assert_eq!(vs["expansion"]["total"], json!(expected.len()));

    // Hierarchy: chapter K's category K40 and its codes.
    let body = json!({"resourceType": "Parameters", "parameter": [
        {"name": "valueSet", "resource": {"resourceType": "ValueSet", "status": "active",
            "compose": {"include": [{"system": OPCS4,
                "filter": [{"property": "concept", "op": "is-a", "value": "K40"}]}]}}}
    ]});
    let req = Request::post("/fhir/ValueSet/$expand")
        .header(header::CONTENT_TYPE, "application/fhir+json")
        .body(Body::from(body.to_string()))
        .expect("request");
    let reply = send_to(opcs4_state().await, req).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let k40: BTreeSet<String> = codes(&reply.json()).into_iter().collect();
    let k40_in_file: BTreeSet<String> = latest
        .keys()
        .filter(|c| c.starts_with("K40"))
        .cloned()
        .collect();
    assert_eq!(k40, k40_in_file);
}

#[tokio::test]
async fn diff_of_two_years_counts_what_the_files_differ_by() {
    let old = release(Y2019);
    let new = release(Y2020);
    let added = new.keys().filter(|c| !old.contains_key(*c)).count();
    let removed = old.keys().filter(|c| !new.contains_key(*c)).count();
    let both: Vec<(&Row, &Row)> = new
        .iter()
        .filter_map(|(c, n)| Some((old.get(c)?, n)))
        .collect();
    let changed = both.iter().filter(|(a, b)| a != b).count();
    let retitled = both.iter().filter(|(a, b)| a.display != b.display).count();
    let retitled_codes = both
        .iter()
        .filter(|(a, b)| a.kind == "subcategory" && a.display != b.display)
        .count();
    assert!(retitled_codes > 0 && added > 0 && removed > 0);

    let d = ask_json(format!(
        "/fhir/CodeSystem/$diff?url={}&fromVersion=2019-04-01&toVersion=2020-04-01&count=0",
        enc(OPCS4)
    ))
    .await;
    assert_eq!(param(&d, "added"), Some(&json!(added)));
    assert_eq!(param(&d, "removed"), Some(&json!(removed)));
    assert_eq!(param(&d, "changed"), Some(&json!(changed)));
    let display = all_parts(&d, "propertyChanges")
        .into_iter()
        .find(|p| part_value(p, "property") == Some(&json!("display")))
        .and_then(|p| part_value(p, "count").cloned());
    assert_eq!(display, Some(json!(retitled)));
}

#[tokio::test]
async fn concept_history_follows_a_code_through_its_change_of_title() {
    let old = release(Y2019);
    let new = release(Y2020);
    let (code, before, after) = new
        .iter()
        .filter(|(_, r)| r.kind == "subcategory")
        .find_map(|(c, r)| {
            let o = old.get(c)?;
            (o.display != r.display).then(|| (c.clone(), o.display.clone(), r.display.clone()))
        })
        .expect("a code retitled in 2020-21");

    let h = ask_json(format!(
        "/fhir/CodeSystem/$concept-history?system={}&code={code}",
        enc(OPCS4)
    ))
    .await;
    let versions = all_parts(&h, "version");
    let retitled = versions
        .iter()
        .find(|p| part_value(p, "version") == Some(&json!("2020-04-01")))
        .unwrap_or_else(|| panic!("{code}: no 2020-04-01 entry: {h}"));
    assert_eq!(part_value(retitled, "change"), Some(&json!("changed")));
    let display = retitled
        .iter()
        .filter(|p| p["name"] == "property")
        .filter_map(|p| p["part"].as_array())
        .find(|parts| part_value(parts, "code") == Some(&json!("display")))
        .unwrap_or_else(|| panic!("{code}: the display changed: {h}"));
    assert_eq!(part_value(display, "from"), Some(&json!(before)));
    assert_eq!(part_value(display, "to"), Some(&json!(after)));

    // Each year's lookup gives that year's title.
    let lookup = |version: &str| {
        format!(
            "/fhir/CodeSystem/$lookup?system={}&code={code}&version={version}",
            enc(OPCS4)
        )
    };
    let then = ask_json(lookup("2019-04-01")).await;
    assert_eq!(param(&then, "display"), Some(&json!(before)));
    let now = ask_json(lookup("2020-04-01")).await;
    assert_eq!(param(&now, "display"), Some(&json!(after)));
}

#[tokio::test]
async fn translate_turns_the_hes_form_into_the_dotted_code() {
    let latest = release(LATEST);
    let p = ask_json(format!(
        "/fhir/ConceptMap/$translate?system={}&code=K401",
        enc(HES_CODE)
    ))
    .await;
    assert_eq!(param(&p, "result"), Some(&json!(true)), "{p}");
    let matches: Vec<(String, String)> = all_parts(&p, "match")
        .into_iter()
        .filter_map(|parts| {
            let c = parts.iter().find(|x| x["name"] == "concept")?;
            Some((
                c["valueCoding"]["system"].as_str()?.to_string(),
                c["valueCoding"]["code"].as_str()?.to_string(),
            ))
        })
        .collect();
    assert!(latest.contains_key("K40.1"));
    assert_eq!(matches, vec![(OPCS4.to_string(), "K40.1".to_string())]);
}
