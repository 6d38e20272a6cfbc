// SPDX-License-Identifier: GPL-2.0

//! MMU interval notifiers (added by the vgpu-svm overlay).
//!
//! C header: [`include/linux/mmu_notifier.h`](srctree/include/linux/mmu_notifier.h).
//!
//! An [`IntervalNotifier`] watches a range of a process's address space. Before the kernel
//! changes a CPU page-table entry in the range, it calls [`IntervalNotifierOps::invalidate`];
//! upon return the driver promises that its device no longer uses the old pages.
//!
//! The contract with the notifier's sequence count (see `Documentation/mm/hmm.rst`) is encoded
//! in the types:
//!
//! - a mirror update starts with [`IntervalNotifier::read_begin`], which returns a [`Seq`] and
//!   must not be called with the driver's update lock held (it may sleep until a running
//!   invalidation finishes);
//! - the update is committed only under the update lock and only if
//!   [`IntervalNotifier::read_retry`] says no invalidation happened since; `read_retry` takes
//!   the lock's guard;
//! - the invalidate callback calls [`IntervalNotifier::set_seq`] under the same lock; it too
//!   takes the guard.
//!
//! The update lock is the one returned by [`IntervalNotifierOps::update_lock`]: passing the
//! guard of any other lock is caught at run time (a warning, and `read_retry` then reports a
//! retry so nothing stale is committed).
//!
//! # Two passes
//!
//! A notifier may split its work in two (7.1's `invalidate_start`/`invalidate_finish`): the
//! first pass, [`IntervalNotifierOps::invalidate_start`], starts what takes long (a device
//! TLB flush) and returns [`Start::Deferred`]; mm calls the first pass of every notifier of
//! the range before the second pass, [`IntervalNotifierOps::invalidate_finish`], of any,
//! so that one munmap over many notifiers waits for their devices once, not once each. The
//! promise moves with it: the range may change only after every second pass returned.
//!
//! Each notifier embeds one `struct mmu_interval_notifier_finish` (nothing is allocated in
//! the callback). Callbacks of one notifier may run in parallel (two invalidations of
//! different parts of its range), so the embedded one is claimed ([`FinishSlot::claim`]):
//! a first pass that cannot claim it (another invalidation owns it) does all its work
//! itself, as a single pass. A [`Deferred`] exists only while the claim is held, and it is
//! the only way to reach the notifier's per-pass data ([`IntervalNotifierOps::Pass`]); a
//! non-blockable range never yields one (the second pass may sleep).

use crate::{
    bindings,
    error::to_result,
    mm::MmWithUser,
    prelude::*,
    sync::{lock::Guard, Mutex},
    types::Opaque,
};
use core::{
    cell::UnsafeCell,
    marker::PhantomPinned,
    ptr,
    sync::atomic::{AtomicBool, Ordering},
};

/// `enum mmu_notifier_event`: why a range is being invalidated.
pub mod event {
    /// munmap(), or mremap() moving the range away.
    pub const UNMAP: u32 = bindings::mmu_notifier_event_MMU_NOTIFY_UNMAP;
    /// Page-table entries cleared (madvise, page replaced, COW, ...).
    pub const CLEAR: u32 = bindings::mmu_notifier_event_MMU_NOTIFY_CLEAR;
    /// Protection change for the whole VMA (mprotect()).
    pub const PROTECTION_VMA: u32 = bindings::mmu_notifier_event_MMU_NOTIFY_PROTECTION_VMA;
    /// Read/write change of individual pages (e.g. write-protect for fork's COW).
    pub const PROTECTION_PAGE: u32 = bindings::mmu_notifier_event_MMU_NOTIFY_PROTECTION_PAGE;
    /// Soft-dirty tracking reset.
    pub const SOFT_DIRTY: u32 = bindings::mmu_notifier_event_MMU_NOTIFY_SOFT_DIRTY;
    /// The mm is going away.
    pub const RELEASE: u32 = bindings::mmu_notifier_event_MMU_NOTIFY_RELEASE;
    /// Page migration (the owner field names who started it).
    pub const MIGRATE: u32 = bindings::mmu_notifier_event_MMU_NOTIFY_MIGRATE;
    /// Exclusive device access (make_device_exclusive()).
    pub const EXCLUSIVE: u32 = bindings::mmu_notifier_event_MMU_NOTIFY_EXCLUSIVE;
}

