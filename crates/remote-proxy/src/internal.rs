//! The internal API (`:3801`) the api-server calls: list sessions (all, or
//! one owner's), get one, close one, and the multiplexed channel
//! (`directory::mux`): one upgrade, then a stream per request to a device.
//! Every route needs the shared secret as a bearer token.

use crate::error::RelayError;
use crate::Relay;
use axum::extract::{Path, Query, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use directory::internal_api::SESSIONS;
use directory::mux;
use directory::{DirectoryError, SessionView};
use edge_core::{DeviceId, UserId};
use http::{header, HeaderValue, StatusCode};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use tunnel::preamble::Target;

/// Routes of the internal port.
pub fn router(relay: Arc<Relay>) -> Router {
    Router::new()
        .route(SESSIONS, get(list))
        .route(&format!("{SESSIONS}/{{device}}"), get(lookup).delete(close))
        .route(mux::MUX_PATH, get(open_channel))
        .route_layer(middleware::from_fn_with_state(
            relay.clone(),
            require_secret,
        ))
        .route_layer(middleware::from_fn_with_state(
            relay.metrics.clone(),
            crate::metrics::count_internal,
        ))
        .layer(middleware::from_fn(edge_core::request_id::middleware))
        .with_state(relay)
}

async fn require_secret(State(relay): State<Arc<Relay>>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(secret) if relay.internal_secret.ct_eq(secret) => next.run(req).await,
        _ => RelayError::Unauthorized.into_response(),
    }
}

fn device_id(raw: &str) -> Result<DeviceId, RelayError> {
    raw.parse()
        .map_err(|_| RelayError::BadRequest("malformed device id".into()))
}

impl From<DirectoryError> for RelayError {
    fn from(err: DirectoryError) -> Self {
        match err {
            DirectoryError::Offline => Self::Offline,
            other => Self::Stream(other.to_string()),
        }
    }
}

#[derive(serde::Deserialize)]
struct ListQuery {
    owner: Option<String>,
}

async fn list(
    State(relay): State<Arc<Relay>>,
    Query(q): Query<ListQuery>,
) -> Result<Response, RelayError> {
    let sessions = match q.owner {
        Some(owner) => {
            let owner: UserId = owner
                .parse()
                .map_err(|_| RelayError::BadRequest("malformed owner id".into()))?;
            relay.directory.list_owned(owner).await?
        }
        None => relay.directory.list().await?,
    };
    Ok(Json(sessions).into_response())
}

async fn lookup(
    State(relay): State<Arc<Relay>>,
    Path(device): Path<String>,
) -> Result<Response, RelayError> {
    let summary = relay
        .directory
        .lookup(device_id(&device)?)
        .await?
        .ok_or(RelayError::Offline)?;
    Ok(Json(summary).into_response())
}

async fn close(
    State(relay): State<Arc<Relay>>,
    Path(device): Path<String>,
) -> Result<Response, RelayError> {
    if relay.directory.close(device_id(&device)?).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(RelayError::Offline)
    }
}

/// Time a channel stream has to name its device.
const MUX_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// `GET /internal/v1/mux` with `Upgrade: edge-mux`: the connection becomes a
/// yamux session (this relay the server) whose streams each ask for a
/// device; the session ends with the relay's shutdown or the caller.
async fn open_channel(
    State(relay): State<Arc<Relay>>,
    mut req: Request,
) -> Result<Response, RelayError> {
    let wants = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(mux::MUX_PROTOCOL));
    if !wants {
        return Err(RelayError::BadRequest(format!(
            "expected Upgrade: {}",
            mux::MUX_PROTOCOL
        )));
    }
    let on_upgrade = req
        .extensions_mut()
        .remove::<OnUpgrade>()
        .ok_or_else(|| RelayError::BadRequest("connection cannot be upgraded".into()))?;
    // ADR 043: where each stream's device is, for an api-server that
    // asks, from a relay on shards.
    let here = edge_core::shard::current();
    let answers_shards = here != 0 && req.headers().contains_key(mux::SHARD_HEADER);
    let cancel = relay.shutdown.child_token();
    // The drain notice this channel owes (`Relay::drain` waits for it).
    let owed = relay.notices.token();
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(err) => {
                tracing::debug!(error = %err, "channel upgrade failed");
                return;
            }
        };
        let on_stream = {
            let relay = relay.clone();
            move |stream| {
                tokio::spawn(serve_channel_stream(relay.clone(), stream, answers_shards));
            }
        };
        let (mut control, driver) = tunnel::session::server(
            tunnel::session::Plain(TokioIo::new(upgraded)),
            mux::config(),
            cancel,
            tunnel::pump::Activity::new(),
            on_stream,
        );
        tokio::pin!(driver);
        let end = tokio::select! {
            end = &mut driver => end,
            // The drain notice: one empty stream toward the api-server.
            () = relay.draining.cancelled() => {
                let notice = async {
                    if let Ok(stream) = control.open_stream().await {
                        drop(stream);
                    }
                    drop(owed);
                };
                tokio::join!(&mut driver, notice).0
            }
        };
        tracing::debug!(%end, "api-server channel ended");
    });
    let mut res = StatusCode::SWITCHING_PROTOCOLS.into_response();
    res.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    res.headers_mut()
        .insert(header::UPGRADE, HeaderValue::from_static(mux::MUX_PROTOCOL));
    if answers_shards {
        res.headers_mut()
            .insert(mux::SHARD_HEADER, HeaderValue::from(here));
    }
    Ok(res)
}

