//! The multi-node directory on Redis (ADR 017). Each relay writes one lease
//! per live tunnel, `edge:lease:<device>` → `<node URL> <holder>
//! <connected since ms>`, with a TTL it refreshes; it removes a lease on
//! close only while the lease is still its own (compare-and-delete), so a
//! relay that dies loses its leases within one TTL. Taking a lease that
//! another node holds publishes `<device>` on `edge:takeover:<node>`, and
//! that node closes its older session (newest connection wins across
//! nodes). Relays announce themselves in the sorted set `edge:nodes`
//! (score: last heartbeat, ms).
//!
//! Split by role: [`RelayLeases`] (write, refresh, release, announce,
//! takeovers) exists only in the relay; the api-server gets
//! [`RedisLocator`], a [`NodeLocator`] that can only read. Every call is
//! bounded by a timeout, so Redis down is an error
//! ([`DirectoryError::Unavailable`]), never a hang.

use crate::{DirectoryError, NodeId, NodeLocator};
use async_trait::async_trait;
use edge_core::DeviceId;
use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use std::time::Duration;

/// Key of a device's lease.
pub fn lease_key(device: DeviceId) -> String {
    format!("edge:lease:{device}")
}

/// Sorted set of relay nodes by last heartbeat.
pub const NODES_KEY: &str = "edge:nodes";

/// Channel on which `node` hears about devices another node took over.
pub fn takeover_channel(node: &NodeId) -> String {
    format!("edge:takeover:{}", node.0)
}

/// Default lease lifetime and refresh period.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(15);
pub const DEFAULT_LEASE_REFRESH: Duration = Duration::from_secs(5);

/// A node whose heartbeat is older than this is not listed as up.
pub const NODE_STALE: Duration = Duration::from_secs(15);

/// A lease's value: who holds the device, since when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub node: NodeId,
    /// Unique per accepted connection across all processes.
    pub holder: String,
    pub connected_since: i64,
}

impl Lease {
    fn encode(&self) -> String {
        format!("{} {} {}", self.node.0, self.holder, self.connected_since)
    }

    fn decode(v: &str) -> Option<Self> {
        let mut parts = v.split(' ');
        let node = NodeId(parts.next()?.to_owned());
        let holder = parts.next()?.to_owned();
        let connected_since = parts.next()?.parse().ok()?;
        Some(Self {
            node,
            holder,
            connected_since,
        })
    }
}

/// A connection to Redis with a bound on every call; one per process,
/// cloned into the leases, the locator and the shared limits.
#[derive(Clone)]
pub struct RedisConn {
    conn: ConnectionManager,
    client: redis::Client,
    timeout: Duration,
}

impl std::fmt::Debug for RedisConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConn")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisConn {
    /// Connect to `url`; every later call is bounded by `timeout`.
    pub async fn connect(url: &str, timeout: Duration) -> Result<Self, DirectoryError> {
        let client = redis::Client::open(url).map_err(unavailable)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(timeout)
            .set_response_timeout(timeout)
            .set_number_of_retries(1);
        let conn = tokio::time::timeout(
            timeout * 2,
            ConnectionManager::new_with_config(client.clone(), config),
        )
        .await
        .map_err(|_| DirectoryError::Unavailable("redis connect timed out".into()))?
        .map_err(unavailable)?;
        Ok(Self {
            conn,
            client,
            timeout,
        })
    }

    async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, DirectoryError> {
        let mut conn = self.conn.clone();
        tokio::time::timeout(self.timeout, cmd.query_async(&mut conn))
            .await
            .map_err(|_| DirectoryError::Unavailable("redis did not answer in time".into()))?
            .map_err(unavailable)
    }

    async fn lease(&self, device: DeviceId) -> Result<Option<Lease>, DirectoryError> {
        let v: Option<String> = self.run(redis::cmd("GET").arg(lease_key(device))).await?;
        Ok(v.as_deref().and_then(Lease::decode))
    }

    /// The leases of `devices`, in order, in one round trip (`MGET`).
    async fn leases(&self, devices: &[DeviceId]) -> Result<Vec<Option<Lease>>, DirectoryError> {
        if devices.is_empty() {
            return Ok(Vec::new());
        }
        let mut cmd = redis::cmd("MGET");
        for d in devices {
            cmd.arg(lease_key(*d));
        }
        let values: Vec<Option<String>> = self.run(&cmd).await?;
        Ok(values
            .iter()
            .map(|v| v.as_deref().and_then(Lease::decode))
            .collect())
    }

    pub(crate) async fn script<T: redis::FromRedisValue>(
        &self,
        script: &redis::Script,
        keys: &[&str],
        args: &[&str],
    ) -> Result<T, DirectoryError> {
        let mut conn = self.conn.clone();
        let mut inv = script.prepare_invoke();
        for k in keys {
            inv.key(*k);
        }
        for a in args {
            inv.arg(*a);
        }
        tokio::time::timeout(self.timeout, inv.invoke_async(&mut conn))
            .await
            .map_err(|_| DirectoryError::Unavailable("redis did not answer in time".into()))?
            .map_err(unavailable)
    }
}

