//! The pre-pass every XML document goes through before fhirbolt sees it.
//!
//! fhirbolt 0.4 parses XML recursively with `quick-xml` 0.25, which makes three kinds of input
//! dangerous: deep nesting overflows the parsing thread's stack (about 1,400 levels abort the
//! process), a start tag with many attributes costs time quadratic in their number
//! (RUSTSEC-2026-0194: 80,000 attributes, under 1 MB, take seconds of CPU), and namespace
//! declarations are stored without bound (RUSTSEC-2026-0195). [`check`] reads the document once,
//! streaming and without recursion, with a current `quick-xml` (whose duplicate-attribute check is
//! linear and whose reader stores no namespaces), and refuses it at the first limit it passes, so
//! fhirbolt only ever sees small, shallow, well-formed documents.
//!
//! The limits are constants: they bound parser pathologies, not what a deployment wants to serve
//! (the body size limit does that), and every FHIR document a client has reason to send stays far
//! inside them. What this module does not do is decide whether the document is FHIR: fhirbolt does.

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

/// Deepest element nesting accepted; the root element is level 1.
///
/// An XML element becomes at most two levels of JSON (an array and an object), so a document
/// within this limit always fits serde_json's nesting limit of 128 once converted, and the JSON
/// and XML forms of a request are refused at about the same depth. A `Parameters` resource may
/// nest `part` 61 deep in XML (62 in JSON), far beyond the few levels any operation uses.
pub const MAX_DEPTH: usize = 64;

/// Most attributes on one element.
///
/// FHIR elements carry at most `value`, `id`, `url` and namespace declarations; XHTML narrative
/// elements a handful more. The bound makes fhirbolt's quadratic duplicate-attribute check
/// (RUSTSEC-2026-0194) cost at most a few hundred comparisons per element.
pub const MAX_ATTRIBUTES_PER_ELEMENT: usize = 32;

/// Most namespace declarations (`xmlns`, `xmlns:p`) in scope at any point: those on the current
/// element and on all its ancestors.
///
/// FHIR XML needs two (the FHIR namespace, and XHTML in narrative). The bound caps what fhirbolt's
/// `quick-xml` 0.25 namespace resolver stores and scans per name (RUSTSEC-2026-0195).
pub const MAX_NAMESPACE_DECLARATIONS: usize = 16;

/// Most elements in one document.
///
/// A 32 MiB body of real FHIR XML holds about half a million elements (some 60 bytes each); this
/// bound stops a body of tiny empty elements from costing fhirbolt far more memory than its size.
pub const MAX_ELEMENTS: usize = 1_000_000;

/// Why a document was refused, and at which byte of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// What was wrong.
    pub reason: Reason,
    /// The byte offset in the document where it was found.
    pub at: u64,
}

/// The limit a document passed, or why it is not XML this server reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// Elements nest deeper than [`MAX_DEPTH`].
    TooDeep,
    /// An element has more than [`MAX_ATTRIBUTES_PER_ELEMENT`] attributes.
    TooManyAttributes,
    /// More than [`MAX_NAMESPACE_DECLARATIONS`] namespace declarations are in scope.
    TooManyNamespaceDeclarations,
    /// The document has more than [`MAX_ELEMENTS`] elements.
    TooManyElements,
    /// The document has a `<!DOCTYPE …>` (FHIR forbids DTDs; they are not read).
    Doctype,
    /// The document is not well-formed XML (the parser's message).
    Malformed(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.reason {
            Reason::TooDeep => write!(f, "elements nest more than {MAX_DEPTH} deep"),
            Reason::TooManyAttributes => write!(
                f,
                "an element has more than {MAX_ATTRIBUTES_PER_ELEMENT} attributes"
            ),
            Reason::TooManyNamespaceDeclarations => write!(
                f,
                "more than {MAX_NAMESPACE_DECLARATIONS} namespace declarations are in scope"
            ),
            Reason::TooManyElements => {
                write!(f, "the document has more than {MAX_ELEMENTS} elements")
            }
            Reason::Doctype => f.write_str("a DOCTYPE declaration is not allowed in FHIR XML"),
            Reason::Malformed(cause) => write!(f, "not well-formed XML: {cause}"),
        }?;
        write!(f, " (at byte {})", self.at)
    }
}

impl std::error::Error for Refusal {}

