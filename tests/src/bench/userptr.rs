//! Figure 2: validating a big userptr object (pages/s) against dmirror's
//! HMM_DMIRROR_SNAPSHOT and gup_test's PIN_BASIC_TEST of the same
//! (CPU-populated, 4 KiB-mapped) range; then revalidation after a one-page
//! invalidation (MADV_DONTNEED) against the full validation.

use vgpu::{Context, Job};

use super::fault::fresh;
use super::*;

pub struct Params {
    pub size: usize,
    /// Revalidations measured (median reported).
    pub reval_reps: usize,
}

pub const DEFAULT: Params = Params {
    size: 512 * MIB,
    reval_reps: 3,
};

const GPU_VA: u64 = 0x1000_0000_0000;

pub fn run(p: &Params) -> R<()> {
    let pages = p.size / PAGE;
    let m = fresh(p.size, false)?;
    let (_, populate) = timed(|| touch_pages(m.addr(), p.size));
    let common = |f: Figure| {
        f.param("size_mib", p.size / MIB)
            .param("pages", pages)
            .param(
                "mapping",
                "private anonymous, MADV_NOHUGEPAGE, populated by the CPU first",
            )
            .param(
                "size_note",
                "512 MiB, not 1 GiB: the guest has 2 GiB over two NUMA nodes",
            )
    };

    let ctx = Context::open_default().ctx("open")?;
    ctx.config(false).ctx("CTX_CONFIG")?;
    let bo = ctx
        .userptr_raw(m.addr() as *const u8, p.size, false)
        .ctx("USERPTR_CREATE")?;
    bo.bind(GPU_VA).ctx("BIND")?;
    let job = Job::new().read(GPU_VA, PAGE as u64).uses(&bo);
    let before = ctx.stats().ctx("stats")?;
    let (r, full) = timed(|| ctx.submit_readonly(&job));
    r.ctx("first submit (full validation)")?;
    let mapped = ctx.stats().ctx("stats")?.delta_since(&before).pages_mapped;
    // The same submit with nothing changed: the job alone.
    let (r, again) = timed(|| ctx.submit_readonly(&job));
    r.ctx("second submit")?;

    // dmirror snapshot of the same range.
    let dm = Dmirror::open()?;
    let mut perm = vec![0u8; pages];
    let (r, snap) = timed(|| dm.snapshot(m.addr(), &mut perm));
    r?;
    drop(dm);
    // gup_test pin (and unpin) of the same range.
    let (g, gup_wall) = gup_test(PIN_BASIC_TEST, m.addr(), p.size as u64, 512, FOLL_WRITE)?;
    let pinned = g.size as usize / PAGE;
    let gup_s = (g.get_delta_usec as f64) / 1e6;

    let rate = pages as f64 / full.as_secs_f64();
    common(Figure::new("userptr_validate_full", rate, "pages/s"))
        .baseline("dmirror_snapshot", pages as f64 / snap.as_secs_f64())
        .param("submit_ms", ms(full))
        .param("submit_again_unchanged_ms", ms(again))
        .param("gpu_pages_mapped", mapped)
        .param("cpu_populate_ms", ms(populate))
        .param(
            "dmirror",
            "HMM_DMIRROR_SNAPSHOT (hmm_range_fault without faulting, 32 pages a call)",
        )
        .emit();
    common(Figure::new("userptr_validate_full_vs_gup", rate, "pages/s"))
        .baseline("gup_pin_basic", pinned as f64 / gup_s)
        .param("gup", "PIN_BASIC_TEST, FOLL_WRITE, 512 pages a call; kernel-timed pin (get_delta_usec); unpin not counted")
        .param("gup_pinned_pages", pinned)
        .param("gup_unpin_us", g.put_delta_usec)
        .param("gup_ioctl_ms", ms(gup_wall))
        .emit();

    // Revalidation after one page is dropped (MADV_DONTNEED in the middle).
    let mut revals = Vec::new();
    let mut remapped = 0;
    for i in 0..p.reval_reps {
        let page = m.addr() + (((i + 1) * pages / (p.reval_reps + 1)) * PAGE) as u64;
        madvise(page, PAGE, libc::MADV_DONTNEED)?;
        let before = ctx.stats().ctx("stats")?;
        let (r, d) = timed(|| ctx.submit_readonly(&job));
        r.ctx("submit after MADV_DONTNEED")?;
        remapped = ctx.stats().ctx("stats")?.delta_since(&before).pages_mapped;
        revals.push(ms(d));
    }
    common(Figure::new("userptr_revalidate_1page", median(&revals), "ms"))
        .baseline("userptr_validate_full", ms(full))
        .param("changed_pages", 1)
        .param("gpu_pages_remapped", remapped)
        .param("reps", p.reval_reps)
        .param(
            "what",
            "the next submit after MADV_DONTNEED of one page: the driver re-mirrors only the pages its notifier marked stale",
        )
        .emit();
    common(Figure::new("userptr_submit_unchanged", ms(again), "ms"))
        .baseline("userptr_validate_full", ms(full))
        .param(
            "what",
            "a submit of the validated object with nothing changed (sequence check only)",
        )
        .emit();
    drop(bo);
    drop(ctx);
    Ok(())
}
