//! Persistence for users, user sessions, devices, device credentials,
//! device telemetry, health and webhooks.
//! One `Store` over sqlx's `Any` driver: a SQLite file by default (created on
//! first start), PostgreSQL when the URL says so. Each backend has its own
//! migration set, embedded in the binary and applied on connect. Every query
//! that reads a user-owned row takes the owner's `UserId`.

mod audit;
mod devices;
mod error;
mod health;
mod housekeeping;
mod model;
mod pairing;
mod service_accounts;
mod sessions;
mod telemetry;
mod tickets;
mod users;

pub use audit::{Actor, AuditEvent, NewAuditEvent};
pub use error::StoreError;
pub use health::{Delivery, DeviceHealth, HealthRules, Webhook, MAX_WEBHOOKS_PER_OWNER};
pub use housekeeping::Swept;
pub use model::{
    Device, DeviceAuth, DeviceQuery, DeviceSort, NewDevice, RedeemedTicket, ServiceGrant,
    SessionKind, SessionRecord, User, UserClaims,
};
pub use pairing::{ExchangeError, PairingCode};
pub use service_accounts::{
    NewServiceAccount, ServiceAccount, ServiceSecret, MAX_SECRETS_PER_ACCOUNT,
    MAX_SERVICE_ACCOUNTS_PER_OWNER,
};
pub use telemetry::{LatestRow, RollupRow, SeriesRow, TelemetryBatch, TelemetrySwept, WindowRow};

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::AnyPool;
use std::path::Path;

/// Which database sits behind the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Faults a test can switch on through [`Store::faults`]; nothing outside
/// the process (no configuration, no route) reaches them, and only builds
/// with the `testing` feature (the test helpers) have them at all.
#[cfg(feature = "testing")]
#[derive(Debug, Default)]
pub struct Faults {
    /// Make the exchange's "mark code used" step fail.
    pub fail_mark_used: std::sync::atomic::AtomicBool,
    /// Make the exchange's audit rows fail (inside its transaction).
    pub fail_exchange_audit: std::sync::atomic::AtomicBool,
    /// Make `audit_batch` fail as a database that is down would.
    pub audit_unavailable: std::sync::atomic::AtomicBool,
    /// Make back-channel logout's session delete fail (inside its
    /// transaction).
    pub fail_idp_session_delete: std::sync::atomic::AtomicBool,
}

/// Handle to the database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    #[cfg(feature = "testing")]
    faults: std::sync::Arc<Faults>,
    /// Tie-breaker for audit events within one millisecond (per process).
    audit_seq: std::sync::Arc<std::sync::atomic::AtomicI64>,
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Each SQLite connection's settings. Small pages keep packed telemetry
/// compact on disk (ADR 025); the page cache (32 MiB) and a memory map
/// (256 MiB, the OS's page cache, shared) hold a 10,000-device relay's
/// working set, which SQLite's default 2 MB would read back with a
/// syscall a page; checkpoints every 16 MiB of WAL instead of every 1 MiB
/// write a page rewritten many times between them once.
const SQLITE_PRAGMAS: &str = "PRAGMA page_size = 1024; PRAGMA foreign_keys = ON; \
     PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000; \
     PRAGMA cache_size = -32768; PRAGMA mmap_size = 268435456; \
     PRAGMA wal_autocheckpoint = 16384;";

/// How long a statement waits for a connection (a database that is down
/// makes every statement wait this long, then fail as unavailable).
pub const ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// Hold an exclusive lock on `<db>.migrate-lock` (released on drop).
async fn migration_lock(db: &str) -> Result<std::fs::File, StoreError> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(format!("{db}.migrate-lock"))
        .map_err(StoreError::Io)?;
    tokio::task::spawn_blocking(move || file.lock().map(|()| file))
        .await
        .map_err(|e| StoreError::Io(std::io::Error::other(e)))?
        .map_err(StoreError::Io)
}

