//! `ValueSet/$expand`: compose evaluation, text filter, paging, and the expansion resource.
//! <http://hl7.org/fhir/R4/valueset-operation-expand.html>

use serde_json::{Map, Value as Json, json};

use super::compose::{Compose, Evaluator, Expansion};
use super::value_json;
use super::versions::{self, VersionRules};
use super::{language, status};
use crate::error::FhirError;
use crate::fhir::params::OperationParams;
use crate::store::{CodeSystemVersion, Registry, words};

/// Elements of the ValueSet kept in an `$expand` answer (the definition — compose, publisher,
/// dates — is left out, as reference servers do).
const EXPANSION_KEEPS: [&str; 11] = [
    "resourceType",
    "id",
    "language",
    "extension",
    "url",
    "identifier",
    "version",
    "name",
    "title",
    "status",
    "experimental",
];

/// Request parameters an expansion echoes in `expansion.parameter`, with their original types.
const ECHOED: [&str; 10] = [
    "filter",
    "count",
    "offset",
    "activeOnly",
    "includeDesignations",
    "designation",
    "excludeNested",
    "displayLanguage",
    "limitedExpansion",
    "excludeNotForUI",
];

/// Limits an expansion must respect.
#[derive(Debug, Clone, Copy)]
pub struct ExpandLimits {
    /// Largest expansion returned without `count` (larger is `too-costly`).
    pub max_unpaged: usize,
    /// Largest expansion returned without `count` when it draws on a CodeSystem supplied with
    /// the request (the reference server's default limit, 1,000).
    pub max_unpaged_supplied: usize,
    /// Largest `count` accepted.
    pub max_count: usize,
    /// Longest text `filter`, in characters (longer is a 400).
    pub max_filter_chars: usize,
    /// Most words in a text `filter` (more is a 400).
    pub max_filter_words: usize,
}

impl Default for ExpandLimits {
    fn default() -> Self {
        Self {
            max_unpaged: 50_000,
            max_unpaged_supplied: 1_000,
            max_count: 50_000,
            max_filter_chars: 512,
            max_filter_words: 32,
        }
    }
}

/// The words of a text filter, within the limits: a filter is matched word by word against
/// every candidate, so its length and word count bound the work (the longest ICD-10 display has
/// 213 characters and 25 words).
pub fn filter_words(filter: &str, limits: &ExpandLimits) -> Result<Vec<String>, FhirError> {
    let chars = filter.chars().count();
    if chars > limits.max_filter_chars {
        return Err(FhirError::Invalid(format!(
            "The filter has {chars} characters, more than the limit of {} for a text filter",
            limits.max_filter_chars
        )));
    }
    let words: Vec<String> = words(filter).collect();
    if words.len() > limits.max_filter_words {
        return Err(FhirError::Invalid(format!(
            "The filter has {} words, more than the limit of {} for a text filter",
            words.len(),
            limits.max_filter_words
        )));
    }
    Ok(words)
}

/// An `$expand` request, whatever the transport.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExpandRequest {
    /// ValueSet canonical.
    pub url: Option<String>,
    /// Inline ValueSet, or the instance's resource.
    pub value_set: Option<Json>,
    /// `valueSetVersion`.
    pub value_set_version: Option<String>,
    /// Text filter.
    pub filter: Option<String>,
    /// Paging offset.
    pub offset: usize,
    /// Page size.
    pub count: Option<usize>,
    /// Leave inactive codes out.
    pub active_only: bool,
    /// Add designations.
    pub include_designations: bool,
    /// Add definitions.
    pub include_definition: bool,
    /// Properties to add to each code.
    pub properties: Vec<String>,
    /// `excludeNotForUI`: leave abstract (`notSelectable`) codes out.
    pub exclude_not_for_ui: bool,
    /// `excludeNested` (expansions are always flat here; echoed).
    pub exclude_nested: Option<bool>,
    /// `displayLanguage`: the language(s) displays are wanted in.
    pub display_language: Option<String>,
    /// `designation` parameters (`urn:ietf:bcp:47|es`): the designations wanted.
    pub designations: Vec<String>,
    /// `system-version`, `force-system-version`, `check-system-version` and
    /// `default-valueset-version` (echoed as `valueUri` where they were used).
    pub versions: VersionRules,
    /// Parameters to echo in the expansion.
    pub echo: Vec<Json>,
}

