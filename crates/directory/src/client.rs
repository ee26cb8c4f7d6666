//! The api-server's [`SessionView`]: asks the relay node that holds a device,
//! over the node's internal port, with the shared secret. Every call is
//! bounded by a connect timeout and a response timeout, so a dead relay
//! surfaces as an error, never as a hang. Node URLs may be `http://` or
//! `https://` (then the node's certificate is checked against the web PKI
//! roots plus the configured private CA), or `unix:<path>` for a node on
//! this host that serves its internal port on a Unix socket too (ADR 041).
//! Streams to devices travel on multiplexed channels to each node
//! (`crate::mux`), opened on first use and again whenever they end: the
//! first channel, and for a relay on shards one served by each shard its
//! devices are on (ADR 043), so a device's streams stay on its shard's
//! thread. Session lookups and control calls are plain requests.

use crate::internal_api::{self, CODE_OFFLINE};
use crate::mux;
use crate::{
    BoxStream, DirectoryError, LiveStatus, NodeId, NodeLocator, Retiring, SessionSummary,
    SessionView,
};
use async_trait::async_trait;
use bytes::Bytes;
use edge_core::error_body::ErrorBody;
use edge_core::{DeviceId, Secret, UserId};
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// Client of the relay's internal API.
#[derive(Clone)]
pub struct RelayDirectory {
    locator: Arc<dyn NodeLocator>,
    secret: Secret,
    connect_timeout: Duration,
    response_timeout: Duration,
    tls: Option<Arc<rustls::ClientConfig>>,
    /// Refuse `http://` nodes off loopback (multi-node mode: node URLs come
    /// from Redis, and each connection carries the internal secret).
    tls_off_loopback: bool,
    /// The channel slot of each node, one per shard (ADR 034: a shard's
    /// requests and its channel's session task share its thread). The
    /// map's lock is held only to find a slot; connecting holds that
    /// slot alone, so a node that answers nothing never delays requests
    /// to the others.
    ///
    /// Keyed by node, this process's shard, and the relay shard the
    /// channel is served on (ADR 043), 0 for the one opened first (the
    /// channel for devices whose place is not known). That one is filed
    /// under its relay shard too.
    channels: Arc<std::sync::Mutex<HashMap<ChannelKey, ChannelSlot>>>,
    /// The relay shard each device's session runs on, as a relay last
    /// answered (ADR 043).
    placed: Arc<std::sync::Mutex<HashMap<DeviceId, u8>>>,
    /// Searches for a channel on a relay shard, running or given up.
    seeking: Arc<std::sync::Mutex<HashMap<ChannelKey, Seek>>>,
    /// TCP connections made to relay nodes so far.
    connections: Arc<AtomicU64>,
    /// When a node last said it is draining: its devices are between
    /// nodes for a moment, without a lease (see `open_stream_retiring`).
    last_drain: LastDrain,
}

/// When a node last said it is draining; shared by every channel.
#[derive(Clone, Default)]
struct LastDrain(Arc<std::sync::Mutex<Option<tokio::time::Instant>>>);

impl LastDrain {
    /// A node said it is draining, now.
    fn note(&self) {
        if let Ok(mut last) = self.0.lock() {
            *last = Some(tokio::time::Instant::now());
        }
    }

    /// Whether a node said it is draining within `window`.
    fn within(&self, window: Duration) -> bool {
        self.0
            .lock()
            .ok()
            .and_then(|last| *last)
            .is_some_and(|at| at.elapsed() < window)
    }
}

/// A live channel to one node: the control that opens streams, and the
/// token that says the session ended.
#[derive(Clone)]
struct Channel {
    control: tunnel::Control,
    ended: CancellationToken,
    /// Set by the node's drain notice (or a draining answer).
    draining: Retiring,
    /// The relay shard serving it (1 to 255), 0 when the relay did not say.
    shard: u8,
}

/// A node, this process's shard, and a relay shard (0: any).
type ChannelKey = (NodeId, usize, u8);

/// A search for a channel on one relay shard.
enum Seek {
    Running,
    /// It found none; not tried again before then.
    GaveUp(tokio::time::Instant),
}

