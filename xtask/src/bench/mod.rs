//! `cargo xtask bench`: the benchmarks. Measurements, not tests: nothing here asserts a
//! time; every ratio is against a baseline measured interleaved with it in the same run,
//! and every figure has at least [`stats::MIN_REPS`] repetitions whose min / median / max
//! the report shows ([`stats`]); the targets of issue 13 are decided on the medians
//! ([`targets`]).
//!
//! 1. The guest bench (`tests/guest-jobs/bench.sh` -> `/bin/vgpu-bench`) in the VM: one
//!    `vgpu-bench: {json}` line per figure on the console ([`parse_figures`]), with the
//!    repetitions in `reps` / `baseline_reps`.
//! 2. The checker, guest side: [`CHECKER_PAIRS`] pairs of short VM boots, one with
//!    `vgpu-device --checker strict` and one with `--checker off`, alternated (strict, off,
//!    off, strict, strict, off, ...), each running only the `devcopy` group; the pair's
//!    ratio is the strict boot's median copy time over the off boot's
//!    ([`checker_figure`]).
//! 3. `cargo bench -p vgpu-device` (host side, release): it prints the same
//!    `vgpu-bench: {json}` lines ([`parse_device_bench`]).
//!
//! Output: `target/vgpu/bench.json` (an array of figures: name, value, unit, baseline_name,
//! baseline_value, ratio, params, reps, baseline_reps, stats), `target/vgpu/bench.md` (the
//! machine, the commit, how it was measured, the targets table, every figure with its
//! spread, the errors), and `target/vgpu/bench-<plot>.svg` (CDF plots of latency samples).

pub mod stats;
pub mod targets;

use crate::{paths, say, JobRun, Opts};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use stats::RepStats;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::Command;
use std::time::Instant;

/// The marker in front of each figure's JSON on the console.
pub const PREFIX: &str = "vgpu-bench: ";
/// The marker of a guest group that failed.
pub const ERROR_PREFIX: &str = "vgpu-bench-error: ";
/// The group the checker boots run.
const CHECKER_GROUP: &str = "devcopy";
/// The figure of that group compared strict vs off.
const CHECKER_FIGURE: &str = "device_copy_64m";
/// Strict/off pairs of checker boots.
pub const CHECKER_PAIRS: usize = 7;

/// One figure (the guest's JSON; `samples*`, `plot` are for the plots only and are not
/// written to bench.json). With `reps`, `value` / `baseline_value` / `ratio` are the
/// medians [`Figure::finish`] computed from the repetitions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Figure {
    pub name: String,
    pub value: Option<f64>,
    pub unit: String,
    #[serde(default)]
    pub baseline_name: Option<String>,
    #[serde(default)]
    pub baseline_value: Option<f64>,
    #[serde(default)]
    pub ratio: Option<f64>,
    #[serde(default)]
    pub params: Map<String, Value>,
    /// The value once per repetition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reps: Option<Vec<f64>>,
    /// The baseline once per repetition, interleaved with `reps`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_reps: Option<Vec<f64>>,
    /// min / median / max of the value, the baseline and the per-repetition ratio.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<RepStats>,
    #[serde(default, skip_serializing)]
    pub samples: Option<Vec<f64>>,
    #[serde(default, skip_serializing)]
    pub baseline_samples: Option<Vec<f64>>,
    #[serde(default, skip_serializing)]
    pub plot: Option<String>,
    #[serde(default, skip_serializing)]
    pub samples_label: Option<String>,
    #[serde(default, skip_serializing)]
    pub baseline_samples_label: Option<String>,
}

impl Figure {
    /// A figure with a baseline; the ratio is computed.
    pub fn new(name: &str, value: f64, unit: &str, baseline: Option<(&str, f64)>) -> Figure {
        let ratio = baseline.and_then(|(_, b)| (b != 0.0).then(|| value / b));
        Figure {
            name: name.into(),
            value: Some(value),
            unit: unit.into(),
            baseline_name: baseline.map(|(n, _)| n.into()),
            baseline_value: baseline.map(|(_, b)| b),
            ratio,
            params: Map::new(),
            reps: None,
            baseline_reps: None,
            stats: None,
            samples: None,
            baseline_samples: None,
            plot: None,
            samples_label: None,
            baseline_samples_label: None,
        }
    }

    /// A figure from interleaved repetitions (`baseline`: its name and repetitions).
    pub fn from_reps(
        name: &str,
        unit: &str,
        reps: Vec<f64>,
        baseline: Option<(&str, Vec<f64>)>,
    ) -> Result<Figure> {
        let mut f = Figure::new(name, 0.0, unit, baseline.as_ref().map(|(n, _)| (*n, 1.0)));
        f.reps = Some(reps);
        f.baseline_reps = baseline.map(|(_, b)| b);
        f.finish()?;
        Ok(f)
    }

