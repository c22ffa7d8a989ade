//! A concept read in place: every field borrowed from the records file (or the decoded concept)
//! it comes from. Reading a record this way allocates nothing once the view's lists have grown,
//! so a comparison over millions of records (`$diff`) reuses two views instead of building two
//! [`Concept`]s a record. A patched record is rebuilt in the view itself, the patch applied to
//! its base's fields without copying them. [`ConceptView::to_concept`] gives the owned concept;
//! this is the one way records are decoded.

use std::borrow::Cow;

use super::concept::{Concept, Designation, DesignationUse, Value};

/// A property value, borrowed ([`Value`] owned).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueView<'a> {
    /// `valueCode`.
    Code(&'a str),
    /// `valueString`.
    String(&'a str),
    /// `valueInteger`.
    Integer(i64),
    /// `valueBoolean`.
    Boolean(bool),
    /// `valueDateTime`.
    DateTime(&'a str),
    /// `valueDecimal`, as its text.
    Decimal(&'a str),
    /// `valueCoding`.
    Coding {
        /// Coding system.
        system: &'a str,
        /// Coding code.
        code: &'a str,
        /// Coding display, if known.
        display: Option<&'a str>,
    },
}

impl<'a> ValueView<'a> {
    /// The view of an owned value.
    pub fn of(v: &'a Value) -> Self {
        match v {
            Value::Code(s) => Self::Code(s),
            Value::String(s) => Self::String(s),
            Value::Integer(i) => Self::Integer(*i),
            Value::Boolean(b) => Self::Boolean(*b),
            Value::DateTime(s) => Self::DateTime(s),
            Value::Decimal(s) => Self::Decimal(s),
            Value::Coding {
                system,
                code,
                display,
            } => Self::Coding {
                system,
                code,
                display: display.as_deref(),
            },
        }
    }

    /// The owned value.
    pub fn to_value(self) -> Value {
        match self {
            Self::Code(s) => Value::Code(s.into()),
            Self::String(s) => Value::String(s.into()),
            Self::Integer(i) => Value::Integer(i),
            Self::Boolean(b) => Value::Boolean(b),
            Self::DateTime(s) => Value::DateTime(s.into()),
            Self::Decimal(s) => Value::Decimal(s.into()),
            Self::Coding {
                system,
                code,
                display,
            } => Value::Coding {
                system: system.into(),
                code: code.into(),
                display: display.map(Into::into),
            },
        }
    }

    /// The value as text, as [`Value::as_text`] gives it.
    pub fn as_text(self) -> Cow<'a, str> {
        match self {
            Self::Code(s) | Self::String(s) | Self::DateTime(s) | Self::Decimal(s) => {
                Cow::Borrowed(s)
            }
            Self::Integer(i) => Cow::Owned(i.to_string()),
            Self::Boolean(b) => Cow::Borrowed(if b { "true" } else { "false" }),
            Self::Coding { code, .. } => Cow::Borrowed(code),
        }
    }
}

/// The `use` Coding of a designation, borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DesignationUseView<'a> {
    /// Coding system.
    pub system: &'a str,
    /// Coding code.
    pub code: &'a str,
    /// Coding display.
    pub display: Option<&'a str>,
}

/// One designation, borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DesignationView<'a> {
    /// BCP-47 language.
    pub language: Option<&'a str>,
    /// `use`.
    pub use_: Option<DesignationUseView<'a>>,
    /// The text.
    pub value: &'a str,
    /// The designation's extensions as a JSON array ([`Designation::extensions`]).
    pub extensions: Option<&'a str>,
}

impl<'a> DesignationView<'a> {
    /// The view of an owned designation.
    pub fn of(d: &'a Designation) -> Self {
        Self {
            language: d.language.as_deref(),
            use_: d.use_.as_ref().map(|u| DesignationUseView {
                system: &u.system,
                code: &u.code,
                display: u.display.as_deref(),
            }),
            value: &d.value,
            extensions: d.extensions.as_deref(),
        }
    }

    /// The owned designation.
    pub fn to_designation(self) -> Designation {
        Designation {
            language: self.language.map(Into::into),
            use_: self.use_.map(|u| DesignationUse {
                system: u.system.into(),
                code: u.code.into(),
                display: u.display.map(Into::into),
            }),
            value: self.value.into(),
            extensions: self.extensions.map(Into::into),
        }
    }
}

/// A concept's fields, borrowed (the fields of [`Concept`], in the same meaning). Reused from
/// record to record: filling it again keeps the lists' capacity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConceptView<'a> {
    /// The code.
    pub code: &'a str,
    /// The preferred display.
    pub display: Option<&'a str>,
    /// The definition.
    pub definition: Option<&'a str>,
    /// Other designations.
    pub designations: Vec<DesignationView<'a>>,
    /// Properties as (property code, value), in the record's order.
    pub properties: Vec<(&'a str, ValueView<'a>)>,
    /// The `status` property value.
    pub status: Option<&'a str>,
    /// Whether the concept is inactive.
    pub inactive: bool,
    /// Whether the concept is abstract.
    pub not_selectable: bool,
    /// Parent codes.
    pub parents: Vec<&'a str>,
    /// Business validity start.
    pub valid_from: Option<&'a str>,
    /// Business validity end.
    pub valid_to: Option<&'a str>,
}

