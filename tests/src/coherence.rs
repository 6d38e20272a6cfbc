//! The coherence suite's machinery: cases ([`Case`]) run in a mode
//! ([`Mode::Svm`] or [`Mode::Userptr`]) with a context ([`Cx`]) that opens GPU
//! contexts ([`Gpu`]), records checks, and measures the device's verdict
//! (global STATS deltas: accesses checked, violations) and the driver's
//! notifier events; each run of a case becomes one TAP line and one
//! `vgpu-case: {json}` line ([`Outcome`]).

use std::fmt::{Debug, Display};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use vgpu::{Context, Job, JobResult, MmuEvent, Stats, UserptrBo};

use crate::mem::{Expect, Mapping, HPAGE};

/// The prefix of the machine-readable per-case console line.
pub const CASE_LINE_PREFIX: &str = "vgpu-case: ";

/// How the device reaches the memory under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// An SVM context: GPU VA == CPU VA, device faults serviced.
    Svm,
    /// A non-SVM context: userptr objects bound at GPU VAs, validated at submit.
    Userptr,
}

impl Mode {
    /// Both modes.
    pub const BOTH: &'static [Mode] = &[Mode::Svm, Mode::Userptr];
    /// SVM only.
    pub const SVM: &'static [Mode] = &[Mode::Svm];
    /// Userptr only.
    pub const USERPTR: &'static [Mode] = &[Mode::Userptr];

    /// `"svm"` or `"userptr"`.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Svm => "svm",
            Mode::Userptr => "userptr",
        }
    }

    /// The mode called `s`.
    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "svm" => Some(Mode::Svm),
            "userptr" => Some(Mode::Userptr),
            _ => None,
        }
    }
}

/// Why a case stopped early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// It cannot run here (the reason names what is missing).
    Skip(String),
    /// A step failed so that going on makes no sense.
    Fail(String),
}

impl From<vgpu::Error> for Stop {
    fn from(e: vgpu::Error) -> Stop {
        Stop::Fail(e.to_string())
    }
}

impl From<std::io::Error> for Stop {
    fn from(e: std::io::Error) -> Stop {
        Stop::Fail(e.to_string())
    }
}

impl From<String> for Stop {
    fn from(e: String) -> Stop {
        Stop::Fail(e)
    }
}

impl From<&str> for Stop {
    fn from(e: &str) -> Stop {
        Stop::Fail(e.to_owned())
    }
}

/// What a case function returns.
pub type CaseResult = Result<(), Stop>;

/// Adds context to a step's error: `m.madvise(..).step("MADV_FREE")?`.
pub trait Step<T> {
    /// Maps the error to `Stop::Fail("what: error")`.
    fn step(self, what: &str) -> Result<T, Stop>;
}

impl<T, E: Display> Step<T> for Result<T, E> {
    fn step(self, what: &str) -> Result<T, Stop> {
        self.map_err(|e| Stop::Fail(format!("{what}: {e}")))
    }
}

/// One scenario of the suite.
#[derive(Debug, Clone, Copy)]
pub struct Case {
    /// Name (command-line selector, JSON `scenario`).
    pub name: &'static str,
    /// One line on what it does and asserts.
    pub about: &'static str,
    /// The modes it runs in.
    pub modes: &'static [Mode],
    /// Part of the `--demo` subset.
    pub demo: bool,
    /// A negative control: the device must report violations.
    pub expect_violations: bool,
    /// The scenario.
    pub run: fn(&mut Cx) -> CaseResult,
}

/// Run-wide options the cases see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Time budget of stress and race loops.
    pub seconds: u64,
    /// Iteration cap of stress and race loops.
    pub iterations: u64,
    /// Print every check, not only failures.
    pub verbose: bool,
    /// The execution patterns to run each case in (each case runs in those of them that
    /// [`crate::patterns::patterns_for`] allows it).
    pub patterns: Vec<crate::patterns::Pattern>,
    /// Stop after the first failed run (`cargo xtask mutants`: the first failure decides).
    pub fail_fast: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            seconds: 5,
            iterations: 2000,
            verbose: false,
            patterns: crate::patterns::Pattern::ALL.to_vec(),
            fail_fast: false,
        }
    }
}

/// One GPU context's own device verdict: the device's counters for that context alone
/// (STATS `ctx_*`), from its open to its close.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ContextVerdict {
    /// Pages the device checked for this context.
    pub accesses_checked: u64,
    /// Coherence violations in this context.
    pub violations: u64,
    /// Device faults this context's jobs raised.
    pub faults: u64,
    /// Jobs of this context completed.
    pub jobs: u64,
    /// The device's id of the context (fdinfo `vgpu_svm-ctx`), which its violation log
    /// lines name; `None` if fdinfo did not say.
    pub ctx: Option<u32>,
}