/// A range being invalidated (`struct mmu_notifier_range`), valid during the callback.
pub struct Range<'a>(&'a bindings::mmu_notifier_range);

impl Range<'_> {
    /// First byte of the range.
    pub fn start(&self) -> usize {
        self.0.start as usize
    }

    /// One past the last byte of the range.
    pub fn end(&self) -> usize {
        self.0.end as usize
    }

    /// The reason, one of [`event`].
    pub fn event(&self) -> u32 {
        self.0.event as u32
    }

    /// The `owner` tag of a `MIGRATE`/`EXCLUSIVE` event (null otherwise).
    pub fn owner(&self) -> *const c_void {
        self.0.owner.cast_const()
    }

    /// Whether the callback may sleep. When it may not (the OOM reaper), it must not wait
    /// for the device; it returns `false` if it would have to.
    pub fn blockable(&self) -> bool {
        // SAFETY: `self.0` is a valid range for the duration of the callback.
        unsafe { bindings::mmu_notifier_range_blockable(self.0) }
    }
}

/// A sample of the notifier's sequence count, from [`IntervalNotifier::read_begin`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seq(c_ulong);

impl Seq {
    /// The raw value, for `hmm_range::notifier_seq` and for diagnostics. (There is no way back:
    /// a `Seq` only comes from [`IntervalNotifier::read_begin`].)
    pub fn raw(self) -> c_ulong {
        self.0
    }
}

/// The sequence number an invalidation publishes: handed to [`IntervalNotifierOps::invalidate`]
/// and consumed by [`IntervalNotifier::set_seq`]. It exists only inside a callback (it cannot
/// be built, copied or kept elsewhere), so `set_seq` cannot be called outside one.
#[derive(Debug)]
pub struct CurSeq(c_ulong);

/// What an interval notifier's owner implements.
pub trait IntervalNotifierOps: Send + Sync + Sized {
    /// The data under the update lock.
    type Locked;

    /// The driver's update lock: the lock that serializes invalidation with committing
    /// device mappings.
    fn update_lock(&self) -> &Mutex<Self::Locked>;

    /// Called before the kernel changes CPU page-table entries in `range`. Must call
    /// [`IntervalNotifier::set_seq`] with `cur_seq` under the update lock, stop the device
    /// from using pages in the range, and return `true`; or, when the range is not
    /// blockable and that would need sleeping, return `false` without doing anything.
    /// Must not allocate memory with reclaim (`GFP_KERNEL`), nor insert or remove notifiers.
    fn invalidate(this: &IntervalNotifier<Self>, range: &Range<'_>, cur_seq: CurSeq) -> bool;

    /// Whether mm calls [`Self::invalidate_start`] and [`Self::invalidate_finish`] instead of
    /// [`Self::invalidate`] (see "Two passes" in the module documentation).
    const TWO_PASS: bool = false;

    /// What a first pass shares with its second pass (for example the preallocated device
    /// message it sent and the second pass waits for), given to [`IntervalNotifier::insert`].
    /// Reached only through a [`Deferred`] and in [`Self::invalidate_finish`], so at most one
    /// invalidation uses it at a time. Single-pass notifiers use `()`.
    type Pass: Send;

    /// The first pass of a two-pass notifier ([`Self::TWO_PASS`]). Has the duties of
    /// [`Self::invalidate`] except that what it cannot finish without sleeping on the device
    /// may be left to [`Self::invalidate_finish`]: it then claims `slot`, keeps what the
    /// second pass needs in [`Deferred::pass`], and returns [`Start::Deferred`]. Without a
    /// claim it must do everything itself. The default is [`Self::invalidate`].
    fn invalidate_start<'a>(
        this: &'a IntervalNotifier<Self>,
        range: &Range<'_>,
        cur_seq: CurSeq,
        slot: FinishSlot<'a, Self>,
    ) -> Start<'a, Self> {
        let _ = slot;
        Start::Done(Self::invalidate(this, range, cur_seq))
    }

    /// The second pass, after the first pass of every notifier of the range: finishes what
    /// [`Self::invalidate_start`] deferred. May sleep (a range whose first pass could defer
    /// is blockable); has no way to fail, so on a device that does not confirm it must make
    /// the device stop using memory (reset it) before it returns. Not called with the update
    /// lock held; must not allocate with reclaim.
    fn invalidate_finish(this: &IntervalNotifier<Self>, pass: &mut Self::Pass) {
        let _ = (this, pass);
    }
}

