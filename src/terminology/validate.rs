//! `$validate-code` on a CodeSystem or a ValueSet. A code that fails is `result=false` with a
//! message and an `issues` OperationOutcome, never an HTTP error; only a missing ValueSet or
//! malformed parameters are errors.
//! <http://hl7.org/fhir/R4/codesystem-operation-validate-code.html>,
//! <http://hl7.org/fhir/R4/valueset-operation-validate-code.html>

use std::sync::Arc;

use serde_json::{Value as Json, json};

use super::compose::{Compose, Evaluator};
use super::language::{self, Preferences};
use super::status;
use super::versions::{self, Problem, Purpose, Reconciled, VersionRules};
use crate::error::FhirError;
use crate::fhir::params::{Coding, OperationParams, ParametersOut};
use crate::store::{CodeSystemVersion, Concept, ConceptRef, Designation, Registry};

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
    /// `displayLanguage` (or the `Accept-Language` header): the languages displays are judged in.
    pub display_language: Option<String>,
    /// `activeOnly`: inactive codes are not valid.
    pub active_only: bool,
    /// `abstract` (default `true`): whether abstract (`notSelectable`) codes are valid here.
    pub abstract_ok: bool,
    /// `date` (as `YYYY-MM-DD`): the code must have been valid then, by the register's business
    /// dates (an organisation open, a postcode introduced and not yet terminated).
    pub date: Option<String>,
    /// `system-version`, `force-system-version`, `check-system-version`,
    /// `default-valueset-version`.
    pub versions: VersionRules,
    /// `valueset-membership-only`: only whether the code is in the ValueSet is asked, so a code
    /// the CodeSystem does not have is not also reported as unknown.
    pub membership_only: bool,
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
            // Echo the CodeableConcept as sent (text included) when it came as JSON.
            codeable_concept = p
                .echo(&["codeableConcept"])
                .first()
                .and_then(|o| o.get("valueCodeableConcept").cloned())
                .or_else(|| {
                    Some(json!({
                        "coding": cc.iter().map(coding_json).collect::<Vec<_>>()
                    }))
                });
            for (i, c) in cc.into_iter().enumerate() {
                codings.push((c, format!("CodeableConcept.coding[{i}].")));
            }
        }
        if codings.is_empty() {
            // The reference's wording and issue type (tx.fhir.org).
            return Err(FhirError::Invalid(
                "Unable to find code to validate (looked for coding | codeableConcept | code+system | code+inferSystem in parameters".into(),
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
            display_language: p
                .text("displayLanguage")?
                .map(|l| language::check_display_language(&l).map(|()| l))
                .transpose()?,
            active_only: p.boolean("activeOnly")?.unwrap_or(false),
            abstract_ok: p.boolean("abstract")?.unwrap_or(true),
            date: match p.text("date")? {
                None => None,
                Some(d) => Some(crate::store::date_param(&d).ok_or_else(|| {
                    FhirError::Invalid(format!(
                        "The parameter 'date' value '{d}' is not a FHIR date or dateTime"
                    ))
                })?),
            },
            versions: VersionRules::from_params(p)?,
            membership_only: p.boolean("valueset-membership-only")?.unwrap_or(false),
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

/// How a ValueSet's deprecation of a listed concept is worded (reported, but not in `message`).
const DEPRECATED_LISTING: &str = "The presence of the concept ";

struct Issue {
    severity: &'static str,
    code: &'static str,
    tx: &'static str,
    text: String,
    expression: Option<String>,
}

impl Issue {
    fn json(&self) -> Json {
        let mut issue = json!({
            "severity": self.severity,
            "code": self.code,
            "details": {
                "coding": [{ "system": "http://hl7.org/fhir/tools/CodeSystem/tx-issue-type", "code": self.tx }],
                "text": self.text
            }
        });
        // `expression` only, as the reference server writes it: R4 marks `location` deprecated
        // and FHIRsmith (`Issue.asIssue`) never writes it.
        if let Some(e) = &self.expression {
            issue["expression"] = json!([e]);
        }
        issue
    }
}

#[derive(Default)]
struct Outcome {
    found: Option<(Arc<CodeSystemVersion>, ConceptRef)>,
    valid: bool,
    issues: Vec<Issue>,
    coding: Coding,
    /// The display language(s) asked for.
    language: Option<String>,
    /// The display in the language asked for, when there is one.
    display: Option<String>,
    /// A CodeSystem not known at all (`x-unknown-system`).
    unknown_system: Option<String>,
    /// `url|version` of a CodeSystem version that could not be found.
    caused_by: Option<String>,
    /// Membership could not be tested (the ValueSet's version of the system is unknown).
    untested: bool,
    /// A `content = fragment` CodeSystem that does not have the code: the code may be valid in
    /// another fragment, so it is accepted with a warning.
    fragment: Option<Arc<CodeSystemVersion>>,
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
    let prefs = out.language.as_deref().map(Preferences::parse);
    let own = language::code_system_language(cs);
    // Designations the applied supplements give the code count as the CodeSystem's own.
    let supplemented = cs.supplement_designations(&c.code);
    // Displays in the languages asked for, best first, with their language.
    let mut in_languages: Vec<(&str, Option<&str>)> = Vec::new();
    if let Some(prefs) = &prefs {
        for (tag, q) in &prefs.tags {
            if *q <= 0.0 || tag == "*" {
                continue;
            }
            if own.is_none_or(|l| language::matches(l, tag))
                && let Some(d) = c.display.as_deref()
            {
                in_languages.push((d, own));
            }
            for d in c
                .designations
                .iter()
                .chain(supplemented.iter().map(|(d, _)| d))
            {
                if d.language
                    .as_deref()
                    .is_some_and(|l| language::matches(l, tag))
                {
                    in_languages.push((&d.value, d.language.as_deref()));
                }
            }
        }
        in_languages.dedup();
        if let Some((first, _)) = in_languages.first() {
            out.display = Some(first.to_string());
        }
    }
    if let Some(given) = coding.display.as_deref() {
        let id = format!("{}#{}", cs.meta.url, c.code);
        let default = c.display.as_deref().unwrap_or("");
        let mut any: Vec<&str> = c.display.as_deref().into_iter().collect();
        any.extend(override_display);
        any.extend(c.designations.iter().map(|d| &*d.value));
        any.extend(supplemented.iter().map(|(d, _)| &*d.value));
        let mut problem = None;
        match &prefs {
            None => {
                if !any.contains(&given) {
                    problem = Some(match own {
                        // With a known language, every display is listed with its language.
                        Some(own) => {
                            let mut shown = vec![format!("'{default}' ({own})")];
                            for d in &c.designations {
                                if let Some(l) = &d.language {
                                    let item = format!("'{}' ({l})", d.value);
                                    if !shown.contains(&item) {
                                        shown.push(item);
                                    }
                                }
                            }
                            format!(
                                "Wrong Display Name '{given}' for {id}. {} (for the language(s) '--')",
                                valid_displays(&shown)
                            )
                        }
                        // Without a language, the reference still says which were checked:
                        // none ('--').
                        None => format!(
                            "Wrong Display Name '{given}' for {id}. Valid display is '{default}' (for the language(s) '--')"
                        ),
                    });
                }
            }
            Some(_) if in_languages.iter().any(|(d, _)| *d == given) => {}
            Some(_) if in_languages.is_empty() => {
                let langs = out.language.clone().unwrap_or_default();
                if any.contains(&given) {
                    out.issues.push(Issue {
                        severity: "information",
                        code: "invalid",
                        tx: "invalid-display",
                        text: format!(
                            "There are no valid display names found for the code {id} for language(s) '{langs}'. The display is '{given}' which is a valid display for the default language"
                        ),
                        expression: Some(format!("{path}display")),
                    });
                } else {
                    problem = Some(format!(
                        "Wrong Display Name '{given}' for {id}. There are no valid display names found for language(s) '{langs}'. Default display is '{default}'"
                    ));
                }
            }
            Some(_) => {
                let langs = out.language.clone().unwrap_or_default();
                let shown: Vec<String> = in_languages
                    .iter()
                    .map(|(d, l)| match l {
                        Some(l) => format!("'{d}' ({l})"),
                        None => format!("'{d}'"),
                    })
                    .collect();
                let valid = valid_displays(&shown);
                problem = Some(format!(
                    "Wrong Display Name '{given}' for {id}. {valid} (for the language(s) '{langs}')"
                ));
            }
        }
        if let Some(text) = problem {
            out.issues.push(Issue {
                severity: if lenient { "warning" } else { "error" },
                code: "invalid",
                tx: "invalid-display",
                text,
                expression: Some(format!("{path}display")),
            });
            if !lenient {
                out.valid = false;
            }
        } else if let Some(issue) = retired_display(&c, given, override_display, path) {
            out.issues.push(issue);
        }
    }
    if let Some(given) = coding.code.as_deref()
        && given != &*c.code
    {
        out.issues.push(Issue {
            severity: "information",
            code: "business-rule",
            tx: "code-rule",
            text: format!(
                "The code '{given}' differs from the correct code '{}' by case. Although the code system '{}' is case insensitive, implementers are strongly encouraged to use the correct case anyway",
                c.code,
                cs.canonical()
            ),
            expression: Some(format!("{path}code")),
        });
    }
    if c.inactive {
        out.issues.push(inactive_issue(&c, path));
    } else if c
        .status
        .as_deref()
        .is_some_and(|s| s.eq_ignore_ascii_case("deprecated"))
    {
        out.issues.push(deprecated_issue(&c, path));
    }
}

/// The reference's `INACTIVE_DISPLAY_FOUND` warning (FHIRsmith `validate.js`): the display
/// matches a designation, but only ones whose status says they are no longer used (a
/// `structuredefinition-standards-status` of `withdrawn`, `deprecated`, …). The code stays
/// valid; the warning names the status and the displays still in use.
fn retired_display(
    c: &Concept,
    given: &str,
    override_display: Option<&str>,
    path: &str,
) -> Option<Issue> {
    let same = |d: &str| d.eq_ignore_ascii_case(given);
    if c.display.as_deref().is_some_and(same) || override_display.is_some_and(same) {
        return None;
    }
    let (retired, current): (Vec<&Designation>, Vec<&Designation>) =
        c.designations.iter().partition(|d| d.is_retired());
    if current.iter().any(|d| same(&d.value)) {
        return None;
    }
    let status = retired.iter().find(|d| same(&d.value))?.status()?;
    let mut correct: Vec<&str> = c.display.as_deref().into_iter().collect();
    for d in &current {
        if !correct.contains(&&*d.value) {
            correct.push(&d.value);
        }
    }
    Some(Issue {
        severity: "warning",
        code: "invalid",
        tx: "display-comment",
        text: format!(
            "'{given}' is no longer considered a correct display for code '{}' (status = {status}). The correct display is one of {}",
            c.code,
            correct.join(",")
        ),
        expression: Some(format!("{path}display")),
    })
}

/// "Valid display is 'a' (en)" or "Valid display is one of 2 choices: 'a' (en) or 'b' (de)".
fn valid_displays(shown: &[String]) -> String {
    if shown.len() == 1 {
        format!("Valid display is {}", shown[0])
    } else {
        format!(
            "Valid display is one of {} choices: {}",
            shown.len(),
            shown.join(" or ")
        )
    }
}

/// With a `date`: a code the register says was not yet, or no longer, valid then is not valid
/// (an organisation opened later or closed before, a postcode introduced later or terminated).
fn check_business_dates(
    c: &crate::store::Concept,
    date: Option<&str>,
    path: &str,
    out: &mut Outcome,
) {
    let Some(date) = date else { return };
    let before = c
        .valid_from
        .as_deref()
        .filter(|f| date < crate::store::date_param(f).as_deref().unwrap_or(f));
    let after = c
        .valid_to
        .as_deref()
        .filter(|t| date > crate::store::date_param(t).as_deref().unwrap_or(t));
    let text = match (before, after) {
        (Some(from), _) => format!(
            "The concept '{}' was not valid on {date}: it is valid from {from}",
            c.code
        ),
        (None, Some(to)) => format!(
            "The concept '{}' was not valid on {date}: it ended on {to}",
            c.code
        ),
        (None, None) => return,
    };
    out.issues.push(Issue {
        severity: "error",
        code: "business-rule",
        tx: "code-rule",
        text,
        expression: Some(format!("{path}code")),
    });
    out.valid = false;
}

/// With `abstract=false`, an abstract (`notSelectable`) concept is not valid: the reference
/// wording, and in a ValueSet also "not found in the value set" (FHIRsmith `tx/workers/validate.js`,
/// `ABSTRACT_CODE_NOT_ALLOWED`).
fn check_abstract(
    cs: &CodeSystemVersion,
    r: ConceptRef,
    code: &str,
    abstract_ok: bool,
    value_set: Option<&str>,
    path: &str,
    out: &mut Outcome,
) {
    if abstract_ok || !cs.concept(r).not_selectable {
        return;
    }
    out.issues.push(Issue {
        severity: "error",
        code: "business-rule",
        tx: "code-rule",
        text: format!(
            "Code '{}#{code}' is abstract, and not allowed in this context",
            cs.meta.url
        ),
        expression: Some(format!("{path}code")),
    });
    if let Some(label) = value_set {
        out.issues
            .push(not_in_vs(&out.coding, &cs.meta.url, code, label, path));
    }
    out.valid = false;
}

/// Whether a ValueSet's compose includes codes of `system` (an include naming it).
fn value_set_includes_system(vs: &Json, system: &str) -> bool {
    vs.get("compose")
        .and_then(|c| c.get("include"))
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
        .any(|i| i.get("system").and_then(Json::as_str) == Some(system))
}

/// The warning that an active concept is deprecated (its `status` property, or its
/// standards-status extension): the reference's `DEPRECATED_CONCEPT_FOUND`
/// (FHIRsmith `tx/workers/validate.js`).
fn deprecated_issue(c: &crate::store::Concept, path: &str) -> Issue {
    Issue {
        severity: "warning",
        code: "business-rule",
        tx: "code-comment",
        text: format!(
            "The concept '{}' is deprecated and its use should be reviewed",
            c.code
        ),
        expression: Some(if path.is_empty() {
            "code".to_string()
        } else {
            path.trim_end_matches('.').to_string()
        }),
    }
}

/// The warning that a concept is inactive.
fn inactive_issue(c: &crate::store::Concept, path: &str) -> Issue {
    Issue {
        severity: "warning",
        code: "business-rule",
        tx: "code-comment",
        text: format!(
            "The concept '{}' has a status of {} and its use should be reviewed",
            c.code,
            match c.status.as_deref() {
                None | Some("inactive") => "inactive".to_string(),
                Some(other) => format!("{other} and inactive"),
            }
        ),
        expression: Some(if path.is_empty() {
            "code".to_string()
        } else {
            path.trim_end_matches('.').to_string()
        }),
    }
}

/// Answers a `$validate-code`.
pub fn validate_code(registry: &Registry, req: &ValidateRequest) -> Result<Json, FhirError> {
    validate_code_parameters(registry, req).map(ParametersOut::build)
}

/// Answers a `$validate-code` as output parameters, not yet rendered.
pub fn validate_code_parameters(
    registry: &Registry,
    req: &ValidateRequest,
) -> Result<ParametersOut, FhirError> {
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
                    .unwrap_or("(unidentified)");
                match resource.get("version").and_then(Json::as_str) {
                    Some(v) => format!("{url}|{v}"),
                    None => url.to_string(),
                }
            };
            Some((Compose::from_value_set(&resource)?, label, resource))
        }
    };
    let contained: Vec<Json> = vs_context
        .as_ref()
        .and_then(|v| v.2.get("contained"))
        .and_then(Json::as_array)
        .cloned()
        .unwrap_or_default();
    let supplemented = match &vs_context {
        Some((_, _, vs)) => super::resources::with_value_set_supplements(registry, vs)?,
        None => None,
    };
    let registry = supplemented.as_ref().unwrap_or(registry);
    // The ValueSet's own version-steering parameters (`compose.extension`) after the request's.
    let versions = match &vs_context {
        Some((_, _, vs)) => req.versions.with_value_set(vs)?,
        None => req.versions.clone(),
    };
    let evaluator = Evaluator {
        registry,
        active_only: req.active_only,
        exclude_not_for_ui: false,
        versions: &versions,
        version_usage: Default::default(),
        pinned: Default::default(),
        extra_value_sets: &contained,
        imported: Default::default(),
        chain: std::cell::RefCell::new(
            vs_context
                .iter()
                .map(|v| super::compose::chain_name(&v.1, &v.2))
                .collect(),
        ),
    };
    if let Some((compose, _, _)) = &vs_context {
        evaluator.check_imports(compose)?;
    }
    let display_language = req.display_language.clone().or_else(|| {
        let vs = &vs_context.as_ref()?.2;
        language::value_set_display_language(vs).or_else(|| {
            vs.get("language")
                .and_then(Json::as_str)
                .map(str::to_string)
        })
    });
    let mut outcomes = Vec::new();
    for (coding, path) in &req.codings {
        let mut out = Outcome {
            coding: coding.clone(),
            language: display_language.clone(),
            ..Outcome::default()
        };
        let code = coding.code.clone().unwrap_or_default();
        let implied = match (&coding.system, &vs_context, path.is_empty()) {
            // A bare `code` against a ValueSet of one system means that system.
            (None, Some((compose, _, _)), true) => {
                let mut systems: Vec<&str> = compose
                    .include
                    .iter()
                    .filter_map(|r| r.system.as_deref())
                    .collect();
                systems.dedup();
                (systems.len() == 1 && compose.include.iter().all(|r| r.value_sets.is_empty()))
                    .then(|| systems[0].to_string())
            }
            _ => None,
        };
        let Some(system) = coding.system.clone().or(implied) else {
            let vs = vs_context.as_ref().map(|v| v.1.as_str()).unwrap_or("");
            if let Some((_, label, _)) = &vs_context
                && !path.is_empty()
            {
                out.issues.push(not_in_vs(coding, "", &code, label, path));
                out.issues.push(Issue {
                    severity: "warning",
                    code: "invalid",
                    tx: "invalid-data",
                    text: "Coding has no system. A code with no system has no defined meaning, and it cannot be validated. A system should be provided".into(),
                    expression: Some(path.trim_end_matches('.').to_string()),
                });
                outcomes.push(out);
                continue;
            }
            out.issues.push(Issue {
                severity: "error",
                code: "invalid",
                tx: "invalid-data",
                text: format!(
                    "The System URI could not be determined for the code '{code}' in the ValueSet '{vs}'"
                ),
                expression: Some(format!("{path}system")),
            });
            outcomes.push(out);
            continue;
        };
        // A system the coding cannot use: a supplement's canonical (the reference's
        // CODESYSTEM_CS_NO_SUPPLEMENT), a ValueSet's, or one the server does not know; the flag
        // says whether it is reported as an unknown system (`x-unknown-system`).
        let unusable = match registry
            .code_system(&system, coding.version.as_deref())
            .filter(|cs| cs.meta.content == "supplement")
        {
            Some(supplement) => Some((
                "invalid",
                "invalid-data",
                format!(
                    "CodeSystem {} is a supplement, so can't be used as a value in Coding.system",
                    supplement.canonical()
                ),
                true,
            )),
            // A ValueSet's canonical is not a code system (the reference's
            // Terminology_TX_System_ValueSet2); the system is known, as the wrong kind.
            None if !registry.knows_code_system(&system)
                && registry.value_set(&system, None).is_some() =>
            {
                Some((
                    "invalid",
                    "invalid-data",
                    format!("The Coding references a value set, not a code system ('{system}')"),
                    false,
                ))
            }
            None if !registry.knows_code_system(&system) => Some((
                "not-found",
                "not-found",
                versions::unknown_version_text(
                    registry,
                    &system,
                    coding.version.as_deref(),
                    Purpose::Validate,
                ),
                true,
            )),
            None => None,
        };
        // A system that is not an absolute URI (no scheme) is a local reference (the
        // reference's Terminology_TX_System_Relative), said beside it being unknown.
        if unusable.is_some() && !system.contains(':') {
            out.issues.push(Issue {
                severity: "error",
                code: "invalid",
                tx: "invalid-data",
                text: "Coding.system must be an absolute reference, not a local reference".into(),
                expression: Some(format!("{path}system")),
            });
        }
        if let Some((issue_code, tx, text, unknown)) = unusable {
            // A ValueSet that includes the unknown system cannot say whether the code is in it:
            // the unknown system is the cause, not a missing member (FHIRsmith
            // `tx/workers/validate.js`: membership unknown, `x-caused-by-unknown-system`).
            let included = vs_context
                .as_ref()
                .is_some_and(|(_, _, vs)| value_set_includes_system(vs, &system));
            if included {
                out.caused_by = Some(system.clone());
            } else if unknown {
                out.unknown_system = Some(system.clone());
            }
            out.issues.push(Issue {
                severity: "error",
                code: issue_code,
                tx,
                text,
                expression: Some(format!("{path}system")),
            });
            if let Some((_, label, _)) = &vs_context
                && !included
            {
                out.issues
                    .push(not_in_vs(coding, &system, &code, label, path));
            }
            outcomes.push(out);
            continue;
        }
        let rec = versions::reconcile(
            registry,
            &versions,
            vs_context.as_ref().map(|v| &v.0),
            &system,
            coding.version.as_deref(),
        );
        let mut rec = rec;
        if coding.version.is_none()
            && rec.testable
            && let Some((compose, _, _)) = &vs_context
        {
            let candidates = versions::included_versions(registry, &versions, compose, &system);
            if candidates.len() > 1 {
                let mut picked = None;
                for cs in &candidates {
                    *evaluator.pinned.borrow_mut() = Some(cs.clone());
                    if matches!(evaluator.contains(compose, &system, &code), Ok(Some(_))) {
                        picked = Some(cs.clone());
                        break;
                    }
                }
                rec.used = picked.or_else(|| candidates.first().cloned());
                rec.pin = true;
            }
        }
        let version_failed = version_issues(&rec, path, &mut out);
        let Some(cs) = rec.used.clone() else {
            outcomes.push(out);
            continue;
        };
        *evaluator.pinned.borrow_mut() = rec.pin.then(|| cs.clone());
        match &vs_context {
            None => match cs.find(&code) {
                Some(r) => {
                    check_concept(&cs, r, coding, path, req.lenient_display, None, &mut out);
                    if req.active_only && cs.concept(r).inactive {
                        out.valid = false;
                    }
                    check_business_dates(&cs.concept(r), req.date.as_deref(), path, &mut out);
                    check_abstract(&cs, r, &code, req.abstract_ok, None, path, &mut out);
                    out.found = Some((cs, r));
                }
                None if is_fragment(&cs) => accept_in_fragment(&cs, &code, path, &mut out),
                None => out.issues.push(unknown_code(&cs, &code, path)),
            },
            Some(_) if !rec.testable => {
                out.untested = true;
                match cs.find(&code) {
                    Some(r) => out.found = Some((cs, r)),
                    None => out.issues.push(unknown_code(&cs, &code, path)),
                }
            }
            Some((compose, label, vs_resource)) => {
                let hit = evaluator.contains(compose, &system, &code);
                if hit.is_err()
                    && let Some(missing) = evaluator.version_usage.missing()
                {
                    // An imported ValueSet that cannot be found fails the code, not the request.
                    out.issues.push(Issue {
                        severity: "error",
                        code: "not-found",
                        tx: "not-found",
                        text: format!(
                            "A definition for the value Set '{missing}' could not be found"
                        ),
                        expression: None,
                    });
                    out.untested = true;
                    outcomes.push(out);
                    continue;
                }
                match hit? {
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
                        check_business_dates(
                            &hit_cs.concept(r),
                            req.date.as_deref(),
                            path,
                            &mut out,
                        );
                        check_abstract(
                            &hit_cs,
                            r,
                            &code,
                            req.abstract_ok,
                            Some(label),
                            path,
                            &mut out,
                        );
                        if status::listed_concept_deprecated(vs_resource, &system, &code) {
                            out.issues.push(Issue {
                                severity: "warning",
                                code: "business-rule",
                                tx: "code-comment",
                                text: format!(
                                    "{DEPRECATED_LISTING}'{code}' in the system '{system}' in the value set {label} is marked with a status of deprecated and its use should be reviewed"
                                ),
                                expression: Some(format!("{path}code")),
                            });
                        }
                        out.found = Some((hit_cs, r));
                    }
                    None if is_fragment(&cs)
                        && cs.find(&code).is_none()
                        && includes_whole_system(compose, &system) =>
                    {
                        accept_in_fragment(&cs, &code, path, &mut out);
                    }
                    None => {
                        out.issues
                            .push(not_in_vs(coding, &system, &code, label, path));
                        if cs.find(&code).is_none() {
                            // With a system the client did not give (implied by the ValueSet),
                            // "not in the value set" says it all.
                            // Asked about membership only, the reference does not add that the
                            // code is unknown (FHIRsmith `tx/workers/validate.js`).
                            if coding.system.is_some() && !req.membership_only {
                                out.issues.push(unknown_code(&cs, &code, path));
                            }
                        } else if let Some(r) = cs.find(&code)
                            && !req.membership_only
                        {
                            // The display is checked all the same, as the reference does.
                            let mut checked = Outcome {
                                language: out.language.clone(),
                                ..Default::default()
                            };
                            check_concept(
                                &cs,
                                r,
                                coding,
                                path,
                                req.lenient_display,
                                None,
                                &mut checked,
                            );
                            out.issues.extend(
                                checked
                                    .issues
                                    .into_iter()
                                    .filter(|i| i.tx == "invalid-display"),
                            );
                            // Left out only because inactive codes are excluded?
                            if cs.concept(r).inactive
                                && (req.active_only || compose.inactive == Some(false))
                            {
                                out.issues.push(Issue {
                                    severity: "error",
                                    code: "business-rule",
                                    tx: "code-rule",
                                    text: format!(
                                        "The concept '{code}' is valid but is not active"
                                    ),
                                    expression: Some(format!("{path}code")),
                                });
                                out.issues.push(inactive_issue(&cs.concept(r), path));
                            }
                            out.found = Some((cs.clone(), r));
                        }
                    }
                }
            }
        }
        if version_failed {
            out.valid = false;
        }
        outcomes.push(out);
    }
    // In a CodeableConcept, one coding outside the ValueSet is only information; none inside
    // it at all is the error.
    let mut none_in_vs = false;
    if req.codeable_concept.is_some()
        && let Some((_, label, _)) = &vs_context
    {
        let outside = |o: &Outcome| o.issues.iter().any(|i| i.tx == "not-in-vs");
        none_in_vs = !outcomes.is_empty() && outcomes.iter().all(outside);
        for i in outcomes.iter_mut().flat_map(|o| o.issues.iter_mut()) {
            if i.tx == "not-in-vs" {
                i.severity = "information";
                i.tx = "this-code-not-in-vs";
            }
        }
        if none_in_vs && let Some(first) = outcomes.first_mut() {
            first.valid = false;
            first.issues.insert(
                0,
                Issue {
                    severity: "error",
                    code: "code-invalid",
                    tx: "not-in-vs",
                    text: format!("No valid coding was found for the value set '{label}'"),
                    expression: None,
                },
            );
        }
    }
    let chosen = outcomes.iter().position(|o| o.valid).unwrap_or(0);
    // A CodeableConcept is valid when one coding is in the value set and no coding carries an
    // error of its own (an unknown code in a known CodeSystem, a wrong display): the reference's
    // `ok && !op.hasErrors()`. A coding whose CodeSystem is unknown does not veto the others.
    let vetoed = req.codeable_concept.is_some()
        && outcomes
            .iter()
            .any(|o| o.unknown_system.is_none() && o.issues.iter().any(|i| i.severity == "error"));
    let result = outcomes.iter().any(|o| o.valid) && !vetoed;
    let o = &outcomes[chosen];
    let mut params = ParametersOut::new();
    // A CodeableConcept names the code it settled on only when its membership was tested.
    let settled = req.codeable_concept.is_none() || (!o.untested && !none_in_vs);
    let stored = o
        .found
        .as_ref()
        .map(|(cs, r)| cs.concept(*r).code.to_string());
    let code = o.coding.code.clone().or_else(|| stored.clone());
    if let Some(c) = code.clone().filter(|_| settled) {
        params.value("code", "valueCode", json!(c));
    }
    if let (Some(stored), Some(given)) = (&stored, &code)
        && stored != given
        && settled
    {
        params.value("normalized-code", "valueCode", json!(stored));
    }
    if let Some((cs, r)) = &o.found
        && let Some(d) = o.display.as_deref().or(cs.concept(*r).display.as_deref())
        && !none_in_vs
    {
        params.value("display", "valueString", json!(d));
    }
    let mut notes: Vec<Issue> = Vec::new();
    if let Some((cs, _)) = &o.found
        && let Some(note) = status::code_system_note(cs)
    {
        notes.push(status_issue(&format!(
            "Reference to {note} CodeSystem {}",
            cs.canonical()
        )));
    }
    if let Some((_, _, vs)) = &vs_context {
        for v in std::iter::once(vs).chain(evaluator.imported.borrow().iter()) {
            if let Some(note) = status::value_set_note(v) {
                notes.push(status_issue(&format!(
                    "Reference to {note} ValueSet {}",
                    status::value_set_label(v)
                )));
            }
        }
    }
    let mut all_issues: Vec<&Issue> = notes.iter().collect();
    if result {
        all_issues.extend(o.issues.iter());
    } else {
        all_issues.extend(outcomes.iter().flat_map(|o| o.issues.iter()));
    }
    if !all_issues.is_empty() {
        params.resource(
            "issues",
            json!({ "resourceType": "OperationOutcome", "issue": all_issues.iter().map(|i| i.json()).collect::<Vec<_>>() }),
        );
        // The message is the errors when there are any, else the warnings.
        let has_error = all_issues.iter().any(|i| i.severity == "error");
        let mut texts: Vec<&str> = all_issues
            .iter()
            .filter(|i| !i.text.starts_with(DEPRECATED_LISTING))
            // A code a fragment does not have is noted, not reported (FHIRsmith leaves it out
            // of the message: "it's not considered invalid if it's just a warning").
            .filter(|i| !(i.severity == "warning" && i.tx == "invalid-code"))
            .filter(|i| {
                i.severity == "error"
                    || (!has_error && i.severity == "warning")
                    // A coding without a system is always worth saying.
                    || i.tx == "invalid-data"
                    // So is a concept's own status (inactive, deprecated): the reference adds
                    // INACTIVE_CONCEPT_FOUND and DEPRECATED_CONCEPT_FOUND to the message
                    // whatever else is wrong (FHIRsmith `tx/workers/validate.js`).
                    || i.tx == "code-comment"
                    || i.tx == "invalid-display"
            })
            .map(|i| i.text.as_str())
            .collect();
        texts.sort_unstable();
        texts.dedup();
        if !texts.is_empty() {
            params.value("message", "valueString", json!(texts.join("; ")));
        }
    }
    if let Some((cs, r)) = &o.found
        && cs.concept(*r).inactive
    {
        params.value("inactive", "valueBoolean", json!(true));
        if let Some(status) = &cs.concept(*r).status {
            params.value("status", "valueCode", json!(status));
        }
    } else if let Some((cs, r)) = &o.found
        && let Some(status) = cs
            .concept(*r)
            .status
            .as_deref()
            .filter(|s| s.eq_ignore_ascii_case("deprecated"))
    {
        // An active but deprecated concept: the reference names its status too.
        params.value("status", "valueCode", json!(status));
    }
    params.value("result", "valueBoolean", json!(result));
    if !result {
        let mut unknown: Vec<&str> = outcomes
            .iter()
            .filter_map(|o| o.unknown_system.as_deref())
            .collect();
        unknown.dedup();
        // A coding in the value set, failed by another coding's error: the unknown system
        // only contributed to the failure.
        let name = if vetoed {
            "x-caused-by-unknown-system"
        } else {
            "x-unknown-system"
        };
        for u in unknown {
            params.value(name, "valueCanonical", json!(u));
        }
    }
    if let Some(s) = o
        .found
        .as_ref()
        .map(|(cs, _)| cs.meta.url.clone())
        .or_else(|| o.coding.system.clone())
        .filter(|_| settled)
    {
        params.value("system", "valueUri", json!(s));
    }
    if let Some(cs) = o.found.as_ref().map(|(cs, _)| cs).or(o.fragment.as_ref())
        && !cs.version.is_empty()
    {
        params.value("version", "valueString", json!(cs.version));
    }
    if !result && let Some(c) = &o.caused_by {
        params.value("x-caused-by-unknown-system", "valueCanonical", json!(c));
    }
    if let Some(cc) = &req.codeable_concept {
        params.value("codeableConcept", "valueCodeableConcept", cc.clone());
    }
    Ok(params)
}

