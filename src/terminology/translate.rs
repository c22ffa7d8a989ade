//! ConceptMaps and `ConceptMap/$translate`: explicit maps (plain FHIR ConceptMap resources, R4
//! or R5 shaped) and maps a mapping file derives from register columns (a concept's code or
//! property on one side, another property or the code on the other).
//! <http://hl7.org/fhir/R4/conceptmap-operation-translate.html>

use serde_json::{Map, Value as Json, json};

use super::coding_json;
use crate::error::FhirError;
use crate::fhir::params::{Coding, OperationParams, ParametersOut, part};
use crate::store::{
    CodeSystemVersion, Concept, ConceptMapEntry, DerivedMap, MapElement, MapGroup, MapKind,
    MapSide, MapTarget, Registry,
};

/// A `$translate` request, R4 or R5 parameter names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TranslateRequest {
    /// ConceptMap canonical, if one is named.
    pub url: Option<String>,
    /// ConceptMap version.
    pub map_version: Option<String>,
    /// The coding to translate.
    pub coding: Coding,
    /// Translate from the target side back to the source side.
    pub reverse: bool,
    /// System of the other side, if given.
    pub other_system: Option<String>,
    /// `date` (as `YYYY-MM-DD`): translate as the mappings stood that day. A map derived from a
    /// register reads the release that describes the day (the one in force then, or the first
    /// release for a day before it) and only its concepts whose business dates cover the day.
    pub date: Option<String>,
}

impl TranslateRequest {
    /// Builds the request from operation parameters.
    pub fn from_params(p: &OperationParams) -> Result<Self, FhirError> {
        let first_coding = |names: &[&str]| -> Result<Option<Coding>, FhirError> {
            for n in names {
                if let Some(c) = p.coding(n)? {
                    return Ok(Some(c));
                }
                if let Some(cc) = p.codeable_concept(n)?
                    && let Some(c) = cc.into_iter().next()
                {
                    return Ok(Some(c));
                }
            }
            Ok(None)
        };
        let r4_reverse = p.boolean("reverse")?.unwrap_or(false);
        let forward = match (
            p.text("sourceCode")?.or(p.text("code")?),
            first_coding(&[
                "sourceCoding",
                "coding",
                "sourceCodeableConcept",
                "codeableConcept",
            ])?,
        ) {
            (Some(code), _) => Some(Coding {
                system: p.text("sourceSystem")?.or(p.text("system")?),
                version: p.text("sourceVersion")?.or(p.text("version")?),
                code: Some(code),
                display: None,
            }),
            (None, c) => c,
        };
        let backward = match (
            p.text("targetCode")?,
            first_coding(&["targetCoding", "targetCodeableConcept"])?,
        ) {
            (Some(code), _) => Some(Coding {
                system: p.text("targetSystem")?,
                code: Some(code),
                ..Coding::default()
            }),
            (None, c) => c,
        };
        let (coding, reverse, other_system) = match (forward, backward) {
            (Some(c), None) if r4_reverse => (c, true, p.text("targetsystem")?),
            (Some(c), None) => (
                c,
                false,
                p.text("targetSystem")?.or(p.text("targetsystem")?),
            ),
            (None, Some(c)) => (c, true, p.text("sourceSystem")?),
            (Some(_), Some(_)) => {
                return Err(FhirError::Invalid(
                    "give the code to translate on one side only (source or target)".into(),
                ));
            }
            (None, None) => {
                return Err(FhirError::Required(
                    "$translate needs a code (sourceCode/code with a system, or a coding)".into(),
                ));
            }
        };
        if coding.code.as_deref().is_none_or(str::is_empty) {
            return Err(FhirError::Invalid("the code to translate is empty".into()));
        }
        let date = match p.text("date")? {
            None => None,
            Some(d) => Some(crate::store::date_param(&d).ok_or_else(|| {
                FhirError::Invalid(format!(
                    "The parameter 'date' value '{d}' is not a FHIR date or dateTime (YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm:ss+zz:zz)"
                ))
            })?),
        };
        Ok(Self {
            url: p.text("url")?,
            map_version: p.text("conceptMapVersion")?,
            coding,
            reverse,
            other_system,
            date,
        })
    }
}

