//! `cargo xtask`: the one entry point of vgpu-svm. Provisioning, kernel build, guest image,
//! VM runs, tests and the demo.

mod bench;
mod cexample;
mod cmd;
mod coherence;
mod devfault;
mod faultinj;
mod fuzz;
mod guest;
mod initramfs;
mod kernel;
mod mmregress;
mod mutants;
mod paths;
mod report;
mod setup;
mod soak;
mod usertree;
mod vm;

use anyhow::{bail, Context, Result};
use std::{path::PathBuf, process::Command, time::Duration};

const USAGE: &str = "\
usage: cargo xtask <command> [options]

commands:
  setup                 install what is missing (Debian packages, bindgen, linux-source 7.2)
  kernel                build the guest kernel with the vgpu_svm overlay (cached, incremental)
  guest                 build the guest programs and the kernel's hmm-tests
  vm --job NAME         boot the VM with vgpu-device and run guest job NAME
                        (a script in tests/guest-jobs/; with --job bench,
                        VGPU_BENCH_GROUPS=GROUP,... runs only those bench groups)
  test                  host unit tests, then the in-VM tests (the README's test command)
  demo                  boot the VM with the device and show the handshake (the main job)
  soak                  a stress run in the VM until the device checked 10^7 page accesses
                        (0 violations allowed); writes target/vgpu/soak.json
  fault-injection       the fault-injection VM of `test` alone: the daemon is stopped, then
                        killed, under load; writes target/vgpu/fault-injection.json
  mutants               apply each driver mutant of kernel-driver/mutants/ in turn, rebuild,
                        run the in-VM suite; a mutant must be killed (a check fails). Writes
                        target/vgpu/mutants.{json,md}. Options: --only NAME[,NAME...],
                        --runs N (each mutant N times), --no-baseline; VGPU_VM_LOCK=FILE
                        serializes its VM runs with others on the machine (flock, per mutant)
  mm-regressions        the zoo of historical mmu-notifier bugs (tests/mm-regressions/): each
                        patch goes into the guest kernel's mm/ in turn; hmm-tests and every
                        coherence case once run on it; a patch must be caught by a coherence
                        case. Writes target/vgpu/mm-regressions.{json,md}. Options: --only,
                        --no-baseline, --kernel-patch (under every zoo patch), --kernel-tree
                        (the zoo on your tree); VGPU_VM_LOCK
  bench                 the benchmarks (bench/README.md): the guest bench in the VM (>= 7
                        interleaved reps per figure), 7 pairs of device-copy boots with the
                        checker strict and off alternated, and the host-side device bench;
                        writes target/vgpu/bench.{md,json} and target/vgpu/bench-*.svg

options:
  --flavor default|debug   kernel configuration (debug: lockdep, KASAN, DEBUG_VM)
  --timeout SECONDS        VM timeout (default 900; 3600 with --flavor debug)
  --host-only              `test`: only the host unit tests
  --kernel-patch FILE      apply FILE (a -p1 unified diff, e.g. `git format-patch`) to the
                           guest kernel source after the overlay; repeatable, in order. Works
                           with vm, test, demo, bench, soak, mutants and both flavors; the
                           patched files are restored when a later run does not ask for it
  --kernel-tree DIR        build the guest kernel from DIR, your git checkout of Linux 7.2 or
                           later (committed and uncommitted changes), with the overlay, in a
                           cached copy (DIR is only read; rebuilds are incremental). Works
                           with the same commands as --kernel-patch, and together with it
  --verbose, -v            echo the whole guest console, boot log included (by default a
                           run shows the handshake, the guest's steps, failed tests and
                           totals; everything is in target/vgpu/runs/<job>/console.log)
  --fuzz-seed N            the fuzz job's seed (else $VGPU_FUZZ_SEED, else random; printed)
  --only, --runs, --no-baseline   see `mutants` (--only, --no-baseline: also mm-regressions)
";

#[derive(Clone)]
struct Opts {
    flavor: kernel::Flavor,
    job: Option<String>,
    timeout: Duration,
    /// `--timeout` was given (else a command may pick its own bound).
    timeout_given: bool,
    host_only: bool,
    fuzz_seed: Option<u64>,
    /// `mutants`: the mutants to run (empty: all), runs per mutant, skip the baseline.
    only: Vec<String>,
    runs: u32,
    no_baseline: bool,
    /// A driver mutant to build instead of the driver (set by `mutants`, not a CLI option).
    mutant: Option<PathBuf>,
    /// `--verbose`: echo the whole guest console (boot log included), not only its progress.
    verbose: bool,
    /// `--kernel-patch FILE` (repeatable): patches to the guest kernel source, applied after
    /// the overlay's (absolute paths).
    kernel_patches: Vec<PathBuf>,
    /// `--kernel-tree DIR`: the user's kernel tree, inspected.
    kernel_tree: Option<usertree::UserTree>,
}

impl Opts {
    /// What the guest kernel is built from, beyond the flavor.
    fn variant(&self) -> kernel::Variant<'_> {
        kernel::Variant { mutant: self.mutant.as_deref(), kernel_patches: &self.kernel_patches, kernel_tree: self.kernel_tree.as_ref() }
    }
}

