//! Figure 1: SVM fault service, 4 KiB vs THP, against test_hmm (dmirror)
//! faulting the same kind of range in the same VM.
//!
//! - Throughput: one device WRITE_PATTERN job over a fresh range (faults
//!   serviced from STATS) vs one HMM_DMIRROR_WRITE over a fresh range of the
//!   same size and kind.
//! - Latency: single-page jobs, each on a fresh page (one fault round trip
//!   each), vs single-page HMM_DMIRROR_WRITEs on fresh pages. For 4 KiB the
//!   pages are one-page VMAs (PROT_NONE guards between them), so that the
//!   driver's 64-page fault window maps one page, as dmirror does; for THP
//!   each sample is the first write into a fresh 2 MiB block.

use vgpu::{Context, Job};
use vgpu_tests::mem::Mapping;

use super::*;

/// Fresh anonymous memory, THP or not.
pub fn fresh(len: usize, thp: bool) -> R<Mapping> {
    let m = if thp {
        Mapping::anon_aligned(len, HPAGE)
    } else {
        Mapping::anon(len)
    }
    .ctx("mmap")?;
    madvise(
        m.addr(),
        len,
        if thp {
            libc::MADV_HUGEPAGE
        } else {
            libc::MADV_NOHUGEPAGE
        },
    )?;
    Ok(m)
}

pub fn svm_context() -> R<Context> {
    let ctx = Context::open_default().ctx("open render node")?;
    ctx.config(true).ctx("CTX_CONFIG svm")?;
    Ok(ctx)
}

pub struct Params {
    /// Bytes of the throughput range.
    pub range: usize,
    /// Single-page samples, 4 KiB.
    pub n_4k: usize,
    /// Single-page samples, THP (one fresh 2 MiB block each).
    pub n_thp: usize,
    /// Repetitions of the throughput measurement (best is reported).
    pub reps: usize,
}

pub const DEFAULT: Params = Params {
    range: 64 * MIB,
    n_4k: 1000,
    n_thp: 128,
    reps: 3,
};

pub fn run(p: &Params) -> R<()> {
    let ctx = svm_context()?;
    let dm = Dmirror::open()?;
    for thp in [false, true] {
        throughput(&ctx, &dm, p, thp)?;
    }
    latency(&ctx, &dm, p)?;
    Ok(())
}

/// SVM pages/s of one job over a fresh range (best of reps); faults per job.
pub fn svm_throughput(ctx: &Context, range: usize, thp: bool, reps: usize) -> R<(f64, u64, u64)> {
    let mut best = f64::MAX;
    let (mut faults, mut huge_kb) = (0, 0);
    for rep in 0..reps {
        let m = fresh(range, thp)?;
        let before = ctx.stats().ctx("stats")?;
        // SAFETY: the job writes only the fresh private mapping `m`.
        let (r, d) = timed(|| unsafe {
            ctx.submit(&Job::new().write_pattern(m.addr(), range as u64, rep as u64))
        });
        r.ctx("svm write job")?;
        let delta = ctx.stats().ctx("stats")?.delta_since(&before);
        faults = delta.faults_serviced;
        huge_kb = vgpu_tests::sysutil::smaps_kb(m.addr(), "AnonHugePages").unwrap_or(0);
        best = best.min(d.as_secs_f64());
    }
    Ok(((range / PAGE) as f64 / best, faults, huge_kb))
}

fn throughput(ctx: &Context, dm: &Dmirror, p: &Params, thp: bool) -> R<()> {
    let kind = if thp { "thp" } else { "4k" };
    let (svm, faults, huge_kb) = svm_throughput(ctx, p.range, thp, p.reps)?;
    // dmirror: HMM_DMIRROR_WRITE from a prefaulted user buffer.
    let buf = Mapping::anon(p.range).ctx("mmap buffer")?;
    touch_pages(buf.addr(), p.range);
    let mut best = f64::MAX;
    let mut dfaults = 0;
    let mut dhuge_kb = 0;
    for _ in 0..p.reps {
        let m = fresh(p.range, thp)?;
        let (r, d) = timed(|| dm.write(m.addr(), buf.addr(), (p.range / PAGE) as u64));
        dfaults = r?.faults;
        dhuge_kb = vgpu_tests::sysutil::smaps_kb(m.addr(), "AnonHugePages").unwrap_or(0);
        best = best.min(d.as_secs_f64());
    }
    let dm_rate = (p.range / PAGE) as f64 / best;
    Figure::new(format!("svm_fault_throughput_{kind}"), svm, "pages/s")
        .baseline(format!("dmirror_write_fault_throughput_{kind}"), dm_rate)
        .param("range_mib", p.range / MIB)
        .param("svm_job", "one WRITE_PATTERN job over a fresh range")
        .param("svm_faults_serviced", faults)
        .param("svm_anon_huge_kb", huge_kb)
        .param(
            "dmirror",
            "one HMM_DMIRROR_WRITE over a fresh range (also copies the data in the guest)",
        )
        .param("dmirror_faults", dfaults)
        .param("dmirror_anon_huge_kb", dhuge_kb)
        .param("best_of", p.reps)
        .emit();
    Ok(())
}