/// Reads a FHIR ConceptMap (R4 `equivalence` or R5 `relationship`) into an explicit map.
pub fn concept_map_from_fhir(resource: &Json) -> Result<ConceptMapEntry, FhirError> {
    let text = |v: &Json, k: &str| v.get(k).and_then(Json::as_str).map(str::to_string);
    let url = text(resource, "url")
        .ok_or_else(|| FhirError::Invalid("a ConceptMap needs a url".into()))?;
    let mut groups = Vec::new();
    for g in resource
        .get("group")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
    {
        let elements = g
            .get("element")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
            .filter_map(|e| {
                Some(MapElement {
                    code: text(e, "code")?,
                    display: text(e, "display"),
                    no_map: e.get("noMap").and_then(Json::as_bool).unwrap_or(false),
                    targets: e
                        .get("target")
                        .and_then(Json::as_array)
                        .into_iter()
                        .flatten()
                        .map(|t| MapTarget {
                            code: text(t, "code"),
                            display: text(t, "display"),
                            relationship: text(t, "relationship")
                                .or_else(|| {
                                    text(t, "equivalence").map(|e| relationship_of(&e).to_string())
                                })
                                .unwrap_or_else(|| "equivalent".into()),
                            comment: text(t, "comment"),
                        })
                        .collect(),
                })
            })
            .collect();
        let unmapped = g.get("unmapped").and_then(|u| {
            (text(u, "mode").as_deref() == Some("fixed")).then(|| MapTarget {
                code: text(u, "code"),
                display: text(u, "display"),
                relationship: text(u, "relationship")
                    .or_else(|| text(u, "equivalence").map(|e| relationship_of(&e).to_string()))
                    .unwrap_or_else(|| "related-to".into()),
                comment: None,
            })
        });
        groups.push(MapGroup {
            source: text(g, "source").unwrap_or_default(),
            source_version: text(g, "sourceVersion"),
            target: text(g, "target").unwrap_or_default(),
            target_version: text(g, "targetVersion"),
            elements,
            unmapped,
        });
    }
    Ok(ConceptMapEntry {
        id: text(resource, "id").unwrap_or_else(|| crate::mapping::default_id(&url)),
        version: text(resource, "version"),
        url,
        resource: resource.clone(),
        kind: MapKind::Explicit(groups),
    })
}

/// R4 `equivalence` → R5 `relationship`.
pub fn relationship_of(equivalence: &str) -> &'static str {
    match equivalence {
        "equivalent" | "equal" => "equivalent",
        "wider" | "subsumes" => "source-is-narrower-than-target",
        "narrower" | "specializes" => "source-is-broader-than-target",
        "disjoint" | "unmatched" => "not-related-to",
        _ => "related-to",
    }
}

/// R5 `relationship` → R4 `equivalence`.
pub fn equivalence_of(relationship: &str) -> &'static str {
    match relationship {
        "equivalent" => "equivalent",
        "source-is-narrower-than-target" => "wider",
        "source-is-broader-than-target" => "narrower",
        "not-related-to" => "disjoint",
        _ => "relatedto",
    }
}

struct Match {
    concept: Json,
    source: Option<Json>,
    relationship: String,
    origin: String,
    comment: Option<String>,
}

