//! One client connection as the connection loop ([`super::serve`]) sees it: the socket wrapped
//! to time out idle and slow clients and to turn hyper's own error answers into
//! OperationOutcomes, and the per-connection service that tells the socket when a request is in
//! progress.
//!
//! A connection is always in one of three phases:
//! - **idle**: no request in progress. It is closed (silently, as HTTP allows) when no byte has
//!   moved either way for the idle timeout — from accept, or since the last response byte.
//! - **head**: the first byte of a request has arrived but not its whole head. It is answered
//!   408 and closed when the head is not complete within the header-read timeout, however slowly
//!   the bytes keep coming.
//! - **busy**: a request is being answered; the operation's own time budget applies.
//!
//! hyper answers a request head it cannot parse (URL over its 64 KiB limit, a head over its
//! buffer, more than 100 header fields, bytes not allowed in a request line or header) itself,
//! with an empty body, before the router sees anything. Such an answer is the only thing hyper
//! writes while no request is in progress and every earlier response has been flushed, so that
//! is how it is recognised here and replaced by a JSON OperationOutcome with the same status.
//! A refused connection is closed gracefully: the write side is shut and what the client still
//! sends is read and discarded for a moment, so that the answer is not lost to a TCP reset.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::http::{Request, Response};
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};

use super::edge::RequestLimits;
use super::request::refuse;
use crate::error::FhirError;
use crate::fhir::format::{self, Format};

/// How long a refused connection is read and discarded before it is closed.
const LINGER: Duration = Duration::from_secs(1);
/// How much a refused connection may still send before it is closed regardless.
const LINGER_BYTES: usize = 256 * 1024;
/// The longest URL hyper reads, whatever the configured limit.
pub(crate) const MAX_URL_BYTES: usize = u16::MAX as usize - 1;
/// hyper's limit on the number of header fields (its default).
pub(crate) const MAX_HEADER_FIELDS: usize = 100;

/// The timeouts and limits a connection enforces.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectionRules {
    /// Idle connections are closed after this long without a byte moving.
    pub idle_timeout: Duration,
    /// A request head must be complete this long after its first byte.
    pub header_read_timeout: Duration,
    /// URL and header-size limits (quoted in the answers that replace hyper's).
    pub limits: RequestLimits,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    Head,
    Busy,
}

#[derive(Debug)]
struct State {
    phase: Phase,
    /// When the phase began (idle: when a byte last moved).
    since: Instant,
    /// Requests passed to the router whose response body hyper has not yet dropped.
    open_responses: usize,
    /// Bytes of a response may still be on their way to the socket.
    unflushed: bool,
    /// A line end has arrived in the request head being read (else a head too large for hyper's
    /// buffer is all request line: its URL is too long).
    line_seen: bool,
}

/// What the socket and the service of one connection share.
#[derive(Debug, Clone)]
pub(crate) struct Activity(Arc<Mutex<State>>);

impl Activity {
    /// A new connection: idle from now.
    pub(crate) fn new() -> Self {
        Self(Arc::new(Mutex::new(State {
            phase: Phase::Idle,
            since: Instant::now(),
            open_responses: 0,
            unflushed: false,
            line_seen: false,
        })))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn read(&self, bytes: &[u8]) {
        let mut s = self.lock();
        if s.phase == Phase::Idle {
            s.phase = Phase::Head;
            s.since = Instant::now();
            s.line_seen = false;
        }
        if s.phase == Phase::Head && !s.line_seen {
            s.line_seen = bytes.contains(&b'\n');
        }
    }

    fn wrote(&self) {
        let mut s = self.lock();
        if s.phase == Phase::Idle {
            s.since = Instant::now();
        }
    }

    fn flushed(&self) {
        let mut s = self.lock();
        if s.open_responses == 0 {
            s.unflushed = false;
        }
    }

    /// A request reaches the router; the guard marks its response done when dropped.
    fn dispatched(&self) -> ResponseGuard {
        let mut s = self.lock();
        s.phase = Phase::Busy;
        s.open_responses += 1;
        s.unflushed = true;
        ResponseGuard(self.clone())
    }

    /// When the current phase times out, and which phase that is.
    fn deadline(&self, rules: &ConnectionRules) -> Option<(Instant, Phase)> {
        let s = self.lock();
        // A timeout too long to add to the clock never comes.
        match s.phase {
            Phase::Idle => Some((s.since.checked_add(rules.idle_timeout)?, Phase::Idle)),
            Phase::Head => Some((s.since.checked_add(rules.header_read_timeout)?, Phase::Head)),
            Phase::Busy => None,
        }
    }

    /// hyper writes with no request in progress and everything before flushed: its own answer
    /// to a head it could not parse.
    fn writes_are_hypers_own(&self) -> bool {
        let s = self.lock();
        s.open_responses == 0 && !s.unflushed
    }

    fn line_seen(&self) -> bool {
        self.lock().line_seen
    }
}

/// Held by a response until hyper drops its body (or the request future is dropped).
#[derive(Debug)]
struct ResponseGuard(Activity);

impl Drop for ResponseGuard {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        s.open_responses = s.open_responses.saturating_sub(1);
        if s.open_responses == 0 {
            s.phase = Phase::Idle;
            s.since = Instant::now();
        }
    }
}

