//! The stored shape of a concept: its designations and typed property values.
//!
//! These types are what gets persisted and what the terminology layer reads. They hold no
//! indexes (see [`super::index`]) and depend on no other part of the store.

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
    /// The designation's own extensions as a JSON array (a CodeSystem resource's
    /// `designation.extension`: `coding-sctdescid`, `structuredefinition-standards-status`, …),
    /// copied into expansions; `None` when it has none (mapped registers never have any).
    pub extensions: Option<Box<str>>,
}

/// The extension URL that gives an element its status (`deprecated`, `withdrawn`, …).
pub const STANDARDS_STATUS: &str =
    "http://hl7.org/fhir/StructureDefinition/structuredefinition-standards-status";

impl Designation {
    /// The designation's status from its `structuredefinition-standards-status` extension.
    pub fn status(&self) -> Option<String> {
        let list: serde_json::Value = serde_json::from_str(self.extensions.as_deref()?).ok()?;
        list.as_array()?
            .iter()
            .find(|x| x.get("url").and_then(|u| u.as_str()) == Some(STANDARDS_STATUS))?
            .get("valueCode")?
            .as_str()
            .map(str::to_string)
    }

    /// Whether the designation is no longer a correct display: its status says it is
    /// withdrawn, deprecated or retired.
    pub fn is_retired(&self) -> bool {
        self.status().is_some_and(|s| {
            ["withdrawn", "deprecated", "retired", "inactive"]
                .iter()
                .any(|r| s.eq_ignore_ascii_case(r))
        })
    }
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

    /// Whether the register's business dates cover `day` (`YYYY-MM-DD`): not before
    /// [`valid_from`](Self::valid_from) and not after [`valid_to`](Self::valid_to) (both
    /// inclusive; a month or year stands for its first day). A concept without dates is always
    /// valid.
    pub fn valid_on(&self, day: &str) -> bool {
        let norm = |d: &str| super::date_param(d).unwrap_or_else(|| d.to_string());
        self.valid_from
            .as_deref()
            .is_none_or(|f| day >= norm(f).as_str())
            && self
                .valid_to
                .as_deref()
                .is_none_or(|t| day <= norm(t).as_str())
    }
}
