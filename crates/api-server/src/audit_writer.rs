//! The remote-access audit trail, written off the request path: proxied
//! requests hand their `remote_access_opened`/`_closed` events to one
//! writer task over a bounded channel, and the task appends whatever has
//! queued up in one transaction at a time. Nothing waits for a timer, so a
//! crash loses only what was queued at that instant (milliseconds' worth).
//! A full channel never blocks and never drops: that event is written on
//! the spot, on the caller's task, and counted ([`AuditWriter::inline_writes`]).
//! At shutdown the channel closes and the task writes everything left.

use edge_core::UserId;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use store::{NewAuditEvent, Store};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Events per transaction at most.
const BATCH: usize = 256;

/// Handle for recording events; cheap to clone.
#[derive(Clone, Debug)]
pub struct AuditWriter {
    tx: mpsc::Sender<NewAuditEvent>,
    store: Store,
    inline: Arc<AtomicU64>,
}

impl AuditWriter {
    /// A writer with room for `capacity` queued events, and its task (which
    /// ends once every handle is dropped and the queue is written).
    pub fn start(store: Store, capacity: usize) -> (Self, JoinHandle<()>) {
        let (writer, rx) = Self::unstarted(store.clone(), capacity);
        (writer, tokio::spawn(run(store, rx)))
    }

    /// A writer whose task the caller runs ([`run`]), for tests.
    pub fn unstarted(store: Store, capacity: usize) -> (Self, mpsc::Receiver<NewAuditEvent>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (
            Self {
                tx,
                store,
                inline: Arc::default(),
            },
            rx,
        )
    }

    /// Events waiting in the queue now.
    pub fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Reads [`AuditWriter::queued`] without keeping the writer alive (the
    /// writer task ends when the last handle goes).
    pub fn depth_probe(&self) -> impl Fn() -> usize + Send + Sync + 'static {
        let weak = self.tx.downgrade();
        move || {
            weak.upgrade()
                .map_or(0, |tx| tx.max_capacity() - tx.capacity())
        }
    }

    /// Events written on the caller's task because the queue was full.
    pub fn inline_writes(&self) -> u64 {
        self.inline.load(Ordering::Relaxed)
    }

    /// Record `action` for `user`; never waits on the queue.
    pub fn record(
        &self,
        user: UserId,
        action: &'static str,
        target: Option<String>,
        detail: serde_json::Value,
    ) {
        let event = NewAuditEvent {
            user,
            action,
            target,
            detail,
            at: edge_core::time::now_ms(),
        };
        let event = match self.tx.try_send(event) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(e) | mpsc::error::TrySendError::Closed(e)) => e,
        };
        self.inline.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(action, "audit queue full or closed; writing inline");
        let store = self.store.clone();
        let write = async move {
            if let Err(err) = store.audit_batch(std::slice::from_ref(&event)).await {
                tracing::error!(error = %err, action = event.action, "could not record an audit event");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(write);
            }
            Err(_) => tracing::error!(action, "audit event lost: no runtime to write it"),
        }
    }
}

/// The writer task: append queued events, batch by batch, until the queue
/// is closed and empty.
pub async fn run(store: Store, mut rx: mpsc::Receiver<NewAuditEvent>) {
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        if let Err(err) = store.audit_batch(&batch).await {
            tracing::warn!(error = %err, events = batch.len(), "audit batch failed; writing one by one");
            for event in &batch {
                if let Err(err) = store.audit_batch(std::slice::from_ref(event)).await {
                    tracing::error!(error = %err, action = event.action, "could not record an audit event");
                }
            }
        }
        batch.clear();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    async fn actions(store: &Store, user: UserId) -> usize {
        store.audit_events(user, 100, 0).await.unwrap().len()
    }

    #[tokio::test]
    async fn a_full_queue_writes_inline_and_shutdown_drains_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let store = store::testing::sqlite_in(dir.path()).await.unwrap();
        let user = store.upsert_user("iss", "a", None, None).await.unwrap().id;
        let (writer, rx) = AuditWriter::unstarted(store.clone(), 2);
        for i in 0..5 {
            writer.record(
                user,
                "remote_access_opened",
                Some(i.to_string()),
                serde_json::json!({}),
            );
        }
        // Two wait in the queue; three were written on the spot (spawned).
        assert_eq!(writer.inline_writes(), 3);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while actions(&store, user).await < 3 {
            assert!(tokio::time::Instant::now() < deadline, "inline writes lost");
            tokio::task::yield_now().await;
        }
        assert_eq!(actions(&store, user).await, 3);
        // Shutdown: the handle goes, the task writes what is queued and ends.
        drop(writer);
        run(store.clone(), rx).await;
        assert_eq!(actions(&store, user).await, 5);
    }
}
