//! `cargo xtask mutants`: how much the suite proves. Each mutant in `kernel-driver/mutants/`
//! is a realistic driver mistake (a unified diff against the overlay, with a header saying
//! what it breaks); one at a time it is applied, the kernel rebuilt incrementally, and the
//! in-VM suite run until something fails: the `mutant` job (the test job without the
//! kernel's hmm-tests, plus a short fuzzer run), then the hardening and fault-injection VMs.
//! A mutant is killed by the first failure, survives if everything passes, and is
//! equivalent if it survives and its file argues why no test can tell (`Equivalent:`).
//! Writes `target/vgpu/mutants.json` and `target/vgpu/mutants.md` (the table).
//!
//! A mutant file starts with `Key: value` header lines, then the diff:
//!
//! ```text
//! Mutant: skip-read-retry
//! Area: sequence protocol
//! Breaks: populate() commits a snapshot without checking that no invalidation raced it.
//! Equivalent: (only for an equivalent mutant) why no test can tell it from the driver.
//!
//! --- a/drivers/gpu/drm/vgpu_svm/mirror.rs
//! +++ b/drivers/gpu/drm/vgpu_svm/mirror.rs
//! @@ ...
//! ```

use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::{paths, report::Report, say, Opts};

/// A mutant's file, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Mutant {
    pub name: String,
    pub area: String,
    pub breaks: String,
    /// The argument that it is equivalent, if its author made one.
    pub equivalent: Option<String>,
    /// Runs it gets at least, whatever `--runs` says (`Runs: N` header; 1 without one): a
    /// mutant whose kill must not be luck, such as every sequence-protocol mutant (killed
    /// in 5 of 5 runs), says so in its file.
    pub min_runs: u32,
    pub path: PathBuf,
}

/// The header of a patch file with a header (a mutant, an mm regression): `Key: value` lines
/// before the diff; a value goes on over lines indented by two spaces or a tab.
pub fn header_fields(text: &str) -> Vec<(String, String)> {
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if line.starts_with("--- ") || line.starts_with("diff ") {
            break;
        }
        if let Some(cont) = line.strip_prefix("  ").or_else(|| line.strip_prefix('\t')) {
            if let Some((_, v)) = fields.last_mut() {
                v.push(' ');
                v.push_str(cont.trim());
            }
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            if !k.contains(' ') && !k.is_empty() {
                fields.push((k.to_string(), v.trim().to_string()));
            }
        }
    }
    fields
}

/// Reads the header of a mutant file ([`header_fields`]). `Mutant`, `Area` and `Breaks` are
/// required.
pub fn parse_mutant(path: &Path, text: &str) -> Result<Mutant> {
    let fields = header_fields(text);
    let get = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).filter(|v| !v.is_empty());
    let need = |k: &str| get(k).with_context(|| format!("{}: no `{k}:` header line", path.display()));
    if !text.lines().any(|l| l.starts_with("+++ ")) {
        bail!("{}: no diff (`+++ b/...` line)", path.display());
    }
    let min_runs = match get("Runs") {
        None => 1,
        Some(v) => match v.split_whitespace().next().and_then(|n| n.parse::<u32>().ok()) {
            Some(n) if (1..=100).contains(&n) => n,
            _ => bail!("{}: `Runs:` must start with a number of runs in 1..=100, got {v:?}", path.display()),
        },
    };
    Ok(Mutant {
        name: need("Mutant")?,
        area: need("Area")?,
        breaks: need("Breaks")?,
        equivalent: get("Equivalent"),
        min_runs,
        path: path.to_path_buf(),
    })
}

/// Every `*.patch` in `dir`, in file-name order, parsed by `parse`; `name` gives each one's
/// name, which must be unique (`what` names the kind in the error).
pub fn load_patch_files<T>(
    dir: &Path,
    what: &str,
    parse: impl Fn(&Path, &str) -> Result<T>,
    name: impl Fn(&T) -> &str,
) -> Result<Vec<T>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "patch"))
        .collect();
    files.sort();
    let mut out: Vec<T> = Vec::new();
    for f in files {
        let m = parse(&f, &std::fs::read_to_string(&f)?)?;
        if out.iter().any(|o| name(o) == name(&m)) {
            bail!("two {what} are named `{}`", name(&m));
        }
        out.push(m);
    }
    Ok(out)
}

