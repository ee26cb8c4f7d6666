//! Reverse-proxying a caller's request to their device through a raw relay
//! stream, for both doors: a device's own origin (where browsers get box
//! content, see `device_origin`) and `ANY /api/devices/{id}/proxy/{*path}`
//! on the console origin (for programs only: browsers are refused there and
//! every answer is inert if rendered). Bodies stream both ways, WebSocket
//! upgrades pass through and are cut when the caller's access ends,
//! `X-Forwarded-*` is set, and the header rules of `proxy_rules` apply both
//! ways (hop-by-hop headers dropped, our cookies and the caller's
//! `Authorization` kept from the box, box headers that could act beyond the
//! device's origin kept from the browser).

use crate::box_wire;
use crate::error::ApiError;
use crate::session::{
    check_csrf, live_session_of, presented_session, session_and_device, Check, Reach,
};
use crate::state::AppState;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::response::Response;
use edge_core::error_body::ErrorBody;
use edge_core::fields::{Fields, RawFields};
use edge_core::{DeviceId, UserId};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{StatusCode, Version};
use hyper::body::Body as _;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use std::net::{IpAddr, SocketAddr};

use proxy_rules::requested_upgrade;
pub use proxy_rules::{box_request_headers, box_response_headers, Door};

/// Who may reach which device, re-checked for as long as a connection lives.
#[derive(Debug, Clone)]
pub struct Access {
    /// The owner, and the service account acting for them if one is.
    pub actor: store::Actor,
    pub session_hash: String,
    pub device: DeviceId,
}

/// What the proxy answers itself instead of the box, besides
/// [`ChangeErrors`](crate::error::ChangeErrors).
#[derive(utoipa::IntoResponses)]
pub enum ProxyErrors {
    #[response(status = 404, description = "no such resource of the caller's")]
    NotFound(ErrorBody),
    #[response(status = 502, description = "the relay or the box cannot be reached")]
    Unreachable(ErrorBody),
    #[response(
        status = 503,
        description = "the device is offline, or the directory is unavailable"
    )]
    Offline(ErrorBody),
    #[response(status = 504, description = "the box did not answer in time")]
    Timeout(ErrorBody),
}

#[utoipa::path(
    method(get, post, put, patch, delete),
    path = "/api/devices/{id}/proxy/",
    tag = "proxy",
    params(("id" = String, Path, description = "device id")),
    security(("session" = [], "csrf" = [])),
    responses(
        (status = "default", description = "the box's own answer, passed through"),
        crate::error::ChangeErrors,
        ProxyErrors
    )
)]
pub async fn forward_root(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    req: Request,
) -> Result<Response, ApiError> {
    let client = client_of(&req, remote);
    console_forward(state, id, client, req).await
}

#[utoipa::path(
    method(get, post, put, patch, delete),
    path = "/api/devices/{id}/proxy/{path}",
    tag = "proxy",
    params(("id" = String, Path, description = "device id"), ("path" = String, Path, description = "path on the box")),
    security(("session" = [], "csrf" = [])),
    responses(
        (status = "default", description = "the box's own answer, passed through"),
        crate::error::ChangeErrors,
        ProxyErrors
    )
)]
pub async fn forward_path(
    State(state): State<AppState>,
    Path((id, _path)): Path<(String, String)>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    req: Request,
) -> Result<Response, ApiError> {
    let client = client_of(&req, remote);
    console_forward(state, id, client, req).await
}

/// The caller's address as the router's layers found it: the client a
/// trusted proxy names, else the peer.
pub(crate) fn client_of(req: &Request, remote: SocketAddr) -> IpAddr {
    req.extensions()
        .get::<edge_core::client_addr::ClientIp>()
        .map_or(remote.ip(), |c| c.0)
}

/// The console-origin door: programs only, never browsers. The session
/// (the cookie, or a bearer from the `edge` CLI), the CSRF rule (cookies
/// only) and ownership are checked here with one store read (not through
/// `CurrentUser`, which would cost a second).
pub(crate) async fn console_forward(
    state: AppState,
    raw_id: String,
    client: IpAddr,
    req: Request,
) -> Result<Response, ApiError> {
    let (access, prefix) = console_access(&state, &raw_id, req.method(), req.headers()).await?;
    forward(&state, access, client, req, Door::ConsoleApi { prefix }).await
}

