// SPDX-License-Identifier: GPL-2.0

//! A GPU context: one per open DRM file, bound to the opener's mm. It owns the GPU page table
//! and the update lock, and implements the invalidation half of the mirror protocol.
//!
//! Lock order: `File::state` (per file, may allocate) -> `update` (the notifier lock: no
//! allocation, no `read_begin`, no notifier insertion or removal under it).
//!
//! Jobs run without the state lock: SUBMIT holds it only to take its snapshot (job id,
//! bindings, SVM notifier) and to count the job in [`Running`]; BIND, UNBIND, BIND_ARRAY
//! wait, holding the state lock but not the update lock, until that count is 0
//! ([`Running::wait_idle`]), so no job sees the bindings change. `Running`'s wait queue
//! lock is the innermost of all (the kernel's, taken only inside wake-up and wait calls).

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use kernel::{
    bindings,
    mm::Mm,
    mmu_notifier::{event, CurSeq, IntervalNotifier, IntervalNotifierOps, Range, RangeNotifier, RangeNotifierOps},
    new_mutex,
    prelude::*,
    sync::{aref::ARef, lock::mutex::MutexBackend, lock::Guard, Arc, Mutex},
    types::Opaque,
    uapi,
};

use crate::{
    debug,
    gpu::{ControlQueue, DestroyMsg, InvalidateMsg},
    pagetable::{Cleared, PageTable, UpdateToken, LARGE_PAGE, PAGE, VA_LIMIT},
};

/// Number of `enum mmu_notifier_event` slots counted.
pub(crate) const EVENTS: usize = 16;

/// Notifier callbacks by event over every context of the module (a context's RELEASE happens
/// when its process is gone, so only these counters can show it).
pub(crate) static DEVICE_EVENTS: [AtomicU64; EVENTS] = [const { AtomicU64::new(0) }; EVENTS];

/// The driver's counters for a context (reported by the STATS ioctl and debugfs).
#[derive(Default)]
pub(crate) struct Stats {
    pub(crate) faults_serviced: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) invalidations: AtomicU64,
    pub(crate) pages_mapped: AtomicU64,
    /// GPU entries cleared by invalidations (4 KiB units).
    pub(crate) pages_cleared: AtomicU64,
    /// Time jobs of this context ran on the device, in ns.
    pub(crate) busy_ns: AtomicU64,
    /// The notifier sequence of the last commit (for debugfs).
    pub(crate) last_seq: AtomicU64,
    /// Non-blockable callbacks (OOM reaper, `process_mrelease`) on this context's notifiers.
    pub(crate) nonblock_calls: AtomicU64,
    /// ... that returned true: handled without sleeping (nothing valid in the range).
    pub(crate) nonblock_handled: AtomicU64,
    /// ... that returned false: mm got -EAGAIN and backed off (contended lock, mirrored
    /// entries whose flush would sleep, or jobs to wait for).
    pub(crate) nonblock_eagain: AtomicU64,
    /// Device flushes done by the idle fast path: a new TLB generation instead of an
    /// INVALIDATE round trip (no job of the context on the device, see [`Shared::flush`]).
    pub(crate) flushes_elided: AtomicU64,
    /// Device flushes sent as INVALIDATE (a job of the context was on the device, or the
    /// device has no TLB generation).
    pub(crate) flushes_sent: AtomicU64,
    /// ... of which posted by a notifier's first pass and waited for in its second (so one
    /// munmap over many userptr objects waits for their INVALIDATEs together).
    pub(crate) flushes_posted: AtomicU64,
    /// GPU entries written by `VGPU_SVM_SUBMIT_PREFAULT` before jobs started (4 KiB units).
    pub(crate) prefaulted_pages: AtomicU64,
    pub(crate) events: [AtomicU64; EVENTS],
}

/// `enum mmu_notifier_event` names, by value.
pub(crate) const EVENT_NAMES: [&str; 8] = [
    "unmap",
    "clear",
    "protection_vma",
    "protection_page",
    "soft_dirty",
    "release",
    "migrate",
    "exclusive",
];

/// The INVALIDATE reason (`enum vgpu_svm_inval_reason`) for a notifier callback's event.
fn event_reason(ev: u32) -> u32 {
    match ev {
        event::UNMAP => uapi::vgpu_svm_inval_reason_VGPU_SVM_INVAL_UNMAP,
        event::CLEAR => uapi::vgpu_svm_inval_reason_VGPU_SVM_INVAL_CLEAR,
        event::PROTECTION_VMA => uapi::vgpu_svm_inval_reason_VGPU_SVM_INVAL_PROTECTION_VMA,
        event::PROTECTION_PAGE => uapi::vgpu_svm_inval_reason_VGPU_SVM_INVAL_PROTECTION_PAGE,
        event::SOFT_DIRTY => uapi::vgpu_svm_inval_reason_VGPU_SVM_INVAL_SOFT_DIRTY,
        event::RELEASE => uapi::vgpu_svm_inval_reason_VGPU_SVM_INVAL_RELEASE,
        event::MIGRATE => uapi::vgpu_svm_inval_reason_VGPU_SVM_INVAL_MIGRATE,
        event::EXCLUSIVE => uapi::vgpu_svm_inval_reason_VGPU_SVM_INVAL_EXCLUSIVE,
        _ => uapi::vgpu_svm_inval_reason_VGPU_SVM_INVAL_UNKNOWN,
    }
}

