//! Publication-status notes: a CodeSystem or ValueSet that is draft, experimental, deprecated or
//! withdrawn is reported (`warning-…` expansion parameters, `status-check` issues), as reference
//! servers do.

use std::collections::HashMap;

use serde_json::Value as Json;

use crate::store::CodeSystemVersion;

/// The extension that gives a CodeSystem, ValueSet, concept or designation its standards status
/// (defined beside the designations that read it).
pub use crate::store::STANDARDS_STATUS;

fn standards_status(extensions: Option<&Json>) -> Option<&'static str> {
    extensions?.as_array()?.iter().find_map(|e| {
        if e.get("url").and_then(Json::as_str) != Some(STANDARDS_STATUS) {
            return None;
        }
        match e.get("valueCode").and_then(Json::as_str)? {
            "deprecated" => Some("deprecated"),
            "withdrawn" => Some("withdrawn"),
            _ => None,
        }
    })
}

fn note(
    status: Option<&str>,
    experimental: bool,
    extensions: Option<&Json>,
) -> Option<&'static str> {
    standards_status(extensions)
        .or_else(|| (status == Some("draft")).then_some("draft"))
        .or_else(|| experimental.then_some("experimental"))
}

/// The note for a CodeSystem version, if any.
pub fn code_system_note(cs: &CodeSystemVersion) -> Option<&'static str> {
    let extra = cs.meta.extra.as_ref();
    note(
        Some(cs.meta.status.as_str()),
        extra
            .and_then(|e| e.get("experimental"))
            .and_then(Json::as_bool)
            .unwrap_or(false),
        extra.and_then(|e| e.get("extension")),
    )
}

/// The note for a ValueSet resource, if any: only deprecation or withdrawal (a draft or
/// experimental ValueSet is the caller's own choice and is not reported).
pub fn value_set_note(vs: &Json) -> Option<&'static str> {
    standards_status(vs.get("extension"))
}

/// `url|version` of a ValueSet resource.
pub fn value_set_label(vs: &Json) -> String {
    let url = vs.get("url").and_then(Json::as_str).unwrap_or("");
    match vs.get("version").and_then(Json::as_str) {
        Some(v) => format!("{url}|{v}"),
        None => url.to_string(),
    }
}

/// The extensions a ValueSet's compose gives a listed concept (`valueset-deprecated`,
/// standards status), if any.
pub fn listed_concept_extensions(vs: &Json, system: &str, code: &str) -> Option<Json> {
    listed_concepts(vs)
        .find(|&(s, c)| s == system && c.get("code").and_then(Json::as_str) == Some(code))?
        .1
        .get("extension")
        .cloned()
}

/// [`listed_concept_extensions`] of every listed concept that has extensions, by (system, code):
/// read once for an expansion rather than searched for each of its codes.
pub fn listed_concept_extensions_by_code(vs: &Json) -> HashMap<(&str, &str), Option<&Json>> {
    let mut out = HashMap::new();
    for (system, c) in listed_concepts(vs) {
        if let Some(code) = c.get("code").and_then(Json::as_str) {
            // The first listing wins, as in `listed_concept_extensions`.
            out.entry((system, code)).or_insert(c.get("extension"));
        }
    }
    out
}

/// The designations a ValueSet's compose gives each listed concept
/// (`include.concept.designation`), by (system, code): the first listing that has any.
pub fn listed_concept_designations_by_code(vs: &Json) -> HashMap<(&str, &str), &[Json]> {
    let mut out = HashMap::new();
    for (system, c) in listed_concepts(vs) {
        if let (Some(code), Some(ds)) = (
            c.get("code").and_then(Json::as_str),
            c.get("designation").and_then(Json::as_array),
        ) {
            out.entry((system, code)).or_insert(ds.as_slice());
        }
    }
    out
}

/// The concepts a ValueSet's includes list, each with its include's system, in order.
fn listed_concepts(vs: &Json) -> impl Iterator<Item = (&str, &Json)> {
    vs.get("compose")
        .and_then(|c| c.get("include"))
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
        .filter_map(|i| Some((i.get("system")?.as_str()?, i)))
        .flat_map(|(system, i)| {
            i.get("concept")
                .and_then(Json::as_array)
                .into_iter()
                .flatten()
                .map(move |c| (system, c))
        })
}

/// Whether a listed concept is marked deprecated by its ValueSet.
pub fn listed_concept_deprecated(vs: &Json, system: &str, code: &str) -> bool {
    listed_concept_extensions(vs, system, code)
        .and_then(|e| e.as_array().cloned())
        .into_iter()
        .flatten()
        .any(|e| {
            (e.get("url").and_then(Json::as_str)
                == Some("http://hl7.org/fhir/StructureDefinition/valueset-deprecated")
                && e.get("valueCode").and_then(Json::as_str) == Some("true"))
                || (e.get("url").and_then(Json::as_str) == Some(STANDARDS_STATUS)
                    && e.get("valueCode").and_then(Json::as_str) == Some("deprecated"))
        })
}
