//! Cases on one address space: the basics, fork/COW, the zero page, read-only
//! GUP races, munmap, mremap, mprotect, MADV_DONTNEED/MADV_FREE, soft-dirty.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use vgpu::reference::{fnv1a64, fnv1a64_zeros};
use vgpu::MmuEvent;

use crate::child::{fork_and_exit, fork_child};
use crate::coherence::{CaseResult, Cx, Gpu, Mode, Step};
use crate::mem::{mremap, Expect, Mapping, PAGE};
use crate::sysutil::{pagemap, write_file};

const EFAULT: i32 = libc::EFAULT;
const EPERM: i32 = libc::EPERM;

/// Every op kind, CPU <-> device visibility both ways, and refusals.
pub fn basic(cx: &mut Cx) -> CaseResult {
    let g = cx.gpu()?;
    let m = Mapping::anon(4 * PAGE)?;
    let r = g.map(&m)?;
    let mut want = Expect::zeros(m.len());

    g.write_pattern(&r, 0, PAGE, 1).step("WRITE_PATTERN")?;
    want.set_pattern(0, PAGE, 1);
    cx.check_mem_range("the CPU sees WRITE_PATTERN", &m, &want, 0, PAGE);

    g.copy(&r, PAGE, &r, 0, PAGE).step("COPY")?;
    want.copy(PAGE, 0, PAGE);
    cx.check_mem_range("the CPU sees COPY", &m, &want, PAGE, PAGE);

    g.fill(&r, 2 * PAGE, PAGE, 0xa5).step("FILL")?;
    want.set_fill(2 * PAGE, PAGE, 0xa5);
    cx.check_mem_range("the CPU sees FILL", &m, &want, 2 * PAGE, PAGE);

    m.write_pattern(3 * PAGE, PAGE, 77);
    want.set_pattern(3 * PAGE, PAGE, 77);
    cx.check_hash(
        "the device sees CPU writes (HASH)",
        &g,
        &r,
        3 * PAGE,
        PAGE,
        &want,
    );

    m.write_u64(3 * PAGE, 5);
    want.bytes[3 * PAGE..3 * PAGE + 8].copy_from_slice(&15u64.to_ne_bytes());
    if let Some(old) = cx.check_ok("ATOMIC_ADD", g.atomic_add(&r, 3 * PAGE, 10)) {
        cx.check_eq("ATOMIC_ADD returns the old value", old, 5);
        cx.check_eq("the CPU sees the sum", m.read_u64(3 * PAGE), 15);
    }
    cx.check_ok("READ of the whole range", g.read(&r, 0, m.len()));
    cx.check_mem("the CPU sees everything the device wrote", &m, &want);

    if g.mode() == Mode::Userptr {
        // Memory outside every binding.
        let job = vgpu::Job::new().read(0x7000_0000_0000, PAGE as u64);
        cx.check_errno(
            "a job outside every binding fails",
            g.submit(&[], job),
            &[EFAULT],
        );
        let ro = g.map_ro(&m)?;
        cx.check_errno(
            "a write through a READONLY object fails",
            g.fill(&ro, 0, PAGE, 0),
            &[EPERM],
        );
        cx.check_hash("a READONLY object reads", &g, &ro, 0, m.len(), &want);
    } else {
        let gone = Mapping::anon(PAGE)?;
        let va = gone.addr();
        gone.unmap()?;
        let rr = g.region(va, PAGE)?;
        cx.check_errno(
            "a read of unmapped memory fails",
            g.read(&rr, 0, PAGE),
            &[EFAULT],
        );
        let ro = Mapping::anon(PAGE)?;
        ro.mprotect(0, PAGE, libc::PROT_READ)?;
        let rr = g.map(&ro)?;
        cx.check_errno(
            "a write to read-only memory fails",
            g.fill(&rr, 0, PAGE, 1),
            &[EPERM],
        );
        cx.check_ok("a read of read-only memory works", g.read(&rr, 0, PAGE));
    }
    Ok(())
}

/// fork of private memory: after COW each side sees only its own writes,
/// whether the device or the CPU writes first.
pub fn fork_cow(cx: &mut Cx) -> CaseResult {
    fork_common(cx, false)
}

/// fork of MAP_SHARED memory: both sides see every write.
pub fn fork_shared(cx: &mut Cx) -> CaseResult {
    fork_common(cx, true)
}

