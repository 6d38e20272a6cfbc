// SPDX-License-Identifier: GPL-2.0

//! Userptr GEM objects (amdgpu style, semantic B): an object names a range of the creating
//! process's address space, not pages. Each object has its own interval notifier over its
//! range; every submit that uses it revalidates what changed since it was last mirrored.

use core::sync::atomic::{AtomicU64, Ordering};
use kernel::{
    drm::{gem, DeviceContext},
    mm::MmWithUser,
    mmu_notifier::{CurSeq, FinishSlot, IntervalNotifier, IntervalNotifierOps, Range, Start},
    alloc::{flags::GFP_KERNEL_ACCOUNT, KVVec},
    prelude::*,
    sync::{lock::Guard, lock::mutex::MutexBackend, Arc, Mutex, SetOnce},
};

use crate::{
    context::{Invalidated, Locked, Shared},
    gpu::InvalidateMsg,
    driver::{VgpuDevice, VgpuDriver},
    mirror::{self, Placement},
    pagetable::PAGE,
};

/// The mirror of one userptr object: its notifier's data.
pub(crate) struct UserptrMirror {
    pub(crate) shared: Arc<Shared>,
    /// CPU VA of the range.
    pub(crate) cpu: u64,
    pub(crate) size: u64,
    pub(crate) readonly: bool,
    /// GPU VA it is bound at (0: not bound). Changed under the file's state lock and the
    /// update lock (so the notifier callback, which holds the latter, sees a stable value),
    /// and only while no job of the context runs (BIND/UNBIND wait for them: a job sees a
    /// stable value too).
    pub(crate) gpu_va: AtomicU64,
    /// One bit per page: set when the page must be mirrored again (initially all; set by
    /// invalidations, cleared by commits, both under the update lock). Revalidation then
    /// costs what changed, not the object's size.
    stale: KVVec<AtomicU64>,
}

/// Largest userptr object: 64 GiB (a 2 MiB stale bitmap, charged to the caller's memcg).
pub(crate) const MAX_USERPTR_SIZE: u64 = 1 << 36;

impl UserptrMirror {
    fn pages(&self) -> usize {
        (self.size / PAGE) as usize
    }

    /// Marks the pages of CPU range `[s, e)` stale (called under the update lock).
    fn mark_stale(&self, s: u64, e: u64) {
        let s = s.max(self.cpu);
        let e = e.min(self.cpu + self.size);
        if s >= e {
            return;
        }
        let (first, last) = (((s - self.cpu) / PAGE) as usize, ((e - self.cpu - 1) / PAGE) as usize);
        self.set_bits(first, last + 1, true);
    }

    fn set_bits(&self, first: usize, end: usize, on: bool) {
        for p in first..end.min(self.pages()) {
            let bit = 1u64 << (p % 64);
            if let Some(w) = self.stale.get(p / 64) {
                if on {
                    w.fetch_or(bit, Ordering::Relaxed);
                } else {
                    w.fetch_and(!bit, Ordering::Relaxed);
                }
            }
        }
    }

    /// Marks every page stale (a new binding has nothing mirrored yet). Under the update lock.
    pub(crate) fn mark_all_stale(&self) {
        self.set_bits(0, self.pages(), true);
    }

    fn any_stale(&self) -> bool {
        self.stale.iter().any(|w| w.load(Ordering::Relaxed) != 0)
    }

    /// Runs of stale pages: `(first page, pages)`.
    fn stale_runs(&self) -> Result<KVec<(usize, usize)>> {
        let mut runs = KVec::<(usize, usize)>::new();
        let mut p = 0;
        let n = self.pages();
        while p < n {
            let word = self.stale.get(p / 64).map_or(0, |w| w.load(Ordering::Relaxed));
            if word == 0 && p % 64 == 0 {
                p += 64;
                continue;
            }
            if word & (1 << (p % 64)) != 0 {
                match runs.last_mut() {
                    Some((f, l)) if *f + *l == p => *l += 1,
                    _ => runs.push((p, 1), GFP_KERNEL)?,
                }
            }
            p += 1;
        }
        Ok(runs)
    }
}

