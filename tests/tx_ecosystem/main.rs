//! The HL7 FHIR terminology ecosystem test suite (`../shared/tx-ecosystem`, the `tx` folder of
//! fhir-test-cases) run against the real router, the way the official Java runner (`TxTester`)
//! runs it against a server. See `conformance/tx-ecosystem.md` for how to run it, what is
//! compared, where failures are written and how the baseline works.
//!
//! `cargo test --test tx_ecosystem -- --nocapture` (filters: `TX_SUITE=name`, `TX_TEST=substring`).

mod compare;
mod normalize;
mod runner;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Value as Json, json};

use runner::{Outcome, Settings, TestSet, run_test};

/// Where the suite lives, relative to the crate.
const SUITE_DIR: &str = "../shared/tx-ecosystem";
/// The pass count that must not go down.
const BASELINE_FILE: &str = "conformance/tx-baseline.json";

#[tokio::test]
async fn tx_ecosystem_conformance() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = manifest.join(SUITE_DIR);
    if !root.join("test-cases.json").is_file() {
        println!(
            "tx-ecosystem: {} not found — suite skipped (clone the fhir-test-cases `tx` folder there to run it)",
            root.display()
        );
        return;
    }
    let set = match TestSet::load(&root) {
        Ok(s) => s,
        Err(e) => {
            println!("tx-ecosystem: cannot read the suite ({e}) — skipped");
            return;
        }
    };
    let suite_filter = std::env::var("TX_SUITE").ok().filter(|s| !s.is_empty());
    let test_filter = std::env::var("TX_TEST").ok().filter(|s| !s.is_empty());
    let filtered = suite_filter.is_some() || test_filter.is_some();
    // TX_WRITE_ALL=1: also write the responses of passing tests (to check what passes).
    let write_all = std::env::var("TX_WRITE_ALL").is_ok_and(|v| v == "1");
    let settings = Settings::default();
    let failures_dir = target_dir(manifest).join("tx-ecosystem-failures");
    if !filtered {
        let _ = std::fs::remove_dir_all(&failures_dir);
    }

    // The server as shipped, less the register imports: the plain FHIR resources in mappings/
    // (the FHIR core code systems a terminology server is expected to know).
    let resources = fhir_registers::registers::load_resources(&manifest.join("mappings"))
        .expect("mappings/ resources load");
    let registry = fhir_registers::registers::build_registry(
        &fhir_registers::mapping::MappingSet::default(),
        &manifest.join("target/tx-ecosystem-no-data"),
        &resources,
    )
    .expect("registry builds");
    let state = Arc::new(fhir_registers::AppState::new(registry));
    let app = fhir_registers::app(state);

    let mut table: Vec<(String, usize, usize)> = Vec::new();
    let mut causes: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut passing: Vec<String> = Vec::new();
    let (mut skipped, mut warned) = (0usize, 0usize);
    for suite in &set.suites {
        let suite_name = suite
            .get("name")
            .and_then(Json::as_str)
            .unwrap_or("?")
            .to_string();
        if suite_filter.as_ref().is_some_and(|f| *f != suite_name) {
            continue;
        }
        let tests = suite
            .get("tests")
            .and_then(Json::as_array)
            .cloned()
            .unwrap_or_default();
        if !settings.runs(suite) {
            skipped += tests.len();
            continue;
        }
        let setup = set.setup(suite);
        let (mut passed, mut total) = (0, 0);
        for test in &tests {
            let name = test
                .get("name")
                .and_then(Json::as_str)
                .unwrap_or("?")
                .to_string();
            if test_filter
                .as_ref()
                .is_some_and(|f| !name.contains(f.as_str()))
            {
                continue;
            }
            if !settings.runs(test) || test.get("disabled").and_then(Json::as_bool) == Some(true) {
                skipped += 1;
                continue;
            }
            total += 1;
            remove_failure_files(&failures_dir, &suite_name, &name);
            let outcome = match &setup {
                Ok(setup) => run_test(&app, &set, &settings, suite, setup, test).await,
                Err(e) => setup_failure(e),
            };
            if !outcome.warnings.is_empty() {
                warned += 1;
            }
            match &outcome.failure {
                None => {
                    passed += 1;
                    passing.push(format!("{suite_name}/{name}"));
                    if write_all {
                        write_actual(&failures_dir, &suite_name, &name, &outcome);
                    }
                }
                Some(f) => {
                    causes
                        .entry(f.signature.clone())
                        .or_default()
                        .push(format!("{suite_name}/{name}"));
                    write_failure(&failures_dir, &set.root, &suite_name, test, &outcome);
                }
            }
        }
        if total > 0 {
            table.push((suite_name, passed, total));
        }
    }

    let passed: usize = table.iter().map(|t| t.1).sum();
    let total: usize = table.iter().map(|t| t.2).sum();
    print_report(
        &table,
        passed,
        total,
        skipped,
        warned,
        &causes,
        &failures_dir,
    );

    if filtered {
        println!("(filters set: the baseline in {BASELINE_FILE} is not checked)");
        return;
    }
    check_baseline(manifest, passed, total, &passing);
}

