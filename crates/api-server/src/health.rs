//! Device health: each device is `ok`, `degraded`, `critical` or
//! `unknown`, judged from its last scrape and its connection against its
//! owner's rules ([`assess`]). A pass every `health_interval` evaluates
//! every device; a change is stored with its audit event, and a change
//! into or out of `degraded`/`critical` also queues one signed delivery
//! per webhook of the owner (`webhooks`), all in one transaction. A box
//! without telemetry is `unknown`, never unhealthy for it; only being
//! offline longer than the rule's minutes is. The owner's rules are read
//! and replaced here too.

use crate::error::{ApiError, ChangeErrors, SessionErrors};
use crate::extract::ApiJson;
use crate::session::CurrentUser;
use crate::state::AppState;
use axum::extract::State;
use axum::Json;
use box_metrics::figures::names;
use directory::LiveStatus;
use edge_core::error_body::ErrorBody;
use edge_core::time::now_ms;
use edge_core::{DeviceId, UserId};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use store::{Device, DeviceHealth, HealthRules, LatestRow};
use tokio_util::sync::CancellationToken;

/// A last scrape older than this says nothing about now.
const STALE_MS: i64 = 5 * 60_000;
/// Devices evaluated per page of the pass.
const PAGE: i64 = 500;

/// What [`assess`] knows of one device.
pub struct Seen<'a> {
    /// `None`: the directory could not be asked.
    pub online: Option<bool>,
    /// When it was last heard from (ms), if ever.
    pub last_seen: Option<i64>,
    pub created_at: i64,
    pub latest: Option<&'a LatestRow>,
}

/// The health state and its reasons, by the owner's `rules`.
pub fn assess(rules: &HealthRules, seen: &Seen<'_>, now: i64) -> (&'static str, Vec<String>) {
    if seen.online == Some(false) {
        let since = seen.last_seen.unwrap_or(seen.created_at);
        let minutes = (now - since).max(0) / 60_000;
        if minutes >= rules.offline_minutes {
            return ("critical", vec![format!("offline for {minutes} min")]);
        }
        return ("unknown", vec!["offline".into()]);
    }
    let Some(latest) = seen.latest else {
        return ("unknown", vec!["no telemetry".into()]);
    };
    if latest.outcome == "none" {
        return ("unknown", vec!["the box serves no metrics".into()]);
    }
    if now - latest.scraped_at > STALE_MS {
        return ("unknown", vec!["telemetry is stale".into()]);
    }
    let mut critical = Vec::new();
    let mut degraded = Vec::new();
    if latest.outcome == "failed" {
        let code = latest
            .error
            .as_deref()
            .and_then(|e| e.split(':').next())
            .unwrap_or("failed");
        degraded.push(format!("the last scrape failed ({code})"));
    }
    let figures: serde_json::Value = serde_json::from_str(&latest.figures).unwrap_or_default();
    for s in figures["series"].as_array().into_iter().flatten() {
        let (Some(metric), Some(v)) = (s["metric"].as_str(), s["value"].as_f64()) else {
            continue;
        };
        let label = |k: &str| s["labels"][k].as_str().unwrap_or("").to_owned();
        match metric {
            names::FPS if v < rules.fps_floor => degraded.push(format!(
                "model {} at {v:.1} FPS, below {}",
                label("model"),
                rules.fps_floor
            )),
            names::ACCEL_TEMP if v >= rules.accel_temp_ceiling => critical.push(format!(
                "accelerator {} at {v:.1} °C, at or above {}",
                label("accel"),
                rules.accel_temp_ceiling
            )),
            names::DISK if v >= rules.disk_ceiling => degraded.push(format!(
                "filesystem {} {:.0} % full",
                label("mountpoint"),
                v * 100.0
            )),
            _ => {}
        }
    }
    if !critical.is_empty() {
        critical.extend(degraded);
        ("critical", critical)
    } else if !degraded.is_empty() {
        ("degraded", degraded)
    } else {
        ("ok", Vec::new())
    }
}

/// Whether a change from `from` to `to` is worth a webhook: into or out
/// of a problem (ok ↔ unknown is recorded in the audit log only).
fn notifies(from: &str, to: &str) -> bool {
    let problem = |s: &str| s == "degraded" || s == "critical";
    problem(from) || problem(to)
}

