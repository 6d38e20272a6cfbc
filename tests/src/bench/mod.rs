//! Helpers of `vgpu-bench` (the guest side of `cargo xtask bench`): the
//! figure line format, percentiles, timing, and the two baselines' ioctls
//! (test_hmm's dmirror and gup_test), defined locally from the kernel's UAPI
//! headers (`lib/test_hmm_uapi.h`, `mm/gup_test.h`) with size tests.
//!
//! Included by `src/bin/vgpu-bench.rs` with `#[path]`; not part of the
//! library.

#![allow(dead_code)]

pub mod cpu;
pub mod device;
pub mod fault;
pub mod scale;
pub mod userptr;

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

/// The marker in front of each figure's JSON on the console.
pub const PREFIX: &str = "vgpu-bench: ";
/// The marker of a group that failed (the rest of the bench goes on).
pub const ERROR_PREFIX: &str = "vgpu-bench-error: ";
/// Most samples carried per series (the console is the only channel).
pub const MAX_SAMPLES: usize = 2000;

pub const PAGE: usize = 4096;
pub const HPAGE: usize = 2 << 20;
pub const MIB: usize = 1 << 20;

/// Errors of the bench: a message naming what failed.
pub type R<T> = Result<T, String>;

/// `.ctx("what")` on any displayable error.
pub trait Ctx<T> {
    fn ctx(self, what: &str) -> R<T>;
}

impl<T, E: std::fmt::Display> Ctx<T> for Result<T, E> {
    fn ctx(self, what: &str) -> R<T> {
        self.map_err(|e| format!("{what}: {e}"))
    }
}

/// One figure: a measured value, and (usually) a baseline measured in the same
/// run, with `ratio = value / baseline_value`.
#[derive(Debug, Clone)]
pub struct Figure {
    pub name: String,
    pub value: f64,
    pub unit: &'static str,
    pub baseline: Option<(String, f64)>,
    pub params: Map<String, Value>,
    /// Raw samples (ns) of the value, for the plots.
    pub samples: Option<Vec<f64>>,
    /// Raw samples (ns) of the baseline.
    pub baseline_samples: Option<Vec<f64>>,
    /// The plot (file stem) these samples go to; default: the figure's name.
    pub plot: Option<&'static str>,
    /// Series label of the samples (default: name) and of the baseline
    /// samples (default: baseline name).
    pub labels: Option<(String, String)>,
    /// The value once per repetition (then `value` is their median).
    pub reps: Option<Vec<f64>>,
    /// The baseline once per repetition, measured interleaved with `reps`.
    pub baseline_reps: Option<Vec<f64>>,
}

impl Figure {
    pub fn new(name: impl Into<String>, value: f64, unit: &'static str) -> Figure {
        Figure {
            name: name.into(),
            value,
            unit,
            baseline: None,
            params: Map::new(),
            samples: None,
            baseline_samples: None,
            plot: None,
            labels: None,
            reps: None,
            baseline_reps: None,
        }
    }

    /// A figure from repetitions: `value` is their median; the host computes
    /// min / median / max and the ratio from the arrays.
    pub fn from_reps(name: impl Into<String>, reps: &[f64], unit: &'static str) -> Figure {
        let mut f = Figure::new(name, median(reps), unit);
        f.reps = Some(reps.to_vec());
        f
    }

    /// The baseline's repetitions, interleaved with the value's (same count).
    pub fn baseline_reps(mut self, name: impl Into<String>, reps: &[f64]) -> Figure {
        assert_eq!(
            self.reps.as_ref().map(Vec::len),
            Some(reps.len()),
            "{}: unpaired repetitions",
            self.name
        );
        self.baseline = Some((name.into(), median(reps)));
        self.baseline_reps = Some(reps.to_vec());
        self
    }

