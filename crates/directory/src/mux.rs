//! The multiplexed channel from an api-server to a relay node: one
//! connection to the internal port, upgraded once (`GET MUX_PATH`,
//! `Upgrade: edge-mux`, the shared secret as bearer), then a yamux session
//! on which the api-server (client) opens one stream per request to a
//! device. On each stream the api-server first writes the device id, then
//! optionally a space and the request id it serves, optionally a space and
//! `tcp=HOST:PORT` (a stream to that TCP service on the device, ADR 027,
//! instead of its local service), and a newline; the
//! relay answers one status byte and, when it is
//! [`STATUS_OK`], the stream is from then on a byte pipe to a fresh stream
//! on the device. No TCP connection, HTTP handshake or upgrade per request.
//!
//! A relay that serves on shards (ADR 042) and an api-server that asks
//! for it (ADR 043) add where the device's session runs: the api-server's
//! upgrade request carries [`SHARD_HEADER`], the relay's 101 answers it
//! with the shard serving the channel, and a stream to a device whose
//! session runs on another shard is answered [`STATUS_OK_ELSEWHERE`] and
//! that shard's number (one byte) instead of [`STATUS_OK`]. The
//! api-server then opens a channel that lands on that shard and sends the
//! device's next streams there, so a request crosses no thread in the
//! relay. Either side without it speaks the one-byte protocol.
//!
//! When the relay starts draining it opens one stream of its own on each
//! channel: that stream carries nothing; its arrival is the notice that
//! connections through this node should not be reused.

use edge_core::request_id::RequestId;
use edge_core::DeviceId;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tunnel::preamble::TcpTarget;

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
/// This node is draining: no new stream; ask where the device is again.
pub const STATUS_DRAINING: u8 = 4;
/// The device's streams cannot name a target (a Go device, an older
/// agent): only its local service is reachable.
pub const STATUS_NOT_SUPPORTED: u8 = 5;

/// The relay opened the stream, as [`STATUS_OK`], and the device's session
/// runs on the relay shard the next byte names (1 to 255), not on the one
/// serving this channel. Sent only on a channel whose upgrade asked with
/// [`SHARD_HEADER`].
pub const STATUS_OK_ELSEWHERE: u8 = 6;

/// On the channel's upgrade request: the api-server reads
/// [`STATUS_OK_ELSEWHERE`] (the value is not read). On the relay's 101:
/// the shard serving the channel (1 and up); absent when the relay serves
/// on no shards or did not understand the ask.
pub const SHARD_HEADER: &str = "x-edge-relay-shard";

/// Length of a request line's head: a hyphenated UUID and `\n` (or the
/// space before a request id).
const REQUEST_LEN: usize = 37;
/// Longest request id on a request line.
const MAX_ID_LINE: usize = 64;
/// Longest rest of a request line after the device id: a request id and
/// a target.
const MAX_REST: usize = MAX_ID_LINE + 1 + TARGET_KEY.len() + tunnel::preamble::MAX_HOST + 8;
/// What a target on a request line starts with.
const TARGET_KEY: &str = "tcp=";

/// yamux settings of a channel: both ends ping every 5 s (a dead peer is
/// found within a ping timeout), many concurrent streams, 1 MiB windows
/// (8 MiB for up to 4 bulk streams at once, as on a device's session).
pub fn config() -> tokio_yamux::Config {
    tokio_yamux::Config {
        enable_keepalive: true,
        keepalive_interval: Duration::from_secs(5),
        connection_write_timeout: Duration::from_secs(10),
        max_stream_count: 8192,
        max_stream_window_size: tunnel::contract::MAX_RECEIVE_WINDOW,
        burst_stream_window_size: tunnel::contract::BURST_RECEIVE_WINDOW,
        burst_streams: tunnel::contract::BURST_STREAMS,
        ..tokio_yamux::Config::default()
    }
}

/// Client side: ask for `device` on a fresh channel stream, naming the
/// request being served (if any) so the relay logs under the same id.
pub async fn write_request<S: AsyncWrite + Unpin>(
    stream: &mut S,
    device: DeviceId,
    target: Option<&TcpTarget>,
) -> std::io::Result<()> {
    use std::fmt::Write as _;
    let mut line = String::with_capacity(REQUEST_LEN + MAX_REST);
    let _ = write!(line, "{device}");
    if let Some(id) = edge_core::request_id::current() {
        let _ = write!(line, " {id}");
    }
    if let Some(t) = target {
        let _ = write!(line, " {TARGET_KEY}{t}");
    }
    line.push('\n');
    stream.write_all(line.as_bytes()).await?;
    stream.flush().await
}

/// Client side: the relay's answer, and with [`STATUS_OK_ELSEWHERE`] the
/// shard it names (0 otherwise). A shard of 0 after it is a broken answer.
pub async fn read_answer<S: AsyncRead + Unpin>(stream: &mut S) -> std::io::Result<(u8, u8)> {
    let status = stream.read_u8().await?;
    if status != STATUS_OK_ELSEWHERE {
        return Ok((status, 0));
    }
    match stream.read_u8().await? {
        0 => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "relay named shard 0",
        )),
        shard => Ok((status, shard)),
    }
}

/// What a channel stream asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRequest {
    pub device: DeviceId,
    pub request_id: Option<RequestId>,
    /// A TCP service on the device (`None`: its local service).
    pub target: Option<TcpTarget>,
}