/// A response body that marks the request done when hyper drops it.
#[derive(Debug)]
pub(crate) struct TrackedBody {
    body: axum::body::Body,
    _guard: ResponseGuard,
}

impl HttpBody for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The service of one connection: the request limits, then the router.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionService {
    app: Router,
    activity: Activity,
    limits: RequestLimits,
}

impl ConnectionService {
    /// The router served on a connection whose socket shares `activity`.
    pub(crate) fn new(app: Router, activity: Activity, limits: RequestLimits) -> Self {
        Self {
            app,
            activity,
            limits,
        }
    }
}

impl hyper::service::Service<Request<Incoming>> for ConnectionService {
    type Response = Response<TrackedBody>;
    type Error = std::convert::Infallible;
    type Future = Pin<
        Box<dyn Future<Output = Result<Response<TrackedBody>, std::convert::Infallible>> + Send>,
    >;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let guard = self.activity.dispatched();
        let track = |response: axum::response::Response| {
            response.map(|body| TrackedBody {
                body,
                _guard: guard,
            })
        };
        if let Err(error) = self.limits.check(&req) {
            let response = refuse(req.uri(), req.headers(), error);
            return Box::pin(std::future::ready(Ok(track(response))));
        }
        let app = self.app.clone();
        Box::pin(async move {
            let response = match tower::ServiceExt::oneshot(app, req).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            Ok(track(response))
        })
    }
}

/// hyper's empty answer being replaced, and what replaces it.
#[derive(Debug)]
enum Replacement {
    None,
    /// Collecting hyper's answer head (it arrives in one write, but need not).
    Collecting(Vec<u8>),
    /// Writing the OperationOutcome answer; hyper's writes are swallowed from here on.
    Sending {
        bytes: Vec<u8>,
        sent: usize,
    },
}

/// The client socket: enforces the phase timeouts and replaces hyper's own error answers.
pub(crate) struct WatchedSocket {
    io: Option<TcpStream>,
    activity: Activity,
    rules: ConnectionRules,
    timer: Pin<Box<Sleep>>,
    armed: Option<Instant>,
    replacement: Replacement,
    /// Answered with a refusal (408, or a replaced hyper answer): linger before closing.
    refused: bool,
    permit: Option<OwnedSemaphorePermit>,
}

impl WatchedSocket {
    /// Wraps an accepted socket holding a connection slot.
    pub(crate) fn new(
        io: TcpStream,
        activity: Activity,
        rules: ConnectionRules,
        permit: OwnedSemaphorePermit,
    ) -> Self {
        Self {
            io: Some(io),
            activity,
            rules,
            timer: Box::pin(tokio::time::sleep(rules.idle_timeout)),
            armed: None,
            replacement: Replacement::None,
            refused: false,
            permit: Some(permit),
        }
    }

    fn io(&mut self) -> io::Result<Pin<&mut TcpStream>> {
        self.io
            .as_mut()
            .map(Pin::new)
            .ok_or_else(|| io::ErrorKind::NotConnected.into())
    }

    /// Sets the timer to the current phase's deadline and registers the task with it, so that
    /// hyper polls the socket again when it passes. (hyper polls the socket for the next request
    /// head only when woken, and the phase may have changed since it last did.)
    fn arm(&mut self, cx: &mut Context<'_>) -> Option<(Poll<()>, Phase)> {
        let (deadline, phase) = self.activity.deadline(&self.rules)?;
        if self.armed != Some(deadline) {
            self.timer.as_mut().reset(deadline);
            self.armed = Some(deadline);
        }
        Some((self.timer.as_mut().poll(cx), phase))
    }