fn fork_common(cx: &mut Cx, shared: bool) -> CaseResult {
    const N: usize = 16;
    let len = N * PAGE;
    let m = if shared {
        Mapping::anon_shared(len)?
    } else {
        Mapping::anon(len)?
    };
    let g = cx.gpu()?;
    let r = g.map(&m)?;
    m.write_pattern(0, len, 1);
    g.write_pattern(&r, PAGE, len - PAGE, 2)
        .step("device write before fork")?;
    let mut want = Expect::pattern(len, 1);
    want.set_pattern(PAGE, len - PAGE, 2);
    cx.check_mem("the CPU sees the device's write before fork", &m, &want);

    let mode = cx.mode;
    let before = want.clone();
    let mut child = fork_child(|side| {
        if let Some(d) = before.mismatch(&m) {
            return Err(format!("child does not see the pre-fork contents: {d}"));
        }
        side.signal();
        side.wait()?;
        // The parent has written (CPU page 0, device pages 1..) meanwhile.
        let mut mine = before.clone();
        if shared {
            mine.set_pattern(0, PAGE, 6);
            mine.set_pattern(PAGE, len - PAGE, 5);
        }
        if let Some(d) = mine.mismatch(&m) {
            return Err(if shared {
                format!("child does not see the parent's writes to shared memory: {d}")
            } else {
                format!("the parent's post-fork writes leaked into the child (COW broken): {d}")
            });
        }
        // The child's own device context on its own (COW) memory.
        let g2 = Gpu::open(mode, None).map_err(|e| format!("child: open: {e}"))?;
        let r2 = g2.map(&m).map_err(|e| format!("child: region: {e}"))?;
        m.write_pattern(0, PAGE, 3);
        mine.set_pattern(0, PAGE, 3);
        let h = g2
            .hash(&r2, 0, PAGE)
            .map_err(|e| format!("child: HASH: {e}"))?;
        if h != mine.hash(0, PAGE) {
            return Err("child: the device does not see the child's CPU write".into());
        }
        g2.write_pattern(&r2, PAGE, len - PAGE, 4)
            .map_err(|e| format!("child: WRITE_PATTERN: {e}"))?;
        mine.set_pattern(PAGE, len - PAGE, 4);
        if let Some(d) = mine.mismatch(&m) {
            return Err(format!(
                "child: the CPU does not see its device's write: {d}"
            ));
        }
        side.signal();
        side.wait()?;
        Ok(())
    })?;
    child.wait_signal()?;

    // Parent: CPU write first (COW break by the CPU), then the device reads it.
    m.write_pattern(0, PAGE, 6);
    want.set_pattern(0, PAGE, 6);
    cx.check_hash(
        "after fork the device sees the parent's CPU write (not the shared old page)",
        &g,
        &r,
        0,
        PAGE,
        &want,
    );
    // Device write first (COW break by device fault or validation).
    cx.check_ok(
        "device write after fork",
        g.write_pattern(&r, PAGE, len - PAGE, 5),
    );
    want.set_pattern(PAGE, len - PAGE, 5);
    cx.check_mem(
        "the parent's CPU sees its device's post-fork write",
        &m,
        &want,
    );
    cx.check_hash("device HASH after fork", &g, &r, 0, len, &want);

    child.go();
    let r_child = child.wait_signal();
    cx.check_ok(
        "child: sees the right memory, its device works",
        r_child.clone(),
    );
    if r_child.is_ok() {
        if shared {
            want.set_pattern(0, PAGE, 3);
            want.set_pattern(PAGE, len - PAGE, 4);
            cx.check_mem(
                "the parent sees the child's writes to shared memory",
                &m,
                &want,
            );
        } else {
            cx.check_mem("the child's writes did not leak into the parent", &m, &want);
        }
    }
    child.go();
    cx.check_ok("child exited cleanly", child.join());
    cx.check_hash("device HASH after the child exited", &g, &r, 0, len, &want);
    if !shared {
        cx.note(format!(
            "protection_page events (fork write-protect): {}",
            g.events(MmuEvent::ProtectionPage)
        ));
    }
    Ok(())
}