/// What a first pass returns ([`IntervalNotifierOps::invalidate_start`]).
pub enum Start<'a, T: IntervalNotifierOps> {
    /// Everything is done: what [`IntervalNotifierOps::invalidate`] would return.
    Done(bool),
    /// The rest is left to [`IntervalNotifierOps::invalidate_finish`], which mm will call.
    Deferred(Deferred<'a, T>),
}

/// The right to claim a notifier's embedded finish pass, given to a first pass.
pub struct FinishSlot<'a, T: IntervalNotifierOps> {
    n: &'a IntervalNotifier<T>,
    blockable: bool,
}

impl<'a, T: IntervalNotifierOps> FinishSlot<'a, T> {
    /// Claims the embedded finish pass: `None` if another invalidation of this notifier holds
    /// it, or if the range is not blockable (the second pass may sleep). The claim ends when
    /// the second pass returned, or when the [`Deferred`] is dropped unreturned.
    pub fn claim(self) -> Option<Deferred<'a, T>> {
        if !self.blockable {
            return None;
        }
        self.n
            .finish_busy
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| Deferred { n: self.n })
    }
}

/// A claimed finish pass (see [`FinishSlot::claim`]).
///
/// # Invariants
///
/// `n.finish_busy` is true and was set by the claim that made this value, so nothing else
/// reaches `n.pass` while it lives.
pub struct Deferred<'a, T: IntervalNotifierOps> {
    n: &'a IntervalNotifier<T>,
}

impl<T: IntervalNotifierOps> Deferred<'_, T> {
    /// The data handed to the second pass.
    pub fn pass(&mut self) -> &mut T::Pass {
        // SAFETY: The claim is ours (type invariant): no other `Deferred` and no second pass
        // of this notifier exists until it is released, and `&mut self` makes this borrow
        // unique.
        unsafe { &mut *self.n.pass.get() }
    }
}

impl<T: IntervalNotifierOps> Drop for Deferred<'_, T> {
    fn drop(&mut self) {
        // Claimed but not handed to mm (the first pass changed its mind): release.
        self.n.finish_busy.store(false, Ordering::Release);
    }
}

/// A registered `struct mmu_interval_notifier` with its owner's data.
///
/// # Invariants
///
/// `raw` was successfully inserted with `mmu_interval_notifier_insert()` on an mm and with
/// `Self::OPS`, and stays registered until `drop`, which removes it (waiting for callbacks).
/// `data`, `start`, `length` and the finish-pass fields were initialized before `raw` was
/// inserted (a callback may run as soon as it is) and are dropped only after it was removed.
/// `finish` is on mm's list of second passes, or claimed by a first pass, only while
/// `finish_busy` is true; `pass` is accessed only by the holder of that claim.
#[pin_data(PinnedDrop)]
pub struct IntervalNotifier<T: IntervalNotifierOps> {
    #[pin]
    raw: Opaque<bindings::mmu_interval_notifier>,
    data: T,
    /// The embedded second pass (see "Two passes" in the module documentation).
    #[pin]
    finish: Opaque<bindings::mmu_interval_notifier_finish>,
    finish_busy: AtomicBool,
    pass: UnsafeCell<T::Pass>,
    start: usize,
    length: usize,
    #[pin]
    _pin: PhantomPinned,
}

// SAFETY: The C notifier is safe to use from any thread; `T` is `Send + Sync` and `T::Pass`
// is `Send`.
unsafe impl<T: IntervalNotifierOps> Send for IntervalNotifier<T> {}
// SAFETY: As above; the sequence functions are thread safe by design, and `pass` is reached
// only by the one holder of the finish-pass claim (type invariant), from whichever thread
// (hence `T::Pass: Send`).
unsafe impl<T: IntervalNotifierOps> Sync for IntervalNotifier<T> {}

impl<T: IntervalNotifierOps> IntervalNotifier<T> {
    const OPS: bindings::mmu_interval_notifier_ops = bindings::mmu_interval_notifier_ops {
        invalidate: Some(Self::invalidate_callback),
        invalidate_start: if T::TWO_PASS { Some(Self::invalidate_start_callback) } else { None },
        invalidate_finish: if T::TWO_PASS { Some(Self::invalidate_finish_callback) } else { None },
    };

