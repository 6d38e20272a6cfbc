//! The idle fast path of the driver's invalidation (protocol 0.5's TLB generation): when no
//! job of a context is on the device, the driver clears the GPU entries and stores a new TLB
//! generation instead of sending INVALIDATE; the device drops the context's TLB when it
//! sees a new generation at the start of a JOB or RESUME. A litmus-style race: invalidations
//! land on an idle device right before job starts, and (second phase) at any time, also
//! while a job runs (then the driver must take the INVALIDATE round trip). The device's
//! checker is the judge (any use of a stale translation is a violation); the case also
//! checks what the device read and wrote, and that both branches were taken.

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use vgpu::reference::{fnv1a64, pattern};
use vgpu::Job;

use crate::coherence::{CaseResult, Cx, Gpu, Mode, Stop};
use crate::mem::{Expect, Mapping, PAGE};

/// The context's flush counters (its fdinfo: `vgpu_svm-flushes-elided`, `-sent`, `-posted`).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Flushes {
    pub(super) elided: u64,
    pub(super) sent: u64,
    /// Of `sent`, posted by a userptr notifier's first pass and collected by its second.
    pub(super) posted: u64,
}

impl Flushes {
    pub(super) fn read(g: &Gpu) -> Result<Flushes, Stop> {
        let path = format!("/proc/self/fdinfo/{}", g.ctx().device().as_raw_fd());
        let text = std::fs::read_to_string(&path).map_err(|e| Stop::Fail(format!("{path}: {e}")))?;
        let keys: HashMap<&str, u64> = text
            .lines()
            .filter_map(|l| {
                let (k, v) = l.split_once(':')?;
                Some((k.trim(), v.split_whitespace().next()?.parse().ok()?))
            })
            .collect();
        let get = |k: &str| keys.get(k).copied().ok_or_else(|| Stop::Fail(format!("{path} has no `{k}`:\n{text}")));
        Ok(Flushes {
            elided: get("vgpu_svm-flushes-elided")?,
            sent: get("vgpu_svm-flushes-sent")?,
            posted: get("vgpu_svm-flushes-posted")?,
        })
    }

    pub(super) fn since(self, earlier: Flushes) -> Flushes {
        Flushes {
            elided: self.elided - earlier.elided,
            sent: self.sent - earlier.sent,
            posted: self.posted - earlier.posted,
        }
    }
}

/// Sleeps 0..2 ms, the next step of the xorshift sequence in `x` (a race case's CPU side:
/// its changes then land anywhere in and between the device thread's jobs).
pub(super) fn random_pause(x: &mut u64) {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    std::thread::sleep(Duration::from_micros(*x % 2000));
}

/// Pages the jobs read; one more page after them is the one they write.
const N: usize = 4;

/// Each phase runs this long (at most the run's `--seconds`).
const PHASE: Duration = Duration::from_millis(1500);

