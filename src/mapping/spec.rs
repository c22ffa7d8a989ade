//! The mapping file format: these serde structs *are* the format (TOML), documented key by key in
//! `mappings/README.md`. Nothing here reads rows or knows about the store; `compile` turns a parsed
//! [`MappingSpec`] into something that can convert rows.

use std::collections::BTreeMap;

use serde::Deserialize;

/// One mapping file: how one register file becomes concepts of one CodeSystem.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingSpec {
    /// Identity of the register feed this file describes.
    pub register: RegisterSpec,
    /// Where the rows come from and how to read them.
    pub source: SourceSpec,
    /// The CodeSystem the rows feed (several mappings may feed one CodeSystem `url`).
    pub code_system: CodeSystemSpec,
    /// How one row becomes one concept.
    pub concept: ConceptSpec,
    /// ValueSets this register offers.
    #[serde(default, rename = "value_set")]
    pub value_sets: Vec<ValueSetSpec>,
    /// ConceptMaps derived from the concepts' codes and properties.
    #[serde(default, rename = "concept_map")]
    pub concept_maps: Vec<ConceptMapSpec>,
    /// The upstream the register is followed from (`fhir-registers sync`, `serve --sync`).
    pub sync: Option<SyncSpec>,
    /// The mapping's own test cases (`fhir-registers test`).
    #[serde(default, rename = "test")]
    pub tests: Vec<TestSpec>,
}

/// One test case of a mapping: a fixture (a small real slice of the register) and what reading
/// it must give. Its snapshot is `snapshots/{register.id}.{name}.snap` beside the mapping.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestSpec {
    /// A short name, `[a-z0-9-]+` (names the snapshot file).
    pub name: String,
    /// The fixture file, relative to the mapping file.
    pub file: String,
    /// Release version to read it as (default: a date in the file name, else
    /// `source.default_version`).
    pub version: Option<String>,
    /// Rows the file must have (header excluded).
    pub rows: Option<u64>,
    /// Concepts it must make.
    pub concepts: Option<u64>,
    /// code → display.
    #[serde(default)]
    pub display: BTreeMap<String, String>,
    /// code → status.
    #[serde(default)]
    pub status: BTreeMap<String, String>,
    /// code → parent code(s), comma-separated.
    #[serde(default)]
    pub parent: BTreeMap<String, String>,
    /// code → property values.
    #[serde(default, rename = "property")]
    pub properties: Vec<PropertyExpectSpec>,
    /// Rows the mapping must reject, with the message it gives. With any, the file must fail to
    /// import with exactly these rows rejected.
    #[serde(default, rename = "reject")]
    pub rejects: Vec<RejectSpec>,
    /// Concepts shown whole in the snapshot (default 10); the rest are summarised.
    pub snapshot_concepts: Option<usize>,
}

/// A property value a test expects.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PropertyExpectSpec {
    /// The concept's code.
    pub code: String,
    /// The property code.
    pub property: String,
    /// Its value as text (a Coding by its code); several values are joined with `, `; empty
    /// when the concept must not have the property.
    pub value: String,
}

/// A row a test expects the mapping to reject.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RejectSpec {
    /// The 1-based data row (header excluded).
    pub row: u64,
    /// Words the error message must contain.
    pub message: String,
}

/// Where new releases of the register are published, and how often to look.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncSpec {
    /// A plain http(s) file replaced in place by each release (zip, gzip or plain).
    pub url: Option<String>,
    /// An NHS TRUD item number: every release the item lists is imported.
    pub trud_item: Option<u32>,
    /// The register file inside a zip: an exact member name (or its name without folders), or a
    /// regular expression matching one whole member name.
    pub member: Option<String>,
    /// How often `serve --sync` checks the upstream (`24h`, `7d`, `30m`; default `24h`).
    pub every: Option<String>,
}

/// A ConceptMap derived from this register: each concept maps its `source` (the code or a
/// property) to its `target` (a property or the code).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConceptMapSpec {
    /// Logical id (`/ConceptMap/{id}`).
    pub id: String,
    /// Canonical URL.
    pub url: String,
    /// Computer-friendly name.
    pub name: Option<String>,
    /// Human title.
    pub title: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// `code` or a property code: what is translated from.
    pub source: String,
    /// System of the source codes (default: this CodeSystem when `source = "code"`).
    pub source_system: Option<String>,
    /// `code` or a property code: what is translated to.
    pub target: String,
    /// System of the target codes (default: this CodeSystem when `target = "code"`).
    pub target_system: Option<String>,
    /// R5 relationship (or R4 equivalence) of every mapping; `equivalent` unless said.
    pub relationship: Option<String>,
}