/// The console door's checks on a request's `headers`, however they are
/// held: who may reach the device `raw_id`, and the door's path prefix.
async fn console_access(
    state: &AppState,
    raw_id: &str,
    method: &http::Method,
    headers: &impl Fields,
) -> Result<(Access, String), ApiError> {
    let (hash, via) = presented_session(state, headers)?.ok_or(ApiError::Unauthenticated)?;
    let device: Option<DeviceId> = raw_id.parse().ok();
    let (actor, reach) = match device {
        Some(device) => session_and_device(state, &hash, device, Check::Activity).await?,
        None => (
            live_session_of(state, &hash, via).await?.into(),
            Reach::Hidden,
        ),
    };
    if via == store::SessionKind::Browser {
        check_csrf(method, headers, &state.settings.public_origin)?;
    }
    let device = match reach {
        Reach::Granted => device.ok_or(ApiError::NotFound)?,
        Reach::NoScope => return Err(ApiError::InsufficientScope),
        Reach::Hidden => return Err(ApiError::NotFound),
    };
    if crate::hygiene::from_browser(headers) {
        return Err(ApiError::UseDeviceOrigin);
    }
    let access = Access {
        actor,
        session_hash: hash,
        device,
    };
    let mut prefix = String::with_capacity(PREFIX_HEAD.len() + raw_id.len() + PREFIX_TAIL.len());
    prefix.push_str(PREFIX_HEAD);
    prefix.push_str(raw_id);
    prefix.push_str(PREFIX_TAIL);
    Ok((access, prefix))
}

/// The console door for a bodiless `GET` that the proxy's lane read
/// (ADR 037): the checks of [`console_forward`] on the caller's fields as
/// they came, the box's request head written from them by the same header
/// rules, and the box's answer as it came (the lane writes it through the
/// rules). `target` is the request target, the door's prefix included.
pub(crate) async fn lane_forward(
    state: &AppState,
    raw_id: &str,
    client: IpAddr,
    fields: &RawFields,
    target: &[u8],
) -> Result<box_wire::Answer, ApiError> {
    let (access, prefix) = console_access(state, raw_id, &http::Method::GET, fields).await?;
    // Counted from here, as `forward` counts the router's.
    let started = std::time::Instant::now();
    let result = async {
        if state.audit.is_failing() {
            return Err(ApiError::AuditUnavailable);
        }
        let rest = target
            .strip_prefix(prefix.as_bytes())
            .filter(|rest| rest.starts_with(b"/"))
            .ok_or(ApiError::NotFound)?;
        let door = Door::ConsoleApi { prefix };
        let head = lane_request_head(state, fields, rest, client, &door);
        tokio::time::timeout(
            state.settings.proxy_first_byte_timeout,
            state
                .boxes
                .exchange(&access.actor, access.device, &http::Method::GET, &head),
        )
        .await
        .map_err(|_| ApiError::DeviceTimeout)?
    }
    .await;
    state.metrics.proxied(&result, started);
    result
}

/// The head of a bodiless `GET` for the box: the caller's fields that the
/// header rules pass ([`proxy_rules::console_request_fields`]) and the
/// proxy's own ([`proxy_fields`]).
fn lane_request_head(
    state: &AppState,
    fields: &RawFields,
    target: &[u8],
    client: IpAddr,
    door: &Door,
) -> Vec<u8> {
    let mut head = Vec::with_capacity(fields.head().len() + target.len() + 176);
    head.extend_from_slice(b"GET ");
    head.extend_from_slice(target);
    head.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in proxy_rules::console_request_fields(fields.iter()) {
        box_wire::push_field(&mut head, name, value);
    }
    let caller_host = fields.first(&header::HOST);
    proxy_fields(state, client, door, caller_host, |name, value| {
        box_wire::push_field(&mut head, name.as_str().as_bytes(), value);
    });
    head.extend_from_slice(b"\r\n");
    head
}