impl Store {
    /// Connect to `url` (`sqlite://path`, `sqlite::memory:`, `postgres://...`)
    /// and apply pending migrations. A SQLite file and its directory are
    /// created when missing.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let mut sqlite_file = None;
        let (backend, url, max_conns) = if let Some(rest) = url.strip_prefix("sqlite:") {
            let path = rest.trim_start_matches("//");
            let path = path.split('?').next().unwrap_or_default();
            if path != ":memory:" && !path.is_empty() {
                if let Some(dir) = Path::new(path).parent() {
                    if !dir.as_os_str().is_empty() {
                        std::fs::create_dir_all(dir).map_err(StoreError::Io)?;
                    }
                }
                sqlite_file = Some(path.to_owned());
            }
            let url = if url.contains('?') {
                url.to_owned()
            } else {
                format!("{url}?mode=rwc")
            };
            // One writer at a time is how SQLite works; a small pool avoids
            // lock contention, and WAL (set below) lets readers proceed.
            let conns = if path == ":memory:" { 1 } else { 4 };
            (Backend::Sqlite, url, conns)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            (Backend::Postgres, url.to_owned(), 16)
        } else {
            return Err(StoreError::UnsupportedUrl);
        };
        let file_backed = sqlite_file.is_some();
        let pool = AnyPoolOptions::new()
            .max_connections(max_conns)
            // A SQLite connection whose transaction SQLite rolled back by
            // itself (an I/O error or a full disk at a write or at COMMIT)
            // keeps sqlx's count of open transactions at one: sqlx's
            // ROLLBACK on drop then fails ("no transaction is active") and
            // every later BEGIN on that connection is refused. A connection
            // released with a transaction still counted (one dropped
            // without COMMIT) has its ROLLBACK flushed (a ping runs after
            // it); if it is still counted then, it is closed instead of
            // pooled. Not for `:memory:`, whose data lives only as long as
            // its one connection.
            .after_release(move |conn, _| {
                Box::pin(async move {
                    use sqlx::Connection;
                    if file_backed && conn.is_in_transaction() {
                        conn.ping().await?;
                        if conn.is_in_transaction() {
                            tracing::warn!("closing a database connection left inside a transaction SQLite had rolled back");
                            return Ok(false);
                        }
                    }
                    Ok(true)
                })
            })
            // A database that is down answers "unavailable" in seconds, not
            // after sqlx's default 30 s of retrying.
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        use sqlx::Executor;
                        conn.execute(SQLITE_PRAGMAS).await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await?;
        let migrator = match backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        // PostgreSQL serialises concurrent migrators with an advisory lock;
        // for a SQLite file (the relay and the api-server may start together
        // on one data directory) a lock file next to it does the same.
        let lock = match sqlite_file {
            Some(path) => Some(migration_lock(&path).await?),
            None => None,
        };
        migrator.run(&pool).await?;
        drop(lock);
        tracing::debug!(?backend, "store ready");
        Ok(Self {
            pool,
            backend,
            #[cfg(feature = "testing")]
            faults: Default::default(),
            audit_seq: std::sync::Arc::new(std::sync::atomic::AtomicI64::new(
                edge_core::time::now_ms() * 1000,
            )),
        })
    }

    /// Fault switches for tests.
    #[cfg(feature = "testing")]
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Begin a transaction that writes. On SQLite it takes the write lock
    /// at `BEGIN IMMEDIATE`, waiting the busy timeout for it: a deferred
    /// transaction takes it at its first write, and fails at once there
    /// (`SQLITE_BUSY_SNAPSHOT`, or `SQLITE_BUSY` when two deferred ones
    /// deadlock) if another connection committed since it first read; no
    /// timeout waits that out. PostgreSQL's plain `BEGIN` has no such case.
    pub(crate) async fn write_tx(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.pool.begin().await,
        }
    }

    /// Cheap liveness probe for readiness checks.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Whether this store's database connection is encrypted (PostgreSQL's
    /// own view of the session; SQLite has no connection to encrypt).
    pub async fn uses_tls(&self) -> Result<bool, StoreError> {
        if self.backend == Backend::Sqlite {
            return Ok(false);
        }
        use sqlx::Row;
        let row = sqlx::query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<bool, _>("ssl")?)
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn parse_id<T: std::str::FromStr>(row: &AnyRow, col: &str) -> Result<T, StoreError> {
    use sqlx::Row;
    let text: String = row.try_get(col)?;
    text.parse()
        .map_err(|_| StoreError::Corrupt(col.to_owned()))
}

/// Helpers for tests that need a store of their own.
pub mod testing {
    use super::{Store, StoreError};
    use sqlx::Connection;

    /// Environment variable naming a PostgreSQL server (an admin database URL)
    /// that tests may create their own databases on.
    pub const POSTGRES_ENV: &str = "TEST_POSTGRES_URL";

    /// Move all of `user`'s audit events to `at` (ms), to test retention.
    pub async fn backdate_audit(
        store: &Store,
        user: edge_core::UserId,
        at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE audit_events SET created_at = $1 WHERE user_id = $2")
            .bind(at)
            .bind(user.to_string())
            .execute(&store.pool)
            .await?;
        Ok(())
    }

    /// A fresh SQLite store in `dir`.
    pub async fn sqlite_in(dir: &std::path::Path) -> Result<Store, StoreError> {
        Store::connect(&format!("sqlite://{}", dir.join("test.db").display())).await
    }

    /// The PostgreSQL admin URL when configured. Panics-free: when
    /// `REQUIRE_INTEROP=1` demands it and it is missing, returns an error.
    pub fn postgres_admin_url() -> Result<Option<String>, String> {
        match std::env::var(POSTGRES_ENV) {
            Ok(url) if !url.is_empty() => Ok(Some(url)),
            _ if std::env::var("REQUIRE_INTEROP").as_deref() == Ok("1") => Err(format!(
                "{POSTGRES_ENV} is not set but REQUIRE_INTEROP=1 requires the PostgreSQL run"
            )),
            _ => Ok(None),
        }
    }

    /// Create a uniquely named database on the server at `admin_url` and
    /// connect a store to it.
    pub async fn fresh_postgres(admin_url: &str) -> Result<Store, StoreError> {
        Store::connect(&fresh_postgres_url(admin_url).await?).await
    }

    /// Create a uniquely named database on the server `admin_url` names;
    /// returns its URL (for processes that connect on their own).
    pub async fn fresh_postgres_url(admin_url: &str) -> Result<String, StoreError> {
        sqlx::any::install_default_drivers();
        let name = format!("edge_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = sqlx::AnyConnection::connect(admin_url).await?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await?;
        admin.close().await?;
        let base = admin_url
            .rsplit_once('/')
            .map(|(b, _)| b)
            .unwrap_or(admin_url);
        Ok(format!("{base}/{name}"))
    }
}
