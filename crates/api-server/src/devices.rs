//! The caller's devices: list (with live status from the session directory,
//! paginated), get, rename and relabel, delete (credential revoked, live
//! tunnel closed), rotate the credential, disconnect the live session.
//! Every store call is scoped by the caller's id; another user's device is
//! a 404 byte-identical to a missing one.
//!
//! Rotation returns the new credential once and closes the live tunnel (the
//! old credential is revoked at once). The owner installs the new credential
//! on the box (the agent reads it from its credential file) or re-pairs.
//! Delete and rotate fail loudly (`502 tunnel_not_closed`, after retrying)
//! when the relay cannot close the live tunnel; the relay's own periodic
//! credential check closes it within its interval (30 s by default).

use crate::error::{ApiError, ChangeErrors, SessionErrors};
use crate::extract::{ApiJson, ApiQuery};
use crate::session::{CurrentUser, ManageDevices, ReadDevices, Scoped};
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use directory::LiveStatus;
use edge_core::error_body::ErrorBody;
use edge_core::{DeviceId, DeviceToken};
use serde::{Deserialize, Serialize};
use store::Device;

/// `?limit=&offset=` on list routes (limit 1..=200, default 50).
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Page {
    limit: Option<i64>,
    offset: Option<i64>,
}

impl Page {
    pub fn bounds(&self) -> (i64, i64) {
        (
            self.limit.unwrap_or(50).clamp(1, 200),
            self.offset.unwrap_or(0).max(0),
        )
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct DeviceView {
    id: String,
    name: String,
    labels: Vec<String>,
    model: Option<String>,
    serial: Option<String>,
    agent_version: Option<String>,
    created_at: i64,
    /// `online`, `offline`, or `unknown` when the relay cannot be asked.
    status: &'static str,
    connected_since: Option<i64>,
    last_heard_from: Option<i64>,
    /// Last time the device was heard from: `last_heard_from` while online,
    /// else when its tunnel last opened or closed (`None`: never connected).
    last_seen_at: Option<i64>,
    /// Its metrics path (`None`: the deployment's).
    metrics_path: Option<String>,
    /// Key figures of its last scrape (`None`: never scraped).
    telemetry: Option<KeyFigures>,
    /// Its health by the owner's rules (`None`: not judged yet, unknown).
    health: Option<HealthView>,
    /// Which relay holds its tunnel (a stable short name, not an address;
    /// single-device answers only).
    #[serde(skip_serializing_if = "Option::is_none")]
    relay: Option<String>,
}

/// A device's health state.
#[derive(Serialize, utoipa::ToSchema)]
pub struct HealthView {
    /// `ok`, `degraded`, `critical` or `unknown`.
    state: String,
    reasons: Vec<String>,
    since: i64,
}

impl From<&store::DeviceHealth> for HealthView {
    fn from(h: &store::DeviceHealth) -> Self {
        Self {
            state: h.state.clone(),
            reasons: h.reasons.clone(),
            since: h.since,
        }
    }
}

/// The figures a device list shows per row, from the last scrape.
#[derive(Serialize, utoipa::ToSchema, Default)]
pub struct KeyFigures {
    /// `ok`, `failed` or `none` (no metrics path on the box).
    outcome: String,
    scraped_at: i64,
    /// Frames per second over all models.
    fps: Option<f64>,
    /// The hottest accelerator (°C).
    accel_temperature: Option<f64>,
    cpu_busy: Option<f64>,
    memory_used: Option<f64>,
    /// The fullest filesystem.
    disk_used: Option<f64>,
}

impl KeyFigures {
    fn of(row: &store::LatestRow) -> Self {
        let mut k = Self {
            outcome: row.outcome.clone(),
            scraped_at: row.scraped_at,
            ..Self::default()
        };
        let figures: serde_json::Value = serde_json::from_str(&row.figures).unwrap_or_default();
        let series = figures["series"].as_array().cloned().unwrap_or_default();
        let fold = |slot: &mut Option<f64>, v: f64, f: fn(f64, f64) -> f64| {
            *slot = Some(slot.map_or(v, |s| f(s, v)));
        };
        use box_metrics::figures::names;
        for s in &series {
            let (Some(metric), Some(v)) = (s["metric"].as_str(), s["value"].as_f64()) else {
                continue;
            };
            match metric {
                names::FPS => fold(&mut k.fps, v, |a, b| a + b),
                names::ACCEL_TEMP => fold(&mut k.accel_temperature, v, f64::max),
                names::CPU => k.cpu_busy = Some(v),
                names::MEMORY => k.memory_used = Some(v),
                names::DISK => fold(&mut k.disk_used, v, f64::max),
                _ => {}
            }
        }
        k
    }
}

/// What the session directory said of a device.
#[derive(Clone, Copy)]
enum Presence<'a> {
    /// The directory did not answer.
    Unknown,
    Offline,
    Online(&'a LiveStatus),
}

impl<'a> Presence<'a> {
    /// From a directory answer: `None` when it did not answer, then
    /// whether the device has a session.
    fn of(answer: Option<Option<&'a LiveStatus>>) -> Self {
        match answer {
            None => Self::Unknown,
            Some(None) => Self::Offline,
            Some(Some(s)) => Self::Online(s),
        }
    }
}

fn view(
    d: Device,
    live: Presence<'_>,
    telemetry: Option<&store::LatestRow>,
    health: Option<&store::DeviceHealth>,
) -> DeviceView {
    let (status, since, heard) = match live {
        Presence::Unknown => ("unknown", None, None),
        Presence::Offline => ("offline", None, None),
        Presence::Online(s) => ("online", Some(s.connected_since), s.last_heard_from),
    };
    DeviceView {
        id: d.id.to_string(),
        name: d.name,
        labels: d.labels,
        model: d.model,
        serial: d.serial,
        agent_version: d.agent_version,
        created_at: d.created_at,
        status,
        connected_since: since,
        last_heard_from: heard,
        last_seen_at: heard.or(d.last_seen_at),
        metrics_path: d.metrics_path,
        telemetry: telemetry.map(KeyFigures::of),
        health: health.map(HealthView::from),
        relay: None,
    }
}

/// A relay node's short public name: `relay-` and 8 hex digits of a hash
/// of its internal URL (which stays internal).
fn relay_name(node: &directory::NodeId) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(node.0.as_bytes());
    format!("relay-{}", hex::encode(&digest[..4]))
}

/// One device's view with its status asked of the directory.
async fn view_live(state: &AppState, d: Device) -> DeviceView {
    let live = state.directory.lookup(d.id).await.ok();
    let relay = live
        .as_ref()
        .and_then(|o| o.as_ref())
        .map(|s| relay_name(&s.node));
    let live = live.map(|o| o.as_ref().map(LiveStatus::from));
    let telemetry = or_left_out(
        "telemetry",
        state.store.telemetry_latest(d.owner_id, &[d.id]).await,
    )
    .and_then(|mut rows| rows.remove(&d.id));
    let health = or_left_out(
        "health",
        state.store.device_health(d.owner_id, &[d.id]).await,
    )
    .and_then(|mut rows| rows.remove(&d.id));
    let mut v = view(
        d,
        Presence::of(live.as_ref().map(|o| o.as_ref())),
        telemetry.as_ref(),
        health.as_ref(),
    );
    v.relay = relay;
    v
}

/// `result`'s value, or nothing (logged): a part of a device's view that
/// cannot be read now is left out rather than failing the answer.
fn or_left_out<T, E: std::fmt::Display>(part: &'static str, result: Result<T, E>) -> Option<T> {
    result
        .map_err(
            |err| tracing::warn!(error = %err, part, "a part of the device view is unavailable"),
        )
        .ok()
}

fn parse(id: &str) -> Result<DeviceId, ApiError> {
    id.parse().map_err(|_| ApiError::NotFound)
}

pub(crate) async fn owned(
    state: &AppState,
    user: &CurrentUser,
    id: &str,
) -> Result<Device, ApiError> {
    state
        .store
        .device(user.id, parse(id)?)
        .await?
        .filter(|d| user.sees(&d.labels))
        .ok_or(ApiError::NotFound)
}

/// `GET /api/devices` filters: `?q=` (name, serial or label contains,
/// any case), `?status=online|offline`, `?health=ok|degraded|critical|unknown`,
/// `?sort=name|-name|created|-created` (default `created`), with `limit`
/// (1–200, default 50) and `offset`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeviceFilter {
    limit: Option<i64>,
    offset: Option<i64>,
    q: Option<String>,
    status: Option<String>,
    health: Option<String>,
    sort: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/devices",
    tag = "devices",
    params(DeviceFilter),
    security(("session" = [])),
    responses(
        (status = 200, description = "a page of the caller's devices with live status", body = Vec<DeviceView>),
        (status = 400, description = "malformed request", body = ErrorBody),
        SessionErrors
    )
)]
pub async fn list(
    user: Scoped<ReadDevices>,
    State(state): State<AppState>,
    ApiQuery(f): ApiQuery<DeviceFilter>,
) -> Result<Json<Vec<DeviceView>>, ApiError> {
    let query = device_query(&state, &user, f).await?;
    let devices = state.store.devices_query(user.id, &query).await?;
    let ids: Vec<DeviceId> = devices.iter().map(|d| d.id).collect();
    let live = or_left_out("status", state.directory.statuses(user.id, &ids).await);
    let telemetry = or_left_out(
        "telemetry",
        state.store.telemetry_latest(user.id, &ids).await,
    )
    .unwrap_or_default();
    let health =
        or_left_out("health", state.store.device_health(user.id, &ids).await).unwrap_or_default();
    Ok(Json(
        devices
            .into_iter()
            .map(|d| {
                let status = Presence::of(live.as_ref().map(|m| m.get(&d.id)));
                let (figures, h) = (telemetry.get(&d.id), health.get(&d.id));
                view(d, status, figures, h)
            })
            .collect(),
    ))
}

