//! Time as a parameter. Engine and store functions take `now` (nanoseconds since the Unix epoch,
//! UTC); this is the one place that reads the system clock, so tests can use [`FakeClock`].
//! (`clippy.toml` forbids `SystemTime::now` and `Instant::now` everywhere else.)

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Nanoseconds since 1970-01-01T00:00:00Z. `i64` covers the years 1677–2262.
pub type Nanos = i64;

pub const NANOS_PER_SEC: i64 = 1_000_000_000;

/// A source of the current time.
pub trait Clock: Send + Sync {
    fn now(&self) -> Nanos;
}

/// The system's wall clock. Quota windows are calendar (UTC) windows, so the wall clock, not a
/// monotonic one, is the right source; token buckets tolerate a clock that steps back (they
/// treat negative elapsed time as zero).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // The one reading of the wall clock.
    fn now(&self) -> Nanos {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
            Err(_) => 0,
        }
    }
}

/// A clock that moves only when told to.
#[derive(Debug, Default)]
pub struct FakeClock(AtomicI64);

impl FakeClock {
    pub fn new(now: Nanos) -> Self {
        FakeClock(AtomicI64::new(now))
    }

    pub fn set(&self, now: Nanos) {
        self.0.store(now, Ordering::SeqCst);
    }

    pub fn advance(&self, by: Duration) {
        let by = i64::try_from(by.as_nanos()).unwrap_or(i64::MAX);
        self.0.fetch_add(by, Ordering::SeqCst);
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Nanos {
        self.0.load(Ordering::SeqCst)
    }
}

/// Parses an RFC 3339 timestamp (`2026-11-25T10:00:00Z`) into [`Nanos`].
pub fn parse_rfc3339(s: &str) -> Result<Nanos, String> {
    let t = chrono::DateTime::parse_from_rfc3339(s).map_err(|e| format!("`{s}`: {e}"))?;
    t.timestamp_nanos_opt()
        .ok_or_else(|| format!("`{s}` is out of range"))
}

/// Formats [`Nanos`] as RFC 3339 in UTC, to the second.
pub fn format_rfc3339(t: Nanos) -> String {
    chrono::DateTime::from_timestamp_nanos(t)
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Measures elapsed time for metrics (monotonic; never used for decisions).
#[derive(Debug, Clone, Copy)]
pub struct Stopwatch(Instant);

impl Stopwatch {
    #[allow(clippy::disallowed_methods)] // The one reading of the monotonic clock.
    pub fn start() -> Self {
        Stopwatch(Instant::now())
    }

    pub fn seconds(&self) -> f64 {
        self.0.elapsed().as_secs_f64()
    }

    /// The time elapsed since the start.
    pub fn elapsed(&self) -> Duration {
        self.0.elapsed()
    }
}
