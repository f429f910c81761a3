//! Per-key token buckets.
//!
//! Each bucket refills at `rps` tokens per second up to `burst`. Bucket names
//! are non-secret (`key:<index>` or `ip:<addr>`), so no API key is kept here.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// Past this many buckets, idle (full) ones are dropped so that a stream of
/// distinct client addresses cannot grow the map without bound.
const PRUNE_AT: usize = 10_000;

pub struct RateLimiter {
    rps: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    /// `rps == 0` disables limiting.
    pub fn new(rps: f64, burst: f64) -> Self {
        RateLimiter {
            rps,
            burst: burst.max(1.0),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    pub fn allow(&self, name: &str) -> bool {
        self.allow_at(name, Instant::now())
    }

    fn allow_at(&self, name: &str, now: Instant) -> bool {
        if self.rps <= 0.0 {
            return true;
        }
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= PRUNE_AT && !map.contains_key(name) {
            let (rps, burst) = (self.rps, self.burst);
            map.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.last).as_secs_f64() * rps < burst
            });
        }
        let b = map.entry(name.to_string()).or_insert(Bucket {
            tokens: self.burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rps).min(self.burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_refill_per_bucket() {
        let l = RateLimiter::new(2.0, 3.0);
        let t0 = Instant::now();
        assert!(l.allow_at("a", t0));
        assert!(l.allow_at("a", t0));
        assert!(l.allow_at("a", t0));
        assert!(!l.allow_at("a", t0));
        // another key has its own bucket
        assert!(l.allow_at("b", t0));
        // half a second at 2 rps = one token
        assert!(l.allow_at("a", t0 + Duration::from_millis(500)));
        assert!(!l.allow_at("a", t0 + Duration::from_millis(500)));
    }

    #[test]
    fn zero_rps_disables() {
        let l = RateLimiter::new(0.0, 1.0);
        let t0 = Instant::now();
        for _ in 0..100 {
            assert!(l.allow_at("a", t0));
        }
    }
}
