//! The multiplexed channel from an api-server to a relay node: one
//! connection to the internal port, upgraded once (`GET MUX_PATH`,
//! `Upgrade: edge-mux`, the shared secret as bearer), then a yamux session
//! on which the api-server (client) opens one stream per request to a
//! device. On each stream the api-server first writes the device id and a
//! newline; the relay answers one status byte and, when it is
//! [`STATUS_OK`], the stream is from then on a byte pipe to a fresh stream
//! on the device. No TCP connection, HTTP handshake or upgrade per request.

use edge_core::DeviceId;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Path of the upgrade that starts a channel.
pub const MUX_PATH: &str = "/internal/v1/mux";
/// Upgrade protocol token of the channel.
pub const MUX_PROTOCOL: &str = "edge-mux";

/// The relay opened a stream to the device; bytes flow from now on.
pub const STATUS_OK: u8 = 0;
/// The device has no live session on this node.
pub const STATUS_OFFLINE: u8 = 1;
/// The device's session refused the stream (its stream limit, a timeout).
pub const STATUS_REFUSED: u8 = 2;
/// The request line was not a device id.
pub const STATUS_BAD_REQUEST: u8 = 3;

/// Length of a request line: a hyphenated UUID and `\n`.
const REQUEST_LEN: usize = 37;

/// yamux settings of a channel: both ends ping every 5 s (a dead peer is
/// found within a ping timeout), many concurrent streams, 1 MiB windows.
pub fn config() -> tokio_yamux::Config {
    tokio_yamux::Config {
        enable_keepalive: true,
        keepalive_interval: Duration::from_secs(5),
        connection_write_timeout: Duration::from_secs(10),
        max_stream_count: 8192,
        max_stream_window_size: 1 << 20,
        ..tokio_yamux::Config::default()
    }
}

/// Client side: ask for `device` on a fresh channel stream.
pub async fn write_request<S: AsyncWrite + Unpin>(
    stream: &mut S,
    device: DeviceId,
) -> std::io::Result<()> {
    stream.write_all(format!("{device}\n").as_bytes()).await?;
    stream.flush().await
}

/// Client side: the relay's one-byte answer.
pub async fn read_status<S: AsyncRead + Unpin>(stream: &mut S) -> std::io::Result<u8> {
    stream.read_u8().await
}

/// Relay side: the device a channel stream asks for (`None`: malformed).
pub async fn read_request<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> std::io::Result<Option<DeviceId>> {
    let mut line = [0u8; REQUEST_LEN];
    stream.read_exact(&mut line).await?;
    if line[REQUEST_LEN - 1] != b'\n' {
        return Ok(None);
    }
    Ok(std::str::from_utf8(&line[..REQUEST_LEN - 1])
        .ok()
        .and_then(|s| s.parse().ok()))
}

/// Relay side: answer `status`.
pub async fn write_status<S: AsyncWrite + Unpin>(
    stream: &mut S,
    status: u8,
) -> std::io::Result<()> {
    stream.write_all(&[status]).await?;
    stream.flush().await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn requests_and_answers_round_trip_over_any_stream() {
        let (mut a, mut b) = tokio::io::duplex(64);
        let device = DeviceId::new();
        write_request(&mut a, device).await.unwrap();
        assert_eq!(read_request(&mut b).await.unwrap(), Some(device));
        write_status(&mut b, STATUS_OFFLINE).await.unwrap();
        assert_eq!(read_status(&mut a).await.unwrap(), STATUS_OFFLINE);
        a.write_all(&[b'x'; REQUEST_LEN]).await.unwrap();
        assert_eq!(read_request(&mut b).await.unwrap(), None);
    }
}
