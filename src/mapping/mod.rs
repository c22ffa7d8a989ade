//! The mapping file format and its compiler: `spec` (serde structs = the format), `text`
//! (normalisers, templates, dates), `compile` (validation, column binding, rows → concepts), and
//! here the pieces that read whole files: a release from a register file, a set of mappings from
//! a folder, and the CodeSystem/ValueSet metadata they declare. Knows nothing of HTTP.

pub mod compile;
pub mod spec;
pub mod text;

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Value as Json, json};

pub use compile::{Mapping, MappingError, RowError};

use crate::source::{self, HashingReader, LocalFile, SourceError};
use crate::store::{CodeSystemMeta, ConceptList, FilterDecl, PropertyDecl, Release, ReleaseInfo};

/// The release date a file name carries (`epraccur_2019-10.csv` → `2019-10-01`,
/// `nspl_20211101.csv` → `2021-11-01`), if it carries one.
pub fn version_from_name(name: &str) -> Option<String> {
    static DATE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let re = DATE.get_or_init(|| {
        regex::Regex::new(r"(?:^|[^0-9])((?:19|20)[0-9]{2})[-_]?(0[1-9]|1[0-2])(?:[-_]?(0[1-9]|[12][0-9]|3[01]))?(?:[^0-9]|$)")
            .expect("valid regex")
    });
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    let c = re.captures(base)?;
    let day = c.get(3).map_or("01", |d| d.as_str());
    Some(format!("{}-{}-{day}", &c[1], &c[2]))
}

/// The date part of a version, when the version is a date (`2020-01-01`, `2020-01`, `2020`).
pub fn version_date(version: &str) -> Option<String> {
    text::is_fhir_date(version).then(|| version.to_string())
}

/// Why an import or check failed.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The mapping does not fit the file.
    #[error("{}", join_lines(.0))]
    Mapping(Vec<MappingError>),
    /// Rows do not fit the mapping (a summary by column, the first errors, and how many in all).
    #[error("{} row error(s) in {} rows read{}:\n{}\n{}", .total, .rows, if *.total > .errors.len() { format!(" (first {} shown)", .errors.len()) } else { String::new() }, .summary, join_lines(.errors))]
    Rows {
        /// The first errors.
        errors: Vec<RowError>,
        /// How many errors in all.
        total: usize,
        /// Rows read.
        rows: u64,
        /// Errors grouped by mapping key and column, with the values seen.
        summary: RowErrorSummary,
    },
    /// The file could not be read.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// No version given and the mapping declares none.
    #[error("{0}")]
    Version(String),
}

/// (column, mapping key, message) of a row error.
type ErrorGroup = (Option<(usize, String)>, String, String);

/// Row errors grouped by (mapping key, column, message): how many rows, which values.
#[derive(Debug, Default)]
pub struct RowErrorSummary {
    groups: BTreeMap<ErrorGroup, (u64, Vec<String>)>,
    rows: u64,
}

impl RowErrorSummary {
    fn add(&mut self, e: &RowError) {
        let g = self
            .groups
            .entry((e.column.clone(), e.key.clone(), e.message.clone()))
            .or_default();
        g.0 += 1;
        if let Some(v) = &e.value
            && g.1.len() < 5
            && !g.1.contains(v)
        {
            g.1.push(v.clone());
        }
    }

    /// Groups failing on nearly every row: the mark of a file in another layout.
    fn drifted(&self) -> Vec<String> {
        self.groups
            .iter()
            .filter(|(_, (n, _))| self.rows >= 10 && *n * 10 >= self.rows * 9)
            .filter_map(|((c, _, _), _)| c.as_ref().map(|(p, name)| format!("{p} \"{name}\"")))
            .fold(Vec::new(), |mut out, c| {
                if !out.contains(&c) {
                    out.push(c);
                }
                out
            })
    }
}

