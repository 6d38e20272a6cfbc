//! Figure 4, guest side: a device COPY job through the GPU page table vs a
//! CPU memcpy of the same bytes in the guest, and the INVALIDATE round trip
//! seen from the CPU: munmap of a mirrored page vs an unmirrored one (same
//! SVM context open in both cases, so only the device round trip differs).
//!
//! The checker's cost is measured by the host: it boots a second VM with
//! `--checker off` and runs this group again (`--only device`).

use vgpu::Job;
use vgpu_tests::mem::Mapping;

use super::fault::{fresh, svm_context};
use super::*;

pub struct Params {
    pub copy: usize,
    pub reps: usize,
    pub munmaps: usize,
}

pub const DEFAULT: Params = Params {
    copy: 64 * MIB,
    reps: 3,
    munmaps: 600,
};

pub fn run(p: &Params) -> R<()> {
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
    let mut dev = f64::MAX;
    let before = ctx.stats().ctx("stats")?;
    for _ in 0..p.reps {
        // SAFETY: as above.
        let (r, d) = timed(|| unsafe { ctx.submit(&job) });
        r.ctx("copy job")?;
        dev = dev.min(ms(d));
    }
    let delta = ctx.stats().ctx("stats")?.delta_since(&before);
    let mut cpu = f64::MAX;
    for _ in 0..p.reps {
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
        cpu = cpu.min(ms(d));
    }
    let gbps = |t: f64| p.copy as f64 / (t / 1e3) / 1e9;
    Figure::new(format!("device_copy_{}m", p.copy / MIB), dev, "ms")
        .baseline(format!("guest_memcpy_{}m", p.copy / MIB), cpu)
        .param("device_gb_per_s", gbps(dev))
        .param("memcpy_gb_per_s", gbps(cpu))
        .param("best_of", p.reps)
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

    // munmap of one mirrored page vs one unmirrored page.
    let (mut mirrored, mut plain) = (Vec::new(), Vec::new());
    let before = ctx.stats().ctx("stats")?;
    for i in 0..p.munmaps {
        let m = Mapping::anon(PAGE).ctx("mmap")?;
        // SAFETY: writes the fresh page `m` only.
        unsafe { ctx.submit(&Job::new().write_pattern(m.addr(), PAGE as u64, i as u64)) }
            .ctx("1-page job")?;
        let (addr, len) = m.leak();
        // SAFETY: our page, leaked above.
        let (_, d) = timed(|| unsafe { libc::munmap(addr as *mut libc::c_void, len) });
        mirrored.push(ns(d));
        let m = Mapping::anon(PAGE).ctx("mmap")?;
        touch_pages(m.addr(), PAGE);
        let (addr, len) = m.leak();
        // SAFETY: as above.
        let (_, d) = timed(|| unsafe { libc::munmap(addr as *mut libc::c_void, len) });
        plain.push(ns(d));
    }
    let inv = ctx
        .stats()
        .ctx("stats")?
        .delta_since(&before)
        .device_invalidations;
    // A device round trip that does nothing: the STATS ioctl (one STATS command).
    let mut stats_rt = Vec::new();
    for _ in 0..p.munmaps {
        let (r, d) = timed(|| ctx.stats());
        r.ctx("stats")?;
        stats_rt.push(ns(d));
    }
    let extra = (percentile(&mirrored, 50.0) - percentile(&plain, 50.0)) / 1e3;
    Figure::new("invalidate_cost_in_munmap_p50", extra, "us")
        .baseline("stats_ioctl_roundtrip_p50", percentile(&stats_rt, 50.0) / 1e3)
        .param("what", "p50 munmap of a mirrored page minus p50 munmap of an unmirrored page (the notifier clearing the entry; with the device idle, protocol 0.5 replaces the INVALIDATE round trip by a new TLB generation) vs the STATS ioctl (a device command that does nothing)")
        .param("samples", stats_rt.len())
        .samples_only("invalidate-munmap", "STATS ioctl (no-op device round trip)", &stats_rt)
        .emit();
    for (pct, label) in [(50.0, "p50"), (99.0, "p99")] {
        let mut f = Figure::new(format!("munmap_1page_mirrored_{label}"), percentile(&mirrored, pct) / 1e3, "us")
            .baseline(format!("munmap_1page_unmirrored_{label}"), percentile(&plain, pct) / 1e3)
            .param("samples", mirrored.len())
            .param("device_invalidations", inv)
            .param("what", "munmap of a page the SVM context mirrors, device idle (a new TLB generation since protocol 0.5, an INVALIDATE round trip before; device_invalidations counts the round trips) vs one it does not (same context open)");
        if label == "p50" {
            f = f.samples(
                "invalidate-munmap",
                "munmap mirrored page",
                &mirrored,
                "munmap unmirrored page",
                &plain,
            );
        }
        f.emit();
    }
    Ok(())
}
