//! The coherence suite's per-case results, read from the guest console.
//!
//! `vgpu-coherence` prints one line per case run:
//! `vgpu-case: {"scenario":"fork_cow","mode":"svm","accesses_checked":123,"violations":0,
//! "expect_violations":false,"passed":true,"skipped":false,"duration_ms":42,
//! "events":{"unmap":0,...},"detail":""}`. [`summary_from_console`] collects them,
//! [`write_summary`] writes `target/vgpu/coherence-summary.json` (the kernel, flavor and commit
//! that produced it, and `cases`, an array of those objects), and
//! [`print_table`] shows them.
//!
//! Wiring (for `main.rs`): after a VM run, `let cases = coherence::summary_from_console(&console)?;`
//! then `coherence::write_summary(&cases, &provenance, &paths::out().join("coherence-summary.json"))?;` and
//! `coherence::print_table(&cases);`.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The marker in front of each case's JSON on the console.
pub const CASE_PREFIX: &str = "vgpu-case: ";

/// One run of one coherence case (a scenario in a mode).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseResult {
    pub scenario: String,
    /// `svm` or `userptr`.
    pub mode: String,
    /// Device accesses checked against the CPU page tables during the case.
    pub accesses_checked: u64,
    /// Coherence violations the device found during the case.
    pub violations: u64,
    /// A negative control (the device must find violations).
    pub expect_violations: bool,
    pub passed: bool,
    #[serde(default)]
    pub skipped: bool,
    pub duration_ms: u64,
    /// Driver notifier callbacks during the case, by `mmu_notifier_event` name.
    #[serde(default)]
    pub events: BTreeMap<String, u64>,
    /// Skip reason or failures.
    #[serde(default)]
    pub detail: String,
    /// The execution pattern (`once`, `twice`, `many`, `forked`, `busy-thread`,
    /// `busy-process`, `threads`; tests/src/patterns.rs).
    #[serde(default = "once")]
    pub pattern: String,
    /// Each GPU context the case opened through its framework, judged alone: the device's
    /// counters for that context (STATS `ctx_*`). Absent in logs of older guests.
    #[serde(default)]
    pub contexts: Vec<ContextVerdict>,
}

/// The device's verdict on one GPU context of a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContextVerdict {
    pub accesses_checked: u64,
    pub violations: u64,
    #[serde(default)]
    pub faults: u64,
    #[serde(default)]
    pub jobs: u64,
    /// The device's id of the context (its violation log lines name it); absent in logs
    /// of older guests.
    #[serde(default)]
    pub ctx: Option<u32>,
}

fn once() -> String {
    "once".into()
}

impl CaseResult {
    /// `PASS`, `FAIL` or `SKIP`.
    pub fn status(&self) -> &'static str {
        if self.skipped {
            "SKIP"
        } else if self.passed {
            "PASS"
        } else {
            "FAIL"
        }
    }
}

/// Every `vgpu-case:` line of a console log, in order. The marker may sit anywhere in a line (a
/// kernel message can land in front of it on a shared serial console); text after the JSON
/// object is ignored. A marker whose JSON does not parse is an error naming the line.
pub fn summary_from_console(console: &str) -> Result<Vec<CaseResult>> {
    crate::report::marked_json::<CaseResult>(console, CASE_PREFIX)
        .into_iter()
        .map(|(n, c)| c.map_err(|e| anyhow::anyhow!("console line {n}: {e}")))
        .collect()
}

/// What produced a summary: the guest kernel release, the configuration flavor, the commit
/// (and whether the tree differed from it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    pub kernel: String,
    pub flavor: String,
    pub commit: String,
    pub dirty: bool,
    /// The `--kernel-patch` files the guest kernel was built with, in order.
    #[serde(default)]
    pub kernel_patches: Vec<String>,
    /// `--kernel-tree`: the user's tree (`DIR at HEAD`, and whether it had uncommitted
    /// changes) the guest kernel was built from; absent: Debian's linux-source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_tree: Option<String>,
}

/// The document in coherence-summary.json.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    #[serde(flatten)]
    pub provenance: Provenance,
    pub cases: Vec<CaseResult>,
}

