//! What the agent does with a stream when the relay agreed to stream
//! preambles (ADR 026, ADR 027): read the preamble, then pipe a `service`
//! stream to the box's local service (the bytes after the line first),
//! serve an `agent` stream itself (`GET /metrics` answers the host figures
//! ([`host`](crate::host)) and the agent's own: version, tunnel
//! reconnects), or answer a `tcp` stream and pipe it to that service when
//! the allow-list names it. A stream whose preamble is missing, too long
//! or unknown is dropped (reset).

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::fmt::Write;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, ReadBuf};
use tunnel::preamble::{self, Refusal, Target, TcpTarget};
use tunnel::StreamHandle;

/// How long the relay has to send a stream's preamble.
const PREAMBLE_TIMEOUT: Duration = Duration::from_secs(10);

/// The agent's own figures, shared by its tunnels.
#[derive(Debug, Default)]
pub struct AgentFigures {
    /// Tunnels connected after the first.
    pub reconnects: AtomicU64,
    connects: AtomicU64,
}

impl AgentFigures {
    /// Count a connected tunnel.
    pub fn connected(&self) {
        if self.connects.fetch_add(1, Ordering::Relaxed) > 0 {
            self.reconnects.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The agent endpoint's `/metrics` body.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(2048);
        crate::host::render(std::path::Path::new("/"), &mut out);
        let _ = writeln!(out, "# TYPE edge_agent_reconnects_total counter");
        let _ = writeln!(
            out,
            "edge_agent_reconnects_total {}",
            self.reconnects.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "edge_agent_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        out
    }
}

/// Where the agent's streams may go.
#[derive(Debug)]
pub struct Targets {
    /// The box's local service (`--target`).
    pub service: String,
    /// What `tcp` streams may reach: the `--allow` list and the service.
    allowed: Vec<TcpTarget>,
}

impl Targets {
    pub fn new(settings: &crate::config::AgentSettings) -> Self {
        let mut allowed = settings.allow.clone();
        allowed.extend(settings.target.parse::<TcpTarget>().ok());
        Self {
            service: settings.target.clone(),
            allowed,
        }
    }

    pub fn allows(&self, t: &TcpTarget) -> bool {
        self.allowed.contains(t)
    }
}

/// Serve one stream that starts with a preamble.
pub async fn dispatch(mut stream: StreamHandle, targets: Arc<Targets>, figures: Arc<AgentFigures>) {
    let read = tokio::time::timeout(PREAMBLE_TIMEOUT, preamble::read(&mut stream)).await;
    match read {
        Ok(Ok((Target::Service, rest))) => crate::pipe(stream, targets.service.clone(), rest).await,
        Ok(Ok((Target::Tcp(t), rest))) => forward(stream, &targets, t, rest).await,
        Ok(Ok((Target::Agent, rest))) => {
            serve_agent(
                Prefixed {
                    rest,
                    pos: 0,
                    inner: stream,
                },
                figures,
            )
            .await
        }
        Ok(Err(err)) => tracing::warn!(error = %err, "stream dropped"),
        Err(_) => tracing::warn!("stream dropped: no preamble in time"),
    }
}

/// A `tcp` stream: refused unless allowed and reachable, else answered
/// and piped.
async fn forward(mut stream: StreamHandle, targets: &Targets, t: TcpTarget, rest: Vec<u8>) {
    if !targets.allows(&t) {
        tracing::warn!(target = %t, "forward refused: not in the allow-list");
        let _ = preamble::write_answer(&mut stream, Some(Refusal::NotAllowed)).await;
        return;
    }
    let Some(local) = crate::connect_local(&t.addr()).await else {
        let _ = preamble::write_answer(&mut stream, Some(Refusal::Unreachable)).await;
        return;
    };
    if preamble::write_answer(&mut stream, None).await.is_ok() {
        tracing::info!(target = %t, "forward started");
        crate::pipe_connected(stream, local, rest).await;
    }
}

async fn serve_agent(io: Prefixed, figures: Arc<AgentFigures>) {
    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let figures = figures.clone();
        async move {
            let res = if req.method() == http::Method::GET && req.uri().path() == "/metrics" {
                hyper::Response::builder()
                    .header(
                        http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )
                    .body(Full::new(Bytes::from(figures.render())))
            } else {
                hyper::Response::builder()
                    .status(http::StatusCode::NOT_FOUND)
                    .body(Full::new(Bytes::from_static(b"not found")))
            };
            res.map_err(std::io::Error::other)
        }
    });
    if let Err(err) = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), service)
        .await
    {
        tracing::debug!(error = %err, "agent endpoint stream ended with error");
    }
}

/// A stream whose first bytes were already read: those, then the rest.
struct Prefixed {
    rest: Vec<u8>,
    pos: usize,
    inner: StreamHandle,
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.pos < self.rest.len() {
            let n = buf.remaining().min(self.rest.len() - self.pos);
            let start = self.pos;
            buf.put_slice(&self.rest[start..start + n]);
            self.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

edge_core::write_through_inner!(impl for Prefixed);
