//! `cargo xtask mm-regressions`: the zoo of historical mmu-notifier bugs
//! (`tests/mm-regressions/*.patch`), each re-introduced into the guest kernel's `mm/` in
//! turn, with the verdict of the coherence suite and of the kernel's own hmm-tests on that
//! kernel.
//!
//! A zoo patch is a `-p1` diff against the 7.2 tree with a header (the format of
//! [`crate::mutants::header_fields`]):
//!
//! ```text
//! Regression: unpaired-start-end
//! Upstream: the fix or thread it re-creates
//! Breaks: what no longer notifies, and what a mirroring device sees
//! Caught-by: pair_start_end
//!
//! --- a/mm/mmu_notifier.c
//! +++ b/mm/mmu_notifier.c
//! ```
//!
//! Each kernel is built incrementally from the one cached tree (the patch goes on after the
//! overlay, as `--kernel-patch` does, and comes off at the next build), booted with the
//! `mm-regression` guest job (hmm-tests, then every coherence case once), and judged: the
//! patch is caught when a positive coherence case fails. An unpatched baseline must pass
//! first, or no catch would mean anything.

use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::mutants::{header_fields, load_patch_files, VmLock};
use crate::{coherence, paths, say, Opts};

/// One patch of the zoo, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Regression {
    pub name: String,
    pub upstream: String,
    pub breaks: String,
    /// The cases its author expects to catch it (`Caught-by:`, comma or space separated).
    pub expected: Vec<String>,
    pub path: PathBuf,
}

/// Reads a zoo patch's header; `Regression`, `Upstream` and `Breaks` are required.
pub fn parse_regression(path: &Path, text: &str) -> Result<Regression> {
    let fields = header_fields(text);
    let get = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).filter(|v| !v.is_empty());
    let need = |k: &str| get(k).with_context(|| format!("{}: no `{k}:` header line", path.display()));
    if !text.lines().any(|l| l.starts_with("+++ ")) {
        bail!("{}: no diff (`+++ b/...` line)", path.display());
    }
    let expected = case_names(&get("Caught-by").unwrap_or_default());
    Ok(Regression { name: need("Regression")?, upstream: need("Upstream")?, breaks: need("Breaks")?, expected, path: path.to_path_buf() })
}

/// The case names of a `Caught-by:` value: a list of names, each may be followed by an
/// explanation in parentheses; the list ends at the first sentence end (`. `), after which
/// prose may follow.
pub fn case_names(v: &str) -> Vec<String> {
    let mut bare = String::new();
    let mut depth = 0u32;
    for c in v.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            _ if depth == 0 => bare.push(c),
            _ => {}
        }
    }
    let list = bare.split(". ").next().unwrap_or("").trim_end_matches('.');
    list.split([',', ' '])
        .map(|w| w.trim().trim_matches('`'))
        .filter(|w| !w.is_empty() && !["and", "or"].contains(w))
        .filter(|w| w.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
        .map(String::from)
        .collect()
}

/// Every zoo patch in `dir`, in file-name order; names must be unique.
pub fn load(dir: &Path) -> Result<Vec<Regression>> {
    load_patch_files(dir, "zoo patches", parse_regression, |r| &r.name)
}

/// A coherence case that failed on a patched kernel.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Catch {
    /// `scenario [mode]`.
    pub case: String,
    pub violations: u64,
    pub detail: String,
    /// The device's log line of the case's first violation (its kind, addresses, CPU entry,
    /// a hint naming the CPU PTE change, and the INVALIDATEs that covered the VA), when the
    /// device log could be matched to the cases ([`violation_lines`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_violation: Option<String>,
}

/// The marker of the device's violation log lines (`vgpu-device/src/checker`).
const VIOLATION_MARK: &str = "COHERENCE VIOLATION ";

