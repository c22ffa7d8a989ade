//! `$validate-code` on a CodeSystem or a ValueSet. A code that fails is `result=false` with a
//! message and an `issues` OperationOutcome, never an HTTP error; only a missing ValueSet or
//! malformed parameters are errors.
//! <http://hl7.org/fhir/R4/codesystem-operation-validate-code.html>,
//! <http://hl7.org/fhir/R4/valueset-operation-validate-code.html>

use std::sync::Arc;

use serde_json::{Value as Json, json};

use super::compose::{Compose, Evaluator};
use crate::error::FhirError;
use crate::fhir::params::{Coding, OperationParams, ParametersOut};
use crate::store::{CodeSystemVersion, ConceptRef, Registry};

/// What is being validated against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// `CodeSystem/$validate-code`.
    CodeSystem,
    /// `ValueSet/$validate-code`.
    ValueSet,
}

/// A `$validate-code` request, whatever the transport.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidateRequest {
    /// CodeSystem or ValueSet.
    pub target: Target,
    /// `url`: the CodeSystem (CodeSystem target) or ValueSet canonical.
    pub url: Option<String>,
    /// Inline ValueSet (`valueSet`) or the instance's resource.
    pub value_set: Option<Json>,
    /// `valueSetVersion`.
    pub value_set_version: Option<String>,
    /// The codings to check, with the expression path each came from.
    pub codings: Vec<(Coding, String)>,
    /// Whether the codings came as a CodeableConcept (any one valid is enough).
    pub codeable_concept: Option<Json>,
    /// `lenient-display-validation`: a wrong display is a warning, not a failure.
    pub lenient_display: bool,
    /// `activeOnly`: inactive codes are not valid.
    pub active_only: bool,
}

impl ValidateRequest {
    /// Builds the request from operation parameters.
    pub fn from_params(p: &OperationParams, target: Target) -> Result<Self, FhirError> {
        let url = match target {
            Target::CodeSystem => p.text("url")?,
            Target::ValueSet => p.text("url")?,
        };
        let mut codings = Vec::new();
        let mut codeable_concept = None;
        if let Some(code) = p.text("code")? {
            let system = match target {
                Target::CodeSystem => p.text("system")?.or_else(|| url.clone()),
                Target::ValueSet => p.text("system")?,
            };
            codings.push((
                Coding {
                    system,
                    version: p.text("systemVersion")?.or(p.text("version")?),
                    code: Some(code),
                    display: p.text("display")?,
                },
                String::new(),
            ));
        } else if let Some(mut c) = p.coding("coding")? {
            if c.version.is_none() {
                c.version = p.text("systemVersion")?.or(p.text("version")?);
            }
            if c.display.is_none() {
                c.display = p.text("display")?;
            }
            codings.push((c, "Coding.".into()));
        } else if let Some(cc) = p.codeable_concept("codeableConcept")? {
            codeable_concept = Some(json!({
                "coding": cc.iter().map(coding_json).collect::<Vec<_>>()
            }));
            for (i, c) in cc.into_iter().enumerate() {
                codings.push((c, format!("CodeableConcept.coding[{i}].")));
            }
        }
        if codings.is_empty() {
            return Err(FhirError::Required(
                "$validate-code needs 'code', 'coding' or 'codeableConcept'".into(),
            ));
        }
        if codings
            .iter()
            .any(|(c, _)| c.code.as_deref().is_none_or(str::is_empty))
        {
            return Err(FhirError::Invalid("the code to validate is empty".into()));
        }
        Ok(Self {
            target,
            url,
            value_set: p.resource("valueSet")?,
            value_set_version: p.text("valueSetVersion")?,
            codings,
            codeable_concept,
            lenient_display: p.boolean("lenient-display-validation")?.unwrap_or(false),
            active_only: p.boolean("activeOnly")?.unwrap_or(false),
        })
    }
}

fn coding_json(c: &Coding) -> Json {
    let mut o = json!({});
    for (k, v) in [
        ("system", &c.system),
        ("version", &c.version),
        ("code", &c.code),
        ("display", &c.display),
    ] {
        if let Some(v) = v {
            o[k] = json!(v);
        }
    }
    o
}

struct Issue {
    severity: &'static str,
    code: &'static str,
    tx: &'static str,
    text: String,
    expression: String,
}

