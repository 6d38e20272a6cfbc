//! Figure 4, guest side: a device COPY job through the GPU page table vs a
//! CPU memcpy of the same bytes in the guest (`devcopy`, also the group the
//! checker boots run), and the INVALIDATE cost seen from the CPU: munmap of
//! a mirrored page (device idle) vs an unmirrored one measured in a forked
//! child while no context is open (`device` = devcopy + this); and an
//! invalidation storm on a busy device: munmap of many bound userptr objects
//! vs munmap of one, while a job of the context runs.
//!
//! The checker's cost is measured by the host: it boots VMs with `--checker
//! strict` and `--checker off` in turn, each running `--only devcopy`.

use vgpu::Job;
use vgpu_tests::mem::Mapping;

use super::fault::{fresh, svm_context};
use super::*;

pub struct Params {
    pub copy: usize,
    /// Repetitions (device copy and memcpy interleaved; munmap rounds).
    pub reps: usize,
    /// munmap samples per repetition (mirrored, and unmirrored).
    pub munmaps: usize,
}

pub const DEFAULT: Params = Params {
    copy: 64 * MIB,
    reps: 7,
    munmaps: 150,
};

pub fn run(p: &Params) -> R<()> {
    copy(p)?;
    munmap_1page(p)?;
    storm(p)
}

pub fn copy(p: &Params) -> R<()> {
    let ctx = svm_context()?;
    let src = fresh(p.copy, false)?;
    let dst = fresh(p.copy, false)?;
    // SAFETY: writes only the private mappings above.
    unsafe {
        ctx.submit(
            &Job::new().write_pattern(src.addr(), p.copy as u64, 3).copy(
                dst.addr(),
                src.addr(),
                p.copy as u64,
            ),
        )
        .ctx("warm-up job")?
    };
    let job = Job::new().copy(dst.addr(), src.addr(), p.copy as u64);
    let (mut dev, mut cpu) = (Vec::new(), Vec::new());
    let before = ctx.stats().ctx("stats")?;
    for rep in 0..p.reps {
        progress(&format!("devcopy: rep {}/{}", rep + 1, p.reps));
        // SAFETY: as above.
        let (r, d) = timed(|| unsafe { ctx.submit(&job) });
        r.ctx("copy job")?;
        dev.push(ms(d));
        let (_, d) = timed(|| {
            // SAFETY: two distinct private mappings of `copy` bytes, reached only
            // through raw pointers; no job is running.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    src.addr() as *const u8,
                    dst.addr() as *mut u8,
                    p.copy,
                )
            }
        });
        cpu.push(ms(d));
    }
    let delta = ctx.stats().ctx("stats")?.delta_since(&before);
    let gbps = |t: f64| p.copy as f64 / (t / 1e3) / 1e9;
    Figure::from_reps(format!("device_copy_{}m", p.copy / MIB), &dev, "ms")
        .baseline_reps(format!("guest_memcpy_{}m", p.copy / MIB), &cpu)
        .param("device_gb_per_s", gbps(median(&dev)))
        .param("memcpy_gb_per_s", gbps(median(&cpu)))
        .param("reps", p.reps)
        .param(
            "gpu_pages",
            "4 KiB (MADV_NOHUGEPAGE), already mirrored: no faults in the timed jobs",
        )
        .param("faults_in_timed_jobs", delta.faults_serviced)
        .param("accesses_checked", delta.accesses_checked)
        .param(
            "note",
            "the device copies on the host (native); the guest memcpy runs under QEMU TCG",
        )
        .emit();
    Ok(())
}

