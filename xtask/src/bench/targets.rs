//! The targets table of issue 13: every row, met or not, from the figures of one run.
//!
//! A row is decided on the median of the figure's repetitions (of the per-repetition
//! ratio for a ratio row, of the value for an absolute row) and shows the min–max beside
//! it. A row whose figure is missing says "no data" and is never met; a row with fewer than
//! [`MIN_REPS`] repetitions is "undecided". A row marked `stable` must hold for every
//! repetition (its worst repetition too), not only for the median.

use super::stats::{Spread, MIN_REPS};
use super::{fmt_num, Figure};
use std::fmt::Write as _;

/// What a row compares.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Metric {
    /// The figure's value / baseline ratio (median of the per-repetition ratios).
    Ratio,
    /// The figure's value itself.
    Value,
}

/// The goal of a row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Goal {
    AtMost(f64),
    AtLeast(f64),
}

impl Goal {
    fn holds(self, x: f64) -> bool {
        match self {
            Goal::AtMost(t) => x <= t,
            Goal::AtLeast(t) => x >= t,
        }
    }
}

/// One row of the targets table.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// The row as the issue words it.
    pub what: String,
    /// The figure (bench.json name) it is decided on.
    pub figure: String,
    pub metric: Metric,
    pub goal: Goal,
    /// Unit of the goal, for the table (`x`, `KiB`, `us`).
    pub unit: &'static str,
    /// The goal must hold for the worst repetition too.
    pub stable: bool,
}

fn row(what: &str, figure: &str, metric: Metric, goal: Goal, unit: &'static str) -> Target {
    Target {
        what: what.into(),
        figure: figure.into(),
        metric,
        goal,
        unit,
        stable: false,
    }
}

/// The rows of issue 13's targets table, in its order (the device-bench cases with a
/// TLB-sized working set and 2 MiB pages as extra rows of the checker and bandwidth lines).
pub fn issue13() -> Vec<Target> {
    use Goal::*;
    use Metric::*;
    let mut v = Vec::new();
    for op in ["move_pages", "munmap", "mprotect", "fork"] {
        for st in ["svm", "userptr"] {
            v.push(row(
                &format!("{op} of mirrored 256 MiB vs unmirrored ({st})"),
                &format!("{op}_256m.{st}"),
                Ratio,
                AtMost(1.3),
                "x",
            ));
        }
    }
    v.push(row(
        "munmap of 1 mirrored page, device idle, p50 vs unmirrored",
        "munmap_1page_mirrored_p50",
        Ratio,
        AtMost(1.5),
        "x",
    ));
    // Item 2 ("userptr objects covered by one munmap send their INVALIDATEs before waiting
    // for any"): no row in the issue's table; this one says what "before waiting" buys.
    v.push(row(
        "munmap of 16 bound userptr objects vs 1, device busy, p50 (two-pass notifier)",
        "storm_munmap_16_objects_busy_p50",
        Ratio,
        AtMost(2.0),
        "x",
    ));
    v.push(row(
        "host INVALIDATE vs NOP round trip",
        "host_invalidate_roundtrip",
        Ratio,
        AtMost(1.2),
        "x",
    ));
    v.push(row(
        "checker strict vs off, device copy (host, 32 MiB, 4 KiB pages)",
        "host_checker_strict_vs_off",
        Ratio,
        AtMost(1.15),
        "x",
    ));
    v.push(row(
        "checker strict vs off, device copy (host, 8 MiB TLB-sized, 4 KiB pages)",
        "host_checker_strict_vs_off_8m_4k_tlb",
        Ratio,
        AtMost(1.15),
        "x",
    ));
    v.push(row(
        "checker strict vs off, device copy (host, 32 MiB, 2 MiB pages)",
        "host_checker_strict_vs_off_32m_2m",
        Ratio,
        AtMost(1.15),
        "x",
    ));
    v.push(row(
        "checker strict vs off, device copy (guest, alternated VM boots)",
        "checker_strict_vs_off.device_copy_64m",
        Ratio,
        AtMost(1.15),
        "x",
    ));
    v.push(row(
        "device copy bandwidth vs host memcpy (32 MiB, 4 KiB pages, strict)",
        "host_copy_bandwidth_32m_4k",
        Ratio,
        AtLeast(0.7),
        "x",
    ));
    v.push(row(
        "device copy bandwidth vs host memcpy (8 MiB TLB-sized, 4 KiB pages, strict)",
        "host_copy_bandwidth_8m_4k_tlb",
        Ratio,
        AtLeast(0.7),
        "x",
    ));
    v.push(row(
        "device copy bandwidth vs host memcpy (32 MiB, 2 MiB pages, strict)",
        "host_copy_bandwidth_32m_2m",
        Ratio,
        AtLeast(0.7),
        "x",
    ));
    v.push(row(
        "SVM 4 KiB fault job vs a no-fault job (p50)",
        "svm_fault_job_vs_nofault_p50_4k",
        Ratio,
        AtMost(1.3),
        "x",
    ));
    v.push(row(
        "SVM 4 KiB fault job with SUBMIT_PREFAULT vs a no-fault job (p50)",
        "svm_prefault_job_vs_nofault_p50_4k",
        Ratio,
        AtMost(1.3),
        "x",
    ));
    v.push(row(
        "RSS growth per sparse 8-byte device write",
        "svm_sparse_rss_per_write",
        Value,
        AtMost(4.0),
        "KiB",
    ));
    v.push(row(
        "BIND per object, amortized over 10,000",
        "userptr_10k_bind_per_object",
        Value,
        AtMost(50.0),
        "us",
    ));
    let mut c = row(
        "4 processes vs 1, aggregate jobs/s (2 vCPUs), stable",
        "concurrent_4proc_jobs_per_s",
        Ratio,
        AtLeast(1.5),
        "x",
    );
    c.stable = true;
    v.push(c);
    v
}

