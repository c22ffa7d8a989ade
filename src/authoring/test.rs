//! `fhir-registers test`: runs the `[[test]]` cases of mappings. Each case reads its fixture
//! through the mapping and checks the expectations (counts, displays, statuses, parents,
//! property values, rejected rows), then compares the snapshot with
//! `snapshots/{register}.{name}.snap` beside the mapping: a difference writes `….snap.new` and
//! is shown as a diff; `accept` turns every `.snap.new` into the snapshot.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::mapping::spec::TestSpec;
use crate::mapping::{self, ImportError, Mapping, MappingSet};
use crate::source;
use crate::store::{Concept, Value};

use super::snapshot;

/// How a run treats snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SnapshotMode {
    /// Compare; a difference (or a missing snapshot) writes `.snap.new` and fails.
    #[default]
    Compare,
    /// Write every snapshot as it is now (and remove `.snap.new`).
    Accept,
}

/// What one test case found.
#[derive(Debug, Default)]
pub struct CaseResult {
    /// The mapping file.
    pub mapping: String,
    /// The case's name.
    pub name: String,
    /// Failed expectations, one line each.
    pub failures: Vec<String>,
    /// The snapshot file.
    pub snapshot: Option<PathBuf>,
    /// A unified diff of the snapshot against the accepted one (`.snap.new` written).
    pub diff: Option<String>,
    /// The snapshot was written (accepted).
    pub accepted: bool,
}

impl CaseResult {
    /// Whether the case passed.
    pub fn passed(&self) -> bool {
        self.failures.is_empty() && self.diff.is_none()
    }
}

/// Where a case's snapshot lives.
pub fn snapshot_path(m: &Mapping, case: &TestSpec) -> PathBuf {
    m.path
        .parent()
        .unwrap_or(Path::new("."))
        .join("snapshots")
        .join(format!("{}.{}.snap", m.id(), case.name))
}

/// `.snap.new` files waiting in the snapshots folder of a mappings folder.
pub fn pending(mappings_dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(mappings_dir.join("snapshots"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".snap.new"))
        .collect();
    out.sort();
    out
}

/// Runs every case of a mapping. `set` is the mappings folder the mapping belongs to (its
/// CodeSystem is shown as served, merged over the feeds).
pub fn run_mapping(m: &Mapping, set: &MappingSet, mode: SnapshotMode) -> Vec<CaseResult> {
    m.spec
        .tests
        .iter()
        .map(|case| run_case(m, set, case, mode))
        .collect()
}

fn run_case(m: &Mapping, set: &MappingSet, case: &TestSpec, mode: SnapshotMode) -> CaseResult {
    let mut result = CaseResult {
        mapping: m.path.display().to_string(),
        name: case.name.clone(),
        ..CaseResult::default()
    };
    let fail = |r: &mut CaseResult, msg: String| r.failures.push(msg);
    if case.name.is_empty()
        || !case
            .name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        fail(
            &mut result,
            format!(
                "test name {:?} must be lower-case letters, digits and `-`",
                case.name
            ),
        );
        return result;
    }
    let base = m.path.parent().unwrap_or(Path::new("."));
    let location = base.join(&case.file);
    let file = match source::local_file(&location.display().to_string()) {
        Ok(f) => f,
        Err(e) => {
            fail(&mut result, format!("fixture: {e}"));
            return result;
        }
    };
    let version = case
        .version
        .clone()
        .or_else(|| mapping::version_from_name(&case.file))
        .or_else(|| m.spec.source.default_version.clone())
        .unwrap_or_else(|| "test".into());
    let read = mapping::read_release(m, &file, &version, &mut |_| {});
    if !case.rejects.is_empty() {
        check_rejects(&mut result, case, read.err());
        return result;
    }
    let release = match read {
        Ok(r) => r,
        Err(e) => {
            fail(&mut result, format!("the fixture does not import:\n{e}"));
            return result;
        }
    };
    if let Some(n) = case.rows
        && n != release.info.rows_read
    {
        fail(
            &mut result,
            format!("rows: expected {n}, read {}", release.info.rows_read),
        );
    }
    if let Some(n) = case.concepts
        && n != release.info.concepts
    {
        fail(
            &mut result,
            format!("concepts: expected {n}, made {}", release.info.concepts),
        );
    }
    let find = |code: &str| -> Option<Concept> {
        (0..release.concepts.len())
            .find(|&i| release.concepts.code(i) == code)
            .map(|i| release.concepts.get(i))
    };
    let mut expect = |code: &str, what: &str, want: &str, got: Option<String>| match got {
        None => result.failures.push(format!(
            "{code}: no such concept (expected {what} {want:?})"
        )),
        Some(g) if g != want => result
            .failures
            .push(format!("{code}: {what} is {g:?}, expected {want:?}")),
        Some(_) => {}
    };
    for (code, want) in &case.display {
        let got = find(code).map(|c| c.display.as_deref().unwrap_or("").to_string());
        expect(code, "display", want, got);
    }
    for (code, want) in &case.status {
        let got = find(code).map(|c| c.status.as_deref().unwrap_or("").to_string());
        expect(code, "status", want, got);
    }
    for (code, want) in &case.parent {
        let got = find(code).map(|c| {
            c.parents
                .iter()
                .map(|p| &**p)
                .collect::<Vec<_>>()
                .join(", ")
        });
        expect(code, "parent", want, got);
    }
    for p in &case.properties {
        let got = find(&p.code).map(|c| {
            c.properties
                .iter()
                .filter(|(k, _)| **k == *p.property)
                .map(|(_, v)| plain(v))
                .collect::<Vec<_>>()
                .join(", ")
        });
        expect(&p.code, &format!("property {}", p.property), &p.value, got);
    }
    let meta = set.code_systems.get(&m.spec.code_system.url);
    let first = case.snapshot_concepts.unwrap_or(10);
    let text = snapshot::render(m, meta, &case.name, &case.file, release, first);
    compare_snapshot(&mut result, snapshot_path(m, case), &text, mode);
    result
}

