//! Device health and what it sets off: each owner's rules, each device's
//! state, the owner's webhooks and their delivery log. A state change, its
//! audit event and one delivery per webhook commit in one transaction,
//! and the change is a guarded update (it must find the state it
//! replaces), so of several api-servers evaluating at once exactly one
//! reports it.

use crate::{parse_id, Device, Store, StoreError};
use edge_core::{DeviceId, Secret, UserId};
use sqlx::any::AnyRow;
use sqlx::Row;
use std::collections::HashMap;

/// An owner's health rules.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HealthRules {
    /// Degraded while a model runs below this many frames per second.
    pub fps_floor: f64,
    /// Critical while an accelerator is at least this hot (°C).
    pub accel_temp_ceiling: f64,
    /// Degraded while a filesystem is at least this full (0–1).
    pub disk_ceiling: f64,
    /// Critical once the device has been offline this long.
    pub offline_minutes: i64,
}

impl Default for HealthRules {
    fn default() -> Self {
        Self {
            fps_floor: 5.0,
            accel_temp_ceiling: 85.0,
            disk_ceiling: 0.9,
            offline_minutes: 10,
        }
    }
}

/// A device's health state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceHealth {
    pub device_id: DeviceId,
    /// `ok`, `degraded`, `critical` or `unknown`.
    pub state: String,
    pub reasons: Vec<String>,
    pub since: i64,
}

/// A registered webhook (its secret never leaves the store but to sign).
#[derive(Debug, Clone)]
pub struct Webhook {
    pub id: String,
    pub owner_id: UserId,
    pub url: String,
    pub secret: Secret,
    pub created_at: i64,
}

/// One delivery of one event to one webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: String,
    pub webhook_id: String,
    pub body: String,
    pub created_at: i64,
    pub attempts: i64,
    /// `None`: delivered, or given up.
    pub next_attempt_at: Option<i64>,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub delivered_at: Option<i64>,
}

/// Most webhooks one owner may register.
pub const MAX_WEBHOOKS_PER_OWNER: i64 = 10;

fn webhook_from_row(row: &AnyRow) -> Result<Webhook, StoreError> {
    let secret: String = row.try_get("secret")?;
    Ok(Webhook {
        id: row.try_get("id")?,
        owner_id: parse_id(row, "owner_id")?,
        url: row.try_get("url")?,
        secret: Secret::new(secret),
        created_at: row.try_get("created_at")?,
    })
}

fn delivery_from_row(row: &AnyRow) -> Result<Delivery, StoreError> {
    Ok(Delivery {
        id: row.try_get("id")?,
        webhook_id: row.try_get("webhook_id")?,
        body: row.try_get("body")?,
        created_at: row.try_get("created_at")?,
        attempts: row.try_get("attempts")?,
        next_attempt_at: row.try_get("next_attempt_at")?,
        last_status: row.try_get("last_status")?,
        last_error: row.try_get("last_error")?,
        delivered_at: row.try_get("delivered_at")?,
    })
}

fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

impl Store {
    /// `owner`'s rules (the defaults while they set none).
    pub async fn health_rules(&self, owner: UserId) -> Result<HealthRules, StoreError> {
        let row = sqlx::query("SELECT * FROM health_rules WHERE owner_id = $1")
            .bind(owner.to_string())
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else {
            return Ok(HealthRules::default());
        };
        Ok(HealthRules {
            fps_floor: row.try_get("fps_floor")?,
            accel_temp_ceiling: row.try_get("accel_temp_ceiling")?,
            disk_ceiling: row.try_get("disk_ceiling")?,
            offline_minutes: row.try_get("offline_minutes")?,
        })
    }

