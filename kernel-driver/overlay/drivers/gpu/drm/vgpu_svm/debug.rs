// SPDX-License-Identifier: GPL-2.0

//! Debug knobs that break the driver on purpose, to prove the device's checker fires.
//!
//! They live in debugfs (`/sys/kernel/debug/vgpu_svm/`) and can only be turned on when the
//! module was loaded with `unsafe_debug=1`; otherwise writing them fails with `EPERM`.
//!
//! - `skip_invalidate`: the notifier callback publishes the sequence but leaves the GPU
//!   entries in place, so the device keeps stale pages after COW, migration, ...
//! - `legacy_valid_flag`: mirror with the pre-2019 scheme instead of the sequence count: a
//!   per-context `valid` flag cleared at invalidate-range-start and set again at the end,
//!   checked under the lock. It misses invalidations that start and end between
//!   `hmm_range_fault` and taking the lock; `legacy_delay_us` widens that window.
//! - `mirror_secretmem`: mirror `memfd_secret(2)` memory like any other (the 7.2
//!   `hmm_range_fault` behaviour the driver guards against), so the device's direct-map
//!   check must flag every access to it.
//! - `fail_invalidate`: every device INVALIDATE fails as if the device had not answered: the
//!   driver must reset the device before it tells mm the invalidation is done.
//!
//! Injection points (they do not break the driver: they make races that the suite must
//! survive, and that a broken driver loses, happen every time instead of by luck):
//!
//! - `fault_to_lock_delay_us` (0..=1000000): populate sleeps this long after
//!   `hmm_range_fault` returned and before it takes the update lock, in every mode (the
//!   window in which an invalidation makes the snapshot stale; only `read_retry` notices).
//!   While a thread sleeps there, `delays_active` in `notifier_stats` counts it, so a test
//!   knows the window is open before it acts.
//! - `clear_to_invalidate_delay_us` (0..=1000000): a blockable notifier callback sleeps this
//!   long between clearing the GPU entries and sending the device INVALIDATE (never in the
//!   non-blockable path, which must not sleep).
//! - `locked_delay_us` (0..=1000000): populate sleeps this long right after it took the
//!   update lock, before it checks the sequence (counted in `delays_active` too). A
//!   non-blockable callback of that context meets a held lock: it must refuse the range
//!   (`try_lock` fails, mm is told `EAGAIN`) instead of sleeping on the lock.
//! - `force_ebusy` (0..=1000000): the next N snapshots of populate (each one or two
//!   `hmm_range_fault` calls) fail with `EBUSY` without walking, as if an invalidation had
//!   raced each; decremented per snapshot, so it reads 0 once they were used. Exercises the
//!   retry loop and its bound.
//! - `pair_notifiers` (0..=1000000): when non-zero, CTX_CONFIG of a non-SVM context also
//!   registers two classic start/end notifiers on the caller's mm (the 2019 "unpaired
//!   invalidate_range_start/end" scenario): A counts starts and ends, B has no end and fails
//!   every non-blockable start with `EAGAIN`; then it holds the caller that many
//!   microseconds (uninterruptibly, counted in `delays_active`), so that a test can SIGKILL
//!   the process and reap its still-alive mm with `process_mrelease(2)`. Their counters are
//!   in `notifier_stats`. SVM contexts are refused (`EINVAL`) while it is set: on an mm that
//!   also has an interval notifier, 7.2 leaks an interval-tree invalidation when a classic
//!   notifier fails a non-blocking start (`__mmu_notifier_invalidate_range_start` returns
//!   without `mn_itree_inv_end`), and every later `mmu_interval_read_begin` and
//!   `mmu_interval_notifier_remove` on that mm sleeps for ever (seen: the process hung in
//!   exit). A test must use it only on an mm without interval notifiers.
//!
//! `notifier_stats` (read-only, always present): device-wide counters of non-blockable
//! callbacks and their outcomes, of the injection points and of the pair notifiers.

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use kernel::{debugfs::Dir, prelude::*, uaccess::UserSliceReader};

