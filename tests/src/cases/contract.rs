//! Cases that make the mirror protocol's races happen every time, with the driver's
//! injection points (debugfs knobs, `unsafe_debug=1` only): the window between
//! `hmm_range_fault` and the update lock, forced `EBUSY`, the window between clearing the GPU
//! entries and the device INVALIDATE, the non-blocking reap (`process_mrelease(2)`) and the
//! 2019 "unpaired invalidate_range_start/end with non-blocking notifiers" scenario.
//!
//! A driver that breaks the sequence protocol must fail these in every run, not by luck: each
//! case opens the window, waits until the driver reports a thread in it
//! (`notifier_stats: delays-active`), and only then changes the memory.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use vgpu::reference::{fnv1a64, pattern};

use crate::child::{fork_child, Exit};
use vgpu::Job;

use crate::coherence::{CaseResult, Cx, Gpu, Mode, Step, Stop, USERPTR_VA_BASE};
use crate::mem::{Expect, Mapping, HPAGE, PAGE};
use crate::sysutil::{move_pages, numa_nodes, read_file, Knob, DEBUGFS};

fn knob(cx: &Cx, name: &str, value: &str) -> Result<Knob, Stop> {
    Knob::set(name, value, "0").or_else(|e| cx.skip(e))
}

/// `key:\tvalue` lines (fdinfo, debugfs) as a map of numbers (the first word of the value).
fn parse_keys(text: &str) -> HashMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            let n = v.split_whitespace().next()?.parse().ok()?;
            Some((k.trim().to_owned(), n))
        })
        .collect()
}

/// The driver's device-wide counters (`notifier_stats`).
#[derive(Debug, Clone, Default)]
struct Counters(HashMap<String, u64>);

impl Counters {
    fn read() -> Result<Counters, Stop> {
        let path = format!("{DEBUGFS}/notifier_stats");
        let t = read_file(&path).map_err(|e| Stop::Fail(format!("{path}: {e}")))?;
        Ok(Counters(parse_keys(&t)))
    }

    fn get(&self, k: &str) -> u64 {
        self.0.get(k).copied().unwrap_or(0)
    }

    /// `k` now minus `k` in `earlier`.
    fn delta(&self, earlier: &Counters, k: &str) -> u64 {
        self.get(k).wrapping_sub(earlier.get(k))
    }
}

