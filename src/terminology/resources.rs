//! CodeSystem and ValueSet resources: rendering stored CodeSystem versions as FHIR R4 JSON (with
//! or without concepts), and reading plain FHIR CodeSystem resources into the store's shape.

use std::sync::Arc;

use serde_json::{Map, Value as Json, json};

use super::compose::R4_FILTER_OPS;
use super::value_json;
use crate::error::FhirError;
use crate::store::{
    CodeSystemMeta, CodeSystemVersion, Concept, Designation, DesignationUse, FilterDecl,
    IndexedRelease, PropertyDecl, Registry, Release, ReleaseInfo, Value, version_id,
};

/// The resource id of a CodeSystem version: `{id}` for the latest, `{id}--{version}` otherwise.
pub fn code_system_resource_id(cs: &CodeSystemVersion, latest: bool) -> String {
    if latest || cs.version.is_empty() {
        cs.meta.id.clone()
    } else {
        format!("{}--{}", cs.meta.id, version_id(&cs.version))
    }
}

/// Renders a CodeSystem version. `with_concepts` adds the concept list (flat, with `parent`
/// properties); without it the resource says it was subsetted.
pub fn code_system_json(cs: &CodeSystemVersion, latest: bool, with_concepts: bool) -> Json {
    let m = &cs.meta;
    let mut r = Map::new();
    r.insert("resourceType".into(), json!("CodeSystem"));
    r.insert("id".into(), json!(code_system_resource_id(cs, latest)));
    if !with_concepts {
        r.insert(
            "meta".into(),
            json!({ "tag": [{
                "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
                "code": "SUBSETTED",
                "display": "Resource encoded in summary mode"
            }]}),
        );
    }
    if let Some(extra) = &m.extra {
        for (k, v) in extra {
            r.insert(k.clone(), v.clone());
        }
    }
    let releases = release_extensions(cs);
    if !releases.is_empty() {
        r.insert("extension".into(), Json::Array(releases));
    }
    r.insert("url".into(), json!(m.url));
    if !cs.version.is_empty() {
        r.insert("version".into(), json!(cs.version));
    }
    for (k, v) in [("name", &m.name), ("title", &m.title)] {
        if let Some(v) = v {
            r.insert(k.into(), json!(v));
        }
    }
    r.insert("status".into(), json!(m.status));
    if m.extra.as_ref().is_none_or(|e| !e.contains_key("date"))
        && crate::store::version_start(&cs.version).is_some()
    {
        r.insert("date".into(), json!(cs.version));
    }
    for (k, v) in [
        ("publisher", &m.publisher),
        ("description", &m.description),
        ("copyright", &m.copyright),
    ] {
        if let Some(v) = v {
            r.insert(k.into(), json!(v));
        }
    }
    r.insert("caseSensitive".into(), json!(m.case_sensitive));
    if let Some(h) = &m.hierarchy_meaning {
        r.insert("hierarchyMeaning".into(), json!(h));
    }
    r.insert("content".into(), json!(m.content));
    r.insert("count".into(), json!(cs.len()));
    // Only R4's operators are advertised (R5's `child-of` is accepted but not an R4 code); a
    // filter with none of them is left out, as `operator` is required.
    let filters: Vec<Json> = m
        .filters
        .iter()
        .filter_map(|f| {
            let ops: Vec<&String> =
                f.op.iter()
                    .filter(|op| R4_FILTER_OPS.contains(&op.as_str()))
                    .collect();
            if ops.is_empty() {
                return None;
            }
            let mut o = json!({ "code": f.code, "operator": ops, "value": f.value });
            if let Some(d) = &f.description {
                o["description"] = json!(d);
            }
            Some(o)
        })
        .collect();
    if !filters.is_empty() {
        r.insert("filter".into(), Json::Array(filters));
    }
    if !m.properties.is_empty() {
        r.insert(
            "property".into(),
            Json::Array(
                m.properties
                    .iter()
                    .map(|p| {
                        let mut o = json!({ "code": p.code });
                        if let Some(u) = &p.uri {
                            o["uri"] = json!(u);
                        }
                        if let Some(d) = &p.description {
                            o["description"] = json!(d);
                        }
                        o["type"] = json!(p.kind);
                        o
                    })
                    .collect(),
            ),
        );
    }
    if with_concepts {
        r.insert(
            "concept".into(),
            Json::Array(cs.iter().map(|(_, c)| concept_json(&c)).collect()),
        );
    }
    Json::Object(r)
}

