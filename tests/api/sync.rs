//! Following upstreams (issue 12): a real loopback upstream ([`super::upstream`]) serves the real
//! epraccur releases as a file replaced in place and in the TRUD API's shape, and injects every
//! fault; the server's admin API, the `sync` command (the real binary) and the reload of another
//! process's import are driven end to end.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use fhir_registers::http::admin::Admin;
use fhir_registers::mapping::{Mapping, MappingSet};
use fhir_registers::sync::publish::Publisher;
use fhir_registers::sync::schedule::Service;
use fhir_registers::sync::{Secret, SyncSettings, Syncer};
use fhir_registers::{AppState, registers};
use serde_json::{Value as Json, json};
use tower::ServiceExt;

use super::support::*;
use super::upstream::*;

const TOKEN: &str = "an-admin-token-long-enough";
const ODS: &str = "https://fhir.nhs.uk/Id/ods-organization-code";
const TRUD_KEY: &str = "trud-key-9f8e7d6c5b4a";

/// A full epraccur release from the repository, unpacked.
fn epraccur(month: &str) -> Vec<u8> {
    gunzip(&repo().join(format!("mappings/data/ods/epraccur_{month}.csv.gz")))
}

/// A mappings folder holding the shipped epraccur mapping with `sync` as its `[sync]` table.
fn mappings_with_sync(sync: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("dir");
    let text = std::fs::read_to_string(repo().join("mappings/ods-epraccur.toml")).expect("mapping");
    std::fs::write(
        dir.path().join("ods-epraccur.toml"),
        format!("{text}\n[sync]\n{sync}\n"),
    )
    .expect("write");
    dir
}

/// A server over `mappings` and `data`, wired as `serve` wires it: its registry swapped by a
/// publisher, syncs behind the admin API.
struct Live {
    state: Arc<AppState>,
    service: Arc<Service>,
    publisher: Arc<Publisher>,
}

fn live(mappings: &Path, data: &Path, settings: SyncSettings) -> Live {
    let set = Arc::new(MappingSet::load_dir(mappings).expect("mappings load"));
    let marker = fhir_registers::store::persist::read_change_marker(data);
    let registry = registers::build_registry(&set, data, &[]).expect("registry");
    let mut state = AppState::new(registry);
    let publisher = Arc::new(
        Publisher::new(
            state.live.clone(),
            set.clone(),
            Arc::new(Vec::new()),
            data.to_path_buf(),
            marker,
        )
        .with_metrics(state.metrics.clone()),
    );
    let syncer = Syncer::new(settings, set)
        .expect("client")
        .with_metrics(state.metrics.clone());
    let service = Arc::new(Service::new(syncer, Some(publisher.clone())));
    state.admin = Some(Admin::new(Secret::new(TOKEN), service.clone()));
    Live {
        state: Arc::new(state),
        service,
        publisher,
    }
}

/// Settings for tests: short timeouts and backoff.
fn settings(data: &Path) -> SyncSettings {
    let mut s = SyncSettings::new(data.to_path_buf());
    s.connect_timeout = Duration::from_secs(2);
    s.timeout = Duration::from_secs(2);
    s.retry_min = Duration::from_secs(60);
    s.retry_max = Duration::from_secs(3600);
    s
}

async fn admin(state: &Arc<AppState>, method: &str, path: &str, token: Option<&str>) -> Reply {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    send_to(state.clone(), req.body(Body::empty()).expect("request")).await
}

async fn sync_now(state: &Arc<AppState>) -> (StatusCode, Json) {
    let r = admin(state, "POST", "/admin/sync/ods-epraccur", Some(TOKEN)).await;
    (r.status, r.json())
}