/// Channels opened, at most, to find one the relay serves on a given
/// shard: the relay hands its connections to its shards in turn, so with
/// N shards N tries in a row find each one when nothing else connects
/// meanwhile.
const SEEK_TRIES: usize = 8;
/// How long a relay shard no channel could be opened on is not sought
/// again; streams to its devices go on the first channel meanwhile.
const SEEK_AGAIN_AFTER: Duration = Duration::from_secs(30);
/// Devices whose place is remembered, at most; past it the memory starts
/// again (a forgotten place costs one stream on the first channel).
const MAX_PLACED: usize = 1 << 16;

/// One node's channel, opened by whoever finds it missing first (the others
/// asking for the same node wait for that one attempt).
type ChannelSlot = Arc<tokio::sync::Mutex<Option<Channel>>>;

/// How a node URL names a Unix-domain socket: `unix:/run/edge/relay.sock`.
pub const UNIX_SCHEME: &str = "unix:";

/// The node URL of a relay's internal Unix socket at `path`.
pub fn unix_node_url(path: &std::path::Path) -> String {
    format!("{UNIX_SCHEME}{}", path.display())
}

/// The byte stream under one internal-API connection.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Io for T {}

impl std::fmt::Debug for RelayDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayDirectory")
            .field("secret", &self.secret)
            .field("connect_timeout", &self.connect_timeout)
            .finish_non_exhaustive()
    }
}

impl RelayDirectory {
    pub fn new(
        locator: Arc<dyn NodeLocator>,
        secret: Secret,
        connect_timeout: Duration,
        response_timeout: Duration,
    ) -> Self {
        Self {
            locator,
            secret,
            connect_timeout,
            response_timeout,
            tls: None,
            tls_off_loopback: false,
            channels: Arc::default(),
            placed: Arc::default(),
            seeking: Arc::default(),
            connections: Arc::default(),
            last_drain: LastDrain::default(),
        }
    }

    /// How many TCP connections this client has made to relay nodes (a
    /// proxied request on a warm channel makes none).
    pub fn connections_opened(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// The first channel to `node` of the shard this runs on, opened now
    /// if there is none (or it ended).
    async fn channel(&self, node: &NodeId) -> Result<Channel, DirectoryError> {
        let here = edge_core::shard::current();
        let slot = self.slot((node.clone(), here, 0));
        let mut slot = slot.lock().await;
        if let Some(ch) = slot.as_ref() {
            if !ch.ended.is_cancelled() {
                return Ok(ch.clone());
            }
        }
        let ch = self.open_channel(node).await?;
        *slot = Some(ch.clone());
        drop(slot);
        if ch.shard != 0 {
            // Also the channel of the devices on its relay shard.
            self.file((node.clone(), here, ch.shard), &ch);
        }
        Ok(ch)
    }

    /// The slot of `key`, made empty if there is none.
    fn slot(&self, key: ChannelKey) -> ChannelSlot {
        self.channels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(key)
            .or_default()
            .clone()
    }

    /// Put `ch` in the slot of `key` unless that holds a live channel or
    /// is being filled; whether it went in.
    fn file(&self, key: ChannelKey, ch: &Channel) -> bool {
        let slot = self.slot(key);
        let Ok(mut slot) = slot.try_lock() else {
            return false;
        };
        if slot.as_ref().is_some_and(|c| !c.ended.is_cancelled()) {
            return false;
        }
        *slot = Some(ch.clone());
        true
    }

    /// A live channel to `node` of this shard's that relay shard `on`
    /// serves, if one is at hand now.
    fn channel_on(&self, node: &NodeId, on: u8) -> Option<Channel> {
        let key = (node.clone(), edge_core::shard::current(), on);
        let slot = self
            .channels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&key)?
            .clone();
        let slot = slot.try_lock().ok()?;
        slot.as_ref().filter(|c| !c.ended.is_cancelled()).cloned()
    }

    /// Make sure a channel to `node` served by relay shard `on` is at hand
    /// or being looked for (on this process's shard, in the background);
    /// whether it is. `false` once a search found none, for a while.
    fn seek(&self, node: &NodeId, on: u8) -> bool {
        let here = edge_core::shard::current();
        if self.channel_on(node, on).is_some() {
            return true;
        }
        let key = (node.clone(), here, on);
        {
            let mut seeking = self
                .seeking
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match seeking.get(&key) {
                Some(Seek::Running) => return true,
                Some(Seek::GaveUp(until)) if tokio::time::Instant::now() < *until => {
                    return false;
                }
                _ => {}
            }
            seeking.insert(key.clone(), Seek::Running);
        }
        let this = self.clone();
        tokio::spawn(async move {
            let found = this.open_channels_until(&key).await;
            let mut seeking = this
                .seeking
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if found {
                seeking.remove(&key);
            } else {
                tracing::debug!(node = %key.0 .0, shard = key.2, "no channel landed on the device's relay shard");
                seeking.insert(
                    key,
                    Seek::GaveUp(tokio::time::Instant::now() + SEEK_AGAIN_AFTER),
                );
            }
        });
        true
    }

