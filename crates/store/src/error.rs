//! The store's one error type, and which of its failures mean "the database
//! cannot serve now" rather than "this request is wrong".

/// Anything the store can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot prepare the database directory: {0}")]
    Io(std::io::Error),
    #[error("database URL must start with sqlite: or postgres:")]
    UnsupportedUrl,
    #[error("stored value in column `{0}` is malformed")]
    Corrupt(String),
    #[error("not found")]
    NotFound,
    #[error("the account has as many of these as it may have")]
    QuotaExceeded,
    #[error("injected fault")]
    Injected,
}

impl StoreError {
    /// The database cannot serve now (down, unreachable, shutting down,
    /// disk full, read-only, out of connections): nothing is wrong with
    /// the request, and the same call may work later. Callers answer 503.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Database(e) => unavailable(e),
            Self::Io(_) => true,
            _ => false,
        }
    }
}

fn unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            let Some(code) = db.code() else {
                return false;
            };
            if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                // Primary result codes (the low byte of an extended code):
                // BUSY, LOCKED, READONLY, IOERR, FULL, CANTOPEN.
                code.parse::<u32>()
                    .is_ok_and(|c| matches!(c & 0xff, 5 | 6 | 8 | 10 | 13 | 14))
            } else {
                // SQLSTATE classes: 08 connection exception, 53 insufficient
                // resources (disk full, out of memory, too many connections),
                // 57 operator intervention (shutdown, cannot connect now),
                // 58 system error; and 25006 read-only transaction.
                code.starts_with("08")
                    || code.starts_with("53")
                    || code.starts_with("57")
                    || code.starts_with("58")
                    || code == "25006"
            }
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use sqlx::Connection;

    #[tokio::test]
    async fn a_read_only_database_is_unavailable_and_a_constraint_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let mut rw = sqlx::SqliteConnection::connect(&format!("{url}?mode=rwc"))
            .await
            .unwrap();
        sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY)")
            .execute(&mut rw)
            .await
            .unwrap();
        sqlx::query("INSERT INTO t VALUES (1)")
            .execute(&mut rw)
            .await
            .unwrap();
        let duplicate = sqlx::query("INSERT INTO t VALUES (1)")
            .execute(&mut rw)
            .await
            .unwrap_err();
        assert!(!StoreError::from(duplicate).is_unavailable());

        let mut ro = sqlx::SqliteConnection::connect(&format!("{url}?mode=ro"))
            .await
            .unwrap();
        let refused = sqlx::query("INSERT INTO t VALUES (2)")
            .execute(&mut ro)
            .await
            .unwrap_err();
        let err = StoreError::from(refused);
        assert!(err.is_unavailable(), "{err}");
        assert!(StoreError::from(sqlx::Error::PoolTimedOut).is_unavailable());
        assert!(!StoreError::NotFound.is_unavailable());
    }
}
