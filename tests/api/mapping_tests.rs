//! `fhir-registers test`, the mapping author's test runner, run as the real binary: every shipped
//! mapping passes its own `[[test]]` cases against its accepted snapshots, and a changed mapping
//! gives a `.snap.new`, a readable diff and a failure until `--accept`.

use std::path::Path;

use super::support::*;

fn run(args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fhir-registers"))
        .args(args)
        .output()
        .expect("runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn every_shipped_mapping_passes_its_own_tests() {
    let mappings = repo().join("mappings");
    let (code, out) = run(&[
        "test",
        "--check",
        "--mappings",
        mappings.to_str().expect("utf-8"),
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(" passed, 0 failed"), "{out}");
    assert!(
        !out.contains("no [[test]] in"),
        "every shipped mapping has test cases: {out}"
    );
    assert!(
        !out.contains('\u{1b}'),
        "plain output when not on a terminal"
    );
    for m in shipped().mappings {
        assert!(
            out.contains(&format!("{} [", m.path.display())),
            "{} was tested: {out}",
            m.id()
        );
    }
}

/// A mappings folder with the roles mapping, its snapshot and its fixture, laid out as in the
/// repository.
fn roles_folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("dir");
    let mappings = dir.path().join("mappings");
    std::fs::create_dir_all(mappings.join("snapshots")).expect("dir");
    std::fs::create_dir_all(dir.path().join("tests/fixtures/ods")).expect("dir");
    std::fs::copy(
        repo().join("mappings/ods-roles.toml"),
        mappings.join("ods-roles.toml"),
    )
    .expect("copy");
    std::fs::copy(
        repo().join("mappings/snapshots/ods-roles.all-roles.snap"),
        mappings.join("snapshots/ods-roles.all-roles.snap"),
    )
    .expect("copy");
    std::fs::copy(
        fixture("ods/ods_organisation_roles.csv"),
        dir.path()
            .join("tests/fixtures/ods/ods_organisation_roles.csv"),
    )
    .expect("copy");
    dir
}

fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).expect("read");
    assert!(text.contains(from), "{from:?} in {}", path.display());
    std::fs::write(path, text.replacen(from, to, 1)).expect("write");
}

