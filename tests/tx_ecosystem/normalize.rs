//! Everything the official runner does to documents around the comparison, apart from the
//! comparison itself:
//!
//! * reading files (some start with a UTF-8 BOM);
//! * the R5→R4 conversion of request resources its R4 client performs — only where R4 has a
//!   different shape (ConceptMap); other R5-only elements are passed as they are;
//! * the R4→R5 conversion of responses: the R5 elements an R4 server can only carry as
//!   cross-version extensions (`ValueSet.expansion.property`, `…contains.property`) are lifted
//!   back into elements, exactly as `VersionConvertor_40_50` does (it requires the sub-extension
//!   urls `code` and `value[x]`);
//! * `TxTesterScrubbers`: narrative, `meta`, `diagnostics` (and issues that only have
//!   diagnostics) and unmanaged extensions are removed from the response, and — as the Java
//!   model never serialises them — empty arrays, empty objects and nulls.

use std::collections::HashSet;

use serde_json::{Map, Value as Json, json};

/// Parses a JSON file's bytes, ignoring a leading UTF-8 BOM.
pub fn parse_json(bytes: &[u8]) -> Result<Json, String> {
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))
}

/// Extensions the runner keeps in responses whatever the expected file says
/// (`TxTesterScrubbers.isManagedExtension`, non-tight mode).
const MANAGED_EXTENSIONS: [&str; 25] = [
    "http://hl7.org/fhir/StructureDefinition/codesystem-alternate",
    "http://hl7.org/fhir/StructureDefinition/codesystem-conceptOrder",
    "http://hl7.org/fhir/StructureDefinition/codesystem-label",
    "http://hl7.org/fhir/StructureDefinition/coding-sctdescid",
    "http://hl7.org/fhir/StructureDefinition/itemWeight",
    "http://hl7.org/fhir/StructureDefinition/rendering-style",
    "http://hl7.org/fhir/StructureDefinition/rendering-xhtml",
    "http://hl7.org/fhir/StructureDefinition/translation",
    "http://hl7.org/fhir/StructureDefinition/valueset-concept-definition",
    "http://hl7.org/fhir/StructureDefinition/valueset-conceptOrder",
    "http://hl7.org/fhir/StructureDefinition/valueset-deprecated",
    "http://hl7.org/fhir/StructureDefinition/valueset-label",
    "http://hl7.org/fhir/StructureDefinition/valueset-supplement",
    "http://hl7.org/fhir/test/CodeSystem/de-multi",
    "http://hl7.org/fhir/test/CodeSystem/en-multi",
    "http://hl7.org/fhir/test/StructureDefinition/unknown-extension-1",
    "http://hl7.org/fhir/test/StructureDefinition/unknown-extension-3",
    "http://hl7.org/fhir/test/StructureDefinition/unknown-extension-4",
    "http://hl7.org/fhir/test/StructureDefinition/unknown-extension-5",
    "http://hl7.org/fhir/test/ValueSet/extensions-bad-supplement",
    "http://hl7.org/fhir/test/ValueSet/simple-all",
    "http://hl7.org/fhir/test/ValueSet/simple-enumerated",
    "http://hl7.org/fhir/StructureDefinition/alternate-code-use",
    "http://hl7.org/fhir/StructureDefinition/alternate-code-status",
    "http://hl7.org/fhir/test/ValueSet/simple-filter-isa",
];

/// Which extensions survive scrubbing: relative urls, the runner's managed list, and — because
/// the Java list grows with the test suite (e.g. `structuredefinition-standards-status`,
/// expected by the deprecated suite, is missing from the published copy) — every extension url
/// the expected document itself mentions.
pub struct KeptExtensions(HashSet<String>);

impl KeptExtensions {
    /// The kept set for one expected document.
    pub fn for_expected(expected: &Json) -> Self {
        let mut urls: HashSet<String> = MANAGED_EXTENSIONS.iter().map(|s| s.to_string()).collect();
        collect_extension_urls(expected, &mut urls);
        Self(urls)
    }

    fn keeps(&self, extension: &Json) -> bool {
        match extension.get("url").and_then(Json::as_str) {
            Some(url) => !is_absolute_url(url) || self.0.contains(url),
            None => true,
        }
    }
}