/// The register feed: a stable id (used in the data directory and in version metadata).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterSpec {
    /// Stable mapping id, `[a-z0-9-]+`, e.g. `ods-epraccur`.
    pub id: String,
    /// The feed whose releases this mapping reads (default: `id`). A mapping written for a new
    /// layout of the same register names the old mapping's feed here, so its releases continue
    /// that feed's history (ODS's 2026 "Data Search and Export" epraccur continues `ods-epraccur`).
    pub feed: Option<String>,
    /// Human title of the register file.
    pub title: Option<String>,
    /// Who maintains the register (the custodian).
    pub custodian: Option<String>,
    /// Licence and attribution text that must travel with the data.
    pub licence: Option<String>,
}

/// How to read the register file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    /// File format.
    #[serde(default)]
    pub format: SourceFormat,
    /// Whether the first line is a header naming the columns.
    #[serde(default = "default_true")]
    pub header: bool,
    /// Column names: required when `header = false`; with a header, these rename nothing and are
    /// checked against the header (every listed name must be present).
    #[serde(default)]
    pub columns: Vec<String>,
    /// Compression of the file; `auto` decides by the `.gz` extension.
    #[serde(default)]
    pub compression: Compression,
    /// The file (path relative to the mapping file, or http(s) URL) the default run imports.
    pub default_file: Option<String>,
    /// The release version (`YYYY-MM-DD`) of `default_file`.
    pub default_version: Option<String>,
    /// More releases the default run imports (oldest first or not: versions order them).
    #[serde(default, rename = "release")]
    pub releases: Vec<ReleaseSpec>,
    /// Rows are kept only when every filter matches.
    #[serde(default, rename = "filter")]
    pub filters: Vec<RowFilterSpec>,
}

/// One release the default run imports.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseSpec {
    /// The file (path relative to the mapping file, or http(s) URL).
    pub file: String,
    /// Its release version (`YYYY-MM-DD`).
    pub version: String,
}

/// Supported file formats.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SourceFormat {
    /// Comma-separated values (RFC 4180 quoting).
    #[default]
    Csv,
    /// Tab-separated values.
    Tsv,
}

/// Supported compressions.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Gzip when the file name ends in `.gz`, none otherwise.
    #[default]
    Auto,
    /// Plain text.
    None,
    /// Gzip.
    Gzip,
}

/// A row filter: `column` compared by exactly one of the operators.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RowFilterSpec {
    /// Column the filter reads.
    pub column: String,
    /// Keep rows whose value equals this.
    pub equals: Option<String>,
    /// Keep rows whose value is one of these.
    #[serde(rename = "in")]
    pub one_of: Option<Vec<String>>,
    /// Keep rows whose value is none of these.
    pub not_in: Option<Vec<String>>,
    /// Keep rows whose whole value matches this regular expression.
    pub regex: Option<String>,
    /// Keep rows whose value is (true) or is not (false) empty after trimming.
    pub empty: Option<bool>,
}

/// The CodeSystem resource metadata. Where several mappings feed one `url`, each key may be given
/// in any one of them; the same key given twice must agree.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeSystemSpec {
    /// Canonical URL, the `system` of every coding.
    pub url: String,
    /// Logical id (`/CodeSystem/{id}`); defaults to the last path segment of `url`.
    pub id: Option<String>,
    /// Computer-friendly name.
    pub name: Option<String>,
    /// Human title.
    pub title: Option<String>,
    /// Publication status (`active` unless said).
    pub status: Option<String>,
    /// The register's custodian.
    pub publisher: Option<String>,
    /// Markdown description.
    pub description: Option<String>,
    /// Copyright/licence statement.
    pub copyright: Option<String>,
    /// Whether codes are case sensitive.
    pub case_sensitive: Option<bool>,
    /// `complete`, `fragment`, … (`complete` unless said).
    pub content: Option<String>,
    /// `is-a`, `grouped-by`, … when the concepts form a hierarchy.
    pub hierarchy_meaning: Option<String>,
    /// Properties the CodeSystem advertises (`CodeSystem.property`).
    #[serde(default, rename = "property")]
    pub properties: Vec<PropertyDeclSpec>,
    /// Filters the CodeSystem advertises (`CodeSystem.filter`).
    #[serde(default, rename = "filter")]
    pub filters: Vec<FilterDeclSpec>,
}

/// One `CodeSystem.property` declaration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PropertyDeclSpec {
    /// Property code, e.g. `opStartDate`.
    pub code: String,
    /// Property type.
    #[serde(rename = "type")]
    pub kind: PropertyType,
    /// Formal URI of the property.
    pub uri: Option<String>,
    /// What the property means.
    pub description: Option<String>,
}

