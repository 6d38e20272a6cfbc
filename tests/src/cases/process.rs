//! Cases about whole processes and concurrency: exit in the middle of a job,
//! the OOM reaper with two contexts on one mm, a bounded stress mix, and the
//! negative controls that break the driver on purpose.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use vgpu::reference::fnv1a64;
use vgpu::{Job, MmuEvent};

use crate::child::{fork_and_exit, fork_child, Exit};
use crate::coherence::{CaseResult, Cx, Gpu, Mode, Step};
use crate::mem::{Expect, Mapping, HPAGE, PAGE};
use crate::sysutil::{move_pages, numa_nodes, swap_active, write_file, Knob, Setting};

/// A child submits a long job and is killed (or exits from another thread)
/// while the job runs; the device and driver stay coherent and usable.
pub fn exit_mid_job(cx: &mut Cx) -> CaseResult {
    let mode = cx.mode;
    let mut finished = 0;
    for (round, delay_ms) in [0u64, 2, 10, 50].into_iter().enumerate() {
        let by_thread = round == 3;
        let mut child = fork_child(|side| {
            let g = Gpu::open(mode, None).map_err(|e| format!("open: {e}"))?;
            let len = 8 << 20;
            let m = Mapping::anon(len).map_err(|e| format!("mmap: {e}"))?;
            let r = g.map(&m).map_err(|e| format!("region: {e}"))?;
            let half = (len / 2) as u64;
            let mut job = Job::new().write_pattern(r.va(0), half, 1);
            for _ in 0..31 {
                job = job
                    .copy(r.va(len / 2), r.va(0), half)
                    .copy(r.va(0), r.va(len / 2), half);
            }
            if by_thread {
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(delay_ms));
                    // SAFETY: ends the whole process (exit_group) mid-job.
                    unsafe { libc::_exit(0) }
                });
            }
            side.signal();
            g.submit(&[&r], job).map_err(|e| format!("submit: {e}"))?;
            Ok(())
        })?;
        child.wait_signal()?;
        if !by_thread {
            std::thread::sleep(Duration::from_millis(delay_ms));
            child.kill(libc::SIGKILL);
        }
        match child.wait_exit(Duration::from_secs(120)) {
            Ok(Exit::Signal(libc::SIGKILL)) => {}
            Ok(Exit::Code(0)) => finished += 1,
            Ok(e) => {
                cx.check(false, format!("round {round}: child ended with {e:?}"));
            }
            Err(e) => {
                cx.check(false, format!("round {round}: {e}"));
            }
        }
    }
    cx.note(format!(
        "{finished} of 4 children got to the end (job done or exit first)"
    ));
    // The device still works, for a new context of ours.
    let g = cx.gpu()?;
    let m = Mapping::anon(16 * PAGE)?;
    let r = g.map(&m)?;
    cx.check_ok(
        "a new context works after the killed jobs",
        g.write_pattern(&r, 0, m.len(), 5),
    );
    cx.check_mem("the CPU sees it", &m, &Expect::pattern(m.len(), 5));
    Ok(())
}