/// Writes the summary (provenance and cases) as pretty JSON to `path` (creating its
/// directory).
pub fn write_summary(cases: &[CaseResult], provenance: &Provenance, path: &Path) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let doc = Summary { provenance: provenance.clone(), cases: cases.to_vec() };
    let mut text = serde_json::to_string_pretty(&doc)?;
    text.push('\n');
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// The table [`print_table`] prints: one row per scenario and mode run once (accesses,
/// violations, result), then, if the suite ran in other patterns, one row per scenario and
/// mode with a column per pattern, the failed pattern runs with their detail, and the totals.
pub fn format_table(cases: &[CaseResult]) -> String {
    let mut s = String::new();
    let w = cases.iter().map(|c| c.scenario.len()).max().unwrap_or(8).max(8);
    s.push_str(&format!(
        "  {:<w$}  {:<7}  {:>16}  {:>10}  {}\n",
        "scenario", "mode", "accesses checked", "violations", "result"
    ));
    for c in cases.iter().filter(|c| c.pattern == "once") {
        let mut result = c.status().to_string();
        if c.expect_violations {
            result.push_str(" (negative control)");
        }
        if (c.skipped || !c.passed) && !c.detail.is_empty() {
            let d: String = c.detail.chars().take(100).collect();
            result.push_str(&format!(": {d}"));
        }
        s.push_str(&format!(
            "  {:<w$}  {:<7}  {:>16}  {:>10}  {}\n",
            c.scenario, c.mode, c.accesses_checked, c.violations, result
        ));
    }
    let mut patterns: Vec<&str> = Vec::new();
    for c in cases.iter().filter(|c| c.pattern != "once") {
        if !patterns.contains(&c.pattern.as_str()) {
            patterns.push(&c.pattern);
        }
    }
    if !patterns.is_empty() {
        s.push_str(&format!("\n  {:<w$}  {:<7}", "patterns", ""));
        for p in &patterns {
            s.push_str(&format!("  {p:>12}"));
        }
        s.push('\n');
        let mut rows: Vec<(&str, &str)> = Vec::new();
        for c in cases.iter().filter(|c| c.pattern != "once") {
            if !rows.contains(&(c.scenario.as_str(), c.mode.as_str())) {
                rows.push((&c.scenario, &c.mode));
            }
        }
        for (sc, mode) in rows {
            s.push_str(&format!("  {sc:<w$}  {mode:<7}"));
            for p in &patterns {
                let st = cases.iter().find(|c| c.scenario == sc && c.mode == mode && c.pattern == *p).map_or("-", |c| c.status());
                s.push_str(&format!("  {st:>12}"));
            }
            s.push('\n');
        }
        for c in cases.iter().filter(|c| c.pattern != "once" && c.status() == "FAIL") {
            let d: String = c.detail.chars().take(160).collect();
            s.push_str(&format!("  FAIL {} [{}, {}]: {d}\n", c.scenario, c.mode, c.pattern));
        }
    }
    let pass = cases.iter().filter(|c| c.status() == "PASS").count();
    let fail = cases.iter().filter(|c| c.status() == "FAIL").count();
    let skip = cases.iter().filter(|c| c.status() == "SKIP").count();
    s.push_str(&format!("  coherence: {pass} passed, {fail} failed, {skip} skipped ({} runs)\n", cases.len()));
    let judged = cases.iter().filter(|c| !c.contexts.is_empty()).count();
    let ctxs: usize = cases.iter().map(|c| c.contexts.len()).sum();
    let bad = cases.iter().flat_map(|c| &c.contexts).filter(|v| v.violations != 0).count();
    s.push_str(&format!(
        "  per-context device verdicts: {ctxs} contexts in {judged} of {} runs, {bad} with violations\n",
        cases.len()
    ));
    s
}

