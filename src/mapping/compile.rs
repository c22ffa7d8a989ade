//! Compiling a mapping file: validating it on its own, binding it to a file's columns, and turning
//! rows into [`Concept`]s. Every error names the mapping file and key, and for rows the row number,
//! column and value.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use regex::Regex;

use super::spec::{
    Compression, MappingSpec, PropertyType, SourceFormat, StatusValueSpec, SyncSpec, ValueSource,
};
use super::text::{DateFormat, Normaliser, Template, TemplatePiece};
use crate::source::ContentHash;
use crate::store::{Concept, Designation, DesignationUse, Value};

/// Implicit properties every CodeSystem has, whether declared or not.
pub const IMPLICIT_PROPERTIES: [&str; 4] = ["status", "inactive", "parent", "child"];

/// A problem with a mapping file itself (not with a row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingError {
    /// The mapping file.
    pub file: String,
    /// Key path inside the file, e.g. `concept.property[3] (opStartDate)`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for MappingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}: {}: {}", self.file, self.key, self.message)
        }
    }
}

impl std::error::Error for MappingError {}

/// A row that does not fit its mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    /// The mapping file.
    pub mapping: String,
    /// Key path in the mapping.
    pub key: String,
    /// The data file.
    pub file: String,
    /// 1-based data row (header excluded).
    pub row: u64,
    /// Column (1-based position and name), when one column is at fault.
    pub column: Option<(usize, String)>,
    /// The offending value.
    pub value: Option<String>,
    /// What was expected.
    pub message: String,
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: ", self.mapping, self.key)?;
        if let Some((pos, name)) = &self.column {
            write!(f, "column {pos} \"{name}\" ")?;
        }
        if let Some(value) = &self.value {
            write!(f, "{value:?} ")?;
        }
        write!(f, "{}, row {} of {}", self.message, self.row, self.file)
    }
}

impl std::error::Error for RowError {}

#[derive(Debug, Clone)]
enum Source {
    Column(String, Vec<Normaliser>),
    Template(Template, Vec<Normaliser>),
    Constant(String),
}

#[derive(Debug, Clone)]
struct PropertyRule {
    key: String,
    code: Box<str>,
    kind: PropertyType,
    source: Source,
    date_format: DateFormat,
    system: Option<Box<str>>,
    map: Option<BTreeMap<String, String>>,
    map_default: Option<String>,
    required: bool,
    split: Option<String>,
    replace: Vec<(Regex, String)>,
    matches: Option<Regex>,
}

#[derive(Debug, Clone)]
struct DesignationRule {
    language: Option<Box<str>>,
    use_: Option<DesignationUse>,
    source: Source,
}

#[derive(Debug, Clone)]
enum RowFilterOp {
    Equals(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Regex(Regex),
    Empty(bool),
}

/// A mapping file, validated on its own and ready to bind to a file's columns.
#[derive(Debug, Clone)]
pub struct Mapping {
    /// The file it was read from.
    pub path: PathBuf,
    /// The parsed spec.
    pub spec: MappingSpec,
    /// Hash of the file's text (a release remembers which mapping made it).
    pub hash: String,
    code: Source,
    display: Option<Source>,
    definition: Option<Source>,
    designations: Vec<DesignationRule>,
    properties: Vec<PropertyRule>,
    status_column: Option<String>,
    status_values: BTreeMap<String, StatusValueSpec>,
    inactive_from: Option<(String, DateFormat)>,
    parent_column: Option<String>,
    parent_regex: Option<(Regex, String)>,
    not_selectable: Option<(String, Vec<String>)>,
    validity: Option<(Option<String>, Option<String>, DateFormat)>,
    row_filters: Vec<(String, RowFilterOp)>,
}

struct Checker<'a> {
    file: &'a str,
    errors: Vec<MappingError>,
}

