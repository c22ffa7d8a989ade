//! The comparison engine: a port of the JSON half of `CompareUtilities` (hapifhir
//! org.hl7.fhir.core, `org.hl7.fhir.r5.test.utils`), which the official runner uses to judge a
//! response against the expected file. The expected document is a *matchetype*: literal JSON plus
//! control words (`$optional$`, `$optional-properties$`, `$count-arrays$`) and string templates
//! (`$uuid$`, `$instant$`, `$choice:a|b$`, `$external:N:text$`, …).
//!
//! One deliberate difference: the Java runner sorts some arrays of the actual response and then
//! compares arrays item by item in order; here array order never matters (as the suite's readme
//! says) — items are paired by a bipartite matching, required expected items first.
//! What is *not* here: scrubbing and R4→R5 lifting of the response (see `normalize`).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::LazyLock;

use regex::Regex;
use serde_json::{Map, Value as Json};

/// Why an actual document does not match the expected one: where, what kind, and the detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// JSON path in the actual document, e.g. `.expansion.contains[2].display`.
    pub path: String,
    /// The same path for grouping: array indices replaced by the item's `name` or `url` when it
    /// has one (`.parameter[display]`), else by `[]`.
    pub group_path: String,
    /// A short, stable category (used to group failures).
    pub kind: &'static str,
    /// The human explanation (expected vs actual).
    pub detail: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at {}: {}",
            self.kind,
            or_root(&self.path),
            self.detail
        )
    }
}

fn or_root(path: &str) -> &str {
    if path.is_empty() { "(root)" } else { path }
}

impl Mismatch {
    fn new(path: &Path, kind: &'static str, detail: impl Into<String>) -> Self {
        Self {
            path: path.real.clone(),
            group_path: path.group.clone(),
            kind,
            detail: detail.into(),
        }
    }

    /// How deep into the document the comparison got before failing (to pick the closest
    /// candidate when no array item matches).
    fn depth(&self) -> usize {
        self.path.matches(['.', '[']).count()
    }

    /// A grouping key: the kind plus the grouping path.
    pub fn signature(&self) -> String {
        format!("{} at {}", self.kind, or_root(&self.group_path))
    }
}

/// Where the comparison is: the real path and the grouping path (see [`Mismatch`]).
#[derive(Clone, Debug, Default)]
struct Path {
    real: String,
    group: String,
}

impl Path {
    fn key(&self, name: &str) -> Self {
        Self {
            real: format!("{}.{name}", self.real),
            group: format!("{}.{name}", self.group),
        }
    }

    fn index(&self, i: usize, item: &Json) -> Self {
        Self {
            real: format!("{}[{i}]", self.real),
            group: format!("{}[{}]", self.group, label(item).unwrap_or_default()),
        }
    }
}

/// The stable identity of an array item, if it has one: its `name` (Parameters, expansion
/// parameters) or `url` (extensions).
fn label(item: &Json) -> Option<String> {
    ["name", "url"]
        .iter()
        .find_map(|k| item.get(*k).and_then(Json::as_str))
        .map(String::from)
}

/// The comparison settings of one run: enabled modes (for `$optional$` filters), variables
/// (`$version$`) and whether only the expected properties are looked for (pattern mode, used
/// for the CapabilityStatement and TerminologyCapabilities).
pub struct Comparer<'a> {
    modes: &'a HashSet<String>,
    variables: &'a HashMap<String, String>,
    pattern: bool,
    warnings: std::cell::RefCell<Vec<String>>,
}

impl<'a> Comparer<'a> {
    /// A comparer for exact (non-pattern) comparison.
    pub fn new(modes: &'a HashSet<String>, variables: &'a HashMap<String, String>) -> Self {
        Self {
            modes,
            variables,
            pattern: false,
            warnings: Default::default(),
        }
    }

    /// Pattern mode: properties of the actual that the expected does not mention are ignored,
    /// and each expected array item only has to be found somewhere in the actual array.
    pub fn pattern(mut self) -> Self {
        self.pattern = true;
        self
    }

    /// Warnings raised (missing `$optional$: "warning:…"` items); they do not fail a test.
    pub fn warnings(&self) -> Vec<String> {
        self.warnings.borrow().clone()
    }

    /// Compares two documents; `Ok` when the actual matches the expected.
    pub fn compare(&self, expected: &Json, actual: &Json) -> Result<(), Mismatch> {
        self.nodes(&Path::default(), expected, actual, false)
    }