impl ContextVerdict {
    fn of(d: &Stats, ctx: Option<u32>) -> ContextVerdict {
        ContextVerdict {
            accesses_checked: d.ctx_accesses_checked,
            violations: d.ctx_violations,
            faults: d.ctx_device_faults,
            jobs: d.ctx_jobs,
            ctx,
        }
    }
}

/// The device context id of the DRM file `fd` of this process, from its fdinfo
/// (`vgpu_svm-ctx:\t<id>`, shown once the file has a context).
fn device_ctx_id(fd: std::os::fd::RawFd) -> Option<u32> {
    let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("vgpu_svm-ctx:"))
        .and_then(|v| v.trim().parse().ok())
}

/// What the GPU contexts a case opened (through [`Cx::gpu`]) left when they closed: their
/// driver counters summed, and each one's own device verdict.
#[derive(Debug, Clone, Default)]
pub struct Totals {
    /// The driver counters, summed.
    pub driver: Stats,
    /// Each context's own device verdict, in the order they closed.
    pub contexts: Vec<ContextVerdict>,
}

/// Shared by a case's contexts (deltas from each context's open to its close).
pub type Acc = Arc<Mutex<Totals>>;

/// What a running case works with.
pub struct Cx {
    /// The mode of this run.
    pub mode: Mode,
    /// The scenario's name.
    pub name: &'static str,
    /// Run-wide options.
    pub opts: Options,
    monitor: Option<Arc<Context>>,
    acc: Acc,
    failures: Vec<String>,
    notes: Vec<String>,
    checks: usize,
}

impl Cx {
    /// A context for one run of `name` in `mode`; `monitor` reads the
    /// device's global counters.
    pub fn new(name: &'static str, mode: Mode, opts: Options, monitor: Option<Arc<Context>>) -> Cx {
        Cx {
            mode,
            name,
            opts,
            monitor,
            acc: Arc::new(Mutex::new(Totals::default())),
            failures: Vec::new(),
            notes: Vec::new(),
            checks: 0,
        }
    }

    /// Opens a GPU context in this run's mode.
    pub fn gpu(&self) -> Result<Gpu, Stop> {
        self.gpu_in(self.mode)
    }

    /// Opens a GPU context in `mode`.
    pub fn gpu_in(&self, mode: Mode) -> Result<Gpu, Stop> {
        Gpu::open(mode, Some(self.acc.clone())).map_err(Stop::from)
    }

    /// The device's global counters now (zero if there is no monitor).
    pub fn global(&self) -> Stats {
        monitor_stats(self.monitor.as_ref())
    }

    /// The driver counters of the contexts closed so far in this run.
    pub fn driver_totals(&self) -> Stats {
        self.acc.lock().unwrap_or_else(|e| e.into_inner()).driver
    }

    /// The own device verdicts of the contexts closed so far in this run.
    pub fn context_verdicts(&self) -> Vec<ContextVerdict> {
        self.acc.lock().unwrap_or_else(|e| e.into_inner()).contexts.clone()
    }

    /// Records a check; a failed one fails the case. Returns `ok`.
    pub fn check(&mut self, ok: bool, desc: impl Display) -> bool {
        self.checks += 1;
        if !ok {
            self.failures.push(desc.to_string());
        } else if self.opts.verbose {
            self.notes.push(format!("ok: {desc}"));
        }
        ok
    }

    /// Checks `got == want`.
    pub fn check_eq<T: PartialEq + Debug>(&mut self, desc: impl Display, got: T, want: T) -> bool {
        let ok = got == want;
        if ok {
            self.check(true, desc)
        } else {
            self.check(false, format!("{desc}: got {got:?}, want {want:?}"))
        }
    }

    /// Checks that `r` is Ok; returns the value.
    pub fn check_ok<T, E: Display>(&mut self, desc: impl Display, r: Result<T, E>) -> Option<T> {
        match r {
            Ok(v) => {
                self.check(true, desc);
                Some(v)
            }
            Err(e) => {
                self.check(false, format!("{desc}: {e}"));
                None
            }
        }
    }

    /// Checks that `r` failed with one of `errnos`.
    pub fn check_errno<T: Debug>(
        &mut self,
        desc: impl Display,
        r: vgpu::Result<T>,
        errnos: &[i32],
    ) -> bool {
        let want: Vec<String> = errnos
            .iter()
            .map(|&e| std::io::Error::from_raw_os_error(e).to_string())
            .collect();
        match r {
            Err(e) if errnos.iter().any(|&n| e.is(n)) => self.check(true, desc),
            Err(e) => self.check(
                false,
                format!("{desc}: got {e}, want {}", want.join(" or ")),
            ),
            Ok(v) => self.check(
                false,
                format!("{desc}: succeeded ({v:?}), want {}", want.join(" or ")),
            ),
        }
    }

