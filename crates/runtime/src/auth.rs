//! Optional bearer-token auth for every service's API, HTTP and gRPC alike.
//!
//! Keys come from `--api-key` (repeatable; the environment variable takes a comma-separated list)
//! and `--api-key-file` (one key per line, `#` comments). With no key configured the API is open
//! (the local default); with keys, every API request needs `Authorization: Bearer <key>` matching
//! one of them. `/healthz`, `/readyz` and `/metrics` stay open: probes and Prometheus do not carry
//! application keys (restrict them with NetworkPolicies). Keys are compared in constant time and
//! never printed: [`Secret`]'s `Debug` is redacted, and refusals do not echo what was sent.

use std::{path::Path, sync::Arc};

use anyhow::{Context, Result};

/// A key that must not reach logs or error messages.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl std::str::FromStr for Secret {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("an API key must not be empty".into());
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("an API key must not contain spaces or control characters".into());
        }
        Ok(Secret(s.to_string()))
    }
}

/// The accepted keys; empty = auth off.
#[derive(Clone, Default)]
pub struct ApiKeys {
    keys: Arc<Vec<Vec<u8>>>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} keys)", self.keys.len())
    }
}

impl ApiKeys {
    pub fn load(keys: &[Secret], file: Option<&Path>) -> Result<Self> {
        let mut all: Vec<Vec<u8>> = keys.iter().map(|k| k.0.as_bytes().to_vec()).collect();
        if let Some(p) = file {
            let text = std::fs::read_to_string(p).with_context(|| format!("reading --api-key-file {}", p.display()))?;
            for (i, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let key: Secret = line.parse().map_err(|e| anyhow::anyhow!("--api-key-file {} line {}: {e}", p.display(), i + 1))?;
                all.push(key.0.into_bytes());
            }
        }
        Ok(Self { keys: Arc::new(all) })
    }

    pub fn enabled(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Does this `Authorization` header value carry an accepted key?
    pub fn check(&self, authorization: Option<&[u8]>) -> bool {
        !self.enabled() || self.matching_key(authorization).is_some()
    }

    /// Which configured key the header carries (its index), if any: the identity the per-client
    /// rate limit uses, so that spelling variants of one key share a bucket and made-up keys get
    /// none of their own.
    pub fn matching_key(&self, authorization: Option<&[u8]>) -> Option<usize> {
        let value = authorization?;
        let token = value.strip_prefix(b"Bearer ").or_else(|| value.strip_prefix(b"bearer "))?;
        // Compare with every key, always: the time taken does not say which key or how much matched.
        let mut found = None;
        for (i, k) in self.keys.iter().enumerate() {
            if constant_time_eq(k, token) {
                found = Some(i);
            }
        }
        found
    }
}

/// Equal length and bytes, in time that depends only on the lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u64;
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= (x ^ y) as u64;
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked_and_never_printed() {
        let keys = ApiKeys::load(&["alpha-1".parse().unwrap(), "beta-2".parse().unwrap()], None).unwrap();
        assert!(keys.check(Some(b"Bearer alpha-1")));
        assert!(keys.check(Some(b"Bearer beta-2")));
        assert!(!keys.check(Some(b"Bearer alpha-")));
        assert!(!keys.check(Some(b"Bearer alpha-12")));
        assert!(!keys.check(Some(b"alpha-1")));
        assert!(!keys.check(None));
        assert!(ApiKeys::default().check(None), "no keys: open");
        let s: Secret = "alpha-1".parse().unwrap();
        assert!(!format!("{s:?} {keys:?}").contains("alpha"));
        assert!("".parse::<Secret>().is_err() && "a b".parse::<Secret>().is_err());
    }

    #[test]
    fn key_files_skip_comments_and_blank_lines() {
        let dir = std::env::temp_dir().join(format!("apikeys-{}", std::process::id()));
        std::fs::write(&dir, "# keys\n\nfrom-file\n").unwrap();
        let keys = ApiKeys::load(&[], Some(&dir)).unwrap();
        assert!(keys.check(Some(b"Bearer from-file")));
        std::fs::write(&dir, "bad key\n").unwrap();
        let err = ApiKeys::load(&[], Some(&dir)).unwrap_err().to_string();
        assert!(err.contains("line 1") && !err.contains("bad key"));
        let _ = std::fs::remove_file(&dir);
    }
}