/// The shared zero page: device reads map it, CPU and device writes replace it.
pub fn cow_zero_page(cx: &mut Cx) -> CaseResult {
    const N: usize = 8;
    let len = N * PAGE;
    let g = cx.gpu()?;
    let m = Mapping::anon(len)?;
    m.madvise(0, len, libc::MADV_NOHUGEPAGE)
        .step("MADV_NOHUGEPAGE")?;
    m.touch_read(); // the zero page everywhere
    let ro = g.map_ro(&m)?;
    let mut want = Expect::zeros(len);
    cx.check_hash("device HASH of zero-page memory", &g, &ro, 0, len, &want);

    // The CPU replaces the zero page of page 0.
    m.write_pattern(0, PAGE, 1);
    want.set_pattern(0, PAGE, 1);
    cx.check_hash(
        "the device sees the CPU's write over the zero page",
        &g,
        &ro,
        0,
        PAGE,
        &want,
    );

    // The device replaces the zero page of page 1.
    let rw = g.map(&m)?;
    cx.check_ok(
        "device write over the zero page",
        g.write_pattern(&rw, PAGE, PAGE, 2),
    );
    want.set_pattern(PAGE, PAGE, 2);
    cx.check_mem(
        "the CPU sees the device's write over the zero page",
        &m,
        &want,
    );
    cx.check_hash(
        "device HASH (read-only view) after both writes",
        &g,
        &ro,
        0,
        len,
        &want,
    );
    cx.check_eq(
        "untouched pages still read as zeros through the device",
        g.hash(&ro, 2 * PAGE, len - 2 * PAGE).ok(),
        Some(fnv1a64_zeros(len - 2 * PAGE)),
    );
    Ok(())
}

/// Device reads (read-only GUP-like mirroring) race CPU writes and forks;
/// when it is quiet, the device must see exactly what the CPU sees.
pub fn gup_ro_race(cx: &mut Cx) -> CaseResult {
    const N: usize = 16;
    let len = N * PAGE;
    let g = cx.gpu()?;
    let m = Mapping::anon_small(len, 1)?;
    let r = g.map_ro(&m)?;
    let stop = AtomicBool::new(false);
    let (reads, errors, writes) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    let deadline = cx.deadline();
    let max = cx.opts.iterations;
    let mut forks = 0u64;
    let mut first_err = None;
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                match g.hash(&r, 0, len) {
                    Ok(_) => reads.fetch_add(1, Ordering::Relaxed),
                    Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                };
            }
        });
        s.spawn(|| {
            let mut v = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for p in 0..N {
                    m.write_u64(p * PAGE + 8 * (v as usize % 512), v);
                }
                v += 1;
                writes.fetch_add(1, Ordering::Relaxed);
            }
        });
        while Instant::now() < deadline && forks < max {
            if let Err(e) = fork_and_exit() {
                first_err = Some(e);
                break;
            }
            forks += 1;
        }
        stop.store(true, Ordering::Relaxed);
    });
    if let Some(e) = first_err {
        cx.check(false, format!("fork: {e}"));
    }
    cx.note(format!(
        "{forks} forks, {} device reads, {} CPU write rounds",
        reads.load(Ordering::Relaxed),
        writes.load(Ordering::Relaxed)
    ));
    cx.check_eq(
        "device reads failed during the race",
        errors.load(Ordering::Relaxed),
        0,
    );
    cx.check(
        reads.load(Ordering::Relaxed) > 0,
        "the device read during the race",
    );
    let now = m.read(0, len);
    cx.check_eq(
        "after the race the device's HASH equals the CPU's view",
        g.hash(&r, 0, len).ok(),
        Some(fnv1a64(&now)),
    );
    Ok(())
}

