//! `vgpu-fuzz`: a structured fuzzer of the vgpu_svm ioctls (issue 10, item 2).
//!
//! Several worker threads (on shared files and files of their own) and forked children (on
//! their parent's files, where everything but GET_PARAM and STATS must fail with EPERM, and
//! on files of their own) call every ioctl of the driver, plus the DRM core's GEM_CLOSE and
//! unknown numbers, with arguments from [`gen`], while a mutator thread munmaps, mprotects,
//! mremaps, madvises and forks over the memory the ops point at, and files are closed and
//! reopened. Every result is judged by [`oracle`]: 0 or an errno the header documents for
//! that ioctl and that argument. Cheap data checks (a FILL of the worker's own memory filled
//! it; a HASH of a WRITE_PATTERN matches the reference) catch wrong successes.
//!
//! Reproducible: every stream (thread, child) draws from [`rng::Rng::stream`]`(seed, index)`;
//! with `--threads 1 --children 0 --no-mutator` a seed replays the same calls exactly
//! (concurrent runs replay the same per-thread choices, not the same interleaving).
//!
//! Before the random phase, [`cases`] runs fixed regression sequences (reproducers of bugs
//! found, hand-written); cases of driver bugs not fixed yet are listed but only run with
//! `--known-bugs`.

pub mod cases;
pub mod gen;
pub mod oracle;
pub mod rng;
pub mod run;

use std::collections::BTreeMap;

use oracle::{errno_name, Ioctl};

/// Most failure descriptions kept (the rest are only counted).
pub const MAX_FAILURES_KEPT: usize = 40;

/// Counts of one stream (a worker thread or a child), merged into the run's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// ioctls made.
    pub ioctls: u64,
    /// Result name (`"0"`, `"EINVAL"`, ...) -> count.
    pub by_errno: BTreeMap<String, u64>,
    /// ioctl name -> count.
    pub by_ioctl: BTreeMap<String, u64>,
    /// ioctl name -> result name -> count.
    pub by_ioctl_errno: BTreeMap<String, BTreeMap<String, u64>>,
    /// Calls with a non-default request number (other size, direction or type).
    pub odd_requests: u64,
    /// Memory operations (munmap, mprotect, mremap, madvise, fork, touch, remap).
    pub mem_ops: u64,
    /// Files closed and reopened.
    pub reopens: u64,
    /// Data checks of device results that ran.
    pub data_checks: u64,
    /// BIND_ARRAY all-or-nothing checks that ran (past creating their objects).
    pub bind_array_checks: u64,
    /// Jobs that completed (SUBMIT returned 0).
    pub jobs_ok: u64,
    /// Results outside the oracle's set, or wrong data.
    pub failures: u64,
    /// The first failures, described.
    pub failure_log: Vec<String>,
    /// Children that ran and reported.
    pub children: u64,
    /// The largest device-wide `violations` a STATS call returned.
    pub max_violations_seen: u64,
}

impl Counters {
    /// Counts one result `r` (0 or errno) of `ioctl`.
    pub fn record(&mut self, ioctl: Ioctl, r: i32) {
        let e = errno_name(r);
        self.ioctls += 1;
        *self.by_errno.entry(e.clone()).or_default() += 1;
        *self.by_ioctl.entry(ioctl.name().into()).or_default() += 1;
        *self.by_ioctl_errno.entry(ioctl.name().into()).or_default().entry(e).or_default() += 1;
    }

    /// Records a failure (kept if there is room).
    pub fn fail(&mut self, what: String) {
        self.failures += 1;
        if self.failure_log.len() < MAX_FAILURES_KEPT {
            self.failure_log.push(what);
        }
    }

