//! FHIR R4 JSON ⇄ XML conversion and strict resource validation, behind plain non-generic functions.
//!
//! This crate is the only place where `fhirbolt` is compiled: its generic serde code is expensive to
//! monomorphise, so keeping it here means a change in the server does not rebuild it. Parsing always
//! runs in `Strict` mode — fhirbolt's lenient XML modes can loop forever on unknown elements, which
//! would be a denial of service on untrusted input.
//!
//! XML is parsed only after [`guard::check`] has read it once with a current `quick-xml` and
//! found it within limits: fhirbolt's own parser (`quick-xml` 0.25) recurses per element and has
//! two denial-of-service advisories, so it never sees a document the guard has not passed.
//!
//! fhirbolt's (de)serialisers recurse once per nested element with large frames (its value[x]
//! choices and the resource enum are big): about 40 KiB of stack per nested `part`, so 2.5 to
//! 3 MiB for the deepest documents the guard passes (64 elements) or serde_json reads (127
//! levels), more than a tokio worker's 2 MiB. A deep document is therefore converted on a thread
//! of its own with [`CONVERSION_STACK`] bytes of stack, whatever thread calls it; the shallow ones
//! every real request and answer are (under a dozen levels) stay on the caller's thread.
//!
//! Hot paths in the server never come here: they use lean serde types. This crate serves XML
//! rendering/parsing and whole-resource validation.

pub mod guard;

use fhirbolt::model::r4::Resource;
use fhirbolt::serde::{DeserializationConfig, DeserializationMode};

/// Why a conversion failed: the message from the parser, meant for an OperationOutcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversionError(pub String);

impl std::fmt::Display for ConversionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConversionError {}

/// Why an XML document could not be read as a FHIR resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XmlError {
    /// The guard refused it before it was parsed: a limit, a DOCTYPE, or not well-formed XML.
    Refused(guard::Refusal),
    /// It is XML within the limits, but not a valid FHIR R4 resource (fhirbolt's message).
    NotFhir(ConversionError),
}

impl std::fmt::Display for XmlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Refused(r) => r.fmt(f),
            Self::NotFhir(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for XmlError {}

fn strict() -> Option<DeserializationConfig> {
    Some(DeserializationConfig {
        mode: DeserializationMode::Strict,
    })
}

/// Stack of the thread each conversion runs on: ten times what the deepest accepted documents
/// were measured to need (see the crate docs). It is reserved, not touched: a shallow document
/// uses a few pages of it.
pub const CONVERSION_STACK: usize = 32 * 1024 * 1024;

/// XML documents at most this deep are converted on the caller's thread (about half a MiB of
/// stack); deeper ones on a thread of their own, which costs 0.1 ms or more to start.
const INLINE_XML_DEPTH: usize = 12;

/// The same for JSON, whose levels are about half as deep as XML's (an array and an object for
/// each repeated element).
const INLINE_JSON_DEPTH: usize = 24;

/// Runs `convert` here when the document is `depth <= inline` deep, otherwise on a thread with
/// [`CONVERSION_STACK`] bytes of stack, and waits for it.
fn on_conversion_thread<T: Send>(
    depth: usize,
    inline: usize,
    convert: impl FnOnce() -> Result<T, ConversionError> + Send,
) -> Result<T, ConversionError> {
    if depth <= inline {
        return convert();
    }
    std::thread::scope(|scope| {
        let thread = std::thread::Builder::new()
            .name("fhir-xml".into())
            .stack_size(CONVERSION_STACK)
            .spawn_scoped(scope, convert)
            .map_err(|e| ConversionError(format!("cannot start a conversion thread: {e}")))?;
        thread
            .join()
            .unwrap_or_else(|_| Err(ConversionError("the FHIR converter panicked".into())))
    })
}

/// How deep JSON text nests (objects and arrays; the outermost is 1), in one pass over its bytes.
fn json_depth(json: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for b in json.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
        } else {
            match b {
                b'"' => in_string = true,
                b'{' | b'[' => {
                    depth += 1;
                    deepest = deepest.max(depth);
                }
                b'}' | b']' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
    }
    deepest
}

/// Runs fhirbolt, turning a panic inside it into an error: fhirbolt 0.4 panics on some inputs
/// (an empty JSON array, for one), and this crate promises errors, never panics.
fn guarded<T>(parse: impl FnOnce() -> Result<T, ConversionError>) -> Result<T, ConversionError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(parse)).unwrap_or_else(|_| {
        Err(ConversionError(
            "the FHIR parser failed on this input (fhirbolt panicked)".into(),
        ))
    })
}

fn json_value(json: &str) -> Result<serde_json::Value, ConversionError> {
    serde_json::from_str(json).map_err(|e| ConversionError(format!("not JSON: {e}")))
}

