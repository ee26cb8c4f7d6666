//! The append-only audit log. Events are only ever inserted; reads are by
//! owner, newest first, paginated.

use crate::{Store, StoreError};
use edge_core::{time::now_ms, UserId};
use serde::Serialize;
use sqlx::Row;

/// Who an event is recorded under: always the owning user; and the
/// service account that acted for them, when one did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub user: UserId,
    pub service_account: Option<String>,
}

impl From<UserId> for Actor {
    fn from(user: UserId) -> Self {
        Self {
            user,
            service_account: None,
        }
    }
}

/// An event to append (the batch writer's unit).
#[derive(Debug, Clone, PartialEq)]
pub struct NewAuditEvent {
    pub actor: Actor,
    pub action: &'static str,
    pub target: Option<String>,
    pub detail: serde_json::Value,
    /// Unix ms when it happened.
    pub at: i64,
}

/// One audit event as its user sees it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AuditEvent {
    pub id: String,
    pub action: String,
    pub target: Option<String>,
    /// The service account that acted (the owner's own actions: none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
    pub created_at: i64,
}

impl Store {
    /// Append an event for `actor` (a user, or a service account and its owner).
    pub async fn audit(
        &self,
        actor: impl Into<Actor>,
        action: &str,
        target: Option<&str>,
        detail: serde_json::Value,
    ) -> Result<(), StoreError> {
        self.audit_on(&self.pool, actor, action, target, detail, now_ms())
            .await
    }

    /// Append `events` in one transaction (all or none).
    pub async fn audit_batch(&self, events: &[NewAuditEvent]) -> Result<(), StoreError> {
        #[cfg(feature = "testing")]
        if self
            .faults
            .audit_unavailable
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            return Err(StoreError::Database(sqlx::Error::PoolTimedOut));
        }
        let mut tx = self.write_tx().await?;
        for e in events {
            self.audit_on(
                &mut *tx,
                e.actor.clone(),
                e.action,
                e.target.as_deref(),
                e.detail.clone(),
                e.at,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// [`audit`](Self::audit) on a given connection or transaction, so an
    /// event can commit (or roll back) together with what it records.
    pub(crate) async fn audit_on<'e, E>(
        &self,
        exec: E,
        actor: impl Into<Actor>,
        action: &str,
        target: Option<&str>,
        detail: serde_json::Value,
        at: i64,
    ) -> Result<(), StoreError>
    where
        E: sqlx::Executor<'e, Database = sqlx::Any>,
    {
        let actor = actor.into();
        let seq = self
            .audit_seq
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        sqlx::query(
            "INSERT INTO audit_events (id, seq, user_id, action, target, detail, created_at, service_account)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(uuid::Uuid::new_v4().simple().to_string())
        .bind(seq)
        .bind(actor.user.to_string())
        .bind(action)
        .bind(target)
        .bind(detail.to_string())
        .bind(at)
        .bind(actor.service_account)
        .execute(exec)
        .await?;
        Ok(())
    }

    /// The user's events, newest first.
    pub async fn audit_events(
        &self,
        user: UserId,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM audit_events WHERE user_id = $1 ORDER BY created_at DESC, seq DESC LIMIT $2 OFFSET $3",
        )
        .bind(user.to_string())
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let detail: String = r.try_get("detail")?;
                Ok(AuditEvent {
                    id: r.try_get("id")?,
                    action: r.try_get("action")?,
                    target: r.try_get("target")?,
                    service_account: r.try_get("service_account")?,
                    detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null),
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect()
    }

    /// How many events of `action` the log holds for `user` (operators'
    /// and harnesses' check that nothing was lost).
    pub async fn audit_count(&self, user: UserId, action: &str) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM audit_events WHERE user_id = $1 AND action = $2",
        )
        .bind(user.to_string())
        .bind(action)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("n")?)
    }
}
