//! History stays exact when releases are imported by change: a year of generated monthly postcode
//! releases (benches/gen_history.py over the shipped TS, DL and HG slice, scaled up, with monthly
//! churn and a ward code refresh) imported through the real import path, then `$diff` and
//! `$concept-history` checked against counts made directly from the generated files.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use fhir_registers::AppState;
use fhir_registers::mapping::MappingSet;
use fhir_registers::registers;
use fhir_registers::store::persist::SaveOutcome;
use serde_json::Value as Json;

use super::support::*;

const POSTCODE: &str =
    "https://digital.nhs.uk/services/organisation-data-service/CodeSystem/postcode";
const SLICE: &str = "mappings/data/postcodes/codepoint_open_2014-08_TS_DL_HG.csv.gz";

/// One generated release: its version, the generator's counts, and its rows by postcode.
struct Month {
    version: String,
    introduced: usize,
    terminated: usize,
    changed: usize,
    kind: String,
    rows: HashMap<String, String>,
}

/// Postcode (without spaces, as the mapping codes it) → the row as written.
fn read_rows(path: &Path) -> HashMap<String, String> {
    let text = {
        let mut s = String::new();
        let file = std::fs::File::open(path).expect("generated file");
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(file), &mut s)
            .expect("gzip text");
        s
    };
    text.lines()
        .skip(1)
        .filter(|l| !l.is_empty())
        .map(|l| (l[1..8].replace(' ', ""), l.to_string()))
        .collect()
}

/// Generates twelve months (a refresh in month 7), imports each and builds the registry twice:
/// records decoded when loaded (as a register of this size is served) and read in place.
fn history() -> &'static (Vec<Month>, Arc<AppState>, Arc<AppState>) {
    static HISTORY: OnceLock<(Vec<Month>, Arc<AppState>, Arc<AppState>)> = OnceLock::new();
    HISTORY.get_or_init(|| {
        let dir = tempfile::tempdir().expect("dir").keep();
        let out = std::process::Command::new("python3")
            .arg(repo().join("benches/gen_history.py"))
            .arg(repo().join(SLICE))
            .arg(dir.join("gen"))
            .args([
                "--months",
                "12",
                "--target",
                "40000",
                "--refresh-every",
                "6",
            ])
            .args(["--seed", "7", "--start", "2023-01"])
            .output()
            .expect("python3 runs benches/gen_history.py");
        assert!(
            out.status.success(),
            "generator: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let set = shipped();
        let m = set.mapping("postcodes-codepoint").expect("mapping");
        let data = dir.join("data");
        let mut months = Vec::new();
        for line in String::from_utf8(out.stdout).expect("utf-8").lines() {
            let f: Vec<&str> = line.split('\t').collect();
            let file = fhir_registers::source::local_file(f[0]).expect("file");
            let month = Month {
                version: f[1].to_string(),
                introduced: f[3].parse().expect("n"),
                terminated: f[4].parse().expect("n"),
                changed: f[5].parse().expect("n"),
                kind: f[6].to_string(),
                rows: read_rows(Path::new(f[0])),
            };
            let saved = registers::import_file(
                &set,
                m,
                &file,
                &month.version,
                &data,
                false,
                &mut |_, _| {},
            )
            .unwrap_or_else(|e| panic!("{} imports: {e}", month.version));
            let SaveOutcome::Stored(saved) = saved else {
                panic!("{} was stored", month.version);
            };
            // The import stores what changed: every introduced or changed postcode, nothing else.
            let expected = if months.is_empty() {
                month.rows.len()
            } else {
                month.introduced + month.changed
            };
            assert_eq!(
                saved.new_records, expected,
                "records stored for {}",
                month.version
            );
            months.push(month);
        }
        assert_eq!(months.len(), 12);
        let only = MappingSet::from_mappings(vec![m.clone()]).expect("set");
        let registry = registers::build_registry(&only, &data, &[]).expect("registry");
        // Served, only the newest release's code order is read; the others are read when asked.
        let loaded: Vec<bool> = registry
            .code_system_versions(POSTCODE)
            .iter()
            .map(|v| v.parts[0].is_loaded())
            .collect();
        assert_eq!(loaded.len(), 12);
        assert_eq!(loaded.iter().filter(|l| **l).count(), 1, "{loaded:?}");
        assert!(loaded[11], "the newest is read at once");
        // The same store read in place, as `serve` reads a national register's records.
        let packed = with_decode_limit(0, || registers::build_registry(&only, &data, &[]))
            .expect("registry");
        (
            months,
            Arc::new(AppState::new(registry)),
            Arc::new(AppState::new(packed)),
        )
    })
}

async fn call(path: &str) -> Json {
    call_in(&history().1, path).await
}