impl UserptrMirror {
    /// The invalidation of `range` (see [`Shared::invalidate`]); with `post`, an INVALIDATE
    /// the device must answer is posted with that message and left to the second pass.
    fn invalidate_range(
        this: &UserptrNotifier,
        range: &Range<'_>,
        cur_seq: CurSeq,
        post: Option<&InvalidateMsg>,
    ) -> Invalidated {
        let m = this.data();
        let (cpu, size) = (m.cpu, m.size);
        // Called by `Shared::invalidate` under the update lock, which BIND and UNBIND hold
        // when they change `gpu_va`: the binding cannot move between reading it and clearing.
        let map = |s: u64, e: u64| {
            let gpu = m.gpu_va.load(Ordering::Acquire);
            if gpu == 0 {
                return None;
            }
            let s = s.max(cpu);
            let e = e.min(cpu + size);
            (s < e).then(|| (gpu + (s - cpu), gpu + (e - cpu)))
        };
        let waits = !m.shared.svm.load(Ordering::Acquire);
        m.shared.invalidate(this, range, cur_seq, map, |s, e| m.mark_stale(s, e), waits, post)
    }
}

/// Two passes: one munmap (or migration, or swap-out) over many userptr objects of a busy
/// device posts every object's INVALIDATE in the first passes and waits for the answers in
/// the second, so the device round trips overlap instead of adding up. Each object has its
/// own preallocated INVALIDATE for that (its [`IntervalNotifierOps::Pass`]); a second
/// invalidation of the same object while the first one's answer is pending (they may run in
/// parallel) finds the finish pass claimed and does a single pass with the context's shared
/// message, under the update lock, as before.
impl IntervalNotifierOps for UserptrMirror {
    type Locked = Locked;
    type Pass = InvalidateMsg;
    const TWO_PASS: bool = true;

    fn update_lock(&self) -> &Mutex<Locked> {
        &self.shared.update
    }

    fn invalidate(this: &IntervalNotifier<Self>, range: &Range<'_>, cur_seq: CurSeq) -> bool {
        Self::invalidate_range(this, range, cur_seq, None) == Invalidated::Done(true)
    }

    fn invalidate_start<'a>(
        this: &'a IntervalNotifier<Self>,
        range: &Range<'_>,
        cur_seq: CurSeq,
        slot: FinishSlot<'a, Self>,
    ) -> Start<'a, Self> {
        let Some(mut claim) = slot.claim() else {
            return Start::Done(Self::invalidate(this, range, cur_seq));
        };
        match Self::invalidate_range(this, range, cur_seq, Some(&*claim.pass())) {
            Invalidated::Posted => Start::Deferred(claim),
            // Nothing posted: `claim` is dropped, which releases the finish pass.
            Invalidated::Done(done) => Start::Done(done),
        }
    }

    fn invalidate_finish(this: &IntervalNotifier<Self>, msg: &mut InvalidateMsg) {
        this.data().shared.collect_flush(msg);
    }
}

/// A userptr object's notifier.
pub(crate) type UserptrNotifier = IntervalNotifier<UserptrMirror>;

/// Driver data of a GEM object.
#[pin_data]
pub(crate) struct VgpuObject {
    /// The mirror, set once right after the object is created (empty only until then).
    /// Lock-free to read: objects are used many at a time.
    pub(crate) notifier: SetOnce<Pin<KBox<UserptrNotifier>>>,
}

/// Arguments to create a userptr object.
pub(crate) struct UserptrArgs;

impl gem::DriverObject for VgpuObject {
    type Driver = VgpuDriver;
    type Args = UserptrArgs;

    fn new<Ctx: DeviceContext>(
        _dev: &VgpuDevice<Ctx>,
        _size: usize,
        _args: Self::Args,
    ) -> impl PinInit<Self, Error> {
        try_pin_init!(VgpuObject {
            notifier: SetOnce::default(),
        })
    }
}

/// A GEM object of this driver.
pub(crate) type Object = gem::Object<VgpuObject>;

