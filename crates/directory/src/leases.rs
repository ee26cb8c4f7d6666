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
//!
//! Redis is not trusted with where the internal secret goes: every lease
//! value and node-set member carries an HMAC ([`LeaseKey`], derived from
//! the internal secret that relays and api-servers share), and the
//! api-server ignores (and counts) any that does not verify, so whoever
//! can write to Redis cannot point an api-server at a host of theirs.

use crate::{DirectoryError, NodeId, NodeLocator};
use async_trait::async_trait;
use edge_core::metrics::prometheus_client::metrics::counter::Counter;
use edge_core::{DeviceId, Secret};
use futures_util::StreamExt;
use hmac::{Hmac, Mac};
use redis::aio::ConnectionManager;
use sha2::Sha256;
use std::sync::Arc;
use std::time::Duration;

/// Leases refreshed by one script call (one round trip each).
pub const REFRESH_BATCH: usize = 500;
/// Refresh batches in flight at once on the multiplexed connection.
const REFRESH_CONCURRENCY: usize = 4;

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

/// Signs and checks what relays write to Redis (lease values, node-set
/// members): HMAC-SHA256 under a key derived from the internal secret.
#[derive(Clone)]
pub struct LeaseKey(Arc<[u8; 32]>);

impl std::fmt::Debug for LeaseKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LeaseKey(..)")
    }
}

impl LeaseKey {
    /// The key every holder of `internal` derives alike.
    pub fn derive(internal: &Secret) -> Self {
        let mut mac = Self::mac_with(internal.expose().as_bytes());
        mac.update(b"edge directory signing v1");
        Self(Arc::new(mac.finalize().into_bytes().into()))
    }

    fn mac_with(key: &[u8]) -> Hmac<Sha256> {
        // HMAC takes a key of any length.
        match Hmac::<Sha256>::new_from_slice(key) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC accepts every key length"),
        }
    }

    fn mac(&self, what: &str) -> Hmac<Sha256> {
        let mut mac = Self::mac_with(&self.0[..]);
        mac.update(what.as_bytes());
        mac
    }

    /// Hex HMAC of `what`.
    fn sign(&self, what: &str) -> String {
        hex::encode(self.mac(what).finalize().into_bytes())
    }

    /// Whether `tag` is `what`'s HMAC (constant-time).
    fn verify(&self, what: &str, tag: &str) -> bool {
        hex::decode(tag).is_ok_and(|tag| self.mac(what).verify_slice(&tag).is_ok())
    }

    /// A node-set member: the node's URL and its signature.
    fn node_member(&self, node: &NodeId) -> String {
        format!("{} {}", node.0, self.sign(&format!("node {}", node.0)))
    }

    /// The node a node-set member names, when its signature holds.
    fn node_of(&self, member: &str) -> Option<NodeId> {
        let (url, tag) = member.split_once(' ')?;
        self.verify(&format!("node {url}"), tag)
            .then(|| NodeId(url.to_owned()))
    }
}

/// A lease's value: who holds the device, since when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub node: NodeId,
    /// Unique per accepted connection across all processes.
    pub holder: String,
    pub connected_since: i64,
}

impl Lease {
    /// `<node> <holder> <since> <HMAC over the device and those three>`.
    fn encode(&self, device: DeviceId, key: &LeaseKey) -> String {
        let body = format!("{} {} {}", self.node.0, self.holder, self.connected_since);
        let tag = key.sign(&format!("lease {device} {body}"));
        format!("{body} {tag}")
    }

