//! Register history: every release is a CodeSystem version, answerable by version or by date;
//! `$concept-history` and `$diff` over real releases; storage that grows with the changes; the
//! 2026 change of the epraccur layout.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use fhir_registers::mapping::{self, ImportError};
use fhir_registers::store::persist::{self, SaveOutcome};
use fhir_registers::{AppState, registers};
use serde_json::{Value as Json, json};

use super::support::*;

const ODS: &str = "https://fhir.nhs.uk/Id/ods-organization-code";
const POSTCODE: &str =
    "https://digital.nhs.uk/services/organisation-data-service/CodeSystem/postcode";

async fn ask(state: &Arc<AppState>, uri: String) -> Reply {
    send_to(
        state.clone(),
        Request::get(uri).body(Body::empty()).expect("request"),
    )
    .await
}

async fn history(path: String) -> Reply {
    ask(&history_state(), path).await
}

fn property(params: &Json, code: &str) -> Option<Json> {
    properties(params)
        .into_iter()
        .find(|(c, _)| c == code)
        .map(|(_, v)| v)
}

#[tokio::test]
async fn lookup_answers_from_the_release_asked_for_by_version_or_date() {
    let at = |v: &str| {
        format!(
            "/fhir/CodeSystem/$lookup?system={}&code=A83075&{v}",
            enc(ODS)
        )
    };
    let oct = history(at("version=2019-10-01")).await.json();
    assert_eq!(param(&oct, "version"), Some(&json!("2019-10-01")));
    assert_eq!(
        param(&oct, "display"),
        Some(&json!("DENESIDE MEDICAL CENTRE"))
    );
    let jan = history(at("version=2020-01-01")).await.json();
    assert_eq!(
        param(&jan, "display"),
        Some(&json!("BYRON MEDICAL PRACTICE"))
    );
    // Between two releases, the earlier one is in force.
    let dec = history(at("date=2019-12-24")).await.json();
    assert_eq!(param(&dec, "version"), Some(&json!("2019-10-01")));
    assert_eq!(
        param(&dec, "display"),
        Some(&json!("DENESIDE MEDICAL CENTRE"))
    );
    let mid_2020 = history(at("date=2020-06-30T12:00:00Z")).await.json();
    assert_eq!(param(&mid_2020, "version"), Some(&json!("2020-01-01")));
    // Without version or date the latest release answers: the 2026-02 one, in the new layout.
    let latest = history(at("property=*")).await.json();
    assert_eq!(param(&latest, "version"), Some(&json!("2026-02-01")));
    assert_eq!(property(&latest, "town"), Some(json!("SEAHAM")));
    assert_eq!(property(&latest, "status"), Some(json!("active")));

    // Status and commissioner as each release had them (A83004 went dormant in 2020-01).
    let a83004 = |v: &str| {
        format!(
            "/fhir/CodeSystem/$lookup?system={}&code=A83004&property=status&property=RE4&version={v}",
            enc(ODS)
        )
    };
    let before = history(a83004("2019-10-01")).await.json();
    let after = history(a83004("2020-01-01")).await.json();
    assert_eq!(property(&before, "status"), Some(json!("active")));
    assert_eq!(property(&after, "status"), Some(json!("dormant")));
    assert!(property(&after, "RE4").is_some());

    // Before the first release: a clear OperationOutcome, not an empty answer.
    let early = history(at("date=2010-01-01")).await;
    assert_eq!(early.status, StatusCode::NOT_FOUND);
    let oo = early.json();
    assert_eq!(oo["resourceType"], "OperationOutcome");
    assert_eq!(oo["issue"][0]["code"], "not-found");
    let text = oo["issue"][0]["details"]["text"].as_str().expect("text");
    assert!(text.contains("first release is 2019-10-01"), "{text}");
    let bad = history(at("date=last-tuesday")).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn validate_code_and_expand_take_a_date() {
    // A code added in 2020-01 is unknown on a date before it was released...
    let y06550 = |extra: &str| {
        format!(
            "/fhir/CodeSystem/$validate-code?url={}&code=Y06550{extra}",
            enc(ODS)
        )
    };
    let before = history(y06550("&date=2019-11-01")).await.json();
    assert_eq!(param(&before, "result"), Some(&json!(false)));
    let message = param(&before, "message").expect("message").to_string();
    assert!(message.contains("2019-10-01"), "{message}");
    let after = history(y06550("&date=2020-02-01")).await.json();
    assert_eq!(param(&after, "result"), Some(&json!(true)));
    // ...and a closed practice is not valid after its close date (business validity), though
    // it is still in the register.
    let closed = |date: &str| {
        format!(
            "/fhir/CodeSystem/$validate-code?url={}&code=A81069&date={date}",
            enc(ODS)
        )
    };
    let open_then = history(closed("2016-06-01")).await;
    assert_eq!(
        open_then.status,
        StatusCode::NOT_FOUND,
        "before any release"
    );
    let after_close = history(closed("2020-02-01")).await.json();
    assert_eq!(param(&after_close, "result"), Some(&json!(false)));
    let message = param(&after_close, "message").expect("message");
    assert!(
        message
            .as_str()
            .expect("text")
            .contains("ended on 2017-01-31"),
        "{message}"
    );
    let no_date = history(format!(
        "/fhir/CodeSystem/$validate-code?url={}&code=A81069&version=2020-01-01",
        enc(ODS)
    ))
    .await
    .json();
    assert_eq!(param(&no_date, "result"), Some(&json!(true)));

    // $expand on a date uses the release in force then.
    let all = |date: &str| {
        format!(
            "/fhir/ValueSet/$expand?url={}&count=0&date={date}",
            enc("https://fhir-registers.org/fhir/ValueSet/postcodes-all")
        )
    };
    let y2014 = history(all("2015-01-01")).await.json();
    let y2020 = history(all("2020-12-31")).await.json();
    let n2014 = y2014["expansion"]["total"].as_u64().expect("total");
    let n2020 = y2020["expansion"]["total"].as_u64().expect("total");
    let ze2020 = data_text("tests/fixtures/postcodes/codepoint_scotland_2020-08_ZE_slice.csv.gz")
        .lines()
        .count();
    assert_eq!(
        n2020 - n2014,
        ze2020 as u64 - 1,
        "the Scottish feed joins in 2017-05 (header line excluded)"
    );
}

#[tokio::test]
async fn concept_history_follows_a_practice_through_every_release() {
    let reply = history(format!(
        "/fhir/CodeSystem/$concept-history?system={}&code=A83075",
        enc(ODS)
    ))
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let h = reply.json();
    let versions = all_parts(&h, "version");
    let changes: Vec<(String, String)> = versions
        .iter()
        .map(|p| {
            (
                part_value(p, "version").expect("version").to_string(),
                part_value(p, "change").expect("change").to_string(),
            )
        })
        .collect();
    assert_eq!(changes[0], ("\"2019-10-01\"".into(), "\"added\"".into()));
    assert_eq!(changes[1], ("\"2020-01-01\"".into(), "\"changed\"".into()));
    assert!(
        changes
            .iter()
            .any(|(v, c)| v == "\"2026-02-01\"" && c == "\"changed\""),
        "the new layout continues the history: {changes:?}"
    );
    // What changed in 2020-01: the name, old → new.
    let renamed = versions[1]
        .iter()
        .filter(|p| p["name"] == "property")
        .find(|p| part_value(p["part"].as_array().expect("parts"), "code") == Some(&json!("name")))
        .expect("name changed");
    let parts = renamed["part"].as_array().expect("parts");
    assert_eq!(
        part_value(parts, "from"),
        Some(&json!("DENESIDE MEDICAL CENTRE"))
    );
    assert_eq!(
        part_value(parts, "to"),
        Some(&json!("BYRON MEDICAL PRACTICE"))
    );
    insta::assert_snapshot!("concept_history_a83075", pretty(&h));

    // A practice the 2026 file no longer lists is reported removed there.
    let gone = history(format!(
        "/fhir/CodeSystem/$concept-history?system={}&code=A81069&property=status",
        enc(ODS)
    ))
    .await
    .json();
    let last = *all_parts(&gone, "version").last().expect("entries");
    assert_eq!(part_value(last, "change"), Some(&json!("removed")));
    assert_eq!(part_value(last, "version"), Some(&json!("2026-02-01")));

    // POST gives the same; an unknown code is a 404.
    let post = send_to(
        history_state(),
        Request::post("/fhir/CodeSystem/$concept-history")
            .header("content-type", "application/fhir+json")
            .body(Body::from(
                json!({"resourceType": "Parameters", "parameter": [
                    {"name": "system", "valueUri": ODS},
                    {"name": "code", "valueCode": "A83075"}
                ]})
                .to_string(),
            ))
            .expect("request"),
    )
    .await
    .json();
    assert_eq!(post, h);
    let unknown = history(format!(
        "/fhir/CodeSystem/$concept-history?system={}&code=NOPE1",
        enc(ODS)
    ))
    .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn diff_of_two_slices_pages_through_its_concepts() {
    let url = |extra: &str| {
        format!(
            "/fhir/CodeSystem/$diff?url={}&fromVersion=2019-10-01&toVersion=2020-01-01{extra}",
            enc(ODS)
        )
    };
    let d = history(url("")).await.json();
    assert_eq!(param(&d, "added"), Some(&json!(5)), "Y06550 … Y06563");
    assert_eq!(param(&d, "removed"), Some(&json!(0)));
    assert_eq!(param(&d, "changed"), Some(&json!(4)));
    assert_eq!(param(&d, "total"), Some(&json!(9)));
    insta::assert_snapshot!("diff_epraccur_slices", pretty(&d));
    let status_only = history(url("&property=status")).await.json();
    assert_eq!(param(&status_only, "changed"), Some(&json!(3)));
    let page = history(url("&offset=4&count=2")).await.json();
    let concepts = all_parts(&page, "concept");
    assert_eq!(concepts.len(), 2);
    assert_eq!(part_value(concepts[0], "code"), Some(&json!("Y06563")));
    assert_eq!(part_value(concepts[1], "change"), Some(&json!("changed")));
    let unknown = history(format!(
        "/fhir/CodeSystem/$diff?url={}&fromVersion=1999-01-01",
        enc(ODS)
    ))
    .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let too_big = history(url("&count=100000")).await;
    assert_eq!(too_big.status, StatusCode::BAD_REQUEST);

    // Postcodes: Shetland between the 2017-05 and 2020-08 Scottish releases, counted from the
    // two fixture files by postcode.
    let keys = |rel: &str| -> std::collections::HashSet<String> {
        data_text(&format!("tests/fixtures/{rel}"))
            .lines()
            .skip(1)
            .map(|l| l.split(',').next().unwrap_or("").replace(['"', ' '], ""))
            .collect()
    };
    let a = keys("postcodes/codepoint_scotland_2017-05_ZE_slice.csv.gz");
    let b = keys("postcodes/codepoint_scotland_2020-08_ZE_slice.csv.gz");
    let pd = history(format!(
        "/fhir/CodeSystem/$diff?url={}&fromVersion=2017-05-01&toVersion=2020-08-01&count=0",
        enc(POSTCODE)
    ))
    .await
    .json();
    assert_eq!(param(&pd, "added"), Some(&json!(b.difference(&a).count())));
    assert_eq!(
        param(&pd, "removed"),
        Some(&json!(a.difference(&b).count()))
    );
}

/// The columns of the 27-field epraccur the shipped mapping reads (0-based). Values compare as the
/// mapping normalises them: trimmed, and the postcode (column 10) without regard to spacing.
const MAPPED_EPRACCUR_COLUMNS: [usize; 14] = [1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 14, 17, 25];

#[tokio::test]
async fn diff_of_the_real_2019_10_and_2020_01_releases_agrees_with_the_files() {
    let dir = tempfile::tempdir().expect("dir");
    let set = shipped();
    let m = set.mapping("ods-epraccur").expect("epraccur");
    let mut stored = Vec::new();
    for (file, version) in [
        ("epraccur_2019-10.csv.gz", "2019-10-01"),
        ("epraccur_2020-01.csv.gz", "2020-01-01"),
    ] {
        let path = repo().join("mappings/data/ods").join(file);
        let outcome = registers::import(
            &set,
            m,
            path.to_str().expect("path"),
            version,
            dir.path(),
            false,
            &mut |_, _| {},
        )
        .await
        .expect("imports");
        let SaveOutcome::Stored(saved) = outcome else {
            panic!("stored")
        };
        stored.push(saved);
    }
    // Storage grows with the changes: the second release stores its 54 new and its changed
    // practices, and refers to the rest.
    let second = &stored[1];
    assert!(
        second.bytes * 10 < second.full_copy_bytes,
        "{} bytes stored, {} for a full copy",
        second.bytes,
        second.full_copy_bytes
    );
    // The same file again is a no-op that names the release it already is.
    let again = registers::import(
        &set,
        m,
        repo()
            .join("mappings/data/ods/epraccur_2020-01.csv.gz")
            .to_str()
            .expect("path"),
        "2020-02-01",
        dir.path(),
        false,
        &mut |_, _| {},
    )
    .await
    .expect("no-op");
    assert!(matches!(again, SaveOutcome::Unchanged { ref info } if info.version == "2020-01-01"));
    assert_eq!(persist::release_files(dir.path()).len(), 2);

    let mut only_epraccur = shipped();
    only_epraccur
        .mappings
        .retain(|m| m.feed() == "ods-epraccur");
    let registry =
        registers::build_registry(&only_epraccur, dir.path(), &[]).expect("registry builds");
    let state = Arc::new(AppState::new(registry));
    let d = ask(
        &state,
        format!(
            "/fhir/CodeSystem/$diff?url={}&fromVersion=2019-10-01&toVersion=2020-01-01&count=0",
            enc(ODS)
        ),
    )
    .await
    .json();

    // The same comparison made directly from the files.
    let old: HashMap<String, csv::StringRecord> =
        gz_rows("mappings/data/ods/epraccur_2019-10.csv.gz")
            .into_iter()
            .map(|r| (r[0].trim().to_string(), r))
            .collect();
    let new = gz_rows("mappings/data/ods/epraccur_2020-01.csv.gz");
    let added = new
        .iter()
        .filter(|r| !old.contains_key(r[0].trim()))
        .count();
    let norm = |s: &str, i: usize| {
        if i == 9 {
            s.replace(' ', "")
        } else {
            s.trim().to_string()
        }
    };
    let differs = |a: &csv::StringRecord, b: &csv::StringRecord, cols: &[usize]| {
        cols.iter().any(|&i| norm(&a[i], i) != norm(&b[i], i))
    };
    let pairs: Vec<(&csv::StringRecord, &csv::StringRecord)> = new
        .iter()
        .filter_map(|r| Some((old.get(r[0].trim())?, r)))
        .collect();
    let changed = pairs
        .iter()
        .filter(|(a, b)| differs(a, b, &MAPPED_EPRACCUR_COLUMNS))
        .count();
    let status_changes = pairs.iter().filter(|(a, b)| differs(a, b, &[12])).count();
    let all_columns: Vec<usize> = (0..27).collect();
    let any_column = pairs
        .iter()
        .filter(|(a, b)| differs(a, b, &all_columns))
        .count();

    assert_eq!(added, 54, "SOURCES.md: 54 practices added");
    assert_eq!(
        any_column, 623,
        "SOURCES.md: 623 rows differ in some column"
    );
    assert_eq!(param(&d, "added"), Some(&json!(54)));
    assert_eq!(param(&d, "removed"), Some(&json!(0)));
    assert_eq!(param(&d, "changed"), Some(&json!(changed)));
    let per_property: HashMap<String, u64> = all_parts(&d, "propertyChanges")
        .into_iter()
        .map(|p| {
            (
                part_value(p, "property")
                    .and_then(Json::as_str)
                    .expect("property")
                    .to_string(),
                part_value(p, "count")
                    .and_then(Json::as_u64)
                    .expect("count"),
            )
        })
        .collect();
    assert_eq!(status_changes, 69);
    assert_eq!(per_property.get("status"), Some(&69));
    let display_changes = pairs.iter().filter(|(a, b)| differs(a, b, &[1])).count();
    assert_eq!(per_property.get("display"), Some(&(display_changes as u64)));
}

#[test]
fn the_old_mapping_refuses_the_new_layout_and_names_the_columns() {
    let set = shipped();
    let old = set.mapping("ods-epraccur").expect("epraccur");
    let err = mapping::read_release(
        old,
        &local("ods/epraccur_2026-02_dse_slice.csv"),
        "2026-02-01",
        &mut |_| {},
    )
    .expect_err("the old mapping does not read the new layout");
    let ImportError::Rows { total, rows, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(*rows, 250);
    assert!(*total >= 250);
    let text = err.to_string();
    assert!(
        text.contains(
            "column 13 \"status_code\" (concept.status.values): 250 of 250 rows: is not a known status (expected one of A, C, D, P); values seen: \"ACTIVE\""
        ),
        "{text}"
    );
    assert!(text.contains("column 26 \"prescribing_setting\""), "{text}");
    assert!(text.contains("another layout"), "{text}");

    let new = set.mapping("ods-epraccur-dse").expect("dse");
    assert_eq!(new.feed(), "ods-epraccur", "continues the same feed");
    let release = mapping::read_release(
        new,
        &local("ods/epraccur_2026-02_dse_slice.csv"),
        "2026-02-01",
        &mut |_| {},
    )
    .expect("the new mapping reads it");
    assert_eq!(release.concepts.len(), 250);
    assert_eq!(release.info.feed, "ods-epraccur");
    assert_eq!(release.info.mapping, "ods-epraccur-dse");
}

#[tokio::test]
async fn versions_say_which_feed_releases_they_are_made_of() {
    let read = history("/fhir/CodeSystem/ods-organization-code--2020-10-01".into())
        .await
        .json();
    assert_eq!(read["version"], "2020-10-01");
    assert_eq!(read["date"], "2020-10-01");
    let releases: Vec<(String, String)> = read["extension"]
        .as_array()
        .expect("extensions")
        .iter()
        .filter(|e| e["url"] == "https://fhir-registers.org/fhir/StructureDefinition/release")
        .map(|e| {
            let sub = |n: &str| {
                e["extension"]
                    .as_array()
                    .and_then(|a| a.iter().find(|x| x["url"] == n))
                    .and_then(|x| x["valueString"].as_str())
                    .unwrap_or_default()
                    .to_string()
            };
            (sub("feed"), sub("version"))
        })
        .collect();
    assert_eq!(
        releases,
        vec![
            ("ods-epraccur".to_string(), "2020-01-01".to_string()),
            ("ods-etr".to_string(), "2020-10-01".to_string())
        ],
        "a new etr release carries epraccur 2020-01 unchanged"
    );
    let search = history(format!(
        "/fhir/CodeSystem?url={}&version=2019-10-01",
        enc(ODS)
    ))
    .await
    .json();
    assert_eq!(search["total"], 1);
    assert_eq!(search["entry"][0]["resource"]["version"], "2019-10-01");
}

#[test]
fn the_operation_definitions_are_valid_r4_and_match_the_capability_statement() {
    for (file, code) in [
        (
            "conformance/OperationDefinition-CodeSystem-concept-history.json",
            "concept-history",
        ),
        (
            "conformance/OperationDefinition-CodeSystem-diff.json",
            "diff",
        ),
    ] {
        let text = std::fs::read_to_string(repo().join(file)).expect("file");
        fhir_xml::validate_json(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        let od: Json = serde_json::from_str(&text).expect("json");
        assert_eq!(od["code"], code);
        let advertised = fhir_registers::http::metadata::OPERATIONS
            .iter()
            .find(|(r, name, _)| *r == "CodeSystem" && *name == code)
            .map(|(_, _, url)| *url);
        assert_eq!(advertised, od["url"].as_str(), "{file}");
    }
}

/// `$diff` compares the changed concepts of two releases read in place without building them:
/// the bytes it allocates (jemalloc's per-thread counter; see `hot_path`) grow with what it
/// reports (a few words per added, removed or changed concept), not with decoded records. Before
/// the records were compared in place, every changed pair cost two decoded concepts and a list
/// of field names, over a kilobyte a pair.
#[test]
fn diff_allocates_per_reported_concept_not_per_decoded_record() {
    let registry = history_state().registry();
    let counter = tikv_jemalloc_ctl::thread::allocatedp::mib()
        .and_then(|mib| mib.read())
        .expect("jemalloc's thread counter");
    // The two Shetland releases, read in place: the newer one's changed postcodes are stored
    // as patches of the older one's records.
    let versions = registry.code_system_versions(POSTCODE);
    let version = |v: &str| {
        versions
            .iter()
            .find(|cs| cs.version == v)
            .unwrap_or_else(|| panic!("{v}"))
            .clone()
    };
    let (old, new) = (version("2017-05-01"), version("2020-08-01"));
    // Once to read the releases' code order (read on first use).
    let warm = fhir_registers::terminology::history::diff(&old, &new, &[]);
    let reported = warm.added.len() + warm.removed.len() + warm.changed.len();
    assert!(warm.changed.len() > 100, "{} changed", warm.changed.len());
    drop(warm);
    let before = counter.get();
    let d = fhir_registers::terminology::history::diff(&old, &new, &[]);
    let bytes = counter.get() - before;
    assert_eq!(d.added.len() + d.removed.len() + d.changed.len(), reported);
    eprintln!(
        "$diff 2017-05 → 2020-08: {} changed, {reported} reported, {bytes} bytes allocated",
        d.changed.len()
    );
    assert!(
        bytes <= DIFF_BYTES_PER_REPORTED * reported as u64 + DIFF_BYTES_FIXED,
        "{bytes} bytes for {reported} reported concepts"
    );
}

/// Bytes a `$diff` may allocate per concept it reports (the lists of added, removed and
/// changed concepts, grown by doubling), beyond [`DIFF_BYTES_FIXED`].
const DIFF_BYTES_PER_REPORTED: u64 = 96;
/// Bytes a `$diff` may allocate whatever it reports: the reused views and the per-field counts.
const DIFF_BYTES_FIXED: u64 = 16 * 1024;