    /// With repetitions: computes `stats`, and sets value, baseline_value and ratio to the
    /// medians (of the value, of the baseline, of the per-repetition ratios). Without: as
    /// it is. Errors if the repetitions are unusable (none, or unpaired).
    pub fn finish(&mut self) -> Result<()> {
        let Some(reps) = &self.reps else {
            return Ok(());
        };
        let st = stats::rep_stats(reps, self.baseline_reps.as_deref())
            .map_err(|e| anyhow::anyhow!("figure {}: {e}", self.name))?;
        self.value = Some(st.value.median);
        self.baseline_value = st.baseline.map(|b| b.median);
        self.ratio = st.ratio.map(|r| r.median);
        if self.baseline_reps.is_some() && self.baseline_name.is_none() {
            self.baseline_name = Some("baseline".into());
        }
        self.stats = Some(st);
        Ok(())
    }

    fn param(mut self, k: &str, v: impl Into<Value>) -> Figure {
        self.params.insert(k.into(), v.into());
        self
    }
}

/// Every `vgpu-bench:` figure of a console log, and the `vgpu-bench-error:` messages. The
/// marker may sit anywhere in a line (a kernel message can land in front of it); text after
/// the JSON object is ignored. A figure line whose JSON does not parse, or whose
/// repetitions are unusable, is reported as an error (not fatal: the other figures are
/// still good).
pub fn parse_figures(console: &str) -> (Vec<Figure>, Vec<String>) {
    let (mut figs, mut errors) = (Vec::new(), Vec::new());
    for (i, raw) in console.lines().enumerate() {
        let line = raw.trim_end_matches('\r');
        if let Some(at) = line.find(ERROR_PREFIX) {
            errors.push(line[at + ERROR_PREFIX.len()..].to_string());
            continue;
        }
        let Some(at) = line.find(PREFIX) else {
            continue;
        };
        let json = &line[at + PREFIX.len()..];
        if !json.starts_with('{') {
            continue; // progress text, not a figure
        }
        let mut stream = serde_json::Deserializer::from_str(json).into_iter::<Figure>();
        match stream.next() {
            Some(Ok(mut f)) => match f.finish() {
                Ok(()) => figs.push(f),
                Err(e) => errors.push(format!("console line {}: {e:#}", i + 1)),
            },
            Some(Err(e)) => errors.push(format!("console line {}: bad figure JSON ({e})", i + 1)),
            None => errors.push(format!(
                "console line {}: figure marker without JSON",
                i + 1
            )),
        }
    }
    (figs, errors)
}

/// The figures of `cargo bench -p vgpu-device` (its stdout carries the same `vgpu-bench:`
/// lines as the guest), each marked as host side. Errors if there is none.
pub fn parse_device_bench(out: &str) -> Result<(Vec<Figure>, Vec<String>)> {
    let (mut figs, errors) = parse_figures(out);
    if figs.is_empty() {
        bail!("the device bench printed no `{PREFIX}` figure");
    }
    for f in &mut figs {
        f.params
            .entry("side")
            .or_insert_with(|| "host (cargo bench -p vgpu-device, release)".into());
    }
    Ok((figs, errors))
}

/// One checker boot's figure: the median of the boot's copy jobs.
fn boot_value(figs: &[Figure]) -> Option<f64> {
    figs.iter().find(|f| f.name == CHECKER_FIGURE)?.value
}

/// `checker_strict_vs_off.device_copy_64m` from the alternated boots: `strict[i]` and
/// `off[i]` are pair `i`'s boots (each `None` if that boot gave no figure; such a pair is
/// dropped). The value is the strict boot's copy time, the baseline the off boot's.
pub fn checker_figure(
    strict: &[Option<f64>],
    off: &[Option<f64>],
    per_boot: usize,
) -> Result<Figure> {
    let (mut s, mut o) = (Vec::new(), Vec::new());
    for (a, b) in strict.iter().zip(off) {
        if let (Some(a), Some(b)) = (a, b) {
            s.push(*a);
            o.push(*b);
        }
    }
    if s.is_empty() {
        bail!("no strict/off pair of checker boots gave a {CHECKER_FIGURE} figure");
    }
    let name = format!("checker_strict_vs_off.{CHECKER_FIGURE}");
    let base = format!("{CHECKER_FIGURE}.checker_off");
    Ok(Figure::from_reps(&name, "ms", s, Some((&base, o)))?
        .param("side", "guest; alternated VM boots (strict, off, off, strict, ...), each running only the devcopy group")
        .param("rep", format!("one boot; its value is the median of its {per_boot} copy jobs"))
        .param("pairs_planned", strict.len()))
}

/// Whether a bigger value is better for this unit (rates) or worse (times).
pub fn higher_is_better(unit: &str) -> bool {
    unit.contains("/s")
}

