//! Figure 4, guest side: a device COPY job through the GPU page table vs a
//! CPU memcpy of the same bytes in the guest (`devcopy`, also the group the
//! checker boots run), and the INVALIDATE cost seen from the CPU: munmap of
//! a mirrored page (device idle) vs an unmirrored one measured in a forked
//! child while no context is open (`device` = devcopy + this).
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
    munmap_1page(p)
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
/// repetition: `munmaps` mirrored samples with an SVM context open (closed
/// after), then `munmaps` unmirrored samples in a child forked with nothing
/// open; each repetition gives a p50 and a p99 of each.
pub fn munmap_1page(p: &Params) -> R<()> {
    let n = p.munmaps;
    let (mut mir50, mut mir99, mut pl50, mut pl99, mut st50, mut extra) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let (mut all_mir, mut all_plain, mut all_stats) = (vec![], vec![], vec![]);
    let mut inv = 0;
    for rep in 0..p.reps {
        progress(&format!("munmap 1 page: rep {}/{}", rep + 1, p.reps));
        let mut mirrored = Vec::with_capacity(n);
        let mut stats_rt = Vec::with_capacity(n);
        {
            let ctx = svm_context()?;
            let before = ctx.stats().ctx("stats")?;
            for i in 0..n {
                let m = Mapping::anon(PAGE).ctx("mmap")?;
                // SAFETY: writes the fresh page `m` only.
                unsafe { ctx.submit(&Job::new().write_pattern(m.addr(), PAGE as u64, i as u64)) }
                    .ctx("1-page job")?;
                let (addr, len) = m.leak();
                // SAFETY: our page, leaked above.
                let (_, d) = timed(|| unsafe { libc::munmap(addr as *mut libc::c_void, len) });
                mirrored.push(ns(d));
            }
            inv += ctx
                .stats()
                .ctx("stats")?
                .delta_since(&before)
                .device_invalidations;
            // A device round trip that does nothing: the STATS ioctl.
            for _ in 0..n {
                let (r, d) = timed(|| ctx.stats());
                r.ctx("stats")?;
                stats_rt.push(ns(d));
            }
        }
        let plain = in_child(move || {
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                let m = Mapping::anon(PAGE).ctx("mmap")?;
                touch_pages(m.addr(), PAGE);
                let (addr, len) = m.leak();
                // SAFETY: as above.
                let (_, d) = timed(|| unsafe { libc::munmap(addr as *mut libc::c_void, len) });
                v.push(ns(d));
            }
            Ok(v)
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
    for (label, v, b) in [("p50", &mir50, &pl50), ("p99", &mir99, &pl99)] {
        let mut f = Figure::from_reps(format!("munmap_1page_mirrored_{label}"), v, "us")
            .baseline_reps(format!("munmap_1page_unmirrored_{label}"), b)
            .param("samples_per_rep", n)
            .param("reps", p.reps)
            .param("device_invalidations", inv)
            .param("what", "munmap of a page an SVM context mirrors, device idle (device_invalidations counts the INVALIDATE round trips) vs munmap of a page in a child forked while no context was open");
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