/// munmap: the next device access fails with EFAULT; a new mapping at the
/// same VA is what the device sees next (semantic B for userptr).
pub fn munmap(cx: &mut Cx) -> CaseResult {
    const N: usize = 8;
    let len = N * PAGE;
    let g = cx.gpu()?;
    let m = Mapping::anon(len)?;
    let r = g.map(&m)?;
    g.write_pattern(&r, 0, len, 1).step("device write")?;
    cx.check_mem(
        "the CPU sees the device's write",
        &m,
        &Expect::pattern(len, 1),
    );
    let addr = m.addr();
    m.unmap().step("munmap")?;
    cx.check_errno("device READ after munmap", g.read(&r, 0, len), &[EFAULT]);
    cx.check_errno(
        "device write after munmap",
        g.fill(&r, 0, PAGE, 1),
        &[EFAULT],
    );
    cx.check(
        g.events(MmuEvent::Unmap) > 0,
        "the driver saw an UNMAP event",
    );

    let m2 = match Mapping::anon_at(addr, len) {
        Ok(m2) => m2,
        Err(e) => {
            cx.note(format!(
                "could not map again at {addr:#x}: {e}; rest skipped"
            ));
            return Ok(());
        }
    };
    m2.write_pattern(0, len, 7);
    let mut want = Expect::pattern(len, 7);
    cx.check_hash(
        "the device sees the new memory at the old VA",
        &g,
        &r,
        0,
        len,
        &want,
    );
    cx.check_ok(
        "device write into the new memory",
        g.write_pattern(&r, 0, PAGE, 8),
    );
    want.set_pattern(0, PAGE, 8);
    cx.check_mem("the CPU sees it in the new memory", &m2, &want);

    // A hole in the middle.
    let hole = addr + 3 * PAGE as u64;
    // SAFETY: one page of our own mapping m2.
    let rc = unsafe { libc::munmap(hole as *mut libc::c_void, PAGE) };
    cx.check(rc == 0, "munmap of one page in the middle");
    cx.check_errno("device READ across the hole", g.read(&r, 0, len), &[EFAULT]);
    if g.mode() == Mode::Svm {
        cx.check_hash("device HASH before the hole", &g, &r, 0, 3 * PAGE, &want);
    }
    Ok(())
}

/// mremap moves memory: the new VA has the data, the old one faults (and
/// for userptr objects, a new mapping at the old VA is what they see).
pub fn mremap_move(cx: &mut Cx) -> CaseResult {
    const N: usize = 16;
    let len = N * PAGE;
    let g = cx.gpu()?;
    let m = Mapping::anon(len)?;
    let r_old = g.map(&m)?;
    g.write_pattern(&r_old, 0, len, 1).step("device write")?;
    let mut want = Expect::pattern(len, 1);
    let old = m.addr();
    let dst = Mapping::anon(len)?;
    let new = mremap(
        old,
        len,
        len,
        libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
        dst.addr(),
    )
    .step("mremap")?;
    let _ = dst.leak();
    let _ = m.leak();
    // SAFETY: mremap moved the mapping to `new`.
    let moved = unsafe { Mapping::from_raw(new, len) };
    cx.check(
        g.events(MmuEvent::Unmap) > 0,
        "the driver saw an UNMAP event",
    );
    cx.check_mem("the CPU sees the data at the new VA", &moved, &want);
    cx.check_errno(
        "device READ at the old VA",
        g.read(&r_old, 0, len),
        &[EFAULT],
    );
    let r_new = g.map(&moved)?;
    cx.check_hash(
        "the device sees the data at the new VA",
        &g,
        &r_new,
        0,
        len,
        &want,
    );
    cx.check_ok(
        "device write at the new VA",
        g.write_pattern(&r_new, 0, len, 2),
    );
    want.set_pattern(0, len, 2);
    cx.check_mem("the CPU sees it at the new VA", &moved, &want);

    if let Ok(again) = Mapping::anon_at(old, len) {
        again.write_pattern(0, len, 3);
        cx.check_hash(
            "the old VA's view sees the new mapping there",
            &g,
            &r_old,
            0,
            len,
            &Expect::pattern(len, 3),
        );
    }
    Ok(())
}