impl ExpandRequest {
    /// Builds the request from operation parameters.
    pub fn from_params(p: &OperationParams) -> Result<Self, FhirError> {
        Ok(Self {
            url: p.text("url")?,
            value_set: p.resource("valueSet")?,
            value_set_version: p.text("valueSetVersion")?,
            filter: p.text("filter")?.filter(|f| !f.trim().is_empty()),
            offset: p.unsigned("offset")?.unwrap_or(0),
            count: p.unsigned("count")?,
            active_only: p.boolean("activeOnly")?.unwrap_or(false),
            include_designations: p.boolean("includeDesignations")?.unwrap_or(false),
            include_definition: p.boolean("includeDefinition")?.unwrap_or(false),
            properties: p.texts("property"),
            exclude_nested: p.boolean("excludeNested")?,
            exclude_not_for_ui: p.boolean("excludeNotForUI")?.unwrap_or(false),
            display_language: p
                .text("displayLanguage")?
                .map(|l| language::check_display_language(&l).map(|()| l))
                .transpose()?,
            designations: p
                .all("designation")
                .filter_map(|v| match v {
                    crate::fhir::params::ParamValue::Text(t) => Some(t.clone()),
                    _ => None,
                })
                .collect(),
            versions: VersionRules::from_params(p)?,
            echo: p.echo(&ECHOED),
        })
    }
}

/// The label, order or weight (`property`) a ValueSet gives a concept where it lists it
/// (`valueset-label`, `valueset-conceptOrder`, `itemWeight` on `include.concept`), as the
/// `(value[x] key, value)` the expansion returns: a label is a string, an order or a weight a
/// decimal.
fn listing_property(extensions: &Json, property: &str) -> Option<(&'static str, Json)> {
    let url = match property {
        "label" => "http://hl7.org/fhir/StructureDefinition/valueset-label",
        "order" => "http://hl7.org/fhir/StructureDefinition/valueset-conceptOrder",
        "weight" => "http://hl7.org/fhir/StructureDefinition/itemWeight",
        _ => return None,
    };
    let urls = [url];
    let x = super::extensions_with_urls(Some(extensions), &urls).next()?;
    if property == "label" {
        return Some(("valueString", x.get("valueString")?.clone()));
    }
    let n = x
        .get("valueInteger")
        .or_else(|| x.get("valueDecimal"))
        .filter(|n| n.is_number())?;
    Some(("valueDecimal", n.clone()))
}

/// A designation a ValueSet gives a listed concept, with only the extensions the reference keeps
/// on a designation (the SNOMED CT description id and the standards status): others are
/// ignored, as the reference ignores them.
fn listed_designation(d: &Json) -> Json {
    const KEPT: [&str; 2] = [
        "http://hl7.org/fhir/StructureDefinition/coding-sctdescid",
        crate::store::STANDARDS_STATUS,
    ];
    let mut d = d.clone();
    if let Some(o) = d.as_object_mut() {
        let kept: Vec<Json> = super::extensions_with_urls(o.get("extension"), &KEPT)
            .cloned()
            .collect();
        if kept.is_empty() {
            o.remove("extension");
        } else {
            o.insert("extension".into(), Json::Array(kept));
        }
    }
    d
}

/// A random (v4-shaped) `urn:uuid:`.
pub fn new_uuid() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut bytes = [0u8; 16];
    for chunk in bytes.chunks_mut(8) {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        chunk.copy_from_slice(&h.finish().to_le_bytes());
    }
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "urn:uuid:{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Resolves the ValueSet a request names (inline wins over url).
pub fn resolve_value_set(registry: &Registry, req: &ExpandRequest) -> Result<Json, FhirError> {
    match (&req.value_set, &req.url) {
        (Some(vs), _) => Ok(vs.clone()),
        (None, Some(url)) => {
            let (u, v) = match url.split_once('|') {
                Some((u, v)) => (u, Some(v)),
                None => (url.as_str(), req.value_set_version.as_deref()),
            };
            registry
                .value_set(u, v)
                .map(|e| e.resource.clone())
                .ok_or_else(|| {
                    FhirError::NotFound(format!(
                        "A definition for the value Set '{url}' could not be found"
                    ))
                })
        }
        (None, None) => Err(FhirError::Required(
            "$expand needs 'url' or 'valueSet' (or a ValueSet id in the path)".into(),
        )),
    }
}

