//! `ANY /api/devices/{id}/proxy/{*path}`: reverse-proxies the caller's request
//! to their device through a raw relay stream. Bodies stream both ways (no
//! buffering), WebSocket upgrades pass through, hop-by-hop headers are
//! dropped, `X-Forwarded-*` is set, and the caller's `Cookie` and
//! `Authorization` never reach the box. Getting the stream and the device's
//! first byte are both bounded in time.

use crate::error::ApiError;
use crate::session::CurrentUser;
use crate::state::AppState;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::response::Response;
use edge_core::DeviceId;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{StatusCode, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;

/// Headers that describe one hop and are never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Caller credentials and headers the proxy sets itself.
const NOT_FORWARDED: &[&str] = &[
    "cookie",
    "authorization",
    "host",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-prefix",
    "x-csrf",
];

pub async fn forward_root(
    user: CurrentUser,
    State(state): State<AppState>,
    Path(id): Path<String>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    req: Request,
) -> Result<Response, ApiError> {
    forward(user, state, id, remote, req).await
}

pub async fn forward_path(
    user: CurrentUser,
    State(state): State<AppState>,
    Path((id, _path)): Path<(String, String)>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    req: Request,
) -> Result<Response, ApiError> {
    forward(user, state, id, remote, req).await
}

/// The `Upgrade` value when the request asks for a protocol upgrade.
fn requested_upgrade(headers: &HeaderMap) -> Option<HeaderValue> {
    let wants = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    wants
        .then(|| headers.get(header::UPGRADE).cloned())
        .flatten()
}

/// Copy end-to-end headers: drop hop-by-hop ones and those named in
/// `Connection`, plus anything in `extra`.
fn end_to_end(src: &HeaderMap, extra: &[&str]) -> HeaderMap {
    let listed: Vec<String> = src
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .collect();
    let mut out = HeaderMap::with_capacity(src.len());
    for (name, value) in src {
        let n = name.as_str();
        if HOP_BY_HOP.contains(&n) || extra.contains(&n) || listed.iter().any(|l| l == n) {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out
}

async fn forward(
    user: CurrentUser,
    state: AppState,
    raw_id: String,
    remote: SocketAddr,
    mut req: Request,
) -> Result<Response, ApiError> {
    let device: DeviceId = raw_id.parse().map_err(|_| ApiError::NotFound)?;
    state
        .store
        .device(user.id, device)
        .await?
        .ok_or(ApiError::NotFound)?;

    // The raw (still percent-encoded) path below the proxy prefix.
    let prefix = format!("/api/devices/{raw_id}/proxy");
    let rest = req
        .uri()
        .path()
        .strip_prefix(&prefix)
        .ok_or(ApiError::NotFound)?;
    let target = match req.uri().query() {
        Some(q) => format!("{rest}?{q}"),
        None => rest.to_owned(),
    };

    let upgrade = requested_upgrade(req.headers());
    let client_upgrade = if upgrade.is_some() {
        req.extensions_mut().remove::<OnUpgrade>()
    } else {
        None
    };
    let (parts, body) = req.into_parts();

    let mut headers = end_to_end(&parts.headers, NOT_FORWARDED);
    headers.insert(header::HOST, HeaderValue::from_static("localhost"));
    if let Ok(v) = HeaderValue::from_str(&remote.ip().to_string()) {
        headers.insert(HeaderName::from_static("x-forwarded-for"), v);
    }
    if let Ok(v) = HeaderValue::from_str(&state.settings.public_scheme) {
        headers.insert(HeaderName::from_static("x-forwarded-proto"), v);
    }
    if let Some(host) = parts.headers.get(header::HOST) {
        headers.insert(HeaderName::from_static("x-forwarded-host"), host.clone());
    }
    if let Ok(v) = HeaderValue::from_str(&prefix) {
        headers.insert(HeaderName::from_static("x-forwarded-prefix"), v);
    }
    if let Some(proto) = &upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, proto.clone());
    }

    let mut outbound = http::Request::builder()
        .method(parts.method.clone())
        .uri(target)
        .version(Version::HTTP_11)
        .body(if upgrade.is_some() {
            Body::empty()
        } else {
            body
        })
        .map_err(|_| ApiError::BadRequest("cannot forward this request".into()))?;
    *outbound.headers_mut() = headers;

    let stream = tokio::time::timeout(
        state.settings.proxy_connect_timeout,
        state.directory.open_stream(device),
    )
    .await
    .map_err(|_| ApiError::RelayUnavailable)??;

    state
        .store
        .audit(
            user.id,
            "remote_access_opened",
            Some(&device.to_string()),
            serde_json::json!({ "method": parts.method.as_str() }),
        )
        .await?;
    let stream = Audited {
        inner: stream,
        to_device: 0,
        from_device: 0,
        started: std::time::Instant::now(),
        store: state.store.clone(),
        user: user.id,
        device,
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|_| ApiError::DeviceUnreachable)?;
    tokio::spawn(async move {
        if let Err(err) = conn.with_upgrades().await {
            tracing::debug!(error = %err, "device connection ended with error");
        }
    });

    let mut response = tokio::time::timeout(
        state.settings.proxy_first_byte_timeout,
        sender.send_request(outbound),
    )
    .await
    .map_err(|_| ApiError::DeviceTimeout)?
    .map_err(|err| {
        tracing::debug!(%device, error = %err, "device request failed");
        ApiError::DeviceUnreachable
    })?;

    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            return Err(ApiError::DeviceUnreachable);
        };
        let device_upgrade = hyper::upgrade::on(&mut response);
        tokio::spawn(async move {
            match tokio::try_join!(client_upgrade, device_upgrade) {
                Ok((client, device_io)) => {
                    let mut client = TokioIo::new(client);
                    let mut device_io = TokioIo::new(device_io);
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut device_io).await;
                }
                Err(err) => tracing::debug!(error = %err, "upgrade through proxy failed"),
            }
        });
        let mut res = Response::new(Body::empty());
        *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        *res.headers_mut() = response.headers().clone();
        return Ok(res);
    }

    let (parts, body) = response.into_parts();
    let mut res = Response::new(Body::new(body));
    *res.status_mut() = parts.status;
    *res.headers_mut() = end_to_end(&parts.headers, &[]);
    Ok(res)
}

