//! The remote-access audit trail, written off the request path: proxied
//! requests hand their `remote_access_opened`/`_closed` events to one
//! writer task over a bounded channel, and the task appends whatever has
//! queued up in one transaction at a time. Nothing waits for a timer, so a
//! crash loses only what was queued at that instant (milliseconds' worth).
//! A full channel never blocks and never drops: that event is written on
//! the spot, on the caller's task, and counted ([`AuditWriter::inline_writes`]).
//! When the database cannot take writes (down, disk full, read-only) the
//! task keeps the events (up to [`MAX_PENDING`]) and retries every
//! [`RETRY_EVERY`]; meanwhile [`AuditWriter::is_failing`] is true, and the
//! api-server refuses new remote access and reports not ready. An event
//! that still cannot be written is counted as lost and logged, never
//! silently dropped. At shutdown the channel closes and the task writes
//! everything left.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use store::{NewAuditEvent, Store, StoreError};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Events per transaction at most.
const BATCH: usize = 256;

/// Events the task holds for retry while the database cannot take them;
/// beyond this they wait in the channel, then go inline.
pub const MAX_PENDING: usize = 100_000;

/// How often the task retries while the database cannot take writes.
pub const RETRY_EVERY: Duration = Duration::from_secs(1);

/// What the writer says about itself; shared by every handle and the task.
#[derive(Debug, Default)]
struct Health {
    failing: AtomicBool,
    pending: AtomicUsize,
    lost: AtomicU64,
    inline: AtomicU64,
    recorded: AtomicU64,
}

/// Handle for recording events; cheap to clone.
#[derive(Clone, Debug)]
pub struct AuditWriter {
    tx: mpsc::Sender<NewAuditEvent>,
    store: Store,
    health: Arc<Health>,
}

/// The writer's state for metrics, read without keeping the writer alive.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AuditStatus {
    /// Events queued in the channel.
    pub queued: usize,
    /// Events the task holds for retry.
    pub pending: usize,
    /// The last write failed because the database could not take it.
    pub failing: bool,
    /// Events that could not be written at all.
    pub lost: u64,
    /// Events handed to the writer since start.
    pub recorded: u64,
}

impl AuditWriter {
    /// A writer with room for `capacity` queued events, and its task (which
    /// ends once every handle is dropped and the queue is written).
    pub fn start(store: Store, capacity: usize) -> (Self, JoinHandle<()>) {
        let (writer, task) = Self::unstarted(store, capacity);
        (writer, tokio::spawn(task.run()))
    }

    /// A writer whose task the caller runs ([`WriterTask::run`]), for tests.
    pub fn unstarted(store: Store, capacity: usize) -> (Self, WriterTask) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let health = Arc::new(Health::default());
        (
            Self {
                tx,
                store: store.clone(),
                health: health.clone(),
            },
            WriterTask { store, rx, health },
        )
    }

    /// The database could not take the last write: remote access that
    /// would go unrecorded is refused until a write succeeds again.
    pub fn is_failing(&self) -> bool {
        self.health.failing.load(Ordering::Relaxed)
    }

    /// Reads the writer's status without keeping the writer alive (the
    /// writer task ends when the last handle goes).
    pub fn status_probe(&self) -> impl Fn() -> AuditStatus + Send + Sync + 'static {
        let weak = self.tx.downgrade();
        let health = self.health.clone();
        move || AuditStatus {
            queued: weak
                .upgrade()
                .map_or(0, |tx| tx.max_capacity() - tx.capacity()),
            pending: health.pending.load(Ordering::Relaxed),
            failing: health.failing.load(Ordering::Relaxed),
            lost: health.lost.load(Ordering::Relaxed),
            recorded: health.recorded.load(Ordering::Relaxed),
        }
    }

    /// Events written on the caller's task because the queue was full.
    pub fn inline_writes(&self) -> u64 {
        self.health.inline.load(Ordering::Relaxed)
    }

    /// Record `action` for `user`; never waits on the queue.
    pub fn record(
        &self,
        actor: impl Into<store::Actor>,
        action: &'static str,
        target: Option<String>,
        detail: serde_json::Value,
    ) {
        self.health.recorded.fetch_add(1, Ordering::Relaxed);
        let event = NewAuditEvent {
            actor: actor.into(),
            action,
            target,
            detail,
            at: edge_core::time::now_ms(),
        };
        let event = match self.tx.try_send(event) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(e) | mpsc::error::TrySendError::Closed(e)) => e,
        };
        self.health.inline.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(action, "audit queue full or closed; writing inline");
        let (store, health) = (self.store.clone(), self.health.clone());
        let write = async move {
            if let Err(err) = store.audit_batch(std::slice::from_ref(&event)).await {
                health.lose(1, &err);
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(write);
            }
            Err(_) => {
                self.health.lost.fetch_add(1, Ordering::Relaxed);
                tracing::error!(action, "audit event lost: no runtime to write it");
            }
        }
    }
}