/// Every mutant in `dir`, in file-name order; names must be unique.
pub fn load_mutants(dir: &Path) -> Result<Vec<Mutant>> {
    load_patch_files(dir, "mutants", parse_mutant, |m| &m.name)
}

/// What became of one mutant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Some check failed in every run.
    Killed,
    /// Killed in some runs only: the suite catches it by luck.
    Flaky,
    /// Every check passed in every run.
    Survived,
    /// Survived, and its file argues that no test can tell it from the driver.
    Equivalent,
    /// It does not apply or does not build: a broken mutant, not a verdict on the suite.
    Invalid,
}

/// One mutant's result in `mutants.json`.
#[derive(Debug, Clone, Serialize)]
pub struct MutantResult {
    pub name: String,
    pub area: String,
    pub verdict: Verdict,
    /// What failed first, in the last run that failed ("job: check").
    pub killed_by: Vec<String>,
    pub seconds: f64,
    pub runs: u32,
    pub kills: u32,
}

/// The verdict from the kills in `runs` runs.
pub fn verdict(m: &Mutant, runs: u32, kills: u32) -> Verdict {
    match (kills, m.equivalent.is_some()) {
        (k, _) if k == runs && runs > 0 => Verdict::Killed,
        (0, true) => Verdict::Equivalent,
        (0, false) => Verdict::Survived,
        _ => Verdict::Flaky,
    }
}

/// The share of non-equivalent, valid mutants killed in every run.
pub fn score(results: &[MutantResult]) -> Option<f64> {
    let counted: Vec<_> = results.iter().filter(|r| !matches!(r.verdict, Verdict::Equivalent | Verdict::Invalid)).collect();
    if counted.is_empty() {
        return None;
    }
    Some(counted.iter().filter(|r| r.verdict == Verdict::Killed).count() as f64 / counted.len() as f64)
}

/// The VMs of the suite, in order (cheapest and most telling first).
const JOBS: [&str; 3] = ["mutant", "hardening", "faultinj"];

/// A clean run's VM bound is a few minutes; a mutant that hangs the guest is killed by this
/// timeout (reported as such) unless `--timeout` says otherwise.
const MUTANT_TIMEOUT: Duration = Duration::from_secs(300);

/// Runs the suite's VMs on whatever driver is built in; returns what failed first (empty:
/// everything passed).
fn run_suite(o: &Opts) -> Result<Vec<String>> {
    for job in JOBS {
        let failures = match crate::run_job_quiet(o, job) {
            Ok(outcome) => job_failures(job, &outcome)?,
            // A VM that timed out or crashed the host side: the mutant hung the guest. Say
            // where: the last program the guest started and its last TAP line.
            Err(e) => {
                let console = std::fs::read(paths::out().join("runs").join(job).join("console.log")).unwrap_or_default();
                vec![format!("VM: {} ({})", format!("{e:#}").lines().next().unwrap_or(""), last_steps(&String::from_utf8_lossy(&console)))]
            }
        };
        if !failures.is_empty() {
            return Ok(failures.into_iter().take(5).map(|f| format!("{job}: {f}")).collect());
        }
    }
    Ok(Vec::new())
}

/// Where a guest was when it stopped reporting: its last `vgpu-guest: running ...` line and
/// its last TAP result line.
pub fn last_steps(console: &str) -> String {
    let last = |f: &dyn Fn(&str) -> bool| console.lines().rev().map(|l| l.trim_end_matches('\r').trim()).find(|l| f(l)).unwrap_or("-").to_string();
    let running = last(&|l| l.starts_with("vgpu-guest: running"));
    let tap = last(&|l| l.starts_with("ok ") || l.starts_with("not ok "));
    format!("last: `{running}`, then `{tap}`")
}

/// The failures of one job's run, judged as `cargo xtask test` judges it.
fn job_failures(job: &str, outcome: &crate::vm::VmOutcome) -> Result<Vec<String>> {
    let console = String::from_utf8_lossy(&std::fs::read(&outcome.console_log)?).into_owned();
    let r = Report::from_console(&console);
    let mut f: Vec<String> = r.failures.iter().map(|d| format!("not ok {d}")).collect();
    if job == "faultinj" {
        let (_, problems) = crate::faultinj::verdict(&console, outcome.guest_status, &outcome.device_faults, crate::device_stats(outcome));
        f.extend(problems.into_iter().filter(|p| !p.starts_with("not ok")));
    } else if job == "hardening" {
        match crate::device_stats(outcome) {
            Some((checked, 0)) if checked > 0 => {}
            d => f.push(format!("daemon stats (accesses, violations) {d:?}, want > 0 and 0")),
        }
    }
    match outcome.guest_status {
        Some(0) => {}
        Some(s) => f.push(format!("guest status {s}")),
        None => f.push("the guest reported no status (panic?)".into()),
    }
    if r.passed == 0 {
        f.push("no TAP check passed".into());
    }
    f.dedup();
    Ok(f)
}

