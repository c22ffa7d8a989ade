//! Running one test case the way the official runner (`TxTester`, hapifhir org.hl7.fhir.core,
//! with its R4 terminology client) does: which tests run in which modes, how the request is
//! built (request file + suite `setup` resources as `tx-resource` + the profile parameters),
//! where it is sent, how the response is interpreted, normalised and compared.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value as Json, json};
use tower::ServiceExt;

use crate::compare::{Comparer, Mismatch, brief};
use crate::normalize::{KeptExtensions, Scrub, lift_r4_to_r5, parse_json, r5_to_r4_request, scrub};

/// How long one request may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The FHIR version the comparison's `$version$` stands for (we are an R4 server).
pub const FHIR_VERSION: &str = "4.0.1";

/// The test definitions and files of one checkout of the suite.
pub struct TestSet {
    /// The folder holding `test-cases.json`.
    pub root: PathBuf,
    /// Suites in file order.
    pub suites: Vec<Json>,
}

impl TestSet {
    /// Reads `test-cases.json` from `root`.
    pub fn load(root: &Path) -> Result<Self, String> {
        let doc = read_json(root, "test-cases.json")?;
        let suites = doc
            .get("suites")
            .and_then(Json::as_array)
            .cloned()
            .ok_or("test-cases.json has no `suites` array")?;
        Ok(Self {
            root: root.to_path_buf(),
            suites,
        })
    }

    /// The suite's setup resources, as the R4 client would send them.
    pub fn setup(&self, suite: &Json) -> Result<Vec<Json>, String> {
        strings(suite.get("setup"))
            .iter()
            .map(|f| read_json(&self.root, f).map(|r| r5_to_r4_request(&r)))
            .collect()
    }
}

/// The runner's settings: enabled modes and comparison variables.
pub struct Settings {
    /// `general` (on by default in the Java runner; every suite but `metadata` is gated on it)
    /// and `flat` (we never return hierarchical expansions, so `response:flat` files apply).
    pub modes: HashSet<String>,
    /// `version` (the server's FHIR version) for `$version$` and `$optional$: "version:N"`.
    pub variables: HashMap<String, String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            modes: ["general", "flat"].iter().map(|s| s.to_string()).collect(),
            variables: HashMap::from([("version".to_string(), FHIR_VERSION.to_string())]),
        }
    }
}

impl Settings {
    /// Whether a suite or test runs: its `mode` (or any of its `modes`) is enabled, and its
    /// `version` (`4.0`, or `!4.0`) matches our FHIR version.
    pub fn runs(&self, item: &Json) -> bool {
        let mode_ok = match (
            item.get("modes").and_then(Json::as_array),
            item.get("mode").and_then(Json::as_str),
        ) {
            (Some(ms), _) => ms
                .iter()
                .filter_map(Json::as_str)
                .any(|m| self.modes.contains(m)),
            (None, Some(m)) => self.modes.contains(m),
            (None, None) => true,
        };
        let version_ok = match item.get("version").and_then(Json::as_str) {
            None => true,
            Some(v) => match v.strip_prefix('!') {
                Some(not) => !version_matches(FHIR_VERSION, not),
                None => version_matches(FHIR_VERSION, v),
            },
        };
        mode_ok && version_ok
    }

    /// `TxTester.chooseParam`: `name:mode` for an enabled mode, else `name`. Unlike the Java,
    /// a `name:mode` file that does not exist (a suite bug: `search-all-yes` names a missing
    /// `response:flat`) falls back to `name` instead of failing the test.
    fn choose<'a>(&self, root: &Path, test: &'a Json, name: &str) -> Option<&'a str> {
        let mut modes: Vec<&String> = self.modes.iter().collect();
        modes.sort();
        modes
            .iter()
            .filter_map(|m| test.get(format!("{name}:{m}")).and_then(Json::as_str))
            .find(|f| root.join(f).is_file())
            .or_else(|| test.get(name).and_then(Json::as_str))
    }
}

/// What happened to one test.
pub struct Outcome {
    /// `None` when the test passed.
    pub failure: Option<Failure>,
    /// Comparison warnings (missing `warning:` items); they do not fail the test.
    pub warnings: Vec<String>,
    /// `METHOD path` of the request sent, if one was.
    pub request: Option<String>,
    /// The request body sent, if any.
    pub request_body: Option<Json>,
    /// The HTTP status received.
    pub status: Option<u16>,
    /// The response as compared (scrubbed, R4→R5 lifted) — or as received when it could not be
    /// interpreted.
    pub actual: Option<Json>,
    /// The expected file used.
    pub expected_file: Option<String>,
}