/// The store's query for `f`, checked, within what `user` may see.
async fn device_query(
    state: &AppState,
    user: &CurrentUser,
    f: DeviceFilter,
) -> Result<store::DeviceQuery, ApiError> {
    let (limit, offset) = Page {
        limit: f.limit,
        offset: f.offset,
    }
    .bounds();
    let sort = match f.sort.as_deref() {
        None | Some("created") => store::DeviceSort::Created,
        Some("-created") => store::DeviceSort::CreatedDesc,
        Some("name") => store::DeviceSort::Name,
        Some("-name") => store::DeviceSort::NameDesc,
        Some(_) => {
            return Err(ApiError::BadRequest(
                "sort is name, -name, created or -created".into(),
            ))
        }
    };
    let health = match f.health.as_deref() {
        None => None,
        Some(h @ ("ok" | "degraded" | "critical" | "unknown")) => Some(h.to_owned()),
        Some(_) => {
            return Err(ApiError::BadRequest(
                "health is ok, degraded, critical or unknown".into(),
            ))
        }
    };
    let among = match f.status.as_deref() {
        None => None,
        Some(s @ ("online" | "offline")) => {
            let live = state.directory.list_owned(user.id).await?;
            Some((
                s == "online",
                live.into_iter().map(|l| l.device_id).collect(),
            ))
        }
        Some(_) => return Err(ApiError::BadRequest("status is online or offline".into())),
    };
    let search =
        f.q.map(|q| edge_core::text::display_safe_bounded(&q, 100))
            .filter(|q| !q.is_empty());
    Ok(store::DeviceQuery {
        search,
        health,
        among,
        labels: user.selector().to_vec(),
        sort,
        limit,
        offset,
    })
}

