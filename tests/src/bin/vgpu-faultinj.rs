//! `vgpu-faultinj`: the device stalls or dies under a mixed load; the driver survives it.
//!
//! Run by the `faultinj` job (its own VM, whose host obeys `vgpu-host-request:` console
//! lines, see xtask's `devfault.rs`), once per fault: `vgpu-faultinj stop STOP_MS` has the
//! host SIGSTOP the daemon for STOP_MS (longer than the driver's timeouts, which the job
//! shortens with the module parameters) and SIGCONT it; `vgpu-faultinj kill` has the host
//! SIGKILL it. Meanwhile workers drive the device: SVM jobs over memory that is migrated
//! between NUMA nodes and re-mapped, userptr jobs through a binding, fork/COW of mirrored
//! memory, and a forked process with a context of its own; from just before the fault they
//! only run jobs (`stress::QUIET`). Every worker checks the data its jobs produced. The two faults take the two paths to a device reset: under the stop
//! nothing invalidates while the workers wait, so their jobs time out and the unanswered
//! ABORTs must make the driver reset the device (the jobs might still run there); after the
//! kill the program munmaps memory the device mirrors while a job of the same context is on
//! the device (else the driver needs no device for it: the idle fast path), and the
//! unanswered INVALIDATE must make the driver reset the device before munmap returns.
//!
//! Asserted (TAP): the workers made progress and the device saw 0 violations before the
//! fault; a job stalled (the fault really happened); munmap of mirrored memory returned only
//! after an INVALIDATE timed out; every worker's blocked or later ioctl ended, in bounded time, with a
//! documented device-failure errno; a new context gets ENODEV. The kernel log, rmmod and
//! the daemon's stats file are checked by the job script and the host. One line
//! `vgpu-faultinj-result: {json}` carries the figures for `fault-injection.json`.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

use vgpu::{Context, Job};
use vgpu_tests::child::{fork_child, Exit};
use vgpu_tests::mem::Mapping;
use vgpu_tests::stress::{drive, errno_name, fork_worker, spawn_workers, svm_worker, userptr_worker, wait_stuck, Busy, Outcome, Step, Worker};
use vgpu_tests::tap::Tap;

/// How long the workers run before the fault.
const WARMUP: Duration = Duration::from_secs(3);
/// Console to host: time for the request to be seen and acted on (bound).
const REQUEST_LATENCY: Duration = Duration::from_secs(5);
/// A worker inside one step for this long is stalled (steps take milliseconds).
const STUCK: Duration = Duration::from_millis(1000);
/// READs of the control context's target until its GPU entries stay.
const MIRROR_TRIES: u32 = 100;
/// Slack on every bound (TCG on a loaded host).
const SLACK: Duration = Duration::from_secs(10);
/// Pages of each worker's buffer.
const PAGES: usize = 32;
/// The userptr worker's binding.
const USERPTR_VA: u64 = 0x2000_0000_0000;

const WORKERS: [Worker; 4] = [
    ("svm", true, |c| svm_worker(c, PAGES)),
    ("svm-migrate", true, |c| svm_worker(c, PAGES)),
    ("userptr", false, |c| userptr_worker(c, PAGES, USERPTR_VA)),
    ("fork-cow", true, |c| fork_worker(c, PAGES)),
];

/// What the device failure may look like to a SUBMIT (vgpu_svm_drm.h): the device did not
/// answer (ETIMEDOUT), the context was disabled (EIO), the device is reset or gone (ENODEV).
const DEVICE_FAILURE: [i32; 3] = [libc::ENODEV, libc::EIO, libc::ETIMEDOUT];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Fault {
    Stop(Duration),
    Kill,
}

/// What the control context's munmap of its target did.
struct Munmap {
    took: Duration,
    /// When it returned, since the fault was requested.
    done_after_fault: Duration,
    /// KiB of GPU entries of the control context just before it.
    resident_before: u64,
    /// It cleared GPU entries (the context's INVALIDATE count grew across it).
    cleared: bool,
}

struct Args {
    fault: Fault,
    cmd_timeout: Duration,
    job_timeout: Duration,
}