/// Waits (polling every millisecond, at most `limit`) until a thread sleeps in an injected
/// window (`delays-active`: `fault_to_lock_delay_us`, `locked_delay_us`, `pair_notifiers`).
fn wait_in_window(limit: Duration) -> Result<(), String> {
    let end = Instant::now() + limit;
    loop {
        match Counters::read() {
            Ok(c) if c.get("delays-active") > 0 => return Ok(()),
            Ok(_) => {}
            Err(e) => return Err(format!("{e:?}")),
        }
        if Instant::now() >= end {
            return Err(format!("no thread entered the injected window within {limit:?}"));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The window: long enough for the other thread to act after it saw a thread in it (TCG).
const WINDOW_US: &str = "100000";

/// What the racing thread does to the memory while the mirroring thread is in the window.
#[derive(Clone, Copy, Debug)]
enum Race {
    /// MADV_DONTNEED, then the CPU writes new data (new frames).
    DontneedRewrite,
    /// move_pages to the other NUMA node (same data, new frames; the old ones are freed).
    Migrate,
    /// fork (write-protects every private page; the page is now shared with the child): the
    /// device's write must COW-break, not land in the child's page.
    ForkCow,
}

/// The fault-to-lock window: one thread mirrors (the device's first access of the memory:
/// an SVM fault, or a userptr validation) and sleeps between `hmm_range_fault` and the update
/// lock; another changes the memory inside that window. The mirror must see the change
/// (`read_retry` under the lock) and mirror again. A driver that commits the stale snapshot
/// gives the device freed or COW-shared frames: the checker reports violations and the
/// device's result is wrong, in every run (the change always lands in the window).
pub fn seq_window(cx: &mut Cx) -> CaseResult {
    let mut races = vec![Race::DontneedRewrite, Race::ForkCow];
    let nodes = numa_nodes();
    if nodes.len() > 1 {
        races.push(Race::Migrate);
    } else {
        cx.note("one NUMA node: the migration race is not run");
    }
    for race in races {
        seq_window_one(cx, race, &nodes)?;
    }
    Ok(())
}

fn seq_window_one(cx: &mut Cx, race: Race, nodes: &[u32]) -> CaseResult {
    const N: usize = 16;
    let len = N * PAGE;
    let g = cx.gpu()?;
    let m = Mapping::anon_small(len, 1)?;
    let r = g.map(&m)?;
    let retries0 = g.driver_delta().retries;
    let c0 = Counters::read()?;
    let k = knob(cx, "fault_to_lock_delay_us", WINDOW_US)?;
    let mut child = None;
    let (dev, window) = std::thread::scope(|s| {
        let t = s.spawn(|| match race {
            // The device writes: the snapshot is writable, the fork write-protects it.
            Race::ForkCow => g.write_pattern(&r, 0, len, 4).map(|()| 0),
            _ => g.hash(&r, 0, len),
        });
        let window = wait_in_window(Duration::from_secs(20));
        if window.is_ok() {
            match race {
                Race::DontneedRewrite => {
                    let _ = m.madvise(0, len, libc::MADV_DONTNEED);
                    m.write_pattern(0, len, 2);
                }
                Race::Migrate => {
                    let cur = move_pages(&m.page_addrs(), None).unwrap_or_default();
                    let to = if cur.first() == Some(&(nodes[0] as i32)) { nodes[1] } else { nodes[0] };
                    let _ = move_pages(&m.page_addrs(), Some(to));
                }
                Race::ForkCow => {
                    child = Some(fork_child(|side| {
                        side.signal();
                        side.wait()?;
                        // The child's copy is what the parent had at the fork: pattern 1.
                        let now = fnv1a64(&m.read(0, len));
                        if now != fnv1a64(&pattern(1, len)) {
                            return Err("the child's copy changed after the fork (a device write landed in it)".into());
                        }
                        Ok(())
                    }));
                }
            }
        }
        (t.join().unwrap_or_else(|_| Err(vgpu::Error::new("thread", libc::EIO))), window)
    });
    drop(k);
    let what = format!("{race:?}");
    if let Err(e) = window {
        cx.check(false, format!("{what}: {e}"));
        return Ok(());
    }
    let c1 = Counters::read()?;
    cx.check(
        c1.delta(&c0, "fault-to-lock-delays") >= 2,
        format!("{what}: the mirror went through the window again after the race (retried)"),
    );
    let retries = g.driver_delta().retries - retries0;
    cx.check(retries >= 1, format!("{what}: the stale snapshot was retried ({retries} retries)"));
    match race {
        Race::DontneedRewrite => {
            let want = fnv1a64(&pattern(2, len));
            cx.check_eq(format!("{what}: the device hashed the new data"), dev.ok(), Some(want));
        }
        Race::Migrate => {
            let want = fnv1a64(&pattern(1, len));
            cx.check_eq(format!("{what}: the device hashed the data"), dev.ok(), Some(want));
            cx.check_hash(format!("{what}: device hash after the migration"), &g, &r, 0, len, &Expect::pattern(len, 1));
        }
        Race::ForkCow => {
            cx.check_ok(format!("{what}: the device write"), dev);
            cx.check_mem(format!("{what}: the parent sees the device write"), &m, &Expect::pattern(len, 4));
            match child {
                Some(Ok(mut c)) => {
                    let sig = c.wait_signal();
                    cx.check_ok(format!("{what}: child started"), sig);
                    c.go();
                    cx.check_ok(format!("{what}: the child's copy is untouched"), c.join());
                }
                Some(Err(e)) => {
                    cx.check(false, format!("{what}: fork: {e}"));
                }
                None => {
                    cx.check(false, format!("{what}: no child"));
                }
            }
        }
    }
    Ok(())
}

/// Forced `EBUSY` from `hmm_range_fault` (`force_ebusy`): the populate loop retries (the
/// job succeeds and the driver counts the retries), and its bound holds: with more failures
/// than the bound allows, the job fails with `EBUSY` instead of spinning.
pub fn retry_ebusy(cx: &mut Cx) -> CaseResult {
    let g = cx.gpu()?;
    let len = 8 * PAGE;
    let m = Mapping::anon(len)?;
    m.write_pattern(0, len, 1);
    let r = g.map(&m)?;
    let c0 = Counters::read()?;
    let retries0 = g.driver_delta().retries;
    {
        let _k = knob(cx, "force_ebusy", "3")?;
        cx.check_hash("the device reads through three forced EBUSY", &g, &r, 0, len, &Expect::pattern(len, 1));
        let left = read_file(format!("{DEBUGFS}/force_ebusy")).unwrap_or_default();
        cx.check_eq("every forced EBUSY was used", left.trim(), "0");
    }
    let c1 = Counters::read()?;
    cx.check_eq("forced EBUSY counted", c1.delta(&c0, "forced-ebusy"), 3);
    let retries = g.driver_delta().retries - retries0;
    cx.check(retries >= 3, format!("the driver retried each forced EBUSY ({retries} retries)"));

    // More failures than the loop's bound (1000 restarts): EBUSY, after a bounded number.
    let m2 = Mapping::anon(len)?;
    m2.write_pattern(0, len, 2);
    let r2 = g.map(&m2)?;
    let c1 = Counters::read()?;
    let res = {
        let _k = knob(cx, "force_ebusy", "1000000")?;
        g.hash(&r2, 0, len)
    };
    let used = Counters::read()?.delta(&c1, "forced-ebusy");
    cx.check_errno("an endless EBUSY ends the job with EBUSY", res, &[libc::EBUSY]);
    cx.check(
        (1000..=100_000).contains(&used),
        format!("the loop gave up after a bounded number of EBUSY ({used})"),
    );
    cx.check_hash("the device works once EBUSY stops", &g, &r2, 0, len, &Expect::pattern(len, 2));
    Ok(())
}

/// The clear-to-invalidate window (`clear_to_invalidate_delay_us`): the notifier callback
/// sleeps between clearing the GPU entries and the device INVALIDATE while device jobs read
/// the memory and the CPU replaces it (MADV_DONTNEED and new data). The callback must not
/// return before the device confirmed the INVALIDATE: 0 violations, the device then sees
/// the CPU's data.
pub fn inval_window(cx: &mut Cx) -> CaseResult {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    const N: usize = 16;
    let len = N * PAGE;
    let g = cx.gpu()?;
    let m = Mapping::anon_small(len, 1)?;
    let r = g.map(&m)?;
    g.read(&r, 0, len).step("first device read")?;
    let c0 = Counters::read()?;
    let k = knob(cx, "clear_to_invalidate_delay_us", "20000")?;
    let stop = AtomicBool::new(false);
    let jobs = AtomicU64::new(0);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                let _ = g.hash(&r, 0, len);
                jobs.fetch_add(1, Ordering::Relaxed);
            }
        });
        for i in 0..10u64 {
            let _ = m.madvise(0, len, libc::MADV_DONTNEED);
            m.write_pattern(0, len, 10 + i);
            std::thread::sleep(Duration::from_millis(5));
        }
        stop.store(true, Ordering::Relaxed);
    });
    drop(k);
    let c1 = Counters::read()?;
    cx.check(
        c1.delta(&c0, "clear-to-invalidate-delays") >= 1,
        format!(
            "callbacks slept between clearing and INVALIDATE ({} times, {} device jobs)",
            c1.delta(&c0, "clear-to-invalidate-delays"),
            jobs.load(Ordering::Relaxed)
        ),
    );
    cx.check_hash("the device sees the CPU's last data", &g, &r, 0, len, &Expect::pattern(len, 19));
    Ok(())
}