impl std::fmt::Display for RowErrorSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "by column:")?;
        for ((column, key, message), (n, values)) in &self.groups {
            write!(f, "  ")?;
            if let Some((pos, name)) = column {
                write!(f, "column {pos} \"{name}\" ")?;
            }
            write!(f, "({key}): {n} of {} rows: {message}", self.rows)?;
            if !values.is_empty() {
                let shown: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
                write!(f, "; values seen: {}", shown.join(", "))?;
            }
            writeln!(f)?;
        }
        let drifted = self.drifted();
        if !drifted.is_empty() {
            writeln!(
                f,
                "nearly every row fails at column {}: the file looks like another layout of the register than this mapping describes (a new format needs a mapping of its own; see register.feed in mappings/README.md)",
                drifted.join(" and ")
            )?;
        }
        Ok(())
    }
}

fn join_lines<T: std::fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// How many row errors an import keeps for its report.
pub const MAX_REPORTED_ROW_ERRORS: usize = 50;

/// Reads a whole register file through a mapping into a release. `progress` is called with the
/// number of bytes read so far, every few thousand rows.
pub fn read_release(
    mapping: &Mapping,
    file: &LocalFile,
    version: &str,
    progress: &mut dyn FnMut(u64),
) -> Result<Release, ImportError> {
    read_release_known(mapping, file, version, progress, None)
}

/// Answers whether the store already has a row: given a row's code and [`RowHasher`] hash, the
/// store's token for the record made from the very same row with the same mapping, or `None`.
pub type KnownRows<'a> = &'a mut dyn FnMut(&str, u64) -> Option<u32>;

/// [`read_release`] for an import: a row that `known` says the store already has is not
/// converted (only its code is read), so importing a release costs what changed in it.
pub fn read_release_known(
    mapping: &Mapping,
    file: &LocalFile,
    version: &str,
    progress: &mut dyn FnMut(u64),
    known: Option<KnownRows<'_>>,
) -> Result<Release, ImportError> {
    let gzip = !file.unpacked && mapping.gzip_for(&file.display_name);
    read_rows(
        mapping,
        source::open(file, gzip)?,
        &file.display_name,
        version,
        progress,
        known,
    )
}

/// Hashes source rows so that an import can tell a row it already stored from a changed one
/// without converting it. SipHash-1-3 (a fixed, documented algorithm: the hashes are kept on
/// disk), keyed by the mapping text, the header and, when the mapping's concepts depend on it,
/// the release version: an equal hash means the same row read the same way.
pub struct RowHasher {
    k0: u64,
    k1: u64,
}

impl RowHasher {
    /// The hasher for a file read by `mapping` with this `header` as `version`.
    pub fn new(mapping: &Mapping, header: Option<&[String]>, version: &str) -> Self {
        use std::hash::Hasher;
        let mut h = siphasher::sip::SipHasher13::new_with_keys(0x6668_6972, 0x726f_7773);
        h.write(mapping.hash.as_bytes());
        h.write_u8(0xff);
        for name in header.unwrap_or_default() {
            h.write(name.as_bytes());
            h.write_u8(0xfe);
        }
        if mapping.depends_on_version() {
            h.write_u8(0xfd);
            h.write(version.as_bytes());
        }
        let k0 = h.finish();
        h.write_u8(0xfc);
        Self { k0, k1: h.finish() }
    }

    /// The hash of one row (its fields, each with its length). Never 0 (0 means "not known").
    pub fn hash(&self, record: &csv::StringRecord) -> u64 {
        use std::hash::Hasher;
        let mut h = siphasher::sip::SipHasher13::new_with_keys(self.k0, self.k1);
        for field in record.iter() {
            h.write_u32(field.len() as u32);
            h.write(field.as_bytes());
        }
        h.finish().max(1)
    }
}

/// [`read_release`] over the (already decompressed) bytes of a register file; `name` names the
/// file in errors and provenance.
pub fn read_release_from(
    mapping: &Mapping,
    reader: impl std::io::Read,
    name: &str,
    version: &str,
    progress: &mut dyn FnMut(u64),
) -> Result<Release, ImportError> {
    read_rows(mapping, reader, name, version, progress, None)
}