static UNSAFE_DEBUG: AtomicBool = AtomicBool::new(false);
static SKIP_INVALIDATE: AtomicBool = AtomicBool::new(false);
static LEGACY_VALID_FLAG: AtomicBool = AtomicBool::new(false);
static LEGACY_DELAY_US: AtomicU32 = AtomicU32::new(0);
static MIRROR_SECRETMEM: AtomicBool = AtomicBool::new(false);
static FAIL_INVALIDATE: AtomicBool = AtomicBool::new(false);
static FAULT_TO_LOCK_DELAY_US: AtomicU32 = AtomicU32::new(0);
static CLEAR_TO_INVALIDATE_DELAY_US: AtomicU32 = AtomicU32::new(0);
static LOCKED_DELAY_US: AtomicU32 = AtomicU32::new(0);
static FORCE_EBUSY: AtomicU32 = AtomicU32::new(0);
static PAIR_NOTIFIERS: AtomicU32 = AtomicU32::new(0);

/// Device-wide counters shown in `notifier_stats` (atomics only: the non-blockable callback
/// path updates some of them and must neither sleep nor allocate).
pub(crate) struct Counters {
    /// Non-blockable notifier callbacks (OOM reaper, `process_mrelease`), over all contexts.
    pub(crate) nonblock_calls: AtomicU64,
    /// ... of which returned true (handled without sleeping).
    pub(crate) nonblock_handled: AtomicU64,
    /// ... of which returned false (mm is told -EAGAIN and backs off).
    pub(crate) nonblock_eagain: AtomicU64,
    /// Threads sleeping in the `fault_to_lock_delay_us` or `locked_delay_us` window right now.
    pub(crate) delays_active: AtomicU64,
    /// `fault_to_lock_delay_us` windows taken.
    pub(crate) fault_delays: AtomicU64,
    /// `clear_to_invalidate_delay_us` windows taken.
    pub(crate) inval_delays: AtomicU64,
    /// `locked_delay_us` windows taken.
    pub(crate) locked_delays: AtomicU64,
    /// `force_ebusy` failures injected.
    pub(crate) forced_ebusy: AtomicU64,
    /// Pair notifier A: starts, ends, and those of non-blockable ranges.
    pub(crate) pair_a_starts: AtomicU64,
    pub(crate) pair_a_ends: AtomicU64,
    pub(crate) pair_a_nonblock_starts: AtomicU64,
    pub(crate) pair_a_nonblock_ends: AtomicU64,
    /// A's end without an outstanding start (never saturates below zero).
    pub(crate) pair_a_unmatched_ends: AtomicU64,
    /// A's starts not ended yet.
    pub(crate) pair_a_open: AtomicU64,
    /// Pair notifier B: starts that succeeded (blockable) and that failed with EAGAIN.
    pub(crate) pair_b_starts: AtomicU64,
    pub(crate) pair_b_eagain: AtomicU64,
}

/// The device-wide counters.
pub(crate) static COUNTERS: Counters = Counters {
    nonblock_calls: AtomicU64::new(0),
    nonblock_handled: AtomicU64::new(0),
    nonblock_eagain: AtomicU64::new(0),
    delays_active: AtomicU64::new(0),
    fault_delays: AtomicU64::new(0),
    inval_delays: AtomicU64::new(0),
    locked_delays: AtomicU64::new(0),
    forced_ebusy: AtomicU64::new(0),
    pair_a_starts: AtomicU64::new(0),
    pair_a_ends: AtomicU64::new(0),
    pair_a_nonblock_starts: AtomicU64::new(0),
    pair_a_nonblock_ends: AtomicU64::new(0),
    pair_a_unmatched_ends: AtomicU64::new(0),
    pair_a_open: AtomicU64::new(0),
    pair_b_starts: AtomicU64::new(0),
    pair_b_eagain: AtomicU64::new(0),
};

