//! Server side of an RFC 6455 upgrade on a hyper/axum request: validate the
//! request head, answer `101` with the accept key, and turn the upgraded
//! connection into a `WebSocketStream` (reading through [`ReadAhead`]) once
//! hyper hands it over.

use crate::read_ahead::ReadAhead;
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

/// The upgraded connection type handed to WebSocket code.
pub type UpgradedWs = WebSocketStream<ReadAhead<TokioIo<hyper::upgrade::Upgraded>>>;

/// Why a request is not a valid WebSocket upgrade.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UpgradeError {
    #[error("not a WebSocket upgrade request")]
    NotUpgrade,
    #[error("unsupported WebSocket version (13 required)")]
    BadVersion,
    #[error("missing Sec-WebSocket-Key")]
    MissingKey,
}

fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

/// Check the head of a WebSocket upgrade request and return the
/// `Sec-WebSocket-Accept` value to answer with.
pub fn accept_key(headers: &HeaderMap) -> Result<String, UpgradeError> {
    if !header_has_token(headers, header::CONNECTION, "upgrade")
        || !header_has_token(headers, header::UPGRADE, "websocket")
    {
        return Err(UpgradeError::NotUpgrade);
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(|v| v.as_bytes())
        != Some(b"13")
    {
        return Err(UpgradeError::BadVersion);
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or(UpgradeError::MissingKey)?;
    Ok(derive_accept_key(key.as_bytes()))
}

/// The `101 Switching Protocols` response for an accepted upgrade.
pub fn switching_protocols<B: Default>(accept: &str) -> Response<B> {
    let mut res = Response::new(B::default());
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = res.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    res
}

/// Wait for hyper to hand over the upgraded connection and wrap it.
pub async fn websocket(
    on_upgrade: OnUpgrade,
    config: WebSocketConfig,
) -> Result<UpgradedWs, hyper::Error> {
    let upgraded = on_upgrade.await?;
    let io = ReadAhead::new(TokioIo::new(upgraded));
    Ok(WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await)
}

/// WebSocket settings for the relay side of a tunnel: the contract's 1 MiB
/// message cap and small eager buffers so idle tunnels stay cheap.
pub fn relay_ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_message_size(Some(crate::contract::MAX_MESSAGE_SIZE))
        .max_frame_size(Some(crate::contract::MAX_MESSAGE_SIZE))
}

/// WebSocket settings for the device side of a tunnel: 16 KiB reads.
/// tungstenite zero-fills its read buffer up to the read size before each
/// read, and its default (128 KiB) made that fill the largest user-space
/// cost of a small proxied request in the agent.
pub fn agent_ws_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(16 * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upgrade_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        h.insert(
            header::SEC_WEBSOCKET_KEY,
            HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
        );
        h
    }

    #[test]
    fn accepts_rfc_example_key() {
        // RFC 6455 §1.3 worked example.
        assert_eq!(
            accept_key(&upgrade_headers()).as_deref(),
            Ok("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        );
    }

    #[test]
    fn rejects_plain_requests_and_bad_versions() {
        assert_eq!(accept_key(&HeaderMap::new()), Err(UpgradeError::NotUpgrade));
        let mut h = upgrade_headers();
        h.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("8"));
        assert_eq!(accept_key(&h), Err(UpgradeError::BadVersion));
        let mut h = upgrade_headers();
        h.remove(header::SEC_WEBSOCKET_KEY);
        assert_eq!(accept_key(&h), Err(UpgradeError::MissingKey));
    }
}
