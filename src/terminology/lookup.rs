//! `CodeSystem/$lookup`: a code's display, designations and properties.
//! <http://hl7.org/fhir/R4/codesystem-operation-lookup.html>

use std::sync::Arc;

use serde_json::{Value as Json, json};

use super::{concept_property_parts, language, resolve_code_system, value_json};
use crate::error::FhirError;
use crate::fhir::params::{OperationParams, ParametersOut, part};
use crate::store::{CodeSystemVersion, ConceptRef, Designation, DesignationUse, Registry};

/// A `$lookup` request, whatever the transport.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LookupRequest {
    /// CodeSystem URL.
    pub system: String,
    /// The code.
    pub code: String,
    /// CodeSystem version.
    pub version: Option<String>,
    /// Properties asked for (empty or `*` = all).
    pub properties: Vec<String>,
    /// Language for display and designations.
    pub display_language: Option<String>,
}

impl LookupRequest {
    /// Builds the request from operation parameters.
    pub fn from_params(p: &OperationParams) -> Result<Self, FhirError> {
        let coding = p.coding("coding")?;
        let (system, code, version) = match (p.text("system")?, p.text("code")?, coding) {
            (Some(s), Some(c), None) => (s, c, p.text("version")?),
            (None, None, Some(c)) => match (c.system, c.code) {
                (Some(s), Some(code)) => (s, code, c.version.or(p.text("version")?)),
                _ => {
                    return Err(FhirError::Invalid(
                        "the 'coding' parameter needs both a system and a code".into(),
                    ));
                }
            },
            (_, _, Some(_)) => {
                return Err(FhirError::Invalid(
                    "give either 'system' and 'code', or 'coding', not both".into(),
                ));
            }
            (None, Some(_), None) => {
                return Err(FhirError::Required(
                    "the 'system' parameter is required with 'code'".into(),
                ));
            }
            (_, None, None) => {
                return Err(FhirError::Required(
                    "$lookup needs 'system' and 'code', or 'coding'".into(),
                ));
            }
        };
        if code.is_empty() || system.is_empty() {
            return Err(FhirError::Invalid(
                "'system' and 'code' must not be empty".into(),
            ));
        }
        Ok(Self {
            system,
            code,
            version,
            properties: p.texts("property"),
            display_language: p.text("displayLanguage")?,
        })
    }
}

/// Answers a `$lookup`: a `Parameters` resource, or 404 for an unknown system or code.
pub fn lookup(registry: &Registry, req: &LookupRequest) -> Result<Json, FhirError> {
    lookup_parameters(registry, req).map(ParametersOut::build)
}

/// The CodeSystem version (the latest when `version` is `None`) and the concept a `$lookup` of
/// `code` reads, or the 404 it answers.
pub fn find_concept(
    registry: &Registry,
    system: &str,
    version: Option<&str>,
    code: &str,
) -> Result<(Arc<CodeSystemVersion>, ConceptRef), FhirError> {
    let cs = resolve_code_system(registry, system, version)?;
    let Some(r) = cs.find(code) else {
        return Err(FhirError::UnknownCode(format!(
            "Unknown code '{}' in the CodeSystem '{}' version '{}'",
            code, cs.meta.url, cs.version
        )));
    };
    Ok((cs, r))
}

/// Answers a `$lookup` as output parameters, not yet rendered.
pub fn lookup_parameters(
    registry: &Registry,
    req: &LookupRequest,
) -> Result<ParametersOut, FhirError> {
    let (cs, r) = find_concept(registry, &req.system, req.version.as_deref(), &req.code)?;
    let c = cs.concept(r);
    // Label, order and weight read from concept extensions (see
    // `resources::CONCEPT_EXTENSION_PROPERTIES`) are expansion properties: listed here only when
    // asked for by name, or when the CodeSystem declares a property of that code.
    let from_extension = |name: &str| {
        super::resources::concept_extension_property_uri(name).is_some()
            && !cs.meta.properties.iter().any(|d| d.code == name)
    };
    let wants = |name: &str| {
        req.properties.iter().any(|p| p == name)
            || (!from_extension(name)
                && (req.properties.is_empty() || req.properties.iter().any(|p| p == "*")))
    };
    let mut out = ParametersOut::new();
    let name = cs
        .meta
        .name
        .clone()
        .or_else(|| cs.meta.title.clone())
        .unwrap_or_else(|| cs.meta.url.clone());
    out.value("name", "valueString", json!(name));
    out.value("system", "valueUri", json!(cs.meta.url));
    if !cs.version.is_empty() {
        out.value("version", "valueString", json!(cs.version));
    }
    out.value("code", "valueCode", json!(c.code));
    if let Some(d) = &c.display {
        out.value("display", "valueString", json!(d));
    }
    if let Some(d) = &c.definition {
        out.value("definition", "valueString", json!(d));
    }
    out.value("abstract", "valueBoolean", json!(c.not_selectable));
    if wants("designation") || req.properties.is_empty() {
        // The display, as the preferred designation in the CodeSystem's language.
        let preferred = match (language::code_system_language(&cs), &c.display) {
            (Some(l), Some(d)) => Some(Designation {
                language: Some(l.into()),
                use_: Some(DesignationUse {
                    system: "http://terminology.hl7.org/CodeSystem/hl7TermMaintInfra".into(),
                    code: "preferredForLanguage".into(),
                    display: Some("Preferred For Language".into()),
                }),
                value: d.clone(),
                extensions: None,
            }),
            _ => None,
        };
        let designations = preferred
            .iter()
            .cloned()
            .map(|d| (d, None))
            .chain(c.designations.iter().cloned().map(|d| (d, None)))
            .chain(
                cs.supplement_designations(&c.code)
                    .into_iter()
                    .map(|(d, source)| (d, Some(source))),
            );
        for (d, source) in designations {
            if req
                .display_language
                .as_deref()
                .is_some_and(|l| d.language.as_deref().is_some_and(|dl| !dl.starts_with(l)))
            {
                continue;
            }
            let mut parts = Vec::new();
            if let Some(l) = &d.language {
                parts.push(part("language", "valueCode", json!(l)));
            }
            if let Some(u) = &d.use_ {
                let mut coding = json!({ "system": u.system, "code": u.code });
                if let Some(disp) = &u.display {
                    coding["display"] = json!(disp);
                }
                parts.push(part("use", "valueCoding", coding));
            }
            if let Some(source) = source {
                parts.push(part("source", "valueCanonical", json!(source)));
            }
            parts.push(part("value", "valueString", json!(d.value)));
            out.parts("designation", parts);
        }
    }
    for parts in concept_property_parts(&cs, &c, &wants) {
        out.parts("property", parts);
    }
    for (code, v) in cs.supplement_properties(&c.code) {
        if wants(&code) && !super::resources::KEPT_CONCEPT_EXTENSIONS.contains(&&*code) {
            let (key, value) = value_json(&v);
            out.parts(
                "property",
                vec![
                    part("code", "valueCode", json!(code)),
                    part("value", key, value),
                ],
            );
        }
    }
    for s in &cs.supplements {
        out.value("used-supplement", "valueCanonical", json!(s.canonical()));
    }
    Ok(out)
}
