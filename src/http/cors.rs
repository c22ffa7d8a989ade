//! CORS on the FHIR base: which browser origins may call the API ([`super::CorsOrigins`]), as
//! response headers. Every FHIR answer carries `Vary` and, for an allowed origin,
//! `Access-Control-Allow-Origin`; an `OPTIONS` request is a preflight, answered here (200, empty)
//! with the methods, request headers and cache time allowed, without reaching the route.
//!
//! The headers are fixed when the router is built, so a request costs a few header inserts: a
//! general-purpose CORS layer rebuilds them (and clones its configuration) on every request,
//! and this runs on every FHIR request.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use axum::extract::Request;
use axum::http::{HeaderValue, Method, header};
use axum::response::Response;

/// What every answer varies on: the request headers CORS answers depend on.
const VARY: &str = "origin, access-control-request-method, access-control-request-headers";
/// Response headers a browser script may read.
const EXPOSE_HEADERS: &str = "content-type,location,retry-after,x-request-id";
/// Methods a preflight allows.
const ALLOW_METHODS: &str = "GET,POST,OPTIONS";
/// Request headers a preflight allows.
const ALLOW_HEADERS: &str =
    "accept,accept-language,content-type,authorization,x-cache-id,x-request-id";
/// How long (seconds) a browser may keep a preflight's answer.
const MAX_AGE: &str = "3600";

/// Which origins are allowed (never empty: no CORS at all is no layer).
#[derive(Debug, Clone)]
pub(super) enum Allowed {
    /// Any origin: `Access-Control-Allow-Origin: *`.
    Any,
    /// Only these origins, each named back to itself.
    List(Arc<[HeaderValue]>),
}

/// The CORS layer of the FHIR routes.
#[derive(Debug, Clone)]
pub(super) struct CorsLayer(Allowed);

impl CorsLayer {
    /// CORS for the `allowed` origins.
    pub(super) fn new(allowed: Allowed) -> Self {
        Self(allowed)
    }
}

impl<S> tower::Layer<S> for CorsLayer {
    type Service = Cors<S>;

    fn layer(&self, inner: S) -> Cors<S> {
        Cors {
            inner,
            allowed: self.0.clone(),
        }
    }
}

/// See [`CorsLayer`].
#[derive(Debug, Clone)]
pub(super) struct Cors<S> {
    inner: S,
    allowed: Allowed,
}

impl<S> Cors<S> {
    /// The `Access-Control-Allow-Origin` value for a request from `origin`, if it is allowed.
    fn allow_origin(&self, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
        match &self.allowed {
            Allowed::Any => Some(HeaderValue::from_static("*")),
            Allowed::List(list) => origin.filter(|o| list.contains(o)).cloned(),
        }
    }
}

impl<S> tower::Service<Request> for Cors<S>
where
    S: tower::Service<Request, Response = Response>,
    S::Future: Unpin,
{
    type Response = Response;
    type Error = S::Error;
    type Future = CorsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let allow_origin = self.allow_origin(req.headers().get(header::ORIGIN));
        if req.method() == Method::OPTIONS {
            let mut response = Response::default();
            let headers = response.headers_mut();
            headers.insert(header::VARY, HeaderValue::from_static(VARY));
            for (name, value) in [
                (header::ACCESS_CONTROL_ALLOW_METHODS, ALLOW_METHODS),
                (header::ACCESS_CONTROL_ALLOW_HEADERS, ALLOW_HEADERS),
                (header::ACCESS_CONTROL_MAX_AGE, MAX_AGE),
            ] {
                headers.insert(name, HeaderValue::from_static(value));
            }
            if let Some(origin) = allow_origin {
                headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            }
            return CorsFuture::Preflight(Some(response));
        }
        CorsFuture::Call {
            inner: self.inner.call(req),
            allow_origin,
        }
    }
}

/// The answer to a request on the FHIR base.
pub(super) enum CorsFuture<F> {
    /// A preflight, answered here (taken when the future completes).
    Preflight(Option<Response>),
    /// Any other request: the route's answer, with the CORS headers added.
    Call {
        inner: F,
        allow_origin: Option<HeaderValue>,
    },
}