/// The byte pipe of one remote-access session: counts bytes each way and
/// records `remote_access_closed` when the session ends.
struct Audited {
    inner: directory::BoxStream,
    to_device: u64,
    from_device: u64,
    started: std::time::Instant,
    store: store::Store,
    user: edge_core::UserId,
    device: DeviceId,
}

impl tokio::io::AsyncRead for Audited {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let res = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        self.from_device += (buf.filled().len() - before) as u64;
        res
    }
}

impl tokio::io::AsyncWrite for Audited {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let res = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        if let std::task::Poll::Ready(Ok(n)) = &res {
            self.to_device += *n as u64;
        }
        res
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl Drop for Audited {
    fn drop(&mut self) {
        let store = self.store.clone();
        let (user, device) = (self.user, self.device.to_string());
        let detail = serde_json::json!({
            "bytes_to_device": self.to_device,
            "bytes_from_device": self.from_device,
            "duration_ms": self.started.elapsed().as_millis() as u64,
        });
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(err) = store.audit(user, "remote_access_closed", Some(&device), detail).await {
                    tracing::warn!(error = %err, "could not record the end of a remote-access session");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_listed_headers_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret-hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::COOKIE, HeaderValue::from_static("a=b"));
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        let out = end_to_end(&h, NOT_FORWARDED);
        assert_eq!(out.len(), 1);
        assert!(out.contains_key(header::ACCEPT));
    }

    #[test]
    fn upgrade_needs_both_headers() {
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(requested_upgrade(&h).is_none());
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert_eq!(
            requested_upgrade(&h),
            Some(HeaderValue::from_static("websocket"))
        );
    }
}