/// mremap with MREMAP_DONTUNMAP: the pages move, the old VA stays mapped
/// and empty.
pub fn mremap_dontunmap(cx: &mut Cx) -> CaseResult {
    const N: usize = 16;
    let len = N * PAGE;
    let g = cx.gpu()?;
    let m = Mapping::anon(len)?;
    m.madvise(0, len, libc::MADV_NOHUGEPAGE)
        .step("MADV_NOHUGEPAGE")?;
    let r_old = g.map(&m)?;
    g.write_pattern(&r_old, 0, len, 1).step("device write")?;
    let new = match mremap(
        m.addr(),
        len,
        len,
        libc::MREMAP_MAYMOVE | libc::MREMAP_DONTUNMAP,
        0,
    ) {
        Ok(a) => a,
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            return cx.skip("MREMAP_DONTUNMAP refused (EINVAL): kernel too old?")
        }
        Err(e) => return Err(format!("mremap(DONTUNMAP): {e}").into()),
    };
    // SAFETY: the pages now live at `new`; `m` still owns the old (empty) VA.
    let moved = unsafe { Mapping::from_raw(new, len) };
    let mut old_want = Expect::zeros(len);
    let new_want = Expect::pattern(len, 1);
    cx.check_mem("the CPU sees the data at the new VA", &moved, &new_want);
    cx.check_hash(
        "the device sees zeros at the old VA",
        &g,
        &r_old,
        0,
        len,
        &old_want,
    );
    let r_new = g.map(&moved)?;
    cx.check_hash(
        "the device sees the data at the new VA",
        &g,
        &r_new,
        0,
        len,
        &new_want,
    );
    cx.check_ok(
        "device write at the old VA",
        g.write_pattern(&r_old, 0, len, 4),
    );
    old_want.set_pattern(0, len, 4);
    cx.check_mem("the CPU sees it at the old VA", &m, &old_want);
    cx.check_mem("the new VA is unaffected", &moved, &new_want);
    Ok(())
}

/// mprotect: read-only memory refuses device writes (and keeps its data),
/// PROT_NONE refuses everything, read-write again works again.
pub fn mprotect(cx: &mut Cx) -> CaseResult {
    const N: usize = 8;
    let len = N * PAGE;
    let g = cx.gpu()?;
    let m = Mapping::anon(len)?;
    let rw = g.map(&m)?;
    let ro = g.map_ro(&m)?;
    g.write_pattern(&rw, 0, len, 1).step("device write")?;
    let mut want = Expect::pattern(len, 1);

    m.mprotect(0, len, libc::PROT_READ)
        .step("mprotect(PROT_READ)")?;
    cx.check(
        g.events(MmuEvent::ProtectionVma) > 0,
        "the driver saw a PROTECTION_VMA event",
    );
    cx.check_errno(
        "device write to read-only memory fails",
        g.fill(&rw, 0, PAGE, 0xff),
        &[EPERM, EFAULT],
    );
    cx.check_mem("the refused write left the memory alone", &m, &want);
    cx.check_hash("device read of read-only memory", &g, &ro, 0, len, &want);

    m.mprotect(0, len, libc::PROT_NONE)
        .step("mprotect(PROT_NONE)")?;
    cx.check_errno(
        "device read of PROT_NONE memory fails",
        g.read(&ro, 0, len),
        &[EFAULT, EPERM],
    );

    m.mprotect(0, len, libc::PROT_READ | libc::PROT_WRITE)
        .step("mprotect(RW)")?;
    cx.check_ok(
        "device write after PROT_READ|PROT_WRITE",
        g.write_pattern(&rw, PAGE, PAGE, 2),
    );
    want.set_pattern(PAGE, PAGE, 2);
    cx.check_mem("the CPU sees it", &m, &want);

    // Half read-only: the writable half keeps working.
    m.mprotect(len / 2, len / 2, libc::PROT_READ)
        .step("mprotect half")?;
    let lo = g.region(m.addr(), len / 2)?;
    cx.check_ok(
        "device write to the writable half",
        g.write_pattern(&lo, 0, len / 2, 3),
    );
    want.set_pattern(0, len / 2, 3);
    cx.check_mem("the CPU sees it", &m, &want);
    Ok(())
}

/// MADV_DONTNEED: dropped pages read as zeros, to the CPU and the device.
pub fn madv_dontneed(cx: &mut Cx) -> CaseResult {
    const N: usize = 16;
    let len = N * PAGE;
    let g = cx.gpu()?;
    let m = Mapping::anon(len)?;
    m.madvise(0, len, libc::MADV_NOHUGEPAGE)
        .step("MADV_NOHUGEPAGE")?;
    let r = g.map(&m)?;
    g.write_pattern(&r, 0, len, 1).step("device write")?;
    let mut want = Expect::pattern(len, 1);
    m.madvise(4 * PAGE, 4 * PAGE, libc::MADV_DONTNEED)
        .step("MADV_DONTNEED")?;
    want.set_fill(4 * PAGE, 4 * PAGE, 0);
    cx.check(
        g.events(MmuEvent::Clear) > 0,
        "the driver saw a CLEAR event",
    );
    cx.check_hash(
        "the device sees zeros where pages were dropped",
        &g,
        &r,
        0,
        len,
        &want,
    );
    cx.check_mem("the CPU agrees", &m, &want);
    cx.check_ok(
        "device write into the dropped range",
        g.write_pattern(&r, 4 * PAGE, 4 * PAGE, 2),
    );
    want.set_pattern(4 * PAGE, 4 * PAGE, 2);
    cx.check_mem("the CPU sees it", &m, &want);
    Ok(())
}