fn parse_value(value: serde_json::Value) -> Result<Resource, ConversionError> {
    guarded(|| {
        fhirbolt::json::from_json_value::<Resource>(value, strict())
            .map_err(|e| ConversionError(e.to_string()))
    })
}

/// Where the first empty array is (R4 JSON allows none: an element absent is left out).
fn empty_array(value: &serde_json::Value, at: &str) -> Option<String> {
    match value {
        serde_json::Value::Array(a) if a.is_empty() => Some(at.to_string()),
        serde_json::Value::Array(a) => a
            .iter()
            .enumerate()
            .find_map(|(i, v)| empty_array(v, &format!("{at}[{i}]"))),
        serde_json::Value::Object(o) => o
            .iter()
            .find_map(|(k, v)| empty_array(v, &format!("{at}.{k}"))),
        _ => None,
    }
}

/// Removes empty arrays, which R4 XML has no way to write.
fn drop_empty_arrays(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Array(a) => a.iter_mut().for_each(drop_empty_arrays),
        serde_json::Value::Object(o) => {
            o.retain(|_, v| !matches!(v, serde_json::Value::Array(a) if a.is_empty()));
            o.values_mut().for_each(drop_empty_arrays);
        }
        _ => {}
    }
}

/// Renders a FHIR R4 resource given as JSON into FHIR XML. Empty JSON arrays are left out (XML
/// cannot write them).
pub fn json_to_xml(json: &str) -> Result<String, ConversionError> {
    on_conversion_thread(json_depth(json), INLINE_JSON_DEPTH, || {
        let mut value = json_value(json)?;
        drop_empty_arrays(&mut value);
        let resource = parse_value(value)?;
        guarded(|| {
            fhirbolt::xml::to_string(&resource, None).map_err(|e| ConversionError(e.to_string()))
        })
    })
}

/// Parses a FHIR R4 resource in XML and renders it as JSON, once [`guard::check`] has passed it.
///
/// The JSON nests at most twice as deep as the XML (an element becomes an array and an object), so
/// it is within serde_json's limit of 128 levels.
pub fn xml_to_json(xml: &str) -> Result<String, XmlError> {
    let depth = guard::check(xml).map_err(XmlError::Refused)?;
    on_conversion_thread(depth, INLINE_XML_DEPTH, || {
        let resource: Resource = guarded(|| {
            fhirbolt::xml::from_str(xml, strict()).map_err(|e| ConversionError(e.to_string()))
        })?;
        guarded(|| {
            fhirbolt::json::to_string(&resource, None).map_err(|e| ConversionError(e.to_string()))
        })
    })
    .map_err(XmlError::NotFhir)
}

