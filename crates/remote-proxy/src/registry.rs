//! The relay's in-memory session directory: device id → live session. It is
//! the only [`SessionRegistry`]; it also serves the [`SessionView`] that the
//! internal API exposes. Newest connection wins: registering a device that
//! already has a session closes the old one with GoAway(0). An index by
//! owner answers "this user's sessions" without scanning every tunnel.

pub use crate::device_stream::DeviceStream;
use async_trait::async_trait;
use directory::{
    BoxStream, ConnectionId, DirectoryError, NodeId, SessionRegistry, SessionSummary, SessionView,
};
use edge_core::{DeviceId, UserId};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tunnel::preamble::Target;
use tunnel::pump::Activity;
use tunnel::Control;

/// What the relay holds for one live tunnel.
pub struct LiveSession {
    pub control: Control,
    /// Cancelling it closes the session with GoAway(0).
    pub cancel: CancellationToken,
    pub activity: Arc<Activity>,
    /// One permit per concurrently open stream.
    pub streams: Arc<Semaphore>,
    /// The number of permits `streams` started with.
    pub max_streams: usize,
    /// Woken each time one of the session's streams is released.
    pub released: Arc<tokio::sync::Notify>,
    /// Why this node closed the session, when it did (a metrics label).
    pub closed_for: Arc<std::sync::OnceLock<&'static str>>,
    /// Every stream starts with a preamble naming its target (the agent
    /// asked for it at the upgrade, ADR 026); `false`: plain streams.
    pub preamble: bool,
    /// Its streams may grow to burst windows (the agent offered them at
    /// the upgrade, ADR 044); `false`: 1 MiB windows at most.
    pub burst: bool,
    /// The device's own metrics path (`None`: the relay's setting); kept
    /// current by the credential re-check.
    pub metrics_path: Arc<std::sync::RwLock<Option<String>>>,
    /// The shard whose thread drives the session (ADR 042; 0: none).
    pub shard: usize,
}

impl LiveSession {
    /// Close with GoAway(0), saying why.
    pub fn close_for(&self, reason: &'static str) {
        let _ = self.closed_for.set(reason);
        self.cancel.cancel();
    }

    fn open_streams(&self) -> usize {
        self.max_streams
            .saturating_sub(self.streams.available_permits())
    }
}

struct Entry {
    conn: ConnectionId,
    summary: SessionSummary,
    live: LiveSession,
}

/// The sessions by device, and the devices with a session by owner.
#[derive(Default)]
struct Sessions {
    by_device: HashMap<DeviceId, Entry>,
    by_owner: HashMap<UserId, HashSet<DeviceId>>,
}

impl Sessions {
    fn insert(&mut self, entry: Entry) -> Option<Entry> {
        let (device, owner) = (entry.summary.device_id, entry.summary.owner_id);
        let old = self.by_device.insert(device, entry);
        if let Some(old) = &old {
            self.unindex(old.summary.owner_id, device);
        }
        self.by_owner.entry(owner).or_default().insert(device);
        old
    }

    fn remove(&mut self, device: DeviceId) -> Option<Entry> {
        let entry = self.by_device.remove(&device)?;
        self.unindex(entry.summary.owner_id, device);
        Some(entry)
    }

    fn unindex(&mut self, owner: UserId, device: DeviceId) {
        if let Some(devices) = self.by_owner.get_mut(&owner) {
            devices.remove(&device);
            if devices.is_empty() {
                self.by_owner.remove(&owner);
            }
        }
    }
}

/// In-memory directory of this node's tunnels.
pub struct LocalDirectory {
    node: NodeId,
    entries: Mutex<Sessions>,
    next_conn: AtomicU64,
    changes: tokio::sync::watch::Sender<u64>,
    open_timeout: Duration,
    draining: AtomicBool,
}

impl LocalDirectory {
    pub fn new(node: NodeId, open_timeout: Duration) -> Self {
        Self {
            node,
            entries: Mutex::new(Sessions::default()),
            next_conn: AtomicU64::new(1),
            changes: tokio::sync::watch::channel(0).0,
            open_timeout,
            draining: AtomicBool::new(false),
        }
    }

    pub fn node(&self) -> &NodeId {
        &self.node
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// From now on, refuse new streams ([`DirectoryError::Draining`]).
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    fn entries(&self) -> MutexGuard<'_, Sessions> {
        // A panic while holding this lock cannot leave the maps inconsistent
        // (no code that can panic runs between their updates), so poisoning
        // is ignored.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn changed(&self) {
        self.changes.send_modify(|v| *v += 1);
    }

    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.entries().by_device.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of owners in the owner index (zero when no session is live).
    pub fn indexed_owners(&self) -> usize {
        self.entries().by_owner.len()
    }

