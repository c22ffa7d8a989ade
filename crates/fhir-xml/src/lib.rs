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

fn parse_json(json: &str) -> Result<Resource, ConversionError> {
    fhirbolt::json::from_str::<Resource>(json, strict()).map_err(|e| ConversionError(e.to_string()))
}

/// Renders a FHIR R4 resource given as JSON into FHIR XML.
pub fn json_to_xml(json: &str) -> Result<String, ConversionError> {
    let resource = parse_json(json)?;
    fhirbolt::xml::to_string(&resource, None).map_err(|e| ConversionError(e.to_string()))
}

/// Parses a FHIR R4 resource in XML and renders it as JSON.
pub fn xml_to_json(xml: &str) -> Result<String, ConversionError> {
    let resource: Resource =
        fhirbolt::xml::from_str(xml, strict()).map_err(|e| ConversionError(e.to_string()))?;
    fhirbolt::json::to_string(&resource, None).map_err(|e| ConversionError(e.to_string()))
}

/// Checks that JSON text is a structurally valid FHIR R4 resource (element names, types, choices).
pub fn validate_json(json: &str) -> Result<(), ConversionError> {
    parse_json(json).map(|_| ())
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
}
