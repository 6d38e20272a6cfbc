//! The fuzz job (`cargo xtask test`, a VM of its own): `vgpu-fuzz` in the guest with a seed
//! from here (random per run unless `--fuzz-seed N` or `VGPU_FUZZ_SEED`), passed on the
//! kernel command line. Reads the guest's `vgpu-fuzz-summary:` and
//! `vgpu-fuzz-kernel-reports:` lines from the console and the daemon's stats file, writes
//! `target/vgpu/fuzz-summary.json`, and fails unless the job passed with at least 10^5
//! ioctls, no kernel report and 0 violations.

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::sync::OnceLock;

use crate::{paths, report, say, JobRun, Opts};

/// The least number of ioctls a run must make.
pub const MIN_IOCTLS: u64 = 100_000;

const SUMMARY_MARK: &str = "vgpu-fuzz-summary: ";
const REPORTS_MARK: &str = "vgpu-fuzz-kernel-reports: ";

/// The run's seed: `--fuzz-seed`, else `$VGPU_FUZZ_SEED`, else a `--seed` in
/// `$VGPU_FUZZ_ARGS`, else random (chosen once per
/// xtask process, so the command line and the report agree).
pub fn seed(o: &Opts) -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    *SEED.get_or_init(|| {
        o.fuzz_seed
            .or_else(|| std::env::var("VGPU_FUZZ_SEED").ok().and_then(|s| parse_seed(&s)))
            .or_else(|| args_seed(&extra_args()))
            .unwrap_or_else(random_seed)
    })
}

/// Extra `vgpu-fuzz` arguments from `$VGPU_FUZZ_ARGS` (split at whitespace), e.g.
/// `--seed N --threads 1`; they come after the job's own, so they win.
pub fn extra_args() -> Vec<String> {
    std::env::var("VGPU_FUZZ_ARGS").unwrap_or_default().split_whitespace().map(String::from).collect()
}

/// The kernel command line word carrying `args` to the guest (`tests/guest-jobs/fuzz.sh`):
/// `vgpu_fuzz_args=a,b,c` (commas for the spaces: the word needs no quoting), or None for no
/// arguments. Only plain characters, so that nothing can end or split the word.
pub fn args_cmdline(args: &[String]) -> Result<Option<String>> {
    if args.is_empty() {
        return Ok(None);
    }
    if let Some(a) = args.iter().find(|a| !a.chars().all(|c| c.is_ascii_alphanumeric() || "-_.=+:".contains(c))) {
        bail!("VGPU_FUZZ_ARGS: `{a}`: only letters, digits and -_.=+: are passed to the guest");
    }
    Ok(Some(format!("vgpu_fuzz_args={}", args.join(","))))
}

/// The `--seed N` among `args`, if any (the run's seed then).
fn args_seed(args: &[String]) -> Option<u64> {
    args.iter().rposition(|a| a == "--seed").and_then(|i| args.get(i + 1)).and_then(|s| parse_seed(s))
}

/// A seed as given on the command line or in the environment (decimal or 0x hex).
pub fn parse_seed(s: &str) -> Option<u64> {
    let s = s.trim();
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    h.write_u32(std::process::id());
    h.finish() >> 16
}

/// How the fuzz job's VM is set up: the seed on the kernel command line (and, with
/// `VGPU_FUZZ_KNOWN_BUGS=1`, the regression cases of known driver bugs, which the fuzzer
/// otherwise lists as TODO and steers clear of; with `VGPU_FUZZ_ARGS`, extra arguments).
pub fn job_run(o: &Opts) -> JobRun {
    let known = std::env::var("VGPU_FUZZ_KNOWN_BUGS").is_ok_and(|v| v == "1");
    let mut extra = format!("vgpu_fuzz_seed={}{}", seed(o), if known { " vgpu_fuzz_known_bugs=1" } else { "" });
    // Checked in `fuzz` before the VM starts; here a bad list is left out.
    if let Ok(Some(a)) = args_cmdline(&extra_args()) {
        extra.push(' ');
        extra.push_str(&a);
    }
    JobRun { extra_cmdline: extra, ..JobRun::default() }
}

/// What the guest printed: its summary (JSON) and the count of kernel report lines.
#[derive(Debug, Clone, PartialEq)]
pub struct GuestResult {
    pub summary: Option<Value>,
    pub kernel_reports: Option<u64>,
}

/// Reads the last summary and report-count lines of the console (a kernel message printed
/// in the middle of the line after the JSON does not spoil it: the first JSON value wins).
pub fn parse_console(console: &str) -> GuestResult {
    let summary = crate::report::marked_json(console, SUMMARY_MARK).into_iter().filter_map(|(_, v)| v.ok()).next_back();
    let mut r = GuestResult { summary, kernel_reports: None };
    for line in console.lines() {
        if let Some(pos) = line.find(REPORTS_MARK) {
            let n: String = line[pos + REPORTS_MARK.len()..].chars().take_while(|c| c.is_ascii_digit()).collect();
            if let Ok(n) = n.parse() {
                r.kernel_reports = Some(n);
            }
        }
    }
    r
}