/// The fields the proxy sets on every request to the box, through either
/// door and in either form of head: `Host`, `X-Forwarded-For`, `-Proto`,
/// `-Host` (what the caller asked for, when it said) and, on the console
/// door, `-Prefix`.
fn proxy_fields(
    state: &AppState,
    client: IpAddr,
    door: &Door,
    caller_host: Option<&[u8]>,
    mut put: impl FnMut(HeaderName, &[u8]),
) {
    put(header::HOST, b"localhost");
    // Formatted in place: an address is at most 45 characters.
    let mut ip = [0u8; 64];
    put(X_FORWARDED_FOR, format_ip(client, &mut ip));
    let https = match door {
        Door::ConsoleApi { .. } => state.settings.public_scheme == "https",
        Door::DeviceOrigin { .. } => state.settings.device_origins.is_https(),
    };
    put(X_FORWARDED_PROTO, if https { b"https" } else { b"http" });
    if let Some(host) = caller_host {
        put(X_FORWARDED_HOST, host);
    }
    if let Door::ConsoleApi { prefix } = door {
        put(X_FORWARDED_PREFIX, prefix.as_bytes());
    }
}

/// `ip` as text in `buf`: IPv4 octet by octet (the standard library's
/// formatting machinery costs about as much as the rest of a request's
/// head), IPv6 through it.
fn format_ip(ip: IpAddr, buf: &mut [u8; 64]) -> &[u8] {
    let len = match ip {
        IpAddr::V4(v4) => {
            let mut len = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[len] = b'.';
                    len += 1;
                }
                let mut digits = itoa::Buffer::new();
                let digits = digits.format(octet).as_bytes();
                buf[len..len + digits.len()].copy_from_slice(digits);
                len += digits.len();
            }
            len
        }
        IpAddr::V6(_) => {
            let mut rest = &mut buf[..];
            let _ = std::io::Write::write_fmt(&mut rest, format_args!("{ip}"));
            64 - rest.len()
        }
    };
    &buf[..len]
}

/// The console door's prefix is `PREFIX_HEAD`, the device id, `PREFIX_TAIL`.
const PREFIX_HEAD: &str = "/api/devices/";
const PREFIX_TAIL: &str = "/proxy";

/// The device `raw_id` when `user` owns it; 404 otherwise.
pub async fn authorize(state: &AppState, user: UserId, raw_id: &str) -> Result<DeviceId, ApiError> {
    let device: DeviceId = raw_id.parse().map_err(|_| ApiError::NotFound)?;
    state
        .store
        .device(user, device)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(device)
}

/// The path and query the box sees, in origin form (a path under the
/// console door's prefix starts with its own `/`).
fn target_path(req: &Request, door: &Door) -> Result<String, ApiError> {
    let path = req.uri().path();
    let rest = match door {
        Door::ConsoleApi { prefix } => path
            .strip_prefix(prefix.as_str())
            .filter(|rest| rest.starts_with('/'))
            .ok_or(ApiError::NotFound)?,
        Door::DeviceOrigin { .. } => path,
    };
    Ok(match req.uri().query() {
        Some(q) => format!("{rest}?{q}"),
        None => rest.to_owned(),
    })
}

/// The proxy's own request headers, made once (a `from_static` called at
/// run time checks its name each time).
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");

/// The headers the box receives: the caller's `headers` through the
/// header rules (in place), and the proxy's own (`Host`, `X-Forwarded-*`,
/// the upgrade asked for).
fn outbound_headers(
    state: &AppState,
    parts: &mut http::request::Parts,
    client: IpAddr,
    door: &Door,
    upgrade: Option<&HeaderValue>,
) -> HeaderMap {
    let device_origin = matches!(door, Door::DeviceOrigin { .. });
    let caller_host = match door {
        Door::ConsoleApi { .. } => parts.headers.get(header::HOST).cloned(),
        Door::DeviceOrigin { host } => host.clone(),
    };
    let (mut headers, _) = box_request_headers(std::mem::take(&mut parts.headers), device_origin);
    let caller_host = caller_host.as_ref().map(HeaderValue::as_bytes);
    proxy_fields(state, client, door, caller_host, |name, value| {
        if let Ok(v) = HeaderValue::from_bytes(value) {
            headers.insert(name, v);
        }
    });
    if let Some(proto) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, proto.clone());
    }
    headers
}

