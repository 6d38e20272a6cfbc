//! The coherence checker: on every page a device access touches, compare
//! the GPU translation with the guest CPU's own page table.
//!
//! Given the GPU's guest physical address G for an access and the CPU VA it
//! mirrors, walk the CPU page table ([`x86::walk`]) to C and classify:
//! - no CPU page (not present, PROT_NONE, swap or migration entry) -> violation;
//! - C != G (at 4 KiB granularity) -> violation (a stale page);
//! - a write while the CPU entry is not writable at every level -> violation
//!   (a device write into a COW-shared or read-only page).
//!
//! Then, when the guest gave its kernel's direct-map base (SET_AS
//! `direct_map_base`, [`Checker::set_direct_map`]), [`Checker::check_frame`]
//! walks the same CPU root (an x86-64 mm's top-level table maps the kernel
//! half too) at `base + G`: a frame that is not mapped present there is one
//! the kernel removed from its direct map (memfd_secret's
//! set_direct_map_invalid_noflush, or otherwise unmappable) and no device
//! may reach it -> violation, whatever the VMA was. Nothing is cached: the
//! direct map changes without any INVALIDATE (a secret page is unmapped
//! from it at fault time, before the user PTE exists), so every access
//! walks it afresh (4 or 5 loads, next to a copy of up to 4 KiB).
//!
//! The walks of the mirrored VA are different: each is done twice, before
//! the data moves and after ([`Checker::check_in`] for every access of a
//! run, then again for every clean one), so within one run phase the
//! upper levels of a 2 MiB span are read once ([`x86::RunWalks`]) and each
//! access reads its own 4 KiB entry: a change of any level during the run
//! is seen by the walks after the copy, which read everything again.
//!
//! A CPU table that cannot be walked (outside guest memory, malformed) is
//! counted separately: it is a broken setup, not evidence about coherence.
//! Violations are counted, logged with full detail, and the most recent
//! ones kept for inspection.

pub mod x86;

use std::collections::VecDeque;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use log::warn;
use serde::Serialize;

use crate::history::{InvalContext, InvalHistory};
use crate::mem::PhysMem;
use crate::mmu::Access;
use x86::{CpuWalkError, Levels, NoPage, RunWalks};

/// Granularity at which frames are compared.
pub const CHECK_PAGE: u64 = 4096;
/// How many violations are kept in [`Checker::recent`].
pub const RECENT_VIOLATIONS: usize = 64;

/// What is wrong with an access.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ViolationKind {
    /// The CPU has no page at the VA.
    NoCpuPage(NoPage),
    /// The CPU maps a different frame.
    FrameMismatch,
    /// The device writes a page the CPU may not write.
    WriteNotWritable,
    /// The frame is not mapped in the guest kernel's direct map (secret
    /// memory or otherwise unmappable): no device may reach it.
    NoDirectMap(NoPage),
}

/// One detected violation, with everything needed to debug it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub kind: ViolationKind,
    pub ctx: u32,
    pub job: u64,
    pub access: Access,
    /// GPU VA of the access.
    pub gpu_va: u64,
    /// CPU VA that the access mirrors (== `gpu_va` outside bindings).
    pub va: u64,
    /// Guest physical address the GPU used.
    pub gpu_phys: u64,
    /// Guest physical address the CPU maps there, if any.
    pub cpu_phys: Option<u64>,
    /// The CPU leaf (or non-present) entry (for [`ViolationKind::NoDirectMap`]:
    /// the direct map's entry).
    pub cpu_entry: u64,
    /// For [`ViolationKind::NoDirectMap`]: the kernel VA of the frame in
    /// the direct map (`direct_map_base + gpu_phys`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direct_map_va: Option<u64>,
    /// Unix time in microseconds.
    pub time_us: u64,
    /// The CPU page-table change that must have happened without the
    /// device being told ([`hint`]).
    pub hint: String,
    /// The context's last INVALIDATEs that covered `gpu_va` (none when the
    /// checker runs without a context's history, as in its unit tests).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invalidations: Option<InvalContext>,
}