fn unavailable(err: redis::RedisError) -> DirectoryError {
    DirectoryError::Unavailable(err.to_string())
}

/// Delete the lease only while it is ours.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0";

/// Refresh the lease while it is ours (1); write it again if it vanished,
/// say while Redis was down (2); leave another holder's alone (0).
const REFRESH: &str = r"
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
if not v then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 2 end
return 0";

/// The relay's side: its leases, its heartbeat, the takeovers it hears of.
#[derive(Clone)]
pub struct RelayLeases {
    redis: RedisConn,
    node: NodeId,
    ttl: Duration,
    release: std::sync::Arc<redis::Script>,
    refresh: std::sync::Arc<redis::Script>,
}

impl std::fmt::Debug for RelayLeases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayLeases")
            .field("node", &self.node)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl RelayLeases {
    /// Leases of `node` over `redis`; they live `ttl` unless refreshed.
    pub fn new(redis: RedisConn, node: NodeId, ttl: Duration) -> Self {
        Self {
            redis,
            node,
            ttl,
            release: std::sync::Arc::new(redis::Script::new(RELEASE)),
            refresh: std::sync::Arc::new(redis::Script::new(REFRESH)),
        }
    }

    pub fn node(&self) -> &NodeId {
        &self.node
    }

    fn ttl_ms(&self) -> String {
        self.ttl.as_millis().to_string()
    }

    /// Take `device`'s lease for `lease`; when another node held it, tell
    /// that node to close its session.
    pub async fn acquire(&self, device: DeviceId, lease: &Lease) -> Result<(), DirectoryError> {
        let previous: Option<String> = self
            .redis
            .run(
                redis::cmd("SET")
                    .arg(lease_key(device))
                    .arg(lease.encode())
                    .arg("PX")
                    .arg(self.ttl_ms())
                    .arg("GET"),
            )
            .await?;
        if let Some(prev) = previous.as_deref().and_then(Lease::decode) {
            if prev.node != self.node {
                let _: i64 = self
                    .redis
                    .run(
                        redis::cmd("PUBLISH")
                            .arg(takeover_channel(&prev.node))
                            .arg(device.to_string()),
                    )
                    .await?;
            }
        }
        Ok(())
    }

    /// The device's lease as Redis has it now.
    pub async fn current(&self, device: DeviceId) -> Result<Option<Lease>, DirectoryError> {
        self.redis.lease(device).await
    }

    /// Keep `lease` alive; `false` when another holder has the device now.
    pub async fn refresh(&self, device: DeviceId, lease: &Lease) -> Result<bool, DirectoryError> {
        let ours: i64 = self
            .redis
            .script(
                &self.refresh,
                &[&lease_key(device)],
                &[&lease.encode(), &self.ttl_ms()],
            )
            .await?;
        Ok(ours != 0)
    }

    /// Remove `lease` if it is still the device's.
    pub async fn release(&self, device: DeviceId, lease: &Lease) -> Result<(), DirectoryError> {
        let _: i64 = self
            .redis
            .script(&self.release, &[&lease_key(device)], &[&lease.encode()])
            .await?;
        Ok(())
    }

    /// Record that this node is up now.
    pub async fn announce(&self) -> Result<(), DirectoryError> {
        let _: i64 = self
            .redis
            .run(
                redis::cmd("ZADD")
                    .arg(NODES_KEY)
                    .arg(edge_core::time::now_ms())
                    .arg(&self.node.0),
            )
            .await?;
        Ok(())
    }

    /// Take this node off the node set (draining or stopping).
    pub async fn withdraw(&self) -> Result<(), DirectoryError> {
        let _: i64 = self
            .redis
            .run(redis::cmd("ZREM").arg(NODES_KEY).arg(&self.node.0))
            .await?;
        Ok(())
    }

    /// Devices other nodes took over from this one, as they happen. Ends
    /// when the subscription breaks (the caller subscribes again).
    pub async fn takeovers(
        &self,
    ) -> Result<impl futures_util::Stream<Item = DeviceId> + Send, DirectoryError> {
        let mut pubsub =
            tokio::time::timeout(self.redis.timeout, self.redis.client.get_async_pubsub())
                .await
                .map_err(|_| DirectoryError::Unavailable("redis connect timed out".into()))?
                .map_err(unavailable)?;
        pubsub
            .subscribe(takeover_channel(&self.node))
            .await
            .map_err(unavailable)?;
        Ok(pubsub.into_on_message().filter_map(|msg| async move {
            msg.get_payload::<String>()
                .ok()
                .and_then(|d| d.parse().ok())
        }))
    }
}

