//! Publishes per second per hook token: one token bucket per token, keyed by the blake3 hash
//! of the token (the token itself is never kept here, so it can never be logged from here).
//!
//! A bucket holds up to `burst` publishes and refills at `per_sec`; a publish takes one. A
//! CMS that stays under the rate is never refused; one that bursts past it is told how long
//! to wait. Twenty lines do this for one or a few tokens; `governor` would earn its place with
//! many keys or a need for lock-free checks, neither of which a newsroom's hook has.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Token buckets, one per hook token.
#[derive(Debug)]
pub struct RateLimiter {
    per_sec: f64,
    burst: f64,
    buckets: Mutex<HashMap<[u8; 32], Bucket>>,
}

#[derive(Debug)]
struct Bucket {
    available: f64,
    at: Instant,
}

impl RateLimiter {
    /// `per_sec` must be positive and finite (the CLI checks it); `burst` is at least 1.
    pub fn new(per_sec: f64, burst: u32) -> Self {
        RateLimiter {
            per_sec,
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one publish from the bucket of `key` at `now`, or says how long until one is
    /// available.
    pub fn check(&self, key: &blake3::Hash, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let b = buckets.entry(*key.as_bytes()).or_insert(Bucket {
            available: self.burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.available = (b.available + elapsed * self.per_sec).min(self.burst);
        b.at = b.at.max(now);
        if b.available >= 1.0 {
            b.available -= 1.0;
            return Ok(());
        }
        let wait = (1.0 - b.available) / self.per_sec;
        Err(Duration::try_from_secs_f64(wait).unwrap_or(Duration::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_at_the_rate_passes_and_one_more_waits_for_the_refill() {
        let limiter = RateLimiter::new(50.0, 50);
        let key = blake3::hash(b"token");
        let t0 = Instant::now();
        for i in 0..50 {
            assert_eq!(limiter.check(&key, t0), Ok(()), "publish {i}");
        }
        let wait = limiter.check(&key, t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(20));
        // Another token has its own bucket.
        assert_eq!(limiter.check(&blake3::hash(b"other"), t0), Ok(()));
        // One refill interval later, exactly one more passes.
        let t1 = t0 + Duration::from_millis(20);
        assert_eq!(limiter.check(&key, t1), Ok(()));
        assert!(limiter.check(&key, t1).is_err());
        // A long pause refills to the burst, never beyond it.
        let t2 = t1 + Duration::from_secs(3600);
        for _ in 0..50 {
            assert_eq!(limiter.check(&key, t2), Ok(()));
        }
        assert!(limiter.check(&key, t2).is_err());
    }

    #[test]
    fn a_tiny_rate_gives_a_long_wait_not_a_panic() {
        let limiter = RateLimiter::new(1e-300, 1);
        let key = blake3::hash(b"token");
        let now = Instant::now();
        assert_eq!(limiter.check(&key, now), Ok(()));
        assert_eq!(limiter.check(&key, now), Err(Duration::MAX));
    }
}