/// Swap types of the non-present x86-64 entries that are not swap-outs,
/// counted down from the top of the 5-bit type (`__swp_type`: bits 59..63)
/// for the project's guest config (CONFIG_MIGRATION=y,
/// CONFIG_DEVICE_PRIVATE=y, CONFIG_MEMORY_FAILURE=n: MAX_SWAPFILES 25):
/// 31 a PTE marker, 28..30 device-private/exclusive, 25..27 migration.
fn swap_entry_kind(entry: u64) -> (u64, &'static str) {
    let ty = entry >> 59;
    let what = match ty {
        31 => "a PTE marker (uffd-wp, guard region or poison)",
        28..=30 => "a device-private or device-exclusive entry",
        25..=27 => "a migration entry: page migrating",
        _ => "a swap entry: page swapped out",
    };
    (ty, what)
}

/// A human reading of a violation: which CPU page-table change, done
/// without a notifier reaching the device, explains what the checker saw.
pub fn hint(kind: ViolationKind, cpu_entry: u64) -> String {
    match kind {
        ViolationKind::NoCpuPage(NoPage::Empty) => {
            "CPU PTE cleared (unmap/zap/reap) without a notifier".into()
        }
        ViolationKind::NoCpuPage(NoPage::ProtNone) => {
            "CPU PTE made PROT_NONE (mprotect or NUMA hinting) without a notifier".into()
        }
        ViolationKind::NoCpuPage(NoPage::SwapOrMigration) => {
            let (ty, what) = swap_entry_kind(cpu_entry);
            format!(
                "CPU PTE non-present, swap type {ty}, {what} (page swapped out or migrating) without a notifier"
            )
        }
        ViolationKind::FrameMismatch => "CPU maps another frame: page replaced (COW, migration, collapse, KSM, zero-page) without a notifier".into(),
        ViolationKind::WriteNotWritable => "CPU PTE write-protected (mkclean, mprotect, COW/fork, KSM, uffd-wp) without a notifier".into(),
        ViolationKind::NoDirectMap(_) => {
            "frame not in the kernel's direct map (memfd_secret or otherwise unmappable)".into()
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "COHERENCE VIOLATION {:?}: ctx {} job {} {} gpu va {:#x} cpu va {:#x} G {:#x} C ",
            self.kind, self.ctx, self.job, self.access, self.gpu_va, self.va, self.gpu_phys
        )?;
        match self.cpu_phys {
            Some(c) => write!(f, "{c:#x}")?,
            None => f.write_str("none")?,
        }
        if let Some(d) = self.direct_map_va {
            write!(f, " direct map va {d:#x}")?;
        }
        write!(
            f,
            " (cpu entry {:#x}) at {} us; hint: {}",
            self.cpu_entry, self.time_us, self.hint
        )?;
        if let Some(h) = &self.invalidations {
            write!(f, "; {h}")?;
        }
        Ok(())
    }
}

/// Checker counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CheckerStats {
    pub accesses_checked: u64,
    pub violations: u64,
    pub no_cpu_page: u64,
    pub frame_mismatch: u64,
    pub write_not_writable: u64,
    /// Frames missing from the guest kernel's direct map.
    pub no_direct_map: u64,
    /// CPU tables that could not be walked (not counted as violations).
    pub cpu_walk_errors: u64,
}

/// The verdict on one access.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    Violation(Violation),
    /// The CPU page table could not be walked.
    CpuWalkError(CpuWalkError),
}

/// Where the access came from, for the violation record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AccessInfo<'a> {
    pub ctx: u32,
    pub job: u64,
    /// GPU VA of the access (for the record; the walk uses the CPU VA).
    pub gpu_va: u64,
    /// The context's recent INVALIDATEs: read only if the access is a
    /// violation, whose record then names those that covered `gpu_va`.
    pub history: Option<&'a InvalHistory>,
}

/// Violations logged in full per checker before the log is thinned out to
/// one line every [`LOG_EVERY`] (all are counted, the last
/// [`RECENT_VIOLATIONS`] kept).
pub const LOG_FIRST: u64 = 32;
pub const LOG_EVERY: u64 = 1024;