/// Relay side: the request of a channel stream (`None`: malformed).
pub async fn read_request<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> std::io::Result<Option<StreamRequest>> {
    let mut line = [0u8; REQUEST_LEN];
    stream.read_exact(&mut line).await?;
    let Some(device) = std::str::from_utf8(&line[..REQUEST_LEN - 1])
        .ok()
        .and_then(|s| s.parse().ok())
    else {
        return Ok(None);
    };
    let mut request = StreamRequest {
        device,
        request_id: None,
        target: None,
    };
    match line[REQUEST_LEN - 1] {
        b'\n' => return Ok(Some(request)),
        b' ' => {}
        _ => return Ok(None),
    }
    let mut rest = Vec::with_capacity(MAX_ID_LINE);
    loop {
        let b = stream.read_u8().await?;
        if b == b'\n' {
            break;
        }
        if rest.len() == MAX_REST {
            return Ok(None);
        }
        rest.push(b);
    }
    let Ok(rest) = std::str::from_utf8(&rest) else {
        return Ok(None);
    };
    for token in rest.split(' ') {
        if let Some(t) = token.strip_prefix(TARGET_KEY) {
            match t.parse() {
                Ok(t) if request.target.is_none() => request.target = Some(t),
                _ => return Ok(None),
            }
        } else if token.len() <= MAX_ID_LINE
            && request.request_id.is_none()
            && request.target.is_none()
        {
            match RequestId::parse(token) {
                Some(id) => request.request_id = Some(id),
                None => return Ok(None),
            }
        } else {
            return Ok(None);
        }
    }
    Ok(Some(request))
}

/// Relay side: answer `status`.
pub async fn write_status<S: AsyncWrite + Unpin>(
    stream: &mut S,
    status: u8,
) -> std::io::Result<()> {
    stream.write_all(&[status]).await?;
    stream.flush().await
}

/// Relay side: the stream is open, and the device's session runs on
/// `shard` (1 to 255), not on the channel's.
pub async fn write_elsewhere<S: AsyncWrite + Unpin>(
    stream: &mut S,
    shard: u8,
) -> std::io::Result<()> {
    stream.write_all(&[STATUS_OK_ELSEWHERE, shard]).await?;
    stream.flush().await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn requests_and_answers_round_trip_over_any_stream() {
        let (mut a, mut b) = tokio::io::duplex(256);
        let device = DeviceId::new();
        write_request(&mut a, device, None).await.unwrap();
        assert_eq!(
            read_request(&mut b).await.unwrap(),
            Some(StreamRequest {
                device,
                request_id: None,
                target: None,
            })
        );
        write_status(&mut b, STATUS_OFFLINE).await.unwrap();
        assert_eq!(read_answer(&mut a).await.unwrap(), (STATUS_OFFLINE, 0));
        a.write_all(&[b'x'; REQUEST_LEN]).await.unwrap();
        assert_eq!(read_request(&mut b).await.unwrap(), None);
    }

    #[tokio::test]
    async fn an_answer_names_the_shard_only_when_the_device_is_elsewhere() {
        let (mut a, mut b) = tokio::io::duplex(256);
        write_status(&mut b, STATUS_OK).await.unwrap();
        assert_eq!(read_answer(&mut a).await.unwrap(), (STATUS_OK, 0));
        // The stream's bytes follow the shard byte, and stay the stream's.
        write_elsewhere(&mut b, 3).await.unwrap();
        b.write_all(b"HTTP").await.unwrap();
        assert_eq!(read_answer(&mut a).await.unwrap(), (STATUS_OK_ELSEWHERE, 3));
        let mut rest = [0u8; 4];
        a.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"HTTP");
        b.write_all(&[STATUS_OK_ELSEWHERE, 0]).await.unwrap();
        assert!(read_answer(&mut a).await.is_err());
    }

    #[tokio::test]
    async fn the_request_id_being_served_travels_with_the_stream() {
        let (mut a, mut b) = tokio::io::duplex(256);
        let device = DeviceId::new();
        let id = RequestId::parse("req-42").unwrap();
        edge_core::request_id::scope(id.clone(), write_request(&mut a, device, None))
            .await
            .unwrap();
        assert_eq!(
            read_request(&mut b).await.unwrap(),
            Some(StreamRequest {
                device,
                request_id: Some(id.clone()),
                target: None,
            })
        );
        // A target travels after it, or alone.
        let target: TcpTarget = "127.0.0.1:22".parse().unwrap();
        edge_core::request_id::scope(id.clone(), write_request(&mut a, device, Some(&target)))
            .await
            .unwrap();
        assert_eq!(
            read_request(&mut b).await.unwrap(),
            Some(StreamRequest {
                device,
                request_id: Some(id),
                target: Some(target.clone()),
            })
        );
        write_request(&mut a, device, Some(&target)).await.unwrap();
        assert_eq!(
            read_request(&mut b).await.unwrap().and_then(|r| r.target),
            Some(target)
        );
        // Two targets, a bad one, or an id after the target: malformed.
        for bad in [
            format!("{device} tcp=a:1 tcp=b:2\n"),
            format!("{device} tcp=a\n"),
            format!("{device} tcp=a:1 req-1\n"),
        ] {
            a.write_all(bad.as_bytes()).await.unwrap();
            assert_eq!(read_request(&mut b).await.unwrap(), None, "{bad}");
        }
        // A malformed or overlong id is a malformed request.
        a.write_all(format!("{device} bad id\n").as_bytes())
            .await
            .unwrap();
        assert_eq!(read_request(&mut b).await.unwrap(), None);
        let mut b2 = b;
        a.write_all(format!("{device} {}\n", "x".repeat(80)).as_bytes())
            .await
            .unwrap();
        assert_eq!(read_request(&mut b2).await.unwrap(), None);
    }
}