    /// The lease in `v` for `device`; `None` when it is garbage or its
    /// signature does not hold (forged, or moved from another device).
    fn decode(device: DeviceId, v: &str, key: &LeaseKey) -> Option<Self> {
        let (body, tag) = v.rsplit_once(' ')?;
        if !key.verify(&format!("lease {device} {body}"), tag) {
            return None;
        }
        let mut parts = body.split(' ');
        let node = NodeId(parts.next()?.to_owned());
        let holder = parts.next()?.to_owned();
        let connected_since = parts.next()?.parse().ok()?;
        if parts.next().is_some() {
            return None;
        }
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

    /// The raw lease value of `device`.
    async fn lease_value(&self, device: DeviceId) -> Result<Option<String>, DirectoryError> {
        self.run(redis::cmd("GET").arg(lease_key(device))).await
    }

    /// The raw lease values of `devices`, in order, in one round trip
    /// (`MGET`).
    async fn lease_values(
        &self,
        devices: &[DeviceId],
    ) -> Result<Vec<Option<String>>, DirectoryError> {
        if devices.is_empty() {
            return Ok(Vec::new());
        }
        let mut cmd = redis::cmd("MGET");
        for d in devices {
            cmd.arg(lease_key(*d));
        }
        self.run(&cmd).await
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

/// For each key `KEYS[i]`: refresh the lease while it is ours (`ARGV[i]`,
/// answer 1); write it again if it vanished, say while Redis was down (2);
/// leave another holder's alone (0). The last argument is the TTL in ms.
/// One call refreshes a batch of leases in one round trip.
const REFRESH: &str = r"
local ttl = ARGV[#KEYS + 1]
local out = {}
for i, key in ipairs(KEYS) do
  local v = redis.call('GET', key)
  if v == ARGV[i] then redis.call('PEXPIRE', key, ttl) out[i] = 1
  elseif not v then redis.call('SET', key, ARGV[i], 'PX', ttl) out[i] = 2
  else out[i] = 0 end
end
return out";

/// What one refresh pass over a relay's leases found.
#[derive(Debug, Default)]
pub struct RefreshReport {
    /// Devices another holder has now (close their sessions here).
    pub lost: Vec<DeviceId>,
    /// Leases in batches Redis did not refresh (the pass went on past
    /// them), and the first such batch's error.
    pub failed: usize,
    pub first_error: Option<DirectoryError>,
}

impl RefreshReport {
    fn add(&mut self, batch: &[(DeviceId, Lease)], answer: Result<Vec<i64>, DirectoryError>) {
        match answer {
            Ok(answer) => self.lost.extend(
                batch
                    .iter()
                    .zip(answer)
                    .filter(|(_, a)| *a == 0)
                    .map(|((device, _), _)| *device),
            ),
            Err(err) => {
                self.failed += batch.len();
                self.first_error.get_or_insert(err);
            }
        }
    }
}

/// The relay's side: its leases, its heartbeat, the takeovers it hears of.
#[derive(Clone)]
pub struct RelayLeases {
    redis: RedisConn,
    node: NodeId,
    key: LeaseKey,
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
    /// Leases of `node` over `redis`, signed with `key`; they live `ttl`
    /// unless refreshed.
    pub fn new(redis: RedisConn, node: NodeId, key: LeaseKey, ttl: Duration) -> Self {
        Self {
            redis,
            node,
            key,
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
                    .arg(lease.encode(device, &self.key))
                    .arg("PX")
                    .arg(self.ttl_ms())
                    .arg("GET"),
            )
            .await?;
        if let Some(prev) = previous
            .as_deref()
            .and_then(|v| Lease::decode(device, v, &self.key))
        {
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
        let v = self.redis.lease_value(device).await?;
        Ok(v.and_then(|v| Lease::decode(device, &v, &self.key)))
    }

    /// Keep `lease` alive; `false` when another holder has the device now.
    pub async fn refresh(&self, device: DeviceId, lease: &Lease) -> Result<bool, DirectoryError> {
        let answers = self.refresh_batch(&[(device, lease.clone())]).await?;
        Ok(answers.first().is_some_and(|a| *a != 0))
    }

    /// Keep every one of `leases` alive: [`REFRESH_BATCH`] per round trip,
    /// a few batches in flight at once, and a batch that fails does not
    /// stop the others.
    pub async fn refresh_all(&self, leases: &[(DeviceId, Lease)]) -> RefreshReport {
        let mut report = RefreshReport::default();
        for group in leases.chunks(REFRESH_BATCH * REFRESH_CONCURRENCY) {
            let calls: Vec<_> = group
                .chunks(REFRESH_BATCH)
                .map(|batch| self.refresh_call(batch))
                .collect();
            let answers = futures_util::future::join_all(calls).await;
            for (batch, answer) in group.chunks(REFRESH_BATCH).zip(answers) {
                report.add(batch, answer);
            }
        }
        report
    }

    /// One script call over `batch`: 0 (another holder), 1 or 2 per lease.
    async fn refresh_batch(&self, batch: &[(DeviceId, Lease)]) -> Result<Vec<i64>, DirectoryError> {
        self.refresh_call(batch).await
    }

    /// The call [`RelayLeases::refresh_batch`] makes, its arguments built
    /// before it is awaited.
    fn refresh_call(
        &self,
        batch: &[(DeviceId, Lease)],
    ) -> impl std::future::Future<Output = Result<Vec<i64>, DirectoryError>> + Send + '_ {
        let keys: Vec<String> = batch.iter().map(|(d, _)| lease_key(*d)).collect();
        let mut args: Vec<String> = batch.iter().map(|(d, l)| l.encode(*d, &self.key)).collect();
        args.push(self.ttl_ms());
        async move {
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            self.redis.script(&self.refresh, &keys, &args).await
        }
    }

    /// Remove `lease` if it is still the device's.
    pub async fn release(&self, device: DeviceId, lease: &Lease) -> Result<(), DirectoryError> {
        let _: i64 = self
            .redis
            .script(
                &self.release,
                &[&lease_key(device)],
                &[&lease.encode(device, &self.key)],
            )
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
                    .arg(self.key.node_member(&self.node)),
            )
            .await?;
        Ok(())
    }

    /// Take this node off the node set (draining or stopping).
    pub async fn withdraw(&self) -> Result<(), DirectoryError> {
        let _: i64 = self
            .redis
            .run(
                redis::cmd("ZREM")
                    .arg(NODES_KEY)
                    .arg(self.key.node_member(&self.node)),
            )
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
    key: LeaseKey,
    forged: Counter,
}

impl std::fmt::Debug for RedisLocator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLocator").finish_non_exhaustive()
    }
}

impl RedisLocator {
    /// Reads what relays signed with `key`; counts what does not verify
    /// in `forged`.
    pub fn new(redis: RedisConn, key: LeaseKey, forged: Counter) -> Self {
        Self { redis, key, forged }
    }

    /// The lease of `device`, if any (a forged one is none).
    pub async fn lease(&self, device: DeviceId) -> Result<Option<Lease>, DirectoryError> {
        let v = self.redis.lease_value(device).await?;
        Ok(v.and_then(|v| self.checked(device, &v)))
    }

    /// Lease values and node-set members read so far whose signature did
    /// not hold (someone other than a relay wrote to Redis).
    pub fn forged(&self) -> u64 {
        self.forged.get()
    }

    fn checked(&self, device: DeviceId, v: &str) -> Option<Lease> {
        let lease = Lease::decode(device, v, &self.key);
        if lease.is_none() {
            self.forged.inc();
            tracing::warn!(%device, "ignored a lease whose signature does not hold");
        }
        lease
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
        let values = self.redis.lease_values(devices).await?;
        Ok(Some(
            devices
                .iter()
                .zip(values)
                .map(|(d, v)| {
                    v.and_then(|v| self.checked(*d, &v))
                        .map(|l| (l.node, l.connected_since))
                })
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
        Ok(nodes
            .iter()
            .filter_map(|m| {
                let node = self.key.node_of(m);
                if node.is_none() {
                    self.forged.inc();
                    tracing::warn!("ignored a relay node whose signature does not hold");
                }
                node
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_round_trip_and_garbage_is_no_lease() {
        let key = LeaseKey::derive(&Secret::new("internal"));
        let device = DeviceId::new();
        let lease = Lease {
            node: NodeId("https://relay-a:3801".into()),
            holder: "abc-7".into(),
            connected_since: 1_700_000_000_000,
        };
        let v = lease.encode(device, &key);
        assert_eq!(Lease::decode(device, &v, &key), Some(lease.clone()));
        assert_eq!(Lease::decode(device, "only-a-node", &key), None);
        assert_eq!(Lease::decode(device, "n h not-a-number", &key), None);
        // Unsigned (as before signatures), signed by another key, moved to
        // another device, or with its node changed: no lease.
        assert_eq!(
            Lease::decode(device, "https://relay-a:3801 abc-7 1", &key),
            None
        );
        let other = LeaseKey::derive(&Secret::new("not the internal secret"));
        assert_eq!(
            Lease::decode(device, &lease.encode(device, &other), &key),
            None
        );
        assert_eq!(Lease::decode(DeviceId::new(), &v, &key), None);
        let moved = v.replacen("relay-a", "evil", 1);
        assert_eq!(Lease::decode(device, &moved, &key), None);
    }

    #[test]
    fn node_members_verify_only_under_the_key() {
        let key = LeaseKey::derive(&Secret::new("internal"));
        let node = NodeId("https://relay-a:3801".into());
        assert_eq!(key.node_of(&key.node_member(&node)), Some(node.clone()));
        assert_eq!(key.node_of("https://evil:3801"), None);
        let other = LeaseKey::derive(&Secret::new("guess"));
        assert_eq!(key.node_of(&other.node_member(&node)), None);
        assert!(!format!("{key:?}").contains(&hex::encode(&key.0[..])));
    }
}