fn parse(args: &[String]) -> Result<Opts> {
    let mut o = Opts {
        flavor: kernel::Flavor::Default,
        job: None,
        timeout: kernel::Flavor::Default.vm_timeout(),
        timeout_given: false,
        host_only: false,
        fuzz_seed: None,
        only: Vec::new(),
        runs: 1,
        no_baseline: false,
        mutant: None,
        verbose: false,
        kernel_patches: Vec::new(),
        kernel_tree: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = |name: &str| it.next().cloned().with_context(|| format!("{name} needs a value"));
        match a.as_str() {
            "--flavor" => o.flavor = kernel::Flavor::parse(&val("--flavor")?)?,
            "--job" => o.job = Some(val("--job")?),
            "--timeout" => {
                let s = val("--timeout")?;
                o.timeout = Duration::from_secs(s.parse().with_context(|| format!("bad --timeout `{s}`"))?);
                o.timeout_given = true;
            }
            "--only" => o.only = val("--only")?.split(',').filter(|n| !n.is_empty()).map(String::from).collect(),
            "--runs" => {
                let s = val("--runs")?;
                o.runs = s.parse().ok().filter(|&n| (1..=100).contains(&n)).with_context(|| format!("bad --runs `{s}` (1..100)"))?;
            }
            "--no-baseline" => o.no_baseline = true,
            "--host-only" => o.host_only = true,
            "--verbose" | "-v" => o.verbose = true,
            "--kernel-patch" => {
                let f = PathBuf::from(val("--kernel-patch")?);
                let abs = std::fs::canonicalize(&f).with_context(|| format!("--kernel-patch {}", f.display()))?;
                o.kernel_patches.push(abs);
            }
            "--kernel-tree" => o.kernel_tree = Some(usertree::inspect(std::path::Path::new(&val("--kernel-tree")?))?),
            "--fuzz-seed" => o.fuzz_seed = Some(fuzz::parse_seed(&val("--fuzz-seed")?).context("bad --fuzz-seed")?),
            _ => bail!("unknown option `{a}`\n\n{USAGE}"),
        }
    }
    if !o.timeout_given {
        o.timeout = o.flavor.vm_timeout();
    }
    Ok(o)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(command) = args.first() else {
        eprint!("{USAGE}");
        std::process::exit(2);
    };
    let result = parse(&args[1..]).and_then(|o| match command.as_str() {
        "setup" => setup::setup(),
        "kernel" => kernel::build_variant(o.flavor, &o.variant())
            .map(|b| say!("kernel: {}", b.bzimage.display())),
        "guest" => build_guest_image(&o).map(|(_, p)| say!("initramfs: {}", p.display())),
        "vm" => {
            let job = o.job.clone().context("`vm` needs --job NAME")?;
            if job == "fuzz" {
                return fuzz::fuzz(&o);
            }
            if let (true, Ok(groups)) = (job == "bench", std::env::var("VGPU_BENCH_GROUPS")) {
                // A subset of the guest bench (e.g. `storm`): its figure lines are in the
                // run's console.log; `cargo xtask bench` is what makes the tables.
                let spec = JobRun { extra_cmdline: format!("vgpu_bench={groups}"), ..job_spec(&o, &job) };
                return run_job_with(&o, &job, &spec).and_then(|out| job_verdict(&job, out.guest_status, &out.console_log));
            }
            run_job(&o, &job).and_then(|out| job_verdict(&job, out.guest_status, &out.console_log))
        }
        "test" => test(&o),
        "fault-injection" => fault_injection(&o),
        "soak" => soak::soak(&o),
        "mutants" => mutants::mutants(&o),
        "mm-regressions" => mmregress::mm_regressions(&o),
        "demo" => demo(&o),
        "bench" => bench::bench(&o),
        "help" | "--help" | "-h" => {
            print!("{USAGE}");
            Ok(())
        }
        other => Err(anyhow::anyhow!("unknown command `{other}`\n\n{USAGE}")),
    });
    if let Err(e) = result {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}

/// Builds the vgpu-device daemon (release) and returns its path.
fn build_device() -> Result<PathBuf> {
    say!("device: building vgpu-device");
    cmd::run(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(paths::workspace())
            .args(["build", "--quiet", "--release", "--package", "vgpu-device"]),
    )?;
    Ok(paths::cargo_target().join("release/vgpu-device"))
}

/// Kernel + guest programs + hmm-tests + job scripts -> initramfs; returns the kernel build
/// and the initramfs' path.
fn build_guest_image(o: &Opts) -> Result<(kernel::Built, PathBuf)> {
    let built = kernel::build_variant(o.flavor, &o.variant())?;
    let mut binaries = guest::build_programs()?;
    say!("guest: building the C example against libvgpu.a");
    let c_example = cexample::build_c_example(&paths::workspace(), &paths::guest_target(), &paths::out())?;
    binaries.push((c_example, cexample::C_EXAMPLE_NAME.into()));
    binaries.push((guest::build_hmm_tests(&built.tree)?, "hmm-tests".into()));
    let spec = initramfs::InitramfsSpec {
        modules: built.modules.clone(),
        binaries,
        files: guest::job_scripts()?,
    };
    let out = paths::out().join(format!("initramfs-{}.cpio.gz", o.flavor.name()));
    initramfs::build(&spec, &out)?;
    Ok((built, out))
}

/// Builds everything and runs one guest job (with the daemon options the job needs);
/// returns the outcome.
fn run_job(o: &Opts, job: &str) -> Result<vm::VmOutcome> {
    run_job_with(o, job, &job_spec(o, job))
}

/// [`run_job`] without echoing the guest console (it is in the run's console.log).
fn run_job_quiet(o: &Opts, job: &str) -> Result<vm::VmOutcome> {
    run_job_with(o, job, &JobRun { quiet: true, ..job_spec(o, job) })
}

/// How a job's VM is set up: the hardening job's daemon delays every page access; the fuzz
/// job gets its seed on the kernel command line; the fault-injection job's host stops and
/// kills the daemon when the guest asks.
fn job_spec(o: &Opts, job: &str) -> JobRun {
    match job {
        "hardening" => JobRun {
            device_args: vec!["--access-delay-us".into(), HARDENING_ACCESS_DELAY_US.into()],
            ..JobRun::default()
        },
        "fuzz" => fuzz::job_run(o),
        "faultinj" => JobRun { device_faults: true, ..JobRun::default() },
        _ => JobRun::default(),
    }
}

/// Console lines shown when a guest job fails and only its progress was echoed.
const CONSOLE_TAIL_ON_FAILURE: usize = 40;

/// How [`run_job_with`] varies a run: the run directory's name (default: the job's), extra
/// daemon arguments, extra kernel command line, whether the guest may stop or kill the
/// daemon ([`devfault`]), whether the console is echoed.
#[derive(Default)]
struct JobRun {
    run_name: Option<String>,
    device_args: Vec<String>,
    extra_cmdline: String,
    device_faults: bool,
    quiet: bool,
}

/// [`run_job`] with a different run directory, device arguments or kernel command line.
fn run_job_with(o: &Opts, job: &str, spec: &JobRun) -> Result<vm::VmOutcome> {
    setup::setup()?;
    let (built, initrd) = build_guest_image(o)?;
    let device = build_device()?;
    let run_dir = paths::out().join("runs").join(spec.run_name.as_deref().unwrap_or(job));
    let _ = std::fs::remove_dir_all(&run_dir);
    say!("vm: linux {} ({} flavor), job `{job}`", built.version, o.flavor.name());
    let mut cfg = vm::VmConfig::new(built.bzimage, initrd, device, job, run_dir.clone());
    cfg.device_args = vec!["--stats".into(), run_dir.join("device-stats.json").display().to_string()];
    cfg.device_args.extend(spec.device_args.iter().cloned());
    // The guest's job scripts can tell the kernel flavor (`$vgpu_flavor`).
    cfg.extra_cmdline = format!("vgpu_flavor={} {}", o.flavor.name(), spec.extra_cmdline).trim_end().to_string();
    cfg.timeout = o.timeout;
    cfg.device_faults = spec.device_faults;
    cfg.echo = match (spec.quiet, o.verbose) {
        (true, _) => vm::Echo::Nothing,
        (false, true) => vm::Echo::Everything,
        (false, false) => vm::Echo::Progress,
    };
    let outcome = vm::run(&cfg)?;
    if cfg.echo == vm::Echo::Progress && outcome.guest_status != Some(0) {
        // The progress lines may not say why: show the end of the console as it was.
        let text = std::fs::read_to_string(&outcome.console_log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().filter(|l| !l.contains(coherence::CASE_PREFIX)).collect();
        let from = tail.len().saturating_sub(CONSOLE_TAIL_ON_FAILURE);
        eprintln!("xtask: the guest job failed; the last {} console lines:", tail.len() - from);
        for l in &tail[from..] {
            eprintln!("  | {}", l.trim_end_matches('\r'));
        }
    }
    say!(
        "vm: job `{job}` finished in {:.1}s, guest status {}; logs in {}",
        outcome.elapsed.as_secs_f64(),
        outcome.guest_status.map_or("none".into(), |s| s.to_string()),
        run_dir.display()
    );
    Ok(outcome)
}

/// `cargo xtask vm`'s exit status tells the truth: an error unless the guest job reported
/// status 0 (a job that crashed, for example exit status 139 after an oops, or a guest that
/// never reported, fails the command).
fn job_verdict(job: &str, guest_status: Option<i32>, console: &std::path::Path) -> Result<()> {
    match guest_status {
        Some(0) => Ok(()),
        Some(s) => bail!("guest job `{job}` failed with status {s}; console: {}", console.display()),
        None => bail!("guest job `{job}` reported no status; console: {}", console.display()),
    }
}

/// The README's test command: host unit tests, then the in-VM tests.
fn test(o: &Opts) -> Result<()> {
    // The host tests need packages too (libclang, libdrm-dev for vgpu-uapi's bindgen).
    setup::setup()?;
    say!("test: host unit tests (cargo test --workspace)");
    cmd::run(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(paths::workspace())
            .args(["test", "--workspace"]),
    )?;
    if o.host_only {
        return Ok(());
    }
    let outcome = run_job(o, "test")?;
    let console = String::from_utf8_lossy(&std::fs::read(&outcome.console_log)?).into_owned();
    let cases = coherence_summary(o, &console)?;
    let r = report::Report::from_console(&console);
    r.print();
    let status = outcome.guest_status.context("the guest never reported a status (see console.log)")?;
    if status != 0 || r.failed > 0 || r.passed == 0 || cases.is_empty() {
        bail!("in-VM tests failed (guest status {status}); console: {}", outcome.console_log.display());
    }
    if cases.len() < MIN_CASES {
        bail!("the coherence suite ran {} cases, fewer than {MIN_CASES}: a scenario or pattern went missing", cases.len());
    }
    if o.kernel_tree.is_none() {
        let (tree, orig) = kernel::debian_tree(o.flavor)?;
        let n = mmregress::check_zoo_applies(&tree, &orig)?;
        say!("test: the {n} zoo patches of tests/mm-regressions apply to the kernel (dry run; the zoo itself runs with `cargo xtask mm-regressions`)");
    }
    hardening(o)?;
    fuzz::fuzz(o)?;
    fault_injection(o)
}

/// The fault-injection job, in a VM of its own whose host stops, resumes and kills the
/// daemon when the guest asks (`tests/guest-jobs/faultinj.sh`); writes
/// target/vgpu/fault-injection.json.
fn fault_injection(o: &Opts) -> Result<()> {
    let outcome = run_job(o, "faultinj")?;
    let console = String::from_utf8_lossy(&std::fs::read(&outcome.console_log)?).into_owned();
    // The daemon was killed: its stats file is what it wrote last (every 100 ms).
    let device = device_stats(&outcome);
    let (doc, problems) = faultinj::verdict(&console, outcome.guest_status, &outcome.device_faults, device);
    println!("\n== fault injection (daemon stopped, then killed)");
    for f in doc["faults"].as_array().into_iter().flatten() {
        println!(
            "  {:<5} munmap waited {} ms; workers ended with {}; device checked {} accesses before, {} violations",
            f["fault"].as_str().unwrap_or("?"),
            f["munmap_ms"],
            f["by_errno"],
            f["accesses_checked_before"],
            f["violations_before"]
        );
    }
    let path = paths::out().join("fault-injection.json");
    println!("fault injection: {} ({})", doc["verdict"].as_str().unwrap_or("?"), path.display());
    faultinj::write_and_check(&path, &doc, &problems)
}

/// The hardening job, in a VM of its own: the daemon delays every page access, so a job runs
/// long enough to be killed while the device works on it (`tests/guest-jobs/hardening.sh`).
fn hardening(o: &Opts) -> Result<()> {
    let outcome = run_job(o, "hardening")?;
    let console = String::from_utf8_lossy(&std::fs::read(&outcome.console_log)?).into_owned();
    let r = report::Report::from_console(&console);
    println!("\n== hardening job (device access delay {HARDENING_ACCESS_DELAY_US} us)");
    for f in &r.failures {
        println!("    not ok {f}");
    }
    println!("hardening: {} passed, {} failed, {} skipped", r.passed, r.failed, r.skipped);
    let status = outcome.guest_status.context("the hardening guest never reported a status (see console.log)")?;
    if status != 0 || r.failed > 0 || r.passed == 0 {
        bail!("hardening job failed (guest status {status}); console: {}", outcome.console_log.display());
    }
    // The device is reset at the end of the job, so only the host can read its verdict.
    let stats = outcome.console_log.with_file_name("device-stats.json");
    let (checked, violations) = device_verdict(&std::fs::read_to_string(&stats).with_context(|| format!("read {}", stats.display()))?)?;
    println!("hardening: device checked {checked} accesses, {violations} violations ({})", stats.display());
    if checked == 0 || violations != 0 {
        bail!("hardening job: the device checked {checked} accesses with {violations} violations (want > 0 and 0)");
    }
    Ok(())
}

/// `(accesses_checked, violations)` from the run's daemon stats file, if it has a readable one.
fn device_stats(outcome: &vm::VmOutcome) -> Option<(u64, u64)> {
    let stats = outcome.console_log.with_file_name("device-stats.json");
    std::fs::read_to_string(stats).ok().and_then(|j| device_verdict(&j).ok())
}

/// `(accesses_checked, violations)` of the daemon's stats file.
fn device_verdict(json: &str) -> Result<(u64, u64)> {
    let v: serde_json::Value = serde_json::from_str(json).context("device stats file is not JSON")?;
    let get = |k: &str| v["svm"][k].as_u64().with_context(|| format!("device stats file lacks svm.{k}"));
    Ok((get("accesses_checked")?, get("violations")?))
}

/// The coherence suite's runs (scenarios x modes x execution patterns) `test` expects at
/// least: 28 scenarios, most in two modes and seven patterns (tests/src/patterns.rs).
const MIN_CASES: usize = 300;

/// The daemon's delay per page access in the hardening job: 8192 pages take about 16 s.
const HARDENING_ACCESS_DELAY_US: &str = "2000";

/// Reads the coherence cases from the console, writes target/vgpu/coherence-summary.json
/// and prints the table.
fn coherence_summary(o: &Opts, console: &str) -> Result<Vec<coherence::CaseResult>> {
    let cases = coherence::summary_from_console(console)?;
    let path = paths::out().join("coherence-summary.json");
    let (commit, dirty) = report::commit();
    let provenance = coherence::Provenance {
        kernel: report::guest_kernel(console),
        flavor: o.flavor.name().into(),
        commit,
        dirty,
        kernel_patches: o.kernel_patches.iter().map(|p| p.display().to_string()).collect(),
        kernel_tree: o.kernel_tree.as_ref().map(usertree::UserTree::describe),
    };
    coherence::write_summary(&cases, &provenance, &path)?;
    coherence::print_table(&cases);
    println!("  ({} cases; summary: {})", cases.len(), path.display());
    Ok(cases)
}

/// The main job: boot the VM with the device, show the handshake, run a readable subset of
/// the coherence suite and the checker catching the legacy valid-flag race.
fn demo(o: &Opts) -> Result<()> {
    let outcome = run_job(o, "demo")?;
    println!("\n== vgpu-device side of the handshake ({}):", outcome.device_log.display());
    for l in std::fs::read_to_string(&outcome.device_log)?.lines().take(40) {
        println!("  {l}");
    }
    let console = String::from_utf8_lossy(&std::fs::read(&outcome.console_log)?).into_owned();
    coherence_summary(o, &console)?;
    if outcome.guest_status != Some(0) {
        bail!("the demo job failed; console: {}", outcome.console_log.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::job_verdict;
    use std::path::Path;

    #[test]
    fn device_verdict_reads_the_stats_file() {
        let (c, v) = super::device_verdict(r#"{"svm":{"accesses_checked":12,"violations":3}}"#).unwrap();
        assert_eq!((c, v), (12, 3));
        assert!(super::device_verdict(r#"{"svm":{}}"#).is_err());
        assert!(super::device_verdict("not json").is_err());
    }

    #[test]
    fn vm_exit_status_follows_the_guest_job() {
        let c = Path::new("console.log");
        assert!(job_verdict("test", Some(0), c).is_ok());
        let e = job_verdict("test", Some(139), c).unwrap_err().to_string();
        assert!(e.contains("status 139"), "{e}");
        assert!(job_verdict("test", Some(1), c).is_err());
        assert!(job_verdict("test", None, c).is_err());
    }

    #[test]
    fn the_vm_timeout_follows_the_flavor_unless_given() {
        let args = |a: &[&str]| super::parse(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        assert_eq!(args(&[]).timeout.as_secs(), 900);
        assert_eq!(args(&["--flavor", "debug"]).timeout.as_secs(), 3600);
        assert_eq!(args(&["--flavor", "debug", "--timeout", "60"]).timeout.as_secs(), 60);
        assert_eq!(args(&["--timeout", "60", "--flavor", "debug"]).timeout.as_secs(), 60);
    }
}