fn collect_extension_urls(v: &Json, urls: &mut HashSet<String>) {
    match v {
        Json::Object(o) => {
            for (k, child) in o {
                if (k == "extension" || k == "modifierExtension")
                    && let Some(items) = child.as_array()
                {
                    for e in items {
                        if let Some(u) = e.get("url").and_then(Json::as_str) {
                            urls.insert(u.to_string());
                        }
                    }
                }
                collect_extension_urls(child, urls);
            }
        }
        Json::Array(items) => items.iter().for_each(|i| collect_extension_urls(i, urls)),
        _ => {}
    }
}

fn is_absolute_url(url: &str) -> bool {
    ["http:", "https:", "urn:", "ftp:", "file:", "mailto:"]
        .iter()
        .any(|s| url.starts_with(s))
}

/// How much the runner scrubs an operation's response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scrub {
    /// `scrubValueSet` / `scrubParameters` / `scrubOperationOutcome`: narrative, meta,
    /// unmanaged extensions, diagnostics.
    Full,
    /// Only the narrative (`CodeSystem/$validate-code` errors: the runner only clears `text`).
    TextOnly,
    /// Narrative and meta (CapabilityStatement, TerminologyCapabilities, compared as patterns).
    Metadata,
}

/// Scrubs a response resource in place (nested resources included) and drops empty values.
pub fn scrub(resource: &mut Json, how: Scrub, kept: &KeptExtensions) {
    scrub_resource(resource, how, kept);
    drop_empty(resource);
}

fn scrub_resource(resource: &mut Json, how: Scrub, kept: &KeptExtensions) {
    let Some(obj) = resource.as_object_mut() else {
        return;
    };
    obj.remove("text");
    if how != Scrub::TextOnly {
        obj.remove("meta");
    }
    let is_value_set = obj.get("resourceType").and_then(Json::as_str) == Some("ValueSet");
    let is_outcome = obj.get("resourceType").and_then(Json::as_str) == Some("OperationOutcome");
    if how == Scrub::Full {
        if is_outcome && let Some(Json::Array(issues)) = obj.get_mut("issue") {
            issues.retain(|i| i.get("diagnostics").is_none() || i.get("details").is_some());
            for i in issues.iter_mut() {
                if let Some(o) = i.as_object_mut() {
                    o.remove("diagnostics");
                }
            }
        }
        scrub_extensions(obj, kept, is_value_set);
    }
    for (k, v) in obj.iter_mut() {
        nested_resources(k, v, how, kept);
    }
}

/// Finds resources below a resource (Parameters.parameter.resource, Bundle.entry.resource,
/// contained) and scrubs them as resources.
fn nested_resources(key: &str, v: &mut Json, how: Scrub, kept: &KeptExtensions) {
    match v {
        Json::Object(o) => {
            if key == "resource" || o.contains_key("resourceType") {
                scrub_resource(v, how, kept);
            } else {
                for (k, child) in o.iter_mut() {
                    nested_resources(k, child, how, kept);
                }
            }
        }
        Json::Array(items) => items
            .iter_mut()
            .for_each(|i| nested_resources(key, i, how, kept)),
        _ => {}
    }
}

/// Removes unmanaged extensions from every element of one resource (not descending into
/// nested resources, which are scrubbed on their own, nor below `ValueSet.compose`).
fn scrub_extensions(obj: &mut Map<String, Json>, kept: &KeptExtensions, is_value_set: bool) {
    for (k, v) in obj.iter_mut() {
        if k == "extension" {
            if let Json::Array(exts) = v {
                exts.retain(|e| kept.keeps(e));
                for e in exts.iter_mut() {
                    if let Some(o) = e.as_object_mut() {
                        scrub_extensions(o, kept, false);
                    }
                }
            }
            continue;
        }
        if k == "compose" && is_value_set {
            if let Some(Json::Array(exts)) = v.get_mut("extension") {
                exts.retain(|e| kept.keeps(e));
            }
            continue;
        }
        scrub_element(v, kept);
    }
}

fn scrub_element(v: &mut Json, kept: &KeptExtensions) {
    match v {
        Json::Object(o) if !o.contains_key("resourceType") => scrub_extensions(o, kept, false),
        Json::Array(items) => items.iter_mut().for_each(|i| scrub_element(i, kept)),
        _ => {}
    }
}

