//! The VGPU_SVM counters, shared by the control queue and the job workers.
//!
//! Lock-free (relaxed atomics): every context, engine and the checker adds to
//! one [`SvmCounters`]. A `generation` counter moves with every change so the
//! stats file knows when to rewrite itself. [`SvmCounters::snapshot`] gives
//! the wire form (`struct vgpu_svm_stats`, STATS) plus JSON-only extras.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use serde::Serialize;

use crate::checker::{Violation, ViolationKind};
use crate::protocol::WireStats;

/// How many violations the stats file lists (the most recent ones).
pub const RECENT: usize = 64;

/// Names of the SVM command types 1..=9, index 0 for unparseable commands.
pub const CMD_NAMES: [&str; 10] = [
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
    /// Jobs ended by ABORT, CTX_DESTROY or a device reset.
    pub jobs_aborted: AtomicU64,
    /// Jobs that failed (bad page table, address outside guest RAM).
    pub jobs_failed: AtomicU64,
    /// Pages the engine accessed (whether or not the checker ran).
    pub pages_accessed: AtomicU64,
    /// SVM commands by type ([`CMD_NAMES`]).
    pub commands: [AtomicU64; 10],
    generation: AtomicU64,
    recent: Mutex<VecDeque<Violation>>,
}

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

impl SvmCounters {
    pub fn add(&self, c: &AtomicU64, n: u64) {
        if n != 0 {
            c.fetch_add(n, Relaxed);
            self.generation.fetch_add(1, Relaxed);
        }
    }

    pub fn inc(&self, c: &AtomicU64) {
        self.add(c, 1);
    }

    pub fn count_command(&self, ty: u32) {
        let i = if (1..=9).contains(&ty) {
            ty as usize
        } else {
            0
        };
        self.inc(&self.commands[i]);
    }

    /// Counts a violation by kind and keeps it among the recent ones.
    pub fn violation(&self, v: &Violation) {
        self.inc(&self.violations);
        self.inc(match v.kind {
            ViolationKind::NoCpuPage(_) => &self.violations_no_page,
            ViolationKind::FrameMismatch => &self.violations_frame,
            ViolationKind::WriteNotWritable => &self.violations_write,
        });
        let mut r = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if r.len() == RECENT {
            r.pop_front();
        }
        r.push_back(v.clone());
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