    /// Checks that the CPU sees `want` in `m` (whole length of `want`).
    pub fn check_mem(&mut self, desc: impl Display, m: &Mapping, want: &Expect) -> bool {
        match want.mismatch(m) {
            None => self.check(true, desc),
            Some(d) => self.check(false, format!("{desc}: {d}")),
        }
    }

    /// Checks that the CPU sees `want` in `len` bytes at `off`.
    pub fn check_mem_range(
        &mut self,
        desc: impl Display,
        m: &Mapping,
        want: &Expect,
        off: usize,
        len: usize,
    ) -> bool {
        match want.mismatch_range(m, off, len) {
            None => self.check(true, desc),
            Some(d) => self.check(false, format!("{desc}: {d}")),
        }
    }

    /// Checks that a device HASH of `len` bytes at `off` of `r` equals the
    /// expected bytes' hash.
    pub fn check_hash(
        &mut self,
        desc: impl Display,
        g: &Gpu,
        r: &Region<'_>,
        off: usize,
        len: usize,
        want: &Expect,
    ) -> bool {
        match g.hash(r, off, len) {
            Ok(h) => {
                let w = want.hash(off, len);
                self.check(
                    h == w,
                    format!("{desc}: device {h:#018x}, cpu model {w:#018x}"),
                )
            }
            Err(e) => self.check(false, format!("{desc}: {e}")),
        }
    }

    /// A diagnostic shown with the case's TAP line.
    pub fn note(&mut self, msg: impl Display) {
        self.notes.push(msg.to_string());
    }

    /// `Err(Stop::Skip(reason))`.
    pub fn skip<T>(&self, reason: impl Into<String>) -> Result<T, Stop> {
        Err(Stop::Skip(reason.into()))
    }

    /// Failed checks so far.
    pub fn failures(&self) -> &[String] {
        &self.failures
    }

    /// Deadline for loops: now + `opts.seconds`.
    pub fn deadline(&self) -> Instant {
        Instant::now() + Duration::from_secs(self.opts.seconds)
    }
}

/// The device's global counters through `monitor` now (zero without one, or if STATS
/// fails).
pub fn monitor_stats(monitor: Option<&Arc<Context>>) -> Stats {
    monitor.and_then(|m| m.stats().ok()).unwrap_or_default()
}

/// First GPU VA handed out for userptr bindings (2 MiB aligned, below 2^48).
pub const USERPTR_VA_BASE: u64 = 0x4000_0000_0000;

/// A GPU context of a case, configured for its mode. On drop, its driver
/// counter deltas are added to the case's totals.
pub struct Gpu {
    ctx: Context,
    mode: Mode,
    base: Stats,
    acc: Option<Acc>,
    next_va: AtomicU64,
}

impl Gpu {
    /// Opens a new context and configures it for `mode`.
    pub fn open(mode: Mode, acc: Option<Acc>) -> vgpu::Result<Gpu> {
        let ctx = Context::open_default()?;
        ctx.config(mode == Mode::Svm)?;
        let base = ctx.stats().unwrap_or_default();
        Ok(Gpu {
            ctx,
            mode,
            base,
            acc,
            next_va: AtomicU64::new(USERPTR_VA_BASE),
        })
    }

    /// The context.
    pub fn ctx(&self) -> &Context {
        &self.ctx
    }

    /// Its mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Driver counters of this context since it was opened.
    pub fn driver_delta(&self) -> Stats {
        self.ctx
            .stats()
            .map(|s| s.delta_since(&self.base))
            .unwrap_or_default()
    }

    /// Notifier callbacks for `ev` on this context since it was opened.
    pub fn events(&self, ev: MmuEvent) -> u64 {
        self.driver_delta().event(ev)
    }

