//! Operation parameters on the wire: one parser for GET query strings and POST `Parameters`
//! bodies, producing [`OperationParams`], from which the terminology layer builds its typed
//! requests. Also the `Parameters` builder for responses.

use std::borrow::Cow;

use serde_json::{Map, Value as Json, json};

use crate::error::FhirError;

/// A FHIR Coding as received.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Coding {
    /// `system`.
    pub system: Option<String>,
    /// `version`.
    pub version: Option<String>,
    /// `code`.
    pub code: Option<String>,
    /// `display`.
    pub display: Option<String>,
}

impl Coding {
    fn from_json(v: &Json) -> Result<Self, FhirError> {
        let obj = v
            .as_object()
            .ok_or_else(|| FhirError::Invalid("a Coding must be a JSON object".into()))?;
        let text = |k: &str| -> Result<Option<String>, FhirError> {
            match obj.get(k) {
                None | Some(Json::Null) => Ok(None),
                Some(Json::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(FhirError::Invalid(format!("Coding.{k} must be a string"))),
            }
        };
        Ok(Self {
            system: text("system")?,
            version: text("version")?,
            code: text("code")?,
            display: text("display")?,
        })
    }

    /// Parses the `system|code` token form used in query strings (`coding=system|code`).
    pub fn from_token(token: &str) -> Self {
        match token.rsplit_once('|') {
            Some((system, code)) => {
                let (system, version) = match system.split_once('|') {
                    Some((s, v)) => (s, Some(v.to_string())),
                    None => (system, None),
                };
                Self {
                    system: (!system.is_empty()).then(|| system.to_string()),
                    version,
                    code: Some(code.to_string()),
                    display: None,
                }
            }
            None => Self {
                code: Some(token.to_string()),
                ..Self::default()
            },
        }
    }
}

/// One parameter value.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamValue {
    /// Any primitive, as text (`valueString`, `valueCode`, `valueBoolean`, …, or a query value).
    Text(String),
    /// `valueCoding`.
    Coding(Coding),
    /// `valueCodeableConcept` (its codings and text).
    CodeableConcept(Vec<Coding>, Option<String>),
    /// `resource`.
    Resource(Json),
    /// `part`.
    Parts(Vec<(String, ParamValue)>),
}

/// The parameters of one operation call, in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OperationParams {
    /// (name, value) pairs.
    pub params: Vec<(String, ParamValue)>,
    /// The parameters as received, for operations that echo them with their original types
    /// ([`OperationParams::echo`]).
    pub original: Vec<Original>,
}

/// One parameter as received, kept for echoing.
#[derive(Debug, Clone, PartialEq)]
pub enum Original {
    /// A `{name, value[x]}` object of a `Parameters` body (or one made as if sent).
    Sent(Json),
    /// A query (or form) pair, echoed as a `valueString`. Kept as text: most operations never
    /// echo, and a JSON object per parameter would cost every request.
    Query(String, String),
}

impl Original {
    fn name(&self) -> Option<&str> {
        match self {
            Self::Sent(p) => p.get("name").and_then(Json::as_str),
            Self::Query(name, _) => Some(name),
        }
    }

    fn to_json(&self) -> Json {
        match self {
            Self::Sent(p) => p.clone(),
            Self::Query(name, value) => json!({ "name": name, "valueString": value }),
        }
    }
}

/// Query parameters that control the HTTP exchange, not the operation.
const TRANSPORT_PARAMS: [&str; 3] = ["_format", "_pretty", "_summary"];

impl OperationParams {
    /// From a query string's pairs (already percent-decoded). Transport parameters are dropped.
    pub fn from_query(pairs: &[(String, String)]) -> Self {
        Self::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }

