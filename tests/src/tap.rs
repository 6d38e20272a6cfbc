//! A small KTAP producer for guest test programs: the kernel's TAP dialect
//! (Documentation/dev-tools/ktap.rst, version 1), which kselftest runners and
//! CI systems that read kernel test output parse.
//!
//! ```
//! use vgpu_tests::tap::Tap;
//!
//! let mut out = Vec::new();
//! let mut tap = Tap::with_writer(&mut out, Some(3));
//! tap.ok(1 + 1 == 2, "arithmetic");
//! tap.eq("answer", 41 + 1, 42);
//! tap.check("no error", Err::<(), _>("device on fire"));
//! let summary = tap.finish();
//! assert_eq!((summary.passed, summary.failed), (2, 1));
//! assert_eq!(summary.exit_status(), 1);
//! assert_eq!(
//!     String::from_utf8(out).unwrap(),
//!     "KTAP version 1\n1..3\nok 1 arithmetic\nok 2 answer\n\
//!      not ok 3 no error\n#   device on fire\n# 2 passed, 1 failed\n"
//! );
//! ```
//!
//! Output goes to stdout by default and is flushed after every line, so that
//! it interleaves sensibly with kernel messages on a serial console.
//! Diagnostics are `#` lines right after the test line they belong to.

use std::fmt::{Debug, Display};
use std::io::{self, Write};
use std::process::ExitCode;

/// The outcome of a TAP run, from [`Tap::finish`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Tests reported `ok`.
    pub passed: usize,
    /// Tests reported `not ok`.
    pub failed: usize,
    /// The plan, if one was given.
    pub planned: Option<usize>,
    /// Of the passed tests, how many were skips (`ok N - ... # SKIP why`).
    pub skipped: usize,
}

impl Summary {
    /// Tests run.
    pub fn ran(&self) -> usize {
        self.passed + self.failed
    }

    /// True if nothing failed and the plan (if any) was met exactly.
    pub fn success(&self) -> bool {
        self.failed == 0 && self.planned.is_none_or(|n| n == self.ran())
    }

    /// 0 on success, 1 otherwise.
    pub fn exit_status(&self) -> i32 {
        if self.success() {
            0
        } else {
            1
        }
    }

    /// [`Summary::exit_status`] as an [`ExitCode`], to return from `main`.
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.exit_status() as u8)
    }
}

/// A TAP stream: numbered `ok` / `not ok` lines, diagnostics, and a summary.
pub struct Tap<W: Write = io::Stdout> {
    out: W,
    planned: Option<usize>,
    passed: usize,
    failed: usize,
    skipped: usize,
}

impl Tap<io::Stdout> {
    /// A TAP stream on stdout that plans `n` tests (prints `1..n` now).
    pub fn new(n: usize) -> Self {
        Self::with_writer(io::stdout(), Some(n))
    }

    /// A TAP stream on stdout whose plan is printed at the end, for programs
    /// that do not know their test count up front.
    pub fn unplanned() -> Self {
        Self::with_writer(io::stdout(), None)
    }
}

impl<W: Write> Tap<W> {
    /// A TAP stream on `out`; with `Some(n)` the plan `1..n` is printed now,
    /// with `None` it is printed by [`Tap::finish`].
    pub fn with_writer(out: W, plan: Option<usize>) -> Self {
        let mut tap = Self {
            out,
            planned: plan,
            passed: 0,
            failed: 0,
            skipped: 0,
        };
        tap.line("KTAP version 1");
        if let Some(n) = plan {
            tap.line(&format!("1..{n}"));
        }
        tap
    }

    /// Number of the next test.
    pub fn next_number(&self) -> usize {
        self.passed + self.failed + 1
    }

    /// Reports a passing test.
    pub fn pass(&mut self, desc: &str) {
        let n = self.next_number();
        self.passed += 1;
        self.line(&format!("ok {n} {}", escape(desc)));
    }

    /// Reports a failing test, with `diag` (may be multi-line, may be empty)
    /// as diagnostics.
    pub fn fail(&mut self, desc: &str, diag: impl Display) {
        let n = self.next_number();
        self.failed += 1;
        self.line(&format!("not ok {n} {}", escape(desc)));
        let diag = diag.to_string();
        for l in diag.lines() {
            self.line(&format!("#   {l}"));
        }
    }

    /// Reports a test that was skipped: `ok N - desc # SKIP reason`. TAP
    /// counts it as passed; [`Summary::skipped`] counts it too.
    pub fn skip(&mut self, desc: &str, reason: &str) {
        let n = self.next_number();
        self.passed += 1;
        self.skipped += 1;
        self.line(&format!(
            "ok {n} {} # SKIP {}",
            escape(desc),
            reason.replace(['\n', '\r'], " ")
        ));
    }

