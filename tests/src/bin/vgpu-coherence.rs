//! `vgpu-coherence`: the coherence suite (DESIGN.md, "The coherence suite").
//!
//! Run in the guest as `/bin/vgpu-coherence` (everything), `--demo` (fork/COW,
//! NUMA migration, THP, swap), `--list`, or with case names
//! (`vgpu-coherence fork_cow munmap:userptr`). Each case runs in each of its
//! modes and prints one TAP line (`ok N - fork_cow [svm]`, with `#`
//! diagnostics) and one machine-readable line
//! `vgpu-case: {"scenario":...,"mode":...,...}`; at the end
//! `# N passed, M failed`. Exit status 1 if anything failed, 2 on bad usage.

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vgpu::Context;
use vgpu_tests::cases::CASES;
use vgpu_tests::coherence::{parse_args, Command, Outcome, USAGE};
use vgpu_tests::patterns::{patterns_for, run_in_pattern, Pattern};
use vgpu_tests::sysutil;
use vgpu_tests::tap::Tap;

/// A case that runs longer than this is reported as failed and the run ends
/// (better than hanging until the VM's timeout).
const CASE_TIMEOUT: Duration = Duration::from_secs(900);

#[derive(Default)]
struct Watch {
    current: Option<(usize, String, String, Pattern, Instant)>, // number, scenario, mode, pattern, deadline
    passed: usize,
    failed: usize,
}

fn watchdog(w: Arc<Mutex<Watch>>) {
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_secs(1));
        let st = w.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((n, scenario, mode, pattern, deadline)) = &st.current {
            if Instant::now() > *deadline {
                let o = Outcome {
                    scenario: scenario.clone(),
                    mode: mode.clone(),
                    accesses_checked: 0,
                    violations: 0,
                    expect_violations: scenario.starts_with("neg_"),
                    passed: false,
                    skipped: false,
                    duration_ms: CASE_TIMEOUT.as_millis() as u64,
                    events: Vec::new(),
                    detail: format!("timed out after {CASE_TIMEOUT:?}"),
                    pattern: pattern.name().to_owned(),
                    contexts: Vec::new(),
                };
                println!("not ok {n} {}", o.tap_desc());
                println!("#   timed out after {CASE_TIMEOUT:?}; ending the run");
                println!("{}", o.case_line());
                println!("# {} passed, {} failed", st.passed, st.failed + 1);
                std::process::exit(1);
            }
        }
    });
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (runs, opts) = match parse_args(&args, CASES) {
        Ok(Command::Run(r, o)) => (r, o),
        Ok(Command::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Command::List) => {
            for c in CASES {
                let modes: Vec<&str> = c.modes.iter().map(|m| m.name()).collect();
                println!(
                    "{:<20} {:<12} {}{}",
                    c.name,
                    modes.join(","),
                    if c.demo { "[demo] " } else { "" },
                    c.about
                );
            }
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("vgpu-coherence: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };

    // Every (case, mode) in each pattern it may run in, pattern by pattern: first the whole
    // suite once, then again twice in a row, and so on.
    let mut plan: Vec<(&'static str, vgpu_tests::coherence::Mode, Pattern)> = Vec::new();
    for &p in &opts.patterns {
        for &(name, mode) in &runs {
            let case = CASES.iter().find(|c| c.name == name).expect("parsed case");
            if patterns_for(case, &[p]).contains(&p) {
                plan.push((name, mode, p));
            }
        }
    }
    let mut tap = Tap::with_writer(std::io::stdout(), Some(plan.len()));
    let monitor = match Context::open_default() {
        Ok(ctx) => {
            if let Ok(v) = ctx.device().version() {
                tap.diag(format!("device: {v} at {}", ctx.device().path().display()));
            }
            Some(Arc::new(ctx))
        }
        Err(e) => {
            tap.diag(format!("cannot open the device: {e}; every case will fail"));
            None
        }
    };
    tap.diag(format!(
        "NUMA nodes {:?}; {} runs ({} cases in {} patterns); loops bounded by {} s / {} iterations",
        sysutil::numa_nodes(),
        plan.len(),
        runs.len(),
        opts.patterns.len(),
        opts.seconds,
        opts.iterations
    ));

    let watch = Arc::new(Mutex::new(Watch::default()));
    watchdog(watch.clone());
    for (name, mode, pattern) in plan {
        let case = CASES.iter().find(|c| c.name == name).expect("parsed case");
        {
            let mut w = watch.lock().unwrap_or_else(|e| e.into_inner());
            w.current = Some((
                tap.next_number(),
                name.to_owned(),
                mode.name().to_owned(),
                pattern,
                Instant::now() + CASE_TIMEOUT,
            ));
        }
        let (o, diags) = run_in_pattern(case, mode, pattern, &opts, monitor.clone());
        let desc = o.tap_desc();
        let mut w = watch.lock().unwrap_or_else(|e| e.into_inner());
        w.current = None;
        if o.skipped {
            tap.skip(&desc, &o.detail);
            w.passed += 1;
        } else if o.passed {
            tap.pass(&desc);
            w.passed += 1;
        } else {
            tap.fail(&desc, "");
            w.failed += 1;
        }
        drop(w);
        for d in diags {
            tap.diag(format!("  {d}"));
        }
        println!("{}", o.case_line());
        if opts.fail_fast && !o.passed && !o.skipped {
            tap.diag("--fail-fast: stopping after the first failed run");
            break;
        }
    }
    sysutil::swapoff_zram();
    tap.finish().exit_code()
}
