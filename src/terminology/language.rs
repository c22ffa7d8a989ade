//! Display languages: parsing `displayLanguage` / `Accept-Language` preference lists, and
//! choosing a concept's display and designations for them.

use serde_json::{Value as Json, json};

use super::resources::designation_json;
use crate::store::{CodeSystemVersion, Concept, Designation, DesignationUse};

/// A language preference list (`de, en;q=0.5, *;q=0`), best first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Preferences {
    /// (tag, q) in order of preference; `*` is any language.
    pub tags: Vec<(String, f32)>,
}

impl Preferences {
    /// Parses a comma-separated list with optional `;q=` weights.
    pub fn parse(text: &str) -> Self {
        let mut tags: Vec<(usize, String, f32)> = text
            .split(',')
            .enumerate()
            .filter_map(|(i, part)| {
                let mut bits = part.split(';');
                let tag = bits.next()?.trim().to_string();
                if tag.is_empty() {
                    return None;
                }
                let q = bits
                    .find_map(|b| {
                        b.trim()
                            .strip_prefix("q=")
                            .and_then(|q| q.trim().parse::<f32>().ok())
                    })
                    .unwrap_or(1.0);
                Some((i, tag, q))
            })
            .collect();
        tags.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.0.cmp(&b.0)));
        Self {
            tags: tags.into_iter().map(|(_, t, q)| (t, q)).collect(),
        }
    }

    /// The most preferred concrete language, if any.
    pub fn first(&self) -> Option<&str> {
        self.tags
            .iter()
            .find(|(t, q)| *q > 0.0 && t != "*")
            .map(|(t, _)| t.as_str())
    }
}

/// Checks a `displayLanguage` (or `Accept-Language`) value: a comma-separated list of language
/// ranges (`*` or BCP 47 subtags: letters, then letters or digits, 1-8 each), each with an
/// optional `;q=` weight between 0 and 1. Anything else (`-`, `en_GB`, `q=2`) is an `invalid`
/// error with the reference wording ("Invalid displayLanguage: '…'").
pub fn check_display_language(text: &str) -> Result<(), crate::error::FhirError> {
    let subtag = |s: &str, first: bool| {
        (1..=8).contains(&s.len())
            && s.chars().all(|c| {
                if first {
                    c.is_ascii_alphabetic()
                } else {
                    c.is_ascii_alphanumeric()
                }
            })
    };
    let range = |part: &str| {
        let mut bits = part.split(';');
        let tag = bits.next().unwrap_or("").trim();
        let tag_ok = tag == "*" || tag.split('-').enumerate().all(|(i, s)| subtag(s, i == 0));
        tag_ok
            && bits.all(|b| {
                b.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| (0.0..=1.0).contains(&q))
            })
    };
    if text.trim().is_empty() || text.split(',').all(range) {
        Ok(())
    } else {
        Err(crate::error::FhirError::Invalid(format!(
            "Invalid displayLanguage: '{text}'"
        )))
    }
}

/// Whether a language tag satisfies a requested tag (`de-CH` satisfies `de`).
pub fn matches(tag: &str, requested: &str) -> bool {
    let (tag, requested) = (tag.to_ascii_lowercase(), requested.to_ascii_lowercase());
    tag == requested || tag.starts_with(&format!("{requested}-"))
}

/// The language of a CodeSystem's own displays (`CodeSystem.language`), if it says.
pub fn code_system_language(cs: &CodeSystemVersion) -> Option<&str> {
    cs.meta
        .extra
        .as_ref()
        .and_then(|e| e.get("language"))
        .and_then(Json::as_str)
}

/// The "designation index" returned when the CodeSystem display was withheld (no display in the
/// languages asked for, and `*;q=0` forbids falling back): no designation has this index, and the
/// CodeSystem display is then listed as a designation.
pub const SUPPRESSED: usize = usize::MAX;