impl Issue {
    fn json(&self) -> Json {
        json!({
            "severity": self.severity,
            "code": self.code,
            "details": {
                "coding": [{ "system": "http://hl7.org/fhir/tools/CodeSystem/tx-issue-type", "code": self.tx }],
                "text": self.text
            },
            "location": [self.expression],
            "expression": [self.expression]
        })
    }
}

#[derive(Default)]
struct Outcome {
    found: Option<(Arc<CodeSystemVersion>, ConceptRef)>,
    valid: bool,
    issues: Vec<Issue>,
    coding: Coding,
}

fn check_concept(
    cs: &CodeSystemVersion,
    r: ConceptRef,
    coding: &Coding,
    path: &str,
    lenient: bool,
    override_display: Option<&str>,
    out: &mut Outcome,
) {
    let c = cs.concept(r);
    out.valid = true;
    if let Some(given) = coding.display.as_deref() {
        let mut valid: Vec<&str> = c.display.as_deref().into_iter().collect();
        valid.extend(override_display);
        valid.extend(c.designations.iter().map(|d| &*d.value));
        if !valid.contains(&given) {
            let expected = c.display.as_deref().unwrap_or("");
            out.issues.push(Issue {
                severity: if lenient { "warning" } else { "error" },
                code: "invalid",
                tx: "invalid-display",
                text: format!(
                    "Wrong Display Name '{given}' for {}#{}. Valid display is '{expected}'",
                    cs.meta.url, c.code
                ),
                expression: format!("{path}display"),
            });
            if !lenient {
                out.valid = false;
            }
        }
    }
    if c.inactive {
        out.issues.push(Issue {
            severity: "warning",
            code: "business-rule",
            tx: "code-comment",
            text: format!(
                "The concept '{}' has a status of {} and its use should be reviewed",
                c.code,
                c.status.as_deref().unwrap_or("inactive")
            ),
            expression: format!("{path}code"),
        });
    }
}