impl Health {
    fn lose(&self, n: usize, err: &StoreError) {
        self.lost.fetch_add(n as u64, Ordering::Relaxed);
        tracing::error!(error = %err, events = n, "audit events could not be recorded and are lost");
    }
}

/// The writer task's half: the queue's receiving end.
pub struct WriterTask {
    store: Store,
    rx: mpsc::Receiver<NewAuditEvent>,
    health: Arc<Health>,
}

impl WriterTask {
    /// Append queued events, batch by batch, until the queue is closed and
    /// empty; hold and retry them while the database cannot take them.
    pub async fn run(mut self) {
        let mut pending: Vec<NewAuditEvent> = Vec::with_capacity(BATCH);
        loop {
            if pending.is_empty() {
                if self.rx.recv_many(&mut pending, BATCH).await == 0 {
                    break;
                }
            } else {
                while pending.len() < MAX_PENDING {
                    match self.rx.try_recv() {
                        Ok(event) => pending.push(event),
                        Err(_) => break,
                    }
                }
            }
            self.write(&mut pending).await;
            self.health.pending.store(pending.len(), Ordering::Relaxed);
            if !pending.is_empty() {
                tokio::time::sleep(RETRY_EVERY).await;
            }
        }
    }

    /// Write `pending` in batches; what the database could not take stays.
    async fn write(&self, pending: &mut Vec<NewAuditEvent>) {
        let mut written = 0;
        while written < pending.len() {
            let end = (written + BATCH).min(pending.len());
            let batch = &pending[written..end];
            match self.store.audit_batch(batch).await {
                Ok(()) => written = end,
                Err(err) if err.is_unavailable() => {
                    if !self.health.failing.swap(true, Ordering::Relaxed) {
                        tracing::error!(error = %err, "audit trail cannot be written; holding events and refusing remote access until it can");
                    }
                    break;
                }
                Err(err) => {
                    tracing::warn!(error = %err, events = batch.len(), "audit batch failed; writing one by one");
                    for event in batch {
                        if let Err(err) = self.store.audit_batch(std::slice::from_ref(event)).await
                        {
                            self.health.lose(1, &err);
                        }
                    }
                    written = end;
                }
            }
        }
        pending.drain(..written);
        if pending.is_empty() && self.health.failing.swap(false, Ordering::Relaxed) {
            tracing::info!("audit trail writable again");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    async fn actions(store: &Store, user: edge_core::UserId) -> usize {
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
        rx.run().await;
        assert_eq!(actions(&store, user).await, 5);
    }

    #[tokio::test]
    async fn events_are_held_while_the_database_is_down_and_written_when_it_returns() {
        let dir = tempfile::tempdir().unwrap();
        let store = store::testing::sqlite_in(dir.path()).await.unwrap();
        let user = store.upsert_user("iss", "a", None, None).await.unwrap().id;
        let (writer, task) = AuditWriter::unstarted(store.clone(), 16);
        let status = writer.status_probe();
        let task = tokio::spawn(task.run());
        store
            .faults()
            .audit_unavailable
            .store(true, Ordering::SeqCst);
        for i in 0..3 {
            writer.record(
                user,
                "remote_access_opened",
                Some(i.to_string()),
                serde_json::json!({}),
            );
        }
        while !writer.is_failing() {
            tokio::task::yield_now().await;
        }
        // Two retries later the events are still held, none lost.
        tokio::time::sleep(RETRY_EVERY * 2).await;
        let held = status();
        assert!(held.failing);
        assert_eq!(held.pending + held.queued, 3, "{held:?}");
        assert_eq!(held.lost, 0);
        assert_eq!(actions(&store, user).await, 0);

        // The database returns: the held events are written, nothing lost.
        store
            .faults()
            .audit_unavailable
            .store(false, Ordering::SeqCst);
        while writer.is_failing() {
            tokio::time::sleep(RETRY_EVERY).await;
        }
        assert_eq!(actions(&store, user).await, 3);
        assert_eq!(
            status(),
            AuditStatus {
                recorded: 3,
                ..AuditStatus::default()
            }
        );
        drop(writer);
        task.await.unwrap();
    }
}
