//! A `batch-response` Bundle written as bytes, entry by entry, from each entry's already rendered
//! JSON answer: no entry is held as a JSON tree, nor the whole Bundle at all, so a batch can be
//! streamed. JSON (compact or `_pretty`) and XML are written; which entries run, and in what
//! budget, is the caller's business.

use serde_json::Value as Json;

use super::format::Format;
use crate::error::FhirError;

/// Writes the pieces of one `batch-response` Bundle in one format: [`open`](Self::open), then
/// [`entry`](Self::entry) for each entry in order, then [`close`](Self::close).
#[derive(Debug)]
pub struct BatchResponseWriter {
    format: Format,
    pretty: bool,
    entries: usize,
}

/// Escapes text for an XML attribute value.
fn xml_attribute(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A resource's JSON rendered as FHIR XML, without an XML declaration (it goes inside the Bundle).
fn resource_xml(json: &[u8]) -> Result<String, FhirError> {
    let text = std::str::from_utf8(json)
        .map_err(|e| FhirError::Internal(format!("a batch entry's answer is not UTF-8: {e}")))?;
    let xml = fhir_xml::json_to_xml(text)
        .map_err(|e| FhirError::Internal(format!("XML rendering of a batch entry failed: {e}")))?;
    let body = match xml.strip_prefix("<?xml") {
        Some(rest) => rest.split_once("?>").map_or("", |(_, r)| r).trim_start(),
        None => xml.as_str(),
    };
    Ok(body.to_string())
}

impl BatchResponseWriter {
    /// A writer for a Bundle in `format` (`pretty` indents JSON).
    pub fn new(format: Format, pretty: bool) -> Self {
        Self {
            format,
            pretty,
            entries: 0,
        }
    }

    /// The Bundle's start, up to its first entry.
    pub fn open(&self) -> Vec<u8> {
        match (self.format, self.pretty) {
            (Format::Json, false) => {
                br#"{"resourceType":"Bundle","type":"batch-response""#.to_vec()
            }
            (Format::Json, true) => {
                b"{\n  \"resourceType\": \"Bundle\",\n  \"type\": \"batch-response\"".to_vec()
            }
            (Format::Xml, _) => {
                br#"<Bundle xmlns="http://hl7.org/fhir"><type value="batch-response"/>"#.to_vec()
            }
        }
    }

    /// One entry: its HTTP `status` line (`200 OK`) and its answer, a FHIR resource in JSON: the
    /// entry's `resource` when `succeeded`, else its `response.outcome`. Fails only if the answer
    /// is not a FHIR resource (a bug on this side); nothing is written then.
    pub fn entry(
        &mut self,
        status: &str,
        succeeded: bool,
        answer: &[u8],
    ) -> Result<Vec<u8>, FhirError> {
        let first = self.entries == 0;
        let out = match (self.format, self.pretty) {
            (Format::Json, false) => {
                let status = Json::String(status.to_string()).to_string();
                let mut out = Vec::with_capacity(answer.len() + status.len() + 48);
                out.extend_from_slice(if first { br#","entry":["# } else { b"," });
                if succeeded {
                    out.extend_from_slice(br#"{"resource":"#);
                    out.extend_from_slice(answer);
                    out.extend_from_slice(br#","response":{"status":"#);
                    out.extend_from_slice(status.as_bytes());
                    out.extend_from_slice(b"}}");
                } else {
                    out.extend_from_slice(br#"{"response":{"status":"#);
                    out.extend_from_slice(status.as_bytes());
                    out.extend_from_slice(br#","outcome":"#);
                    out.extend_from_slice(answer);
                    out.extend_from_slice(b"}}");
                }
                out
            }
            (Format::Json, true) => {
                // One entry as a tree at a time; serde_json's pretty layout, indented to the
                // entry's depth (JSON strings hold no raw newlines, so every line is indented).
                let resource: Json = serde_json::from_slice(answer).map_err(|e| {
                    FhirError::Internal(format!("a batch entry's answer is not JSON: {e}"))
                })?;
                let mut response = serde_json::Map::new();
                response.insert("status".into(), Json::String(status.to_string()));
                let mut entry = serde_json::Map::new();
                if succeeded {
                    entry.insert("resource".into(), resource);
                } else {
                    response.insert("outcome".into(), resource);
                }
                entry.insert("response".into(), Json::Object(response));
                let text = serde_json::to_string_pretty(&Json::Object(entry))
                    .map_err(|e| FhirError::Internal(e.to_string()))?;
                let mut out = String::with_capacity(text.len() * 5 / 4 + 16);
                out.push_str(if first { ",\n  \"entry\": [\n" } else { ",\n" });
                for (i, line) in text.lines().enumerate() {
                    if i > 0 {
                        out.push('\n');
                    }
                    out.push_str("    ");
                    out.push_str(line);
                }
                out.into_bytes()
            }
            (Format::Xml, _) => {
                let resource = resource_xml(answer)?;
                let status = format!(r#"<status value="{}"/>"#, xml_attribute(status));
                if succeeded {
                    format!("<entry><resource>{resource}</resource><response>{status}</response></entry>")
                } else {
                    format!("<entry><response>{status}<outcome>{resource}</outcome></response></entry>")
                }
                .into_bytes()
            }
        };
        self.entries += 1;
        Ok(out)
    }

    /// The Bundle's end.
    pub fn close(&self) -> Vec<u8> {
        let any = self.entries > 0;
        match (self.format, self.pretty) {
            (Format::Json, false) => if any { &b"]}"[..] } else { b"}" }.to_vec(),
            (Format::Json, true) => if any { &b"\n  ]\n}"[..] } else { b"\n}" }.to_vec(),
            (Format::Xml, _) => b"</Bundle>".to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const LOOKUP: &str = r#"{"resourceType":"Parameters","parameter":[{"name":"display","valueString":"Asthma & <co>"}]}"#;
    const OUTCOME: &str = r#"{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"not-found","details":{"text":"Unknown code"}}]}"#;

    fn written(format: Format, pretty: bool) -> Vec<u8> {
        let mut w = BatchResponseWriter::new(format, pretty);
        let mut out = w.open();
        out.extend(w.entry("200 OK", true, LOOKUP.as_bytes()).expect("entry"));
        out.extend(
            w.entry("404 Not Found", false, OUTCOME.as_bytes())
                .expect("entry"),
        );
        out.extend(w.close());
        out
    }

    fn expected() -> Json {
        json!({"resourceType": "Bundle", "type": "batch-response", "entry": [
            {"resource": serde_json::from_str::<Json>(LOOKUP).expect("json"), "response": {"status": "200 OK"}},
            {"response": {"status": "404 Not Found", "outcome": serde_json::from_str::<Json>(OUTCOME).expect("json")}}
        ]})
    }

    #[test]
    fn json_bundles_are_the_entries_in_order() {
        let compact: Json = serde_json::from_slice(&written(Format::Json, false)).expect("JSON");
        assert_eq!(compact, expected());
        let pretty = written(Format::Json, true);
        assert_eq!(
            String::from_utf8(pretty).expect("utf-8"),
            serde_json::to_string_pretty(&expected()).expect("pretty"),
            "the pretty bundle is laid out as if it were rendered whole"
        );
    }

    #[test]
    fn an_empty_batch_has_no_entry_array() {
        let w = BatchResponseWriter::new(Format::Json, false);
        let mut out = w.open();
        out.extend(w.close());
        let bundle: Json = serde_json::from_slice(&out).expect("JSON");
        assert_eq!(
            bundle,
            json!({"resourceType": "Bundle", "type": "batch-response"})
        );
    }

    #[test]
    fn xml_bundles_read_back_as_the_same_bundle() {
        let xml = String::from_utf8(written(Format::Xml, false)).expect("utf-8");
        let json = fhir_xml::xml_to_json(&xml).unwrap_or_else(|e| panic!("{e}: {xml}"));
        let bundle: Json = serde_json::from_str(&json).expect("JSON");
        assert_eq!(bundle, expected());
    }
}