/// The first violation line the device logged for each context, by context id.
pub fn first_violation_by_ctx(device_log: &str) -> std::collections::BTreeMap<u32, String> {
    let mut by_ctx = std::collections::BTreeMap::new();
    for line in device_log.lines() {
        let Some(at) = line.find(VIOLATION_MARK) else { continue };
        let v = &line[at..];
        let ctx = v.split_once(": ctx ").and_then(|(_, r)| r.split_whitespace().next()).and_then(|n| n.parse::<u32>().ok());
        if let Some(ctx) = ctx {
            by_ctx.entry(ctx).or_insert_with(|| v.trim_end().to_string());
        }
    }
    by_ctx
}

/// For each case run (console order), the device's first violation line of its first
/// context with violations: the case names its contexts' device ids (`contexts[].ctx`, from
/// fdinfo), the device's lines name the context. None for a case without such a context
/// (negative controls open theirs outside the case framework, older guests give no ids).
pub fn violation_lines(cases: &[coherence::CaseResult], device_log: &str) -> Vec<Option<String>> {
    let firsts = first_violation_by_ctx(device_log);
    cases
        .iter()
        .map(|c| c.contexts.iter().filter(|v| v.violations != 0).find_map(|v| v.ctx.and_then(|id| firsts.get(&id).cloned())))
        .collect()
}

/// The kernel's hmm-tests on the same kernel (kselftest's `# Totals:` line).
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, Default)]
pub struct HmmTests {
    pub pass: u64,
    pub fail: u64,
    pub skip: u64,
    /// A Totals line was found (false: the run ended before hmm-tests did).
    pub ran: bool,
}

impl HmmTests {
    /// `pass`, `FAIL (n)` or `did not finish`.
    pub fn verdict(&self) -> String {
        match (self.ran, self.fail) {
            (false, _) => "did not finish".into(),
            (true, 0) => "pass".into(),
            (true, n) => format!("FAIL ({n})"),
        }
    }
}

/// The first `# Totals: pass:N fail:N ... skip:N` line after `vgpu-guest: running hmm-tests`.
pub fn hmm_totals(console: &str) -> HmmTests {
    let Some(at) = console.find("vgpu-guest: running hmm-tests") else { return HmmTests::default() };
    let Some(line) = console[at..].lines().find(|l| l.trim_start_matches(['#', ' ']).starts_with("Totals:")) else {
        return HmmTests::default();
    };
    let num = |k: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    HmmTests { pass: num("pass:"), fail: num("fail:"), skip: num("skip:"), ran: true }
}

/// The positive coherence cases that failed (negative controls and skips are not catches),
/// each with its first violation's device log line if `device_log` can be matched
/// ([`violation_lines`]).
pub fn catches(cases: &[coherence::CaseResult], device_log: &str) -> Vec<Catch> {
    let lines = violation_lines(cases, device_log);
    cases
        .iter()
        .zip(lines)
        .filter(|(c, _)| !c.expect_violations && !c.skipped && !c.passed)
        .map(|(c, first_violation)| Catch {
            case: format!("{} [{}]", c.scenario, c.mode),
            violations: c.violations,
            detail: c.detail.chars().take(200).collect(),
            first_violation,
        })
        .collect()
}

/// One patch's result in `mm-regressions.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub name: String,
    pub upstream: String,
    pub expected: Vec<String>,
    pub caught: bool,
    pub caught_by: Vec<Catch>,
    /// The guest did not finish (a hang or crash on the patched kernel): caught, by the VM.
    pub vm_error: Option<String>,
    pub hmm_tests: HmmTests,
    pub seconds: f64,
}

/// Checks that every zoo patch still applies (dry run, no fuzz) to the pristine sources of
/// `tree` (a file an overlay or `--kernel-patch` patch changed is taken from `orig`, its
/// saved pristine copy). Cheap, so `test` runs it: a kernel update that breaks the zoo is
/// found by CI, not at the next `mm-regressions`. Returns how many patches were checked.
pub fn check_zoo_applies(tree: &Path, orig: &Path) -> Result<usize> {
    let all = load(&zoo_dir())?;
    check_applies(&all, tree, orig)?;
    Ok(all.len())
}

