//! The connection loop: accepts TCP connections and serves the router on each over HTTP/1.1,
//! with the limits of [`EdgeSettings`]: a cap on open connections, the idle and header-read
//! timeouts, and the URL and header-size limits. It stops on Ctrl-C or SIGTERM, letting requests
//! in flight finish for a while.
//!
//! Over the connection cap a connection is accepted, answered 503 (OperationOutcome `throttled`,
//! `Retry-After: 1`) and closed, rather than left waiting in the kernel's queue: a client learns
//! at once that the server is full instead of timing out.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::connection::{
    Activity, ConnectionRules, ConnectionService, MAX_HEADER_FIELDS, WatchedSocket, linger,
    raw_answer,
};
use super::edge::RequestLimits;
use crate::error::FhirError;

/// How many over-the-cap connections are being answered 503 at once; more are closed unanswered.
const MAX_REFUSING: usize = 64;

/// The connection loop's limits (from `serve`'s flags; see `config::ServeArgs`).
#[derive(Debug, Clone, Copy)]
pub struct EdgeSettings {
    /// A request head must be complete this long after its first byte (then 408 and closed).
    pub header_read_timeout: Duration,
    /// A connection with no request in progress is closed after this long without a byte moving.
    pub idle_timeout: Duration,
    /// Most connections open at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// URL and header-size limits (414 and 431).
    pub limits: RequestLimits,
    /// On shutdown, how long requests in flight may take to finish.
    pub shutdown_timeout: Duration,
}

impl Default for EdgeSettings {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            max_connections: 1024,
            limits: RequestLimits::default(),
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

impl EdgeSettings {
    /// hyper's read buffer: room for a head at the limits, so that the limits, not hyper, answer
    /// (and at least hyper's minimum).
    fn read_buffer_bytes(&self) -> usize {
        (self.limits.max_url_bytes + self.limits.max_header_bytes + 4096).max(8192)
    }
}

/// Serves `app` on `listener` until `shutdown` completes; then stops accepting and waits up to
/// the shutdown timeout for open connections to finish their requests.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    settings: EdgeSettings,
    shutdown: impl Future<Output = ()>,
) {
    let rules = ConnectionRules {
        idle_timeout: settings.idle_timeout,
        header_read_timeout: settings.header_read_timeout,
        limits: settings.limits,
    };
    let slots = Arc::new(Semaphore::new(
        settings.max_connections.min(Semaphore::MAX_PERMITS),
    ));
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let mut http = http1::Builder::new();
    http.keep_alive(true)
        // The socket wrapper times heads and idle connections (hyper's timeout counts idle
        // keep-alive time as header time).
        .header_read_timeout(None)
        .max_headers(MAX_HEADER_FIELDS)
        .max_buf_size(settings.read_buffer_bytes());
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refuse_over_cap(stream, &refusing, settings.max_connections);
            continue;
        };
        let activity = Activity::new();
        let service = ConnectionService::new(app.clone(), activity.clone(), settings.limits);
        let socket = WatchedSocket::new(stream, activity, rules, slot);
        let connection = graceful.watch(http.serve_connection(TokioIo::new(socket), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!(
        connections = graceful.count(),
        "shutting down: no longer accepting; letting requests in flight finish"
    );
    if tokio::time::timeout(settings.shutdown_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            seconds = settings.shutdown_timeout.as_secs_f64(),
            "connections still open after the shutdown timeout are dropped"
        );
    }
}

/// Answers a connection over the cap 503 and closes it (gracefully, while few are being refused).
fn refuse_over_cap(stream: TcpStream, refusing: &Arc<Semaphore>, max_connections: usize) {
    tracing::debug!(max_connections, "connection cap reached: answering 503");
    let Ok(permit) = refusing.clone().try_acquire_owned() else {
        return;
    };
    let answer = raw_answer(
        &FhirError::Overloaded(format!(
            "The server has {max_connections} connections open, as many as it accepts; try again shortly"
        )),
        "retry-after: 1\r\n",
    );
    tokio::spawn(async move {
        // A new socket's send buffer takes the whole answer at once.
        if stream.try_write(&answer).is_ok() {
            linger(stream, None).await;
        }
        drop(permit);
    });
}

/// An accept that failed: a connection that went away is skipped; anything else (out of file
/// descriptors) is logged and retried after a pause, as the listener itself is still good.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accepting a connection failed; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Completes on Ctrl-C or (on Unix) SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; stop with Ctrl-C");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