fn derived_matches(
    registry: &Registry,
    map: &ConceptMapEntry,
    d: &DerivedMap,
    req: &TranslateRequest,
    out: &mut Vec<Match>,
) {
    let (from, to, from_system, to_system) = if req.reverse {
        (&d.target, &d.source, &d.target_system, &d.source_system)
    } else {
        (&d.source, &d.target, &d.source_system, &d.target_system)
    };
    if req
        .coding
        .system
        .as_deref()
        .is_some_and(|s| s != from_system)
    {
        return;
    }
    if req.other_system.as_deref().is_some_and(|s| s != to_system) {
        return;
    }
    let cs = match &req.date {
        None => registry.code_system(&d.code_system, None),
        Some(day) => registry.code_system_describing(&d.code_system, day),
    };
    let Some(cs) = cs else {
        return;
    };
    let code = req.coding.code.as_deref().unwrap_or_default();
    let origin = map_label(map);
    let value_of = |c: &crate::store::Concept, side: &MapSide| -> Vec<String> {
        match side {
            MapSide::Code => vec![c.code.to_string()],
            MapSide::Property(p) => c.property(p).map(|v| v.as_text().into_owned()).collect(),
        }
    };
    let concepts: Vec<std::borrow::Cow<'_, crate::store::Concept>> = match from {
        MapSide::Code => cs.find(code).map(|r| cs.concept(r)).into_iter().collect(),
        // The property index (built once per release) rather than a scan of every concept.
        MapSide::Property(p) => cs
            .with_property(p, &[code.to_string()])
            .into_iter()
            .map(|r| cs.concept(r))
            .collect(),
    };
    let on_the_day = |c: &crate::store::Concept| req.date.as_deref().is_none_or(|d| c.valid_on(d));
    // A property's codes take their display from their own CodeSystem when the server has it
    // (a practice's parent organisation from the ODS CodeSystem).
    let other = match to {
        MapSide::Code => None,
        MapSide::Property(_) => registry.code_system(to_system, None),
    };
    for c in concepts.iter().filter(|c| on_the_day(c)) {
        for target in value_of(c, to) {
            let display: Option<String> = match (to, &other) {
                (MapSide::Code, _) => c.display.as_deref().map(str::to_string),
                (_, Some(cs)) => cs
                    .find(&target)
                    .and_then(|r| cs.concept(r).display.as_deref().map(str::to_string)),
                _ => None,
            };
            out.push(Match {
                concept: coding_json(to_system, &target, display.as_deref()),
                source: req.reverse.then(|| coding_json(from_system, code, None)),
                relationship: d.relationship.clone(),
                origin: origin.clone(),
                comment: None,
            });
        }
    }
}

fn map_label(map: &ConceptMapEntry) -> String {
    match &map.version {
        Some(v) => format!("{}|{v}", map.url),
        None => map.url.clone(),
    }
}

fn explicit_matches(
    map: &ConceptMapEntry,
    groups: &[MapGroup],
    req: &TranslateRequest,
    out: &mut Vec<Match>,
) {
    let code = req.coding.code.as_deref().unwrap_or_default();
    let origin = map_label(map);
    for g in groups {
        if !req.reverse {
            if req.coding.system.as_deref().is_some_and(|s| s != g.source) {
                continue;
            }
            if req.other_system.as_deref().is_some_and(|s| s != g.target) {
                continue;
            }
            let mut found = false;
            for e in g.elements.iter().filter(|e| e.code == code) {
                found = true;
                for t in &e.targets {
                    let Some(tc) = &t.code else { continue };
                    out.push(Match {
                        concept: coding_json(&g.target, tc, t.display.as_deref()),
                        source: None,
                        relationship: t.relationship.clone(),
                        origin: origin.clone(),
                        comment: t.comment.clone(),
                    });
                }
            }
            if let (false, Some(u)) = (found, &g.unmapped)
                && let Some(uc) = &u.code
            {
                out.push(Match {
                    concept: coding_json(&g.target, uc, u.display.as_deref()),
                    source: None,
                    relationship: u.relationship.clone(),
                    origin: origin.clone(),
                    comment: None,
                });
            }
        } else {
            if req.coding.system.as_deref().is_some_and(|s| s != g.target) {
                continue;
            }
            if req.other_system.as_deref().is_some_and(|s| s != g.source) {
                continue;
            }
            for e in &g.elements {
                for t in e.targets.iter().filter(|t| t.code.as_deref() == Some(code)) {
                    out.push(Match {
                        concept: coding_json(&g.target, code, t.display.as_deref()),
                        source: Some(coding_json(&g.source, &e.code, e.display.as_deref())),
                        relationship: t.relationship.clone(),
                        origin: origin.clone(),
                        comment: t.comment.clone(),
                    });
                }
            }
        }
    }
}