fn read_rows(
    mapping: &Mapping,
    reader: impl std::io::Read,
    name: &str,
    version: &str,
    progress: &mut dyn FnMut(u64),
    mut known: Option<KnownRows<'_>>,
) -> Result<Release, ImportError> {
    if version.trim().is_empty() {
        return Err(ImportError::Version(
            "the release version must not be empty".into(),
        ));
    }
    let mut hashing = HashingReader::new(reader);
    let mut errors = Vec::new();
    let mut total_errors = 0usize;
    // Held encoded (tens of bytes a concept), with the row each came from.
    let mut concepts = ConceptList::new();
    let mut rows: Vec<u64> = Vec::new();
    let mut summary = RowErrorSummary::default();
    let rows_read;
    {
        let mut reader = source::csv_reader(
            &mut hashing,
            mapping.delimiter(),
            mapping.spec.source.header,
        );
        let header: Option<Vec<String>> = if mapping.spec.source.header {
            let h = reader.headers().map_err(|e| SourceError::Csv {
                file: name.to_string(),
                row: 0,
                message: e.to_string(),
            })?;
            Some(h.iter().map(source::clean_header).collect())
        } else {
            None
        };
        let bound = mapping
            .bind(header.as_deref(), name)
            .map_err(ImportError::Mapping)?;
        let hasher = RowHasher::new(mapping, header.as_deref(), version);
        let mut record = csv::StringRecord::new();
        let mut row = 0u64;
        loop {
            match reader.read_record(&mut record) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    return Err(SourceError::Csv {
                        file: name.to_string(),
                        row: row + 1,
                        message: e.to_string(),
                    }
                    .into());
                }
            }
            row += 1;
            if row.is_multiple_of(8192) {
                progress(reader.position().byte());
            }
            let row_hash = hasher.hash(&record);
            if let Some(known) = known.as_mut()
                && let Some(code) = bound.code_of(&record, row)
                && let Some(token) = known(&code, row_hash)
            {
                concepts.push_known(&code, row_hash, token);
                rows.push(row);
                continue;
            }
            match bound.convert(&record, row, version) {
                Ok(Some(c)) => {
                    concepts.push_row(&c, row_hash);
                    rows.push(row);
                }
                Ok(None) => {}
                Err(row_errors) => {
                    total_errors += row_errors.len();
                    for e in row_errors {
                        summary.add(&e);
                        if errors.len() < MAX_REPORTED_ROW_ERRORS {
                            errors.push(e);
                        }
                    }
                }
            }
        }
        rows_read = row;
        progress(reader.position().byte());
    }
    concepts.sort_by_code();
    for k in 1..concepts.len() {
        let code = concepts.code(k);
        if concepts.code(k - 1) == code {
            let first_row = rows[concepts.pushed_as(k - 1)];
            total_errors += 1;
            let e = RowError {
                mapping: mapping.display_path(),
                key: "concept.code".into(),
                file: name.to_string(),
                row: rows[concepts.pushed_as(k)],
                column: None,
                value: Some(code.to_string()),
                message: format!("is a duplicate code (first seen at row {first_row})"),
            };
            summary.add(&RowError {
                message: "is a duplicate code".into(),
                ..e.clone()
            });
            if errors.len() < MAX_REPORTED_ROW_ERRORS {
                errors.push(e);
            }
        }
    }
    if total_errors > 0 {
        errors.sort_by_key(|e| e.row);
        summary.rows = rows_read;
        return Err(ImportError::Rows {
            errors,
            total: total_errors,
            rows: rows_read,
            summary,
        });
    }
    drop(rows);
    Ok(Release {
        info: ReleaseInfo {
            feed: mapping.feed().to_string(),
            mapping: mapping.id().to_string(),
            version: version.to_string(),
            source: name.to_string(),
            rows_read,
            concepts: concepts.len() as u64,
            mapping_hash: mapping.hash.clone(),
            source_hash: hashing.hash(),
            imported_at: now_rfc3339(),
        },
        concepts,
    })
}

