//! Service accounts (ADR 029): an owner's clients for scripts and CI,
//! their hashed secrets (several live at once while a rotation overlaps),
//! an optional public key for `private_key_jwt`, and the short-lived
//! access tokens the token endpoint issues (rows of `user_sessions` with
//! kind `service`). Every read and change takes the owner's `UserId`,
//! except the token endpoint's lookups, whose credential is the secret or
//! the signed assertion itself.

use crate::devices::parse_labels;
use crate::{parse_id, ServiceGrant, SessionKind, Store, StoreError};
use edge_core::scope::Scopes;
use edge_core::UserId;
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;

/// How many service accounts one owner may have.
pub const MAX_SERVICE_ACCOUNTS_PER_OWNER: i64 = 50;
/// How many secrets one service account may hold at once (live or overlapping).
pub const MAX_SECRETS_PER_ACCOUNT: i64 = 5;

/// A service account as its owner sees it (never a secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ServiceAccount {
    /// Its public id, which is also its OAuth `client_id`.
    pub id: String,
    #[serde(skip)]
    pub owner_id: UserId,
    pub name: String,
    #[schema(value_type = Vec<String>)]
    pub scopes: Scopes,
    /// Labels a device must all carry for this account to see it (empty: all).
    pub selector: Vec<String>,
    /// Its public key for `private_key_jwt` (a JWK), when it has one.
    #[schema(value_type = Option<Object>)]
    pub public_jwk: Option<serde_json::Value>,
    pub created_at: i64,
    /// After this (Unix ms) it gets no more tokens; `None`: never.
    pub expires_at: Option<i64>,
    /// When it last got a token (Unix ms).
    pub last_used_at: Option<i64>,
    pub secrets: Vec<ServiceSecret>,
}

/// One of a service account's secrets, without the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ServiceSecret {
    pub id: String,
    pub created_at: i64,
    /// When it stops working (a rotation's overlap ends); `None`: never.
    pub expires_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

/// What creating a service account takes.
#[derive(Debug, Clone)]
pub struct NewServiceAccount<'a> {
    pub id: &'a str,
    pub owner: UserId,
    pub name: &'a str,
    pub scopes: &'a Scopes,
    pub selector: &'a [String],
    pub public_jwk: Option<&'a serde_json::Value>,
    pub expires_at: Option<i64>,
    /// Its first secret: id and hash.
    pub secret: (&'a str, &'a str),
    pub now: i64,
}