/// munmap of one mirrored page (device idle) vs one unmirrored page. A
/// repetition: `munmaps` fresh pages, each written by a device job (so
/// mirrored) with an SVM context open, then munmapped one after another
/// (the device idle since the last job ended); then the same number of
/// pages in a child forked with nothing open, touched by the CPU and
/// munmapped the same way. Each repetition gives a p50 and a p99 of each.
///
/// Apart, as a diagnostic: munmap right after a SUBMIT returned, of the
/// page the job wrote (mirrored) vs of a page it did not (unmirrored, the
/// job wrote another): the cost a munmap pays for following a job at once
/// (the submitter slept and was woken: under TCG a few times a plain
/// munmap, mirrored or not), which the target figure leaves out.
pub fn munmap_1page(p: &Params) -> R<()> {
    let n = p.munmaps;
    let (mut mir50, mut mir99, mut pl50, mut pl99, mut st50, mut extra) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let (mut after_mir, mut after_plain) = (vec![], vec![]);
    let (mut all_mir, mut all_plain, mut all_stats) = (vec![], vec![], vec![]);
    let mut inv = 0;
    let pages = |n: usize| -> R<Vec<Mapping>> { (0..n).map(|_| Mapping::anon(PAGE).ctx("mmap")).collect() };
    let unmap = |m: Mapping| -> f64 {
        let (addr, len) = m.leak();
        // SAFETY: our page, leaked here.
        let (_, d) = timed(|| unsafe { libc::munmap(addr as *mut libc::c_void, len) });
        ns(d)
    };
    for rep in 0..p.reps {
        progress(&format!("munmap 1 page: rep {}/{}", rep + 1, p.reps));
        let mut stats_rt = Vec::with_capacity(n);
        let mirrored = {
            let ctx = svm_context()?;
            let ms = pages(n)?;
            for chunk in ms.chunks(vgpu::MAX_OPS) {
                let job = chunk.iter().fold(Job::new(), |j, m| j.write_pattern(m.addr(), PAGE as u64, rep as u64));
                // SAFETY: writes the fresh pages of `chunk` only.
                unsafe { ctx.submit(&job) }.ctx("mirroring job")?;
            }
            let before = ctx.stats().ctx("stats")?;
            let mirrored: Vec<f64> = ms.into_iter().map(unmap).collect();
            inv += ctx.stats().ctx("stats")?.delta_since(&before).device_invalidations;
            // Diagnostic: munmap right after a job, of its page or of another.
            let other = Mapping::anon(PAGE).ctx("mmap")?;
            let (mut a_mir, mut a_plain) = (Vec::with_capacity(n), Vec::with_capacity(n));
            for i in 0..n {
                let m = Mapping::anon(PAGE).ctx("mmap")?;
                // SAFETY: writes the fresh page `m` only.
                unsafe { ctx.submit(&Job::new().write_pattern(m.addr(), PAGE as u64, i as u64)) }.ctx("1-page job")?;
                a_mir.push(unmap(m));
                let m = Mapping::anon(PAGE).ctx("mmap")?;
                touch_pages(m.addr(), PAGE);
                // SAFETY: writes `other` only.
                unsafe { ctx.submit(&Job::new().write_pattern(other.addr(), PAGE as u64, i as u64)) }
                    .ctx("1-page job")?;
                a_plain.push(unmap(m));
            }
            after_mir.push(percentile(&a_mir, 50.0) / 1e3);
            after_plain.push(percentile(&a_plain, 50.0) / 1e3);
            // A device round trip that does nothing: the STATS ioctl.
            for _ in 0..n {
                let (r, d) = timed(|| ctx.stats());
                r.ctx("stats")?;
                stats_rt.push(ns(d));
            }
            mirrored
        };
        let plain = in_child(move || {
            let ms = pages(n)?;
            for m in &ms {
                touch_pages(m.addr(), PAGE);
            }
            Ok(ms.into_iter().map(unmap).collect::<Vec<f64>>())
        })?;
        mir50.push(percentile(&mirrored, 50.0) / 1e3);
        mir99.push(percentile(&mirrored, 99.0) / 1e3);
        pl50.push(percentile(&plain, 50.0) / 1e3);
        pl99.push(percentile(&plain, 99.0) / 1e3);
        st50.push(percentile(&stats_rt, 50.0) / 1e3);
        extra.push(mir50[rep] - pl50[rep]);
        all_mir.extend(mirrored);
        all_plain.extend(plain);
        all_stats.extend(stats_rt);
    }
    Figure::from_reps("invalidate_cost_in_munmap_p50", &extra, "us")
        .baseline_reps("stats_ioctl_roundtrip_p50", &st50)
        .param("what", "per repetition: p50 munmap of a mirrored page minus p50 munmap of an unmirrored page (no context open) vs p50 of the STATS ioctl (a device command that does nothing)")
        .param("samples_per_rep", n)
        .samples_only("invalidate-munmap", "STATS ioctl (no-op device round trip)", &all_stats)
        .emit();
    Figure::from_reps("munmap_1page_after_job_mirrored_p50", &after_mir, "us")
        .baseline_reps("munmap_1page_after_job_unmirrored_p50", &after_plain)
        .param("samples_per_rep", n)
        .param("what", "diagnostic: munmap right after a 1-page SUBMIT returned, of the page the job wrote (mirrored) vs of a CPU-touched page after a job on another page (same context): what mirroring adds to a munmap that follows a job at once")
        .emit();
    for (label, v, b) in [("p50", &mir50, &pl50), ("p99", &mir99, &pl99)] {
        let mut f = Figure::from_reps(format!("munmap_1page_mirrored_{label}"), v, "us")
            .baseline_reps(format!("munmap_1page_unmirrored_{label}"), b)
            .param("samples_per_rep", n)
            .param("reps", p.reps)
            .param("device_invalidations", inv)
            .param("what", "munmap, one after another, of pages an SVM context mirrors (each written by a device job first; device idle since; device_invalidations counts the INVALIDATE round trips) vs of as many CPU-touched pages in a child forked while no context was open");
        if label == "p50" {
            f = f.samples(
                "invalidate-munmap",
                "munmap mirrored page",
                &all_mir,
                "munmap unmirrored page (no context)",
                &all_plain,
            );
        }
        f.emit();
    }
    Ok(())
}