fn status_issue(text: &str) -> Issue {
    Issue {
        severity: "information",
        code: "business-rule",
        tx: "status-check",
        text: text.to_string(),
        expression: None,
    }
}

/// Adds the issues of a version reconciliation; whether any of them fails the validation.
fn version_issues(rec: &Reconciled, path: &str, out: &mut Outcome) -> bool {
    let mut failed = false;
    for p in &rec.problems {
        let issue = match p {
            Problem::Unknown(text) => Issue {
                severity: "error",
                code: "not-found",
                tx: "not-found",
                text: text.clone(),
                expression: Some(format!("{path}system")),
            },
            Problem::Mismatch { error, text } => Issue {
                severity: if *error { "error" } else { "warning" },
                code: "invalid",
                tx: "vs-invalid",
                text: text.clone(),
                expression: Some(format!("{path}version")),
            },
            Problem::NotAllowed(text) => Issue {
                severity: "error",
                code: "exception",
                tx: "version-error",
                text: text.clone(),
                expression: Some(format!("{path}version")),
            },
        };
        failed |= issue.severity == "error";
        out.issues.push(issue);
    }
    out.caused_by.clone_from(&rec.unknown);
    failed
}

/// Whether a CodeSystem resource says it holds only part of its codes (`content = fragment`).
/// A mapped register's content mode describes what its release files hold; the server is the
/// source of its codes, so a code its release does not have is unknown, not "maybe elsewhere".
fn is_fragment(cs: &CodeSystemVersion) -> bool {
    cs.meta.content == "fragment" && cs.meta.feeds.iter().all(|f| f.starts_with("resource:"))
}