async fn call_in(state: &Arc<AppState>, path: &str) -> Json {
    let req = Request::get(path).body(Body::empty()).expect("request");
    let reply = send_to(state.clone(), req).await;
    assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.text());
    reply.json()
}

fn integer(params: &Json, name: &str) -> usize {
    param(params, name)
        .and_then(Json::as_u64)
        .unwrap_or_else(|| panic!("{name} in {params}")) as usize
}

/// (added, removed, changed, unchanged) counted from two months' files.
fn counts(old: &Month, new: &Month) -> (usize, usize, usize, usize) {
    let added = new
        .rows
        .keys()
        .filter(|k| !old.rows.contains_key(*k))
        .count();
    let removed = old
        .rows
        .keys()
        .filter(|k| !new.rows.contains_key(*k))
        .count();
    let changed = new
        .rows
        .iter()
        .filter(|(k, row)| old.rows.get(*k).is_some_and(|o| o != *row))
        .count();
    (added, removed, changed, new.rows.len() - added - changed)
}

#[tokio::test]
async fn diff_counts_match_the_generated_files() {
    let (months, ..) = history();
    assert!(
        months.iter().any(|m| m.kind == "refresh"),
        "a refresh month"
    );
    let mut pairs: Vec<(usize, usize)> = (1..months.len()).map(|k| (k - 1, k)).collect();
    pairs.push((0, months.len() - 1));
    for (a, b) in pairs {
        let (old, new) = (&months[a], &months[b]);
        let expected = counts(old, new);
        if b == a + 1 && new.kind == "monthly" {
            // The generator's own account agrees with the files.
            assert_eq!(
                (expected.0, expected.1, expected.2),
                (new.introduced, new.terminated, new.changed),
                "{}",
                new.version
            );
        }
        // Records decoded and read in place compare alike.
        for (state, how) in [(&history().1, "decoded"), (&history().2, "packed")] {
            let d = call_in(
                state,
                &format!(
                    "/fhir/CodeSystem/$diff?url={}&fromVersion={}&toVersion={}&count=1",
                    enc(POSTCODE),
                    old.version,
                    new.version
                ),
            )
            .await;
            let got = (
                integer(&d, "added"),
                integer(&d, "removed"),
                integer(&d, "changed"),
                integer(&d, "unchanged"),
            );
            assert_eq!(
                got, expected,
                "$diff {} → {} ({how})",
                old.version, new.version
            );
            assert_eq!(integer(&d, "total"), got.0 + got.1 + got.2);
        }
    }
}

/// What `$concept-history` says of a code, made from the files: one entry per version from its
/// first appearance, `added`, then `changed`/`unchanged`, and `removed` once it is gone.
fn expected_history(months: &[Month], code: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut previous: Option<&String> = None;
    for m in months {
        let now = m.rows.get(code);
        let change = match (previous, now) {
            (None, None) => continue,
            (None, Some(_)) => "added",
            (Some(_), None) => "removed",
            (Some(a), Some(b)) if a == b => "unchanged",
            (Some(_), Some(_)) => "changed",
        };
        out.push((m.version.clone(), change.to_string()));
        previous = now;
    }
    out
}

#[tokio::test]
async fn concept_history_matches_the_generated_files() {
    let (months, ..) = history();
    // Postcodes that changed most often, ones introduced and ones terminated during the year.
    let mut changes: BTreeMap<&String, usize> = BTreeMap::new();
    for w in months.windows(2) {
        for (k, row) in &w[1].rows {
            if w[0].rows.get(k).is_some_and(|o| o != row) {
                *changes.entry(k).or_default() += 1;
            }
        }
    }
    let mut busiest: Vec<(&String, usize)> = changes.into_iter().collect();
    busiest.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let (first, last) = (&months[0], &months[months.len() - 1]);
    let introduced = last.rows.keys().filter(|k| !first.rows.contains_key(*k));
    let terminated = first.rows.keys().filter(|k| !last.rows.contains_key(*k));
    let mut codes: Vec<&String> = busiest.iter().take(5).map(|(k, _)| *k).collect();
    codes.extend(introduced.take(3));
    codes.extend(terminated.take(3));
    assert!(busiest[0].1 >= 2, "some postcode changed more than once");
    for code in codes {
        let expected = expected_history(months, code);
        let h = call(&format!(
            "/fhir/CodeSystem/$concept-history?system={}&code={code}",
            enc(POSTCODE)
        ))
        .await;
        let got: Vec<(String, String)> = all_parts(&h, "version")
            .into_iter()
            .map(|parts| {
                let text = |n: &str| {
                    part_value(parts, n)
                        .and_then(Json::as_str)
                        .unwrap_or_default()
                        .to_string()
                };
                (text("version"), text("change"))
            })
            .collect();
        assert_eq!(got, expected, "$concept-history of {code}");
    }
}
