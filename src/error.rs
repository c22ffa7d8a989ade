//! The one error boundary: every failure a client can see is a [`FhirError`], and one `match`
//! decides its HTTP status, OperationOutcome `issue.code` and tx-issue-type.

use axum::http::StatusCode;
use serde_json::{Value as Json, json};

/// A failure reported to a FHIR client as an OperationOutcome.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum FhirError {
    /// The request's parameters are malformed or contradictory (400, `invalid`).
    #[error("{0}")]
    Invalid(String),
    /// A required parameter is missing (400, `required`).
    #[error("{0}")]
    Required(String),
    /// A resource, CodeSystem or ValueSet is not known here (404, `not-found`).
    #[error("{0}")]
    NotFound(String),
    /// A code is not in the CodeSystem (404 for `$lookup`, `not-found`, tx-issue-type `invalid-code`).
    #[error("{0}")]
    UnknownCode(String),
    /// The request is understood but cannot be processed (422, `processing`).
    #[error("{0}")]
    Unprocessable(String),
    /// The version of a CodeSystem that would be used is not allowed by a
    /// `check-system-version` parameter (422, `exception`, tx-issue-type `version-error`).
    #[error("{0}")]
    VersionNotAllowed(String),
    /// A ValueSet definition is broken (400, `invalid`, tx-issue-type `vs-invalid`), at `location`.
    #[error("{text}")]
    InvalidValueSet {
        /// What is wrong.
        text: String,
        /// FHIRPath of the broken element.
        location: String,
    },
    /// A ValueSet imports itself, directly or through others, or its imports nest too deeply
    /// (400, `processing`, tx-issue-type `vs-invalid`, as the reference server answers
    /// `VALUESET_CIRCULAR_REFERENCE`).
    #[error("{0}")]
    ValueSetImports(String),
    /// The result would be too large or slow to produce (422, `too-costly`).
    #[error("{0}")]
    TooCostly(String),
    /// The server is too busy with other expensive requests to take this one now (503,
    /// `throttled`: "not prepared to handle this request due to load management").
    #[error("{0}")]
    Busy(String),
    /// Something the server does not implement (400, `not-supported`).
    #[error("{0}")]
    NotSupported(String),
    /// HTTP method not allowed on this path (405).
    #[error("{0}")]
    MethodNotAllowed(String),
    /// No acceptable response format (406).
    #[error("{0}")]
    NotAcceptable(String),
    /// The request body's media type is not supported (415).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// A bug or an I/O failure on our side (500); the detail is logged, not sent.
    #[error("internal error: {0}")]
    Internal(String),
    /// The request's URL is longer than the server accepts (414, `too-long`).
    #[error("{0}")]
    UriTooLong(String),
    /// The request's header fields are larger than the server accepts (431, `too-long`).
    #[error("{0}")]
    HeadersTooLarge(String),
    /// The request's head did not arrive in time (408, `timeout`).
    #[error("{0}")]
    RequestTimeout(String),
    /// The server holds as many connections as it accepts; try again shortly (503, `throttled`).
    #[error("{0}")]
    Overloaded(String),
    /// The request body is larger than the server accepts (413, `too-long`).
    #[error("{0}")]
    PayloadTooLarge(String),
}