fn check_applies(all: &[Regression], tree: &Path, orig: &Path) -> Result<()> {
    let scratch = std::env::temp_dir().join(format!("vgpu-zoo-check-{}", std::process::id()));
    for r in all {
        let _ = std::fs::remove_dir_all(&scratch);
        let text = std::fs::read_to_string(&r.path)?;
        for rel in crate::kernel::patched_files(&text) {
            let src = if orig.join(&rel).is_file() { orig.join(&rel) } else { tree.join(&rel) };
            std::fs::create_dir_all(scratch.join(&rel).parent().context("parent")?)?;
            std::fs::copy(&src, scratch.join(&rel)).with_context(|| format!("zoo patch {}: the kernel has no {}", r.name, rel.display()))?;
        }
        let out = std::process::Command::new("patch")
            .args(["-p1", "--dry-run", "--batch", "--forward", "--fuzz=0", "-s", "-d"])
            .arg(&scratch)
            .stdin(std::fs::File::open(&r.path)?)
            .output()?;
        if !out.status.success() {
            let _ = std::fs::remove_dir_all(&scratch);
            let why = String::from_utf8_lossy(&out.stdout);
            bail!(
                "zoo patch {} no longer applies to {}: {} (remake it as tests/mm-regressions/README.md says)",
                r.path.display(),
                tree.display(),
                crate::kernel::patch_failure_line(&why)
            );
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

/// The zoo patches live here.
fn zoo_dir() -> PathBuf {
    paths::workspace().join("tests/mm-regressions")
}

/// A broken mm can hang the guest; a clean run takes a few minutes.
const TIMEOUT: Duration = Duration::from_secs(900);

/// Builds the kernel with `patches` and runs the `mm-regression` job on it: the cases, the
/// hmm-tests totals, the VM's error if it did not finish, and the device's log.
fn run_one(o: &Opts, patches: Vec<PathBuf>) -> Result<(Vec<coherence::CaseResult>, HmmTests, Option<String>, String)> {
    let mut o = o.clone();
    o.kernel_patches = patches;
    if !o.timeout_given {
        o.timeout = TIMEOUT;
    }
    // A guest that fails its job is expected here (the zoo breaks things); only a VM that did
    // not finish (timeout, crash) is an error, and it counts as caught.
    let vm_error = crate::run_job_quiet(&o, "mm-regression").err().map(|e| format!("{e:#}").lines().next().unwrap_or("").to_string());
    let console = std::fs::read(paths::out().join("runs/mm-regression/console.log")).unwrap_or_default();
    let console = String::from_utf8_lossy(&console);
    let cases = coherence::summary_from_console(&console)?;
    let device_log = std::fs::read(paths::out().join("runs/mm-regression/device.log")).unwrap_or_default();
    Ok((cases, hmm_totals(&console), vm_error, String::from_utf8_lossy(&device_log).into_owned()))
}

/// `cargo xtask mm-regressions [--only NAME,...] [--no-baseline]` (`--kernel-patch` files
/// go under every zoo patch; `VGPU_VM_LOCK` as for `mutants`).
pub fn mm_regressions(o: &Opts) -> Result<()> {
    let dir = zoo_dir();
    let mut all = load(&dir)?;
    if !o.only.is_empty() {
        if let Some(n) = o.only.iter().find(|n| !all.iter().any(|r| &r.name == *n)) {
            bail!("no zoo patch named `{n}` in {}", dir.display());
        }
        all.retain(|r| o.only.contains(&r.name));
    }
    crate::setup::setup()?;
    let started = Instant::now();
    say!("mm-regressions: {} patch(es); each: build, hmm-tests, every coherence case once", all.len());
    if !o.no_baseline {
        let _lock = VmLock::take()?;
        say!("mm-regressions: baseline (no zoo patch) must pass");
        let (cases, hmm, err, log) = run_one(o, o.kernel_patches.clone())?;
        let failed = catches(&cases, &log);
        if let Some(e) = err {
            bail!("the baseline kernel's run failed: {e}");
        }
        if !failed.is_empty() || cases.is_empty() {
            bail!("the baseline kernel fails coherence cases ({}), so no catch would mean anything", failed.iter().map(|c| c.case.as_str()).collect::<Vec<_>>().join(", "));
        }
        say!("mm-regressions: baseline: {} coherence runs pass; hmm-tests {}", cases.len(), hmm.verdict());
    }
    let mut results = Vec::new();
    for (i, r) in all.iter().enumerate() {
        let t0 = Instant::now();
        let _lock = VmLock::take()?;
        say!("mm-regressions: [{}/{}] {}: {}", i + 1, all.len(), r.name, r.breaks);
        let mut patches = o.kernel_patches.clone();
        patches.push(std::fs::canonicalize(&r.path)?);
        let (cases, hmm, vm_error, log) = run_one(o, patches)?;
        let caught_by = catches(&cases, &log);
        let caught = !caught_by.is_empty() || vm_error.is_some();
        say!(
            "mm-regressions: {}: {}; hmm-tests {}",
            r.name,
            match (&vm_error, caught_by.first()) {
                (Some(e), _) => format!("caught: the guest did not finish ({e})"),
                (None, Some(c)) => format!("caught by {} case(s), first {} ({} violations)", caught_by.len(), c.case, c.violations),
                (None, None) => "NOT caught".into(),
            },
            hmm.verdict()
        );
        if let Some(line) = caught_by.iter().find_map(|c| c.first_violation.as_ref()) {
            say!("mm-regressions: {}: the device's first violation: {line}", r.name);
        }
        results.push(Outcome {
            name: r.name.clone(),
            upstream: r.upstream.clone(),
            expected: r.expected.clone(),
            caught,
            caught_by,
            vm_error,
            hmm_tests: hmm,
            seconds: t0.elapsed().as_secs_f64(),
        });
        write_results(&results, started, false, o.kernel_tree.as_ref().map(|t| t.describe()))?;
    }
    // Leave the cache as the project builds it (with the user's tree and patches, if any).
    {
        let _lock = VmLock::take()?;
        crate::kernel::build_variant(o.flavor, &o.variant())?;
    }
    let json = write_results(&results, started, true, o.kernel_tree.as_ref().map(|t| t.describe()))?;
    let table = render_table(&results);
    std::fs::write(paths::out().join("mm-regressions.md"), &table)?;
    println!("\n{table}");
    let missed = results.iter().filter(|r| !r.caught).count();
    println!("mm-regressions: {} of {} caught; {:.0} s ({})", results.len() - missed, results.len(), started.elapsed().as_secs_f64(), json.display());
    if missed > 0 {
        bail!("{missed} zoo patch(es) not caught by any coherence case");
    }
    Ok(())
}

fn write_results(results: &[Outcome], started: Instant, finished: bool, o_tree: Option<String>) -> Result<PathBuf> {
    let (commit, dirty) = crate::report::commit();
    let doc = serde_json::json!({
        "commit": commit,
        "dirty": dirty,
        "finished": finished,
        "kernel_tree": o_tree,
        "seconds": started.elapsed().as_secs_f64(),
        "patches": results,
    });
    let path = paths::out().join("mm-regressions.json");
    std::fs::create_dir_all(paths::out())?;
    std::fs::write(&path, serde_json::to_string_pretty(&doc)? + "\n")?;
    Ok(path)
}

/// The table: patch, upstream reference, caught by (cases, violations), hmm-tests.
pub fn render_table(results: &[Outcome]) -> String {
    let mut s = String::from("| patch | upstream | caught by (violations) | hmm-tests on the same kernel | s |\n|---|---|---|---|---|\n");
    for r in results {
        let by = match (&r.vm_error, r.caught_by.is_empty()) {
            (Some(e), _) => format!("the guest did not finish: {e}"),
            (None, true) => "**not caught**".into(),
            (None, false) => r.caught_by.iter().take(4).map(|c| format!("{} ({})", c.case, c.violations)).collect::<Vec<_>>().join(", ")
                + &if r.caught_by.len() > 4 { format!(" and {} more", r.caught_by.len() - 4) } else { String::new() },
        };
        let up: String = r.upstream.chars().take(120).collect();
        s += &format!("| {} | {} | {} | {} | {:.0} |\n", r.name, up, by, r.hmm_tests.verdict(), r.seconds);
    }
    let firsts: Vec<_> = results
        .iter()
        .filter_map(|r| r.caught_by.iter().find_map(|c| c.first_violation.as_ref().map(|l| (&r.name, &c.case, l))))
        .collect();
    if !firsts.is_empty() {
        s += "\nThe device's first violation per caught patch (the case, then its log line):\n\n";
        for (name, case, line) in firsts {
            s += &format!("- {name}, {case}: `{line}`\n");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "Regression: unpaired-start-end\nUpstream: mm/mmu_notifiers: ensure range_end() is paired\n  with range_start() (2019)\nBreaks: the back-out is gone.\nCaught-by: pair_start_end, `nonblock_reap`\n\n--- a/mm/mmu_notifier.c\n+++ b/mm/mmu_notifier.c\n@@ -1 +1 @@\n-a\n+b\n";

    #[test]
    fn parses_the_header() {
        let r = parse_regression(Path::new("01.patch"), P).unwrap();
        assert_eq!(r.name, "unpaired-start-end");
        assert_eq!(r.upstream, "mm/mmu_notifiers: ensure range_end() is paired with range_start() (2019)");
        assert_eq!(r.expected, ["pair_start_end", "nonblock_reap"]);
        assert_eq!(
            case_names("a_b, c (why, with (nested) words), d (x). Needs e_f and g."),
            ["a_b", "c", "d"]
        );
        assert!(parse_regression(Path::new("x"), "Regression: a\nBreaks: b\n+++ b/x\n").unwrap_err().to_string().contains("Upstream:"));
    }

    #[test]
    fn the_zoo_parses_and_names_known_cases() {
        let zoo = load(&zoo_dir()).unwrap();
        assert!(zoo.len() >= 6, "the issue asks for at least six patches");
        let cases = std::fs::read_to_string(paths::workspace().join("tests/src/cases/mod.rs")).unwrap();
        for r in &zoo {
            assert!(!r.expected.is_empty(), "{}: no Caught-by", r.name);
            for c in &r.expected {
                assert!(cases.contains(&format!("\"{c}\"")), "{}: Caught-by names `{c}`, which is no case", r.name);
            }
        }
    }

    #[test]
    fn hmm_totals_come_from_the_hmm_tests_run() {
        let c = "vgpu-guest: running vgpu-smoke\n# Totals: pass:9 fail:9\nvgpu-guest: running hmm-tests\nok 1 hmm.open\n# Totals: pass:37 fail:2 xfail:0 xpass:0 skip:3 error:0\n";
        assert_eq!(hmm_totals(c), HmmTests { pass: 37, fail: 2, skip: 3, ran: true });
        assert_eq!(hmm_totals(c).verdict(), "FAIL (2)");
        assert!(!hmm_totals("vgpu-guest: running hmm-tests\nok 1\n").ran);
    }

    #[test]
    fn only_failed_positive_cases_are_catches() {
        let case = |name: &str, passed: bool, neg: bool, skipped: bool| coherence::CaseResult {
            scenario: name.into(),
            mode: "svm".into(),
            accesses_checked: 1,
            violations: if passed { 0 } else { 4 },
            expect_violations: neg,
            passed,
            skipped,
            duration_ms: 1,
            events: Default::default(),
            detail: String::new(),
            pattern: "once".into(),
            contexts: Vec::new(),
        };
        let cs = [case("fork_cow", false, false, false), case("munmap", true, false, false), case("neg_skip_invalidate", false, true, false), case("ksm", false, false, true)];
        assert_eq!(catches(&cs, ""), [Catch { case: "fork_cow [svm]".into(), violations: 4, detail: String::new(), first_violation: None }]);
    }

    #[test]
    fn violation_lines_follow_the_contexts_in_order() {
        let case = |name: &str, neg: bool, ctx_violations: &[(u64, Option<u32>)]| coherence::CaseResult {
            scenario: name.into(),
            mode: "svm".into(),
            accesses_checked: 1,
            violations: ctx_violations.iter().map(|v| v.0).sum(),
            expect_violations: neg,
            passed: neg == ctx_violations.iter().any(|v| v.0 != 0),
            skipped: false,
            duration_ms: 1,
            events: Default::default(),
            detail: String::new(),
            pattern: "once".into(),
            contexts: ctx_violations.iter().map(|&(v, ctx)| coherence::ContextVerdict { accesses_checked: 9, violations: v, faults: 0, jobs: 1, ctx }).collect(),
        };
        let log = "vgpu-device: info: ctx 3 SET_AS ...\n\
            vgpu-device: warning: COHERENCE VIOLATION FrameMismatch: ctx 12 job 2 read gpu va 0x1000 cpu va 0x1000 G 0x5000 C 0x6000 (cpu entry 0x6025) at 1 us; hint: x; no INVALIDATE covered this va (none of the context's 3) [violation 1 of ctx 12]\n\
            vgpu-device: warning: COHERENCE VIOLATION FrameMismatch: ctx 12 job 2 second [violation 2 of ctx 12]\n\
            vgpu-device: warning: COHERENCE VIOLATION NoCpuPage(Empty): ctx 7 job 1 first of 7 [violation 1 of ctx 7]\n";
        let m = first_violation_by_ctx(log);
        assert_eq!(m.len(), 2);
        assert!(m[&12].starts_with("COHERENCE VIOLATION FrameMismatch: ctx 12 job 2 read") && m[&12].contains("[violation 1 of"));
        // ctx 7 is the negative control's (which names no contexts); ctx 12 the caught case's
        // second context.
        let cs = [case("neg_skip_invalidate", true, &[]), case("basic", false, &[(0, Some(9))]), case("cow_zero_page", false, &[(0, Some(10)), (2, Some(12))])];
        let c = catches(&cs, log);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].case, "cow_zero_page [svm]");
        assert!(c[0].first_violation.as_deref().unwrap().contains("ctx 12 job 2 read"));
        // No id (an older guest), or an id the log does not have: nothing.
        let cs = [case("cow_zero_page", false, &[(2, None)]), case("fork_cow", false, &[(2, Some(13))])];
        assert!(catches(&cs, log).iter().all(|c| c.first_violation.is_none()));
    }

    #[test]
    fn zoo_check_uses_pristine_copies_and_names_the_patch() {
        let d = std::env::temp_dir().join(format!("xtask-zoo-applies-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let (tree, orig) = (d.join("tree"), d.join("orig"));
        std::fs::create_dir_all(tree.join("mm")).unwrap();
        std::fs::create_dir_all(orig.join("mm")).unwrap();
        std::fs::write(tree.join("mm/a.c"), "one\ntwo\nthree\n").unwrap();
        // b.c is patched in the tree (by the overlay or a --kernel-patch); its pristine copy is in orig.
        std::fs::write(tree.join("mm/b.c"), "changed by another patch\n").unwrap();
        std::fs::write(orig.join("mm/b.c"), "alpha\nbeta\n").unwrap();
        let patch = |name: &str, file: &str, old: &str, new: &str| {
            let p = d.join(format!("{name}.patch"));
            std::fs::write(&p, format!("Regression: {name}\nUpstream: x\nBreaks: y\n\n--- a/mm/{file}\n+++ b/mm/{file}\n@@ -1,2 +1,2 @@\n-{old}\n+{new}\n {}\n", if file == "a.c" { "two" } else { "beta" })).unwrap();
            parse_regression(&p, &std::fs::read_to_string(&p).unwrap()).unwrap()
        };
        let good = [patch("a-good", "a.c", "one", "ONE"), patch("b-good", "b.c", "alpha", "ALPHA")];
        check_applies(&good, &tree, &orig).unwrap();
        assert_eq!(std::fs::read_to_string(tree.join("mm/a.c")).unwrap(), "one\ntwo\nthree\n", "a dry run");
        let bad = [patch("a-stale", "a.c", "uno", "ONE")];
        let e = check_applies(&bad, &tree, &orig).unwrap_err().to_string();
        assert!(e.contains("a-stale.patch no longer applies") && !e.contains('\n'), "{e}");
        std::fs::remove_dir_all(d).unwrap();
    }
}