/// Creates a userptr object over `[cpu, cpu + size)` of `mm` (the caller's).
pub(crate) fn create_userptr(
    dev: &VgpuDevice,
    mm: &MmWithUser,
    shared: Arc<Shared>,
    cpu: u64,
    size: u64,
    readonly: bool,
) -> Result<kernel::sync::aref::ARef<Object>> {
    if size == 0
        || size > MAX_USERPTR_SIZE
        || cpu % PAGE != 0
        || size % PAGE != 0
        || cpu.checked_add(size).is_none_or(|end| end > crate::pagetable::VA_LIMIT)
    {
        return Err(EINVAL);
    }
    // Every page starts stale; bits past the last page stay clear. The bitmap may be large
    // (vmalloc) and is the caller's memory (charged to its memcg).
    let pages = size / PAGE;
    let words = pages.div_ceil(64) as usize;
    let mut stale = KVVec::with_capacity(words, GFP_KERNEL_ACCOUNT)?;
    for w in 0..words as u64 {
        let left = pages - w * 64;
        let bits = if left >= 64 { u64::MAX } else { (1u64 << left) - 1 };
        stale.push(AtomicU64::new(bits), GFP_KERNEL_ACCOUNT)?;
    }
    // The object's own INVALIDATE, for the second pass of its notifier.
    let inval = InvalidateMsg::new(shared.ctx_id)?;
    let obj = Object::new(dev, size as usize, UserptrArgs)?;
    // The object's kernel memory is the caller's: charged to its memcg.
    let n = KBox::pin_init(
        IntervalNotifier::insert(
            mm,
            cpu as usize,
            size as usize,
            UserptrMirror {
                shared,
                cpu,
                size,
                readonly,
                gpu_va: AtomicU64::new(0),
                stale,
            },
            inval,
        ),
        GFP_KERNEL_ACCOUNT,
    )?;
    if !obj.notifier.populate(n) {
        return Err(EBUSY);
    }
    Ok(obj)
}

/// A userptr object mirrored for a job.
pub(crate) struct Validated<'a> {
    pub(crate) n: &'a UserptrNotifier,
}

impl Validated<'_> {
    /// Whether part of the object was invalidated since it was mirrored (under the update
    /// lock, which orders this against the invalidation that marked it).
    pub(crate) fn changed(&self, guard: &Guard<'_, Locked, MutexBackend>) -> bool {
        // Only the object's own context's update lock orders this read against the
        // invalidations that mark pages: under any other lock the answer means nothing, and
        // "changed" makes the caller revalidate (bounded) rather than commit.
        if !core::ptr::eq(guard.lock_ref(), &self.n.data().shared.update) {
            pr_err!("vgpu_svm: userptr commit check under a foreign lock\n");
            return true;
        }
        self.n.data().any_stale()
    }

    /// Whether GPU VA `va` lies in the object's binding.
    pub(crate) fn contains(&self, va: u64) -> bool {
        let m = self.n.data();
        let gpu = m.gpu_va.load(Ordering::Acquire);
        gpu != 0 && va >= gpu && va < gpu + m.size
    }
}

/// Makes sure `n`'s range is mirrored at its binding, re-mirroring only the pages that were
/// invalidated since they were last mirrored (each run with its own sequence retry).
pub(crate) fn validate<'a>(n: &'a UserptrNotifier, mm: &MmWithUser) -> Result<Validated<'a>> {
    let m = n.data();
    let gpu = m.gpu_va.load(Ordering::Acquire);
    if gpu == 0 {
        return Err(EINVAL);
    }
    for _ in 0..100 {
        let runs = m.stale_runs()?;
        if runs.is_empty() {
            return Ok(Validated { n });
        }
        for &(first, pages) in runs.iter() {
            // In chunks of at most one CPU-aligned 2 MiB block (so a 2 MiB leaf is still
            // possible): at most one page of pfns per hmm_range_fault call, whatever the
            // run's size (a 4 GiB run was a >4 MiB kmalloc: WARN and ENOMEM).
            let mut at = first;
            let end = first + pages;
            while at < end {
                let cpu = m.cpu + at as u64 * PAGE;
                let block_left = ((crate::pagetable::LARGE_PAGE - cpu % crate::pagetable::LARGE_PAGE) / PAGE) as usize;
                let n_pages = (end - at).min(block_left);
                let p = Placement { cpu, gpu: gpu + at as u64 * PAGE, writable: !m.readonly, avoid: &[] };
                mirror::populate(&m.shared, n, mm, p, n_pages, !m.readonly, mirror::Fault::All, || {
                    m.set_bits(at, at + n_pages, false)
                })?;
                at += n_pages;
            }
        }
    }
    Err(EBUSY)
}

/// Services a device fault inside a userptr binding (a context that can fault): re-mirrors
/// what was invalidated. A write to a read-only object is refused.
pub(crate) fn service_fault(v: &Validated<'_>, mm: &MmWithUser, va: u64, write: bool) -> Result {
    let m = v.n.data();
    if write && m.readonly {
        return Err(EPERM);
    }
    if !m.any_stale() {
        // Not an invalidation of this object: a write to a page the CPU had read-only
        // (COW) when it was mirrored. Mirror that page again, writable.
        let gpu = m.gpu_va.load(Ordering::Acquire);
        let page = (va.saturating_sub(gpu) / PAGE) as usize;
        m.set_bits(page, page + 1, true);
    }
    validate(v.n, mm).map(|_| ())
}
