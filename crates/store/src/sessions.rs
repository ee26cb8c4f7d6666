//! Server-side user sessions, looked up by the hash of the session id.

use crate::devices::parse_labels;
use crate::{parse_id, ServiceGrant, SessionKind, SessionRecord, Store, StoreError};
use edge_core::scope::Scopes;
use edge_core::{DeviceId, UserId};
use sqlx::any::AnyRow;
use sqlx::Row;

impl Store {
    /// Store a new session for `user` under `id_hash`; `public_id` names it
    /// in listings (it grants nothing). `idp_sid` is the provider's own
    /// session id from the login (`sid`), so back-channel logout can end it.
    pub async fn create_session(
        &self,
        id_hash: &str,
        public_id: &str,
        user: UserId,
        now: i64,
        expires_at: i64,
        idp_sid: Option<&str>,
    ) -> Result<(), StoreError> {
        self.insert_session(id_hash, public_id, user, (now, expires_at), idp_sid, None)
            .await
    }

    /// Store a new bearer session (ADR 028) for `user`, named `label` in
    /// listings; as [`Store::create_session`] otherwise.
    pub async fn create_bearer_session(
        &self,
        id_hash: &str,
        public_id: &str,
        user: UserId,
        times: (i64, i64),
        idp_sid: Option<&str>,
        label: &str,
    ) -> Result<(), StoreError> {
        self.insert_session(id_hash, public_id, user, times, idp_sid, Some(label))
            .await
    }