impl Checker<'_> {
    /// `[sync]`: one upstream, a readable period, a member that is a name or a valid regex.
    fn sync(&mut self, sync: &SyncSpec) {
        match (&sync.url, sync.trud_item) {
            (Some(_), Some(_)) => self.err("sync", "give either `url` or `trud_item`, not both"),
            (None, None) => self.err("sync", "needs an upstream: `url` or `trud_item`"),
            (Some(url), None) if !crate::source::is_url(url) => {
                self.err("sync.url", format!("{url:?} is not an http(s) URL"))
            }
            _ => {}
        }
        if let Some(every) = &sync.every {
            match humantime::parse_duration(every) {
                Ok(d) if d >= std::time::Duration::from_secs(60) => {}
                Ok(_) => self.err("sync.every", "must be at least a minute"),
                Err(e) => self.err(
                    "sync.every",
                    format!("{every:?} is not a duration like \"24h\" or \"7d\": {e}"),
                ),
            }
        }
        if let Some(member) = &sync.member
            && let Err(e) = Regex::new(&format!("^(?:{member})$"))
        {
            self.err(
                "sync.member",
                format!("{member:?} is neither a plain name nor a valid regular expression: {e}"),
            );
        }
    }

    fn err(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.errors.push(MappingError {
            file: self.file.to_string(),
            key: key.into(),
            message: message.into(),
        });
    }

    fn normalisers(&mut self, key: &str, names: &[String]) -> Vec<Normaliser> {
        names
            .iter()
            .filter_map(|n| {
                let parsed = Normaliser::parse(n);
                if parsed.is_none() {
                    self.err(
                        format!("{key}.normalise"),
                        format!(
                            "unknown normaliser `{n}` (expected one of {})",
                            Normaliser::NAMES
                        ),
                    );
                }
                parsed
            })
            .collect()
    }

    fn source(
        &mut self,
        key: &str,
        column: Option<&String>,
        template: Option<&String>,
        value: Option<&String>,
        normalise: &[String],
    ) -> Option<Source> {
        let normalisers = self.normalisers(key, normalise);
        match (column, template, value) {
            (Some(c), None, None) => Some(Source::Column(c.clone(), normalisers)),
            (None, Some(t), None) => match Template::parse(t) {
                Ok(t) => Some(Source::Template(t, normalisers)),
                Err(e) => {
                    self.err(format!("{key}.template"), e.0);
                    None
                }
            },
            (None, None, Some(v)) => Some(Source::Constant(
                normalisers.iter().fold(v.clone(), |acc, n| n.apply(&acc)),
            )),
            (None, None, None) => {
                self.err(key, "needs one of `column`, `template` or `value`");
                None
            }
            _ => {
                self.err(key, "give only one of `column`, `template` or `value`");
                None
            }
        }
    }

    fn value_source(&mut self, key: &str, v: &ValueSource) -> Option<Source> {
        self.source(
            key,
            v.column.as_ref(),
            v.template.as_ref(),
            v.value.as_ref(),
            &v.normalise,
        )
    }

    fn date_format(&mut self, key: &str, name: Option<&String>) -> DateFormat {
        match name {
            None => DateFormat::Yyyymmdd,
            Some(n) => DateFormat::parse(n).unwrap_or_else(|| {
                self.err(
                    format!("{key}.date_format"),
                    format!("unknown date format `{n}` (expected YYYYMMDD, YYYYMM, YYYY-MM-DD or DD/MM/YYYY)"),
                );
                DateFormat::Yyyymmdd
            }),
        }
    }

    fn regex(&mut self, key: &str, pattern: &str) -> Option<Regex> {
        match Regex::new(&format!("^(?:{pattern})$")) {
            Ok(r) => Some(r),
            Err(e) => {
                self.err(key, format!("invalid regular expression: {e}"));
                None
            }
        }
    }
}

fn read_text(path: &Path) -> Result<String, Vec<MappingError>> {
    std::fs::read_to_string(path).map_err(|e| {
        vec![MappingError {
            file: path.display().to_string(),
            key: String::new(),
            message: format!("cannot read: {e}"),
        }]
    })
}

/// Parses mapping text into its spec (syntax and unknown keys only).
pub fn parse_spec(path: &Path, text: &str) -> Result<MappingSpec, Vec<MappingError>> {
    toml::from_str(text).map_err(|e| {
        vec![MappingError {
            file: path.display().to_string(),
            key: String::new(),
            message: e.to_string().trim_end().to_string(),
        }]
    })
}

/// The `*.toml` files of a folder, sorted.
pub fn toml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "toml"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// The mapping text without its `[sync]` and `[[test]]` tables (and the comments above them) and
/// without trailing blank lines: where releases come from and how the mapping is tested do not
/// change how rows become concepts, so neither re-imports anything.
fn without_sync_table(text: &str) -> std::borrow::Cow<'_, str> {
    let excluded = |header: &str| {
        let name = header.trim().trim_matches(['[', ']']).trim();
        name == "sync" || name == "test" || name.starts_with("test.") || name.starts_with("sync.")
    };
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    if !lines
        .iter()
        .any(|l| l.trim_start().starts_with('[') && excluded(l))
    {
        // Blank lines at the end do not count either.
        let trimmed = text.trim_end();
        return if text.len() == trimmed.len() + 1 && text.ends_with('\n') {
            std::borrow::Cow::Borrowed(text)
        } else {
            std::borrow::Cow::Owned(format!("{trimmed}\n"))
        };
    }
    let mut out: Vec<&str> = Vec::with_capacity(lines.len());
    let mut skipping = false;
    for line in lines {
        if line.trim_start().starts_with('[') {
            skipping = excluded(line);
            if skipping {
                // The comments just above the table are about it.
                while out
                    .last()
                    .is_some_and(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
                {
                    out.pop();
                }
            }
        }
        if !skipping {
            out.push(line);
        }
    }
    std::borrow::Cow::Owned(out.concat().trim_end().to_string() + "\n")
}