fn parse_args() -> Result<Args, String> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let ms = |s: Option<&String>, what: &str| -> Result<Duration, String> {
        let v = s.ok_or(format!("missing {what}"))?;
        v.parse::<u64>().map(Duration::from_millis).map_err(|_| format!("bad {what}: {v}"))
    };
    let usage = "usage: vgpu-faultinj (stop STOP_MS | kill) CMD_TIMEOUT_MS JOB_TIMEOUT_MS";
    let (fault, rest) = match a.first().map(String::as_str) {
        Some("stop") => (Fault::Stop(ms(a.get(1), "STOP_MS")?), &a[2..]),
        Some("kill") => (Fault::Kill, &a[1..]),
        _ => return Err(usage.into()),
    };
    if rest.len() != 2 {
        return Err(usage.into());
    }
    Ok(Args { fault, cmd_timeout: ms(rest.first(), "CMD_TIMEOUT_MS")?, job_timeout: ms(rest.get(1), "JOB_TIMEOUT_MS")? })
}

/// The child process with a context of its own: SVM jobs until the device fails. Its exit
/// code: 0 if that failure was a device-failure errno, 1 otherwise.
fn child_process(deadline: Duration, quiet: bool) -> Result<(), String> {
    // (Its own copy of the flag: this is another process.)
    vgpu_tests::stress::QUIET.store(quiet, Ordering::Relaxed);
    let ctx = Context::open_default().map_err(|e| e.to_string())?;
    ctx.config(true).map_err(|e| e.to_string())?;
    let stop = AtomicBool::new(false);
    let t0 = Instant::now();
    let mut step = svm_worker(&ctx, PAGES)?;
    let limited: Step<'_> = Box::new(move |i| {
        if t0.elapsed() > deadline {
            return Err(Err(format!("no device failure within {deadline:?}")));
        }
        step(i)
    });
    let o = drive("child", limited, &stop, &OnceLock::new(), &Busy::new(0));
    if let Some(e) = o.error {
        return Err(e);
    }
    match o.end_errno {
        Some(e) if DEVICE_FAILURE.contains(&e) => Ok(()),
        other => Err(format!("the child's SUBMIT ended with {other:?}")),
    }
}