    /// How the device reaches `[addr, addr + len)`: in SVM mode directly, in
    /// userptr mode through a new read-write object bound at a fresh GPU VA.
    pub fn region(&self, addr: u64, len: usize) -> vgpu::Result<Region<'_>> {
        self.region_with(addr, len, false)
    }

    /// Like [`Gpu::region`] with a READONLY object in userptr mode.
    pub fn region_ro(&self, addr: u64, len: usize) -> vgpu::Result<Region<'_>> {
        self.region_with(addr, len, true)
    }

    /// [`Gpu::region`] of a whole mapping.
    pub fn map(&self, m: &Mapping) -> vgpu::Result<Region<'_>> {
        self.region(m.addr(), m.len())
    }

    /// [`Gpu::region_ro`] of a whole mapping.
    pub fn map_ro(&self, m: &Mapping) -> vgpu::Result<Region<'_>> {
        self.region_ro(m.addr(), m.len())
    }

    fn region_with(&self, addr: u64, len: usize, readonly: bool) -> vgpu::Result<Region<'_>> {
        match self.mode {
            Mode::Svm => Ok(Region {
                cpu: addr,
                len,
                gpu: addr,
                bo: None,
            }),
            Mode::Userptr => self.bound_region(addr, len, readonly),
        }
    }

    /// `[addr, addr + len)` through a new userptr object bound at a fresh GPU VA, in either
    /// mode (an SVM context may have userptr bindings too).
    pub fn bound_region(&self, addr: u64, len: usize, readonly: bool) -> vgpu::Result<Region<'_>> {
        let bo = self.ctx.userptr_raw(addr as *const u8, len, readonly)?;
        let h = HPAGE as u64;
        // Same offset within 2 MiB as the CPU VA, so that large
        // entries are possible; a 2 MiB hole after each.
        let in_huge = addr % h;
        let span = (in_huge + len as u64).next_multiple_of(h) + h;
        let base = self.next_va.fetch_add(span, Ordering::Relaxed);
        let gpu = base + in_huge;
        bo.bind(gpu)?;
        Ok(Region {
            cpu: addr,
            len,
            gpu,
            bo: Some(bo),
        })
    }

    /// Runs `job` with the objects of `regions` named.
    pub fn submit(&self, regions: &[&Region<'_>], mut job: Job) -> vgpu::Result<JobResult> {
        for r in regions {
            if let Some(bo) = &r.bo {
                job = job.uses(bo);
            }
        }
        // SAFETY: the suite points jobs only at test mappings (`Mapping`,
        // mmap'd and reached only through raw pointers) or at addresses that
        // are unmapped on purpose; no Rust reference covers them.
        unsafe { self.ctx.submit(&job) }
    }

    /// WRITE_PATTERN of `len` bytes at `off` of `r`.
    pub fn write_pattern(
        &self,
        r: &Region<'_>,
        off: usize,
        len: usize,
        seed: u64,
    ) -> vgpu::Result<()> {
        self.submit(&[r], Job::new().write_pattern(r.va(off), len as u64, seed))
            .map(|_| ())
    }

    /// FILL of `len` bytes at `off` of `r`.
    pub fn fill(&self, r: &Region<'_>, off: usize, len: usize, byte: u8) -> vgpu::Result<()> {
        self.submit(&[r], Job::new().fill(r.va(off), len as u64, byte))
            .map(|_| ())
    }

    /// HASH of `len` bytes at `off` of `r`.
    pub fn hash(&self, r: &Region<'_>, off: usize, len: usize) -> vgpu::Result<u64> {
        self.submit(&[r], Job::new().hash(r.va(off), len as u64))
            .map(|j| j.result)
    }

    /// READ of `len` bytes at `off` of `r`.
    pub fn read(&self, r: &Region<'_>, off: usize, len: usize) -> vgpu::Result<()> {
        self.submit(&[r], Job::new().read(r.va(off), len as u64))
            .map(|_| ())
    }

    /// COPY of `len` bytes from `src`+`soff` to `dst`+`doff`.
    pub fn copy(
        &self,
        dst: &Region<'_>,
        doff: usize,
        src: &Region<'_>,
        soff: usize,
        len: usize,
    ) -> vgpu::Result<()> {
        self.submit(
            &[dst, src],
            Job::new().copy(dst.va(doff), src.va(soff), len as u64),
        )
        .map(|_| ())
    }

    /// ATOMIC_ADD of `value` to the u64 at `off` of `r`; the old value.
    pub fn atomic_add(&self, r: &Region<'_>, off: usize, value: u64) -> vgpu::Result<u64> {
        self.submit(&[r], Job::new().atomic_add(r.va(off), value))
            .map(|j| j.result)
    }
}

impl Drop for Gpu {
    fn drop(&mut self) {
        if let Some(acc) = &self.acc {
            if self.ctx.is_owner() {
                let d = self.driver_delta();
                let mut a = acc.lock().unwrap_or_else(|e| e.into_inner());
                a.driver = a.driver.sum(&d);
                use std::os::fd::AsRawFd;
                let id = device_ctx_id(self.ctx.device().as_raw_fd());
                a.contexts.push(ContextVerdict::of(&d, id));
            }
        }
    }
}

/// Memory as the device sees it in one mode: a CPU range, the GPU VA it is
/// at, and (userptr mode) the object that maps it.
pub struct Region<'g> {
    /// CPU VA of the start.
    pub cpu: u64,
    /// Length in bytes.
    pub len: usize,
    /// GPU VA of the start.
    pub gpu: u64,
    /// The userptr object (userptr mode).
    pub bo: Option<UserptrBo<'g>>,
}

