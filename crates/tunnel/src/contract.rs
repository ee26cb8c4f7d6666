//! Constants of tunnel wire contract v1 (shared/docs/tunnel-protocol.md).

use std::time::Duration;

/// Path of the tunnel endpoint on the relay.
pub const TUNNEL_PATH: &str = "/tunnel";
/// Largest WebSocket message the relay accepts (close 1009 beyond it).
pub const MAX_MESSAGE_SIZE: usize = 1 << 20;
/// yamux initial stream receive window.
pub const INITIAL_STREAM_WINDOW: u32 = 256 * 1024;
/// How far our receivers (relay and agent) let a stream's receive window
/// grow through window updates (the contract allows any delta). Bounds the
/// bytes buffered per stream when its reader is slow.
pub const MAX_RECEIVE_WINDOW: u32 = 1 << 20;
/// The larger window a bulk stream (one that has taken
/// [`MAX_RECEIVE_WINDOW`] bytes) grows to while at most [`BURST_STREAMS`]
/// streams of its session hold one (ADR 044): on a busy machine a hop's
/// reader waits a scheduler slice or more, and 1 MiB in flight per hop
/// then caps a download below rathole's.
pub const BURST_RECEIVE_WINDOW: u32 = 8 << 20;
/// How many streams of one session may hold [`BURST_RECEIVE_WINDOW`] at
/// once: a session's stalled streams buffer at most this many times 7 MiB
/// more than they did without it.
pub const BURST_STREAMS: usize = 4;
/// The relay sends a yamux ping this often.
pub const PING_INTERVAL: Duration = Duration::from_secs(30);
/// A ping unanswered this long marks the session dead.
pub const PING_TIMEOUT: Duration = Duration::from_secs(10);
/// No inbound bytes for this long marks the session dead.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(40);
/// The relay's own default ping interval: tighter than the contract's 30 s
/// (devices answer pings whatever their own settings), so that with
/// [`RELAY_IDLE_TIMEOUT`] a frozen device is found within 15 s.
pub const RELAY_PING_INTERVAL: Duration = Duration::from_secs(5);
/// The relay's default silence limit: three missed ping answers.
pub const RELAY_IDLE_TIMEOUT: Duration = Duration::from_secs(15);
/// Agent-name prefix sent by this project's agent as `User-Agent`.
pub const AGENT_NAME: &str = "edge-agent";
/// A complete yamux GoAway frame with code 1 (protocol error).
pub const GO_AWAY_PROTOCOL_ERROR: [u8; 12] = [0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