/// Checks that JSON text is a structurally valid FHIR R4 resource (element names, types, choices,
/// no empty arrays).
pub fn validate_json(json: &str) -> Result<(), ConversionError> {
    on_conversion_thread(json_depth(json), INLINE_JSON_DEPTH, || {
        let value = json_value(json)?;
        if let Some(at) = empty_array(&value, "") {
            return Err(ConversionError(format!(
                "{at}: an empty array (R4 JSON leaves an absent element out)"
            )));
        }
        parse_value(value).map(|_| ())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_round_trip_through_xml() {
        let json = r#"{"resourceType":"Parameters","parameter":[{"name":"result","valueBoolean":true},{"name":"display","valueString":"Asthma, unspecified"}]}"#;
        let xml = json_to_xml(json).expect("renders");
        assert!(
            xml.contains("<Parameters xmlns=\"http://hl7.org/fhir\">"),
            "{xml}"
        );
        assert!(xml.contains("<valueBoolean value=\"true\"/>"), "{xml}");
        let back = xml_to_json(&xml).expect("parses");
        let a: serde_json::Value = serde_json::from_str(json).expect("json");
        let b: serde_json::Value = serde_json::from_str(&back).expect("json");
        assert_eq!(a, b);
    }

    #[test]
    fn unknown_elements_are_rejected_not_looped_on() {
        let err = xml_to_json(
            r#"<Parameters xmlns="http://hl7.org/fhir"><bogus value="1"/></Parameters>"#,
        )
        .expect_err("strict mode rejects");
        assert!(matches!(err, XmlError::NotFhir(ConversionError(m)) if !m.is_empty()));
        assert!(validate_json(r#"{"resourceType":"CodeSystem","status":"active","content":"complete","nonsense":1}"#).is_err());
    }

    /// fhirbolt 0.4 panics (`Option::unwrap` on `None`) on an empty JSON array.
    #[test]
    fn empty_arrays_are_errors_or_left_out_never_panics() {
        let json = r#"{"resourceType":"ValueSet","status":"draft","name":[],"compose":{"include":[{"system":"http://example.org","concept":[]}]}}"#;
        let err = validate_json(json).expect_err("empty arrays are not R4");
        assert!(err.0.contains("empty array"), "{err}");
        let xml = json_to_xml(json).expect("renders without the empty arrays");
        assert!(
            xml.contains("<system value=\"http://example.org\"/>"),
            "{xml}"
        );
        assert!(!xml.contains("<concept") && !xml.contains("<name"), "{xml}");
    }
}

#[cfg(test)]
mod depth_tests {
    use super::*;

    /// A stack far smaller than a tokio worker's 2 MiB, which the deepest documents overflow when
    /// fhirbolt runs on the caller's thread: conversions must not depend on it.
    const SMALL_STACK: usize = 256 * 1024;

    /// Runs `f` on a thread with `stack` bytes of stack (a stack overflow aborts the test binary).
    fn on_stack<T: Send + 'static>(stack: usize, f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::Builder::new()
            .stack_size(stack)
            .spawn(f)
            .expect("thread")
            .join()
            .expect("no panic")
    }

    /// XML `Parameters` whose parameter holds `parts` nested `part`s, each with a name, the
    /// innermost with a value: the deepest element is at `parts + 3`.
    fn nested_parts_xml(parts: usize) -> String {
        let mut xml =
            String::from(r#"<Parameters xmlns="http://hl7.org/fhir"><parameter><name value="p"/>"#);
        for _ in 1..parts {
            xml.push_str(r#"<part><name value="p"/>"#);
        }
        xml.push_str(r#"<part><name value="leaf"/><valueString value="x"/></part>"#);
        xml.push_str(&"</part>".repeat(parts - 1));
        xml + "</parameter></Parameters>"
    }

    /// JSON `Parameters` with `levels` nested extensions on a parameter: two JSON levels each.
    fn nested_extensions_json(levels: usize) -> String {
        let mut json = String::from(r#"{"resourceType":"Parameters","parameter":[{"name":"p","#);
        for _ in 0..levels {
            json.push_str(r#""extension":[{"url":"u","#);
        }
        json.push_str(r#""valueString":"x""#);
        json.push_str(&"}]".repeat(levels));
        json + r#","valueString":"x"}]}"#
    }

    #[test]
    fn the_deepest_xml_the_guard_passes_converts_whatever_the_callers_stack() {
        let deepest = nested_parts_xml(guard::MAX_DEPTH - 3);
        let json = on_stack(SMALL_STACK, move || xml_to_json(&deepest)).expect("converts");
        // Its JSON form is within serde_json's nesting limit (and the parts are all there).
        let value: serde_json::Value = serde_json::from_str(&json).expect("parses as JSON");
        let mut part = &value["parameter"][0];
        for _ in 0..guard::MAX_DEPTH - 3 {
            part = &part["part"][0];
        }
        assert_eq!(part["valueString"], "x");
        // Bundles in bundles (three elements a level) go through fhirbolt's resource enum.
        let bundles = guard::MAX_DEPTH / 3;
        let mut nested = String::from(r#"<Bundle xmlns="http://hl7.org/fhir">"#);
        nested.push_str(&r#"<type value="batch"/><entry><resource><Bundle>"#.repeat(bundles - 1));
        nested.push_str(r#"<type value="batch"/><entry><resource><Parameters/>"#);
        nested.push_str(&"</resource></entry></Bundle>".repeat(bundles));
        let json = on_stack(SMALL_STACK, move || xml_to_json(&nested)).expect("converts");
        assert_eq!(json.matches("\"Bundle\"").count(), bundles);
        let deeper = nested_parts_xml(guard::MAX_DEPTH - 2);
        assert!(matches!(
            xml_to_json(&deeper),
            Err(XmlError::Refused(guard::Refusal {
                reason: guard::Reason::TooDeep,
                ..
            }))
        ));
    }

    #[test]
    fn json_depth_counts_nesting_outside_strings() {
        assert_eq!(json_depth("1"), 0);
        assert_eq!(json_depth(r#"{"a":[1,{"b":[]}]}"#), 4);
        assert_eq!(json_depth(r#"{"a":"[[[{\"]]]","b":["\\"]}"#), 2);
        assert_eq!(json_depth(&nested_extensions_json(62)), 127);
    }

    #[test]
    fn the_deepest_json_serde_json_reads_renders_as_xml_whatever_the_callers_stack() {
        // 62 nested extensions: the object of the innermost is at depth 127, the most serde_json
        // reads (its limit of 128 counts the value that would pass it).
        let deepest = nested_extensions_json(62);
        assert!(serde_json::from_str::<serde_json::Value>(&deepest).is_ok());
        assert!(serde_json::from_str::<serde_json::Value>(&nested_extensions_json(63)).is_err());
        let xml = on_stack(SMALL_STACK, move || json_to_xml(&deepest)).expect("renders");
        assert_eq!(xml.matches("<extension url=\"u\">").count(), 62);
    }
}
