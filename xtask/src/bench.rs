//! `cargo xtask bench`: the benchmarks. Measurements, not tests: nothing here
//! asserts a time; every ratio is against a baseline measured in the same run.
//!
//! 1. The guest bench (`tests/guest-jobs/bench.sh` -> `/bin/vgpu-bench`) in the VM: one
//!    `vgpu-bench: {json}` line per figure on the console ([`parse_figures`]).
//! 2. The same program's `fault` and `device` groups in a second VM whose daemon runs with
//!    `--checker off`; figures present in both become `checker_strict_vs_off.*`
//!    ([`checker_figures`]).
//! 3. `cargo bench -p vgpu-device` (host side, release), parsed by [`parse_device_bench`].
//!
//! Output: `target/vgpu/bench.json` (an array of figures: name, value, unit, baseline_name,
//! baseline_value, ratio = value / baseline_value, params), `target/vgpu/bench.md` (the
//! machine, the table, the targets), and `target/vgpu/bench-<plot>.svg` (hand-written CDF
//! plots of the latency samples the guest sent).

use crate::{paths, say, JobRun, Opts};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::Command;

/// The marker in front of each figure's JSON on the console.
pub const PREFIX: &str = "vgpu-bench: ";
/// The marker of a guest group that failed.
pub const ERROR_PREFIX: &str = "vgpu-bench-error: ";
/// The groups the checker-off VM runs.
const CHECKER_GROUPS: &str = "fault,device";
/// Figures of the checker-off VM that are compared with the strict run.
const CHECKER_FIGURES: &[&str] = &["device_copy_", "svm_fault_throughput_"];

/// One figure (the guest's JSON; `samples*`, `plot` are for the plots only and are not
/// written to bench.json).
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
            samples: None,
            baseline_samples: None,
            plot: None,
            samples_label: None,
            baseline_samples_label: None,
        }
    }

    fn param(mut self, k: &str, v: impl Into<Value>) -> Figure {
        self.params.insert(k.into(), v.into());
        self
    }
}

/// Every `vgpu-bench:` figure of a console log, and the `vgpu-bench-error:` messages. The
/// marker may sit anywhere in a line (a kernel message can land in front of it); text after
/// the JSON object is ignored. A figure line whose JSON does not parse is reported as an
/// error (not fatal: the other figures are still good).
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
            Some(Ok(f)) => figs.push(f),
            Some(Err(e)) => errors.push(format!("console line {}: bad figure JSON ({e})", i + 1)),
            None => errors.push(format!(
                "console line {}: figure marker without JSON",
                i + 1
            )),
        }
    }
    (figs, errors)
}

/// The number in front of `unit` in `line` (`"  NOP   29.3 us"` -> 29.3 for "us").
fn number_before(line: &str, unit: &str) -> Option<f64> {
    let toks: Vec<&str> = line.split_whitespace().collect();
    let i = toks.iter().position(|t| *t == unit)?;
    toks.get(i.checked_sub(1)?)?.parse().ok()
}

/// The number after `key` in `line` (`"off 7.2 ms"` -> 7.2 for "off").
fn number_after(line: &str, key: &str) -> Option<f64> {
    let toks: Vec<&str> = line.split_whitespace().collect();
    let i = toks.iter().position(|t| *t == key)?;
    toks.get(i + 1)?.trim_end_matches([',', ';']).parse().ok()
}

