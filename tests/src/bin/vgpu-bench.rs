//! `vgpu-bench`: the guest side of `cargo xtask bench`. Measurements, not
//! tests: it reports, it never asserts times.
//!
//! Prints one line per figure, `vgpu-bench: {json}` (name, value, unit,
//! baseline_name, baseline_value, ratio = value / baseline_value, params,
//! and for latency figures `samples` / `baseline_samples` in ns for the
//! plots). A group that fails prints `vgpu-bench-error: {json}` and the
//! others still run. Progress goes to stderr.
//!
//! Usage: `vgpu-bench [--only GROUP[,GROUP...]]`; groups: fault, userptr,
//! cpu, device, scale (in that order), and devcopy (the device copy alone, a
//! part of device: what the host's checker boots run) and storm (the busy-device
//! invalidation storm alone, a part of device). Every figure has at
//! least 7 repetitions (`reps`, and `baseline_reps` interleaved with them). Sizes are chosen so that the whole run
//! fits in a few minutes under QEMU TCG in a 2 GiB guest; each figure's
//! params say what was measured.

#[path = "../bench/mod.rs"]
mod bench;

use std::process::ExitCode;
use std::time::Instant;

use bench::{report_error, R};

type Group = (&'static str, fn() -> R<()>);

const GROUPS: &[Group] = &[
    ("fault", || bench::fault::run(&bench::fault::DEFAULT)),
    ("userptr", || bench::userptr::run(&bench::userptr::DEFAULT)),
    ("cpu", || bench::cpu::run(&bench::cpu::DEFAULT)),
    ("device", || bench::device::run(&bench::device::DEFAULT)),
    ("devcopy", || bench::device::copy(&bench::device::DEFAULT)),
    ("storm", || bench::device::storm(&bench::device::DEFAULT)),
    ("munmap", || bench::device::munmap_1page(&bench::device::DEFAULT)),
    ("scale", || bench::scale::run(&bench::scale::DEFAULT)),
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut only: Option<Vec<String>> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--only" => match it.next() {
                Some(v) => {
                    only = Some(
                        v.split(',')
                            .filter(|s| !s.is_empty())
                            .map(String::from)
                            .collect(),
                    )
                }
                None => {
                    eprintln!("vgpu-bench> --only needs a value");
                    return ExitCode::from(2);
                }
            },
            "--list" => {
                for (g, _) in GROUPS {
                    println!("{g}");
                }
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!(
                    "vgpu-bench> unknown argument `{other}` (usage: vgpu-bench [--only GROUP,...])"
                );
                return ExitCode::from(2);
            }
        }
    }
    if let Some(o) = &only {
        for g in o {
            if !GROUPS.iter().any(|(n, _)| n == g) {
                eprintln!("vgpu-bench> unknown group `{g}`");
                return ExitCode::from(2);
            }
        }
    }
    let t0 = Instant::now();
    let mut failed = 0;
    for (name, f) in GROUPS {
        // `devcopy`, `storm` and `munmap` are part of `device`: alone only when asked for.
        let asked = only.as_ref().map(|o| o.iter().any(|g| g == name));
        if asked == Some(false) || (asked.is_none() && matches!(*name, "devcopy" | "storm" | "munmap")) {
            continue;
        }
        eprintln!("vgpu-guest: bench: group {name} ...");
        let t = Instant::now();
        let r = f();
        eprintln!(
            "vgpu-guest: bench: group {name} took {:.1} s",
            t.elapsed().as_secs_f64()
        );
        if let Err(e) = r {
            eprintln!("vgpu-bench> group {name} failed: {e}");
            report_error(name, &e);
            failed += 1;
        }
    }
    eprintln!(
        "vgpu-guest: bench: done in {:.1} s, {failed} group(s) failed",
        t0.elapsed().as_secs_f64()
    );
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