/// Phase 1, a handshake per round v: the CPU drops the pages (MADV_DONTNEED: the driver
/// clears the GPU entries while the device is idle: the fast path) and writes pattern v into
/// the read pages; then the device thread, which waited for v, at once submits a job that
/// hashes the read pages and writes pattern v into the write page. The device must hash the
/// CPU's new data and its write must land in the CPU's current page, every round: a device
/// that used its TLB from round v-1 (skipped the new generation) would read the old frames
/// (freed by the DONTNEED: the checker reports them, and the hash is the old pattern's).
/// Phase 2, free-running: the device thread runs longer jobs back to back while the CPU drops
/// and rewrites the pages at random moments, so invalidations hit both a running job (the
/// INVALIDATE round trip) and the gaps between jobs (the fast path). Then the device must
/// see the CPU's last data.
pub fn idle_litmus(cx: &mut Cx) -> CaseResult {
    let len = N * PAGE;
    let g = cx.gpu()?;
    let m = Mapping::anon_small(len + PAGE, 1)?;
    let r = g.map(&m)?;
    let phase = PHASE.min(Duration::from_secs(cx.opts.seconds.max(1)));
    // Mirror everything once (the device caches the translations).
    g.submit(&[&r], Job::new().hash(r.va(0), len as u64).write_pattern(r.va(len), PAGE as u64, 0))
        .map_err(|e| Stop::Fail(format!("first job: {e}")))?;

    // Phase 1.
    let f0 = Flushes::read(&g)?;
    let version = AtomicU64::new(0);
    let done = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let mut write_misses = Vec::new();
    let (rounds, read_misses, errors) = std::thread::scope(|s| {
        let dev = s.spawn(|| {
            let mut misses = Vec::new();
            let mut errors = Vec::new();
            let mut v = 1u64;
            loop {
                while version.load(Ordering::Acquire) < v {
                    if stop.load(Ordering::Acquire) {
                        return (misses, errors);
                    }
                    std::hint::spin_loop();
                }
                let job = Job::new().hash(r.va(0), len as u64).write_pattern(r.va(len), PAGE as u64, 1000 + v);
                match g.submit(&[&r], job) {
                    Ok(j) if j.result != fnv1a64(&pattern(v, len)) => misses.push(v),
                    Ok(_) => {}
                    Err(e) => errors.push(format!("round {v}: {e}")),
                }
                done.store(v, Ordering::Release);
                v += 1;
            }
        });
        let end = Instant::now() + phase;
        let mut v = 0u64;
        while Instant::now() < end && v < cx.opts.iterations.max(1) {
            v += 1;
            let _ = m.madvise(0, len + PAGE, libc::MADV_DONTNEED);
            m.write_pattern(0, len, v);
            version.store(v, Ordering::Release);
            while done.load(Ordering::Acquire) < v {
                std::hint::spin_loop();
            }
            if let Some(d) = Expect::pattern(PAGE, 1000 + v).mismatch_at(0, &m.read(len, PAGE)) {
                write_misses.push(format!("round {v}: {d}"));
            }
        }
        stop.store(true, Ordering::Release);
        let (misses, errors) = dev.join().unwrap_or_else(|_| (Vec::new(), vec!["device thread panicked".into()]));
        (v, misses, errors)
    });
    let p1 = Flushes::read(&g)?.since(f0);
    cx.check(errors.is_empty(), format!("phase 1: every job succeeded ({} rounds; {:?})", rounds, errors.first()));
    cx.check(
        read_misses.is_empty(),
        format!(
            "phase 1: the device hashed the CPU's new data right after each invalidation ({} of {rounds} rounds wrong, first {:?})",
            read_misses.len(),
            read_misses.first()
        ),
    );
    cx.check(
        write_misses.is_empty(),
        format!(
            "phase 1: the device's writes landed in the CPU's current page ({} of {rounds} rounds wrong, first {:?})",
            write_misses.len(),
            write_misses.first()
        ),
    );
    // Every round's DONTNEED cleared mirrored entries with no job on the device.
    cx.check(
        rounds >= 1 && p1.elided >= rounds && p1.sent == 0,
        format!("phase 1: every flush took the idle fast path ({} elided, {} sent, {rounds} rounds)", p1.elided, p1.sent),
    );

    // Phase 2.
    let f1 = Flushes::read(&g)?;
    let stop = AtomicBool::new(false);
    let jobs = AtomicU64::new(0);
    let mut last = 0u64;
    let job_errors = std::thread::scope(|s| {
        let dev = s.spawn(|| {
            let mut errors = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let mut job = Job::new();
                for _ in 0..4 {
                    job = job.hash(r.va(0), len as u64);
                }
                let seed = 5000 + jobs.load(Ordering::Relaxed);
                if let Err(e) = g.submit(&[&r], job.write_pattern(r.va(len), PAGE as u64, seed)) {
                    errors.push(e.to_string());
                }
                jobs.fetch_add(1, Ordering::Relaxed);
            }
            errors
        });
        let end = Instant::now() + phase;
        let mut x = 0x9e37_79b9u64;
        while Instant::now() < end {
            last += 1;
            let _ = m.madvise(0, len + PAGE, libc::MADV_DONTNEED);
            m.write_pattern(0, len, 100_000 + last);
            // 0..2 ms between invalidations, so they fall anywhere in and between jobs.
            random_pause(&mut x);
        }
        stop.store(true, Ordering::Relaxed);
        dev.join().unwrap_or_else(|_| vec!["device thread panicked".into()])
    });
    let p2 = Flushes::read(&g)?.since(f1);
    let n = jobs.load(Ordering::Relaxed);
    cx.check(job_errors.is_empty(), format!("phase 2: every job succeeded ({n} jobs, {last} invalidations; {:?})", job_errors.first()));
    cx.check_hash("phase 2: the device sees the CPU's last data", &g, &r, 0, len, &Expect::pattern(len, 100_000 + last));
    g.write_pattern(&r, len, PAGE, 7).map_err(|e| Stop::Fail(format!("last write: {e}")))?;
    let mut want = Expect::zeros(len + PAGE);
    want.set_pattern(len, PAGE, 7);
    cx.check_mem_range("phase 2: the device's last write is in the CPU's page", &m, &want, len, PAGE);
    let (el, sent) = (p1.elided + p2.elided, p1.sent + p2.sent);
    cx.check(el > 0, format!("the idle fast path was taken ({el} flushes elided)"));
    if cx.mode == Mode::Svm {
        // An SVM context's invalidation does not wait for its jobs: one that lands while a
        // job runs must take the INVALIDATE round trip.
        cx.check(sent > 0, format!("phase 2: the INVALIDATE round trip was taken too ({sent} sent, {} elided, {n} jobs)", p2.elided));
    } else {
        // A userptr context cannot fault: its invalidation waits for the jobs using the
        // object, so the device is idle (elided) unless that wait timed out.
        cx.note(format!("phase 2 (userptr: invalidations wait for the jobs): {} elided, {} sent, {n} jobs", p2.elided, p2.sent));
    }
    cx.note(format!("phase 1: {rounds} rounds, {} elided; phase 2: {} elided, {} sent, {n} jobs, {last} invalidations", p1.elided, p2.elided, p2.sent));
    Ok(())
}
