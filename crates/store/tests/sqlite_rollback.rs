//! A transaction SQLite rolls back by itself must not leave its pooled
//! connection unusable. Here every write past a one-byte file-size limit
//! fails (`EFBIG`, as a full disk would), SQLite answers with an I/O error
//! and rolls the transaction back itself; once writes work again, every
//! pooled connection must take a write transaction again.
//!
//! The limit is the process's: this file holds one test, so its binary
//! runs nothing else while the limit is set.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use store::{testing, NewAuditEvent, StoreError};

/// Set this process's soft file-size limit (the hard one stays), with
/// util-linux's `prlimit`, as the process fault tests do.
fn file_size_limit(soft: &str) {
    let status = std::process::Command::new("prlimit")
        .arg("--pid")
        .arg(std::process::id().to_string())
        .arg(format!("--fsize={soft}:unlimited"))
        .status()
        .expect("prlimit runs");
    assert!(status.success(), "prlimit --fsize={soft}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_take_writes_again_after_sqlite_rolled_back_a_failed_write() {
    // A write past the limit would otherwise end the process (SIGXFSZ);
    // this takes the signal over as the binaries do.
    let _signals = edge_core::shutdown::on_signal();
    let dir = tempfile::tempdir().unwrap();
    let store = testing::sqlite_in(dir.path()).await.unwrap();
    let user = store.upsert_user("iss", "rb", None, None).await.unwrap();
    let batch = |n: usize| -> Vec<NewAuditEvent> {
        (0..n)
            .map(|i| NewAuditEvent {
                actor: user.id.into(),
                action: "remote_access_opened",
                target: Some(format!("device-{i}")),
                detail: serde_json::json!({ "pad": "x".repeat(512) }),
                at: edge_core::time::now_ms(),
            })
            .collect()
    };
    store.audit_batch(&batch(4)).await.unwrap();

    file_size_limit("1");
    // Every write fails as unavailable, none with sqlx's "non-zero
    // transaction depth"; until the pool has no connection left to lend
    // (each one a failed write left behind is closed) and cannot open one.
    let mut failed_writes = 0;
    loop {
        match store.audit_batch(&batch(64)).await.unwrap_err() {
            StoreError::Database(sqlx::Error::PoolTimedOut) => break,
            err => {
                assert!(err.is_unavailable(), "a failed write is unavailable: {err}");
                failed_writes += 1;
                assert!(failed_writes < 16, "the pool keeps lending connections");
            }
        }
    }
    assert!(failed_writes > 0, "no write reached the database");
    file_size_limit("unlimited");

    for _ in 0..8 {
        store
            .audit_batch(&batch(64))
            .await
            .unwrap_or_else(|e| panic!("a write after the limit was lifted: {e}"));
    }
    let rows = store.audit_events(user.id, 10_000, 0).await.unwrap();
    assert_eq!(rows.len(), 4 + 8 * 64, "nothing half-written, nothing lost");
}