/// The figures of `cargo bench -p vgpu-device` (its stdout): copy through the GPU page
/// table (strict and checker off) vs memcpy, strict vs off, INVALIDATE vs NOP round trips;
/// and, from the bench's newer lines when present, the daemon's CPU time for strict vs off
/// (immune to another job's load preempting the daemon), the memcpy of the same guest
/// memory in 4 KiB steps, and the TLB-sized (8 MiB) and 2 MiB-page cases.
pub fn parse_device_bench(out: &str) -> Result<Vec<Figure>> {
    let line_with = |prefix: &str| out.lines().map(str::trim).find(|l| l.starts_with(prefix));
    let find = |prefix: &str, unit: &str| -> Result<f64> {
        line_with(prefix)
            .and_then(|l| number_before(l, unit))
            .with_context(|| format!("device bench output has no `{prefix} ... {unit}` line"))
    };
    let mib = out
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("copy of ")?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .unwrap_or(0);
    let memcpy = find("memcpy", "ms")?;
    let off = find("GPU page table, checker off", "ms")?;
    let strict = find("GPU page table, strict", "ms")?;
    let nop = find("NOP", "us")?;
    let inv = find("INVALIDATE", "us")?;
    let host = |f: Figure| {
        f.param("side", "host (cargo bench -p vgpu-device, release)")
            .param("copy_mib", mib)
    };
    let mut figs = vec![
        host(Figure::new(
            &format!("host_device_copy_{mib}m_strict"),
            strict,
            "ms",
            Some((&format!("host_memcpy_{mib}m"), memcpy)),
        ))
        .param(
            "what",
            "COPY job through the GPU page table (4 KiB pages), checker strict, best of the reps",
        ),
        host(Figure::new(
            &format!("host_device_copy_{mib}m_checker_off"),
            off,
            "ms",
            Some((&format!("host_memcpy_{mib}m"), memcpy)),
        )),
        host(Figure::new(
            "host_checker_strict_vs_off",
            strict,
            "ms",
            Some(("host_checker_off", off)),
        ))
        .param(
            "what",
            "the same COPY job, daemon with --checker strict vs off, jobs alternated",
        ),
        host(Figure::new(
            "host_invalidate_roundtrip",
            inv,
            "us",
            Some(("host_nop_roundtrip", nop)),
        ))
        .param(
            "what",
            "control-queue round trip of INVALIDATE (2 MiB, full TLB) vs NOP (median; older benches: mean)",
        ),
    ];
    if let Some(l) = line_with("INVALIDATE with its 512 entries cached") {
        let toks: Vec<&str> = l.split_whitespace().collect();
        let us_at = |i: usize| {
            toks.get(i.checked_sub(1)?)?
                .trim_start_matches('(')
                .parse()
                .ok()
        };
        let mut at_us = toks
            .iter()
            .enumerate()
            .filter(|(_, t)| t.trim_end_matches([')', ',']) == "us")
            .map(|(i, _)| us_at(i));
        if let (Some(Some(inv)), Some(Some(nop))) = (at_us.next(), at_us.next()) {
            figs.push(
                host(Figure::new(
                    "host_invalidate_roundtrip_populated",
                    inv,
                    "us",
                    Some(("host_nop_roundtrip_after", nop)),
                ))
                .param("what", "INVALIDATE (2 MiB) whose 512 TLB entries are cached vs the NOP sent after it, median"),
            );
        }
    }
    if let Ok(g) = find("memcpy in guest memory", "ms") {
        figs.push(
            host(Figure::new(
                &format!("host_device_copy_{mib}m_strict_vs_guest_memcpy"),
                strict,
                "ms",
                Some((&format!("host_guest_memcpy_{mib}m_4k_steps"), g)),
            ))
            .param(
                "what",
                "the strict COPY job vs memcpy of the same guest memory, 4 KiB at a time",
            ),
        );
    }
    if let Some(l) = line_with("daemon CPU time") {
        if let (Some(o), Some(st)) = (number_after(l, "off"), number_after(l, "strict")) {
            figs.push(
                host(Figure::new(
                    "host_checker_strict_vs_off_cpu",
                    st,
                    "ms",
                    Some(("host_checker_off_cpu", o)),
                ))
                .param(
                    "what",
                    "daemon CPU time (all threads, schedstat) of the COPY job, strict vs off",
                ),
            );
        }
    }
    // `case NAME N MiB ...: memcpy A ms, off B ms [..], strict C ms [..]; ...`
    for l in out
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("case "))
    {
        let toks: Vec<&str> = l.split_whitespace().collect();
        let (Some(name), Some(size)) = (toks.get(1), toks.get(2)) else {
            continue;
        };
        let tag = format!("{size}m_{}", name.replace('-', "_"));
        let (Some(m), Some(o), Some(st)) = (
            number_after(l, "memcpy"),
            number_after(l, "off"),
            number_after(l, "strict"),
        ) else {
            continue;
        };
        figs.push(host(Figure::new(
            &format!("host_device_copy_{tag}_strict"),
            st,
            "ms",
            Some((&format!("host_memcpy_{size}m"), m)),
        )));
        figs.push(host(Figure::new(
            &format!("host_checker_strict_vs_off_{tag}"),
            st,
            "ms",
            Some((&format!("host_checker_off_{tag}"), o)),
        )));
    }
    Ok(figs)
}