/// Why a test failed: a grouping key and the full explanation.
pub struct Failure {
    /// Stable category, used to count failure causes across tests.
    pub signature: String,
    /// The explanation written to the `.diff.txt` file.
    pub explanation: String,
}

impl Outcome {
    fn new() -> Self {
        Self {
            failure: None,
            warnings: Vec::new(),
            request: None,
            request_body: None,
            status: None,
            actual: None,
            expected_file: None,
        }
    }

    /// An outcome that failed before any request was sent.
    pub fn failed(signature: impl Into<String>, explanation: impl Into<String>) -> Self {
        Self::new().fail(signature, explanation)
    }

    fn fail(mut self, signature: impl Into<String>, explanation: impl Into<String>) -> Self {
        self.failure = Some(Failure {
            signature: signature.into(),
            explanation: explanation.into(),
        });
        self
    }
}

/// The resource type the R4 client expects from a successful call.
fn expected_type(operation: &str) -> &'static str {
    match operation {
        "expand" => "ValueSet",
        "metadata" => "CapabilityStatement",
        "term-caps" => "TerminologyCapabilities",
        _ => "Parameters",
    }
}

/// Runs one test against the router.
pub async fn run_test(
    app: &Router,
    set: &TestSet,
    settings: &Settings,
    suite: &Json,
    setup: &[Json],
    test: &Json,
) -> Outcome {
    let mut out = Outcome::new();
    let operation = test.get("operation").and_then(Json::as_str).unwrap_or("");
    let Some(response_file) = settings.choose(&set.root, test, "response") else {
        return out.fail("bad test definition", "the test names no response file");
    };
    out.expected_file = Some(response_file.to_string());
    let expected = match read_json(&set.root, response_file) {
        Ok(e) => e,
        Err(e) => return out.fail("bad test definition", e),
    };

    let (method, uri, body) = match build_request(set, settings, test, operation, setup) {
        Ok(r) => r,
        Err(e) => return out.fail("request not sent", e),
    };
    out.request = Some(format!("{method} {uri}"));
    out.request_body = body.clone();
    let request_id = format!(
        "txTests:{}/{}",
        suite.get("name").and_then(Json::as_str).unwrap_or(""),
        test.get("name").and_then(Json::as_str).unwrap_or("")
    );
    let mut headers: Vec<(String, String)> = vec![("X-Request-Id".into(), request_id)];
    if let Some(lang) = test.get("Accept-Language").and_then(Json::as_str) {
        headers.push(("Accept-Language".into(), lang.into()));
    }
    if let Some(h) = test.get("header")
        && h.get("mode")
            .and_then(Json::as_str)
            .is_none_or(|m| settings.modes.contains(m))
        && let (Some(n), Some(v)) = (
            h.get("name").and_then(Json::as_str),
            h.get("value").and_then(Json::as_str),
        )
    {
        headers.push((n.into(), v.into()));
    }
    let (status, bytes) = match send(app, method, &uri, body.as_ref(), &headers).await {
        Ok(r) => r,
        Err(e) => return out.fail("no response", e),
    };
    out.status = Some(status.as_u16());

    let evaluated = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        evaluate(settings, test, operation, &expected, status, &bytes)
    }));
    match evaluated {
        Ok(Evaluation {
            actual,
            failure,
            warnings,
        }) => {
            out.actual = actual;
            out.warnings = warnings;
            out.failure = failure;
            out
        }
        Err(_) => out.fail(
            "runner panic",
            "the comparison panicked (a bug in the runner)",
        ),
    }
}