impl<'a> ConceptView<'a> {
    /// Empties the view down to a code and display (the lists keep their capacity).
    pub fn reset(&mut self, code: &'a str, display: Option<&'a str>) {
        self.code = code;
        self.display = display;
        self.definition = None;
        self.designations.clear();
        self.properties.clear();
        self.status = None;
        self.inactive = false;
        self.not_selectable = false;
        self.parents.clear();
        self.valid_from = None;
        self.valid_to = None;
    }

    /// Makes the view a copy of `other` (the lists keep their capacity: nothing is allocated
    /// once they have grown).
    pub fn copy_from(&mut self, other: &Self) {
        self.reset(other.code, other.display);
        self.definition = other.definition;
        self.designations.extend_from_slice(&other.designations);
        self.properties.extend_from_slice(&other.properties);
        self.status = other.status;
        self.inactive = other.inactive;
        self.not_selectable = other.not_selectable;
        self.parents.extend_from_slice(&other.parents);
        self.valid_from = other.valid_from;
        self.valid_to = other.valid_to;
    }

    /// Fills the view with an owned concept's fields.
    pub fn set(&mut self, c: &'a Concept) {
        self.reset(&c.code, c.display.as_deref());
        self.definition = c.definition.as_deref();
        self.designations
            .extend(c.designations.iter().map(DesignationView::of));
        self.properties
            .extend(c.properties.iter().map(|(k, v)| (&**k, ValueView::of(v))));
        self.status = c.status.as_deref();
        self.inactive = c.inactive;
        self.not_selectable = c.not_selectable;
        self.parents.extend(c.parents.iter().map(|p| &**p));
        self.valid_from = c.valid_from.as_deref();
        self.valid_to = c.valid_to.as_deref();
    }

    /// The view of an owned concept.
    pub fn of(c: &'a Concept) -> Self {
        let mut v = Self::default();
        v.set(c);
        v
    }

    /// The owned concept.
    pub fn to_concept(&self) -> Concept {
        Concept {
            code: self.code.into(),
            display: self.display.map(Into::into),
            definition: self.definition.map(Into::into),
            designations: self
                .designations
                .iter()
                .map(|d| d.to_designation())
                .collect(),
            properties: self
                .properties
                .iter()
                .map(|&(k, v)| (k.into(), v.to_value()))
                .collect(),
            status: self.status.map(Into::into),
            inactive: self.inactive,
            not_selectable: self.not_selectable,
            parents: self.parents.iter().map(|&p| p.into()).collect(),
            valid_from: self.valid_from.map(Into::into),
            valid_to: self.valid_to.map(Into::into),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_view_gives_back_the_concept_it_was_made_from() {
        let mut c = Concept::new("A81001");
        c.display = Some("THE DENSHAM SURGERY".into());
        c.definition = Some("défini".into());
        c.status = Some("active".into());
        c.inactive = true;
        c.not_selectable = true;
        c.parents = vec!["A8".into(), "A".into()];
        c.valid_from = Some("1974-04-01".into());
        c.valid_to = Some("2019".into());
        c.designations.push(Designation {
            language: Some("cy".into()),
            use_: Some(DesignationUse {
                system: "http://snomed.info/sct".into(),
                code: "900000000000013009".into(),
                display: Some("Synonym".into()),
            }),
            value: "Meddygfa".into(),
            extensions: Some(r#"[{"url":"http://example.org/x","valueId":"1"}]"#.into()),
        });
        c.properties = vec![
            ("role".into(), Value::Code("RO76".into())),
            ("town".into(), Value::String("STOCKTON".into())),
            ("eastings".into(), Value::Integer(-451_234)),
            ("open".into(), Value::Boolean(true)),
            ("when".into(), Value::DateTime("2020-01".into())),
            ("ratio".into(), Value::Decimal("0.50".into())),
            (
                "kind".into(),
                Value::Coding {
                    system: "https://x/roles".into(),
                    code: "RO76".into(),
                    display: None,
                },
            ),
        ];
        assert_eq!(ConceptView::of(&c).to_concept(), c);
        for (_, v) in &c.properties {
            assert_eq!(ValueView::of(v).as_text(), v.as_text());
        }
        // Filled again, a view holds only the new concept's fields.
        let other = Concept::new("B1");
        let mut view = ConceptView::of(&c);
        view.set(&other);
        assert_eq!(view, ConceptView::of(&other));
        view.copy_from(&ConceptView::of(&c));
        assert_eq!(view, ConceptView::of(&c));
    }
}
