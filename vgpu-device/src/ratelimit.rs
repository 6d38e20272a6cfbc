//! Rate limiting of guest-triggered log lines.
//!
//! A guest can send malformed requests as fast as it likes; every one of
//! them would log a warning. [`guest_warn!`](crate::guest_warn) logs through
//! a token bucket per *kind* (a static string naming the source: "request",
//! "svm-command", "job", ...): [`BURST`] lines at once, then one per
//! [`REFILL`]. Dropped lines are counted; the next line of that kind that
//! is logged says how many were suppressed before it, [`flush`] logs the
//! counts still pending (the daemon calls it periodically and at exit), and
//! [`total_suppressed`] is in the stats file (`warnings_suppressed`).
//! Kinds are static strings in the code, so the table is bounded.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lines of one kind logged at once before limiting starts.
pub const BURST: u32 = 10;
/// One more line of a kind per this interval.
pub const REFILL: Duration = Duration::from_secs(1);

/// A token bucket (time passed in, for tests).
#[derive(Clone, Debug)]
pub struct Bucket {
    tokens: u32,
    last: Instant,
    suppressed: u64,
}

impl Bucket {
    pub fn new(now: Instant) -> Self {
        Self {
            tokens: BURST,
            last: now,
            suppressed: 0,
        }
    }

    /// May a line be logged at `now`? `Some(n)`: yes, and `n` lines were
    /// suppressed since the last one logged; `None`: no (counted).
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        let since = now.saturating_duration_since(self.last);
        let add = since.as_nanos() / REFILL.as_nanos();
        if add > 0 {
            let add = u32::try_from(add).unwrap_or(u32::MAX);
            self.tokens = self.tokens.saturating_add(add).min(BURST);
            // Keep the remainder: refills at a steady rate.
            self.last = self
                .last
                .checked_add(REFILL.saturating_mul(add))
                .filter(|&t| t <= now)
                .unwrap_or(now);
        }
        if self.tokens == 0 {
            self.suppressed = self.suppressed.saturating_add(1);
            return None;
        }
        self.tokens -= 1;
        Some(std::mem::take(&mut self.suppressed))
    }

    /// Lines suppressed and not reported yet (and forget them).
    pub fn take_suppressed(&mut self) -> u64 {
        std::mem::take(&mut self.suppressed)
    }
}

static BUCKETS: Mutex<Option<HashMap<&'static str, Bucket>>> = Mutex::new(None);
static TOTAL: AtomicU64 = AtomicU64::new(0);

/// May a line of `kind` be logged now? See [`Bucket::allow`].
pub fn allow(kind: &'static str) -> Option<u64> {
    let now = Instant::now();
    let mut b = BUCKETS.lock().unwrap_or_else(|p| p.into_inner());
    let r = b
        .get_or_insert_with(HashMap::new)
        .entry(kind)
        .or_insert_with(|| Bucket::new(now))
        .allow(now);
    if r.is_none() {
        TOTAL.fetch_add(1, Ordering::Relaxed);
    }
    r
}

/// Guest-triggered lines suppressed since the daemon started.
pub fn total_suppressed() -> u64 {
    TOTAL.load(Ordering::Relaxed)
}

/// Logs how many lines of each kind were suppressed and not reported yet.
pub fn flush() {
    let pending: Vec<(&'static str, u64)> = {
        let mut b = BUCKETS.lock().unwrap_or_else(|p| p.into_inner());
        b.get_or_insert_with(HashMap::new)
            .iter_mut()
            .map(|(k, v)| (*k, v.take_suppressed()))
            .filter(|&(_, n)| n > 0)
            .collect()
    };
    for (kind, n) in pending {
        log::warn!("{n} guest-triggered {kind} warning(s) suppressed (rate limit)");
    }
}

/// `log::warn!` for lines a guest can cause: rate-limited per kind (see
/// [`crate::ratelimit`]).
#[macro_export]
macro_rules! guest_warn {
    ($kind:expr, $($arg:tt)+) => {
        if let Some(n) = $crate::ratelimit::allow($kind) {
            if n > 0 {
                log::warn!("{} [{} similar {} warning(s) suppressed]",
                           format_args!($($arg)+), n, $kind);
            } else {
                log::warn!($($arg)+);
            }
        }
    };
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::cell::RefCell;

    #[test]
    fn bucket_bursts_then_refills_and_reports_suppressed() {
        let t0 = Instant::now();
        let mut b = Bucket::new(t0);
        for _ in 0..BURST {
            assert_eq!(b.allow(t0), Some(0));
        }
        for _ in 0..1000 {
            assert_eq!(b.allow(t0), None);
        }
        // Half an interval later: still nothing.
        assert_eq!(b.allow(t0 + REFILL / 2), None);
        // One interval later: one line, reporting the 1001 suppressed.
        assert_eq!(b.allow(t0 + REFILL), Some(1001));
        assert_eq!(b.allow(t0 + REFILL), None);
        assert_eq!(b.take_suppressed(), 1);
        // A long quiet time refills to BURST, not more.
        let later = t0 + REFILL * 1000;
        for _ in 0..BURST {
            assert_eq!(b.allow(later), Some(0));
        }
        assert_eq!(b.allow(later), None);
        // Time going backwards (never with Instant) changes nothing.
        assert_eq!(b.allow(t0), None);
    }

    thread_local! {
        static CAPTURED: RefCell<Option<Vec<String>>> = const { RefCell::new(None) };
    }

    struct Capture;

    impl log::Log for Capture {
        fn enabled(&self, m: &log::Metadata<'_>) -> bool {
            m.level() <= log::Level::Warn
        }
        fn log(&self, r: &log::Record<'_>) {
            if r.level() <= log::Level::Warn {
                CAPTURED.with(|c| {
                    if let Some(v) = c.borrow_mut().as_mut() {
                        v.push(r.args().to_string());
                    }
                });
            }
        }
        fn flush(&self) {}
    }

    static LOGGER: Capture = Capture;

    /// Runs `f` and returns the warnings it logged on this thread.
    pub(crate) fn capture_warnings(f: impl FnOnce()) -> Vec<String> {
        if log::set_logger(&LOGGER).is_ok() {
            log::set_max_level(log::LevelFilter::Warn);
        }
        CAPTURED.with(|c| *c.borrow_mut() = Some(Vec::new()));
        f();
        CAPTURED.with(|c| c.borrow_mut().take().unwrap_or_default())
    }
}