/// One `CodeSystem.filter` declaration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterDeclSpec {
    /// The property (or `concept`, `code`, `display`) the filter works on.
    pub code: String,
    /// Operators allowed. Only R4's (see [`crate::terminology::compose::R4_FILTER_OPS`]) are
    /// listed in the served CodeSystem; others the server accepts (`child-of`) are left out.
    pub op: Vec<String>,
    /// What the value must be.
    pub value: String,
    /// What the filter does.
    pub description: Option<String>,
}

/// The FHIR property types a mapped property can have.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Hash, serde::Serialize)]
pub enum PropertyType {
    /// A code in this CodeSystem (or a plain token).
    #[serde(rename = "code")]
    Code,
    /// Free text.
    #[serde(rename = "string")]
    String,
    /// Whole number.
    #[serde(rename = "integer")]
    Integer,
    /// true/false.
    #[serde(rename = "boolean")]
    Boolean,
    /// Date or date-time.
    #[serde(rename = "dateTime")]
    DateTime,
    /// Decimal number.
    #[serde(rename = "decimal")]
    Decimal,
    /// A Coding in another system.
    #[serde(rename = "Coding")]
    Coding,
}

impl PropertyType {
    /// The FHIR spelling (`code`, `dateTime`, `Coding`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Code => "code",
            Self::String => "string",
            Self::Integer => "integer",
            Self::Boolean => "boolean",
            Self::DateTime => "dateTime",
            Self::Decimal => "decimal",
            Self::Coding => "Coding",
        }
    }
}

/// How a row becomes a concept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConceptSpec {
    /// The code.
    pub code: ValueSource,
    /// The display (a template such as `"{name}"`).
    pub display: Option<ValueSource>,
    /// The definition.
    pub definition: Option<ValueSource>,
    /// Extra designations.
    #[serde(default, rename = "designation")]
    pub designations: Vec<DesignationSpec>,
    /// Typed properties.
    #[serde(default, rename = "property")]
    pub properties: Vec<PropertySpec>,
    /// Status and inactive flag.
    pub status: Option<StatusSpec>,
    /// Parent in the hierarchy.
    pub parent: Option<ParentSpec>,
    /// Marks concepts that are not selectable (e.g. ICD-10 chapters): `column`/`template` giving a
    /// value, and the values that mean "abstract".
    pub not_selectable: Option<NotSelectableSpec>,
    /// Business validity: the columns giving the dates the coded thing began and ended (ODS
    /// open/close dates, NSPL `dointr`/`doterm`), as opposed to the releases a record appears in.
    pub validity: Option<ValiditySpec>,
}

/// The business-validity columns of a register.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValiditySpec {
    /// Column with the start date (open, introduction).
    pub from: Option<String>,
    /// Column with the end date (close, termination).
    pub to: Option<String>,
    /// Date format of both (same choices as property `date_format`; default `YYYYMMDD`).
    pub date_format: Option<String>,
}

/// Where a value comes from: a column, a template over columns, or a constant; then normalisers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValueSource {
    /// Read this column.
    pub column: Option<String>,
    /// Render this template: `{column}` and `{column|fn|fn}` with fns `trim`, `upper`, `lower`,
    /// `nospace`, `title`, `postcode` (conventional spaced form).
    pub template: Option<String>,
    /// A constant value.
    pub value: Option<String>,
    /// Normalisers applied in order: `trim`, `upper`, `lower`, `remove-spaces`, `collapse-spaces`,
    /// `postcode`, `title`.
    #[serde(default)]
    pub normalise: Vec<String>,
}

/// One designation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesignationSpec {
    /// BCP-47 language.
    pub language: Option<String>,
    /// `use` coding system.
    pub use_system: Option<String>,
    /// `use` coding code.
    pub use_code: Option<String>,
    /// `use` coding display.
    pub use_display: Option<String>,
    /// Column holding the designation text.
    pub column: Option<String>,
    /// Template for the designation text.
    pub template: Option<String>,
    /// Constant designation text.
    pub value: Option<String>,
    /// Normalisers for the text.
    #[serde(default)]
    pub normalise: Vec<String>,
}

