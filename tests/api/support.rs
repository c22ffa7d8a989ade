//! Shared test set-up: a registry built once from the shipped mappings and the fixture slices,
//! and helpers that send requests through the real router.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use fhir_registers::mapping::{self, MappingSet};
use fhir_registers::source::LocalFile;
use fhir_registers::store::persist;
use fhir_registers::{AppState, app, registers};
use http_body_util::BodyExt;
use serde_json::Value as Json;
use tower::ServiceExt;

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A fixture file's path.
pub fn fixture(rel: &str) -> PathBuf {
    repo().join("tests/fixtures").join(rel)
}

/// Which fixture feeds which shipped mapping (by mapping id), at which release version: one
/// release per feed, the shared state of most tests.
pub const FIXTURES: [(&str, &str, &str); 7] = [
    (
        "ods-epraccur",
        "ods/epraccur_2020-01_slice.csv",
        "2020-01-01",
    ),
    ("ods-etr", "ods/etr_2020-10_slice.csv", "2020-10-01"),
    ("ods-eccg", "ods/eccg_2024-07_slice.csv", "2024-07-01"),
    ("ods-roles", "ods/ods_organisation_roles.csv", "2023-01-01"),
    ("icd10-who", "icd10/who_icd10_2019_slice.csv", "2019"),
    (
        "postcodes-codepoint",
        "postcodes/codepoint_TS18_slice.csv.gz",
        "2014-08-01",
    ),
    (
        "opcs4-hes",
        "opcs4/opcs4_hes_2023-04_to_2024-03_slice.csv",
        "2023-04-01",
    ),
];

/// More releases for the history tests: the same practices in epraccur 2019-10 and in the 2026-02
/// Data Search and Export layout, and Shetland (ZE) postcodes in two Scottish releases.
pub const HISTORY_FIXTURES: [(&str, &str, &str); 4] = [
    (
        "ods-epraccur",
        "ods/epraccur_2019-10_slice.csv",
        "2019-10-01",
    ),
    (
        "ods-epraccur-dse",
        "ods/epraccur_2026-02_dse_slice.csv",
        "2026-02-01",
    ),
    (
        "postcodes-codepoint-scotland",
        "postcodes/codepoint_scotland_2017-05_ZE_slice.csv.gz",
        "2017-05-01",
    ),
    (
        "postcodes-codepoint-scotland",
        "postcodes/codepoint_scotland_2020-08_ZE_slice.csv.gz",
        "2020-08-01",
    ),
];

/// A local file handle for a fixture.
pub fn local(rel: &str) -> LocalFile {
    fhir_registers::source::local_file(fixture(rel).to_str().expect("utf-8 path"))
        .expect("fixture exists")
}

/// The shipped mappings.
pub fn shipped() -> MappingSet {
    MappingSet::load_dir(&repo().join("mappings")).expect("shipped mappings load")
}

/// Imports fixtures through the shipped mappings into `data_dir`.
pub fn import_list(set: &MappingSet, data_dir: &std::path::Path, list: &[(&str, &str, &str)]) {
    for (id, rel, version) in list {
        let m = set
            .mappings
            .iter()
            .find(|m| m.id() == *id)
            .unwrap_or_else(|| panic!("no mapping {id}"));
        let release = mapping::read_release(m, &local(rel), version, &mut |_| {})
            .unwrap_or_else(|e| panic!("{id} fixture {rel} imports: {e}"));
        persist::save_release(data_dir, release, false).expect("saves");
    }
}

/// Imports the one-release-per-feed fixtures into `data_dir`.
pub fn import_fixtures(set: &MappingSet, data_dir: &std::path::Path) {
    import_list(set, data_dir, &FIXTURES);
}

/// Server state over the fixture lists, imported through the shipped mappings. Segments of up to
/// `decode_limit` records are decoded when loaded, larger ones read in place.
fn build_state(lists: &[&[(&str, &str, &str)]], decode_limit: usize) -> Arc<AppState> {
    let dir = tempfile::tempdir().expect("tempdir").keep();
    let set = shipped();
    for list in lists {
        import_list(&set, &dir, list);
    }
    let registry = with_decode_limit(decode_limit, || registers::build_registry(&set, &dir, &[]));
    Arc::new(AppState::new(registry.expect("registry builds")))
}