fn setup_failure(e: &str) -> Outcome {
    Outcome::failed("suite setup unreadable", e)
}

fn target_dir(manifest: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| if p.is_absolute() { p } else { manifest.join(p) })
        .unwrap_or_else(|| manifest.join("target"))
}

fn remove_failure_files(dir: &Path, suite: &str, test: &str) {
    let base = dir.join(suite);
    let _ = std::fs::remove_file(base.join(format!("{test}.json")));
    let _ = std::fs::remove_file(base.join(format!("{test}.diff.txt")));
    let _ = std::fs::remove_file(base.join(format!("{test}.request.json")));
}

/// `<suite>/<test>.json`: the response as compared.
fn write_actual(dir: &Path, suite: &str, name: &str, outcome: &Outcome) {
    let base = dir.join(suite);
    if let (Some(actual), Ok(())) = (&outcome.actual, std::fs::create_dir_all(&base)) {
        let text = serde_json::to_string_pretty(actual).unwrap_or_default();
        let _ = std::fs::write(base.join(format!("{name}.json")), text + "\n");
    }
}

/// `<suite>/<test>.json` (the response as compared), `<suite>/<test>.diff.txt` (why) and
/// `<suite>/<test>.request.json` (the body sent, setup resources included).
fn write_failure(dir: &Path, root: &Path, suite: &str, test: &Json, outcome: &Outcome) {
    let name = test.get("name").and_then(Json::as_str).unwrap_or("unnamed");
    let base = dir.join(suite);
    write_actual(dir, suite, name, outcome);
    if std::fs::create_dir_all(&base).is_err() {
        return;
    }
    if let Some(body) = &outcome.request_body {
        let text = serde_json::to_string_pretty(body).unwrap_or_default();
        let _ = std::fs::write(base.join(format!("{name}.request.json")), text + "\n");
    }
    let mut report = String::new();
    report.push_str(&format!("test:        {suite}/{name}\n"));
    if let Some(d) = test.get("description").and_then(Json::as_str) {
        report.push_str(&format!("description: {d}\n"));
    }
    if let Some(r) = &outcome.request {
        report.push_str(&format!("request:     {r}"));
        if let Some(f) = test.get("request").and_then(Json::as_str) {
            report.push_str(&format!("  (body: {}", root.join(f).display()));
            report.push_str(" + suite setup as tx-resource + profile parameters)");
        }
        report.push('\n');
    }
    if let Some(l) = test.get("Accept-Language").and_then(Json::as_str) {
        report.push_str(&format!("Accept-Language: {l}\n"));
    }
    if let Some(p) = test.get("profile").and_then(Json::as_str) {
        report.push_str(&format!("profile:     {p}\n"));
    }
    if let Some(s) = outcome.status {
        let wanted = test
            .get("http-code")
            .and_then(Json::as_str)
            .unwrap_or("2xx");
        report.push_str(&format!("status:      {s} (expected {wanted})\n"));
    }
    if let Some(f) = &outcome.expected_file {
        report.push_str(&format!("expected:    {}\n", root.join(f).display()));
        report.push_str(&format!(
            "actual:      {name}.json (scrubbed and lifted to R5 as compared)\n"
        ));
    }
    if let Some(f) = &outcome.failure {
        report.push_str(&format!("\ncause: {}\n\n{}\n", f.signature, f.explanation));
    }
    for w in &outcome.warnings {
        report.push_str(&format!("warning: {w}\n"));
    }
    let _ = std::fs::write(base.join(format!("{name}.diff.txt")), report);
}

