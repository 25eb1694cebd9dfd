//! Console sessions: a sign-in with the admin token or an access key of the control plane's
//! credentials gives a session — a random token in an HttpOnly, SameSite=Strict cookie (Secure
//! under TLS), kept here as its SHA-256 only, with its role, its CSRF token and its expiry.
//! Failed sign-ins are throttled per client address and counted.

use std::collections::HashMap;
use std::net::IpAddr;

use sha2::{Digest, Sha256};

use crate::clock::{NANOS_PER_SEC, Nanos};

/// What a session may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Sees everything, changes nothing.
    Read,
    Admin,
}

/// A signed-in session.
#[derive(Debug, Clone)]
pub struct Session {
    pub role: Role,
    /// Who signed in: `admin token`, or an access key id.
    pub who: String,
    /// The token every form of this session carries (CSRF).
    pub csrf: String,
    pub expires: Nanos,
}

/// How long a session lasts.
pub const LIFETIME: Nanos = 8 * 3600 * NANOS_PER_SEC;

/// The most sessions at once (oldest dropped first when full).
pub const MAX_SESSIONS: usize = 10_000;

/// Failed sign-ins allowed per client address in [`FAILURE_WINDOW`]; more are refused unread.
pub const MAX_FAILURES: u32 = 5;
pub const FAILURE_WINDOW: Nanos = 60 * NANOS_PER_SEC;

/// The cookie's name.
pub const COOKIE: &str = "plangate_console";

/// Events per client address in a fixed window (failed sign-ins; the consumer page's
/// lookups): an address with `max` of them in the window is refused until it ends.
pub struct PerClient {
    /// Client address → (events in the window, the window's start).
    map: parking_lot::Mutex<HashMap<IpAddr, (u32, Nanos)>>,
    max: u32,
    window: Nanos,
}

impl PerClient {
    pub fn new(max: u32, window: Nanos) -> PerClient {
        PerClient {
            map: Default::default(),
            max,
            window,
        }
    }

    /// Whether `ip` is under its limit now.
    pub fn allows(&self, ip: IpAddr, now: Nanos) -> bool {
        self.map
            .lock()
            .get(&ip)
            .is_none_or(|&(n, since)| n < self.max || now - since > self.window)
    }

    /// Counts an event of `ip` (the map is swept of ended windows when it grows large, so an
    /// attacker's many addresses cost bounded memory).
    pub fn count(&self, ip: IpAddr, now: Nanos) {
        let mut map = self.map.lock();
        if map.len() > 100_000 {
            map.retain(|_, (_, since)| now - *since <= self.window);
        }
        let e = map.entry(ip).or_insert((0, now));
        if now - e.1 > self.window {
            *e = (0, now);
        }
        e.0 += 1;
    }
}

/// Sessions and failed sign-ins.
pub struct Sessions {
    by_hash: parking_lot::Mutex<HashMap<[u8; 32], Session>>,
    failures: PerClient,
    failed_total: std::sync::atomic::AtomicU64,
    throttled_total: std::sync::atomic::AtomicU64,
}

impl Default for Sessions {
    fn default() -> Sessions {
        Sessions {
            by_hash: Default::default(),
            failures: PerClient::new(MAX_FAILURES, FAILURE_WINDOW),
            failed_total: Default::default(),
            throttled_total: Default::default(),
        }
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// 43 characters of the OS's CSPRNG (256 bits).
fn random_token() -> Option<String> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).ok()?;
    Some(hex::encode(b))
}

impl Sessions {
    /// A new session: the cookie value to set, and the session.
    pub fn open(&self, role: Role, who: String, now: Nanos) -> Option<(String, Session)> {
        let token = random_token()?;
        let session = Session {
            role,
            who,
            csrf: random_token()?,
            expires: now + LIFETIME,
        };
        let mut map = self.by_hash.lock();
        map.retain(|_, s| s.expires > now);
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| *k)
        {
            map.remove(&oldest);
        }
        map.insert(digest(&token), session.clone());
        Some((token, session))
    }

    /// The session of cookie value `token`, unless unknown or expired.
    pub fn get(&self, token: &str, now: Nanos) -> Option<Session> {
        let mut map = self.by_hash.lock();
        let key = digest(token);
        match map.get(&key) {
            Some(s) if s.expires > now => Some(s.clone()),
            Some(_) => {
                map.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Ends the session of cookie value `token`.
    pub fn close(&self, token: &str) {
        self.by_hash.lock().remove(&digest(token));
    }

    /// Whether `ip` may try to sign in now (fewer than [`MAX_FAILURES`] failures in the
    /// window); a refusal is counted.
    pub fn may_try(&self, ip: IpAddr, now: Nanos) -> bool {
        let ok = self.failures.allows(ip, now);
        if !ok {
            self.throttled_total
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        ok
    }

    /// Counts a failed sign-in from `ip`.
    pub fn failed(&self, ip: IpAddr, now: Nanos) {
        self.failed_total
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.failures.count(ip, now);
    }

    /// Sign-ins that failed, and those refused unread (throttled), since start.
    pub fn failures(&self) -> (u64, u64) {
        (
            self.failed_total.load(std::sync::atomic::Ordering::Relaxed),
            self.throttled_total
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    }
}

/// `a == b` in time independent of where they differ.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_and_close() {
        let s = Sessions::default();
        let (token, session) = s.open(Role::Read, "k".into(), 0).unwrap();
        assert_eq!(token.len(), 64);
        assert_ne!(session.csrf, token);
        assert!(s.get(&token, 1).is_some());
        assert!(s.get(&token, LIFETIME + 1).is_none(), "expired");
        let (token, _) = s.open(Role::Admin, "k".into(), 0).unwrap();
        s.close(&token);
        assert!(s.get(&token, 1).is_none());
        assert!(s.get("forged", 1).is_none());
    }

    #[test]
    fn failed_sign_ins_are_throttled_per_address() {
        let s = Sessions::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..MAX_FAILURES {
            assert!(s.may_try(ip, 0));
            s.failed(ip, 0);
        }
        assert!(!s.may_try(ip, 1));
        assert!(s.may_try(other, 1));
        assert!(s.may_try(ip, FAILURE_WINDOW + 1), "the window passed");
        assert_eq!(s.failures(), (5, 1));
    }
}