/// Evaluate every device once; returns how many changed state.
pub async fn pass(state: &AppState) -> Result<usize, ApiError> {
    let mut after = None;
    let mut changed = 0;
    let mut rules: HashMap<UserId, HealthRules> = HashMap::new();
    loop {
        let page = state.store.devices_for_health_pass(after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        let mut by_owner: HashMap<UserId, Vec<Device>> = HashMap::new();
        for d in page {
            by_owner.entry(d.owner_id).or_default().push(d);
        }
        for (owner, devices) in by_owner {
            let r = match rules.get(&owner) {
                Some(r) => *r,
                None => {
                    let r = state.store.health_rules(owner).await?;
                    rules.insert(owner, r);
                    r
                }
            };
            changed += evaluate_owner(state, owner, &r, &devices).await?;
        }
    }
    Ok(changed)
}

async fn evaluate_owner(
    state: &AppState,
    owner: UserId,
    rules: &HealthRules,
    devices: &[Device],
) -> Result<usize, ApiError> {
    let ids: Vec<DeviceId> = devices.iter().map(|d| d.id).collect();
    let live: Option<HashMap<DeviceId, LiveStatus>> =
        state.directory.statuses(owner, &ids).await.ok();
    let latest = state.store.telemetry_latest(owner, &ids).await?;
    let health = state.store.device_health(owner, &ids).await?;
    let now = now_ms();
    let mut changed = 0;
    for d in devices {
        let status = live.as_ref().map(|m| m.get(&d.id));
        let seen = Seen {
            online: status.map(|s| s.is_some()),
            last_seen: status
                .flatten()
                .and_then(|s| s.last_heard_from)
                .or(d.last_seen_at),
            created_at: d.created_at,
            latest: latest.get(&d.id),
        };
        if seen.online.is_none() {
            continue;
        }
        let (to, reasons) = assess(rules, &seen, now);
        let from = health.get(&d.id).map(|h| h.state.as_str());
        tracing::debug!(device = %d.id, to, ?reasons, "health assessed");
        if from == Some(to) || (from.is_none() && to == "unknown") {
            continue;
        }
        let next = DeviceHealth {
            device_id: d.id,
            state: to.to_owned(),
            reasons: reasons.clone(),
            since: now,
        };
        let notify = notifies(from.unwrap_or("unknown"), to);
        let event = |delivery: &str| {
            serde_json::json!({
                "type": "device.health_changed",
                "delivery_id": delivery,
                "created_at": now,
                "device": {"id": d.id.to_string(), "name": d.name},
                "from": from.unwrap_or("unknown"),
                "to": to,
                "reasons": reasons,
            })
            .to_string()
        };
        if state
            .store
            .change_health(d, from, &next, notify, event)
            .await?
        {
            changed += 1;
            tracing::info!(device = %d.id, from = from.unwrap_or("unknown"), to, "device health changed");
            if notify {
                state.signals.webhook_wake.notify_one();
            }
        }
    }
    Ok(changed)
}

/// Run [`pass`] every `health_interval` until `shutdown`.
pub async fn run(state: AppState, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(state.settings.health_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match pass(&state).await {
            Ok(n) if n > 0 => tracing::debug!(changed = n, "health pass"),
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "health pass failed; retrying next time"),
        }
        state.signals.health_passes.send_modify(|n| *n += 1);
    }
}

/// An owner's health rules.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    /// Degraded while a model runs below this many frames per second.
    fps_floor: f64,
    /// Critical while an accelerator is at least this hot (°C).
    accel_temp_ceiling: f64,
    /// Degraded while a filesystem is at least this full (0–1).
    disk_ceiling: f64,
    /// Critical once offline this many minutes (1–10080).
    offline_minutes: i64,
}

impl From<HealthRules> for Rules {
    fn from(r: HealthRules) -> Self {
        Self {
            fps_floor: r.fps_floor,
            accel_temp_ceiling: r.accel_temp_ceiling,
            disk_ceiling: r.disk_ceiling,
            offline_minutes: r.offline_minutes,
        }
    }
}

#[utoipa::path(
    get,
    path = "/api/health-rules",
    tag = "telemetry",
    security(("session" = [])),
    responses(
        (status = 200, description = "the caller's health rules (defaults until set)", body = Rules),
        SessionErrors
    )
)]
pub async fn get_rules(
    user: CurrentUser,
    State(state): State<AppState>,
) -> Result<Json<Rules>, ApiError> {
    Ok(Json(state.store.health_rules(user.id).await?.into()))
}

