//! Figure 2: validating a big userptr object (pages/s) against dmirror's
//! HMM_DMIRROR_SNAPSHOT and gup_test's PIN_BASIC_TEST of the same
//! (CPU-populated, 4 KiB-mapped) range; then revalidation after a one-page
//! invalidation (MADV_DONTNEED) against the full validation.

use vgpu::{Context, Job};

use super::fault::fresh;
use super::*;

pub struct Params {
    pub size: usize,
    /// Repetitions: each a new object over the same range, its full
    /// validation, dmirror's snapshot and gup_test's pin of the range, a
    /// submit with nothing changed, and a revalidation after one page dropped.
    pub reps: usize,
}

pub const DEFAULT: Params = Params {
    size: 512 * MIB,
    reps: 7,
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
    let (mut full, mut again, mut snap, mut gup, mut reval) =
        (vec![], vec![], vec![], vec![], vec![]);
    let (mut mapped, mut remapped, mut pinned, mut unpin_us) = (0, 0, 0, 0);
    let mut perm = vec![0u8; pages];
    for rep in 0..p.reps {
        progress(&format!("userptr: rep {}/{}", rep + 1, p.reps));
        let bo = ctx
            .userptr_raw(m.addr() as *const u8, p.size, false)
            .ctx("USERPTR_CREATE")?;
        bo.bind(GPU_VA).ctx("BIND")?;
        let job = Job::new().read(GPU_VA, PAGE as u64).uses(&bo);
        let before = ctx.stats().ctx("stats")?;
        let (r, d) = timed(|| ctx.submit_readonly(&job));
        r.ctx("first submit (full validation)")?;
        full.push(d.as_secs_f64());
        mapped = ctx.stats().ctx("stats")?.delta_since(&before).pages_mapped;
        // The same submit with nothing changed: the job alone.
        let (r, d) = timed(|| ctx.submit_readonly(&job));
        r.ctx("second submit")?;
        again.push(ms(d));
        // Revalidation after one page is dropped (MADV_DONTNEED).
        let page = m.addr() + (((rep + 1) * pages / (p.reps + 1)) * PAGE) as u64;
        madvise(page, PAGE, libc::MADV_DONTNEED)?;
        let before = ctx.stats().ctx("stats")?;
        let (r, d) = timed(|| ctx.submit_readonly(&job));
        r.ctx("submit after MADV_DONTNEED")?;
        remapped = ctx.stats().ctx("stats")?.delta_since(&before).pages_mapped;
        reval.push(ms(d));
        drop(job);
        drop(bo);
        // dmirror snapshot of the same range.
        let dm = Dmirror::open()?;
        let (r, d) = timed(|| dm.snapshot(m.addr(), &mut perm));
        r?;
        snap.push(d.as_secs_f64());
        drop(dm);
        // gup_test pin (and unpin) of the same range.
        let (g, _) = gup_test(PIN_BASIC_TEST, m.addr(), p.size as u64, 512, FOLL_WRITE)?;
        pinned = g.size as usize / PAGE;
        unpin_us = g.put_delta_usec;
        gup.push(g.get_delta_usec as f64 / 1e6);
    }
    let rate = |v: &[f64], n: usize| v.iter().map(|s| n as f64 / s).collect::<Vec<f64>>();
    let full_rate = rate(&full, pages);
    let full_ms: Vec<f64> = full.iter().map(|s| s * 1e3).collect();
    common(Figure::from_reps("userptr_validate_full", &full_rate, "pages/s"))
        .baseline_reps("dmirror_snapshot", &rate(&snap, pages))
        .param("gpu_pages_mapped", mapped)
        .param("cpu_populate_ms", ms(populate))
        .param("reps", p.reps)
        .param(
            "dmirror",
            "HMM_DMIRROR_SNAPSHOT (hmm_range_fault without faulting, 32 pages a call)",
        )
        .emit();
    common(Figure::from_reps("userptr_validate_full_vs_gup", &full_rate, "pages/s"))
        .baseline_reps("gup_pin_basic", &rate(&gup, pinned))
        .param("gup", "PIN_BASIC_TEST, FOLL_WRITE, 512 pages a call; kernel-timed pin (get_delta_usec); unpin not counted")
        .param("gup_pinned_pages", pinned)
        .param("gup_unpin_us", unpin_us)
        .emit();
    common(Figure::from_reps("userptr_revalidate_1page", &reval, "ms"))
        .baseline_reps("userptr_validate_full", &full_ms)
        .param("changed_pages", 1)
        .param("gpu_pages_remapped", remapped)
        .param("reps", p.reps)
        .param(
            "what",
            "the next submit after MADV_DONTNEED of one page: the driver re-mirrors only the pages its notifier marked stale",
        )
        .emit();
    common(Figure::from_reps("userptr_submit_unchanged", &again, "ms"))
        .baseline_reps("userptr_validate_full", &full_ms)
        .param(
            "what",
            "a submit of the validated object with nothing changed (sequence check only)",
        )
        .emit();
    drop(ctx);
    Ok(())
}