#[utoipa::path(
    get,
    path = "/api/devices/{id}",
    tag = "devices",
    params(("id" = String, Path, description = "device id")),
    security(("session" = [])),
    responses(
        (status = 200, description = "one device", body = DeviceView),
        (status = 404, description = "no such resource of the caller's", body = ErrorBody),
        SessionErrors
    )
)]
pub async fn get(
    user: Scoped<ReadDevices>,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<DeviceView>, ApiError> {
    let device = owned(&state, &user, &id).await?;
    Ok(Json(view_live(&state, device).await))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DevicePatch {
    name: Option<String>,
    labels: Option<Vec<String>>,
    /// The box's metrics path on its local API (`""`: the deployment's);
    /// the relay picks it up within its credential re-check (30 s).
    metrics_path: Option<String>,
}

/// Labels as they are stored (a device's, or a service account's
/// selector): each made display-safe; `None` unless there are at most 20,
/// each of 1 to 40 characters.
pub(crate) fn checked_labels(labels: &[String]) -> Option<Vec<String>> {
    let labels: Vec<String> = labels
        .iter()
        .map(|l| edge_core::text::display_safe(l))
        .collect();
    let fits = labels.len() <= 20
        && labels
            .iter()
            .all(|l| !l.trim().is_empty() && l.chars().count() <= 40);
    fits.then_some(labels)
}

/// A metrics path: `/` then at most 200 visible ASCII characters.
fn valid_metrics_path(p: &str) -> bool {
    p.starts_with('/') && p.len() <= 200 && p.bytes().all(|b| b.is_ascii_graphic())
}

#[utoipa::path(
    patch,
    path = "/api/devices/{id}",
    tag = "devices",
    params(("id" = String, Path, description = "device id")), request_body = DevicePatch,
    security(("session" = [], "csrf" = [])),
    responses(
        (status = 200, description = "updated", body = DeviceView),
        (status = 400, description = "malformed request", body = ErrorBody),
        (status = 404, description = "no such resource of the caller's", body = ErrorBody),
        (status = 415, description = "not JSON", body = ErrorBody),
        ChangeErrors
    )
)]
pub async fn update(
    user: Scoped<ManageDevices>,
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(patch): ApiJson<DevicePatch>,
) -> Result<Json<DeviceView>, ApiError> {
    let before = owned(&state, &user, &id).await?;
    let name = patch.name.as_deref().map(edge_core::text::display_safe);
    let name = name.as_deref();
    if name.is_some_and(|n| n.is_empty() || n.chars().count() > 100) {
        return Err(ApiError::BadRequest(
            "name must be 1 to 100 characters".into(),
        ));
    }
    let labels = patch
        .labels
        .map(|ls| {
            checked_labels(&ls)
                .ok_or_else(|| ApiError::BadRequest("up to 20 labels of 1 to 40 characters".into()))
        })
        .transpose()?;
    if let Some(path) = &patch.metrics_path {
        if !path.is_empty() && !valid_metrics_path(path) {
            return Err(ApiError::BadRequest(
                "metrics_path starts with / and has at most 200 visible ASCII characters".into(),
            ));
        }
        let path = Some(path.as_str()).filter(|p| !p.is_empty());
        if !state
            .store
            .set_metrics_path(user.id, before.id, path)
            .await?
        {
            return Err(ApiError::NotFound);
        }
    }
    let after = state
        .store
        .update_device(user.id, before.id, name, labels.as_deref())
        .await?
        .ok_or(ApiError::NotFound)?;
    let target = after.id.to_string();
    if after.name != before.name {
        state
            .store
            .audit(
                user.actor(),
                "device_renamed",
                Some(&target),
                serde_json::json!({ "from": before.name, "to": after.name }),
            )
            .await?;
    }
    if after.metrics_path != before.metrics_path {
        state
            .store
            .audit(
                user.actor(),
                "device_metrics_path_changed",
                Some(&target),
                serde_json::json!({ "metrics_path": after.metrics_path }),
            )
            .await?;
    }
    if after.labels != before.labels {
        state
            .store
            .audit(
                user.actor(),
                "device_labels_changed",
                Some(&target),
                serde_json::json!({ "labels": after.labels }),
            )
            .await?;
    }
    Ok(Json(view_live(&state, after).await))
}

