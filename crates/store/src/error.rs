//! The store's one error type.

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
    #[error("injected fault")]
    Injected,
}