/// Reads `xml` once and refuses it at the first limit it passes, or if it is not well-formed;
/// otherwise gives the depth of its deepest element (the root is 1).
pub fn check(xml: &str) -> Result<usize, Refusal> {
    let mut reader = Reader::from_str(xml);
    let mut scope = Scope::default();
    let mut deepest = 0;
    loop {
        let at = reader.buffer_position();
        let event = reader.read_event().map_err(|e| Refusal {
            reason: Reason::Malformed(e.to_string()),
            at: reader.error_position(),
        })?;
        let is_empty = matches!(event, Event::Empty(_));
        let step = match event {
            Event::Start(start) => scope.enter(&start, true),
            Event::Empty(start) => scope.enter(&start, false),
            Event::End(_) => {
                scope.leave();
                Ok(())
            }
            Event::DocType(_) => Err(Reason::Doctype),
            // The reader checks that end tags match, but not that every element was closed.
            Event::Eof if scope.open.is_empty() => return Ok(deepest),
            Event::Eof => Err(Reason::Malformed(format!(
                "the document ends inside {} open elements",
                scope.open.len()
            ))),
            Event::Text(_)
            | Event::CData(_)
            | Event::Comment(_)
            | Event::Decl(_)
            | Event::PI(_)
            | Event::GeneralRef(_) => Ok(()),
        };
        step.map_err(|reason| Refusal { reason, at })?;
        // An empty element is one deeper than the open ones.
        deepest = deepest.max(scope.open.len() + usize::from(is_empty));
    }
}

/// The open elements, with what they declared, and the counts the limits apply to.
#[derive(Default)]
struct Scope {
    /// How many namespaces each open element declared, outermost first.
    open: Vec<usize>,
    /// Namespace declarations in scope (the sum of `open`).
    declarations: usize,
    /// Elements seen so far.
    elements: usize,
}

impl Scope {
    /// A start tag: an element that stays open until its end tag, or an empty one.
    fn enter(&mut self, start: &BytesStart<'_>, stays_open: bool) -> Result<(), Reason> {
        if self.open.len() >= MAX_DEPTH {
            return Err(Reason::TooDeep);
        }
        self.elements += 1;
        if self.elements > MAX_ELEMENTS {
            return Err(Reason::TooManyElements);
        }
        let declared = declarations(start)?;
        if self.declarations + declared > MAX_NAMESPACE_DECLARATIONS {
            return Err(Reason::TooManyNamespaceDeclarations);
        }
        if stays_open {
            self.declarations += declared;
            self.open.push(declared);
        }
        Ok(())
    }

    /// An end tag (the reader has checked that it matches the innermost open element).
    fn leave(&mut self) {
        self.declarations -= self.open.pop().unwrap_or(0);
    }
}

