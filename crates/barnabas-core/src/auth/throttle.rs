//! Slows down repeated failed logins from one address, so password guessing gets expensive
//! while one typo costs nothing noticeable.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

/// Failures per source address and the delay they earn.
#[derive(Debug, Default)]
pub struct FailureThrottle {
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

/// Failures are forgotten after this long without another one.
const FORGET: Duration = Duration::from_secs(300);
/// The longest delay before a refusal is answered.
const MAX_DELAY: Duration = Duration::from_secs(5);
/// Addresses remembered at most (oldest dropped first), so a scan cannot grow the map forever.
const MAX_ADDRESSES: usize = 10_000;

impl FailureThrottle {
    /// Records a failed login from `addr`; returns how long to wait before answering it:
    /// nothing for the first two, then 250 ms doubling up to 5 s.
    pub fn failed(&self, addr: IpAddr) -> Duration {
        let mut map = self
            .failures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        if map.len() >= MAX_ADDRESSES {
            map.retain(|_, (_, at)| now.duration_since(*at) < FORGET);
            if map.len() >= MAX_ADDRESSES {
                map.clear();
            }
        }
        let entry = map.entry(addr).or_insert((0, now));
        if now.duration_since(entry.1) >= FORGET {
            entry.0 = 0;
        }
        entry.0 = entry.0.saturating_add(1);
        entry.1 = now;
        match entry.0 {
            0..=2 => Duration::ZERO,
            n => (Duration::from_millis(250) * 2u32.saturating_pow((n - 3).min(5))).min(MAX_DELAY),
        }
    }

    /// The delay `addr` has earned so far, without counting a new failure (for protocols
    /// that can only slow a client down before its next login, not while answering it).
    pub fn penalty(&self, addr: IpAddr) -> Duration {
        let map = self
            .failures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match map.get(&addr) {
            Some((n, at)) if at.elapsed() < FORGET && *n >= 2 => {
                (Duration::from_millis(250) * 2u32.saturating_pow((n - 2).min(5))).min(MAX_DELAY)
            }
            _ => Duration::ZERO,
        }
    }

    /// A successful login from `addr` clears its failures.
    pub fn succeeded(&self, addr: IpAddr) {
        if let Ok(mut map) = self.failures.lock() {
            map.remove(&addr);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_after_a_few_failures_and_reset_on_success() {
        let t = FailureThrottle::default();
        let a: IpAddr = [10, 0, 0, 1].into();
        assert_eq!(t.failed(a), Duration::ZERO);
        assert_eq!(t.failed(a), Duration::ZERO);
        assert_eq!(t.failed(a), Duration::from_millis(250));
        assert_eq!(t.failed(a), Duration::from_millis(500));
        for _ in 0..10 {
            t.failed(a);
        }
        assert_eq!(t.failed(a), MAX_DELAY);
        t.succeeded(a);
        assert_eq!(t.failed(a), Duration::ZERO);
        assert_eq!(t.failed([10, 0, 0, 2].into()), Duration::ZERO);
    }
}