    /// The median of the per-repetition ratios (or value / baseline without
    /// repetitions).
    pub fn ratio(&self) -> Option<f64> {
        let (_, b) = self.baseline.as_ref()?;
        match (&self.reps, &self.baseline_reps) {
            (Some(a), Some(bs)) => {
                let r: Vec<f64> = a
                    .iter()
                    .zip(bs)
                    .filter(|(_, y)| **y != 0.0)
                    .map(|(x, y)| x / y)
                    .collect();
                (!r.is_empty()).then(|| median(&r))
            }
            _ => (*b != 0.0).then(|| self.value / b),
        }
    }

    pub fn baseline(mut self, name: impl Into<String>, value: f64) -> Figure {
        self.baseline = Some((name.into(), value));
        self
    }

    pub fn param(mut self, k: &str, v: impl Into<Value>) -> Figure {
        self.params.insert(k.into(), v.into());
        self
    }

    pub fn samples(
        mut self,
        plot: &'static str,
        label: &str,
        s: &[f64],
        base_label: &str,
        b: &[f64],
    ) -> Figure {
        self.plot = Some(plot);
        self.samples = Some(thin(s));
        self.baseline_samples = Some(thin(b));
        self.labels = Some((label.into(), base_label.into()));
        self
    }

    /// Samples of the value only (a series of `plot` without a baseline series).
    pub fn samples_only(mut self, plot: &'static str, label: &str, s: &[f64]) -> Figure {
        self.plot = Some(plot);
        self.samples = Some(thin(s));
        self.labels = Some((label.into(), String::new()));
        self
    }

    pub fn to_json(&self) -> Value {
        let (bn, bv) = match &self.baseline {
            Some((n, v)) => (Value::from(n.clone()), num(*v)),
            None => (Value::Null, Value::Null),
        };
        let ratio = self.ratio().map_or(Value::Null, num);
        let mut o = json!({
            "name": self.name,
            "value": num(self.value),
            "unit": self.unit,
            "baseline_name": bn,
            "baseline_value": bv,
            "ratio": ratio,
            "params": Value::Object(self.params.clone()),
        });
        let m = o.as_object_mut().unwrap();
        if let Some(s) = &self.samples {
            m.insert("samples".into(), ints(s));
        }
        if let Some(s) = &self.baseline_samples {
            m.insert("baseline_samples".into(), ints(s));
        }
        if let Some(r) = &self.reps {
            m.insert("reps".into(), Value::Array(r.iter().map(|&x| num(x)).collect()));
        }
        if let Some(r) = &self.baseline_reps {
            m.insert("baseline_reps".into(), Value::Array(r.iter().map(|&x| num(x)).collect()));
        }
        if let Some(p) = self.plot {
            m.insert("plot".into(), p.into());
        }
        if let Some((a, b)) = &self.labels {
            m.insert("samples_label".into(), a.clone().into());
            m.insert("baseline_samples_label".into(), b.clone().into());
        }
        o
    }

    /// Prints the figure's line (and flushes: the console is shared with the
    /// kernel).
    pub fn emit(&self) {
        let line = format!("{PREFIX}{}\n", self.to_json());
        let mut out = io::stdout().lock();
        let _ = out.write_all(line.as_bytes());
        let _ = out.flush();
        eprintln!(
            "  {} = {:.4} {}{}",
            self.name,
            self.value,
            self.unit,
            match &self.baseline {
                Some((n, b)) => format!(
                    "  vs {n} = {b:.4} (ratio {:.3}, {} reps)",
                    self.ratio().unwrap_or(f64::NAN),
                    self.reps.as_ref().map_or(1, Vec::len)
                ),
                None => String::new(),
            }
        );
    }
}

fn num(v: f64) -> Value {
    if v.is_finite() {
        // Six significant digits are plenty for a TCG measurement.
        let r: f64 = format!("{v:.6e}").parse().unwrap_or(v);
        json!(r)
    } else {
        Value::Null
    }
}

fn ints(s: &[f64]) -> Value {
    Value::Array(s.iter().map(|&x| json!(x.round() as u64)).collect())
}