/// What lives under the update lock.
pub(crate) struct Locked {
    /// JOBs and RESUMEs of this context the device may be working on (sent, or about to be,
    /// and neither answered nor confirmed ABORTed nor ended by a device reset): incremented
    /// here before one is sent, decremented once its answer says no access of it is in
    /// flight (done, failed, or stopped at a fault). The invalidation of a userptr range of a
    /// non-faulting context waits for them (amdgpu's semantic for contexts that cannot
    /// fault); while it is 0, a flush needs no device round trip ([`Shared::flush`]).
    pub(crate) jobs_in_flight: u32,
    /// The device confirmed CTX_DESTROY (set under this lock, in the file's release): it
    /// holds no translation of this context and runs none of its jobs, so an invalidation
    /// needs no device round trip (an INVALIDATE would fail, and make the driver reset the
    /// device, for a context the device no longer knows).
    pub(crate) destroyed: bool,
    /// INVALIDATEs posted by a first pass and not yet collected by its second pass
    /// ([`Shared::collect_flush`]): CTX_DESTROY waits until none is left, or the device could
    /// answer one for a context it no longer knows (and the driver would reset it).
    pub(crate) posted_flushes: u32,
}

/// What [`Shared::clear_then_flush`] did.
enum Flushed {
    /// Cleared, and flushed on the device if it had to be.
    Done(Cleared),
    /// Cleared, and an INVALIDATE posted: its answer is still to be collected.
    Posted,
}

/// What [`Shared::invalidate`] did.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Invalidated {
    /// All done (what an `invalidate` callback returns: `false` for a non-blockable range
    /// that would have to sleep).
    Done(bool),
    /// Done except the device's answer to an INVALIDATE posted with the caller's message:
    /// the caller's second pass collects it ([`Shared::collect_flush`]).
    Posted,
}

/// The jobs of a context that are running (SUBMITs past their snapshot, not yet returned),
/// and a wait queue for the moment there are none. A job counts itself under the file's
/// state lock ([`Running::start`]) and uncounts itself, with no lock held, when its
/// [`RunningJob`] drops (every path out of SUBMIT after the snapshot, errors included).
/// Whoever must not run next to a job (a change of the bindings) holds the state lock, so
/// that no job starts, and waits for the count to reach 0 ([`Running::wait_idle`]).
///
/// Not [`kernel::sync::CondVar`]: its timed wait is interruptible by any signal, and these
/// waits end only on a fatal one (EINTR stays the header's "fatal signal"), as the driver's
/// other waits (`Wait::Killable`); so the wait queue is used directly, with `TASK_KILLABLE`.
#[pin_data]
pub(crate) struct Running {
    count: AtomicU32,
    #[pin]
    idle: Opaque<bindings::wait_queue_head>,
}

// SAFETY: `count` is atomic, and the kernel's wait queue is made to be used from any thread
// (its own spinlock guards it); `Running` is pinned and never moved once initialized, and
// holds nothing tied to the thread that made it.
unsafe impl Send for Running {}
// SAFETY: As above: every use through `&Running` is an atomic or a wait-queue call, all
// thread safe.
unsafe impl Sync for Running {}

impl Running {
    fn new() -> impl PinInit<Self> {
        pin_init!(Self {
            count: AtomicU32::new(0),
            idle <- Opaque::ffi_init(|slot: *mut bindings::wait_queue_head| {
                // SAFETY: `slot` is valid for writing an uninitialized wait queue head; the
                // name and class key are static.
                unsafe {
                    bindings::__init_waitqueue_head(
                        slot,
                        c"vgpu_svm_running".as_char_ptr(),
                        kernel::static_lock_class!().as_ptr(),
                    )
                };
            }),
        })
    }

    /// Jobs running now.
    pub(crate) fn count(&self) -> u32 {
        self.count.load(Ordering::Acquire)
    }

    /// Counts a job of `shared`'s context as running until the returned guard drops. Called
    /// under the file's state lock (so that a [`Self::wait_idle`] holding it sees no new job).
    pub(crate) fn start(shared: &Arc<Shared>) -> RunningJob {
        // At most one per SUBMIT in progress on the file: far below u32::MAX.
        shared.running.count.fetch_add(1, Ordering::AcqRel);
        RunningJob { shared: shared.clone() }
    }