fn print_report(
    table: &[(String, usize, usize)],
    passed: usize,
    total: usize,
    skipped: usize,
    warned: usize,
    causes: &BTreeMap<String, Vec<String>>,
    failures_dir: &Path,
) {
    let width = table.iter().map(|t| t.0.len()).max().unwrap_or(5).max(5);
    println!("\nHL7 terminology ecosystem tests (modes: general, flat; FHIR 4.0.1)");
    for (suite, p, t) in table {
        println!("  {suite:<width$}  {p:>3}/{t:<3}");
    }
    let pct = if total == 0 {
        0.0
    } else {
        passed as f64 * 100.0 / total as f64
    };
    println!("  {:<width$}  {passed:>3}/{total:<3} ({pct:.1}%)", "TOTAL");
    if skipped > 0 {
        println!("  ({skipped} tests skipped: their mode is not enabled)");
    }
    if warned > 0 {
        println!(
            "  ({warned} tests raised comparison warnings — see their .diff.txt when they fail)"
        );
    }
    if !causes.is_empty() {
        let mut by_count: Vec<(&String, &Vec<String>)> = causes.iter().collect();
        by_count.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(b.0)));
        println!("\nFailure causes (count, cause, example):");
        for (cause, tests) in by_count.iter().take(60) {
            println!("  {:>4}  {cause}  [e.g. {}]", tests.len(), tests[0]);
        }
        if by_count.len() > 60 {
            println!("  … and {} more causes", by_count.len() - 60);
        }
        println!(
            "\nEach failing test's response and explanation: {}",
            failures_dir.display()
        );
    }
}

/// Fails the test when fewer tests pass than the baseline records.
fn check_baseline(manifest: &Path, passed: usize, total: usize, passing: &[String]) {
    let path = manifest.join(BASELINE_FILE);
    if std::env::var("TX_UPDATE_BASELINE").is_ok_and(|v| v == "1") {
        let doc = json!({ "passed": passed, "total": total, "passing": passing });
        let text = serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n";
        match std::fs::write(&path, text) {
            Ok(()) => println!("baseline written: {passed}/{total} → {}", path.display()),
            Err(e) => println!("could not write {}: {e}", path.display()),
        }
        return;
    }
    let baseline = std::fs::read(&path)
        .ok()
        .and_then(|b| normalize::parse_json(&b).ok());
    let Some(baseline) = baseline else {
        println!(
            "no readable baseline at {} — nothing to hold the pass count to",
            path.display()
        );
        return;
    };
    let base_passed = baseline.get("passed").and_then(Json::as_u64).unwrap_or(0) as usize;
    let base_total = baseline.get("total").and_then(Json::as_u64).unwrap_or(0) as usize;
    if base_total != total {
        println!("note: the baseline was recorded over {base_total} tests, this run has {total}");
    }
    if passed < base_passed {
        let was: Vec<&str> = baseline
            .get("passing")
            .and_then(Json::as_array)
            .map(|a| a.iter().filter_map(Json::as_str).collect())
            .unwrap_or_default();
        let lost: Vec<&str> = was
            .into_iter()
            .filter(|t| !passing.iter().any(|p| p == t))
            .collect();
        panic!(
            "tx-ecosystem regression: {passed} tests pass, the baseline ({BASELINE_FILE}) says {base_passed}.\n\
             Passing at the baseline, failing now: {}",
            if lost.is_empty() {
                "(unknown)".to_string()
            } else {
                lost.join(", ")
            }
        );
    }
    if passed > base_passed {
        println!(
            "\n{passed} tests pass, the baseline says {base_passed}: raise it with\n  \
             TX_UPDATE_BASELINE=1 cargo test --test tx_ecosystem\n\
             (or set \"passed\": {passed} in {BASELINE_FILE}) and commit the file."
        );
    }
}