/// At most [`MAX_SAMPLES`] samples, evenly picked (order kept).
pub fn thin(s: &[f64]) -> Vec<f64> {
    if s.len() <= MAX_SAMPLES {
        return s.to_vec();
    }
    (0..MAX_SAMPLES)
        .map(|i| s[i * s.len() / MAX_SAMPLES])
        .collect()
}

/// The `p`-th percentile (0..=100) by nearest rank of a non-empty sample.
pub fn percentile(s: &[f64], p: f64) -> f64 {
    assert!(!s.is_empty());
    let mut v = s.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

pub fn median(s: &[f64]) -> f64 {
    percentile(s, 50.0)
}

/// Runs `f`, returning its value and how long it took.
pub fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t = Instant::now();
    let v = f();
    (v, t.elapsed())
}

pub fn ns(d: Duration) -> f64 {
    d.as_nanos() as f64
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Writes one byte into every page of `[addr, addr + len)` (CPU first touch).
pub fn touch_pages(addr: u64, len: usize) {
    for off in (0..len).step_by(PAGE) {
        // SAFETY: callers pass a private read-write mapping they own and that
        // nothing borrows.
        unsafe { std::ptr::write_volatile((addr as usize + off) as *mut u8, 1) };
    }
}

/// `madvise` of a whole range.
pub fn madvise(addr: u64, len: usize, advice: libc::c_int) -> R<()> {
    // SAFETY: advice on a range the caller owns.
    if unsafe { libc::madvise(addr as *mut libc::c_void, len, advice) } != 0 {
        return Err(format!("madvise({advice}): {}", io::Error::last_os_error()));
    }
    Ok(())
}

/// A value from /proc/self/status in kB (`VmRSS`, ...).
pub fn self_status_kb(field: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// A progress line on the console (the host shows `vgpu-guest:` lines).
pub fn progress(msg: &str) {
    eprintln!("vgpu-guest: bench: {msg}");
}

/// Runs `f` in a forked child and returns what it measured. The child is
/// forked while the caller has no vgpu context (nor dmirror) open, and never
/// opens one: its mm never had a mirror's notifier, which makes it the
/// honest "unmirrored" baseline. It leaves with `_exit` (no destructor of
/// the parent's runs).
pub fn in_child(f: impl FnOnce() -> R<Vec<f64>>) -> R<Vec<f64>> {
    use std::io::Read;
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    // SAFETY: room for two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!("pipe: {}", io::Error::last_os_error()));
    }
    // SAFETY: both are fresh descriptors owned here.
    let (mut rd, mut wr) = unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) };
    let _ = io::stdout().flush();
    // SAFETY: the bench is single-threaded; the child runs `f` and `_exit`s.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", io::Error::last_os_error()));
    }
    if pid == 0 {
        drop(rd);
        let msg = match f() {
            Ok(v) => {
                let mut b = vec![b'K'];
                for x in v {
                    b.extend_from_slice(&x.to_le_bytes());
                }
                b
            }
            Err(e) => [b"E".as_slice(), e.as_bytes()].concat(),
        };
        let _ = wr.write_all(&msg);
        // SAFETY: leave without running the parent's destructors.
        unsafe { libc::_exit(0) };
    }
    drop(wr);
    let mut buf = Vec::new();
    let r = rd.read_to_end(&mut buf);
    let mut st = 0;
    // SAFETY: our child.
    unsafe { libc::waitpid(pid, &mut st, 0) };
    r.ctx("reading the child's result")?;
    match buf.split_first() {
        Some((b'K', rest)) if rest.len() % 8 == 0 => Ok(rest
            .chunks(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect()),
        Some((b'E', rest)) => Err(format!("child: {}", String::from_utf8_lossy(rest))),
        _ => Err(format!("child (status {st:#x}) sent no result")),
    }
}

