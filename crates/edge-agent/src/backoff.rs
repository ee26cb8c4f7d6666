//! Exponential reconnect backoff with jitter: the delay doubles from `min` up
//! to `max`, each draw is uniform in [delay/2, delay], and a stable session
//! resets it.

use rand::Rng;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        let min = min.max(Duration::from_millis(1));
        Self {
            min,
            max: max.max(min),
            current: min,
        }
    }

    /// The next delay to wait.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.current;
        self.current = (self.current * 2).min(self.max);
        let low = ceiling / 2;
        let spread = ceiling.saturating_sub(low).as_millis() as u64;
        low + Duration::from_millis(rand::thread_rng().gen_range(0..=spread))
    }

    pub fn reset(&mut self) {
        self.current = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_with_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(15));
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        let mut last = first;
        for _ in 0..20 {
            last = b.next_delay();
            assert!(last <= Duration::from_secs(15));
        }
        assert!(
            last >= Duration::from_millis(7_500),
            "capped delay stays in [max/2, max]"
        );
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