/// Answers `$translate`: `result`, `message` when nothing maps, and a `match` per translation.
pub fn translate(registry: &Registry, req: &TranslateRequest) -> Result<Json, FhirError> {
    let maps: Vec<std::sync::Arc<ConceptMapEntry>> = match &req.url {
        Some(url) => vec![
            registry
                .concept_map(url, req.map_version.as_deref())
                .ok_or_else(|| {
                    FhirError::NotFound(format!(
                        "A definition for the ConceptMap '{url}' could not be found"
                    ))
                })?,
        ],
        None => registry.all_concept_maps().cloned().collect(),
    };
    let mut matches = Vec::new();
    for map in &maps {
        match &map.kind {
            MapKind::Explicit(groups) => explicit_matches(map, groups, req, &mut matches),
            MapKind::Derived(d) => derived_matches(registry, map, d, req, &mut matches),
        }
    }
    let result = matches.iter().any(|m| m.relationship != "not-related-to");
    let mut out = ParametersOut::new();
    out.value("result", "valueBoolean", json!(result));
    if !result {
        out.value(
            "message",
            "valueString",
            json!(format!(
                "No translations found for '{}#{}'",
                req.coding.system.as_deref().unwrap_or(""),
                req.coding.code.as_deref().unwrap_or("")
            )),
        );
    }
    for m in matches {
        let mut parts = vec![
            part(
                "equivalence",
                "valueCode",
                json!(equivalence_of(&m.relationship)),
            ),
            part("relationship", "valueCode", json!(m.relationship)),
            part("concept", "valueCoding", m.concept),
        ];
        if let Some(s) = m.source {
            parts.push(part("source", "valueCoding", s));
        }
        parts.push(part("originMap", "valueCanonical", json!(m.origin)));
        if let Some(c) = m.comment {
            parts.push(part("comment", "valueString", json!(c)));
        }
        out.parts("match", parts);
    }
    Ok(out.build())
}

/// A ConceptMap resource for read/search: explicit maps as given; derived maps with their
/// elements listed when the CodeSystem is small (`max_elements`). Otherwise — a large CodeSystem,
/// none loaded yet, or no concept with a target — the resource has no `group` (R4 requires at
/// least one `element` in a group): it keeps `sourceUri`/`targetUri`, is tagged `SUBSETTED`, and
/// its description says the mappings are available through `$translate`.
pub fn concept_map_json(registry: &Registry, map: &ConceptMapEntry, max_elements: usize) -> Json {
    let MapKind::Derived(d) = &map.kind else {
        return map.resource.clone();
    };
    let mut r = match &map.resource {
        Json::Object(o) => o.clone(),
        _ => Map::new(),
    };
    let elements = match registry.code_system(&d.code_system, None) {
        Some(cs) if cs.len() <= max_elements => derived_elements(&cs, d),
        _ => Vec::new(),
    };
    if elements.is_empty() {
        r.insert(
            "meta".into(),
            json!({ "tag": [{ "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED" }] }),
        );
        let note = format!(
            "The mappings are not listed in this resource: translate a code with ConceptMap/{}/$translate.",
            map.id
        );
        let description = match r.get("description").and_then(Json::as_str) {
            Some(d) => format!("{d}\n\n{note}"),
            None => note,
        };
        r.insert("description".into(), json!(description));
    } else {
        r.insert(
            "group".into(),
            json!([{ "source": d.source_system, "target": d.target_system, "element": elements }]),
        );
    }
    Json::Object(r)
}

/// The `group.element`s of a derived map: one per source value of a concept with a target.
fn derived_elements(cs: &CodeSystemVersion, d: &DerivedMap) -> Vec<Json> {
    let side = |c: &Concept, s: &MapSide| -> Vec<String> {
        match s {
            MapSide::Code => vec![c.code.to_string()],
            MapSide::Property(p) => c.property(p).map(|v| v.as_text().into_owned()).collect(),
        }
    };
    let mut elements = Vec::new();
    for (_, c) in cs.iter() {
        let targets = side(&c, &d.target);
        if targets.is_empty() {
            continue;
        }
        let target: Vec<Json> = targets
            .iter()
            .map(|t| json!({ "code": t, "equivalence": equivalence_of(&d.relationship) }))
            .collect();
        for s in side(&c, &d.source) {
            elements.push(json!({ "code": s, "target": target }));
        }
    }
    elements
}
