//! Devices' last-seen times, written in batches. A tunnel that comes up
//! or ends notes its device here; one task writes what was noted every
//! [`EVERY`], in one transaction, instead of one write per tunnel. In a
//! connect storm (every box back at once after a relay restart) the store
//! then takes a few transactions a second rather than one per box, and
//! the other writers sharing it (the api-server's audit and sessions) are
//! not queued behind them. What is noted when the relay stops is written
//! before it ends. Times a write could not store are noted again for the
//! next pass (a device's time never moves back); a store that keeps
//! failing is logged once, and again when it recovers.

use edge_core::DeviceId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use store::Store;
use tokio_util::sync::CancellationToken;

/// How often noted times are written.
pub const EVERY: Duration = Duration::from_millis(250);
/// Most devices written in one transaction.
const BATCH: usize = 1_000;

/// Times noted and not written yet.
pub struct Seen {
    state: Mutex<State>,
    /// Bumped after each write pass (what [`Seen::settled`] waits on).
    passes: tokio::sync::watch::Sender<u64>,
}

#[derive(Default)]
struct State {
    /// By device, the latest time noted.
    pending: HashMap<DeviceId, i64>,
    /// A pass is writing what it took.
    writing: bool,
}

impl Default for Seen {
    fn default() -> Self {
        Self {
            state: Mutex::default(),
            passes: tokio::sync::watch::channel(0).0,
        }
    }
}

impl Seen {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Note that `device`'s tunnel was seen at `at` (ms).
    pub fn note(&self, device: DeviceId, at: i64) {
        let mut state = self.state();
        let time = state.pending.entry(device).or_insert(at);
        *time = (*time).max(at);
    }

    /// Write what is noted; what a failed transaction held is noted again
    /// for the next pass, and the first failure is returned.
    pub async fn write(&self, store: &Store) -> Result<(), store::StoreError> {
        let taken: Vec<(DeviceId, i64)> = {
            let mut state = self.state();
            state.writing = true;
            std::mem::take(&mut state.pending).into_iter().collect()
        };
        let mut result = Ok(());
        for batch in taken.chunks(BATCH) {
            if let Err(err) = store.mark_devices_seen(batch).await {
                for &(device, at) in batch {
                    self.note(device, at);
                }
                if result.is_ok() {
                    result = Err(err);
                }
            }
        }
        self.state().writing = false;
        self.passes.send_modify(|n| *n += 1);
        result
    }

    /// Resolves once nothing noted is left unwritten: what a test of
    /// last-seen times waits on.
    pub async fn settled(&self) {
        let mut passes = self.passes.subscribe();
        loop {
            {
                let state = self.state();
                if state.pending.is_empty() && !state.writing {
                    return;
                }
            }
            if passes.changed().await.is_err() {
                return;
            }
        }
    }
}

/// Write noted times every [`EVERY`] until `stop`, then once more.
pub async fn run(seen: Arc<Seen>, store: Store, stop: CancellationToken) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => match seen.write(&store).await {
                Ok(()) if failing => {
                    tracing::info!("last-seen times recorded again");
                    failing = false;
                }
                Ok(()) => {}
                Err(err) if !failing => {
                    tracing::warn!(error = %err, "could not record last-seen times; retrying");
                    failing = true;
                }
                Err(_) => {}
            },
        }
    }
    if let Err(err) = seen.write(&store).await {
        tracing::warn!(error = %err, "could not record the last last-seen times");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_latest_time_noted_wins_and_nothing_noted_is_settled() {
        let seen = Seen::default();
        seen.settled().await;
        let (a, b) = (DeviceId::new(), DeviceId::new());
        seen.note(a, 5);
        seen.note(a, 3);
        seen.note(b, 1);
        seen.note(b, 2);
        let state = seen.state();
        assert_eq!(
            (state.pending.get(&a), state.pending.get(&b)),
            (Some(&5), Some(&2))
        );
    }
}