/// A property value as the expectations write it (a Coding by its code).
fn plain(v: &Value) -> String {
    match v {
        Value::Code(s) | Value::String(s) | Value::DateTime(s) | Value::Decimal(s) => s.to_string(),
        Value::Integer(i) => i.to_string(),
        Value::Boolean(b) => b.to_string(),
        Value::Coding { code, .. } => code.to_string(),
    }
}

fn check_rejects(result: &mut CaseResult, case: &TestSpec, error: Option<ImportError>) {
    let Some(ImportError::Rows { errors, total, .. }) = error else {
        result.failures.push(
            "expected rows to be rejected, but the fixture imported without row errors".into(),
        );
        return;
    };
    for want in &case.rejects {
        let found = errors
            .iter()
            .any(|e| e.row == want.row && e.to_string().contains(&want.message));
        if !found {
            let at_row: Vec<String> = errors
                .iter()
                .filter(|e| e.row == want.row)
                .map(ToString::to_string)
                .collect();
            result.failures.push(format!(
                "row {}: expected a rejection saying {:?}; {}",
                want.row,
                want.message,
                if at_row.is_empty() {
                    "the row was accepted".to_string()
                } else {
                    format!("got: {}", at_row.join("; "))
                }
            ));
        }
    }
    for e in errors
        .iter()
        .filter(|e| !case.rejects.iter().any(|w| w.row == e.row))
    {
        result
            .failures
            .push(format!("row {} was rejected unexpectedly: {e}", e.row));
    }
    if total > errors.len() {
        result.failures.push(format!(
            "{total} row errors in all; only the first {} were checked",
            errors.len()
        ));
    }
}

fn compare_snapshot(result: &mut CaseResult, path: PathBuf, text: &str, mode: SnapshotMode) {
    let new_path = PathBuf::from(format!("{}.new", path.display()));
    result.snapshot = Some(path.clone());
    let write = |p: &Path, t: &str| -> Result<(), String> {
        if let Some(dir) = p.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        std::fs::write(p, t).map_err(|e| format!("{}: {e}", p.display()))
    };
    if mode == SnapshotMode::Accept {
        match write(&path, text) {
            Ok(()) => {
                let _ = std::fs::remove_file(&new_path);
                result.accepted = true;
            }
            Err(e) => result.failures.push(format!("snapshot: {e}")),
        }
        return;
    }
    let old = std::fs::read_to_string(&path).ok();
    if old.as_deref() == Some(text) {
        let _ = std::fs::remove_file(&new_path);
        return;
    }
    if let Err(e) = write(&new_path, text) {
        result.failures.push(format!("snapshot: {e}"));
        return;
    }
    let old = old.unwrap_or_default();
    let diff = similar::TextDiff::from_lines(old.as_str(), text);
    let mut out = String::new();
    let _ = write!(
        out,
        "{}",
        diff.unified_diff()
            .context_radius(2)
            .header(&path.display().to_string(), &new_path.display().to_string())
    );
    result.diff = Some(out);
}
