//! The internal API (`:3801`) the api-server calls: list sessions (all, or
//! one owner's), get one, close one, and open a raw stream (an HTTP upgrade
//! that becomes a byte pipe to a fresh yamux stream on the device). Every
//! route needs the shared secret as a bearer token.

use crate::error::RelayError;
use crate::Relay;
use axum::extract::{Path, Query, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use directory::internal_api::{SESSIONS, STREAM_PROTOCOL};
use directory::{DirectoryError, SessionView};
use edge_core::{DeviceId, UserId};
use http::{header, HeaderValue, StatusCode};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use std::sync::Arc;

/// Routes of the internal port.
pub fn router(relay: Arc<Relay>) -> Router {
    Router::new()
        .route(SESSIONS, get(list))
        .route(&format!("{SESSIONS}/{{device}}"), get(lookup).delete(close))
        .route(&format!("{SESSIONS}/{{device}}/stream"), get(open_stream))
        .route_layer(middleware::from_fn_with_state(
            relay.clone(),
            require_secret,
        ))
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

async fn open_stream(
    State(relay): State<Arc<Relay>>,
    Path(device): Path<String>,
    mut req: Request,
) -> Result<Response, RelayError> {
    let device = device_id(&device)?;
    let wants_stream = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(STREAM_PROTOCOL));
    if !wants_stream {
        return Err(RelayError::BadRequest(format!(
            "expected Upgrade: {STREAM_PROTOCOL}"
        )));
    }
    let on_upgrade = req
        .extensions_mut()
        .remove::<OnUpgrade>()
        .ok_or_else(|| RelayError::BadRequest("connection cannot be upgraded".into()))?;
    let mut stream = relay.directory.open_stream(device).await?;
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let mut caller = TokioIo::new(upgraded);
                if let Err(err) = tokio::io::copy_bidirectional(&mut caller, &mut stream).await {
                    tracing::debug!(%device, error = %err, "raw stream ended with error");
                }
            }
            Err(err) => tracing::debug!(%device, error = %err, "raw stream upgrade failed"),
        }
    });
    let mut res = StatusCode::SWITCHING_PROTOCOLS.into_response();
    res.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    res.headers_mut()
        .insert(header::UPGRADE, HeaderValue::from_static(STREAM_PROTOCOL));
    Ok(res)
}