/// Close the device's live tunnel after its credential was revoked,
/// retrying with a short backoff; an error once every attempt failed.
async fn close_tunnel(state: &AppState, device: DeviceId) -> Result<(), ApiError> {
    let mut delay = std::time::Duration::from_millis(100);
    for attempt in 1..=state.settings.tunnel_close_attempts.max(1) {
        match state.directory.close(device).await {
            Ok(_) => return Ok(()),
            Err(err) => {
                tracing::warn!(%device, attempt, error = %err, "could not close the live tunnel");
            }
        }
        if attempt < state.settings.tunnel_close_attempts {
            tokio::time::sleep(delay).await;
            delay *= 3;
        }
    }
    Err(ApiError::TunnelNotClosed(
        directory::DEFAULT_CREDENTIAL_RECHECK_SECS,
    ))
}

#[utoipa::path(
    delete,
    path = "/api/devices/{id}",
    tag = "devices",
    params(("id" = String, Path, description = "device id")),
    security(("session" = [], "csrf" = [])),
    responses(
        (status = 204, description = "deleted; its tunnel is closed"),
        (status = 404, description = "no such resource of the caller's", body = ErrorBody),
        (status = 502, description = "deleted, but the tunnel could not be closed yet", body = ErrorBody),
        ChangeErrors
    )
)]
pub async fn delete(
    user: Scoped<ManageDevices>,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let device = owned(&state, &user, &id).await?.id;
    if !state.store.delete_device(user.id, device).await? {
        return Err(ApiError::NotFound);
    }
    state.access_changes.notify();
    state
        .store
        .audit(
            user.actor(),
            "device_deleted",
            Some(&id),
            serde_json::json!({}),
        )
        .await?;
    close_tunnel(&state, device).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Rotated {
    device_id: String,
    /// The new credential, shown once.
    credential: String,
}

#[utoipa::path(
    post,
    path = "/api/devices/{id}/credential",
    tag = "devices",
    params(("id" = String, Path, description = "device id")),
    security(("session" = [], "csrf" = [])),
    responses(
        (status = 200, description = "the new credential, shown once; the old one stops working", body = Rotated),
        (status = 404, description = "no such resource of the caller's", body = ErrorBody),
        (status = 502, description = "rotated, but the tunnel could not be closed yet", body = ErrorBody),
        ChangeErrors
    )
)]
pub async fn rotate(
    user: Scoped<ManageDevices>,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Rotated>, ApiError> {
    let device = owned(&state, &user, &id).await?.id;
    let token = DeviceToken::generate();
    if !state
        .store
        .rotate_credential(user.id, device, &token.hash())
        .await?
    {
        return Err(ApiError::NotFound);
    }
    state
        .store
        .audit(
            user.actor(),
            "credential_rotated",
            Some(&id),
            serde_json::json!({}),
        )
        .await?;
    close_tunnel(&state, device).await?;
    Ok(Json(Rotated {
        device_id: id,
        credential: token.expose().to_owned(),
    }))
}

#[utoipa::path(
    post,
    path = "/api/devices/{id}/disconnect",
    tag = "devices",
    params(("id" = String, Path, description = "device id")),
    security(("session" = [], "csrf" = [])),
    responses(
        (status = 204, description = "the tunnel is closed (the agent reconnects)"),
        (status = 404, description = "no such resource of the caller's", body = ErrorBody),
        (status = 502, description = "the relay could not be reached", body = ErrorBody),
        (status = 503, description = "the device directory is unavailable", body = ErrorBody),
        ChangeErrors
    )
)]
pub async fn disconnect(
    user: Scoped<ManageDevices>,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let device = owned(&state, &user, &id).await?;
    let closed = state.directory.close(device.id).await?;
    Ok(Json(serde_json::json!({ "disconnected": closed })))
}

#[utoipa::path(
    get,
    path = "/api/audit",
    tag = "devices",
    params(Page),
    security(("session" = [])),
    responses(
        (status = 200, description = "a page of the caller's audit events, newest first", body = Vec<store::AuditEvent>),
        (status = 400, description = "malformed request", body = ErrorBody),
        SessionErrors
    )
)]
pub async fn audit(
    user: CurrentUser,
    State(state): State<AppState>,
    ApiQuery(page): ApiQuery<Page>,
) -> Result<Json<Vec<store::AuditEvent>>, ApiError> {
    let (limit, offset) = page.bounds();
    Ok(Json(
        state.store.audit_events(user.id, limit, offset).await?,
    ))
}
