//! The VGPU_SVM counters, shared by the control queue and the job workers.
//!
//! Lock-free (relaxed atomics). The device has one [`SvmCounters`] (the
//! device-wide totals: STATS on context 0, the stats file) and every context
//! one of its own made with [`SvmCounters::child`] (STATS on that context):
//! the context, its engine and its checker add to the context's counters,
//! and every addition goes to the device's as well, so the device-wide
//! counters are the sum over all contexts ever made (plus what no context
//! owns: commands rejected before they reach one). A `generation` counter
//! moves with every change so the stats file knows when to rewrite itself.
//! [`SvmCounters::snapshot`] gives the wire form (`struct vgpu_svm_stats`,
//! STATS) plus JSON-only extras.
//!
//! Counters are named by a selector, `c.inc(|s| &s.jobs)`, so that one call
//! counts on both levels.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::checker::{Violation, ViolationKind};
use crate::protocol::WireStats;

/// How many violations the stats file lists (the most recent ones).
pub const RECENT: usize = 64;

/// Names of the SVM command types 1..=11, index 0 for unparseable commands.
pub const CMD_NAMES: [&str; 12] = [
    "INVALID",
    "SET_AS",
    "INVALIDATE",
    "BIND",
    "UNBIND",
    "JOB",
    "RESUME",
    "ABORT",
    "STATS",
    "NOP",
    "BIND_ARRAY",
    "UNBIND_ARRAY",
];

#[derive(Debug, Default)]
pub struct SvmCounters {
    pub accesses_checked: AtomicU64,
    pub violations: AtomicU64,
    pub violations_no_page: AtomicU64,
    pub violations_frame: AtomicU64,
    pub violations_write: AtomicU64,
    pub faults: AtomicU64,
    pub invalidations: AtomicU64,
    pub tlb_hits: AtomicU64,
    pub tlb_misses: AtomicU64,
    pub jobs: AtomicU64,
    pub bytes: AtomicU64,
    pub errors: AtomicU64,
    /// CPU page tables the checker could not walk (not violations).
    pub cpu_walk_errors: AtomicU64,
    /// Pages accessed without a CPU-table check (checker off).
    pub unchecked_accesses: AtomicU64,
    /// Accesses to frames missing from the guest kernel's direct map.
    pub violations_no_direct_map: AtomicU64,
    /// Jobs ended by ABORT, CTX_DESTROY or a device reset.
    pub jobs_aborted: AtomicU64,
    /// Jobs that failed (bad page table, address outside guest RAM).
    pub jobs_failed: AtomicU64,
    /// Pages the engine accessed (whether or not the checker ran).
    pub pages_accessed: AtomicU64,
    /// SVM commands by type ([`CMD_NAMES`]).
    pub commands: [AtomicU64; 12],
    generation: AtomicU64,
    recent: Mutex<VecDeque<Violation>>,
    /// The device's counters, for a context's (every addition goes there
    /// too).
    parent: Option<Arc<SvmCounters>>,
}

/// Names one counter of a [`SvmCounters`].
pub type Select = fn(&SvmCounters) -> &AtomicU64;

/// Everything the stats file shows about the SVM side.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct SvmSnapshot {
    #[serde(flatten)]
    pub wire: WireStats,
    pub jobs_aborted: u64,
    pub jobs_failed: u64,
    pub pages_accessed: u64,
    pub commands: std::collections::BTreeMap<&'static str, u64>,
    pub violations_recent: Vec<Violation>,
}

/// One context's counters in the stats file (`svm_contexts`).
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct ContextSnapshot {
    pub debug_name: String,
    #[serde(flatten)]
    pub wire: WireStats,
    pub jobs_aborted: u64,
    pub jobs_failed: u64,
    pub pages_accessed: u64,
}

impl SvmCounters {
    /// A context's counters: every addition also goes to `device`'s.
    pub fn child(device: Arc<SvmCounters>) -> Self {
        Self {
            parent: Some(device),
            ..Self::default()
        }
    }

    /// Adds `n` to the counter `sel` names, here and in the device's.
    pub fn add(&self, sel: Select, n: u64) {
        if n != 0 {
            sel(self).fetch_add(n, Relaxed);
            self.generation.fetch_add(1, Relaxed);
            if let Some(p) = &self.parent {
                p.add(sel, n);
            }
        }
    }

    pub fn inc(&self, sel: Select) {
        self.add(sel, 1);
    }

    pub fn count_command(&self, ty: u32) {
        const BY_TYPE: [Select; 12] = [
            |s| &s.commands[0],
            |s| &s.commands[1],
            |s| &s.commands[2],
            |s| &s.commands[3],
            |s| &s.commands[4],
            |s| &s.commands[5],
            |s| &s.commands[6],
            |s| &s.commands[7],
            |s| &s.commands[8],
            |s| &s.commands[9],
            |s| &s.commands[10],
            |s| &s.commands[11],
        ];
        let i = if (1..BY_TYPE.len() as u32).contains(&ty) {
            ty as usize
        } else {
            0
        };
        self.inc(BY_TYPE[i]);
    }