/// The display of a concept for the preferences, and which designation (if any) supplied it.
pub fn choose_display<'a>(
    cs: &CodeSystemVersion,
    c: &'a Concept,
    prefs: Option<&Preferences>,
) -> (Option<&'a str>, Option<usize>) {
    let default = c.display.as_deref();
    let Some(prefs) = prefs else {
        return (default, None);
    };
    let own = code_system_language(cs);
    for (tag, q) in &prefs.tags {
        if *q <= 0.0 {
            continue;
        }
        if tag == "*" || own.is_none_or(|l| matches(l, tag)) {
            return (default, None);
        }
        if let Some(i) = c
            .designations
            .iter()
            .position(|d| d.language.as_deref().is_some_and(|l| matches(l, tag)))
        {
            return (Some(&c.designations[i].value), Some(i));
        }
    }
    // `*;q=0`: nothing but the languages asked for, so no display at all.
    if prefs.tags.iter().any(|(t, q)| t == "*" && *q <= 0.0) {
        return (None, Some(SUPPRESSED));
    }
    (default, None)
}

/// The designations to show with a concept: its own (less the one used as display, if any),
/// the CodeSystem display as a `preferredForLanguage` designation when it was replaced, and only
/// the languages asked for by `designation` parameters (`urn:ietf:bcp:47|es`) when there are any.
pub fn designations_json(
    cs: &CodeSystemVersion,
    c: &Concept,
    used: Option<usize>,
    wanted: &[String],
) -> Vec<Json> {
    let mut out = Vec::new();
    if used.is_some()
        && let Some(d) = &c.display
    {
        let replaced = Designation {
            language: code_system_language(cs).map(Into::into),
            use_: Some(DesignationUse {
                system: "http://terminology.hl7.org/CodeSystem/hl7TermMaintInfra".into(),
                code: "preferredForLanguage".into(),
                display: Some("Preferred For Language".into()),
            }),
            value: d.clone(),
            extensions: None,
        };
        out.push(replaced);
    }
    out.extend(
        c.designations
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != used)
            .map(|(_, d)| d.clone()),
    );
    // The applied supplements' designations of the code, after its own.
    for (d, _) in cs.supplement_designations(&c.code) {
        if !out.contains(&d) {
            out.push(d);
        }
    }
    let languages: Vec<&str> = wanted
        .iter()
        .filter_map(|w| w.strip_prefix("urn:ietf:bcp:47|"))
        .collect();
    out.iter()
        .filter(|d| {
            languages.is_empty()
                || d.language
                    .as_deref()
                    .is_some_and(|l| languages.iter().any(|w| l.eq_ignore_ascii_case(w)))
        })
        .map(designation_json)
        .collect()
}

/// The `displayLanguage` a ValueSet asks for through the `valueset-expansion-parameter`
/// extension on its compose.
pub fn value_set_display_language(vs: &Json) -> Option<String> {
    vs.get("compose")?
        .get("extension")?
        .as_array()?
        .iter()
        .filter(|e| {
            e.get("url").and_then(Json::as_str)
                == Some("http://hl7.org/fhir/StructureDefinition/valueset-expansion-parameter")
        })
        .find_map(|e| {
            let parts = e.get("extension")?.as_array()?;
            let name = parts.iter().find(|p| p["url"] == "name")?["valueCode"].as_str()?;
            if name != "displayLanguage" {
                return None;
            }
            let value = parts.iter().find(|p| p["url"] == "value")?;
            value
                .as_object()?
                .iter()
                .find(|(k, _)| k.starts_with("value"))
                .and_then(|(_, v)| v.as_str())
                .map(str::to_string)
        })
}

/// A `displayLanguage` expansion parameter.
pub fn display_language_parameter(value: &str) -> Json {
    json!({ "name": "displayLanguage", "valueCode": value })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_languages_are_checked_as_language_range_lists() {
        for ok in ["en", "de-CH", "en, en-AU;q=0.4", "*;q=0", "zh-Hant-TW", ""] {
            assert!(check_display_language(ok).is_ok(), "{ok}");
        }
        for bad in [
            "-",
            "en_GB",
            "en;q=2",
            "en;x",
            "toolonglanguage",
            "1en",
            "en,,de",
        ] {
            assert!(check_display_language(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn preference_lists_order_by_weight() {
        let p = Preferences::parse("de, *; q=0");
        assert_eq!(p.first(), Some("de"));
        assert_eq!(p.tags[1], ("*".to_string(), 0.0));
        let p = Preferences::parse("en;q=0.4, fr");
        assert_eq!(p.first(), Some("fr"));
        assert!(matches("de-CH", "de"));
        assert!(!matches("de", "de-CH"));
        assert!(matches("EN", "en"));
    }
}