    /// Replace `owner`'s rules.
    pub async fn set_health_rules(&self, owner: UserId, r: &HealthRules) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO health_rules (owner_id, fps_floor, accel_temp_ceiling, disk_ceiling, offline_minutes, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (owner_id) DO UPDATE SET fps_floor = excluded.fps_floor,
                 accel_temp_ceiling = excluded.accel_temp_ceiling, disk_ceiling = excluded.disk_ceiling,
                 offline_minutes = excluded.offline_minutes, updated_at = excluded.updated_at",
        )
        .bind(owner.to_string())
        .bind(r.fps_floor)
        .bind(r.accel_temp_ceiling)
        .bind(r.disk_ceiling)
        .bind(r.offline_minutes)
        .bind(edge_core::time::now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The health of `owner`'s `devices` that have one.
    pub async fn device_health(
        &self,
        owner: UserId,
        devices: &[DeviceId],
    ) -> Result<HashMap<DeviceId, DeviceHealth>, StoreError> {
        let mut out = HashMap::new();
        for chunk in devices.chunks(500) {
            let marks: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 2)).collect();
            let sql = format!(
                "SELECT * FROM device_health WHERE owner_id = $1 AND device_id IN ({})",
                marks.join(",")
            );
            let mut q = sqlx::query(&sql).bind(owner.to_string());
            for d in chunk {
                q = q.bind(d.to_string());
            }
            for row in q.fetch_all(&self.pool).await? {
                let reasons: String = row.try_get("reasons")?;
                let h = DeviceHealth {
                    device_id: parse_id(&row, "device_id")?,
                    state: row.try_get("state")?,
                    reasons: serde_json::from_str(&reasons).unwrap_or_default(),
                    since: row.try_get("since")?,
                };
                out.insert(h.device_id, h);
            }
        }
        Ok(out)
    }

    /// A page of every owner's live devices after `after` (by id), for the
    /// health pass (a system job: it acts for no user).
    pub async fn devices_for_health_pass(
        &self,
        after: Option<DeviceId>,
        limit: i64,
    ) -> Result<Vec<Device>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM devices WHERE revoked_at IS NULL AND id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after.map(|d| d.to_string()).unwrap_or_default())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(crate::devices::device_from_row).collect()
    }

    /// Record that `device` went from `from` (`None`: no state yet) to
    /// `to`, with its audit event and, when `notify`, one delivery of
    /// `event(delivery_id)` per webhook of the owner, in one transaction.
    /// `false`: another evaluator recorded a change first; nothing written.
    pub async fn change_health(
        &self,
        device: &Device,
        from: Option<&str>,
        to: &DeviceHealth,
        notify: bool,
        event: impl Fn(&str) -> String,
    ) -> Result<bool, StoreError> {
        let mut tx = self.write_tx().await?;
        let reasons = serde_json::to_string(&to.reasons).unwrap_or_else(|_| "[]".into());
        let changed = match from {
            None => sqlx::query(
                "INSERT INTO device_health (device_id, owner_id, state, reasons, since)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (device_id) DO NOTHING",
            )
            .bind(device.id.to_string())
            .bind(device.owner_id.to_string())
            .bind(&to.state)
            .bind(&reasons)
            .bind(to.since)
            .execute(&mut *tx)
            .await?
            .rows_affected(),
            Some(from) => sqlx::query(
                "UPDATE device_health SET state = $1, reasons = $2, since = $3
                 WHERE device_id = $4 AND state = $5",
            )
            .bind(&to.state)
            .bind(&reasons)
            .bind(to.since)
            .bind(device.id.to_string())
            .bind(from)
            .execute(&mut *tx)
            .await?
            .rows_affected(),
        };
        if changed != 1 {
            return Ok(false);
        }
        self.audit_on(
            &mut *tx,
            device.owner_id,
            "device_health_changed",
            Some(&device.id.to_string()),
            serde_json::json!({"from": from.unwrap_or("unknown"), "to": to.state, "reasons": to.reasons}),
            to.since,
        )
        .await?;
        if notify {
            let hooks = sqlx::query("SELECT id FROM webhooks WHERE owner_id = $1")
                .bind(device.owner_id.to_string())
                .fetch_all(&mut *tx)
                .await?;
            for hook in hooks {
                let hook: String = hook.try_get("id")?;
                let id = new_id();
                sqlx::query(
                    "INSERT INTO webhook_deliveries (id, webhook_id, owner_id, body, created_at, attempts, next_attempt_at)
                     VALUES ($1, $2, $3, $4, $5, 0, $5)",
                )
                .bind(&id)
                .bind(&hook)
                .bind(device.owner_id.to_string())
                .bind(event(&id))
                .bind(to.since)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(true)
    }

    /// `owner`'s webhooks, oldest first.
    pub async fn webhooks(&self, owner: UserId) -> Result<Vec<Webhook>, StoreError> {
        sqlx::query("SELECT * FROM webhooks WHERE owner_id = $1 ORDER BY created_at, id")
            .bind(owner.to_string())
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(webhook_from_row)
            .collect()
    }

    /// Register a webhook for `owner`; `QuotaExceeded` past the limit.
    pub async fn create_webhook(
        &self,
        owner: UserId,
        url: &str,
        secret: &Secret,
    ) -> Result<Webhook, StoreError> {
        let hook = Webhook {
            id: new_id(),
            owner_id: owner,
            url: url.to_owned(),
            secret: secret.clone(),
            created_at: edge_core::time::now_ms(),
        };
        // One statement: the count and the insert cannot interleave with
        // another registration (and SQLite takes its write lock at once).
        let n = sqlx::query(
            "INSERT INTO webhooks (id, owner_id, url, secret, created_at)
             SELECT $1, $2, $3, $4, $5
             WHERE (SELECT COUNT(*) FROM webhooks WHERE owner_id = $2) < $6",
        )
        .bind(&hook.id)
        .bind(owner.to_string())
        .bind(url)
        .bind(secret.expose())
        .bind(hook.created_at)
        .bind(MAX_WEBHOOKS_PER_OWNER)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if n == 0 {
            return Err(StoreError::QuotaExceeded);
        }
        Ok(hook)
    }

    /// Delete `owner`'s webhook `id` and its log; `false` when there is none.
    pub async fn delete_webhook(&self, owner: UserId, id: &str) -> Result<bool, StoreError> {
        let mut tx = self.write_tx().await?;
        let n = sqlx::query("DELETE FROM webhooks WHERE id = $1 AND owner_id = $2")
            .bind(id)
            .bind(owner.to_string())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query("DELETE FROM webhook_deliveries WHERE webhook_id = $1 AND owner_id = $2")
            .bind(id)
            .bind(owner.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(n == 1)
    }

    /// The newest `limit` deliveries of `owner`'s webhook `id`; `None` when
    /// the webhook is not theirs.
    pub async fn deliveries(
        &self,
        owner: UserId,
        id: &str,
        limit: i64,
    ) -> Result<Option<Vec<Delivery>>, StoreError> {
        let hook = sqlx::query("SELECT id FROM webhooks WHERE id = $1 AND owner_id = $2")
            .bind(id)
            .bind(owner.to_string())
            .fetch_optional(&self.pool)
            .await?;
        if hook.is_none() {
            return Ok(None);
        }
        let rows = sqlx::query(
            "SELECT * FROM webhook_deliveries WHERE webhook_id = $1 AND owner_id = $2
             ORDER BY created_at DESC, id LIMIT $3",
        )
        .bind(id)
        .bind(owner.to_string())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(delivery_from_row)
            .collect::<Result<_, _>>()
            .map(Some)
    }

    /// Deliveries due by `now` with their webhook, oldest first (a system
    /// job: the delivery worker).
    pub async fn due_deliveries(
        &self,
        now: i64,
        limit: i64,
    ) -> Result<Vec<(Delivery, Webhook)>, StoreError> {
        let rows = sqlx::query(
            "SELECT d.*, w.url, w.secret, w.created_at AS hook_created_at, w.owner_id AS hook_owner
             FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id
             WHERE d.next_attempt_at IS NOT NULL AND d.next_attempt_at <= $1
             ORDER BY d.next_attempt_at LIMIT $2",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let secret: String = row.try_get("secret")?;
                Ok((
                    delivery_from_row(row)?,
                    Webhook {
                        id: row.try_get("webhook_id")?,
                        owner_id: parse_id(row, "hook_owner")?,
                        url: row.try_get("url")?,
                        secret: Secret::new(secret),
                        created_at: row.try_get("hook_created_at")?,
                    },
                ))
            })
            .collect()
    }

    /// Take delivery `id` for an attempt until `until` (ms) if it is still
    /// due at `due`; `false` when another worker took it.
    pub async fn claim_delivery(&self, id: &str, due: i64, until: i64) -> Result<bool, StoreError> {
        let n = sqlx::query(
            "UPDATE webhook_deliveries SET next_attempt_at = $1 WHERE id = $2 AND next_attempt_at = $3",
        )
        .bind(until)
        .bind(id)
        .bind(due)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// Record an attempt's result: `next` is when to try again (`None`:
    /// delivered, or given up).
    pub async fn record_attempt(
        &self,
        id: &str,
        attempts: i64,
        status: Option<i64>,
        error: Option<&str>,
        next: Option<i64>,
        delivered_at: Option<i64>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE webhook_deliveries SET attempts = $1, last_status = $2, last_error = $3,
                 next_attempt_at = $4, delivered_at = $5 WHERE id = $6",
        )
        .bind(attempts)
        .bind(status)
        .bind(error)
        .bind(next)
        .bind(delivered_at)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
