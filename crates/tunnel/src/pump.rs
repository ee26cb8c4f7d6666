//! Turns a WebSocket into one continuous byte stream per direction (contract
//! §2). Binary payloads are bytes of the stream, message boundaries mean
//! nothing; a text message closes with 1003, an oversized one with 1009,
//! Ping/Pong/Close never reach yamux. The byte stream is handed out as the
//! near end of an in-memory duplex pipe; the pump task moves bytes between
//! the pipe's far end and the socket and records inbound activity.

use edge_core::time::now_ms;
use futures_util::{SinkExt, StreamExt};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Size of the in-memory pipe between the pump and yamux, each direction.
const PIPE_BYTES: usize = 256 * 1024;
/// Largest binary message the pump writes.
const WRITE_CHUNK: usize = 64 * 1024;

/// Liveness and traffic counters of one tunnel, shared with its owner.
#[derive(Debug)]
pub struct Activity {
    last_inbound_ms: AtomicI64,
    protocol_error: AtomicBool,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

impl Activity {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            last_inbound_ms: AtomicI64::new(now_ms()),
            protocol_error: AtomicBool::new(false),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
        })
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

    fn protocol_error(&self) -> bool {
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

/// Start pumping `ws`. Returns the byte stream for yamux and the pump task,
/// which yields why the tunnel ended.
pub fn spawn<S>(
    ws: WebSocketStream<S>,
    cfg: PumpConfig,
    activity: Arc<Activity>,
) -> (DuplexStream, JoinHandle<PumpEnd>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (near, far) = tokio::io::duplex(PIPE_BYTES);
    let task = tokio::spawn(run(ws, far, cfg, activity));
    (near, task)
}

async fn run<S>(
    ws: WebSocketStream<S>,
    far: DuplexStream,
    cfg: PumpConfig,
    activity: Arc<Activity>,
) -> PumpEnd
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut sink, mut stream) = ws.split();
    let (mut pipe_rd, mut pipe_wr) = tokio::io::split(far);

    let inbound = async {
        loop {
            let next = match tokio::time::timeout(cfg.idle_timeout, stream.next()).await {
                Err(_) => return PumpEnd::IdleTimeout,
                Ok(None) => return PumpEnd::PeerClosed(None),
                Ok(Some(Err(WsError::Capacity(CapacityError::MessageTooLong { .. })))) => {
                    return PumpEnd::MessageTooBig
                }
                Ok(Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed))) => {
                    return PumpEnd::PeerClosed(None)
                }
                Ok(Some(Err(err))) => return PumpEnd::Error(err.to_string()),
                Ok(Some(Ok(msg))) => msg,
            };
            match next {
                Message::Binary(bytes) => {
                    activity.touch(bytes.len());
                    if pipe_wr.write_all(&bytes).await.is_err() {
                        return PumpEnd::LocalClosed;
                    }
                }
                Message::Text(_) => return PumpEnd::TextMessage,
                Message::Ping(_) | Message::Pong(_) => activity.touch(0),
                Message::Close(frame) => {
                    return PumpEnd::PeerClosed(frame.map(|f| u16::from(f.code)))
                }
                Message::Frame(_) => {}
            }
        }
    };

    let outbound = async {
        let mut buf = vec![0u8; WRITE_CHUNK];
        loop {
            let n = match pipe_rd.read(&mut buf).await {
                Ok(0) | Err(_) => return PumpEnd::LocalClosed,
                Ok(n) => n,
            };
            let msg = Message::Binary(bytes::Bytes::copy_from_slice(&buf[..n]));
            if let Err(err) = sink.send(msg).await {
                return match err {
                    WsError::ConnectionClosed | WsError::AlreadyClosed => PumpEnd::PeerClosed(None),
                    other => PumpEnd::Error(other.to_string()),
                };
            }
            activity.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
        }
    };

    let end = tokio::select! {
        end = inbound => end,
        end = outbound => end,
    };

    let close = match &end {
        PumpEnd::LocalClosed if activity.protocol_error() => {
            let _ = tokio::time::timeout(
                Duration::from_secs(1),
                sink.send(Message::Binary(bytes::Bytes::from_static(
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
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let _ = sink.send(Message::Close(Some(frame))).await;
            let _ = sink.close().await;
        })
        .await;
    }
    end
}
