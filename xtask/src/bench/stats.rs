//! Aggregation of repeated measurements: min / median / max of a figure's repetitions, of
//! its baseline's, and of the per-repetition ratio.
//!
//! A figure with repetitions carries `reps` (the value, once per repetition) and, when it
//! has a baseline, `baseline_reps` of the same length, measured interleaved with it (A B A
//! B ...): repetition `i` of the value and repetition `i` of the baseline ran next to each
//! other, so their ratio `reps[i] / baseline_reps[i]` sees the same machine state. The
//! headline ratio is the **median of the per-repetition ratios** (not median / median): a
//! drift of the machine during the run (another VM starting, the host's page cache) moves
//! both halves of a pair alike and cancels in the pair's ratio, and the median of the
//! ratios says "in at least half of the pairs the value cost at most this much".

use serde::{Deserialize, Serialize};

/// Fewest repetitions a figure needs to decide a target.
pub const MIN_REPS: usize = 7;

/// min / median / max of a non-empty sample.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

impl Spread {
    /// The spread of the finite values of `v`; `None` if there are none. The median of an
    /// even count is the mean of the two middle values.
    pub fn of(v: &[f64]) -> Option<Spread> {
        let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
        if s.is_empty() {
            return None;
        }
        s.sort_by(|a, b| a.total_cmp(b));
        let n = s.len();
        let median = if n % 2 == 1 {
            s[n / 2]
        } else {
            (s[n / 2 - 1] + s[n / 2]) / 2.0
        };
        Some(Spread {
            min: s[0],
            median,
            max: s[n - 1],
        })
    }
}

/// The per-repetition ratios `a[i] / b[i]` of two interleaved series (pairs with a zero
/// or non-finite half are left out). Errors if the series differ in length.
pub fn pair_ratios(a: &[f64], b: &[f64]) -> Result<Vec<f64>, String> {
    if a.len() != b.len() {
        return Err(format!(
            "{} repetitions of the value but {} of the baseline: not interleaved pairs",
            a.len(),
            b.len()
        ));
    }
    Ok(a.iter()
        .zip(b)
        .filter(|(x, y)| x.is_finite() && y.is_finite() && **y != 0.0)
        .map(|(x, y)| x / y)
        .collect())
}

/// Everything the report says about a repeated figure.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RepStats {
    pub reps: usize,
    pub value: Spread,
    pub baseline: Option<Spread>,
    pub ratio: Option<Spread>,
}

/// The statistics of `reps` (and of `baseline_reps` interleaved with them).
pub fn rep_stats(reps: &[f64], baseline_reps: Option<&[f64]>) -> Result<RepStats, String> {
    let value = Spread::of(reps).ok_or("no finite repetition")?;
    let (baseline, ratio) = match baseline_reps {
        None => (None, None),
        Some(b) => (Spread::of(b), Spread::of(&pair_ratios(reps, b)?)),
    };
    Ok(RepStats {
        reps: reps.len(),
        value,
        baseline,
        ratio,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_of_odd_even_and_empty() {
        let s = Spread::of(&[5.0, 1.0, 3.0, 9.0, 7.0, 2.0, 8.0]).unwrap();
        assert_eq!((s.min, s.median, s.max), (1.0, 5.0, 9.0));
        let s = Spread::of(&[4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!((s.min, s.median, s.max), (1.0, 2.5, 4.0));
        assert_eq!(Spread::of(&[]), None);
        assert_eq!(Spread::of(&[f64::NAN]), None);
        let s = Spread::of(&[f64::NAN, 2.0]).unwrap();
        assert_eq!(s.median, 2.0);
    }

    #[test]
    fn ratio_is_the_median_of_per_rep_ratios_not_median_over_median() {
        // A drift: both halves of each pair grow together; the value is 1.1x its baseline
        // in every pair.
        let base = [10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 1000.0];
        let val: Vec<f64> = base.iter().map(|b| b * 1.1).collect();
        let st = rep_stats(&val, Some(&base)).unwrap();
        let r = st.ratio.unwrap();
        assert!((r.median - 1.1).abs() < 1e-12, "{r:?}");
        assert!((r.min - 1.1).abs() < 1e-12 && (r.max - 1.1).abs() < 1e-12);
        assert_eq!(st.value.median, 44.0);
        assert_eq!(st.baseline.unwrap().median, 40.0);
        assert_eq!(st.reps, 7);
        // Pairs that differ: ratios 2, 0.8, 3 -> median 2, where median / median = 8 / 10.
        let st = rep_stats(&[2.0, 8.0, 30.0], Some(&[1.0, 10.0, 10.0])).unwrap();
        let r = st.ratio.unwrap();
        assert_eq!((r.min, r.median, r.max), (0.8, 2.0, 3.0));
        assert_ne!(r.median, st.value.median / st.baseline.unwrap().median);
    }

    #[test]
    fn unpaired_series_are_refused_and_zero_baselines_skipped() {
        assert!(rep_stats(&[1.0, 2.0], Some(&[1.0])).is_err());
        let r = pair_ratios(&[1.0, 2.0, 3.0], &[0.0, 1.0, 1.0]).unwrap();
        assert_eq!(r, vec![2.0, 3.0]);
        assert!(rep_stats(&[], None).is_err());
        let st = rep_stats(&[3.0, 1.0, 2.0], None).unwrap();
        assert!(st.ratio.is_none() && st.baseline.is_none());
        assert_eq!(st.value.median, 2.0);
    }
}
