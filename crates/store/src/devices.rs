//! Devices and their credentials. Reads of a device always filter by owner;
//! credential checks go by token hash only (the relay has no user).

use crate::{parse_id, Device, DeviceAuth, DeviceQuery, DeviceSort, NewDevice, Store, StoreError};
use edge_core::{time::now_ms, DeviceId, UserId};
use sqlx::any::AnyRow;
use sqlx::Row;

/// A JSON array of labels, as devices and service accounts' selectors
/// keep them.
pub(crate) fn parse_labels(json: &str) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(json).map_err(|_| StoreError::Corrupt("labels".into()))
}

pub(crate) fn device_from_row(row: &AnyRow) -> Result<Device, StoreError> {
    let labels: String = row.try_get("labels")?;
    Ok(Device {
        id: parse_id(row, "id")?,
        owner_id: parse_id(row, "owner_id")?,
        name: row.try_get("name")?,
        labels: parse_labels(&labels)?,
        model: row.try_get("model")?,
        serial: row.try_get("serial")?,
        agent_version: row.try_get("agent_version")?,
        created_at: row.try_get("created_at")?,
        last_seen_at: row.try_get("last_seen_at")?,
        metrics_path: row.try_get("metrics_path")?,
    })
}

impl Store {
    /// Create a device owned by `owner`.
    pub async fn create_device(
        &self,
        owner: UserId,
        new: &NewDevice,
    ) -> Result<Device, StoreError> {
        let id = DeviceId::new();
        sqlx::query(
            "INSERT INTO devices (id, owner_id, name, labels, model, serial, agent_version, created_at)
             VALUES ($1, $2, $3, '[]', $4, $5, $6, $7)",
        )
        .bind(id.to_string())
        .bind(owner.to_string())
        .bind(&new.name)
        .bind(new.model.as_deref())
        .bind(new.serial.as_deref())
        .bind(new.agent_version.as_deref())
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        self.device(owner, id).await?.ok_or(StoreError::NotFound)
    }

    /// The caller's device `id`; `None` when missing, revoked or not theirs.
    pub async fn device(&self, owner: UserId, id: DeviceId) -> Result<Option<Device>, StoreError> {
        sqlx::query("SELECT * FROM devices WHERE id = $1 AND owner_id = $2 AND revoked_at IS NULL")
            .bind(id.to_string())
            .bind(owner.to_string())
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(device_from_row)
            .transpose()
    }

    /// The caller's live devices, oldest first.
    pub async fn devices(&self, owner: UserId) -> Result<Vec<Device>, StoreError> {
        sqlx::query(
            "SELECT * FROM devices WHERE owner_id = $1 AND revoked_at IS NULL ORDER BY created_at, id",
        )
        .bind(owner.to_string())
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(device_from_row)
        .collect()
    }

    /// Record that the relay saw each device's tunnel at its time (ms), in
    /// one transaction; no owner scope, as the relay acts for the devices,
    /// not for a user. A time never moves back (an older time noted late
    /// changes nothing).
    pub async fn mark_devices_seen(&self, seen: &[(DeviceId, i64)]) -> Result<(), StoreError> {
        if seen.is_empty() {
            return Ok(());
        }
        let mut tx = self.write_tx().await?;
        for (device, at) in seen {
            sqlx::query(
                "UPDATE devices SET last_seen_at = $1 WHERE id = $2 AND (last_seen_at IS NULL OR last_seen_at < $3)",
            )
            .bind(*at)
            .bind(device.to_string())
            .bind(*at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Store a credential (by hash) for a device.
    pub async fn add_credential(
        &self,
        device: DeviceId,
        token_hash: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO device_credentials (token_hash, device_id, created_at) VALUES ($1, $2, $3)",
        )
        .bind(token_hash)
        .bind(device.to_string())
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Check a presented credential: the device it belongs to, when neither
    /// the credential nor the device is revoked.
    pub async fn authenticate_device(
        &self,
        token_hash: &str,
    ) -> Result<Option<DeviceAuth>, StoreError> {
        let row = sqlx::query(
            "SELECT d.id AS id, d.owner_id AS owner_id, d.metrics_path AS metrics_path
             FROM device_credentials c JOIN devices d ON d.id = c.device_id
             WHERE c.token_hash = $1 AND c.revoked_at IS NULL AND d.revoked_at IS NULL",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(DeviceAuth {
                device_id: parse_id(&r, "id")?,
                owner_id: parse_id(&r, "owner_id")?,
                metrics_path: r.try_get("metrics_path")?,
            })
        })
        .transpose()
    }