    /// Pending, unless the current phase has timed out: then an error that ends the connection
    /// (after a 408 when a request head was late).
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some((Poll::Ready(()), phase)) = self.arm(cx) else {
            return Poll::Pending;
        };
        if phase == Phase::Head {
            tracing::debug!("request head not complete in time: 408, closing");
            let answer = raw_answer(
                &FhirError::RequestTimeout(format!(
                    "The request head did not arrive within {} ms",
                    self.rules.header_read_timeout.as_millis()
                )),
                "",
            );
            // One attempt: a client that does not read gets the close without it.
            if let Ok(io) = self.io() {
                let _ = io.poll_write(cx, &answer);
            }
            self.refused = true;
        } else {
            tracing::debug!("connection idle too long: closing");
        }
        Poll::Ready(Err(io::ErrorKind::TimedOut.into()))
    }

    /// Takes (part of) hyper's own answer; once its head is complete, the OperationOutcome that
    /// replaces it is ready to send.
    fn collect(&mut self, bufs: &[IoSlice<'_>]) -> usize {
        let total = bufs.iter().map(|b| b.len()).sum();
        if let Replacement::None = self.replacement {
            self.replacement = Replacement::Collecting(Vec::new());
            self.refused = true;
        }
        if let Replacement::Collecting(head) = &mut self.replacement {
            for b in bufs {
                head.extend_from_slice(b);
            }
            if head.windows(4).any(|w| w == b"\r\n\r\n") {
                let bytes = replace(head, &self.rules.limits, self.activity.line_seen());
                self.replacement = Replacement::Sending { bytes, sent: 0 };
            }
        }
        total
    }

    /// Writes what is left of the replacing answer.
    fn poll_send_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Replacement::Sending { bytes, sent } = &mut self.replacement else {
            return Poll::Ready(Ok(()));
        };
        let Some(io) = self.io.as_mut() else {
            return Poll::Ready(Err(io::ErrorKind::NotConnected.into()));
        };
        while *sent < bytes.len() {
            let n = ready!(Pin::new(&mut *io).poll_write(cx, &bytes[*sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *sent += n;
        }
        Poll::Ready(Ok(()))
    }

    fn poll_write_bufs(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if !matches!(self.replacement, Replacement::None) || self.activity.writes_are_hypers_own() {
            // Sent by `poll_flush`, which hyper calls once it has written its answer.
            return Poll::Ready(Ok(self.collect(bufs)));
        }
        match self.io()?.poll_write_vectored(cx, bufs) {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.activity.wrote();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Pending => {
                ready!(self.poll_deadline(cx))?;
                Poll::Pending
            }
            other => other,
        }
    }
}

/// The OperationOutcome answer for hyper's answer `head` (same status, hyper's `date`). A
/// head too large for hyper's buffer with no line end in it is all request line: 414.
fn replace(head: &[u8], limits: &RequestLimits, line_seen: bool) -> Vec<u8> {
    let text = String::from_utf8_lossy(head);
    let status = text.get(9..12).unwrap_or("");
    let too_long = || {
        FhirError::UriTooLong(format!(
            "The request URL is longer than this server reads (at most {} bytes)",
            limits.max_url_bytes.min(MAX_URL_BYTES)
        ))
    };
    let error = match status {
        "414" => too_long(),
        "431" if !line_seen => too_long(),
        "431" => FhirError::HeadersTooLarge(format!(
            "The request's header fields are larger than this server reads (at most {} bytes in at most {MAX_HEADER_FIELDS} fields)",
            limits.max_header_bytes
        )),
        "400" => FhirError::Invalid(
            "The request is not valid HTTP/1.1: its request line or a header field is malformed (a URL must be ASCII, with other bytes percent-encoded)".into(),
        ),
        _ => return head.to_vec(),
    };
    tracing::debug!(status, "request head refused by the HTTP parser");
    let date = text
        .split("\r\n")
        .find(|line| line.to_ascii_lowercase().starts_with("date:"))
        .map(|line| format!("{line}\r\n"))
        .unwrap_or_default();
    raw_answer(&error, &date)
}

impl AsyncRead for WatchedSocket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match this.io()?.poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let read = &buf.filled()[before..];
                if !read.is_empty() {
                    this.activity.read(read);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                ready!(this.poll_deadline(cx))?;
                Poll::Pending
            }
        }
    }
}

impl AsyncWrite for WatchedSocket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_bufs(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_bufs(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send_replacement(cx))?;
        match this.io()?.poll_flush(cx) {
            Poll::Ready(Ok(())) => {
                this.activity.flushed();
                // A response may just have ended: time the idle connection from here.
                if let Some((Poll::Ready(()), _)) = this.arm(cx) {
                    cx.waker().wake_by_ref();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                ready!(this.poll_deadline(cx))?;
                Poll::Pending
            }
            other => other,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send_replacement(cx))?;
        this.io()?.poll_shutdown(cx)
    }
}

impl Drop for WatchedSocket {
    fn drop(&mut self) {
        if !self.refused {
            return;
        }
        if let (Some(io), Ok(runtime)) = (self.io.take(), tokio::runtime::Handle::try_current()) {
            runtime.spawn(linger(io, self.permit.take()));
        }
    }
}

/// Closes a refused connection gracefully: shuts the write side, then reads and discards what
/// the client still sends (for [`LINGER`], at most [`LINGER_BYTES`]) so that the close does not
/// reset the connection before the client has read the answer. Holds the connection's slot.
pub(crate) async fn linger(mut io: TcpStream, _slot: Option<OwnedSemaphorePermit>) {
    let _ = io.shutdown().await;
    let _ = tokio::time::timeout(LINGER, async {
        let mut buf = [0u8; 4096];
        let mut discarded = 0;
        while discarded < LINGER_BYTES {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => discarded += n,
            }
        }
    })
    .await;
}

/// A complete HTTP/1.1 answer with `error`'s OperationOutcome (JSON) that closes the
/// connection; `extra_headers` are whole header lines.
pub(crate) fn raw_answer(error: &FhirError, extra_headers: &str) -> Vec<u8> {
    let (status, _, _) = error.classify();
    let body =
        format::render(&error.to_operation_outcome(), Format::Json, false).unwrap_or_default();
    let mut answer = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: {}\r\ncontent-length: {}\r\nconnection: close\r\n{extra_headers}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        Format::Json.content_type(),
        body.len()
    )
    .into_bytes();
    answer.extend_from_slice(&body);
    answer
}