    fn objects(
        &self,
        path: &Path,
        expected: &Map<String, Json>,
        actual: &Map<String, Json>,
    ) -> Result<(), Mismatch> {
        let optionals = strings(expected.get("$optional-properties$"));
        let count_only = strings(expected.get("$count-arrays$"));
        for (name, value) in actual {
            if name == "fhir_comments" {
                continue;
            }
            match expected.get(name) {
                Some(e) => self.nodes(
                    &path.key(name),
                    e,
                    value,
                    count_only.iter().any(|c| c == name),
                )?,
                None if self.pattern => {}
                None => {
                    return Err(Mismatch::new(
                        &path.key(name),
                        "unexpected property",
                        format!(
                            "`{name}` is in the response ({}) but not in the expected",
                            brief(value)
                        ),
                    ));
                }
            }
        }
        for (name, value) in expected {
            if name == "fhir_comments"
                || is_control_key(name)
                || optionals.iter().any(|o| o == "*" || o == name)
            {
                continue;
            }
            if !actual.contains_key(name) && !all_optional(value) {
                return Err(Mismatch::new(
                    &path.key(name),
                    "missing property",
                    format!("`{name}` expected ({}) but absent", brief(value)),
                ));
            }
        }
        Ok(())
    }

    fn nodes(
        &self,
        path: &Path,
        expected: &Json,
        actual: &Json,
        count_only: bool,
    ) -> Result<(), Mismatch> {
        match (expected, actual) {
            (Json::Object(e), Json::Object(a)) => self.objects(path, e, a),
            (Json::Array(e), Json::Array(a)) => {
                if count_only {
                    if e.len() != a.len() {
                        return Err(Mismatch::new(
                            path,
                            "array item count differs",
                            format!("expected {} items, got {}", e.len(), a.len()),
                        ));
                    }
                    Ok(())
                } else {
                    self.arrays(path, e, a)
                }
            }
            (Json::Bool(e), Json::Bool(a)) => {
                if e == a {
                    Ok(())
                } else {
                    Err(Mismatch::new(
                        path,
                        "value differs",
                        format!("expected {e}, got {a}"),
                    ))
                }
            }
            (Json::String(e), Json::String(a)) => {
                if (e.contains("<div") && a.contains("<div"))
                    || self
                        .string_matches(a, e)
                        .map_err(|t| Mismatch::new(path, "bad template", t))?
                    || same_base64(a, e)
                {
                    Ok(())
                } else {
                    Err(Mismatch::new(
                        path,
                        "value differs",
                        format!("expected {}, got \"{a}\"", self.present(e)),
                    ))
                }
            }
            (Json::Number(e), Json::Number(a)) => {
                if e.to_string() == a.to_string() {
                    Ok(())
                } else {
                    Err(Mismatch::new(
                        path,
                        "value differs",
                        format!("expected {e}, got {a}"),
                    ))
                }
            }
            (Json::Null, Json::Null) => Ok(()),
            (e, a) => Err(Mismatch::new(
                path,
                "type differs",
                format!(
                    "expected {} ({}), got {} ({})",
                    kind_of(e),
                    brief(e),
                    kind_of(a),
                    brief(a)
                ),
            )),
        }
    }