    /// Revoke every live credential of a device; returns how many.
    pub async fn revoke_credentials(&self, device: DeviceId) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE device_credentials SET revoked_at = $1 WHERE device_id = $2 AND revoked_at IS NULL",
        )
        .bind(now_ms())
        .bind(device.to_string())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// A page of the caller's live devices matching `q` (see
    /// [`DeviceQuery`]), in its order.
    pub async fn devices_query(
        &self,
        owner: UserId,
        q: &DeviceQuery,
    ) -> Result<Vec<Device>, StoreError> {
        let (filter, values) = self.device_filter(q);
        let order = match q.sort {
            DeviceSort::Created => "d.created_at, d.id",
            DeviceSort::CreatedDesc => "d.created_at DESC, d.id",
            DeviceSort::Name => "LOWER(d.name), d.id",
            DeviceSort::NameDesc => "LOWER(d.name) DESC, d.id",
        };
        let limit = values.len() + 2;
        let sql = format!(
            "SELECT d.* FROM devices d LEFT JOIN device_health h ON h.device_id = d.id
             WHERE d.owner_id = $1 AND d.revoked_at IS NULL{filter}
             ORDER BY {order} LIMIT ${limit} OFFSET ${}",
            limit + 1
        );
        let mut query = sqlx::query(&sql).bind(owner.to_string());
        for value in values {
            query = query.bind(value);
        }
        query
            .bind(q.limit)
            .bind(q.offset)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(device_from_row)
            .collect()
    }

    /// The conditions of `q` beyond the owner's, as SQL with placeholders
    /// from `$2` on, and the values they take, in order.
    fn device_filter(&self, q: &DeviceQuery) -> (String, Vec<String>) {
        let mut sql = String::new();
        let mut values = Vec::new();
        let mut param = |value: String| {
            values.push(value);
            format!("${}", values.len() + 1)
        };
        if let Some(s) = &q.search {
            let escaped = s
                .to_lowercase()
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            let p = param(format!("%{escaped}%"));
            sql.push_str(&format!(
                " AND (LOWER(d.name) LIKE {p} ESCAPE '\\' OR LOWER(COALESCE(d.serial, '')) LIKE {p} ESCAPE '\\'
                   OR LOWER(d.labels) LIKE {p} ESCAPE '\\')"
            ));
        }
        if let Some(health) = &q.health {
            let p = param(health.clone());
            sql.push_str(&format!(" AND COALESCE(h.state, 'unknown') = {p}"));
        }
        for label in &q.labels {
            let p = param(label.clone());
            sql.push_str(&match self.backend {
                crate::Backend::Sqlite => {
                    format!(" AND EXISTS (SELECT 1 FROM json_each(d.labels) l WHERE l.value = {p})")
                }
                crate::Backend::Postgres => format!(
                    " AND EXISTS (SELECT 1 FROM jsonb_array_elements_text(d.labels::jsonb) l WHERE l = {p})"
                ),
            });
        }
        if let Some((inside, ids)) = &q.among {
            let marks: Vec<String> = ids.iter().map(|id| param(id.to_string())).collect();
            let list = if marks.is_empty() {
                "''".to_owned()
            } else {
                marks.join(",")
            };
            let not = if *inside { "" } else { "NOT" };
            sql.push_str(&format!(" AND d.id {not} IN ({list})"));
        }
        (sql, values)
    }

    /// Set (or, with `None`, clear) the metrics path of the caller's
    /// device; `false` when it is not theirs.
    pub async fn set_metrics_path(
        &self,
        owner: UserId,
        id: DeviceId,
        path: Option<&str>,
    ) -> Result<bool, StoreError> {
        let n = sqlx::query(
            "UPDATE devices SET metrics_path = $1 WHERE id = $2 AND owner_id = $3 AND revoked_at IS NULL",
        )
        .bind(path)
        .bind(id.to_string())
        .bind(owner.to_string())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// Rename and/or relabel the caller's device; `None` when not theirs.
    pub async fn update_device(
        &self,
        owner: UserId,
        id: DeviceId,
        name: Option<&str>,
        labels: Option<&[String]>,
    ) -> Result<Option<Device>, StoreError> {
        let Some(current) = self.device(owner, id).await? else {
            return Ok(None);
        };
        let labels = serde_json::to_string(labels.unwrap_or(&current.labels))
            .map_err(|_| StoreError::Corrupt("labels".into()))?;
        sqlx::query("UPDATE devices SET name = $1, labels = $2 WHERE id = $3 AND owner_id = $4 AND revoked_at IS NULL")
            .bind(name.unwrap_or(&current.name))
            .bind(labels)
            .bind(id.to_string())
            .bind(owner.to_string())
            .execute(&self.pool)
            .await?;
        self.device(owner, id).await
    }

    /// Delete the caller's device: it is marked revoked together with all
    /// its credentials. False when it is not theirs.
    pub async fn delete_device(&self, owner: UserId, id: DeviceId) -> Result<bool, StoreError> {
        let now = now_ms();
        let mut tx = self.write_tx().await?;
        let done = sqlx::query("UPDATE devices SET revoked_at = $1 WHERE id = $2 AND owner_id = $3 AND revoked_at IS NULL")
            .bind(now)
            .bind(id.to_string())
            .bind(owner.to_string())
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query("UPDATE device_credentials SET revoked_at = $1 WHERE device_id = $2 AND revoked_at IS NULL")
            .bind(now)
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Replace the caller's device credential: every old one is revoked and
    /// `token_hash` becomes the only live one. False when not theirs.
    pub async fn rotate_credential(
        &self,
        owner: UserId,
        id: DeviceId,
        token_hash: &str,
    ) -> Result<bool, StoreError> {
        if self.device(owner, id).await?.is_none() {
            return Ok(false);
        }
        let now = now_ms();
        let mut tx = self.write_tx().await?;
        sqlx::query("UPDATE device_credentials SET revoked_at = $1 WHERE device_id = $2 AND revoked_at IS NULL")
            .bind(now)
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO device_credentials (token_hash, device_id, created_at) VALUES ($1, $2, $3)")
            .bind(token_hash)
            .bind(id.to_string())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }
}
