//! Deleting what has expired: sessions past their absolute or idle limit,
//! pairing codes a day after they expired (used or not), entry tickets and
//! logout-token records past their window, and audit events older than the
//! retention, the latter in batches so no statement holds the table long.

use crate::{Store, StoreError};

/// How much one sweep deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    pub sessions: u64,
    pub pairing_codes: u64,
    pub tickets: u64,
    pub logout_tokens: u64,
    pub audit_events: u64,
}

/// Pairing codes stay this long after expiry (ms), so their owner still
/// sees what became of them.
const CODE_GRACE_MS: i64 = 86_400_000;

impl Store {
    /// Delete what expired by `now` (ms): sessions idle since
    /// `now - idle_ms`, and audit events created before `audit_before`,
    /// `batch` rows per statement.
    pub async fn sweep(
        &self,
        now: i64,
        idle_ms: i64,
        audit_before: i64,
        batch: i64,
    ) -> Result<Swept, StoreError> {
        let run = |sql: &'static str, a: i64| async move {
            sqlx::query(sql)
                .bind(a)
                .execute(&self.pool)
                .await
                .map(|d| d.rows_affected())
        };
        let sessions =
            sqlx::query("DELETE FROM user_sessions WHERE expires_at <= $1 OR last_seen_at <= $2")
                .bind(now)
                .bind(now.saturating_sub(idle_ms))
                .execute(&self.pool)
                .await?
                .rows_affected();
        let pairing_codes = run(
            "DELETE FROM pairing_codes WHERE expires_at <= $1",
            now - CODE_GRACE_MS,
        )
        .await?;
        let tickets = run("DELETE FROM device_tickets WHERE expires_at <= $1", now).await?;
        let logout_tokens =
            run("DELETE FROM logout_tokens_seen WHERE expires_at < $1", now).await?;
        let mut audit_events = 0;
        loop {
            let n = sqlx::query(
                "DELETE FROM audit_events WHERE id IN
                 (SELECT id FROM audit_events WHERE created_at < $1 LIMIT $2)",
            )
            .bind(audit_before)
            .bind(batch.max(1))
            .execute(&self.pool)
            .await?
            .rows_affected();
            audit_events += n;
            if n < u64::try_from(batch.max(1)).unwrap_or(u64::MAX) {
                break;
            }
        }
        Ok(Swept {
            sessions,
            pairing_codes,
            tickets,
            logout_tokens,
            audit_events,
        })
    }
}