/// The verdict of one row.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Met,
    NotMet,
    /// Fewer than [`MIN_REPS`] repetitions.
    Undecided(usize),
    /// The figure (or its ratio) is missing.
    NoData(String),
}

/// One evaluated row.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub target: Target,
    pub spread: Option<Spread>,
    pub reps: usize,
    pub verdict: Verdict,
}

/// Evaluates `t` against the figures.
pub fn evaluate(t: &Target, figs: &[Figure]) -> Outcome {
    let no = |why: String| Outcome {
        target: t.clone(),
        spread: None,
        reps: 0,
        verdict: Verdict::NoData(why),
    };
    let Some(f) = figs.iter().find(|f| f.name == t.figure) else {
        return no(format!("no figure `{}` in this run", t.figure));
    };
    // A figure with repetitions: its statistics; an old single-shot figure: one repetition.
    let (spread, reps) = match (&f.stats, t.metric) {
        (Some(s), Metric::Ratio) => (s.ratio, s.reps),
        (Some(s), Metric::Value) => (Some(s.value), s.reps),
        (None, Metric::Ratio) => (f.ratio.map(one), 1),
        (None, Metric::Value) => (f.value.map(one), 1),
    };
    let Some(spread) = spread else {
        return no(format!("figure `{}` has no {:?}", t.figure, t.metric).to_lowercase());
    };
    let verdict = if reps < MIN_REPS {
        Verdict::Undecided(reps)
    } else {
        let worst = match t.goal {
            Goal::AtMost(_) => spread.max,
            Goal::AtLeast(_) => spread.min,
        };
        if t.goal.holds(spread.median) && (!t.stable || t.goal.holds(worst)) {
            Verdict::Met
        } else {
            Verdict::NotMet
        }
    };
    Outcome {
        target: t.clone(),
        spread: Some(spread),
        reps,
        verdict,
    }
}

fn one(x: f64) -> Spread {
    Spread {
        min: x,
        median: x,
        max: x,
    }
}

/// Every row evaluated.
pub fn evaluate_all(targets: &[Target], figs: &[Figure]) -> Vec<Outcome> {
    targets.iter().map(|t| evaluate(t, figs)).collect()
}

