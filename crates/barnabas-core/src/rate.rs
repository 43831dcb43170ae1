//! Publish-rate limits: token buckets, one per MQTT or AMQP connection and one per HTTP
//! principal.
//!
//! A client over its rate is slowed down, not dropped: an MQTT connection's next publish is
//! read only when a token is there (TCP back-pressure, nothing is lost), an AMQP transfer is
//! settled only then (so the link credit is renewed later), an HTTP produce is answered 429
//! with the seconds after which it would fit.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

/// A token bucket holding at most one second's worth of tokens.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// `rate` tokens per second (a burst of one second's worth); `None` for 0 (no limit).
    pub fn per_second(rate: u32) -> Option<Self> {
        (rate > 0).then(|| Self {
            rate: f64::from(rate),
            tokens: f64::from(rate),
            last: Instant::now(),
        })
    }

    fn refill(&mut self) {
        let now = Instant::now();
        let earned = now.duration_since(self.last).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + earned).min(self.rate);
        self.last = now;
    }

    /// Takes one token, going into debt if there is none; returns how long to wait before
    /// acting on it (zero when it was there).
    pub fn take(&mut self) -> Duration {
        self.refill();
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }

    /// Takes `n` tokens if they are all there; otherwise takes none and says when they would
    /// be (a request larger than one second's worth waits for a full bucket and goes into
    /// debt, so it is possible at all).
    pub fn try_take(&mut self, n: usize) -> Result<(), Duration> {
        self.refill();
        let n = n as f64;
        let needed = n.min(self.rate);
        if self.tokens >= needed {
            self.tokens -= n;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((needed - self.tokens) / self.rate))
        }
    }
}

/// Token buckets by key (HTTP principal), made on first use.
#[derive(Debug)]
pub struct KeyedRates {
    rate: u32,
    buckets: Mutex<HashMap<String, TokenBucket>>,
}

/// Buckets kept at most; full ones (idle keys) are dropped first.
const MAX_KEYS: usize = 100_000;

impl KeyedRates {
    /// `rate` per second per key; 0 = no limit.
    pub fn new(rate: u32) -> Self {
        Self {
            rate,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// [`TokenBucket::try_take`] on `key`'s bucket.
    pub fn try_take(&self, key: &str, n: usize) -> Result<(), Duration> {
        if self.rate == 0 {
            return Ok(());
        }
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if buckets.len() >= MAX_KEYS && !buckets.contains_key(key) {
            buckets.retain(|_, b| {
                b.refill();
                b.tokens < b.rate
            });
        }
        match buckets.get_mut(key) {
            Some(bucket) => bucket.try_take(n),
            None => {
                let mut bucket = TokenBucket::per_second(self.rate).ok_or(Duration::ZERO)?;
                let taken = bucket.try_take(n);
                buckets.insert(key.to_owned(), bucket);
                taken
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::expect_used)]
    fn a_bucket_allows_its_burst_then_asks_to_wait() {
        let mut b = TokenBucket::per_second(10).expect("a limit");
        for _ in 0..10 {
            assert_eq!(b.take(), Duration::ZERO);
        }
        let wait = b.take();
        assert!(
            wait > Duration::from_millis(50) && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
        assert!(TokenBucket::per_second(0).is_none());
    }

    #[test]
    #[allow(clippy::expect_used)]
    fn keyed_rates_refuse_without_taking() {
        let r = KeyedRates::new(5);
        assert!(r.try_take("a", 5).is_ok());
        let retry = r.try_take("a", 1).expect_err("over the rate");
        assert!(retry <= Duration::from_millis(200));
        assert!(r.try_take("b", 3).is_ok(), "another key has its own bucket");
        assert!(KeyedRates::new(0).try_take("a", 1_000_000).is_ok());
        // Larger than the burst: possible once the bucket is full.
        let big = KeyedRates::new(2);
        assert!(big.try_take("x", 10).is_ok());
        assert!(big.try_take("x", 1).is_err());
    }
}
