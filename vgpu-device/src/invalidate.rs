//! The INVALIDATE completion guarantee: an access barrier per context.
//!
//! The promise INVALIDATE(range) makes to the driver (and through it to the
//! kernel's `mmu_interval_notifier`) is: when the answer arrives, no device
//! access that started before the command is still running, and no
//! translation of the range is cached. The mechanism, RCU-like:
//!
//! - Every *run* of device accesses is one *access section*: the engine
//!   enters ([`AccessBarrier::enter`], counted under the current epoch),
//!   translates (TLB or page-table walk), lets the checker walk the CPU page
//!   table, copies at most [`crate::engine::RUN_PAGES`] page-sized steps
//!   (each within one 4 KiB page, even inside a 2 MiB leaf), lets the
//!   checker walk the CPU table again, and leaves. Sections are short and
//!   never block on anything but guest memory.
//! - INVALIDATE (on the control-queue thread, never queued behind a job)
//!   first drops the TLB entries of the range under the context's MMU lock,
//!   so every translation made from then on walks the page table the driver
//!   has already updated; then it bumps the invalidation epoch. Sections
//!   count themselves under the epoch they began in; the INVALIDATE is done
//!   when no section of an older epoch is left. Sections that start after
//!   the bump see the new epoch and the new tables, and are not waited for,
//!   so a stream of accesses cannot starve an INVALIDATE: it waits for at
//!   most one run of page copies per engine, whatever the job's size.
//! - That wait does not block the control queue:
//!   [`AccessBarrier::defer_until_drained`] parks the answer, and the last
//!   older section to end runs it (on the job's worker, after leaving the
//!   section, holding no lock). Other contexts' commands, and this
//!   context's, go on meanwhile; the device answers out of order anyway. At
//!   most [`MAX_DEFERRED`] answers are parked per context; beyond that the
//!   control thread waits (bounded: one run of page accesses).
//!
//! The epoch lets an engine that caches a translation across sections (in
//! the same 4 KiB page) know whether it is still valid: an epoch that moved
//! means "translate again".
//!
//! SET_AS answers the same way. CTX_DESTROY and device reset wait on the
//! control thread ([`AccessBarrier::wait_for_accesses`]): when they return,
//! no access of the old configuration is in flight.

use std::collections::BTreeMap;
use std::sync::{Condvar, Mutex, MutexGuard};

/// Most answers parked per context (see the module doc).
pub const MAX_DEFERRED: usize = 256;

type Waiter = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct State {
    epoch: u64,
    /// Sections in flight by the epoch they began in.
    in_flight: BTreeMap<u64, usize>,
    /// Parked answers: run once no section of an epoch below the key's is left.
    deferred: Vec<(u64, Waiter)>,
    /// Threads blocked in `wait_for_accesses`.
    sync_waiters: usize,
}

impl State {
    /// Has every section that began before epoch `target` ended?
    fn drained(&self, target: u64) -> bool {
        self.in_flight.keys().next().is_none_or(|&e| e >= target)
    }
}

#[derive(Default)]
pub struct AccessBarrier {
    state: Mutex<State>,
    cv: Condvar,
}

impl std::fmt::Debug for AccessBarrier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.lock();
        f.debug_struct("AccessBarrier")
            .field("epoch", &st.epoch)
            .field("in_flight", &st.in_flight)
            .field("deferred", &st.deferred.len())
            .finish()
    }
}

/// One device access in flight (a read-side section).
pub struct AccessSection<'a> {
    barrier: &'a AccessBarrier,
    epoch: u64,
}

impl AccessSection<'_> {
    /// The invalidation epoch when the section began.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }
}

impl Drop for AccessSection<'_> {
    fn drop(&mut self) {
        let b = self.barrier;
        let ready: Vec<Waiter> = {
            let mut st = b.lock();
            if let Some(n) = st.in_flight.get_mut(&self.epoch) {
                *n -= 1;
                if *n == 0 {
                    st.in_flight.remove(&self.epoch);
                }
            }
            if st.sync_waiters > 0 {
                b.cv.notify_all();
            }
            let mut ready = Vec::new();
            let mut i = 0;
            while i < st.deferred.len() {
                if st.drained(st.deferred[i].0) {
                    ready.push(st.deferred.swap_remove(i).1);
                } else {
                    i += 1;
                }
            }
            ready
        };
        // Outside the lock (the answers take the vring lock).
        for w in ready {
            w();
        }
    }
}

