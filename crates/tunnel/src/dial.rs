//! Device side of connecting: dial the relay's tunnel endpoint with the
//! bearer credential in a header (never the URL) and report the relay's
//! refusal status, so the agent can log why it could not connect.

use edge_core::DeviceToken;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{header, HeaderValue};
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A dialled tunnel.
pub type DialedWs = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Why dialling failed.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("invalid relay URL: {0}")]
    BadUrl(String),
    #[error("relay refused the tunnel with HTTP {status}{}", retry_after.map(|s| format!(" (retry after {s}s)")).unwrap_or_default())]
    Refused {
        status: u16,
        retry_after: Option<u64>,
    },
    #[error("cannot reach relay: {0}")]
    Network(String),
}

/// Dial `url` (`ws://` or `wss://host:port/tunnel`) presenting `token`;
/// `tls` is the client config for `wss://` (`None`: web PKI roots only).
pub async fn dial(
    url: &str,
    token: &DeviceToken,
    user_agent: &str,
    config: crate::WebSocketConfig,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
) -> Result<DialedWs, DialError> {
    dial_offering(url, token, user_agent, config, tls, None)
        .await
        .map(|(ws, _)| ws)
}

/// [`dial`], offering `capabilities` (`Edge-Capabilities`, ADR 026);
/// returns the relay's answer to the offer (`None`: it named none).
pub async fn dial_offering(
    url: &str,
    token: &DeviceToken,
    user_agent: &str,
    config: crate::WebSocketConfig,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    capabilities: Option<&str>,
) -> Result<(DialedWs, Option<String>), DialError> {
    let req = request(url, token, user_agent, capabilities)?;
    // Only `wss://` needs a TLS client; building the default one (web PKI
    // roots) for a plain `ws://` dial was wasted work on every dial.
    let connector = if req.uri().scheme_str() == Some("wss") {
        tls.or_else(|| edge_tls::client_config(None).ok())
            .map(tokio_tungstenite::Connector::Rustls)
    } else {
        None
    };
    answer(
        tokio_tungstenite::connect_async_tls_with_config(req, Some(config), true, connector).await,
    )
}

/// [`dial`] a `ws://` URL from the source address `local` (any port): a
/// load generator spreads its tunnels over several loopback addresses
/// (127.0.0.0/8), so that no one address runs short of ports. The kernel
/// picks a connection's port by scanning one address's range, which grows
/// slow as the range fills.
pub async fn dial_from(
    url: &str,
    token: &DeviceToken,
    user_agent: &str,
    config: crate::WebSocketConfig,
    local: std::net::IpAddr,
) -> Result<DialedWs, DialError> {
    let req = request(url, token, user_agent, None)?;
    if req.uri().scheme_str() != Some("ws") {
        return Err(DialError::BadUrl(
            "a dial from a chosen address is for ws:// only".into(),
        ));
    }
    let host = req
        .uri()
        .host()
        .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_owned())
        .ok_or_else(|| DialError::BadUrl("the relay URL has no host".into()))?;
    let port = req.uri().port_u16().unwrap_or(80);
    let network = |e: std::io::Error| DialError::Network(e.to_string());
    let remote = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(network)?
        .find(|a| a.is_ipv4() == local.is_ipv4())
        .ok_or_else(|| DialError::Network(format!("{host} has no address like {local}")))?;
    let socket = if local.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(network)?;
    socket
        .bind(std::net::SocketAddr::new(local, 0))
        .map_err(network)?;
    let tcp = socket.connect(remote).await.map_err(network)?;
    let _ = tcp.set_nodelay(true);
    answer(
        tokio_tungstenite::client_async_with_config(req, MaybeTlsStream::Plain(tcp), Some(config))
            .await,
    )
    .map(|(ws, _)| ws)
}

/// The upgrade request: `token` in the Authorization header, never the URL.
fn request(
    url: &str,
    token: &DeviceToken,
    user_agent: &str,
    capabilities: Option<&str>,
) -> Result<tokio_tungstenite::tungstenite::handshake::client::Request, DialError> {
    let mut req = url
        .into_client_request()
        .map_err(|e| DialError::BadUrl(e.to_string()))?;
    if req.uri().query().is_some() {
        return Err(DialError::BadUrl(
            "the relay URL must not carry a query string".into(),
        ));
    }
    let bearer = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
        .map_err(|_| DialError::BadUrl("credential is not a valid header value".into()))?;
    req.headers_mut().insert(header::AUTHORIZATION, bearer);
    if let Ok(ua) = HeaderValue::from_str(user_agent) {
        req.headers_mut().insert(header::USER_AGENT, ua);
    }
    if let Some(caps) = capabilities.and_then(|c| HeaderValue::from_str(c).ok()) {
        req.headers_mut()
            .insert(crate::preamble::CAPABILITIES_HEADER, caps);
    }
    Ok(req)
}

/// The WebSocket, with the relay's answer to a capability offer, or why
/// the relay refused.
fn answer<S>(
    result: Result<
        (
            WebSocketStream<S>,
            tokio_tungstenite::tungstenite::handshake::client::Response,
        ),
        WsError,
    >,
) -> Result<(WebSocketStream<S>, Option<String>), DialError> {
    match result {
        Ok((ws, resp)) => {
            let accepted = resp
                .headers()
                .get(crate::preamble::CAPABILITIES_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            Ok((ws, accepted))
        }
        Err(WsError::Http(resp)) => Err(DialError::Refused {
            status: resp.status().as_u16(),
            retry_after: resp
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|s| s.parse().ok()),
        }),
        Err(WsError::Url(e)) => Err(DialError::BadUrl(e.to_string())),
        Err(other) => Err(DialError::Network(other.to_string())),
    }
}