/// How many namespaces a start tag declares; refuses too many attributes or a repeated one.
fn declarations(start: &BytesStart<'_>) -> Result<usize, Reason> {
    let mut declared = 0;
    // With checks on (the default) a repeated attribute name is an error, found in linear time by
    // quick-xml >= 0.41; the count ends the loop long before that matters anyway.
    for (n, attribute) in start.attributes().enumerate() {
        if n >= MAX_ATTRIBUTES_PER_ELEMENT {
            return Err(Reason::TooManyAttributes);
        }
        let attribute = attribute.map_err(|e| Reason::Malformed(e.to_string()))?;
        if attribute.key.as_namespace_binding().is_some() {
            declared += 1;
        }
    }
    Ok(declared)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FHIR: &str = r#"xmlns="http://hl7.org/fhir""#;

    fn reason(xml: &str) -> Option<Reason> {
        check(xml).err().map(|r| r.reason)
    }

    /// `Parameters` with `part` nested so that the deepest element is at `depth`.
    fn nested_parts(depth: usize) -> String {
        // Parameters (1) > parameter (2) > part (3..) > name (the deepest).
        let parts = depth - 3;
        let mut xml = format!("<Parameters {FHIR}><parameter><name value=\"p\"/>");
        xml.push_str(&"<part><name value=\"p\"/>".repeat(parts - 1));
        xml.push_str("<part><name value=\"leaf\"/><valueString value=\"x\"/></part>");
        xml.push_str(&"</part>".repeat(parts - 1));
        xml.push_str("</parameter></Parameters>");
        xml
    }

    #[test]
    fn ordinary_fhir_xml_passes() {
        let xml = format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<!-- a comment -->
<CodeSystem {FHIR}>
  <id value="x"/>
  <text><status value="generated"/><div xmlns="http://www.w3.org/1999/xhtml"><p class="a" style="b">Hi &amp; <b>bye</b></p></div></text>
  <concept><code value="A"/><concept><code value="A1"/></concept></concept>
</CodeSystem>"#
        );
        assert!(check(&xml).is_ok());
    }

    #[test]
    fn depth_is_refused_one_past_the_limit() {
        assert_eq!(check(&nested_parts(MAX_DEPTH)), Ok(MAX_DEPTH));
        assert_eq!(check(&nested_parts(5)), Ok(5));
        let refused = check(&nested_parts(MAX_DEPTH + 1)).expect_err("too deep");
        assert_eq!(refused.reason, Reason::TooDeep);
        assert!(
            refused.to_string().contains("more than 64 deep"),
            "{refused}"
        );
        // The flood from the issue, refused at its 65th start tag.
        let flood = format!("<Parameters {FHIR}>{}", "<a>".repeat(100_000));
        assert_eq!(reason(&flood), Some(Reason::TooDeep));
    }

    #[test]
    fn attributes_are_bounded_and_duplicates_refused() {
        let tag = |n: usize| {
            let attrs: String = (0..n).map(|i| format!(" a{i}=\"\"")).collect();
            format!("<Parameters {FHIR}><parameter{attrs}/></Parameters>")
        };
        assert!(check(&tag(MAX_ATTRIBUTES_PER_ELEMENT)).is_ok());
        assert_eq!(
            reason(&tag(MAX_ATTRIBUTES_PER_ELEMENT + 1)),
            Some(Reason::TooManyAttributes)
        );
        // The advisory's case: 80,000 distinct attributes on one tag, refused after 33.
        let started = std::time::Instant::now();
        assert_eq!(reason(&tag(80_000)), Some(Reason::TooManyAttributes));
        assert!(started.elapsed().as_secs() < 2, "{:?}", started.elapsed());
        assert!(matches!(
            reason(&format!("<Parameters {FHIR} id=\"a\" id=\"b\"/>")),
            Some(Reason::Malformed(_))
        ));
    }

    #[test]
    fn namespace_declarations_in_scope_are_bounded() {
        let on_one_tag = |n: usize| {
            let decls: String = (0..n).map(|i| format!(" xmlns:p{i}=\"urn:{i}\"")).collect();
            format!("<Parameters {FHIR}{decls}/>")
        };
        // The FHIR default namespace counts too.
        assert!(check(&on_one_tag(MAX_NAMESPACE_DECLARATIONS - 1)).is_ok());
        assert_eq!(
            reason(&on_one_tag(MAX_NAMESPACE_DECLARATIONS)),
            Some(Reason::TooManyNamespaceDeclarations)
        );
        // One per level: in scope they add up ...
        let nested = |n: usize| {
            let mut xml = format!("<Parameters {FHIR}>");
            for i in 0..n {
                xml.push_str(&format!("<parameter xmlns:p{i}=\"urn:{i}\">"));
            }
            xml.push_str(&"</parameter>".repeat(n));
            xml + "</Parameters>"
        };
        assert_eq!(
            reason(&nested(MAX_NAMESPACE_DECLARATIONS)),
            Some(Reason::TooManyNamespaceDeclarations)
        );
        // ... and go out of scope with their element: siblings each declaring one are fine.
        let siblings = format!(
            "<Bundle {FHIR}>{}</Bundle>",
            "<entry><resource><Parameters xmlns=\"http://hl7.org/fhir\"/></resource></entry>"
                .repeat(100)
        );
        assert!(check(&siblings).is_ok());
    }

    #[test]
    fn element_count_is_bounded() {
        let many = |n: usize| format!("<Parameters {FHIR}>{}</Parameters>", "<a/>".repeat(n - 1));
        assert!(check(&many(MAX_ELEMENTS)).is_ok());
        assert_eq!(
            reason(&many(MAX_ELEMENTS + 1)),
            Some(Reason::TooManyElements)
        );
    }

    #[test]
    fn doctype_and_malformed_xml_are_refused() {
        let doctype = format!(
            "<?xml version=\"1.0\"?><!DOCTYPE Parameters [<!ENTITY x \"y\">]><Parameters {FHIR}/>"
        );
        let refused = check(&doctype).expect_err("doctype");
        assert_eq!(refused.reason, Reason::Doctype);
        assert!(refused.to_string().contains("DOCTYPE"), "{refused}");
        for bad in [
            format!("<Parameters {FHIR}><parameter></Parameters>"),
            format!("<Parameters {FHIR}><parameter>"),
            format!("<Parameters {FHIR}></parameter></Parameters>"),
        ] {
            assert!(matches!(reason(&bad), Some(Reason::Malformed(_))), "{bad}");
        }
    }
}