    /// Open channels to `key`'s node until one lands on its relay shard
    /// (at most [`SEEK_TRIES`]); one that lands on a shard still without a
    /// channel is kept for that shard, the others are closed.
    async fn open_channels_until(&self, key: &ChannelKey) -> bool {
        let (node, here, want) = key;
        for _ in 0..SEEK_TRIES {
            let Ok(ch) = self.open_channel(node).await else {
                return false;
            };
            if ch.shard == 0 {
                ch.ended.cancel();
                return false;
            }
            let filed = self.file((node.clone(), *here, ch.shard), &ch);
            if !filed {
                ch.ended.cancel();
            }
            if ch.shard == *want {
                return filed || self.channel_on(node, *want).is_some();
            }
        }
        false
    }

    /// The relay shard `device`'s session ran on when a relay last said.
    fn place_of(&self, device: DeviceId) -> u8 {
        self.placed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&device)
            .map_or(0, |&s| s)
    }

    /// A relay answered that `device`'s session runs on `shard`.
    fn note_place(&self, device: DeviceId, shard: u8) {
        let mut placed = self
            .placed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if placed.len() >= MAX_PLACED && !placed.contains_key(&device) {
            placed.clear();
        }
        placed.insert(device, shard);
    }

    /// A new channel to `node`: the upgrade, its session's driver spawned
    /// on this shard.
    async fn open_channel(&self, node: &NodeId) -> Result<Channel, DirectoryError> {
        let res = self
            .send(node, Method::GET, mux::MUX_PATH, Some(mux::MUX_PROTOCOL))
            .await?;
        if res.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Err(self.error_from(res).await);
        }
        let shard = res
            .headers()
            .get(mux::SHARD_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u8>().ok())
            .unwrap_or(0);
        let upgraded = hyper::upgrade::on(res)
            .await
            .map_err(|e| DirectoryError::Unreachable(format!("channel upgrade: {e}")))?;
        let ended = CancellationToken::new();
        let draining = Retiring::default();
        let notice = draining.clone();
        let last_drain = self.last_drain.clone();
        let (control, driver) = tunnel::session::client_hearing(
            tunnel::session::Plain(TokioIo::new(upgraded)),
            mux::config(),
            ended.clone(),
            tunnel::pump::Activity::new(),
            move |stream| {
                // The node's only stream toward us is its drain notice.
                drop(stream);
                notice.set();
                last_drain.note();
            },
        );
        let marker = ended.clone();
        let name = node.0.clone();
        let (drained, last_drain) = (draining.clone(), self.last_drain.clone());
        tokio::spawn(async move {
            let end = driver.await;
            marker.cancel();
            if drained.is_set() {
                // A drained node's last devices left it just now.
                last_drain.note();
            }
            tracing::debug!(node = %name, %end, "relay channel ended");
        });
        Ok(Channel {
            control,
            ended,
            draining,
            shard,
        })
    }

    /// A fresh channel stream to `node` for `device`, on the channel its
    /// relay shard serves when there is one at hand, else on the first;
    /// the channel's drain flag and relay shard. A channel found dead is
    /// replaced once.
    async fn channel_stream(
        &self,
        node: &NodeId,
        device: DeviceId,
    ) -> Result<(tunnel::StreamHandle, Retiring, u8), DirectoryError> {
        let on = self.place_of(device);
        for _ in 0..2 {
            let placed = (on != 0).then(|| self.channel_on(node, on)).flatten();
            let mut ch = match placed {
                Some(ch) => ch,
                None => {
                    if on != 0 {
                        self.seek(node, on);
                    }
                    self.channel(node).await?
                }
            };
            match ch.control.open_stream().await {
                Ok(stream) => return Ok((stream, ch.draining, ch.shard)),
                Err(err) => {
                    tracing::debug!(node = %node.0, error = %err, "relay channel unusable; reopening");
                    ch.ended.cancel();
                }
            }
        }
        Err(DirectoryError::Unreachable(
            "relay channel keeps failing".into(),
        ))
    }

    /// Trust `tls` (roots plus a private CA) for `https://` nodes.
    pub fn with_tls(mut self, tls: Arc<rustls::ClientConfig>) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Refuse plaintext to any node not on a loopback address (multi-node
    /// mode).
    pub fn requiring_tls_off_loopback(mut self) -> Self {
        self.tls_off_loopback = true;
        self
    }

    /// A connection to `node`'s internal port (TLS for `https://`); returns
    /// it with the authority to send as `Host`.
    async fn connect(&self, node: &NodeId) -> Result<(Box<dyn Io>, String), DirectoryError> {
        if let Some(path) = node.0.strip_prefix(UNIX_SCHEME) {
            // A node on this host (ADR 041): no TLS, and no plaintext
            // crosses a network.
            let connecting = tokio::net::UnixStream::connect(path);
            let io = tokio::time::timeout(self.connect_timeout, connecting)
                .await
                .map_err(|_| DirectoryError::Timeout)?
                .map_err(|e| DirectoryError::Unreachable(format!("{}: {e}", node.0)))?;
            self.connections.fetch_add(1, Ordering::Relaxed);
            return Ok((Box::new(io) as Box<dyn Io>, "localhost".to_owned()));
        }
        let (tls, rest) = if let Some(rest) = node.0.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = node.0.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(DirectoryError::Relay(format!(
                "unsupported node URL {}",
                node.0
            )));
        };
        let authority = rest.trim_end_matches('/').to_owned();
        if !tls && self.tls_off_loopback && !is_loopback_authority(&authority) {
            return Err(DirectoryError::Relay(format!(
                "refusing plaintext to relay node {}: multi-node mode needs https:// off loopback",
                node.0
            )));
        }
        let connecting = async {
            let tcp = TcpStream::connect(&authority)
                .await
                .map_err(|e| DirectoryError::Unreachable(e.to_string()))?;
            self.connections.fetch_add(1, Ordering::Relaxed);
            let _ = tcp.set_nodelay(true);
            if !tls {
                return Ok(Box::new(tcp) as Box<dyn Io>);
            }
            let host = host_of(&authority);
            let name = rustls::pki_types::ServerName::try_from(host.to_owned())
                .map_err(|e| DirectoryError::Relay(format!("node name {host:?}: {e}")))?;
            let config = match &self.tls {
                Some(c) => c.clone(),
                None => edge_tls::client_config(None)
                    .map_err(|e| DirectoryError::Relay(e.to_string()))?,
            };
            let stream = edge_tls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(|e| DirectoryError::Unreachable(format!("TLS with {authority}: {e}")))?;
            Ok(Box::new(stream) as Box<dyn Io>)
        };
        let io = tokio::time::timeout(self.connect_timeout, connecting)
            .await
            .map_err(|_| DirectoryError::Timeout)??;
        Ok((io, authority))
    }

    async fn send(
        &self,
        node: &NodeId,
        method: Method,
        path: &str,
        upgrade: Option<&'static str>,
    ) -> Result<Response<Incoming>, DirectoryError> {
        let (io, authority) = self.connect(node).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| DirectoryError::Unreachable(e.to_string()))?;
        tokio::spawn(async move {
            if let Err(err) = conn.with_upgrades().await {
                tracing::debug!(error = %err, "internal API connection ended");
            }
        });
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, authority.as_str());
        if let Some(id) = edge_core::request_id::current() {
            req = req.header(edge_core::request_id::HEADER, id.as_str());
        }
        let mut req = req.header(
            header::AUTHORIZATION,
            format!("Bearer {}", self.secret.expose()),
        );
        if let Some(protocol) = upgrade {
            req = req
                .header(header::CONNECTION, "upgrade")
                .header(header::UPGRADE, protocol);
            if protocol == mux::MUX_PROTOCOL {
                // Answers name the device's relay shard (ADR 043).
                req = req.header(mux::SHARD_HEADER, "ask");
            }
        }
        let req = req
            .body(Empty::<Bytes>::new())
            .map_err(|e| DirectoryError::Relay(e.to_string()))?;
        tokio::time::timeout(self.response_timeout, sender.send_request(req))
            .await
            .map_err(|_| DirectoryError::Timeout)?
            .map_err(|e| DirectoryError::Unreachable(e.to_string()))
    }

    async fn body(&self, res: Response<Incoming>) -> Result<Bytes, DirectoryError> {
        let collected = tokio::time::timeout(self.response_timeout, res.into_body().collect())
            .await
            .map_err(|_| DirectoryError::Timeout)?
            .map_err(|e| DirectoryError::Unreachable(e.to_string()))?;
        Ok(collected.to_bytes())
    }

    async fn error_from(&self, res: Response<Incoming>) -> DirectoryError {
        let status = res.status();
        let code = self
            .body(res)
            .await
            .ok()
            .and_then(|b| serde_json::from_slice::<ErrorBody>(&b).ok())
            .map(|b| b.error.code);
        if status == StatusCode::NOT_FOUND && code.as_deref() == Some(CODE_OFFLINE) {
            DirectoryError::Offline
        } else {
            DirectoryError::Relay(format!(
                "HTTP {status}{}",
                code.map(|c| format!(" ({c})")).unwrap_or_default()
            ))
        }
    }

    /// `GET path` (a session list) on every node, concatenated.
    async fn list_at(&self, path: &str) -> Result<Vec<SessionSummary>, DirectoryError> {
        let mut all = Vec::new();
        for node in self.locator.nodes().await? {
            let res = self.send(&node, Method::GET, path, None).await?;
            if res.status() != StatusCode::OK {
                return Err(self.error_from(res).await);
            }
            let body = self.body(res).await?;
            let mut sessions: Vec<SessionSummary> = serde_json::from_slice(&body)
                .map_err(|e| DirectoryError::Relay(format!("bad session list JSON: {e}")))?;
            all.append(&mut sessions);
        }
        Ok(all)
    }

    async fn node_for(&self, device: DeviceId) -> Result<NodeId, DirectoryError> {
        self.locator
            .locate(device)
            .await?
            .ok_or(DirectoryError::Offline)
    }
}