/// One typed property.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PropertySpec {
    /// Property code; must be declared in `code_system.property` (or be `status`, `inactive`,
    /// `parent`, `child`, which are implicit).
    pub code: String,
    /// Where the value comes from.
    pub column: Option<String>,
    /// Template over columns.
    pub template: Option<String>,
    /// A constant value.
    pub value: Option<String>,
    /// Normalisers for the value.
    #[serde(default)]
    pub normalise: Vec<String>,
    /// For `dateTime`: `YYYYMMDD` (default), `YYYYMM`, `YYYY-MM-DD`, `DD/MM/YYYY`.
    pub date_format: Option<String>,
    /// For `Coding`: the system of the coded value.
    pub system: Option<String>,
    /// Value table: raw value → stored value (e.g. `4` → `GP Practice`); unlisted values are an
    /// error naming the row, unless `map_default` is set.
    pub map: Option<BTreeMap<String, String>>,
    /// Stored value for raw values missing from `map` (`"{raw}"` keeps the raw value).
    pub map_default: Option<String>,
    /// Row is an error when the value is empty.
    #[serde(default)]
    pub required: bool,
    /// Regular-expression replacements `[pattern, replacement]` applied in order after the
    /// normalisers and `matches` (`[["\\.", ""]]` drops dots).
    #[serde(default)]
    pub replace: Vec<[String; 2]>,
    /// The property is kept only when its value (after normalisers, before `replace`) matches this
    /// regular expression (whole value).
    pub matches: Option<String>,
    /// Splits the value on this separator into several values of the property (each mapped and
    /// typed on its own), e.g. `"|"` for `RO319|RO326`. What `map` gives is split again, so a
    /// table entry may stand for several values (`"3" = "RO80|RO87"`).
    pub split: Option<String>,
}

/// Status: a value table over a column and/or an inactive-from-date rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusSpec {
    /// Column holding a status code (e.g. ODS `A/C/D/P`).
    pub column: Option<String>,
    /// Value table: raw status → FHIR status and inactive flag.
    #[serde(default)]
    pub values: BTreeMap<String, StatusValueSpec>,
    /// Column holding a close/termination date: a concept with a date on or before the release
    /// version is inactive (status `inactive` unless the value table says otherwise).
    pub inactive_from: Option<String>,
    /// Date format of `inactive_from` (same choices as property `date_format`).
    pub date_format: Option<String>,
}

/// One entry of a status value table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusValueSpec {
    /// The `status` property value, e.g. `active`, `inactive`, `dormant`.
    pub status: String,
    /// Whether the concept is inactive.
    #[serde(default)]
    pub inactive: bool,
}

/// The parent of a concept: a column, or derived from the code by a regex.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParentSpec {
    /// Column holding the parent code.
    pub column: Option<String>,
    /// Regex over the code; when it matches, `replace` builds the parent code (`J45.9` → `J45`
    /// with `regex = '^(.+)\.[^.]+$'`, `replace = '$1'`).
    pub regex: Option<String>,
    /// Replacement (with `$1`… groups) for `regex`.
    pub replace: Option<String>,
}

/// Which concepts are abstract (`notSelectable`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotSelectableSpec {
    /// Column to read.
    pub column: String,
    /// Values that make the concept not selectable.
    #[serde(rename = "in")]
    pub one_of: Vec<String>,
}

/// A ValueSet the register offers, as FHIR `compose` rules.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValueSetSpec {
    /// Logical id (`/ValueSet/{id}`).
    pub id: String,
    /// Canonical URL.
    pub url: String,
    /// Computer-friendly name.
    pub name: Option<String>,
    /// Human title.
    pub title: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// FHIR `compose.inactive`: whether inactive codes are included (`false` leaves them out).
    pub inactive: Option<bool>,
    /// Include rules (unioned).
    #[serde(default)]
    pub include: Vec<ComposeRuleSpec>,
    /// Exclude rules.
    #[serde(default)]
    pub exclude: Vec<ComposeRuleSpec>,
}

/// One `compose.include`/`exclude`: this CodeSystem unless `system` says otherwise.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComposeRuleSpec {
    /// System; defaults to this mapping's CodeSystem.
    pub system: Option<String>,
    /// Listed codes.
    #[serde(default)]
    pub concepts: Vec<String>,
    /// Filters (all must match).
    #[serde(default, rename = "filter")]
    pub filters: Vec<ComposeFilterSpec>,
    /// Other ValueSets to import by canonical URL.
    #[serde(default)]
    pub value_sets: Vec<String>,
}

/// One compose filter.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComposeFilterSpec {
    /// Property (or `concept`/`code`).
    pub property: String,
    /// Operator, one of R4's (the ValueSet is served as R4): `=`, `is-a`, `descendent-of`,
    /// `is-not-a`, `regex`, `in`, `not-in`, `exists`, `generalizes`.
    pub op: String,
    /// Value.
    pub value: String,
}

fn default_true() -> bool {
    true
}
