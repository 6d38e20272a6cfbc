//! `vgpu-soak`: a bounded stress run; the device checks every page access, and none may be
//! stale.
//!
//! `vgpu-soak ACCESSES SECONDS`: the workers of [`vgpu_tests::stress`] (SVM jobs over memory
//! that migrates between NUMA nodes and is re-mapped, a THP buffer that is paged out and
//! split, userptr jobs through a binding, fork/COW of mirrored memory) run until the device
//! has checked ACCESSES page accesses (device-wide STATS, as root) or SECONDS have passed,
//! whichever comes first. Asserted (TAP): the count was reached, every job succeeded and
//! produced what the CPU sees, the device reported 0 violations. One line
//! `vgpu-soak-result: {json}` carries `accesses_checked`, `violations`, `seconds` and the
//! jobs per worker for `cargo xtask soak` (target/vgpu/soak.json).

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

use vgpu::Context;
use vgpu_tests::stress::{errno_name, fork_worker, spawn_workers, svm_worker, thp_worker, userptr_worker, Busy, Outcome, Worker};
use vgpu_tests::tap::Tap;

/// How often the controller reads the device's counters.
const POLL: Duration = Duration::from_secs(2);
/// A worker must end this long after being told to stop (its current job ends first).
const STOP_BOUND: Duration = Duration::from_secs(120);
const USERPTR_VA: u64 = 0x2000_0000_0000;

const WORKERS: [Worker; 5] = [
    ("svm", true, |c| svm_worker(c, 256)),
    ("svm-migrate", true, |c| svm_worker(c, 256)),
    ("thp-swap", true, |c| thp_worker(c, 2)),
    ("userptr", false, |c| userptr_worker(c, 256, USERPTR_VA)),
    ("fork-cow", true, |c| fork_worker(c, 64)),
];

fn parse_args() -> Result<(u64, Duration), String> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    match a.as_slice() {
        [n, s] => Ok((
            n.parse().map_err(|_| format!("bad ACCESSES {n}"))?,
            Duration::from_secs(s.parse().map_err(|_| format!("bad SECONDS {s}"))?),
        )),
        _ => Err("usage: vgpu-soak ACCESSES SECONDS".into()),
    }
}

fn run(tap: &mut Tap, target: u64, limit: Duration) -> Result<serde_json::Value, String> {
    if vgpu_tests::sysutil::ensure_zram_swap().is_err() {
        tap.diag("no zram swap: MADV_PAGEOUT only reclaims what it can without swap");
    }
    let ctl = Context::open_default().map_err(|e| e.to_string())?;
    let start = ctl.stats().map_err(|e| format!("STATS: {e}"))?;
    let stop = AtomicBool::new(false);
    let never = OnceLock::new();
    let busy: [Busy; WORKERS.len()] = Default::default();
    let t0 = Instant::now();
    let (outcomes, last) = std::thread::scope(|s| -> Result<_, String> {
        let (tx, rx) = mpsc::channel::<Outcome>();
        spawn_workers(s, &WORKERS, &stop, &never, &busy, &tx);
        drop(tx);
        let mut outcomes = Vec::new();
        let mut last = start.clone();
        let mut next_report = Duration::from_secs(10);
        // Until the count is reached, time is up, or a worker ended (it failed).
        while t0.elapsed() < limit && last.accesses_checked - start.accesses_checked < target {
            if let Ok(o) = rx.recv_timeout(POLL) {
                outcomes.push(o);
                break;
            }
            last = ctl.stats().map_err(|e| format!("STATS: {e}"))?;
            if t0.elapsed() >= next_report {
                println!(
                    "# soak: {:.0} s, {} accesses checked, {} violations",
                    t0.elapsed().as_secs_f64(),
                    last.accesses_checked - start.accesses_checked,
                    last.violations - start.violations
                );
                next_report += Duration::from_secs(10);
            }
        }
        stop.store(true, Ordering::Relaxed);
        let deadline = Instant::now() + STOP_BOUND;
        while outcomes.len() < WORKERS.len() {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(o) => outcomes.push(o),
                Err(_) => return Err(format!("a worker did not stop within {STOP_BOUND:?}")),
            }
        }
        last = ctl.stats().map_err(|e| format!("STATS: {e}"))?;
        Ok((outcomes, last))
    })?;
    let seconds = t0.elapsed().as_secs_f64();
    vgpu_tests::sysutil::swapoff_zram();
    let checked = last.accesses_checked - start.accesses_checked;
    let violations = last.violations - start.violations;
    for o in &outcomes {
        tap.diag(format!("{}: {} jobs, {} retries", o.kind, o.iterations, o.retries));
    }
    let failed: Vec<String> = outcomes
        .iter()
        .filter(|o| o.error.is_some() || o.end_errno.is_some() || o.iterations == 0)
        .map(|o| format!("{}: {} {}", o.kind, o.end_errno.map_or("-".into(), errno_name), o.error.as_deref().unwrap_or("")))
        .collect();
    tap.run("every job of every worker succeeded and matched the CPU's view", || {
        if failed.is_empty() { Ok(()) } else { Err(failed.join("; ")) }
    });
    tap.diag(format!("{checked} accesses checked in {seconds:.0} s"));
    tap.ok(checked >= target, &format!("the device checked at least {target} accesses (within {} s)", limit.as_secs()));
    tap.eq("the device reported no violation", violations, 0);
    Ok(serde_json::json!({
        "accesses_checked": checked,
        "violations": violations,
        "seconds": (seconds * 10.0).round() / 10.0,
        "target": target,
        "device_faults": last.device_faults - start.device_faults,
        "device_invalidations": last.device_invalidations - start.device_invalidations,
        "jobs": outcomes.iter().map(|o| (o.kind.to_string(), o.iterations)).collect::<std::collections::BTreeMap<_, _>>(),
    }))
}

fn main() -> ExitCode {
    let (target, limit) = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("vgpu-soak: {e}");
            return ExitCode::from(2);
        }
    };
    let mut tap = Tap::unplanned();
    match run(&mut tap, target, limit) {
        Ok(json) => println!("vgpu-soak-result: {json}"),
        Err(e) => tap.fail("the soak ran", e),
    }
    tap.finish().exit_code()
}
