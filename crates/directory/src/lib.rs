//! The session directory: which device has a live tunnel, where, and how to
//! reach it. Split by role: [`SessionView`] (lookup, list, close, open a
//! stream) is implemented by the relay and by the api-server's client of the
//! relay; [`SessionRegistry`] (register, cleanup) exists only in
//! the relay. [`NodeLocator`] says which relay node holds a device.

pub mod client;
pub mod internal_api;
pub mod leases;
pub mod locator;
pub mod mux;
pub mod shared_limits;

use async_trait::async_trait;
use edge_core::{DeviceId, UserId};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tunnel::splice::ChunkRead;

pub use client::RelayDirectory;
pub use locator::{NodeLocator, StaticNode};

/// How often (seconds, by default) a relay re-checks each live tunnel's
/// credential against the store, so a revocation it was not told about
/// (its internal port was unreachable) still closes the tunnel. At most 60.
pub const DEFAULT_CREDENTIAL_RECHECK_SECS: u64 = 30;

/// Name of a relay node (its internal base URL identifies it for routing).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(pub String);

/// What the directory knows about one live tunnel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSummary {
    pub device_id: DeviceId,
    pub owner_id: UserId,
    /// Unix ms when the tunnel was accepted.
    pub connected_since: i64,
    /// Unix ms of the last inbound bytes.
    pub last_heard_from: i64,
    pub remote_addr: String,
    pub agent_version: Option<String>,
    pub node: NodeId,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// A device's live status as a page of a device list shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveStatus {
    /// Unix ms when the tunnel was accepted.
    pub connected_since: i64,
    /// Unix ms of the last inbound bytes, when the answer came from the
    /// node itself (the multi-node directory knows only the connect time).
    pub last_heard_from: Option<i64>,
}

impl LiveStatus {
    /// The statuses of `devices` among `sessions`.
    pub fn of(
        sessions: &[SessionSummary],
        devices: &[DeviceId],
    ) -> std::collections::HashMap<DeviceId, LiveStatus> {
        let wanted: std::collections::HashSet<&DeviceId> = devices.iter().collect();
        sessions
            .iter()
            .filter(|s| wanted.contains(&s.device_id))
            .map(|s| (s.device_id, LiveStatus::from(s)))
            .collect()
    }
}

impl From<&SessionSummary> for LiveStatus {
    fn from(s: &SessionSummary) -> Self {
        Self {
            connected_since: s.connected_since,
            last_heard_from: Some(s.last_heard_from),
        }
    }
}

/// A byte pipe to a fresh stream on a device. It also hands out what it
/// received as the buffers it arrived in ([`ChunkRead`]), so a reader that
/// passes bytes on need not copy them out first.
pub trait ByteStream: AsyncRead + AsyncWrite + ChunkRead + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + ChunkRead + Send + Unpin> ByteStream for T {}

/// A boxed [`ByteStream`].
pub type BoxStream = Box<dyn ByteStream>;

/// Set once the relay node a stream runs through starts draining: a
/// connection over such a stream should serve no further request.
#[derive(Debug, Clone, Default)]
pub struct Retiring(std::sync::Arc<RetiringInner>);

#[derive(Debug, Default)]
pub struct RetiringInner {
    set: std::sync::atomic::AtomicBool,
    changed: tokio::sync::Notify,
}

impl Retiring {
    pub fn is_set(&self) -> bool {
        self.0.set.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A flag set from the start: a stream that serves the request it was
    /// opened for and no other.
    pub fn already_set() -> Self {
        let flag = Self::default();
        flag.set();
        flag
    }

    pub fn set(&self) {
        self.0.set.store(true, std::sync::atomic::Ordering::Relaxed);
        self.0.changed.notify_waiters();
    }

    /// How many handles of this flag exist (this one included).
    pub fn holders(&self) -> usize {
        std::sync::Arc::strong_count(&self.0)
    }

    /// Resolves once the flag is set.
    pub async fn until_set(self) {
        loop {
            let notified = self.0.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_set() {
                return;
            }
            notified.await;
        }
    }
}

/// Why a directory call failed.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("device is not connected")]
    Offline,
    #[error("relay unreachable: {0}")]
    Unreachable(String),
    #[error("relay did not answer in time")]
    Timeout,
    #[error("relay error: {0}")]
    Relay(String),
    #[error("device session refused the stream: {0}")]
    Stream(String),
    /// The device's node is draining: it takes no new stream; the device
    /// reconnects to another node once its open streams end.
    #[error("the device's relay node is draining")]
    Draining,
    /// The shared directory (Redis) cannot answer now.
    #[error("directory unavailable: {0}")]
    Unavailable(String),
    /// The device's streams cannot name a target (a Go device, an older
    /// agent): only its local service is reachable.
    #[error("the device's agent cannot reach other targets")]
    NotSupported,
}

/// Read-and-control view of the directory. Both the relay and the
/// api-server implement it; neither can register anything through it.
#[async_trait]
pub trait SessionView: Send + Sync {
    async fn lookup(&self, device: DeviceId) -> Result<Option<SessionSummary>, DirectoryError>;
    async fn list(&self) -> Result<Vec<SessionSummary>, DirectoryError>;
    /// The live sessions of one owner's devices (the console polls this).
    async fn list_owned(&self, owner: UserId) -> Result<Vec<SessionSummary>, DirectoryError>;
    /// The live status of `devices` (a page of `owner`'s list) in one round
    /// trip; devices missing from the answer are offline.
    async fn statuses(
        &self,
        owner: UserId,
        devices: &[DeviceId],
    ) -> Result<std::collections::HashMap<DeviceId, LiveStatus>, DirectoryError> {
        Ok(LiveStatus::of(&self.list_owned(owner).await?, devices))
    }
    /// Close a device's live session with GoAway; true when one existed.
    async fn close(&self, device: DeviceId) -> Result<bool, DirectoryError>;
    /// Open a fresh yamux stream to the device.
    async fn open_stream(&self, device: DeviceId) -> Result<BoxStream, DirectoryError>;
    /// [`SessionView::open_stream`], with the flag that says when the
    /// stream's node starts draining (never, unless the view can tell).
    async fn open_stream_retiring(
        &self,
        device: DeviceId,
    ) -> Result<(BoxStream, Retiring), DirectoryError> {
        Ok((self.open_stream(device).await?, Retiring::default()))
    }
    /// A stream to the TCP service `target` on the device's side (ADR 027):
    /// the agent's one-line answer comes first
    /// ([`tunnel::preamble::read_answer`]), then the service's bytes.
    async fn open_tcp(
        &self,
        device: DeviceId,
        target: &tunnel::preamble::TcpTarget,
    ) -> Result<BoxStream, DirectoryError>;
    /// The relay nodes that are up (one, in single-node mode).
    async fn nodes(&self) -> Result<Vec<NodeId>, DirectoryError>;
}

/// Identifies one accepted connection, so that a stale connection's cleanup
/// never removes the session that replaced it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnectionId(pub u64);

/// The relay-only side: sessions come and go here.
#[async_trait]
pub trait SessionRegistry: Send + Sync {
    /// The live handle the relay keeps per session.
    type Live: Send + Sync;
    /// Add a session; a previous session of the same device is replaced and
    /// closed with GoAway(0).
    async fn register(&self, summary: SessionSummary, live: Self::Live) -> ConnectionId;
    /// Remove the session if `conn` is still the registered one.
    async fn cleanup(&self, device: DeviceId, conn: ConnectionId);
}