/// A child mirrors one mm in two contexts (device jobs running) and is
/// OOM-killed: the OOM reaper invalidates both mirrors without blocking.
pub fn oom_two_contexts(cx: &mut Cx) -> CaseResult {
    let _me = Setting::set("/proc/self/oom_score_adj", "-1000").step("oom_score_adj")?;
    let mut child = fork_child(|side| {
        write_file("/proc/self/oom_score_adj", "1000")
            .map_err(|e| format!("oom_score_adj: {e}"))?;
        let g1 = Gpu::open(Mode::Svm, None).map_err(|e| format!("open 1: {e}"))?;
        let g2 = Gpu::open(Mode::Svm, None).map_err(|e| format!("open 2: {e}"))?;
        let m = Mapping::anon(8 << 20).map_err(|e| format!("mmap: {e}"))?;
        let len = m.len();
        let (r1, r2) = (g1.map(&m).unwrap(), g2.map(&m).unwrap());
        g1.write_pattern(&r1, 0, len, 1)
            .map_err(|e| format!("ctx 1 write: {e}"))?;
        let h = g2
            .hash(&r2, 0, len)
            .map_err(|e| format!("ctx 2 hash: {e}"))?;
        if h != fnv1a64(&vgpu::reference::pattern(1, len)) {
            return Err("context 2 does not see context 1's write".into());
        }
        std::thread::scope(|s| {
            s.spawn(|| loop {
                let _ = g1.write_pattern(&r1, 0, len, 2);
                let _ = g2.hash(&r2, 0, len);
            });
            side.signal();
            // Eat memory until the OOM killer picks us (oom_score_adj 1000).
            loop {
                match Mapping::anon(64 << 20) {
                    Ok(big) => {
                        for p in (0..big.len()).step_by(PAGE) {
                            big.fill(p, 1, 1);
                        }
                        let _ = big.leak();
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        })
    })?;
    child.wait_signal()?;
    match child.wait_exit(Duration::from_secs(300)) {
        Ok(Exit::Signal(libc::SIGKILL)) => {
            cx.check(true, "the child was OOM-killed");
        }
        Ok(e) => {
            cx.check(false, format!("the child ended with {e:?}, not SIGKILL"));
        }
        Err(e) => {
            cx.check(false, format!("the child was not OOM-killed: {e}"));
        }
    }
    let g = cx.gpu()?;
    let m = Mapping::anon(16 * PAGE)?;
    let r = g.map(&m)?;
    cx.check_ok(
        "the device works after the OOM kill",
        g.write_pattern(&r, 0, m.len(), 3),
    );
    cx.check_mem("the CPU sees it", &m, &Expect::pattern(m.len(), 3));
    Ok(())
}

/// Device jobs against a mix of mm operations from another thread, bounded
/// in time and iterations. The device owns region A's data: after each
/// successful device write its hash must match, whatever the kernel did to
/// A's pages (fork, migration, pageout, collapse, mprotect, soft-dirty).
/// Region B is churned (DONTNEED, munmap/mmap) and only read.
pub fn stress(cx: &mut Cx) -> CaseResult {
    let g = cx.gpu()?;
    let a = Mapping::anon(64 * PAGE)?;
    a.madvise(0, a.len(), libc::MADV_NOHUGEPAGE)
        .step("MADV_NOHUGEPAGE")?;
    let b = Mapping::anon_aligned(2 * HPAGE, HPAGE)?;
    b.write_pattern(0, b.len(), 1);
    let ra = g.map(&a)?;
    let rb = g.map_ro(&b)?;
    let nodes = numa_nodes();
    let swap = swap_active("/dev/zram0");
    let stop = AtomicBool::new(false);
    let (jobs, tolerated, mismatches, mm_ops) = (
        AtomicU64::new(0),
        AtomicU64::new(0),
        AtomicU64::new(0),
        AtomicU64::new(0),
    );
    let deadline = cx.deadline();
    let max = cx.opts.iterations;
    let mut mm_errors: Vec<String> = Vec::new();
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut seed = 1000u64;
            while !stop.load(Ordering::Relaxed) {
                seed += 1;
                match g.write_pattern(&ra, 0, a.len(), seed) {
                    Ok(()) => match g.hash(&ra, 0, a.len()) {
                        Ok(h) if h == fnv1a64(&vgpu::reference::pattern(seed, a.len())) => {}
                        Ok(_) => {
                            mismatches.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => {
                            tolerated.fetch_add(1, Ordering::Relaxed);
                        }
                    },
                    // mprotect toggles make writes fail now and then.
                    Err(e) if e.is(libc::EPERM) || e.is(libc::EFAULT) => {
                        tolerated.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        mismatches.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if g.read(&rb, 0, b.len()).is_err() {
                    tolerated.fetch_add(1, Ordering::Relaxed);
                }
                jobs.fetch_add(1, Ordering::Relaxed);
            }
        });
        let mut i = 0u64;
        while Instant::now() < deadline && i < max {
            let r: std::io::Result<()> = match i % 8 {
                0 => fork_and_exit(),
                1 => b.madvise(HPAGE / 2, 64 << 10, libc::MADV_DONTNEED),
                2 => a
                    .mprotect(0, a.len(), libc::PROT_READ)
                    .and_then(|_| a.mprotect(0, a.len(), libc::PROT_READ | libc::PROT_WRITE)),
                3 if nodes.len() > 1 => {
                    let to = nodes[(i / 8) as usize % nodes.len()];
                    move_pages(&a.page_addrs(), Some(to)).map(|_| ())
                }
                4 if swap => a.madvise(0, a.len(), libc::MADV_PAGEOUT),
                5 => b.madvise(0, b.len(), libc::MADV_COLLAPSE).or(Ok(())),
                6 => write_file("/proc/self/clear_refs", "4"),
                7 => {
                    // Replace B's second half with a fresh mapping.
                    let addr = b.addr() + HPAGE as u64;
                    crate::mem::Mapping::new(
                        addr,
                        HPAGE,
                        libc::PROT_READ | libc::PROT_WRITE,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                        -1,
                        0,
                    )
                    .map(|m| {
                        let _ = m.leak();
                    })
                }
                _ => Ok(()),
            };
            if let Err(e) = r {
                if mm_errors.len() < 5 {
                    mm_errors.push(format!("op {}: {e}", i % 8));
                }
            }
            mm_ops.fetch_add(1, Ordering::Relaxed);
            i += 1;
        }
        stop.store(true, Ordering::Relaxed);
    });
    cx.note(format!(
        "{} mm operations, {} device rounds, {} tolerated errors (EPERM/EFAULT)",
        mm_ops.load(Ordering::Relaxed),
        jobs.load(Ordering::Relaxed),
        tolerated.load(Ordering::Relaxed)
    ));
    for e in &mm_errors {
        cx.check(false, format!("mm operation failed: {e}"));
    }
    cx.check_eq(
        "device hash mismatches after successful writes",
        mismatches.load(Ordering::Relaxed),
        0,
    );
    cx.check(
        jobs.load(Ordering::Relaxed) > 0,
        "the device ran jobs during the stress",
    );
    cx.check_ok("final device write", g.write_pattern(&ra, 0, a.len(), 7));
    cx.check_mem(
        "the CPU sees the final write",
        &a,
        &Expect::pattern(a.len(), 7),
    );
    let now = b.read(0, b.len());
    cx.check_eq(
        "the device sees what the CPU sees in B",
        g.hash(&rb, 0, b.len()).ok(),
        Some(fnv1a64(&now)),
    );
    Ok(())
}

fn knob(cx: &Cx, name: &str, value: &str, reset: &str) -> Result<Knob, crate::coherence::Stop> {
    Knob::set(name, value, reset).or_else(|e| cx.skip(e))
}

/// Negative control: with invalidation skipped, the device keeps stale
/// entries after COW, migration and munmap; the checker must catch each.
pub fn neg_skip_invalidate(cx: &mut Cx) -> CaseResult {
    let _k = knob(cx, "skip_invalidate", "1", "0")?;
    const N: usize = 8;
    let len = N * PAGE;

    // COW: the device writes through its stale writable entry into the page
    // the parent now shares with a child.
    let v0 = cx.global().violations;
    {
        let g = Gpu::open(Mode::Svm, None)?;
        let m = Mapping::anon(len)?;
        let r = g.map(&m)?;
        g.write_pattern(&r, 0, len, 1).step("device write")?;
        let mut child = fork_child(|side| {
            side.signal();
            side.wait()?;
            Ok(())
        })?;
        child.wait_signal()?;
        let _ = g.write_pattern(&r, 0, len, 2);
        child.go();
        let _ = child.join();
    } // the context closes: its stale entries go with it
    let cow = cx.global().violations - v0;
    cx.note(format!("COW: {cow} violations"));
    cx.check(cow > 0, "COW with skipped invalidation is caught");

    // munmap: the device reads freed pages through stale entries.
    let v0 = cx.global().violations;
    {
        let g = Gpu::open(Mode::Svm, None)?;
        let m = Mapping::anon(len)?;
        let r = g.map(&m)?;
        g.write_pattern(&r, 0, len, 1).step("device write")?;
        let addr = m.addr();
        m.unmap()?;
        // Keep the VA unmapped-but-stale: a read (never a write into freed memory).
        let _ = g.read(&r, 0, len);
        let _ = addr;
    }
    let unmap = cx.global().violations - v0;
    cx.note(format!("munmap: {unmap} violations"));
    cx.check(unmap > 0, "munmap with skipped invalidation is caught");

    // Migration: the device reads the old frames.
    let nodes = numa_nodes();
    if nodes.len() > 1 {
        let v0 = cx.global().violations;
        {
            let g = Gpu::open(Mode::Svm, None)?;
            let m = Mapping::anon(len)?;
            m.write_pattern(0, len, 3);
            let r = g.map(&m)?;
            g.read(&r, 0, len).step("device read")?;
            let cur = move_pages(&m.page_addrs(), None).unwrap_or_default();
            let to = if cur.first() == Some(&(nodes[0] as i32)) {
                nodes[1]
            } else {
                nodes[0]
            };
            move_pages(&m.page_addrs(), Some(to)).step("move_pages")?;
            let _ = g.read(&r, 0, len);
        }
        let mig = cx.global().violations - v0;
        cx.note(format!("migration: {mig} violations"));
        cx.check(mig > 0, "migration with skipped invalidation is caught");
    } else {
        cx.note("one NUMA node: the migration part is skipped");
    }
    Ok(())
}

/// Negative control: the legacy valid-flag scheme with a delay between
/// hmm_range_fault and taking the lock; racing invalidations (MADV_DONTNEED,
/// then a CPU re-touch) must produce a violation within a bounded number of
/// iterations.
pub fn neg_legacy_race(cx: &mut Cx) -> CaseResult {
    let _k1 = knob(cx, "legacy_valid_flag", "1", "0")?;
    let _k2 = knob(cx, "legacy_delay_us", "2000", "0")?;
    const N: usize = 32;
    let len = N * PAGE;
    let g = Gpu::open(Mode::Svm, None)?;
    let m = Mapping::anon_small(len, 1)?;
    let r = g.map(&m)?;
    let v0 = cx.global().violations;
    let stop = AtomicBool::new(false);
    let jobs = AtomicU64::new(0);
    let deadline = Instant::now() + Duration::from_secs(cx.opts.seconds.max(30));
    let max = cx.opts.iterations.max(500);
    let mut iterations = 0;
    let mut caught = 0;
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                // Reads only: stale entries may point at freed pages.
                let _ = g.hash(&r, 0, len);
                jobs.fetch_add(1, Ordering::Relaxed);
            }
        });
        while Instant::now() < deadline && iterations < max {
            let _ = m.madvise(0, len, libc::MADV_DONTNEED);
            m.write_pattern(0, len, iterations);
            std::thread::sleep(Duration::from_micros(500));
            iterations += 1;
            if iterations % 10 == 0 {
                caught = cx.global().violations - v0;
                if caught > 0 {
                    break;
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
    caught = caught.max(cx.global().violations - v0);
    cx.note(format!(
        "{iterations} invalidation rounds, {} device jobs, {caught} violations",
        jobs.load(Ordering::Relaxed)
    ));
    cx.check(
        caught > 0,
        format!("the legacy race is caught within {max} rounds"),
    );
    cx.note(format!("invalidations seen: {}", g.events(MmuEvent::Clear)));
    Ok(())
}