    /// From query (or form) pairs, already percent-decoded, owned or borrowed. Transport
    /// parameters are dropped.
    pub fn from_pairs<K, V>(pairs: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: AsRef<str> + Into<String>,
        V: Into<String>,
    {
        let mut p = Self::default();
        p.extend_from_pairs(pairs);
        p
    }

    /// The parameters as received whose names are listed, in the order received.
    pub fn echo(&self, names: &[&str]) -> Vec<Json> {
        self.original
            .iter()
            .filter(|p| p.name().is_some_and(|n| names.contains(&n)))
            .map(Original::to_json)
            .collect()
    }

    /// From a `Parameters` resource (JSON).
    pub fn from_parameters(body: &Json) -> Result<Self, FhirError> {
        let obj = body
            .as_object()
            .ok_or_else(|| FhirError::Invalid("the request body must be a JSON object".into()))?;
        match obj.get("resourceType").and_then(Json::as_str) {
            Some("Parameters") => {}
            Some(other) => {
                return Err(FhirError::Invalid(format!(
                    "the request body must be a Parameters resource, not {other}"
                )));
            }
            None => {
                return Err(FhirError::Invalid(
                    "the request body has no resourceType (expected Parameters)".into(),
                ));
            }
        }
        let (params, original) = match obj.get("parameter") {
            None => (Vec::new(), Vec::new()),
            Some(Json::Array(items)) => (
                parse_items(items)?,
                items.iter().cloned().map(Original::Sent).collect(),
            ),
            Some(_) => {
                return Err(FhirError::Invalid(
                    "Parameters.parameter must be an array".into(),
                ));
            }
        };
        Ok(Self { params, original })
    }

    /// Adds parameters from the query string (e.g. a POST with `?url=` as well as a body).
    pub fn extend_from_query(&mut self, pairs: &[(String, String)]) {
        self.extend_from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    }

    /// Adds query (or form) pairs, owned or borrowed. Transport parameters are dropped.
    pub fn extend_from_pairs<K, V>(&mut self, pairs: impl IntoIterator<Item = (K, V)>)
    where
        K: AsRef<str> + Into<String>,
        V: Into<String>,
    {
        for (k, v) in pairs {
            if TRANSPORT_PARAMS.contains(&k.as_ref()) {
                continue;
            }
            let (k, v): (String, String) = (k.into(), v.into());
            self.original.push(Original::Query(k.clone(), v.clone()));
            self.params.push((k, ParamValue::Text(v)));
        }
    }

    /// Every value of a parameter.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a ParamValue> + 'a {
        self.params
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v)
    }

    /// The single text value of a parameter; an error if given twice or not as text.
    pub fn text(&self, name: &str) -> Result<Option<String>, FhirError> {
        let mut values = self.all(name);
        let first = values.next();
        if values.next().is_some() {
            return Err(FhirError::Invalid(format!(
                "parameter '{name}' may only be given once"
            )));
        }
        match first {
            None => Ok(None),
            Some(ParamValue::Text(t)) => Ok(Some(t.clone())),
            Some(_) => Err(FhirError::Invalid(format!(
                "parameter '{name}' must be a primitive value"
            ))),
        }
    }

    /// Every text value of a parameter (repeated or comma-separated).
    pub fn texts(&self, name: &str) -> Vec<String> {
        self.all(name)
            .filter_map(|v| match v {
                ParamValue::Text(t) => Some(t.clone()),
                _ => None,
            })
            .flat_map(|t| {
                t.split(',')
                    .map(|s| s.trim().to_string())
                    .collect::<Vec<_>>()
            })
            .filter(|s| !s.is_empty())
            .collect()
    }

    /// A boolean parameter.
    pub fn boolean(&self, name: &str) -> Result<Option<bool>, FhirError> {
        match self.text(name)?.as_deref() {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(other) => Err(FhirError::Invalid(format!(
                "parameter '{name}' must be true or false, not '{other}'"
            ))),
        }
    }

    /// A non-negative integer parameter.
    pub fn unsigned(&self, name: &str) -> Result<Option<usize>, FhirError> {
        match self.text(name)? {
            None => Ok(None),
            Some(t) => t.trim().parse::<usize>().map(Some).map_err(|_| {
                FhirError::Invalid(format!(
                    "parameter '{name}' must be a non-negative integer, not '{t}'"
                ))
            }),
        }
    }

    /// A Coding parameter (`valueCoding`, or `system|code` text in a query).
    pub fn coding(&self, name: &str) -> Result<Option<Coding>, FhirError> {
        let mut values = self.all(name);
        let first = values.next();
        if values.next().is_some() {
            return Err(FhirError::Invalid(format!(
                "parameter '{name}' may only be given once"
            )));
        }
        match first {
            None => Ok(None),
            Some(ParamValue::Coding(c)) => Ok(Some(c.clone())),
            Some(ParamValue::Text(t)) => Ok(Some(Coding::from_token(t))),
            Some(_) => Err(FhirError::Invalid(format!(
                "parameter '{name}' must be a Coding"
            ))),
        }
    }

    /// A CodeableConcept parameter.
    pub fn codeable_concept(&self, name: &str) -> Result<Option<Vec<Coding>>, FhirError> {
        match self.all(name).next() {
            None => Ok(None),
            Some(ParamValue::CodeableConcept(c, _)) => Ok(Some(c.clone())),
            Some(ParamValue::Text(t)) => {
                let parsed: Json = serde_json::from_str(t).map_err(|e| {
                    FhirError::Invalid(format!("parameter '{name}' is not a CodeableConcept: {e}"))
                })?;
                match parse_value("valueCodeableConcept", &parsed)? {
                    ParamValue::CodeableConcept(c, _) => Ok(Some(c)),
                    _ => Err(FhirError::Invalid(format!(
                        "parameter '{name}' must be a CodeableConcept"
                    ))),
                }
            }
            Some(_) => Err(FhirError::Invalid(format!(
                "parameter '{name}' must be a CodeableConcept"
            ))),
        }
    }

    /// A resource parameter (`resource`, or JSON text in a query).
    pub fn resource(&self, name: &str) -> Result<Option<Json>, FhirError> {
        match self.all(name).next() {
            None => Ok(None),
            Some(ParamValue::Resource(r)) => Ok(Some(r.clone())),
            Some(ParamValue::Text(t)) => serde_json::from_str(t).map(Some).map_err(|e| {
                FhirError::Invalid(format!("parameter '{name}' is not a JSON resource: {e}"))
            }),
            Some(_) => Err(FhirError::Invalid(format!(
                "parameter '{name}' must be a resource"
            ))),
        }
    }
}

