//! The stored shape of a concept and of one imported release of one register feed.
//!
//! These types are what gets persisted (postcard) and what the terminology layer reads. They hold
//! no indexes: see [`super::index`] for those.

use serde::{Deserialize, Serialize};

/// A property value, typed as FHIR types it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Value {
    /// `valueCode`.
    Code(Box<str>),
    /// `valueString`.
    String(Box<str>),
    /// `valueInteger`.
    Integer(i64),
    /// `valueBoolean`.
    Boolean(bool),
    /// `valueDateTime` (`YYYY`, `YYYY-MM` or `YYYY-MM-DD`).
    DateTime(Box<str>),
    /// `valueDecimal`, kept as its text.
    Decimal(Box<str>),
    /// `valueCoding`.
    Coding {
        /// Coding system.
        system: Box<str>,
        /// Coding code.
        code: Box<str>,
        /// Coding display, if known.
        display: Option<Box<str>>,
    },
}

impl Value {
    /// The value as text, as filters compare it (a Coding compares by its code).
    pub fn as_text(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Self::Code(s) | Self::String(s) | Self::DateTime(s) | Self::Decimal(s) => {
                std::borrow::Cow::Borrowed(s)
            }
            Self::Integer(i) => std::borrow::Cow::Owned(i.to_string()),
            Self::Boolean(b) => std::borrow::Cow::Borrowed(if *b { "true" } else { "false" }),
            Self::Coding { code, .. } => std::borrow::Cow::Borrowed(code),
        }
    }
}

/// The `use` Coding of a designation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DesignationUse {
    /// Coding system.
    pub system: Box<str>,
    /// Coding code.
    pub code: Box<str>,
    /// Coding display.
    pub display: Option<Box<str>>,
}

/// One designation of a concept.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Designation {
    /// BCP-47 language.
    pub language: Option<Box<str>>,
    /// `use`.
    pub use_: Option<DesignationUse>,
    /// The text.
    pub value: Box<str>,
}

/// One concept as a release holds it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Concept {
    /// The code.
    pub code: Box<str>,
    /// The preferred display.
    pub display: Option<Box<str>>,
    /// The definition.
    pub definition: Option<Box<str>>,
    /// Other designations.
    pub designations: Vec<Designation>,
    /// Properties as (property code, value); several values per code allowed.
    pub properties: Vec<(Box<str>, Value)>,
    /// The `status` property value (e.g. `active`, `inactive`, `dormant`, `retired`).
    pub status: Option<Box<str>>,
    /// Whether the concept is inactive.
    pub inactive: bool,
    /// Whether the concept is abstract (`notSelectable`).
    pub not_selectable: bool,
    /// Parent codes in the same CodeSystem.
    pub parents: Vec<Box<str>>,
    /// Business validity: the date (`YYYY-MM-DD`, or shorter) the thing the code stands for came
    /// into being (an organisation's open date, a postcode's introduction), if the register says.
    pub valid_from: Option<Box<str>>,
    /// Business validity: the date it ended (close date, termination), if it has.
    pub valid_to: Option<Box<str>>,
}

impl Concept {
    /// A concept with only a code.
    pub fn new(code: impl Into<Box<str>>) -> Self {
        Self {
            code: code.into(),
            display: None,
            definition: None,
            designations: Vec::new(),
            properties: Vec::new(),
            status: None,
            inactive: false,
            not_selectable: false,
            parents: Vec::new(),
            valid_from: None,
            valid_to: None,
        }
    }

    /// Values of one property.
    pub fn property<'a>(&'a self, code: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.properties
            .iter()
            .filter(move |(c, _)| &**c == code)
            .map(|(_, v)| v)
    }
}

/// Where a release came from: kept with it and shown in CodeSystem metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseInfo {
    /// Feed id (the mapping's `register.feed` or `register.id`, or `resource:{id}` for plain FHIR
    /// resources).
    pub feed: String,
    /// The mapping (`register.id`) that read the file: a feed may change layout over time and be
    /// read by another mapping from then on.
    pub mapping: String,
    /// Release version (usually `YYYY-MM-DD`).
    pub version: String,
    /// File name or URL imported.
    pub source: String,
    /// Rows read, rows kept.
    pub rows_read: u64,
    /// Concepts stored.
    pub concepts: u64,
    /// Hash of the mapping text the release was compiled with.
    pub mapping_hash: String,
    /// Hash of the source bytes.
    pub source_hash: String,
    /// When the import ran (RFC 3339).
    pub imported_at: String,
}

/// One imported release of one feed: concepts sorted by code.
#[derive(Debug, Clone)]
pub struct Release {
    /// Provenance.
    pub info: ReleaseInfo,
    /// Concepts, sorted by code, codes unique, held encoded.
    pub concepts: super::list::ConceptList,
}