    /// Waits until no job is running, at most `timeout_ms` (`ETIMEDOUT`), or until a fatal
    /// signal (`EINTR`). The caller holds the file's state lock (no job starts meanwhile) and
    /// not the update lock (a running job takes it to finish).
    pub(crate) fn wait_idle(&self, timeout_ms: u32) -> Result {
        if self.count() == 0 {
            return Ok(());
        }
        let mut left = kernel::time::msecs_to_jiffies(timeout_ms);
        let wait = Opaque::<bindings::wait_queue_entry>::uninit();
        // SAFETY: `wait` points to valid memory, and stays where it is until `finish_wait`.
        unsafe { bindings::init_wait(wait.get()) };
        let r = loop {
            // SAFETY: both point to valid memory; `wait` is removed from the queue by
            // `finish_wait` below, before it goes out of scope. Queued and in TASK_KILLABLE
            // before the count is read: a job that drops it to 0 after this read wakes us
            // (`RunningJob::drop` decrements, then wakes the queue).
            unsafe { bindings::prepare_to_wait(self.idle.get(), wait.get(), bindings::TASK_KILLABLE as i32) };
            if self.count() == 0 {
                break Ok(());
            }
            if kernel::hmm::fatal_signal_pending() {
                break Err(EINTR);
            }
            if left == 0 {
                break Err(ETIMEDOUT);
            }
            let ticks = kernel::ffi::c_long::try_from(left).unwrap_or(kernel::ffi::c_long::MAX);
            // SAFETY: No preconditions (sleeps at most `ticks` jiffies, in the state set
            // above; a fatal signal or a wake-up ends it early).
            let rest = unsafe { bindings::schedule_timeout(ticks) };
            left = kernel::time::Jiffies::try_from(rest).unwrap_or(0);
        };
        // SAFETY: both point to valid memory; `wait` was prepared on this queue.
        unsafe { bindings::finish_wait(self.idle.get(), wait.get()) };
        r
    }
}

/// A running job (see [`Running`]): uncounts it and wakes the waiters when dropped.
pub(crate) struct RunningJob {
    shared: Arc<Shared>,
}

impl Drop for RunningJob {
    fn drop(&mut self) {
        let r = &self.shared.running;
        if r.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            // SAFETY: `idle` is an initialized wait queue head, alive as long as `shared`.
            unsafe { bindings::__wake_up(r.idle.get(), bindings::TASK_NORMAL, 0, core::ptr::null_mut()) };
        }
    }
}

/// The part of a context that notifier callbacks reach (shared with them through an `Arc`).
#[pin_data]
pub(crate) struct Shared {
    pub(crate) ctx_id: u32,
    /// The update lock (the "notifier lock"): serializes invalidation with committing GPU
    /// entries.
    #[pin]
    pub(crate) update: Mutex<Locked>,
    pub(crate) pt: PageTable,
    pub(crate) ctrl: ControlQueue,
    pub(crate) inval: InvalidateMsg,
    /// The context's CTX_DESTROY, preallocated (sent under the update lock).
    pub(crate) destroy: DestroyMsg,
    /// The context can take device faults (SVM).
    pub(crate) svm: AtomicBool,
    /// The device failed an invalidation: nothing may run on this context any more.
    pub(crate) broken: AtomicBool,
    /// The context's TLB generation (protocol 0.5): a u64 in guest memory whose physical
    /// address SET_AS gave the device, which loads it at the start of every JOB and RESUME
    /// and drops the context's TLB when it changed. Written only under the update lock.
    pub(crate) tlb_gen: KBox<AtomicU64>,
    /// SET_AS told the device where [`Self::tlb_gen`] is (a device of protocol 0.5 or later):
    /// the idle fast path of [`Self::flush`] is on.
    pub(crate) tlb_gen_on: AtomicBool,
    /// Debug only (`legacy_valid_flag`): the pre-2019 per-range valid flag.
    pub(crate) legacy_valid: AtomicBool,
    /// The opener's mm (grabbed, not pinned: `mmget_not_zero` before use).
    pub(crate) mm: ARef<Mm>,
    pub(crate) stats: Stats,
    /// The device-wide event counters ([`DEVICE_EVENTS`]).
    pub(crate) device_events: &'static [AtomicU64; EVENTS],
    /// The context's jobs running outside the file's state lock.
    #[pin]
    pub(crate) running: Running,
}

impl Shared {
    pub(crate) fn new(
        id: u32,
        ctrl: ControlQueue,
        mm: ARef<Mm>,
        device_events: &'static [AtomicU64; EVENTS],
    ) -> Result<Arc<Self>> {
        Arc::pin_init(
            try_pin_init!(Self {
                ctx_id: id,
                update <- new_mutex!(Locked { jobs_in_flight: 0, destroyed: false, posted_flushes: 0 }),
                pt: PageTable::new()?,
                ctrl,
                inval: InvalidateMsg::new(id)?,
                destroy: DestroyMsg::new(id)?,
                svm: AtomicBool::new(false),
                broken: AtomicBool::new(false),
                tlb_gen: KBox::new(AtomicU64::new(0), GFP_KERNEL)?,
                tlb_gen_on: AtomicBool::new(false),
                legacy_valid: AtomicBool::new(true),
                mm,
                stats: Stats::default(),
                device_events,
                running <- Running::new(),
            }),
            GFP_KERNEL,
        )
    }

