//! `vgpu-userptr-wait`: amdgpu's userptr semantic for a context that cannot fault. An
//! invalidation of a userptr object's range that a running job uses waits until the job
//! is done (uapi/vgpu_svm_drm.h, USERPTR_CREATE: "a context without SVM: the invalidation
//! waits for its jobs"), so the job completes on the pages it was given and only then may
//! mm take them away.
//!
//! Run in the `hardening` VM, whose daemon delays every page access: a job over
//! [`JOB_PAGES`] pages runs for seconds. One thread submits a READ + HASH of a bound object
//! on a non-SVM context; once it is in the ioctl and the device is working, the main thread
//! munmaps the object's memory. Asserted (TAP): the job succeeded with the hash of what the
//! memory held, and munmap returned only after the job had ended (a driver that does not
//! wait lets the INVALIDATE cut the job short: its next access faults on unmapped memory
//! and the job fails with EFAULT). Then the same with the device idle: munmap of a bound
//! object with no job running must not wait for anything (it returns within one
//! command round trip, not after a job timeout).

use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use vgpu::{Context, Job};
use vgpu_tests::mem::Mapping;
use vgpu_tests::tap::Tap;

/// Pages of the object: with the hardening daemon's 2 ms per page access, about 2 s per pass.
const JOB_PAGES: usize = 1024;
/// How long the job runs on the device before the munmap.
const BEFORE_MUNMAP: Duration = Duration::from_millis(500);
/// The object's GPU VA.
const GPU_VA: u64 = 0x3000_0000_0000;

/// Job outcome and the instant it ended.
type Ended = (Result<u64, String>, Instant);

fn busy_munmap(tap: &mut Tap) -> Result<(), String> {
    let ctx = Context::open_default().map_err(|e| e.to_string())?;
    ctx.config(false).map_err(|e| format!("config: {e}"))?;
    let m = Mapping::anon(JOB_PAGES * 4096).map_err(|e| e.to_string())?;
    m.fill(0, m.len(), 0x5a);
    let want = m.cpu_hash(0, m.len());
    let bo = ctx.userptr_raw(m.addr() as *const u8, m.len(), true).map_err(|e| format!("USERPTR_CREATE: {e}"))?;
    bo.bind(GPU_VA).map_err(|e| format!("BIND: {e}"))?;
    let len = m.len() as u64;
    let (tx, rx) = mpsc::channel::<(libc::pid_t, Option<Ended>)>();
    let (ended, munmap_done) = std::thread::scope(|s| -> Result<_, String> {
        let (tx, bo) = (tx.clone(), &bo);
        let ctx = &ctx;
        s.spawn(move || {
            // SAFETY: gettid has no preconditions.
            let _ = tx.send((unsafe { libc::gettid() }, None));
            let r = ctx.submit_readonly(&Job::new().hash(GPU_VA, len).uses(bo)).map(|j| j.result).map_err(|e| e.to_string());
            let _ = tx.send((0, Some((r, Instant::now()))));
        });
        let (tid, _) = rx.recv_timeout(Duration::from_secs(10)).map_err(|e| format!("job thread: {e}"))?;
        vgpu_tests::sysutil::wait_in_ioctl(&format!("/proc/self/task/{tid}/syscall"), vgpu::uapi::DRM_IOCTL_VGPU_SVM_SUBMIT, Duration::from_secs(60))?;
        std::thread::sleep(BEFORE_MUNMAP);
        let t0 = Instant::now();
        m.unmap().map_err(|e| format!("munmap: {e}"))?;
        let done = Instant::now();
        tap.diag(format!("munmap took {:.2} s", (done - t0).as_secs_f64()));
        let ended = rx.recv_timeout(Duration::from_secs(180)).map_err(|e| format!("the job never ended: {e}"))?.1;
        Ok((ended, done))
    })?;
    let (result, job_end) = ended.ok_or("no job result")?;
    tap.run("the job over a userptr object munmapped while it ran completed with the memory's hash", || match &result {
        Ok(h) if *h == want => Ok(()),
        Ok(h) => Err(format!("device hash {h:#x}, want {want:#x}")),
        Err(e) => Err(format!("the job failed: {e} (the invalidation did not wait for it)")),
    });
    tap.ok(munmap_done >= job_end, "munmap returned only after the job had ended (the invalidation waited for it)");
    drop(bo);
    Ok(())
}

fn idle_munmap(tap: &mut Tap) -> Result<(), String> {
    let ctx = Context::open_default().map_err(|e| e.to_string())?;
    ctx.config(false).map_err(|e| format!("config: {e}"))?;
    let m = Mapping::anon(16 * 4096).map_err(|e| e.to_string())?;
    m.fill(0, m.len(), 1);
    let bo = ctx.userptr_raw(m.addr() as *const u8, m.len(), true).map_err(|e| format!("USERPTR_CREATE: {e}"))?;
    bo.bind(GPU_VA).map_err(|e| format!("BIND: {e}"))?;
    // Mirrored by a job that faults in the object (a read fault per page run).
    ctx.submit_readonly(&Job::new().hash(GPU_VA, m.len() as u64).uses(&bo)).map_err(|e| format!("job: {e}"))?;
    let t0 = Instant::now();
    m.unmap().map_err(|e| format!("munmap: {e}"))?;
    let took = t0.elapsed();
    tap.diag(format!("munmap with no job running took {:.3} s", took.as_secs_f64()));
    // No job runs, so nothing may be waited for: a driver that still counts a finished (or
    // faulted) job in flight makes this wait for the job timeout (120 s by default).
    tap.ok(took < Duration::from_secs(30), "munmap of a mirrored userptr object with no job running does not wait for a job");
    drop(bo);
    Ok(())
}

fn main() -> ExitCode {
    let mut tap = Tap::unplanned();
    if let Err(e) = busy_munmap(&mut tap) {
        tap.fail("munmap of a userptr object while a job uses it", e);
    }
    if let Err(e) = idle_munmap(&mut tap) {
        tap.fail("munmap of a userptr object with no job running", e);
    }
    tap.finish().exit_code()
}