/// The checker for one context (one CPU address space).
#[derive(Debug)]
pub struct Checker {
    cpu_root: u64,
    levels: Levels,
    /// The guest kernel's `page_offset_base`, when known.
    direct_map: Option<u64>,
    pub stats: CheckerStats,
    recent: VecDeque<Violation>,
}

/// Unix time in microseconds (violation and INVALIDATE times).
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

impl Checker {
    /// `cpu_root`: guest physical address of the mm's top-level table;
    /// `levels`: 4 or 5.
    pub fn new(cpu_root: u64, levels: Levels) -> Self {
        Self {
            cpu_root,
            levels,
            direct_map: None,
            stats: CheckerStats::default(),
            recent: VecDeque::new(),
        }
    }

    /// Turns the direct-map check on (`Some(page_offset_base)`) or off.
    pub fn set_direct_map(&mut self, base: Option<u64>) {
        self.direct_map = base;
    }

    pub fn direct_map(&self) -> Option<u64> {
        self.direct_map
    }

    pub fn recent(&self) -> impl Iterator<Item = &Violation> {
        self.recent.iter()
    }

    /// Checks one device access: the GPU used guest physical `gpu_phys` for
    /// CPU VA `va`.
    pub fn check<M: PhysMem + ?Sized>(
        &mut self,
        mem: &M,
        info: AccessInfo,
        va: u64,
        gpu_phys: u64,
        access: Access,
    ) -> Verdict {
        let mut walks = self.run_walks();
        self.check_in(mem, &mut walks, info, va, gpu_phys, access)
    }

    /// The walks of one run phase of this checker's CPU table (see
    /// [`RunWalks`]: one before a run's data moves, a fresh one after).
    pub fn run_walks(&self) -> RunWalks {
        RunWalks::new(self.cpu_root, self.levels)
    }

    /// [`Checker::check`] as one access of a run whose walks are `walks`.
    pub fn check_in<M: PhysMem + ?Sized>(
        &mut self,
        mem: &M,
        walks: &mut RunWalks,
        info: AccessInfo,
        va: u64,
        gpu_phys: u64,
        access: Access,
    ) -> Verdict {
        self.stats.accesses_checked += 1;
        let (kind, cpu_phys, cpu_entry) = match walks.walk(mem, va) {
            Err(CpuWalkError::NoPage { kind, entry, .. }) => {
                (ViolationKind::NoCpuPage(kind), None, entry)
            }
            Err(e) => return self.walk_error(info, va, e),
            Ok(t) => {
                let c = t.phys(va);
                if c / CHECK_PAGE != gpu_phys / CHECK_PAGE {
                    (ViolationKind::FrameMismatch, Some(c), t.leaf)
                } else if access == Access::Write && !t.writable {
                    (ViolationKind::WriteNotWritable, Some(c), t.leaf)
                } else {
                    return Verdict::Ok;
                }
            }
        };
        let time_us = now_us();
        self.violation(Violation {
            kind,
            ctx: info.ctx,
            job: info.job,
            access,
            gpu_va: info.gpu_va,
            va,
            gpu_phys,
            cpu_phys,
            cpu_entry,
            direct_map_va: None,
            time_us,
            hint: hint(kind, cpu_entry),
            invalidations: info.history.map(|h| h.explain(info.gpu_va, time_us)),
        })
    }