    /// Counts a violation by kind and keeps it among the recent ones (here
    /// and in the device's).
    pub fn violation(&self, v: &Violation) {
        self.inc(|s| &s.violations);
        self.inc(match v.kind {
            ViolationKind::NoCpuPage(_) => |s| &s.violations_no_page,
            ViolationKind::FrameMismatch => |s| &s.violations_frame,
            ViolationKind::WriteNotWritable => |s| &s.violations_write,
            ViolationKind::NoDirectMap(_) => |s| &s.violations_no_direct_map,
        });
        let mut c = Some(self);
        while let Some(s) = c {
            let mut r = s.recent.lock().unwrap_or_else(|p| p.into_inner());
            if r.len() == RECENT {
                r.pop_front();
            }
            r.push_back(v.clone());
            drop(r);
            c = s.parent.as_deref();
        }
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Relaxed)
    }

    pub fn wire(&self) -> WireStats {
        let g = |c: &AtomicU64| c.load(Relaxed);
        WireStats {
            accesses_checked: g(&self.accesses_checked),
            violations: g(&self.violations),
            violations_no_page: g(&self.violations_no_page),
            violations_frame: g(&self.violations_frame),
            violations_write: g(&self.violations_write),
            faults: g(&self.faults),
            invalidations: g(&self.invalidations),
            tlb_hits: g(&self.tlb_hits),
            tlb_misses: g(&self.tlb_misses),
            jobs: g(&self.jobs),
            bytes: g(&self.bytes),
            errors: g(&self.errors),
            cpu_walk_errors: g(&self.cpu_walk_errors),
            unchecked_accesses: g(&self.unchecked_accesses),
            violations_no_direct_map: g(&self.violations_no_direct_map),
        }
    }

    /// The stats file's view of a context's counters.
    pub fn context_snapshot(&self, debug_name: &str) -> ContextSnapshot {
        let g = |c: &AtomicU64| c.load(Relaxed);
        ContextSnapshot {
            debug_name: debug_name.to_owned(),
            wire: self.wire(),
            jobs_aborted: g(&self.jobs_aborted),
            jobs_failed: g(&self.jobs_failed),
            pages_accessed: g(&self.pages_accessed),
        }
    }

    pub fn snapshot(&self) -> SvmSnapshot {
        let g = |c: &AtomicU64| c.load(Relaxed);
        SvmSnapshot {
            wire: self.wire(),
            jobs_aborted: g(&self.jobs_aborted),
            jobs_failed: g(&self.jobs_failed),
            pages_accessed: g(&self.pages_accessed),
            commands: CMD_NAMES
                .iter()
                .zip(&self.commands)
                .map(|(n, c)| (*n, g(c)))
                .filter(|&(_, v)| v != 0)
                .collect(),
            violations_recent: self
                .recent
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .cloned()
                .collect(),
        }
    }
}

/// The hot-path counters of one job, kept by its worker in plain integers
/// and added to the context's (and so the device's) [`SvmCounters`] by
/// [`JobTally::publish`]: at the end of every run of the job (completion,
/// fault, failure, abort or preemption: before its answer is sent, so a
/// STATS after the answer sees every access of the job), after the first
/// access of each run (so an observer sees a running job move), and before
/// a violation is counted (so the device never shows more violations than
/// checked accesses). Violations themselves are counted at once
/// ([`SvmCounters::violation`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JobTally {
    pub accesses_checked: u64,
    pub unchecked_accesses: u64,
    pub cpu_walk_errors: u64,
    pub tlb_hits: u64,
    pub tlb_misses: u64,
    pub pages_accessed: u64,
    pub bytes: u64,
}

impl JobTally {
    /// Adds everything to `c` and starts from zero.
    pub fn publish(&mut self, c: &SvmCounters) {
        let t = std::mem::take(self);
        c.add(|s| &s.accesses_checked, t.accesses_checked);
        c.add(|s| &s.unchecked_accesses, t.unchecked_accesses);
        c.add(|s| &s.cpu_walk_errors, t.cpu_walk_errors);
        c.add(|s| &s.tlb_hits, t.tlb_hits);
        c.add(|s| &s.tlb_misses, t.tlb_misses);
        c.add(|s| &s.pages_accessed, t.pages_accessed);
        c.add(|s| &s.bytes, t.bytes);
    }

    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

#[cfg(test)]
mod tally_tests {
    use super::*;

    #[test]
    fn publish_adds_to_context_and_device_once() {
        let dev = Arc::new(SvmCounters::default());
        let ctx = SvmCounters::child(dev.clone());
        let mut t = JobTally {
            accesses_checked: 3,
            pages_accessed: 4,
            bytes: 4096,
            tlb_hits: 2,
            tlb_misses: 2,
            ..Default::default()
        };
        let g = dev.generation();
        t.publish(&ctx);
        assert!(t.is_empty());
        t.publish(&ctx); // nothing left: no change
        for w in [ctx.wire(), dev.wire()] {
            assert_eq!(
                (w.accesses_checked, w.bytes, w.tlb_hits, w.tlb_misses),
                (3, 4096, 2, 2)
            );
        }
        assert_eq!(ctx.snapshot().pages_accessed, 4);
        assert!(dev.generation() > g, "the stats file sees the change");
    }
}