/// Reports a failed group.
pub fn report_error(group: &str, e: &str) {
    let line = format!("{ERROR_PREFIX}{}\n", json!({"group": group, "error": e}));
    let mut out = io::stdout().lock();
    let _ = out.write_all(line.as_bytes());
    let _ = out.flush();
}

// ---------------------------------------------------------------------------
// ioctl encoding (asm-generic/ioctl.h, x86-64)

const IOC_WRITE: u64 = 1;
const IOC_READ: u64 = 2;

pub const fn iowr(ty: u8, nr: u8, size: usize) -> u64 {
    ((IOC_READ | IOC_WRITE) << 30) | ((size as u64) << 16) | ((ty as u64) << 8) | nr as u64
}

// ---------------------------------------------------------------------------
// test_hmm (dmirror): lib/test_hmm_uapi.h

/// `struct hmm_dmirror_cmd`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct HmmDmirrorCmd {
    pub addr: u64,
    pub ptr: u64,
    pub npages: u64,
    pub cpages: u64,
    pub faults: u64,
}

pub const HMM_DMIRROR_READ: u64 = iowr(b'H', 0x00, std::mem::size_of::<HmmDmirrorCmd>());
pub const HMM_DMIRROR_WRITE: u64 = iowr(b'H', 0x01, std::mem::size_of::<HmmDmirrorCmd>());
pub const HMM_DMIRROR_SNAPSHOT: u64 = iowr(b'H', 0x04, std::mem::size_of::<HmmDmirrorCmd>());

/// An open `/dev/hmm_dmirror0`: a mirror of this process's mm (test_hmm
/// registers an interval notifier over the whole address space at open).
pub struct Dmirror {
    f: File,
}

impl Dmirror {
    pub const PATH: &'static str = "/dev/hmm_dmirror0";

    pub fn open() -> R<Dmirror> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(Self::PATH)
            .ctx(Self::PATH)?;
        Ok(Dmirror { f })
    }

    fn cmd(&self, req: u64, addr: u64, ptr: u64, npages: u64) -> R<HmmDmirrorCmd> {
        let mut c = HmmDmirrorCmd {
            addr,
            ptr,
            npages,
            ..Default::default()
        };
        loop {
            // SAFETY: the argument type of the request; `ptr` is a buffer of
            // the size the request needs (the callers' contract).
            let r = unsafe { libc::ioctl(self.f.as_raw_fd(), req as _, &mut c) };
            if r == 0 {
                return Ok(c);
            }
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINTR) {
                return Err(format!(
                    "dmirror ioctl {req:#x} at {addr:#x} x{npages}: {e}"
                ));
            }
        }
    }

    /// HMM_DMIRROR_READ: faults `npages` at `addr` into the mirror (read) and
    /// copies them to `buf` (`npages * 4096` bytes).
    pub fn read(&self, addr: u64, buf: u64, npages: u64) -> R<HmmDmirrorCmd> {
        self.cmd(HMM_DMIRROR_READ, addr, buf, npages)
    }

    /// HMM_DMIRROR_WRITE: faults for write and copies `buf` into the range.
    pub fn write(&self, addr: u64, buf: u64, npages: u64) -> R<HmmDmirrorCmd> {
        self.cmd(HMM_DMIRROR_WRITE, addr, buf, npages)
    }

    /// HMM_DMIRROR_SNAPSHOT: hmm_range_fault without faulting, one byte of
    /// protection per page into `buf`.
    pub fn snapshot(&self, addr: u64, buf: &mut [u8]) -> R<HmmDmirrorCmd> {
        self.cmd(
            HMM_DMIRROR_SNAPSHOT,
            addr,
            buf.as_mut_ptr() as u64,
            buf.len() as u64,
        )
    }
}

// ---------------------------------------------------------------------------
// gup_test: mm/gup_test.h

/// `struct gup_test`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct GupTest {
    pub get_delta_usec: u64,
    pub put_delta_usec: u64,
    pub addr: u64,
    pub size: u64,
    pub nr_pages_per_call: u32,
    pub gup_flags: u32,
    pub test_flags: u32,
    pub which_pages: [u32; 8],
}