/// MADV_FREE: a device write after MADV_FREE makes the page dirty again, so
/// reclaim (MADV_PAGEOUT) must not discard it.
pub fn madv_free(cx: &mut Cx) -> CaseResult {
    const N: usize = 16;
    let len = N * PAGE;
    let g = cx.gpu()?;
    let m = Mapping::anon(len)?;
    m.madvise(0, len, libc::MADV_NOHUGEPAGE)
        .step("MADV_NOHUGEPAGE")?;
    let r = g.map(&m)?;
    g.write_pattern(&r, 0, len, 1).step("device write")?;
    m.madvise(0, len, libc::MADV_FREE).step("MADV_FREE")?;
    // The device writes the first half after MADV_FREE; the second half is
    // lazily freed and may be discarded.
    cx.check_ok(
        "device write after MADV_FREE",
        g.write_pattern(&r, 0, len / 2, 2),
    );
    m.madvise(0, len, libc::MADV_PAGEOUT).step("MADV_PAGEOUT")?;
    let want = Expect::pattern(len / 2, 2);
    cx.check_mem_range(
        "device writes after MADV_FREE survive reclaim",
        &m,
        &want,
        0,
        len / 2,
    );
    let rest = m.read(len / 2, len / 2);
    let old = Expect::pattern(len, 1);
    let mut kept = 0;
    for p in 0..N / 2 {
        let page = &rest[p * PAGE..(p + 1) * PAGE];
        let is_old = page == &old.bytes[len / 2 + p * PAGE..len / 2 + (p + 1) * PAGE];
        let is_zero = page.iter().all(|&b| b == 0);
        cx.check(
            is_old || is_zero,
            format!("lazily freed page {} is old data or zeros", N / 2 + p),
        );
        kept += usize::from(is_old);
    }
    cx.note(format!("{kept} of {} lazily freed pages kept", N / 2));
    let now = m.read(0, len);
    cx.check_eq(
        "the device sees what the CPU sees",
        g.hash(&r, 0, len).ok(),
        Some(fnv1a64(&now)),
    );
    Ok(())
}

/// Soft-dirty clear (`echo 4 > /proc/self/clear_refs`): device writes after
/// the clear reach memory and (with CONFIG_MEM_SOFT_DIRTY) make the pages
/// soft-dirty again.
pub fn soft_dirty(cx: &mut Cx) -> CaseResult {
    const N: usize = 8;
    let len = N * PAGE;
    let g = cx.gpu()?;
    let m = Mapping::anon(len)?;
    let r = g.map(&m)?;
    g.write_pattern(&r, 0, len, 1).step("device write")?;
    let probe = Mapping::anon(PAGE)?;
    write_file("/proc/self/clear_refs", "4").step("clear_refs 4")?;
    cx.check(
        g.events(MmuEvent::SoftDirty) > 0,
        "the driver saw a SOFT_DIRTY event",
    );
    probe.fill(0, 1, 1);
    let tracked = pagemap(probe.addr(), 1)
        .map(|e| e[0].soft_dirty())
        .unwrap_or(false);
    cx.check_ok(
        "device write after clear_refs",
        g.write_pattern(&r, 0, len, 2),
    );
    cx.check_mem("the CPU sees it", &m, &Expect::pattern(len, 2));
    if tracked {
        let e = pagemap(m.addr(), N).step("pagemap")?;
        let dirty = e.iter().filter(|e| e.soft_dirty()).count();
        cx.check_eq("pages the device wrote are soft-dirty", dirty, N);
    } else {
        cx.note("soft-dirty is not tracked (CONFIG_MEM_SOFT_DIRTY off): bit checks skipped");
    }
    Ok(())
}