/// Serializes the machine's VM runs with other users when `VGPU_VM_LOCK` names a lock file
/// (`flock(2)`, held until dropped): a campaign takes it per mutant, so other work can run in
/// between.
pub struct VmLock {
    _held: Option<std::fs::File>,
}

impl VmLock {
    /// Takes the lock `VGPU_VM_LOCK` names (none if unset), after a short pause.
    pub fn take() -> Result<Self> {
        let Some(p) = std::env::var_os("VGPU_VM_LOCK") else { return Ok(Self { _held: None }) };
        // flock(2) is not fair: a campaign that takes the lock again right after releasing
        // it starves a waiting user (seen: a helper's VM waited 6 minutes). A pause first
        // lets a waiter, woken by the release, get it.
        std::thread::sleep(Duration::from_millis(1500));
        let f = std::fs::OpenOptions::new().create(true).append(true).open(&p).with_context(|| format!("open {}", PathBuf::from(&p).display()))?;
        use std::os::fd::AsRawFd;
        // SAFETY: flock on a file descriptor we own; no memory is involved.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            bail!("flock {}: {}", PathBuf::from(&p).display(), std::io::Error::last_os_error());
        }
        Ok(Self { _held: Some(f) })
    }
}

/// `cargo xtask mutants [--only NAME,...] [--runs N] [--no-baseline]`.
pub fn mutants(o: &Opts) -> Result<()> {
    let dir = paths::workspace().join("kernel-driver/mutants");
    let mut all = load_mutants(&dir)?;
    if !o.only.is_empty() {
        if let Some(n) = o.only.iter().find(|n| !all.iter().any(|m| &m.name == *n)) {
            bail!("no mutant named `{n}` in {}", dir.display());
        }
        all.retain(|m| o.only.contains(&m.name));
    }
    let runs = o.runs.max(1);
    let mut o = o.clone();
    if !o.timeout_given {
        o.timeout = MUTANT_TIMEOUT;
    }
    crate::setup::setup()?;
    let started = Instant::now();
    say!("mutants: {} mutant(s) x {runs} run(s), suite: {} VMs", all.len(), JOBS.join(", "));
    let mut baseline_seconds = None;
    if !o.no_baseline {
        let t0 = Instant::now();
        let _lock = VmLock::take()?;
        say!("mutants: baseline (the driver as it is) must pass the suite");
        o.mutant = None;
        let f = run_suite(&o)?;
        if !f.is_empty() {
            bail!("the unmutated driver fails the suite, so no kill would mean anything:\n  {}", f.join("\n  "));
        }
        baseline_seconds = Some(t0.elapsed().as_secs_f64());
    }
    let mut results = Vec::new();
    for (i, m) in all.iter().enumerate() {
        let t0 = Instant::now();
        let (mut kills, mut killed_by, mut invalid) = (0, Vec::new(), None);
        let runs = runs.max(m.min_runs);
        for run in 0..runs {
            let _lock = VmLock::take()?;
            say!("mutants: [{}/{}] {} (run {}/{runs}): {}", i + 1, all.len(), m.name, run + 1, m.breaks);
            o.mutant = Some(m.path.clone());
            if let Err(e) = crate::build_guest_image(&o) {
                invalid = Some(format!("{e:#}").lines().next().unwrap_or("").to_string());
                break;
            }
            let f = run_suite(&o)?;
            if !f.is_empty() {
                kills += 1;
                killed_by = f;
            }
            say!("mutants: {}: {}", m.name, if killed_by.is_empty() { "survived".to_string() } else { format!("killed by {}", killed_by[0]) });
        }
        let (verdict, killed_by) = match invalid {
            Some(why) => (Verdict::Invalid, vec![why]),
            None => (verdict(m, runs, kills), killed_by),
        };
        results.push(MutantResult { name: m.name.clone(), area: m.area.clone(), verdict, killed_by, seconds: t0.elapsed().as_secs_f64(), runs, kills });
        // After every mutant: an interrupted campaign keeps what it learned.
        write_results(&o, runs, baseline_seconds, started, &results, false)?;
    }
    // Leave the cache with the driver as it is.
    o.mutant = None;
    {
        let _lock = VmLock::take()?;
        crate::kernel::build(o.flavor)?;
    }
    let json = write_results(&o, runs, baseline_seconds, started, &results, true)?;
    let md = paths::out().join("mutants.md");
    let table = render_table(&results, &all);
    std::fs::write(&md, &table)?;
    println!("\n{table}");
    let count = |v: Verdict| results.iter().filter(|r| r.verdict == v).count();
    println!(
        "mutants: {} killed, {} flaky, {} survived, {} equivalent, {} invalid; score {}; {:.0} s ({}, {})",
        count(Verdict::Killed),
        count(Verdict::Flaky),
        count(Verdict::Survived),
        count(Verdict::Equivalent),
        count(Verdict::Invalid),
        score(&results).map_or("-".into(), |s| format!("{:.0} %", s * 100.0)),
        started.elapsed().as_secs_f64(),
        json.display(),
        md.display()
    );
    let bad = count(Verdict::Flaky) + count(Verdict::Survived) + count(Verdict::Invalid);
    if bad > 0 {
        bail!("{bad} mutant(s) flaky, survived or invalid (see the table)");
    }
    Ok(())
}

