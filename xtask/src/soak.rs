//! `cargo xtask soak`: a bounded stress run in the VM (`tests/guest-jobs/soak.sh`, the
//! `vgpu-soak` guest program) until the device has checked 10^7 page accesses; the verdict
//! and its figures go to `target/vgpu/soak.json`.

use anyhow::{bail, Context, Result};

use crate::{paths, report::Report, run_job_with, say, JobRun, Opts};

/// The accesses a soak must check.
pub const ACCESSES: u64 = 10_000_000;
/// The console prefix of the guest's figures.
const RESULT: &str = "vgpu-soak-result:";

/// The guest's figures, if it printed them (the last parsable line).
pub fn result_from_console(console: &str) -> Option<serde_json::Value> {
    crate::report::marked_json(console, RESULT).into_iter().filter_map(|(_, v)| v.ok()).next_back()
}

/// The soak's verdict: the guest passed, checked at least `target` accesses with 0
/// violations, and the daemon's own stats agree (`device`: accesses, violations).
pub fn verdict(console: &str, guest_status: Option<i32>, device: Option<(u64, u64)>, target: u64) -> (serde_json::Value, Vec<String>) {
    let r = Report::from_console(console);
    let mut problems: Vec<String> = r.failures.iter().map(|f| format!("not ok {f}")).collect();
    if guest_status != Some(0) {
        problems.push(format!("guest status {guest_status:?}"));
    }
    let res = result_from_console(console);
    let get = |k: &str| res.as_ref().and_then(|v| v[k].as_u64());
    match (get("accesses_checked"), get("violations")) {
        (Some(c), Some(0)) if c >= target => {}
        (c, v) => problems.push(format!("the guest saw {c:?} accesses checked, {v:?} violations (want >= {target}, 0)")),
    }
    match device {
        Some((c, 0)) if c >= target => {}
        d => problems.push(format!("the daemon's stats file says {d:?} (accesses, violations); want >= {target}, 0")),
    }
    let doc = serde_json::json!({
        "verdict": if problems.is_empty() { "pass" } else { "fail" },
        "accesses_checked": get("accesses_checked"),
        "violations": get("violations"),
        "seconds": res.as_ref().map(|v| v["seconds"].clone()),
        "target": target,
        "guest": res,
        "device_stats_file": device.map(|(c, v)| serde_json::json!({"accesses_checked": c, "violations": v})),
        "problems": problems,
    });
    (doc, problems)
}

/// Runs the soak VM and writes target/vgpu/soak.json.
pub fn soak(o: &Opts) -> Result<()> {
    // The guest stops by itself two minutes before the VM's timeout.
    let seconds = o.timeout.as_secs().saturating_sub(120).max(60);
    let spec = JobRun {
        extra_cmdline: format!("vgpu_soak_accesses={ACCESSES} vgpu_soak_seconds={seconds}"),
        ..JobRun::default()
    };
    say!("soak: until the device has checked {ACCESSES} accesses (at most {seconds} s)");
    let outcome = run_job_with(o, "soak", &spec)?;
    let console = String::from_utf8_lossy(&std::fs::read(&outcome.console_log)?).into_owned();
    let device = crate::device_stats(&outcome);
    let (doc, problems) = verdict(&console, outcome.guest_status, device, ACCESSES);
    let path = paths::out().join("soak.json");
    std::fs::write(&path, serde_json::to_string_pretty(&doc)? + "\n").with_context(|| format!("write {}", path.display()))?;
    println!(
        "soak: {} accesses checked, {} violations in {} s ({}): {}",
        doc["accesses_checked"], doc["violations"], doc["seconds"], path.display(), doc["verdict"].as_str().unwrap_or("?")
    );
    if !problems.is_empty() {
        bail!("soak failed: {}; console: {}", problems.join("; "), outcome.console_log.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_needs_the_count_and_no_violation() {
        let c = "ok 1 - a\nvgpu-soak-result: {\"accesses_checked\": 20, \"violations\": 0, \"seconds\": 3.5}\n";
        let (doc, p) = verdict(c, Some(0), Some((25, 0)), 10);
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(doc["seconds"], 3.5);
        assert!(!verdict(c, Some(0), Some((25, 0)), 21).1.is_empty(), "below the target");
        assert!(!verdict(c, Some(0), Some((25, 1)), 10).1.is_empty(), "device violation");
        assert!(!verdict(c, Some(0), None, 10).1.is_empty(), "no stats file");
        assert!(!verdict(c, Some(1), Some((25, 0)), 10).1.is_empty(), "guest failed");
        let bad = c.replace("\"violations\": 0", "\"violations\": 2");
        assert!(!verdict(&bad, Some(0), Some((25, 0)), 10).1.is_empty(), "guest violation");
        assert!(!verdict("ok 1 - a\n", Some(0), Some((25, 0)), 10).1.is_empty(), "no result line");
    }
}