/// Forward one request through `door` for `access`.
pub async fn forward(
    state: &AppState,
    access: Access,
    client: IpAddr,
    req: Request,
    door: Door,
) -> Result<Response, ApiError> {
    let started = std::time::Instant::now();
    let result = forward_counted(state, access, client, req, door).await;
    state.metrics.proxied(&result, started);
    result
}

async fn forward_counted(
    state: &AppState,
    access: Access,
    client: IpAddr,
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
    let (mut parts, body) = req.into_parts();
    let bodiless = upgrade.is_none() && body.is_end_stream();
    let headers = outbound_headers(state, &mut parts, client, &door, upgrade.as_ref());
    if bodiless {
        // Most requests: on a stream this task drives itself (`box_wire`).
        let head = crate::box_wire::request_head(&parts.method, &target, &headers);
        let response = tokio::time::timeout(
            state.settings.proxy_first_byte_timeout,
            state
                .boxes
                .exchange(&access.actor, access.device, &parts.method, &head),
        )
        .await
        .map_err(|_| ApiError::DeviceTimeout)??
        .into_response()
        .ok_or(ApiError::DeviceUnreachable)?;
        let (parts, body) = response.into_parts();
        return Ok(answer(parts, Body::new(body), &door));
    }
    let mut outbound = http::Request::builder()
        .method(parts.method)
        .uri(target)
        .version(Version::HTTP_11)
        .body(if upgrade.is_some() {
            Body::empty()
        } else {
            body
        })
        .map_err(|_| ApiError::BadRequest("cannot forward this request".into()))?;
    *outbound.headers_mut() = headers;
    let response = tokio::time::timeout(
        state.settings.proxy_first_byte_timeout,
        state.boxes.send(&access.actor, access.device, outbound),
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
    Ok(answer(parts, Body::new(body), &door))
}

/// The box's answer as the caller gets it, through `door`'s header rules.
fn answer(parts: http::response::Parts, body: Body, door: &Door) -> Response {
    let mut res = Response::new(body);
    *res.status_mut() = parts.status;
    *res.headers_mut() = box_response_headers(parts.headers, door);
    res
}

/// Answer 101 and splice the two upgraded connections, until either side
/// ends or the caller's access does (checked every
/// `device_access_recheck`).
fn relay_upgrade(
    state: &AppState,
    access: Access,
    client_upgrade: OnUpgrade,
    mut response: http::Response<crate::box_client::AnswerBody>,
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
    *res.headers_mut() = proxy_rules::box_upgrade_headers(response.headers(), door);
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
    Ok(
        owner_behind(state, &access.session_hash, access.device, Check::Recheck)
            .await?
            .is_some_and(|actor| actor == access.actor),
    )
}

/// Who is behind the session stored under `session_hash`, when that
/// session is live and may reach `device` ([`Reach::Granted`]); `None`
/// otherwise. Store failures are errors, not answers. The one check behind
/// entering a device origin, every request there, and every open
/// connection's re-check.
pub async fn owner_behind(
    state: &AppState,
    session_hash: &str,
    device: DeviceId,
    check: Check,
) -> Result<Option<store::Actor>, ApiError> {
    match session_and_device(state, session_hash, device, check).await {
        Ok((actor, reach)) => Ok((reach == Reach::Granted).then_some(actor)),
        Err(ApiError::Unauthenticated) => Ok(None),
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_written_as_the_standard_library_writes_them() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.255.9",
            "255.255.255.255",
            "::1",
            "2001:db8::8a2e:370:7334",
            "::ffff:192.0.2.1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            let mut buf = [0u8; 64];
            assert_eq!(format_ip(ip, &mut buf), ip.to_string().as_bytes());
        }
    }
}