/// Writes target/vgpu/mutants.json (`finished`: false while the campaign runs); returns its
/// path.
fn write_results(o: &Opts, runs: u32, baseline_seconds: Option<f64>, started: Instant, results: &[MutantResult], finished: bool) -> Result<PathBuf> {
    let commit = crate::report::commit();
    let doc = serde_json::json!({
        "commit": commit.0,
        "dirty": commit.1,
        "flavor": o.flavor.name(),
        "suite": JOBS,
        "runs_per_mutant": runs,
        "baseline_seconds": baseline_seconds,
        "seconds": started.elapsed().as_secs_f64(),
        "finished": finished,
        "score": score(results),
        "mutants": results,
    });
    std::fs::create_dir_all(paths::out())?;
    let json = paths::out().join("mutants.json");
    std::fs::write(&json, serde_json::to_string_pretty(&doc)? + "\n")?;
    Ok(json)
}

/// The Markdown table: name, area, verdict (kills/runs), what killed it, seconds.
pub fn render_table(results: &[MutantResult], mutants: &[Mutant]) -> String {
    let mut s = String::from("| mutant | area | verdict | killed by | s |\n|---|---|---|---|---|\n");
    for r in results {
        let by = r.killed_by.first().map(|k| k.replace('|', "\\|")).unwrap_or_else(|| {
            mutants.iter().find(|m| m.name == r.name).and_then(|m| m.equivalent.clone()).map_or("-".into(), |_| "(equivalent: see its file)".into())
        });
        s += &format!("| {} | {} | {:?} ({}/{}) | {} | {:.0} |\n", r.name, r.area, r.verdict, r.kills, r.runs, by, r.seconds);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: &str = "Mutant: skip-read-retry\nArea: sequence protocol\nBreaks: commits a stale\n  snapshot.\n\n--- a/x.rs\n+++ b/x.rs\n@@ -1 +1 @@\n-a\n+b\n";

    #[test]
    fn parses_header_with_continuation_lines() {
        let m = parse_mutant(Path::new("m.patch"), M).unwrap();
        assert_eq!((m.name.as_str(), m.area.as_str(), m.breaks.as_str()), ("skip-read-retry", "sequence protocol", "commits a stale snapshot."));
        assert_eq!(m.equivalent, None);
        assert_eq!(m.min_runs, 1);
    }

    #[test]
    fn runs_header_sets_the_minimum_runs() {
        let t = "Mutant: a\nArea: b\nBreaks: c\nRuns: 5 (must not be luck)\n+++ b/x\n";
        assert_eq!(parse_mutant(Path::new("m"), t).unwrap().min_runs, 5);
        for bad in ["Runs: five", "Runs: 0", "Runs: 1000"] {
            let t = format!("Mutant: a\nArea: b\nBreaks: c\n{bad}\n+++ b/x\n");
            assert!(parse_mutant(Path::new("m"), &t).unwrap_err().to_string().contains("Runs:"), "{bad}");
        }
    }

    #[test]
    fn every_sequence_protocol_mutant_gets_five_runs() {
        let all = load_mutants(&paths::workspace().join("kernel-driver/mutants")).unwrap();
        let seq: Vec<_> = all.iter().filter(|m| m.area == "sequence protocol").collect();
        assert!(seq.len() >= 4);
        for m in seq {
            assert!(m.min_runs >= 5, "{}: a sequence-protocol mutant must be killed in 5 of 5 runs", m.name);
        }
    }

    #[test]
    fn header_fields_and_diff_are_required() {
        assert!(parse_mutant(Path::new("m"), "Area: a\nBreaks: b\n+++ b/x\n").unwrap_err().to_string().contains("Mutant:"));
        assert!(parse_mutant(Path::new("m"), "Mutant: a\nArea: a\nBreaks: b\n").unwrap_err().to_string().contains("no diff"));
    }

    #[test]
    fn diff_lines_are_not_header() {
        let t = "Mutant: a\nArea: b\nBreaks: c\n--- a/x\n+++ b/x\n@@ -1 +1 @@\n-Equivalent: no\n+Equivalent: yes\n";
        assert_eq!(parse_mutant(Path::new("m"), t).unwrap().equivalent, None);
    }

    fn res(v: Verdict) -> MutantResult {
        MutantResult { name: "m".into(), area: "a".into(), verdict: v, killed_by: vec![], seconds: 1.0, runs: 1, kills: 0 }
    }

    #[test]
    fn last_steps_names_the_program_and_the_tap_line() {
        let c = "vgpu-guest: running vgpu-smoke\nok 1 a\nvgpu-guest: running vgpu-coherence\r\nok 5 fork_cow [svm]\n[ 9.1] INFO: task blocked\n";
        assert_eq!(last_steps(c), "last: `vgpu-guest: running vgpu-coherence`, then `ok 5 fork_cow [svm]`");
        assert_eq!(last_steps(""), "last: `-`, then `-`");
    }

    #[test]
    fn verdicts_from_kills() {
        let mut m = parse_mutant(Path::new("m"), M).unwrap();
        assert_eq!(verdict(&m, 5, 5), Verdict::Killed);
        assert_eq!(verdict(&m, 5, 4), Verdict::Flaky);
        assert_eq!(verdict(&m, 5, 0), Verdict::Survived);
        m.equivalent = Some("because".into());
        assert_eq!(verdict(&m, 1, 0), Verdict::Equivalent);
        // An "equivalent" mutant that a test kills was not equivalent.
        assert_eq!(verdict(&m, 1, 1), Verdict::Killed);
    }

    #[test]
    fn score_leaves_out_equivalent_and_invalid() {
        let r = [res(Verdict::Killed), res(Verdict::Survived), res(Verdict::Equivalent), res(Verdict::Invalid)];
        assert_eq!(score(&r), Some(0.5));
        assert_eq!(score(&[res(Verdict::Equivalent)]), None);
        assert_eq!(score(&[res(Verdict::Killed), res(Verdict::Flaky)]), Some(0.5));
    }

    #[test]
    fn the_repository_mutants_parse_and_are_many() {
        let m = load_mutants(&paths::workspace().join("kernel-driver/mutants")).unwrap();
        assert!(m.len() >= 25, "{} mutants", m.len());
        for x in &m {
            let text = std::fs::read_to_string(&x.path).unwrap();
            let files = crate::kernel::patched_files(&text);
            assert!(!files.is_empty(), "{}", x.name);
            for f in files {
                assert!(paths::workspace().join("kernel-driver/overlay").join(&f).is_file(), "{}: {} is not an overlay file", x.name, f.display());
            }
        }
    }

    #[test]
    fn the_repository_mutants_apply_to_the_overlay() {
        // Each one applies cleanly (dry run) to a copy of the overlay: a mutant that no
        // longer applies after a driver change is caught by the host tests, not an hour
        // into a campaign.
        let overlay = paths::workspace().join("kernel-driver/overlay");
        for x in load_mutants(&paths::workspace().join("kernel-driver/mutants")).unwrap() {
            let out = std::process::Command::new("patch")
                .args(["-p1", "--dry-run", "--batch", "--forward", "--fuzz=0", "-s", "-d"])
                .arg(&overlay)
                .stdin(std::fs::File::open(&x.path).unwrap())
                .output()
                .unwrap();
            assert!(out.status.success(), "{} does not apply: {}{}", x.name, String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        }
    }
}
