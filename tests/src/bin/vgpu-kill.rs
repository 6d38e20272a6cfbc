//! `vgpu-kill`: every SUBMIT ends on a fatal signal, and the device stops the killed job.
//!
//! Run in its own VM (the `hardening` job) with the daemon started with
//! `--access-delay-us`, so that a job over a few thousand pages runs for many seconds on
//! the device. A child starts such a job; the parent SIGKILLs it once the job is running and
//! measures how long the child takes to die. Before the fix the SUBMIT waited,
//! uninterruptibly, for the whole job (or the 120 s job timeout). After it, the wait ends
//! at once; the file's release then destroys the context, which makes the device abort the
//! job before the driver frees anything. A fresh context must work afterwards and the
//! checker must have seen no violation. Prints TAP.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use vgpu::{Context, Job};
use vgpu_tests::child::{fork_child, Exit};
use vgpu_tests::mem::Mapping;
use vgpu_tests::tap::Tap;

/// Pages the killed job reads: with the daemon's delay per page access, tens of seconds.
const JOB_PAGES: usize = 8192;
/// How long the job is given on the device, once the child is in the ioctl, before the kill.
const BEFORE_KILL: Duration = Duration::from_millis(1000);
/// A killed SUBMIT must end well within this (the job itself would run for tens of seconds;
/// the brief asks for 1 s on real hardware, TCG and a loaded host get slack).
const KILL_BOUND: Duration = Duration::from_secs(5);

/// The child's part: one long device job.
fn child_job() -> Result<(), String> {
    let ctx = Context::open_default().map_err(|e| e.to_string())?;
    ctx.config(true).map_err(|e| e.to_string())?;
    let m = Mapping::anon(JOB_PAGES * 4096).map_err(|e| e.to_string())?;
    m.fill(0, m.len(), 0x5a);
    println!("# child: submitting a READ of {JOB_PAGES} pages");
    ctx.submit_readonly(&Job::new().read(m.addr(), m.len() as u64)).map_err(|e| e.to_string())?;
    Ok(())
}

fn kill_during_job(tap: &mut Tap) -> Result<(), String> {
    let mut child = fork_child(|_| child_job()).map_err(|e| format!("fork: {e}"))?;
    let pid = child.pid();
    vgpu_tests::sysutil::wait_in_ioctl(&format!("/proc/{pid}/syscall"), vgpu::uapi::DRM_IOCTL_VGPU_SVM_SUBMIT, Duration::from_secs(120))?;
    // In the SUBMIT: let the device get going on the job.
    std::thread::sleep(BEFORE_KILL);
    let t0 = Instant::now();
    child.kill(libc::SIGKILL);
    let exit = child
        .wait_exit(Duration::from_secs(180))
        .map_err(|e| format!("the killed child: {e}"))?;
    let took = t0.elapsed();
    tap.diag(format!("killed child ended {:.2} s after SIGKILL", took.as_secs_f64()));
    if exit != Exit::Signal(libc::SIGKILL) {
        return Err(format!("the child was not killed ({exit:?}): did its job end before the kill?"));
    }
    if took > KILL_BOUND {
        return Err(format!("the SUBMIT kept a SIGKILLed process alive for {:.1} s", took.as_secs_f64()));
    }
    Ok(())
}

fn device_still_works() -> Result<String, String> {
    let ctx = Context::open_default().map_err(|e| e.to_string())?;
    ctx.config(true).map_err(|e| e.to_string())?;
    let m = Mapping::anon(4 * 4096).map_err(|e| e.to_string())?;
    m.fill(0, m.len(), 7);
    let before = ctx.stats().map_err(|e| e.to_string())?;
    ctx.submit_readonly(&Job::new().hash(m.addr(), m.len() as u64)).map_err(|e| format!("a job after the kill: {e}"))?;
    let after = ctx.stats().map_err(|e| e.to_string())?;
    if after.violations != 0 {
        return Err(format!("the device counted {} violations", after.violations));
    }
    Ok(format!(
        "device: {} accesses checked in all, 0 violations; {} jobs",
        after.accesses_checked,
        after.jobs - before.jobs
    ))
}

fn main() -> ExitCode {
    let mut tap = Tap::new(2);
    let killed = kill_during_job(&mut tap);
    tap.run("SIGKILL ends a SUBMIT whose job is running on the device", || killed);
    match device_still_works() {
        Ok(note) => {
            tap.pass("after the kill, the device aborted the job and a new context works, 0 violations");
            tap.diag(note);
        }
        Err(e) => tap.fail("after the kill, the device aborted the job and a new context works, 0 violations", e),
    }
    tap.finish().exit_code()
}