impl<F, E> Future for CorsFuture<F>
where
    F: Future<Output = Result<Response, E>> + Unpin,
{
    type Output = Result<Response, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut *self {
            Self::Preflight(response) => Poll::Ready(Ok(response.take().unwrap_or_default())),
            Self::Call {
                inner,
                allow_origin,
            } => {
                let mut response = ready!(Pin::new(inner).poll(cx))?;
                let headers = response.headers_mut();
                // The route's `Vary` values, if any, are kept.
                headers.append(header::VARY, HeaderValue::from_static(VARY));
                if let Some(origin) = allow_origin.take() {
                    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
                }
                headers.insert(
                    header::ACCESS_CONTROL_EXPOSE_HEADERS,
                    HeaderValue::from_static(EXPOSE_HEADERS),
                );
                Poll::Ready(Ok(response))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::Router;
    use axum::body::Body;
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;
    use axum::http::HeaderName;

    /// The general-purpose layer this one replaces, configured as the server configured it.
    fn reference(allowed: &Allowed) -> tower_http::cors::CorsLayer {
        use tower_http::cors::AllowOrigin;
        let origin = match allowed {
            Allowed::Any => AllowOrigin::any(),
            Allowed::List(list) => AllowOrigin::list(list.iter().cloned()),
        };
        tower_http::cors::CorsLayer::new()
            .allow_origin(origin)
            .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
            .allow_headers([
                header::ACCEPT,
                header::ACCEPT_LANGUAGE,
                header::CONTENT_TYPE,
                header::AUTHORIZATION,
                HeaderName::from_static("x-cache-id"),
                HeaderName::from_static("x-request-id"),
            ])
            .expose_headers([
                header::CONTENT_TYPE,
                header::LOCATION,
                header::RETRY_AFTER,
                HeaderName::from_static("x-request-id"),
            ])
            .max_age(Duration::from_secs(3600))
    }

    fn routes() -> Router {
        Router::new()
            .route("/plain", get(|| async { "ok" }).post(|| async { "posted" }))
            .route(
                "/varies",
                get(|| async { ([(header::VARY, "accept")], "by format") }),
            )
    }

    async fn answer(router: Router, req: Request) -> (StatusCode, HeaderMap, Vec<u8>) {
        let resp = router.oneshot(req).await.expect("answers");
        let (parts, body) = resp.into_parts();
        let body = axum::body::to_bytes(body, 1024).await.expect("body");
        (parts.status, parts.headers, body.to_vec())
    }

    fn requests() -> Vec<Request> {
        let req = |method: Method, uri: &str, headers: &[(&str, &str)]| {
            let mut b = Request::builder().method(method).uri(uri);
            for (name, value) in headers {
                b = b.header(*name, *value);
            }
            b.body(Body::empty()).expect("request")
        };
        let listed = ("origin", "https://a.example.org");
        let unlisted = ("origin", "https://evil.example.net");
        let preflight = [
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "content-type"),
        ];
        vec![
            req(Method::GET, "/plain", &[]),
            req(Method::GET, "/plain", &[listed]),
            req(Method::GET, "/plain", &[unlisted]),
            req(Method::POST, "/plain", &[listed]),
            req(Method::GET, "/varies", &[listed]),
            req(
                Method::OPTIONS,
                "/plain",
                &[listed, preflight[0], preflight[1]],
            ),
            req(Method::OPTIONS, "/plain", &[unlisted, preflight[0]]),
            req(Method::OPTIONS, "/plain", &[]),
        ]
    }

    #[tokio::test]
    async fn answers_carry_the_same_headers_as_the_general_purpose_layer() {
        for allowed in [
            Allowed::Any,
            Allowed::List(
                vec![
                    HeaderValue::from_static("https://a.example.org"),
                    HeaderValue::from_static("https://b.example.org"),
                ]
                .into(),
            ),
        ] {
            for (theirs, ours) in requests().into_iter().zip(requests()) {
                let what = format!("{allowed:?} {} {:?}", ours.method(), ours.headers());
                let expected = answer(routes().layer(reference(&allowed)), theirs).await;
                let got = answer(routes().layer(CorsLayer::new(allowed.clone())), ours).await;
                assert_eq!(got.0, expected.0, "{what}");
                assert_eq!(got.2, expected.2, "{what}");
                let headers = |h: &HeaderMap| {
                    h.iter()
                        .map(|(n, v)| format!("{n}: {}", v.to_str().unwrap_or("?")))
                        .collect::<Vec<_>>()
                };
                assert_eq!(headers(&got.1), headers(&expected.1), "{what}");
            }
        }
    }
}