    /// Guest-physical address of the mm's top-level page table, its level count, and the
    /// virtual address where the kernel's direct map starts (`page_offset_base`), for the
    /// device's checker.
    pub(crate) fn cpu_page_table(&self) -> (u64, u32, u64) {
        // SAFETY: `mm` is grabbed, so `pgd` stays allocated.
        let pgd = unsafe { (*self.mm.as_raw()).__bindgen_anon_1.pgd };
        // SAFETY: `pgd` is a page-allocator page, in the direct map: it converts to physical.
        let phys = unsafe { bindings::virt_to_phys(pgd.cast()) };
        // SAFETY: No preconditions.
        let levels = if unsafe { bindings::pgtable_l5_enabled() } { 5 } else { 4 };
        // The direct map is linear: its base is any direct-map address minus its physical
        // address (this holds with KASLR's randomized base too).
        let direct_map_base = (pgd as u64).wrapping_sub(phys);
        (phys, levels, direct_map_base)
    }

    /// Guest-physical address of the TLB generation, for SET_AS (8-byte aligned: kmalloc
    /// memory is aligned to at least 8 bytes, so the u64 never straddles a page).
    pub(crate) fn tlb_gen_phys(&self) -> u64 {
        let p: *const AtomicU64 = &*self.tlb_gen;
        // SAFETY: `tlb_gen` is a kmalloc allocation, in the direct map: it converts to
        // physical. It lives as long as `self`, whose page table the device may walk: the
        // same rules keep both allocated while the device may read them (`Ctx::drop`).
        unsafe { bindings::virt_to_phys(p.cast_mut().cast()) }
    }

