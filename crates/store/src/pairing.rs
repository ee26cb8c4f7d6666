//! Pairing codes and the pairing exchange. A code is stored as a hash, bound
//! to its creator, single use. The exchange creates the device, stores its
//! credential and marks the code used with one conditional update, all in
//! one transaction: if marking fails for any reason nothing is kept.

use crate::{parse_id, Device, NewDevice, Store, StoreError};
use edge_core::{time::now_ms, DeviceId, UserId};
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;

/// A pending pairing code as its owner sees it (never the code itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PairingCode {
    pub id: String,
    pub created_at: i64,
    pub expires_at: i64,
}

fn code_from_row(row: &AnyRow) -> Result<PairingCode, StoreError> {
    Ok(PairingCode {
        id: row.try_get("id")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
    })
}

/// Why an exchange failed. Callers show one error for all but `Store`.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error("no live pairing code matches")]
    InvalidCode,
    #[error("the code's owner has {0} devices, the most allowed")]
    DeviceQuota(i64),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One exchange's parts, passed between its steps.
struct Exchange<'a> {
    owner: UserId,
    device: DeviceId,
    code_id: &'a str,
    new: &'a NewDevice,
    now: i64,
}

impl Store {
    /// Store a new code (by hash) for `owner`.
    pub async fn create_pairing_code(
        &self,
        owner: UserId,
        code_hash: &str,
        expires_at: i64,
    ) -> Result<PairingCode, StoreError> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let now = now_ms();
        sqlx::query(
            "INSERT INTO pairing_codes (id, code_hash, owner_id, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&id)
        .bind(code_hash)
        .bind(owner.to_string())
        .bind(now)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(PairingCode {
            id,
            created_at: now,
            expires_at,
        })
    }

