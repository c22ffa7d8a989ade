//! The data directory after crashes and mistakes: what a killed import leaves is removed when a
//! feed is loaded to serve and by every import; a damaged records file is refused by name; two
//! feeds of one CodeSystem never both supply a code, and `$diff` counts each code once.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use fhir_registers::AppState;
use fhir_registers::mapping::{Mapping, MappingSet};
use fhir_registers::registers::{self, LoadError};
use fhir_registers::store::persist::{self, SaveOutcome};
use serde_json::{Value as Json, json};

use super::support::*;

const ODS: &str = "https://fhir.nhs.uk/Id/ods-organization-code";

/// The shipped ODS practice mapping alone.
fn epraccur_only() -> MappingSet {
    let mut set = shipped();
    set.mappings.retain(|m| m.id() == "ods-epraccur");
    MappingSet::from_mappings(set.mappings).expect("one mapping")
}

/// The shipped ODS practice mapping, and a copy of it that feeds the same CodeSystem as another
/// feed (`ods-epraccur-copy`), as a second mapping of one register would.
fn epraccur_twice() -> MappingSet {
    let set = epraccur_only();
    let mut copy: Mapping = set.mappings[0].clone();
    copy.spec.register.id = "ods-epraccur-copy".into();
    copy.spec.register.feed = None;
    copy.spec.value_sets.clear();
    copy.spec.concept_maps.clear();
    let mut mappings = set.mappings;
    mappings.push(copy);
    MappingSet::from_mappings(mappings).expect("two mappings of one CodeSystem")
}

fn mapping<'a>(set: &'a MappingSet, id: &str) -> &'a Mapping {
    set.mappings.iter().find(|m| m.id() == id).expect("mapping")
}