    /// Checks that guest frame `gpu_phys`, which a device access (of CPU
    /// VA `va`, for the record) touches, is mapped in the guest kernel's
    /// direct map: [`Verdict::Ok`] without a direct-map base. Called after
    /// [`Checker::check`] for the same access (it is not counted in
    /// `accesses_checked` again). A wrapping or non-canonical direct-map
    /// address, or a table outside guest memory, is a walk error.
    pub fn check_frame<M: PhysMem + ?Sized>(
        &mut self,
        mem: &M,
        info: AccessInfo,
        va: u64,
        gpu_phys: u64,
        access: Access,
    ) -> Verdict {
        let Some(base) = self.direct_map else {
            return Verdict::Ok;
        };
        let frame = gpu_phys & !(CHECK_PAGE - 1);
        let dva = match x86::direct_map_va(base, frame) {
            Ok(d) => d,
            Err(e) => return self.walk_error(info, base, e),
        };
        let (kind, entry) = match x86::walk(mem, self.cpu_root, self.levels, dva) {
            Ok(_) => return Verdict::Ok,
            Err(CpuWalkError::NoPage { kind, entry, .. }) => (kind, entry),
            Err(e) => return self.walk_error(info, dva, e),
        };
        let time_us = now_us();
        self.violation(Violation {
            kind: ViolationKind::NoDirectMap(kind),
            ctx: info.ctx,
            job: info.job,
            access,
            gpu_va: info.gpu_va,
            va,
            gpu_phys,
            cpu_phys: None,
            cpu_entry: entry,
            direct_map_va: Some(dva),
            time_us,
            hint: hint(ViolationKind::NoDirectMap(kind), entry),
            invalidations: info.history.map(|h| h.explain(info.gpu_va, time_us)),
        })
    }

    /// Counts and (rate limited) logs a CPU table that could not be walked.
    fn walk_error(&mut self, info: AccessInfo<'_>, va: u64, e: CpuWalkError) -> Verdict {
        self.stats.cpu_walk_errors += 1;
        let n = self.stats.cpu_walk_errors;
        if n <= LOG_FIRST || n.is_multiple_of(LOG_EVERY) {
            crate::guest_warn!(
                "checker",
                "checker: ctx {} va {va:#x}: {e} [walk error {n}]",
                info.ctx
            );
        }
        Verdict::CpuWalkError(e)
    }

    /// Counts, logs (the first [`LOG_FIRST`], then one in [`LOG_EVERY`])
    /// and keeps a violation.
    fn violation(&mut self, v: Violation) -> Verdict {
        self.stats.violations += 1;
        match v.kind {
            ViolationKind::NoCpuPage(_) => self.stats.no_cpu_page += 1,
            ViolationKind::FrameMismatch => self.stats.frame_mismatch += 1,
            ViolationKind::WriteNotWritable => self.stats.write_not_writable += 1,
            ViolationKind::NoDirectMap(_) => self.stats.no_direct_map += 1,
        }
        let n = self.stats.violations;
        if n <= LOG_FIRST || n.is_multiple_of(LOG_EVERY) {
            warn!("{v} [violation {n} of ctx {}]", v.ctx);
        }
        if self.recent.len() == RECENT_VIOLATIONS {
            self.recent.pop_front();
        }
        self.recent.push_back(v.clone());
        Verdict::Violation(v)
    }
}

#[cfg(test)]
mod tests {
    use super::x86::tests::CpuBuilder;
    use super::*;
    use crate::layout::x86::{PRESENT, PROTNONE, PS, RW};
    use crate::mem::testmem::{self, get, put};
    use crate::mmu::tests::Builder;
    use crate::mmu::Mmu;

    const INFO: AccessInfo = AccessInfo {
        ctx: 1,
        job: 7,
        gpu_va: 0,
        history: None,
    };