/// A number with about four significant digits.
pub fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if !v.is_finite() {
        "-".into()
    } else if a >= 1e6 {
        format!(
            "{:.3}e{}",
            v / 10f64.powi(a.log10().floor() as i32),
            a.log10().floor() as i32
        )
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn opt(v: Option<f64>) -> String {
    v.map(fmt_num).unwrap_or_else(|| "-".into())
}

fn range(s: Option<stats::Spread>) -> String {
    s.map(|s| format!("{}–{}", fmt_num(s.min), fmt_num(s.max)))
        .unwrap_or_else(|| "-".into())
}

/// The markdown table of `figs`: figure, value (median) and its min–max, unit, baseline,
/// its median and min–max, the ratio (median of the per-repetition ratios) and its
/// min–max, repetitions, which way is better.
pub fn markdown_table(figs: &[Figure]) -> String {
    let mut s = String::from(
        "| figure | value | min–max | unit | baseline | baseline value | min–max | ratio | min–max | reps | better |\n|---|---:|---:|---|---|---:|---:|---:|---:|---:|---|\n",
    );
    for f in figs {
        let ratio = f
            .ratio
            .map(|r| format!("{}x", fmt_num(r)))
            .unwrap_or_else(|| "-".into());
        let better = if f.baseline_value.is_none() {
            ""
        } else if higher_is_better(&f.unit) {
            "higher"
        } else {
            "lower"
        };
        let st = f.stats.as_ref();
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            f.name,
            opt(f.value),
            range(st.map(|s| s.value)),
            f.unit,
            f.baseline_name.as_deref().unwrap_or("-"),
            opt(f.baseline_value),
            range(st.and_then(|s| s.baseline)),
            ratio,
            range(st.and_then(|s| s.ratio)),
            st.map_or("1".into(), |s| s.reps.to_string()),
            better
        );
    }
    s
}

// ---------------------------------------------------------------------------
// Plots

/// One series of a plot: a label and samples in ns.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub label: String,
    pub ns: Vec<f64>,
}

/// The plots the figures carry samples for: plot name -> series (in order of appearance,
/// one per label).
pub fn plots(figs: &[Figure]) -> BTreeMap<String, Vec<Series>> {
    let mut m: BTreeMap<String, Vec<Series>> = BTreeMap::new();
    for f in figs {
        let plot = f.plot.clone().unwrap_or_else(|| f.name.clone());
        let pairs = [
            (
                f.samples_label.clone().unwrap_or_else(|| f.name.clone()),
                &f.samples,
            ),
            (
                f.baseline_samples_label
                    .clone()
                    .or_else(|| f.baseline_name.clone())
                    .unwrap_or_default(),
                &f.baseline_samples,
            ),
        ];
        for (label, s) in pairs {
            let Some(s) = s.as_ref().filter(|s| !s.is_empty()) else {
                continue;
            };
            let v = m.entry(plot.clone()).or_default();
            if !v.iter().any(|x| x.label == label) {
                v.push(Series {
                    label,
                    ns: s.clone(),
                });
            }
        }
    }
    m
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const COLORS: &[&str] = &[
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
];

fn nearest_rank(sorted: &[f64], p: f64) -> f64 {
    let r = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[r.clamp(1, sorted.len()) - 1]
}

/// A tick label: round numbers as they are (`10 µs`, `1 ms`).
fn tick_label(us: f64) -> String {
    if us >= 1000.0 {
        format!("{} ms", us / 1000.0)
    } else {
        format!("{} µs", us)
    }
}

/// Formats a µs value.
fn us_label(us: f64) -> String {
    if us >= 1000.0 {
        format!("{} ms", fmt_num(us / 1000.0))
    } else {
        format!("{} µs", fmt_num(us))
    }
}

/// A CDF plot (x: latency in µs, log scale; y: fraction of samples <= x) of `series`, as
/// a standalone SVG document.
pub fn svg_cdf(title: &str, series: &[Series]) -> String {
    let (w, h) = (760.0, 460.0);
    let (left, right, top) = (70.0, 40.0, 40.0);
    let legend_h = 20.0 * series.len() as f64 + 10.0;
    let bottom = 50.0 + legend_h;
    let (pw, ph) = (w - left - right, h - top - bottom);
    let all: Vec<f64> = series
        .iter()
        .flat_map(|s| s.ns.iter().map(|v| v / 1e3))
        .filter(|v| *v > 0.0)
        .collect();
    let (mut lo, mut hi) = all
        .iter()
        .fold((f64::MAX, 0f64), |(a, b), &v| (a.min(v), b.max(v)));
    if all.is_empty() {
        (lo, hi) = (1.0, 10.0);
    }
    let (llo, lhi) = (
        lo.log10().floor(),
        hi.log10().ceil().max(lo.log10().floor() + 1.0),
    );
    let x = |us: f64| left + (us.max(1e-9).log10() - llo) / (lhi - llo) * pw;
    let y = |frac: f64| top + (1.0 - frac) * ph;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
        w / 2.0,
        esc(title)
    );
    // Grid and ticks: decades (and 2x, 5x lightly) on x, quarters on y.
    let mut d = llo as i32;
    while d <= lhi as i32 {
        for (m, major) in [(1.0, true), (2.0, false), (5.0, false)] {
            let us = m * 10f64.powi(d);
            if us.log10() > lhi + 1e-9 {
                continue;
            }
            let px = x(us);
            let stroke = if major { "#bbb" } else { "#e5e5e5" };
            let _ = writeln!(
                s,
                r#"<line x1="{px:.1}" y1="{top}" x2="{px:.1}" y2="{:.1}" stroke="{stroke}"/>"#,
                top + ph
            );
            if major || lhi - llo <= 2.0 {
                let _ = writeln!(
                    s,
                    r#"<text x="{px:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                    top + ph + 16.0,
                    esc(&tick_label(us))
                );
            }
        }
        d += 1;
    }
    for q in [0.0, 0.25, 0.5, 0.75, 1.0] {
        let py = y(q);
        let _ = writeln!(
            s,
            r##"<line x1="{left}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#ddd"/>"##,
            left + pw
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{q}</text>"#,
            left - 6.0,
            py + 4.0
        );
    }
    let _ = writeln!(
        s,
        r#"<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="black"/>"#
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">latency (log scale)</text>"#,
        left + pw / 2.0,
        top + ph + 34.0
    );
    let _ = writeln!(
        s,
        r#"<text x="16" y="{:.1}" text-anchor="middle" transform="rotate(-90 16 {:.1})">fraction of samples &lt;= x</text>"#,
        top + ph / 2.0,
        top + ph / 2.0
    );
    for (i, se) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let mut v: Vec<f64> = se
            .ns
            .iter()
            .map(|v| v / 1e3)
            .filter(|v| v.is_finite())
            .collect();
        v.sort_by(|a, b| a.total_cmp(b));
        if v.is_empty() {
            continue;
        }
        let n = v.len() as f64;
        let mut pts = String::new();
        let mut prev = 0.0;
        for (k, &us) in v.iter().enumerate() {
            let px = x(us);
            let _ = write!(
                pts,
                "{px:.1},{:.1} {px:.1},{:.1} ",
                y(prev),
                y((k + 1) as f64 / n)
            );
            prev = (k + 1) as f64 / n;
        }
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="1.8" points="{}"/>"#,
            pts.trim_end()
        );
        let ly = top + ph + 52.0 + 20.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{left}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{color}" stroke-width="3"/>"#,
            left + 24.0
        );
        let label = format!(
            "{} (n={}, p50 {}, p99 {})",
            se.label,
            v.len(),
            us_label(nearest_rank(&v, 50.0)),
            us_label(nearest_rank(&v, 99.0))
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
            left + 30.0,
            ly + 4.0,
            esc(&label)
        );
    }
    s.push_str("</svg>\n");
    s
}