/// Extension saying which feed release a mapped CodeSystem version is made of.
pub const RELEASE_EXTENSION: &str = "https://fhir-registers.org/fhir/StructureDefinition/release";

/// A release's source as shown to clients: a URL as it is, a local file by its name only.
fn source_name(source: &str) -> &str {
    if crate::source::is_url(source) {
        source
    } else {
        source.rsplit(['/', '\\']).next().unwrap_or(source)
    }
}

/// One `release` extension per register feed release the version is made of (none for plain
/// FHIR CodeSystems).
fn release_extensions(cs: &CodeSystemVersion) -> Vec<Json> {
    cs.parts
        .iter()
        .filter(|p| !p.info.feed.starts_with("resource:"))
        .map(|p| {
            let i = &p.info;
            json!({
                "url": RELEASE_EXTENSION,
                "extension": [
                    { "url": "feed", "valueString": i.feed },
                    { "url": "version", "valueString": i.version },
                    { "url": "mapping", "valueString": i.mapping },
                    { "url": "source", "valueString": source_name(&i.source) },
                    { "url": "concepts", "valueInteger": p.len() },
                    { "url": "imported", "valueDateTime": i.imported_at },
                ]
            })
        })
        .collect()
}

/// One concept as `CodeSystem.concept` (flat).
pub fn concept_json(c: &Concept) -> Json {
    let mut o = Map::new();
    o.insert("code".into(), json!(c.code));
    if let Some(d) = &c.display {
        o.insert("display".into(), json!(d));
    }
    if let Some(d) = &c.definition {
        o.insert("definition".into(), json!(d));
    }
    if !c.designations.is_empty() {
        o.insert(
            "designation".into(),
            Json::Array(c.designations.iter().map(designation_json).collect()),
        );
    }
    let mut props: Vec<Json> = Vec::new();
    if let Some(s) = &c.status {
        props.push(json!({ "code": "status", "valueCode": s }));
    }
    if c.inactive {
        props.push(json!({ "code": "inactive", "valueBoolean": true }));
    }
    if c.not_selectable && !c.properties.iter().any(|(k, _)| &**k == "notSelectable") {
        props.push(json!({ "code": "notSelectable", "valueBoolean": true }));
    }
    for p in &c.parents {
        props.push(json!({ "code": "parent", "valueCode": p }));
    }
    let mut extensions: Vec<Json> = Vec::new();
    for (code, v) in &c.properties {
        if let Some(e) = kept_concept_extension(code, v) {
            extensions.push(e);
            continue;
        }
        let (key, value) = value_json(v);
        let mut p = Map::new();
        p.insert("code".into(), json!(code));
        p.insert(key.into(), value);
        props.push(Json::Object(p));
    }
    if !props.is_empty() {
        o.insert("property".into(), Json::Array(props));
    }
    if !extensions.is_empty() {
        o.insert("extension".into(), Json::Array(extensions));
    }
    Json::Object(o)
}

/// One designation as FHIR JSON.
pub fn designation_json(d: &Designation) -> Json {
    let mut o = Map::new();
    // Its own extensions, as the CodeSystem gave them (the reference copies them into
    // expansions whole).
    if let Some(x) = d
        .extensions
        .as_deref()
        .and_then(|x| serde_json::from_str::<Json>(x).ok())
    {
        o.insert("extension".into(), x);
    }
    if let Some(l) = &d.language {
        o.insert("language".into(), json!(l));
    }
    if let Some(u) = &d.use_ {
        let coding = super::coding_json(&u.system, &u.code, u.display.as_deref());
        o.insert("use".into(), coding);
    }
    o.insert("value".into(), json!(d.value));
    Json::Object(o)
}