/// The JSON written to `target/vgpu/fuzz-summary.json`: the guest's summary with the host's
/// findings added.
pub fn summary_json(g: &GuestResult, seed: u64, flavor: &str, args: &[String], device: Option<(u64, u64)>, guest_status: Option<i32>, wall_seconds: f64) -> Value {
    let s = g.summary.clone().unwrap_or_else(|| json!({}));
    let mut out = json!({
        "seed": s.get("seed").cloned().unwrap_or(json!(seed)),
        "ioctls": s.get("ioctls").cloned().unwrap_or(json!(0)),
        "by_errno": s.get("by_errno").cloned().unwrap_or(json!({})),
        "kernel_reports": g.kernel_reports,
        "violations": s.get("violations").cloned().unwrap_or(Value::Null),
        "device_violations": device.map(|d| d.1),
        "device_accesses_checked": device.map(|d| d.0),
        "flavor": flavor,
        "guest_status": guest_status,
        "vm_seconds": (wall_seconds * 10.0).round() / 10.0,
        "replay": replay(seed, flavor, args),
    });
    if let (Some(o), Some(src)) = (out.as_object_mut(), s.as_object()) {
        for (k, v) in src {
            o.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    out
}

/// The command that replays a run.
pub fn replay(seed: u64, flavor: &str, args: &[String]) -> String {
    let env = if args.is_empty() { String::new() } else { format!("VGPU_FUZZ_ARGS='{}' ", args.join(" ")) };
    let flavor = if flavor == "default" { String::new() } else { format!(" --flavor {flavor}") };
    format!("{env}cargo xtask vm --job fuzz --fuzz-seed {seed}{flavor}")
}

/// Why the run fails (empty: it passed).
pub fn problems(v: &Value, guest_status: Option<i32>, tap_failed: u32) -> Vec<String> {
    let mut p = Vec::new();
    match guest_status {
        Some(0) => {}
        Some(s) => p.push(format!("the guest job failed with status {s}")),
        None => p.push("the guest job reported no status".into()),
    }
    if tap_failed > 0 {
        p.push(format!("{tap_failed} TAP checks failed"));
    }
    let ioctls = v["ioctls"].as_u64().unwrap_or(0);
    if ioctls < MIN_IOCTLS {
        p.push(format!("{ioctls} ioctls (want at least {MIN_IOCTLS})"));
    }
    match v["kernel_reports"].as_u64() {
        Some(0) => {}
        Some(n) => p.push(format!("{n} kernel report lines (oops/WARN/lockdep/KASAN/hung task)")),
        None => p.push("the job did not report its kernel report count".into()),
    }
    match v["violations"].as_u64() {
        Some(0) => {}
        Some(n) => p.push(format!("the device reported {n} violations to the guest")),
        None => p.push("no fuzzer summary (vgpu-fuzz-summary line) on the console".into()),
    }
    match v["device_violations"].as_u64() {
        Some(0) => {}
        Some(n) => p.push(format!("the daemon's stats file shows {n} violations")),
        None => p.push("no daemon stats file".into()),
    }
    p
}

/// Runs the fuzz job and judges it.
pub fn fuzz(o: &Opts) -> Result<()> {
    let args = extra_args();
    args_cmdline(&args)?;
    let seed = seed(o);
    say!("fuzz: seed {seed} (replay: {})", replay(seed, o.flavor.name(), &args));
    let outcome = crate::run_job(o, "fuzz")?;
    let console = String::from_utf8_lossy(&std::fs::read(&outcome.console_log)?).into_owned();
    let r = report::Report::from_console(&console);
    let device = crate::device_stats(&outcome);
    let g = parse_console(&console);
    let v = summary_json(&g, seed, o.flavor.name(), &args, device, outcome.guest_status, outcome.elapsed.as_secs_f64());
    let path = paths::out().join("fuzz-summary.json");
    std::fs::create_dir_all(paths::out())?;
    std::fs::write(&path, serde_json::to_string_pretty(&v)? + "\n").with_context(|| format!("write {}", path.display()))?;
    println!("\n== fuzz job (seed {seed})");
    for f in &r.failures {
        println!("    not ok {f}");
    }
    println!(
        "fuzz: {} ioctls in {} s, {} BIND_ARRAY checks, {} failures, errnos {}, {} kernel reports, {} violations (device file: {}); summary: {}",
        v["ioctls"],
        v["seconds"],
        v["bind_array_checks"],
        v["failures"],
        v["by_errno"],
        v["kernel_reports"],
        v["violations"],
        v["device_violations"],
        path.display()
    );
    let p = problems(&v, outcome.guest_status, r.failed);
    if !p.is_empty() {
        bail!(
            "fuzz job failed: {}; console: {}; replay: {}",
            p.join("; "),
            outcome.console_log.display(),
            v["replay"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONSOLE: &str = "vgpu-guest: running vgpu-fuzz --seed 42 --seconds 300\r\n\
        ok 1 - regression: x\r\n\
        vgpu-fuzz-summary: {\"seed\":42,\"ioctls\":100123,\"by_errno\":{\"0\":5,\"EINVAL\":7},\"violations\":0,\"seconds\":88.5,\"threads\":4,\"children\":8}\r\n\
        ok 1 - no kernel BUG/WARNING/lockdep/KASAN/hung-task report during the fuzzer\r\n\
        vgpu-fuzz-kernel-reports: 0\r\n\
        vgpu-guest-exit: 0\r\n";

    #[test]
    fn parses_the_guest_lines() {
        let g = parse_console(CONSOLE);
        let s = g.summary.as_ref().unwrap();
        assert_eq!(s["ioctls"], 100123);
        assert_eq!(s["by_errno"]["EINVAL"], 7);
        assert_eq!(g.kernel_reports, Some(0));
        let v = summary_json(&g, 42, "default", &[], Some((1000, 0)), Some(0), 120.0);
        assert_eq!(v["seed"], 42);
        assert_eq!(v["kernel_reports"], 0);
        assert_eq!(v["threads"], 4, "the guest's other fields are kept");
        assert_eq!(v["device_accesses_checked"], 1000);
        assert_eq!(v["replay"], "cargo xtask vm --job fuzz --fuzz-seed 42");
        assert!(problems(&v, Some(0), 0).is_empty());
    }

    #[test]
    fn a_kernel_message_after_the_json_and_missing_lines() {
        let c = "vgpu-fuzz-summary: {\"ioctls\":5,\"violations\":2}[  12.3] vgpu_svm: ctx 3 ...\nvgpu-fuzz-kernel-reports: 3\n";
        let g = parse_console(c);
        assert_eq!(g.summary.as_ref().unwrap()["ioctls"], 5);
        let v = summary_json(&g, 1, "debug", &[], Some((10, 1)), Some(1), 1.0);
        assert!(v["replay"].as_str().unwrap().ends_with("--fuzz-seed 1 --flavor debug"));
        let p = problems(&v, Some(1), 2).join("; ");
        for want in ["status 1", "2 TAP", "5 ioctls", "3 kernel report", "2 violations", "stats file shows 1"] {
            assert!(p.contains(want), "{want}: {p}");
        }
        let none = parse_console("vgpu-guest-exit: 1\n");
        assert_eq!(none, GuestResult { summary: None, kernel_reports: None });
        let v = summary_json(&none, 9, "default", &[], None, None, 0.0);
        assert_eq!(v["seed"], 9);
        let p = problems(&v, None, 0).join("; ");
        assert!(p.contains("no status") && p.contains("no fuzzer summary") && p.contains("no daemon stats"), "{p}");
    }

    #[test]
    fn extra_args_reach_the_guest_and_the_replay() {
        let a: Vec<String> = ["--seed", "126948892842216", "--threads", "1"].iter().map(|s| s.to_string()).collect();
        assert_eq!(args_cmdline(&a).unwrap().as_deref(), Some("vgpu_fuzz_args=--seed,126948892842216,--threads,1"));
        assert_eq!(args_cmdline(&[]).unwrap(), None);
        assert!(args_cmdline(&["a b".to_string()]).is_err());
        assert!(args_cmdline(&["\"x".to_string()]).is_err());
        assert!(args_cmdline(&["a,b".to_string()]).is_err());
        assert_eq!(args_seed(&a), Some(126948892842216));
        assert_eq!(args_seed(&a[2..]), None);
        assert_eq!(replay(7, "debug", &a), "VGPU_FUZZ_ARGS='--seed 126948892842216 --threads 1' cargo xtask vm --job fuzz --fuzz-seed 7 --flavor debug");
        let g = parse_console(CONSOLE);
        let v = summary_json(&g, 42, "default", &a[2..], None, Some(0), 1.0);
        assert_eq!(v["replay"], "VGPU_FUZZ_ARGS='--threads 1' cargo xtask vm --job fuzz --fuzz-seed 42");
    }

    #[test]
    fn seeds_parse() {
        assert_eq!(parse_seed(" 123 "), Some(123));
        assert_eq!(parse_seed("0xff"), Some(255));
        assert_eq!(parse_seed("x"), None);
    }
}