/// The current time as RFC 3339 (UTC, seconds).
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Every mapping in a folder, and the CodeSystems they make.
#[derive(Debug, Default)]
pub struct MappingSet {
    /// Mappings, by file name order.
    pub mappings: Vec<Mapping>,
    /// CodeSystem metadata merged across the mappings that feed each url.
    pub code_systems: BTreeMap<String, CodeSystemMeta>,
}

impl MappingSet {
    /// Loads every `*.toml` mapping in `dir` (not recursive) and merges CodeSystem metadata.
    /// Every error in every file is returned.
    pub fn load_dir(dir: &Path) -> Result<Self, Vec<MappingError>> {
        if !dir.is_dir() {
            return Err(vec![MappingError {
                file: dir.display().to_string(),
                key: String::new(),
                message: "the mappings folder does not exist".into(),
            }]);
        }
        let mut errors = Vec::new();
        let mut parsed = Vec::new();
        for f in compile::toml_files(dir) {
            let text = match std::fs::read_to_string(&f) {
                Ok(t) => t,
                Err(e) => {
                    errors.push(MappingError {
                        file: f.display().to_string(),
                        key: String::new(),
                        message: format!("cannot read: {e}"),
                    });
                    continue;
                }
            };
            match compile::parse_spec(&f, &text) {
                Ok(spec) => parsed.push((f, text, spec)),
                Err(e) => errors.extend(e),
            }
        }
        let mut declared: BTreeMap<String, std::collections::HashMap<String, spec::PropertyType>> =
            BTreeMap::new();
        for (_, _, spec) in &parsed {
            let d = declared.entry(spec.code_system.url.clone()).or_default();
            for p in &spec.code_system.properties {
                d.entry(p.code.clone()).or_insert(p.kind);
            }
        }
        let mut mappings = Vec::new();
        for (f, text, spec) in parsed {
            let own: std::collections::HashSet<&str> = spec
                .code_system
                .properties
                .iter()
                .map(|p| p.code.as_str())
                .collect();
            let inherited = declared
                .get(&spec.code_system.url)
                .map(|d| {
                    d.iter()
                        .filter(|(k, _)| !own.contains(k.as_str()))
                        .map(|(k, v)| (k.clone(), *v))
                        .collect()
                })
                .unwrap_or_default();
            match Mapping::compile(&f, &text, spec, &inherited) {
                Ok(m) => mappings.push(m),
                Err(e) => errors.extend(e),
            }
        }
        let set = Self::from_mappings(mappings);
        match set {
            Ok(s) if errors.is_empty() => Ok(s),
            Ok(_) => Err(errors),
            Err(e) => {
                errors.extend(e);
                Err(errors)
            }
        }
    }

