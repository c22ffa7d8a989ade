//! `CodeSystem/$subsumes`: how two codes of one CodeSystem relate in its hierarchy.
//! <http://hl7.org/fhir/R4/codesystem-operation-subsumes.html>

use serde_json::{Value as Json, json};

use super::resolve_code_system;
use crate::error::FhirError;
use crate::fhir::params::{OperationParams, ParametersOut};
use crate::store::Registry;

/// A `$subsumes` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubsumesRequest {
    /// CodeSystem URL.
    pub system: String,
    /// Version.
    pub version: Option<String>,
    /// First code.
    pub code_a: String,
    /// Second code.
    pub code_b: String,
}

impl SubsumesRequest {
    /// Builds the request from operation parameters (`codeA`/`codeB` + `system`, or
    /// `codingA`/`codingB`).
    pub fn from_params(
        p: &OperationParams,
        instance_system: Option<String>,
    ) -> Result<Self, FhirError> {
        let ca = p.coding("codingA")?;
        let cb = p.coding("codingB")?;
        let mut system = p.text("system")?.or(instance_system);
        let mut version = p.text("version")?;
        let (a, b) = match (p.text("codeA")?, p.text("codeB")?, ca, cb) {
            (Some(a), Some(b), None, None) => (a, b),
            (None, None, Some(a), Some(b)) => {
                for c in [&a, &b] {
                    if let Some(s) = &c.system {
                        if system.as_ref().is_some_and(|x| x != s) {
                            return Err(FhirError::Invalid(
                                "codingA and codingB must be in the same system".into(),
                            ));
                        }
                        system = Some(s.clone());
                    }
                    if version.is_none() {
                        version = c.version.clone();
                    }
                }
                (a.code.unwrap_or_default(), b.code.unwrap_or_default())
            }
            _ => {
                return Err(FhirError::Required(
                    "$subsumes needs 'codeA' and 'codeB' (with 'system'), or 'codingA' and 'codingB'".into(),
                ));
            }
        };
        let system =
            system.ok_or_else(|| FhirError::Required("$subsumes needs 'system'".into()))?;
        Ok(Self {
            system,
            version,
            code_a: a,
            code_b: b,
        })
    }
}

/// Answers `$subsumes` with `outcome` = `equivalent`, `subsumes`, `subsumed-by` or
/// `not-subsumed`.
pub fn subsumes(registry: &Registry, req: &SubsumesRequest) -> Result<Json, FhirError> {
    let cs = resolve_code_system(registry, &req.system, req.version.as_deref())?;
    for code in [&req.code_a, &req.code_b] {
        if cs.find(code).is_none() {
            return Err(FhirError::UnknownCode(format!(
                "Unknown code '{code}' in the CodeSystem '{}' version '{}'",
                cs.meta.url, cs.version
            )));
        }
    }
    let outcome = if req.code_a == req.code_b {
        "equivalent"
    } else if cs.subsumed_by(&req.code_b, &req.code_a) {
        "subsumes"
    } else if cs.subsumed_by(&req.code_a, &req.code_b) {
        "subsumed-by"
    } else {
        "not-subsumed"
    };
    let mut out = ParametersOut::new();
    out.value("outcome", "valueCode", json!(outcome));
    Ok(out.build())
}
