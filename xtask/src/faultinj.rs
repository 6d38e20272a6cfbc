//! The fault-injection job's results (`tests/guest-jobs/faultinj.sh`): what the guest saw
//! (`vgpu-faultinj-result:` lines and TAP), what the host did to the daemon (stop, continue,
//! kill) and the daemon's own verdict (its stats file, written until it died), gathered in
//! `target/vgpu/fault-injection.json`.

use anyhow::{bail, Context, Result};


use crate::devfault::FaultEvent;
use crate::report::Report;

/// The console prefix of one fault's figures.
const RESULT: &str = "vgpu-faultinj-result:";

/// The faults the job injects, in order.
const FAULTS: [&str; 2] = ["stop", "kill"];

/// Each fault's figures, in console order.
pub fn results_from_console(console: &str) -> Result<Vec<serde_json::Value>> {
    crate::report::marked_json(console, RESULT).into_iter().map(|(_, v)| v.map_err(anyhow::Error::msg)).collect()
}

/// The verdict: every TAP check passed, both faults ran and were really injected by the
/// host, the daemon counted accesses and no violation. Returns the results document.
pub fn verdict(
    console: &str,
    guest_status: Option<i32>,
    events: &[FaultEvent],
    device: Option<(u64, u64)>,
) -> (serde_json::Value, Vec<String>) {
    let r = Report::from_console(console);
    let mut problems: Vec<String> = r.failures.iter().map(|f| format!("not ok {f}")).collect();
    match guest_status {
        Some(0) => {}
        s => problems.push(format!("guest status {s:?}")),
    }
    if r.passed == 0 {
        problems.push("no TAP check passed".into());
    }
    let results = results_from_console(console).unwrap_or_else(|e| {
        problems.push(e.to_string());
        Vec::new()
    });
    let faults: Vec<&str> = results.iter().filter_map(|v| v["fault"].as_str()).collect();
    if faults != FAULTS {
        problems.push(format!("faults reported {faults:?}, want {FAULTS:?}"));
    }
    let actions: Vec<&str> = events.iter().map(|e| e.action).collect();
    if actions != ["stopped", "continued", "killed"] {
        problems.push(format!("the host did {actions:?} to the daemon, want stopped, continued, killed"));
    }
    match device {
        Some((checked, 0)) if checked > 0 => {}
        Some((checked, v)) => problems.push(format!("the daemon checked {checked} accesses with {v} violations (want > 0 and 0)")),
        None => problems.push("no daemon stats file".into()),
    }
    let doc = serde_json::json!({
        "verdict": if problems.is_empty() { "pass" } else { "fail" },
        "problems": problems,
        "faults": results,
        "host_actions": events,
        "device": device.map(|(c, v)| serde_json::json!({"accesses_checked": c, "violations": v})),
        "tap": {"passed": r.passed, "failed": r.failed, "skipped": r.skipped},
        "guest_status": guest_status,
    });
    (doc, problems)
}

/// Writes the document and fails on problems.
pub fn write_and_check(path: &std::path::Path, doc: &serde_json::Value, problems: &[String]) -> Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(doc)? + "\n").with_context(|| format!("write {}", path.display()))?;
    if !problems.is_empty() {
        bail!("fault injection failed: {}; see {}", problems.join("; "), path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "ok 1 - a\nvgpu-faultinj-result: {\"fault\":\"stop\"}\nok 2 - b\n\
                        vgpu-faultinj-result: {\"fault\":\"kill\"}\nvgpu-guest-exit: 0\n";

    fn events() -> Vec<FaultEvent> {
        ["stopped", "continued", "killed"].iter().zip(1..).map(|(a, t)| FaultEvent { action: a, at_ms: t * 1000 }).collect()
    }

    #[test]
    fn passes_only_when_everything_held() {
        let (doc, p) = verdict(GOOD, Some(0), &events(), Some((100, 0)));
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(doc["verdict"], "pass");
        assert_eq!(doc["faults"][1]["fault"], "kill");
        // Each failure on its own fails the verdict.
        assert!(!verdict(GOOD, Some(1), &events(), Some((100, 0))).1.is_empty());
        assert!(!verdict(GOOD, Some(0), &events()[..2], Some((100, 0))).1.is_empty());
        assert!(!verdict(GOOD, Some(0), &events(), Some((100, 3))).1.is_empty());
        assert!(!verdict(GOOD, Some(0), &events(), Some((0, 0))).1.is_empty());
        assert!(!verdict(GOOD, Some(0), &events(), None).1.is_empty());
        let one = GOOD.replace("{\"fault\":\"kill\"}", "{\"fault\":\"stop\"}");
        assert!(!verdict(&one, Some(0), &events(), Some((100, 0))).1.is_empty());
        let failed = format!("{GOOD}not ok 3 - c\n");
        let (doc, p) = verdict(&failed, Some(0), &events(), Some((100, 0)));
        assert_eq!(doc["verdict"], "fail");
        assert!(p.iter().any(|s| s.contains("not ok")), "{p:?}");
        assert!(!verdict("vgpu-faultinj-result: {bad\n", Some(0), &events(), Some((1, 0))).1.is_empty());
    }
}
