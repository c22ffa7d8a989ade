//! FHIR wire shapes: operation parameters in and out, content negotiation. Lean serde/JSON
//! types for the hot paths; XML goes through the `fhir-xml` crate.

pub mod format;
pub mod params;
