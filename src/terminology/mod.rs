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
use crate::fhir::params::{Part, part};
use crate::store::{CodeSystemVersion, Concept, Registry, Value};

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
        } => {
            let mut c = json!({ "system": system, "code": code });
            if let Some(d) = display {
                c["display"] = json!(d);
            }
            ("valueCoding", c)
        }
    }
}

/// The `property` parts of a concept of `cs` (for `$lookup`, which has decoded it already),
/// filtered by `wants(code)`: `parent`, `child`, `inactive`, `status`, `notSelectable` and every
/// mapped property.
pub fn concept_property_parts(
    cs: &CodeSystemVersion,
    c: &Concept,
    wants: &dyn Fn(&str) -> bool,
) -> Vec<Vec<Part>> {
    let mut out = Vec::new();
    let coded = |code: &str, value: &str, description: Option<&str>| {
        let mut parts = vec![
            part("code", "valueCode", json!(code)),
            part("value", "valueCode", json!(value)),
        ];
        if let Some(d) = description {
            parts.push(part("description", "valueString", json!(d)));
        }
        parts
    };
    if wants("parent") {
        for p in &c.parents {
            let d = cs.find(p).and_then(|pr| cs.display(pr));
            out.push(coded("parent", p, d));
        }
    }
    if wants("child") {
        for ch in cs.children(&c.code) {
            out.push(coded("child", cs.code(*ch), cs.display(*ch)));
        }
    }
    if wants("inactive") {
        out.push(vec![
            part("code", "valueCode", json!("inactive")),
            part("value", "valueBoolean", json!(c.inactive)),
        ]);
    }
    if wants("status")
        && let Some(s) = &c.status
    {
        out.push(vec![
            part("code", "valueCode", json!("status")),
            part("value", "valueCode", json!(s)),
        ]);
    }
    if c.not_selectable
        && wants("notSelectable")
        && !c.properties.iter().any(|(k, _)| &**k == "notSelectable")
    {
        out.push(vec![
            part("code", "valueCode", json!("notSelectable")),
            part("value", "valueBoolean", json!(true)),
        ]);
    }
    for (code, v) in &c.properties {
        // Concept extensions kept whole are not properties (see
        // `resources::KEPT_CONCEPT_EXTENSIONS`).
        if !wants(code) || resources::KEPT_CONCEPT_EXTENSIONS.contains(&&**code) {
            continue;
        }
        let (key, value) = value_json(v);
        out.push(vec![
            part("code", "valueCode", json!(code)),
            part("value", key, value),
        ]);
    }
    out
}
