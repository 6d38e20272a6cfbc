//! Reading the guest console for test results: TAP lines (`ok N - ...`, `not ok N - ...`) from
//! our guest programs, and the kselftest totals line of the kernel's hmm-tests.

/// The JSON value after `marker` on each console line that carries it, with the line's
/// number (1-based). The marker may sit anywhere in a line (a kernel message can land in
/// front of it on the shared serial console); text after the JSON value is ignored (one can
/// land behind it too). A marker without a parsable value gives `Err` with the reason.
pub fn marked_json<T: serde::de::DeserializeOwned>(console: &str, marker: &str) -> Vec<(usize, Result<T, String>)> {
    console
        .lines()
        .enumerate()
        .filter_map(|(i, raw)| {
            let line = raw.trim_end_matches('\r');
            let at = line.find(marker)?;
            let mut values = serde_json::Deserializer::from_str(&line[at + marker.len()..]).into_iter::<T>();
            let v = match values.next() {
                Some(Ok(v)) => Ok(v),
                Some(Err(e)) => Err(format!("bad JSON after {marker} ({e}): {line}")),
                None => Err(format!("{marker} without JSON: {line}")),
            };
            Some((i + 1, v))
        })
        .collect()
}

/// The kernel release the guest booted (`vgpu-guest: booted <release>` from its /init), or
/// `unknown`.
pub fn guest_kernel(console: &str) -> String {
    console
        .lines()
        .find_map(|l| l.split("vgpu-guest: booted ").nth(1).map(|v| v.trim().to_string()))
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// The workspace's commit (short hash, empty outside git) and whether tracked files differ
/// from it: which code produced a result.
pub fn commit() -> (String, bool) {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .current_dir(crate::paths::workspace())
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let hash = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_default();
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    (hash, dirty)
}

/// The kernel's hmm-tests totals (`# Totals: pass:38 fail:0 xfail:0 xpass:0 skip:38 error:0`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Kselftest {
    pub pass: u32,
    pub fail: u32,
    pub skip: u32,
    pub error: u32,
}

#[derive(Debug, Default)]
pub struct Report {
    /// Passed/failed/skipped TAP lines of the project's guest programs.
    pub passed: u32,
    pub failed: u32,
    pub skipped: u32,
    /// Descriptions of failed TAP lines.
    pub failures: Vec<String>,
    /// hmm-tests totals, if it ran.
    pub hmm_tests: Option<Kselftest>,
}

fn field(line: &str, key: &str) -> u32 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

impl Report {
    pub fn from_console(console: &str) -> Self {
        let mut r = Report::default();
        let mut in_kselftest = false;
        for raw in console.lines() {
            let line = raw.trim_end_matches('\r').trim_start();
            if line.starts_with("vgpu-guest: running hmm-tests") {
                in_kselftest = true;
            } else if line.starts_with("vgpu-guest: hmm-tests done") {
                in_kselftest = false;
            }
            if line.starts_with("# Totals:") {
                let t = Kselftest {
                    pass: field(line, "pass:"),
                    fail: field(line, "fail:"),
                    skip: field(line, "skip:"),
                    error: field(line, "error:"),
                };
                // Only the hmm-tests binary is a kselftest here.
                r.hmm_tests = Some(t);
                r.failed += t.fail + t.error;
                continue;
            }
            if in_kselftest {
                continue; // its own ok/not ok lines are counted by its totals line
            }
            if let Some(rest) = line.strip_prefix("not ok ") {
                if !rest.contains("# TODO") {
                    r.failed += 1;
                    r.failures.push(rest.to_string());
                }
            } else if line.starts_with("ok ") && line[3..].starts_with(|c: char| c.is_ascii_digit()) {
                if line.contains("# SKIP") {
                    r.skipped += 1;
                } else {
                    r.passed += 1;
                }
            }
        }
        r
    }

    pub fn print(&self) {
        println!("\n== in-VM results");
        println!(
            "  vgpu guest programs: {} passed, {} failed, {} skipped",
            self.passed,
            self.failed - self.hmm_fail(),
            self.skipped
        );
        for f in &self.failures {
            println!("    not ok {f}");
        }
        match self.hmm_tests {
            Some(k) => println!(
                "  kernel hmm-tests:    {} passed, {} failed, {} skipped, {} errors",
                k.pass, k.fail, k.skip, k.error
            ),
            None => println!("  kernel hmm-tests:    did not report totals"),
        }
        let hmm_pass = self.hmm_tests.map_or(0, |k| k.pass);
        // The plain closing line CI reads.
        println!("vm: {} passed, {} failed, {} skipped", self.passed + hmm_pass, self.failed, self.skipped);
    }

    fn hmm_fail(&self) -> u32 {
        self.hmm_tests.map_or(0, |k| k.fail + k.error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ktap_and_tap_lines_count_alike() {
        let c = "KTAP version 1\n1..4\nok 1 render node\nnot ok 2 name # with text\nok 3 x # SKIP no ext2\nnot ok 4 known # TODO later\nTAP version 13\nok 1 - old style\nnot ok 2 - old failure\n";
        let r = Report::from_console(c);
        assert_eq!((r.passed, r.failed, r.skipped), (2, 2, 1));
        assert_eq!(r.failures, vec!["2 name # with text".to_string(), "2 - old failure".to_string()]);
    }

    #[test]
    fn guest_kernel_from_the_boot_line() {
        assert_eq!(guest_kernel("x\nvgpu-guest: booted 7.2.13\r\n"), "7.2.13");
        assert_eq!(guest_kernel("no boot line"), "unknown");
    }

    #[test]
    fn marked_json_tolerates_text_around_the_value() {
        let c = "boot\n[ 1.0] x m: {\"a\": 1}[ 1.1] kernel text\r\nm: 2\nm: {bad\nm:\n";
        let v = marked_json::<serde_json::Value>(c, "m:");
        assert_eq!(v.len(), 4);
        assert_eq!(v[0], (2, Ok(serde_json::json!({"a": 1}))));
        assert_eq!(v[1], (3, Ok(serde_json::json!(2))));
        assert!(v[2].1.as_ref().is_err_and(|e| e.contains("bad JSON")), "{:?}", v[2]);
        assert!(v[3].1.as_ref().is_err_and(|e| e.contains("without JSON")), "{:?}", v[3]);
    }

    const CONSOLE: &str = "\
vgpu-guest: booted 7.2.13
TAP version 13
1..3
ok 1 - render node exists
not ok 2 - name is vgpu_svm
ok 3 - protocol version
ok 4 - ext2 writeback # SKIP no ext2
# 2 passed, 1 failed
vgpu-guest: running hmm-tests
TAP version 13
ok 1 hmm.hmm_device_private.open_close
not ok 2 hmm.whatever
# Totals: pass:38 fail:1 xfail:0 xpass:0 skip:38 error:0
vgpu-guest: hmm-tests done
";

    #[test]
    fn counts_tap_and_kselftest_totals_separately() {
        let r = Report::from_console(CONSOLE);
        assert_eq!(r.passed, 2);
        assert_eq!(r.skipped, 1);
        assert_eq!(r.failed, 2); // one TAP failure + one hmm-tests failure
        assert_eq!(r.failures, vec!["2 - name is vgpu_svm".to_string()]);
        assert_eq!(r.hmm_tests, Some(Kselftest { pass: 38, fail: 1, skip: 38, error: 0 }));
    }

    #[test]
    fn empty_console_has_no_passes() {
        let r = Report::from_console("");
        assert_eq!((r.passed, r.failed, r.hmm_tests), (0, 0, None));
    }
}