// ---------------------------------------------------------------------------
// The machine

fn first_line_of(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .map(|l| l.trim().to_string())
}

/// The host and guest, for the report.
pub fn machine(console: &str) -> Vec<(String, String)> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")?
                .split_once(':')
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kb: u64 = meminfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("MemTotal:")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0);
    let guest_kernel = crate::report::guest_kernel(console);
    let kvm = std::env::var("VGPU_KVM").is_ok_and(|v| v == "1");
    vec![
        (
            "host CPUs (nproc)".into(),
            std::thread::available_parallelism()
                .map_or(0, |n| n.get())
                .to_string(),
        ),
        ("host CPU".into(), model),
        (
            "host RAM".into(),
            format!("{:.1} GiB", mem_kb as f64 / (1u64 << 20) as f64),
        ),
        (
            "host kernel".into(),
            std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .into(),
        ),
        (
            "QEMU".into(),
            first_line_of("qemu-system-x86_64", &["--version"]).unwrap_or_else(|| "unknown".into()),
        ),
        (
            "accelerator".into(),
            if kvm {
                "KVM (VGPU_KVM=1)".into()
            } else {
                "TCG (-accel tcg -cpu max): guest CPU time is emulated, so guest-side CPU work (memcpy, page zeroing, page-table walks) is many times slower than native, while the device (vgpu-device) runs natively on the host".into()
            },
        ),
        (
            "guest".into(),
            format!("Linux {guest_kernel}, 2 vCPUs, 2 NUMA nodes x 1024 MiB"),
        ),
    ]
}

// ---------------------------------------------------------------------------
// The command

fn console_of(outcome: &crate::vm::VmOutcome) -> Result<String> {
    Ok(String::from_utf8_lossy(&std::fs::read(&outcome.console_log)?).into_owned())
}

/// Runs `cargo bench -p vgpu-device --bench device` and returns its stdout.
fn device_bench() -> Result<String> {
    say!("bench: host side: cargo bench -p vgpu-device --bench device");
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(paths::workspace())
        .args([
            "bench",
            "--quiet",
            "--package",
            "vgpu-device",
            "--bench",
            "device",
        ])
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("cannot start cargo bench")?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    for l in stdout.lines().filter(|l| !l.contains(PREFIX)) {
        println!("{l}");
    }
    if !out.status.success() {
        bail!("cargo bench -p vgpu-device failed ({})", out.status);
    }
    Ok(stdout)
}