impl Region<'_> {
    /// GPU VA of byte `off`.
    pub fn va(&self, off: usize) -> u64 {
        self.gpu + off as u64
    }
}

/// The result of one run of a case: the TAP line and the JSON line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Scenario name.
    pub scenario: String,
    /// `svm` or `userptr`.
    pub mode: String,
    /// Device accesses checked during the case (global delta).
    pub accesses_checked: u64,
    /// Device violations during the case (global delta).
    pub violations: u64,
    /// A negative control.
    pub expect_violations: bool,
    /// Passed (false when skipped).
    pub passed: bool,
    /// Skipped (with the reason in `detail`).
    pub skipped: bool,
    /// Wall time.
    pub duration_ms: u64,
    /// Driver notifier callbacks during the case, by event name (every
    /// known event, plus unknown slots that counted).
    pub events: Vec<(String, u64)>,
    /// Skip reason, or the failures joined.
    pub detail: String,
    /// The execution pattern it ran in (`once`, `twice`, ...: [`crate::patterns`]).
    pub pattern: String,
    /// Each GPU context the case opened through [`Cx::gpu`]: the device's verdict on that
    /// context alone (a positive case fails if any of them saw a violation, whatever the
    /// device-wide counters say).
    pub contexts: Vec<ContextVerdict>,
}

impl Outcome {
    /// A failed run of `case` in `mode` (pattern `once`), with `detail`: the start of an
    /// outcome that did not come from [`run_case`].
    pub fn failed(case: &Case, mode: Mode, detail: &str) -> Outcome {
        Outcome {
            scenario: case.name.to_owned(),
            mode: mode.name().to_owned(),
            accesses_checked: 0,
            violations: 0,
            expect_violations: case.expect_violations,
            passed: false,
            skipped: false,
            duration_ms: 0,
            events: Vec::new(),
            detail: detail.to_owned(),
            pattern: "once".to_owned(),
            contexts: Vec::new(),
        }
    }

    /// The `vgpu-case:` JSON object (one line).
    pub fn to_json(&self) -> String {
        let events: serde_json::Map<String, serde_json::Value> = self
            .events
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        json!({
            "scenario": self.scenario,
            "mode": self.mode,
            "accesses_checked": self.accesses_checked,
            "violations": self.violations,
            "expect_violations": self.expect_violations,
            "passed": self.passed,
            "skipped": self.skipped,
            "duration_ms": self.duration_ms,
            "events": events,
            "detail": self.detail,
            "pattern": self.pattern,
            "contexts": self.contexts.iter().map(|c| json!({
                "accesses_checked": c.accesses_checked,
                "violations": c.violations,
                "faults": c.faults,
                "jobs": c.jobs,
                "ctx": c.ctx,
            })).collect::<Vec<_>>(),
        })
        .to_string()
    }

    /// The whole console line.
    pub fn case_line(&self) -> String {
        format!("{CASE_LINE_PREFIX}{}", self.to_json())
    }

    /// The TAP description: `scenario [mode]`, or `scenario [mode, pattern]` for a
    /// pattern other than `once`.
    pub fn tap_desc(&self) -> String {
        if self.pattern == "once" || self.pattern.is_empty() {
            format!("{} [{}]", self.scenario, self.mode)
        } else {
            format!("{} [{}, {}]", self.scenario, self.mode, self.pattern)
        }
    }
}

/// Every known event's delta by name, plus unknown slots that are non-zero.
pub fn event_map(d: &Stats) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = MmuEvent::ALL
        .iter()
        .map(|e| (e.name().to_owned(), d.event(*e)))
        .collect();
    for (i, &n) in d.events.iter().enumerate().skip(MmuEvent::ALL.len()) {
        if n != 0 {
            v.push((format!("event{i}"), n));
        }
    }
    v
}

/// Turns a case's end state into its verdict. `violations`/`accesses` are
/// the global deltas.
pub fn verdict(
    result: &CaseResult,
    failures: &[String],
    expect_violations: bool,
    accesses: u64,
    violations: u64,
    contexts: &[ContextVerdict],
) -> (bool, bool, String) {
    match result {
        Err(Stop::Skip(why)) => (false, true, why.clone()),
        _ => {
            let mut problems: Vec<String> = failures.to_vec();
            if let Err(Stop::Fail(why)) = result {
                problems.push(format!("stopped: {why}"));
            }
            if expect_violations {
                if violations == 0 {
                    problems.push(
                        "negative control: the device reported no violation (the checker \
                         missed a broken mirror)"
                            .into(),
                    );
                }
            } else {
                if violations != 0 {
                    problems.push(format!(
                        "the device reported {violations} coherence violation(s)"
                    ));
                }
                if accesses == 0 {
                    problems.push("the device checked no accesses".into());
                }
                for (i, c) in contexts.iter().enumerate().filter(|(_, c)| c.violations != 0) {
                    problems.push(format!(
                        "context {} of {}: the device reported {} violation(s) in it",
                        i + 1,
                        contexts.len(),
                        c.violations
                    ));
                }
            }
            (problems.is_empty(), false, problems.join("; "))
        }
    }
}

