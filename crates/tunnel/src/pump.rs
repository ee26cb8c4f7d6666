//! Turns a WebSocket into one continuous byte stream per direction (contract
//! §2), read and written by yamux directly: [`WsIo`] is an
//! `AsyncRead + AsyncWrite` over the message stream, with no task, pipe or
//! buffer of its own between the two; yamux's queued frames become
//! messages, large ones without being copied, small ones in a row joined,
//! and each message's payload reaches yamux as it is (`FrameIo`). Binary
//! payloads are bytes of the stream, message boundaries mean nothing; a
//! text message closes with 1003, an oversized one with 1009, silence
//! past the idle timeout with 1001, Ping/Pong/Close never reach yamux.
//! When yamux drops the stream, the close frame goes out (after GoAway(1)
//! when yamux found a protocol error) and the reason the tunnel ended is
//! reported.

use bytes::Bytes;
use edge_core::time::now_ms;
use futures_util::{Sink, Stream};
use std::collections::VecDeque;
use std::future::Future;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Largest binary message written.
const WRITE_CHUNK: usize = 64 * 1024;
/// How long the closing handshake may take once the tunnel ended.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Liveness and traffic counters of one tunnel, shared with its owner.
#[derive(Debug)]
pub struct Activity {
    last_inbound_ms: AtomicI64,
    protocol_error: AtomicBool,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    /// The yamux session's latest ping round trip (µs), once it runs.
    ping_rtt_us: std::sync::OnceLock<Arc<AtomicU64>>,
}

impl Activity {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            last_inbound_ms: AtomicI64::new(now_ms()),
            protocol_error: AtomicBool::new(false),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            ping_rtt_us: std::sync::OnceLock::new(),
        })
    }

    /// The round trip of the tunnel's latest answered keepalive ping.
    pub fn ping_rtt(&self) -> Option<std::time::Duration> {
        let us = self.ping_rtt_us.get()?.load(Ordering::Relaxed);
        (us > 0).then(|| std::time::Duration::from_micros(us))
    }

    /// Where the yamux session publishes its ping round trips.
    pub(crate) fn hear_ping_rtt(&self, rtt: Arc<AtomicU64>) {
        let _ = self.ping_rtt_us.set(rtt);
    }

    /// Unix milliseconds of the last inbound message.
    pub fn last_inbound_ms(&self) -> i64 {
        self.last_inbound_ms.load(Ordering::Relaxed)
    }

    pub fn bytes_in(&self) -> u64 {
        self.bytes_in.load(Ordering::Relaxed)
    }

    pub fn bytes_out(&self) -> u64 {
        self.bytes_out.load(Ordering::Relaxed)
    }

    /// Called by the yamux driver before it drops the byte stream because the
    /// peer broke the protocol; the pump then sends GoAway(1) and closes 1002.
    pub fn mark_protocol_error(&self) {
        self.protocol_error.store(true, Ordering::SeqCst);
    }

    /// Whether the peer broke the protocol.
    pub fn protocol_error(&self) -> bool {
        self.protocol_error.load(Ordering::SeqCst)
    }

    fn touch(&self, n: usize) {
        self.last_inbound_ms.store(now_ms(), Ordering::Relaxed);
        self.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// Why a pump stopped. Carried into the "connection ended" log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PumpEnd {
    /// Our side (yamux) closed the byte stream; we sent close 1000.
    LocalClosed,
    /// The peer sent a close frame or ended the TCP stream.
    PeerClosed(Option<u16>),
    /// The peer sent a text message (closed with 1003).
    TextMessage,
    /// The peer sent a message over the size limit (closed with 1009).
    MessageTooBig,
    /// Nothing arrived for the idle timeout.
    IdleTimeout,
    /// Transport or protocol failure.
    Error(String),
}

impl std::fmt::Display for PumpEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::LocalClosed => f.write_str("closed locally"),
            Self::PeerClosed(Some(code)) => write!(f, "peer closed with code {code}"),
            Self::PeerClosed(None) => f.write_str("peer closed the connection"),
            Self::TextMessage => f.write_str("peer sent a text message (protocol error)"),
            Self::MessageTooBig => f.write_str("peer sent an oversized message"),
            Self::IdleTimeout => f.write_str("no inbound bytes within the idle timeout"),
            Self::Error(e) => write!(f, "transport error: {e}"),
        }
    }
}

/// Pump settings.
#[derive(Debug, Clone, Copy)]
pub struct PumpConfig {
    /// No inbound message for this long ends the tunnel.
    pub idle_timeout: Duration,
}

/// Resolves to why the tunnel ended, once its [`WsIo`] is dropped and the
/// close frame is out.
pub type Ended = oneshot::Receiver<PumpEnd>;