    /// Watches `[start, start + length)` of `mm`. Sleeps (takes the mmap lock). `pass` is the
    /// data of the finish pass ([`IntervalNotifierOps::Pass`]).
    pub fn insert(mm: &MmWithUser, start: usize, length: usize, data: T, pass: T::Pass) -> impl PinInit<Self, Error> {
        let mm = mm.as_raw();
        // (Inside the initializer, `start` and `length` name the fields once initialized.)
        let (first, len) = (start, length);
        // Fields are initialized in the order written: everything the callback reads comes
        // before the insertion, which makes the notifier live at once (a fork or munmap by
        // another thread may call it before `insert` returns). Were `data` written after it,
        // that callback would read uninitialized memory (seen: an oops in a userptr callback
        // during fork, found by vgpu-fuzz). On failure pin-init drops what it initialized.
        try_pin_init!(Self {
            data,
            start,
            length,
            // All zeroes is an unlinked finish pass; mm sets its fields when it queues it.
            finish: Opaque::zeroed(),
            finish_busy: AtomicBool::new(false),
            pass: UnsafeCell::new(pass),
            _pin: PhantomPinned,
            raw <- Opaque::try_ffi_init(move |slot: *mut bindings::mmu_interval_notifier| {
                // SAFETY: `slot` is valid, pinned memory for the notifier; `mm` has users
                // (we were given a `MmWithUser`); `OPS` is static. The other fields are
                // initialized (above), so a callback that runs at once finds them.
                to_result(unsafe {
                    bindings::mmu_interval_notifier_insert(slot, mm, first as _, len as _, &Self::OPS)
                })
            }),
        }? Error)
    }

    /// The owner's data.
    pub fn data(&self) -> &T {
        &self.data
    }

    /// First byte watched.
    pub fn start(&self) -> usize {
        self.start
    }

    /// Bytes watched.
    pub fn length(&self) -> usize {
        self.length
    }

    fn as_raw(&self) -> *mut bindings::mmu_interval_notifier {
        self.raw.get()
    }

    /// The C notifier, for `hmm_range::notifier`.
    pub(crate) fn raw_ptr(&self) -> *mut bindings::mmu_interval_notifier {
        self.as_raw()
    }

    /// Starts a mirror update: samples the sequence. May sleep until a running invalidation
    /// of the range ends, so it must not be called with the update lock held (lockdep knows
    /// this too: it is annotated in C).
    pub fn read_begin(&self) -> Seq {
        // SAFETY: `self.raw` is a registered notifier (type invariant).
        Seq(unsafe { bindings::mmu_interval_read_begin(self.as_raw()) })
    }