fn parse_items(items: &[Json]) -> Result<Vec<(String, ParamValue)>, FhirError> {
    items.iter().map(parse_item).collect()
}

fn parse_item(item: &Json) -> Result<(String, ParamValue), FhirError> {
    let obj = item
        .as_object()
        .ok_or_else(|| FhirError::Invalid("each Parameters.parameter must be an object".into()))?;
    let name = obj
        .get("name")
        .and_then(Json::as_str)
        .ok_or_else(|| FhirError::Invalid("a Parameters.parameter has no name".into()))?
        .to_string();
    if let Some(r) = obj.get("resource") {
        return Ok((name, ParamValue::Resource(r.clone())));
    }
    if let Some(p) = obj.get("part") {
        let parts = p.as_array().ok_or_else(|| {
            FhirError::Invalid(format!("parameter '{name}': part must be an array"))
        })?;
        return Ok((name, ParamValue::Parts(parse_items(parts)?)));
    }
    let Some((key, value)) = obj.iter().find(|(k, _)| k.starts_with("value")) else {
        return Err(FhirError::Invalid(format!(
            "parameter '{name}' has no value"
        )));
    };
    Ok((
        name.clone(),
        parse_value(key, value).map_err(|e| match e {
            FhirError::Invalid(m) => FhirError::Invalid(format!("parameter '{name}': {m}")),
            other => other,
        })?,
    ))
}

fn parse_value(key: &str, value: &Json) -> Result<ParamValue, FhirError> {
    match key {
        "valueCoding" => Ok(ParamValue::Coding(Coding::from_json(value)?)),
        "valueCodeableConcept" => {
            let obj = value
                .as_object()
                .ok_or_else(|| FhirError::Invalid("a CodeableConcept must be an object".into()))?;
            let codings = match obj.get("coding") {
                None => Vec::new(),
                Some(Json::Array(a)) => {
                    a.iter().map(Coding::from_json).collect::<Result<_, _>>()?
                }
                Some(_) => {
                    return Err(FhirError::Invalid(
                        "CodeableConcept.coding must be an array".into(),
                    ));
                }
            };
            let text = obj.get("text").and_then(Json::as_str).map(str::to_string);
            Ok(ParamValue::CodeableConcept(codings, text))
        }
        _ => match value {
            Json::String(s) => Ok(ParamValue::Text(s.clone())),
            Json::Bool(b) => Ok(ParamValue::Text(b.to_string())),
            Json::Number(n) => Ok(ParamValue::Text(n.to_string())),
            _ => Err(FhirError::Invalid(format!(
                "{key} must be a primitive value"
            ))),
        },
    }
}