/// Runs one case in one mode; returns the outcome and the diagnostics.
pub fn run_case(
    case: &Case,
    mode: Mode,
    opts: &Options,
    monitor: Option<Arc<Context>>,
) -> (Outcome, Vec<String>) {
    let mut cx = Cx::new(case.name, mode, opts.clone(), monitor);
    let g0 = cx.global();
    let t0 = Instant::now();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (case.run)(&mut cx)))
        .unwrap_or_else(|p| {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".into());
            Err(Stop::Fail(format!("panicked: {msg}")))
        });
    let duration_ms = t0.elapsed().as_millis() as u64;
    let g = cx.global().delta_since(&g0);
    let contexts = cx.context_verdicts();
    let (passed, skipped, detail) = verdict(
        &result,
        cx.failures(),
        case.expect_violations,
        g.accesses_checked,
        g.violations,
        &contexts,
    );
    let drv = cx.driver_totals();
    let mut diags = Vec::new();
    if !skipped {
        diags.push(format!(
            "{} checks; device: {} accesses checked, {} violations ({} no page, {} frame, {} \
             write), {} faults, {} invalidations; driver: {} faults serviced, {} retries, {} \
             invalidations, {} pages mapped",
            cx.checks,
            g.accesses_checked,
            g.violations,
            g.violations_no_page,
            g.violations_frame,
            g.violations_write,
            g.device_faults,
            g.device_invalidations,
            drv.faults_serviced,
            drv.retries,
            drv.invalidations,
            drv.pages_mapped
        ));
        // The driver counts notifier events device-wide (a child's RELEASE happens after
        // its context is gone), so the case's events are the monitor's delta.
        let ev: Vec<String> = g
            .event_counts()
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        if !ev.is_empty() {
            diags.push(format!("notifier events: {}", ev.join(" ")));
        }
        if !contexts.is_empty() {
            let each: Vec<String> = contexts.iter().map(|c| format!("{}/{}", c.accesses_checked, c.violations)).collect();
            diags.push(format!("contexts (accesses/violations, each its own device verdict): {}", each.join(" ")));
        }
    }
    diags.extend(cx.notes.iter().cloned());
    if !passed && !skipped {
        diags.extend(cx.failures.iter().map(|f| format!("FAILED: {f}")));
        if let Err(Stop::Fail(why)) = &result {
            diags.push(format!("STOPPED: {why}"));
        }
    }
    let outcome = Outcome {
        scenario: case.name.to_owned(),
        mode: mode.name().to_owned(),
        accesses_checked: g.accesses_checked,
        violations: g.violations,
        expect_violations: case.expect_violations,
        passed,
        skipped,
        duration_ms,
        events: event_map(&g),
        detail,
        pattern: "once".to_owned(),
        contexts,
    };
    (outcome, diags)
}

