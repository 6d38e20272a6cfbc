//! The INVALIDATE completion guarantee: an access barrier per context.
//!
//! The promise INVALIDATE(range) makes to the driver (and through it to the
//! kernel's `mmu_interval_notifier`) is: when the answer arrives, no device
//! access that started before the command is still running, and no
//! translation of the range is cached. The mechanism, RCU-like:
//!
//! - Every device access is one *access section*: the engine enters
//!   ([`AccessBarrier::enter`], a shared `RwLock` read guard), translates
//!   (TLB or page-table walk), lets the checker walk the CPU page table,
//!   copies at most one page (4 KiB, never more, even inside a 2 MiB leaf),
//!   and leaves. Sections are short and never block on anything but guest
//!   memory.
//! - INVALIDATE (on the control-queue thread, never queued behind a job)
//!   first drops the TLB entries of the range under the context's MMU lock,
//!   so every translation made from then on walks the page table the driver
//!   has already updated; then [`AccessBarrier::wait_for_accesses`] bumps the
//!   invalidation epoch and takes the lock exclusively once (and releases it
//!   at once), which returns when every section that was in flight has left.
//!   Sections that start after that see the new epoch and the new tables.
//! - The `RwLock` is writer-preferring (std's futex implementation), so a
//!   stream of page accesses cannot starve an INVALIDATE: it waits for at
//!   most one page copy per engine, whatever the job's size.
//!
//! The epoch lets an engine that caches a translation across sections (in
//! the same 4 KiB page) know whether it is still valid: an epoch that moved
//! means "translate again".
//!
//! CTX_DESTROY, SET_AS and device reset use the same wait: after it, no
//! access of the old configuration is in flight.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{RwLock, RwLockReadGuard};

#[derive(Debug, Default)]
pub struct AccessBarrier {
    lock: RwLock<()>,
    epoch: AtomicU64,
}

/// One device access in flight (a read-side section).
pub struct AccessSection<'a> {
    _guard: RwLockReadGuard<'a, ()>,
    epoch: u64,
}

impl AccessSection<'_> {
    /// The invalidation epoch when the section began.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }
}

impl AccessBarrier {
    pub fn new() -> Self {
        Self::default()
    }

    /// Begins an access section (blocks while an invalidation is waiting).
    pub fn enter(&self) -> AccessSection<'_> {
        let guard = self.lock.read().unwrap_or_else(|p| p.into_inner());
        AccessSection {
            _guard: guard,
            epoch: self.epoch.load(Ordering::Acquire),
        }
    }

    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Bumps the epoch and returns once every access section that began
    /// before this call has ended. Returns the new epoch.
    pub fn wait_for_accesses(&self) -> u64 {
        let e = self.epoch.fetch_add(1, Ordering::AcqRel) + 1;
        drop(self.lock.write().unwrap_or_else(|p| p.into_inner()));
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    #[test]
    fn waits_for_sections_in_flight_only() {
        let b = Arc::new(AccessBarrier::new());
        let done = Arc::new(AtomicBool::new(false));
        let entered = Arc::new(AtomicBool::new(false));
        let t = {
            let (b, done, entered) = (b.clone(), done.clone(), entered.clone());
            std::thread::spawn(move || {
                let s = b.enter();
                assert_eq!(s.epoch(), 0);
                entered.store(true, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(150));
                done.store(true, Ordering::SeqCst);
                drop(s);
            })
        };
        while !entered.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        let t0 = Instant::now();
        assert_eq!(b.wait_for_accesses(), 1);
        assert!(
            done.load(Ordering::SeqCst),
            "returned while an access was in flight"
        );
        assert!(t0.elapsed() >= Duration::from_millis(50));
        t.join().unwrap();
        // Nothing in flight: returns at once; new sections see the new epoch.
        let t0 = Instant::now();
        assert_eq!(b.wait_for_accesses(), 2);
        assert!(t0.elapsed() < Duration::from_millis(100));
        assert_eq!(b.enter().epoch(), 2);
    }

    #[test]
    fn a_stream_of_sections_cannot_starve_an_invalidation() {
        let b = Arc::new(AccessBarrier::new());
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = (0..3)
            .map(|_| {
                let (b, stop) = (b.clone(), stop.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let _s = b.enter();
                        std::thread::sleep(Duration::from_micros(200));
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(20));
        let t0 = Instant::now();
        for _ in 0..20 {
            b.wait_for_accesses();
        }
        assert!(t0.elapsed() < Duration::from_secs(2));
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            w.join().unwrap();
        }
    }
}