#[async_trait]
impl SessionView for RelayDirectory {
    async fn lookup(&self, device: DeviceId) -> Result<Option<SessionSummary>, DirectoryError> {
        let node = match self.locator.locate(device).await? {
            Some(node) => node,
            None => return Ok(None),
        };
        let res = self
            .send(
                &node,
                Method::GET,
                &internal_api::session_path(device),
                None,
            )
            .await?;
        if res.status() != StatusCode::OK {
            return match self.error_from(res).await {
                DirectoryError::Offline => Ok(None),
                other => Err(other),
            };
        }
        let body = self.body(res).await?;
        serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| DirectoryError::Relay(format!("bad session JSON: {e}")))
    }

    async fn list(&self) -> Result<Vec<SessionSummary>, DirectoryError> {
        self.list_at(internal_api::SESSIONS).await
    }

    async fn list_owned(&self, owner: UserId) -> Result<Vec<SessionSummary>, DirectoryError> {
        self.list_at(&internal_api::owned_sessions_path(owner))
            .await
    }

    /// With a locator that knows every device's node (Redis), one `MGET`
    /// of the page's leases; else one call to the node.
    async fn statuses(
        &self,
        owner: UserId,
        devices: &[DeviceId],
    ) -> Result<HashMap<DeviceId, LiveStatus>, DirectoryError> {
        match self.locator.locate_many(devices).await? {
            Some(found) => Ok(devices
                .iter()
                .zip(found)
                .filter_map(|(d, at)| {
                    at.map(|(_, since)| {
                        (
                            *d,
                            LiveStatus {
                                connected_since: since,
                                last_heard_from: None,
                            },
                        )
                    })
                })
                .collect()),
            None => Ok(LiveStatus::of(&self.list_owned(owner).await?, devices)),
        }
    }

    async fn close(&self, device: DeviceId) -> Result<bool, DirectoryError> {
        let node = self.node_for(device).await?;
        let res = self
            .send(
                &node,
                Method::DELETE,
                &internal_api::session_path(device),
                None,
            )
            .await?;
        match res.status() {
            StatusCode::NO_CONTENT | StatusCode::OK => Ok(true),
            _ => match self.error_from(res).await {
                DirectoryError::Offline => Ok(false),
                other => Err(other),
            },
        }
    }

    async fn nodes(&self) -> Result<Vec<NodeId>, DirectoryError> {
        self.locator.nodes().await
    }

    async fn open_stream(&self, device: DeviceId) -> Result<BoxStream, DirectoryError> {
        Ok(self.open_stream_retiring(device).await?.0)
    }

    async fn open_tcp(
        &self,
        device: DeviceId,
        target: &tunnel::preamble::TcpTarget,
    ) -> Result<BoxStream, DirectoryError> {
        let node = self.node_for(device).await?;
        Ok(self.open_on(&node, device, Some(target)).await?.0)
    }

    /// A node that answers "draining" still holds the device until its
    /// open streams end; the device then connects to another node. The
    /// stream is asked for again wherever the device's lease points next,
    /// for up to [`RELOCATE_FOR`].
    async fn open_stream_retiring(
        &self,
        device: DeviceId,
    ) -> Result<(BoxStream, Retiring), DirectoryError> {
        let started = tokio::time::Instant::now();
        let deadline = started + RELOCATE_FOR;
        let mut moving = false;
        let mut node = loop {
            match self.node_for(device).await {
                // While a node drains, its devices hold no lease between
                // leaving it and reaching the next node: look again, for
                // a while (a device that does not come back is offline).
                Err(DirectoryError::Offline) if self.last_drain.within(RELOCATE_FOR) => {
                    moving = true;
                    if started.elapsed() >= LEASE_GAP_FOR {
                        return Err(DirectoryError::Offline);
                    }
                    tokio::time::sleep(RELOCATE_EVERY).await;
                }
                found => break found?,
            }
        };
        loop {
            let err = match self.open_on(&node, device, None).await {
                Err(DirectoryError::Draining) => {
                    moving = true;
                    DirectoryError::Draining
                }
                // The draining node finished and left: keep looking.
                Err(
                    err @ (DirectoryError::Offline
                    | DirectoryError::Unreachable(_)
                    | DirectoryError::Timeout),
                ) if moving => err,
                other => return other,
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(err);
            }
            tokio::time::sleep(RELOCATE_EVERY).await;
            if let Some(next) = self.locator.locate(device).await? {
                node = next;
            }
        }
    }
}

