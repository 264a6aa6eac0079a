//! Brute-force guard for client authentication.
//!
//! Failures are counted per source IP and per client id over a window. Past a free
//! allowance each further failure locks the key for a doubling delay (capped). A lock
//! does not refuse a request outright: it forbids *Argon2* work for it, so a client
//! presenting a secret the engine already verified (its digest is cached) still gets
//! its token while a guesser — whose guesses all miss the cache — is refused at no
//! cost. Refusals under a lock are counted and written to the audit log as periodic
//! summaries, so a flood cannot fill the disk one entry per attempt.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

/// What is counted.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ThrottleKey {
    /// A source address.
    Ip(IpAddr),
    /// A (syntactically valid) client id.
    Client(String),
}

impl std::fmt::Display for ThrottleKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ip(ip) => write!(f, "ip {ip}"),
            Self::Client(c) => write!(f, "client {c}"),
        }
    }
}

/// Tunables.
#[derive(Debug, Clone)]
pub struct ThrottleConfig {
    /// Failures allowed in a window before locking.
    pub free_failures: u32,
    /// The counting window.
    pub window: Duration,
    /// Longest lock.
    pub max_lock: Duration,
    /// Most keys tracked (memory bound).
    pub max_keys: usize,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        Self {
            free_failures: 10,
            window: Duration::from_secs(900),
            max_lock: Duration::from_secs(900),
            max_keys: 200_000,
        }
    }
}

#[derive(Debug, Default, Clone)]
struct Entry {
    failures: u32,
    window_start_ms: u64,
    locked_until_ms: u64,
    refused_while_locked: u64,
}

/// A lock that just started (to audit once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lockout {
    /// What was locked.
    pub key: ThrottleKey,
    /// Failures counted in the window.
    pub failures: u32,
    /// For how long.
    pub duration: Duration,
}

/// The guard.
#[derive(Debug, Default)]
pub struct Throttle {
    config: ThrottleConfig,
    entries: Mutex<HashMap<ThrottleKey, Entry>>,
}

impl Throttle {
    /// A guard with `config`.
    pub fn new(config: ThrottleConfig) -> Self {
        Self {
            config,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The longest remaining lock among `keys`, if any is locked.
    pub fn locked_for(&self, keys: &[ThrottleKey], now_ms: u64) -> Option<Duration> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        keys.iter()
            .filter_map(|k| entries.get(k))
            .map(|e| e.locked_until_ms.saturating_sub(now_ms))
            .max()
            .filter(|&ms| ms > 0)
            .map(Duration::from_millis)
    }

    /// Counts a refusal made because of a lock (for the periodic summary).
    pub fn note_refused(&self, keys: &[ThrottleKey]) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        for key in keys {
            if let Some(e) = entries.get_mut(key) {
                e.refused_while_locked += 1;
            }
        }
    }

    /// Counts a failed authentication; returns the locks it started.
    pub fn record_failure(&self, keys: &[ThrottleKey], now_ms: u64) -> Vec<Lockout> {
        let window_ms = self.config.window.as_millis() as u64;
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= self.config.max_keys {
            entries.retain(|_, e| e.locked_until_ms > now_ms || now_ms.saturating_sub(e.window_start_ms) < window_ms);
        }
        let mut started = Vec::new();
        for key in keys {
            if entries.len() >= self.config.max_keys && !entries.contains_key(key) {
                // Full of live entries: the Argon2 pool's own bound still protects us.
                continue;
            }
            let e = entries.entry(key.clone()).or_default();
            if now_ms.saturating_sub(e.window_start_ms) >= window_ms && e.locked_until_ms <= now_ms {
                e.failures = 0;
                e.window_start_ms = now_ms;
            }
            e.failures += 1;
            if e.failures > self.config.free_failures {
                let exponent = (e.failures - self.config.free_failures - 1).min(20);
                let lock = Duration::from_secs(1u64 << exponent).min(self.config.max_lock);
                let was_locked = e.locked_until_ms > now_ms;
                e.locked_until_ms = now_ms + lock.as_millis() as u64;
                if !was_locked {
                    started.push(Lockout {
                        key: key.clone(),
                        failures: e.failures,
                        duration: lock,
                    });
                }
            }
        }
        started
    }

    /// A success clears the client id's count unless it is locked (a cached secret
    /// passing during an attack must not reset the guesser's lock). The IP's count is
    /// kept: one good client behind a shared address must not launder failures.
    pub fn record_success(&self, client: &ThrottleKey, now_ms: u64) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.get(client).is_some_and(|e| e.locked_until_ms <= now_ms) {
            entries.remove(client);
        }
    }

    /// Refusal counts since the last call, per key (for the audit summary).
    pub fn drain_refusals(&self) -> Vec<(ThrottleKey, u64)> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<(ThrottleKey, u64)> = entries
            .iter_mut()
            .filter(|(_, e)| e.refused_while_locked > 0)
            .map(|(k, e)| (k.clone(), std::mem::take(&mut e.refused_while_locked)))
            .collect();
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Vec<ThrottleKey> {
        vec![
            ThrottleKey::Ip("10.1.2.3".parse().unwrap()),
            ThrottleKey::Client("tgc_x".into()),
        ]
    }

    #[test]
    fn locks_after_the_free_failures_with_doubling_delays() {
        let t = Throttle::new(ThrottleConfig::default());
        for _ in 0..10 {
            assert!(t.record_failure(&keys(), 1_000).is_empty());
        }
        assert_eq!(t.locked_for(&keys(), 1_000), None);
        let started = t.record_failure(&keys(), 1_000);
        assert_eq!(started.len(), 2, "both the IP and the client id lock");
        assert_eq!(t.locked_for(&keys(), 1_000), Some(Duration::from_secs(1)));
        t.record_failure(&keys(), 1_500);
        assert_eq!(t.locked_for(&keys(), 1_500), Some(Duration::from_secs(2)));
        assert_eq!(t.locked_for(&keys(), 3_500), None, "locks end by themselves");
    }

    #[test]
    fn refusals_under_a_lock_are_summarised() {
        let t = Throttle::new(ThrottleConfig::default());
        for _ in 0..11 {
            t.record_failure(&keys(), 0);
        }
        for _ in 0..500 {
            t.note_refused(&keys());
        }
        let summary = t.drain_refusals();
        assert_eq!(summary.len(), 2);
        assert!(summary.iter().all(|(_, n)| *n == 500));
        assert!(t.drain_refusals().is_empty(), "drained");
    }

    #[test]
    fn memory_stays_bounded_under_a_spray_of_addresses() {
        let t = Throttle::new(ThrottleConfig {
            max_keys: 100,
            ..ThrottleConfig::default()
        });
        for i in 0..10_000u32 {
            let ip = std::net::Ipv4Addr::from(i);
            t.record_failure(&[ThrottleKey::Ip(ip.into())], 0);
        }
        assert!(t.entries.lock().unwrap().len() <= 100);
    }
}
