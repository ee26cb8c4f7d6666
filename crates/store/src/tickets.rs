//! Device-origin entry tickets: single use, short-lived, stored by hash and
//! bound to the user, the user's session and one device. Redeeming is one
//! conditional update, so a ticket works once even across replicas.

use crate::{parse_id, RedeemedTicket, Store, StoreError};
use edge_core::{DeviceId, UserId};
use sqlx::Row;

impl Store {
    /// Store a ticket (by hash) for `user`'s session `session_hash` on `device`.
    pub async fn create_device_ticket(
        &self,
        ticket_hash: &str,
        user: UserId,
        session_hash: &str,
        device: DeviceId,
        now: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM device_tickets WHERE expires_at < $1")
            .bind(now)
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "INSERT INTO device_tickets (ticket_hash, user_id, session_hash, device_id, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(ticket_hash)
        .bind(user.to_string())
        .bind(session_hash)
        .bind(device.to_string())
        .bind(now)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Redeem a ticket for `device`: `None` when unknown, used, expired or
    /// issued for another device. A ticket redeems at most once.
    pub async fn redeem_device_ticket(
        &self,
        ticket_hash: &str,
        device: DeviceId,
        now: i64,
    ) -> Result<Option<RedeemedTicket>, StoreError> {
        let row = sqlx::query(
            "UPDATE device_tickets SET used_at = $1
             WHERE ticket_hash = $2 AND device_id = $3 AND used_at IS NULL AND expires_at > $1
             RETURNING user_id, session_hash",
        )
        .bind(now)
        .bind(ticket_hash)
        .bind(device.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(RedeemedTicket {
                user_id: parse_id(&r, "user_id")?,
                session_hash: r.try_get("session_hash")?,
            })
        })
        .transpose()
    }
}