/// Answers a `$validate-code`.
pub fn validate_code(registry: &Registry, req: &ValidateRequest) -> Result<Json, FhirError> {
    let vs_context = match req.target {
        Target::CodeSystem => None,
        Target::ValueSet => {
            let resource = match (&req.value_set, &req.url) {
                (Some(vs), _) => vs.clone(),
                (None, Some(url)) => registry
                    .value_set(url, req.value_set_version.as_deref())
                    .map(|v| v.resource.clone())
                    .ok_or_else(|| {
                        FhirError::NotFound(format!(
                            "A definition for the value Set '{url}{}' could not be found",
                            req.value_set_version
                                .as_deref()
                                .map(|v| format!("|{v}"))
                                .unwrap_or_default()
                        ))
                    })?,
                (None, None) => {
                    return Err(FhirError::Required(
                        "ValueSet/$validate-code needs 'url' or 'valueSet'".into(),
                    ));
                }
            };
            let label = {
                let url = resource
                    .get("url")
                    .and_then(Json::as_str)
                    .unwrap_or("(inline)");
                match resource.get("version").and_then(Json::as_str) {
                    Some(v) => format!("{url}|{v}"),
                    None => url.to_string(),
                }
            };
            Some((Compose::from_value_set(&resource)?, label))
        }
    };
    let evaluator = Evaluator {
        registry,
        active_only: req.active_only,
        system_versions: &[],
        extra_value_sets: &[],
    };
    let mut outcomes = Vec::new();
    for (coding, path) in &req.codings {
        let mut out = Outcome {
            coding: coding.clone(),
            ..Outcome::default()
        };
        let code = coding.code.clone().unwrap_or_default();
        let Some(system) = coding.system.clone() else {
            let vs = vs_context.as_ref().map(|v| v.1.as_str()).unwrap_or("");
            out.issues.push(Issue {
                severity: "error",
                code: "invalid",
                tx: "invalid-data",
                text: format!(
                    "The System URI could not be determined for the code '{code}' in the ValueSet '{vs}'"
                ),
                expression: format!("{path}system"),
            });
            outcomes.push(out);
            continue;
        };
        let cs = super::resolve_code_system(registry, &system, coding.version.as_deref());
        match (&vs_context, cs) {
            (_, Err(e)) => {
                out.issues.push(Issue {
                    severity: "error",
                    code: "not-found",
                    tx: "not-found",
                    text: format!("{e}, so the code cannot be validated"),
                    expression: format!("{path}system"),
                });
                if let Some((_, label)) = &vs_context {
                    out.issues.push(not_in_vs(&system, &code, label, path));
                }
            }
            (None, Ok(cs)) => match cs.find(&code) {
                Some(r) => {
                    check_concept(&cs, r, coding, path, req.lenient_display, None, &mut out);
                    if req.active_only && cs.concept(r).inactive {
                        out.valid = false;
                    }
                    out.found = Some((cs, r));
                }
                None => out.issues.push(unknown_code(&cs, &code, path)),
            },
            (Some((compose, label)), Ok(cs)) => {
                match evaluator.contains(compose, &system, &code)? {
                    Some((hit_cs, r, display)) => {
                        check_concept(
                            &hit_cs,
                            r,
                            coding,
                            path,
                            req.lenient_display,
                            display.as_deref(),
                            &mut out,
                        );
                        out.found = Some((hit_cs, r));
                    }
                    None => {
                        out.issues.push(not_in_vs(&system, &code, label, path));
                        if cs.find(&code).is_none() {
                            out.issues.push(unknown_code(&cs, &code, path));
                        } else if let Some(r) = cs.find(&code) {
                            out.found = Some((cs.clone(), r));
                        }
                    }
                }
            }
        }
        outcomes.push(out);
    }
    let chosen = outcomes.iter().position(|o| o.valid).unwrap_or(0);
    let result = outcomes.iter().any(|o| o.valid);
    let o = &outcomes[chosen];
    let mut params = ParametersOut::new();
    let code = o
        .found
        .as_ref()
        .map(|(cs, r)| cs.concept(*r).code.to_string())
        .or_else(|| o.coding.code.clone());
    if let Some(c) = code {
        params.value("code", "valueCode", json!(c));
    }
    if let Some((cs, r)) = &o.found
        && let Some(d) = &cs.concept(*r).display
    {
        params.value("display", "valueString", json!(d));
    }
    let all_issues: Vec<&Issue> = if result {
        o.issues.iter().collect()
    } else {
        outcomes.iter().flat_map(|o| o.issues.iter()).collect()
    };
    if !all_issues.is_empty() {
        params.resource(
            "issues",
            json!({ "resourceType": "OperationOutcome", "issue": all_issues.iter().map(|i| i.json()).collect::<Vec<_>>() }),
        );
        let mut texts: Vec<&str> = all_issues
            .iter()
            .filter(|i| !result || i.severity != "information")
            .map(|i| i.text.as_str())
            .collect();
        texts.sort_unstable();
        texts.dedup();
        params.value("message", "valueString", json!(texts.join("; ")));
    }
    if let Some((cs, r)) = &o.found
        && cs.concept(*r).inactive
    {
        params.value("inactive", "valueBoolean", json!(true));
    }
    params.value("result", "valueBoolean", json!(result));
    if let Some(s) = o
        .found
        .as_ref()
        .map(|(cs, _)| cs.meta.url.clone())
        .or_else(|| o.coding.system.clone())
    {
        params.value("system", "valueUri", json!(s));
    }
    if let Some((cs, _)) = &o.found
        && !cs.version.is_empty()
    {
        params.value("version", "valueString", json!(cs.version));
    }
    if let Some(cc) = &req.codeable_concept {
        params.value("codeableConcept", "valueCodeableConcept", cc.clone());
    }
    Ok(params.build())
}

fn unknown_code(cs: &CodeSystemVersion, code: &str, path: &str) -> Issue {
    Issue {
        severity: "error",
        code: "code-invalid",
        tx: "invalid-code",
        text: format!(
            "Unknown code '{code}' in the CodeSystem '{}' version '{}'",
            cs.meta.url, cs.version
        ),
        expression: format!("{path}code"),
    }
}

fn not_in_vs(system: &str, code: &str, label: &str, path: &str) -> Issue {
    Issue {
        severity: "error",
        code: "code-invalid",
        tx: "not-in-vs",
        text: format!(
            "The provided code '{system}#{code}' was not found in the value set '{label}'"
        ),
        expression: format!("{path}code"),
    }
}