async fn status_of(state: &Arc<AppState>) -> Json {
    let r = admin(state, "GET", "/admin/status", Some(TOKEN)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    r.json()["registers"][0].clone()
}

async fn display_of(state: &Arc<AppState>, code: &str, version: Option<&str>) -> Json {
    let v = version.map(|v| format!("&version={v}")).unwrap_or_default();
    let r = send_to(
        state.clone(),
        Request::get(format!(
            "/fhir/CodeSystem/$lookup?system={}&code={code}{v}",
            enc(ODS)
        ))
        .body(Body::empty())
        .expect("request"),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    param(&r.json(), "display").cloned().unwrap_or(Json::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_file_is_followed_and_each_release_served_without_a_restart() {
    let up = Upstream::start().await;
    let mappings = mappings_with_sync(&format!(
        "url = \"{}\"\nmember = \"epraccur.csv\"\nevery = \"7d\"",
        up.url("/epraccur.zip")
    ));
    let data = tempfile::tempdir().expect("data");
    let server = live(mappings.path(), data.path(), settings(data.path()));
    let state = &server.state;

    // The admin API needs the token.
    let anonymous = admin(state, "POST", "/admin/sync/ods-epraccur", None).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    let wrong = admin(state, "GET", "/admin/status", Some("not-the-token-at-all")).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    for r in [&anonymous, &wrong] {
        let reply = send_to(
            state.clone(),
            Request::post("/admin/sync/ods-epraccur")
                .body(Body::empty())
                .expect("req"),
        )
        .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert!(r.text().contains("token"), "{}", r.text());
    }
    let challenge = send_to(
        state.clone(),
        Request::get("/admin/status")
            .header(header::AUTHORIZATION, "Bearer wrong-token-of-some-length")
            .body(Body::empty())
            .expect("req"),
    )
    .await;
    assert_eq!(challenge.status, StatusCode::UNAUTHORIZED);
    assert_eq!(up.requests("/epraccur.zip").len(), 0, "nothing synced");

    // Release 1: epraccur 2019-10, dated by Last-Modified (the zip's names carry no date).
    up.put(
        "/epraccur.zip",
        zip_of("epraccur.csv", &epraccur("2019-10")),
        "v1",
        "2019-10-01",
    );
    let (status, report) = sync_now(state).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["outcome"], "imported");
    assert_eq!(report["imported"], json!(["2019-10-01"]));
    assert_eq!(
        display_of(state, "A83075", None).await,
        json!("DENESIDE MEDICAL CENTRE")
    );
    let before_second = state.registry();

    // Release 2 replaces the file at the same URL.
    up.put(
        "/epraccur.zip",
        zip_of("epraccur.csv", &epraccur("2020-01")),
        "v2",
        "2020-01-01",
    );
    let (status, report) = sync_now(state).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["imported"], json!(["2020-01-01"]));
    assert_eq!(
        display_of(state, "A83075", None).await,
        json!("BYRON MEDICAL PRACTICE")
    );
    // A request that took the registry before the swap answers from it to its end.
    assert_eq!(before_second.latest_code_systems().count(), 1);
    assert_eq!(
        before_second
            .code_system_versions(ODS)
            .iter()
            .map(|v| v.version.clone())
            .collect::<Vec<_>>(),
        ["2019-10-01"]
    );
    let old = Arc::downgrade(&before_second);
    drop(before_second);
    assert!(
        old.upgrade().is_none(),
        "the old registry is freed once nothing holds it"
    );
    let diff = send_to(
        state.clone(),
        Request::get(format!(
            "/fhir/CodeSystem/$diff?url={}&fromVersion=2019-10-01&toVersion=2020-01-01&count=0",
            enc(ODS)
        ))
        .body(Body::empty())
        .expect("req"),
    )
    .await
    .json();
    assert_eq!(
        param(&diff, "added"),
        Some(&json!(54)),
        "SOURCES.md: 54 added"
    );

    // Third sync: the upstream did not change; it answers 304 and nothing is downloaded.
    let (status, report) = sync_now(state).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(report["outcome"], "up to date");
    assert_eq!(up.downloads("/epraccur.zip"), 2);
    let seen = up.requests("/epraccur.zip");
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[2].header("if-none-match"), Some("\"v2\""));
    assert_eq!(
        seen[2].header("if-modified-since"),
        Some(http_date("2020-01-01").as_str())
    );

    // The same bytes again under a new ETag: recognised by their hash, no new version.
    up.put(
        "/epraccur.zip",
        zip_of("epraccur.csv", &epraccur("2020-01")),
        "v3",
        "2020-02-01",
    );
    let (_, report) = sync_now(state).await;
    assert_eq!(report["outcome"], "up to date", "{report}");
    let st = status_of(state).await;
    assert_eq!(st["versions"], json!(["2019-10-01", "2020-01-01"]));
    assert_eq!(st["upstream"]["kind"], "url");
    assert_eq!(st["upstream"]["url"], json!(up.url("/epraccur.zip")));
    assert_eq!(st["lastOutcome"], "up to date");
    assert_eq!(st["lastError"], Json::Null);
    assert!(st["lastCheck"].as_str().is_some_and(|t| t.ends_with('Z')));

    // An older release published late becomes an earlier version, not the latest. (The
    // member is now picked by a regex; the mapping's hash ignores its [sync] table, so data
    // already stored is still recognised.)
    up.put(
        "/epraccur.zip",
        zip_of("epraccur_2019-07.csv", &epraccur("2019-10")),
        "v5",
        "2021-03-01",
    );
    let mappings_regex = mappings.path().join("ods-epraccur.toml");
    let text = std::fs::read_to_string(&mappings_regex).expect("read");
    std::fs::write(
        &mappings_regex,
        text.replace("member = \"epraccur.csv\"", "member = 'epraccur.*\\.csv'"),
    )
    .expect("write");
    let server = live(mappings.path(), data.path(), settings(data.path()));
    let (_, report) = sync_now(&server.state).await;
    // The same data as 2019-10 (already stored under that version): nothing new.
    assert_eq!(report["outcome"], "up to date", "{report}");
    let mut earlier = epraccur("2019-10");
    if !earlier.ends_with(b"\n") {
        earlier.push(b'\n');
    }
    earlier.extend_from_slice(b"\"Z99999\",\"A PRACTICE ONLY IN JULY\",\"Y54\",\"Q74\",\"1 ROAD\",\"\",\"TOWN\",\"\",\"\",\"TS18 1HU\",\"20190701\",\"\",\"A\",\"B\",\"00K\",\"\",\"\",\"\",\"\",\"\",\"\",\"0\",\"\",\"\",\"\",\"4\",\"\"\n");
    up.put(
        "/epraccur.zip",
        zip_of("epraccur_2019-07.csv", &earlier),
        "v6",
        "2021-03-02",
    );
    let (_, report) = sync_now(&server.state).await;
    assert_eq!(report["imported"], json!(["2019-07-01"]), "{report}");
    assert_eq!(
        display_of(&server.state, "A83075", None).await,
        json!("BYRON MEDICAL PRACTICE"),
        "the latest version is still 2020-01"
    );
    assert_eq!(
        display_of(&server.state, "Z99999", Some("2019-07-01")).await,
        json!("A PRACTICE ONLY IN JULY")
    );
}

/// Runs the real binary with the TRUD settings in its environment.
fn run_binary(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_fhir-registers"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.env_remove("FHIR_REGISTERS_ADMIN_TOKEN");
    let out = cmd.output().expect("runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// [`run_binary`] off the async workers (the upstream runs on them).
async fn run_bin(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        run_binary(&args, &env)
    })
    .await
    .expect("ran")
}

fn trud_release(month: &str, date: &str) -> TrudRelease {
    TrudRelease {
        name: format!("Release {month}"),
        release_date: date.into(),
        archive_file_name: format!("epraccur_{month}.zip"),
        archive: zip_of(&format!("epraccur_{month}.csv"), &epraccur(month)),
        claimed_sha256: None,
        claimed_size: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_sync_backfills_every_trud_release_and_refuses_a_bad_checksum_by_name() {
    let up = Upstream::start().await;
    let mut bad = trud_release("2020-01", "2020-01-01");
    bad.claimed_sha256 = Some("00".repeat(32));
    up.trud_item(
        TRUD_KEY,
        341,
        vec![
            trud_release("2019-10", "2019-10-01"),
            bad,
            trud_release("2021-11", "2021-11-04"),
        ],
    );
    let mappings = mappings_with_sync("trud_item = 341\nmember = 'epraccur_.*\\.csv'");
    let data = tempfile::tempdir().expect("data");
    let base = up.base();
    let env = [
        ("FHIR_REGISTERS_TRUD_URL", base.as_str()),
        ("FHIR_REGISTERS_TRUD_API_KEY", TRUD_KEY),
    ];
    let args = [
        "sync",
        "--data-dir",
        data.path().to_str().expect("utf-8"),
        "--mappings",
        mappings.path().to_str().expect("utf-8"),
    ];
    let (code, stdout, stderr) = run_bin(&args, &env).await;
    assert_eq!(code, 1, "one release failed: {stdout}{stderr}");
    assert!(
        stdout.starts_with("ods-epraccur: imported 2019-10-01, 2021-11-04; failed: TRUD release \"Release 2020-01\" (epraccur_2020-01.zip): SHA-256 mismatch"),
        "{stdout}"
    );
    for text in [&stdout, &stderr] {
        assert!(!text.contains(TRUD_KEY), "the key leaked: {text}");
    }
    assert_eq!(
        fhir_registers::sync::stored_versions(data.path(), "ods-epraccur"),
        ["2019-10-01", "2021-11-04"]
    );

    // The listing is corrected: the next sync imports only what is missing, as an earlier
    // version between the two stored ones.
    up.trud_item(
        TRUD_KEY,
        341,
        vec![
            trud_release("2019-10", "2019-10-01"),
            trud_release("2020-01", "2020-01-01"),
            trud_release("2021-11", "2021-11-04"),
        ],
    );
    let (code, stdout, _) = run_bin(&[&args[..], &["ods-epraccur"]].concat(), &env).await;
    assert_eq!(code, 0, "{stdout}");
    assert_eq!(stdout.trim(), "ods-epraccur: imported 2020-01-01");
    let archive = |m: &str| up.trud_download_path(TRUD_KEY, 341, &format!("epraccur_{m}.zip"));
    assert_eq!(up.downloads(&archive("2019-10")), 1, "not downloaded twice");
    assert_eq!(up.downloads(&archive("2020-01")), 2);

    // A third pass has nothing to do.
    let (code, stdout, _) = run_bin(&args, &env).await;
    assert_eq!((code, stdout.trim()), (0, "ods-epraccur: up to date"));

    // Three versions dated from releaseDate, served.
    let set = MappingSet::load_dir(mappings.path()).expect("mappings");
    let registry = registers::build_registry(&set, data.path(), &[]).expect("registry");
    let versions: Vec<String> = registry
        .code_system_versions(ODS)
        .iter()
        .map(|v| v.version.clone())
        .collect();
    assert_eq!(versions, ["2019-10-01", "2020-01-01", "2021-11-04"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_trud_key_is_one_clear_error_and_no_retry_storm() {
    let up = Upstream::start().await;
    up.trud_item(TRUD_KEY, 341, vec![trud_release("2019-10", "2019-10-01")]);
    let mappings = mappings_with_sync("trud_item = 341");
    let data = tempfile::tempdir().expect("data");
    let mut s = settings(data.path());
    s.trud_url = up.base();
    let wrong = "wrong-key-0123456789";
    s.trud_key = Some(Secret::new(wrong));
    let server = live(mappings.path(), data.path(), s);
    let (status, report) = sync_now(&server.state).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let error = report["errors"][0].as_str().expect("error");
    assert!(
        error
            .starts_with("TRUD refused the API key (FHIR_REGISTERS_TRUD_API_KEY): Invalid API key"),
        "{error}"
    );
    let st = status_of(&server.state).await;
    let text = st.to_string();
    assert!(!text.contains(wrong), "{text}");
    assert_eq!(
        st["upstream"]["url"],
        json!(format!(
            "{}/trud/api/v1/keys/***/items/341/releases",
            up.base()
        ))
    );
    // One request, and the next try waits the longest backoff at once (no retry storm).
    let listing = format!("/trud/api/v1/keys/{wrong}/items/341/releases");
    assert_eq!(up.requests(&listing).len(), 1);
    let state = fhir_registers::sync::SyncState::load(&data.path().join("sync"), "ods-epraccur");
    let wait = state
        .next_check()
        .expect("scheduled")
        .duration_since(std::time::SystemTime::now())
        .expect("in the future");
    assert!(wait > Duration::from_secs(3500), "{wait:?}");
}

/// Makes the upstream misbehave at a path.
type SetUp = Box<dyn Fn(&Upstream, &str)>;

/// A fault, what serves it, and the words its error must contain.
struct Case {
    name: &'static str,
    set_up: SetUp,
    expect: &'static str,
    settings: fn(&mut SyncSettings),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_upstream_fault_keeps_the_previous_version_serving_and_backs_off() {
    let up = Upstream::start().await;
    let path = "/epraccur.zip";
    let good = zip_of("epraccur.csv", &epraccur("2019-10"));
    let next = epraccur("2020-01");
    let mut damaged = zip_of("epraccur.csv", &next);
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0xff;
    let damaged = Arc::new(damaged);
    let next = Arc::new(next);
    let cases: Vec<Case> = vec![
        Case {
            name: "HTTP 503",
            set_up: Box::new(|up, p| up.fault(p, Fault::Status(503))),
            expect: "HTTP 503 Service Unavailable from the upstream",
            settings: |_| {},
        },
        Case {
            name: "HTTP 404",
            set_up: Box::new(|up, p| up.fault(p, Fault::Status(404))),
            expect: "HTTP 404 Not Found from the upstream",
            settings: |_| {},
        },
        Case {
            name: "HTML page with status 200",
            set_up: Box::new(|up, p| up.fault(p, Fault::HtmlPage)),
            expect: "answered an HTML page",
            settings: |_| {},
        },
        Case {
            name: "truncated body",
            set_up: {
                let next = next.clone();
                Box::new(move |up, p| {
                    up.put(p, zip_of("epraccur.csv", &next), "t1", "2020-01-01");
                    up.fault(p, Fault::Truncated { keep: 1000 });
                })
            },
            expect: "the download broke off after 1000 bytes",
            settings: |_| {},
        },
        Case {
            name: "zip CRC error",
            set_up: {
                let damaged = damaged.clone();
                Box::new(move |up, p| up.put(p, damaged.to_vec(), "crc", "2020-01-01"))
            },
            expect: "member epraccur.csv",
            settings: |_| {},
        },
        Case {
            name: "zip without the member",
            set_up: {
                let next = next.clone();
                Box::new(move |up, p| up.put(p, zip_of("etr.csv", &next), "nomember", "2020-01-01"))
            },
            expect: "the zip has no member \"epraccur.csv\" (it holds: etr.csv)",
            settings: |_| {},
        },
        Case {
            name: "zip bomb",
            set_up: Box::new(|up, p| {
                up.put(p, zip_bomb("epraccur.csv", 64 << 20), "bomb", "2020-01-01")
            }),
            expect: "unpacks to more than the limit of 33554432 bytes",
            settings: |s| s.max_unpacked_bytes = 32 << 20,
        },
        Case {
            name: "layout change",
            set_up: Box::new(|up, p| {
                let dse =
                    gunzip(&repo().join("mappings/data/ods/epraccur_2026-02_dse-format.csv.gz"));
                up.put(p, zip_of("epraccur.csv", &dse), "dse", "2026-02-01")
            }),
            expect: "looks like another layout of the register",
            settings: |_| {},
        },
        Case {
            name: "total timeout",
            set_up: Box::new(|up, p| up.fault(p, Fault::Stall(Duration::from_secs(5)))),
            expect: "timed out",
            settings: |s| s.timeout = Duration::from_millis(500),
        },
        Case {
            name: "connection refused",
            set_up: Box::new(|_, _| {}),
            expect: "cannot connect",
            settings: |_| {},
        },
    ];
    for case in cases {
        let refused = case.name == "connection refused";
        let url = if refused {
            closed_port_url(path)
        } else {
            up.url(path)
        };
        let mappings = mappings_with_sync(&format!("url = \"{url}\"\nmember = \"epraccur.csv\""));
        let data = tempfile::tempdir().expect("data");
        // The previous version, stored and served.
        store_epraccur_2019_10(mappings.path(), data.path());
        up.put(path, good.clone(), "base", "2019-10-01");
        let mut s = settings(data.path());
        (case.settings)(&mut s);
        let server = live(mappings.path(), data.path(), s);
        (case.set_up)(&up, path);
        let generation = server.state.live.generation();

        let mut waits = Vec::new();
        for attempt in 1..=2 {
            let (status, report) = sync_now(&server.state).await;
            assert_eq!(status, StatusCode::BAD_GATEWAY, "{}: {report}", case.name);
            let error = report["errors"][0].as_str().unwrap_or_default();
            assert!(
                error.contains(case.expect),
                "{}: {error:?} should say {:?}",
                case.name,
                case.expect
            );
            let st = status_of(&server.state).await;
            assert_eq!(st["lastOutcome"], "failed", "{}", case.name);
            assert_eq!(st["lastError"], json!(error), "{}", case.name);
            assert_eq!(st["failures"], json!(attempt), "{}", case.name);
            assert_eq!(st["versions"], json!(["2019-10-01"]), "{}", case.name);
            let next =
                fhir_registers::sync::SyncState::load(&data.path().join("sync"), "ods-epraccur")
                    .next_check()
                    .expect("scheduled");
            waits.push(
                next.duration_since(std::time::SystemTime::now())
                    .unwrap_or_default()
                    .as_secs_f64(),
            );
        }
        // Exponential backoff: the second wait is twice the first (60 s, then 120 s).
        assert!(
            (55.0..=60.0).contains(&waits[0]) && (115.0..=120.0).contains(&waits[1]),
            "{}: {waits:?}",
            case.name
        );
        assert_eq!(
            server.state.live.generation(),
            generation,
            "{}: nothing published",
            case.name
        );
        assert_eq!(
            display_of(&server.state, "A83075", None).await,
            json!("DENESIDE MEDICAL CENTRE"),
            "{}: the previous version keeps serving",
            case.name
        );
        let leftovers: Vec<PathBuf> = std::fs::read_dir(data.path().join("sync/downloads"))
            .expect("downloads dir")
            .flatten()
            .map(|e| e.path())
            .collect();
        assert!(leftovers.is_empty(), "{}: {leftovers:?}", case.name);
        up.clear_fault(path);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trud_download_of_the_wrong_size_is_refused() {
    let up = Upstream::start().await;
    let mut r = trud_release("2019-10", "2019-10-01");
    r.claimed_size = Some(1234);
    up.trud_item(TRUD_KEY, 341, vec![r]);
    let mappings = mappings_with_sync("trud_item = 341");
    let data = tempfile::tempdir().expect("data");
    let mut s = settings(data.path());
    s.trud_url = up.base();
    s.trud_key = Some(Secret::new(TRUD_KEY));
    let server = live(mappings.path(), data.path(), s);
    let (status, report) = sync_now(&server.state).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let error = report["errors"][0].as_str().expect("error");
    assert!(
        error.contains("larger than the 1234 bytes the upstream lists"),
        "{error}"
    );
    assert!(!error.contains(TRUD_KEY), "{error}");
    assert!(error.contains("/keys/***/"), "{error}");
    assert!(fhir_registers::sync::stored_versions(data.path(), "ods-epraccur").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_killed_mid_download_leaves_nothing_and_the_next_one_carries_on() {
    let up = Upstream::start().await;
    let body = zip_of("epraccur.csv", &epraccur("2019-10"));
    up.put("/epraccur.zip", body, "k1", "2019-10-01");
    up.fault(
        "/epraccur.zip",
        Fault::SlowBody {
            first: 200_000,
            pause: Duration::from_secs(30),
        },
    );
    let mappings = mappings_with_sync(&format!("url = \"{}\"", up.url("/epraccur.zip")));
    let data = tempfile::tempdir().expect("data");
    let downloads = data.path().join("sync/downloads");
    let (d, m) = (
        data.path().to_str().expect("utf-8").to_string(),
        mappings.path().to_str().expect("utf-8").to_string(),
    );
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_fhir-registers"))
        .args(["sync", "--data-dir", &d, "--mappings", &m])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    // Wait until the partial download is on disk, then kill -9.
    let started = Instant::now();
    let partial = loop {
        let files: Vec<PathBuf> = std::fs::read_dir(&downloads)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.len() >= 100_000))
            .collect();
        if let Some(f) = files.into_iter().next() {
            break f;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no partial download appeared"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    child.kill().expect("kill -9");
    let _ = child.wait();
    assert!(
        partial.exists(),
        "the killed sync left its partial download"
    );

    up.clear_fault("/epraccur.zip");
    let (code, stdout, stderr) = run_bin(&["sync", "--data-dir", &d, "--mappings", &m], &[]).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(stdout.trim(), "ods-epraccur: imported 2019-10-01");
    assert!(!partial.exists(), "the partial download was removed");
    assert_eq!(std::fs::read_dir(&downloads).expect("dir").count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_records_file_found_damaged_after_start_is_no_longer_served() {
    let mappings = mappings_with_sync("url = \"http://127.0.0.1:9/never-called\"");
    let data = tempfile::tempdir().expect("data");
    store_epraccur_2019_10(mappings.path(), data.path());
    // One letter of one display changed on disk: the file is well formed, only its checksum
    // tells. Read in place (as `serve` reads a national register), it is served until checked.
    let records = data.path().join("feeds/ods-epraccur/records");
    let file = std::fs::read_dir(&records)
        .expect("records")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "records"))
        .expect("a records file");
    let mut bytes = std::fs::read(&file).expect("read");
    // The keys hold each code followed by its display.
    let at = bytes
        .windows(14)
        .position(|w| w == b"A83075DENESIDE")
        .expect("code and display in the file");
    bytes[at + 6] = b'E';
    std::fs::write(&file, &bytes).expect("write");
    let server = with_decode_limit(0, || {
        live(mappings.path(), data.path(), settings(data.path()))
    });
    assert_eq!(
        display_of(&server.state, "A83075", None).await,
        json!("EENESIDE MEDICAL CENTRE")
    );
    let checker = server.publisher.clone().check_stored_files(|| true);
    let started = Instant::now();
    while server.state.registry().code_system(ODS, None).is_some() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the damaged file is still served"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    checker.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_imported_by_another_process_is_served_within_the_reload_interval() {
    let mappings = mappings_with_sync("url = \"http://127.0.0.1:9/never-called\"");
    std::fs::copy(
        repo().join("mappings/ods-roles.toml"),
        mappings.path().join("ods-roles.toml"),
    )
    .expect("copy");
    let data = tempfile::tempdir().expect("data");
    import_list(
        &MappingSet::load_dir(mappings.path()).expect("mappings"),
        data.path(),
        &[
            (
                "ods-epraccur",
                "../../mappings/data/ods/epraccur_2019-10.csv.gz",
                "2019-10-01",
            ),
            ("ods-roles", "ods/ods_organisation_roles.csv", "2023-01-01"),
        ],
    );
    let server = live(mappings.path(), data.path(), settings(data.path()));
    let roles =
        "https://digital.nhs.uk/services/organisation-data-service/CodeSystem/ODSOrganisationRole";
    let roles_before = server
        .state
        .registry()
        .code_system(roles, None)
        .expect("roles");
    let ods_before = server.state.registry().code_system(ODS, None).expect("ods");
    let interval = Duration::from_millis(300);
    let watcher = server.publisher.clone().watch(interval);
    assert_eq!(
        display_of(&server.state, "A83075", None).await,
        json!("DENESIDE MEDICAL CENTRE")
    );
    // Nothing changed: the watcher does not rebuild.
    tokio::time::sleep(interval * 3).await;
    assert_eq!(server.state.live.generation(), 0);

    let mapping = mappings.path().join("ods-epraccur.toml");
    let file = repo().join("mappings/data/ods/epraccur_2020-01.csv.gz");
    let (d, mp, mf, f) = (
        data.path().to_str().expect("utf-8").to_string(),
        mappings.path().to_str().expect("utf-8").to_string(),
        mapping.to_str().expect("utf-8").to_string(),
        file.to_str().expect("utf-8").to_string(),
    );
    let (code, _, stderr) = run_bin(
        &["import", "--data-dir", &d, "--mappings", &mp, &mf, &f],
        &[],
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    let imported = Instant::now();
    loop {
        if display_of(&server.state, "A83075", None).await == json!("BYRON MEDICAL PRACTICE") {
            break;
        }
        assert!(
            imported.elapsed() < interval + Duration::from_secs(5),
            "not published within the reload interval (plus the build)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = imported.elapsed();
    assert_eq!(
        server.state.live.generation(),
        1,
        "one rebuild for one import"
    );
    // Only the changed register was read again: the other CodeSystem's version (and its
    // indexes) is the same object.
    let registry = server.state.registry();
    assert!(Arc::ptr_eq(
        &roles_before,
        &registry.code_system(roles, None).expect("roles")
    ));
    assert!(!Arc::ptr_eq(
        &ods_before,
        &registry.code_system(ODS, Some("2019-10-01")).expect("ods")
    ));
    eprintln!("published {took:?} after the import ended (reload interval {interval:?})");
    watcher.abort();
    let _ = &server.service;
}

#[test]
fn sync_tables_are_checked_key_by_key() {
    let base = std::fs::read_to_string(repo().join("mappings/ods-epraccur.toml")).expect("read");
    let errors = |sync: &str| -> Vec<String> {
        Mapping::from_text(
            Path::new("mappings/x.toml"),
            &format!("{base}\n[sync]\n{sync}\n"),
        )
        .err()
        .unwrap_or_default()
        .iter()
        .map(ToString::to_string)
        .collect()
    };
    assert!(errors("url = \"https://example.org/x.zip\"\nevery = \"12h\"").is_empty());
    let hash = |text: &str| {
        Mapping::from_text(Path::new("mappings/x.toml"), text)
            .expect("valid")
            .hash
    };
    assert_eq!(
        hash(&base),
        hash(&format!(
            "{base}\n[sync]\nurl = \"https://example.org/x.zip\"\n"
        )),
        "an upstream does not change how rows become concepts"
    );
    assert_ne!(
        hash(&base),
        hash(&base.replace("map_default = \"RO72\"", "map_default = \"RO76\""))
    );
    assert_eq!(
        errors("url = \"https://example.org/x.zip\"\ntrud_item = 1"),
        ["mappings/x.toml: sync: give either `url` or `trud_item`, not both"]
    );
    assert_eq!(
        errors("every = \"1d\""),
        ["mappings/x.toml: sync: needs an upstream: `url` or `trud_item`"]
    );
    assert!(
        errors("trud_item = 1\nevery = \"often\"")[0]
            .starts_with("mappings/x.toml: sync.every: \"often\" is not a duration"),
    );
    assert!(
        errors("trud_item = 1\nmember = \"(unclosed\"")[0]
            .starts_with("mappings/x.toml: sync.member: \"(unclosed\" is neither"),
    );
    assert_eq!(
        errors("url = \"ftp://example.org/x\""),
        ["mappings/x.toml: sync.url: \"ftp://example.org/x\" is not an http(s) URL"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schedule_checks_when_due_and_publishes_what_it_imported() {
    let up = Upstream::start().await;
    up.put(
        "/epraccur.zip",
        zip_of("epraccur.csv", &epraccur("2019-10")),
        "s1",
        "2019-10-01",
    );
    let mappings = mappings_with_sync(&format!(
        "url = \"{}\"\nevery = \"1h\"",
        up.url("/epraccur.zip")
    ));
    let data = tempfile::tempdir().expect("data");
    // A check due now (as a restarted server finds it in the saved state).
    let sync_dir = data.path().join("sync");
    std::fs::create_dir_all(&sync_dir).expect("dir");
    let due = fhir_registers::sync::SyncState {
        next_check_unix: Some(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .as_secs()
                - 1,
        ),
        ..Default::default()
    };
    due.save(&sync_dir, "ods-epraccur").expect("saved");
    let server = live(mappings.path(), data.path(), settings(data.path()));
    let schedule = server.service.clone().run_schedule();
    let started = Instant::now();
    while server.state.live.generation() == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the schedule did not run"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        display_of(&server.state, "A83075", None).await,
        json!("DENESIDE MEDICAL CENTRE")
    );
    let st = status_of(&server.state).await;
    assert_eq!(st["lastOutcome"], "imported 2019-10-01");
    assert_eq!(st["every"], "1h");
    // The next check is an hour away, give or take the jitter (at most 6 minutes).
    let next = fhir_registers::sync::SyncState::load(&sync_dir, "ods-epraccur")
        .next_check()
        .expect("scheduled")
        .duration_since(std::time::SystemTime::now())
        .expect("future")
        .as_secs();
    assert!((3600 - 370..=3600 + 360).contains(&next), "{next}");
    assert!(st["nextCheck"].as_str().is_some());
    assert_eq!(
        up.requests("/epraccur.zip").len(),
        1,
        "one check, not a loop"
    );
    schedule.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syncs_imports_and_publishes_are_counted_and_timed_in_the_metrics() {
    let up = Upstream::start().await;
    let path = "/epraccur.zip";
    up.put(
        path,
        zip_of("epraccur.csv", &epraccur("2019-10")),
        "m1",
        "2019-10-01",
    );
    let mappings = mappings_with_sync(&format!("url = \"{}\"", up.url(path)));
    let data = tempfile::tempdir().expect("data");
    let server = live(mappings.path(), data.path(), settings(data.path()));
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    // Imported, then up to date (the upstream answers 304), then failed.
    for expected in [StatusCode::OK, StatusCode::OK] {
        let (status, report) = sync_now(&server.state).await;
        assert_eq!(status, expected, "{report}");
    }
    up.fault(path, Fault::Status(503));
    let (status, _) = sync_now(&server.state).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);

    let scrape = send_to(
        server.state.clone(),
        Request::get("/metrics").body(Body::empty()).expect("req"),
    )
    .await;
    assert_eq!(scrape.status, StatusCode::OK);
    let text = scrape.text();
    let value = |name: &str, labels: &str| -> f64 {
        let prefix = format!("{name}{labels} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name}{labels} in:\n{text}"))
    };
    for outcome in ["imported", "up to date", "failed"] {
        assert_eq!(
            value(
                "fhir_registers_sync_total",
                &format!(r#"{{register="ods-epraccur",outcome="{outcome}"}}"#)
            ),
            1.0,
            "{outcome}"
        );
    }
    assert_eq!(
        value(
            "fhir_registers_sync_duration_seconds_count",
            r#"{register="ods-epraccur"}"#
        ),
        3.0
    );
    let last_success = value(
        "fhir_registers_sync_last_success_timestamp_seconds",
        r#"{register="ods-epraccur"}"#,
    );
    assert!(last_success >= before.floor(), "{last_success} < {before}");
    assert_eq!(
        value(
            "fhir_registers_import_duration_seconds_count",
            r#"{feed="ods-epraccur"}"#
        ),
        1.0,
        "one release imported"
    );
    assert_eq!(
        value("fhir_registers_publish_duration_seconds_count", ""),
        1.0,
        "one publish"
    );
    assert_eq!(value("fhir_registers_registry_generation", ""), 1.0);
    assert_eq!(
        value(
            "fhir_registers_concepts",
            &format!(r#"{{code_system="{ODS}"}}"#)
        ),
        server
            .state
            .registry()
            .code_system(ODS, None)
            .expect("published")
            .len() as f64
    );
}

#[tokio::test]
async fn the_admin_api_sends_no_cors_headers_while_the_fhir_base_does() {
    let mappings = mappings_with_sync("url = \"http://127.0.0.1:9/never-called\"");
    let data = tempfile::tempdir().expect("data");
    let server = live(mappings.path(), data.path(), settings(data.path()));
    let with_origin = |uri: &str| {
        Request::get(uri)
            .header(header::ORIGIN, "https://app.example.org")
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .body(Body::empty())
            .expect("req")
    };
    let fhir = fhir_registers::app(server.state.clone())
        .oneshot(with_origin("/fhir/metadata"))
        .await
        .expect("answer");
    assert!(
        fhir.headers()
            .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN),
        "the FHIR base answers browsers"
    );
    let admin = fhir_registers::app(server.state.clone())
        .oneshot(with_origin("/admin/status"))
        .await
        .expect("answer");
    assert_eq!(admin.status(), StatusCode::OK);
    assert!(
        !admin
            .headers()
            .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN),
        "no browser origin may call the admin API"
    );
}

/// Stores the 2019-10 epraccur release through these mappings: the version a sync starts from.
fn store_epraccur_2019_10(mappings: &Path, data: &Path) {
    import_list(
        &MappingSet::load_dir(mappings).expect("mappings"),
        data,
        &[(
            "ods-epraccur",
            "../../mappings/data/ods/epraccur_2019-10.csv.gz",
            "2019-10-01",
        )],
    );
}