/// What the command line asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `--list`: print the cases.
    List,
    /// `--help`.
    Help,
    /// Run these (case name, mode) pairs in order.
    Run(Vec<(&'static str, Mode)>, Options),
}

/// The command-line usage.
pub const USAGE: &str = "\
usage: vgpu-coherence [options] [CASE[:MODE]...]

Runs the coherence suite (every case in every mode it supports by default).
CASE[:MODE] selects cases (MODE: svm or userptr).

options:
  --list            list the cases and exit
  --demo            the demo subset: fork/COW, NUMA migration, THP, swap
  --exclude CASE    leave CASE out (repeatable)
  --seconds N       time budget of stress/race loops (default 5)
  --iterations N    iteration cap of stress/race loops (default 2000)
  --verbose         list passing checks too
  --fail-fast       stop after the first failed run
  --patterns LIST   execution patterns, comma-separated (default: all of once, twice,
                    many, forked, busy-thread, busy-process, threads; --demo: once)
";

/// Parses the arguments (without the program name) against `cases`.
pub fn parse_args(args: &[String], cases: &[Case]) -> Result<Command, String> {
    let mut opts = Options::default();
    let mut picked: Vec<(&'static str, Option<Mode>)> = Vec::new();
    let mut demo = false;
    let mut exclude: Vec<String> = Vec::new();
    let mut patterns_given = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut num = |name: &str| -> Result<u64, String> {
            let v = it.next().ok_or(format!("{name} needs a value"))?;
            v.parse().map_err(|_| format!("{name}: not a number: {v}"))
        };
        match a.as_str() {
            "--list" | "-l" => return Ok(Command::List),
            "--help" | "-h" => return Ok(Command::Help),
            "--demo" => demo = true,
            "--verbose" | "-v" => opts.verbose = true,
            "--fail-fast" => opts.fail_fast = true,
            "--seconds" => opts.seconds = num("--seconds")?,
            "--iterations" => opts.iterations = num("--iterations")?,
            "--exclude" => exclude.push(it.next().ok_or("--exclude needs a case")?.clone()),
            "--patterns" => {
                let list = it.next().ok_or("--patterns needs a list")?;
                opts.patterns = list
                    .split(',')
                    .map(|p| crate::patterns::Pattern::parse(p).ok_or(format!("unknown pattern {p}")))
                    .collect::<Result<_, _>>()?;
                patterns_given = true;
            }
            s if s.starts_with('-') => return Err(format!("unknown option {s}")),
            s => {
                let (name, mode) = match s.split_once(':') {
                    Some((n, m)) => (n, Some(Mode::parse(m).ok_or(format!("unknown mode {m}"))?)),
                    None => (s, None),
                };
                let case = cases
                    .iter()
                    .find(|c| c.name == name)
                    .ok_or(format!("unknown case {name} (see --list)"))?;
                if let Some(m) = mode {
                    if !case.modes.contains(&m) {
                        return Err(format!("case {name} does not run in mode {}", m.name()));
                    }
                }
                picked.push((case.name, mode));
            }
        }
    }
    if demo && !patterns_given {
        opts.patterns = vec![crate::patterns::Pattern::Once];
    }
    for x in &exclude {
        if !cases.iter().any(|c| c.name == x) {
            return Err(format!("unknown case {x} (see --list)"));
        }
    }
    let mut runs = Vec::new();
    let chosen: Vec<&Case> = if picked.is_empty() {
        cases.iter().filter(|c| !demo || c.demo).collect()
    } else {
        picked
            .iter()
            .filter_map(|(n, _)| cases.iter().find(|c| c.name == *n))
            .collect()
    };
    for (i, c) in chosen.iter().enumerate() {
        if exclude.iter().any(|x| x == c.name) {
            continue;
        }
        let only = if picked.is_empty() { None } else { picked[i].1 };
        for &m in c.modes {
            if only.is_none_or(|o| o == m) && !runs.contains(&(c.name, m)) {
                runs.push((c.name, m));
            }
        }
    }
    Ok(Command::Run(runs, opts))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(_: &mut Cx) -> CaseResult {
        Ok(())
    }

    const CASES: &[Case] = &[
        Case {
            name: "a",
            about: "",
            modes: Mode::BOTH,
            demo: true,
            expect_violations: false,
            run: ok,
        },
        Case {
            name: "b",
            about: "",
            modes: Mode::SVM,
            demo: false,
            expect_violations: false,
            run: ok,
        },
        Case {
            name: "neg",
            about: "",
            modes: Mode::SVM,
            demo: false,
            expect_violations: true,
            run: ok,
        },
    ];

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn runs(s: &str) -> Vec<(&'static str, Mode)> {
        match parse_args(&args(s), CASES).unwrap() {
            Command::Run(r, _) => r,
            c => panic!("{c:?}"),
        }
    }

    #[test]
    fn default_runs_everything_in_every_mode() {
        assert_eq!(
            runs(""),
            vec![
                ("a", Mode::Svm),
                ("a", Mode::Userptr),
                ("b", Mode::Svm),
                ("neg", Mode::Svm)
            ]
        );
    }

    #[test]
    fn selection_demo_modes_and_exclusion() {
        assert_eq!(
            runs("b a:userptr"),
            vec![("b", Mode::Svm), ("a", Mode::Userptr)]
        );
        assert_eq!(runs("--demo"), vec![("a", Mode::Svm), ("a", Mode::Userptr)]);
        assert_eq!(
            runs("--exclude a"),
            vec![("b", Mode::Svm), ("neg", Mode::Svm)]
        );
        assert_eq!(runs("a a"), vec![("a", Mode::Svm), ("a", Mode::Userptr)]);
        assert_eq!(parse_args(&args("--list"), CASES).unwrap(), Command::List);
        match parse_args(&args("--seconds 9 --iterations 3 -v"), CASES).unwrap() {
            Command::Run(_, o) => {
                assert_eq!((o.seconds, o.iterations, o.verbose), (9, 3, true));
                assert_eq!(o.patterns, crate::patterns::Pattern::ALL.to_vec());
            }
            c => panic!("{c:?}"),
        }
        use crate::patterns::Pattern;
        for (a, want) in [("--demo", vec![Pattern::Once]), ("--patterns twice,forked", vec![Pattern::Twice, Pattern::Forked]), ("--demo --patterns many", vec![Pattern::Many])] {
            match parse_args(&args(a), CASES).unwrap() {
                Command::Run(_, o) => assert_eq!(o.patterns, want, "{a}"),
                c => panic!("{c:?}"),
            }
        }
    }

    #[test]
    fn bad_arguments() {
        for (a, e) in [
            ("zzz", "unknown case zzz"),
            ("b:userptr", "does not run in mode userptr"),
            ("a:gpu", "unknown mode gpu"),
            ("--frobnicate", "unknown option"),
            ("--seconds x", "not a number"),
            ("--exclude nope", "unknown case nope"),
            ("--patterns once,sometimes", "unknown pattern sometimes"),
        ] {
            let err = parse_args(&args(a), CASES).unwrap_err();
            assert!(err.contains(e), "{a}: {err}");
        }
    }

    #[test]
    fn verdicts() {
        let none: Vec<String> = vec![];
        assert_eq!(
            verdict(&Ok(()), &none, false, 10, 0, &[]),
            (true, false, String::new())
        );
        let (p, s, d) = verdict(&Ok(()), &none, false, 10, 2, &[]);
        assert!(!p && !s && d.contains("2 coherence violation"), "{d}");
        let (p, _, d) = verdict(&Ok(()), &none, false, 0, 0, &[]);
        assert!(!p && d.contains("checked no accesses"));
        assert!(verdict(&Ok(()), &none, true, 5, 1, &[]).0);
        assert!(!verdict(&Ok(()), &none, true, 5, 0, &[]).0);
        let bad = [ContextVerdict { accesses_checked: 4, ..Default::default() }, ContextVerdict { accesses_checked: 3, violations: 2, ..Default::default() }];
        let (p, _, d) = verdict(&Ok(()), &none, false, 7, 0, &bad);
        assert!(!p && d.contains("context 2 of 2") && d.contains("2 violation"), "{d}");
        assert!(verdict(&Ok(()), &none, false, 7, 0, &bad[..1]).0);
        let (p, s, d) = verdict(&Err(Stop::Skip("no ext2".into())), &none, false, 0, 0, &[]);
        assert_eq!((p, s, d.as_str()), (false, true, "no ext2"));
        let (p, _, d) = verdict(&Err(Stop::Fail("mmap".into())), &["x".into()], false, 1, 0, &[]);
        assert!(!p);
        assert_eq!(d, "x; stopped: mmap");
    }

    #[test]
    fn json_line_has_the_agreed_keys() {
        let mut d = Stats::default();
        d.events[MmuEvent::Unmap.index()] = 3;
        d.events[9] = 1;
        let o = Outcome {
            scenario: "fork_cow".into(),
            mode: "svm".into(),
            accesses_checked: 42,
            violations: 0,
            expect_violations: false,
            passed: true,
            skipped: false,
            duration_ms: 17,
            events: event_map(&d),
            detail: String::new(),
            pattern: "twice".into(),
            contexts: vec![ContextVerdict { accesses_checked: 40, violations: 0, faults: 1, jobs: 2, ctx: Some(7) }],
        };
        assert_eq!(o.tap_desc(), "fork_cow [svm, twice]");
        let line = o.case_line();
        assert!(line.starts_with("vgpu-case: {"));
        assert!(!line.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line[CASE_LINE_PREFIX.len()..]).unwrap();
        assert_eq!(v["scenario"], "fork_cow");
        assert_eq!(v["pattern"], "twice");
        assert_eq!(v["mode"], "svm");
        assert_eq!(v["contexts"][0]["accesses_checked"], 40);
        assert_eq!(v["contexts"][0]["jobs"], 2);
        assert_eq!(v["contexts"][0]["ctx"], 7);
        assert_eq!(v["accesses_checked"], 42);
        assert_eq!(v["violations"], 0);
        assert_eq!(v["expect_violations"], false);
        assert_eq!(v["passed"], true);
        assert_eq!(v["duration_ms"], 17);
        assert_eq!(v["events"]["unmap"], 3);
        assert_eq!(v["events"]["migrate"], 0);
        assert_eq!(v["events"]["event9"], 1);
        let once = Outcome { pattern: "once".into(), ..o };
        assert_eq!(once.tap_desc(), "fork_cow [svm]");
    }

    #[test]
    fn run_case_without_a_device_fails_for_no_accesses() {
        let (o, _) = run_case(&CASES[0], Mode::Svm, &Options::default(), None);
        assert!(!o.passed && !o.skipped);
        assert!(o.detail.contains("checked no accesses"), "{}", o.detail);
        let (o, _) = run_case(&CASES[2], Mode::Svm, &Options::default(), None);
        assert!(!o.passed && o.detail.contains("negative control"));
    }
}