/// Wrap `ws` as the byte stream yamux reads and writes.
pub fn spawn<S>(
    ws: WebSocketStream<S>,
    cfg: PumpConfig,
    activity: Arc<Activity>,
) -> (WsIo<S>, Ended)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (report, ended) = oneshot::channel();
    let io = WsIo {
        ws: Some(ws),
        pending: Bytes::new(),
        idle_timeout: cfg.idle_timeout,
        idle: Box::pin(tokio::time::sleep(cfg.idle_timeout)),
        activity,
        end: None,
        report: Some(report),
    };
    (io, ended)
}

/// A WebSocket as one byte stream each way.
pub struct WsIo<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> {
    ws: Option<WebSocketStream<S>>,
    /// The unread rest of the last binary message.
    pending: Bytes,
    idle_timeout: Duration,
    idle: Pin<Box<tokio::time::Sleep>>,
    activity: Arc<Activity>,
    /// Why reading ended, once it did.
    end: Option<PumpEnd>,
    report: Option<oneshot::Sender<PumpEnd>>,
}

fn gone() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::NotConnected, "tunnel closed")
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> WsIo<S> {
    /// Whether the idle timer has fired with nothing heard since it was
    /// armed; re-arms it for the remaining time otherwise.
    fn idle_expired(&mut self, cx: &mut Context<'_>) -> bool {
        while self.idle.as_mut().poll(cx).is_ready() {
            let silent_ms = now_ms().saturating_sub(self.activity.last_inbound_ms());
            let silent = Duration::from_millis(u64::try_from(silent_ms).unwrap_or(0));
            if silent >= self.idle_timeout {
                return true;
            }
            let deadline = tokio::time::Instant::now() + (self.idle_timeout - silent);
            self.idle.as_mut().reset(deadline);
        }
        false
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> WsIo<S> {
    /// The next binary message's payload (or its unread rest), never
    /// empty; `None` once reading ended.
    fn poll_payload(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<Option<Bytes>>> {
        loop {
            if !self.pending.is_empty() {
                return Poll::Ready(Ok(Some(std::mem::take(&mut self.pending))));
            }
            if self.end.is_some() {
                return Poll::Ready(Ok(None));
            }
            if self.idle_expired(cx) {
                self.end = Some(PumpEnd::IdleTimeout);
                continue;
            }
            let Some(ws) = self.ws.as_mut() else {
                return Poll::Ready(Err(gone()));
            };
            let next = match ready!(Pin::new(ws).poll_next(cx)) {
                None => Err(PumpEnd::PeerClosed(None)),
                Some(Err(WsError::Capacity(CapacityError::MessageTooLong { .. }))) => {
                    Err(PumpEnd::MessageTooBig)
                }
                Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => {
                    Err(PumpEnd::PeerClosed(None))
                }
                Some(Err(err)) => Err(PumpEnd::Error(err.to_string())),
                Some(Ok(msg)) => Ok(msg),
            };
            match next {
                Err(end) => self.end = Some(end),
                Ok(Message::Binary(bytes)) => {
                    self.activity.touch(bytes.len());
                    self.pending = bytes;
                }
                Ok(Message::Text(_)) => self.end = Some(PumpEnd::TextMessage),
                Ok(Message::Ping(_) | Message::Pong(_)) => self.activity.touch(0),
                Ok(Message::Close(frame)) => {
                    self.end = Some(PumpEnd::PeerClosed(frame.map(|f| u16::from(f.code))));
                }
                Ok(Message::Frame(_)) => {}
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncRead for WsIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.pending.is_empty() {
            match ready!(this.poll_payload(cx))? {
                Some(payload) => this.pending = payload,
                None => return Poll::Ready(Ok(())),
            }
        }
        let n = this.pending.len().min(buf.remaining());
        buf.put_slice(&this.pending.split_to(n));
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> WsIo<S> {
    /// The WebSocket, unless the tunnel ended.
    fn open_ws(&mut self) -> std::io::Result<Pin<&mut WebSocketStream<S>>> {
        match (&self.end, self.ws.as_mut()) {
            (None, Some(ws)) => Ok(Pin::new(ws)),
            _ => Err(gone()),
        }
    }

    /// Ready once the WebSocket can take a message.
    fn poll_ready_ws(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.open_ws()?
            .poll_ready(cx)
            .map_err(std::io::Error::other)
    }

    /// Send `message` as one binary message (after [`Self::poll_ready_ws`]).
    fn send(&mut self, message: Bytes) -> std::io::Result<()> {
        let n = message.len();
        self.open_ws()?
            .start_send(Message::Binary(message))
            .map_err(std::io::Error::other)?;
        self.activity
            .bytes_out
            .fetch_add(n as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Send the front of `bufs` (at most [`WRITE_CHUNK`] bytes) as one
    /// binary message.
    fn poll_send(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        ready!(self.poll_ready_ws(cx))?;
        let n = bufs.iter().map(|b| b.len()).sum::<usize>().min(WRITE_CHUNK);
        let mut message = bytes::BytesMut::with_capacity(n);
        for buf in bufs {
            let take = buf.len().min(n - message.len());
            message.extend_from_slice(&buf[..take]);
            if message.len() == n {
                break;
            }
        }
        self.send(message.freeze())?;
        Poll::Ready(Ok(n))
    }
}

/// Buffers smaller than this are copied together into one message with
/// the small buffers queued after them: a stream's open, a request head,
/// a window update and a close leave in one write, not one each.
const JOIN_BELOW: usize = 4 * 1024;

/// yamux hands its queued frames over as the buffers they are in: a large
/// one goes out as binary messages (of at most [`WRITE_CHUNK`] bytes)
/// without being copied into one first; small ones in a row are joined
/// into one message (message boundaries mean nothing to the peer).
impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> tokio_yamux::FrameIo for WsIo<S> {
    fn writes_owned(&self) -> bool {
        true
    }

    /// yamux takes each binary message's payload as it is: a data
    /// frame's body that came as one message (the large ones do) reaches
    /// its stream without being copied out of the message.
    fn reads_owned(&self) -> bool {
        true
    }

    fn poll_read_owned(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<Option<Bytes>>> {
        self.poll_payload(cx)
    }

    fn poll_write_owned(
        &mut self,
        cx: &mut Context<'_>,
        queue: &mut VecDeque<Bytes>,
    ) -> Poll<std::io::Result<()>> {
        self.open_ws()?;
        let joins = |b: Option<&Bytes>| b.is_some_and(|b| b.len() < JOIN_BELOW);
        while !queue.is_empty() {
            ready!(self.poll_ready_ws(cx))?;
            let message = if joins(queue.front()) && joins(queue.get(1)) {
                // At most WRITE_CHUNK bytes, as any other message.
                let mut joined = bytes::BytesMut::new();
                while joins(queue.front())
                    && joined.len() + queue.front().map_or(0, Bytes::len) <= WRITE_CHUNK
                {
                    if let Some(small) = queue.pop_front() {
                        joined.extend_from_slice(&small);
                    }
                }
                joined.freeze()
            } else {
                match queue.front_mut() {
                    Some(front) if front.len() > WRITE_CHUNK => front.split_to(WRITE_CHUNK),
                    _ => queue.pop_front().unwrap_or_default(),
                }
            };
            self.send(message)?;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncWrite for WsIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.poll_send(cx, &[IoSlice::new(buf)])
    }

    /// The slices leave as one message (one copy, into it). yamux itself
    /// hands over owned buffers instead (`FrameIo`).
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.poll_send(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.ws.as_mut() {
            Some(ws) => Pin::new(ws).poll_flush(cx).map_err(std::io::Error::other),
            None => Poll::Ready(Err(gone())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.poll_flush(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Drop for WsIo<S> {
    /// Send the close frame the ending calls for (bounded by
    /// [`CLOSE_GRACE`]) and report why the tunnel ended.
    fn drop(&mut self) {
        let end = self.end.take().unwrap_or(PumpEnd::LocalClosed);
        let (Some(ws), Some(report)) = (self.ws.take(), self.report.take()) else {
            return;
        };
        let protocol_error = self.activity.protocol_error();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            let _ = report.send(end);
            return;
        };
        runtime.spawn(async move {
            close(ws, &end, protocol_error).await;
            let _ = report.send(end);
        });
    }
}

async fn close<S>(mut ws: WebSocketStream<S>, end: &PumpEnd, protocol_error: bool)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    use futures_util::SinkExt;
    let close = match end {
        PumpEnd::LocalClosed if protocol_error => {
            let _ = tokio::time::timeout(
                CLOSE_GRACE,
                ws.send(Message::Binary(Bytes::from_static(
                    &crate::contract::GO_AWAY_PROTOCOL_ERROR,
                ))),
            )
            .await;
            Some((CloseCode::Protocol, "yamux protocol error"))
        }
        PumpEnd::LocalClosed => Some((CloseCode::Normal, "bye")),
        PumpEnd::TextMessage => Some((CloseCode::Unsupported, "text messages are not allowed")),
        PumpEnd::MessageTooBig => Some((CloseCode::Size, "message too big")),
        PumpEnd::IdleTimeout => Some((CloseCode::Away, "idle timeout")),
        PumpEnd::PeerClosed(_) | PumpEnd::Error(_) => None,
    };
    if let Some((code, reason)) = close {
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            let _ = ws.send(Message::Close(Some(frame))).await;
            let _ = ws.close(None).await;
        })
        .await;
    }
}