/// The request: method, path (with query) and body.
fn build_request(
    set: &TestSet,
    settings: &Settings,
    test: &Json,
    operation: &str,
    setup: &[Json],
) -> Result<(Method, String, Option<Json>), String> {
    let path = match operation {
        "metadata" => return Ok((Method::GET, "/fhir/metadata".into(), None)),
        "term-caps" => return Ok((Method::GET, "/fhir/metadata?mode=terminology".into(), None)),
        "expand" => "/fhir/ValueSet/$expand",
        "validate-code" => "/fhir/ValueSet/$validate-code",
        "cs-validate-code" => "/fhir/CodeSystem/$validate-code",
        "lookup" => "/fhir/CodeSystem/$lookup",
        "translate" => "/fhir/ConceptMap/$translate",
        "batch-validate" => "/fhir/ValueSet/$batch-validate-code",
        other => return Err(format!("unknown operation `{other}`")),
    };
    let request_file = settings
        .choose(&set.root, test, "request")
        .ok_or("the test names no request file")?;
    let mut params = read_json(&set.root, request_file)?;
    if params.get("resourceType").and_then(Json::as_str) != Some("Parameters") {
        return Err(format!("{request_file} is not a Parameters resource"));
    }
    let list = params
        .as_object_mut()
        .ok_or("request is not an object")?
        .entry("parameter")
        .or_insert_with(|| json!([]));
    let list = list
        .as_array_mut()
        .ok_or("Parameters.parameter is not an array")?;
    if operation == "expand"
        && list.iter().any(|p| {
            p.get("name").and_then(Json::as_str) == Some("url") && p.get("valueUri").is_none()
        })
    {
        // TxTester throws "Wrong param type" for an expand `url` that is not a valueUri.
        return Err("Wrong param type: an expand `url` parameter must be a valueUri".into());
    }
    for r in setup {
        list.push(json!({ "name": "tx-resource", "resource": r }));
    }
    let profile_file = test
        .get("profile")
        .and_then(Json::as_str)
        .unwrap_or("parameters-default.json");
    let profile = read_json(&set.root, profile_file)?;
    if let Some(ps) = profile.get("parameter").and_then(Json::as_array) {
        list.extend(ps.iter().cloned());
    }
    Ok((Method::POST, path.into(), Some(params)))
}

async fn send(
    app: &Router,
    method: Method,
    uri: &str,
    body: Option<&Json>,
    headers: &[(String, String)],
) -> Result<(StatusCode, Vec<u8>), String> {
    let mut builder = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::ACCEPT, "application/fhir+json");
    for (name, value) in headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    let request = match body {
        Some(b) => builder
            .header(header::CONTENT_TYPE, "application/fhir+json")
            .body(Body::from(b.to_string())),
        None => builder.body(Body::empty()),
    }
    .map_err(|e| format!("could not build the request: {e}"))?;
    let response = tokio::time::timeout(REQUEST_TIMEOUT, app.clone().oneshot(request))
        .await
        .map_err(|_| format!("no response within {} s", REQUEST_TIMEOUT.as_secs()))?
        .map_err(|e| format!("router error: {e}"))?;
    let status = response.status();
    let bytes = tokio::time::timeout(REQUEST_TIMEOUT, response.into_body().collect())
        .await
        .map_err(|_| "the response body did not finish".to_string())?
        .map_err(|e| format!("could not read the response body: {e}"))?
        .to_bytes()
        .to_vec();
    Ok((status, bytes))
}

struct Evaluation {
    actual: Option<Json>,
    failure: Option<Failure>,
    warnings: Vec<String>,
}