/// Builds a `Parameters` resource for a response: kept as its parts until rendered, then written
/// straight to JSON bytes ([`ParametersOut::to_json_bytes`]) or built into a tree
/// ([`ParametersOut::build`]).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ParametersOut {
    items: Vec<Part>,
    /// The parameters opened by [`ParametersSink::open`] and not yet closed, innermost last.
    open: Vec<(&'static str, Vec<Part>)>,
}

impl ParametersOut {
    /// An empty `Parameters`.
    pub fn new() -> Self {
        Self::default()
    }

    fn push(&mut self, p: Part) {
        match self.open.last_mut() {
            Some((_, parts)) => parts.push(p),
            None => self.items.push(p),
        }
    }

    /// Adds a parameter with a typed value (`"valueString"`, `"valueCode"`, …).
    pub fn value(
        &mut self,
        name: impl Into<Cow<'static, str>>,
        value_key: impl Into<Cow<'static, str>>,
        value: Json,
    ) -> &mut Self {
        self.push(part(name, value_key, value));
        self
    }

    /// Adds a parameter with parts.
    pub fn parts(&mut self, name: impl Into<Cow<'static, str>>, parts: Vec<Part>) -> &mut Self {
        self.push(part_of(name, parts));
        self
    }

    /// Adds a parameter holding a resource.
    pub fn resource(&mut self, name: impl Into<Cow<'static, str>>, resource: Json) -> &mut Self {
        self.push(part(name, "resource", resource));
        self
    }

    /// The finished resource as a tree.
    pub fn build(self) -> Json {
        let mut m = Map::new();
        m.insert("resourceType".into(), Json::String("Parameters".into()));
        m.insert(
            "parameter".into(),
            Json::Array(self.items.into_iter().map(Part::into_json).collect()),
        );
        Json::Object(m)
    }

    /// The finished resource as compact JSON, written without building a tree (the same text
    /// `serde_json::to_vec(&self.build())` gives).
    pub fn to_json_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + 96 * self.items.len());
        out.extend_from_slice(br#"{"resourceType":"Parameters","parameter":"#);
        write_parts(&mut out, &self.items);
        out.push(b'}');
        out
    }
}

/// A parameter's (or part's) name and the key of its value (`valueCode`, `part`…), with the JSON
/// that opens it (`{"name":"code","valueCode":`) joined at compile time by [`head!`](crate::head):
/// the compact JSON writer copies one string rather than five pieces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    name: &'static str,
    key: &'static str,
    json: &'static str,
}

impl Head {
    /// What [`head!`](crate::head) makes (its only caller: `json` is their JSON).
    #[doc(hidden)]
    pub const fn joined(name: &'static str, key: &'static str, json: &'static str) -> Self {
        Self { name, key, json }
    }
}

/// The [`Head`] of a parameter named `$name` (a literal) with its value under `$key`.
#[macro_export]
macro_rules! head {
    ($name:literal, $key:literal) => {
        $crate::fhir::params::Head::joined(
            $name,
            $key,
            concat!("{\"name\":\"", $name, "\",\"", $key, "\":"),
        )
    };
}

/// Where output parameters are written, one after another: kept as parts ([`ParametersOut`], for
/// any format) or written straight to compact JSON ([`JsonParameters`]). A domain function that
/// writes through this trait gives the same `Parameters` to both (the tests compare the bytes),
/// and the JSON one allocates nothing for a value it only reads.
pub trait ParametersSink {
    /// A parameter (or part) with a string-typed value (`valueString`, `valueCode`, `valueUri`,
    /// …).
    fn text(&mut self, head: Head, value: &str);
    /// A parameter with a `valueBoolean` (or another boolean-typed key).
    fn boolean(&mut self, head: Head, value: bool);
    /// A parameter with a `valueInteger` (or another integer-typed key).
    fn integer(&mut self, head: Head, value: i64);
    /// A parameter with any other value (a Coding, a decimal…), under a key chosen as it is
    /// written.
    fn json(&mut self, name: &'static str, key: &'static str, value: Json);
    /// Opens a parameter with parts (its head's key is `part`): what is written until
    /// [`ParametersSink::close`] are its parts.
    fn open(&mut self, head: Head);
    /// Closes the parameter the last unclosed [`ParametersSink::open`] opened.
    fn close(&mut self);
}

impl ParametersSink for ParametersOut {
    fn text(&mut self, head: Head, value: &str) {
        self.push(part(head.name, head.key, Json::String(value.into())));
    }

    fn boolean(&mut self, head: Head, value: bool) {
        self.push(part(head.name, head.key, Json::Bool(value)));
    }