/// One page of the expansion of a ValueSet resource, typed: the members from `offset` on (at
/// most `count`) and the total, filtered by `filter` as `$expand`'s `filter` parameter is (the
/// same text index, the same limits). What the register browser lists for a ValueSet.
pub fn expansion_page(
    registry: &Registry,
    vs: &Json,
    filter: Option<&str>,
    offset: usize,
    count: usize,
    limits: ExpandLimits,
) -> Result<(Expansion, usize), FhirError> {
    let compose = Compose::from_value_set(vs)?;
    if count > limits.max_count {
        return Err(FhirError::TooCostly(format!(
            "count {count} is larger than the maximum page size {}",
            limits.max_count
        )));
    }
    let filter_words = filter
        .filter(|f| !f.trim().is_empty())
        .map(|f| filter_words(f, &limits))
        .transpose()?;
    let contained: Vec<Json> = vs
        .get("contained")
        .and_then(Json::as_array)
        .cloned()
        .unwrap_or_default();
    let versions = VersionRules::default();
    let evaluator = Evaluator {
        registry,
        active_only: false,
        exclude_not_for_ui: false,
        versions: &versions,
        version_usage: Default::default(),
        pinned: Default::default(),
        extra_value_sets: &contained,
        imported: Default::default(),
        chain: std::cell::RefCell::new(vec![super::compose::chain_name("(unidentified)", vs)]),
    };
    evaluator.check_imports(&compose)?;
    evaluator.expand_page(
        &compose,
        filter_words.as_deref().filter(|w| !w.is_empty()),
        offset,
        Some(count),
    )
}

/// One page of the codes of one CodeSystem version, filtered by `filter` as `$expand` filters
/// an implicit ValueSet of the whole CodeSystem (see [`expansion_page`]).
pub fn code_system_page(
    registry: &Registry,
    cs: &CodeSystemVersion,
    filter: Option<&str>,
    offset: usize,
    count: usize,
    limits: ExpandLimits,
) -> Result<(Expansion, usize), FhirError> {
    let mut include = json!({ "system": cs.meta.url });
    if !cs.version.is_empty() {
        include["version"] = json!(cs.version);
    }
    let vs = json!({ "resourceType": "ValueSet", "compose": { "include": [include] } });
    expansion_page(registry, &vs, filter, offset, count, limits)
}

/// The extensions of a concept listed in a compose (`include.concept.extension`) that the
/// reference server copies into the expansion's `contains` (FHIRsmith `tx/workers/expand.js`,
/// `includeCode`); the others (order, label, weight, unknown ones) are not copied.
const COPIED_LISTING_EXTENSIONS: [&str; 7] = [
    "http://hl7.org/fhir/StructureDefinition/valueset-supplement",
    "http://hl7.org/fhir/StructureDefinition/valueset-deprecated",
    super::status::STANDARDS_STATUS,
    "http://hl7.org/fhir/StructureDefinition/valueset-concept-definition",
    "http://hl7.org/fhir/StructureDefinition/coding-sctdescid",
    "http://hl7.org/fhir/StructureDefinition/rendering-style",
    "http://hl7.org/fhir/StructureDefinition/rendering-xhtml",
];

