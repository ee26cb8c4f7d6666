//! Rate limits every replica counts together (ADR 017): a token bucket per
//! key in Redis, updated by one Lua script on Redis's own clock, so N
//! api-servers never give N times the pairing guesses and N relays never
//! give a device N times the reconnects. Without Redis configured, or
//! while it cannot answer, a [`Bucket`] counts in this process alone (the
//! single-node limits), and says so in the log.

use crate::leases::RedisConn;
use crate::DirectoryError;
use edge_core::ratelimit::KeyedLimiter;
use std::fmt::Display;
use std::hash::Hash;
use std::sync::{Arc, OnceLock};

/// Take (`ARGV[3]` = -1) or give back (+1) one token of `KEYS[1]`, a bucket
/// of `ARGV[1]` tokens refilled at `ARGV[2]` per ms. Returns 0, or the ms to
/// wait when there is no token to take.
const BUCKET: &str = r"
local tm = redis.call('TIME')
local now = tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000)
local burst = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local delta = tonumber(ARGV[3])
local b = redis.call('HMGET', KEYS[1], 't', 'at')
local t = tonumber(b[1]) or burst
local at = tonumber(b[2]) or now
t = math.min(burst, t + math.max(0, now - at) * rate)
local wait = 0
if delta < 0 and t < 1 then
  wait = math.ceil((1 - t) / rate)
else
  t = math.min(burst, t + delta)
end
redis.call('HSET', KEYS[1], 't', tostring(t), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate) + 1000)
return wait";

/// A connection for shared buckets.
#[derive(Clone)]
pub struct SharedBuckets {
    redis: RedisConn,
    script: Arc<redis::Script>,
}

impl std::fmt::Debug for SharedBuckets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedBuckets").finish_non_exhaustive()
    }
}

impl SharedBuckets {
    pub fn new(redis: RedisConn) -> Self {
        Self {
            redis,
            script: Arc::new(redis::Script::new(BUCKET)),
        }
    }

    async fn apply(
        &self,
        key: &str,
        burst: u32,
        refill_per_sec: f64,
        delta: i32,
    ) -> Result<u64, DirectoryError> {
        let rate = format!("{:.9}", refill_per_sec / 1000.0);
        let wait_ms: i64 = self
            .redis
            .script(
                &self.script,
                &[key],
                &[&burst.to_string(), &rate, &delta.to_string()],
            )
            .await?;
        u64::try_from(wait_ms).map_err(|_| unavailable_msg("negative wait"))
    }
}

fn unavailable_msg(msg: &str) -> DirectoryError {
    DirectoryError::Unavailable(msg.into())
}

/// A keyed token bucket: shared through Redis once [`Bucket::share`] was
/// called, else (and while Redis cannot answer) local to this process.
#[derive(Debug)]
pub struct Bucket<K> {
    name: &'static str,
    burst: u32,
    refill_per_sec: f64,
    local: KeyedLimiter<K>,
    shared: OnceLock<SharedBuckets>,
}

impl<K: Hash + Eq + Clone + Display> Bucket<K> {
    /// `name` tells buckets apart in Redis (`edge:limit:<name>:<key>`).
    pub fn new(name: &'static str, burst: u32, refill_per_sec: f64) -> Self {
        Self {
            name,
            burst,
            refill_per_sec,
            local: KeyedLimiter::new(burst, refill_per_sec),
            shared: OnceLock::new(),
        }
    }

    /// Count in Redis from now on, together with every other replica.
    pub fn share(&self, buckets: SharedBuckets) {
        let _ = self.shared.set(buckets);
    }

    fn key(&self, key: &K) -> String {
        format!("edge:limit:{}:{key}", self.name)
    }

    /// Take one attempt for `key`; `Err(secs)` says when to retry.
    pub async fn check(&self, key: K) -> Result<(), u64> {
        if let Some(shared) = self.shared.get() {
            match shared
                .apply(&self.key(&key), self.burst, self.refill_per_sec, -1)
                .await
            {
                Ok(0) => return Ok(()),
                Ok(wait_ms) => return Err(wait_ms.div_ceil(1000).max(1)),
                Err(err) => {
                    tracing::warn!(limit = self.name, error = %err, "shared limit unavailable; counting locally");
                }
            }
        }
        self.local.check(key)
    }

    /// Give back an attempt that turned out not to count.
    pub async fn refund(&self, key: &K) {
        if let Some(shared) = self.shared.get() {
            match shared
                .apply(&self.key(key), self.burst, self.refill_per_sec, 1)
                .await
            {
                Ok(_) => return,
                Err(err) => {
                    tracing::warn!(limit = self.name, error = %err, "shared limit unavailable; refunding locally");
                }
            }
        }
        self.local.refund(key);
    }
}
