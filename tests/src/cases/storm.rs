//! The two-pass invalidation of userptr objects (7.1's `invalidate_start` /
//! `invalidate_finish`): one CPU change over many objects posts every object's INVALIDATE
//! in the first passes and waits for the answers in the second. The promise is the same as
//! with one pass (when the CPU change is done, no device access uses an old page), so the
//! device's checker is the judge; the case also checks what the device read, and that the
//! two-pass path was taken.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use vgpu::Job;

use super::idle::{random_pause, Flushes};
use crate::coherence::{CaseResult, Cx, Mode, Region, Stop};
use crate::mem::{Expect, Mapping, PAGE};

/// Objects over one mapping, side by side.
const OBJECTS: usize = 8;
/// Pages per object.
const PAGES: usize = 4;
/// The storm runs this long (at most the run's `--seconds`).
const STORM: Duration = Duration::from_millis(1500);

/// A storm over the objects of one context: a device thread runs jobs that read every
/// object, back to back, while the CPU drops the whole mapping (one MADV_DONTNEED: one
/// invalidation whose range covers every object's notifier) and writes a new pattern into
/// it, at random moments. In an SVM context (jobs may fault, so invalidations do not wait
/// for them) an invalidation that lands while a job runs posts every object's INVALIDATE
/// before waiting for any; a userptr-only context waits for its jobs instead (then the
/// device is idle and nothing is posted). Afterwards the device must see the CPU's last
/// data through every object.
pub fn userptr_storm(cx: &mut Cx) -> CaseResult {
    let obj_len = PAGES * PAGE;
    let len = OBJECTS * obj_len;
    let g = cx.gpu()?;
    let m = Mapping::anon_small(len, 3)?;
    let regions = (0..OBJECTS)
        .map(|i| g.bound_region(m.addr() + (i * obj_len) as u64, obj_len, false))
        .collect::<Result<Vec<Region<'_>>, _>>()
        .map_err(|e| Stop::Fail(format!("bind {OBJECTS} objects: {e}")))?;
    let all: Vec<&Region<'_>> = regions.iter().collect();
    let read_all = |rounds: usize| {
        let mut job = Job::new();
        for _ in 0..rounds {
            for r in &regions {
                job = job.hash(r.va(0), obj_len as u64);
            }
        }
        job
    };
    // Mirror every object once.
    g.submit(&all, read_all(1)).map_err(|e| Stop::Fail(format!("first job: {e}")))?;

    let f0 = Flushes::read(&g)?;
    let storm = STORM.min(Duration::from_secs(cx.opts.seconds.max(1)));
    let stop = AtomicBool::new(false);
    let jobs = AtomicU64::new(0);
    let mut last = 0u64;
    let errors = std::thread::scope(|s| {
        let dev = s.spawn(|| {
            let mut errors = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                if let Err(e) = g.submit(&all, read_all(4)) {
                    errors.push(e.to_string());
                }
                jobs.fetch_add(1, Ordering::Relaxed);
            }
            errors
        });
        let end = Instant::now() + storm;
        let mut x = 0x2545_f491_4f6c_dd1du64;
        while Instant::now() < end {
            last += 1;
            let _ = m.madvise(0, len, libc::MADV_DONTNEED);
            m.write_pattern(0, len, 300_000 + last);
            random_pause(&mut x);
        }
        stop.store(true, Ordering::Relaxed);
        dev.join().unwrap_or_else(|_| vec!["device thread panicked".into()])
    });
    let f = Flushes::read(&g)?.since(f0);
    let n = jobs.load(Ordering::Relaxed);
    cx.check(errors.is_empty(), format!("every job succeeded ({n} jobs, {last} storms; {:?})", errors.first()));
    let want = Expect::pattern(len, 300_000 + last);
    for (i, r) in regions.iter().enumerate() {
        let h = g.hash(r, 0, obj_len);
        let w = want.hash(i * obj_len, obj_len);
        match h {
            Ok(h) => cx.check(h == w, format!("object {i}: the device sees the CPU's last data ({h:#x}, model {w:#x})")),
            Err(e) => cx.check(false, format!("object {i}: last hash: {e}")),
        };
    }
    if cx.mode == Mode::Svm {
        // The jobs read every object back to back: storms land in running jobs, whose
        // invalidations must take the device round trip, through the first/second pass.
        cx.check(
            f.posted > 0 && f.posted <= f.sent,
            format!("INVALIDATEs were posted by first passes ({} posted of {} sent, {} elided)", f.posted, f.sent, f.elided),
        );
    } else {
        // A context that cannot fault waits for its jobs before it clears anything; the
        // device is idle by then, so no INVALIDATE is needed, let alone posted.
        cx.check_eq("a non-faulting context posts no INVALIDATE", f.posted, 0);
    }
    cx.note(format!("{n} jobs, {last} storms over {OBJECTS} objects: {} posted, {} sent, {} elided", f.posted, f.sent, f.elided));
    Ok(())
}