/// The commit measured: `git rev-parse HEAD` and whether the tree has changes
/// (`git status --porcelain`, untracked files included).
pub fn commit() -> (String, String) {
    let git = |args: &[&str]| {
        Command::new("git")
            .current_dir(paths::workspace())
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    };
    let head = git(&["rev-parse", "HEAD"]).map_or("unknown".into(), |s| s.trim().to_string());
    let dirty = match git(&["status", "--porcelain"]) {
        None => "unknown (git status failed)".into(),
        Some(s) if s.trim().is_empty() => "clean".into(),
        Some(s) => format!(
            "dirty ({} changed or untracked path(s): {})",
            s.lines().count(),
            s.lines()
                .take(8)
                .map(|l| l.get(3..).unwrap_or(l).trim())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    (head, dirty)
}

/// How the figures were measured (the report's section).
pub const HOW_MEASURED: &str = "\
- Every figure has at least 7 repetitions (`reps` in bench.json). A figure with a baseline
  measures value and baseline interleaved (value, baseline, value, baseline, ...), so
  repetition i of each ran next to the other; the ratio of a figure is the **median of the
  per-repetition ratios** value[i] / baseline[i] (a drift of the machine moves both halves of
  a pair and cancels), shown with the min–max of those ratios. The `value` and `baseline
  value` columns are the medians of their own repetitions.
- Latency figures (p50, p99): each repetition takes its percentile over many samples
  (`samples_per_rep` in the figure's params); min / median / max are over the repetitions.
- Guest: `/bin/vgpu-bench` (`tests/src/bin/vgpu-bench.rs`, `tests/src/bench/`), run by
  `tests/guest-jobs/bench.sh` in the standard VM (2 vCPUs, 2 NUMA nodes x 1 GiB, QEMU TCG).
  Times are `CLOCK_MONOTONIC` in the guest around the syscall or ioctl.
- Unmirrored baselines (256 MiB move_pages, munmap, mprotect, fork; the 1-page munmap) are
  measured in a forked child of the bench whose parent has no vgpu context (nor dmirror)
  open at that time, and which never opens /dev/dri itself: its mm never had a vgpu
  notifier. The mirrored repetitions open their context (or object) each time and close it
  after.
- 1-page munmap: the pages are mirrored by device jobs first, then munmapped one after
  another (device idle), and the baseline's pages touched and munmapped the same way. A
  munmap right after a SUBMIT returned costs a few times a plain one under TCG whether its
  page is mirrored or not (`munmap_1page_after_job_*`, a diagnostic); the target figure
  leaves that out.
- Checker, guest: 7 pairs of short VM boots, `vgpu-device --checker strict` and `--checker
  off`, the order alternated pair by pair (strict-off, off-strict, ...), each boot running
  only the `devcopy` group (copies of 64 MiB through the GPU page table); a boot's value is
  the median of its copy jobs, a pair's ratio strict / off.
- Host (`host_*`): `cargo bench -p vgpu-device --bench device` (release), a real vhost-user
  connection to two daemons, one `--checker strict`, one `off`, their jobs interleaved;
  copies of 32 MiB in 4 KiB pages (more pages than the device TLB holds), 8 MiB in 4 KiB
  pages (a TLB-sized working set: half the default 8192 entries, so after the warm-up every
  translation hits) and 32 MiB in 2 MiB pages (GPU page table with 2 MiB leaves), each
  against a memcpy of the same size interleaved with it; INVALIDATE (2 MiB) vs NOP round
  trips in alternating batches, one repetition = one batch's median.
- Targets are decided on the median; \"every rep\" rows on the worst repetition too. A
  missing figure is \"no data\" (an error, never met); fewer than 7 repetitions is
  \"undecided\".
";

/// The report: machine, commit, how measured, targets, figures, errors, plots.
#[allow(clippy::too_many_arguments)]
pub fn report_md(
    machine: &[(String, String)],
    commit: &(String, String),
    outcomes: &[targets::Outcome],
    figs: &[Figure],
    errors: &[String],
    svgs: &[String],
    seconds: f64,
) -> String {
    let mut s = String::from("# vgpu-svm benchmarks (`cargo xtask bench`)\n\n");
    s.push_str("Measurements, not tests: nothing is asserted. Every ratio is value / baseline, measured interleaved in the same run; medians of at least 7 repetitions with their min–max.\n\n## Machine\n\n");
    for (k, v) in machine {
        let _ = writeln!(s, "- {k}: {v}");
    }
    let _ = writeln!(s, "- commit: {} ({})", commit.0, commit.1);
    let _ = writeln!(
        s,
        "- bench time: {:.0} s ({:.1} min)",
        seconds,
        seconds / 60.0
    );
    s.push_str("\n## How measured\n\n");
    s.push_str(HOW_MEASURED);
    s.push_str("\n## Targets (issue 13)\n\n");
    s.push_str(&targets::table(outcomes));
    let met = outcomes
        .iter()
        .filter(|o| o.verdict == targets::Verdict::Met)
        .count();
    let _ = writeln!(s, "\n{met} of {} rows met.", outcomes.len());
    if !errors.is_empty() {
        s.push_str("\n## Errors\n\n");
        for e in errors {
            let _ = writeln!(s, "- {e}");
        }
    }
    s.push_str("\n## All figures\n\n");
    s.push_str(&markdown_table(figs));
    if !svgs.is_empty() {
        s.push_str("\n## Plots\n\n");
        for p in svgs {
            let _ = writeln!(s, "- `{p}`");
        }
    }
    s.push_str("\nEvery figure's parameters (sizes, repetitions, what exactly was timed) and its repetitions are in `bench.json`.\n");
    s
}

/// The order of the checker boots: pair `i` runs strict first when `i` is even.
pub fn checker_order(pairs: usize) -> Vec<(usize, bool)> {
    let mut v = Vec::new();
    for i in 0..pairs {
        let strict_first = i % 2 == 0;
        v.push((i, strict_first));
        v.push((i, !strict_first));
    }
    v
}

pub fn bench(o: &Opts) -> Result<()> {
    let t0 = Instant::now();
    // The commit as the run starts (what the builds below take).
    let measured = commit();
    say!("bench: at {} ({})", measured.0, measured.1);
    let mut errors = Vec::new();
    // 1. The guest bench.
    say!(
        "bench: [1/3] the guest bench (one VM, every group; progress as `vgpu-guest: bench` lines)"
    );
    let outcome = crate::run_job_with(o, "bench", &JobRun::default())?;
    let console = console_of(&outcome)?;
    let (mut figs, errs) = parse_figures(&console);
    errors.extend(errs.into_iter().map(|e| format!("guest: {e}")));
    if outcome.guest_status != Some(0) {
        errors.push(format!(
            "guest bench exited with status {:?} (console: {})",
            outcome.guest_status,
            outcome.console_log.display()
        ));
    }
    for f in &mut figs {
        f.params.entry("side").or_insert_with(|| "guest".into());
    }
    say!(
        "bench: guest bench done, {} figures ({:.0} s so far)",
        figs.len(),
        t0.elapsed().as_secs_f64()
    );
    // 2. The checker boots, strict and off alternated.
    let (mut strict, mut off) = (vec![None; CHECKER_PAIRS], vec![None; CHECKER_PAIRS]);
    let mut per_boot = 0;
    for (k, (pair, is_strict)) in checker_order(CHECKER_PAIRS).into_iter().enumerate() {
        let mode = if is_strict { "strict" } else { "off" };
        say!(
            "bench: [2/3] checker boot {}/{} (pair {}, --checker {mode}, group {CHECKER_GROUP}; {:.0} s so far)",
            k + 1,
            2 * CHECKER_PAIRS,
            pair + 1,
            t0.elapsed().as_secs_f64()
        );
        let spec = JobRun {
            run_name: Some(format!("bench-checker-{}-{mode}", pair + 1)),
            device_args: vec!["--checker".into(), mode.into()],
            extra_cmdline: format!("vgpu_bench={CHECKER_GROUP}"),
            quiet: true,
            ..Default::default()
        };
        let got = crate::run_job_with(o, "bench", &spec).and_then(|oc| {
            let c = console_of(&oc)?;
            if oc.guest_status != Some(0) {
                bail!(
                    "guest status {:?} (console: {})",
                    oc.guest_status,
                    oc.console_log.display()
                );
            }
            Ok(c)
        });
        match got {
            Ok(c) => {
                let (fs, errs) = parse_figures(&c);
                errors.extend(
                    errs.into_iter()
                        .map(|e| format!("checker boot {} ({mode}): {e}", k + 1)),
                );
                let v = boot_value(&fs);
                if let Some(f) = fs.iter().find(|f| f.name == CHECKER_FIGURE) {
                    per_boot = f.stats.map_or(1, |s| s.reps);
                }
                match v {
                    None => errors.push(format!(
                        "checker boot {} ({mode}): no {CHECKER_FIGURE} figure",
                        k + 1
                    )),
                    Some(v) => {
                        say!(
                            "bench: checker boot {} ({mode}): {CHECKER_FIGURE} median {} ms",
                            k + 1,
                            fmt_num(v)
                        );
                        if is_strict {
                            strict[pair] = Some(v);
                        } else {
                            off[pair] = Some(v);
                        }
                    }
                }
            }
            Err(e) => errors.push(format!("checker boot {} ({mode}): {e:#}", k + 1)),
        }
    }
    match checker_figure(&strict, &off, per_boot) {
        Ok(f) => figs.push(f),
        Err(e) => errors.push(format!("checker boots: {e:#}")),
    }
    // 3. The host-side device bench.
    say!(
        "bench: [3/3] host device bench ({:.0} s so far)",
        t0.elapsed().as_secs_f64()
    );
    match device_bench().and_then(|out| parse_device_bench(&out)) {
        Ok((f, errs)) => {
            figs.extend(f);
            errors.extend(errs.into_iter().map(|e| format!("device bench: {e}")));
        }
        Err(e) => errors.push(format!("device bench: {e:#}")),
    }
    if figs.is_empty() {
        bail!("no figures at all; errors: {}", errors.join("; "));
    }
    // The targets; rows without data become errors.
    let outcomes = targets::evaluate_all(&targets::issue13(), &figs);
    errors.extend(targets::errors(&outcomes));
    // Outputs.
    let out = paths::out();
    std::fs::create_dir_all(&out)?;
    let mut svgs = Vec::new();
    for (plot, series) in plots(&figs) {
        let path = out.join(format!("bench-{plot}.svg"));
        let title = match plot.as_str() {
            "fault-latency" => {
                "Per-fault latency (CDF): SVM device fault round trip vs test_hmm dmirror"
                    .to_string()
            }
            "invalidate-munmap" => {
                "munmap of one page (CDF): mirrored (device idle) vs unmirrored (no context)"
                    .to_string()
            }
            p => p.to_string(),
        };
        std::fs::write(&path, svg_cdf(&title, &series))
            .with_context(|| format!("writing {}", path.display()))?;
        svgs.push(path.display().to_string());
    }
    let json = serde_json::to_string_pretty(&figs)?;
    std::fs::write(out.join("bench.json"), json + "\n")?;
    let seconds = t0.elapsed().as_secs_f64();
    let md = report_md(
        &machine(&console),
        &commit(),
        &outcomes,
        &figs,
        &errors,
        &svgs,
        seconds,
    );
    std::fs::write(out.join("bench.md"), &md)?;
    println!("\n{}", targets::table(&outcomes));
    say!(
        "bench: wrote {}, {} and {} plot(s); total bench time {:.0} s ({:.1} min)",
        out.join("bench.md").display(),
        out.join("bench.json").display(),
        svgs.len(),
        seconds,
        seconds / 60.0
    );
    if !errors.is_empty() {
        for e in &errors {
            say!("bench: error: {e}");
        }
        bail!("bench: {} error(s) (listed in bench.md)", errors.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_figures_and_errors_from_a_noisy_console() {
        let console = "\
vgpu-guest: booted 7.2.13
vgpu-bench: {\"name\":\"a\",\"value\":2.0,\"unit\":\"ms\",\"baseline_name\":\"b\",\"baseline_value\":4.0,\"ratio\":0.5,\"params\":{\"n\":1},\"samples\":[1,2,3],\"plot\":\"p\"}\r
[   12.3] random: crng init done vgpu-bench: {\"name\":\"c\",\"value\":1,\"unit\":\"pages/s\",\"baseline_name\":null,\"baseline_value\":null,\"ratio\":null,\"params\":{}} trailing
vgpu-bench: group fault ...
vgpu-bench: {\"name\":\"broken\",
vgpu-bench-error: {\"group\":\"cpu\",\"error\":\"boom\"}
";
        let (f, e) = parse_figures(console);
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].name, "a");
        assert_eq!(f[0].ratio, Some(0.5));
        assert_eq!(f[0].samples.as_deref(), Some(&[1.0, 2.0, 3.0][..]));
        assert_eq!(f[0].plot.as_deref(), Some("p"));
        assert_eq!(f[1].name, "c");
        assert_eq!(f[1].baseline_value, None);
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].contains("line 5"), "{e:?}");
        assert!(e[1].contains("boom"));
        // Samples stay out of bench.json.
        let j = serde_json::to_value(&f[0]).unwrap();
        assert!(j.get("samples").is_none() && j.get("plot").is_none());
        for k in [
            "name",
            "value",
            "unit",
            "baseline_name",
            "baseline_value",
            "ratio",
            "params",
        ] {
            assert!(j.get(k).is_some(), "{k}");
        }
    }

    #[test]
    fn figures_with_reps_take_the_medians_and_keep_the_reps_in_json() {
        let console = "vgpu-bench: {\"name\":\"munmap_256m.svm\",\"value\":null,\"unit\":\"ms\",\"baseline_name\":\"munmap_256m.unmirrored\",\"baseline_value\":null,\"ratio\":null,\"params\":{},\"reps\":[11,12,13,14,15,16,100],\"baseline_reps\":[10,10,10,10,10,10,10]}\n\
vgpu-bench: {\"name\":\"bad\",\"value\":1,\"unit\":\"ms\",\"params\":{},\"reps\":[1,2],\"baseline_reps\":[1]}\n";
        let (f, e) = parse_figures(console);
        assert_eq!(f.len(), 1, "{e:?}");
        assert_eq!(e.len(), 1);
        assert!(e[0].contains("not interleaved pairs"), "{e:?}");
        let m = &f[0];
        assert_eq!(m.value, Some(14.0));
        assert_eq!(m.baseline_value, Some(10.0));
        assert!((m.ratio.unwrap() - 1.4).abs() < 1e-12);
        let st = m.stats.unwrap();
        assert_eq!((st.reps, st.ratio.unwrap().max), (7, 10.0));
        let j = serde_json::to_value(m).unwrap();
        assert_eq!(j["reps"].as_array().unwrap().len(), 7);
        assert_eq!(j["baseline_reps"].as_array().unwrap().len(), 7);
        assert_eq!(j["stats"]["ratio"]["median"], serde_json::json!(1.4));
        let t = markdown_table(&f);
        assert!(t.contains("| munmap_256m.svm | 14.0 | 11.0–100 | ms | munmap_256m.unmirrored | 10.0 | 10.0–10.0 | 1.40x | 1.10–10.0 | 7 | lower |"), "{t}");
    }

    #[test]
    fn device_bench_lines_are_figures_marked_host_side() {
        let out = "copy of 32 MiB ...\n  memcpy 2.3 ms\nvgpu-bench: {\"name\":\"host_invalidate_roundtrip\",\"value\":null,\"unit\":\"us\",\"baseline_name\":\"host_nop_roundtrip\",\"params\":{},\"reps\":[5,5,5,5,5,5,5,6],\"baseline_reps\":[4,4,4,4,4,4,4,4]}\n";
        let (f, e) = parse_device_bench(out).unwrap();
        assert!(e.is_empty());
        assert_eq!(f[0].ratio, Some(1.25));
        assert!(f[0].params["side"].as_str().unwrap().starts_with("host"));
        assert!(parse_device_bench("nothing here").is_err());
    }

    #[test]
    fn checker_boots_alternate_and_pair_up() {
        let order = checker_order(3);
        assert_eq!(
            order,
            [
                (0, true),
                (0, false),
                (1, false),
                (1, true),
                (2, true),
                (2, false)
            ]
        );
        let strict = [Some(12.0), Some(11.0), None, Some(13.0)];
        let off = [Some(10.0), Some(10.0), Some(10.0), Some(10.0)];
        let f = checker_figure(&strict, &off, 5).unwrap();
        assert_eq!(f.name, "checker_strict_vs_off.device_copy_64m");
        let st = f.stats.unwrap();
        assert_eq!(st.reps, 3, "the pair without a strict figure is dropped");
        assert!((f.ratio.unwrap() - 1.2).abs() < 1e-12);
        assert!(checker_figure(&[None], &[Some(1.0)], 5).is_err());
    }

    #[test]
    fn report_has_the_machine_commit_method_and_every_target_row() {
        let figs = vec![Figure::from_reps(
            "munmap_256m.svm",
            "ms",
            vec![11.0; 7],
            Some(("munmap_256m.unmirrored", vec![10.0; 7])),
        )
        .unwrap()];
        let outcomes = targets::evaluate_all(&targets::issue13(), &figs);
        let mut errors = vec!["guest: boom".to_string()];
        errors.extend(targets::errors(&outcomes));
        let md = report_md(
            &[("host CPUs (nproc)".into(), "2".into())],
            &("abc123".into(), "clean".into()),
            &outcomes,
            &figs,
            &errors,
            &[],
            600.0,
        );
        assert!(md.contains("- commit: abc123 (clean)"), "{md}");
        assert!(md.contains("## How measured"));
        assert!(md.contains("| munmap of mirrored 256 MiB vs unmirrored (svm) | `munmap_256m.svm` ratio | 1.10x | 1.10–1.10x | 7 | ≤ 1.3x | met |"), "{md}");
        assert!(md.contains("1 of 23 rows met."), "{md}");
        assert!(
            md.contains("- target \"munmap of mirrored 256 MiB vs unmirrored (userptr)\": no data"),
            "{md}"
        );
        assert!(md.contains("- guest: boom"));
        assert!(md.contains("bench time: 600 s"));
    }

    #[test]
    fn number_format() {
        assert_eq!(fmt_num(0.12345), "0.123");
        assert_eq!(fmt_num(1.2345), "1.23");
        assert_eq!(fmt_num(12.345), "12.3");
        assert_eq!(fmt_num(123.45), "123");
        assert_eq!(fmt_num(3934684.9), "3.935e6");
        assert_eq!(fmt_num(f64::NAN), "-");
    }

    #[test]
    fn plots_group_series_by_plot_and_label() {
        let mut a = Figure::new("svm_fault_latency_p50_4k", 300.0, "us", Some(("dm", 36.0)));
        a.plot = Some("fault-latency".into());
        a.samples = Some(vec![300e3, 310e3]);
        a.samples_label = Some("SVM 4k".into());
        a.baseline_samples = Some(vec![36e3]);
        a.baseline_samples_label = Some("dmirror 4k".into());
        let mut b = a.clone();
        b.samples_label = Some("SVM thp".into());
        b.baseline_samples_label = Some("dmirror 4k".into()); // the same series again: kept once
        let mut c = Figure::new("solo", 1.0, "us", None);
        c.samples = Some(vec![1e3]);
        let p = plots(&[a, b, c, Figure::new("none", 1.0, "us", None)]);
        assert_eq!(p.len(), 2);
        let labels: Vec<&str> = p["fault-latency"]
            .iter()
            .map(|s| s.label.as_str())
            .collect();
        assert_eq!(labels, ["SVM 4k", "dmirror 4k", "SVM thp"]);
        assert_eq!(p["solo"][0].label, "solo");
    }

    #[test]
    fn svg_cdf_is_a_wellformed_document() {
        let series = vec![
            Series {
                label: "SVM <4k>".into(),
                ns: (1..=500).map(|i| 200e3 + i as f64 * 1e3).collect(),
            },
            Series {
                label: "dmirror & co".into(),
                ns: vec![30e3, 40e3, 50e3, 1.2e6],
            },
        ];
        let svg = svg_cdf("t", &series);
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
        assert!(svg.contains("SVM &lt;4k&gt;") && svg.contains("dmirror &amp; co"));
        assert!(svg.contains("n=500") && svg.contains("p50 450 µs"), "{svg}");
        // Every coordinate inside the canvas.
        let pts = svg.split("points=\"").skip(1).flat_map(|p| {
            p.split('"')
                .next()
                .unwrap()
                .split(' ')
                .map(String::from)
                .collect::<Vec<_>>()
        });
        for p in pts {
            let (x, y) = p.split_once(',').unwrap();
            let (x, y): (f64, f64) = (x.parse().unwrap(), y.parse().unwrap());
            assert!(
                (0.0..=760.0).contains(&x) && (0.0..=460.0).contains(&y),
                "{p}"
            );
        }
        // Balanced tags (a cheap well-formedness check).
        assert_eq!(svg.matches("<svg").count(), svg.matches("</svg>").count());
        assert!(svg.contains(">100 µs<") && svg.contains(">1 ms<"), "{svg}");
        let empty = svg_cdf("empty", &[]);
        assert!(empty.contains("</svg>"));
    }
}