fn feed_id_ok(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

impl Mapping {
    /// Reads and validates a mapping file. Property declarations of other mappings in the same
    /// folder that feed the same CodeSystem count as declared. Every problem found is returned.
    pub fn load(path: &Path) -> Result<Self, Vec<MappingError>> {
        let text = read_text(path)?;
        let spec = parse_spec(path, &text)?;
        let mut inherited = HashMap::new();
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        for sibling in toml_files(dir) {
            if same_file(&sibling, path) {
                continue;
            }
            let Ok(t) = std::fs::read_to_string(&sibling) else {
                continue;
            };
            let Ok(other) = toml::from_str::<MappingSpec>(&t) else {
                continue;
            };
            if other.code_system.url == spec.code_system.url {
                for p in other.code_system.properties {
                    inherited.entry(p.code).or_insert(p.kind);
                }
            }
        }
        Self::compile(path, &text, spec, &inherited)
    }

    /// Parses and validates mapping text (as if read from `path`), on its own.
    pub fn from_text(path: &Path, text: &str) -> Result<Self, Vec<MappingError>> {
        let spec = parse_spec(path, text)?;
        Self::compile(path, text, spec, &HashMap::new())
    }

    /// Validates a parsed spec; `inherited` are property declarations made by other mappings of
    /// the same CodeSystem.
    pub fn compile(
        path: &Path,
        text: &str,
        spec: MappingSpec,
        inherited: &HashMap<String, PropertyType>,
    ) -> Result<Self, Vec<MappingError>> {
        let file = path.display().to_string();
        let mut c = Checker {
            file: &file,
            errors: Vec::new(),
        };
        if !feed_id_ok(&spec.register.id) {
            c.err(
                "register.id",
                format!(
                    "{:?} must be lower-case letters, digits and `-`",
                    spec.register.id
                ),
            );
        }
        if !spec.source.header && spec.source.columns.is_empty() {
            c.err(
                "source.columns",
                "a file without a header (`header = false`) needs its column names listed",
            );
        }
        if let Some(v) = &spec.source.default_version
            && v.trim().is_empty()
        {
            c.err("source.default_version", "must not be empty");
        }
        if let Some(sync) = &spec.sync {
            c.sync(sync);
        }
        if spec.code_system.url.trim().is_empty() || !spec.code_system.url.contains(':') {
            c.err("code_system.url", "must be an absolute canonical URL");
        }
        let mut declared: HashMap<&str, PropertyType> =
            inherited.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        for (i, p) in spec.code_system.properties.iter().enumerate() {
            if inherited.get(&p.code).is_some_and(|k| *k != p.kind) {
                c.err(
                    format!("code_system.property[{i}] ({})", p.code),
                    "declared with another type by another mapping of the same CodeSystem",
                );
            }
            if declared.insert(p.code.as_str(), p.kind).is_some()
                && !inherited.contains_key(&p.code)
            {
                c.err(
                    format!("code_system.property[{i}] ({})", p.code),
                    "declared twice",
                );
            }
        }
        let code = c.value_source("concept.code", &spec.concept.code);
        let display = spec
            .concept
            .display
            .as_ref()
            .and_then(|d| c.value_source("concept.display", d));
        let definition = spec
            .concept
            .definition
            .as_ref()
            .and_then(|d| c.value_source("concept.definition", d));
        let mut designations = Vec::new();
        for (i, d) in spec.concept.designations.iter().enumerate() {
            let key = format!("concept.designation[{i}]");
            let source = c.source(
                &key,
                d.column.as_ref(),
                d.template.as_ref(),
                d.value.as_ref(),
                &d.normalise,
            );
            let use_ = match (&d.use_system, &d.use_code) {
                (Some(s), Some(code)) => Some(DesignationUse {
                    system: s.as_str().into(),
                    code: code.as_str().into(),
                    display: d.use_display.as_deref().map(Into::into),
                }),
                (None, None) => None,
                _ => {
                    c.err(&key, "`use_system` and `use_code` go together");
                    None
                }
            };
            if let Some(source) = source {
                designations.push(DesignationRule {
                    language: d.language.as_deref().map(Into::into),
                    use_,
                    source,
                });
            }
        }
        let mut properties = Vec::new();
        for (i, p) in spec.concept.properties.iter().enumerate() {
            let key = format!("concept.property[{i}] ({})", p.code);
            let Some(&kind) = declared.get(p.code.as_str()) else {
                c.err(
                    &key,
                    format!(
                        "property `{}` is not declared in code_system.property (declared: {})",
                        p.code,
                        sorted_keys(&declared)
                    ),
                );
                continue;
            };
            if IMPLICIT_PROPERTIES.contains(&p.code.as_str()) {
                c.err(
                    &key,
                    "`status`, `inactive`, `parent` and `child` come from concept.status and concept.parent, not from concept.property",
                );
                continue;
            }
            let date_format = c.date_format(&key, p.date_format.as_ref());
            if p.date_format.is_some() && kind != PropertyType::DateTime {
                c.err(&key, "`date_format` only applies to dateTime properties");
            }
            if kind == PropertyType::Coding && p.system.is_none() {
                c.err(&key, "a Coding property needs `system`");
            }
            if kind != PropertyType::Coding && p.system.is_some() {
                c.err(&key, "`system` only applies to Coding properties");
            }
            let source = c.source(
                &key,
                p.column.as_ref(),
                p.template.as_ref(),
                p.value.as_ref(),
                &p.normalise,
            );
            let replace: Vec<(Regex, String)> = p
                .replace
                .iter()
                .enumerate()
                .filter_map(|(j, [pattern, with])| match Regex::new(pattern) {
                    Ok(r) => Some((r, with.clone())),
                    Err(e) => {
                        c.err(
                            format!("{key}.replace[{j}]"),
                            format!("invalid regular expression: {e}"),
                        );
                        None
                    }
                })
                .collect();
            let matches = p
                .matches
                .as_ref()
                .and_then(|m| c.regex(&format!("{key}.matches"), m));
            if let Some(source) = source {
                properties.push(PropertyRule {
                    key,
                    code: p.code.as_str().into(),
                    kind,
                    source,
                    date_format,
                    system: p.system.as_deref().map(Into::into),
                    map: p.map.clone(),
                    map_default: p.map_default.clone(),
                    required: p.required,
                    split: p.split.clone().filter(|s| !s.is_empty()),
                    replace,
                    matches,
                });
            }
        }
        let (mut status_column, mut status_values, mut inactive_from) =
            (None, BTreeMap::new(), None);
        if let Some(s) = &spec.concept.status {
            if s.column.is_none() && s.inactive_from.is_none() {
                c.err(
                    "concept.status",
                    "needs `column` (with `values`) or `inactive_from`",
                );
            }
            if s.column.is_some() && s.values.is_empty() {
                c.err(
                    "concept.status.values",
                    "a status `column` needs a `values` table",
                );
            }
            status_column = s.column.clone();
            status_values = s.values.clone();
            if let Some(col) = &s.inactive_from {
                let fmt = c.date_format("concept.status", s.date_format.as_ref());
                inactive_from = Some((col.clone(), fmt));
            }
        }
        let (mut parent_column, mut parent_regex) = (None, None);
        if let Some(p) = &spec.concept.parent {
            match (&p.column, &p.regex, &p.replace) {
                (Some(col), None, None) => parent_column = Some(col.clone()),
                (None, Some(re), Some(rep)) => {
                    if let Some(r) = c.regex("concept.parent.regex", re) {
                        parent_regex = Some((r, rep.clone()));
                    }
                }
                _ => c.err(
                    "concept.parent",
                    "give either `column`, or `regex` with `replace`",
                ),
            }
        }
        let not_selectable = spec
            .concept
            .not_selectable
            .as_ref()
            .map(|n| (n.column.clone(), n.one_of.clone()));
        let validity = spec.concept.validity.as_ref().map(|v| {
            if v.from.is_none() && v.to.is_none() {
                c.err("concept.validity", "give `from`, `to` or both");
            }
            let fmt = c.date_format("concept.validity", v.date_format.as_ref());
            (v.from.clone(), v.to.clone(), fmt)
        });
        let mut row_filters = Vec::new();
        for (i, f) in spec.source.filters.iter().enumerate() {
            let key = format!("source.filter[{i}] ({})", f.column);
            let mut ops = Vec::new();
            if let Some(v) = &f.equals {
                ops.push(RowFilterOp::Equals(v.clone()));
            }
            if let Some(v) = &f.one_of {
                ops.push(RowFilterOp::In(v.clone()));
            }
            if let Some(v) = &f.not_in {
                ops.push(RowFilterOp::NotIn(v.clone()));
            }
            if let Some(v) = &f.regex
                && let Some(r) = c.regex(&format!("{key}.regex"), v)
            {
                ops.push(RowFilterOp::Regex(r));
            }
            if let Some(v) = f.empty {
                ops.push(RowFilterOp::Empty(v));
            }
            match ops.len() {
                0 if f.regex.is_none() => c.err(
                    &key,
                    "needs one of `equals`, `in`, `not_in`, `regex`, `empty`",
                ),
                0 => {}
                1 => row_filters.extend(ops.into_iter().map(|op| (f.column.clone(), op))),
                _ => c.err(&key, "give only one operator per filter"),
            }
        }
        let mut vs_ids = HashMap::new();
        for (i, vs) in spec.value_sets.iter().enumerate() {
            let key = format!("value_set[{i}] ({})", vs.id);
            if vs_ids.insert(vs.id.as_str(), i).is_some() {
                c.err(&key, "value set id used twice");
            }
            if vs.include.is_empty() {
                c.err(&key, "needs at least one `include`");
            }
            for (kind, rules) in [("include", &vs.include), ("exclude", &vs.exclude)] {
                for (j, rule) in rules.iter().enumerate() {
                    let other_system = rule
                        .system
                        .as_ref()
                        .is_some_and(|s| s != &spec.code_system.url);
                    for (k, f) in rule.filters.iter().enumerate() {
                        let fkey = format!("{key}.{kind}[{j}].filter[{k}]");
                        let known = declared.contains_key(f.property.as_str())
                            || IMPLICIT_PROPERTIES.contains(&f.property.as_str())
                            || matches!(f.property.as_str(), "concept" | "code" | "display");
                        if !known && !other_system {
                            c.err(
                                &fkey,
                                format!("filter on undeclared property `{}`", f.property),
                            );
                        }
                        // The ValueSet is served as an R4 resource: R4 operators only.
                        if !crate::terminology::compose::R4_FILTER_OPS.contains(&f.op.as_str()) {
                            c.err(
                                &fkey,
                                format!(
                                    "unknown operator `{}` (expected one of R4's {})",
                                    f.op,
                                    crate::terminology::compose::R4_FILTER_OPS.join(", ")
                                ),
                            );
                        }
                    }
                }
            }
        }
        for (i, cm) in spec.concept_maps.iter().enumerate() {
            let key = format!("concept_map[{i}] ({})", cm.id);
            for (side, value, system) in [
                ("source", &cm.source, &cm.source_system),
                ("target", &cm.target, &cm.target_system),
            ] {
                if value != "code" && !declared.contains_key(value.as_str()) {
                    c.err(
                        &key,
                        format!("{side} `{value}` is neither `code` nor a declared property"),
                    );
                }
                if value != "code" && system.is_none() {
                    c.err(
                        &key,
                        format!("`{side}_system` is needed when {side} is a property"),
                    );
                }
            }
        }
        let (Some(code), true) = (code, c.errors.is_empty()) else {
            return Err(c.errors);
        };
        Ok(Self {
            path: path.to_path_buf(),
            hash: ContentHash::of(without_sync_table(text).as_bytes()),
            spec,
            code,
            display,
            definition,
            designations,
            properties,
            status_column,
            status_values,
            inactive_from,
            parent_column,
            parent_regex,
            not_selectable,
            validity,
            row_filters,
        })
    }

    /// The file name as shown in errors.
    pub fn display_path(&self) -> String {
        self.path.display().to_string()
    }

    /// Whether a row's concept depends on the release version as well as on the row (a status
    /// from an `inactive_from` date compares the date with the version).
    pub fn depends_on_version(&self) -> bool {
        self.inactive_from.is_some()
    }

    /// The feed this mapping's releases belong to (`register.feed`, else `register.id`).
    pub fn feed(&self) -> &str {
        self.spec
            .register
            .feed
            .as_deref()
            .unwrap_or(&self.spec.register.id)
    }

    /// The mapping's own id (`register.id`).
    pub fn id(&self) -> &str {
        &self.spec.register.id
    }

    /// The releases the default run imports: `default_file` and every `source.release`, each as
    /// (location resolved against the mapping's folder, version).
    pub fn default_releases(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let (Some(f), Some(v)) = (self.default_file(), &self.spec.source.default_version) {
            out.push((f, v.clone()));
        }
        for r in &self.spec.source.releases {
            out.push((self.resolve(&r.file), r.version.clone()));
        }
        out
    }

    fn resolve(&self, f: &str) -> String {
        if crate::source::is_url(f) {
            return f.to_string();
        }
        let base = self.path.parent().unwrap_or(Path::new("."));
        base.join(f).display().to_string()
    }

    /// CSV delimiter.
    pub fn delimiter(&self) -> u8 {
        match self.spec.source.format {
            SourceFormat::Csv => b',',
            SourceFormat::Tsv => b'\t',
        }
    }

    /// Whether a file name should be gunzipped.
    pub fn gzip_for(&self, name: &str) -> bool {
        match self.spec.source.compression {
            Compression::Auto => name.ends_with(".gz") || name.ends_with(".gz?raw=true"),
            Compression::None => false,
            Compression::Gzip => true,
        }
    }

    /// The default file's location, resolved against the mapping's folder.
    pub fn default_file(&self) -> Option<String> {
        Some(self.resolve(self.spec.source.default_file.as_ref()?))
    }

    /// Every column name the mapping reads.
    fn columns_used(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut add_source = |key: &str, s: &Source| match s {
            Source::Column(c, _) => out.push((key.to_string(), c.clone())),
            Source::Template(t, _) => out.extend(
                t.columns()
                    .map(|c| (format!("{key}.template"), c.to_string())),
            ),
            Source::Constant(_) => {}
        };
        add_source("concept.code", &self.code);
        if let Some(d) = &self.display {
            add_source("concept.display", d);
        }
        if let Some(d) = &self.definition {
            add_source("concept.definition", d);
        }
        for (i, d) in self.designations.iter().enumerate() {
            add_source(&format!("concept.designation[{i}]"), &d.source);
        }
        for p in &self.properties {
            add_source(&p.key, &p.source);
        }
        if let Some(c) = &self.status_column {
            out.push(("concept.status.column".into(), c.clone()));
        }
        if let Some((c, _)) = &self.inactive_from {
            out.push(("concept.status.inactive_from".into(), c.clone()));
        }
        if let Some(c) = &self.parent_column {
            out.push(("concept.parent.column".into(), c.clone()));
        }
        if let Some((c, _)) = &self.not_selectable {
            out.push(("concept.not_selectable.column".into(), c.clone()));
        }
        if let Some((from, to, _)) = &self.validity {
            for (k, c) in [("from", from), ("to", to)] {
                if let Some(c) = c {
                    out.push((format!("concept.validity.{k}"), c.clone()));
                }
            }
        }
        for (i, (c, _)) in self.row_filters.iter().enumerate() {
            out.push((format!("source.filter[{i}]"), c.clone()));
        }
        out
    }

    /// Binds the mapping to a file's columns (its header, or the declared names). Fails naming
    /// every column the mapping reads that the file lacks.
    pub fn bind(
        &self,
        header: Option<&[String]>,
        file: &str,
    ) -> Result<Bound<'_>, Vec<MappingError>> {
        let names: Vec<String> = match header {
            Some(h) if self.spec.source.header => h.to_vec(),
            _ => self.spec.source.columns.clone(),
        };
        let mut errors = Vec::new();
        if let Some(h) = header.filter(|_| self.spec.source.header) {
            for listed in &self.spec.source.columns {
                if !h.contains(listed) {
                    errors.push(MappingError {
                        file: self.display_path(),
                        key: "source.columns".into(),
                        message: format!(
                            "column \"{listed}\" is listed but {file} has no such header (header: {})",
                            h.join(", ")
                        ),
                    });
                }
            }
        }
        let index: HashMap<String, usize> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i))
            .collect();
        for (key, col) in self.columns_used() {
            if !index.contains_key(&col) {
                errors.push(MappingError {
                    file: self.display_path(),
                    key,
                    message: format!(
                        "column \"{col}\" does not exist in {file} (columns: {})",
                        names.join(", ")
                    ),
                });
            }
        }
        if !errors.is_empty() {
            errors.dedup();
            return Err(errors);
        }
        Ok(Bound {
            mapping: self,
            index,
            names,
            file: file.to_string(),
        })
    }
}