    #[test]
    fn classification() {
        let m = testmem::new(16 << 20);
        let mut cpu = CpuBuilder::new(&m, Levels::Four, 0x10_0000);
        let a = cpu.map_4k(0x1000, 0x80_0000, true);
        cpu.map_4k(0x2000, 0x80_1000, false);
        let mut c = Checker::new(cpu.root, Levels::Four);

        assert_eq!(
            c.check(&m, INFO, 0x1010, 0x80_0010, Access::Write),
            Verdict::Ok
        );
        assert_eq!(
            c.check(&m, INFO, 0x2010, 0x80_1010, Access::Read),
            Verdict::Ok
        );
        // Same 4 KiB frame, different offset is still the same page.
        assert_eq!(
            c.check(&m, INFO, 0x1000, 0x80_0ff8, Access::Read),
            Verdict::Ok
        );

        let Verdict::Violation(v) = c.check(&m, INFO, 0x2000, 0x80_1000, Access::Write) else {
            panic!()
        };
        assert_eq!(v.kind, ViolationKind::WriteNotWritable);
        let Verdict::Violation(v) = c.check(&m, INFO, 0x1000, 0x90_0000, Access::Read) else {
            panic!()
        };
        assert_eq!(v.kind, ViolationKind::FrameMismatch);
        assert_eq!(v.cpu_phys, Some(0x80_0000));
        assert_eq!((v.ctx, v.job, v.va), (1, 7, 0x1000));
        put(&m, a, get(&m, a) & !PRESENT | PROTNONE);
        let Verdict::Violation(v) = c.check(&m, INFO, 0x1000, 0x80_0000, Access::Read) else {
            panic!()
        };
        assert_eq!(v.kind, ViolationKind::NoCpuPage(NoPage::ProtNone));
        let Verdict::Violation(v) = c.check(&m, INFO, 0x5000_0000, 0x80_0000, Access::Read) else {
            panic!()
        };
        assert_eq!(v.kind, ViolationKind::NoCpuPage(NoPage::Empty));
        assert!(v.to_string().contains("COHERENCE VIOLATION"));

        let s = c.stats;
        assert_eq!(s.accesses_checked, 7);
        assert_eq!(s.violations, 4);
        assert_eq!(
            (s.write_not_writable, s.frame_mismatch, s.no_cpu_page),
            (1, 1, 2)
        );
        assert_eq!(c.recent().count(), 4);
    }

    #[test]
    fn hints_name_the_cpu_change() {
        use ViolationKind::*;
        assert!(hint(NoCpuPage(NoPage::Empty), 0).starts_with("CPU PTE cleared"));
        assert!(hint(NoCpuPage(NoPage::ProtNone), 0x100).contains("PROT_NONE"));
        // __swp_entry(type, offset): the type in bits 59..63.
        let swp = |ty: u64| hint(NoCpuPage(NoPage::SwapOrMigration), ty << 59 | 0x3400);
        assert!(swp(0).contains("swap type 0, a swap entry"));
        assert!(swp(27).contains("swap type 27, a migration entry"));
        assert!(swp(29).contains("device-private"));
        assert!(swp(31).contains("PTE marker"));
        assert!(hint(FrameMismatch, 0x8000_0025).contains("page replaced (COW, migration"));
        assert!(hint(WriteNotWritable, 0x8000_0025).starts_with("CPU PTE write-protected (mkclean"));
        assert!(hint(NoDirectMap(NoPage::Empty), 0).contains("direct map"));
    }

    #[test]
    fn walk_errors_are_not_violations() {
        let m = testmem::new(1 << 20);
        let mut c = Checker::new(1 << 40, Levels::Five);
        assert!(matches!(
            c.check(&m, INFO, 0x1000, 0x1000, Access::Read),
            Verdict::CpuWalkError(_)
        ));
        assert!(matches!(
            c.check(&m, INFO, 1 << 60, 0x1000, Access::Read),
            Verdict::CpuWalkError(CpuWalkError::NonCanonical { .. })
        ));
        assert_eq!((c.stats.violations, c.stats.cpu_walk_errors), (0, 2));
    }