impl AccessBarrier {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Begins an access section (never blocks on an invalidation).
    pub fn enter(&self) -> AccessSection<'_> {
        let mut st = self.lock();
        let epoch = st.epoch;
        *st.in_flight.entry(epoch).or_default() += 1;
        AccessSection {
            barrier: self,
            epoch,
        }
    }

    pub fn epoch(&self) -> u64 {
        self.lock().epoch
    }

    /// Sections in flight now.
    pub fn in_flight(&self) -> usize {
        self.lock().in_flight.values().sum()
    }

    /// Answers parked now.
    pub fn deferred(&self) -> usize {
        self.lock().deferred.len()
    }

    fn bump(st: &mut State) -> u64 {
        st.epoch = st.epoch.wrapping_add(1);
        st.epoch
    }

    fn wait_locked<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        target: u64,
    ) -> MutexGuard<'a, State> {
        st.sync_waiters += 1;
        while !st.drained(target) {
            st = self.cv.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        st.sync_waiters -= 1;
        st
    }

    /// Bumps the epoch and returns once every access section that began
    /// before this call has ended. Returns the new epoch.
    pub fn wait_for_accesses(&self) -> u64 {
        let mut st = self.lock();
        let target = Self::bump(&mut st);
        drop(self.wait_locked(st, target));
        target
    }

    /// Bumps the epoch. If sections that began before are in flight, calls
    /// `make` (under the barrier's lock: it must not block) and parks what
    /// it returns, to be run when the last of them ends; returns true. If
    /// none are (or too many answers are parked already: then this waits
    /// for them here), returns false and `make` is not called.
    pub fn defer_until_drained(&self, make: &mut dyn FnMut() -> Waiter) -> bool {
        let mut st = self.lock();
        let target = Self::bump(&mut st);
        if st.drained(target) {
            return false;
        }
        if st.deferred.len() >= MAX_DEFERRED {
            drop(self.wait_locked(st, target));
            return false;
        }
        st.deferred.push((target, make()));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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
        assert!(t0.elapsed() < Duration::from_secs(10));
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

    /// A parked answer runs when the last section older than it ends (not
    /// before, and not waiting for sections that began after it), on the
    /// thread that ends it; nothing in flight: nothing is parked.
    #[test]
    fn deferred_answer_runs_when_older_sections_end() {
        let b = AccessBarrier::new();
        let ran = Arc::new(AtomicUsize::new(0));
        let mut make = || -> Waiter {
            let ran = ran.clone();
            Box::new(move || {
                ran.fetch_add(1, Ordering::SeqCst);
            })
        };
        assert!(!b.defer_until_drained(&mut make), "nothing was in flight");
        let s1 = b.enter();
        let s2 = b.enter();
        assert!(b.defer_until_drained(&mut make));
        // A section that begins now neither blocks nor is waited for.
        let s3 = b.enter();
        assert_eq!(s3.epoch(), s1.epoch() + 1);
        assert!(b.defer_until_drained(&mut make));
        assert_eq!((b.in_flight(), b.deferred()), (3, 2));
        drop(s1);
        assert_eq!(ran.load(Ordering::SeqCst), 0);
        drop(s2);
        assert_eq!(ran.load(Ordering::SeqCst), 1, "the first answer");
        drop(s3);
        assert_eq!(ran.load(Ordering::SeqCst), 2);
        assert_eq!(b.deferred(), 0);
        // Past the cap, the caller waits instead of parking (here: returns
        // at once once the section in flight ends on another thread).
        let b = AccessBarrier::new();
        let s = b.enter();
        for _ in 0..MAX_DEFERRED {
            assert!(b.defer_until_drained(&mut make));
        }
        std::thread::scope(|sc| {
            let (tx, rx) = std::sync::mpsc::channel::<()>();
            sc.spawn(move || {
                rx.recv().unwrap();
                drop(s);
            });
            let waiter = sc.spawn(|| b.defer_until_drained(&mut make));
            tx.send(()).unwrap();
            assert!(!waiter.join().unwrap());
        });
        assert_eq!(ran.load(Ordering::SeqCst), 2 + MAX_DEFERRED);
    }
}