/// Runs `load` with segments of up to `decode_limit` records decoded when loaded (0: every
/// segment read in place), one such load at a time (the limit is the process's).
pub fn with_decode_limit<T>(decode_limit: usize, load: impl FnOnce() -> T) -> T {
    static LIMIT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _only_one = LIMIT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let default = persist::decode_limit();
    persist::set_decode_limit(decode_limit);
    let loaded = load();
    persist::set_decode_limit(default);
    loaded
}

/// The shared server state over the fixtures (built once per test binary).
pub fn state() -> Arc<AppState> {
    static STATE: OnceLock<Arc<AppState>> = OnceLock::new();
    STATE
        .get_or_init(|| build_state(&[&FIXTURES], persist::decode_limit()))
        .clone()
}

/// The state over the same fixtures as [`state`], every record read in place (packed) rather than
/// decoded: what `serve` does with large registers.
pub fn packed_state() -> Arc<AppState> {
    static STATE: OnceLock<Arc<AppState>> = OnceLock::new();
    STATE.get_or_init(|| build_state(&[&FIXTURES], 0)).clone()
}

/// The state over the fixtures and the history fixtures (several releases of ODS and postcodes),
/// every record read in place, as the server reads large registers.
pub fn history_state() -> Arc<AppState> {
    static STATE: OnceLock<Arc<AppState>> = OnceLock::new();
    STATE
        .get_or_init(|| build_state(&[&FIXTURES, &HISTORY_FIXTURES], 0))
        .clone()
}

/// A response: status, content type, body bytes.
pub struct Reply {
    pub status: StatusCode,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl Reply {
    /// The body as JSON (panics with the body text if it is not).
    pub fn json(&self) -> Json {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends a request through the router of `state`.
pub async fn send_to(state: Arc<AppState>, req: Request<Body>) -> Reply {
    let resp = app(state).oneshot(req).await.expect("router answers");
    let status = resp.status();
    let content_type = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = resp
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes()
        .to_vec();
    Reply {
        status,
        content_type,
        body,
    }
}

/// GET a path (under `/fhir`).
pub async fn get(path: &str) -> Reply {
    let req = Request::get(path).body(Body::empty()).expect("request");
    send_to(state(), req).await
}

/// POST a FHIR JSON body.
pub async fn post(path: &str, body: &Json) -> Reply {
    let req = Request::post(path)
        .header(header::CONTENT_TYPE, "application/fhir+json")
        .body(Body::from(body.to_string()))
        .expect("request");
    send_to(state(), req).await
}

/// Percent-encodes a query value.
pub fn enc(v: &str) -> String {
    url::form_urlencoded::byte_serialize(v.as_bytes()).collect()
}

/// The value of the first output parameter called `name` (its `value[x]`).
pub fn param<'a>(params: &'a Json, name: &str) -> Option<&'a Json> {
    params["parameter"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| {
            p.as_object()?
                .iter()
                .find(|(k, _)| k.starts_with("value") || *k == "resource")
                .map(|(_, v)| v)
        })
}

/// Every `property` of a `$lookup` answer as (code, value JSON).
pub fn properties(params: &Json) -> Vec<(String, Json)> {
    params["parameter"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["name"] == "property")
        .filter_map(|p| {
            let parts = p["part"].as_array()?;
            let code = parts.iter().find(|x| x["name"] == "code")?["valueCode"]
                .as_str()?
                .to_string();
            let value = parts.iter().find(|x| x["name"] == "value")?;
            let v = value
                .as_object()?
                .iter()
                .find(|(k, _)| k.starts_with("value"))?
                .1
                .clone();
            Some((code, v))
        })
        .collect()
}

/// Codes of an expansion's `contains`.
pub fn codes(vs: &Json) -> Vec<String> {
    vs["expansion"]["contains"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c["code"].as_str().unwrap_or("").to_string())
        .collect()
}

/// Reads a headerless ODS fixture into its rows.
pub fn ods_rows(rel: &str) -> Vec<Vec<String>> {
    let mut r = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_path(fixture(rel))
        .expect("fixture");
    r.records()
        .map(|rec| rec.expect("row").iter().map(str::to_string).collect())
        .collect()
}

/// The issue of an OperationOutcome: (code, text).
pub fn outcome(oo: &Json) -> (String, String) {
    assert_eq!(oo["resourceType"], "OperationOutcome", "{oo}");
    (
        oo["issue"][0]["code"].as_str().unwrap_or("").to_string(),
        oo["issue"][0]["details"]["text"]
            .as_str()
            .unwrap_or("")
            .to_string(),
    )
}

/// Pretty JSON text for snapshots. (serde_json's `arbitrary_precision`, switched on by fhirbolt,
/// makes insta's own JSON serialiser print numbers as private structs, so snapshots are taken
/// of serde_json's text.)
pub fn pretty(v: &Json) -> String {
    serde_json::to_string_pretty(v).expect("serialises")
}

/// Replaces volatile expansion fields with named placeholders.
pub fn redact_expansion(mut v: Json) -> Json {
    if let Some(exp) = v.get_mut("expansion") {
        exp["identifier"] = Json::String("[identifier]".into());
        exp["timestamp"] = Json::String("[timestamp]".into());
    }
    v
}

/// A file under the repository root, gunzipped when its name ends in `.gz`.
pub fn open_data(rel: &str) -> Box<dyn std::io::Read> {
    let file = std::fs::File::open(repo().join(rel)).expect("data file");
    if rel.ends_with(".gz") {
        Box::new(flate2::read::GzDecoder::new(file))
    } else {
        Box::new(file)
    }
}

/// A data file's text (see [`open_data`]).
pub fn data_text(rel: &str) -> String {
    let mut text = String::new();
    std::io::Read::read_to_string(&mut open_data(rel), &mut text).expect("readable text");
    text
}

/// Every record of a headerless register file (gzipped or not) under the repository root.
pub fn gz_rows(rel: &str) -> Vec<csv::StringRecord> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(open_data(rel))
        .records()
        .map(|r| r.expect("csv record"))
        .collect()
}

