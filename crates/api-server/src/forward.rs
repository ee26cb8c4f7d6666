//! Port forwarding (ADR 027): `GET /api/devices/{id}/forward?target=HOST:PORT`
//! with `Upgrade: edge-forward` and a bearer session (the `edge` CLI's, or
//! a service account's with `devices:remote`) becomes a raw byte pipe to that TCP service
//! on the device's side: api-server → relay (the channel's `tcp=` request)
//! → agent (a `tcp` preamble, checked against its allow-list) → the
//! service. The agent's answer is read before the `101`, so a refused
//! target is a JSON error, not a dead pipe. Each forward is audited
//! (`forward_opened`, `forward_closed` with its bytes each way) and cut
//! within `device_access_recheck` when the session ends or the device is
//! no longer the caller's, as browser access is.

use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::proxy::{access_ends, owner_behind, Access};
use crate::session::{Check, RemoteAccess, Scoped};
use crate::state::AppState;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::response::Response;
use edge_core::error_body::ErrorBody;
use edge_core::DeviceId;
use http::{header, HeaderValue, StatusCode};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tunnel::preamble::{self, TcpTarget};

/// The upgrade token of a forward.
pub const FORWARD_PROTOCOL: &str = "edge-forward";
/// How long the agent has to answer whether it reached the target.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// Copy buffers each way (bulk transfers move in large reads).
const BUFFER: usize = 64 * 1024;

#[derive(serde::Deserialize, utoipa::IntoParams)]
pub struct ForwardQuery {
    /// The TCP service on the device's side, `host:port` (the agent's
    /// `--allow` list must name it). Required; checked after the device
    /// is found the caller's, so a foreign id is a 404 whatever the query.
    target: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/devices/{id}/forward",
    tag = "devices",
    params(("id" = String, Path, description = "device id"), ForwardQuery),
    security(("bearer" = [])),
    responses(
        (status = 101, description = "the connection is now a byte pipe to the target (`Upgrade: edge-forward`)"),
        (status = 400, description = "no `Upgrade: edge-forward`, or a malformed target", body = ErrorBody),
        (status = 401, description = "no valid bearer session", body = ErrorBody),
        (status = 403, description = "a browser session (`bearer_required`), a service account without `devices:remote` (`insufficient_scope`), or the agent does not allow the target (`target_not_allowed`)", body = ErrorBody),
        (status = 404, description = "no such device of the caller's", body = ErrorBody),
        (status = 409, description = "the device's agent reaches only its local service (`target_not_supported`)", body = ErrorBody),
        (status = 502, description = "the relay, the device or the target cannot be reached", body = ErrorBody),
        (status = 503, description = "the device is offline, or the audit trail cannot be written", body = ErrorBody)
    )
)]
pub async fn forward(
    user: Scoped<RemoteAccess>,
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<ForwardQuery>,
    mut req: Request,
) -> Result<Response, ApiError> {
    let device: DeviceId = id.parse().map_err(|_| ApiError::NotFound)?;
    let actor = owner_behind(&state, &user.session_hash, device, Check::Activity)
        .await?
        .ok_or(ApiError::NotFound)?;
    if !user.is_bearer() {
        return Err(ApiError::BearerRequired);
    }
    let target: TcpTarget = q
        .target
        .as_deref()
        .unwrap_or_default()
        .parse()
        .map_err(|e: preamble::BadTarget| ApiError::BadRequest(e.to_string()))?;
    let wants = proxy_rules::requested_upgrade(req.headers()).is_some_and(|v| {
        v.as_bytes()
            .eq_ignore_ascii_case(FORWARD_PROTOCOL.as_bytes())
    });
    let on_upgrade = req.extensions_mut().remove::<OnUpgrade>();
    let (true, Some(on_upgrade)) = (wants, on_upgrade) else {
        return Err(ApiError::BadRequest(format!(
            "expected Connection: upgrade and Upgrade: {FORWARD_PROTOCOL}"
        )));
    };
    if state.audit.is_failing() {
        return Err(ApiError::AuditUnavailable);
    }
    let mut stream = state
        .boxes
        .reclaiming(device, || state.directory.open_tcp(device, &target))
        .await?;
    let first = match tokio::time::timeout(ANSWER_TIMEOUT, preamble::read_answer(&mut stream)).await
    {
        Ok(Ok(Ok(first))) => first,
        Ok(Ok(Err(code))) => {
            tracing::info!(%device, %target, code, "forward refused by the agent");
            return Err(match code.as_str() {
                "target_not_allowed" => ApiError::TargetNotAllowed,
                _ => ApiError::TargetUnreachable,
            });
        }
        Ok(Err(_)) => return Err(ApiError::DeviceUnreachable),
        Err(_) => return Err(ApiError::DeviceTimeout),
    };
    let access = Access {
        actor,
        session_hash: user.0.session_hash,
        device,
    };
    state.audit.record(
        access.actor.clone(),
        "forward_opened",
        Some(device.to_string()),
        serde_json::json!({ "target": target.to_string() }),
    );
    tracing::info!(%device, %target, "forward opened");
    tokio::spawn(pipe(state, access, target, on_upgrade, stream, first));
    let mut res = Response::new(Body::empty());
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    res.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    res.headers_mut()
        .insert(header::UPGRADE, HeaderValue::from_static(FORWARD_PROTOCOL));
    Ok(res)
}

/// Pipe the upgraded caller and the device's stream until either ends or
/// the caller's access does; then audit the bytes each way.
async fn pipe(
    state: AppState,
    access: Access,
    target: TcpTarget,
    on_upgrade: OnUpgrade,
    stream: directory::BoxStream,
    first: Vec<u8>,
) {
    let started = Instant::now();
    let to_device = Arc::new(AtomicU64::new(0));
    let from_device = Arc::new(AtomicU64::new(first.len() as u64));
    let ended = match on_upgrade.await {
        Ok(upgraded) => {
            let mut caller = Counted {
                inner: TokioIo::new(upgraded),
                read: to_device.clone(),
            };
            let mut device = Counted {
                inner: stream,
                read: from_device.clone(),
            };
            let copy = async {
                if !first.is_empty() {
                    caller.write_all(&first).await?;
                }
                tokio::io::copy_bidirectional_with_sizes(&mut caller, &mut device, BUFFER, BUFFER)
                    .await
                    .map(|_| ())
            };
            tokio::select! {
                r = copy => match r {
                    Ok(()) => "closed",
                    Err(_) => "error",
                },
                () = access_ends(&state, &access) => "access_ended",
            }
        }
        Err(err) => {
            tracing::debug!(error = %err, "forward upgrade failed");
            "upgrade_failed"
        }
    };
    tracing::info!(device = %access.device, %target, ended, "forward closed");
    state.audit.record(
        access.actor.clone(),
        "forward_closed",
        Some(access.device.to_string()),
        serde_json::json!({
            "target": target.to_string(),
            "ended": ended,
            "bytes_to_device": to_device.load(Ordering::Relaxed),
            "bytes_from_device": from_device.load(Ordering::Relaxed),
            "duration_ms": started.elapsed().as_millis() as u64,
        }),
    );
}

/// A byte stream that counts what is read from it.
struct Counted<S> {
    inner: S,
    read: Arc<AtomicU64>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        res
    }
}

edge_core::write_through_inner!(impl[S: AsyncWrite + Unpin] for Counted<S>);