/// Objects one storm munmap covers.
const STORM_OBJECTS: usize = 16;
/// Samples per repetition, of each kind.
const STORM_SAMPLES: usize = 15;
/// Where the storm's objects are bound (one page each, side by side).
const STORM_VA: u64 = 0x2000_0000_0000;

/// An invalidation storm on a busy device: munmap of a mapping that
/// `STORM_OBJECTS` one-page userptr objects cover (each bound in an SVM
/// context and mirrored) while a job of that context runs, vs munmap of a
/// mapping one such object covers, same conditions, interleaved. Each
/// object's INVALIDATE needs a device round trip (a job is in flight); with
/// the two-pass notifier they are all posted before the first is waited for,
/// so the storm costs about one round trip, not `STORM_OBJECTS`.
pub fn storm(p: &Params) -> R<()> {
    let ctx = svm_context()?;
    let busy_len = 8 * MIB;
    let busy = fresh(busy_len, false)?;
    touch_pages(busy.addr(), busy_len);
    let busy_job = Job::new().hash(busy.addr(), busy_len as u64);
    // SAFETY: the job reads the fresh mapping `busy` only.
    unsafe { ctx.submit(&busy_job) }.ctx("busy job")?;
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (mut many, mut one) = (vec![], vec![]);
    let (mut all_many, mut all_one) = (vec![], vec![]);
    let before = ctx.stats().ctx("stats")?;
    let (mut busy_jobs, mut samples) = (0u64, 0u64);
    std::thread::scope(|s| -> R<()> {
        let worker = s.spawn(|| {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // SAFETY: as above.
                if unsafe { ctx.submit(&busy_job) }.is_err() {
                    break;
                }
                n += 1;
            }
            n
        });
        let r = (|| {
            for rep in 0..p.reps {
                progress(&format!("storm: {STORM_OBJECTS} objects vs 1, device busy: rep {}/{}", rep + 1, p.reps));
                let (mut a, mut b) = (vec![], vec![]);
                for _ in 0..STORM_SAMPLES {
                    b.push(storm_munmap(&ctx, 1)?);
                    a.push(storm_munmap(&ctx, STORM_OBJECTS)?);
                    samples += 1;
                }
                many.push(percentile(&a, 50.0) / 1e3);
                one.push(percentile(&b, 50.0) / 1e3);
                all_many.extend(a);
                all_one.extend(b);
            }
            Ok(())
        })();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        busy_jobs = worker.join().map_err(|_| "busy thread panicked".to_string())?;
        r
    })?;
    let d = ctx.stats().ctx("stats")?.delta_since(&before);
    Figure::from_reps(format!("storm_munmap_{STORM_OBJECTS}_objects_busy_p50"), &many, "us")
        .baseline_reps("storm_munmap_1_object_busy_p50", &one)
        .param("what", format!("munmap of {STORM_OBJECTS} pages, each a userptr object bound and mirrored in an SVM context, while a job of the context runs (an 8 MiB HASH, back to back) vs munmap of 1 such page; p50 per repetition"))
        .param("samples_per_rep", STORM_SAMPLES)
        .param("reps", p.reps)
        .param("busy_jobs", busy_jobs)
        .param("device_invalidations_per_sample_pair", d.device_invalidations as f64 / samples.max(1) as f64)
        .samples(
            "invalidate-storm",
            &format!("munmap of {STORM_OBJECTS} objects, device busy"),
            &all_many,
            "munmap of 1 object, device busy",
            &all_one,
        )
        .emit();
    Ok(())
}

/// One storm sample: `n` one-page objects over a fresh mapping, bound and
/// mirrored; then (the busy thread's next job has started meanwhile) the
/// timed munmap. Returns ns.
fn storm_munmap(ctx: &vgpu::Context, n: usize) -> R<f64> {
    let len = n * PAGE;
    let m = Mapping::anon(len).ctx("mmap")?;
    touch_pages(m.addr(), len);
    let bos = (0..n)
        .map(|i| ctx.userptr_raw((m.addr() + (i * PAGE) as u64) as *const u8, PAGE, false))
        .collect::<vgpu::Result<Vec<_>>>()
        .ctx("USERPTR_CREATE")?;
    let binds: Vec<_> = bos.iter().enumerate().map(|(i, bo)| (bo, STORM_VA + (i * PAGE) as u64)).collect();
    ctx.bind_many(&binds).ctx("BIND_ARRAY")?;
    let mut job = Job::new();
    for (i, bo) in bos.iter().enumerate() {
        job = job.read(STORM_VA + (i * PAGE) as u64, 8).uses(bo);
    }
    // SAFETY: the job reads the objects' pages (the fresh mapping `m`) only.
    unsafe { ctx.submit(&job) }.ctx("mirror job")?;
    // Let the busy thread, which waited for this file, start its next job.
    std::thread::sleep(std::time::Duration::from_millis(2));
    let (addr, len) = m.leak();
    // SAFETY: our mapping, leaked above.
    let (_, d) = timed(|| unsafe { libc::munmap(addr as *mut libc::c_void, len) });
    drop(bos);
    Ok(ns(d))
}