    fn is_update_lock<'a>(&self, guard: &Guard<'a, T::Locked, crate::sync::lock::mutex::MutexBackend>) -> bool {
        let ok = ptr::eq(guard.lock_ref(), self.data.update_lock());
        if !ok {
            pr_warn!("mmu_notifier: sequence used under a lock other than the update lock\n");
        }
        ok
    }

    /// Whether an invalidation happened since `seq` was sampled: if so, the update must be
    /// redone (nothing from it may be committed). Takes the update lock's guard.
    pub fn read_retry(
        &self,
        guard: &Guard<'_, T::Locked, crate::sync::lock::mutex::MutexBackend>,
        seq: Seq,
    ) -> bool {
        if !self.is_update_lock(guard) {
            return true;
        }
        // SAFETY: `self.raw` is registered (type invariant); we hold the update lock.
        unsafe { bindings::mmu_interval_read_retry(self.as_raw(), seq.0) }
    }

    /// Lock-free early check for a pending invalidation (an optimization only; the answer
    /// under the lock is [`Self::read_retry`]).
    pub fn check_retry(&self, seq: Seq) -> bool {
        // SAFETY: `self.raw` is registered (type invariant).
        unsafe { bindings::mmu_interval_check_retry(self.as_raw(), seq.0) }
    }

    /// Publishes the invalidation's sequence number. Call from `invalidate`, under the update
    /// lock, before clearing device mappings.
    pub fn set_seq(&self, guard: &Guard<'_, T::Locked, crate::sync::lock::mutex::MutexBackend>, cur_seq: CurSeq) {
        // A wrong lock is a driver bug; the sequence must be published anyway, or pending
        // updates would be committed against stale pages.
        let _ = self.is_update_lock(guard);
        // SAFETY: `self.raw` is registered (type invariant); called from the callback.
        unsafe { bindings::mmu_interval_set_seq(self.as_raw(), cur_seq.0) }
    }

    unsafe extern "C" fn invalidate_callback(
        raw: *mut bindings::mmu_interval_notifier,
        range: *const bindings::mmu_notifier_range,
        cur_seq: c_ulong,
    ) -> bool {
        // SAFETY: `raw` is the `raw` field of a pinned `IntervalNotifier<T>` registered with
        // `OPS` (only such notifiers have `OPS`), alive until removal, which waits for us.
        let this = unsafe { &*crate::container_of!(Opaque::cast_from(raw).cast_mut(), Self, raw) };
        // SAFETY: The core passes a valid range for the duration of the call.
        let range = Range(unsafe { &*range });
        T::invalidate(this, &range, CurSeq(cur_seq))
    }

    unsafe extern "C" fn invalidate_start_callback(
        raw: *mut bindings::mmu_interval_notifier,
        range: *const bindings::mmu_notifier_range,
        cur_seq: c_ulong,
        finish: *mut *mut bindings::mmu_interval_notifier_finish,
    ) -> bool {
        // SAFETY: As in `invalidate_callback`.
        let this = unsafe { &*crate::container_of!(Opaque::cast_from(raw).cast_mut(), Self, raw) };
        // SAFETY: The core passes a valid range for the duration of the call.
        let range = Range(unsafe { &*range });
        let slot = FinishSlot { n: this, blockable: range.blockable() };
        match T::invalidate_start(this, &range, CurSeq(cur_seq), slot) {
            Start::Done(done) => done,
            Start::Deferred(d) => {
                // The claim passes to mm, which calls the second pass with `finish`; that
                // callback releases it (type invariant).
                core::mem::forget(d);
                // SAFETY: `finish` is the core's out-parameter, valid for writing (it is
                // NULL on entry); `this.finish` is pinned with `this`, which stays alive
                // until removal, and removal waits for the second pass.
                unsafe { *finish = this.finish.get() };
                true
            }
        }
    }

    unsafe extern "C" fn invalidate_finish_callback(finish: *mut bindings::mmu_interval_notifier_finish) {
        // SAFETY: mm calls this only with a pointer our first pass returned: the `finish`
        // field of a live, pinned `IntervalNotifier<T>` (removal waits for the second pass).
        let this = unsafe { &*crate::container_of!(Opaque::cast_from(finish).cast_mut(), Self, finish) };
        // SAFETY: The first pass claimed the finish pass and gave the claim to mm (type
        // invariant); this callback is its holder now, and the only one.
        let pass = unsafe { &mut *this.pass.get() };
        T::invalidate_finish(this, pass);
        this.finish_busy.store(false, Ordering::Release);
    }
}

#[pinned_drop]
impl<T: IntervalNotifierOps> PinnedDrop for IntervalNotifier<T> {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: `raw` is registered (type invariant). Removal sleeps until running
        // callbacks finished; the caller must not hold the update lock (the callback takes it).
        unsafe { bindings::mmu_interval_notifier_remove(self.raw.get()) };
    }
}

/// What a [`RangeNotifier`]'s owner implements: the classic start/end callbacks.
pub trait RangeNotifierOps: Send + Sync + Sized {
    /// Whether [`Self::end`] is registered. A notifier whose `start` may fail (`EAGAIN` on a
    /// non-blockable range) must have none: mm calls every notifier's start even after one
    /// failed, then backs out by calling the end of every notifier that has one, so a failed
    /// start cannot be told apart from a successful one (`mm/mmu_notifier.c` warns).
    const HAS_END: bool = true;