    fn integer(&mut self, head: Head, value: i64) {
        self.push(part(head.name, head.key, Json::from(value)));
    }

    fn json(&mut self, name: &'static str, key: &'static str, value: Json) {
        self.push(part(name, key, value));
    }

    fn open(&mut self, head: Head) {
        self.open.push((head.name, Vec::new()));
    }

    fn close(&mut self) {
        if let Some((name, parts)) = self.open.pop() {
            self.push(part_of(name, parts));
        }
    }
}

/// Output parameters written straight to compact JSON as they come: the bytes
/// [`ParametersOut::to_json_bytes`] gives for the same calls, without a part kept in between.
#[derive(Debug)]
pub struct JsonParameters {
    out: Vec<u8>,
    /// For each open array (the parameters, then each open parameter's parts): whether nothing
    /// has been written in it yet.
    empty: Vec<bool>,
}

impl Default for JsonParameters {
    fn default() -> Self {
        Self::new()
    }
}

impl JsonParameters {
    /// An empty `Parameters`.
    pub fn new() -> Self {
        let mut out = Vec::with_capacity(2048);
        out.extend_from_slice(br#"{"resourceType":"Parameters","parameter":["#);
        Self {
            out,
            empty: vec![true],
        }
    }

    /// The finished resource (parameters left open are closed).
    pub fn finish(mut self) -> Vec<u8> {
        while self.empty.len() > 1 {
            self.close();
        }
        self.out.extend_from_slice(b"]}");
        self.out
    }

    /// Opens a parameter (after a comma if one came before it in the same array).
    fn comma(&mut self) {
        match self.empty.last_mut() {
            Some(empty @ true) => *empty = false,
            _ => self.out.push(b','),
        }
    }

    fn start(&mut self, head: Head) {
        self.comma();
        self.out.extend_from_slice(head.json.as_bytes());
    }
}

impl ParametersSink for JsonParameters {
    fn text(&mut self, head: Head, value: &str) {
        self.start(head);
        write_json_str(&mut self.out, value);
        self.out.push(b'}');
    }

    fn boolean(&mut self, head: Head, value: bool) {
        self.start(head);
        self.out
            .extend_from_slice(if value { b"true" } else { b"false" });
        self.out.push(b'}');
    }

    fn integer(&mut self, head: Head, value: i64) {
        self.start(head);
        // Writing to a Vec cannot fail.
        let _ = serde_json::to_writer(&mut self.out, &value);
        self.out.push(b'}');
    }

