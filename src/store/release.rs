//! One imported release of one register feed: its provenance and its concepts.

use serde::{Deserialize, Serialize};

use super::list::ConceptList;

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
    pub concepts: ConceptList,
}