fn pidfd_open(pid: libc::pid_t) -> std::io::Result<i32> {
    // SAFETY: pidfd_open(2) (434 on x86-64) takes a pid and flags; no memory is passed.
    let fd = unsafe { libc::syscall(434, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fd as i32)
}

/// `process_mrelease(2)` (448 on x86-64): reaps a dying process's memory now, with the OOM
/// reaper's non-blocking `zap_vma_for_reaping`. `Err(EAGAIN)` when a notifier refused.
fn process_mrelease(pidfd: i32) -> std::io::Result<()> {
    // SAFETY: process_mrelease takes a pidfd and flags; no memory is passed.
    let r = unsafe { libc::syscall(448, pidfd, 0) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The driver keys of the child's render-node file, from `/proc/<pid>/fdinfo`.
fn child_fdinfo(pid: libc::pid_t) -> Option<HashMap<String, u64>> {
    let dir = format!("/proc/{pid}/fdinfo");
    for e in std::fs::read_dir(&dir).ok()?.flatten() {
        if let Ok(t) = std::fs::read_to_string(e.path()) {
            if t.contains("vgpu_svm-ctx:") {
                return Some(parse_keys(&t));
            }
        }
    }
    None
}

/// What [`reap_in_window`] saw.
struct Reap {
    /// process_mrelease's result.
    result: std::io::Result<()>,
    /// Device-wide counters before and after it.
    before: Counters,
    after: Counters,
    /// The child's context's fdinfo keys before the kill and after the reap (None if they
    /// could not be read).
    fd_before: Option<HashMap<String, u64>>,
    fd_after: Option<HashMap<String, u64>>,
    exit: Result<Exit, String>,
}

/// Where the dying child's thread sleeps in the driver while it is reaped.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Hold {
    /// Servicing a fault, between `hmm_range_fault` and the update lock
    /// (`fault_to_lock_delay_us`): the lock is free.
    FaultToLock,
    /// Servicing a fault, holding the context's update lock (`locked_delay_us`).
    Locked,
    /// In CTX_CONFIG of a non-SVM context with the pair notifiers (`pair_notifiers`).
    Pair,
}

/// Runs the non-blocking reap over a dying child's mm, deterministically: a thread of the
/// child sleeps uninterruptibly in the driver (so its mm stays alive although the process is
/// dying) while the parent SIGKILLs it and calls `process_mrelease(2)` on it, which runs the
/// OOM reaper's non-blocking reap (`__oom_reap_task_mm` -> `zap_vma_for_reaping` ->
/// non-blockable notifier ranges).
///
/// [`Hold::FaultToLock`] and [`Hold::Locked`]: the child opens an SVM context, mirrors
/// `mirrored` pages (if any), then faults a fresh page from a device job, whose servicing
/// sleeps 1 s in the chosen window. [`Hold::Pair`]: the child's CTX_CONFIG of a non-SVM
/// context registers the pair notifiers and holds it 1 s (`pair_notifiers`); its mm has no
/// interval notifier (see `debug.rs` on why it must not).
fn reap_in_window(cx: &Cx, mirrored: usize, hold: Hold) -> Result<Reap, Stop> {
    let pair = hold == Hold::Pair;
    let mut pair_knob = if pair { Some(knob(cx, "pair_notifiers", "1000000")?) } else { None };
    let mut child = fork_child(move |side| {
        if pair {
            // Blocks in CTX_CONFIG until killed (or 1 s).
            let _g = Gpu::open(Mode::Userptr, None).map_err(|e| format!("open: {e}"))?;
            return Ok(());
        }
        let g = Gpu::open(Mode::Svm, None).map_err(|e| format!("open: {e}"))?;
        let m = Mapping::anon(16 * PAGE).map_err(|e| format!("mmap: {e}"))?;
        let r = g.map(&m).map_err(|e| format!("region: {e}"))?;
        if mirrored > 0 {
            // The last `mirrored` pages: the VMA's first entries stay empty, so a driver that
            // judges "nothing mirrored here" from the first entry of the range alone says
            // "handled" for a range with valid entries (seen: mutant
            // any-valid-checks-first-entry survived when the mirrored pages came first).
            let at = (16 - mirrored) * PAGE;
            g.write_pattern(&r, at, mirrored * PAGE, 1).map_err(|e| format!("device write: {e}"))?;
        }
        let x = Mapping::anon(4 * PAGE).map_err(|e| format!("mmap: {e}"))?;
        let rx = g.map(&x).map_err(|e| format!("region: {e}"))?;
        side.signal();
        side.wait()?;
        // Faults the first page of x; the servicing sleeps in the window until killed.
        let _ = g.write_pattern(&rx, 0, PAGE, 2);
        let _ = (m.leak(), x.leak());
        Ok(())
    })?;
    let mut k = None;
    if !pair {
        child.wait_signal()?;
    }
    let pidfd = pidfd_open(child.pid()).step("pidfd_open")?;
    let fd_before = if pair { None } else { child_fdinfo(child.pid()) };
    if !pair {
        let name = if hold == Hold::Locked { "locked_delay_us" } else { "fault_to_lock_delay_us" };
        k = Some(knob(cx, name, "1000000")?);
        child.go();
    }
    let window = wait_in_window(Duration::from_secs(20));
    // Only the child's context had to register the pair notifiers.
    pair_knob.take();
    let before = Counters::read()?;
    child.kill(libc::SIGKILL);
    let result = if window.is_ok() {
        process_mrelease(pidfd)
    } else {
        Err(std::io::Error::from_raw_os_error(libc::ETIMEDOUT))
    };
    let after = Counters::read()?;
    let fd_after = if pair { None } else { child_fdinfo(child.pid()) };
    let exit = child.wait_exit(Duration::from_secs(60));
    drop(k);
    // SAFETY: our own descriptor, closed once.
    unsafe { libc::close(pidfd) };
    if let Err(e) = window {
        return Err(Stop::Fail(e));
    }
    Ok(Reap { result, before, after, fd_before, fd_after, exit })
}

fn fd_delta(r: &Reap, k: &str) -> Option<u64> {
    Some(r.fd_after.as_ref()?.get(k)?.wrapping_sub(*r.fd_before.as_ref()?.get(k)?))
}

/// The non-blocking callback path, run deterministically with `process_mrelease(2)` on a
/// dying child (see [`reap_in_window`]), and its three outcomes, counted device-wide
/// (`notifier_stats`) and per context (the child's fdinfo):
/// - the child's context mirrors pages: the callback for their VMA cannot flush without
///   sleeping, so it must return false (process_mrelease fails with EAGAIN) and leave the
///   entries in place (`drm-resident-gpuvm` unchanged); the other VMAs are handled;
/// - nothing mirrored: every callback is handled without sleeping and the reap succeeds;
/// - nothing mirrored, but the child's thread holds the context's update lock
///   (`locked_delay_us`): the callback cannot even look without the lock, so it must refuse
///   (`try_lock` fails, EAGAIN) for every range, instead of waiting for it. A callback that
///   sleeps on the lock waits out the holder's second, and the callbacks after it find the
///   lock free and handle their ranges (seen: mutant nonblock-takes-lock, 26 of 27 handled;
///   it passed every other check).
pub fn nonblock_reap(cx: &mut Cx) -> CaseResult {
    for (mirrored, hold) in [(8usize, Hold::FaultToLock), (0, Hold::FaultToLock), (0, Hold::Locked)] {
        let what = match (mirrored, hold) {
            (0, Hold::Locked) => "nothing mirrored, lock held",
            (0, _) => "nothing mirrored",
            _ => "mirrored",
        };
        let r = reap_in_window(cx, mirrored, hold)?;
        let (d, h, e) = (
            r.after.delta(&r.before, "nonblock-callbacks"),
            r.after.delta(&r.before, "nonblock-handled"),
            r.after.delta(&r.before, "nonblock-eagain"),
        );
        cx.note(format!(
            "{what}: process_mrelease {:?}; non-blockable callbacks {d} (handled {h}, eagain {e}); \
             context: callbacks {:?} handled {:?} eagain {:?}, resident KiB {:?} -> {:?}",
            r.result.as_ref().map_err(|e| e.raw_os_error()),
            fd_delta(&r, "vgpu_svm-nonblock-callbacks"),
            fd_delta(&r, "vgpu_svm-nonblock-handled"),
            fd_delta(&r, "vgpu_svm-nonblock-eagain"),
            r.fd_before.as_ref().and_then(|f| f.get("drm-resident-gpuvm").copied()),
            r.fd_after.as_ref().and_then(|f| f.get("drm-resident-gpuvm").copied()),
        ));
        cx.check(d > 0, format!("{what}: the non-blockable callback path ran ({d} callbacks)"));
        cx.check_eq(format!("{what}: every callback is handled or refused"), h + e, d);
        cx.check_eq(format!("{what}: child killed"), r.exit.clone(), Ok(Exit::Signal(libc::SIGKILL)));
        let ctx_eagain = fd_delta(&r, "vgpu_svm-nonblock-eagain");
        let ctx_handled = fd_delta(&r, "vgpu_svm-nonblock-handled");
        cx.check(r.fd_after.is_some(), format!("{what}: the dying child's fdinfo was read after the reap"));
        let backed_off = r.result.as_ref().err().and_then(|e| e.raw_os_error()) == Some(libc::EAGAIN);
        if mirrored > 0 || hold == Hold::Locked {
            cx.check(backed_off, format!("{what}: process_mrelease backs off with EAGAIN ({:?})", r.result));
            cx.check(e > 0, format!("{what}: a callback returned false"));
            cx.check(ctx_eagain.is_some_and(|n| n > 0), format!("{what}: the context refused the range ({ctx_eagain:?})"));
        }
        if hold == Hold::Locked {
            // The holder sleeps 1 s; the reap takes milliseconds: every callback of the
            // context meets the lock held. One that waits for it instead returns after the
            // holder let go, and the callbacks after it find the lock free.
            cx.check_eq(format!("{what}: the context handled no range while its lock was held"), ctx_handled, Some(0));
        }
        if mirrored > 0 {
            cx.check(h > 0, format!("{what}: VMAs without mirrored pages are handled without sleeping"));
            let res = |f: &Option<HashMap<String, u64>>| f.as_ref().and_then(|f| f.get("drm-resident-gpuvm").copied());
            let (rb, ra) = (res(&r.fd_before), res(&r.fd_after));
            cx.check(
                ra.is_some() && rb == ra && ra != Some(0),
                format!("{what}: the refused callback left the mirror in place ({rb:?} -> {ra:?} KiB)"),
            );
        } else if hold == Hold::FaultToLock {
            cx.check(r.result.is_ok(), format!("{what}: process_mrelease reaps ({:?})", r.result));
            cx.check_eq(format!("{what}: no callback returned false"), e, 0);
            cx.check(ctx_handled.is_some_and(|n| n > 0), format!("{what}: the context handled ranges ({ctx_handled:?})"));
            cx.check_eq(format!("{what}: the context refused nothing"), ctx_eagain, Some(0));
        }
    }
    // The device still works (and the verdict needs accesses).
    let g = cx.gpu()?;
    let m = Mapping::anon(8 * PAGE)?;
    let r = g.map(&m)?;
    cx.check_ok("the device works after the reaps", g.write_pattern(&r, 0, m.len(), 3));
    cx.check_mem("the CPU sees it", &m, &Expect::pattern(m.len(), 3));
    Ok(())
}

/// The 2019 "unpaired invalidate_range_start/end with non-blocking notifiers" scenario. The
/// child's context registers two classic notifiers on its mm (`pair_notifiers`): A counts
/// starts and ends, B fails every non-blockable start with EAGAIN (and has no end). The
/// non-blocking reap (`process_mrelease`, see [`reap_in_window`]) then calls, for each VMA,
/// A's start (which succeeds: A is first in the mm's list) and B's, which fails, so the zap
/// of that VMA is abandoned.
///
/// Why this fails without the back-out: A's start returned 0, so A is entitled to an end;
/// the only end it can get is the one `mn_hlist_invalidate_range_start` calls when a start
/// failed, because `zap_vma_for_reaping` returns without calling
/// `mmu_notifier_invalidate_range_end` when the start failed. Without that back-out, A's
/// non-blockable ends stay below its non-blockable starts (one short per VMA B refused), and
/// A's open count never returns to where it was: both are checked (a notifier like A would
/// keep a range "in progress" for ever, and one like the legacy valid flag would never be set
/// again).
///
/// The child's mm has no interval notifier: with one, 7.2 leaks the interval tree's
/// invalidation when B fails (`__mmu_notifier_invalidate_range_start` returns B's error
/// without `mn_itree_inv_end`), and the child then hangs for ever in exit, in
/// `mmu_interval_notifier_remove` (seen with an SVM context; see `debug.rs`).
pub fn pair_start_end(cx: &mut Cx) -> CaseResult {
    let r = reap_in_window(cx, 0, Hold::Pair)?;
    let d = |k: &str| r.after.delta(&r.before, k);
    let (b_eagain, a_nb_starts, a_nb_ends) = (d("pair-b-eagain"), d("pair-a-nonblock-starts"), d("pair-a-nonblock-ends"));
    cx.note(format!(
        "process_mrelease {:?}; B refused {b_eagain}; A non-blockable starts {a_nb_starts}, ends {a_nb_ends}; \
         A open {} -> {}, unmatched ends {}",
        r.result.as_ref().map_err(|e| e.raw_os_error()),
        r.before.get("pair-a-open"),
        r.after.get("pair-a-open"),
        d("pair-a-unmatched-ends"),
    ));
    cx.check(
        r.result.as_ref().err().and_then(|e| e.raw_os_error()) == Some(libc::EAGAIN),
        format!("process_mrelease backs off with EAGAIN when B refuses ({:?})", r.result),
    );
    cx.check(b_eagain > 0, format!("B refused non-blockable ranges ({b_eagain})"));
    cx.check_eq(
        "no interval-notifier callback on the child's mm (none may be there, see debug.rs)",
        d("nonblock-callbacks"),
        0,
    );
    cx.check_eq("A's start ran for every range B refused", a_nb_starts, b_eagain);
    cx.check_eq("every non-blockable start of A was matched by an end (the back-out)", a_nb_ends, a_nb_starts);
    cx.check_eq("A saw no end without a start", d("pair-a-unmatched-ends"), 0);
    cx.check_eq("A's open ranges after the reap", r.after.get("pair-a-open"), r.before.get("pair-a-open"));
    cx.check_eq("child killed", r.exit.clone(), Ok(Exit::Signal(libc::SIGKILL)));
    // After the child is gone (exit_mmap: blockable starts and ends), A is balanced overall.
    let end = Counters::read()?;
    cx.check_eq(
        "A's starts and ends balance after the child's exit",
        end.delta(&r.before, "pair-a-starts"),
        end.delta(&r.before, "pair-a-ends"),
    );
    let g = cx.gpu()?;
    let m = Mapping::anon(8 * PAGE)?;
    let rr = g.map(&m)?;
    cx.check_ok("the device works after the reap", g.write_pattern(&rr, 0, m.len(), 3));
    cx.check_mem("the CPU sees it", &m, &Expect::pattern(m.len(), 3));
    Ok(())
}

/// What the CLONE_VM sibling of [`killed_submit_aborted`] runs: one SUBMIT, then it leaves.
struct SiblingSubmit {
    fd: i32,
    arg: vgpu::uapi::drm_vgpu_svm_submit,
}

/// The sibling's entry point. It shares the test process's memory, file table and TLS, so
/// it makes raw system calls only (no libc function that could touch thread-local state).
extern "C" fn sibling_submit(p: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `p` is the `SiblingSubmit` the parent keeps alive until this process is reaped.
    let s = unsafe { &mut *(p as *mut SiblingSubmit) };
    // SAFETY: SUBMIT with its argument type; the ops array lives in the shared memory. The
    // job writes only memory the parent reaches through raw pointers (mappings).
    unsafe {
        libc::syscall(libc::SYS_ioctl, s.fd, vgpu::uapi::DRM_IOCTL_VGPU_SVM_SUBMIT as libc::c_ulong, &mut s.arg as *mut _);
        libc::syscall(libc::SYS_exit, 0);
    }
    0
}

/// A SUBMIT ended by a fatal signal ABORTs its job on the device (uapi header: "-EINTR:
/// fatal signal; the job was aborted"), also when nothing else would: here the file and
/// the mm outlive the killed submitter, so no CTX_DESTROY and no exit_mmap cleans up after
/// it. The submitter is a CLONE_VM | CLONE_FILES sibling process of the test: it shares the
/// test's mm (so it owns the SVM context) and its file table (so the file stays open), but
/// a SIGKILL kills it alone. Its job faults at a fresh page, whose servicing sleeps in the
/// fault-to-lock window; the sibling is killed there; then the driver RESUMEs the job and
/// sees the signal. After the sibling is reaped, no job may complete on the device: the
/// job's remaining 64 MiB of writes would take milliseconds, and the case watches for 2 s.
/// (Mutant killed-job-not-aborted passed every other check: the file's release aborted the
/// job in every other case.)
pub fn killed_submit_aborted(cx: &mut Cx) -> CaseResult {
    use std::os::fd::AsRawFd;
    const B_LEN: usize = 16 << 20;
    let g = cx.gpu_in(Mode::Svm)?;
    let b = Mapping::anon(B_LEN)?;
    let rb = g.map(&b)?;
    g.write_pattern(&rb, 0, B_LEN, 1).step("mirror B (device write)")?;
    let x = Mapping::anon(PAGE)?;
    let rx = g.map(&x)?;
    let job = (0..4).fold(Job::new().write_pattern(rx.va(0), PAGE as u64, 2), |j, _| j.write_pattern(rb.va(0), B_LEN as u64, 3));
    let ops = job.raw_ops();
    let mut s = SiblingSubmit {
        fd: g.ctx().device().as_raw_fd(),
        arg: vgpu::uapi::drm_vgpu_svm_submit { ops: ops.as_ptr() as u64, nr_ops: ops.len() as u32, ..Default::default() },
    };
    let k = knob(cx, "fault_to_lock_delay_us", "1000000")?;
    let jobs = |g: &Gpu| g.ctx().stats().map(|s| s.jobs).map_err(|e| Stop::Fail(format!("STATS: {e}")));
    let before = jobs(&g)?;
    let mut stack = vec![0u8; 256 << 10];
    // SAFETY: the sibling runs `sibling_submit` on `stack` (its top, 16-byte aligned), with `s`;
    // both live until it is reaped below.
    let pid = unsafe {
        let top = (stack.as_mut_ptr().add(stack.len()) as usize & !15) as *mut libc::c_void;
        libc::clone(sibling_submit, top, libc::CLONE_VM | libc::CLONE_FILES | libc::SIGCHLD, &mut s as *mut _ as *mut libc::c_void)
    };
    if pid < 0 {
        return Err(Stop::Fail(format!("clone: {}", std::io::Error::last_os_error())));
    }
    let window = wait_in_window(Duration::from_secs(20));
    // SAFETY: our own child.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let mut status = 0;
    let t0 = Instant::now();
    let reaped = loop {
        // SAFETY: waits for our own child; `status` is a valid out pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            break true;
        }
        if t0.elapsed() > Duration::from_secs(60) {
            break false;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    drop(k);
    if !reaped {
        // The sibling still runs on our stack and memory: nothing may be freed.
        std::mem::forget(stack);
        std::mem::forget(s);
        std::mem::forget(ops);
        return Err(Stop::Fail("the killed submitter was not reaped within 60 s".into()));
    }
    drop(stack);
    window.map_err(Stop::Fail)?;
    cx.check(
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL,
        format!("the submitter was killed (wait status {status:#x})"),
    );
    let at_reap = jobs(&g)?;
    std::thread::sleep(Duration::from_secs(2));
    let later = jobs(&g)?;
    cx.note(format!("device jobs completed: {before} before the kill, {at_reap} when reaped, {later} 2 s later"));
    cx.check_eq("no job completed on the device after its SUBMIT was killed", later - before, 0);
    let done = b.read(0, B_LEN) == Expect::pattern(B_LEN, 3).bytes;
    cx.check(!done, "the killed job did not write all of B");
    cx.check_ok("the context still runs jobs", g.write_pattern(&rb, 0, B_LEN, 4));
    cx.check_mem("the CPU sees them", &b, &Expect::pattern(B_LEN, 4));
    Ok(())
}

/// One-page userptr objects over `m` (page `i` is object `i`), in `ctx`.
fn page_objects<'c>(ctx: &'c vgpu::Context, m: &Mapping, n: usize) -> Result<Vec<vgpu::UserptrBo<'c>>, Stop> {
    (0..n)
        .map(|i| ctx.userptr_raw((m.addr() as usize + i * PAGE) as *const u8, PAGE, false).step("USERPTR_CREATE"))
        .collect()
}

/// Checks that a BIND_ARRAY failed with `errno` and blamed entry `entry`.
fn check_batch(cx: &mut Cx, desc: &str, r: Result<(), vgpu::BatchError>, errno: i32, entry: Option<usize>) {
    match r {
        Err(e) => {
            cx.check(e.error.is(errno), format!("{desc}: errno {} (want {errno})", e.error));
            cx.check_eq(format!("{desc}: the entry blamed"), e.entry, entry);
        }
        Ok(()) => {
            cx.check(false, format!("{desc}: succeeded, want errno {errno}"));
        }
    }
}

/// A job that hashes `pages` pages at `va` and names `bos`: the CPU's bytes must come back.
fn hash_through(cx: &mut Cx, ctx: &vgpu::Context, desc: &str, bos: &[vgpu::UserptrBo<'_>], va: u64, m: &Mapping, off: usize) {
    let len = bos.len() * PAGE;
    let job = bos.iter().fold(Job::new().hash(va, len as u64), |j, bo| j.uses(bo));
    let want = fnv1a64(&m.read(off, len));
    match ctx.submit_readonly(&job) {
        Ok(r) => {
            cx.check_eq(desc, r.result, want);
        }
        Err(e) => {
            cx.check(false, format!("{desc}: {e}"));
        }
    }
}

/// DRM_IOCTL_VGPU_SVM_BIND_ARRAY binds a batch all at once (uapi header: "All or nothing"):
/// objects bound in one call, in the order the array gives (not by VA), are each read
/// through by a job; a second batch interleaved between the first one's bindings (every
/// other page) merges with them; and UNBIND of one of them alone still finds it.
pub fn bind_array_binds_all(cx: &mut Cx) -> CaseResult {
    const N: usize = 256;
    let g = cx.gpu_in(Mode::Userptr)?;
    let ctx = g.ctx();
    let m = Mapping::anon(2 * N * PAGE)?;
    for i in 0..2 * N {
        m.fill(i * PAGE, PAGE, (i * 7 + 1) as u8);
    }
    let bos = page_objects(ctx, &m, 2 * N)?;
    let va = USERPTR_VA_BASE + 320 * HPAGE as u64;
    // The even pages, given from the highest VA down.
    let even: Vec<(u32, u64)> = (0..N).rev().map(|k| (bos[2 * k].handle(), va + (2 * k * PAGE) as u64)).collect();
    cx.check_ok("BIND_ARRAY of 256 objects (highest VA first)", ctx.bind_array(&even, false));
    let odd: Vec<(u32, u64)> = (0..N).map(|k| (bos[2 * k + 1].handle(), va + ((2 * k + 1) * PAGE) as u64)).collect();
    cx.check_ok("BIND_ARRAY of 256 more between them", ctx.bind_array(&odd, false));
    // One job over all 512 pages would name 512 objects: fine (up to 1024).
    hash_through(cx, ctx, "a job hashing through all 512 bindings sees the CPU's bytes", &bos, va, &m, 0);
    cx.check_ok("UNBIND of one binding of the batch", ctx.unbind(va + (7 * PAGE) as u64));
    cx.check_errno("UNBIND of it again", ctx.unbind(va + (7 * PAGE) as u64), &[libc::ENOENT]);
    cx.check_ok("BIND of it again (its range is free)", ctx.bind_handle(bos[7].handle(), va + (7 * PAGE) as u64));
    hash_through(cx, ctx, "the job again", &bos, va, &m, 0);
    let all: Vec<(u32, u64)> = (0..2 * N).map(|i| (0, va + (i * PAGE) as u64)).collect();
    cx.check_ok("BIND_ARRAY unbind of all 512", ctx.bind_array(&all, true));
    let job = Job::new().hash(va, PAGE as u64).uses(&bos[0]);
    cx.check_errno("a job naming an unbound object", ctx.submit_readonly(&job).map(|_| ()), &[libc::EINVAL]);
    Ok(())
}

/// A batch that cannot be bound whole binds nothing (uapi header: "on any error no binding
/// is added or removed"), with the documented errno and the entry to blame in `failed`: an
/// overlap inside the batch (EBUSY, the later entry), an overlap with an existing binding
/// (EBUSY), the same object twice (EBUSY), an object already bound (EBUSY), a bad handle in
/// the middle (ENOENT), a bad gpu_va or pad (EINVAL); and count 0, above
/// VGPU_SVM_BIND_ARRAY_MAX, unknown flags, nonzero pad (EINVAL, no entry), an unreadable
/// array (EFAULT). After each, every object of the batch can still be bound alone at its VA
/// (so none was).
pub fn bind_array_all_or_nothing(cx: &mut Cx) -> CaseResult {
    const N: usize = 8;
    let g = cx.gpu_in(Mode::Userptr)?;
    let ctx = g.ctx();
    let m = Mapping::anon(N * PAGE)?;
    m.fill(0, N * PAGE, 0x3c);
    let bos = page_objects(ctx, &m, N)?;
    let va = USERPTR_VA_BASE + 352 * HPAGE as u64;
    let at = |i: usize| va + (i * PAGE) as u64;
    let good: Vec<(u32, u64)> = (0..N).map(|i| (bos[i].handle(), at(i))).collect();
    // An existing binding just past the batch's VAs.
    let other = ctx.userptr_raw(m.addr() as *const u8, PAGE, false).step("USERPTR_CREATE")?;
    cx.check_ok("BIND of an object past the batch", other.bind(at(N + 4)));

    let mut e = good.clone();
    e[5].1 = at(2);
    check_batch(cx, "entry 5 overlaps entry 2", ctx.bind_array(&e, false), libc::EBUSY, Some(5));
    let mut e = good.clone();
    e[3].1 = at(N + 4);
    check_batch(cx, "entry 3 overlaps an existing binding", ctx.bind_array(&e, false), libc::EBUSY, Some(3));
    let mut e = good.clone();
    e[6].0 = e[1].0;
    e[6].1 = at(N + 8);
    check_batch(cx, "entry 6 names entry 1's object again", ctx.bind_array(&e, false), libc::EBUSY, Some(6));
    let mut e = good.clone();
    e[4].0 = other.handle();
    check_batch(cx, "entry 4's object is bound already", ctx.bind_array(&e, false), libc::EBUSY, Some(4));
    let mut e = good.clone();
    e[4].0 = 0x7fff_fff0;
    check_batch(cx, "entry 4's handle names nothing", ctx.bind_array(&e, false), libc::ENOENT, Some(4));
    let mut e = good.clone();
    e[2].1 += 8;
    check_batch(cx, "entry 2's gpu_va is unaligned", ctx.bind_array(&e, false), libc::EINVAL, Some(2));
    let mut e = good.clone();
    e[7].1 = 1 << 48;
    check_batch(cx, "entry 7 reaches past 2^48", ctx.bind_array(&e, false), libc::EINVAL, Some(7));
    // Raw arguments.
    let mut raw: Vec<vgpu::uapi::drm_vgpu_svm_bind> =
        good.iter().map(|&(handle, gpu_va)| vgpu::uapi::drm_vgpu_svm_bind { handle, pad: 0, gpu_va }).collect();
    let arg = |raw: &[vgpu::uapi::drm_vgpu_svm_bind], count: u32| vgpu::uapi::drm_vgpu_svm_bind_array {
        binds: raw.as_ptr() as u64,
        count,
        ..Default::default()
    };
    raw[1].pad = 1;
    check_batch(cx, "entry 1 has a nonzero pad", ctx.bind_array_raw(&mut arg(&raw, N as u32)), libc::EINVAL, Some(1));
    raw[1].pad = 0;
    check_batch(cx, "count 0", ctx.bind_array_raw(&mut arg(&raw, 0)), libc::EINVAL, None);
    let max = vgpu::BIND_ARRAY_MAX as u32;
    check_batch(cx, "count above VGPU_SVM_BIND_ARRAY_MAX", ctx.bind_array_raw(&mut arg(&raw, max + 1)), libc::EINVAL, None);
    let mut a = arg(&raw, N as u32);
    a.flags = 2;
    check_batch(cx, "unknown flags", ctx.bind_array_raw(&mut a), libc::EINVAL, None);
    let mut a = arg(&raw, N as u32);
    a.pad = 1;
    check_batch(cx, "nonzero pad", ctx.bind_array_raw(&mut a), libc::EINVAL, None);
    let mut a = arg(&raw, N as u32);
    a.binds = 8;
    check_batch(cx, "an unreadable array", ctx.bind_array_raw(&mut a), libc::EFAULT, None);
    // Nothing of any of them was bound: each object binds alone at its VA.
    let alone: Vec<bool> = (0..N).map(|i| ctx.bind_handle(bos[i].handle(), at(i)).is_ok()).collect();
    cx.check_eq("after the refused batches every object binds alone at its VA", alone, vec![true; N]);
    // Unbind batches: a VA without a binding in the middle, or one named twice, unbinds none.
    let mut u: Vec<(u32, u64)> = (0..N).map(|i| (0, at(i))).collect();
    u[3].1 = at(N + 1);
    check_batch(cx, "unbind: entry 3 names no binding", ctx.bind_array(&u, true), libc::ENOENT, Some(3));
    let mut u: Vec<(u32, u64)> = (0..N).map(|i| (0, at(i))).collect();
    u[6].1 = at(2);
    check_batch(cx, "unbind: entry 6 names entry 2's binding again", ctx.bind_array(&u, true), libc::EINVAL, Some(6));
    let still: Vec<bool> = (0..N).map(|i| ctx.bind_handle(bos[i].handle(), at(i)).is_err_and(|e| e.is(libc::EBUSY))).collect();
    cx.check_eq("after the refused unbind batches every binding is still there (BIND: EBUSY)", still, vec![true; N]);
    let job = bos.iter().fold(Job::new().hash(va, (N * PAGE) as u64), |j, bo| j.uses(bo));
    let want = fnv1a64(&m.read(0, N * PAGE));
    cx.check_eq("and a job reads through them", ctx.submit_readonly(&job).map(|r| r.result).ok(), Some(want));
    let u: Vec<(u32, u64)> = (0..N).map(|i| (0, at(i))).collect();
    cx.check_ok("unbind batch of all of them", ctx.bind_array(&u, true).map_err(vgpu::Error::from));
    let again: Vec<bool> = (0..N).map(|i| ctx.bind_handle(bos[i].handle(), at(i)).is_ok()).collect();
    cx.check_eq("then each binds alone again", again, vec![true; N]);
    Ok(())
}

/// A batch of many bindings, then the file is closed with all of them in place (and a job
/// having used them): the release takes them down (no leak, no hang), and a new file works.
/// `bind_many` over more than VGPU_SVM_BIND_ARRAY_MAX objects (several calls) and
/// `close_many`, the library's batched paths, on a second file.
pub fn bind_array_then_close(cx: &mut Cx) -> CaseResult {
    const N: usize = 5000;
    let m = Mapping::anon(N * PAGE)?;
    for i in 0..N {
        m.fill(i * PAGE, PAGE, i as u8);
    }
    let va = USERPTR_VA_BASE + 384 * HPAGE as u64;
    {
        let g = cx.gpu_in(Mode::Userptr)?;
        let ctx = g.ctx();
        let bos = page_objects(ctx, &m, N)?;
        let binds: Vec<(&vgpu::UserptrBo<'_>, u64)> = bos.iter().enumerate().map(|(i, bo)| (bo, va + (i * PAGE) as u64)).collect();
        cx.check_ok("bind_many of 5000 objects (2 BIND_ARRAY calls)", ctx.bind_many(&binds));
        hash_through(cx, ctx, "a job through the first 1000 of them", &bos[..1000], va, &m, 0);
        hash_through(cx, ctx, "a job through the last 1000", &bos[N - 1000..], va + ((N - 1000) * PAGE) as u64, &m, (N - 1000) * PAGE);
        cx.check_ok("close_many of all 5000 (one unbind batch per 4096, then GEM_CLOSE each)", ctx.close_many(bos));
        let again = ctx.userptr_raw(m.addr() as *const u8, PAGE, false).step("USERPTR_CREATE")?;
        cx.check_ok("their VAs are free again", again.bind(va));
    }
    {
        let g = cx.gpu_in(Mode::Userptr)?;
        let ctx = g.ctx();
        let bos = page_objects(ctx, &m, 4096)?;
        let entries: Vec<(u32, u64)> = bos.iter().enumerate().map(|(i, bo)| (bo.handle(), va + (i * PAGE) as u64)).collect();
        cx.check_ok("BIND_ARRAY of 4096 objects", ctx.bind_array(&entries, false).map_err(vgpu::Error::from));
        hash_through(cx, ctx, "a job through 1024 of them", &bos[2048..3072], va + (2048 * PAGE) as u64, &m, 2048 * PAGE);
        // The bindings were made behind the objects' backs: forget the handles, close the file.
        for bo in bos {
            std::mem::forget(bo);
        }
    }
    let g = cx.gpu_in(Mode::Userptr)?;
    let bo = g.ctx().userptr_raw(m.addr() as *const u8, PAGE, false).step("USERPTR_CREATE")?;
    cx.check_ok("a new file binds at the same VA", bo.bind(va));
    hash_through(cx, g.ctx(), "and reads through it", std::slice::from_ref(&bo), va, &m, 0);
    Ok(())
}