    /// The invalidation protocol, for a notifier whose CPU range `[cpu_start, cpu_end)` is
    /// mirrored at GPU VA `gpu_start` (SVM: the same address). Called from the notifier
    /// callbacks. Allocates nothing.
    ///
    /// With `post` (a first pass that holds its notifier's finish pass, whose message this
    /// is), an INVALIDATE the device must answer is only posted, with that message, and
    /// [`Invalidated::Posted`] returned: the second pass waits for the answer
    /// ([`Self::collect_flush`]). Everything else, including every error path, is done here.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn invalidate<T: IntervalNotifierOps<Locked = Locked>>(
        &self,
        n: &IntervalNotifier<T>,
        range: &Range<'_>,
        cur_seq: CurSeq,
        map: impl Fn(u64, u64) -> Option<(u64, u64)>,
        mark_stale: impl Fn(u64, u64),
        waits_for_jobs: bool,
        post: Option<&InvalidateMsg>,
    ) -> Invalidated {
        let ev = range.event() as usize;
        if let Some(c) = self.stats.events.get(ev) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(c) = self.device_events.get(ev) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        let blockable = range.blockable();
        let out = self.invalidate_locked(n, range, cur_seq, map, mark_stale, waits_for_jobs, blockable, post);
        if !blockable {
            let done = out == Invalidated::Done(true);
            // Atomics only: this path must neither sleep nor allocate.
            let d = &debug::COUNTERS;
            self.stats.nonblock_calls.fetch_add(1, Ordering::Relaxed);
            d.nonblock_calls.fetch_add(1, Ordering::Relaxed);
            let (mine, all) = if done {
                (&self.stats.nonblock_handled, &d.nonblock_handled)
            } else {
                (&self.stats.nonblock_eagain, &d.nonblock_eagain)
            };
            mine.fetch_add(1, Ordering::Relaxed);
            all.fetch_add(1, Ordering::Relaxed);
        }
        out
    }

    /// [`Self::invalidate`] after the counting: the protocol itself.
    #[allow(clippy::too_many_arguments)]
    fn invalidate_locked<T: IntervalNotifierOps<Locked = Locked>>(
        &self,
        n: &IntervalNotifier<T>,
        range: &Range<'_>,
        cur_seq: CurSeq,
        map: impl Fn(u64, u64) -> Option<(u64, u64)>,
        mark_stale: impl Fn(u64, u64),
        waits_for_jobs: bool,
        blockable: bool,
        post: Option<&InvalidateMsg>,
    ) -> Invalidated {
        use Invalidated::Done;
        let mut guard = if blockable {
            self.update.lock()
        } else {
            match self.update.try_lock() {
                Some(g) => g,
                None => return Done(false),
            }
        };
        // Always, under the lock: any update in progress must retry.
        n.set_seq(&guard, cur_seq);
        if debug::skip_invalidate() {
            return Done(true);
        }
        // Userptr objects remember which of their pages need mirroring again (under the lock,
        // so a commit that clears the marks is ordered against it).
        mark_stale(range.start() as u64, range.end() as u64);
        let Some((gs, ge)) = map(range.start() as u64, range.end() as u64) else {
            return Done(true);
        };
        let ge = ge.min(VA_LIMIT);
        if gs >= ge {
            return Done(true);
        }
        // A context that cannot fault: wait for its jobs before the pages go away.
        if waits_for_jobs && guard.jobs_in_flight > 0 {
            if !blockable {
                return Done(false);
            }
            guard = self.relock_until(guard, crate::gpu::job_timeout_ms(), |l| l.jobs_in_flight == 0);
        }
        if !blockable && !self.pt.any_valid(gs, ge) {
            // Nothing mirrored here, nothing cached by the device: no need to sleep.
            return Done(true);
        }
        if !blockable {
            // Clearing is fine, but the device round trip would sleep.
            return Done(false);
        }
        // On failure the device was reset (it touches no guest memory any more): only then may
        // mm go on and free the pages.
        let reason = event_reason(range.event());
        let flushed = self.clear_then_flush(&guard, gs, ge, reason, debug::clear_to_invalidate_delay_us(), post);
        let posted = matches!(flushed, Ok(Flushed::Posted));
        if posted {
            // Counted before the unlock: CTX_DESTROY, under this lock, sees it.
            guard.posted_flushes += 1;
        }
        drop(guard);
        if posted {
            Invalidated::Posted
        } else {
            Done(true)
        }
    }

    /// The second pass of an invalidation that returned [`Invalidated::Posted`]: waits for the
    /// device's answer to the INVALIDATE posted with `msg`. If the device does not confirm, it
    /// is reset before this returns (then it uses no guest memory). Not under the update lock
    /// (takes it briefly); allocates nothing.
    pub(crate) fn collect_flush(&self, msg: &InvalidateMsg) {
        if let Err(e) = msg.collect(&self.ctrl) {
            self.flush_failed(e);
        }
        self.update.lock().posted_flushes -= 1;
    }

    /// Waits, polling every millisecond with the update lock released, until `done` holds
    /// under it or `max_ms` polls have passed (then the caller goes on regardless: the wait is
    /// bounded, and uninterruptible, as notifier callbacks and teardown must be). Returns the
    /// lock held again. Allocates nothing.
    pub(crate) fn relock_until<'a>(
        &'a self,
        mut guard: Guard<'a, Locked, MutexBackend>,
        max_ms: u32,
        done: impl Fn(&Locked) -> bool,
    ) -> Guard<'a, Locked, MutexBackend> {
        let mut waited_ms = 0u32;
        while !done(&guard) && waited_ms < max_ms {
            drop(guard);
            kernel::time::delay::fsleep(kernel::time::Delta::from_millis(1));
            waited_ms += 1;
            guard = self.update.lock();
        }
        guard
    }

    /// Proof for the page table that `guard` holds this context's update lock (`EINVAL`, a
    /// driver bug, for any other lock).
    pub(crate) fn token<'a>(&self, guard: &'a Guard<'_, Locked, MutexBackend>) -> Result<UpdateToken<'a>> {
        UpdateToken::checked(&self.update, guard).ok_or_else(|| {
            pr_err!("vgpu_svm: ctx {}: page-table update under a foreign lock\n", self.ctx_id);
            EINVAL
        })
    }

    /// Clears the GPU entries of `[gs, ge)` and, if any were valid, has the device drop its
    /// translations (INVALIDATE for `reason`, an `enum vgpu_svm_inval_reason`, waiting for
    /// accesses in flight). Under the update lock; allocates nothing.
    pub(crate) fn clear_and_flush(
        &self,
        guard: &Guard<'_, Locked, MutexBackend>,
        gs: u64,
        ge: u64,
        reason: u32,
    ) -> Result<Cleared> {
        self.clear_then_flush(guard, gs, ge, reason, 0, None).map(|f| match f {
            Flushed::Done(c) => c,
            // Not reached: nothing was posted without a message to post with.
            Flushed::Posted => Cleared::default(),
        })
    }

    /// [`Self::clear_and_flush`], sleeping `delay_us` between clearing and the INVALIDATE
    /// when entries were cleared (debug only: `clear_to_invalidate_delay_us`; callers in a
    /// non-blockable context pass 0, and none reaches here). With `post`, an INVALIDATE the
    /// device must answer is posted with that message and not waited for
    /// ([`Flushed::Posted`]; see [`Self::invalidate`]).
    fn clear_then_flush(
        &self,
        guard: &Guard<'_, Locked, MutexBackend>,
        gs: u64,
        ge: u64,
        reason: u32,
        delay_us: u32,
        post: Option<&InvalidateMsg>,
    ) -> Result<Flushed> {
        let token = self.token(guard)?;
        let cleared = self.pt.clear(&token, gs, ge);
        self.stats.pages_cleared.fetch_add(cleared.pages, Ordering::Relaxed);
        if cleared.entries == 0 {
            // The device caches only valid entries: nothing to flush.
            return Ok(Flushed::Done(cleared));
        }
        if delay_us > 0 {
            // The device may still use its cached translations here (the INVALIDATE is not
            // sent yet): the callback must not return before it is.
            debug::COUNTERS.inval_delays.fetch_add(1, Ordering::Relaxed);
            kernel::time::delay::fsleep(kernel::time::Delta::from_micros(delay_us.into()));
        }
        self.stats.invalidations.fetch_add(1, Ordering::Relaxed);
        // A cleared 2 MiB leaf may overlap the range only partly: flush its whole block.
        let align = if cleared.large { LARGE_PAGE } else { PAGE };
        let (fs, fe) = (gs & !(align - 1), ge.saturating_add(align - 1) & !(align - 1));
        if let Some(msg) = post {
            if self.post_flush(guard, msg, fs, fe - fs, reason)? {
                return Ok(Flushed::Posted);
            }
            return Ok(Flushed::Done(cleared));
        }
        self.flush(guard, fs, fe - fs, reason)?;
        Ok(Flushed::Done(cleared))
    }

    /// [`Self::flush`] without the wait: true if an INVALIDATE was posted with `msg` (the
    /// caller counts it in [`Locked::posted_flushes`] before it unlocks, and must
    /// [`Self::collect_flush`] it), false if none was needed (destroyed context, idle fast
    /// path). A post that fails resets the device, as a flush that fails does. Under the
    /// update lock; allocates nothing.
    fn post_flush(
        &self,
        guard: &Guard<'_, Locked, MutexBackend>,
        msg: &InvalidateMsg,
        start: u64,
        size: u64,
        reason: u32,
    ) -> Result<bool> {
        if guard.destroyed || self.flush_idle(guard) {
            return Ok(false);
        }
        self.stats.flushes_sent.fetch_add(1, Ordering::Relaxed);
        // As in `flush`: with the fail_invalidate knob the INVALIDATE "fails" (and the device
        // is reset), here at once instead of in the second pass.
        let sent = if debug::fail_invalidate() { Err(EIO) } else { msg.post(&self.ctrl, start, size, reason) };
        if let Err(e) = sent {
            self.flush_failed(e);
            return Err(e);
        }
        self.stats.flushes_posted.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }

    /// Has the device drop its translations of `[start, start + size)` (INVALIDATE for
    /// `reason`, an `enum vgpu_svm_inval_reason`, waiting for accesses in flight). Under the
    /// update lock; allocates nothing. If the device does not confirm, it is reset before
    /// this returns.
    pub(crate) fn flush(&self, guard: &Guard<'_, Locked, MutexBackend>, start: u64, size: u64, reason: u32) -> Result {
        if guard.destroyed {
            return Ok(());
        }
        if self.flush_idle(guard) {
            return Ok(());
        }
        self.stats.flushes_sent.fetch_add(1, Ordering::Relaxed);
        let sent = if debug::fail_invalidate() { Err(EIO) } else { self.inval.send(&self.ctrl, start, size, reason) };
        if let Err(e) = sent {
            self.flush_failed(e);
            return Err(e);
        }
        Ok(())
    }

    /// A device that did not confirm an INVALIDATE: reset it (see [`Self::flush`]).
    fn flush_failed(&self, e: Error) {
        // The device did not confirm that it dropped the translations: it may still use the
        // old pages, which mm frees as soon as the callback returns. Reset it: when the reset
        // is done, it uses no guest memory at all. Every context of the device is gone with
        // it (ENODEV from now on); this one is also marked broken.
        // (Once per context: after the reset, its INVALIDATEs fail at once, EBUSY or ENODEV.)
        if !self.broken.swap(true, Ordering::AcqRel) {
            pr_err!(
                "vgpu_svm: ctx {}: device INVALIDATE not confirmed ({e:?}); resetting the device\n",
                self.ctx_id
            );
        }
        self.ctrl.reset_device();
    }

    /// The idle fast path of [`Self::flush`]: when no JOB or RESUME of this context is on the
    /// device, the device needs no INVALIDATE: a new TLB generation makes it drop the
    /// context's whole TLB before the next job's first access. True if it did that (the
    /// caller is done); false if the caller must send INVALIDATE. Under the update lock;
    /// neither sleeps nor allocates.
    ///
    /// Why this keeps the notifier's promise ("upon return, the device no longer uses the
    /// old pages"), step by step:
    /// 1. `jobs_in_flight == 0` under the update lock means no device access of this context
    ///    is in flight, and none starts before the lock is released: every JOB/RESUME the
    ///    driver sent was answered with done, failed or a fault (the device answers only
    ///    after the job's last access ended: the answer comes from its worker once the run
    ///    returned), or ABORTed with the device's confirmation (answered once no access of
    ///    the job is in flight), or ended by a device reset (a reset device touches no guest
    ///    memory) -- `job::run` decrements only then, and `job::abandoned` ABORTs (or resets)
    ///    a job whose JOB/RESUME went unanswered before it does. Jobs are the device's only
    ///    accesses of a context's memory, and every JOB/RESUME is counted under this lock
    ///    before it is sent (`job::run`'s commit, and before `resume`), so none can be sent
    ///    before we unlock.
    /// 2. So the device can use a translation it cached before only from a later JOB or
    ///    RESUME, and the device loads the generation at the start of each, before the job's
    ///    first access, and drops the TLB if it changed (`vgpu-device/src/tlbgen.rs`).
    /// 3. Ordering: the callers cleared or changed the GPU entries (atomic exchanges) before
    ///    this, and the generation is stored after them, both under the update lock. The
    ///    next JOB/RESUME is counted under that lock after we release it (release/acquire:
    ///    it sees both), and then a full barrier (`job::publish_barrier`, `smp_mb`, which is
    ///    cumulative) orders everything that thread has seen before its stores that publish
    ///    the request (descriptor, then `virtio_wmb`, then the avail index). The device
    ///    reads the avail index with acquire ordering, then the command, then the
    ///    generation (acquire), then walks the GPU table: it sees the new generation and
    ///    flushes, and its walks see the cleared entries. There is no window in which the
    ///    device holds a stale translation and runs.
    /// 4. Dirty bits: the device sets DIRTY by compare-and-swap before its first write
    ///    through an entry, inside a job; with no job in flight the callers' exchanges saw
    ///    every DIRTY bit, and a cached "already dirty" translation is dropped before it can
    ///    be written through again.
    /// If any step failed, the device would use a stale frame and its checker would count a
    /// violation (the `idle_litmus` case races job starts against invalidations).
    fn flush_idle(&self, guard: &Guard<'_, Locked, MutexBackend>) -> bool {
        if guard.jobs_in_flight != 0
            || !self.tlb_gen_on.load(Ordering::Relaxed)
            // A context whose device failed keeps the old path (which resets it again).
            || self.broken.load(Ordering::Acquire)
            // Debug: every INVALIDATE fails; keep them being sent so the knob means that.
            || debug::fail_invalidate()
        {
            return false;
        }
        // Only written under the update lock (we hold it): a plain increment. Release orders
        // it after the entries' exchanges for any reader; the publication barrier of the next
        // JOB/RESUME is what the device relies on (step 3).
        let g = self.tlb_gen.load(Ordering::Relaxed);
        self.tlb_gen.store(g.wrapping_add(1), Ordering::Release);
        self.stats.flushes_elided.fetch_add(1, Ordering::Relaxed);
        true
    }
}