    /// Arrays, in any order. Exact mode: every actual item pairs with a distinct expected item
    /// and every required (non-`$optional$`) expected item is paired — which also bounds the
    /// count as the Java does (no more than expected, no fewer than required). Pattern mode:
    /// every expected item pairs with a distinct actual item (`$optional$` is not consulted).
    fn arrays(&self, path: &Path, expected: &[Json], actual: &[Json]) -> Result<(), Mismatch> {
        let required: Vec<bool> = expected
            .iter()
            .map(|e| self.pattern || !self.is_optional(e))
            .collect();
        let table: Vec<Vec<Result<(), Mismatch>>> = expected
            .iter()
            .map(|e| {
                actual
                    .iter()
                    .enumerate()
                    .map(|(j, a)| self.nodes(&path.index(j, a), e, a, false))
                    .collect()
            })
            .collect();
        let matching = Matching::find(&table, &required);
        let missing: Vec<usize> = (0..expected.len())
            .filter(|i| required[*i] && matching.expected_to_actual[*i].is_none())
            .collect();
        let extra: Vec<usize> = if self.pattern {
            Vec::new()
        } else {
            (0..actual.len())
                .filter(|j| matching.actual_to_expected[*j].is_none())
                .collect()
        };
        let count = || {
            format!(
                " (expected {} items, {} required; got {})",
                expected.len(),
                required.iter().filter(|r| **r).count(),
                actual.len()
            )
        };
        let others = || {
            let names = |items: &mut dyn Iterator<Item = &Json>| -> String {
                let all: Vec<String> = items.map(brief).collect();
                let mut text = all.iter().take(4).cloned().collect::<Vec<_>>().join(", ");
                if all.len() > 4 {
                    text.push_str(&format!(" and {} more", all.len() - 4));
                }
                text
            };
            let mut text = String::new();
            if !missing.is_empty() {
                text.push_str(&format!(
                    "; not found: {}",
                    names(&mut missing.iter().map(|i| &expected[*i]))
                ));
            }
            if !extra.is_empty() {
                text.push_str(&format!(
                    "; unexpected: {}",
                    names(&mut extra.iter().map(|j| &actual[*j]))
                ));
            }
            text
        };
        // Prefer a missing item whose counterpart is present but different (the root cause,
        // e.g. `result` false instead of true) over items that are simply absent.
        let explained = |i: usize| {
            extra
                .iter()
                .filter_map(|j| table[i][*j].as_ref().err().map(|m| (*j, m)))
                .filter(|(j, _)| comparable(&expected[i], &actual[*j]))
                .max_by_key(|(_, m)| m.depth())
                .map(|(_, m)| m)
        };
        let first = missing
            .iter()
            .copied()
            .find(|i| explained(*i).is_some())
            .or_else(|| missing.first().copied());
        if let Some(i) = first {
            let closest = explained(i);
            return Err(match closest {
                Some(m) => Mismatch {
                    detail: format!(
                        "{} — in expected item {i} {}{}{}",
                        m.detail,
                        brief(&expected[i]),
                        count(),
                        others()
                    ),
                    ..m.clone()
                },
                None => Mismatch::new(
                    &path.index(i, &expected[i]),
                    "missing array item",
                    format!(
                        "expected item {i} {} is not in the response{}{}",
                        brief(&expected[i]),
                        count(),
                        others()
                    ),
                ),
            });
        }
        if let Some(&j) = extra.first() {
            let closest = (0..expected.len())
                .filter(|i| matching.expected_to_actual[*i].is_none())
                .filter_map(|i| table[i][j].as_ref().err().map(|m| (i, m)))
                .filter(|(i, _)| comparable(&expected[*i], &actual[j]))
                .max_by_key(|(_, m)| m.depth())
                .map(|(_, m)| m);
            return Err(match closest {
                // It failed to match an optional item: that item's reason is the explanation.
                Some(m) => Mismatch {
                    detail: format!(
                        "{} — in the response item {}{}{}",
                        m.detail,
                        brief(&actual[j]),
                        count(),
                        others()
                    ),
                    ..m.clone()
                },
                None => Mismatch::new(
                    &path.index(j, &actual[j]),
                    "unexpected array item",
                    format!(
                        "the response item {} matches no expected item{}{}",
                        brief(&actual[j]),
                        count(),
                        others()
                    ),
                ),
            });
        }
        for (i, e) in expected.iter().enumerate() {
            if matching.expected_to_actual[i].is_none()
                && let Some(w) = warning_of(e)
            {
                self.warnings.borrow_mut().push(format!(
                    "{}: optional item {} absent ({w})",
                    or_root(&path.real),
                    brief(e)
                ));
            }
        }
        Ok(())
    }

    /// `$optional$: true`, or a mode filter that passes (`!mode` when the mode is off, `mode`
    /// when it is on, `warning:…` always).
    fn is_optional(&self, e: &Json) -> bool {
        match e.get("$optional$") {
            Some(Json::Bool(b)) => *b,
            Some(Json::String(token)) => self.passes_optional_filter(token),
            _ => false,
        }
    }

    /// The Java `passesOptionalFilter`, plus `version:N` (optional when the server's FHIR
    /// version starts with N), which the suite documentation defines.
    fn passes_optional_filter(&self, token: &str) -> bool {
        if let Some(mode) = token.strip_prefix('!') {
            !self.modes.contains(mode)
        } else if token.starts_with("warning:") {
            true
        } else if let Some(v) = token.strip_prefix("version:") {
            self.variables
                .get("version")
                .is_some_and(|fv| fv.starts_with(v))
        } else {
            self.modes.contains(token)
        }
    }