    fn json(&mut self, name: &'static str, key: &'static str, value: Json) {
        self.comma();
        // Names and keys are this server's own words: nothing in them to escape.
        debug_assert!(!needs_escape(name) && !needs_escape(key));
        self.out.extend_from_slice(br#"{"name":""#);
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(br#"",""#);
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(br#"":"#);
        // Writing to a Vec cannot fail.
        let _ = serde_json::to_writer(&mut self.out, &value);
        self.out.push(b'}');
    }

    fn open(&mut self, head: Head) {
        debug_assert_eq!(head.key, "part");
        self.start(head);
        self.out.push(b'[');
        self.empty.push(true);
    }

    fn close(&mut self) {
        if self.empty.len() > 1 {
            self.empty.pop();
            self.out.extend_from_slice(b"]}");
        }
    }
}

/// One `{name, value[x]}` part (or `{name, part}`, `{name, resource}`) of an output `Parameters`.
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    name: Cow<'static, str>,
    key: Cow<'static, str>,
    value: PartValue,
}

#[derive(Debug, Clone, PartialEq)]
enum PartValue {
    Json(Json),
    Parts(Vec<Part>),
}

impl Part {
    /// The part as a JSON object.
    pub fn into_json(self) -> Json {
        let mut m = Map::new();
        m.insert("name".into(), Json::String(self.name.into_owned()));
        let value = match self.value {
            PartValue::Json(v) => v,
            PartValue::Parts(parts) => {
                Json::Array(parts.into_iter().map(Part::into_json).collect())
            }
        };
        m.insert(self.key.into_owned(), value);
        Json::Object(m)
    }

    fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(br#"{"name":"#);
        write_json_str(out, &self.name);
        out.push(b',');
        write_json_str(out, &self.key);
        out.push(b':');
        match &self.value {
            PartValue::Json(v) => {
                // Writing to a Vec cannot fail; a value serde_json cannot write (none here) would
                // leave a gap the tests would see.
                let _ = serde_json::to_writer(&mut *out, v);
            }
            PartValue::Parts(parts) => write_parts(out, parts),
        }
        out.push(b'}');
    }
}

/// Writes parts as a JSON array.
fn write_parts(out: &mut Vec<u8>, parts: &[Part]) {
    out.push(b'[');
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        p.write_json(out);
    }
    out.push(b']');
}

/// Whether a string needs escaping in JSON (a quote, a backslash or a control character).
fn needs_escape(s: &str) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    // Whether any byte of `v` is zero (exact as a yes or no).
    let zero_byte = |v: u64| v.wrapping_sub(ONES) & !v & HIGH != 0;
    let escaped = |b: u8| b < 0x20 || b == b'"' || b == b'\\';
    let mut chunks = s.as_bytes().chunks_exact(8);
    // Eight bytes at a time: a control byte (below 0x20, all ASCII), a quote or a backslash.
    let found = chunks.by_ref().any(|c| {
        let v = u64::from_ne_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        v.wrapping_sub(ONES * 0x20) & !v & HIGH != 0
            || zero_byte(v ^ (ONES * u64::from(b'"')))
            || zero_byte(v ^ (ONES * u64::from(b'\\')))
    });
    found || chunks.remainder().iter().any(|&b| escaped(b))
}

fn write_json_str(out: &mut Vec<u8>, s: &str) {
    if !needs_escape(s) {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

/// One `{name, value[x]}` part (`value_key` `"part"` with an array of parts, or `"resource"`,
/// also work).
pub fn part(
    name: impl Into<Cow<'static, str>>,
    value_key: impl Into<Cow<'static, str>>,
    value: Json,
) -> Part {
    Part {
        name: name.into(),
        key: value_key.into(),
        value: PartValue::Json(value),
    }
}

/// A part holding parts (`{name, part: [...]}`).
pub fn part_of(name: impl Into<Cow<'static, str>>, parts: Vec<Part>) -> Part {
    Part {
        name: name.into(),
        key: Cow::Borrowed("part"),
        value: PartValue::Parts(parts),
    }
}

/// What an operation answers: a resource, or output `Parameters` not yet rendered.
#[derive(Debug)]
pub enum Answer {
    /// A resource tree.
    Json(Json),
    /// Output parameters.
    Parameters(ParametersOut),
    /// Output parameters written as compact JSON already ([`JsonParameters`]).
    CompactJson(Vec<u8>),
}

impl Answer {
    /// The answer as a tree.
    pub fn into_json(self) -> Json {
        match self {
            Self::Json(j) => j,
            Self::Parameters(p) => p.build(),
            // Written by this server from the same parts: it parses.
            Self::CompactJson(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::error!(error = %e, "written parameters do not parse");
                Json::Null
            }),
        }
    }
}

impl From<Json> for Answer {
    fn from(j: Json) -> Self {
        Self::Json(j)
    }
}

impl From<ParametersOut> for Answer {
    fn from(p: ParametersOut) -> Self {
        Self::Parameters(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same calls on both sinks.
    fn write_sample(sink: &mut impl ParametersSink) {
        sink.text(
            head!("name", "valueString"),
            "Postcode \"quoted\" \\ and\ttab",
        );
        sink.boolean(head!("abstract", "valueBoolean"), false);
        sink.open(head!("property", "part"));
        sink.text(head!("code", "valueCode"), "eastings");
        sink.integer(head!("value", "valueInteger"), -526_527);
        sink.close();
        sink.open(head!("designation", "part"));
        sink.open(head!("nested", "part"));
        sink.close();
        sink.json("use", "valueCoding", json!({"system": "s", "code": "c"}));
        sink.boolean(head!("value", "valueBoolean"), true);
        sink.close();
        sink.open(head!("empty", "part"));
        sink.close();
        sink.text(head!("last", "valueUri"), "caf\u{e9} \u{1}");
    }

    /// The escape check reads eight bytes at a time: every ASCII byte (and a two-byte
    /// character) at every position of strings up to 20 bytes gives the byte-by-byte answer.
    #[test]
    fn needs_escape_finds_quotes_backslashes_and_control_bytes_anywhere() {
        let naive = |s: &str| s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\');
        let fill = "abcdefghij0123456789";
        for len in 0..=fill.len() {
            assert!(!needs_escape(&fill[..len]));
            for at in 0..len {
                for b in (0u8..0x80).map(char::from).chain(['\u{e9}', '\u{7f}']) {
                    let mut s: String = fill[..at].into();
                    s.push(b);
                    s.push_str(&fill[at + 1..len]);
                    assert_eq!(needs_escape(&s), naive(&s), "{s:?}");
                }
            }
        }
    }

    #[test]
    fn parameters_written_straight_to_json_are_the_parts_rendered() {
        let mut parts = ParametersOut::new();
        write_sample(&mut parts);
        let mut direct = JsonParameters::new();
        write_sample(&mut direct);
        let direct = direct.finish();
        assert_eq!(
            String::from_utf8_lossy(&direct),
            String::from_utf8_lossy(&parts.to_json_bytes())
        );
        assert_eq!(
            serde_json::from_slice::<Json>(&direct).expect("parses"),
            parts.clone().build()
        );
        assert_eq!(Answer::CompactJson(direct).into_json(), parts.build());
        let empty = JsonParameters::new().finish();
        assert_eq!(empty, ParametersOut::new().to_json_bytes());
    }

    #[test]
    fn query_and_parameters_give_the_same_params() {
        let q = OperationParams::from_query(&[
            ("system".into(), "http://hl7.org/fhir/sid/icd-10".into()),
            ("code".into(), "J45.9".into()),
            ("_format".into(), "json".into()),
        ]);
        let p = OperationParams::from_parameters(&json!({
            "resourceType": "Parameters",
            "parameter": [
                {"name": "system", "valueUri": "http://hl7.org/fhir/sid/icd-10"},
                {"name": "code", "valueCode": "J45.9"}
            ]
        }))
        .expect("parses");
        assert_eq!(q.params, p.params);
        assert_eq!(
            p.echo(&["code"]),
            vec![json!({"name": "code", "valueCode": "J45.9"})],
            "the original types are kept for echoing"
        );
        assert_eq!(
            q.echo(&["code"]),
            vec![json!({"name": "code", "valueString": "J45.9"})],
            "query values are echoed as strings"
        );
        assert_eq!(p.text("code").expect("ok").as_deref(), Some("J45.9"));
    }

    #[test]
    fn parameters_written_directly_equal_the_tree() {
        let mut out = ParametersOut::new();
        out.value("name", "valueString", json!("Postcode \"GB\"\n"));
        out.value("count", "valueInteger", json!(3));
        out.parts(
            "property",
            vec![
                part("code", "valueCode", json!("eastings")),
                part("value", "valueCoding", json!({"system": "s", "code": "c"})),
            ],
        );
        out.parts("empty", Vec::new());
        out.resource("r", json!({"resourceType": "ValueSet", "id": "x"}));
        let bytes = out.to_json_bytes();
        let tree = serde_json::to_vec(&out.build()).expect("writes");
        assert_eq!(
            String::from_utf8_lossy(&bytes),
            String::from_utf8_lossy(&tree)
        );
    }

    #[test]
    fn codings_and_errors() {
        let p = OperationParams::from_parameters(&json!({
            "resourceType": "Parameters",
            "parameter": [
                {"name": "coding", "valueCoding": {"system": "s", "code": "c"}},
                {"name": "count", "valueInteger": 10},
                {"name": "activeOnly", "valueBoolean": true}
            ]
        }))
        .expect("parses");
        let c = p.coding("coding").expect("ok").expect("some");
        assert_eq!(
            (c.system.as_deref(), c.code.as_deref()),
            (Some("s"), Some("c"))
        );
        assert_eq!(p.unsigned("count").expect("ok"), Some(10));
        assert_eq!(p.boolean("activeOnly").expect("ok"), Some(true));
        assert!(OperationParams::from_parameters(&json!({"resourceType": "Patient"})).is_err());
        assert!(
            OperationParams::from_parameters(
                &json!({"resourceType": "Parameters", "parameter": [{"valueCode": "x"}]})
            )
            .is_err()
        );
        let q = OperationParams::from_query(&[("count".into(), "-1".into())]);
        assert!(q.unsigned("count").is_err());
        let t = Coding::from_token("http://hl7.org/fhir/sid/icd-10|J45.9");
        assert_eq!(t.system.as_deref(), Some("http://hl7.org/fhir/sid/icd-10"));
        assert_eq!(t.code.as_deref(), Some("J45.9"));
    }
}
