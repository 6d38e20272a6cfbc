//! The recent INVALIDATEs of a context, for the violation record.
//!
//! Every INVALIDATE a context receives goes into a fixed ring of the last
//! [`INVAL_HISTORY`] (its sequence number within the context, its reason
//! from `hdr.flags` (protocol 0.5), its clipped GPU VA range, its time).
//! Written once per INVALIDATE (no allocation: the ring is an array), read
//! only when the checker records a violation: [`InvalHistory::explain`]
//! picks the last few that covered the violating GPU VA, most recent first,
//! which is what an mm developer needs to tell "the notifier never came"
//! from "it came, for another range or too early".
//!
//! Only what the driver sent is seen: a notifier callback that found no
//! GPU entry valid in its range sends no INVALIDATE, so it is not here.

use std::fmt;

use serde::Serialize;

use crate::protocol::InvalReason;

/// INVALIDATEs kept per context.
pub const INVAL_HISTORY: usize = 64;
/// Covering INVALIDATEs a violation names at most.
pub const COVERING_MAX: usize = 4;

/// One INVALIDATE in the ring.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Entry {
    /// 1-based, within the context.
    seq: u64,
    reason: InvalReason,
    start: u64,
    end: u64,
    time_us: u64,
}

/// The last [`INVAL_HISTORY`] INVALIDATEs of one context.
#[derive(Debug, PartialEq, Eq)]
pub struct InvalHistory {
    ring: [Entry; INVAL_HISTORY],
    /// INVALIDATEs recorded, ever (the next one's `seq - 1`).
    total: u64,
}

impl Default for InvalHistory {
    fn default() -> Self {
        Self::new()
    }
}

/// An INVALIDATE that covered a violating VA, as the record shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct CoveringInval {
    /// Its number within the context (1 = the first INVALIDATE).
    pub seq: u64,
    pub reason: InvalReason,
    /// The GPU VA range (clipped to the VA space): `[start, end)`.
    pub start: u64,
    pub end: u64,
    /// How long before the violation it arrived, in microseconds.
    pub before_us: u64,
}

/// What the ring says about one violating GPU VA.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct InvalContext {
    /// INVALIDATEs the context had had when the violation happened.
    pub invalidations: u64,
    /// How many of the most recent were searched (the ring's size, or
    /// fewer if the context had fewer).
    pub searched: u64,
    /// The last (at most [`COVERING_MAX`]) of those whose range covered the
    /// VA, most recent first; empty: none did.
    pub covering: Vec<CoveringInval>,
}

impl InvalHistory {
    pub const fn new() -> Self {
        const E: Entry = Entry {
            seq: 0,
            reason: InvalReason::Unknown,
            start: 0,
            end: 0,
            time_us: 0,
        };
        Self {
            ring: [E; INVAL_HISTORY],
            total: 0,
        }
    }

    /// Records an INVALIDATE of `[start, end)` for `reason` at `time_us`;
    /// returns its sequence number.
    pub fn record(&mut self, reason: InvalReason, start: u64, end: u64, time_us: u64) -> u64 {
        self.total = self.total.saturating_add(1);
        let seq = self.total;
        self.ring[(seq % INVAL_HISTORY as u64) as usize] = Entry {
            seq,
            reason,
            start,
            end,
            time_us,
        };
        seq
    }

    /// INVALIDATEs recorded so far.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The last INVALIDATEs whose range covers `va`, most recent first,
    /// for a violation at `now_us`.
    pub fn explain(&self, va: u64, now_us: u64) -> InvalContext {
        let searched = self.total.min(INVAL_HISTORY as u64);
        let covering = (0..searched)
            .map(|back| &self.ring[((self.total - back) % INVAL_HISTORY as u64) as usize])
            .filter(|e| e.start <= va && va < e.end)
            .take(COVERING_MAX)
            .map(|e| CoveringInval {
                seq: e.seq,
                reason: e.reason,
                start: e.start,
                end: e.end,
                before_us: now_us.saturating_sub(e.time_us),
            })
            .collect();
        InvalContext {
            invalidations: self.total,
            searched,
            covering,
        }
    }
}

impl fmt::Display for InvalContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.covering.is_empty() {
            return if self.invalidations == 0 {
                f.write_str("no INVALIDATE covered this va: the context had none")
            } else if self.searched == self.invalidations {
                write!(
                    f,
                    "no INVALIDATE covered this va (none of the context's {})",
                    self.invalidations
                )
            } else {
                write!(
                    f,
                    "no INVALIDATE covered this va in the last {} of {}",
                    self.searched, self.invalidations
                )
            };
        }
        write!(
            f,
            "last INVALIDATEs covering this va (of {}):",
            self.invalidations
        )?;
        for (i, c) in self.covering.iter().enumerate() {
            write!(
                f,
                "{} #{} {} [{:#x}, {:#x}) {} us before",
                if i == 0 { "" } else { "," },
                c.seq,
                c.reason,
                c.start,
                c.end,
                c.before_us
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_the_last_and_finds_covering_ones() {
        let mut h = InvalHistory::new();
        assert_eq!(
            h.explain(0x1000, 10).to_string(),
            "no INVALIDATE covered this va: the context had none"
        );
        assert_eq!(h.record(InvalReason::Clear, 0x1000, 0x3000, 100), 1);
        h.record(InvalReason::Unmap, 0x5000, 0x6000, 110);
        h.record(InvalReason::ProtectionPage, 0x2000, 0x3000, 120);
        let e = h.explain(0x2000, 200);
        assert_eq!((e.invalidations, e.searched), (3, 3));
        assert_eq!(
            e.covering
                .iter()
                .map(|c| (c.seq, c.reason, c.before_us))
                .collect::<Vec<_>>(),
            [
                (3, InvalReason::ProtectionPage, 80),
                (1, InvalReason::Clear, 100)
            ]
        );
        assert_eq!(
            e.to_string(),
            "last INVALIDATEs covering this va (of 3): #3 protection_page [0x2000, 0x3000) 80 us before, \
             #1 clear [0x1000, 0x3000) 100 us before"
        );
        // End is exclusive.
        assert!(h.explain(0x3000, 200).covering.is_empty());
        assert_eq!(
            h.explain(0x3000, 200).to_string(),
            "no INVALIDATE covered this va (none of the context's 3)"
        );
        // Wrap: 100 more of another range push the old ones out; at most
        // COVERING_MAX are named.
        for i in 0..100u64 {
            h.record(
                InvalReason::Clear,
                0x10_0000 + (i % 8) * 0x1000,
                0x10_1000 + (i % 8) * 0x1000,
                300 + i,
            );
        }
        let e = h.explain(0x2000, 1000);
        assert_eq!(
            (e.invalidations, e.searched, e.covering.len()),
            (103, 64, 0)
        );
        assert_eq!(
            e.to_string(),
            "no INVALIDATE covered this va in the last 64 of 103"
        );
        let e = h.explain(0x10_0000, 1000);
        assert_eq!(e.covering.len(), COVERING_MAX);
        assert_eq!(
            e.covering.iter().map(|c| c.seq).collect::<Vec<_>>(),
            [100, 92, 84, 76]
        );
    }
}