/// Drops nulls, empty arrays and empty objects (bottom-up), as a FHIR serialiser would.
pub fn drop_empty(v: &mut Json) {
    match v {
        Json::Object(o) => {
            for child in o.values_mut() {
                drop_empty(child);
            }
            o.retain(|_, c| !is_empty(c));
        }
        Json::Array(items) => {
            for child in items.iter_mut() {
                drop_empty(child);
            }
            items.retain(|c| !matches!(c, Json::Object(o) if o.is_empty()));
        }
        _ => {}
    }
}

fn is_empty(v: &Json) -> bool {
    match v {
        Json::Null => true,
        Json::Array(a) => a.is_empty(),
        Json::Object(o) => o.is_empty(),
        _ => false,
    }
}

const EXT_EXPANSION_PROPERTY: &str =
    "http://hl7.org/fhir/5.0/StructureDefinition/extension-ValueSet.expansion.property";
const EXT_CONTAINS_PROPERTY: &str =
    "http://hl7.org/fhir/5.0/StructureDefinition/extension-ValueSet.expansion.contains.property";

/// The R4→R5 conversion of a response, where it changes the shape: expansion property
/// extensions become `expansion.property` / `contains.property`. Applies to every ValueSet in
/// the document. `Err` where the Java converter would fail.
pub fn lift_r4_to_r5(v: &mut Json) -> Result<(), String> {
    match v {
        Json::Object(o) => {
            if o.get("resourceType").and_then(Json::as_str) == Some("ValueSet")
                && let Some(exp) = o.get_mut("expansion").and_then(Json::as_object_mut)
            {
                lift_expansion(exp)?;
            }
            for child in o.values_mut() {
                lift_r4_to_r5(child)?;
            }
            Ok(())
        }
        Json::Array(items) => items.iter_mut().try_for_each(lift_r4_to_r5),
        _ => Ok(()),
    }
}

fn lift_expansion(exp: &mut Map<String, Json>) -> Result<(), String> {
    for ext in take_extensions(exp, EXT_EXPANSION_PROPERTY) {
        let code = sub_extension_value(&ext, "code").and_then(primitive_text);
        let uri = sub_extension_value(&ext, "uri").and_then(primitive_text);
        let mut p = Map::new();
        if let Some(c) = code {
            p.insert("code".into(), json!(c));
        }
        if let Some(u) = uri {
            p.insert("uri".into(), json!(u));
        }
        push(exp, "property", Json::Object(p));
    }
    if let Some(Json::Array(contains)) = exp.get_mut("contains") {
        for c in contains.iter_mut().filter_map(Json::as_object_mut) {
            lift_contains(c)?;
        }
    }
    Ok(())
}

fn lift_contains(c: &mut Map<String, Json>) -> Result<(), String> {
    let code_of = |c: &Map<String, Json>| {
        c.get("code")
            .and_then(Json::as_str)
            .unwrap_or("?")
            .to_string()
    };
    for ext in take_extensions(c, EXT_CONTAINS_PROPERTY) {
        let mut p = Map::new();
        if let Some(code) = sub_extension_value(&ext, "code") {
            p.insert("code".into(), code_value(code));
        }
        let value = ext
            .get("extension")
            .and_then(Json::as_array)
            .and_then(|subs| subs.iter().find(|s| s.get("url").and_then(Json::as_str) == Some("value[x]")))
            .and_then(value_entry)
            .ok_or_else(|| {
                format!(
                    "R4→R5 conversion failed (the Java client would throw): contains '{}' has a \
                     {EXT_CONTAINS_PROPERTY} extension without a 'value[x]' sub-extension \
                     (VersionConvertor_40_50 reads the value from the sub-extension url \"value[x]\")",
                    code_of(c)
                )
            })?;
        p.insert(value.0, value.1);
        push(c, "property", Json::Object(p));
    }
    if let Some(Json::Array(children)) = c.get_mut("contains") {
        for child in children.iter_mut().filter_map(Json::as_object_mut) {
            lift_contains(child)?;
        }
    }
    Ok(())
}

fn code_value(v: &Json) -> Json {
    primitive_text(v).map_or(Json::Null, |s| json!(s))
}

fn take_extensions(obj: &mut Map<String, Json>, url: &str) -> Vec<Json> {
    let Some(Json::Array(exts)) = obj.get_mut("extension") else {
        return Vec::new();
    };
    let (taken, rest): (Vec<Json>, Vec<Json>) = std::mem::take(exts)
        .into_iter()
        .partition(|e| e.get("url").and_then(Json::as_str) == Some(url));
    *exts = rest;
    if exts.is_empty() {
        obj.remove("extension");
    }
    taken
}

