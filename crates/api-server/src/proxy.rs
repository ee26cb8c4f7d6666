//! Reverse-proxying a caller's request to their device through a raw relay
//! stream, for both doors: a device's own origin (where browsers get box
//! content, see `device_origin`) and `ANY /api/devices/{id}/proxy/{*path}`
//! on the console origin (for programs only: browsers are refused there and
//! every answer is inert if rendered). Bodies stream both ways, WebSocket
//! upgrades pass through and are cut when the caller's access ends,
//! hop-by-hop headers are dropped, `X-Forwarded-*` is set, our cookies and
//! the caller's `Authorization` never reach the box, and box headers that
//! could act beyond the device's origin never reach the browser.

use crate::error::ApiError;
use crate::session::{check_csrf, live_session, presented_session_hash, session_and_device};
use crate::state::AppState;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::response::Response;
use edge_core::error_body::ErrorBody;
use edge_core::{DeviceId, UserId};
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

/// Caller credentials and headers the proxy sets itself. `cookie` is
/// rebuilt (without ours) on device origins and dropped on the console.
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

/// Box response headers that act beyond the device's origin or outlive the
/// user's access: wiping or planting site-wide state, widening a service
/// worker's scope, pinning transport policy for the host, moving the origin
/// to another server, persistent reporting, login status, and credentialed
/// CORS (which would let another device's origin read this one).
const BOX_HEADERS_DROPPED: &[&str] = &[
    "clear-site-data",
    "service-worker-allowed",
    "strict-transport-security",
    "alt-svc",
    "nel",
    "report-to",
    "set-login",
    "access-control-allow-credentials",
];

/// Which door a request came through.
#[derive(Debug, Clone)]
pub enum Door {
    /// `/api/devices/{id}/proxy/...` on the console origin.
    ConsoleApi { prefix: String },
    /// The device's own origin; `host` is what the browser asked for.
    DeviceOrigin { host: Option<HeaderValue> },
}

/// Who may reach which device, re-checked for as long as a connection lives.
#[derive(Debug, Clone)]
pub struct Access {
    pub user: UserId,
    pub session_hash: String,
    pub device: DeviceId,
}

#[utoipa::path(
    method(get, post, put, patch, delete),
    path = "/api/devices/{id}/proxy/",
    tag = "proxy",
    params(("id" = String, Path, description = "device id")),
    security(("session" = [], "csrf" = [])),
    responses(
        (status = "default", description = "the box's own answer, passed through"),
        (status = 401, description = "no valid session", body = ErrorBody),
        (status = 403, description = "cross-site request (missing `X-CSRF: 1` or foreign `Origin`)", body = ErrorBody),
        (status = 404, description = "no such resource of the caller's", body = ErrorBody),
        (status = 502, description = "the relay or the box cannot be reached", body = ErrorBody),
        (status = 503, description = "the device is offline, or the directory is unavailable", body = ErrorBody),
        (status = 504, description = "the box did not answer in time", body = ErrorBody)
    )
)]
pub async fn forward_root(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    req: Request,
) -> Result<Response, ApiError> {
    console_forward(state, id, remote, req).await
}

#[utoipa::path(
    method(get, post, put, patch, delete),
    path = "/api/devices/{id}/proxy/{path}",
    tag = "proxy",
    params(("id" = String, Path, description = "device id"), ("path" = String, Path, description = "path on the box")),
    security(("session" = [], "csrf" = [])),
    responses(
        (status = "default", description = "the box's own answer, passed through"),
        (status = 401, description = "no valid session", body = ErrorBody),
        (status = 403, description = "cross-site request (missing `X-CSRF: 1` or foreign `Origin`)", body = ErrorBody),
        (status = 404, description = "no such resource of the caller's", body = ErrorBody),
        (status = 502, description = "the relay or the box cannot be reached", body = ErrorBody),
        (status = 503, description = "the device is offline, or the directory is unavailable", body = ErrorBody),
        (status = 504, description = "the box did not answer in time", body = ErrorBody)
    )
)]
pub async fn forward_path(
    State(state): State<AppState>,
    Path((id, _path)): Path<(String, String)>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    req: Request,
) -> Result<Response, ApiError> {
    console_forward(state, id, remote, req).await
}