    /// Whether `actual` satisfies the expected string (a literal or a `$…$` template).
    /// `Err` for an unknown template (the Java runner throws).
    fn string_matches(&self, actual: &str, expected: &str) -> Result<bool, String> {
        if !(expected.len() >= 2 && expected.starts_with('$') && expected.ends_with('$')) {
            // `$version$` inside a longer string is substituted (`…|$version$`).
            if expected.contains("$version$")
                && let Some(v) = self.variables.get("version")
            {
                return Ok(actual == expected.replace("$version$", v));
            }
            return Ok(actual == expected);
        }
        let inner = &expected[1..expected.len() - 1];
        if let Some(choices) = inner.strip_prefix("choice:") {
            return Ok(java_split(choices, '|').contains(&actual));
        }
        if let Some(fragments) = inner.strip_prefix("fragments:") {
            return Ok(contains_all(actual, &java_split(fragments, '|')));
        }
        if inner.starts_with("external:") {
            // No externals file: `$external:N$` accepts anything, `$external:N:text$` needs the
            // fragments of the third `:`-separated field (so `http://x|1` checks only "http",
            // exactly as the Java split does).
            let cmd = java_split(inner, ':');
            return Ok(match cmd.get(2) {
                None => true,
                Some(text) => contains_all(actual, &java_split(text, '|')),
            });
        }
        let pattern: &LazyLock<Regex> = match inner {
            "" => return Ok(true), // `$$`
            "instant" => &INSTANT,
            "date" => &DATE,
            "uuid" => &UUID,
            "id" => &ID,
            "url" => &URL,
            "token" => &TOKEN,
            "semver" => &SEMVER,
            "string" => return Ok(actual == java_trim(actual)),
            "version" => {
                return Ok(self.variables.get("version").is_none_or(|v| v == actual));
            }
            other => return Err(format!("unhandled template `${other}$`")),
        };
        Ok(pattern.is_match(actual))
    }

    fn present(&self, expected: &str) -> String {
        if expected.len() >= 2 && expected.starts_with('$') && expected.ends_with('$') {
            let inner = &expected[1..expected.len() - 1];
            if let Some(c) = inner.strip_prefix("choice:") {
                return format!("one of {:?}", java_split(c, '|'));
            }
            if let Some(f) = inner.strip_prefix("fragments:") {
                return format!("text containing all of {:?}", java_split(f, '|'));
            }
            if inner.starts_with("external:") {
                let cmd = java_split(inner, ':');
                return match cmd.get(2) {
                    None => format!("any text ({expected}, no externals file)"),
                    Some(t) => format!(
                        "text containing all of {:?} ({expected}, no externals file)",
                        java_split(t, '|')
                    ),
                };
            }
            if inner == "version" {
                return match self.variables.get("version") {
                    Some(v) => format!("\"{v}\" ($version$)"),
                    None => "anything ($version$)".into(),
                };
            }
            return format!("a value matching {expected}");
        }
        format!("\"{expected}\"")
    }
}

