//! Users, upserted by (issuer, subject) on every login.

use crate::{parse_id, Store, StoreError, User};
use edge_core::{time::now_ms, UserId};
use sqlx::any::AnyRow;
use sqlx::Row;

fn user_from_row(row: &AnyRow) -> Result<User, StoreError> {
    Ok(User {
        id: parse_id(row, "id")?,
        issuer: row.try_get("issuer")?,
        subject: row.try_get("subject")?,
        email: row.try_get("email")?,
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
        sqlx::query(
            "INSERT INTO users (id, issuer, subject, email, name, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (issuer, subject) DO UPDATE SET email = excluded.email, name = excluded.name",
        )
        .bind(UserId::new().to_string())
        .bind(issuer)
        .bind(subject)
        .bind(email)
        .bind(name)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        let row = sqlx::query("SELECT * FROM users WHERE issuer = $1 AND subject = $2")
            .bind(issuer)
            .bind(subject)
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