/// The console-origin door: programs only, never browsers. The session,
/// the CSRF rule and ownership are checked here with one store read (not
/// through `CurrentUser`, which would cost a second).
async fn console_forward(
    state: AppState,
    raw_id: String,
    remote: SocketAddr,
    req: Request,
) -> Result<Response, ApiError> {
    let hash = presented_session_hash(&state, req.headers()).ok_or(ApiError::Unauthenticated)?;
    let device: Option<DeviceId> = raw_id.parse().ok();
    let (user, owns) = match device {
        Some(device) => session_and_device(&state, &hash, device).await?,
        None => (live_session(&state, &hash).await?, false),
    };
    check_csrf(req.method(), req.headers(), &state.settings.public_origin)?;
    let device = device.filter(|_| owns).ok_or(ApiError::NotFound)?;
    if crate::hygiene::from_browser(req.headers()) {
        return Err(ApiError::UseDeviceOrigin);
    }
    let access = Access {
        user,
        session_hash: hash,
        device,
    };
    let door = Door::ConsoleApi {
        prefix: format!("/api/devices/{raw_id}/proxy"),
    };
    forward(&state, access, remote, req, door).await
}

/// The device `raw_id` when the caller owns it; 404 otherwise.
pub async fn authorize(state: &AppState, user: UserId, raw_id: &str) -> Result<DeviceId, ApiError> {
    let device: DeviceId = raw_id.parse().map_err(|_| ApiError::NotFound)?;
    state
        .store
        .device(user, device)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(device)
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

/// Cookie names that are ours (or could pass for ours): the platform's
/// `edge_` names, with or without a `__Host-`/`__Secure-` prefix, and any
/// prefixed name at all. Compared without regard to case.
fn is_our_cookie_name(name: &str) -> bool {
    let n = name.trim().to_ascii_lowercase();
    n.starts_with("edge_") || n.starts_with("__host-") || n.starts_with("__secure-")
}

/// The request's cookies without ours: what a box on its own origin may see.
fn box_cookies(headers: &HeaderMap) -> Option<HeaderValue> {
    let kept: Vec<&str> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|kv| !kv.is_empty())
        .filter(|kv| !is_our_cookie_name(kv.split('=').next().unwrap_or(kv)))
        .collect();
    (!kept.is_empty())
        .then(|| HeaderValue::from_str(&kept.join("; ")).ok())
        .flatten()
}

/// Whether a box's `Set-Cookie` may reach the browser on its own origin:
/// never one of our names or a prefixed name, never one with a `Domain`
/// (which would reach beyond this device's host).
fn box_cookie_allowed(set_cookie: &HeaderValue) -> bool {
    let Ok(v) = set_cookie.to_str() else {
        return false;
    };
    let mut parts = v.split(';');
    let Some((name, _)) = parts.next().and_then(|kv| kv.split_once('=')) else {
        return false;
    };
    !is_our_cookie_name(name)
        && !parts.any(|attr| {
            attr.split('=')
                .next()
                .is_some_and(|a| a.trim().eq_ignore_ascii_case("domain"))
        })
}

/// The box's response headers as the browser may see them.
pub fn box_response_headers(src: &HeaderMap, door: &Door) -> HeaderMap {
    let mut out = end_to_end(src, BOX_HEADERS_DROPPED);
    let cookies: Vec<HeaderValue> = out.get_all(header::SET_COOKIE).iter().cloned().collect();
    out.remove(header::SET_COOKIE);
    if matches!(door, Door::DeviceOrigin { .. }) {
        for c in cookies.into_iter().filter(box_cookie_allowed) {
            out.append(header::SET_COOKIE, c);
        }
    }
    if !out.contains_key(header::X_CONTENT_TYPE_OPTIONS) {
        out.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
    }
    if !out.contains_key(header::CACHE_CONTROL) {
        out.insert(header::CACHE_CONTROL, HeaderValue::from_static("private"));
    }
    if matches!(door, Door::ConsoleApi { .. }) {
        // Rendered by mistake, it would run on the console's origin: make
        // it an opaque, script-less document and a download.
        out.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("sandbox; default-src 'none'"),
        );
        out.insert(
            header::CONTENT_DISPOSITION,
            HeaderValue::from_static("attachment"),
        );
    }
    out
}

/// The path and query the box sees.
fn target_path(req: &Request, door: &Door) -> Result<String, ApiError> {
    let path = req.uri().path();
    let rest = match door {
        Door::ConsoleApi { prefix } => path
            .strip_prefix(prefix.as_str())
            .ok_or(ApiError::NotFound)?,
        Door::DeviceOrigin { .. } => path,
    };
    Ok(match req.uri().query() {
        Some(q) => format!("{rest}?{q}"),
        None => rest.to_owned(),
    })
}

/// The caller's headers as a box may see them, before the proxy adds its
/// own: end-to-end ones only (no hop-by-hop, nothing `Connection` lists,
/// no caller credentials), and on a device origin the caller's cookies
/// without ours; with the upgrade the caller asked for, if any.
pub fn box_request_headers(
    src: &HeaderMap,
    device_origin: bool,
) -> (HeaderMap, Option<HeaderValue>) {
    let mut headers = end_to_end(src, NOT_FORWARDED);
    if device_origin {
        if let Some(cookies) = box_cookies(src) {
            headers.insert(header::COOKIE, cookies);
        }
    }
    (headers, requested_upgrade(src))
}