/// Answers an `$expand`: the ValueSet with its `expansion`.
pub fn expand(
    registry: &Registry,
    req: &ExpandRequest,
    limits: ExpandLimits,
) -> Result<Json, FhirError> {
    let vs = resolve_value_set(registry, req)?;
    let supplemented = super::resources::with_value_set_supplements(registry, &vs)?;
    let registry = supplemented.as_ref().unwrap_or(registry);
    let compose = Compose::from_value_set(&vs)?;
    if req.count.is_some_and(|c| c > limits.max_count) {
        return Err(FhirError::TooCostly(format!(
            "count {} is larger than the maximum page size {}",
            req.count.unwrap_or(0),
            limits.max_count
        )));
    }
    let filter_words: Option<Vec<String>> = req
        .filter
        .as_deref()
        .map(|f| filter_words(f, &limits))
        .transpose()?;
    let contained: Vec<Json> = vs
        .get("contained")
        .and_then(Json::as_array)
        .cloned()
        .unwrap_or_default();
    // The ValueSet's own version-steering parameters (`compose.extension`) after the request's.
    let versions = req.versions.with_value_set(&vs)?;
    let evaluator = Evaluator {
        registry,
        active_only: req.active_only,
        exclude_not_for_ui: req.exclude_not_for_ui,
        versions: &versions,
        version_usage: Default::default(),
        pinned: Default::default(),
        extra_value_sets: &contained,
        imported: Default::default(),
        chain: std::cell::RefCell::new(vec![super::compose::chain_name("(unidentified)", &vs)]),
    };
    evaluator.check_imports(&compose)?;
    let (expansion, total) = evaluator.expand_page(
        &compose,
        filter_words.as_deref().filter(|w| !w.is_empty()),
        req.offset,
        req.count,
    )?;
    if req.count.is_none() && total.saturating_sub(req.offset) > limits.max_unpaged {
        return Err(FhirError::TooCostly(format!(
            "The value set expansion has {total} codes, more than the limit of {} for an expansion without paging; use 'count' and 'offset', or 'filter'",
            limits.max_unpaged
        )));
    }
    // Content supplied with the request gets the reference server's default limit, in its
    // wording (`VALUESET_TOO_COSTLY`).
    let supplied = expansion.systems.iter().any(|cs| cs.is_supplied());
    if req.count.is_none()
        && supplied
        && total.saturating_sub(req.offset) > limits.max_unpaged_supplied
    {
        let url = vs
            .get("url")
            .and_then(Json::as_str)
            .unwrap_or("(unidentified)");
        return Err(FhirError::TooCostly(format!(
            "The value set '{url}' expansion has too many codes to display (>{})",
            limits.max_unpaged_supplied
        )));
    }
    // `contains.version` only where one expansion draws on several versions of a system; the
    // `used-codesystem` parameters say which version was used otherwise.
    let mut seen_urls = std::collections::HashSet::new();
    let several_versions: std::collections::HashSet<&str> = expansion
        .systems
        .iter()
        .filter(|cs| !seen_urls.insert(cs.meta.url.as_str()))
        .map(|cs| cs.meta.url.as_str())
        .collect();
    let stated_several = versions::systems_with_several_versions(&compose);
    let display_language = req
        .display_language
        .clone()
        .or_else(|| language::value_set_display_language(&vs));
    let prefs = display_language
        .as_deref()
        .map(language::Preferences::parse);
    let listed = status::listed_concept_extensions_by_code(&vs);
    let listed_designations = status::listed_concept_designations_by_code(&vs);
    let mut contains = Vec::with_capacity(expansion.members.len());
    // The properties returned without being asked for (label, order, weight).
    let mut auto_properties: Vec<&str> = Vec::new();
    for m in &expansion.members {
        super::budget::tick()?;
        let cs = &expansion.systems[m.system];
        let c = cs.concept(m.concept);
        let mut e = Map::new();
        e.insert("system".into(), json!(cs.meta.url));
        if !cs.version.is_empty()
            && (several_versions.contains(cs.meta.url.as_str())
                || stated_several.contains(cs.meta.url.as_str()))
        {
            e.insert("version".into(), json!(cs.version));
        }
        e.insert("code".into(), json!(c.code));
        let (display, used) = language::choose_display(cs, &c, prefs.as_ref());
        let display = if prefs.is_some() && used.is_some() {
            display
        } else {
            m.display.as_deref().or(display)
        };
        if let Some(d) = display {
            e.insert("display".into(), json!(d));
        }
        let mut copied: Vec<Json> = Vec::new();
        let listing = listed
            .get(&(cs.meta.url.as_str(), &*c.code))
            .copied()
            .flatten();
        copied.extend(super::extensions_with_urls(listing, &COPIED_LISTING_EXTENSIONS).cloned());
        if c.inactive {
            e.insert("inactive".into(), json!(true));
        }
        if c.not_selectable {
            e.insert("abstract".into(), json!(true));
        }
        if req.include_designations || !req.designations.is_empty() {
            let mut designations = language::designations_json(cs, &c, used, &req.designations);
            // Those the ValueSet gives the concept where it lists it, after the CodeSystem's.
            if let Some(ds) = listed_designations.get(&(cs.meta.url.as_str(), &*c.code)) {
                for d in *ds {
                    let d = listed_designation(d);
                    if !designations.contains(&d) {
                        designations.push(d);
                    }
                }
            }
            if !designations.is_empty() {
                e.insert("designation".into(), Json::Array(designations));
            }
        }
        let mut ext = Vec::new();
        let supplemented = cs.supplement_properties(&c.code);
        let from_supplements = |code: &str| -> Vec<&crate::store::Value> {
            supplemented
                .iter()
                .filter(|(k, _)| &**k == code)
                .map(|(_, v)| v)
                .collect()
        };
        for p in &req.properties {
            let mut values: Vec<(&str, Json)> = Vec::new();
            match p.as_str() {
                "inactive" => values.push(("valueBoolean", json!(c.inactive))),
                "status" => values.extend(c.status.as_ref().map(|s| ("valueCode", json!(s)))),
                "parent" => values.extend(c.parents.iter().map(|x| ("valueCode", json!(x)))),
                "definition" => {
                    values.extend(c.definition.as_ref().map(|d| ("valueString", json!(d))))
                }
                other => {
                    values.extend(c.property(other).map(value_json));
                    if values.is_empty() {
                        values.extend(from_supplements(other).into_iter().map(value_json));
                    }
                }
            }
            for (key, value) in values {
                let mut v = Map::new();
                v.insert("url".into(), json!("value[x]"));
                v.insert(key.into(), value);
                ext.push(json!({
                    "url": "http://hl7.org/fhir/5.0/StructureDefinition/extension-ValueSet.expansion.contains.property",
                    "extension": [{ "url": "code", "valueCode": p }, Json::Object(v)]
                }));
            }
        }
        // A CodeSystem resource's (or its supplements') concept label, order and weight are
        // returned whether asked for or not, as the reference does; so are the concept
        // extensions it copies (`resources::KEPT_CONCEPT_EXTENSIONS`) and the status of an active
        // concept marked deprecated or withdrawn. The reference also returns the status of an
        // inactive (retired) concept; the ecosystem suite's flat expansions leave it out (see
        // conformance/README.md), and `inactive` already says it.
        if cs.meta.feeds.iter().all(|f| f.starts_with("resource:")) {
            for (code, v) in c.properties.iter().chain(supplemented.iter()) {
                if let Some(x) = super::resources::kept_concept_extension(code, v) {
                    copied.push(x);
                }
            }
            if let Some(s) = c.status.as_deref().filter(|s| *s != "active")
                && !c.inactive
                && !req.properties.iter().any(|p| p == "status")
            {
                ext.push(json!({
                    "url": "http://hl7.org/fhir/5.0/StructureDefinition/extension-ValueSet.expansion.contains.property",
                    "extension": [{ "url": "code", "valueCode": "status" }, { "url": "value[x]", "valueCode": s }]
                }));
                if !auto_properties.contains(&"status") {
                    auto_properties.push("status");
                }
            }
            for (code, _) in super::resources::CONCEPT_EXTENSION_PROPERTIES {
                if req.properties.iter().any(|p| p == code) {
                    continue;
                }
                // The ValueSet's own label, order or weight where it lists the concept wins
                // over the CodeSystem's.
                let listing = listing.and_then(|x| listing_property(x, code));
                let (key, value) = match listing {
                    Some(kv) => kv,
                    None => {
                        let Some(v) = c
                            .property(code)
                            .next()
                            .or_else(|| from_supplements(code).into_iter().next())
                        else {
                            continue;
                        };
                        value_json(v)
                    }
                };
                let mut v = Map::new();
                v.insert("url".into(), json!("value[x]"));
                v.insert(key.into(), value);
                ext.push(json!({
                    "url": "http://hl7.org/fhir/5.0/StructureDefinition/extension-ValueSet.expansion.contains.property",
                    "extension": [{ "url": "code", "valueCode": code }, Json::Object(v)]
                }));
                if !auto_properties.contains(&code) {
                    auto_properties.push(code);
                }
            }
        }
        copied.extend(ext);
        if !copied.is_empty() {
            e.insert("extension".into(), Json::Array(copied));
        }
        contains.push(Json::Object(e));
    }
    let mut parameters = req.echo.clone();
    parameters.extend(evaluator.version_usage.expansion_parameters());
    if let Some(l) = &display_language
        && !parameters.iter().any(|p| p["name"] == "displayLanguage")
    {
        parameters.push(language::display_language_parameter(l));
    }
    let imported = evaluator.imported.borrow().clone();
    for v in &imported {
        parameters.push(json!({ "name": "used-valueset", "valueUri": status::value_set_label(v) }));
    }
    for cs in &expansion.systems {
        parameters.push(json!({ "name": "used-codesystem", "valueUri": cs.canonical() }));
    }
    let mut supplements: Vec<String> = expansion
        .systems
        .iter()
        .flat_map(|cs| cs.supplements.iter().map(|s| s.canonical()))
        .collect();
    supplements.dedup();
    for s in supplements {
        parameters.push(json!({ "name": "used-supplement", "valueUri": s }));
    }
    // A CodeSystem resource that holds only part of its codes is named again as a fragment
    // (a mapped register's content mode describes its release files; see `validate`).
    for cs in expansion.systems.iter().filter(|cs| {
        cs.meta.content == "fragment" && cs.meta.feeds.iter().all(|f| f.starts_with("resource:"))
    }) {
        parameters.push(json!({ "name": "used-fragment", "valueUri": cs.canonical() }));
    }
    for cs in &expansion.systems {
        if let Some(note) = status::code_system_note(cs) {
            parameters
                .push(json!({ "name": format!("warning-{note}"), "valueUri": cs.canonical() }));
        }
    }
    for v in std::iter::once(&vs).chain(imported.iter()) {
        if let Some(note) = status::value_set_note(v) {
            parameters.push(json!({ "name": format!("warning-{note}"), "valueUri": status::value_set_label(v) }));
        }
    }
    let mut exp = Map::new();
    exp.insert("identifier".into(), json!(new_uuid()));
    exp.insert("timestamp".into(), json!(crate::mapping::now_rfc3339()));
    // R5 `expansion.property`, as the R4 cross-version extension: the properties returned.
    let declared: Vec<Json> = req
        .properties
        .iter()
        .map(String::as_str)
        .chain(auto_properties.iter().copied())
        .map(|p| {
            // Each CodeSystem's declaration, then its supplements'.
            let declared_uri = expansion
                .systems
                .iter()
                .flat_map(|cs| std::iter::once(cs).chain(&cs.supplements))
                .find_map(|cs| cs.meta.properties.iter().find(|d| d.code == p)?.uri.clone());
            let uri = declared_uri
                .or_else(|| super::resources::concept_extension_property_uri(p).map(str::to_string))
                .or_else(|| {
                    // Properties every CodeSystem has, defined by FHIR.
                    matches!(p, "definition" | "status")
                        .then(|| format!("http://hl7.org/fhir/concept-properties#{p}"))
                });
            let mut parts = vec![json!({ "url": "code", "valueCode": p })];
            if let Some(u) = uri {
                parts.push(json!({ "url": "uri", "valueUri": u }));
            }
            json!({
                "url": "http://hl7.org/fhir/5.0/StructureDefinition/extension-ValueSet.expansion.property",
                "extension": parts
            })
        })
        .collect();
    if !declared.is_empty() {
        exp.insert("extension".into(), Json::Array(declared));
    }
    exp.insert("total".into(), json!(total));
    if req.offset > 0 {
        exp.insert("offset".into(), json!(req.offset));
    }
    if !parameters.is_empty() {
        exp.insert("parameter".into(), Json::Array(parameters));
    }
    if !contains.is_empty() {
        exp.insert("contains".into(), Json::Array(contains));
    }
    // The expansion carries the ValueSet's identity, not its definition.
    let mut out = Map::new();
    if let Json::Object(o) = vs {
        for (k, v) in o {
            if EXPANSION_KEEPS.contains(&k.as_str()) {
                out.insert(k, v);
            }
        }
    }
    out.insert("expansion".into(), Json::Object(exp));
    Ok(Json::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_v4_shaped_and_differ() {
        let a = new_uuid();
        let b = new_uuid();
        assert_ne!(a, b);
        assert_eq!(a.len(), "urn:uuid:".len() + 36);
        assert_eq!(&a[23..24], "4");
    }
}
