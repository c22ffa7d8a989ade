//! FHIR wire shapes: operation parameters in and out, content negotiation, batch-response
//! Bundles written as bytes. Lean serde/JSON types for the hot paths; XML goes through the
//! `fhir-xml` crate.

pub mod bundle;
pub mod format;
pub mod params;