    /// Adds `o` into `self`.
    pub fn merge(&mut self, o: &Counters) {
        self.ioctls += o.ioctls;
        for (k, v) in &o.by_errno {
            *self.by_errno.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &o.by_ioctl {
            *self.by_ioctl.entry(k.clone()).or_default() += v;
        }
        for (k, m) in &o.by_ioctl_errno {
            let e = self.by_ioctl_errno.entry(k.clone()).or_default();
            for (n, v) in m {
                *e.entry(n.clone()).or_default() += v;
            }
        }
        self.odd_requests += o.odd_requests;
        self.mem_ops += o.mem_ops;
        self.reopens += o.reopens;
        self.data_checks += o.data_checks;
        self.bind_array_checks += o.bind_array_checks;
        self.jobs_ok += o.jobs_ok;
        self.failures += o.failures;
        for f in &o.failure_log {
            if self.failure_log.len() < MAX_FAILURES_KEPT {
                self.failure_log.push(f.clone());
            }
        }
        self.children += o.children;
        self.max_violations_seen = self.max_violations_seen.max(o.max_violations_seen);
    }

    /// As JSON (what a child sends its parent).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "ioctls": self.ioctls,
            "by_errno": self.by_errno,
            "by_ioctl": self.by_ioctl,
            "by_ioctl_errno": self.by_ioctl_errno,
            "odd_requests": self.odd_requests,
            "mem_ops": self.mem_ops,
            "reopens": self.reopens,
            "data_checks": self.data_checks,
            "bind_array_checks": self.bind_array_checks,
            "jobs_ok": self.jobs_ok,
            "failures": self.failures,
            "failure_log": self.failure_log,
            "children": self.children,
            "max_violations_seen": self.max_violations_seen,
        })
    }

    /// Back from [`Counters::to_json`].
    pub fn from_json(v: &serde_json::Value) -> Option<Counters> {
        let u = |k: &str| v.get(k).and_then(|x| x.as_u64());
        let map = |k: &str| -> Option<BTreeMap<String, u64>> {
            v.get(k)?.as_object()?.iter().map(|(n, x)| Some((n.clone(), x.as_u64()?))).collect()
        };
        let nested = v
            .get("by_ioctl_errno")?
            .as_object()?
            .iter()
            .map(|(n, m)| {
                let inner: Option<BTreeMap<String, u64>> =
                    m.as_object()?.iter().map(|(e, x)| Some((e.clone(), x.as_u64()?))).collect();
                Some((n.clone(), inner?))
            })
            .collect::<Option<BTreeMap<_, _>>>()?;
        Some(Counters {
            ioctls: u("ioctls")?,
            by_errno: map("by_errno")?,
            by_ioctl: map("by_ioctl")?,
            by_ioctl_errno: nested,
            odd_requests: u("odd_requests")?,
            mem_ops: u("mem_ops")?,
            reopens: u("reopens")?,
            data_checks: u("data_checks")?,
            bind_array_checks: u("bind_array_checks")?,
            jobs_ok: u("jobs_ok")?,
            failures: u("failures")?,
            failure_log: v.get("failure_log")?.as_array()?.iter().map(|s| s.as_str().map(String::from)).collect::<Option<_>>()?,
            children: u("children")?,
            max_violations_seen: u("max_violations_seen")?,
        })
    }
}

/// The run's final summary line: `vgpu-fuzz-summary: {json}`.
#[allow(clippy::too_many_arguments)]
pub fn summary_line(c: &Counters, seed: u64, seconds: f64, threads: usize, violations: u64, accesses_checked: u64, regression_cases: usize, passed: bool) -> String {
    let v = serde_json::json!({
        "seed": seed,
        "ioctls": c.ioctls,
        "by_errno": c.by_errno,
        "by_ioctl": c.by_ioctl,
        "by_ioctl_errno": c.by_ioctl_errno,
        "violations": violations,
        "accesses_checked": accesses_checked,
        "seconds": (seconds * 10.0).round() / 10.0,
        "threads": threads,
        "children": c.children,
        "odd_requests": c.odd_requests,
        "mem_ops": c.mem_ops,
        "reopens": c.reopens,
        "data_checks": c.data_checks,
        "bind_array_checks": c.bind_array_checks,
        "jobs_ok": c.jobs_ok,
        "failures": c.failures,
        "regression_cases": regression_cases,
        "passed": passed,
    });
    format!("vgpu-fuzz-summary: {v}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_merge_and_round_trip() {
        let mut a = Counters::default();
        a.record(Ioctl::Submit, 0);
        a.record(Ioctl::Submit, libc::EINVAL);
        a.record(Ioctl::Bind, libc::EINVAL);
        a.fail("x".into());
        let mut b = Counters::default();
        b.record(Ioctl::Submit, libc::EINVAL);
        b.children = 1;
        b.max_violations_seen = 3;
        b.bind_array_checks = 2;
        a.merge(&b);
        assert_eq!(a.ioctls, 4);
        assert_eq!(a.by_errno["EINVAL"], 3);
        assert_eq!(a.by_errno["0"], 1);
        assert_eq!(a.by_ioctl["SUBMIT"], 3);
        assert_eq!(a.by_ioctl_errno["SUBMIT"]["EINVAL"], 2);
        assert_eq!((a.children, a.failures, a.max_violations_seen), (1, 1, 3));
        let back = Counters::from_json(&a.to_json()).unwrap();
        assert_eq!(back, a);
        let line = summary_line(&a, 7, 12.34, 4, 0, 99, 3, true);
        let json: serde_json::Value = serde_json::from_str(line.strip_prefix("vgpu-fuzz-summary: ").unwrap()).unwrap();
        assert_eq!(json["ioctls"], 4);
        assert_eq!(json["seed"], 7);
        assert_eq!(json["by_errno"]["EINVAL"], 3);
        assert_eq!(json["seconds"], 12.3);
        assert_eq!(json["bind_array_checks"], 2);
    }

    #[test]
    fn failures_are_capped() {
        let mut c = Counters::default();
        for i in 0..100 {
            c.fail(format!("f{i}"));
        }
        assert_eq!(c.failures, 100);
        assert_eq!(c.failure_log.len(), MAX_FAILURES_KEPT);
    }
}