fn sub_extension_value<'a>(ext: &'a Json, url: &str) -> Option<&'a Json> {
    ext.get("extension")?
        .as_array()?
        .iter()
        .find(|s| s.get("url").and_then(Json::as_str) == Some(url))?
        .as_object()?
        .iter()
        .find(|(k, _)| k.starts_with("value"))
        .map(|(_, v)| v)
}

/// The `value[x]` entry of an extension: its key and value.
fn value_entry(ext: &Json) -> Option<(String, Json)> {
    ext.as_object()?
        .iter()
        .find(|(k, _)| k.starts_with("value"))
        .map(|(k, v)| (k.clone(), v.clone()))
}

fn primitive_text(v: &Json) -> Option<String> {
    match v {
        Json::String(s) => Some(s.clone()),
        Json::Bool(_) | Json::Number(_) => Some(v.to_string()),
        _ => None,
    }
}

fn push(obj: &mut Map<String, Json>, key: &str, item: Json) {
    match obj.get_mut(key) {
        Some(Json::Array(items)) => items.push(item),
        _ => {
            obj.insert(key.into(), Json::Array(vec![item]));
        }
    }
}

/// The R5→R4 conversion of a request resource, where R4 has a different shape: ConceptMap
/// (`sourceScope[x]`/`targetScope[x]` → `source[x]`/`target[x]`, `relationship` → `equivalence`,
/// unmapped `mode` renamed, unmapped `relationship` dropped) as `ConceptMap40_50` does. Other
/// resources are returned unchanged (R5-only elements such as `versionAlgorithm[x]` stay in
/// place; the server is expected to ignore or use them).
pub fn r5_to_r4_request(resource: &Json) -> Json {
    let mut r = resource.clone();
    if r.get("resourceType").and_then(Json::as_str) != Some("ConceptMap") {
        return r;
    }
    let Some(cm) = r.as_object_mut() else {
        return r;
    };
    for (from, to) in [
        ("sourceScopeUri", "sourceUri"),
        ("sourceScopeCanonical", "sourceCanonical"),
        ("targetScopeUri", "targetUri"),
        ("targetScopeCanonical", "targetCanonical"),
    ] {
        if let Some(v) = cm.remove(from) {
            cm.insert(to.into(), v);
        }
    }
    if let Some(Json::Array(groups)) = cm.get_mut("group") {
        for g in groups.iter_mut().filter_map(Json::as_object_mut) {
            if let Some(Json::Array(elements)) = g.get_mut("element") {
                for t in elements
                    .iter_mut()
                    .filter_map(|e| e.get_mut("target"))
                    .filter_map(Json::as_array_mut)
                    .flatten()
                    .filter_map(Json::as_object_mut)
                {
                    if let Some(rel) = t.remove("relationship") {
                        let eq = match rel.as_str() {
                            Some("related-to") => "relatedto",
                            Some("equivalent") => "equivalent",
                            Some("source-is-narrower-than-target") => "wider",
                            Some("source-is-broader-than-target") => "narrower",
                            Some("not-related-to") => "disjoint",
                            _ => "relatedto",
                        };
                        t.insert("equivalence".into(), json!(eq));
                    }
                }
            }
            if let Some(unmapped) = g.get_mut("unmapped").and_then(Json::as_object_mut) {
                unmapped.remove("relationship");
                if unmapped.get("mode").and_then(Json::as_str) == Some("use-source-code") {
                    unmapped.insert("mode".into(), json!("provided"));
                }
            }
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bom_is_ignored() {
        assert_eq!(
            parse_json(b"\xef\xbb\xbf{\"a\":1}").ok(),
            Some(json!({"a": 1}))
        );
        assert_eq!(parse_json(b"{\"a\":1}").ok(), Some(json!({"a": 1})));
        assert!(parse_json(b"\xef\xbb\xbf").is_err());
    }

    #[test]
    fn scrub_removes_narrative_meta_diagnostics_and_unknown_extensions() {
        let expected = json!({"extension": [{"url": "http://example.org/wanted"}]});
        let kept = KeptExtensions::for_expected(&expected);
        let mut actual = json!({
            "resourceType": "Parameters",
            "meta": {"lastUpdated": "2024-01-01T00:00:00Z"},
            "parameter": [{"name": "issues", "resource": {
                "resourceType": "OperationOutcome",
                "text": {"status": "generated", "div": "<div/>"},
                "issue": [
                    {"severity": "error", "code": "invalid", "details": {"text": "x"}, "diagnostics": "trace"},
                    {"severity": "information", "code": "informational", "diagnostics": "only diagnostics"}
                ]
            }}, {"name": "x", "valueString": "y", "extension": [
                {"url": "http://example.org/wanted", "valueString": "1"},
                {"url": "http://example.org/unwanted", "valueString": "2"},
                {"url": "relative", "valueString": "3"}
            ]}]
        });
        scrub(&mut actual, Scrub::Full, &kept);
        assert_eq!(
            actual,
            json!({
                "resourceType": "Parameters",
                "parameter": [{"name": "issues", "resource": {
                    "resourceType": "OperationOutcome",
                    "issue": [{"severity": "error", "code": "invalid", "details": {"text": "x"}}]
                }}, {"name": "x", "valueString": "y", "extension": [
                    {"url": "http://example.org/wanted", "valueString": "1"},
                    {"url": "relative", "valueString": "3"}
                ]}]
            })
        );
    }

    #[test]
    fn scrub_leaves_value_set_compose_contents_alone() {
        let kept = KeptExtensions::for_expected(&json!({}));
        let mut vs = json!({"resourceType": "ValueSet", "compose": {"include": [{"concept": [
            {"code": "a", "extension": [{"url": "http://example.org/x", "valueString": "1"}]}
        ]}]}, "expansion": {"contains": [
            {"code": "a", "extension": [{"url": "http://example.org/x", "valueString": "1"}]}
        ]}});
        scrub(&mut vs, Scrub::Full, &kept);
        assert!(
            vs["compose"]["include"][0]["concept"][0]
                .get("extension")
                .is_some()
        );
        assert!(vs["expansion"]["contains"][0].get("extension").is_none());
    }

    #[test]
    fn expansion_property_extensions_are_lifted_to_r5_elements() {
        let mut vs = json!({"resourceType": "ValueSet", "expansion": {
            "extension": [{"url": EXT_EXPANSION_PROPERTY, "extension": [
                {"url": "code", "valueCode": "status"},
                {"url": "uri", "valueUri": "http://hl7.org/fhir/concept-properties#status"}]}],
            "contains": [{"code": "a", "extension": [{"url": EXT_CONTAINS_PROPERTY, "extension": [
                {"url": "code", "valueCode": "status"}, {"url": "value[x]", "valueCode": "retired"}]}]}]
        }});
        assert!(lift_r4_to_r5(&mut vs).is_ok());
        assert_eq!(
            vs["expansion"],
            json!({
                "property": [{"code": "status", "uri": "http://hl7.org/fhir/concept-properties#status"}],
                "contains": [{"code": "a", "property": [{"code": "status", "valueCode": "retired"}]}]
            })
        );
    }

    #[test]
    fn contains_property_without_value_x_fails_like_the_java_converter() {
        let mut vs = json!({"resourceType": "ValueSet", "expansion": {"contains": [{"code": "a",
            "extension": [{"url": EXT_CONTAINS_PROPERTY, "extension": [
                {"url": "code", "valueCode": "status"}, {"url": "value", "valueCode": "retired"}]}]}]}});
        let err = lift_r4_to_r5(&mut vs).expect_err("a mismatch");
        assert!(err.contains("value[x]"), "{err}");
    }

    #[test]
    fn concept_map_is_converted_to_r4() {
        let r5 = json!({"resourceType": "ConceptMap", "sourceScopeUri": "http://s", "group": [{
            "element": [{"code": "a", "target": [{"code": "b", "relationship": "source-is-narrower-than-target"}]}],
            "unmapped": {"mode": "use-source-code", "relationship": "related-to"}}]});
        let r4 = r5_to_r4_request(&r5);
        assert_eq!(
            r4,
            json!({"resourceType": "ConceptMap", "sourceUri": "http://s", "group": [{
            "element": [{"code": "a", "target": [{"code": "b", "equivalence": "wider"}]}],
            "unmapped": {"mode": "provided"}}]})
        );
        let cs = json!({"resourceType": "CodeSystem", "versionAlgorithmString": "semver"});
        assert_eq!(r5_to_r4_request(&cs), cs);
    }
}
