//! Content negotiation: `_format`, `Accept`, `Content-Type`, `_pretty`; JSON ⇄ XML via the
//! `fhir-xml` crate.

use serde_json::Value as Json;

use crate::error::FhirError;

/// A response or request format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `application/fhir+json`.
    Json,
    /// `application/fhir+xml`.
    Xml,
}

impl Format {
    /// The Content-Type header value.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Json => "application/fhir+json; charset=utf-8",
            Self::Xml => "application/fhir+xml; charset=utf-8",
        }
    }
}

fn media_type(value: &str) -> Option<Option<Format>> {
    let mt = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    Some(match mt.as_str() {
        "json" | "application/json" | "application/fhir+json" | "application/json+fhir" => {
            Some(Format::Json)
        }
        "xml"
        | "text/xml"
        | "application/xml"
        | "application/fhir+xml"
        | "application/xml+fhir" => Some(Format::Xml),
        "*/*" | "application/*" | "" => None,
        _ => return None,
    })
}

/// Chooses the response format from `_format` (wins) and `Accept`.
pub fn negotiate(format_param: Option<&str>, accept: Option<&str>) -> Result<Format, FhirError> {
    if let Some(f) = format_param {
        return match media_type(f) {
            Some(Some(fmt)) => Ok(fmt),
            _ => Err(FhirError::NotAcceptable(format!(
                "_format '{f}' is not supported (use json or xml)"
            ))),
        };
    }
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return Ok(Format::Json);
    };
    let mut ranges: Vec<(f32, usize, &str)> = accept
        .split(',')
        .enumerate()
        .map(|(i, r)| {
            let q = r
                .split(';')
                .skip(1)
                .find_map(|p| p.trim().strip_prefix("q="))
                .and_then(|q| q.parse::<f32>().ok())
                .unwrap_or(1.0);
            (q, i, r)
        })
        .filter(|(q, _, _)| *q > 0.0)
        .collect();
    ranges.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    for (_, _, r) in ranges {
        match media_type(r) {
            Some(Some(f)) => return Ok(f),
            Some(None) => return Ok(Format::Json),
            None => {}
        }
    }
    Err(FhirError::NotAcceptable(format!(
        "none of the accepted types '{accept}' can be produced (application/fhir+json, application/fhir+xml)"
    )))
}

/// Renders a resource in a format.
pub fn render(resource: &Json, format: Format, pretty: bool) -> Result<Vec<u8>, FhirError> {
    match format {
        Format::Json => {
            let out = if pretty {
                serde_json::to_vec_pretty(resource)
            } else {
                serde_json::to_vec(resource)
            };
            out.map_err(|e| FhirError::Internal(e.to_string()))
        }
        Format::Xml => {
            let json =
                serde_json::to_string(resource).map_err(|e| FhirError::Internal(e.to_string()))?;
            fhir_xml::json_to_xml(&json)
                .map(String::into_bytes)
                .map_err(|e| FhirError::Internal(format!("XML rendering failed: {e}")))
        }
    }
}

/// What a request body turned out to be.
#[derive(Debug)]
pub enum Body {
    /// A FHIR resource (from JSON or XML).
    Resource(Json),
    /// Form-encoded parameters.
    Form(Vec<(String, String)>),
}

/// Parses a request body by its Content-Type.
pub fn parse_body(content_type: Option<&str>, body: &[u8]) -> Result<Body, FhirError> {
    let mt = content_type
        .map(|c| {
            c.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    let text = || {
        std::str::from_utf8(body)
            .map(|s| s.trim_start_matches('\u{feff}'))
            .map_err(|_| FhirError::Invalid("the request body is not UTF-8".into()))
    };
    match mt.as_str() {
        "application/x-www-form-urlencoded" => Ok(Body::Form(
            url::form_urlencoded::parse(body).into_owned().collect(),
        )),
        "application/xml" | "text/xml" | "application/fhir+xml" | "application/xml+fhir" => {
            // `xml_to_json` reads the body once with its guard (depth, attributes, namespace
            // declarations, element count, no DOCTYPE) before the recursive parser sees it.
            let json = fhir_xml::xml_to_json(text()?).map_err(|e| match e {
                fhir_xml::XmlError::Refused(r) => {
                    FhirError::Invalid(format!("the XML body was refused: {r}"))
                }
                fhir_xml::XmlError::NotFhir(e) => {
                    FhirError::Invalid(format!("the XML body is not a valid FHIR R4 resource: {e}"))
                }
            })?;
            serde_json::from_str(&json)
                .map(Body::Resource)
                .map_err(|e| FhirError::Internal(e.to_string()))
        }
        "" | "application/json" | "application/fhir+json" | "application/json+fhir" => {
            serde_json::from_str(text()?)
                .map(Body::Resource)
                .map_err(|e| FhirError::Invalid(format!("the request body is not valid JSON: {e}")))
        }
        other => Err(FhirError::UnsupportedMediaType(format!(
            "Content-Type '{other}' is not supported (use application/fhir+json or application/fhir+xml)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiates_like_fhir_clients_expect() {
        assert_eq!(negotiate(None, None), Ok(Format::Json));
        assert_eq!(
            negotiate(Some("xml"), Some("application/fhir+json")),
            Ok(Format::Xml)
        );
        assert_eq!(
            negotiate(None, Some("application/fhir+xml")),
            Ok(Format::Xml)
        );
        assert_eq!(
            negotiate(None, Some("text/html,application/xhtml+xml,*/*;q=0.8")),
            Ok(Format::Json)
        );
        assert_eq!(
            negotiate(
                None,
                Some("application/fhir+json;q=0.5, application/fhir+xml")
            ),
            Ok(Format::Xml)
        );
        assert!(matches!(
            negotiate(None, Some("text/html")),
            Err(FhirError::NotAcceptable(_))
        ));
        assert!(matches!(
            negotiate(Some("turtle"), None),
            Err(FhirError::NotAcceptable(_))
        ));
    }

    #[test]
    fn bodies_parse_by_content_type() {
        assert!(matches!(
            parse_body(
                Some("application/fhir+json"),
                br#"{"resourceType":"Parameters"}"#
            ),
            Ok(Body::Resource(_))
        ));
        assert!(matches!(
            parse_body(Some("text/plain"), b"x"),
            Err(FhirError::UnsupportedMediaType(_))
        ));
        assert!(matches!(
            parse_body(Some("application/json"), b"{"),
            Err(FhirError::Invalid(_))
        ));
        let Ok(Body::Resource(r)) = parse_body(
            Some("application/fhir+xml"),
            br#"<Parameters xmlns="http://hl7.org/fhir"><parameter><name value="code"/><valueCode value="J45.9"/></parameter></Parameters>"#,
        ) else {
            panic!("xml body parses")
        };
        assert_eq!(r["parameter"][0]["valueCode"], "J45.9");
    }
}
