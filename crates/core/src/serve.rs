//! The HTTP/1.1 accept loop every listener of the platform uses: a connection
//! limit, optional TLS, a header-read (handshake) timeout, upgrades, and a
//! graceful drain when the shutdown token fires. Nothing slow runs on the
//! accept path: the TLS handshake runs in the connection's own task, under
//! the same timeout as reading the request head.

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// Limits of one listener.
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    /// Connections served at once; further accepts wait.
    pub max_connections: usize,
    /// Time a client has to send its request head.
    pub header_read_timeout: Duration,
    /// Time in-flight requests get to finish after shutdown starts.
    pub drain_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            header_read_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// Serve `app` on `listener` until `shutdown` is cancelled, then stop
/// accepting, let in-flight requests finish (bounded by the drain timeout)
/// and return. Each request carries `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    opts: ServeOptions,
    shutdown: CancellationToken,
) {
    serve_tls(listener, app, opts, None, shutdown).await;
}

/// [`serve`], over TLS when `tls` is given (HTTP/1.1 inside).
pub async fn serve_tls(
    listener: TcpListener,
    app: Router,
    opts: ServeOptions,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: CancellationToken,
) {
    let limit = Arc::new(Semaphore::new(opts.max_connections.max(1)));
    let tracker = TaskTracker::new();
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let (stream, remote) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let shutdown = shutdown.clone();
        let tls = tls.clone();
        tracker.spawn(async move {
            match tls {
                None => serve_connection(stream, remote, app, opts, shutdown).await,
                Some(acceptor) => {
                    match tokio::time::timeout(opts.header_read_timeout, acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(stream)) => {
                            serve_connection(stream, remote, app, opts, shutdown).await;
                        }
                        Ok(Err(err)) => {
                            tracing::debug!(error = %err, %remote, "TLS handshake failed");
                        }
                        Err(_) => tracing::debug!(%remote, "TLS handshake timed out"),
                    }
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    tracker.close();
    if tokio::time::timeout(opts.drain_timeout, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("drain timeout elapsed with connections still open");
    }
}

/// One HTTP/1.1 connection on `io`, until it ends or the drain is over.
async fn serve_connection<I>(
    io: I,
    remote: std::net::SocketAddr,
    app: Router,
    opts: ServeOptions,
    shutdown: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(remote));
        app.clone().oneshot(req.map(axum::body::Body::new))
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_read_timeout)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        res = conn.as_mut() => res,
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(err) = result {
        tracing::debug!(error = %err, %remote, "connection ended with error");
    }
}