fn run(tap: &mut Tap, args: &Args) -> Result<serde_json::Value, String> {
    let (fault_name, stop_for) = match args.fault {
        Fault::Stop(d) => ("stop", d),
        Fault::Kill => ("kill", Duration::ZERO),
    };
    // Everything a worker can wait for: the stop, then the driver's timeouts.
    let bound = stop_for + args.cmd_timeout + args.job_timeout + SLACK;
    let stop = AtomicBool::new(false);
    let fault_at = OnceLock::new();
    let busy: [Busy; 4] = Default::default();
    let mut child = fork_child(|_| child_process(WARMUP + REQUEST_LATENCY + bound, args.fault != Fault::Kill)).map_err(|e| format!("fork: {e}"))?;

    let (outcomes, m, before, stuck, resident_before) = std::thread::scope(|s| -> Result<_, String> {
        let (tx, rx) = mpsc::channel::<Outcome>();
        spawn_workers(s, &WORKERS, &stop, &fault_at, &busy, &tx);
        drop(tx);
        std::thread::sleep(WARMUP);

        // Before the fault: the device-wide counters (root), and memory the device mirrors.
        // (Shared with the kill phase's busy thread.)
        let ctl = std::sync::Arc::new(Context::open_default().map_err(|e| e.to_string())?);
        ctl.config(true).map_err(|e| e.to_string())?;
        let before = ctl.stats().map_err(|e| format!("STATS: {e}"))?;
        let target = Mapping::anon(PAGES * 4096).map_err(|e| e.to_string())?;
        target.fill(0, target.len(), 0x3c);
        // From now on the workers only run jobs: nothing of theirs invalidates the target.
        // The stop takes the job path (see below). The kill takes the control context's
        // munmap path, which needs the target's GPU entries to stay until that munmap: a
        // worker's fork write-protects all private memory of the process and clears them
        // (under a live device, before the kill landed: the munmap then had nothing to clear
        // and returned at once, while an invalidation counter read since the mirror had
        // counted the fork's; that failed the munmap check in 2 of about 15 runs).
        vgpu_tests::stress::QUIET.store(true, Ordering::Relaxed);
        // The driver's view of the control context (fdinfo: no device round trip).
        let fdinfo = |key: &str| -> u64 {
            use std::os::fd::AsRawFd;
            let t = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", ctl.device().as_raw_fd())).unwrap_or_default();
            t.lines().find_map(|l| l.strip_prefix(key)?.trim().split_whitespace().next()?.parse().ok()).unwrap_or(0)
        };
        // Mirror the target. A fork still in progress when QUIET was set may clear the
        // target's GPU entries again (seen: 0 KiB mirrored right after the READ): repeat
        // until they stay (bounded; under QUIET no fork follows).
        let mut resident_before = 0;
        for _ in 0..MIRROR_TRIES {
            ctl.submit_readonly(&Job::new().read(target.addr(), target.len() as u64)).map_err(|e| format!("READ: {e}"))?;
            resident_before = fdinfo("drm-resident-gpuvm:");
            if resident_before > 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }

        // The kill takes the invalidation path (below): the control context must have a job
        // on the device when it munmaps, or the driver needs no device for it (the idle fast
        // path: no job of the context in flight, so a new TLB generation does instead of an
        // INVALIDATE). A thread keeps one in flight: it reads the target over and over; once
        // the daemon is dead its last SUBMIT stays unanswered (until the reset: ENODEV).
        let ctl_busy = std::sync::Arc::new(AtomicBool::new(false));
        if args.fault == Fault::Kill {
            let (ctl, busy, stop) = (ctl.clone(), ctl_busy.clone(), &stop);
            let job = Job::new().read(target.addr(), target.len() as u64);
            s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    busy.store(true, Ordering::Relaxed);
                    if ctl.submit_readonly(&job).is_err() {
                        break;
                    }
                }
            });
            while !ctl_busy.load(Ordering::Relaxed) {
                std::thread::yield_now();
            }
        }
        let request = match args.fault {
            Fault::Stop(d) => format!("stop-device {}", d.as_millis()),
            Fault::Kill => "kill-device".into(),
        };
        println!("vgpu-host-request: {request}");
        let _ = std::io::stdout().flush();
        let _ = fault_at.set(Instant::now());
        let stuck = wait_stuck(&busy, STUCK, REQUEST_LATENCY + STUCK);
        // Two paths to the reset. The kill takes the invalidation path: munmap at once, its
        // INVALIDATE goes unanswered. The stop takes the job path: nothing invalidates while
        // the workers wait (they are stuck in SUBMIT), so their jobs time out, the ABORTs go
        // unanswered and the driver must reset the device, since the jobs may still run
        // there; munmap only afterwards.
        let mut target = Some(target);
        // What the munmap itself did: the GPU entries just before it, and whether it sent
        // an INVALIDATE (the context's count of those, read around it alone).
        let mut munmap = || -> Result<Munmap, String> {
            let resident = fdinfo("drm-resident-gpuvm:");
            let invalidations = fdinfo("vgpu_svm-invalidations:");
            let t0 = Instant::now();
            target.take().map_or(Ok(()), |t| t.unmap()).map_err(|e| format!("munmap: {e}"))?;
            Ok(Munmap {
                took: t0.elapsed(),
                done_after_fault: fault_at.get().map_or(Duration::ZERO, |t| t.elapsed()),
                resident_before: resident,
                cleared: fdinfo("vgpu_svm-invalidations:") > invalidations,
            })
        };
        let early = if args.fault == Fault::Kill { Some(munmap()?) } else { None };

        // Every worker must end by itself (its device failed) within the bound.
        let mut outcomes = Vec::new();
        let deadline = Instant::now() + bound;
        while outcomes.len() < WORKERS.len() {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(o) => outcomes.push(o),
                Err(_) => break,
            }
        }
        let m = match early {
            Some(m) => m,
            None => munmap()?,
        };
        stop.store(true, Ordering::Relaxed);
        Ok((outcomes, m, before, stuck, resident_before))
    })?;
    let child_exit = child.wait_exit(bound + WARMUP).map_err(|e| format!("the child process: {e}"));

    let mut by_errno: BTreeMap<String, u64> = BTreeMap::new();
    for o in &outcomes {
        if let Some(e) = o.end_errno {
            *by_errno.entry(errno_name(e)).or_default() += 1;
        }
    }
    tap.ok(outcomes.len() == 4 && outcomes.iter().all(|o| o.iterations > 0), "every worker ran device jobs before the fault");
    for o in &outcomes {
        tap.diag(format!(
            "{}: {} jobs ({} retries), ended with {} after {:.2} s (that ioctl took {:.2} s), later work: {}",
            o.kind,
            o.iterations,
            o.retries,
            o.end_errno.map_or("-".into(), errno_name),
            o.end_after.map_or(f64::NAN, |d| d.as_secs_f64()),
            o.end_ioctl.as_secs_f64(),
            o.later_errno.map_or("-".into(), errno_name),
        ));
    }
    tap.eq("the device saw no violation before the fault (device-wide STATS)", before.violations, 0);
    tap.ok(before.accesses_checked > 0, "the device checked accesses before the fault");
    tap.ok(stuck, "after the request every worker's device job stalled (the host acted)");
    tap.diag(format!(
        "munmap of device-mirrored memory took {:.2} s, returned {:.2} s after the fault ({} KiB mirrored after the READ, {} KiB just before the munmap; {})",
        m.took.as_secs_f64(),
        m.done_after_fault.as_secs_f64(),
        resident_before,
        m.resident_before,
        if m.cleared { "it cleared GPU entries" } else { "it found no GPU entry left" },
    ));
    tap.ok(resident_before > 0, "the control context mirrored memory before the fault");
    if args.fault == Fault::Kill {
        // Under QUIET nothing else invalidates the target: the munmap finds its entries, so
        // the check below is made in every run, not only when no fork came first.
        tap.ok(m.resident_before > 0 && m.cleared, "the kill phase's munmap found the control context's GPU entries and cleared them");
    }
    // No INVALIDATE sent after the fault can be confirmed: a munmap that cleared GPU entries
    // may return only once one timed out (at least the command timeout after the fault) and
    // the device was reset. (One that found none left needs no device: another context's
    // timeout may have reset it, and a reset clears nothing in our page table.)
    tap.ok(
        !m.cleared || m.done_after_fault >= args.cmd_timeout,
        "munmap of mirrored memory returned only after an unanswered INVALIDATE timed out (never \"done\" unconfirmed)",
    );
    let bad: Vec<String> = outcomes
        .iter()
        .filter(|o| {
            o.error.is_some()
                || !o.end_errno.is_some_and(|e| DEVICE_FAILURE.contains(&e))
                || !o.end_after.is_some_and(|d| d <= bound)
        })
        .map(|o| format!("{}: {:?} {:?} {:?}", o.kind, o.end_errno.map(errno_name), o.end_after, o.error))
        .collect();
    let missing = 4 - outcomes.len();
    tap.run("every worker's blocked ioctl ended with a device-failure errno in bounded time", || {
        if missing > 0 {
            return Err(format!("{missing} worker(s) still running {bound:?} after the fault"));
        }
        if bad.is_empty() { Ok(()) } else { Err(bad.join("; ")) }
    });
    tap.ok(
        outcomes.len() == 4 && outcomes.iter().all(|o| o.later_errno.is_some_and(|e| e == libc::ENODEV || e == libc::EIO)),
        "later work on the same context fails with ENODEV or EIO",
    );
    let fresh = Context::open_default().and_then(|c| c.config(true));
    tap.run("a new context after the fault gets ENODEV", || match fresh {
        Err(e) if e.errno() == libc::ENODEV => Ok(()),
        Err(e) => Err(format!("got {e}")),
        Ok(()) => Err("it works: the device was not reset".to_string()),
    });
    tap.run("the process with its own context ended on the device failure", || match child_exit {
        Ok(Exit::Code(0)) => Ok(()),
        other => Err(format!("{other:?}")),
    });

    Ok(serde_json::json!({
        "fault": fault_name,
        "stop_ms": stop_for.as_millis() as u64,
        "cmd_timeout_ms": args.cmd_timeout.as_millis() as u64,
        "job_timeout_ms": args.job_timeout.as_millis() as u64,
        "munmap_ms": m.took.as_millis() as u64,
        "munmap_done_after_fault_ms": m.done_after_fault.as_millis() as u64,
        "munmap_resident_before_kib": m.resident_before,
        "munmap_cleared_entries": m.cleared,
        "accesses_checked_before": before.accesses_checked,
        "violations_before": before.violations,
        "by_errno": by_errno,
        "workers": outcomes.iter().map(|o| serde_json::json!({
            "kind": o.kind,
            "jobs": o.iterations,
            "retries": o.retries,
            "end_errno": o.end_errno.map(errno_name),
            "end_after_ms": o.end_after.map(|d| d.as_millis() as u64),
            "end_ioctl_ms": o.end_ioctl.as_millis() as u64,
            "later_errno": o.later_errno.map(errno_name),
            "error": o.error,
        })).collect::<Vec<_>>(),
    }))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("vgpu-faultinj: {e}");
            return ExitCode::from(2);
        }
    };
    let mut tap = Tap::unplanned();
    match run(&mut tap, &args) {
        Ok(json) => println!("vgpu-faultinj-result: {json}"),
        Err(e) => tap.fail("fault injection ran", e),
    }
    tap.finish().exit_code()
}