/// The errors the report lists for the rows: every row without data or undecided.
pub fn errors(outcomes: &[Outcome]) -> Vec<String> {
    outcomes
        .iter()
        .filter_map(|o| match &o.verdict {
            Verdict::NoData(why) => Some(format!("target \"{}\": no data ({why})", o.target.what)),
            Verdict::Undecided(n) => Some(format!(
                "target \"{}\": only {n} repetition(s) of `{}`, fewer than {MIN_REPS}",
                o.target.what, o.target.figure
            )),
            _ => None,
        })
        .collect()
}

/// The markdown table.
pub fn table(outcomes: &[Outcome]) -> String {
    let mut s = String::from(
        "| figure | decided on | median | min – max | reps | target | result |\n|---|---|---:|---:|---:|---|---|\n",
    );
    for o in outcomes {
        let t = &o.target;
        let on = match t.metric {
            Metric::Ratio => format!("`{}` ratio", t.figure),
            Metric::Value => format!("`{}`", t.figure),
        };
        let u = if t.unit == "x" {
            "x".to_string()
        } else {
            format!(" {}", t.unit)
        };
        let (med, range) = match o.spread {
            Some(sp) => (
                format!("{}{u}", fmt_num(sp.median)),
                format!("{}–{}{u}", fmt_num(sp.min), fmt_num(sp.max)),
            ),
            None => ("-".into(), "-".into()),
        };
        let goal = match t.goal {
            Goal::AtMost(x) => format!("≤ {}", fmt_goal(x, t.unit)),
            Goal::AtLeast(x) => format!("≥ {}", fmt_goal(x, t.unit)),
        } + if t.stable { ", every rep" } else { "" };
        let res = match &o.verdict {
            Verdict::Met => "met".to_string(),
            Verdict::NotMet => "**not met**".to_string(),
            Verdict::Undecided(n) => format!("**undecided** ({n} reps < {MIN_REPS})"),
            Verdict::NoData(_) => "**no data** (error)".to_string(),
        };
        let reps = if o.reps == 0 {
            "-".into()
        } else {
            o.reps.to_string()
        };
        let _ = writeln!(
            s,
            "| {} | {on} | {med} | {range} | {reps} | {goal} | {res} |",
            t.what
        );
    }
    s
}

