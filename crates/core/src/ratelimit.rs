//! Keyed token buckets: each key may take `burst` attempts at once, refilled
//! at `refill_per_sec`. Used for device reconnects at the relay and for
//! failed pairing attempts (per client address and globally).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Instant;

const PRUNE_ABOVE: usize = 10_000;

#[derive(Debug)]
pub struct KeyedLimiter<K> {
    burst: f64,
    refill_per_sec: f64,
    buckets: Mutex<HashMap<K, (f64, Instant)>>,
}

impl<K: Hash + Eq + Clone> KeyedLimiter<K> {
    pub fn new(burst: u32, refill_per_sec: f64) -> Self {
        Self {
            burst: f64::from(burst.max(1)),
            refill_per_sec: refill_per_sec.max(1e-6),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn refilled(&self, tokens: f64, at: Instant, now: Instant) -> f64 {
        (tokens + now.duration_since(at).as_secs_f64() * self.refill_per_sec).min(self.burst)
    }

    /// Seconds until `key` may try again, or `None` when it may now
    /// (without taking anything).
    pub fn retry_after(&self, key: &K) -> Option<u64> {
        let now = Instant::now();
        let buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let (tokens, at) = buckets.get(key).copied()?;
        let tokens = self.refilled(tokens, at, now);
        (tokens < 1.0).then(|| ((1.0 - tokens) / self.refill_per_sec).ceil() as u64)
    }

    /// Take one attempt for `key`; `Err(secs)` says when to retry.
    pub fn check(&self, key: K) -> Result<(), u64> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() > PRUNE_ABOVE {
            buckets.retain(|_, (tokens, at)| self.refilled(*tokens, *at, now) < self.burst);
        }
        let (tokens, at) = buckets.entry(key).or_insert((self.burst, now));
        *tokens = self.refilled(*tokens, *at, now);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / self.refill_per_sec).ceil() as u64)
        }
    }
}

impl<K: Hash + Eq + Clone> KeyedLimiter<K> {
    /// Give back an attempt taken with [`check`](Self::check) that turned
    /// out not to count (never above the burst).
    pub fn refund(&self, key: &K) {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((tokens, _)) = buckets.get_mut(key) {
            *tokens = (*tokens + 1.0).min(self.burst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refuse_per_key() {
        let limiter = KeyedLimiter::new(3, 1.0);
        assert!((0..3).all(|_| limiter.check("a").is_ok()));
        assert_eq!(limiter.check("a"), Err(1));
        assert_eq!(limiter.retry_after(&"a"), Some(1));
        assert!(limiter.check("b").is_ok(), "other keys are unaffected");
        assert_eq!(limiter.retry_after(&"c"), None);
        limiter.refund(&"a");
        assert!(limiter.check("a").is_ok(), "a refunded attempt can be used");
        assert!(limiter.check("a").is_err());
    }
}