/// The SVM mirror: one interval notifier over the whole GPU VA space (GPU VA == CPU VA).
pub(crate) struct SvmMirror {
    pub(crate) shared: Arc<Shared>,
}

impl IntervalNotifierOps for SvmMirror {
    type Locked = Locked;
    type Pass = ();

    fn update_lock(&self) -> &Mutex<Locked> {
        &self.shared.update
    }

    fn invalidate(this: &IntervalNotifier<Self>, range: &Range<'_>, cur_seq: CurSeq) -> bool {
        this.data().shared.invalidate(this, range, cur_seq, |s, e| Some((s, e)), |_, _| {}, false, None)
            == Invalidated::Done(true)
    }
}

/// Inserts the SVM notifier for `shared`'s mm (must be the current task's).
pub(crate) fn svm_notifier(
    mm: &kernel::mm::MmWithUser,
    shared: Arc<Shared>,
) -> Result<Arc<IntervalNotifier<SvmMirror>>> {
    Arc::pin_init(IntervalNotifier::insert(mm, 0, VA_LIMIT as usize, SvmMirror { shared }, ()), GFP_KERNEL)
}

/// Debug only (`legacy_valid_flag`): the pre-2019 scheme's flag, cleared when an
/// invalidation starts and set again when it ends. The populate loop then trusts the flag
/// instead of the sequence, which misses invalidations that begin and end between
/// `hmm_range_fault` and taking the lock: the negative control the checker must catch.
pub(crate) struct LegacyFlag {
    pub(crate) shared: Arc<Shared>,
}