/// Whether a compose includes every code of `system` (an include of the system alone, with no
/// concept list, filter or imported ValueSet) and excludes nothing: then a code a fragment of the
/// system does not hold may still be in the ValueSet.
fn includes_whole_system(compose: &Compose, system: &str) -> bool {
    compose.exclude.is_empty()
        && compose.include.iter().any(|r| {
            r.system.as_deref() == Some(system)
                && r.concepts.is_empty()
                && r.filters.is_empty()
                && r.value_sets.is_empty()
        })
}

/// A code a fragment CodeSystem does not have: valid, with the reference's warning
/// (`UNKNOWN_CODE_IN_FRAGMENT`, FHIRsmith `tx/workers/validate.js`).
fn accept_in_fragment(cs: &Arc<CodeSystemVersion>, code: &str, path: &str, out: &mut Outcome) {
    out.issues.push(Issue {
        severity: "warning",
        code: "code-invalid",
        tx: "invalid-code",
        text: format!(
            "Unknown Code '{code}' in the CodeSystem '{}' version '{}' - note that the code system is labeled as a fragment, so the code may be valid in some other fragment",
            cs.meta.url, cs.version
        ),
        expression: Some(format!("{path}code")),
    });
    out.valid = true;
    out.fragment = Some(cs.clone());
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
        expression: Some(format!("{path}code")),
    }
}

/// "Not in the value set", naming the code as it was submitted: with the coding's version and
/// display when it has them (`'system|1.0#code ('Display')'`, the reference's
/// `None_of_the_provided_codes_are_in_the_value_set_one`).
fn not_in_vs(coding: &Coding, system: &str, code: &str, label: &str, path: &str) -> Issue {
    let version = coding
        .version
        .as_deref()
        .map(|v| format!("|{v}"))
        .unwrap_or_default();
    let display = coding
        .display
        .as_deref()
        .map(|d| format!(" ('{d}')"))
        .unwrap_or_default();
    Issue {
        severity: "error",
        code: "code-invalid",
        tx: "not-in-vs",
        text: format!(
            "The provided code '{system}{version}#{code}{display}' was not found in the value set '{label}'"
        ),
        expression: Some(format!("{path}code")),
    }
}