pub const GUP_FAST_BENCHMARK: u64 = iowr(b'g', 1, std::mem::size_of::<GupTest>());
pub const PIN_BASIC_TEST: u64 = iowr(b'g', 5, std::mem::size_of::<GupTest>());
/// `FOLL_WRITE` (include/linux/mm_types.h).
pub const FOLL_WRITE: u32 = 1;
pub const GUP_TEST_PATH: &str = "/sys/kernel/debug/gup_test";

/// One gup_test request over `[addr, addr + size)`; returns the kernel's
/// filled-in struct (get/put times in µs) and the ioctl's wall time.
pub fn gup_test(
    req: u64,
    addr: u64,
    size: u64,
    per_call: u32,
    flags: u32,
) -> R<(GupTest, Duration)> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(GUP_TEST_PATH)
        .ctx(GUP_TEST_PATH)?;
    let mut g = GupTest {
        addr,
        size,
        nr_pages_per_call: per_call,
        gup_flags: flags,
        ..Default::default()
    };
    // SAFETY: the argument type of the request.
    let (r, d) = timed(|| unsafe { libc::ioctl(f.as_raw_fd(), req as _, &mut g) });
    if r != 0 {
        return Err(format!(
            "gup_test ioctl {req:#x}: {}",
            io::Error::last_os_error()
        ));
    }
    Ok((g, d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uapi_sizes_and_numbers() {
        assert_eq!(std::mem::size_of::<HmmDmirrorCmd>(), 40);
        assert_eq!(std::mem::size_of::<GupTest>(), 80);
        assert_eq!(HMM_DMIRROR_READ, 0xc028_4800);
        assert_eq!(HMM_DMIRROR_WRITE, 0xc028_4801);
        assert_eq!(HMM_DMIRROR_SNAPSHOT, 0xc028_4804);
        assert_eq!(PIN_BASIC_TEST, 0xc050_6705);
        assert_eq!(GUP_FAST_BENCHMARK, 0xc050_6701);
    }

    #[test]
    fn percentiles() {
        let s: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&s, 50.0), 50.0);
        assert_eq!(percentile(&s, 99.0), 99.0);
        assert_eq!(percentile(&s, 100.0), 100.0);
        assert_eq!(percentile(&[3.0], 99.0), 3.0);
        assert_eq!(thin(&vec![1.0; 5000]).len(), MAX_SAMPLES);
    }

    #[test]
    fn figure_json() {
        let f = Figure::new("x", 2.0, "ms").baseline("y", 4.0).param("n", 3);
        let j = f.to_json();
        assert_eq!(j["ratio"], json!(0.5));
        assert_eq!(j["baseline_name"], json!("y"));
        assert_eq!(j["params"]["n"], json!(3));
        assert!(j.get("samples").is_none());
        let j = Figure::new("z", 1.0, "us").to_json();
        assert!(j["ratio"].is_null() && j["baseline_value"].is_null());
        // Repetitions: the ratio is the median of the per-rep ratios.
        let f = Figure::from_reps("r", &[2.0, 8.0, 30.0], "ms")
            .baseline_reps("b", &[1.0, 10.0, 10.0]);
        let j = f.to_json();
        assert_eq!(j["value"], json!(8.0));
        assert_eq!(j["ratio"], json!(2.0));
        assert_eq!(j["reps"], json!([2.0, 8.0, 30.0]));
        assert_eq!(j["baseline_reps"], json!([1.0, 10.0, 10.0]));
    }

    #[test]
    fn a_child_reports_back() {
        assert_eq!(in_child(|| Ok(vec![1.5, -2.0])).unwrap(), vec![1.5, -2.0]);
        let e = in_child(|| Err("nope".into())).unwrap_err();
        assert!(e.contains("nope"), "{e}");
    }
}
