//! Figure 1: SVM fault service, 4 KiB vs THP, against test_hmm (dmirror)
//! faulting the same kind of range in the same VM.
//!
//! Every measurement 7 times, SVM and dmirror interleaved.
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
    /// Single-page samples per repetition, 4 KiB.
    pub n_4k: usize,
    /// Single-page samples per repetition, THP (one fresh 2 MiB block each).
    pub n_thp: usize,
    /// Repetitions of every measurement (value and baseline interleaved).
    pub reps: usize,
}

pub const DEFAULT: Params = Params {
    range: 64 * MIB,
    n_4k: 150,
    n_thp: 16,
    reps: 7,
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

/// SVM pages/s of one job over a fresh range; faults serviced, AnonHugePages.
pub fn svm_throughput(ctx: &Context, range: usize, thp: bool, rep: usize) -> R<(f64, u64, u64)> {
    let m = fresh(range, thp)?;
    let before = ctx.stats().ctx("stats")?;
    // SAFETY: the job writes only the fresh private mapping `m`.
    let (r, d) = timed(|| unsafe {
        ctx.submit(&Job::new().write_pattern(m.addr(), range as u64, rep as u64))
    });
    r.ctx("svm write job")?;
    let faults = ctx.stats().ctx("stats")?.delta_since(&before).faults_serviced;
    let huge_kb = vgpu_tests::sysutil::smaps_kb(m.addr(), "AnonHugePages").unwrap_or(0);
    Ok(((range / PAGE) as f64 / d.as_secs_f64(), faults, huge_kb))
}

fn throughput(ctx: &Context, dm: &Dmirror, p: &Params, thp: bool) -> R<()> {
    let kind = if thp { "thp" } else { "4k" };
    // dmirror: HMM_DMIRROR_WRITE from a prefaulted user buffer.
    let buf = Mapping::anon(p.range).ctx("mmap buffer")?;
    touch_pages(buf.addr(), p.range);
    let (mut svm, mut dmr) = (Vec::new(), Vec::new());
    let (mut faults, mut huge_kb, mut dfaults, mut dhuge_kb) = (0, 0, 0, 0);
    for rep in 0..p.reps {
        progress(&format!("fault: throughput {kind}, rep {}/{}", rep + 1, p.reps));
        let (rate, f, h) = svm_throughput(ctx, p.range, thp, rep)?;
        (faults, huge_kb) = (f, h);
        svm.push(rate);
        let m = fresh(p.range, thp)?;
        let (r, d) = timed(|| dm.write(m.addr(), buf.addr(), (p.range / PAGE) as u64));
        dfaults = r?.faults;
        dhuge_kb = vgpu_tests::sysutil::smaps_kb(m.addr(), "AnonHugePages").unwrap_or(0);
        dmr.push((p.range / PAGE) as f64 / d.as_secs_f64());
    }
    Figure::from_reps(format!("svm_fault_throughput_{kind}"), &svm, "pages/s")
        .baseline_reps(format!("dmirror_write_fault_throughput_{kind}"), &dmr)
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
        .param("reps", p.reps)
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

/// 1-page jobs on `pages`, each timed (ns).
fn one_page_jobs(ctx: &Context, pages: &[u64], what: &str) -> R<Vec<f64>> {
    one_page_jobs_with(ctx, pages, what, |j| j)
}

/// [`one_page_jobs`], each job passed through `adjust` (e.g. `Job::prefault`).
fn one_page_jobs_with(
    ctx: &Context,
    pages: &[u64],
    what: &str,
    adjust: impl Fn(Job) -> Job,
) -> R<Vec<f64>> {
    let mut v = Vec::with_capacity(pages.len());
    for (i, &va) in pages.iter().enumerate() {
        let job = adjust(Job::new().write_pattern(va, PAGE as u64, i as u64));
        // SAFETY: writes one page of a private mapping of the caller's.
        let (r, d) = timed(|| unsafe { ctx.submit(&job) });
        r.ctx(what)?;
        v.push(ns(d));
    }
    Ok(v)
}

/// Runs `f` and returns the device faults the driver serviced for `ctx` meanwhile.
fn serviced(ctx: &Context, f: impl FnOnce() -> R<()>) -> R<u64> {
    let before = ctx.stats().ctx("stats")?;
    f()?;
    Ok(ctx.stats().ctx("stats")?.delta_since(&before).faults_serviced)
}

/// p50 and p99 (µs) of a sample in ns.
fn p50_99(s: &[f64]) -> (f64, f64) {
    (percentile(s, 50.0) / 1e3, percentile(s, 99.0) / 1e3)
}

#[derive(Default)]
struct Series {
    p50: Vec<f64>,
    p99: Vec<f64>,
    all: Vec<f64>,
}

impl Series {
    fn push(&mut self, s: Vec<f64>) {
        let (a, b) = p50_99(&s);
        self.p50.push(a);
        self.p99.push(b);
        self.all.extend(s);
    }
}

fn latency(ctx: &Context, dm: &Dmirror, p: &Params) -> R<()> {
    let mut svm_4k = Series::default();
    let mut nofault = Series::default();
    let mut dm_4k = Series::default();
    let mut svm_thp = Series::default();
    let mut dm_thp = Series::default();
    let mut prefault = Series::default();
    let (mut f4k, mut f_again, mut fthp, mut f_pre) = (0, 0, 0, 0);
    let src = Mapping::anon(PAGE).ctx("mmap")?;
    touch_pages(src.addr(), PAGE);
    for rep in 0..p.reps {
        progress(&format!("fault: latency, rep {}/{}", rep + 1, p.reps));
        // SVM, 4 KiB: fresh pages (one fault each), then the same jobs again
        // (mirrored now: no fault), then dmirror on fresh pages.
        let (m, pages) = guarded_pages(p.n_4k)?;
        f4k += serviced(ctx, || Ok(svm_4k.push(one_page_jobs(ctx, &pages, "svm 1-page job")?)))?;
        f_again += serviced(ctx, || Ok(nofault.push(one_page_jobs(ctx, &pages, "svm 1-page job (mirrored)")?)))?;
        drop(m);
        // The same on fresh pages with SUBMIT_PREFAULT: the driver mirrors the page before
        // the job starts, so the job takes no device fault.
        let (m, pages) = guarded_pages(p.n_4k)?;
        f_pre += serviced(ctx, || {
            Ok(prefault.push(one_page_jobs_with(ctx, &pages, "svm 1-page job (PREFAULT)", Job::prefault)?))
        })?;
        drop(m);
        let m = fresh(p.n_4k * PAGE, false)?;
        let mut d4 = Vec::with_capacity(p.n_4k);
        for i in 0..p.n_4k {
            let (r, d) = timed(|| dm.write(m.addr() + (i * PAGE) as u64, src.addr(), 1));
            r?;
            d4.push(ns(d));
        }
        dm_4k.push(d4);
        drop(m);
        // THP: first write into fresh 2 MiB blocks.
        fthp += serviced(ctx, || {
            let m = fresh(p.n_thp * HPAGE, true)?;
            let blocks: Vec<u64> = (0..p.n_thp).map(|b| m.addr() + (b * HPAGE) as u64).collect();
            svm_thp.push(one_page_jobs(ctx, &blocks, "svm 1-page job (THP)")?);
            Ok(())
        })?;
        let m = fresh(p.n_thp * HPAGE, true)?;
        let mut dt = Vec::with_capacity(p.n_thp);
        for b in 0..p.n_thp {
            let (r, d) = timed(|| dm.write(m.addr() + (b * HPAGE) as u64, src.addr(), 1));
            r?;
            dt.push(ns(d));
        }
        dm_thp.push(dt);
    }
    Figure::from_reps("svm_fault_job_vs_nofault_p50_4k", &svm_4k.p50, "us")
        .baseline_reps("svm_1page_job_nofault_p50", &nofault.p50)
        .param("samples_per_rep", p.n_4k)
        .param("faults_serviced", f4k)
        .param("faults_serviced_in_nofault_jobs", f_again)
        .param("what", "per repetition, p50 of 1-page WRITE_PATTERN jobs on fresh pages (one fault each) vs p50 of the same jobs again on the now mirrored pages (no fault)")
        .samples_only("fault-latency", "SVM 4k, already mirrored (no fault)", &nofault.all)
        .emit();
    Figure::from_reps("svm_prefault_job_vs_nofault_p50_4k", &prefault.p50, "us")
        .baseline_reps("svm_1page_job_nofault_p50", &nofault.p50)
        .param("samples_per_rep", p.n_4k)
        .param("faults_serviced", f_pre)
        .param("what", "per repetition, p50 of 1-page WRITE_PATTERN jobs with SUBMIT_PREFAULT on fresh pages (the driver mirrors the page at submit: no device fault) vs p50 of 1-page jobs on mirrored pages")
        .samples_only("fault-latency", "SVM 4k, SUBMIT_PREFAULT (no fault)", &prefault.all)
        .emit();
    for (kind, s, d, faults, note, n) in [
        (
            "4k",
            &svm_4k,
            &dm_4k,
            f4k,
            "one-page VMAs between PROT_NONE guards, so the driver's fault window maps one page",
            p.n_4k,
        ),
        (
            "thp",
            &svm_thp,
            &dm_thp,
            fthp,
            "first write into a fresh MADV_HUGEPAGE 2 MiB block (allocates and zeroes 2 MiB)",
            p.n_thp,
        ),
    ] {
        for (label, v, b) in [("p50", &s.p50, &d.p50), ("p99", &s.p99, &d.p99)] {
            let mut f = Figure::from_reps(format!("svm_fault_latency_{label}_{kind}"), v, "us")
                .baseline_reps(format!("dmirror_fault_latency_{label}_{kind}"), b)
                .param("samples_per_rep", n)
                .param("reps", p.reps)
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
                    &s.all,
                    &format!("dmirror {kind}"),
                    &d.all,
                );
            }
            f.emit();
        }
    }
    Ok(())
}
