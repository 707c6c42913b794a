//! The HTTP/1 server under the API: an accept loop of our own around hyper, because
//! `axum::serve` has neither a header-read timeout nor a cap on open connections, and without
//! them slow or half-sent requests hold file descriptors until the server stops answering.
//!
//! - A connection is accepted only while fewer than `max_connections` are open; beyond that new
//!   connections wait in the kernel's listen backlog and are served once others close.
//! - A request's headers must arrive within `header_read_timeout`. hyper starts that clock as soon
//!   as a connection waits for its next request, so it is also the idle keep-alive timeout.
//! - A request head (request line and headers) over 64 KiB is answered 431.
//! - On shutdown the listener closes, idle connections close, and requests in flight finish.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Limits of the connections themselves.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Time for a request's headers to arrive, counted from when the connection is ready for
    /// them; also how long an idle keep-alive connection stays open.
    pub header_read_timeout: Duration,
    /// Open connections at most; more wait to be accepted.
    pub max_connections: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 1024,
        }
    }
}

/// Largest request head (request line and headers); larger ones are answered 431. Bounds the
/// memory a connection holds before its request is routed.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// How long accepting pauses after an error such as running out of file descriptors, so the loop
/// does not spin while connections close.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves `router` on `listener` until `shutdown` is cancelled, then waits for the requests in
/// flight to finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    options: ServerOptions,
    shutdown: CancellationToken,
) {
    let open = Arc::new(Semaphore::new(options.max_connections));
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        .max_header_size(MAX_HEAD_BYTES);
    loop {
        // The permit is taken before accepting: over the cap, connections stay in the backlog.
        let permit = tokio::select! {
            () = shutdown.cancelled() => break,
            permit = open.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    pause_after(&error, &shutdown).await;
                    continue;
                }
            },
        };
        // Answers are written whole; waiting to coalesce them only adds latency.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        let service = TowerToHyperService::new(router.clone());
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                // Timeouts and clients hanging up are routine: not worth more than debug.
                tracing::debug!(%error, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Waits a little after an accept error, unless it concerned only the one connection.
async fn pause_after(error: &std::io::Error, shutdown: &CancellationToken) {
    use std::io::ErrorKind;
    let one_connection = matches!(
        error.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    );
    if one_connection {
        return;
    }
    tracing::warn!(%error, "cannot accept a connection; pausing");
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
    }
}