static INSTANT: LazyLock<Regex> = LazyLock::new(|| {
    anchored(
        r"([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)-(0[1-9]|1[0-2])-(0[1-9]|[1-2][0-9]|3[0-1])T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]{1,9})?(Z|(\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00))",
    )
});
static DATE: LazyLock<Regex> = LazyLock::new(|| {
    anchored(
        r"([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)-(0[1-9]|1[0-2])-(0[1-9]|[1-2][0-9]|3[0-1])(T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]{1,9})?(Z|(\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00)))?",
    )
});
static UUID: LazyLock<Regex> = LazyLock::new(|| {
    anchored(r"urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
});
static ID: LazyLock<Regex> = LazyLock::new(|| anchored(r"[A-Za-z0-9\-\.]{1,64}"));
static URL: LazyLock<Regex> = LazyLock::new(|| {
    anchored(r"(https?://|www\.)[-a-zA-Z0-9+&@#/%?=~_|!:.;]*[-a-zA-Z0-9+&@#/%=~_|]")
});
static TOKEN: LazyLock<Regex> = LazyLock::new(|| anchored(r"[0-9a-zA-Z_][0-9a-zA-Z_\.\-]*"));
static SEMVER: LazyLock<Regex> = LazyLock::new(|| {
    anchored(
        r"(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(?:-((?:0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*))*))?(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?",
    )
});

/// Java's `String.matches`: the whole string.
fn anchored(pattern: &str) -> Regex {
    Regex::new(&format!("^(?:{pattern})$")).expect("template regex")
}

/// Control keys of the matchetype format, never required in the actual.
fn is_control_key(name: &str) -> bool {
    matches!(
        name,
        "$optional$" | "$optional-properties$" | "$count-arrays$"
    )
}

/// A missing expected array property is fine when every object item in it carries
/// `$optional$` (whatever its value — as in the Java).
fn all_optional(value: &Json) -> bool {
    match value {
        Json::Array(items) => items
            .iter()
            .all(|i| !i.is_object() || i.get("$optional$").is_some()),
        _ => false,
    }
}

fn warning_of(e: &Json) -> Option<&str> {
    e.get("$optional$")?.as_str()?.strip_prefix("warning:")
}

fn strings(v: Option<&Json>) -> Vec<String> {
    match v {
        Some(Json::Array(a)) => a
            .iter()
            .filter_map(|s| s.as_str().map(String::from))
            .collect(),
        Some(Json::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

/// Java's `String.split(regex)` for a one-character separator: trailing empty fields dropped.
fn java_split(s: &str, sep: char) -> Vec<&str> {
    let mut parts: Vec<&str> = s.split(sep).collect();
    while parts.len() > 1 && parts.last().is_some_and(|p| p.is_empty()) {
        parts.pop();
    }
    if parts.len() == 1 && parts[0].is_empty() && !s.is_empty() {
        parts.clear();
    }
    parts
}

/// Java's `String.trim`: strips characters up to U+0020 at both ends.
fn java_trim(s: &str) -> &str {
    s.trim_matches(|c: char| c <= ' ')
}

fn contains_all(actual: &str, fragments: &[&str]) -> bool {
    let a = actual.to_lowercase();
    fragments.iter().all(|f| a.contains(&f.to_lowercase()))
}

/// The Java runner's last resort for unequal strings: both decode (leniently, as commons-codec
/// does — characters outside the base64 alphabet are skipped) to the same non-empty bytes. In
/// effect, strings that differ only in spaces and punctuation compare equal.
fn same_base64(a: &str, b: &str) -> bool {
    let (x, y) = (lenient_base64(a), lenient_base64(b));
    !x.is_empty() && x == y
}

fn lenient_base64(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' => break,
            _ => continue,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(((acc >> bits) & 0xff) as u8);
        }
    }
    out
}

fn kind_of(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "boolean",
        Json::Number(_) => "number",
        Json::String(_) => "string",
        Json::Array(_) => "array",
        Json::Object(_) => "object",
    }
}

/// A short rendering of a value for messages.
pub fn brief(v: &Json) -> String {
    let text = match v {
        Json::Object(o) => {
            // Name the item by its most telling keys.
            let keys = ["name", "code", "url", "system", "severity", "value"];
            let id: Vec<String> = keys
                .iter()
                .filter_map(|k| {
                    o.get(*k)
                        .filter(|v| !v.is_object() && !v.is_array())
                        .map(|v| format!("{k}={v}"))
                })
                .collect();
            if id.is_empty() {
                format!("{{{} keys}}", o.len())
            } else {
                format!("{{{}}}", id.join(", "))
            }
        }
        Json::Array(a) => format!("[{} items]", a.len()),
        other => other.to_string(),
    };
    if text.chars().count() > 160 {
        format!("{}…", text.chars().take(160).collect::<String>())
    } else {
        text
    }
}

/// Whether an unpaired actual item is the counterpart of an unpaired expected item, so that
/// its mismatch explains the failure: the same identity (`name`, `url` or `code`), or — for
/// items without one — any item.
fn comparable(expected: &Json, actual: &Json) -> bool {
    let keys = ["name", "url", "code"];
    match keys
        .iter()
        .find(|k| expected.get(**k).is_some_and(Json::is_string))
    {
        Some(k) => {
            expected.get(*k) == actual.get(*k)
                || expected
                    .get(*k)
                    .and_then(Json::as_str)
                    .is_some_and(|v| v.starts_with('$'))
        }
        None => true,
    }
}

/// A bipartite matching between expected and actual array items (Kuhn's augmenting paths).
/// Required expected items are matched first; an augmenting path never unmatches an expected
/// item, so if any matching covers all required items this one does, and as it is maximum it
/// covers every actual item whenever that is possible.
struct Matching {
    expected_to_actual: Vec<Option<usize>>,
    actual_to_expected: Vec<Option<usize>>,
}

impl Matching {
    fn find(table: &[Vec<Result<(), Mismatch>>], required: &[bool]) -> Self {
        let actual_len = table.first().map_or(0, Vec::len);
        let mut m = Self {
            expected_to_actual: vec![None; table.len()],
            actual_to_expected: vec![None; actual_len],
        };
        let order = (0..table.len())
            .filter(|i| required[*i])
            .chain((0..table.len()).filter(|i| !required[*i]));
        for i in order {
            let mut seen = vec![false; actual_len];
            m.augment(table, i, &mut seen);
        }
        m
    }

    fn augment(
        &mut self,
        table: &[Vec<Result<(), Mismatch>>],
        i: usize,
        seen: &mut [bool],
    ) -> bool {
        for j in 0..seen.len() {
            if table[i][j].is_ok() && !seen[j] {
                seen[j] = true;
                let free = match self.actual_to_expected[j] {
                    None => true,
                    Some(k) => self.augment(table, k, seen),
                };
                if free {
                    self.actual_to_expected[j] = Some(i);
                    self.expected_to_actual[i] = Some(j);
                    return true;
                }
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(expected: Json, actual: Json) -> Result<(), Mismatch> {
        check_modes(&[], expected, actual)
    }

    fn check_modes(modes: &[&str], expected: Json, actual: Json) -> Result<(), Mismatch> {
        let modes: HashSet<String> = modes.iter().map(|m| m.to_string()).collect();
        let vars = HashMap::from([("version".to_string(), "4.0.1".to_string())]);
        Comparer::new(&modes, &vars).compare(&expected, &actual)
    }

    #[test]
    fn identical_documents_match_and_different_values_do_not() {
        assert!(
            check(
                json!({"a": "x", "n": 7, "b": true}),
                json!({"a": "x", "n": 7, "b": true})
            )
            .is_ok()
        );
        let e = check(json!({"a": "x"}), json!({"a": "y"})).expect_err("a mismatch");
        assert_eq!((e.kind, e.path.as_str()), ("value differs", ".a"));
        assert!(check(json!({"n": 7}), json!({"n": 8})).is_err());
        assert!(check(json!({"b": true}), json!({"b": false})).is_err());
        assert!(check(json!({"b": true}), json!({"b": "true"})).is_err());
    }

    #[test]
    fn extra_property_in_actual_fails_unless_pattern_mode() {
        let e = check(json!({"a": 1}), json!({"a": 1, "extra": 2})).expect_err("a mismatch");
        assert_eq!(e.kind, "unexpected property");
        let (modes, vars) = (HashSet::new(), HashMap::new());
        let c = Comparer::new(&modes, &vars).pattern();
        assert!(
            c.compare(&json!({"a": 1}), &json!({"a": 1, "extra": 2}))
                .is_ok()
        );
        assert!(
            c.compare(&json!({"a": 1, "b": 2}), &json!({"a": 1}))
                .is_err()
        );
    }

    #[test]
    fn missing_property_fails_unless_listed_in_optional_properties() {
        let e = check(json!({"a": 1, "b": 2}), json!({"a": 1})).expect_err("a mismatch");
        assert_eq!(e.kind, "missing property");
        assert!(
            check(
                json!({"$optional-properties$": ["b"], "a": 1, "b": 2}),
                json!({"a": 1})
            )
            .is_ok()
        );
        assert!(
            check(
                json!({"$optional-properties$": ["*"], "a": 1, "b": 2}),
                json!({})
            )
            .is_ok()
        );
        // optional-properties only excuses absence: a present value must still match
        assert!(
            check(
                json!({"$optional-properties$": ["b"], "b": 2}),
                json!({"b": 3})
            )
            .is_err()
        );
        // ... and it does not allow properties the expected does not name
        assert!(check(json!({"$optional-properties$": ["b"]}), json!({"c": 3})).is_err());
    }

    #[test]
    fn array_order_does_not_matter() {
        let e = json!({"p": [{"name": "a"}, {"name": "b"}, {"name": "c"}]});
        assert!(
            check(
                e.clone(),
                json!({"p": [{"name": "c"}, {"name": "a"}, {"name": "b"}]})
            )
            .is_ok()
        );
        assert!(
            check(
                e.clone(),
                json!({"p": [{"name": "c"}, {"name": "a"}, {"name": "x"}]})
            )
            .is_err()
        );
        assert!(check(e, json!({"p": [{"name": "a"}, {"name": "b"}]})).is_err());
    }

    #[test]
    fn matching_is_not_greedy() {
        // expected[0] matches both actual items, expected[1] only actual[0]: a greedy pairing
        // of expected[0] with actual[0] would wrongly fail.
        let e = json!([{"$optional-properties$": ["d"], "c": "x", "d": "1"}, {"c": "x", "d": "1"}]);
        assert!(check(e.clone(), json!([{"c": "x", "d": "1"}, {"c": "x"}])).is_ok());
        assert!(check(e, json!([{"c": "x", "d": "2"}, {"c": "x"}])).is_err());
    }

    #[test]
    fn optional_array_items() {
        let e = json!({"p": [{"name": "a"}, {"$optional$": true, "name": "b"}]});
        assert!(check(e.clone(), json!({"p": [{"name": "a"}]})).is_ok());
        assert!(check(e.clone(), json!({"p": [{"name": "a"}, {"name": "b"}]})).is_ok());
        // present but different: the optional item does not excuse a wrong item
        let err =
            check(e.clone(), json!({"p": [{"name": "a"}, {"name": "z"}]})).expect_err("a mismatch");
        assert_eq!(
            (err.kind, err.path.as_str()),
            ("unexpected array item", ".p[1]")
        );
        let e2 = json!({"p": [{"name": "a"}, {"$optional$": true, "name": "b", "value": 1}]});
        let err = check(e2, json!({"p": [{"name": "a"}, {"name": "b", "value": 2}]}))
            .expect_err("a mismatch");
        assert_eq!(
            (err.kind, err.path.as_str()),
            ("value differs", ".p[1].value")
        );
        let err = check(
            json!({"p": [{"name": "a"}]}),
            json!({"p": [{"name": "a"}, {"name": "z"}]}),
        )
        .expect_err("a mismatch");
        assert_eq!(
            (err.kind, err.signature().as_str()),
            ("unexpected array item", "unexpected array item at .p[z]")
        );
        let err = check(
            json!({"p": [{"name": "a"}, {"name": "b"}]}),
            json!({"p": [{"name": "b"}]}),
        )
        .expect_err("a mismatch");
        assert_eq!(err.signature(), "missing array item at .p[a]");
        // more items than expected
        assert!(
            check(
                e,
                json!({"p": [{"name": "a"}, {"name": "b"}, {"name": "b"}]})
            )
            .is_err()
        );
        // a whole array of optional items may be absent
        assert!(
            check(
                json!({"x": 1, "p": [{"$optional$": true, "name": "b"}]}),
                json!({"x": 1})
            )
            .is_ok()
        );
        assert!(check(json!({"x": 1, "p": [{"name": "b"}]}), json!({"x": 1})).is_err());
    }

    #[test]
    fn optional_mode_filters() {
        let e = json!([{"name": "a"}, {"$optional$": "!tx.fhir.org", "name": "b"}]);
        assert!(check_modes(&[], e.clone(), json!([{"name": "a"}])).is_ok());
        assert!(check_modes(&["tx.fhir.org"], e, json!([{"name": "a"}])).is_err());
        // version:N: optional when the FHIR version (4.0.1 here) starts with N
        let e = json!([{"name": "a"}, {"$optional$": "version:4", "name": "b"}]);
        assert!(check(e, json!([{"name": "a"}])).is_ok());
        let e = json!([{"name": "a"}, {"$optional$": "version:5", "name": "b"}]);
        assert!(check(e, json!([{"name": "a"}])).is_err());
    }

    #[test]
    fn warning_optional_items_pass_with_a_warning() {
        let (modes, vars) = (HashSet::new(), HashMap::new());
        let c = Comparer::new(&modes, &vars);
        let e = json!([{"name": "a"}, {"$optional$": "warning:version", "name": "version"}]);
        assert!(c.compare(&e, &json!([{"name": "a"}])).is_ok());
        assert_eq!(c.warnings().len(), 1);
        assert!(c.warnings()[0].contains("version"));
    }

    #[test]
    fn templates() {
        let ok = |t: &str, v: &str| check(json!({ "v": t }), json!({ "v": v })).is_ok();
        assert!(ok(
            "$uuid$",
            "urn:uuid:8acdbfdc-e9d2-11ed-a05b-0242ac120003"
        ));
        assert!(!ok("$uuid$", "x"));
        assert!(!ok("$uuid$", "8acdbfdc-e9d2-11ed-a05b-0242ac120003"));
        assert!(ok("$instant$", "2024-01-02T03:04:05.123Z"));
        assert!(!ok("$instant$", "2024-01-02"));
        assert!(ok("$date$", "2024-01-02"));
        assert!(ok("$id$", "abc-1.2"));
        assert!(!ok("$id$", "a b"));
        assert!(ok("$token$", "tx_1.0"));
        assert!(!ok("$token$", "-x"));
        assert!(ok("$url$", "http://example.org/fhir"));
        assert!(!ok("$url$", "urn:x"));
        assert!(ok("$semver$", "1.2.3-beta.1"));
        assert!(!ok("$semver$", "1.2"));
        assert!(ok("$string$", "x y"));
        assert!(!ok("$string$", " x"));
        assert!(ok("$$", "anything"));
        assert!(ok("$version$", "4.0.1"));
        assert!(!ok("$version$", "5.0.0"));
        assert!(ok(
            "http://hl7.org/fhir/administrative-gender|$version$",
            "http://hl7.org/fhir/administrative-gender|4.0.1"
        ));
        assert!(!ok(
            "http://hl7.org/fhir/administrative-gender|$version$",
            "http://hl7.org/fhir/administrative-gender|5.0.0"
        ));
        assert!(ok("$choice:business-rule|not-found$", "not-found"));
        assert!(!ok("$choice:business-rule|not-found$", "invalid"));
        assert!(ok("$fragments:X-Request-Id:$", "see x-request-id: 12"));
        assert!(!ok("$fragments:X-Request-Id:$", "request 12"));
        assert!(
            check(json!({"v": "$nonsense$"}), json!({"v": "x"}))
                .expect_err("a mismatch")
                .kind
                == "bad template"
        );
    }

    #[test]
    fn externals_without_a_file_check_only_the_fragments() {
        let ok = |t: &str, v: &str| check(json!({ "v": t }), json!({ "v": v })).is_ok();
        assert!(ok("$external:4$", "whatever"));
        assert!(ok(
            "$external:1:Display 1X$",
            "The display \"display 1x\" is wrong"
        ));
        assert!(!ok("$external:1:Display 1X$", "The display is wrong"));
        // the Java splits on ':', so a URL template checks only its scheme
        assert!(ok(
            "$external:1:http://hl7.org/fhir/test/ValueSet/simple-all|5.0.0$",
            "see http://x"
        ));
        assert!(!ok(
            "$external:1:http://hl7.org/fhir/test/ValueSet/simple-all|5.0.0$",
            "no link"
        ));
    }

    #[test]
    fn strings_equal_apart_from_punctuation_match_as_in_the_java() {
        // CompareUtilities falls back to comparing both strings decoded as (lenient) base64.
        assert!(check(json!({"v": "Display 1"}), json!({"v": "Display1"})).is_ok());
        assert!(check(json!({"v": "Display 1"}), json!({"v": "Display 2"})).is_err());
        assert!(check(json!({"v": "code1"}), json!({"v": "Code1"})).is_err());
    }

    #[test]
    fn count_arrays_compares_only_lengths() {
        let e = json!({"$count-arrays$": ["c"], "c": [{"a": 1}, {"a": 2}]});
        assert!(check(e.clone(), json!({"c": [{"z": 9}, {"z": 8}]})).is_ok());
        assert!(check(e, json!({"c": [{"z": 9}]})).is_err());
    }

    #[test]
    fn nested_mismatch_is_reported_at_its_own_path() {
        let e = json!({"expansion": {"contains": [{"code": "a", "display": "A"}, {"code": "b", "display": "B"}]}});
        let a = json!({"expansion": {"contains": [{"code": "a", "display": "A"}, {"code": "b", "display": "Bee"}]}});
        let err = check(e, a).expect_err("a mismatch");
        assert_eq!(err.path, ".expansion.contains[1].display");
        assert_eq!(
            err.signature(),
            "value differs at .expansion.contains[].display"
        );
    }

    #[test]
    fn java_split_drops_trailing_empty_fields() {
        assert_eq!(java_split("X-Request-Id:", '|'), vec!["X-Request-Id:"]);
        assert_eq!(java_split("external:1:", ':'), vec!["external", "1"]);
        assert_eq!(java_split("a||b", '|'), vec!["a", "", "b"]);
    }
}