fn fmt_goal(x: f64, unit: &str) -> String {
    match unit {
        "x" => format!("{x}x"),
        u => format!("{x} {u}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fig(name: &str, unit: &str, reps: &[f64], base: Option<&[f64]>) -> Figure {
        let mut f = Figure::new(name, 0.0, unit, base.map(|_| ("base", 1.0)));
        f.reps = Some(reps.to_vec());
        f.baseline_reps = base.map(|b| b.to_vec());
        f.finish().unwrap();
        f
    }

    fn seven(x: f64) -> Vec<f64> {
        vec![x; 7]
    }

    #[test]
    fn every_issue_row_is_there_and_missing_figures_are_no_data() {
        let t = issue13();
        // 8 CPU-side rows + 1-page munmap + INVALIDATE + 4 checker + 3 bandwidth + fault (with
        // and without SUBMIT_PREFAULT) + RSS + BIND + concurrency.
        assert_eq!(t.len(), 23);
        let o = evaluate_all(&t, &[]);
        assert!(o.iter().all(|o| matches!(o.verdict, Verdict::NoData(_))));
        assert_eq!(errors(&o).len(), t.len());
        let md = table(&o);
        assert_eq!(md.lines().count(), 2 + t.len());
        assert!(!md.contains("| met |"), "{md}");
        assert!(md.contains("| move_pages of mirrored 256 MiB vs unmirrored (userptr) | `move_pages_256m.userptr` ratio | - | - | - | ≤ 1.3x | **no data** (error) |"), "{md}");
    }

    #[test]
    fn lower_is_better_rows() {
        let t = row(
            "m",
            "munmap_256m.svm",
            Metric::Ratio,
            Goal::AtMost(1.3),
            "x",
        );
        // Ratios 1.0 .. 1.6: median 1.3 -> met (at the limit).
        let base = seven(10.0);
        let val: Vec<f64> = (0..7).map(|i| 10.0 + i as f64).collect();
        let o = evaluate(&t, &[fig("munmap_256m.svm", "ms", &val, Some(&base))]);
        assert_eq!(o.verdict, Verdict::Met);
        let sp = o.spread.unwrap();
        assert!((sp.median - 1.3).abs() < 1e-12 && (sp.max - 1.6).abs() < 1e-12);
        // Shift by one: median 1.4 -> not met.
        let val: Vec<f64> = (1..8).map(|i| 10.0 + i as f64).collect();
        let o = evaluate(&t, &[fig("munmap_256m.svm", "ms", &val, Some(&base))]);
        assert_eq!(o.verdict, Verdict::NotMet);
        let md = table(&[o]);
        assert!(
            md.contains("| 1.40x | 1.10–1.70x | 7 | ≤ 1.3x | **not met** |"),
            "{md}"
        );
    }

    #[test]
    fn higher_is_better_and_stable_rows() {
        let t = issue13();
        let bw = t
            .iter()
            .find(|t| t.figure == "host_copy_bandwidth_32m_4k")
            .unwrap();
        let f = fig(
            "host_copy_bandwidth_32m_4k",
            "GB/s",
            &seven(7.5),
            Some(&seven(10.0)),
        );
        assert_eq!(evaluate(bw, &[f]).verdict, Verdict::Met);
        let f = fig(
            "host_copy_bandwidth_32m_4k",
            "GB/s",
            &seven(6.5),
            Some(&seven(10.0)),
        );
        assert_eq!(evaluate(bw, &[f]).verdict, Verdict::NotMet);
        // Stable: median 2.0 but one rep at 1.2 -> not met.
        let c = t
            .iter()
            .find(|t| t.figure == "concurrent_4proc_jobs_per_s")
            .unwrap();
        let mut v = seven(2000.0);
        v[3] = 1200.0;
        let f = fig(
            "concurrent_4proc_jobs_per_s",
            "jobs/s",
            &v,
            Some(&seven(1000.0)),
        );
        let o = evaluate(c, &[f]);
        assert!((o.spread.unwrap().median - 2.0).abs() < 1e-12);
        assert_eq!(o.verdict, Verdict::NotMet);
        let f = fig(
            "concurrent_4proc_jobs_per_s",
            "jobs/s",
            &seven(2000.0),
            Some(&seven(1000.0)),
        );
        assert_eq!(evaluate(c, &[f]).verdict, Verdict::Met);
    }

    #[test]
    fn value_rows_few_reps_and_single_shot_figures() {
        let t = issue13();
        let rss = t
            .iter()
            .find(|t| t.figure == "svm_sparse_rss_per_write")
            .unwrap();
        let f = fig(
            "svm_sparse_rss_per_write",
            "KiB",
            &[4.0, 4.0, 4.0, 256.0, 4.0, 4.0, 4.0],
            None,
        );
        assert_eq!(evaluate(rss, &[f]).verdict, Verdict::Met);
        let f = fig("svm_sparse_rss_per_write", "KiB", &seven(256.0), None);
        let o = evaluate(rss, &[f]);
        assert_eq!(o.verdict, Verdict::NotMet);
        let md = table(&[o]);
        assert!(md.contains("| 256 KiB | 256–256 KiB | 7 | ≤ 4 KiB | **not met** |"), "{md}");
        // Three reps: undecided, listed as an error, never met.
        let f = fig("svm_sparse_rss_per_write", "KiB", &[4.0; 3], None);
        let o = evaluate(rss, &[f]);
        assert_eq!(o.verdict, Verdict::Undecided(3));
        assert_eq!(errors(&[o]).len(), 1);
        // A single-shot figure (no reps): one repetition.
        let f = Figure::new("svm_sparse_rss_per_write", 4.0, "KiB", None);
        assert_eq!(evaluate(rss, &[f]).verdict, Verdict::Undecided(1));
        // A ratio row whose figure has no baseline: no data.
        let inv = t
            .iter()
            .find(|t| t.figure == "host_invalidate_roundtrip")
            .unwrap();
        let f = fig("host_invalidate_roundtrip", "us", &seven(3.0), None);
        assert!(matches!(evaluate(inv, &[f]).verdict, Verdict::NoData(_)));
    }
}