impl FhirError {
    /// HTTP status, OperationOutcome issue code and tx-issue-type code.
    pub fn classify(&self) -> (StatusCode, &'static str, Option<&'static str>) {
        match self {
            Self::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid", None),
            Self::Required(_) => (StatusCode::BAD_REQUEST, "required", None),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not-found", Some("not-found")),
            Self::UnknownCode(_) => (StatusCode::NOT_FOUND, "not-found", Some("invalid-code")),
            Self::Unprocessable(_) => (StatusCode::UNPROCESSABLE_ENTITY, "processing", None),
            Self::InvalidValueSet { .. } => {
                (StatusCode::BAD_REQUEST, "invalid", Some("vs-invalid"))
            }
            Self::ValueSetImports(_) => (StatusCode::BAD_REQUEST, "processing", Some("vs-invalid")),
            Self::VersionNotAllowed(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "exception",
                Some("version-error"),
            ),
            Self::TooCostly(_) => (StatusCode::UNPROCESSABLE_ENTITY, "too-costly", None),
            Self::Busy(_) => (StatusCode::SERVICE_UNAVAILABLE, "throttled", None),
            Self::NotSupported(_) => (StatusCode::BAD_REQUEST, "not-supported", None),
            Self::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "not-supported", None),
            Self::NotAcceptable(_) => (StatusCode::NOT_ACCEPTABLE, "not-supported", None),
            Self::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "not-supported", None)
            }
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "exception", None),
            Self::UriTooLong(_) => (StatusCode::URI_TOO_LONG, "too-long", None),
            Self::HeadersTooLarge(_) => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "too-long",
                None,
            ),
            Self::RequestTimeout(_) => (StatusCode::REQUEST_TIMEOUT, "timeout", None),
            Self::Overloaded(_) => (StatusCode::SERVICE_UNAVAILABLE, "throttled", None),
            Self::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too-long", None),
        }
    }

    /// The text a client sees (internal details are replaced by a generic sentence).
    pub fn client_text(&self) -> String {
        match self {
            Self::Internal(_) => {
                "The server failed to process the request; the failure has been logged".into()
            }
            other => other.to_string(),
        }
    }

    /// The OperationOutcome resource for this error.
    pub fn to_operation_outcome(&self) -> Json {
        let (_, code, tx) = self.classify();
        let mut oo = operation_outcome("error", code, tx, &self.client_text());
        if let Self::InvalidValueSet { location, .. } = self {
            oo["issue"][0]["expression"] = serde_json::json!([location]);
        }
        oo
    }
}

/// Builds a one-issue OperationOutcome.
pub fn operation_outcome(severity: &str, code: &str, tx_type: Option<&str>, text: &str) -> Json {
    let mut issue = json!({ "severity": severity, "code": code });
    if let Some(tx) = tx_type {
        issue["details"] = json!({
            "coding": [{ "system": "http://hl7.org/fhir/tools/CodeSystem/tx-issue-type", "code": tx }],
            "text": text
        });
    } else {
        issue["details"] = json!({ "text": text });
    }
    json!({ "resourceType": "OperationOutcome", "issue": [issue] })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_maps_to_a_status_and_issue_code() {
        let cases = [
            (FhirError::Invalid("x".into()), 400, "invalid"),
            (FhirError::Required("x".into()), 400, "required"),
            (FhirError::NotFound("x".into()), 404, "not-found"),
            (FhirError::UnknownCode("x".into()), 404, "not-found"),
            (FhirError::Unprocessable("x".into()), 422, "processing"),
            (FhirError::TooCostly("x".into()), 422, "too-costly"),
            (FhirError::VersionNotAllowed("x".into()), 422, "exception"),
            (
                FhirError::InvalidValueSet {
                    text: "x".into(),
                    location: "ValueSet.compose".into(),
                },
                400,
                "invalid",
            ),
            (FhirError::Busy("x".into()), 503, "throttled"),
            (FhirError::NotSupported("x".into()), 400, "not-supported"),
            (
                FhirError::MethodNotAllowed("x".into()),
                405,
                "not-supported",
            ),
            (FhirError::NotAcceptable("x".into()), 406, "not-supported"),
            (
                FhirError::UnsupportedMediaType("x".into()),
                415,
                "not-supported",
            ),
            (FhirError::Internal("secret path".into()), 500, "exception"),
            (FhirError::UriTooLong("x".into()), 414, "too-long"),
            (FhirError::HeadersTooLarge("x".into()), 431, "too-long"),
            (FhirError::RequestTimeout("x".into()), 408, "timeout"),
            (FhirError::Overloaded("x".into()), 503, "throttled"),
        ];
        for (err, status, code) in cases {
            let (s, c, _) = err.classify();
            assert_eq!((s.as_u16(), c), (status, code), "{err:?}");
            let oo = err.to_operation_outcome();
            assert_eq!(oo["issue"][0]["code"], code);
            assert!(!oo.to_string().contains("secret path"));
        }
    }
}