    /// A user page at `va` -> `frame` and a 2 MiB direct map of 16 MiB of
    /// RAM at `base`, in the same root.
    fn with_direct_map(
        m: &vm_memory::GuestMemoryMmap,
        levels: Levels,
        base: u64,
    ) -> CpuBuilder<'_> {
        let mut cpu = CpuBuilder::new(m, levels, 0x10_0000);
        cpu.map_direct_map(base, 16 << 20, false);
        for i in 0..4 {
            cpu.map_4k(0x7f00_0000_0000 + i * 4096, 0x80_0000 + i * 4096, true);
        }
        cpu
    }

    #[test]
    fn frames_removed_from_the_direct_map_are_violations() {
        use super::x86::tests::{DIRECT_MAP_4, DIRECT_MAP_5};
        for (levels, base) in [(Levels::Four, DIRECT_MAP_4), (Levels::Five, DIRECT_MAP_5)] {
            let m = testmem::new(16 << 20);
            let mut cpu = with_direct_map(&m, levels, base);
            let va = 0x7f00_0000_0000u64;
            let mut c = Checker::new(cpu.root, levels);
            c.set_direct_map(Some(base));
            assert_eq!(c.direct_map(), Some(base));
            // Mapped in the direct map (a 2 MiB leaf): fine.
            for i in 0..4 {
                let (v, g) = (va + i * 4096 + 8, 0x80_0008 + i * 4096);
                assert_eq!(c.check(&m, INFO, v, g, Access::Write), Verdict::Ok);
                assert_eq!(c.check_frame(&m, INFO, v, g, Access::Write), Verdict::Ok);
            }
            // memfd_secret: the kernel splits the 2 MiB leaf and clears the
            // frame's PTE; the user mapping is as good as ever.
            cpu.remove_from_direct_map(base, 0x80_1000);
            assert_eq!(
                c.check(&m, INFO, va + 0x1000, 0x80_1010, Access::Read),
                Verdict::Ok
            );
            let Verdict::Violation(v) =
                c.check_frame(&m, INFO, va + 0x1000, 0x80_1010, Access::Read)
            else {
                panic!("frame outside the direct map not caught")
            };
            // GLOBAL stays in the cleared entry: Linux reads it as PROTNONE.
            assert_eq!(v.kind, ViolationKind::NoDirectMap(NoPage::ProtNone));
            assert_eq!(v.direct_map_va, Some(base + 0x80_1000));
            assert_eq!(
                (v.va, v.gpu_phys, v.cpu_phys),
                (va + 0x1000, 0x80_1010, None)
            );
            assert_eq!(v.cpu_entry & PRESENT, 0);
            assert!(v.to_string().contains("direct map va"));
            // Its neighbours in the split region still pass; a write too.
            for g in [0x80_0000u64, 0x80_2000, 0x80_3ff8, 0x9f_f000] {
                assert_eq!(c.check_frame(&m, INFO, va, g, Access::Write), Verdict::Ok);
            }
            // An entirely cleared direct-map slot (no table at all).
            let Verdict::Violation(v) = c.check_frame(&m, INFO, va, 16 << 20, Access::Read) else {
                panic!()
            };
            assert_eq!(v.kind, ViolationKind::NoDirectMap(NoPage::Empty));
            let s = c.stats;
            assert_eq!(
                (s.violations, s.no_direct_map, s.cpu_walk_errors),
                (2, 2, 0)
            );
            assert_eq!(s.accesses_checked, 5, "check_frame is part of an access");
            assert_eq!(c.recent().count(), 2);
            // Without a base (SET_AS of protocol 0.3): not checked.
            c.set_direct_map(None);
            assert_eq!(
                c.check_frame(&m, INFO, va + 0x1000, 0x80_1000, Access::Read),
                Verdict::Ok
            );
            assert_eq!(c.stats.violations, 2);
        }
    }

    #[test]
    fn hostile_direct_map_bases_are_walk_errors() {
        use super::x86::tests::DIRECT_MAP_4;
        let m = testmem::new(16 << 20);
        let cpu = with_direct_map(&m, Levels::Four, DIRECT_MAP_4);
        let mut c = Checker::new(cpu.root, Levels::Four);
        let walk_error = |c: &mut Checker, base: u64, g: u64| {
            c.set_direct_map(Some(base));
            c.check_frame(&m, INFO, 0x1000, g, Access::Read)
        };
        // base + G wraps past 2^64.
        assert_eq!(
            walk_error(&mut c, !0xfff, 0x80_1000),
            Verdict::CpuWalkError(CpuWalkError::Wraps {
                base: !0xfff,
                offset: 0x80_1000
            })
        );
        assert_eq!(
            walk_error(&mut c, u64::MAX, u64::MAX),
            Verdict::CpuWalkError(CpuWalkError::Wraps {
                base: u64::MAX,
                offset: !0xfff
            })
        );
        // Not canonical (4 levels: bits 63..47 must agree; 5: 63..56).
        for (base, g) in [
            (0x8000_0000_0000u64, 0x1000u64),
            (0xffff_7fff_ffff_e000, 0x1000),
            (1 << 63, 0),
            (0x7fff_ffff_f000, 0x1000),
        ] {
            assert!(
                matches!(
                    walk_error(&mut c, base, g),
                    Verdict::CpuWalkError(CpuWalkError::NonCanonical { .. })
                ),
                "{base:#x} + {g:#x}"
            );
        }
        let mut c5 = Checker::new(cpu.root, Levels::Five);
        c5.set_direct_map(Some(1 << 56));
        assert!(matches!(
            c5.check_frame(&m, INFO, 0x1000, 0, Access::Read),
            Verdict::CpuWalkError(CpuWalkError::NonCanonical { .. })
        ));
        // A root outside guest memory.
        let mut far = Checker::new(1 << 40, Levels::Four);
        far.set_direct_map(Some(DIRECT_MAP_4));
        assert!(matches!(
            far.check_frame(&m, INFO, 0x1000, 0x1000, Access::Read),
            Verdict::CpuWalkError(CpuWalkError::BadAddress { .. })
        ));
        assert_eq!((c.stats.violations, c.stats.cpu_walk_errors), (0, 6));
        // Arbitrary bases and frames: never a panic.
        let mut x: u64 = 99;
        for _ in 0..20_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            c.set_direct_map(Some(x & !0xfff));
            let _ = c.check_frame(&m, INFO, x, x.rotate_left(17), Access::Write);
        }
    }

    #[test]
    fn recent_is_bounded() {
        let m = testmem::new(1 << 20);
        let mut c = Checker::new(0x1000, Levels::Four);
        for i in 0..(RECENT_VIOLATIONS as u64 + 10) {
            c.check(&m, INFO, i << 12, 0, Access::Read);
        }
        assert_eq!(c.recent().count(), RECENT_VIOLATIONS);
        assert_eq!(c.stats.violations, RECENT_VIOLATIONS as u64 + 10);
    }

    /// GPU MMU and checker together: a 2 MiB GPU leaf over 4 KiB CPU pages,
    /// then a CPU-side COW (new frame) that the GPU did not see.
    #[test]
    fn gpu_and_cpu_tables_together() {
        let m = testmem::new(32 << 20);
        let mut gpu = Builder::new(&m, 0x10_0000);
        let mut cpu = CpuBuilder::new(&m, Levels::Four, 0x40_0000);
        let va = 0x7f12_3440_0000u64; // 2 MiB aligned
        let frame = 0x100_0000u64; // 16 MiB, 2 MiB aligned
        gpu.map_2m(va, frame, true);
        for i in 0..512 {
            cpu.map_4k(va + i * 4096, frame + i * 4096, true);
        }
        let mut mmu = Mmu::new(gpu.root, 64);
        let mut c = Checker::new(cpu.root, Levels::Four);
        for off in [0u64, 0x1234, 0x1f_fff8] {
            let t = mmu.translate(&m, va + off, Access::Write).unwrap();
            assert_eq!(
                c.check(&m, INFO, va + off, t.phys(va + off), Access::Write),
                Verdict::Ok
            );
        }
        // COW on the CPU side: page 1 now lives elsewhere, read-only parent.
        cpu.map_4k(va + 0x1000, 0x180_0000, true);
        let t = mmu.translate(&m, va + 0x1008, Access::Read).unwrap();
        assert!(matches!(
            c.check(&m, INFO, va + 0x1008, t.phys(va + 0x1008), Access::Read),
            Verdict::Violation(Violation {
                kind: ViolationKind::FrameMismatch,
                ..
            })
        ));
        // A CPU 2 MiB read-only leaf: a device write is a violation.
        let va2 = 0x7f12_3480_0000u64;
        gpu.map_2m(va2, 0x140_0000, true);
        cpu.set(va2, 2, 0x140_0000 | PRESENT | PS);
        let t = mmu.translate(&m, va2, Access::Write).unwrap();
        assert!(matches!(
            c.check(&m, INFO, va2, t.phys(va2), Access::Write),
            Verdict::Violation(Violation {
                kind: ViolationKind::WriteNotWritable,
                ..
            })
        ));
        cpu.set(va2, 2, 0x140_0000 | PRESENT | PS | RW);
        assert_eq!(
            c.check(&m, INFO, va2, t.phys(va2), Access::Write),
            Verdict::Ok
        );
    }
}