fn sorted_keys(map: &HashMap<&str, PropertyType>) -> String {
    let mut keys: Vec<&str> = map.keys().copied().collect();
    keys.sort_unstable();
    if keys.is_empty() {
        "none".into()
    } else {
        keys.join(", ")
    }
}

/// A mapping bound to one file's columns: converts rows.
pub struct Bound<'a> {
    mapping: &'a Mapping,
    index: HashMap<String, usize>,
    names: Vec<String>,
    file: String,
}

struct RowCtx<'r> {
    record: &'r csv::StringRecord,
    row: u64,
}

impl Bound<'_> {
    fn col(&self, name: &str) -> usize {
        self.index.get(name).copied().unwrap_or(usize::MAX)
    }

    fn cell<'r>(&self, ctx: &RowCtx<'r>, name: &str) -> &'r str {
        ctx.record.get(self.col(name)).unwrap_or("")
    }

    fn render(&self, ctx: &RowCtx<'_>, source: &Source) -> String {
        match source {
            Source::Column(c, ns) => apply(self.cell(ctx, c).trim(), ns),
            Source::Template(t, ns) => {
                let mut out = String::new();
                for piece in &t.pieces {
                    match piece {
                        TemplatePiece::Literal(l) => out.push_str(l),
                        TemplatePiece::Slot {
                            column,
                            normalisers,
                        } => out.push_str(&apply(self.cell(ctx, column).trim(), normalisers)),
                    }
                }
                apply(out.trim(), ns)
            }
            Source::Constant(v) => v.clone(),
        }
    }

    fn error(
        &self,
        ctx: &RowCtx<'_>,
        key: &str,
        column: Option<&str>,
        value: Option<&str>,
        message: impl Into<String>,
    ) -> RowError {
        RowError {
            mapping: self.mapping.display_path(),
            key: key.to_string(),
            file: self.file.clone(),
            row: ctx.row,
            column: column.map(|c| (self.col(c) + 1, c.to_string())),
            value: value.map(str::to_string),
            message: message.into(),
        }
    }

    fn source_column(source: &Source) -> Option<&str> {
        match source {
            Source::Column(c, _) => Some(c),
            Source::Template(t, _) => {
                let mut cols = t.columns();
                let first = cols.next();
                if cols.next().is_none() { first } else { None }
            }
            Source::Constant(_) => None,
        }
    }

    /// The code a row would have, without converting the rest of it: `None` when a row filter
    /// leaves the row out or the code is empty (then [`Bound::convert`] says why).
    pub fn code_of(&self, record: &csv::StringRecord, row: u64) -> Option<String> {
        let ctx = RowCtx { record, row };
        if !self.kept(&ctx) {
            return None;
        }
        Some(self.render(&ctx, &self.mapping.code)).filter(|c| !c.is_empty())
    }

    /// Whether the mapping's row filters keep a row.
    fn kept(&self, ctx: &RowCtx<'_>) -> bool {
        self.mapping.row_filters.iter().all(|(column, op)| {
            let v = self.cell(ctx, column).trim();
            match op {
                RowFilterOp::Equals(x) => v == x,
                RowFilterOp::In(xs) => xs.iter().any(|x| x == v),
                RowFilterOp::NotIn(xs) => !xs.iter().any(|x| x == v),
                RowFilterOp::Regex(r) => r.is_match(v),
                RowFilterOp::Empty(e) => v.is_empty() == *e,
            }
        })
    }

    /// Converts one record. `Ok(None)` when a row filter drops it. `version` is the release
    /// version (dates on or before it close a concept under `inactive_from`).
    pub fn convert(
        &self,
        record: &csv::StringRecord,
        row: u64,
        version: &str,
    ) -> Result<Option<Concept>, Vec<RowError>> {
        let ctx = RowCtx { record, row };
        let m = self.mapping;
        if !self.kept(&ctx) {
            return Ok(None);
        }
        let mut errors = Vec::new();
        if record.len() < self.names.len() && !m.spec.source.header {
            // Short rows are tolerated (trailing empty fields); only used columns matter.
        }
        let code = self.render(&ctx, &m.code);
        if code.is_empty() {
            return Err(vec![self.error(
                &ctx,
                "concept.code",
                Self::source_column(&m.code),
                None,
                "is empty (every row needs a code)",
            )]);
        }
        let mut concept = Concept::new(code.as_str());
        concept.display = m
            .display
            .as_ref()
            .map(|d| self.render(&ctx, d))
            .filter(|s| !s.is_empty())
            .map(Into::into);
        concept.definition = m
            .definition
            .as_ref()
            .map(|d| self.render(&ctx, d))
            .filter(|s| !s.is_empty())
            .map(Into::into);
        for d in &m.designations {
            let value = self.render(&ctx, &d.source);
            if !value.is_empty() {
                concept.designations.push(Designation {
                    language: d.language.clone(),
                    use_: d.use_.clone(),
                    value: value.into(),
                    extensions: None,
                });
            }
        }
        for p in &m.properties {
            let col = Self::source_column(&p.source);
            let mut whole = self.render(&ctx, &p.source);
            if p.matches.as_ref().is_some_and(|m| !m.is_match(&whole)) {
                continue;
            }
            for (re, with) in &p.replace {
                whole = re.replace_all(&whole, with.as_str()).into_owned();
            }
            let pieces: Vec<String> = match &p.split {
                Some(sep) => whole
                    .split(sep.as_str())
                    .map(|x| x.trim().to_string())
                    .filter(|x| !x.is_empty())
                    .collect(),
                None => vec![whole],
            };
            if pieces.is_empty() && p.required {
                errors.push(self.error(&ctx, &p.key, col, None, "is empty but required"));
            }
            for raw in pieces {
                let mapped = match &p.map {
                    Some(table) if !raw.is_empty() => match table.get(&raw) {
                        Some(v) => v.clone(),
                        None => match &p.map_default {
                            Some(d) => d.replace("{raw}", &raw),
                            None => {
                                errors.push(self.error(
                                    &ctx,
                                    &p.key,
                                    col,
                                    Some(&raw),
                                    format!(
                                        "is not in the value table (expected one of {})",
                                        table.keys().cloned().collect::<Vec<_>>().join(", ")
                                    ),
                                ));
                                continue;
                            }
                        },
                    },
                    _ => raw.clone(),
                };
                let expanded: Vec<String> = match &p.split {
                    Some(sep) if p.map.is_some() && mapped.contains(sep.as_str()) => mapped
                        .split(sep.as_str())
                        .map(|x| x.trim().to_string())
                        .filter(|x| !x.is_empty())
                        .collect(),
                    _ => vec![mapped],
                };
                for mapped in expanded {
                    if mapped.is_empty() {
                        if p.required {
                            errors.push(self.error(
                                &ctx,
                                &p.key,
                                col,
                                None,
                                "is empty but required",
                            ));
                        }
                        continue;
                    }
                    let value = match p.kind {
                        PropertyType::Code => Ok(Value::Code(mapped.into())),
                        PropertyType::String => Ok(Value::String(mapped.into())),
                        PropertyType::Integer => mapped
                            .parse::<i64>()
                            .map(Value::Integer)
                            .map_err(|_| "is not an integer".to_string()),
                        PropertyType::Boolean => match mapped.to_ascii_lowercase().as_str() {
                            "true" | "1" | "y" | "yes" => Ok(Value::Boolean(true)),
                            "false" | "0" | "n" | "no" => Ok(Value::Boolean(false)),
                            _ => {
                                Err("is not a boolean (expected true/false, 1/0, Y/N)".to_string())
                            }
                        },
                        PropertyType::DateTime => p
                            .date_format
                            .to_fhir(&mapped)
                            .map(|d| Value::DateTime(d.into()))
                            .ok_or_else(|| {
                                format!("is not a date (expected {})", p.date_format.name())
                            }),
                        PropertyType::Decimal => mapped
                            .parse::<f64>()
                            .ok()
                            .filter(|f| f.is_finite())
                            .map(|_| Value::Decimal(mapped.as_str().into()))
                            .ok_or_else(|| "is not a decimal".to_string()),
                        PropertyType::Coding => Ok(Value::Coding {
                            system: p.system.clone().unwrap_or_default(),
                            code: mapped.into(),
                            display: None,
                        }),
                    };
                    match value {
                        Ok(v) => concept.properties.push((p.code.clone(), v)),
                        Err(msg) => errors.push(self.error(&ctx, &p.key, col, Some(&raw), msg)),
                    }
                }
            }
        }
        if let Some(col) = &m.status_column {
            let raw = self.cell(&ctx, col).trim();
            match m.status_values.get(raw) {
                Some(s) => {
                    concept.status = Some(s.status.as_str().into());
                    concept.inactive = s.inactive;
                }
                None => errors.push(self.error(
                    &ctx,
                    "concept.status.values",
                    Some(col),
                    Some(raw),
                    format!(
                        "is not a known status (expected one of {})",
                        m.status_values.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                )),
            }
        }
        if let Some((col, fmt)) = &m.inactive_from {
            let raw = self.cell(&ctx, col).trim();
            if !raw.is_empty() {
                match fmt.to_fhir(raw) {
                    Some(date) => {
                        let in_force = super::super::mapping::version_date(version)
                            .is_none_or(|v| date.as_str() <= v.as_str());
                        if in_force {
                            concept.inactive = true;
                            if m.status_column.is_none() {
                                concept.status = Some("inactive".into());
                            }
                        } else if m.status_column.is_none() {
                            concept.status = Some("active".into());
                        }
                    }
                    None => errors.push(self.error(
                        &ctx,
                        "concept.status.inactive_from",
                        Some(col),
                        Some(raw),
                        format!("is not a date (expected {})", fmt.name()),
                    )),
                }
            } else if m.status_column.is_none() {
                concept.status = Some("active".into());
            }
        }
        if let Some(col) = &m.parent_column {
            let p = self.cell(&ctx, col).trim();
            if !p.is_empty() && p != concept.code.as_ref() {
                concept.parents.push(p.into());
            }
        }
        if let Some((re, rep)) = &m.parent_regex
            && re.is_match(&concept.code)
        {
            let p = re.replace(&concept.code, rep.as_str()).into_owned();
            if !p.is_empty() && p != concept.code.as_ref() {
                concept.parents.push(p.into());
            }
        }
        if let Some((col, values)) = &m.not_selectable {
            let v = self.cell(&ctx, col).trim();
            concept.not_selectable = values.iter().any(|x| x == v);
        }
        if let Some((from, to, fmt)) = &m.validity {
            for (k, col) in [("from", from), ("to", to)] {
                let Some(col) = col else { continue };
                let raw = self.cell(&ctx, col).trim();
                if raw.is_empty() {
                    continue;
                }
                match fmt.to_fhir(raw) {
                    Some(d) if k == "from" => concept.valid_from = Some(d.into()),
                    Some(d) => concept.valid_to = Some(d.into()),
                    // A column a property already reported for this row is not reported twice.
                    None if errors
                        .iter()
                        .any(|e| e.column.as_ref().is_some_and(|(_, c)| c == col)) => {}
                    None => errors.push(self.error(
                        &ctx,
                        &format!("concept.validity.{k}"),
                        Some(col),
                        Some(raw),
                        format!("is not a date (expected {})", fmt.name()),
                    )),
                }
            }
        }
        if errors.is_empty() {
            Ok(Some(concept))
        } else {
            Err(errors)
        }
    }
}

fn apply(value: &str, normalisers: &[Normaliser]) -> String {
    let mut out = value.to_string();
    for n in normalisers {
        out = n.apply(&out);
    }
    out
}