async fn import(
    set: &MappingSet,
    id: &str,
    file: &Path,
    version: &str,
    data: &Path,
) -> Result<SaveOutcome, LoadError> {
    let file = file.to_str().expect("utf-8 path");
    registers::import(
        set,
        mapping(set, id),
        file,
        version,
        data,
        false,
        &mut |_, _| {},
    )
    .await
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .expect("dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

async fn get(state: &Arc<AppState>, uri: String) -> Reply {
    send_to(
        state.clone(),
        Request::get(uri).body(Body::empty()).expect("request"),
    )
    .await
}

#[tokio::test]
async fn what_a_killed_import_leaves_is_removed_at_start_and_by_a_no_op_import() {
    let data = tempfile::tempdir().expect("dir");
    let set = epraccur_only();
    let slice = fixture("ods/epraccur_2020-01_slice.csv");
    import(&set, "ods-epraccur", &slice, "2020-01-01", data.path())
        .await
        .expect("imports");
    let feed = persist::feed_dir(data.path(), "ods-epraccur");
    let records = feed.join("records");
    let (clean_feed, clean_records) = (files_in(&feed), files_in(&records));
    let real_records = records.join(&clean_records[0]);
    // `kill -9` during an import: half-written files of a process that is gone, and a records
    // file written before the release file that would have named it (a copy of a real one).
    let plant = || {
        std::fs::write(records.join("2020-04-01-77aa.tmp-99999"), vec![7u8; 65536]).expect("tmp");
        std::fs::write(feed.join("2020-04-01.tmp-99999"), b"half a release").expect("tmp");
        std::fs::copy(&real_records, records.join("2020-04-01-77aa.records")).expect("copy");
    };

    // A read-only replica writes nothing: it serves the releases and leaves the debris (the
    // writer's next import or start removes it).
    plant();
    let replica =
        registers::rebuild_registry(&set, data.path(), &[], None, false).expect("registry");
    assert_eq!(replica.all_code_systems().count(), 1);
    assert_eq!(files_in(&feed).len(), clean_feed.len() + 1);
    assert_eq!(files_in(&records).len(), clean_records.len() + 2);

    // Start-up (assembling the registry) removes them and keeps everything a release names.
    plant();
    let registry = registers::build_registry(&set, data.path(), &[]).expect("registry");
    assert_eq!(files_in(&feed), clean_feed);
    assert_eq!(files_in(&records), clean_records);
    let state = Arc::new(AppState::new(registry));
    let lookup = get(
        &state,
        format!("/fhir/CodeSystem/$lookup?system={}&code=A81001", enc(ODS)),
    )
    .await;
    assert_eq!(lookup.status, StatusCode::OK);
    assert_eq!(
        param(&lookup.json(), "display"),
        Some(&json!("THE DENSHAM SURGERY"))
    );

    // So does an import that stores nothing (the same file again).
    plant();
    let again = import(&set, "ods-epraccur", &slice, "2020-02-01", data.path())
        .await
        .expect("no-op");
    assert!(matches!(again, SaveOutcome::Unchanged { .. }));
    assert_eq!(files_in(&feed), clean_feed);
    assert_eq!(files_in(&records), clean_records);
}

#[tokio::test]
async fn a_damaged_records_file_is_refused_at_load_by_name() {
    let data = tempfile::tempdir().expect("dir");
    let set = epraccur_only();
    let slice = fixture("ods/epraccur_2020-01_slice.csv");
    import(&set, "ods-epraccur", &slice, "2020-01-01", data.path())
        .await
        .expect("imports");
    let records = persist::feed_dir(data.path(), "ods-epraccur").join("records");
    let file: PathBuf = records.join(&files_in(&records)[0]);
    // One letter of a display: DENSHAM becomes DENSHAL, still well formed.
    let mut bytes = std::fs::read(&file).expect("read");
    let at = bytes
        .windows(7)
        .position(|w| w == b"DENSHAM")
        .expect("display in the file");
    bytes[at + 6] = b'L';
    std::fs::write(&file, &bytes).expect("write");

    let (store, errors) = persist::FeedStore::open(data.path(), "ods-epraccur");
    assert!(store.releases.is_empty());
    assert_eq!(errors.len(), 1, "{errors:?}");
    let text = errors[0].to_string();
    assert!(text.contains(&*file.to_string_lossy()), "{text}");
    assert!(text.contains("checksum mismatch"), "{text}");
    // Not served (logged), and not removed: it is named by a release.
    let registry = registers::build_registry(&set, data.path(), &[]).expect("registry");
    assert!(registry.code_system(ODS, None).is_none());
    assert!(file.exists());
}

#[tokio::test]
async fn two_feeds_supplying_one_code_are_refused_naming_both() {
    let data = tempfile::tempdir().expect("dir");
    let set = epraccur_twice();
    let slice = fixture("ods/epraccur_2020-01_slice.csv");
    import(&set, "ods-epraccur", &slice, "2020-01-01", data.path())
        .await
        .expect("imports");
    // The same practices through the other feed of the CodeSystem: refused, nothing stored.
    let err = import(&set, "ods-epraccur-copy", &slice, "2020-01-01", data.path())
        .await
        .expect_err("refused");
    let text = err.to_string();
    assert!(
        matches!(&err, LoadError::FeedsOverlap(o) if o.count == 271),
        "{text}"
    );
    for needle in [
        ODS,
        "ods-epraccur@2020-01-01",
        "ods-epraccur-copy@2020-01-01",
        "271 code(s)",
        "A81001, A81002, A81003, A81004, A81005, …",
    ] {
        assert!(text.contains(needle), "{needle}: {text}");
    }
    assert_eq!(persist::release_files(data.path()).len(), 1);
    // A release of the other feed dated before the first one is part of the 2019 version alone,
    // then of 2020-01 beside the first: refused as well.
    let err = import(&set, "ods-epraccur-copy", &slice, "2019-10-01", data.path())
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("version 2020-01-01"), "{err}");

    // Stored anyway (imported before this rule, or with another mappings folder): the registry
    // is refused with the same message, rather than serving a version where a code means two
    // things and `$diff` counts it twice.
    let m = mapping(&set, "ods-epraccur-copy");
    let release = fhir_registers::mapping::read_release(
        m,
        &local("ods/epraccur_2020-01_slice.csv"),
        "2020-01-01",
        &mut |_| {},
    )
    .expect("reads");
    persist::save_release(data.path(), release, false).expect("stored without the check");
    let err = registers::build_registry(&set, data.path(), &[]).expect_err("refused");
    let text = err.to_string();
    assert!(text.contains("ods-epraccur@2020-01-01"), "{text}");
    assert!(text.contains("ods-epraccur-copy@2020-01-01"), "{text}");
    assert!(text.contains("A81001"), "{text}");
}

/// Writes some of a fixture's rows (byte for byte) to a file in `dir`.
fn rows_file(dir: &Path, name: &str, rel: &str, keep: impl Fn(usize) -> bool) -> PathBuf {
    let text = std::fs::read(fixture(rel)).expect("fixture");
    let rows: Vec<&[u8]> = text.split_inclusive(|&b| b == b'\n').collect();
    let kept: Vec<u8> = rows
        .iter()
        .enumerate()
        .filter(|(i, _)| keep(*i))
        .flat_map(|(_, r)| r.iter().copied())
        .collect();
    let path = dir.join(name);
    std::fs::write(&path, kept).expect("write");
    path
}

fn counts(d: &Json) -> Vec<Option<&Json>> {
    ["added", "removed", "changed", "unchanged"]
        .into_iter()
        .map(|k| param(d, k))
        .collect()
}

#[tokio::test]
async fn diff_counts_a_code_once_when_it_moved_to_another_feed() {
    let files = tempfile::tempdir().expect("dir");
    let one = tempfile::tempdir().expect("dir");
    let two = tempfile::tempdir().expect("dir");
    let old = fixture("ods/epraccur_2019-10_slice.csv");
    let new = fixture("ods/epraccur_2020-01_slice.csv");
    let set = epraccur_twice();
    // One feed: 2019-10, then 2020-01.
    for (file, version) in [(&old, "2019-10-01"), (&new, "2020-01-01")] {
        import(&set, "ods-epraccur", file, version, one.path())
            .await
            .expect("imports");
    }
    // Two feeds: 2019-10 in the first; in 2020-01 the first keeps the first half of the rows
    // and the second feed supplies the rest.
    let first_half = rows_file(
        files.path(),
        "a.csv",
        "ods/epraccur_2020-01_slice.csv",
        |i| i < 135,
    );
    let second_half = rows_file(
        files.path(),
        "b.csv",
        "ods/epraccur_2020-01_slice.csv",
        |i| i >= 135,
    );
    for (id, file, version) in [
        ("ods-epraccur", &old, "2019-10-01"),
        ("ods-epraccur", &first_half, "2020-01-01"),
        ("ods-epraccur-copy", &second_half, "2020-01-01"),
    ] {
        import(&set, id, file, version, two.path())
            .await
            .unwrap_or_else(|e| panic!("{id} {version}: {e}"));
    }
    let diff = |dir: PathBuf| {
        let set = epraccur_twice();
        async move {
            let registry = registers::build_registry(&set, &dir, &[]).expect("registry");
            get(
                &Arc::new(AppState::new(registry)),
                format!(
                    "/fhir/CodeSystem/$diff?url={}&fromVersion=2019-10-01&toVersion=2020-01-01&count=0",
                    enc(ODS)
                ),
            )
            .await
            .json()
        }
    };
    let single = diff(one.path().to_path_buf()).await;
    let split = diff(two.path().to_path_buf()).await;
    assert_eq!(param(&single, "removed"), Some(&json!(0)));
    assert!(param(&single, "added").and_then(Json::as_u64) > Some(0));
    assert_eq!(counts(&split), counts(&single));
}