    /// How many of the owner's codes can still be used.
    pub async fn pending_pairing_code_count(
        &self,
        owner: UserId,
        now: i64,
    ) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM pairing_codes WHERE owner_id = $1 AND used_at IS NULL
             AND cancelled_at IS NULL AND expires_at > $2",
        )
        .bind(owner.to_string())
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("n")?)
    }

    /// The owner's codes that can still be used, newest first.
    pub async fn pending_pairing_codes(
        &self,
        owner: UserId,
        now: i64,
    ) -> Result<Vec<PairingCode>, StoreError> {
        sqlx::query(
            "SELECT * FROM pairing_codes WHERE owner_id = $1 AND used_at IS NULL AND cancelled_at IS NULL
             AND expires_at > $2 ORDER BY created_at DESC, id",
        )
        .bind(owner.to_string())
        .bind(now)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(code_from_row)
        .collect()
    }

    /// Cancel one of the owner's pending codes; false when there is none.
    pub async fn cancel_pairing_code(&self, owner: UserId, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE pairing_codes SET cancelled_at = $1
             WHERE id = $2 AND owner_id = $3 AND used_at IS NULL AND cancelled_at IS NULL",
        )
        .bind(now_ms())
        .bind(id)
        .bind(owner.to_string())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Exchange a live code for a new device owned by the code's creator,
    /// with `token_hash` as its credential. One transaction: the device, its
    /// credential and the audit events (`pairing_code_used`,
    /// `device_paired`) exist only if the conditional "mark used" and the
    /// audit inserts all succeeded.
    pub async fn exchange_pairing_code(
        &self,
        code_hash: &str,
        new: &NewDevice,
        token_hash: &str,
        now: i64,
        max_devices: i64,
    ) -> Result<(Device, String), ExchangeError> {
        let (code_id, owner) = self.live_code(code_hash, now).await?;
        let ex = Exchange {
            owner,
            device: DeviceId::new(),
            code_id: &code_id,
            new,
            now,
        };
        let mut tx = self.write_tx().await.map_err(StoreError::from)?;
        if let Err(err) = self.insert_within_quota(&mut tx, &ex, max_devices).await {
            let _ = tx.rollback().await;
            return Err(err);
        }
        let used = self.use_code(&mut tx, &ex, token_hash).await;
        match used {
            Ok(1) => tx.commit().await.map_err(StoreError::from)?,
            Ok(_) => {
                tx.rollback().await.map_err(StoreError::from)?;
                return Err(ExchangeError::InvalidCode);
            }
            Err(err) => {
                // Roll back; should the connection be gone, the transaction
                // dies with it. Revoke by hash too, in case anything stuck.
                let _ = tx.rollback().await;
                let _ = sqlx::query(
                    "UPDATE device_credentials SET revoked_at = $1 WHERE token_hash = $2",
                )
                .bind(now)
                .bind(token_hash)
                .execute(&self.pool)
                .await;
                return Err(err.into());
            }
        }
        let dev = self
            .device(owner, ex.device)
            .await?
            .ok_or(StoreError::NotFound)?;
        Ok((dev, code_id))
    }

    /// The id and creator of the live code with `code_hash`.
    async fn live_code(
        &self,
        code_hash: &str,
        now: i64,
    ) -> Result<(String, UserId), ExchangeError> {
        let row = sqlx::query(
            "SELECT id, owner_id FROM pairing_codes WHERE code_hash = $1 AND used_at IS NULL
             AND cancelled_at IS NULL AND expires_at > $2",
        )
        .bind(code_hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::from)?
        .ok_or(ExchangeError::InvalidCode)?;
        let code_id: String = row.try_get("id").map_err(StoreError::from)?;
        Ok((code_id, parse_id(&row, "owner_id")?))
    }

    /// The exchange's first step: the new device, refused past the owner's
    /// quota (the caller rolls back).
    async fn insert_within_quota(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        ex: &Exchange<'_>,
        max_devices: i64,
    ) -> Result<(), ExchangeError> {
        let (owner, new) = (ex.owner, ex.new);
        if self.backend == crate::Backend::Postgres {
            // READ COMMITTED lets two exchanges each count before the
            // other commits; holding the owner's row makes them take turns.
            // (SQLite has one writer at a time, and the transaction begins
            // with a write.)
            sqlx::query("SELECT id FROM users WHERE id = $1 FOR UPDATE")
                .bind(owner.to_string())
                .execute(&mut **tx)
                .await
                .map_err(StoreError::from)?;
        }
        sqlx::query(
            "INSERT INTO devices (id, owner_id, name, labels, model, serial, agent_version, created_at)
             VALUES ($1, $2, $3, '[]', $4, $5, $6, $7)",
        )
        .bind(ex.device.to_string())
        .bind(owner.to_string())
        .bind(&new.name)
        .bind(new.model.as_deref())
        .bind(new.serial.as_deref())
        .bind(new.agent_version.as_deref())
        .bind(ex.now)
        .execute(&mut **tx)
        .await
        .map_err(StoreError::from)?;
        // Counted after the insert, so the transaction begins with a write
        // (SQLite cannot upgrade a read under contention); with the owner's
        // row locked on PostgreSQL, the quota is exact for concurrent
        // exchanges on both.
        let owned: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM devices WHERE owner_id = $1 AND revoked_at IS NULL",
        )
        .bind(owner.to_string())
        .fetch_one(&mut **tx)
        .await
        .and_then(|r| r.try_get("n"))
        .map_err(StoreError::from)?;
        if owned > max_devices {
            return Err(ExchangeError::DeviceQuota(owned - 1));
        }
        Ok(())
    }

    /// The exchange's second step: the device's credential, the code
    /// marked used (conditionally: 1 when it still was live) and, then,
    /// the audit events.
    async fn use_code(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        ex: &Exchange<'_>,
        token_hash: &str,
    ) -> Result<u64, StoreError> {
        let (device, now) = (ex.device, ex.now);
        sqlx::query("INSERT INTO device_credentials (token_hash, device_id, created_at) VALUES ($1, $2, $3)")
            .bind(token_hash)
            .bind(device.to_string())
            .bind(now)
            .execute(&mut **tx)
            .await?;
        if self.fault_mark_used() {
            return Err(StoreError::Injected);
        }
        let marked = sqlx::query(
            "UPDATE pairing_codes SET used_at = $1, device_id = $2
             WHERE id = $3 AND used_at IS NULL AND cancelled_at IS NULL AND expires_at > $1",
        )
        .bind(now)
        .bind(device.to_string())
        .bind(ex.code_id)
        .execute(&mut **tx)
        .await?
        .rows_affected();
        if marked == 1 {
            self.audit_exchange(tx, ex.owner, device, ex.code_id, ex.new)
                .await?;
        }
        Ok(marked)
    }
}

impl Store {
    /// The exchange's two audit events, inside its transaction.
    async fn audit_exchange(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        owner: UserId,
        device: DeviceId,
        code_id: &str,
        new: &NewDevice,
    ) -> Result<(), StoreError> {
        if self.fault_exchange_audit() {
            return Err(StoreError::Injected);
        }
        let dev = device.to_string();
        self.audit_on(
            &mut **tx,
            owner,
            "pairing_code_used",
            Some(code_id),
            serde_json::json!({ "device_id": dev }),
            edge_core::time::now_ms(),
        )
        .await?;
        self.audit_on(
            &mut **tx,
            owner,
            "device_paired",
            Some(&dev),
            serde_json::json!({ "name": new.name, "model": new.model }),
            edge_core::time::now_ms(),
        )
        .await
    }
}

impl Store {
    #[cfg(feature = "testing")]
    fn fault_mark_used(&self) -> bool {
        self.faults
            .fail_mark_used
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    #[cfg(not(feature = "testing"))]
    fn fault_mark_used(&self) -> bool {
        false
    }

    #[cfg(feature = "testing")]
    fn fault_exchange_audit(&self) -> bool {
        self.faults
            .fail_exchange_audit
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    #[cfg(not(feature = "testing"))]
    fn fault_exchange_audit(&self) -> bool {
        false
    }
}
