//! The coherence suite's case table: one entry per scenario of DESIGN.md
//! ("The coherence suite"), each run in the modes it supports.

mod contract;
mod features;
mod idle;
mod mm;
mod process;
pub mod promises;
mod storm;
mod userptr;
mod vma;

use crate::coherence::{Case, Mode};

const fn case(
    name: &'static str,
    about: &'static str,
    modes: &'static [Mode],
    demo: bool,
    run: fn(&mut crate::coherence::Cx) -> crate::coherence::CaseResult,
) -> Case {
    Case {
        name,
        about,
        modes,
        demo,
        expect_violations: false,
        run,
    }
}

const fn negative(
    name: &'static str,
    about: &'static str,
    run: fn(&mut crate::coherence::Cx) -> crate::coherence::CaseResult,
) -> Case {
    Case {
        name,
        about,
        modes: Mode::SVM,
        demo: false,
        expect_violations: true,
        run,
    }
}

/// Every case, in run order (cheap first; the OOM case and the negative
/// controls last).
pub const CASES: &[Case] = &[
    case(
        "basic",
        "every op kind; CPU and device see each other's writes; EFAULT/EPERM refusals",
        Mode::BOTH,
        false,
        vma::basic,
    ),
    case(
        "userptr_revalidate",
        "userptr semantic B: SUBMIT re-mirrors what an invalidation marked, with no device fault",
        Mode::USERPTR,
        false,
        userptr::userptr_revalidate,
    ),
    case(
        "userptr_misaligned_thp",
        "a userptr object over a THP bound at another 2 MiB offset: 4 KiB entries, right bytes",
        Mode::USERPTR,
        false,
        userptr::userptr_misaligned_thp,
    ),
    case(
        "userptr_small_in_thp",
        "a small userptr object inside a THP: no 2 MiB entry maps beyond it (EFAULT next to it)",
        Mode::USERPTR,
        false,
        userptr::userptr_small_in_thp,
    ),
    case(
        "foreign_object",
        "another file's userptr object, opened by GEM name: BIND and SUBMIT of it fail with EINVAL",
        Mode::BOTH,
        false,
        userptr::foreign_object,
    ),
    case(
        "fork_cow",
        "fork of private memory: device and CPU writes after fork stay on their side of COW",
        Mode::BOTH,
        true,
        vma::fork_cow,
    ),
    case(
        "fork_shared",
        "fork of MAP_SHARED memory: both processes and their devices see every write",
        Mode::BOTH,
        false,
        vma::fork_shared,
    ),
    case(
        "cow_zero_page",
        "device reads map the zero page; CPU and device writes replace it",
        Mode::BOTH,
        false,
        vma::cow_zero_page,
    ),
    case(
        "gup_ro_race",
        "device reads race CPU writes and forks; quiescent device hash == CPU view",
        Mode::BOTH,
        false,
        vma::gup_ro_race,
    ),
    case(
        "munmap",
        "after munmap device access fails with EFAULT; a new mapping at the VA is seen",
        Mode::BOTH,
        false,
        vma::munmap,
    ),
    case(
        "mremap",
        "mremap move: data at the new VA, EFAULT at the old one",
        Mode::BOTH,
        false,
        vma::mremap_move,
    ),
    case(
        "mremap_dontunmap",
        "MREMAP_DONTUNMAP: data at the new VA, zeros at the old one",
        Mode::BOTH,
        false,
        vma::mremap_dontunmap,
    ),
    case(
        "mprotect",
        "read-only refuses device writes (data intact), PROT_NONE refuses reads",
        Mode::BOTH,
        false,
        vma::mprotect,
    ),
    case(
        "madv_dontneed",
        "MADV_DONTNEED: dropped pages are zeros to CPU and device",
        Mode::BOTH,
        false,
        vma::madv_dontneed,
    ),
    case(
        "madv_free",
        "MADV_FREE: device writes after it survive MADV_PAGEOUT (folio dirtied)",
        Mode::BOTH,
        false,
        vma::madv_free,
    ),
    case(
        "soft_dirty",
        "clear_refs 4: device writes land and re-dirty the pages",
        Mode::BOTH,
        false,
        vma::soft_dirty,
    ),
    case(
        "thp_collapse",
        "MADV_COLLAPSE of device-mapped small pages into a THP",
        Mode::BOTH,
        true,
        mm::thp_collapse,
    ),
    case(
        "thp_split",
        "a device-mapped THP split by mprotect of one page and MADV_DONTNEED",
        Mode::BOTH,
        true,
        mm::thp_split,
    ),
    case(
        "numa_move_pages",
        "move_pages between nodes 0 and 1 and back",
        Mode::BOTH,
        true,
        mm::numa_move_pages,
    ),
    case(
        "numa_mbind",
        "mbind(MPOL_BIND, MPOL_MF_MOVE) between nodes 0 and 1 and back",
        Mode::BOTH,
        false,
        mm::numa_mbind,
    ),
    case(
        "numa_migrate_pages",
        "migrate_pages of the process between nodes 0 and 1 and back",
        Mode::BOTH,
        false,
        mm::numa_migrate_pages,
    ),
    case(
        "compaction",
        "compact_memory with device-mapped pages in fragmented memory",
        Mode::BOTH,
        false,
        mm::compaction,
    ),
    case(
        "ksm",
        "KSM merge of device-mapped pages, device write breaks it, unmerge",
        Mode::BOTH,
        false,
        mm::ksm,
    ),
    case(
        "swap_zram",
        "MADV_PAGEOUT to zram swap of device-written pages, device swap-in",
        Mode::BOTH,
        true,
        mm::swap_zram,
    ),
    case(
        "file_truncate",
        "MAP_SHARED tmpfs file: read/write agree, ftruncate tail faults, punch hole",
        Mode::BOTH,
        false,
        mm::file_truncate,
    ),
    case(
        "file_writeback",
        "device writes to an ext2 file survive msync, drop_caches and remount",
        Mode::BOTH,
        false,
        mm::file_writeback,
    ),
    case(
        "hugetlbfs",
        "MAP_HUGETLB memory: device writes, huge page COW after fork, DONTNEED",
        Mode::BOTH,
        false,
        mm::hugetlbfs,
    ),
    case(
        "numa_balancing",
        "automatic NUMA balancing scans mirrored memory (PROTECTION_VMA) while CPU and device use it",
        Mode::BOTH,
        false,
        features::numa_balancing,
    ),
    case(
        "zswap",
        "MADV_PAGEOUT of device-written pages into zswap (zswpout), device swap-in from it (zswpin)",
        Mode::BOTH,
        false,
        features::zswap,
    ),
    case(
        "damon_pageout",
        "a DAMON vaddr DAMOS pageout scheme pages out mirrored memory while the device hashes it",
        Mode::BOTH,
        false,
        features::damon_pageout,
    ),
    case(
        "mglru_evict",
        "multi-gen LRU aging and eviction (debugfs lru_gen) reclaim mirrored pages to swap",
        Mode::BOTH,
        false,
        features::mglru_evict,
    ),
    case(
        "uffd_wp",
        "userfaultfd write-protect: device write fails with EFAULT (SIGBUS feature), read works, unprotect",
        Mode::BOTH,
        false,
        features::uffd_wp,
    ),
    case(
        "shmem_thp",
        "memfd with shmem THP mirrored by the device, a punched hole splits a THP",
        Mode::BOTH,
        false,
        features::shmem_thp,
    ),
    case(
        "mthp_anon",
        "64 KiB anonymous mTHP from device faults, partial MADV_DONTNEED, fork COW",
        Mode::BOTH,
        false,
        features::mthp_anon,
    ),
    case(
        "memory_offline",
        "offlining the ZONE_MOVABLE block of a mirrored page migrates it while the device hashes",
        Mode::BOTH,
        false,
        features::memory_offline,
    ),
    case(
        "idle_page_tracking",
        "page_idle bitmap marks mirrored pages idle without an invalidation; CPU access clears it",
        Mode::BOTH,
        false,
        features::idle_page_tracking,
    ),
    case(
        "exit_mid_job",
        "a child killed (or exiting) during a long device job",
        Mode::BOTH,
        false,
        process::exit_mid_job,
    ),
    case(
        "stress",
        "device jobs against a bounded mix of mm operations from another thread",
        Mode::BOTH,
        false,
        process::stress,
    ),
    case(
        "oom_two_contexts",
        "a child mirrored by two contexts is OOM-killed (OOM reaper)",
        Mode::SVM,
        false,
        process::oom_two_contexts,
    ),
    case(
        "bind_array_binds_all",
        "BIND_ARRAY: 2 batches of 256 one-page objects, interleaved by VA, bind all; a job reads through each; UNBIND of one and a batch unbind",
        Mode::USERPTR,
        false,
        contract::bind_array_binds_all,
    ),
    case(
        "bind_array_all_or_nothing",
        "BIND_ARRAY refused whole (EBUSY overlap in the batch or with a binding, ENOENT bad handle, EINVAL count/pad/flags, EFAULT) binds nothing; the failed entry named",
        Mode::USERPTR,
        false,
        contract::bind_array_all_or_nothing,
    ),
    case(
        "bind_array_then_close",
        "5000 objects bound by bind_many, used, closed by close_many; 4096 bound by one BIND_ARRAY, then the file closed with them bound",
        Mode::USERPTR,
        false,
        contract::bind_array_then_close,
    ),
    case(
        "seq_window",
        "fault_to_lock_delay_us: DONTNEED+rewrite, fork/COW, migration inside the snapshot-to-lock window are retried",
        Mode::BOTH,
        false,
        contract::seq_window,
    ),
    case(
        "retry_ebusy",
        "force_ebusy: the populate loop retries hmm_range_fault's EBUSY, and gives up (EBUSY) after its bound",
        Mode::BOTH,
        false,
        contract::retry_ebusy,
    ),
    case(
        "inval_window",
        "clear_to_invalidate_delay_us: device jobs race DONTNEED while callbacks sleep before INVALIDATE",
        Mode::BOTH,
        false,
        contract::inval_window,
    ),
    case(
        "idle_litmus",
        "invalidations of an idle device (TLB generation, no INVALIDATE) race job starts: device reads and writes see the CPU's current pages; both flush paths taken",
        Mode::BOTH,
        false,
        idle::idle_litmus,
    ),
    case(
        "userptr_storm",
        "one MADV_DONTNEED over 8 userptr objects, while jobs read them: SVM posts every object's INVALIDATE in the first passes, waits in the second; the device sees the CPU's last data",
        Mode::BOTH,
        false,
        storm::userptr_storm,
    ),
    case(
        "nonblock_reap",
        "process_mrelease of a killed child: non-blockable callbacks refuse mirrored ranges and a held update lock (EAGAIN), handle the rest",
        Mode::SVM,
        false,
        contract::nonblock_reap,
    ),
    case(
        "killed_submit_aborted",
        "a SUBMIT killed while its file and mm live on (CLONE_VM sibling): the job is aborted on the device",
        Mode::SVM,
        false,
        contract::killed_submit_aborted,
    ),
    case(
        "pair_start_end",
        "2019 scenario: classic notifier A's starts all get ends when B fails non-blocking (process_mrelease)",
        Mode::SVM,
        false,
        contract::pair_start_end,
    ),
    negative(
        "neg_skip_invalidate",
        "debugfs skip_invalidate: COW, munmap and migration must be caught",
        process::neg_skip_invalidate,
    ),
    negative(
        "neg_legacy_race",
        "debugfs legacy_valid_flag + delay: the race must be caught",
        process::neg_legacy_race,
    ),
    case(
        "semantic_b_va_reuse",
        "semantic B over one VA: hole, anon, shared file (pread sees device writes), THP, read-only file, half mapping",
        Mode::BOTH,
        false,
        promises::semantic_b_va_reuse,
    ),
    case(
        "readonly_objects",
        "objects created over PROT_READ memory: READONLY reads, writable refuses with EPERM; RW again; PROT_NONE EFAULT",
        Mode::USERPTR,
        false,
        promises::readonly_objects,
    ),
    case(
        "ctx_config_window",
        "CTX_CONFIG after USERPTR_CREATE and a refused SUBMIT works; after the first job EBUSY, configuration kept",
        Mode::USERPTR,
        false,
        promises::ctx_config_window,
    ),
    case(
        "submit_result",
        "SUBMIT's result is the last HASH/ATOMIC_ADD's, ops run in order, 64 ops, SVM fault counts",
        Mode::BOTH,
        false,
        promises::submit_result,
    ),
    case(
        "submit_prefault",
        "SUBMIT_PREFAULT: no device fault on untouched memory, only the ops' pages faulted in, errors left to the device",
        Mode::BOTH,
        false,
        promises::submit_prefault,
    ),
    case(
        "bind_unbind",
        "BIND of a bound object EBUSY; unbound object's handle EINVAL; UNBIND inside/twice ENOENT; rebind elsewhere",
        Mode::USERPTR,
        false,
        promises::bind_unbind,
    ),
    case(
        "closed_bound_object",
        "GEM_CLOSE of a bound object: handle ENOENT, binding lives on (EBUSY) until UNBIND, then reusable",
        Mode::USERPTR,
        false,
        promises::closed_bound_object,
    ),
    case(
        "fork_child_objects",
        "a fork child with the parent's objects: EPERM for every driver ioctl but STATS/GET_PARAM; parent unaffected",
        Mode::USERPTR,
        false,
        promises::fork_child_objects,
    ),
    case(
        "context_slots",
        "every device context in use: ENOSPC from CTX_CONFIG/USERPTR_CREATE/SUBMIT, UNBIND ENOENT; retry after a close",
        Mode::SVM,
        false,
        promises::context_slots,
    ),
    case(
        "release_visible",
        "a child exiting with its context open: a privileged STATS reader sees RELEASE go up; STATS creates no context",
        Mode::BOTH,
        false,
        promises::release_visible,
    ),
    case(
        "one_file_jobs",
        "one file: a short job, USERPTR_CREATE, STATS return while a long job runs; BIND/UNBIND wait for it",
        Mode::BOTH,
        false,
        promises::one_file_jobs,
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_selectable() {
        let mut names: Vec<&str> = CASES.iter().map(|c| c.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), CASES.len());
        for c in CASES {
            assert!(!c.modes.is_empty(), "{}", c.name);
            assert!(
                c.name
                    .chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch == '_'),
                "{}",
                c.name
            );
        }
    }

    #[test]
    fn demo_subset_covers_fork_numa_thp_swap() {
        let demo: Vec<&str> = CASES.iter().filter(|c| c.demo).map(|c| c.name).collect();
        for want in ["fork_cow", "numa_move_pages", "thp_collapse", "swap_zram"] {
            assert!(demo.contains(&want), "{want} not in {demo:?}");
        }
    }

    #[test]
    fn negative_controls_expect_violations() {
        for c in CASES {
            assert_eq!(
                c.expect_violations,
                c.name.starts_with("neg_"),
                "{}",
                c.name
            );
        }
    }
}
