//! Per-device reconnect limiter: a token bucket of `burst` attempts refilled
//! at one per second. A device over it gets 429 with Retry-After.

use edge_core::DeviceId;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

const REFILL_PER_SEC: f64 = 1.0;
const PRUNE_ABOVE: usize = 10_000;

#[derive(Debug)]
pub struct ReconnectLimiter {
    burst: f64,
    buckets: Mutex<HashMap<DeviceId, (f64, Instant)>>,
}

impl ReconnectLimiter {
    pub fn new(burst: u32) -> Self {
        Self {
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Take one attempt for `device`; `Err(secs)` says when to retry.
    pub fn check(&self, device: DeviceId) -> Result<(), u64> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() > PRUNE_ABOVE {
            let burst = self.burst;
            buckets.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * REFILL_PER_SEC < burst
            });
        }
        let (tokens, at) = buckets.entry(device).or_insert((self.burst, now));
        *tokens =
            (*tokens + now.duration_since(*at).as_secs_f64() * REFILL_PER_SEC).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / REFILL_PER_SEC).ceil() as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refuse_per_device() {
        let limiter = ReconnectLimiter::new(3);
        let a = DeviceId::new();
        assert!((0..3).all(|_| limiter.check(a).is_ok()));
        assert_eq!(limiter.check(a), Err(1));
        assert!(
            limiter.check(DeviceId::new()).is_ok(),
            "other devices are unaffected"
        );
    }
}