/// One channel stream: read the device (and target) it asks for, answer,
/// then pipe (logging under the request id the api-server sent along).
/// With `answers_shards` (ADR 043), a device whose session another shard
/// drives is answered with that shard.
async fn serve_channel_stream(
    relay: Arc<Relay>,
    mut caller: tunnel::StreamHandle,
    answers_shards: bool,
) {
    let asked =
        match tokio::time::timeout(MUX_REQUEST_TIMEOUT, mux::read_request(&mut caller)).await {
            Ok(Ok(Some(asked))) => asked,
            Ok(Ok(None)) => {
                let _ = mux::write_status(&mut caller, mux::STATUS_BAD_REQUEST).await;
                return;
            }
            Ok(Err(_)) | Err(_) => return,
        };
    match asked.request_id.clone() {
        Some(id) => {
            edge_core::request_id::scope(
                id,
                pipe_channel_stream(relay, caller, asked, answers_shards),
            )
            .await;
        }
        None => pipe_channel_stream(relay, caller, asked, answers_shards).await,
    }
}

async fn pipe_channel_stream(
    relay: Arc<Relay>,
    mut caller: tunnel::StreamHandle,
    asked: mux::StreamRequest,
    answers_shards: bool,
) {
    let device = asked.device;
    let target = asked.target.map_or(Target::Service, Target::Tcp);
    let opened = relay
        .directory
        .open_stream_to(device, target)
        .await
        .and_then(|s| s.ok_or(DirectoryError::NotSupported));
    let mut stream = match opened {
        Ok(s) => s,
        Err(err) => {
            let status = match err {
                DirectoryError::Offline => mux::STATUS_OFFLINE,
                DirectoryError::Draining => mux::STATUS_DRAINING,
                DirectoryError::NotSupported => mux::STATUS_NOT_SUPPORTED,
                _ => mux::STATUS_REFUSED,
            };
            if matches!(err, DirectoryError::Draining) {
                tracing::debug!(%device, "channel stream refused: draining");
            } else {
                tracing::info!(%device, error = %err, "channel stream refused");
            }
            let _ = mux::write_status(&mut caller, status).await;
            return;
        }
    };
    relay.metrics.streams_opened.inc();
    // This task runs on the channel's shard (or off the shards, for a
    // channel on the Unix socket).
    let there = stream.shard();
    let across = there != edge_core::shard::current();
    let _across = across.then(|| AcrossShards::new(&relay.metrics));
    let elsewhere = match u8::try_from(there) {
        Ok(shard) if answers_shards && across && shard != 0 => Some(shard),
        _ => None,
    };
    let answered = match elsewhere {
        Some(shard) => mux::write_elsewhere(&mut caller, shard).await,
        None => mux::write_status(&mut caller, mux::STATUS_OK).await,
    };
    if answered.is_err() {
        return;
    }
    if let Err(err) = tunnel::splice::splice(&mut caller, &mut stream).await {
        tracing::debug!(%device, error = %err, "channel stream ended with error");
    }
}

/// One channel stream open whose device's session another thread drives
/// (`edge_relay_channel_streams_across_shards`), for as long as it lives.
struct AcrossShards(edge_core::metrics::prometheus_client::metrics::gauge::Gauge);

impl AcrossShards {
    fn new(metrics: &crate::metrics::RelayMetrics) -> Self {
        metrics.channel_streams_across_shards.inc();
        Self(metrics.channel_streams_across_shards.clone())
    }
}

impl Drop for AcrossShards {
    fn drop(&mut self) {
        self.0.dec();
    }
}