/// 4 KiB one-page VMAs: `n` pages separated by PROT_NONE guard pages.
fn guarded_pages(n: usize) -> R<(Mapping, Vec<u64>)> {
    let m = fresh(2 * n * PAGE, false)?;
    let mut pages = Vec::with_capacity(n);
    for i in 0..n {
        let guard = m.addr() + ((2 * i + 1) * PAGE) as u64;
        // SAFETY: a page of our own mapping.
        if unsafe { libc::mprotect(guard as *mut libc::c_void, PAGE, libc::PROT_NONE) } != 0 {
            return Err(format!("mprotect guard: {}", io::Error::last_os_error()));
        }
        pages.push(m.addr() + (2 * i * PAGE) as u64);
    }
    Ok((m, pages))
}

fn latency(ctx: &Context, dm: &Dmirror, p: &Params) -> R<()> {
    // SVM, 4 KiB.
    let (m, pages) = guarded_pages(p.n_4k)?;
    let before = ctx.stats().ctx("stats")?;
    let mut svm_4k = Vec::with_capacity(pages.len());
    for (i, &va) in pages.iter().enumerate() {
        // SAFETY: writes one page of the fresh mapping `m`.
        let (r, d) =
            timed(|| unsafe { ctx.submit(&Job::new().write_pattern(va, PAGE as u64, i as u64)) });
        r.ctx("svm 1-page job")?;
        svm_4k.push(ns(d));
    }
    let f4k = ctx
        .stats()
        .ctx("stats")?
        .delta_since(&before)
        .faults_serviced;
    // The same single-page jobs again: the pages are mirrored now, no fault.
    let mut nofault = Vec::with_capacity(pages.len());
    let before = ctx.stats().ctx("stats")?;
    for (i, &va) in pages.iter().enumerate() {
        // SAFETY: as above.
        let (r, d) =
            timed(|| unsafe { ctx.submit(&Job::new().write_pattern(va, PAGE as u64, i as u64)) });
        r.ctx("svm 1-page job (mirrored)")?;
        nofault.push(ns(d));
    }
    let f_again = ctx
        .stats()
        .ctx("stats")?
        .delta_since(&before)
        .faults_serviced;
    Figure::new("svm_1page_job_nofault_p50", percentile(&nofault, 50.0) / 1e3, "us")
        .baseline("svm_fault_latency_p50_4k", percentile(&svm_4k, 50.0) / 1e3)
        .param("samples", nofault.len())
        .param("faults_serviced", f_again)
        .param("p99_us", percentile(&nofault, 99.0) / 1e3)
        .param("what", "the same 1-page WRITE_PATTERN jobs on pages already mirrored: the job round trip without a fault")
        .samples_only("fault-latency", "SVM 4k, already mirrored (no fault)", &nofault)
        .emit();
    drop(m);
    // dmirror, 4 KiB (dmirror faults exactly the requested page).
    let src = Mapping::anon(PAGE).ctx("mmap")?;
    touch_pages(src.addr(), PAGE);
    let m = fresh(p.n_4k * PAGE, false)?;
    let mut dm_4k = Vec::with_capacity(p.n_4k);
    for i in 0..p.n_4k {
        let (r, d) = timed(|| dm.write(m.addr() + (i * PAGE) as u64, src.addr(), 1));
        r?;
        dm_4k.push(ns(d));
    }
    drop(m);
    // THP: first write into fresh 2 MiB blocks, in chunks of 16 blocks.
    let (mut svm_thp, mut dm_thp) = (Vec::new(), Vec::new());
    let before = ctx.stats().ctx("stats")?;
    let chunk = 16;
    while svm_thp.len() < p.n_thp {
        let m = fresh(chunk * HPAGE, true)?;
        for b in 0..chunk {
            let va = m.addr() + (b * HPAGE) as u64;
            // SAFETY: writes one page of the fresh mapping `m`.
            let (r, d) = timed(|| unsafe {
                ctx.submit(&Job::new().write_pattern(va, PAGE as u64, b as u64))
            });
            r.ctx("svm 1-page job (THP)")?;
            svm_thp.push(ns(d));
        }
        let m = fresh(chunk * HPAGE, true)?;
        for b in 0..chunk {
            let (r, d) = timed(|| dm.write(m.addr() + (b * HPAGE) as u64, src.addr(), 1));
            r?;
            dm_thp.push(ns(d));
        }
    }
    let fthp = ctx
        .stats()
        .ctx("stats")?
        .delta_since(&before)
        .faults_serviced;
    for (kind, s, d, faults, note) in [
        (
            "4k",
            &svm_4k,
            &dm_4k,
            f4k,
            "one-page VMAs between PROT_NONE guards, so the driver's fault window maps one page",
        ),
        (
            "thp",
            &svm_thp,
            &dm_thp,
            fthp,
            "first write into a fresh MADV_HUGEPAGE 2 MiB block (allocates and zeroes 2 MiB)",
        ),
    ] {
        for (pct, label) in [(50.0, "p50"), (99.0, "p99")] {
            let mut f = Figure::new(
                format!("svm_fault_latency_{label}_{kind}"),
                percentile(s, pct) / 1e3,
                "us",
            )
            .baseline(
                format!("dmirror_fault_latency_{label}_{kind}"),
                percentile(d, pct) / 1e3,
            )
            .param("samples", s.len())
            .param(
                "svm",
                "submit of a 1-page WRITE_PATTERN job on a fresh page (one fault round trip)",
            )
            .param("dmirror", "HMM_DMIRROR_WRITE of 1 fresh page")
            .param("svm_faults_serviced", faults)
            .param("pages", note);
            if label == "p50" {
                f = f.samples(
                    "fault-latency",
                    &format!("SVM {kind}"),
                    s,
                    &format!("dmirror {kind}"),
                    d,
                );
            }
            f.emit();
        }
    }
    Ok(())
}