fn show_counters(c: &&'static Counters, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
    let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
    writeln!(f, "nonblock-callbacks:\t{}", ld(&c.nonblock_calls))?;
    writeln!(f, "nonblock-handled:\t{}", ld(&c.nonblock_handled))?;
    writeln!(f, "nonblock-eagain:\t{}", ld(&c.nonblock_eagain))?;
    writeln!(f, "delays-active:\t{}", ld(&c.delays_active))?;
    writeln!(f, "fault-to-lock-delays:\t{}", ld(&c.fault_delays))?;
    writeln!(f, "clear-to-invalidate-delays:\t{}", ld(&c.inval_delays))?;
    writeln!(f, "locked-delays:\t{}", ld(&c.locked_delays))?;
    writeln!(f, "forced-ebusy:\t{}", ld(&c.forced_ebusy))?;
    writeln!(f, "pair-a-starts:\t{}", ld(&c.pair_a_starts))?;
    writeln!(f, "pair-a-ends:\t{}", ld(&c.pair_a_ends))?;
    writeln!(f, "pair-a-nonblock-starts:\t{}", ld(&c.pair_a_nonblock_starts))?;
    writeln!(f, "pair-a-nonblock-ends:\t{}", ld(&c.pair_a_nonblock_ends))?;
    writeln!(f, "pair-a-unmatched-ends:\t{}", ld(&c.pair_a_unmatched_ends))?;
    writeln!(f, "pair-a-open:\t{}", ld(&c.pair_a_open))?;
    writeln!(f, "pair-b-starts:\t{}", ld(&c.pair_b_starts))?;
    writeln!(f, "pair-b-eagain:\t{}", ld(&c.pair_b_eagain))
}

/// An injected window: sleeps `us` microseconds (0: returns at once), counted in `taken` if
/// given and in `delays_active` while it lasts, so that a test knows a thread is in it.
/// Uninterruptible and bounded by the knobs' limit (1 s); never from a non-blockable path.
pub(crate) fn hold(us: u32, taken: Option<&AtomicU64>) {
    if us == 0 {
        return;
    }
    if let Some(t) = taken {
        t.fetch_add(1, Ordering::Relaxed);
    }
    COUNTERS.delays_active.fetch_add(1, Ordering::Relaxed);
    kernel::time::delay::fsleep(kernel::time::Delta::from_micros(us.into()));
    COUNTERS.delays_active.fetch_sub(1, Ordering::Relaxed);
}

/// Called at module load with the `unsafe_debug` parameter.
pub(crate) fn set_unsafe_debug(on: bool) {
    UNSAFE_DEBUG.store(on, Ordering::Relaxed);
    if on {
        pr_warn!("vgpu_svm: unsafe_debug=1: debugfs knobs can break coherence on purpose\n");
    }
}

/// `skip_invalidate` is on.
pub(crate) fn skip_invalidate() -> bool {
    SKIP_INVALIDATE.load(Ordering::Relaxed)
}

/// `legacy_valid_flag` is on.
pub(crate) fn legacy_valid_flag() -> bool {
    LEGACY_VALID_FLAG.load(Ordering::Relaxed)
}

/// `mirror_secretmem` is on.
pub(crate) fn mirror_secretmem() -> bool {
    MIRROR_SECRETMEM.load(Ordering::Relaxed)
}

/// `fail_invalidate` is on.
pub(crate) fn fail_invalidate() -> bool {
    FAIL_INVALIDATE.load(Ordering::Relaxed)
}

/// The delay to inject between `hmm_range_fault` and taking the lock in legacy mode.
pub(crate) fn legacy_delay_us() -> u32 {
    LEGACY_DELAY_US.load(Ordering::Relaxed)
}

/// `fault_to_lock_delay_us`: the delay between `hmm_range_fault` and the update lock.
pub(crate) fn fault_to_lock_delay_us() -> u32 {
    FAULT_TO_LOCK_DELAY_US.load(Ordering::Relaxed)
}

/// `clear_to_invalidate_delay_us`: the delay between clearing and INVALIDATE (blockable only).
pub(crate) fn clear_to_invalidate_delay_us() -> u32 {
    CLEAR_TO_INVALIDATE_DELAY_US.load(Ordering::Relaxed)
}

/// `locked_delay_us`: the delay holding the update lock before the sequence check.
pub(crate) fn locked_delay_us() -> u32 {
    LOCKED_DELAY_US.load(Ordering::Relaxed)
}

/// Consumes one forced `EBUSY` (`force_ebusy`): true if this `hmm_range_fault` call must fail.
pub(crate) fn take_forced_ebusy() -> bool {
    let took = FORCE_EBUSY
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        .is_ok();
    if took {
        COUNTERS.forced_ebusy.fetch_add(1, Ordering::Relaxed);
    }
    took
}

/// `pair_notifiers`: 0 (off), or how long CTX_CONFIG holds the caller after registering them.
pub(crate) fn pair_notifiers() -> u32 {
    PAIR_NOTIFIERS.load(Ordering::Relaxed)
}