/// The api-server's side: where a device is, and which nodes are up.
#[derive(Clone)]
pub struct RedisLocator {
    redis: RedisConn,
}

impl std::fmt::Debug for RedisLocator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLocator").finish_non_exhaustive()
    }
}

impl RedisLocator {
    pub fn new(redis: RedisConn) -> Self {
        Self { redis }
    }

    /// The lease of `device`, if any.
    pub async fn lease(&self, device: DeviceId) -> Result<Option<Lease>, DirectoryError> {
        self.redis.lease(device).await
    }
}

#[async_trait]
impl NodeLocator for RedisLocator {
    async fn locate(&self, device: DeviceId) -> Result<Option<NodeId>, DirectoryError> {
        Ok(self.lease(device).await?.map(|l| l.node))
    }

    async fn locate_many(
        &self,
        devices: &[DeviceId],
    ) -> Result<Option<Vec<Option<(NodeId, i64)>>>, DirectoryError> {
        let leases = self.redis.leases(devices).await?;
        Ok(Some(
            leases
                .into_iter()
                .map(|l| l.map(|l| (l.node, l.connected_since)))
                .collect(),
        ))
    }

    async fn nodes(&self) -> Result<Vec<NodeId>, DirectoryError> {
        let since = edge_core::time::now_ms() - NODE_STALE.as_millis() as i64;
        let nodes: Vec<String> = self
            .redis
            .run(
                redis::cmd("ZRANGEBYSCORE")
                    .arg(NODES_KEY)
                    .arg(since)
                    .arg("+inf"),
            )
            .await?;
        Ok(nodes.into_iter().map(NodeId).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_round_trip_and_garbage_is_no_lease() {
        let lease = Lease {
            node: NodeId("https://relay-a:3801".into()),
            holder: "abc-7".into(),
            connected_since: 1_700_000_000_000,
        };
        assert_eq!(Lease::decode(&lease.encode()), Some(lease));
        assert_eq!(Lease::decode("only-a-node"), None);
        assert_eq!(Lease::decode("n h not-a-number"), None);
    }
}
