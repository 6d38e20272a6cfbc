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
    pub bos: usize,
    pub sparse_gib: usize,
    pub sparse_touches: usize,
    pub procs: usize,
    pub proc_jobs: usize,
    pub proc_copy: usize,
}

pub const DEFAULT: Params = Params {
    bos: 10_000,
    sparse_gib: 64,
    sparse_touches: 300,
    procs: 4,
    proc_jobs: 24,
    proc_copy: 4 * MIB,
};

pub fn run(p: &Params) -> R<()> {
    many_bos(p)?;
    sparse(p)?;
    procs(p)?;
    Ok(())
}

const GPU_VA: u64 = 0x1000_0000_0000;

fn many_bos(p: &Params) -> R<()> {
    let m = fresh(p.bos * PAGE, false)?;
    touch_pages(m.addr(), p.bos * PAGE);
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
    let create = t.elapsed();
    let t = Instant::now();
    for (i, bo) in bos.iter().enumerate() {
        bo.bind(GPU_VA + (i * PAGE) as u64).ctx("BIND")?;
    }
    let bind = t.elapsed();
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
    let validate = t.elapsed();
    // The batch holding object `victim`, unchanged vs after a one-page invalidation.
    let victim = p.bos / 2;
    let vb = victim / MAX_HANDLES;
    let mut unchanged = Vec::new();
    let mut after = Vec::new();
    for rep in 0..3 {
        let (r, d) = timed(|| ctx.submit_readonly(&jobs[vb]));
        r.ctx("submit unchanged")?;
        unchanged.push(ms(d));
        madvise(
            m.addr() + ((victim + rep) * PAGE) as u64,
            PAGE,
            libc::MADV_DONTNEED,
        )?;
        let (r, d) = timed(|| ctx.submit_readonly(&jobs[vb]));
        r.ctx("submit after invalidation")?;
        after.push(ms(d));
    }
    let common = |f: Figure| {
        f.param("objects", p.bos)
            .param("object_size", "4 KiB each, bound side by side")
    };
    common(Figure::new(
        format!("userptr_{}k_validate_all", p.bos / 1000),
        ms(validate),
        "ms",
    ))
    .param("submits", batches)
    .param("handles_per_submit", MAX_HANDLES)
    .param("create_all_ms", ms(create))
    .param("bind_all_ms", ms(bind))
    .param("create_us_per_object", ms(create) * 1e3 / p.bos as f64)
    .param("bind_us_per_object", ms(bind) * 1e3 / p.bos as f64)
    .emit();
    common(Figure::new(
        format!("userptr_{}k_submit_after_1_invalidation", p.bos / 1000),
        median(&after),
        "ms",
    ))
    .baseline(
        format!("userptr_{}k_submit_unchanged", p.bos / 1000),
        median(&unchanged),
    )
    .param("handles_in_submit", MAX_HANDLES)
    .param("invalidated", "one page of one object (MADV_DONTNEED)")
    .param("reps", after.len())
    .emit();
    let t = Instant::now();
    drop(jobs);
    drop(bos);
    let close = t.elapsed();
    common(Figure::new(
        format!("userptr_{}k_close_all", p.bos / 1000),
        ms(close),
        "ms",
    ))
    .param("what", "unbind + GEM_CLOSE of every object")
    .emit();
    Ok(())
}

fn sparse(p: &Params) -> R<()> {
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
    let rss0 = self_status_kb("VmRSS").unwrap_or(0);
    let free0 = vgpu_tests::sysutil::meminfo("MemFree").unwrap_or(0);
    // Scattered distinct pages: a multiplicative walk over the page numbers.
    let npages = (len / PAGE) as u64;
    let mut x: u64 = 0x9e37_79b9;
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
    let before = ctx.stats().ctx("stats")?;
    let mut lat = Vec::new();
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
    let rss1 = self_status_kb("VmRSS").unwrap_or(0);
    let free1 = vgpu_tests::sysutil::meminfo("MemFree").unwrap_or(0);
    Figure::new(format!("svm_sparse_{}g_faults_per_s", p.sparse_gib), d.faults_serviced as f64 / total.as_secs_f64(), "faults/s")
        .param("range_gib", p.sparse_gib)
        .param("touches", pages.len())
        .param("faults_serviced", d.faults_serviced)
        .param("gpu_pages_mapped", d.pages_mapped)
        .param("job_p50_us", percentile(&lat, 50.0) / 1e3)
        .param("rss_growth_kib", rss1 as i64 - rss0 as i64)
        .param("memfree_drop_kib", free0 as i64 - free1 as i64)
        .param("note", "mmap PROT_READ|WRITE MAP_NORESERVE + MADV_NOHUGEPAGE; one 8-byte WRITE_PATTERN job per scattered page; each write fault faults in its own page only (its window's neighbours are mirrored as the CPU maps them, never allocated): rss_growth_kib / touches is the RSS per sparse write")
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
    let one = concurrent(p, 1)?;
    let many = concurrent(p, p.procs)?;
    Figure::new(
        format!("concurrent_{}proc_jobs_per_s", p.procs),
        many,
        "jobs/s",
    )
    .baseline("single_proc_jobs_per_s", one)
    .param(
        "job",
        format!(
            "COPY of {} MiB, mirrored memory, no faults",
            p.proc_copy / MIB
        ),
    )
    .param("jobs_per_process", p.proc_jobs)
    .param("aggregate_gb_per_s", many * p.proc_copy as f64 / 1e9)
    .param(
        "note",
        "2 guest vCPUs; the device runs one worker thread per context on a 2-core host",
    )
    .emit();
    Ok(())
}
