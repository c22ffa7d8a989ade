//! ConceptMaps as the store keeps them: explicit element lists (from FHIR resources) or maps
//! derived from a mapped CodeSystem's codes and properties.

use serde_json::Value as Json;

/// One target of a map element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapTarget {
    /// Target code (none for an unmapped-with-no-code rule).
    pub code: Option<String>,
    /// Target display.
    pub display: Option<String>,
    /// R5 relationship (`equivalent`, `source-is-broader-than-target`, …).
    pub relationship: String,
    /// Comment.
    pub comment: Option<String>,
}

/// One source code and its targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapElement {
    /// Source code.
    pub code: String,
    /// Source display.
    pub display: Option<String>,
    /// Explicitly unmapped.
    pub no_map: bool,
    /// Targets.
    pub targets: Vec<MapTarget>,
}

/// A group: one source system to one target system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapGroup {
    /// Source system.
    pub source: String,
    /// Source version.
    pub source_version: Option<String>,
    /// Target system.
    pub target: String,
    /// Target version.
    pub target_version: Option<String>,
    /// Elements.
    pub elements: Vec<MapElement>,
    /// `unmapped` with mode `fixed`.
    pub unmapped: Option<MapTarget>,
}

/// One side of a derived map: the concept's code, or one of its properties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapSide {
    /// The concept code.
    Code,
    /// A property's values (a Coding property gives its code).
    Property(String),
}

/// A map derived from a mapped CodeSystem: every concept maps `source` → `target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DerivedMap {
    /// The CodeSystem whose concepts hold both sides.
    pub code_system: String,
    /// Source system of the map.
    pub source_system: String,
    /// Source side.
    pub source: MapSide,
    /// Target system of the map.
    pub target_system: String,
    /// Target side.
    pub target: MapSide,
    /// R5 relationship of every mapping.
    pub relationship: String,
}

/// What a ConceptMap holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapKind {
    /// Groups of elements, as in a FHIR resource.
    Explicit(Vec<MapGroup>),
    /// Derived from a CodeSystem's concepts.
    Derived(DerivedMap),
}

/// A ConceptMap the server knows.
#[derive(Debug, Clone)]
pub struct ConceptMapEntry {
    /// Logical id.
    pub id: String,
    /// Canonical URL.
    pub url: String,
    /// Business version.
    pub version: Option<String>,
    /// The resource (for derived maps: the metadata, without groups).
    pub resource: Json,
    /// The mappings.
    pub kind: MapKind,
}
