//! The FHIR terminology operations — `$lookup`, `$expand`, `$validate-code`, `$subsumes` — over
//! the [`Registry`]. Requests arrive as typed structs built from [`OperationParams`] (whatever the
//! transport); answers leave as FHIR JSON. No axum here.
//!
//! [`OperationParams`]: crate::fhir::params::OperationParams

pub mod budget;
pub mod compose;
pub mod expand;
pub mod history;
pub mod language;
pub mod lookup;
pub mod overlay;
pub mod request_cache;
pub mod resources;
pub mod status;
pub mod subsumes;
pub mod translate;
pub mod validate;
pub mod versions;

use std::sync::Arc;

use serde_json::{Value as Json, json};

use crate::error::FhirError;
use crate::fhir::params::ParametersSink;
use crate::head;
use crate::store::{CodeSystemVersion, ConceptView, Registry, Value, ValueView};

/// The URI of the standard property that marks a concept abstract (not selectable), whatever code
/// a CodeSystem gives it. <http://hl7.org/fhir/R4/codesystem-concept-properties.html>
pub const NOT_SELECTABLE_URI: &str = "http://hl7.org/fhir/concept-properties#notSelectable";

/// The code a CodeSystem gives the `notSelectable` property: the one it declares with
/// [`NOT_SELECTABLE_URI`], else `notSelectable`.
pub fn not_selectable_code(properties: &[crate::store::PropertyDecl]) -> &str {
    properties
        .iter()
        .find(|p| p.uri.as_deref() == Some(NOT_SELECTABLE_URI))
        .map_or("notSelectable", |p| p.code.as_str())
}

/// Whether a concept property code is the `notSelectable` property of a CodeSystem whose own
/// code for it is `own` (the standard code always counts).
pub fn is_not_selectable(code: &str, own: &str) -> bool {
    code == "notSelectable" || code == own
}

/// Finds a CodeSystem version, with the messages clients expect when it is missing.
pub fn resolve_code_system(
    registry: &Registry,
    url: &str,
    version: Option<&str>,
) -> Result<Arc<CodeSystemVersion>, FhirError> {
    if let Some(cs) = registry.code_system(url, version) {
        return Ok(cs);
    }
    let known = registry.code_system_versions(url);
    match version {
        Some(v) if !known.is_empty() => Err(FhirError::NotFound(format!(
            "A definition for CodeSystem '{url}' version '{v}' could not be found (known versions: {})",
            known
                .iter()
                .map(|c| c.version.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
        _ => Err(FhirError::NotFound(format!(
            "A definition for CodeSystem '{url}' could not be found"
        ))),
    }
}

/// The extensions of a JSON array of extensions (`None`, or anything but an array: none) whose
/// `url` is one of `urls`, in order.
pub fn extensions_with_urls<'a>(
    list: Option<&'a Json>,
    urls: &'a [&'a str],
) -> impl Iterator<Item = &'a Json> + 'a {
    list.and_then(Json::as_array)
        .into_iter()
        .flatten()
        .filter(|x| {
            x.get("url")
                .and_then(Json::as_str)
                .is_some_and(|u| urls.contains(&u))
        })
}

/// A Coding as FHIR JSON (`system`, `code`, and `display` when known).
pub fn coding_json(system: &str, code: &str, display: Option<&str>) -> Json {
    let mut c = json!({ "system": system, "code": code });
    if let Some(d) = display {
        c["display"] = json!(d);
    }
    c
}

/// A property value as a `(value[x] key, JSON)` pair.
pub fn value_json(v: &Value) -> (&'static str, Json) {
    match v {
        Value::Code(s) => ("valueCode", json!(s)),
        Value::String(s) => ("valueString", json!(s)),
        Value::Integer(i) => ("valueInteger", json!(i)),
        Value::Boolean(b) => ("valueBoolean", json!(b)),
        Value::DateTime(s) => ("valueDateTime", json!(s)),
        Value::Decimal(s) => (
            "valueDecimal",
            serde_json::from_str::<Json>(s).unwrap_or_else(|_| json!(s)),
        ),
        Value::Coding {
            system,
            code,
            display,
        } => ("valueCoding", coding_json(system, code, display.as_deref())),
    }
}

/// Writes one `property` parameter: its code, and its value as [`value_json`] gives it, written
/// without an owned copy of its text.
pub fn write_property(sink: &mut impl ParametersSink, code: &str, value: ValueView<'_>) {
    sink.open(head!("property", "part"));
    sink.text(head!("code", "valueCode"), code);
    match value {
        ValueView::Code(s) => sink.text(head!("value", "valueCode"), s),
        ValueView::String(s) => sink.text(head!("value", "valueString"), s),
        ValueView::Integer(i) => sink.integer(head!("value", "valueInteger"), i),
        ValueView::Boolean(b) => sink.boolean(head!("value", "valueBoolean"), b),
        ValueView::DateTime(s) => sink.text(head!("value", "valueDateTime"), s),
        ValueView::Decimal(_) | ValueView::Coding { .. } => {
            let (key, json) = value_json(&value.to_value());
            sink.json("value", key, json);
        }
    }
    sink.close();
}

/// Writes the `property` parameters of a concept of `cs` (for `$lookup`, which has read it
/// already), filtered by `wants(code)`: `parent`, `child`, `inactive`, `status`, `notSelectable`
/// and every mapped property.
pub fn write_concept_properties(
    cs: &CodeSystemVersion,
    c: &ConceptView<'_>,
    wants: &dyn Fn(&str) -> bool,
    sink: &mut impl ParametersSink,
) {
    let mut coded = |code: &'static str, value: &str, description: Option<&str>| {
        sink.open(head!("property", "part"));
        sink.text(head!("code", "valueCode"), code);
        sink.text(head!("value", "valueCode"), value);
        if let Some(d) = description {
            sink.text(head!("description", "valueString"), d);
        }
        sink.close();
    };
    if wants("parent") {
        for p in &c.parents {
            let d = cs.find(p).and_then(|pr| cs.display(pr));
            coded("parent", p, d);
        }
    }
    if wants("child") {
        for ch in cs.children(c.code) {
            coded("child", cs.code(*ch), cs.display(*ch));
        }
    }
    if wants("inactive") {
        write_property(sink, "inactive", ValueView::Boolean(c.inactive));
    }
    if wants("status")
        && let Some(s) = c.status
    {
        write_property(sink, "status", ValueView::Code(s));
    }
    if c.not_selectable
        && wants("notSelectable")
        && !c.properties.iter().any(|(k, _)| *k == "notSelectable")
    {
        write_property(sink, "notSelectable", ValueView::Boolean(true));
    }
    for &(code, v) in &c.properties {
        // Concept extensions kept whole are not properties (see
        // `resources::KEPT_CONCEPT_EXTENSIONS`).
        if !wants(code) || resources::KEPT_CONCEPT_EXTENSIONS.contains(&code) {
            continue;
        }
        write_property(sink, code, v);
    }
}