/// `checker_strict_vs_off.<name>` for every figure of the checker-off run (`off`) whose
/// name starts with one of [`CHECKER_FIGURES`] and that the strict run also has. The value
/// is the strict figure, the baseline the checker-off one.
pub fn checker_figures(strict: &[Figure], off: &[Figure]) -> Vec<Figure> {
    let mut v = Vec::new();
    for o in off {
        if !CHECKER_FIGURES.iter().any(|p| o.name.starts_with(p)) {
            continue;
        }
        let Some(s) = strict.iter().find(|s| s.name == o.name) else {
            continue;
        };
        let (Some(sv), Some(ov)) = (s.value, o.value) else {
            continue;
        };
        let name = format!("checker_strict_vs_off.{}", o.name);
        let mut f = Figure::new(
            &name,
            sv,
            &s.unit,
            Some((&format!("{}.checker_off", o.name), ov)),
        )
        .param(
            "side",
            "guest; two VM boots, the second with vgpu-device --checker off",
        )
        .param("groups_rerun", CHECKER_GROUPS);
        // The checker's share: extra time over the checker-off time (for a rate, the inverse).
        let extra = if higher_is_better(&s.unit) {
            ov / sv - 1.0
        } else {
            sv / ov - 1.0
        };
        f = f.param("checker_overhead_pct", (extra * 1000.0).round() / 10.0);
        v.push(f);
    }
    v
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

/// The markdown table of `figs`: figure, value, unit, baseline, baseline value, ratio,
/// which way is better.
pub fn markdown_table(figs: &[Figure]) -> String {
    let mut s = String::from(
        "| figure | value | unit | baseline | baseline value | ratio | better |\n|---|---:|---|---|---:|---:|---|\n",
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
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} |",
            f.name,
            opt(f.value),
            f.unit,
            f.baseline_name.as_deref().unwrap_or("-"),
            opt(f.baseline_value),
            ratio,
            better
        );
    }
    s
}

/// The issue's targets, each checked against the figures (reported, never asserted).
pub fn targets(figs: &[Figure]) -> String {
    let get = |n: &str| figs.iter().find(|f| f.name == n);
    let ratio = |n: &str| get(n).and_then(|f| f.ratio);
    let mut s = String::from("| target | figure | result |\n|---|---|---|\n");
    let mut line = |what: &str, got: Option<f64>, ok: &dyn Fn(f64) -> bool, how: &str| {
        let verdict = match got {
            Some(r) if ok(r) => format!("met ({})", fmt_num(r)),
            Some(r) => format!("**not met** ({})", fmt_num(r)),
            None => "not measured".into(),
        };
        let _ = writeln!(s, "| {what} | {how} | {verdict} |");
    };
    line(
        "fault throughput >= 1.0x dmirror (4 KiB)",
        ratio("svm_fault_throughput_4k"),
        &|r| r >= 1.0,
        "svm_fault_throughput_4k ratio",
    );
    line(
        "fault throughput >= 1.0x dmirror (THP)",
        ratio("svm_fault_throughput_thp"),
        &|r| r >= 1.0,
        "svm_fault_throughput_thp ratio",
    );
    for op in ["munmap", "fork"] {
        for st in ["svm", "userptr"] {
            let name = figs
                .iter()
                .find(|f| {
                    f.name.starts_with(&format!("{op}_")) && f.name.ends_with(&format!(".{st}"))
                })
                .map(|f| f.name.clone());
            let got = name.as_deref().and_then(ratio);
            line(
                &format!("{op} overhead <= 1.5x unmirrored ({st})"),
                got,
                &|r| r <= 1.5,
                &format!(
                    "{} ratio",
                    name.as_deref().unwrap_or(&format!("{op}_*.{st}"))
                ),
            );
        }
    }
    let chk = figs
        .iter()
        .find(|f| f.name.starts_with("checker_strict_vs_off.device_copy_"));
    line(
        "checker overhead <= 20% of device copy time (guest)",
        chk.and_then(|f| f.ratio).map(|r| (r - 1.0) * 100.0),
        &|p| p <= 20.0,
        "checker_strict_vs_off.device_copy_* (ratio - 1) in %",
    );
    line(
        "checker overhead <= 20% of device copy time (host)",
        ratio("host_checker_strict_vs_off").map(|r| (r - 1.0) * 100.0),
        &|p| p <= 20.0,
        "host_checker_strict_vs_off (ratio - 1) in %",
    );
    // Proportional: one changed page of 131072 should cost about 1/131072 of the full
    // validation; take "proportional" as well under 10% of it.
    line(
        "revalidation proportional to changed pages",
        ratio("userptr_revalidate_1page"),
        &|r| r <= 0.1,
        "userptr_revalidate_1page ratio (1 changed page; <= 0.1 counted as proportional)",
    );
    line(
        "checker strict vs off <= 1.15x, device copy (host)",
        ratio("host_checker_strict_vs_off"),
        &|r| r <= 1.15,
        "host_checker_strict_vs_off ratio",
    );
    line(
        "device copy bandwidth >= 0.7x host memcpy",
        get("host_device_copy_32m_strict")
            .and_then(|f| f.ratio)
            .map(|r| 1.0 / r),
        &|r| r >= 0.7,
        "1 / host_device_copy_32m_strict ratio",
    );
    line(
        "INVALIDATE round trip <= 1.2x no-op (host)",
        ratio("host_invalidate_roundtrip"),
        &|r| r <= 1.2,
        "host_invalidate_roundtrip ratio",
    );
    line(
        "INVALIDATE round trip <= 1.2x no-op (guest)",
        ratio("invalidate_cost_in_munmap_p50"),
        &|r| r <= 1.2,
        "invalidate_cost_in_munmap_p50 ratio (vs STATS ioctl)",
    );
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
    print!("{stdout}");
    if !out.status.success() {
        bail!("cargo bench -p vgpu-device failed ({})", out.status);
    }
    Ok(stdout)
}