    /// A session row: a bearer session when `label` is given.
    async fn insert_session(
        &self,
        id_hash: &str,
        public_id: &str,
        user: UserId,
        (now, expires_at): (i64, i64),
        idp_sid: Option<&str>,
        label: Option<&str>,
    ) -> Result<(), StoreError> {
        let kind = if label.is_some() {
            SessionKind::Bearer
        } else {
            SessionKind::Browser
        };
        sqlx::query(
            "INSERT INTO user_sessions (id_hash, public_id, user_id, created_at, last_seen_at, expires_at, idp_sid, kind, label)
             VALUES ($1, $2, $3, $4, $4, $5, $6, $7, $8)",
        )
        .bind(id_hash)
        .bind(public_id)
        .bind(user.to_string())
        .bind(now)
        .bind(expires_at)
        .bind(idp_sid)
        .bind(kind.as_str())
        .bind(label)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Back-channel logout: delete the sessions the provider names: by its
    /// session id (`sid`; with `subject` too, also that user's sessions
    /// whose login named no sid), or else every session of the user
    /// `(issuer, subject)`. Returns how many.
    pub async fn delete_idp_sessions(
        &self,
        issuer: &str,
        subject: Option<&str>,
        sid: Option<&str>,
    ) -> Result<u64, StoreError> {
        let mut conn = self.pool.acquire().await?;
        delete_idp_sessions_on(&mut conn, issuer, subject, sid).await
    }

    /// Back-channel logout, once per logout token: remember `jti_hash`
    /// (until `expires_at`) and delete the sessions it names in one
    /// transaction. `None` when the token was used already; a failure
    /// leaves neither done, so the provider's retry is not "already used"
    /// while the sessions live on.
    pub async fn end_idp_sessions_once(
        &self,
        jti_hash: &str,
        now: i64,
        expires_at: i64,
        (issuer, subject, sid): (&str, Option<&str>, Option<&str>),
    ) -> Result<Option<u64>, StoreError> {
        let mut tx = self.write_tx().await?;
        sqlx::query("DELETE FROM logout_tokens_seen WHERE expires_at < $1")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        let fresh = sqlx::query(
            "INSERT INTO logout_tokens_seen (jti_hash, expires_at) VALUES ($1, $2) ON CONFLICT (jti_hash) DO NOTHING",
        )
        .bind(jti_hash)
        .bind(expires_at)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !fresh {
            return Ok(None);
        }
        if self.fault_idp_session_delete() {
            return Err(StoreError::Injected);
        }
        let ended = delete_idp_sessions_on(&mut tx, issuer, subject, sid).await?;
        tx.commit().await?;
        Ok(Some(ended))
    }

    #[cfg(feature = "testing")]
    fn fault_idp_session_delete(&self) -> bool {
        self.faults
            .fail_idp_session_delete
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    #[cfg(not(feature = "testing"))]
    fn fault_idp_session_delete(&self) -> bool {
        false
    }

    /// Remember a logout token's `jti` (already hashed with its issuer)
    /// until `expires_at`; false when it was seen before (a replay).
    pub async fn remember_logout_token(
        &self,
        jti_hash: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<bool, StoreError> {
        sqlx::query("DELETE FROM logout_tokens_seen WHERE expires_at < $1")
            .bind(now)
            .execute(&self.pool)
            .await?;
        let done = sqlx::query(
            "INSERT INTO logout_tokens_seen (jti_hash, expires_at) VALUES ($1, $2) ON CONFLICT (jti_hash) DO NOTHING",
        )
        .bind(jti_hash)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The session stored under `id_hash`, if any (expiry is the caller's call).
    pub async fn session(&self, id_hash: &str) -> Result<Option<SessionRecord>, StoreError> {
        sqlx::query("SELECT * FROM user_sessions WHERE id_hash = $1")
            .bind(id_hash)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(session_from_row)
            .transpose()
    }

    /// The session stored under `id_hash` and, when its user owns the live
    /// device `device`, that device's labels (a service token's selector is
    /// judged on them), in one statement (the proxied path's only read).
    /// Expiry is the caller's call.
    pub async fn session_access(
        &self,
        id_hash: &str,
        device: DeviceId,
    ) -> Result<Option<(SessionRecord, Option<Vec<String>>)>, StoreError> {
        let Some(row) = sqlx::query(
            "SELECT s.*, (SELECT d.labels FROM devices d WHERE d.id = $2 AND d.owner_id = s.user_id AND d.revoked_at IS NULL) AS owned_labels \
             FROM user_sessions s WHERE s.id_hash = $1",
        )
        .bind(id_hash)
        .bind(device.to_string())
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let labels = row
            .try_get::<Option<String>, _>("owned_labels")?
            .map(|l| parse_labels(&l))
            .transpose()?;
        Ok(Some((session_from_row(&row)?, labels)))
    }

    /// Record activity on a session.
    pub async fn touch_session(&self, id_hash: &str, now: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE user_sessions SET last_seen_at = $1 WHERE id_hash = $2")
            .bind(now)
            .bind(id_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Delete a session; true when one was deleted.
    pub async fn delete_session(&self, id_hash: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM user_sessions WHERE id_hash = $1")
            .bind(id_hash)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// The caller's live sessions, newest first (their service accounts'
    /// tokens are listed with those accounts, not here).
    pub async fn sessions_of(
        &self,
        user: UserId,
        now: i64,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM user_sessions WHERE user_id = $1 AND expires_at > $2 AND service_account IS NULL ORDER BY created_at DESC",
        )
        .bind(user.to_string())
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(session_from_row).collect()
    }

    /// End one of the caller's sessions by its public id; false when the
    /// caller has no such session.
    pub async fn delete_session_of(
        &self,
        user: UserId,
        public_id: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM user_sessions WHERE user_id = $1 AND public_id = $2 AND service_account IS NULL")
            .bind(user.to_string())
            .bind(public_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }
}

fn session_from_row(row: &AnyRow) -> Result<SessionRecord, StoreError> {
    Ok(SessionRecord {
        public_id: row.try_get("public_id")?,
        user_id: parse_id(row, "user_id")?,
        created_at: row.try_get("created_at")?,
        last_seen_at: row.try_get("last_seen_at")?,
        expires_at: row.try_get("expires_at")?,
        kind: match row.try_get::<String, _>("kind")?.as_str() {
            "bearer" => SessionKind::Bearer,
            "service" => SessionKind::Service,
            _ => SessionKind::Browser,
        },
        label: row.try_get("label")?,
        service: grant_from_row(row)?,
    })
}

/// The grant columns of a service token's row (`None` on other sessions).
fn grant_from_row(row: &AnyRow) -> Result<Option<ServiceGrant>, StoreError> {
    let Some(account) = row.try_get::<Option<String>, _>("service_account")? else {
        return Ok(None);
    };
    let scopes: Option<String> = row.try_get("scopes")?;
    let selector: Option<String> = row.try_get("selector")?;
    Ok(Some(ServiceGrant {
        account,
        scopes: Scopes::parse(scopes.as_deref().unwrap_or_default())
            .map_err(|_| StoreError::Corrupt("scopes".into()))?,
        selector: parse_labels(selector.as_deref().unwrap_or("[]"))?,
    }))
}

/// The delete of [`Store::delete_idp_sessions`] on `conn` (a pooled
/// connection or a transaction).
async fn delete_idp_sessions_on(
    conn: &mut sqlx::AnyConnection,
    issuer: &str,
    subject: Option<&str>,
    sid: Option<&str>,
) -> Result<u64, StoreError> {
    let done = match (subject, sid) {
        (Some(subject), Some(sid)) => {
            // A session whose login named no sid can only be matched by
            // its user.
            sqlx::query(
                "DELETE FROM user_sessions WHERE service_account IS NULL AND (idp_sid = $1 OR idp_sid IS NULL) AND user_id IN
                 (SELECT id FROM users WHERE issuer = $2 AND subject = $3)",
            )
            .bind(sid)
            .bind(issuer)
            .bind(subject)
            .execute(&mut *conn)
            .await?
        }
        (None, Some(sid)) => {
            sqlx::query(
                "DELETE FROM user_sessions WHERE service_account IS NULL AND idp_sid = $1 AND user_id IN
                 (SELECT id FROM users WHERE issuer = $2)",
            )
            .bind(sid)
            .bind(issuer)
            .execute(&mut *conn)
            .await?
        }
        (Some(subject), None) => {
            sqlx::query(
                "DELETE FROM user_sessions WHERE service_account IS NULL AND user_id IN
                 (SELECT id FROM users WHERE issuer = $1 AND subject = $2)",
            )
            .bind(issuer)
            .bind(subject)
            .execute(&mut *conn)
            .await?
        }
        (None, None) => return Ok(0),
    };
    Ok(done.rows_affected())
}