    /// Groups mappings by CodeSystem and merges their metadata.
    pub fn from_mappings(mappings: Vec<Mapping>) -> Result<Self, Vec<MappingError>> {
        let mut errors = Vec::new();
        let mut ids = BTreeMap::new();
        let mut feed_systems: BTreeMap<&str, (&str, String)> = BTreeMap::new();
        for m in &mappings {
            if let Some(other) = ids.insert(m.id().to_string(), m.display_path()) {
                errors.push(MappingError {
                    file: m.display_path(),
                    key: "register.id".into(),
                    message: format!("mapping id `{}` is also used by {other}", m.id()),
                });
            }
            let url = m.spec.code_system.url.as_str();
            match feed_systems.get(m.feed()) {
                Some((other_url, other)) if *other_url != url => errors.push(MappingError {
                    file: m.display_path(),
                    key: "register.feed".into(),
                    message: format!(
                        "feed `{}` feeds {other_url} in {other}; a feed's releases must all feed one CodeSystem",
                        m.feed()
                    ),
                }),
                Some(_) => {}
                None => {
                    feed_systems.insert(m.feed(), (url, m.display_path()));
                }
            }
        }
        let mut code_systems: BTreeMap<String, CodeSystemMeta> = BTreeMap::new();
        let mut owners: BTreeMap<(String, String), String> = BTreeMap::new();
        let mut pending: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for m in &mappings {
            let cs = &m.spec.code_system;
            let meta = code_systems
                .entry(cs.url.clone())
                .or_insert_with(|| CodeSystemMeta {
                    url: cs.url.clone(),
                    id: String::new(),
                    status: String::new(),
                    content: String::new(),
                    ..Default::default()
                });
            if !meta.feeds.iter().any(|f| f == m.feed()) {
                meta.feeds.push(m.feed().to_string());
            }
            let mut slots = std::mem::take(pending.entry(cs.url.clone()).or_default());
            let mut merge = |key: &str, value: Option<String>| {
                let Some(v) = value else { return };
                match slots.get(key) {
                    Some(existing) if existing != &v => errors.push(MappingError {
                        file: m.display_path(),
                        key: format!("code_system.{key}"),
                        message: format!(
                            "{v:?} disagrees with {existing:?} given for the same CodeSystem in {}",
                            owners
                                .get(&(cs.url.clone(), key.to_string()))
                                .cloned()
                                .unwrap_or_default()
                        ),
                    }),
                    Some(_) => {}
                    None => {
                        slots.insert(key.to_string(), v);
                        owners.insert((cs.url.clone(), key.to_string()), m.display_path());
                    }
                }
            };
            merge("id", cs.id.clone());
            merge("name", cs.name.clone());
            merge("title", cs.title.clone());
            merge("publisher", cs.publisher.clone());
            merge("description", cs.description.clone());
            merge("copyright", cs.copyright.clone());
            merge("hierarchy_meaning", cs.hierarchy_meaning.clone());
            merge("status", cs.status.clone());
            merge("content", cs.content.clone());
            merge("case_sensitive", cs.case_sensitive.map(|b| b.to_string()));
            let get = |k: &str| slots.get(k).cloned();
            meta.id = get("id").unwrap_or_default();
            meta.name = get("name");
            meta.title = get("title");
            meta.publisher = get("publisher");
            meta.description = get("description");
            meta.copyright = get("copyright");
            meta.hierarchy_meaning = get("hierarchy_meaning");
            meta.status = get("status").unwrap_or_default();
            meta.content = get("content").unwrap_or_default();
            meta.case_sensitive = get("case_sensitive").as_deref() != Some("false");
            pending.insert(cs.url.clone(), slots);
            for p in &cs.properties {
                let decl = PropertyDecl {
                    code: p.code.clone(),
                    kind: p.kind.as_str().to_string(),
                    uri: p.uri.clone(),
                    description: p.description.clone(),
                };
                match meta.properties.iter().find(|x| x.code == p.code) {
                    Some(existing) if existing != &decl => errors.push(MappingError {
                        file: m.display_path(),
                        key: format!("code_system.property ({})", p.code),
                        message: "declared differently by another mapping of the same CodeSystem"
                            .into(),
                    }),
                    Some(_) => {}
                    None => meta.properties.push(decl),
                }
            }
            for f in &cs.filters {
                if !meta.filters.iter().any(|x| x.code == f.code) {
                    meta.filters.push(FilterDecl {
                        code: f.code.clone(),
                        op: f.op.clone(),
                        value: f.value.clone(),
                        description: f.description.clone(),
                    });
                }
            }
        }
        for meta in code_systems.values_mut() {
            if meta.id.is_empty() {
                meta.id = default_id(&meta.url);
            }
            if meta.status.is_empty() {
                meta.status = "active".into();
            }
            if meta.content.is_empty() {
                meta.content = "complete".into();
            }
        }
        if errors.is_empty() {
            Ok(Self {
                mappings,
                code_systems,
            })
        } else {
            Err(errors)
        }
    }

    /// A mapping by its id (`register.id`).
    pub fn mapping(&self, id: &str) -> Option<&Mapping> {
        self.mappings.iter().find(|m| m.id() == id)
    }

    /// ValueSet resources declared by the mappings.
    pub fn value_sets(&self) -> Vec<Json> {
        self.mappings.iter().flat_map(value_set_resources).collect()
    }
}