    /// Wait until `pred` holds for the directory (re-checked on each change).
    pub async fn wait_until(&self, pred: impl Fn(&Self) -> bool) {
        let mut rx = self.changes.subscribe();
        loop {
            if pred(self) {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Whether `device` may hold a tunnel while its owner's devices already
    /// hold `max`: yes when it has one already (a reconnect replaces it).
    pub fn owner_has_room(&self, owner: UserId, device: DeviceId, max: usize) -> bool {
        let entries = self.entries();
        let held = entries.by_owner.get(&owner);
        held.is_none_or(|d| d.contains(&device) || d.len() < max)
    }

    /// The connection id of a device's session, if connected.
    pub fn connection_of(&self, device: DeviceId) -> Option<ConnectionId> {
        self.entries().by_device.get(&device).map(|e| e.conn)
    }

    /// Every live session: device, connection and when it connected (ms).
    pub fn live(&self) -> Vec<(DeviceId, ConnectionId, i64)> {
        self.entries()
            .by_device
            .iter()
            .map(|(d, e)| (*d, e.conn, e.summary.connected_since))
            .collect()
    }

    /// When `device`'s tunnel connected (ms) and its latest ping round trip.
    pub fn tunnel_figures(&self, device: DeviceId) -> Option<(i64, Option<Duration>)> {
        let entries = self.entries();
        let e = entries.by_device.get(&device)?;
        Some((e.summary.connected_since, e.live.activity.ping_rtt()))
    }

    /// `device`'s own metrics path, if it has one.
    pub fn metrics_path(&self, device: DeviceId) -> Option<String> {
        let entries = self.entries();
        let path = entries
            .by_device
            .get(&device)?
            .live
            .metrics_path
            .read()
            .ok()?;
        path.clone()
    }

    /// Whether `device`'s streams start with a preamble (ADR 026).
    pub fn has_preamble(&self, device: DeviceId) -> Option<bool> {
        Some(self.entries().by_device.get(&device)?.live.preamble)
    }

    /// Whether `device`'s streams may grow to burst windows (ADR 044).
    pub fn has_burst_windows(&self, device: DeviceId) -> Option<bool> {
        Some(self.entries().by_device.get(&device)?.live.burst)
    }

    /// Close `device`'s session with GoAway(0) if it is still `conn`.
    pub fn close_conn(&self, device: DeviceId, conn: ConnectionId, reason: &'static str) -> bool {
        match self.entries().by_device.get(&device) {
            Some(entry) if entry.conn == conn => {
                entry.live.close_for(reason);
                true
            }
            _ => false,
        }
    }

    /// Live sessions, and streams open over all of them.
    pub fn counts(&self) -> (usize, usize) {
        let entries = self.entries();
        let streams = entries
            .by_device
            .values()
            .map(|e| e.live.open_streams())
            .sum();
        (entries.by_device.len(), streams)
    }

    /// Streams open now on `device`'s session (0 when it has none).
    pub fn open_streams(&self, device: DeviceId) -> usize {
        self.entries()
            .by_device
            .get(&device)
            .map_or(0, |e| e.live.open_streams())
    }

    /// Wait until `device`'s session `conn` has no open stream (or is gone).
    pub async fn until_idle(&self, device: DeviceId, conn: ConnectionId) {
        /// A session that ends without releasing a stream is noticed this soon.
        const RECHECK: Duration = Duration::from_millis(250);
        loop {
            let released = match self.entries().by_device.get(&device) {
                Some(e) if e.conn == conn && e.live.open_streams() > 0 => e.live.released.clone(),
                _ => return,
            };
            let notified = released.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let busy = self
                .entries()
                .by_device
                .get(&device)
                .is_some_and(|e| e.conn == conn && e.live.open_streams() > 0);
            if !busy {
                return;
            }
            tokio::select! {
                () = notified => {}
                () = tokio::time::sleep(RECHECK) => {}
            }
        }
    }

    /// Take `device`'s session out of the directory at once (no new
    /// streams, status offline) and wind it down with GoAway(0) in the
    /// background, saying why; its own later cleanup then finds nothing
    /// of its own to remove. True when there was one.
    pub fn remove_and_close(&self, device: DeviceId, reason: &'static str) -> bool {
        let removed = self.entries().remove(device);
        match removed {
            Some(entry) => {
                entry.live.close_for(reason);
                self.changed();
                true
            }
            None => false,
        }
    }

    /// Close every session (shutdown).
    pub fn close_all(&self) {
        for entry in self.entries().by_device.values() {
            entry.live.close_for("shutdown");
        }
    }

    fn snapshot(entry: &Entry) -> SessionSummary {
        let mut s = entry.summary.clone();
        s.last_heard_from = entry.live.activity.last_inbound_ms();
        s.bytes_in = entry.live.activity.bytes_in();
        s.bytes_out = entry.live.activity.bytes_out();
        s
    }
}

#[async_trait]
impl SessionRegistry for LocalDirectory {
    type Live = LiveSession;

    async fn register(&self, summary: SessionSummary, live: LiveSession) -> ConnectionId {
        let conn = ConnectionId(self.next_conn.fetch_add(1, Ordering::Relaxed));
        let device = summary.device_id;
        let old = self.entries().insert(Entry {
            conn,
            summary,
            live,
        });
        if let Some(old) = old {
            tracing::info!(%device, "newer connection replaces the existing session");
            old.live.close_for("replaced");
        }
        self.changed();
        conn
    }

    async fn cleanup(&self, device: DeviceId, conn: ConnectionId) {
        let removed = {
            let mut entries = self.entries();
            match entries.by_device.get(&device) {
                Some(e) if e.conn == conn => entries.remove(device),
                _ => None,
            }
        };
        if let Some(entry) = removed {
            entry.live.cancel.cancel();
            self.changed();
        }
    }
}

#[async_trait]
impl SessionView for LocalDirectory {
    async fn lookup(&self, device: DeviceId) -> Result<Option<SessionSummary>, DirectoryError> {
        Ok(self.entries().by_device.get(&device).map(Self::snapshot))
    }

    async fn list(&self) -> Result<Vec<SessionSummary>, DirectoryError> {
        let mut all: Vec<_> = self
            .entries()
            .by_device
            .values()
            .map(Self::snapshot)
            .collect();
        all.sort_by_key(|s| s.connected_since);
        Ok(all)
    }

    async fn list_owned(&self, owner: UserId) -> Result<Vec<SessionSummary>, DirectoryError> {
        let entries = self.entries();
        let mut owned: Vec<_> = entries
            .by_owner
            .get(&owner)
            .into_iter()
            .flatten()
            .filter_map(|d| entries.by_device.get(d))
            .map(Self::snapshot)
            .collect();
        owned.sort_by_key(|s| s.connected_since);
        Ok(owned)
    }

    /// The session leaves the directory at once (no new streams, status
    /// offline) and winds down with GoAway(0) in the background; its own
    /// later cleanup then finds nothing of its own to remove.
    async fn close(&self, device: DeviceId) -> Result<bool, DirectoryError> {
        Ok(self.remove_and_close(device, "closed"))
    }

    async fn nodes(&self) -> Result<Vec<NodeId>, DirectoryError> {
        Ok(vec![self.node.clone()])
    }

    async fn open_stream(&self, device: DeviceId) -> Result<BoxStream, DirectoryError> {
        Ok(Box::new(self.open_device_stream(device).await?))
    }

    async fn open_tcp(
        &self,
        device: DeviceId,
        target: &tunnel::preamble::TcpTarget,
    ) -> Result<BoxStream, DirectoryError> {
        let stream = self
            .open_stream_to(device, Target::Tcp(target.clone()))
            .await?
            .ok_or(DirectoryError::NotSupported)?;
        Ok(Box::new(stream))
    }
}

impl LocalDirectory {
    /// A fresh yamux stream to the device, holding one of its session's
    /// stream permits; what [`SessionView::open_stream`] boxes, kept
    /// concrete for the relay's own piping ([`tunnel::splice`]).
    pub async fn open_device_stream(
        &self,
        device: DeviceId,
    ) -> Result<DeviceStream, DirectoryError> {
        self.open_stream_to(device, Target::Service)
            .await?
            .ok_or(DirectoryError::Offline)
    }

    /// A stream to `target` on `device`; `None` when the device's streams
    /// carry no preamble and `target` is not its local service (a Go
    /// device has no agent endpoint).
    pub async fn open_stream_to(
        &self,
        device: DeviceId,
        target: Target,
    ) -> Result<Option<DeviceStream>, DirectoryError> {
        if self.draining.load(Ordering::Relaxed) {
            return Err(DirectoryError::Draining);
        }
        let (mut control, streams, released, preamble, shard) = {
            let entries = self.entries();
            let entry = entries
                .by_device
                .get(&device)
                .ok_or(DirectoryError::Offline)?;
            (
                entry.live.control.clone(),
                entry.live.streams.clone(),
                entry.live.released.clone(),
                entry.live.preamble,
                entry.live.shard,
            )
        };
        if !preamble && target != Target::Service {
            return Ok(None);
        }
        let permit = streams
            .try_acquire_owned()
            .map_err(|_| DirectoryError::Stream("too many concurrent streams".into()))?;
        let stream = tokio::time::timeout(self.open_timeout, control.open_stream())
            .await
            .map_err(|_| DirectoryError::Timeout)?
            .map_err(|e| DirectoryError::Stream(e.to_string()))?;
        let mut stream = DeviceStream::new(stream, permit, released).on_shard(shard);
        if preamble {
            use tokio::io::AsyncWriteExt;
            stream
                .write_all(&target.line())
                .await
                .map_err(|e| DirectoryError::Stream(e.to_string()))?;
        }
        Ok(Some(stream))
    }
}
