//! Optional per-client rate limiting (`--rate-limit`, `--rate-limit-burst`): a token bucket per
//! client, shared by the HTTP and gRPC APIs of a service.
//!
//! A client is the configured API key it authenticated with (several machines sharing a key
//! share a budget; with no keys configured a made-up `Authorization` header buys nothing), else,
//! with `--trust-forwarded-for`, the last `X-Forwarded-For` address (the one our ingress appended:
//! earlier entries are whatever the client sent), else the peer IP.
//! Requests over the budget get 429 with `Retry-After` = the time until a token is back. The
//! table of clients is bounded: past [`MAX_CLIENTS`], buckets that have refilled (idle clients)
//! are dropped first, and if none has, the oldest.

use std::{
    collections::HashMap,
    hash::{Hash, Hasher},
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

/// Clients remembered at once; beyond this, idle ones are forgotten.
pub const MAX_CLIENTS: usize = 16_384;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Token buckets keyed by client; cheap to clone (shared state).
#[derive(Clone)]
pub struct RateLimiter {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    per_second: f64,
    burst: f64,
    trust_forwarded_for: bool,
    buckets: Mutex<HashMap<u64, Bucket>>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            None => f.write_str("RateLimiter(off)"),
            Some(i) => write!(f, "RateLimiter({}/s, burst {})", i.per_second, i.burst),
        }
    }
}

impl RateLimiter {
    /// `per_second` <= 0 turns limiting off. `burst` 0 means "one second's worth" (at least 1).
    pub fn new(per_second: f64, burst: u32, trust_forwarded_for: bool) -> Self {
        if !(per_second > 0.0 && per_second.is_finite()) {
            return Self { inner: None };
        }
        let burst = if burst == 0 { per_second.ceil().max(1.0) } else { burst as f64 };
        Self { inner: Some(Arc::new(Inner { per_second, burst, trust_forwarded_for, buckets: Mutex::new(HashMap::new()) })) }
    }

    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// The client a request comes from, hashed (see the module docs for the order).
    pub fn client_key(&self, api_key: Option<usize>, forwarded_for: Option<&[u8]>, peer: Option<IpAddr>) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        let trust = self.inner.as_ref().is_some_and(|i| i.trust_forwarded_for);
        if let Some(k) = api_key {
            ("key", k).hash(&mut h);
        } else if let Some(last) =
            forwarded_for.filter(|_| trust).and_then(|v| v.rsplit(|b| *b == b',').next()).map(|s| s.trim_ascii()).filter(|s| !s.is_empty())
        {
            ("ip", last).hash(&mut h);
        } else {
            ("ip", peer.map(|p| p.to_string()).unwrap_or_default().as_bytes()).hash(&mut h);
        }
        h.finish()
    }

    /// Take one token for `client`: `Ok` to go on, `Err(wait)` to refuse with Retry-After.
    pub fn check(&self, client: u64) -> Result<(), Duration> {
        let Some(inner) = &self.inner else { return Ok(()) };
        let now = Instant::now();
        let mut buckets = inner.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_CLIENTS && !buckets.contains_key(&client) {
            inner.evict(&mut buckets, now);
        }
        let b = buckets.entry(client).or_insert(Bucket { tokens: inner.burst, updated: now });
        b.tokens = (b.tokens + now.duration_since(b.updated).as_secs_f64() * inner.per_second).min(inner.burst);
        b.updated = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / inner.per_second))
        }
    }

    #[cfg(test)]
    fn clients(&self) -> usize {
        self.inner.as_ref().map_or(0, |i| i.buckets.lock().unwrap().len())
    }
}

impl Inner {
    fn evict(&self, buckets: &mut HashMap<u64, Bucket>, now: Instant) {
        let full_after = Duration::from_secs_f64(self.burst / self.per_second);
        buckets.retain(|_, b| now.duration_since(b.updated) < full_after);
        if buckets.len() >= MAX_CLIENTS {
            if let Some(oldest) = buckets.iter().min_by_key(|(_, b)| b.updated).map(|(k, _)| *k) {
                buckets.remove(&oldest);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refusal_with_the_wait_then_refill() {
        let rl = RateLimiter::new(10.0, 3, false);
        let c = rl.client_key(None, None, Some("10.0.0.1".parse().unwrap()));
        for _ in 0..3 {
            rl.check(c).unwrap();
        }
        let wait = rl.check(c).unwrap_err();
        assert!(wait > Duration::from_millis(50) && wait <= Duration::from_millis(100), "{wait:?}");
        // Another client has its own budget.
        let other = rl.client_key(None, None, Some("10.0.0.2".parse().unwrap()));
        rl.check(other).unwrap();
        std::thread::sleep(Duration::from_millis(120));
        rl.check(c).unwrap();
    }

    #[test]
    fn keys_and_forwarded_for_identify_clients() {
        let peer = Some("10.0.0.1".parse().unwrap());
        let trusting = RateLimiter::new(1.0, 1, true);
        let ignoring = RateLimiter::new(1.0, 1, false);
        // The last entry is the one our proxy appended; what the client put first is ignored.
        let a = trusting.client_key(None, Some(b"6.6.6.6, 1.2.3.4"), peer);
        let b = trusting.client_key(None, Some(b"6.6.6.6, 5.6.7.8"), peer);
        assert_ne!(a, b);
        assert_eq!(trusting.client_key(None, Some(b"7.7.7.7,1.2.3.4"), peer), a);
        assert_eq!(ignoring.client_key(None, Some(b"1.2.3.4"), peer), ignoring.client_key(None, Some(b"5.6.7.8"), peer));
        assert_ne!(trusting.client_key(Some(0), None, peer), trusting.client_key(Some(1), None, peer));
    }

    #[test]
    fn off_by_default_and_the_table_is_bounded() {
        let off = RateLimiter::new(0.0, 0, false);
        assert!(!off.enabled());
        for _ in 0..1000 {
            off.check(1).unwrap();
        }
        let rl = RateLimiter::new(1000.0, 1, false);
        for c in 0..(MAX_CLIENTS as u64 + 100) {
            let _ = rl.check(c);
        }
        assert!(rl.clients() <= MAX_CLIENTS, "{}", rl.clients());
    }
}
