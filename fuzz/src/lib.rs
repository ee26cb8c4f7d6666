//! Shared harness of the fuzz targets: one tokio runtime per process, and
//! a hostile peer that speaks WebSocket and writes the fuzzer's bytes as
//! binary messages (each message carrying whatever yamux frames, partial
//! or garbage, the input holds) to the real tunnel code on the other end.

use futures_util::SinkExt;
use std::sync::OnceLock;
use std::time::Duration;
use tokio::io::DuplexStream;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// How long one input may take before the target gives up on it (a hang
/// beyond libFuzzer's own timeout is reported as one).
pub const PER_INPUT: Duration = Duration::from_millis(200);

pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime")
    })
}

/// Split `data` into messages: each starts with a length byte (0..=255
/// bytes follow, fewer at the end of the input).
pub fn messages(data: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let n = usize::from(len).min(tail.len());
        out.push(tail[..n].to_vec());
        rest = &tail[n..];
    }
    out
}

/// A connected pair: the code under test gets `ours` (server role when
/// `we_are_server`), the hostile peer the other end.
pub async fn websocket_pair(
    we_are_server: bool,
    config: Option<tunnel::WebSocketConfig>,
) -> (WebSocketStream<DuplexStream>, WebSocketStream<DuplexStream>) {
    let (a, b) = tokio::io::duplex(1 << 16);
    let (ours, theirs) = if we_are_server {
        (Role::Server, Role::Client)
    } else {
        (Role::Client, Role::Server)
    };
    (
        WebSocketStream::from_raw_socket(a, ours, config).await,
        WebSocketStream::from_raw_socket(b, theirs, None).await,
    )
}

/// Write each message as a binary WebSocket message, then close.
pub async fn send_all(peer: &mut WebSocketStream<DuplexStream>, msgs: Vec<Vec<u8>>) {
    for m in msgs {
        if peer.send(Message::Binary(m.into())).await.is_err() {
            return;
        }
    }
    let _ = peer.close(None).await;
}

/// The pump over `ours` as the product starts it (five seconds of idle
/// allowed): the frame I/O a yamux session runs on, the pump's task, and
/// the activity clock they share.
pub fn pumped(
    ours: WebSocketStream<DuplexStream>,
) -> (
    tunnel::pump::WsIo<DuplexStream>,
    tunnel::pump::Ended,
    std::sync::Arc<tunnel::pump::Activity>,
) {
    let activity = tunnel::pump::Activity::new();
    let (io, pump_task) = tunnel::pump::spawn(
        ours,
        tunnel::pump::PumpConfig {
            idle_timeout: Duration::from_secs(5),
        },
        activity.clone(),
    );
    (io, pump_task, activity)
}