impl Store {
    /// Create a service account with its first secret; `QuotaExceeded`
    /// when the owner has the most allowed.
    pub async fn create_service_account(
        &self,
        new: &NewServiceAccount<'_>,
    ) -> Result<ServiceAccount, StoreError> {
        let mut tx = self.write_tx().await?;
        let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM service_accounts WHERE owner_id = $1")
            .bind(new.owner.to_string())
            .fetch_one(&mut *tx)
            .await?
            .try_get("n")?;
        if n >= MAX_SERVICE_ACCOUNTS_PER_OWNER {
            return Err(StoreError::QuotaExceeded);
        }
        let selector = serde_json::to_string(new.selector)
            .map_err(|_| StoreError::Corrupt("selector".into()))?;
        sqlx::query(
            "INSERT INTO service_accounts (id, owner_id, name, scopes, selector, public_jwk, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(new.id)
        .bind(new.owner.to_string())
        .bind(new.name)
        .bind(new.scopes.to_string())
        .bind(selector)
        .bind(new.public_jwk.map(|k| k.to_string()))
        .bind(new.now)
        .bind(new.expires_at)
        .execute(&mut *tx)
        .await?;
        insert_secret(&mut tx, new.id, new.secret, new.now).await?;
        tx.commit().await?;
        self.service_account_of(new.owner, new.id)
            .await?
            .ok_or_else(|| StoreError::Corrupt("service account vanished".into()))
    }

    /// The owner's service accounts, oldest first, with their secrets.
    pub async fn service_accounts_of(
        &self,
        owner: UserId,
    ) -> Result<Vec<ServiceAccount>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM service_accounts WHERE owner_id = $1 ORDER BY created_at, id",
        )
        .bind(owner.to_string())
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            out.push(self.with_secrets(account_from_row(row)?).await?);
        }
        Ok(out)
    }

    /// One of the owner's service accounts.
    pub async fn service_account_of(
        &self,
        owner: UserId,
        id: &str,
    ) -> Result<Option<ServiceAccount>, StoreError> {
        let row = sqlx::query("SELECT * FROM service_accounts WHERE id = $1 AND owner_id = $2")
            .bind(id)
            .bind(owner.to_string())
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(row) => Ok(Some(self.with_secrets(account_from_row(&row)?).await?)),
            None => Ok(None),
        }
    }

    /// A service account by its client id alone: the token endpoint's
    /// lookup for `private_key_jwt` (the assertion's signature is the
    /// credential).
    pub async fn service_account(&self, id: &str) -> Result<Option<ServiceAccount>, StoreError> {
        let row = sqlx::query("SELECT * FROM service_accounts WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(account_from_row).transpose()
    }

    /// The service account whose secret hashes to `secret_hash`, with that
    /// secret's id and expiry: the token endpoint's lookup for
    /// `client_secret_basic`.
    pub async fn service_account_by_secret(
        &self,
        secret_hash: &str,
    ) -> Result<Option<(ServiceAccount, ServiceSecret)>, StoreError> {
        let row = sqlx::query(
            "SELECT a.*, s.id AS secret_id, s.created_at AS secret_created_at,
                    s.expires_at AS secret_expires_at, s.last_used_at AS secret_last_used_at
             FROM service_account_secrets s JOIN service_accounts a ON a.id = s.account_id
             WHERE s.secret_hash = $1",
        )
        .bind(secret_hash)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let secret = ServiceSecret {
            id: row.try_get("secret_id")?,
            created_at: row.try_get("secret_created_at")?,
            expires_at: row.try_get("secret_expires_at")?,
            last_used_at: row.try_get("secret_last_used_at")?,
        };
        Ok(Some((account_from_row(&row)?, secret)))
    }

    /// Delete the owner's service account, its secrets and every token it
    /// holds (so its open connections are cut at their next re-check);
    /// false when the owner has no such account.
    pub async fn delete_service_account(
        &self,
        owner: UserId,
        id: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.write_tx().await?;
        let done = sqlx::query("DELETE FROM service_accounts WHERE id = $1 AND owner_id = $2")
            .bind(id)
            .bind(owner.to_string())
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        sqlx::query("DELETE FROM service_account_secrets WHERE account_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM user_sessions WHERE service_account = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Add a secret to the owner's service account; every older secret
    /// still working stops at `overlap_until` (or sooner, if it was to
    /// stop sooner). `None` when the owner has no such account;
    /// `QuotaExceeded` when it holds the most secrets allowed.
    pub async fn rotate_service_secret(
        &self,
        owner: UserId,
        id: &str,
        secret: (&str, &str),
        now: i64,
        overlap_until: i64,
    ) -> Result<Option<ServiceSecret>, StoreError> {
        let mut tx = self.write_tx().await?;
        let owned = sqlx::query("SELECT id FROM service_accounts WHERE id = $1 AND owner_id = $2")
            .bind(id)
            .bind(owner.to_string())
            .fetch_optional(&mut *tx)
            .await?;
        if owned.is_none() {
            return Ok(None);
        }
        sqlx::query(
            "DELETE FROM service_account_secrets WHERE account_id = $1 AND expires_at IS NOT NULL AND expires_at <= $2",
        )
        .bind(id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let n: i64 =
            sqlx::query("SELECT COUNT(*) AS n FROM service_account_secrets WHERE account_id = $1")
                .bind(id)
                .fetch_one(&mut *tx)
                .await?
                .try_get("n")?;
        if n >= MAX_SECRETS_PER_ACCOUNT {
            return Err(StoreError::QuotaExceeded);
        }
        sqlx::query(
            "UPDATE service_account_secrets SET expires_at = $2
             WHERE account_id = $1 AND (expires_at IS NULL OR expires_at > $2)",
        )
        .bind(id)
        .bind(overlap_until)
        .execute(&mut *tx)
        .await?;
        insert_secret(&mut tx, id, secret, now).await?;
        tx.commit().await?;
        Ok(Some(ServiceSecret {
            id: secret.0.to_owned(),
            created_at: now,
            expires_at: None,
            last_used_at: None,
        }))
    }

    /// Revoke one secret of the owner's service account at once, and end
    /// the tokens issued for it; false when there is no such secret of
    /// theirs.
    pub async fn revoke_service_secret(
        &self,
        owner: UserId,
        id: &str,
        secret_id: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.write_tx().await?;
        let done = sqlx::query(
            "DELETE FROM service_account_secrets WHERE id = $1 AND account_id IN
             (SELECT id FROM service_accounts WHERE id = $2 AND owner_id = $3)",
        )
        .bind(secret_id)
        .bind(id)
        .bind(owner.to_string())
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        sqlx::query("DELETE FROM user_sessions WHERE service_account = $1 AND service_secret = $2")
            .bind(id)
            .bind(secret_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Set (or with `None` remove) the public key of the owner's service
    /// account; false when they have no such account.
    pub async fn set_service_account_key(
        &self,
        owner: UserId,
        id: &str,
        jwk: Option<&serde_json::Value>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE service_accounts SET public_jwk = $1 WHERE id = $2 AND owner_id = $3",
        )
        .bind(jwk.map(|k| k.to_string()))
        .bind(id)
        .bind(owner.to_string())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Issue an access token for `account`: a session row of kind
    /// `service` under its owner, carrying `grant`; and mark the account
    /// (and the secret it authenticated with, if any) used at `now`.
    pub async fn issue_service_token(
        &self,
        account: &ServiceAccount,
        token: (&str, &str),
        (now, expires_at): (i64, i64),
        grant: &ServiceGrant,
        secret_id: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        let selector = serde_json::to_string(&grant.selector)
            .map_err(|_| StoreError::Corrupt("selector".into()))?;
        sqlx::query(
            "INSERT INTO user_sessions (id_hash, public_id, user_id, created_at, last_seen_at, expires_at, kind, label, service_account, scopes, selector, service_secret)
             VALUES ($1, $2, $3, $4, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(token.0)
        .bind(token.1)
        .bind(account.owner_id.to_string())
        .bind(now)
        .bind(expires_at)
        .bind(SessionKind::Service.as_str())
        .bind(&account.name)
        .bind(&account.id)
        .bind(grant.scopes.to_string())
        .bind(selector)
        .bind(secret_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE service_accounts SET last_used_at = $1 WHERE id = $2")
            .bind(now)
            .bind(&account.id)
            .execute(&mut *tx)
            .await?;
        if let Some(secret) = secret_id {
            sqlx::query("UPDATE service_account_secrets SET last_used_at = $1 WHERE id = $2")
                .bind(now)
                .bind(secret)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// How many unexpired tokens `account` holds (operators' and tests' view).
    pub async fn service_tokens_live(&self, account: &str, now: i64) -> Result<i64, StoreError> {
        Ok(sqlx::query(
            "SELECT COUNT(*) AS n FROM user_sessions WHERE service_account = $1 AND expires_at > $2",
        )
        .bind(account)
        .bind(now)
        .fetch_one(&self.pool)
        .await?
        .try_get("n")?)
    }

    async fn with_secrets(
        &self,
        mut account: ServiceAccount,
    ) -> Result<ServiceAccount, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM service_account_secrets WHERE account_id = $1 ORDER BY created_at, id",
        )
        .bind(&account.id)
        .fetch_all(&self.pool)
        .await?;
        account.secrets = rows
            .iter()
            .map(|r| {
                Ok(ServiceSecret {
                    id: r.try_get("id")?,
                    created_at: r.try_get("created_at")?,
                    expires_at: r.try_get("expires_at")?,
                    last_used_at: r.try_get("last_used_at")?,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(account)
    }
}

async fn insert_secret(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    account: &str,
    (id, hash): (&str, &str),
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO service_account_secrets (id, account_id, secret_hash, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(id)
    .bind(account)
    .bind(hash)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn account_from_row(row: &AnyRow) -> Result<ServiceAccount, StoreError> {
    let scopes: String = row.try_get("scopes")?;
    let selector: String = row.try_get("selector")?;
    let jwk: Option<String> = row.try_get("public_jwk")?;
    Ok(ServiceAccount {
        id: row.try_get("id")?,
        owner_id: parse_id(row, "owner_id")?,
        name: row.try_get("name")?,
        scopes: Scopes::parse(&scopes).map_err(|_| StoreError::Corrupt("scopes".into()))?,
        selector: parse_labels(&selector)?,
        public_jwk: jwk
            .map(|k| serde_json::from_str(&k))
            .transpose()
            .map_err(|_| StoreError::Corrupt("public_jwk".into()))?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        last_used_at: row.try_get("last_used_at")?,
        secrets: Vec::new(),
    })
}