fn parse_u32(reader: &mut UserSliceReader) -> Result<u32> {
    if !UNSAFE_DEBUG.load(Ordering::Relaxed) {
        return Err(EPERM);
    }
    let mut buf = [0u8; 16];
    let n = reader.len().min(buf.len());
    reader.read_slice(&mut buf[..n])?;
    let s = core::str::from_utf8(&buf[..n]).map_err(|_| EINVAL)?.trim();
    s.parse().map_err(|_| EINVAL)
}

fn show_bool(flag: &&'static AtomicBool, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
    writeln!(f, "{}", u32::from(flag.load(Ordering::Relaxed)))
}

fn store_bool(flag: &&'static AtomicBool, r: &mut UserSliceReader) -> Result {
    let v = parse_u32(r)?;
    if v > 1 {
        return Err(EINVAL);
    }
    flag.store(v == 1, Ordering::Relaxed);
    pr_warn!("vgpu_svm: debug knob set to {v}\n");
    Ok(())
}

fn show_u32(v: &&'static AtomicU32, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
    writeln!(f, "{}", v.load(Ordering::Relaxed))
}

fn store_u32(v: &&'static AtomicU32, r: &mut UserSliceReader) -> Result {
    let n = parse_u32(r)?;
    if n > 1_000_000 {
        return Err(EINVAL);
    }
    v.store(n, Ordering::Relaxed);
    Ok(())
}

/// The debugfs directory and its knob files; removed when dropped.
#[pin_data]
pub(crate) struct Knobs {
    _dir: Dir,
    #[pin]
    _skip: kernel::debugfs::File<&'static AtomicBool>,
    #[pin]
    _legacy: kernel::debugfs::File<&'static AtomicBool>,
    #[pin]
    _delay: kernel::debugfs::File<&'static AtomicU32>,
    #[pin]
    _secretmem: kernel::debugfs::File<&'static AtomicBool>,
    #[pin]
    _fail_inval: kernel::debugfs::File<&'static AtomicBool>,
    #[pin]
    _fault_delay: kernel::debugfs::File<&'static AtomicU32>,
    #[pin]
    _inval_delay: kernel::debugfs::File<&'static AtomicU32>,
    #[pin]
    _locked_delay: kernel::debugfs::File<&'static AtomicU32>,
    #[pin]
    _force_ebusy: kernel::debugfs::File<&'static AtomicU32>,
    #[pin]
    _pair: kernel::debugfs::File<&'static AtomicU32>,
    #[pin]
    _counters: kernel::debugfs::File<&'static Counters>,
}

impl Knobs {
    /// The knob files in `dir` (the driver's debugfs directory).
    pub(crate) fn new(dir: Dir) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            _skip <- dir.read_write_callback_file(c"skip_invalidate", &SKIP_INVALIDATE, &show_bool, &store_bool),
            _legacy <- dir.read_write_callback_file(c"legacy_valid_flag", &LEGACY_VALID_FLAG, &show_bool, &store_bool),
            _delay <- dir.read_write_callback_file(c"legacy_delay_us", &LEGACY_DELAY_US, &show_u32, &store_u32),
            _secretmem <- dir.read_write_callback_file(c"mirror_secretmem", &MIRROR_SECRETMEM, &show_bool, &store_bool),
            _fail_inval <- dir.read_write_callback_file(c"fail_invalidate", &FAIL_INVALIDATE, &show_bool, &store_bool),
            _fault_delay <- dir.read_write_callback_file(c"fault_to_lock_delay_us", &FAULT_TO_LOCK_DELAY_US, &show_u32, &store_u32),
            _inval_delay <- dir.read_write_callback_file(c"clear_to_invalidate_delay_us", &CLEAR_TO_INVALIDATE_DELAY_US, &show_u32, &store_u32),
            _locked_delay <- dir.read_write_callback_file(c"locked_delay_us", &LOCKED_DELAY_US, &show_u32, &store_u32),
            _force_ebusy <- dir.read_write_callback_file(c"force_ebusy", &FORCE_EBUSY, &show_u32, &store_u32),
            _pair <- dir.read_write_callback_file(c"pair_notifiers", &PAIR_NOTIFIERS, &show_u32, &store_u32),
            _counters <- dir.read_callback_file(c"notifier_stats", &COUNTERS, &show_counters),
            _dir: dir,
        }? Error)
    }
}