#[test]
fn a_changed_mapping_fails_with_a_diff_and_a_snap_new_until_accepted() {
    let dir = roles_folder();
    let mappings = dir.path().join("mappings");
    let m = mappings.to_str().expect("utf-8");
    let snap = mappings.join("snapshots/ods-roles.all-roles.snap");
    let new = mappings.join("snapshots/ods-roles.all-roles.snap.new");
    assert_eq!(run(&["test", "--check", "--mappings", m]).0, 0);

    edit(
        &mappings.join("ods-roles.toml"),
        "title = \"ODS Organisation Role\"",
        "title = \"ODS Organisation Roles (renamed)\"",
    );
    let accepted = std::fs::read_to_string(&snap).expect("snapshot");
    let (code, out) = run(&["test", "--mappings", m]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAIL"), "{out}");
    assert!(
        out.contains("-  \"title\": \"ODS Organisation Role\","),
        "{out}"
    );
    assert!(
        out.contains("+  \"title\": \"ODS Organisation Roles (renamed)\","),
        "{out}"
    );
    assert!(new.exists(), "a .snap.new was written");
    assert_eq!(
        std::fs::read_to_string(&snap).expect("snapshot"),
        accepted,
        "the accepted snapshot is untouched"
    );
    let (code, out) = run(&["test", "--check", "--mappings", m]);
    assert_eq!(code, 1, "pending snapshots fail --check: {out}");
    assert!(out.contains("snapshots waiting to be reviewed"), "{out}");

    let (code, out) = run(&["test", "--accept", "--mappings", m]);
    assert_eq!(code, 0, "{out}");
    assert!(!new.exists(), "--accept clears the .snap.new");
    assert!(
        std::fs::read_to_string(&snap)
            .expect("snapshot")
            .contains("ODS Organisation Roles (renamed)")
    );
    assert_eq!(run(&["test", "--check", "--mappings", m]).0, 0);
}

#[test]
fn a_failed_expectation_names_the_file_the_test_and_the_code() {
    let dir = roles_folder();
    let mappings = dir.path().join("mappings");
    edit(
        &mappings.join("ods-roles.toml"),
        "RO200 = \"WELSH ASSEMBLY\"",
        "RO200 = \"SCOTTISH PARLIAMENT\"",
    );
    edit(&mappings.join("ods-roles.toml"), "rows = 190", "rows = 191");
    let (code, out) = run(&["test", "--mappings", mappings.to_str().expect("utf-8")]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("ods-roles.toml [all-roles]"), "{out}");
    assert!(
        out.contains("RO200: display is \"WELSH ASSEMBLY\", expected \"SCOTTISH PARLIAMENT\""),
        "{out}"
    );
    assert!(out.contains("rows: expected 191, read 190"), "{out}");
    assert!(out.contains("0 passed, 1 failed"), "{out}");
}

/// The column names of a headerless register, from its shipped mapping.
fn spec_columns(mapping: &str) -> String {
    let m = fhir_registers::mapping::Mapping::load(&repo().join("mappings").join(mapping))
        .expect("mapping");
    m.spec.source.columns.join(",")
}

/// `new` drafts a mapping (and its fixture) from a file; `check` then reads the whole file with
/// no row error, and the drafted `[[test]]` passes once its snapshot is accepted.
fn draft_checks_clean(file: &Path, extra: &[&str]) -> String {
    let dir = tempfile::tempdir().expect("dir");
    let out = dir.path().join("m/drafted.toml");
    let f = file.to_str().expect("utf-8");
    let o = out.to_str().expect("utf-8");
    let mut args = vec!["new", f, "-o", o];
    args.extend_from_slice(extra);
    let (code, log) = run(&args);
    assert_eq!(code, 0, "{log}");
    let (code, log) = run(&["check", o, f]);
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("column profile ("), "{log}");
    assert!(!log.contains("row error"), "{log}");
    let m = dir.path().join("m");
    let m = m.to_str().expect("utf-8");
    assert_eq!(run(&["test", "--accept", "--mappings", m]).0, 0);
    let (code, log) = run(&["test", "--check", "--mappings", m]);
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("1 passed, 0 failed"), "{log}");
    std::fs::read_to_string(&out).expect("drafted")
}

#[test]
fn new_drafts_a_mapping_of_headerless_epraccur_that_check_accepts() {
    let dir = tempfile::tempdir().expect("dir");
    let csv = dir.path().join("epraccur_2019-10.csv");
    std::fs::write(
        &csv,
        gunzip_file(&repo().join("mappings/data/ods/epraccur_2019-10.csv.gz")),
    )
    .expect("write");
    let columns = spec_columns("ods-epraccur.toml");
    let text = draft_checks_clean(&csv, &["--columns", &columns, "--id", "epraccur"]);
    assert!(text.contains("header = false"), "{text}");
    assert!(
        text.contains("code = { column = \"organisation_code\""),
        "{text}"
    );
    assert!(text.contains("display = { column = \"name\""), "{text}");
    assert!(
        text.contains("from = \"open_date\"\nto = \"close_date\"\ndate_format = \"YYYYMMDD\""),
        "{text}"
    );
    assert!(
        text.contains("[concept.status]\ncolumn = \"status_code\""),
        "{text}"
    );
    assert!(text.contains("default_version = \"2019-10-01\""), "{text}");
}

#[test]
fn new_drafts_a_mapping_of_the_nspl_postcode_directory_that_check_accepts() {
    let nspl = repo().join("../shared/data/postcodes/nspl_nov_2021_uk_20areas.csv.gz");
    if !nspl.exists() {
        eprintln!("skipped: ../shared/data is missing");
        return;
    }
    let text = draft_checks_clean(&nspl, &["--id", "nspl"]);
    assert!(text.contains("header = true"), "{text}");
    assert!(text.contains("code = { column = \"pcd\""), "{text}");
    assert!(
        text.contains("from = \"dointr\"\nto = \"doterm\"\ndate_format = \"YYYYMM\""),
        "{text}"
    );
    assert!(
        text.contains("code = \"lat\"\ntype = \"decimal\""),
        "{text}"
    );
}

fn gunzip_file(path: &Path) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(std::fs::File::open(path).expect("open"))
        .read_to_end(&mut out)
        .expect("gunzip");
    out
}
