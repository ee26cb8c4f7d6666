//! Users, upserted by (issuer, subject) on every login.

use crate::{parse_id, Store, StoreError, User, UserClaims};
use edge_core::{time::now_ms, UserId};
use sqlx::any::AnyRow;
use sqlx::Row;

fn user_from_row(row: &AnyRow) -> Result<User, StoreError> {
    Ok(User {
        id: parse_id(row, "id")?,
        issuer: row.try_get("issuer")?,
        subject: row.try_get("subject")?,
        email: row.try_get("email")?,
        email_verified: row
            .try_get::<Option<i64>, _>("email_verified")?
            .map(|v| v != 0),
        name: row.try_get("name")?,
        created_at: row.try_get("created_at")?,
    })
}

impl Store {
    /// Insert the user or refresh its email and name; returns the stored row.
    pub async fn upsert_user(
        &self,
        issuer: &str,
        subject: &str,
        email: Option<&str>,
        name: Option<&str>,
    ) -> Result<User, StoreError> {
        self.upsert_user_claims(&UserClaims {
            issuer: issuer.to_owned(),
            subject: subject.to_owned(),
            email: email.map(str::to_owned),
            email_verified: None,
            name: name.map(str::to_owned),
        })
        .await
    }

    /// Insert the user or refresh what the provider says of them.
    pub async fn upsert_user_claims(&self, c: &UserClaims) -> Result<User, StoreError> {
        sqlx::query(
            "INSERT INTO users (id, issuer, subject, email, email_verified, name, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (issuer, subject) DO UPDATE SET email = excluded.email,
                email_verified = excluded.email_verified, name = excluded.name",
        )
        .bind(UserId::new().to_string())
        .bind(&c.issuer)
        .bind(&c.subject)
        .bind(c.email.as_deref())
        .bind(c.email_verified.map(i64::from))
        .bind(c.name.as_deref())
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        let row = sqlx::query("SELECT * FROM users WHERE issuer = $1 AND subject = $2")
            .bind(&c.issuer)
            .bind(&c.subject)
            .fetch_one(&self.pool)
            .await?;
        user_from_row(&row)
    }

    pub async fn user(&self, id: UserId) -> Result<Option<User>, StoreError> {
        sqlx::query("SELECT * FROM users WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(user_from_row)
            .transpose()
    }
}