/// The report: machine, table, targets, errors, plots.
pub fn report_md(
    machine: &[(String, String)],
    figs: &[Figure],
    errors: &[String],
    svgs: &[String],
) -> String {
    let mut s = String::from("# vgpu-svm benchmarks (`cargo xtask bench`)\n\n");
    s.push_str("Measurements, not tests. `ratio` = value / baseline value, both measured in the same run; `better` says which way is good for the value.\n\n## Machine\n\n");
    for (k, v) in machine {
        let _ = writeln!(s, "- {k}: {v}");
    }
    s.push_str("\n## Figures\n\n");
    s.push_str(&markdown_table(figs));
    s.push_str("\n## Targets (reported, not asserted)\n\n");
    s.push_str(&targets(figs));
    if !errors.is_empty() {
        s.push_str("\n## Errors\n\n");
        for e in errors {
            let _ = writeln!(s, "- {e}");
        }
    }
    if !svgs.is_empty() {
        s.push_str("\n## Plots\n\n");
        for p in svgs {
            let _ = writeln!(s, "- `{p}`");
        }
    }
    s.push_str("\nEvery figure's parameters (sizes, repetitions, what exactly was timed) are in `bench.json`.\n");
    s
}

pub fn bench(o: &Opts) -> Result<()> {
    let mut errors = Vec::new();
    // 1. The guest bench.
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
    // 2. The checker-off VM.
    let off = JobRun {
        run_name: Some("bench-checker-off".into()),
        device_args: vec!["--checker".into(), "off".into()],
        extra_cmdline: format!("vgpu_bench={CHECKER_GROUPS}"),
        ..Default::default()
    };
    match crate::run_job_with(o, "bench", &off).and_then(|oc| console_of(&oc)) {
        Ok(c) => {
            let (off_figs, errs) = parse_figures(&c);
            errors.extend(errs.into_iter().map(|e| format!("checker-off VM: {e}")));
            let chk = checker_figures(&figs, &off_figs);
            if chk.is_empty() {
                errors.push("checker-off VM: no figure to compare".into());
            }
            figs.extend(chk);
        }
        Err(e) => errors.push(format!("checker-off VM: {e:#}")),
    }
    // 3. The host-side device bench.
    match device_bench().and_then(|out| parse_device_bench(&out)) {
        Ok(f) => figs.extend(f),
        Err(e) => errors.push(format!("device bench: {e:#}")),
    }
    if figs.is_empty() {
        bail!("no figures at all; errors: {}", errors.join("; "));
    }
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
                "munmap of one page (CDF): mirrored (device INVALIDATE) vs unmirrored".to_string()
            }
            p => p.to_string(),
        };
        std::fs::write(&path, svg_cdf(&title, &series))
            .with_context(|| format!("writing {}", path.display()))?;
        svgs.push(path.display().to_string());
    }
    let json = serde_json::to_string_pretty(&figs)?;
    std::fs::write(out.join("bench.json"), json + "\n")?;
    let md = report_md(&machine(&console), &figs, &errors, &svgs);
    std::fs::write(out.join("bench.md"), &md)?;
    println!("\n{md}");
    say!(
        "bench: wrote {}, {} and {} plot(s)",
        out.join("bench.md").display(),
        out.join("bench.json").display(),
        svgs.len()
    );
    for e in &errors {
        say!("bench: warning: {e}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEVICE_OUT: &str = "\
copy of 32 MiB (4 KiB GPU pages), best of 5:
  memcpy                          4.30 ms    7.80 GB/s
  GPU page table, checker off     4.92 ms    6.83 GB/s  (1.14x memcpy time)
  GPU page table, strict          9.36 ms    3.59 GB/s  (2.18x memcpy time)
checker strict / off: 1.90x the job time
round trips through the control queue, mean of 3000:
  NOP            29.3 us
  INVALIDATE     67.9 us  (2.32x NOP)
(bench took 0.8 s)
";

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

    /// The bench's output since the TLB-sized and 2 MiB cases.
    const DEVICE_OUT_2: &str = "\
copy of 32 MiB (4 KiB GPU pages), best of 9 (median in brackets):
  memcpy                          2.35 ms   14.25 GB/s  [2.44 ms]
  memcpy in guest memory, 4 KiB at a time     2.77 ms   12.11 GB/s  [3.68 ms]
  GPU page table, checker off     6.33 ms    5.30 GB/s  (0.37x memcpy bandwidth)  [7.25 ms]
  GPU page table, strict          7.74 ms    4.34 GB/s  (0.30x memcpy bandwidth)  [8.40 ms]
checker strict / off: 1.22x the job time (medians 1.16x)
daemon CPU time of the job (all threads), best of 9: off 8.05 ms, strict 8.80 ms (1.09x; 0.27x memcpy bandwidth); median run-queue wait off 1.03 ms, strict 1.20 ms
other cases, best of 9 (median in brackets):
  case 4k-tlb  8 MiB 4 KiB pages, TLB-sized: memcpy    0.57 ms, off    0.78 ms [1.27], strict    0.83 ms [1.20]; strict/off 1.06x, strict bandwidth 0.68x memcpy; daemon CPU off 0.77 ms, strict 0.83 ms
  case 2m     32 MiB 2 MiB pages           : memcpy    2.32 ms, off    8.53 ms [9.06], strict    7.74 ms [9.29]; strict/off 0.91x, strict bandwidth 0.30x memcpy; daemon CPU off 7.80 ms, strict 8.15 ms
round trips through the control queue, median of 3000 (alternating batches of 100; min in brackets):
  NOP             3.5 us  [3.2]
  INVALIDATE      5.0 us  (1.44x NOP)  [4.6]
  INVALIDATE with its 512 entries cached      6.1 us  (1.74x the NOP sent after it, 3.5 us), median of 200
(bench took 1.0 s)
";

    #[test]
    fn parses_the_device_bench_cases_and_cpu_time() {
        let f = parse_device_bench(DEVICE_OUT_2).unwrap();
        let get = |n: &str| {
            f.iter().find(|x| x.name == n).unwrap_or_else(|| {
                panic!(
                    "no {n} in {:?}",
                    f.iter().map(|x| &x.name).collect::<Vec<_>>()
                )
            })
        };
        let s = get("host_device_copy_32m_strict");
        assert_eq!((s.value, s.baseline_value), (Some(7.74), Some(2.35)));
        let inv = get("host_invalidate_roundtrip");
        assert_eq!((inv.value, inv.baseline_value), (Some(5.0), Some(3.5)));
        let g = get("host_device_copy_32m_strict_vs_guest_memcpy");
        assert_eq!(g.baseline_value, Some(2.77));
        let c = get("host_checker_strict_vs_off_cpu");
        assert_eq!((c.value, c.baseline_value), (Some(8.80), Some(8.05)));
        let t = get("host_device_copy_8m_4k_tlb_strict");
        assert_eq!((t.value, t.baseline_value), (Some(0.83), Some(0.57)));
        let t = get("host_checker_strict_vs_off_8m_4k_tlb");
        assert_eq!((t.value, t.baseline_value), (Some(0.83), Some(0.78)));
        let l = get("host_checker_strict_vs_off_32m_2m");
        assert_eq!((l.value, l.baseline_value), (Some(7.74), Some(8.53)));
        let p = get("host_invalidate_roundtrip_populated");
        assert_eq!((p.value, p.baseline_value), (Some(6.1), Some(3.5)));
        let md = targets(&f);
        assert!(md.contains("checker strict vs off <= 1.15x, device copy (host) | host_checker_strict_vs_off ratio | **not met** (1.22)"), "{md}");
        assert!(
            md.contains("device copy bandwidth >= 0.7x host memcpy"),
            "{md}"
        );
    }

    #[test]
    fn parses_the_device_bench() {
        let f = parse_device_bench(DEVICE_OUT).unwrap();
        assert_eq!(f.len(), 4);
        assert_eq!(f[0].name, "host_device_copy_32m_strict");
        assert_eq!(f[0].value, Some(9.36));
        assert_eq!(f[0].baseline_value, Some(4.30));
        assert_eq!(f[2].value, Some(9.36));
        assert_eq!(f[2].baseline_value, Some(4.92));
        let inv = &f[3];
        assert_eq!((inv.value, inv.baseline_value), (Some(67.9), Some(29.3)));
        assert!((inv.ratio.unwrap() - 67.9 / 29.3).abs() < 1e-9);
        assert!(parse_device_bench("nothing here").is_err());
    }

    #[test]
    fn checker_pairs_same_named_figures() {
        let strict = vec![
            Figure::new(
                "device_copy_64m",
                12.0,
                "ms",
                Some(("guest_memcpy_64m", 50.0)),
            ),
            Figure::new("svm_fault_throughput_4k", 80.0, "pages/s", None),
            Figure::new("other", 1.0, "ms", None),
        ];
        let off = vec![
            Figure::new("device_copy_64m", 10.0, "ms", None),
            Figure::new("svm_fault_throughput_4k", 100.0, "pages/s", None),
            Figure::new("other", 2.0, "ms", None),
            Figure::new("device_copy_only_off", 2.0, "ms", None),
        ];
        let c = checker_figures(&strict, &off);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].name, "checker_strict_vs_off.device_copy_64m");
        assert_eq!(c[0].ratio, Some(1.2));
        assert_eq!(c[0].params["checker_overhead_pct"], serde_json::json!(20.0));
        assert_eq!(c[1].params["checker_overhead_pct"], serde_json::json!(25.0));
    }

    #[test]
    fn table_and_targets() {
        let figs = vec![
            Figure::new(
                "svm_fault_throughput_4k",
                70961.7,
                "pages/s",
                Some(("dmirror", 34935.4)),
            ),
            Figure::new(
                "munmap_256m.svm",
                65.3,
                "ms",
                Some(("munmap_256m.unmirrored", 77.1)),
            ),
            Figure::new(
                "userptr_revalidate_1page",
                24.4,
                "ms",
                Some(("userptr_validate_full", 33.3)),
            ),
            Figure::new("lonely", 3.0, "ms", None),
        ];
        let t = markdown_table(&figs);
        assert_eq!(t.lines().count(), 2 + figs.len());
        assert!(
            t.contains(
                "| svm_fault_throughput_4k | 70962 | pages/s | dmirror | 34935 | 2.03x | higher |"
            ),
            "{t}"
        );
        assert!(t.contains("| lonely | 3.00 | ms | - | - | - |  |"), "{t}");
        let g = targets(&figs);
        assert!(g.contains("fault throughput >= 1.0x dmirror (4 KiB) | svm_fault_throughput_4k ratio | met (2.03)"), "{g}");
        assert!(
            g.contains("munmap overhead <= 1.5x unmirrored (svm) | munmap_256m.svm ratio | met"),
            "{g}"
        );
        assert!(g.contains("revalidation proportional to changed pages"));
        assert!(g.contains("**not met** (0.733)"), "{g}");
        assert!(
            g.contains("fork overhead <= 1.5x unmirrored (svm) | fork_*.svm ratio | not measured"),
            "{g}"
        );
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
