//! Shards (ADR 034): single-threaded runtimes, each on a thread of its
//! own, that a listener hands its accepted connections to in turn. A
//! connection is served from start to end on its shard's thread, and so
//! is whatever it starts there (a relay channel keyed by [`current`], that
//! channel's session task): a request and its answer then pass between
//! tasks of one thread, without waking another. [`current`] tells code
//! which shard it runs on, `0` off every shard.

use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

thread_local! {
    static CURRENT: Cell<usize> = const { Cell::new(0) };
}

/// The shard this thread serves (1 to the number of shards), or 0 on a
/// thread that is no shard's.
pub fn current() -> usize {
    CURRENT.with(Cell::get)
}

/// A set of running shards; their threads end when it is dropped (tasks
/// still on them are dropped with their runtime).
pub struct Shards {
    handles: Vec<Handle>,
    next: AtomicUsize,
    stop: CancellationToken,
}

impl std::fmt::Debug for Shards {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shards")
            .field("count", &self.handles.len())
            .finish()
    }
}

impl Shards {
    /// Start `count` shards (at least one), their threads named after
    /// `name`.
    pub fn start(count: usize, name: &str) -> std::io::Result<Self> {
        let stop = CancellationToken::new();
        let mut handles = Vec::with_capacity(count.max(1));
        for index in 1..=count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(runtime.handle().clone());
            let stopped = stop.clone();
            let started = std::thread::Builder::new()
                .name(format!("{name}-shard-{index}"))
                .spawn(move || {
                    CURRENT.with(|c| c.set(index));
                    runtime.block_on(stopped.cancelled());
                    // The runtime and every task still on it end here.
                });
            if let Err(err) = started {
                stop.cancel();
                return Err(err);
            }
        }
        Ok(Self {
            handles,
            next: AtomicUsize::new(0),
            stop,
        })
    }

    /// How many shards there are.
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// Tasks alive on all shards now (each runtime's own count).
    pub fn alive_tasks(&self) -> usize {
        self.handles
            .iter()
            .map(|h| h.metrics().num_alive_tasks())
            .sum()
    }

    /// Never: there is at least one shard.
    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// Run `task` on the next shard in turn.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let at = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        drop(self.handles[at].spawn(task));
    }
}

impl Drop for Shards {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Most shards a server starts (`--shards`): more threads than this
/// serve no machine better.
pub const MAX_SHARDS: usize = 256;

/// Shards to start for an operator's `--shards`: the number asked for, at
/// most [`MAX_SHARDS`], or one per CPU when none was.
pub fn count(asked: Option<usize>) -> usize {
    asked.unwrap_or_else(default_count).min(MAX_SHARDS)
}

/// Shards to start when the operator named none: one per CPU the process
/// may use.
pub fn default_count() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn tasks_go_to_each_shard_in_turn_and_know_which_it_is() {
        assert_eq!(current(), 0, "a test's runtime is no shard");
        let shards = Shards::start(2, "test").unwrap();
        assert_eq!(shards.len(), 2);
        let mut seen = Vec::new();
        for _ in 0..4 {
            let (tx, rx) = tokio::sync::oneshot::channel();
            shards.spawn(async move {
                let _ = tx.send((current(), std::thread::current().name().map(str::to_owned)));
            });
            seen.push(rx.await.unwrap());
        }
        let shard_of: Vec<usize> = seen.iter().map(|(s, _)| *s).collect();
        assert_eq!(shard_of, vec![1, 2, 1, 2]);
        assert_eq!(seen[0].1.as_deref(), Some("test-shard-1"));
        assert_eq!(seen[1].1.as_deref(), Some("test-shard-2"));
    }

    #[tokio::test]
    async fn dropping_the_shards_ends_their_tasks() {
        let shards = Shards::start(1, "test").unwrap();
        let (started_tx, started) = tokio::sync::oneshot::channel::<()>();
        let (held_tx, mut held) = tokio::sync::mpsc::channel::<()>(1);
        shards.spawn(async move {
            let _held = held_tx;
            let _ = started_tx.send(());
            std::future::pending::<()>().await;
        });
        started.await.unwrap();
        assert_eq!(shards.alive_tasks(), 1, "the pending task is counted");
        drop(shards);
        // The pending task is dropped with its runtime, and its sender with it.
        assert!(held.recv().await.is_none());
    }
}
