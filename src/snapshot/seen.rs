//! The SHA-256 of key values seen lately, per thread: a key presented again skips the hash.
//!
//! Only the hash is cached, never what it identifies: every request still looks its key up in
//! the current snapshot and catalog, so a key disabled, deleted or moved to another plan is
//! refused at once, with no cache to invalidate (SHA-256 does not change). Only values that
//! named a known key are remembered, so random values cannot push known ones out.
//!
//! Per thread rather than per connection: Envoy sends every client's keys over a handful of
//! connections, so a cache per connection would hold the same keys once per connection anyway;
//! one per thread needs no lock and no plumbing through tonic. Its size is bounded
//! ([`SETS`] × [`WAYS`] values, ~200 KB per thread at most, allocated on first use); a key that
//! falls out is hashed again.
//!
//! The cached values are compared in constant time (the same work whether they differ at the
//! first byte or the last), so how long a lookup takes says nothing about a remembered key.

use std::cell::RefCell;
use std::hash::BuildHasher;

use super::{KeyHash, hash_key};

/// Sets of [`WAYS`] values each; a power of two.
const SETS: usize = 1024;
const WAYS: usize = 4;

/// The longest value remembered (longer ones are hashed every time; AWS keys are 20–128
/// characters).
const MAX_LEN: usize = 256;

struct Slot {
    value: Box<[u8]>,
    hash: KeyHash,
}

struct Seen {
    /// Per set: a tag of each slot's value (its index hash's high bits, 0: empty), so that a
    /// lookup reads one small line and only the slot whose tag matches.
    tags: Vec<[u32; WAYS]>,
    /// `SETS` × `WAYS` slots, allocated on first use.
    slots: Vec<Option<Slot>>,
    /// Per set: which of its slots to replace next (round robin).
    next: Vec<u8>,
    index: foldhash::fast::RandomState,
}

thread_local! {
    static SEEN: RefCell<Seen> = RefCell::new(Seen {
        tags: Vec::new(),
        slots: Vec::new(),
        next: Vec::new(),
        index: foldhash::fast::RandomState::default(),
    });
}

/// Whether this CPU computes SHA-256 in hardware (x86 SHA extensions, Arm SHA2): then hashing
/// a key costs less than looking it up here, and the cache is not used.
fn hashing_is_cheap() -> bool {
    #[cfg(test)]
    if let Some(cheap) = tests::CHEAP.get() {
        return cheap;
    }
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("sha");
    #[cfg(target_arch = "aarch64")]
    return std::arch::is_aarch64_feature_detected!("sha2");
    #[allow(unreachable_code)]
    false
}

/// Equal bytes, compared without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail = a8
        .remainder()
        .iter()
        .zip(b8.remainder())
        .fold(0u8, |d, (x, y)| d | (x ^ y));
    let word = |c: &[u8]| u64::from_ne_bytes(c.try_into().unwrap_or([0; 8]));
    a8.zip(b8).fold(0u64, |d, (x, y)| d | (word(x) ^ word(y))) | u64::from(tail) == 0
}

impl Seen {
    /// The set of `value` and its tag.
    fn place(&self, value: &[u8]) -> (usize, u32) {
        let h = self.index.hash_one(value);
        ((h as usize) & (SETS - 1), ((h >> 32) as u32) | 1)
    }

    fn get(&self, value: &[u8]) -> Option<KeyHash> {
        if self.slots.is_empty() {
            return None;
        }
        let (set, tag) = self.place(value);
        (0..WAYS)
            .filter(|&w| self.tags[set][w] == tag)
            .filter_map(|w| self.slots[set * WAYS + w].as_ref())
            .find(|s| same(&s.value, value))
            .map(|s| s.hash)
    }

    fn put(&mut self, value: &[u8], hash: KeyHash) {
        if value.len() > MAX_LEN {
            return;
        }
        if self.slots.is_empty() {
            self.tags = vec![[0; WAYS]; SETS];
            self.slots.resize_with(SETS * WAYS, || None);
            self.next = vec![0; SETS];
        }
        let (set, tag) = self.place(value);
        let way = usize::from(self.next[set]) % WAYS;
        self.tags[set][way] = tag;
        self.slots[set * WAYS + way] = Some(Slot {
            value: value.into(),
            hash,
        });
        self.next[set] = ((way + 1) % WAYS) as u8;
    }
}

/// The SHA-256 of `value` ([`hash_key`]), and whether this thread had it cached.
pub fn key_hash(value: &str) -> (KeyHash, bool) {
    if hashing_is_cheap() {
        return (hash_key(value), false);
    }
    let cached = SEEN.with(|s| s.try_borrow().ok().and_then(|s| s.get(value.as_bytes())));
    match cached {
        Some(h) => (h, true),
        None => (hash_key(value), false),
    }
}

/// Remembers that `value` hashes to `hash`: call it only for a value that named a key.
pub fn remember(value: &str, hash: &KeyHash) {
    if hashing_is_cheap() {
        return;
    }
    SEEN.with(|s| {
        if let Ok(mut s) = s.try_borrow_mut() {
            s.put(value.as_bytes(), *hash);
        }
    });
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    thread_local! {
        /// Overrides [`hashing_is_cheap`] on this thread: the cache is tested on every CPU.
        pub(crate) static CHEAP: std::cell::Cell<Option<bool>> = const { std::cell::Cell::new(Some(false)) };
    }

    #[test]
    fn with_sha_in_hardware_nothing_is_cached() {
        CHEAP.set(Some(true));
        let v = "a-value-on-a-cpu-with-sha";
        remember(v, &hash_key(v));
        assert_eq!(key_hash(v), (hash_key(v), false));
        CHEAP.set(Some(false));
    }

    #[test]
    fn a_value_is_hashed_then_remembered() {
        let v = "known-key-value";
        assert_eq!(key_hash(v), (hash_key(v), false));
        assert_eq!(
            key_hash(v),
            (hash_key(v), false),
            "not remembered until told"
        );
        remember(v, &hash_key(v));
        assert_eq!(key_hash(v), (hash_key(v), true));
        assert_eq!(key_hash("another"), (hash_key("another"), false));
    }

    #[test]
    fn the_hash_handed_over_is_the_values_own_whatever_was_seen_before() {
        // Far more values than slots: every answer is still the value's own hash.
        for round in 0..2 {
            for i in 0..(SETS * 3) {
                let v = format!("key-{i}");
                let (h, _) = key_hash(&v);
                assert_eq!(h, hash_key(&v), "round {round}, value {v}");
                remember(&v, &h);
            }
        }
        // The last values remembered are still there; a value longer than MAX_LEN never is.
        let last = format!("key-{}", SETS * 3 - 1);
        assert_eq!(key_hash(&last), (hash_key(&last), true));
        let long = "k".repeat(MAX_LEN + 1);
        remember(&long, &hash_key(&long));
        assert_eq!(key_hash(&long), (hash_key(&long), false));
    }

    #[test]
    fn same_compares_whole_values() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"xbc"));
        assert!(!same(b"abc", b"abcd"));
        assert!(same(b"", b""));
        let long = b"0123456789abcdef0123";
        assert!(same(long, long));
        for i in 0..long.len() {
            let mut other = *long;
            other[i] ^= 1;
            assert!(!same(long, &other), "byte {i}");
        }
    }
}