    /// Reports a known failure that is not run (or not counted): `not ok N - desc # TODO
    /// reason`. TAP does not count a TODO line as a failure; neither does [`Summary`] (it
    /// counts as passed, like a skip).
    pub fn todo(&mut self, desc: &str, reason: &str) {
        let n = self.next_number();
        self.passed += 1;
        self.skipped += 1;
        self.line(&format!(
            "not ok {n} {} # TODO {}",
            escape(desc),
            reason.replace(['\n', '\r'], " ")
        ));
    }

    /// Reports `desc` as passed if `cond`, failed otherwise. Returns `cond`.
    pub fn ok(&mut self, cond: bool, desc: &str) -> bool {
        if cond {
            self.pass(desc);
        } else {
            self.fail(desc, "");
        }
        cond
    }

    /// Passes if `result` is `Ok` (returning the value), fails with the error
    /// as diagnostic otherwise.
    pub fn check<T, E: Display>(&mut self, desc: &str, result: Result<T, E>) -> Option<T> {
        match result {
            Ok(v) => {
                self.pass(desc);
                Some(v)
            }
            Err(e) => {
                self.fail(desc, e);
                None
            }
        }
    }

    /// Runs `f` as one test: `Ok(())` passes, `Err(diag)` fails with `diag`.
    pub fn run<E: Display>(&mut self, desc: &str, f: impl FnOnce() -> Result<(), E>) -> bool {
        self.check(desc, f()).is_some()
    }

    /// Passes if `got == want`; otherwise fails showing both.
    pub fn eq<T: PartialEq + Debug>(&mut self, desc: &str, got: T, want: T) -> bool {
        if got == want {
            self.pass(desc);
            true
        } else {
            self.fail(desc, format!("got:  {got:?}\nwant: {want:?}"));
            false
        }
    }

    /// Reports a test that could not run (e.g. its prerequisite failed) as a
    /// failure, so that the count still matches the plan.
    pub fn not_run(&mut self, desc: &str, reason: &str) {
        self.fail(desc, format!("not run: {reason}"));
    }

    /// Prints a diagnostic `# ...` line (or several) not tied to a test.
    pub fn diag(&mut self, msg: impl Display) {
        let msg = msg.to_string();
        for l in msg.lines() {
            self.line(&format!("# {l}"));
        }
    }

    /// Ends the stream: the late plan if there was none, a note if the plan
    /// was not met, and the `# N passed, M failed` summary line.
    pub fn finish(mut self) -> Summary {
        let ran = self.passed + self.failed;
        match self.planned {
            None => self.line(&format!("1..{ran}")),
            Some(n) if n != ran => self.line(&format!("# planned {n} tests but ran {ran}")),
            Some(_) => {}
        }
        self.line(&format!("# {} passed, {} failed", self.passed, self.failed));
        if self.skipped > 0 {
            self.line(&format!("# {} of the passed were skipped", self.skipped));
        }
        Summary {
            passed: self.passed,
            failed: self.failed,
            planned: self.planned,
            skipped: self.skipped,
        }
    }

    fn line(&mut self, s: &str) {
        // A broken stdout cannot be reported anywhere better; keep counting.
        let _ = writeln!(self.out, "{s}");
        let _ = self.out.flush();
    }
}