/// The parts of every output parameter called `name`.
pub fn all_parts<'a>(params: &'a Json, name: &str) -> Vec<&'a Vec<Json>> {
    params["parameter"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["name"] == name)
        .filter_map(|p| p["part"].as_array())
        .collect()
}

/// The value of the first part called `name`.
pub fn part_value<'a>(parts: &'a [Json], name: &str) -> Option<&'a Json> {
    parts.iter().find(|p| p["name"] == name).and_then(|p| {
        p.as_object()?
            .iter()
            .find(|(k, _)| k.starts_with("value"))
            .map(|(_, v)| v)
    })
}

/// Server state over one shipped mapping alone, with one release of it read from `file` (a path
/// in the repository) and the given plain resources.
pub fn one_register_state(
    id: &str,
    file: &str,
    version: &str,
    resources: &[(String, Json)],
) -> Arc<AppState> {
    let dir = tempfile::tempdir().expect("dir").keep();
    let set = shipped();
    let m = set.mapping(id).unwrap_or_else(|| panic!("no mapping {id}"));
    let file = fhir_registers::source::local_file(repo().join(file).to_str().expect("utf-8"))
        .expect("file");
    let release = mapping::read_release(m, &file, version, &mut |_| {}).expect("reads");
    persist::save_release(&dir, release, false).expect("saves");
    let only = MappingSet::from_mappings(vec![m.clone()]).expect("set");
    Arc::new(AppState::new(
        registers::build_registry(&only, &dir, resources).expect("registry"),
    ))
}

/// The issues of a `$validate-code` answer as (severity, code, tx-issue-type, text).
pub fn validation_issues(p: &Json) -> Vec<(String, String, String, String)> {
    param(p, "issues")
        .and_then(|oo| oo["issue"].as_array())
        .into_iter()
        .flatten()
        .map(|i| {
            let text = |v: &Json| v.as_str().unwrap_or("").to_string();
            (
                text(&i["severity"]),
                text(&i["code"]),
                text(&i["details"]["coding"][0]["code"]),
                text(&i["details"]["text"]),
            )
        })
        .collect()
}