/// The last path segment of a canonical URL, made into a valid resource id.
pub fn default_id(url: &str) -> String {
    let seg = url.trim_end_matches('/').rsplit('/').next().unwrap_or(url);
    let id: String = seg
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    if id.is_empty() {
        "codesystem".into()
    } else {
        id
    }
}

/// The ValueSet resources one mapping declares, as FHIR R4 JSON.
pub fn value_set_resources(m: &Mapping) -> Vec<Json> {
    let own = &m.spec.code_system.url;
    m.spec
        .value_sets
        .iter()
        .map(|vs| {
            let rule = |r: &spec::ComposeRuleSpec| {
                let mut out = serde_json::Map::new();
                if r.value_sets.is_empty() || !r.concepts.is_empty() || !r.filters.is_empty() || r.system.is_some() {
                    out.insert("system".into(), json!(r.system.clone().unwrap_or_else(|| own.clone())));
                }
                if !r.concepts.is_empty() {
                    out.insert(
                        "concept".into(),
                        Json::Array(r.concepts.iter().map(|c| json!({ "code": c })).collect()),
                    );
                }
                if !r.filters.is_empty() {
                    out.insert(
                        "filter".into(),
                        Json::Array(
                            r.filters
                                .iter()
                                .map(|f| json!({ "property": f.property, "op": f.op, "value": f.value }))
                                .collect(),
                        ),
                    );
                }
                if !r.value_sets.is_empty() {
                    out.insert("valueSet".into(), json!(r.value_sets));
                }
                Json::Object(out)
            };
            let mut compose = serde_json::Map::new();
            if let Some(inactive) = vs.inactive {
                compose.insert("inactive".into(), json!(inactive));
            }
            compose.insert("include".into(), Json::Array(vs.include.iter().map(rule).collect()));
            if !vs.exclude.is_empty() {
                compose.insert("exclude".into(), Json::Array(vs.exclude.iter().map(rule).collect()));
            }
            let mut r = serde_json::Map::new();
            r.insert("resourceType".into(), json!("ValueSet"));
            r.insert("id".into(), json!(vs.id));
            r.insert("url".into(), json!(vs.url));
            if let Some(n) = &vs.name {
                r.insert("name".into(), json!(n));
            }
            if let Some(t) = &vs.title {
                r.insert("title".into(), json!(t));
            }
            r.insert("status".into(), json!("active"));
            if let Some(p) = &m.spec.code_system.publisher {
                r.insert("publisher".into(), json!(p));
            }
            if let Some(d) = &vs.description {
                r.insert("description".into(), json!(d));
            }
            r.insert("compose".into(), Json::Object(compose));
            Json::Object(r)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_give_release_dates() {
        assert_eq!(
            version_from_name("../shared/data/ods/epraccur/epraccur_2019-10.csv").as_deref(),
            Some("2019-10-01")
        );
        assert_eq!(
            version_from_name("codepoint_open_scotland_2015-05.csv.gz").as_deref(),
            Some("2015-05-01")
        );
        assert_eq!(
            version_from_name("nspl_20211115.csv").as_deref(),
            Some("2021-11-15")
        );
        assert_eq!(
            version_from_name("https://x/2019/epraccur_2026-02_dse-format.csv").as_deref(),
            Some("2026-02-01")
        );
        assert_eq!(version_from_name("epraccur.csv"), None);
        assert_eq!(version_from_name("ward_12345678.csv"), None);
    }

    #[test]
    fn clock_formats_as_rfc3339() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(18_262), (2020, 1, 1));
        let now = now_rfc3339();
        assert_eq!(now.len(), 20, "{now}");
        assert!(now.ends_with('Z'));
    }

    #[test]
    fn ids_come_from_the_url() {
        assert_eq!(
            default_id("https://fhir.nhs.uk/Id/ods-organization-code"),
            "ods-organization-code"
        );
        assert_eq!(default_id("http://hl7.org/fhir/sid/icd-10"), "icd-10");
    }
}