fn text(obj: &Json, key: &str) -> Option<String> {
    obj.get(key).and_then(Json::as_str).map(str::to_string)
}

/// Reads a plain FHIR R4 CodeSystem resource into metadata and one release. `origin` names the
/// file for errors and provenance.
pub fn code_system_from_fhir(
    resource: &Json,
    origin: &str,
) -> Result<(CodeSystemMeta, Release), FhirError> {
    let invalid = |m: String| FhirError::Invalid(format!("{origin}: {m}"));
    if resource.get("resourceType").and_then(Json::as_str) != Some("CodeSystem") {
        return Err(invalid("not a CodeSystem resource".into()));
    }
    let url = text(resource, "url").ok_or_else(|| invalid("CodeSystem has no url".into()))?;
    let id = text(resource, "id").unwrap_or_else(|| crate::mapping::default_id(&url));
    let version = text(resource, "version").unwrap_or_default();
    let properties: Vec<PropertyDecl> = resource
        .get("property")
        .and_then(Json::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|p| {
                    Some(PropertyDecl {
                        code: text(p, "code")?,
                        kind: text(p, "type").unwrap_or_else(|| "string".into()),
                        uri: text(p, "uri"),
                        description: text(p, "description"),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let filters: Vec<FilterDecl> = resource
        .get("filter")
        .and_then(Json::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|f| {
                    Some(FilterDecl {
                        code: text(f, "code")?,
                        op: f
                            .get("operator")
                            .and_then(Json::as_array)
                            .map(|o| {
                                o.iter()
                                    .filter_map(|x| x.as_str().map(str::to_string))
                                    .collect()
                            })
                            .unwrap_or_default(),
                        value: text(f, "value").unwrap_or_default(),
                        description: text(f, "description"),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    const MODELLED: [&str; 16] = [
        "resourceType",
        "id",
        "url",
        "version",
        "name",
        "title",
        "status",
        "publisher",
        "description",
        "copyright",
        "caseSensitive",
        "content",
        "hierarchyMeaning",
        "property",
        "filter",
        "concept",
    ];
    let extra: Map<String, Json> = resource
        .as_object()
        .map(|o| {
            o.iter()
                .filter(|(k, _)| {
                    !MODELLED.contains(&k.as_str())
                        && k.as_str() != "count"
                        && k.as_str() != "text"
                        && k.as_str() != "meta"
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default();
    let meta = CodeSystemMeta {
        url: url.clone(),
        id: id.clone(),
        name: text(resource, "name"),
        title: text(resource, "title"),
        status: text(resource, "status").unwrap_or_else(|| "active".into()),
        publisher: text(resource, "publisher"),
        description: text(resource, "description"),
        copyright: text(resource, "copyright"),
        case_sensitive: resource
            .get("caseSensitive")
            .and_then(Json::as_bool)
            .unwrap_or(true),
        content: text(resource, "content").unwrap_or_else(|| "complete".into()),
        hierarchy_meaning: text(resource, "hierarchyMeaning"),
        properties: properties.clone(),
        filters,
        feeds: vec![format!("resource:{id}")],
        extra: (!extra.is_empty()).then_some(extra),
        definition_rank: Vec::new(),
    };
    let mut concepts = Vec::new();
    let abstract_code = super::not_selectable_code(&properties);
    if let Some(list) = resource.get("concept").and_then(Json::as_array) {
        for c in list {
            read_concepts(c, None, abstract_code, &mut concepts, origin)?;
        }
    }
    // Stored in code order; the definition order is kept beside it (expansions list concepts
    // as the resource does).
    let mut ranked: Vec<(usize, Concept)> = concepts.into_iter().enumerate().collect();
    ranked.sort_by(|a, b| a.1.code.cmp(&b.1.code).then(a.0.cmp(&b.0)));
    ranked.dedup_by(|a, b| a.1.code == b.1.code);
    let mut order: Vec<(usize, u32)> = ranked
        .iter()
        .enumerate()
        .map(|(sorted, (defined, _))| (*defined, sorted as u32))
        .collect();
    order.sort_unstable();
    let mut definition_rank = vec![0u32; ranked.len()];
    for (rank, (_, sorted)) in order.iter().enumerate() {
        definition_rank[*sorted as usize] = rank as u32;
    }
    let concepts: Vec<Concept> = ranked.into_iter().map(|(_, c)| c).collect();
    let meta = CodeSystemMeta {
        definition_rank,
        ..meta
    };
    let release = Release {
        info: ReleaseInfo {
            feed: format!("resource:{id}"),
            mapping: format!("resource:{id}"),
            version,
            source: origin.to_string(),
            rows_read: concepts.len() as u64,
            concepts: concepts.len() as u64,
            mapping_hash: String::new(),
            source_hash: crate::source::ContentHash::of(resource.to_string().as_bytes()),
            imported_at: crate::mapping::now_rfc3339(),
        },
        concepts: concepts.into(),
    };
    Ok((meta, release))
}

/// Applies the CodeSystem supplements named by `useSupplement` canonicals (`url` or
/// `url|version`) to the CodeSystem versions they supplement, in place in `registry`. A
/// supplement that is not known is an error ("Required supplement not found").
pub fn apply_supplements(registry: &mut Registry, canonicals: &[String]) -> Result<(), FhirError> {
    for canonical in canonicals {
        let (url, version) = match canonical.split_once('|') {
            Some((u, v)) => (u, Some(v)),
            None => (canonical.as_str(), None),
        };
        let supplement = registry
            .code_system(url, version)
            .filter(|s| s.meta.content == "supplement")
            .ok_or_else(|| {
                FhirError::NotFound(format!("Required supplement not found: {canonical}"))
            })?;
        let Some(target) = supplement
            .meta
            .extra
            .as_ref()
            .and_then(|e| e.get("supplements"))
            .and_then(Json::as_str)
        else {
            continue;
        };
        let (base_url, base_version) = match target.split_once('|') {
            Some((u, v)) => (u, Some(v)),
            None => (target, None),
        };
        let bases: Vec<Arc<CodeSystemVersion>> = registry
            .code_system_versions(base_url)
            .iter()
            .filter(|b| base_version.is_none_or(|v| b.version == v))
            .cloned()
            .collect();
        for base in bases {
            // Named twice (a `useSupplement` and the ValueSet's extension): applied once.
            if base
                .supplements
                .iter()
                .any(|s| s.canonical() == supplement.canonical())
            {
                continue;
            }
            registry.add_code_system_arc(Arc::new(base.with_supplement(supplement.clone())));
        }
    }
    Ok(())
}

/// Concept extensions read as properties: (property code, extension url). The reference server
/// returns them in expansions as the `label`, `order` and `weight` properties
/// (`http://hl7.org/fhir/concept-properties#label`, `#order`, `#itemWeight`).
pub const CONCEPT_EXTENSION_PROPERTIES: [(&str, &str); 3] = [
    (
        "label",
        "http://hl7.org/fhir/StructureDefinition/codesystem-label",
    ),
    (
        "order",
        "http://hl7.org/fhir/StructureDefinition/codesystem-conceptOrder",
    ),
    (
        "weight",
        "http://hl7.org/fhir/StructureDefinition/itemWeight",
    ),
];

/// Concept extensions the reference server copies into an expansion's `contains` as they are
/// (FHIRsmith `tx/workers/expand.js`, `includeCode`). A CodeSystem resource's concept keeps them
/// as properties whose code is the extension's URL and whose value is the extension's JSON text
/// (see [`kept_concept_extension`]): `$expand` copies them back, `$lookup` leaves them out, and
/// a rendered CodeSystem shows them as extensions again.
pub const KEPT_CONCEPT_EXTENSIONS: [&str; 4] = [
    "http://hl7.org/fhir/StructureDefinition/coding-sctdescid",
    "http://hl7.org/fhir/StructureDefinition/rendering-style",
    "http://hl7.org/fhir/StructureDefinition/rendering-xhtml",
    "http://hl7.org/fhir/StructureDefinition/codesystem-alternate",
];

/// The extension a concept property stands for, if it is one of the
/// [`KEPT_CONCEPT_EXTENSIONS`] (its code is the URL, its value the extension's JSON text).
pub fn kept_concept_extension(code: &str, value: &Value) -> Option<Json> {
    if !KEPT_CONCEPT_EXTENSIONS.contains(&code) {
        return None;
    }
    serde_json::from_str(&value.as_text()).ok()
}

/// The concept-properties URI of each property read from a concept extension.
pub fn concept_extension_property_uri(code: &str) -> Option<&'static str> {
    match code {
        "label" => Some("http://hl7.org/fhir/concept-properties#label"),
        "order" => Some("http://hl7.org/fhir/concept-properties#order"),
        "weight" => Some("http://hl7.org/fhir/concept-properties#itemWeight"),
        _ => None,
    }
}

/// The extension by which a ValueSet names a CodeSystem supplement it needs.
pub const VALUESET_SUPPLEMENT: &str = "http://hl7.org/fhir/StructureDefinition/valueset-supplement";

/// The supplements a ValueSet names with the `valueset-supplement` extension (`url` or
/// `url|version`).
pub fn value_set_supplements(vs: &Json) -> Vec<String> {
    vs.get("extension")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
        .filter(|e| e.get("url").and_then(Json::as_str) == Some(VALUESET_SUPPLEMENT))
        .filter_map(|e| {
            e.get("valueCanonical")
                .or_else(|| e.get("valueUri"))
                .and_then(Json::as_str)
                .map(str::to_string)
        })
        .collect()
}

/// `registry` with the supplements a ValueSet names applied (`None` when it names none): an
/// unknown one is a 404 (`Required supplement not found`), as for `useSupplement`.
pub fn with_value_set_supplements(
    registry: &Registry,
    vs: &Json,
) -> Result<Option<Registry>, FhirError> {
    let named = value_set_supplements(vs);
    if named.is_empty() {
        return Ok(None);
    }
    let mut out = registry.overlay(Vec::new(), Vec::new(), Vec::new());
    apply_supplements(&mut out, &named)?;
    Ok(Some(out))
}

/// A plain FHIR CodeSystem as a servable CodeSystem version.
pub fn code_system_version_from_fhir(
    resource: &Json,
    origin: &str,
) -> Result<CodeSystemVersion, FhirError> {
    let (meta, release) = code_system_from_fhir(resource, origin)?;
    let version = release.info.version.clone();
    Ok(CodeSystemVersion::new(
        std::sync::Arc::new(meta),
        version,
        vec![std::sync::Arc::new(IndexedRelease::new(release))],
    ))
}

/// Reads one concept and its nested ones. `abstract_code` is the CodeSystem's code for the
/// `notSelectable` property: a concept stating it `true` is abstract, and the property is kept
/// as stated (so that filters can tell `false` from absent).
fn read_concepts(
    c: &Json,
    parent: Option<&str>,
    abstract_code: &str,
    out: &mut Vec<Concept>,
    origin: &str,
) -> Result<(), FhirError> {
    super::budget::tick()?;
    let code = text(c, "code")
        .ok_or_else(|| FhirError::Invalid(format!("{origin}: a concept has no code")))?;
    let mut k = Concept::new(code.as_str());
    k.display = text(c, "display").map(Into::into);
    k.definition = text(c, "definition").map(Into::into);
    if let Some(p) = parent {
        k.parents.push(p.into());
    }
    if let Some(ds) = c.get("designation").and_then(Json::as_array) {
        for d in ds {
            let Some(value) = text(d, "value") else {
                continue;
            };
            k.designations.push(Designation {
                language: text(d, "language").map(Into::into),
                use_: d.get("use").and_then(|u| {
                    Some(DesignationUse {
                        system: text(u, "system")?.into(),
                        code: text(u, "code")?.into(),
                        display: text(u, "display").map(Into::into),
                    })
                }),
                value: value.into(),
                extensions: d
                    .get("extension")
                    .filter(|x| x.as_array().is_some_and(|a| !a.is_empty()))
                    .map(|x| x.to_string().into()),
            });
        }
    }
    // The concept extensions the reference returns as expansion properties (label, order,
    // weight), kept as properties of those codes; those it copies into expansions as they are,
    // kept whole; a standards status (`deprecated`, `withdrawn`) is the concept's status unless a
    // `status` property says otherwise.
    for e in c
        .get("extension")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(url) = text(e, "url")
            && KEPT_CONCEPT_EXTENSIONS.contains(&url.as_str())
        {
            k.properties
                .push((url.into(), Value::String(e.to_string().into())));
            continue;
        }
        if text(e, "url").as_deref() == Some(super::status::STANDARDS_STATUS)
            && let Some(s) = text(e, "valueCode")
            && s != "active"
        {
            k.status = Some(s.into());
            continue;
        }
        let Some((code, _)) = text(e, "url").and_then(|u| {
            CONCEPT_EXTENSION_PROPERTIES
                .iter()
                .find(|(_, url)| *url == u)
                .copied()
        }) else {
            continue;
        };
        let value = match (
            e.get("valueString"),
            e.get("valueDecimal"),
            e.get("valueInteger"),
        ) {
            (Some(Json::String(s)), _, _) => Value::String(s.as_str().into()),
            (_, Some(n), _) | (_, _, Some(n)) if n.is_number() => {
                Value::Decimal(n.to_string().into())
            }
            _ => continue,
        };
        k.properties.push((code.into(), value));
    }
    if let Some(ps) = c.get("property").and_then(Json::as_array) {
        for p in ps {
            let Some(pcode) = text(p, "code") else {
                continue;
            };
            let Some((key, v)) = p
                .as_object()
                .and_then(|o| o.iter().find(|(k, _)| k.starts_with("value")))
            else {
                continue;
            };
            let value = match (key.as_str(), v) {
                ("valueCode", Json::String(s)) => Value::Code(s.as_str().into()),
                ("valueString", Json::String(s)) => Value::String(s.as_str().into()),
                ("valueDateTime", Json::String(s)) => Value::DateTime(s.as_str().into()),
                ("valueBoolean", Json::Bool(b)) => Value::Boolean(*b),
                ("valueInteger", n) => Value::Integer(n.as_i64().unwrap_or_default()),
                ("valueDecimal", n) => Value::Decimal(n.to_string().into()),
                ("valueCoding", coding) => Value::Coding {
                    system: text(coding, "system").unwrap_or_default().into(),
                    code: text(coding, "code").unwrap_or_default().into(),
                    display: text(coding, "display").map(Into::into),
                },
                (_, other) => Value::String(other.to_string().into()),
            };
            match pcode.as_str() {
                "parent" => k.parents.push(value.as_text().as_ref().into()),
                "inactive" => k.inactive = value == Value::Boolean(true),
                code if super::is_not_selectable(code, abstract_code) => {
                    k.not_selectable |= value.as_text().eq_ignore_ascii_case("true");
                    k.properties.push((pcode.into(), value));
                }
                "status" => {
                    let s = value.as_text().into_owned();
                    if matches!(s.as_str(), "retired" | "inactive") {
                        k.inactive = true;
                    }
                    k.status = Some(s.into());
                }
                "child" => {}
                _ => k.properties.push((pcode.into(), value)),
            }
        }
    }
    out.push(k);
    if let Some(children) = c.get("concept").and_then(Json::as_array) {
        for ch in children {
            read_concepts(ch, Some(&code), abstract_code, out, origin)?;
        }
    }
    Ok(())
}