/// Prints one row per case: scenario, mode, accesses checked, violations, result.
pub fn print_table(cases: &[CaseResult]) {
    println!("\n== coherence suite");
    print!("{}", format_table(cases));
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONSOLE: &str = "\
vgpu-guest: running vgpu-coherence
TAP version 13
1..3
ok 1 - fork_cow [svm]
#   12 checks; device: 4096 accesses checked
vgpu-case: {\"accesses_checked\":4096,\"detail\":\"\",\"duration_ms\":42,\"events\":{\"clear\":0,\"protection_page\":3,\"unmap\":0},\"expect_violations\":false,\"mode\":\"svm\",\"passed\":true,\"scenario\":\"fork_cow\",\"skipped\":false,\"violations\":0}\r
[   12.345678] random kernel message vgpu-case: {\"scenario\":\"file_writeback\",\"mode\":\"userptr\",\"accesses_checked\":0,\"violations\":0,\"expect_violations\":false,\"passed\":false,\"skipped\":true,\"duration_ms\":1,\"events\":{},\"detail\":\"needs CONFIG_EXT2_FS=y\"} trailing junk
not ok 3 - neg_skip_invalidate [svm]
vgpu-case: {\"scenario\":\"neg_skip_invalidate\",\"mode\":\"svm\",\"accesses_checked\":77,\"violations\":0,\"expect_violations\":true,\"passed\":false,\"duration_ms\":9,\"events\":{\"migrate\":2}}
# 1 passed, 1 failed
";

    #[test]
    fn parses_every_case_line() {
        let cases = summary_from_console(CONSOLE).unwrap();
        assert_eq!(cases.len(), 3);
        let c = &cases[0];
        assert_eq!((c.scenario.as_str(), c.mode.as_str()), ("fork_cow", "svm"));
        assert_eq!((c.accesses_checked, c.violations, c.duration_ms), (4096, 0, 42));
        assert!(c.passed && !c.skipped && !c.expect_violations);
        assert_eq!(c.events["protection_page"], 3);
        assert_eq!(cases[1].status(), "SKIP");
        assert_eq!(cases[1].detail, "needs CONFIG_EXT2_FS=y");
        // Older lines without skipped/detail still parse.
        assert_eq!(cases[2].status(), "FAIL");
        assert!(cases[2].expect_violations);
        assert_eq!(cases[2].events["migrate"], 2);
    }

    #[test]
    fn bad_json_names_the_line() {
        let err = summary_from_console("ok\nvgpu-case: {\"scenario\": 3}\n").unwrap_err();
        assert!(err.to_string().contains("console line 2"), "{err}");
        assert!(summary_from_console("vgpu-case: \n").is_err());
        assert!(summary_from_console("no cases here\n").unwrap().is_empty());
    }

    #[test]
    fn summary_file_round_trips() {
        let cases = summary_from_console(CONSOLE).unwrap();
        let dir = std::env::temp_dir().join(format!("vgpu-coherence-test-{}", std::process::id()));
        let path = dir.join("sub/coherence-summary.json");
        let p = Provenance { kernel: "7.2.13".into(), flavor: "debug".into(), commit: "abc123".into(), dirty: false, kernel_patches: vec!["/tmp/x.patch".into()], kernel_tree: None };
        write_summary(&cases, &p, &path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let back: Summary = serde_json::from_str(&text).unwrap();
        assert_eq!(back.cases, cases);
        assert_eq!(back.provenance, p);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!((v["kernel"].as_str(), v["flavor"].as_str(), v["commit"].as_str()), (Some("7.2.13"), Some("debug"), Some("abc123")));
        assert_eq!(v["cases"][0]["scenario"], "fork_cow");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn table_has_a_row_per_case_and_totals() {
        let cases = summary_from_console(CONSOLE).unwrap();
        let t = format_table(&cases);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 6, "{t}");
        assert!(lines[0].contains("accesses checked") && lines[0].contains("violations"));
        assert!(lines[1].contains("fork_cow") && lines[1].contains("4096") && lines[1].ends_with("PASS"));
        assert!(lines[2].contains("SKIP: needs CONFIG_EXT2_FS=y"), "{t}");
        assert!(lines[3].contains("FAIL (negative control)"), "{t}");
        assert_eq!(lines[4], "  coherence: 1 passed, 1 failed, 1 skipped (3 runs)");
        assert_eq!(lines[5], "  per-context device verdicts: 0 contexts in 0 of 3 runs, 0 with violations");
        let mut judged = cases.clone();
        judged[0].contexts = vec![ContextVerdict { accesses_checked: 9, violations: 0, faults: 0, jobs: 1, ctx: None }; 2];
        judged[2].contexts = vec![ContextVerdict { accesses_checked: 9, violations: 3, faults: 0, jobs: 1, ctx: Some(4) }];
        assert!(format_table(&judged).ends_with("per-context device verdicts: 3 contexts in 2 of 3 runs, 1 with violations\n"));
    }

    #[test]
    fn patterns_get_a_column_each_and_failures_a_line() {
        let mut cases = summary_from_console(CONSOLE).unwrap();
        assert!(cases.iter().all(|c| c.pattern == "once"), "lines without a pattern ran once");
        let mut twice = cases[0].clone();
        twice.pattern = "twice".into();
        let mut forked = cases[0].clone();
        forked.pattern = "forked".into();
        forked.passed = false;
        forked.detail = "run 2 of 2: stale".into();
        cases.extend([twice, forked]);
        let t = format_table(&cases);
        assert!(t.contains("patterns") && t.contains("twice") && t.contains("forked"), "{t}");
        let row = t.lines().find(|l| l.trim_start().starts_with("fork_cow") && !l.contains("4096")).unwrap();
        assert!(row.contains("PASS") && row.contains("FAIL"), "{row}");
        assert!(t.contains("FAIL fork_cow [svm, forked]: run 2 of 2: stale"), "{t}");
        assert!(t.contains("coherence: 2 passed, 2 failed, 1 skipped (5 runs)\n"), "{t}");
    }
}
