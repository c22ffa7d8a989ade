//! `CodeSystem/$lookup`: a code's display, designations and properties.
//! <http://hl7.org/fhir/R4/codesystem-operation-lookup.html>

use std::sync::Arc;

use serde_json::Value as Json;

use super::{coding_json, language, resolve_code_system, write_concept_properties, write_property};
use crate::error::FhirError;
use crate::fhir::params::{JsonParameters, OperationParams, ParametersOut, ParametersSink};
use crate::head;
use crate::store::{
    CodeSystemVersion, ConceptRef, ConceptView, DesignationUseView, DesignationView, Registry,
    ValueView,
};

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
    let mut out = ParametersOut::new();
    lookup_into(registry, req, &mut out)?;
    Ok(out)
}

/// Answers a `$lookup` as compact JSON, written as it is read: the bytes
/// [`lookup_parameters`] renders to, without the parts in between.
pub fn lookup_json(registry: &Registry, req: &LookupRequest) -> Result<Vec<u8>, FhirError> {
    let mut out = JsonParameters::new();
    lookup_into(registry, req, &mut out)?;
    Ok(out.finish())
}

/// Answers a `$lookup` into `sink`. Nothing is written when it fails.
pub fn lookup_into(
    registry: &Registry,
    req: &LookupRequest,
    sink: &mut impl ParametersSink,
) -> Result<(), FhirError> {
    let (cs, r) = find_concept(registry, &req.system, req.version.as_deref(), &req.code)?;
    let mut c = ConceptView::default();
    // Room for a register row's properties at once, rather than growing to them.
    c.properties.reserve(16);
    cs.view(r, &mut c);
    write_lookup(&cs, &c, req, sink);
    Ok(())
}

fn write_lookup(
    cs: &CodeSystemVersion,
    c: &ConceptView<'_>,
    req: &LookupRequest,
    sink: &mut impl ParametersSink,
) {
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
    let name = cs
        .meta
        .name
        .as_deref()
        .or(cs.meta.title.as_deref())
        .unwrap_or(&cs.meta.url);
    sink.text(head!("name", "valueString"), name);
    sink.text(head!("system", "valueUri"), &cs.meta.url);
    if !cs.version.is_empty() {
        sink.text(head!("version", "valueString"), &cs.version);
    }
    sink.text(head!("code", "valueCode"), c.code);
    if let Some(d) = c.display {
        sink.text(head!("display", "valueString"), d);
    }
    if let Some(d) = c.definition {
        sink.text(head!("definition", "valueString"), d);
    }
    sink.boolean(head!("abstract", "valueBoolean"), c.not_selectable);
    if wants("designation") || req.properties.is_empty() {
        // The display, as the preferred designation in the CodeSystem's language.
        let preferred = match (language::code_system_language(cs), c.display) {
            (Some(l), Some(d)) => Some(DesignationView {
                language: Some(l),
                use_: Some(DesignationUseView {
                    system: "http://terminology.hl7.org/CodeSystem/hl7TermMaintInfra",
                    code: "preferredForLanguage",
                    display: Some("Preferred For Language"),
                }),
                value: d,
                extensions: None,
            }),
            _ => None,
        };
        let supplemented = cs.supplement_designations(c.code);
        let designations = preferred
            .into_iter()
            .map(|d| (d, None))
            .chain(c.designations.iter().map(|&d| (d, None)))
            .chain(
                supplemented
                    .iter()
                    .map(|(d, source)| (DesignationView::of(d), Some(source.as_str()))),
            );
        for (d, source) in designations {
            if req
                .display_language
                .as_deref()
                .is_some_and(|l| d.language.is_some_and(|dl| !dl.starts_with(l)))
            {
                continue;
            }
            sink.open(head!("designation", "part"));
            if let Some(l) = d.language {
                sink.text(head!("language", "valueCode"), l);
            }
            if let Some(u) = d.use_ {
                sink.json(
                    "use",
                    "valueCoding",
                    coding_json(u.system, u.code, u.display),
                );
            }
            if let Some(source) = source {
                sink.text(head!("source", "valueCanonical"), source);
            }
            sink.text(head!("value", "valueString"), d.value);
            sink.close();
        }
    }
    write_concept_properties(cs, c, &wants, sink);
    for (code, v) in cs.supplement_properties(c.code) {
        if wants(&code) && !super::resources::KEPT_CONCEPT_EXTENSIONS.contains(&&*code) {
            write_property(sink, &code, ValueView::of(&v));
        }
    }
    for s in &cs.supplements {
        sink.text(head!("used-supplement", "valueCanonical"), &s.canonical());
    }
}
