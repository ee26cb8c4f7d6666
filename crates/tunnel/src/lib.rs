//! The device tunnel as both ends see it: the v1 wire contract's constants,
//! the pump that turns a WebSocket into one continuous byte stream, the
//! server-side upgrade helper, yamux session drivers for the relay
//! (client role) and the device (server role), and the splice that pipes a
//! stream onward by handing its buffers on, and the stream preamble that
//! agents may ask for (ADR 026).

pub mod contract;
pub mod dial;
pub mod preamble;
pub mod pump;
pub mod read_ahead;
pub mod session;
pub mod splice;
pub mod upgrade;

/// Buffer each way when a relay or agent pipes one stream into another:
/// large enough that bulk transfers move in few, large yamux frames and
/// WebSocket messages.
pub const PIPE_BUFFER: usize = 64 * 1024;

pub use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
pub use tokio_yamux::{Control, StreamHandle};