impl RangeNotifierOps for LegacyFlag {
    fn start(&self, _range: &Range<'_>) -> Result {
        self.shared.legacy_valid.store(false, Ordering::Release);
        Ok(())
    }

    fn end(&self, _range: &Range<'_>) {
        self.shared.legacy_valid.store(true, Ordering::Release);
    }
}

/// Registers the legacy flag notifier on `mm`.
pub(crate) fn legacy_notifier(
    mm: &kernel::mm::MmWithUser,
    shared: Arc<Shared>,
) -> Result<Pin<KBox<RangeNotifier<LegacyFlag>>>> {
    KBox::pin_init(RangeNotifier::register(mm, LegacyFlag { shared }), GFP_KERNEL)
}

/// Debug only (`pair_notifiers`): notifier A of the 2019 "unpaired
/// invalidate_range_start/end with non-blocking notifiers" scenario. It keeps a paired count:
/// every start opens, every end closes; an end without an open start is counted apart. mm
/// must call A's end for every start that returned 0, also when a later notifier (B) failed
/// a non-blockable start: 7.2's `mn_hlist_invalidate_range_start` then calls the end of
/// every notifier that has one (the back-out), and `zap_vma_for_reaping` gives up on the VMA.
pub(crate) struct PairA;

impl RangeNotifierOps for PairA {
    fn start(&self, range: &Range<'_>) -> Result {
        // Atomics only: this runs in non-blockable context too.
        let c = &debug::COUNTERS;
        c.pair_a_starts.fetch_add(1, Ordering::Relaxed);
        if !range.blockable() {
            c.pair_a_nonblock_starts.fetch_add(1, Ordering::Relaxed);
        }
        c.pair_a_open.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn end(&self, range: &Range<'_>) {
        let c = &debug::COUNTERS;
        c.pair_a_ends.fetch_add(1, Ordering::Relaxed);
        if !range.blockable() {
            c.pair_a_nonblock_ends.fetch_add(1, Ordering::Relaxed);
        }
        if c.pair_a_open.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_err() {
            c.pair_a_unmatched_ends.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Debug only (`pair_notifiers`): notifier B of the 2019 scenario. It cannot handle a
/// non-blockable range (as a driver whose trylock fails): it returns `EAGAIN` for every one.
/// It has no end callback: mm calls every start even after one failed, and cannot tell a
/// notifier that its own start failed, so one that may fail must not have an end (7.2 warns
/// otherwise).
pub(crate) struct PairB;

impl RangeNotifierOps for PairB {
    const HAS_END: bool = false;

    fn start(&self, range: &Range<'_>) -> Result {
        let c = &debug::COUNTERS;
        if !range.blockable() {
            c.pair_b_eagain.fetch_add(1, Ordering::Relaxed);
            return Err(EAGAIN);
        }
        c.pair_b_starts.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn end(&self, _range: &Range<'_>) {}
}

/// The pair notifiers of a context (debug only), unregistered when dropped.
pub(crate) struct PairNotifiers {
    pub(crate) _a: Pin<KBox<RangeNotifier<PairA>>>,
    pub(crate) _b: Pin<KBox<RangeNotifier<PairB>>>,
}

/// Registers B, then A, on `mm`. `mmu_notifier_register` adds at the head of the mm's list,
/// so A (the newest) is called first: its start has returned 0 when B's fails, which is the
/// order of the 2019 report. (7.2 calls every start whatever the order, and backs out every
/// end, so the case holds either way; this order is the one that needs the back-out most
/// plainly.)
pub(crate) fn pair_notifiers(mm: &kernel::mm::MmWithUser) -> Result<PairNotifiers> {
    let b = KBox::pin_init(RangeNotifier::register(mm, PairB), GFP_KERNEL)?;
    let a = KBox::pin_init(RangeNotifier::register(mm, PairA), GFP_KERNEL)?;
    Ok(PairNotifiers { _a: a, _b: b })
}

impl Shared {
    /// Writes the context's state for debugfs and fdinfo.
    pub(crate) fn describe(&self, out: &mut dyn core::fmt::Write, fdinfo: bool) -> core::fmt::Result {
        let s = &self.stats;
        let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let resident_kib = ld(&s.pages_mapped).saturating_sub(ld(&s.pages_cleared)) * 4;
        if fdinfo {
            // Documentation/gpu/drm-usage-stats.rst keys, then driver-specific ones.
            writeln!(out, "drm-engine-vgpu:\t{} ns", ld(&s.busy_ns))?;
            writeln!(out, "drm-resident-gpuvm:\t{resident_kib} KiB")?;
            writeln!(out, "vgpu_svm-ctx:\t{}", self.ctx_id)?;
        } else {
            writeln!(out, "ctx: {}", self.ctx_id)?;
            writeln!(out, "svm: {}", self.svm.load(Ordering::Relaxed))?;
            writeln!(out, "broken: {}", self.broken.load(Ordering::Relaxed))?;
            writeln!(out, "last committed sequence: {}", ld(&s.last_seq))?;
            writeln!(out, "resident: {resident_kib} KiB")?;
        }
        let p = if fdinfo { "vgpu_svm-" } else { "" };
        writeln!(out, "{p}faults-serviced:\t{}", ld(&s.faults_serviced))?;
        writeln!(out, "{p}retries:\t{}", ld(&s.retries))?;
        writeln!(out, "{p}invalidations:\t{}", ld(&s.invalidations))?;
        writeln!(out, "{p}nonblock-callbacks:\t{}", ld(&s.nonblock_calls))?;
        writeln!(out, "{p}nonblock-handled:\t{}", ld(&s.nonblock_handled))?;
        writeln!(out, "{p}nonblock-eagain:\t{}", ld(&s.nonblock_eagain))?;
        writeln!(out, "{p}flushes-elided:\t{}", ld(&s.flushes_elided))?;
        writeln!(out, "{p}flushes-sent:\t{}", ld(&s.flushes_sent))?;
        writeln!(out, "{p}flushes-posted:\t{}", ld(&s.flushes_posted))?;
        writeln!(out, "{p}prefaulted-pages:\t{}", ld(&s.prefaulted_pages))?;
        for (i, name) in EVENT_NAMES.iter().enumerate() {
            writeln!(out, "{p}events-{name}:\t{}", ld(&s.events[i]))?;
        }
        if !fdinfo {
            writeln!(out, "mapped ranges (GPU VA, first 32):")?;
            self.pt.describe_ranges(out, 32)?;
        }
        Ok(())
    }
}
