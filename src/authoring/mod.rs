//! The mapping author's workflow, which needs no Rust: `fhir-registers test` runs each mapping's
//! own test cases (`[[test]]`) and snapshots what the mapping makes, in a stable text form that
//! a reviewer reads like a diff.

pub mod draft;
pub mod profile;
pub mod snapshot;
pub mod test;