/// The request as the box receives it.
fn outbound_request(
    state: &AppState,
    parts: &http::request::Parts,
    body: Body,
    target: String,
    remote: SocketAddr,
    door: &Door,
    upgrade: Option<&HeaderValue>,
) -> Result<http::Request<Body>, ApiError> {
    let device_origin = matches!(door, Door::DeviceOrigin { .. });
    let (mut headers, _) = box_request_headers(&parts.headers, device_origin);
    headers.insert(header::HOST, HeaderValue::from_static("localhost"));
    let client = parts
        .extensions
        .get::<edge_core::client_addr::ClientIp>()
        .map_or(remote.ip(), |c| c.0);
    if let Ok(v) = HeaderValue::from_str(&client.to_string()) {
        headers.insert(HeaderName::from_static("x-forwarded-for"), v);
    }
    let scheme = match door {
        Door::ConsoleApi { .. } => state.settings.public_scheme.as_str(),
        Door::DeviceOrigin { .. } if state.settings.device_origins.is_https() => "https",
        Door::DeviceOrigin { .. } => "http",
    };
    headers.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static(if scheme == "https" { "https" } else { "http" }),
    );
    match door {
        Door::ConsoleApi { prefix } => {
            if let Some(host) = parts.headers.get(header::HOST) {
                headers.insert(HeaderName::from_static("x-forwarded-host"), host.clone());
            }
            if let Ok(v) = HeaderValue::from_str(prefix) {
                headers.insert(HeaderName::from_static("x-forwarded-prefix"), v);
            }
        }
        Door::DeviceOrigin { host } => {
            if let Some(host) = host {
                headers.insert(HeaderName::from_static("x-forwarded-host"), host.clone());
            }
        }
    }
    if let Some(proto) = upgrade {
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
    Ok(outbound)
}

/// Forward one request through `door` for `access`.
pub async fn forward(
    state: &AppState,
    access: Access,
    remote: SocketAddr,
    req: Request,
    door: Door,
) -> Result<Response, ApiError> {
    let started = std::time::Instant::now();
    let result = forward_counted(state, access, remote, req, door).await;
    state.metrics.proxied(&result, started);
    result
}

async fn forward_counted(
    state: &AppState,
    access: Access,
    remote: SocketAddr,
    mut req: Request,
    door: Door,
) -> Result<Response, ApiError> {
    // Remote access that could not be recorded is not given.
    if state.audit.is_failing() {
        return Err(ApiError::AuditUnavailable);
    }
    let target = target_path(&req, &door)?;
    let upgrade = requested_upgrade(req.headers());
    let client_upgrade = if upgrade.is_some() {
        req.extensions_mut().remove::<OnUpgrade>()
    } else {
        None
    };
    let (parts, body) = req.into_parts();
    let outbound = outbound_request(state, &parts, body, target, remote, &door, upgrade.as_ref())?;
    let response = tokio::time::timeout(
        state.settings.proxy_first_byte_timeout,
        state.boxes.send(access.user, access.device, outbound),
    )
    .await
    .map_err(|_| ApiError::DeviceTimeout)??;
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let client_upgrade = client_upgrade.ok_or(ApiError::DeviceUnreachable)?;
        return Ok(relay_upgrade(
            state,
            access,
            client_upgrade,
            response,
            &door,
        ));
    }
    let (parts, body) = response.into_parts();
    let mut res = Response::new(Body::new(body));
    *res.status_mut() = parts.status;
    *res.headers_mut() = box_response_headers(&parts.headers, &door);
    Ok(res)
}

/// Answer 101 and splice the two upgraded connections, until either side
/// ends or the caller's access does (checked every
/// `device_access_recheck`).
fn relay_upgrade(
    state: &AppState,
    access: Access,
    client_upgrade: OnUpgrade,
    mut response: http::Response<hyper::body::Incoming>,
    door: &Door,
) -> Response {
    let device_upgrade = hyper::upgrade::on(&mut response);
    let guard_state = state.clone();
    tokio::spawn(async move {
        let (client, device_io) = match tokio::try_join!(client_upgrade, device_upgrade) {
            Ok(pair) => pair,
            Err(err) => {
                tracing::debug!(error = %err, "upgrade through proxy failed");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut device_io = TokioIo::new(device_io);
        tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut client, &mut device_io) => {}
            () = access_ends(&guard_state, &access) => {
                tracing::info!(device = %access.device, "access ended; closing the upgraded connection");
            }
        }
    });
    let mut res = Response::new(Body::empty());
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let mut headers = response.headers().clone();
    for name in BOX_HEADERS_DROPPED {
        headers.remove(*name);
    }
    if matches!(door, Door::ConsoleApi { .. }) {
        headers.remove(header::SET_COOKIE);
    }
    *res.headers_mut() = headers;
    res
}

