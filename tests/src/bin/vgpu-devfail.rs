//! `vgpu-devfail`: when the device does not confirm an invalidation, the driver resets it
//! before it tells mm "done"; memory is never freed under a device that may still use it.
//!
//! Run last in the `hardening` job (the daemon delays every page access, and the device is
//! reset by this program). A thread runs a long device job that reads a buffer M over and over; the main thread
//! turns on the `fail_invalidate` knob (every INVALIDATE fails as if unanswered) and
//! munmaps M. Before the fix, the driver returned "done" anyway: mm freed M's pages while
//! the job kept reading them through the device's TLB, and the device's checker counted
//! violations (the host checks the daemon's stats file: 0 violations, see
//! `cargo xtask test`). After it, the driver resets the device first: the job stops, the
//! munmap returns, the SUBMIT fails, and later work gets ENODEV. Prints TAP.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use vgpu::{Context, Job};
use vgpu_tests::mem::Mapping;
use vgpu_tests::tap::Tap;

const KNOB: &str = "/sys/kernel/debug/vgpu_svm/fail_invalidate";
/// The job reads the same 64 pages again and again (64 ops): after the first op the device
/// has all their translations in its TLB, so only a confirmed INVALIDATE (or a reset) stops
/// it from reading them after mm freed them. 4096 page accesses: seconds with the delay.
const JOB_PAGES: usize = 64;
const JOB_OPS: usize = 64;
const BEFORE_MUNMAP: Duration = Duration::from_millis(1000);

fn run(tap: &mut Tap) -> Result<(), String> {
    let ctx = Context::open_default().map_err(|e| e.to_string())?;
    ctx.config(true).map_err(|e| e.to_string())?;
    let m = Mapping::anon(JOB_PAGES * 4096).map_err(|e| e.to_string())?;
    m.fill(0, m.len(), 0x6b);
    let (addr, len) = (m.addr(), m.len() as u64);
    let job = std::thread::scope(|s| -> Result<_, String> {
        let job = (0..JOB_OPS).fold(Job::new(), |j, _| j.read(addr, len));
        let (tx, rx) = std::sync::mpsc::channel();
        let h = s.spawn(move || {
            // SAFETY: gettid takes no arguments.
            let _ = tx.send(unsafe { libc::gettid() });
            ctx.submit_readonly(&job)
        });
        let tid = rx.recv().map_err(|_| "the submitting thread did not start".to_string())?;
        vgpu_tests::sysutil::wait_in_ioctl(&format!("/proc/self/task/{tid}/syscall"), vgpu::uapi::DRM_IOCTL_VGPU_SVM_SUBMIT, Duration::from_secs(120))?;
        // In the SUBMIT: let the device read M into its TLB.
        std::thread::sleep(BEFORE_MUNMAP);
        std::fs::write(KNOB, "1").map_err(|e| format!("{KNOB}: {e}"))?;
        let t0 = Instant::now();
        let unmapped = m.unmap();
        let took = t0.elapsed();
        let _ = std::fs::write(KNOB, "0");
        unmapped.map_err(|e| format!("munmap: {e}"))?;
        tap.diag(format!("munmap with a failing INVALIDATE returned after {:.2} s", took.as_secs_f64()));
        h.join().map_err(|_| "the submitting thread panicked".to_string())
    })?;
    match job {
        Ok(_) => return Err("the device READ completed: it ended before the munmap (test invalid)".into()),
        Err(e) => tap.diag(format!("the running job ended with: {e}")),
    }
    Ok(())
}

fn device_is_reset() -> Result<String, String> {
    let ctx = Context::open_default().map_err(|e| format!("open after the reset: {e}"))?;
    match ctx.config(true) {
        Err(e) if e.errno() == libc::ENODEV => Ok("a new context gets ENODEV".into()),
        Err(e) => Err(format!("a new context after the reset: {e}, want ENODEV")),
        Ok(()) => Err("a new context works after the reset: was the device reset at all?".into()),
    }
}

fn main() -> ExitCode {
    let mut tap = Tap::new(2);
    let r = run(&mut tap);
    tap.run("an unconfirmed INVALIDATE resets the device before munmap returns; the running job ends", || r);
    match device_is_reset() {
        Ok(note) => {
            tap.pass("after the reset, the device is out of service (ENODEV), the kernel is up");
            tap.diag(note);
        }
        Err(e) => tap.fail("after the reset, the device is out of service (ENODEV), the kernel is up", e),
    }
    tap.finish().exit_code()
}
