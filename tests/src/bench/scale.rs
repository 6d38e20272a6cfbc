//! Figure 5: scale. 10,000 userptr objects in one process; a 64 GiB sparse
//! SVM range touched at a few hundred scattered pages; four processes with a
//! context each running jobs concurrently vs one.

use std::time::Instant;

use vgpu::{Context, Job, MAX_HANDLES};
use vgpu_tests::child::fork_child;
use vgpu_tests::mem::Mapping;

use super::fault::{fresh, svm_context};
use super::*;

pub struct Params {
    /// Repetitions of every measurement.
    pub reps: usize,
    pub bos: usize,
    pub sparse_gib: usize,
    pub sparse_touches: usize,
    pub procs: usize,
    pub proc_jobs: usize,
    pub proc_copy: usize,
}

pub const DEFAULT: Params = Params {
    reps: 7,
    bos: 10_000,
    sparse_gib: 64,
    sparse_touches: 64,
    procs: 4,
    proc_jobs: 96,
    proc_copy: 4 * MIB,
};

pub fn run(p: &Params) -> R<()> {
    many_bos(p)?;
    sparse(p)?;
    procs(p)?;
    Ok(())
}

const GPU_VA: u64 = 0x1000_0000_0000;

/// BIND of every object, one after the other at consecutive GPU VAs (one
/// BIND ioctl per object). Kept apart so that a batched BIND can replace it.
fn bind_all(ctx: &Context, bos: &[vgpu::UserptrBo<'_>]) -> R<()> {
    // BIND_ARRAY: up to 4096 objects per ioctl, 1024 per device command.
    let binds: Vec<_> = bos.iter().enumerate().map(|(i, bo)| (bo, GPU_VA + (i * PAGE) as u64)).collect();
    ctx.bind_many(&binds).ctx("BIND_ARRAY")
}

/// One repetition of the 10,000 objects: create, bind, validate, submit
/// unchanged vs after a one-page invalidation, close. Times in ms.
struct BoRep {
    create: f64,
    bind: f64,
    validate: f64,
    unchanged: f64,
    after: f64,
    close: f64,
}

fn many_bos_once(p: &Params, m: &Mapping, rep: usize) -> R<BoRep> {
    let ctx = Context::open_default().ctx("open")?;
    ctx.config(false).ctx("CTX_CONFIG")?;
    let t = Instant::now();
    let mut bos = Vec::with_capacity(p.bos);
    for i in 0..p.bos {
        bos.push(
            ctx.userptr_raw((m.addr() as usize + i * PAGE) as *const u8, PAGE, false)
                .ctx("USERPTR_CREATE")?,
        );
    }
    let create = ms(t.elapsed());
    let (r, bind) = timed(|| bind_all(&ctx, &bos));
    r?;
    // One job per batch of MAX_HANDLES objects; it reads the batch's first object.
    let batch_job = |b: usize| {
        let lo = b * MAX_HANDLES;
        let hi = (lo + MAX_HANDLES).min(p.bos);
        bos[lo..hi].iter().fold(
            Job::new().read(GPU_VA + (lo * PAGE) as u64, PAGE as u64),
            |j, bo| j.uses(bo),
        )
    };
    let batches = p.bos.div_ceil(MAX_HANDLES);
    let jobs: Vec<Job> = (0..batches).map(batch_job).collect();
    let t = Instant::now();
    for j in &jobs {
        ctx.submit_readonly(j).ctx("validate batch")?;
    }
    let validate = ms(t.elapsed());
    // The batch holding object `victim`, unchanged vs after a one-page invalidation.
    let victim = p.bos / 2 + rep;
    let vb = victim / MAX_HANDLES;
    let (r, d) = timed(|| ctx.submit_readonly(&jobs[vb]));
    r.ctx("submit unchanged")?;
    let unchanged = ms(d);
    madvise(m.addr() + (victim * PAGE) as u64, PAGE, libc::MADV_DONTNEED)?;
    let (r, d) = timed(|| ctx.submit_readonly(&jobs[vb]));
    r.ctx("submit after invalidation")?;
    let after = ms(d);
    let t = Instant::now();
    drop(jobs);
    ctx.close_many(bos).ctx("close_many")?;
    let close = ms(t.elapsed());
    drop(ctx);
    Ok(BoRep {
        create,
        bind: ms(bind),
        validate,
        unchanged,
        after,
        close,
    })
}

fn many_bos(p: &Params) -> R<()> {
    let m = fresh(p.bos * PAGE, false)?;
    touch_pages(m.addr(), p.bos * PAGE);
    let mut v = Vec::new();
    for rep in 0..p.reps {
        progress(&format!("scale: {} objects, rep {}/{}", p.bos, rep + 1, p.reps));
        v.push(many_bos_once(p, &m, rep)?);
    }
    let col = |f: &dyn Fn(&BoRep) -> f64| v.iter().map(f).collect::<Vec<f64>>();
    let n = p.bos as f64;
    let common = |f: Figure| {
        f.param("objects", p.bos)
            .param("object_size", "4 KiB each, bound side by side")
            .param("reps", p.reps)
    };
    let k = p.bos / 1000;
    common(Figure::from_reps(
        format!("userptr_{k}k_bind_per_object"),
        &col(&|r| r.bind * 1e3 / n),
        "us",
    ))
    .param("what", "BIND of every object with BIND_ARRAY (Context::bind_many: 4096 per ioctl, 1024 per device command; consecutive GPU VAs), total time / objects")
    .param("bind_all_ms", median(&col(&|r| r.bind)))
    .emit();
    common(Figure::from_reps(
        format!("userptr_{k}k_create_per_object"),
        &col(&|r| r.create * 1e3 / n),
        "us",
    ))
    .emit();
    common(Figure::from_reps(format!("userptr_{k}k_validate_all"), &col(&|r| r.validate), "ms"))
        .param("submits", p.bos.div_ceil(MAX_HANDLES))
        .param("handles_per_submit", MAX_HANDLES)
        .emit();
    common(Figure::from_reps(
        format!("userptr_{k}k_submit_after_1_invalidation"),
        &col(&|r| r.after),
        "ms",
    ))
    .baseline_reps(format!("userptr_{k}k_submit_unchanged"), &col(&|r| r.unchanged))
    .param("handles_in_submit", MAX_HANDLES)
    .param("invalidated", "one page of one object (MADV_DONTNEED)")
    .emit();
    common(Figure::from_reps(format!("userptr_{k}k_close_all"), &col(&|r| r.close), "ms"))
        .param("what", "one UNBIND_ARRAY batch (4096 per ioctl) + GEM_CLOSE of every object (Context::close_many)")
        .param("close_us_per_object", median(&col(&|r| r.close)) * 1e3 / n)
        .emit();
    Ok(())
}

/// One repetition: a fresh 64 GiB NORESERVE range, a fresh SVM context,
/// one 8-byte job per scattered page. Returns (KiB of the range's RSS per
/// write, faults/s, faults serviced, job p50 µs).
fn sparse_once(p: &Params, rep: usize) -> R<(f64, f64, u64, f64)> {
    let len = p.sparse_gib << 30;
    let m = Mapping::new(
        0,
        len,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
        -1,
        0,
    )
    .ctx("mmap 64 GiB NORESERVE")?;
    madvise(m.addr(), len, libc::MADV_NOHUGEPAGE)?;
    let ctx = svm_context()?;
    // Scattered distinct pages: a multiplicative walk over the page numbers.
    let npages = (len / PAGE) as u64;
    let mut x: u64 = 0x9e37_79b9 + rep as u64;
    let mut pages = Vec::with_capacity(p.sparse_touches);
    while pages.len() < p.sparse_touches {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let pg = (x >> 20) % npages;
        if !pages.contains(&pg) {
            pages.push(pg);
        }
    }
    let mut lat = Vec::with_capacity(pages.len());
    let rss0 = vgpu_tests::sysutil::smaps_kb(m.addr(), "Rss").unwrap_or(0);
    let before = ctx.stats().ctx("stats")?;
    let t = Instant::now();
    for (i, &pg) in pages.iter().enumerate() {
        let va = m.addr() + pg * PAGE as u64;
        // SAFETY: writes 8 bytes of our private mapping.
        let (r, d) = timed(|| unsafe { ctx.submit(&Job::new().write_pattern(va, 8, i as u64)) });
        r.ctx("sparse job")?;
        lat.push(ns(d));
    }
    let total = t.elapsed();
    let d = ctx.stats().ctx("stats")?.delta_since(&before);
    let rss1 = vgpu_tests::sysutil::smaps_kb(m.addr(), "Rss").unwrap_or(0);
    Ok((
        (rss1 as f64 - rss0 as f64) / pages.len() as f64,
        d.faults_serviced as f64 / total.as_secs_f64(),
        d.faults_serviced,
        percentile(&lat, 50.0) / 1e3,
    ))
}

fn sparse(p: &Params) -> R<()> {
    let (mut rss, mut rate, mut faults, mut p50) = (vec![], vec![], 0, vec![]);
    for rep in 0..p.reps {
        progress(&format!("scale: sparse {} GiB, rep {}/{}", p.sparse_gib, rep + 1, p.reps));
        let (a, b, c, d) = sparse_once(p, rep)?;
        rss.push(a);
        rate.push(b);
        faults += c;
        p50.push(d);
    }
    let common = |f: Figure| {
        f.param("range_gib", p.sparse_gib)
            .param("touches_per_rep", p.sparse_touches)
            .param("reps", p.reps)
            .param("faults_serviced", faults)
            .param("note", "mmap PROT_READ|WRITE MAP_NORESERVE + MADV_NOHUGEPAGE, a fresh range and SVM context per repetition; one 8-byte WRITE_PATTERN job per scattered page")
    };
    common(Figure::from_reps("svm_sparse_rss_per_write", &rss, "KiB"))
        .param("what", "growth of the range's Rss (/proc/self/smaps) / number of 8-byte writes: 4 KiB if a write fault allocates only its own page")
        .emit();
    common(Figure::from_reps(format!("svm_sparse_{}g_faults_per_s", p.sparse_gib), &rate, "faults/s"))
        .param("job_p50_us_median", median(&p50))
        .emit();
    Ok(())
}

/// Jobs/s of `n` processes, each with its own context, each running
/// `p.proc_jobs` COPY jobs of `p.proc_copy` bytes (mirrored memory).
fn concurrent(p: &Params, n: usize) -> R<f64> {
    let (jobs, copy) = (p.proc_jobs, p.proc_copy);
    let mut kids = Vec::new();
    for _ in 0..n {
        let c = fork_child(move |side| {
            let ctx = svm_context()?;
            let src = fresh(copy, false)?;
            let dst = fresh(copy, false)?;
            let job = Job::new().copy(dst.addr(), src.addr(), copy as u64);
            // SAFETY: writes only this child's private mappings.
            unsafe {
                ctx.submit(&Job::new().write_pattern(src.addr(), copy as u64, 1).copy(
                    dst.addr(),
                    src.addr(),
                    copy as u64,
                ))
            }
            .ctx("warm-up")?;
            side.signal();
            side.wait()?;
            for _ in 0..jobs {
                // SAFETY: as above.
                unsafe { ctx.submit(&job) }.ctx("copy job")?;
            }
            side.signal();
            side.wait()?;
            Ok(())
        })
        .ctx("fork")?;
        kids.push(c);
    }
    for k in &mut kids {
        k.wait_signal()?;
    }
    let t = Instant::now();
    for k in &mut kids {
        k.go();
    }
    for k in &mut kids {
        k.wait_signal()?;
    }
    let d = t.elapsed();
    for mut k in kids {
        k.go();
        k.join()?;
    }
    Ok((n * jobs) as f64 / d.as_secs_f64())
}

fn procs(p: &Params) -> R<()> {
    let (mut one, mut many) = (vec![], vec![]);
    for rep in 0..p.reps {
        progress(&format!("scale: {} processes vs 1, rep {}/{}", p.procs, rep + 1, p.reps));
        one.push(concurrent(p, 1)?);
        many.push(concurrent(p, p.procs)?);
    }
    Figure::from_reps(
        format!("concurrent_{}proc_jobs_per_s", p.procs),
        &many,
        "jobs/s",
    )
    .baseline_reps("single_proc_jobs_per_s", &one)
    .param(
        "job",
        format!(
            "COPY of {} MiB, mirrored memory, no faults",
            p.proc_copy / MIB
        ),
    )
    .param("jobs_per_process", p.proc_jobs)
    .param("reps", p.reps)
    .param("aggregate_gb_per_s", median(&many) * p.proc_copy as f64 / 1e9)
    .param(
        "note",
        "2 guest vCPUs; the device runs one worker thread per context on a 2-core host",
    )
    .emit();
    Ok(())
}