/// Resolves when `access` no longer holds: the user's session ended (logout,
/// "end this session", back-channel logout, idle or absolute expiry) or the
/// device is no longer theirs. Checked every `device_access_recheck` and at
/// once when this replica ends a session. A store that cannot answer is not an answer:
/// the connection stays until the store says no.
pub async fn access_ends(state: &AppState, access: &Access) {
    let mut tick = tokio::time::interval(state.settings.device_access_recheck);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut changes = state.access_changes.subscribe();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            Ok(()) = changes.changed() => {}
        }
        match still_allowed(state, access).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(err) => tracing::warn!(error = %err, "cannot re-check device access"),
        }
    }
}

async fn still_allowed(state: &AppState, access: &Access) -> Result<bool, ApiError> {
    Ok(owner_behind(state, &access.session_hash, access.device).await? == Some(access.user))
}

/// The user behind the session stored under `session_hash`, when that
/// session is live and the user owns `device`; `None` when either is not
/// so. Store failures are errors, not answers. The one check behind
/// entering a device origin, every request there, and every open
/// connection's re-check.
pub async fn owner_behind(
    state: &AppState,
    session_hash: &str,
    device: DeviceId,
) -> Result<Option<UserId>, ApiError> {
    match session_and_device(state, session_hash, device).await {
        Ok((user, owns)) => Ok(owns.then_some(user)),
        Err(ApiError::Unauthenticated) => Ok(None),
        Err(err) => Err(err),
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

    fn device_door() -> Door {
        Door::DeviceOrigin { host: None }
    }

    #[test]
    fn box_cookies_that_could_shadow_ours_or_reach_beyond_the_host_are_dropped() {
        let mut h = HeaderMap::new();
        for c in [
            "theme=dark; Path=/",
            "__Host-edge_session=evil; Path=/; Secure",
            "edge_session=evil; Path=/",
            "EDGE_DEVICE=evil",
            "__Secure-x=1; Secure",
            "wide=1; Path=/; domain=localhost",
            "wide2=1; Domain =.example.net",
            "box_session=abc; HttpOnly; SameSite=Lax",
        ] {
            h.append(header::SET_COOKIE, HeaderValue::from_static(c));
        }
        let out = box_response_headers(&h, &device_door());
        let kept: Vec<_> = out
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().split('=').next().unwrap().to_owned())
            .collect();
        assert_eq!(kept, ["theme", "box_session"]);
        let console = box_response_headers(
            &h,
            &Door::ConsoleApi {
                prefix: "/p".into(),
            },
        );
        assert!(!console.contains_key(header::SET_COOKIE));
    }

    #[test]
    fn site_wide_headers_are_dropped_and_safe_defaults_added() {
        let mut h = HeaderMap::new();
        for (n, v) in [
            ("clear-site-data", "\"*\""),
            ("service-worker-allowed", "/"),
            ("strict-transport-security", "max-age=1"),
            ("alt-svc", "h2=\":443\""),
            ("nel", "{}"),
            ("report-to", "{}"),
            ("access-control-allow-credentials", "true"),
            ("content-type", "text/html"),
        ] {
            h.insert(HeaderName::from_static(n), HeaderValue::from_static(v));
        }
        let out = box_response_headers(&h, &device_door());
        let names: Vec<&str> = out.keys().map(|k| k.as_str()).collect();
        assert_eq!(
            names,
            ["content-type", "x-content-type-options", "cache-control"]
        );
        assert_eq!(out[header::CACHE_CONTROL], "private");
        // The box's own choices are kept.
        let mut own = HeaderMap::new();
        own.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        assert_eq!(
            box_response_headers(&own, &device_door())[header::CACHE_CONTROL],
            "no-store"
        );
        let console = box_response_headers(
            &own,
            &Door::ConsoleApi {
                prefix: "/p".into(),
            },
        );
        assert_eq!(
            console[header::CONTENT_SECURITY_POLICY],
            "sandbox; default-src 'none'"
        );
        assert_eq!(console[header::CONTENT_DISPOSITION], "attachment");
    }

    #[test]
    fn the_box_sees_its_own_cookies_but_never_ours() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("theme=dark; edge_device=sig; __Host-edge_device=x"),
        );
        h.append(header::COOKIE, HeaderValue::from_static("box=1"));
        assert_eq!(box_cookies(&h).unwrap(), "theme=dark; box=1");
        let mut only_ours = HeaderMap::new();
        only_ours.insert(header::COOKIE, HeaderValue::from_static("edge_device=sig"));
        assert!(box_cookies(&only_ours).is_none());
    }
}