#[utoipa::path(
    put,
    path = "/api/health-rules",
    tag = "telemetry",
    request_body = Rules,
    security(("session" = [], "csrf" = [])),
    responses(
        (status = 200, description = "the rules as stored", body = Rules),
        (status = 400, description = "a rule out of range", body = ErrorBody),
        ChangeErrors
    )
)]
pub async fn put_rules(
    user: CurrentUser,
    State(state): State<AppState>,
    ApiJson(r): ApiJson<Rules>,
) -> Result<Json<Rules>, ApiError> {
    let ok = r.fps_floor.is_finite()
        && (0.0..=10_000.0).contains(&r.fps_floor)
        && r.accel_temp_ceiling.is_finite()
        && (0.0..=200.0).contains(&r.accel_temp_ceiling)
        && (0.0..=1.0).contains(&r.disk_ceiling)
        && (1..=10_080).contains(&r.offline_minutes);
    if !ok {
        return Err(ApiError::BadRequest(
            "fps_floor 0–10000, accel_temp_ceiling 0–200, disk_ceiling 0–1, offline_minutes 1–10080"
                .into(),
        ));
    }
    let rules = HealthRules {
        fps_floor: r.fps_floor,
        accel_temp_ceiling: r.accel_temp_ceiling,
        disk_ceiling: r.disk_ceiling,
        offline_minutes: r.offline_minutes,
    };
    state.store.set_health_rules(user.id, &rules).await?;
    state.audit.record(
        user.id,
        "health_rules_changed",
        None,
        serde_json::to_value(&r).unwrap_or_default(),
    );
    Ok(Json(rules.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn latest(outcome: &str, figures: serde_json::Value, at: i64) -> LatestRow {
        LatestRow {
            device_id: DeviceId::new(),
            scraped_at: at,
            outcome: outcome.into(),
            error: (outcome == "failed").then(|| "timeout: slow".into()),
            last_ok_at: None,
            figures: figures.to_string(),
        }
    }

    fn series(metric: &str, label: (&str, &str), v: f64) -> serde_json::Value {
        serde_json::json!({"metric": metric, "labels": {label.0: label.1}, "value": v})
    }

    #[test]
    fn rules_give_each_state() {
        let r = HealthRules::default();
        let now = 10_000_000;
        let seen = |online, l| Seen {
            online: Some(online),
            last_seen: Some(now - 60_000),
            created_at: 0,
            latest: l,
        };
        let good = latest(
            "ok",
            serde_json::json!({"series": [series("inference_fps", ("model", "m"), 30.0), series("accel_temperature_celsius", ("accel", "npu0"), 60.0)]}),
            now,
        );
        assert_eq!(assess(&r, &seen(true, Some(&good)), now).0, "ok");
        let slow = latest(
            "ok",
            serde_json::json!({"series": [series("inference_fps", ("model", "m"), 2.0)]}),
            now,
        );
        let (s, why) = assess(&r, &seen(true, Some(&slow)), now);
        assert_eq!(s, "degraded");
        assert!(why[0].contains("model m"), "{why:?}");
        let hot = latest(
            "ok",
            serde_json::json!({"series": [series("inference_fps", ("model", "m"), 2.0), series("accel_temperature_celsius", ("accel", "npu0"), 91.0)]}),
            now,
        );
        let (s, why) = assess(&r, &seen(true, Some(&hot)), now);
        assert_eq!((s, why.len()), ("critical", 2));
        let full = latest(
            "ok",
            serde_json::json!({"series": [series("disk_used_ratio", ("mountpoint", "/"), 0.95)]}),
            now,
        );
        assert_eq!(assess(&r, &seen(true, Some(&full)), now).0, "degraded");
        let failed = latest("failed", serde_json::json!({}), now);
        assert_eq!(assess(&r, &seen(true, Some(&failed)), now).0, "degraded");
        // No telemetry is not a problem; being offline long is.
        let none = latest("none", serde_json::json!({}), now);
        assert_eq!(assess(&r, &seen(true, Some(&none)), now).0, "unknown");
        assert_eq!(assess(&r, &seen(true, None), now).0, "unknown");
        let stale = latest("ok", serde_json::json!({}), now - STALE_MS - 1);
        assert_eq!(assess(&r, &seen(true, Some(&stale)), now).0, "unknown");
        assert_eq!(assess(&r, &seen(false, Some(&good)), now).0, "unknown");
        let gone = Seen {
            online: Some(false),
            last_seen: Some(now - 11 * 60_000),
            created_at: 0,
            latest: None,
        };
        assert_eq!(assess(&r, &gone, now).0, "critical");
        assert!(notifies("ok", "degraded") && notifies("critical", "ok"));
        assert!(!notifies("ok", "unknown") && !notifies("unknown", "ok"));
    }
}