/// The host of `authority` (`host:port`), without an IPv6 literal's
/// brackets.
fn host_of(authority: &str) -> &str {
    authority
        .rsplit_once(':')
        .map_or(authority, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']')
}

/// Whether `authority` (`host:port`) names a loopback address.
fn is_loopback_authority(authority: &str) -> bool {
    let host = host_of(authority);
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// How long a request waits for a draining node's device to reconnect
/// elsewhere, and how often it looks.
const RELOCATE_FOR: Duration = Duration::from_secs(5);
/// How long a device without a lease is looked for again after a node
/// said it is draining (then it is answered offline).
const LEASE_GAP_FOR: Duration = Duration::from_secs(2);
const RELOCATE_EVERY: Duration = Duration::from_millis(50);

impl RelayDirectory {
    /// A stream to `device` (to `target` on its side, if given) through
    /// `node`'s channel.
    async fn open_on(
        &self,
        node: &NodeId,
        device: DeviceId,
        target: Option<&tunnel::preamble::TcpTarget>,
    ) -> Result<(BoxStream, Retiring), DirectoryError> {
        let (mut stream, draining, on) = self.channel_stream(node, device).await?;
        let asked = async {
            mux::write_request(&mut stream, device, target).await?;
            mux::read_answer(&mut stream).await
        };
        let (status, elsewhere) = tokio::time::timeout(self.response_timeout, asked)
            .await
            .map_err(|_| DirectoryError::Timeout)?
            .map_err(|e| DirectoryError::Unreachable(format!("relay channel: {e}")))?;
        match status {
            mux::STATUS_OK => {
                if on != 0 {
                    self.note_place(device, on);
                }
                Ok((Box::new(stream), draining))
            }
            mux::STATUS_OK_ELSEWHERE => {
                // The device's next streams go to a channel on its shard;
                // this one serves its request and is not reused, unless no
                // channel on that shard can be had.
                self.note_place(device, elsewhere);
                let retiring = if self.seek(node, elsewhere) {
                    Retiring::already_set()
                } else {
                    draining
                };
                Ok((Box::new(stream), retiring))
            }
            mux::STATUS_OFFLINE => Err(DirectoryError::Offline),
            mux::STATUS_DRAINING => {
                draining.set();
                self.last_drain.note();
                Err(DirectoryError::Draining)
            }
            mux::STATUS_NOT_SUPPORTED => Err(DirectoryError::NotSupported),
            mux::STATUS_REFUSED => Err(DirectoryError::Stream(
                "the device's session refused the stream".into(),
            )),
            other => Err(DirectoryError::Relay(format!(
                "relay answered status {other} on the channel"
            ))),
        }
    }
}