/// Interprets the response as the R4 client would, normalises it and compares it.
fn evaluate(
    settings: &Settings,
    test: &Json,
    operation: &str,
    expected: &Json,
    status: StatusCode,
    bytes: &[u8],
) -> Evaluation {
    let mut ev = Evaluation {
        actual: None,
        failure: None,
        warnings: Vec::new(),
    };
    let fail = |ev: &mut Evaluation, signature: String, explanation: String| {
        ev.failure = Some(Failure {
            signature,
            explanation,
        });
    };
    let metadata = matches!(operation, "metadata" | "term-caps");
    let mut actual = match parse_json(bytes) {
        Ok(j) => j,
        Err(e) => {
            ev.actual = Some(Json::String(String::from_utf8_lossy(bytes).into_owned()));
            fail(
                &mut ev,
                format!("HTTP {}: response body is not JSON", status.as_u16()),
                format!("HTTP {status}; the body is {e}"),
            );
            return ev;
        }
    };
    let resource_type = actual
        .get("resourceType")
        .and_then(Json::as_str)
        .unwrap_or("(none)")
        .to_string();
    let scrub_how = if status.is_success() {
        let want = expected_type(operation);
        if resource_type != want {
            let signature = format!(
                "HTTP {} with a {resource_type} where the client expects a {want}",
                status.as_u16()
            );
            let explanation = format!("{signature}: {}", issue_summary(&actual));
            ev.actual = Some(actual);
            fail(&mut ev, signature, explanation);
            return ev;
        }
        if metadata {
            Scrub::Metadata
        } else {
            Scrub::Full
        }
    } else {
        if metadata || resource_type != "OperationOutcome" {
            let signature = format!(
                "HTTP {} {}",
                status.as_u16(),
                if metadata {
                    "from the metadata endpoint"
                } else {
                    "without an OperationOutcome"
                }
            );
            let explanation = format!("{signature}: {}", issue_summary(&actual));
            ev.actual = Some(actual);
            fail(&mut ev, signature, explanation);
            return ev;
        }
        if operation == "cs-validate-code" {
            Scrub::TextOnly
        } else {
            Scrub::Full
        }
    };
    if let Err(e) = lift_r4_to_r5(&mut actual) {
        ev.actual = Some(actual);
        fail(
            &mut ev,
            "R4→R5 conversion fails (contains.property extension lacks value[x])".into(),
            e,
        );
        return ev;
    }
    scrub(
        &mut actual,
        scrub_how,
        &KeptExtensions::for_expected(expected),
    );

    let comparer = Comparer::new(&settings.modes, &settings.variables);
    let comparer = if metadata {
        comparer.pattern()
    } else {
        comparer
    };
    let diff: Option<Mismatch> = comparer.compare(expected, &actual).err();
    ev.warnings = comparer.warnings();

    let wanted = test
        .get("http-code")
        .and_then(Json::as_str)
        .unwrap_or("2xx");
    let code_ok = metadata || status_class_matches(wanted, status.as_u16());
    if !code_ok {
        let signature = format!(
            "HTTP {} where {wanted} expected{}",
            status.as_u16(),
            if status.is_success() {
                String::new()
            } else {
                format!(" ({})", issue_kind(&actual))
            }
        );
        let mut explanation = format!(
            "Response Code fail: should be '{wanted}' but is '{}'. {}",
            status.as_u16(),
            issue_summary(&actual)
        );
        if let Some(d) = &diff {
            explanation.push_str(&format!("\nAlso: {d}"));
        }
        fail(&mut ev, signature, explanation);
    } else if let Some(d) = diff {
        fail(&mut ev, d.signature(), d.to_string());
    }
    ev.actual = Some(actual);
    ev
}

/// `4.0` matches `4.0` and `4.0.x`.
fn version_matches(ours: &str, wanted: &str) -> bool {
    ours == wanted || ours.starts_with(&format!("{wanted}."))
}

fn status_class_matches(wanted: &str, code: u16) -> bool {
    match wanted {
        "2xx" => (200..300).contains(&code),
        "3xx" => (300..400).contains(&code),
        "4xx" => (400..500).contains(&code),
        "5xx" => (500..600).contains(&code),
        _ => false,
    }
}

/// `code/tx-issue-type` of the first issue of an OperationOutcome (for grouping).
fn issue_kind(resource: &Json) -> String {
    let Some(issue) = resource.get("issue").and_then(|i| i.get(0)) else {
        return brief(resource);
    };
    let code = issue.get("code").and_then(Json::as_str).unwrap_or("?");
    let tx = issue
        .pointer("/details/coding/0/code")
        .and_then(Json::as_str)
        .unwrap_or("-");
    format!("{code}/{tx}")
}

/// The issues of an OperationOutcome, one line each (or a brief rendering of anything else).
fn issue_summary(resource: &Json) -> String {
    match resource.get("issue").and_then(Json::as_array) {
        Some(issues) => issues
            .iter()
            .map(|i| {
                format!(
                    "[{} {}] {}",
                    i.get("severity").and_then(Json::as_str).unwrap_or("?"),
                    i.get("code").and_then(Json::as_str).unwrap_or("?"),
                    i.pointer("/details/text")
                        .or_else(|| i.get("diagnostics"))
                        .and_then(Json::as_str)
                        .unwrap_or("")
                )
            })
            .collect::<Vec<_>>()
            .join(" | "),
        None => brief(resource),
    }
}

/// Reads a JSON file of the suite (BOM tolerated).
pub fn read_json(root: &Path, file: &str) -> Result<Json, String> {
    let path = root.join(file);
    let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse_json(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

fn strings(v: Option<&Json>) -> Vec<String> {
    v.and_then(Json::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}
