//! FHIR R4 JSON ⇄ XML conversion and strict resource validation, behind plain non-generic functions.
//!
//! This crate is the only place where `fhirbolt` is compiled: its generic serde code is expensive to
//! monomorphise, so keeping it here means a change in the server does not rebuild it. Parsing always
//! runs in `Strict` mode — fhirbolt's lenient XML modes can loop forever on unknown elements, which
//! would be a denial of service on untrusted input.
//!
//! Hot paths in the server never come here: they use lean serde types. This crate serves XML
//! rendering/parsing and whole-resource validation.

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

fn strict() -> Option<DeserializationConfig> {
    Some(DeserializationConfig {
        mode: DeserializationMode::Strict,
    })
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
    let mut value = json_value(json)?;
    drop_empty_arrays(&mut value);
    let resource = parse_value(value)?;
    guarded(|| {
        fhirbolt::xml::to_string(&resource, None).map_err(|e| ConversionError(e.to_string()))
    })
}

/// Parses a FHIR R4 resource in XML and renders it as JSON.
pub fn xml_to_json(xml: &str) -> Result<String, ConversionError> {
    let resource: Resource = guarded(|| {
        fhirbolt::xml::from_str(xml, strict()).map_err(|e| ConversionError(e.to_string()))
    })?;
    guarded(|| {
        fhirbolt::json::to_string(&resource, None).map_err(|e| ConversionError(e.to_string()))
    })
}

/// Checks that JSON text is a structurally valid FHIR R4 resource (element names, types, choices,
/// no empty arrays).
pub fn validate_json(json: &str) -> Result<(), ConversionError> {
    let value = json_value(json)?;
    if let Some(at) = empty_array(&value, "") {
        return Err(ConversionError(format!(
            "{at}: an empty array (R4 JSON leaves an absent element out)"
        )));
    }
    parse_value(value).map(|_| ())
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
        assert!(!err.0.is_empty());
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