/// Keeps a description on one line and stops a `#` in it from being read as
/// a TAP directive.
fn escape(desc: &str) -> String {
    desc.replace('\\', "\\\\")
        .replace('#', "\\#")
        .replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(plan: Option<usize>, f: impl FnOnce(&mut Tap<&mut Vec<u8>>)) -> (String, Summary) {
        let mut out = Vec::new();
        let mut tap = Tap::with_writer(&mut out, plan);
        f(&mut tap);
        let s = tap.finish();
        (String::from_utf8(out).unwrap(), s)
    }

    #[test]
    fn all_pass() {
        let (out, s) = run(Some(2), |t| {
            t.pass("one");
            assert!(t.ok(true, "two"));
        });
        assert_eq!(
            out,
            "KTAP version 1\n1..2\nok 1 one\nok 2 two\n# 2 passed, 0 failed\n"
        );
        assert_eq!(
            s,
            Summary {
                passed: 2,
                failed: 0,
                planned: Some(2),
                skipped: 0,
            }
        );
        assert!(s.success());
        assert_eq!(s.exit_status(), 0);
    }

    #[test]
    fn failure_with_multiline_diag() {
        let (out, s) = run(Some(2), |t| {
            t.fail("broken", "line a\nline b");
            assert!(!t.ok(false, "false"));
        });
        assert_eq!(
            out,
            "KTAP version 1\n1..2\nnot ok 1 broken\n#   line a\n#   line b\n\
             not ok 2 false\n# 0 passed, 2 failed\n"
        );
        assert_eq!(s.exit_status(), 1);
    }

    #[test]
    fn check_returns_value_or_reports_error() {
        let (out, s) = run(None, |t| {
            assert_eq!(t.check("ok", Ok::<_, String>(7)), Some(7));
            assert_eq!(t.check("err", Err::<u8, _>("EINVAL")), None);
        });
        assert_eq!(
            out,
            "KTAP version 1\nok 1 ok\nnot ok 2 err\n#   EINVAL\n1..2\n# 1 passed, 1 failed\n"
        );
        assert_eq!(s.ran(), 2);
        assert!(!s.success());
    }

    #[test]
    fn eq_shows_got_and_want() {
        let (out, _) = run(None, |t| {
            assert!(t.eq("same", 48u64, 48));
            assert!(!t.eq("differs", 39u64, 48));
        });
        assert!(out.contains("ok 1 same\n"), "{out}");
        assert!(
            out.contains("not ok 2 differs\n#   got:  39\n#   want: 48\n"),
            "{out}"
        );
    }

    #[test]
    fn run_closure() {
        let (out, s) = run(Some(2), |t| {
            assert!(t.run("fine", || Ok::<(), String>(())));
            assert!(!t.run("bad", || Err("boom")));
        });
        assert!(out.contains("not ok 2 bad\n#   boom\n"), "{out}");
        assert_eq!((s.passed, s.failed), (1, 1));
    }

    #[test]
    fn unplanned_prints_plan_at_end() {
        let (out, s) = run(None, |t| t.pass("a"));
        assert_eq!(
            out,
            "KTAP version 1\nok 1 a\n1..1\n# 1 passed, 0 failed\n"
        );
        assert!(s.success());
        let (out, _) = run(None, |_| {});
        assert_eq!(out, "KTAP version 1\n1..0\n# 0 passed, 0 failed\n");
    }

    #[test]
    fn plan_mismatch_fails_the_run() {
        let (out, s) = run(Some(3), |t| t.pass("only one"));
        assert!(out.contains("# planned 3 tests but ran 1\n"), "{out}");
        assert!(out.ends_with("# 1 passed, 0 failed\n"), "{out}");
        assert_eq!(s.failed, 0);
        assert!(!s.success());
        assert_eq!(s.exit_status(), 1);
    }

    #[test]
    fn not_run_counts_as_failure() {
        let (out, s) = run(Some(1), |t| t.not_run("needs device", "open failed"));
        assert!(
            out.contains("not ok 1 needs device\n#   not run: open failed\n"),
            "{out}"
        );
        assert_eq!(s.failed, 1);
    }

    #[test]
    fn diag_lines_and_escaping() {
        let (out, _) = run(None, |t| {
            t.diag("hello\nworld");
            t.pass("has # hash\nand newline");
        });
        assert!(out.contains("# hello\n# world\n"), "{out}");
        assert!(out.contains("ok 1 has \\# hash and newline\n"), "{out}");
    }

    #[test]
    fn skip_is_an_ok_line_with_a_directive() {
        let (out, s) = run(Some(2), |t| {
            t.skip("ext2 writeback", "needs CONFIG_EXT2_FS=y\n(guest kernel)");
            t.pass("other");
        });
        assert!(
            out.contains("ok 1 ext2 writeback # SKIP needs CONFIG_EXT2_FS=y (guest kernel)\n"),
            "{out}"
        );
        assert!(
            out.ends_with("# 2 passed, 0 failed\n# 1 of the passed were skipped\n"),
            "{out}"
        );
        assert_eq!((s.passed, s.failed, s.skipped), (2, 0, 1));
        assert!(s.success());
    }

    #[test]
    fn todo_is_a_not_ok_line_that_does_not_fail() {
        let (out, s) = run(None, |t| {
            t.todo("known bug", "not fixed yet");
            t.pass("next");
        });
        assert!(out.contains("not ok 1 known bug # TODO not fixed yet\nok 2 next\n"), "{out}");
        assert!(s.success());
    }

    #[test]
    fn numbering_continues_across_kinds() {
        let (out, _) = run(None, |t| {
            t.pass("a");
            t.fail("b", "");
            t.eq("c", 1, 1);
            assert_eq!(t.next_number(), 4);
        });
        assert!(out.contains("ok 1 a\nnot ok 2 b\nok 3 c\n"), "{out}");
    }
}
