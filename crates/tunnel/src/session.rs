//! yamux session drivers over the pump's byte stream (contract §3). The relay
//! is the yamux client: it opens streams and resets any the device opens. The
//! device is the yamux server: it accepts streams and hands each to a handler.
//! Both close with GoAway(0) when their cancellation token fires.

use crate::pump::Activity;
use futures_util::StreamExt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_yamux::{Config, Control, Session, StreamHandle};
/// What a session runs over: the tunnel's [`WsIo`](crate::pump::WsIo), or
/// any other byte stream wrapped in [`Plain`].
pub use tokio_yamux::{FrameIo, Plain};

/// How long a closing session may take to flush its GoAway.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// yamux settings for the relay: a ping every `ping_interval` (the
/// contract's default is 30 s; devices answer whatever the interval); a
/// ping unanswered, or a connection that takes nothing while frames wait,
/// for `ping_timeout` ends the session; and a cap on concurrently open
/// streams. Burst windows (ADR 044) only for an agent that offered
/// [`crate::preamble::BURST_V1`]: any other device's windows stay within
/// the 1 MiB message cap, since it may write a whole frame as one message.
pub fn relay_config(
    max_streams: usize,
    ping_interval: Duration,
    ping_timeout: Duration,
    burst: bool,
) -> Config {
    Config {
        enable_keepalive: true,
        keepalive_interval: ping_interval,
        connection_write_timeout: ping_timeout,
        max_stream_count: max_streams.max(1),
        max_stream_window_size: crate::contract::MAX_RECEIVE_WINDOW,
        burst_stream_window_size: crate::contract::BURST_RECEIVE_WINDOW,
        burst_streams: if burst {
            crate::contract::BURST_STREAMS
        } else {
            0
        },
        ..Config::default()
    }
}

/// yamux settings for a device: it answers pings but does not send its own.
pub fn device_config() -> Config {
    Config {
        enable_keepalive: false,
        connection_write_timeout: crate::contract::PING_TIMEOUT,
        max_stream_window_size: crate::contract::MAX_RECEIVE_WINDOW,
        burst_stream_window_size: crate::contract::BURST_RECEIVE_WINDOW,
        burst_streams: crate::contract::BURST_STREAMS,
        ..Config::default()
    }
}

/// Why a yamux session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEnd {
    /// Closed by us (GoAway sent) after cancellation.
    Closed,
    /// The peer went away or the byte stream ended.
    PeerGone,
    /// A protocol or I/O error (bad header, keepalive timeout, ...).
    Error(String),
}

impl std::fmt::Display for SessionEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Closed => f.write_str("closed locally with GoAway"),
            Self::PeerGone => f.write_str("peer went away"),
            Self::Error(e) => write!(f, "yamux error: {e}"),
        }
    }
}

/// Start the relay (client) side. Returns the control used to open streams
/// and a future that drives the session until it ends.
pub fn client<T>(
    io: T,
    config: Config,
    cancel: CancellationToken,
    activity: Arc<Activity>,
) -> (Control, impl Future<Output = SessionEnd> + Send)
where
    T: FrameIo + Send + 'static,
{
    // Streams the device opens are dropped at once, which resets them.
    client_hearing(io, config, cancel, activity, drop)
}

/// Run the device (server) side: each accepted stream goes to `on_stream`.
pub async fn serve<T, F>(
    io: T,
    config: Config,
    cancel: CancellationToken,
    activity: Arc<Activity>,
    on_stream: F,
) -> SessionEnd
where
    T: FrameIo + Send + 'static,
    F: FnMut(StreamHandle) + Send,
{
    server(io, config, cancel, activity, on_stream).1.await
}

/// The server side with its control, for a server that also opens streams
/// (the relay's end of an api-server channel sends its drain notice so).
pub fn server<T, F>(
    io: T,
    config: Config,
    cancel: CancellationToken,
    activity: Arc<Activity>,
    on_stream: F,
) -> (Control, impl Future<Output = SessionEnd> + Send)
where
    T: FrameIo + Send + 'static,
    F: FnMut(StreamHandle) + Send,
{
    with_control(Session::new_server(io, config), cancel, activity, on_stream)
}

/// Start the client side, handing streams the peer opens to `on_stream`
/// (the api-server's end of a relay channel hears drain notices so).
pub fn client_hearing<T, F>(
    io: T,
    config: Config,
    cancel: CancellationToken,
    activity: Arc<Activity>,
    on_stream: F,
) -> (Control, impl Future<Output = SessionEnd> + Send)
where
    T: FrameIo + Send + 'static,
    F: FnMut(StreamHandle) + Send,
{
    with_control(Session::new_client(io, config), cancel, activity, on_stream)
}

/// `session`'s control, and the future that drives it.
fn with_control<T, F>(
    session: Session<T>,
    cancel: CancellationToken,
    activity: Arc<Activity>,
    on_stream: F,
) -> (Control, impl Future<Output = SessionEnd> + Send)
where
    T: FrameIo + Send + 'static,
    F: FnMut(StreamHandle) + Send,
{
    let control = session.control();
    activity.hear_ping_rtt(session.ping_rtt());
    (control, drive(session, cancel, activity, on_stream))
}

/// The future that drives `session` until it ends. Written as a function
/// returning an `async move` block, not as an `async fn`: an `async fn`
/// keeps each argument twice in its state (as passed, and as its local
/// binding), and the session is most of the state of every idle tunnel on
/// a relay.
#[allow(clippy::manual_async_fn)]
fn drive<T, F>(
    mut session: Session<T>,
    cancel: CancellationToken,
    activity: Arc<Activity>,
    mut on_stream: F,
) -> impl Future<Output = SessionEnd> + Send
where
    T: FrameIo + Send + 'static,
    F: FnMut(StreamHandle) + Send,
{
    async move {
        loop {
            tokio::select! {
                item = session.next() => match item {
                    Some(Ok(stream)) => on_stream(stream),
                    Some(Err(err)) => {
                        if err.kind() == std::io::ErrorKind::InvalidData {
                            activity.mark_protocol_error();
                        }
                        return SessionEnd::Error(err.to_string());
                    }
                    None => return SessionEnd::PeerGone,
                },
                _ = cancel.cancelled() => break,
            }
        }
        // Send GoAway(0) and keep the session polled until it is flushed.
        let mut control = session.control();
        let close = control.close();
        tokio::pin!(close);
        let grace = tokio::time::sleep(CLOSE_GRACE);
        tokio::pin!(grace);
        loop {
            tokio::select! {
                _ = &mut close => break,
                _ = &mut grace => break,
                item = session.next() => match item {
                    Some(Ok(stream)) => drop(stream),
                    Some(Err(_)) | None => break,
                },
            }
        }
        SessionEnd::Closed
    }
}