    /// Before CPU page-table entries in `range` change. Return `Err(EAGAIN)` only when the
    /// range is not blockable and the callback would have to sleep (and only if
    /// [`Self::HAS_END`] is false).
    fn start(&self, range: &Range<'_>) -> Result;
    /// After they changed.
    fn end(&self, range: &Range<'_>);
}

/// A classic `struct mmu_notifier` with `invalidate_range_start`/`_end` over a whole mm.
///
/// New code mirrors with [`IntervalNotifier`] and its sequence count. This type exists so
/// that tests can reproduce the pre-2019 "valid flag" scheme, which the start/end pair
/// cannot make correct on its own, and the 2019 "unpaired start/end with non-blocking
/// notifiers" scenario.
///
/// # Invariants
///
/// `raw` is registered on `mm` with `Self::OPS` until `drop` unregisters it; `data` was
/// initialized before the registration and is dropped after the unregistration.
#[pin_data(PinnedDrop)]
pub struct RangeNotifier<T: RangeNotifierOps> {
    #[pin]
    raw: Opaque<bindings::mmu_notifier>,
    data: T,
    mm: crate::sync::aref::ARef<crate::mm::Mm>,
    #[pin]
    _pin: PhantomPinned,
}

// SAFETY: The C notifier is usable from any thread; `T` is `Send + Sync`.
unsafe impl<T: RangeNotifierOps> Send for RangeNotifier<T> {}
// SAFETY: As above.
unsafe impl<T: RangeNotifierOps> Sync for RangeNotifier<T> {}

impl<T: RangeNotifierOps> RangeNotifier<T> {
    const OPS: bindings::mmu_notifier_ops = {
        // SAFETY: All-zeroes (no callbacks) is a valid `mmu_notifier_ops`.
        let mut ops: bindings::mmu_notifier_ops = unsafe { core::mem::zeroed() };
        ops.invalidate_range_start = Some(Self::start_callback);
        if T::HAS_END {
            ops.invalidate_range_end = Some(Self::end_callback);
        }
        ops
    };

    /// Registers on `mm` (takes the mmap lock for writing).
    pub fn register(mm: &MmWithUser, data: T) -> impl PinInit<Self, Error> {
        let raw_mm = mm.as_raw();
        let grabbed: crate::sync::aref::ARef<crate::mm::Mm> = crate::sync::aref::ARef::from(&**mm);
        // As for `IntervalNotifier::insert`: the callbacks' data first, registration last
        // (a registered notifier is called at once by other threads' mm changes).
        try_pin_init!(Self {
            data,
            mm: grabbed,
            _pin: PhantomPinned,
            raw <- Opaque::try_ffi_init(move |slot: *mut bindings::mmu_notifier| {
                // SAFETY: `slot` is valid pinned memory; zero it, then set the ops.
                unsafe {
                    slot.write(core::mem::zeroed());
                    (*slot).ops = &Self::OPS;
                }
                // SAFETY: `slot` is initialized, and so is `data` (above); `raw_mm` has users.
                to_result(unsafe { bindings::mmu_notifier_register(slot, raw_mm) })
            }),
        }? Error)
    }

    /// The owner's data.
    pub fn data(&self) -> &T {
        &self.data
    }

    unsafe extern "C" fn start_callback(
        raw: *mut bindings::mmu_notifier,
        range: *const bindings::mmu_notifier_range,
    ) -> c_int {
        // SAFETY: Only our notifiers have `OPS`; `raw` is the `raw` field of a pinned,
        // registered `RangeNotifier<T>`, alive until unregistration (which waits for us).
        let this = unsafe { &*crate::container_of!(Opaque::cast_from(raw).cast_mut(), Self, raw) };
        // SAFETY: The core passes a valid range for the duration of the call.
        match this.data.start(&Range(unsafe { &*range })) {
            Ok(()) => 0,
            Err(e) => e.to_errno(),
        }
    }

    unsafe extern "C" fn end_callback(
        raw: *mut bindings::mmu_notifier,
        range: *const bindings::mmu_notifier_range,
    ) {
        // SAFETY: As in `start_callback`.
        let this = unsafe { &*crate::container_of!(Opaque::cast_from(raw).cast_mut(), Self, raw) };
        // SAFETY: As in `start_callback`.
        this.data.end(&Range(unsafe { &*range }));
    }
}

#[pinned_drop]
impl<T: RangeNotifierOps> PinnedDrop for RangeNotifier<T> {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: Registered on `mm` (type invariant), which is grabbed; unregistration waits
        // for running callbacks.
        unsafe { bindings::mmu_notifier_unregister(self.raw.get(), self.mm.as_raw()) };
    }
}
