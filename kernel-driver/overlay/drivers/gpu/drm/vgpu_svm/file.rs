// SPDX-License-Identifier: GPL-2.0

//! Per-open state (the GPU context) and the ioctls.

use core::sync::atomic::Ordering;
use kernel::{
    alloc::KVVec,
    drm::{self, gem::BaseObject},
    mm::{Mm, MmWithUser},
    mmu_notifier::IntervalNotifier,
    prelude::*,
    sync::{aref::ARef, Arc, Mutex},
    uaccess::UserSlice,
    uapi,
};

use crate::{
    context::{self, Running, Shared, SvmMirror, EVENTS},
    driver::{VgpuDevice, VgpuDriver},
    gem::{self, Object},
    gpu::{self, parse_stats},
    job::{self, Ops},
    pagetable::{PAGE, VA_LIMIT},
};

/// The SVM notifier of a context.
pub(crate) type SvmNotifier = IntervalNotifier<SvmMirror>;

/// A context's file-side state (under `File::state`).
struct Ctx {
    shared: Arc<Shared>,
    /// `/sys/kernel/debug/vgpu_svm/ctx<N>`.
    _debugfs: Pin<KBox<kernel::debugfs::File<Arc<Shared>>>>,
    /// The SVM notifier (SVM contexts). In an `Arc` (pinned, as every kernel `Arc`) so that a
    /// job takes its own reference under the state lock and runs without that lock, with no
    /// borrow of `Ctx` outliving it. CTX_CONFIG, which replaces or drops it, refuses
    /// (`EBUSY`) once a job was submitted, and a running job was (its `next_job` was taken
    /// under the same lock); were it ever dropped here while a job ran, the job's reference
    /// would keep the notifier registered, and its callbacks keeping the device coherent,
    /// until the job ended (removal then runs in that job's thread, with no lock held).
    svm: Option<Arc<SvmNotifier>>,
    /// Debug only: the legacy valid-flag notifier (see `debug.rs`).
    legacy: Option<Pin<KBox<kernel::mmu_notifier::RangeNotifier<context::LegacyFlag>>>>,
    /// Debug only: the 2019 scenario's pair of classic notifiers (`pair_notifiers`).
    pair: Option<context::PairNotifiers>,
    /// Bound userptr objects, sorted by GPU VA (bindings never overlap, so by range too):
    /// overlap checks and UNBIND lookups are binary searches. kvmalloc'ed: it may hold
    /// tens of thousands.
    bound: KVVec<ARef<Object>>,
    next_job: u64,
}

// A context's jobs run without the state lock (see `File::submit` and `context::Running`).
// The file's release (this `Drop`) needs no wait for them: DRM releases a file only when no
// ioctl holds it, so no SUBMIT (hence no job) of it is running then.

impl Drop for Ctx {
    fn drop(&mut self) {
        // Order: the device first. CTX_DESTROY aborts every job of the context (also one that
        // outlived its ioctl after a timeout or a fatal signal) and is answered once none of
        // its accesses is in flight. Only then may the notifiers go (until then they keep the
        // device's view coherent) and the page table be freed.
        // Under the update lock, so that no INVALIDATE of this context is in flight or sent
        // after it: the device would fail those for a context it no longer knows (and the
        // callback would reset the device). Callbacks that come before the notifiers are
        // removed below see `destroyed` and skip the round trip.
        let guard = self.shared.update.lock();
        // An INVALIDATE posted by a userptr notifier's first pass may still await its answer:
        // wait for its second pass (each waits at most `cmd_timeout_ms`, then resets the
        // device and is done), so the device never sees this context's INVALIDATE after its
        // CTX_DESTROY. None is posted after this: the count is 0 under the lock we keep
        // until `destroyed` is set.
        let max_ms = gpu::cmd_timeout_ms().saturating_mul(2).saturating_add(1);
        let mut guard = self.shared.relock_until(guard, max_ms, |l| l.posted_flushes == 0);
        // The message is preallocated: nothing allocates under the lock.
        let destroyed = match self.shared.destroy.send(&self.shared.ctrl) {
            // ENODEV: the queues are down because the device is being (or was) reset or
            // unbound. `reset_device` returns once that reset is complete (it serializes with
            // both), and a reset device touches no memory: freeing is safe then.
            Err(e) if e == ENODEV => {
                self.shared.ctrl.reset_device();
                Ok(())
            }
            r => r,
        };
        guard.destroyed = destroyed.is_ok();
        drop(guard);
        if let Err(e) = destroyed {
            // The device may still walk the page table and touch the mirrored pages: keep the
            // page table, the notifiers and the objects' mirrors for good (a leak, logged),
            // rather than free memory the device can reach.
            pr_err!(
                "vgpu_svm: ctx {}: CTX_DESTROY failed ({e:?}); keeping its page table and notifiers (leaked)\n",
                self.shared.ctx_id
            );
            self.shared.broken.store(true, Ordering::Release);
            core::mem::forget(self.svm.take());
            core::mem::forget(self.legacy.take());
            core::mem::forget(self.pair.take());
            core::mem::forget(core::mem::replace(&mut self.bound, KVVec::new()));
            core::mem::forget(self.shared.clone());
            return;
        }
        // Stop the callbacks (removal waits for running ones).
        self.svm = None;
        self.legacy = None;
        self.pair = None;
        for o in self.bound.iter() {
            if let Some(n) = o.notifier.as_ref() {
                n.data().gpu_va.store(0, Ordering::Release);
            }
        }
        self.bound.clear();
    }
}

/// The GPU VA range `[start, end)` of a bound object (stable under the state lock, and while
/// a job of the context runs: see `File::submit`; an object without a mirror, which is never
/// bound, reads as empty).
fn range_of(o: &Object) -> (u64, u64) {
    o.notifier.as_ref().map_or((0, 0), |b| {
        let s = b.data().gpu_va.load(Ordering::Acquire);
        (s, s.saturating_add(b.data().size))
    })
}

impl Ctx {
    /// The GPU VA ranges `[start, end)` of the bound objects, by GPU VA (stable under the
    /// state lock).
    fn bindings(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.bound.iter().filter_map(|o| o.notifier.as_ref()).map(|b| {
            let s = b.data().gpu_va.load(Ordering::Acquire);
            (s, s.saturating_add(b.data().size))
        })
    }

    /// Whether `[start, end)` overlaps a binding: O(log n) (`bound` is sorted and its ranges
    /// are disjoint, so only the last binding that starts below `end` can reach `start`).
    fn overlaps(&self, start: u64, end: u64) -> bool {
        let i = self.bound.partition_point(|o| range_of(o).0 < end);
        i > 0 && range_of(&self.bound[i - 1]).1 > start
    }

    /// The index in `bound` of the binding that starts at `gpu_va`: O(log n).
    fn find(&self, gpu_va: u64) -> Option<usize> {
        self.bound.binary_search_by_key(&gpu_va, |o| range_of(o).0).ok()
    }
}

/// Batches up to this size change `bound` in place (a binary search and a memmove per
/// entry, amortized growth: a single BIND at the end costs no copy); larger ones merge into
/// (or filter out of) the list in one O(n + k) pass.
const IN_PLACE_MAX: usize = 32;

/// Protocol minor from which the device takes BIND_ARRAY and UNBIND_ARRAY (0.6).
const BIND_ARRAY_MINOR: u32 = 6;

/// A binding as the device learns of it.
#[derive(Clone, Copy)]
struct DevBinding {
    gpu_va: u64,
    cpu_va: u64,
    size: u64,
}

/// What the device said to a run of BIND/UNBIND commands.
enum DevAnswer {
    /// Every command was answered OK.
    Ok,
    /// A command was answered with an error: the device made none of that command's
    /// changes (it applies each all or nothing); the earlier ones stand.
    Refused,
    /// A command went unanswered (or got a nonsensical answer): the device may or may not
    /// have applied it.
    Unanswered(Error),
}

/// Tells the device of `list`'s bindings (or, with `unbind`, that they are gone): one
/// BIND_ARRAY/UNBIND_ARRAY per `VGPU_SVM_MAX_BIND_ENTRIES` entries, or one BIND/UNBIND per
/// entry for a device older than protocol 0.6 (`batched` false). Stops at the first answer
/// that is not OK; returns how many entries the device applied, and its answer. Allocates
/// (one message buffer per command): never under the update lock.
fn device_apply(shared: &Shared, batched: bool, unbind: bool, list: &[DevBinding]) -> (usize, DevAnswer) {
    let per = if batched { uapi::VGPU_SVM_MAX_BIND_ENTRIES as usize } else { 1 };
    let hdr = core::mem::size_of::<uapi::vgpu_svm_cmd_hdr>();
    let mut done = 0usize;
    for chunk in list.chunks(per) {
        let n = chunk.len();
        let r = if batched {
            let entry = if unbind {
                core::mem::size_of::<uapi::vgpu_svm_unbind_entry>()
            } else {
                core::mem::size_of::<uapi::vgpu_svm_bind_entry>()
            };
            let cmd = if unbind {
                uapi::vgpu_svm_cmd_type_VGPU_SVM_CMD_UNBIND_ARRAY
            } else {
                uapi::vgpu_svm_cmd_type_VGPU_SVM_CMD_BIND_ARRAY
            };
            // At most 1024 entries of 24 bytes: no overflow.
            let body = core::mem::size_of::<uapi::vgpu_svm_cmd_bind_array>() - hdr + n * entry;
            shared.ctrl.submit(shared.ctx_id, cmd, body, gpu::cmd_timeout_ms(), |w| {
                w.u32(n as u32).u32(0);
                for b in chunk {
                    if unbind {
                        w.u64(b.gpu_va).u64(b.size);
                    } else {
                        w.u64(b.gpu_va).u64(b.cpu_va).u64(b.size);
                    }
                }
            })
        } else if unbind {
            let b = chunk[0];
            shared.ctrl.submit(shared.ctx_id, uapi::vgpu_svm_cmd_type_VGPU_SVM_CMD_UNBIND, 16, gpu::cmd_timeout_ms(), |w| {
                w.u64(b.gpu_va).u64(b.size);
            })
        } else {
            let b = chunk[0];
            let body = core::mem::size_of::<uapi::vgpu_svm_cmd_bind>() - hdr;
            shared.ctrl.submit(shared.ctx_id, uapi::vgpu_svm_cmd_type_VGPU_SVM_CMD_BIND, body, gpu::cmd_timeout_ms(), |w| {
                w.u64(b.gpu_va).u64(b.cpu_va).u64(b.size);
            })
        };
        match r.and_then(|r| gpu::parse_resp(&r)) {
            Ok(gpu::Resp::Ok { .. }) => done += n,
            Ok(gpu::Resp::Error(code)) => {
                pr_err!(
                    "vgpu_svm: ctx {}: device refused {} of {n} binding(s) (error {code})\n",
                    shared.ctx_id,
                    if unbind { "UNBIND" } else { "BIND" }
                );
                return (done, DevAnswer::Refused);
            }
            Ok(gpu::Resp::Fault(_)) => return (done, DevAnswer::Unanswered(EIO)),
            Err(e) => return (done, DevAnswer::Unanswered(e)),
        }
    }
    (done, DevAnswer::Ok)
}

/// [`device_apply`] all or nothing: when the device refuses a command, what it applied
/// before is undone (the reverse commands), so that the device's bindings are the driver's
/// again; `EIO` then. A command that goes unanswered (also one of the undo) leaves the
/// device's bindings unknown: the context is put out of service (`broken`) and the wait's
/// error returned.
fn device_apply_all(shared: &Shared, batched: bool, unbind: bool, list: &[DevBinding]) -> Result {
    let (done, answer) = device_apply(shared, batched, unbind, list);
    match answer {
        DevAnswer::Ok => Ok(()),
        DevAnswer::Unanswered(e) => {
            shared.broken.store(true, Ordering::Release);
            Err(e)
        }
        DevAnswer::Refused => {
            if done > 0 {
                let (undone, a) = device_apply(shared, batched, !unbind, &list[..done]);
                if undone != done || !matches!(a, DevAnswer::Ok) {
                    pr_err!("vgpu_svm: ctx {}: undoing a refused batch failed; context out of service\n", shared.ctx_id);
                    shared.broken.store(true, Ordering::Release);
                }
            }
            Err(EIO)
        }
    }
}

/// An error of a BIND/UNBIND batch, and the entry it is due to (if one is).
type BatchError = (Error, Option<u32>);

/// Runs of touching GPU VA ranges, from ranges sorted by start: one clear per run.
fn coalesce(sorted: impl Iterator<Item = (u64, u64)>, mut f: impl FnMut(u64, u64) -> Result) -> Result {
    let mut cur: Option<(u64, u64)> = None;
    for (s, e) in sorted {
        cur = match cur {
            Some((cs, ce)) if s == ce => Some((cs, e)),
            Some((cs, ce)) => {
                f(cs, ce)?;
                Some((s, e))
            }
            None => Some((s, e)),
        };
    }
    match cur {
        Some((cs, ce)) => f(cs, ce),
        None => Ok(()),
    }
}

/// Sorts `v` by `key`, in place: a heapsort, O(n log n) with neither recursion nor scratch
/// space (core's `sort_unstable` keeps buffers on the stack and, sorting a few thousand
/// entries, ran past the 16 KiB kernel stack).
fn heap_sort_by_key<T, K: Ord>(v: &mut [T], key: impl Fn(&T) -> K) {
    let sift = |v: &mut [T], mut root: usize, end: usize| loop {
        // `end` is at most the slice's length, far below usize::MAX / 2: no overflow.
        let mut child = 2 * root + 1;
        if child >= end {
            break;
        }
        if child + 1 < end && key(&v[child]) < key(&v[child + 1]) {
            child += 1;
        }
        if key(&v[root]) >= key(&v[child]) {
            break;
        }
        v.swap(root, child);
        root = child;
    };
    let n = v.len();
    for start in (0..n / 2).rev() {
        sift(v, start, n);
    }
    for end in (1..n).rev() {
        v.swap(0, end);
        sift(v, 0, end);
    }
}

/// Reads `count` (at most `VGPU_SVM_BIND_ARRAY_MAX`) `struct drm_vgpu_svm_bind` from user
/// memory at `addr`.
fn read_binds(addr: u64, count: u32) -> Result<KVVec<uapi::drm_vgpu_svm_bind>> {
    const SIZE: usize = core::mem::size_of::<uapi::drm_vgpu_svm_bind>();
    let n = count as usize;
    let mut out = KVVec::with_capacity(n, GFP_KERNEL)?;
    // At most 4096 * 16 bytes: no overflow.
    let mut r = UserSlice::new(UserPtr::from_addr(addr as usize), n * SIZE).reader();
    for _ in 0..n {
        let mut raw = [0u8; SIZE];
        r.read_slice(&mut raw)?;
        let handle = u32::from_ne_bytes([raw[0], raw[1], raw[2], raw[3]]);
        let pad = u32::from_ne_bytes([raw[4], raw[5], raw[6], raw[7]]);
        let gpu_va = u64::from_ne_bytes([raw[8], raw[9], raw[10], raw[11], raw[12], raw[13], raw[14], raw[15]]);
        out.push(uapi::drm_vgpu_svm_bind { handle, pad, gpu_va }, GFP_KERNEL)?;
    }
    Ok(out)
}

struct FileState {
    ctx: Option<Ctx>,
}

/// One open DRM file: one GPU context, bound to the opener's mm.
#[pin_data]
pub(crate) struct File {
    /// The opener's mm: only this mm may use the context (a fork child gets `EPERM`).
    mm: ARef<Mm>,
    /// Serializes the ioctls that create the context or change its configuration and
    /// bindings (and STATS's reading of it). Held across their device round trips, and by
    /// BIND/UNBIND/BIND_ARRAY while they wait for the context's running jobs; SUBMIT holds it
    /// only to take its snapshot, not while its job runs.
    #[pin]
    state: Mutex<FileState>,
    /// The context's shared part, for fdinfo (never held for long, unlike `state`).
    #[pin]
    shared: Mutex<Option<Arc<Shared>>>,
}

impl drm::file::DriverFile for File {
    type Driver = VgpuDriver;

    fn open(_dev: &VgpuDevice) -> Result<Pin<KBox<Self>>> {
        let task = kernel::current!();
        let mm: ARef<Mm> = ARef::from(&**task.mm().ok_or(EINVAL)?);
        KBox::pin_init(
            try_pin_init!(Self {
                mm,
                state <- kernel::new_mutex!(FileState { ctx: None }),
                shared <- kernel::new_mutex!(None),
            }),
            GFP_KERNEL,
        )
    }
}

/// The caller's mm if it is the file's (else `EPERM`).
fn owner_mm(file: &File) -> Result<ARef<MmWithUser>> {
    let task = kernel::current!();
    let cur = task.mm().ok_or(EPERM)?;
    if cur.as_raw() != file.mm.as_raw() {
        return Err(EPERM);
    }
    Ok(ARef::from(cur))
}

/// debugfs `ctx<N>`: the context's state, counters and mapped ranges.
fn show_ctx(shared: &Arc<Shared>, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
    shared.describe(f, false)
}

impl File {
    /// fdinfo keys of this file's context (none before it has one).
    pub(crate) fn show_fdinfo(&self, out: &mut dyn core::fmt::Write) {
        if let Some(s) = self.shared.lock().as_ref() {
            let _ = s.describe(out, true);
        }
    }

    /// The context, created on first use: a device context with our page table and the mm's
    /// CPU page table for the checker.
    fn ctx<'a>(&self, dev: &VgpuDevice, st: &'a mut FileState) -> Result<&'a mut Ctx> {
        if st.ctx.is_none() {
            let id = dev.next_ctx_id.fetch_add(1, Ordering::Relaxed);
            let shared = Shared::new(id, dev.ctrl.clone(), self.mm.clone(), &context::DEVICE_EVENTS)?;
            shared.ctrl.ctx_create(id)?;
            let (cpu_root, levels, direct_map_base) = shared.cpu_page_table();
            let root = shared.pt.root_phys();
            // A device of protocol 0.5 or later takes the TLB generation (the idle fast path of
            // `Shared::flush`); an older one gets the 40-byte SET_AS of 0.4 and every flush is
            // an INVALIDATE. (The major version was checked at probe.)
            let tlb_gen = ((dev.capset.protocol_version & 0xffff) >= 5).then(|| shared.tlb_gen_phys());
            let hdr = core::mem::size_of::<uapi::vgpu_svm_cmd_hdr>();
            let body = match tlb_gen {
                Some(_) => core::mem::size_of::<uapi::vgpu_svm_cmd_set_as>() - hdr,
                None => uapi::VGPU_SVM_CMD_SET_AS_SIZE_V0_4 as usize - hdr,
            };
            let set_as = shared.ctrl.submit(id, uapi::vgpu_svm_cmd_type_VGPU_SVM_CMD_SET_AS, body, gpu::cmd_timeout_ms(), |w| {
                // direct_map_base: the device also checks that every frame it touches is in the
                // kernel's direct map (memfd_secret memory is not).
                w.u64(root).u64(cpu_root).u32(levels).u32(0).u64(direct_map_base);
                if let Some(g) = tlb_gen {
                    w.u64(g);
                }
            });
            let ok = set_as.and_then(|r| match gpu::parse_resp(&r)? {
                gpu::Resp::Ok { .. } => Ok(()),
                _ => Err(EIO),
            });
            if let Err(e) = ok {
                let _ = shared.ctrl.ctx_destroy(id);
                return Err(e);
            }
            // No job ran yet: nothing to order this against.
            shared.tlb_gen_on.store(tlb_gen.is_some(), Ordering::Relaxed);
            let name = kernel::str::CString::try_from_fmt(fmt!("ctx{id}"))?;
            let debugfs = KBox::pin_init(dev.debugfs.read_callback_file(&name, shared.clone(), &show_ctx), GFP_KERNEL)?;
            *self.shared.lock() = Some(shared.clone());
            st.ctx = Some(Ctx { shared, _debugfs: debugfs, svm: None, legacy: None, pair: None, bound: KVVec::new(), next_job: 1 });
        }
        st.ctx.as_mut().ok_or(EINVAL)
    }

    /// DRM_IOCTL_VGPU_SVM_GET_PARAM: a device or driver parameter.
    pub(crate) fn get_param(
        dev: &VgpuDevice,
        req: &mut uapi::drm_vgpu_svm_get_param,
        _file: &drm::File<File>,
    ) -> Result<u32> {
        if req.pad != 0 {
            return Err(EINVAL);
        }
        let cap = &dev.capset;
        req.value = match req.param {
            uapi::VGPU_SVM_PARAM_PROTOCOL_VERSION => cap.protocol_version.into(),
            uapi::VGPU_SVM_PARAM_CAPSET_ID => cap.id.into(),
            uapi::VGPU_SVM_PARAM_MAX_CONTEXTS => cap.max_contexts.into(),
            uapi::VGPU_SVM_PARAM_VA_BITS => cap.va_bits.into(),
            uapi::VGPU_SVM_PARAM_FEATURES => cap.features,
            _ => return Err(EINVAL),
        };
        Ok(0)
    }

    /// DRM_IOCTL_VGPU_SVM_CTX_CONFIG: enable SVM (device faults) for the context.
    pub(crate) fn ctx_config(
        dev: &VgpuDevice,
        req: &mut uapi::drm_vgpu_svm_ctx_config,
        file: &drm::File<File>,
    ) -> Result<u32> {
        if req.pad != 0 || req.flags & !uapi::VGPU_SVM_CTX_SVM != 0 {
            return Err(EINVAL);
        }
        let this = file.inner();
        let mm = owner_mm(&this)?;
        let mut st = this.state.lock();
        let ctx = this.ctx(dev, &mut st)?;
        // A running job took its job id under this lock, so `next_job != 1` already refuses
        // while one runs; the count makes that plain (no job may see the SVM notifier or the
        // context's mode change: this must never need to wait).
        if ctx.next_job != 1 || ctx.shared.running.count() != 0 {
            return Err(EBUSY);
        }
        let want = req.flags & uapi::VGPU_SVM_CTX_SVM != 0;
        let hold_us = crate::debug::pair_notifiers();
        if hold_us > 0 {
            // Debug only (see `debug.rs`): not with an interval notifier on the same mm.
            if want || ctx.svm.is_some() {
                return Err(EINVAL);
            }
            if ctx.pair.is_none() {
                ctx.pair = Some(context::pair_notifiers(&mm)?);
            }
            crate::debug::hold(hold_us, None);
            return Ok(0);
        }
        if want && ctx.svm.is_none() {
            ctx.svm = Some(context::svm_notifier(&mm, ctx.shared.clone())?);
            if crate::debug::legacy_valid_flag() {
                ctx.legacy = Some(context::legacy_notifier(&mm, ctx.shared.clone())?);
            }
        } else if !want {
            ctx.svm = None;
            ctx.legacy = None;
        }
        ctx.shared.svm.store(want, Ordering::Release);
        Ok(0)
    }

    /// DRM_IOCTL_VGPU_SVM_USERPTR_CREATE.
    pub(crate) fn userptr_create(
        dev: &VgpuDevice,
        req: &mut uapi::drm_vgpu_svm_userptr_create,
        file: &drm::File<File>,
    ) -> Result<u32> {
        if req.flags & !uapi::VGPU_SVM_USERPTR_READONLY != 0 {
            return Err(EINVAL);
        }
        let this = file.inner();
        let mm = owner_mm(&this)?;
        let shared = {
            let mut st = this.state.lock();
            this.ctx(dev, &mut st)?.shared.clone()
        };
        let readonly = req.flags & uapi::VGPU_SVM_USERPTR_READONLY != 0;
        let obj = gem::create_userptr(dev, &mm, shared, req.userptr, req.size, readonly)?;
        req.handle = obj.create_handle(file)?;
        Ok(0)
    }

    /// DRM_IOCTL_VGPU_SVM_BIND: a batch of one.
    pub(crate) fn bind(dev: &VgpuDevice, req: &mut uapi::drm_vgpu_svm_bind, file: &drm::File<File>) -> Result<u32> {
        let one = [uapi::drm_vgpu_svm_bind { handle: req.handle, pad: req.pad, gpu_va: req.gpu_va }];
        Self::bind_entries(dev, file, &one).map_err(|(e, _)| e)?;
        Ok(0)
    }

    /// DRM_IOCTL_VGPU_SVM_UNBIND: a batch of one.
    pub(crate) fn unbind(dev: &VgpuDevice, req: &mut uapi::drm_vgpu_svm_bind, file: &drm::File<File>) -> Result<u32> {
        let one = [uapi::drm_vgpu_svm_bind { handle: req.handle, pad: req.pad, gpu_va: req.gpu_va }];
        Self::unbind_entries(dev, file, &one).map_err(|(e, _)| e)?;
        Ok(0)
    }

    /// DRM_IOCTL_VGPU_SVM_BIND_ARRAY: many BINDs (or UNBINDs), all or nothing.
    pub(crate) fn bind_array(
        dev: &VgpuDevice,
        req: &mut uapi::drm_vgpu_svm_bind_array,
        file: &drm::File<File>,
    ) -> Result<u32> {
        req.failed = uapi::VGPU_SVM_BIND_ARRAY_NO_ENTRY;
        if req.pad != 0
            || req.flags & !uapi::VGPU_SVM_BIND_ARRAY_UNBIND != 0
            || req.count == 0
            || req.count > uapi::VGPU_SVM_BIND_ARRAY_MAX
        {
            return Err(EINVAL);
        }
        owner_mm(&file.inner())?;
        let entries = read_binds(req.binds, req.count)?;
        let r = if req.flags & uapi::VGPU_SVM_BIND_ARRAY_UNBIND != 0 {
            Self::unbind_entries(dev, file, &entries)
        } else {
            Self::bind_entries(dev, file, &entries)
        };
        r.map_err(|(e, at)| {
            if let Some(i) = at {
                req.failed = i;
            }
            e
        })?;
        Ok(0)
    }

    /// Binds every entry or none. Checks everything (pad, alignment, handles, ownership, the
    /// VA limit, overlaps with the bindings and among the entries) before the device learns
    /// of any; allocates everything before the update lock; takes the update lock twice per
    /// batch (clearing SVM entries, then publishing the bindings), not per object.
    fn bind_entries(dev: &VgpuDevice, file: &drm::File<File>, entries: &[uapi::drm_vgpu_svm_bind]) -> Result<(), BatchError> {
        let n = entries.len();
        for (i, b) in entries.iter().enumerate() {
            if b.pad != 0 || b.gpu_va == 0 || b.gpu_va % PAGE != 0 {
                return Err((EINVAL, Some(i as u32)));
            }
        }
        let this = file.inner();
        owner_mm(&this).map_err(|e| (e, None))?;
        let no = |e: Error| (e, None);
        let mut objs = KVVec::<ARef<Object>>::with_capacity(n, GFP_KERNEL).map_err(|e| no(e.into()))?;
        for (i, b) in entries.iter().enumerate() {
            let o = Object::lookup_handle(file, b.handle).map_err(|_| (ENOENT, Some(i as u32)))?;
            objs.push(o, GFP_KERNEL).map_err(|e| no(e.into()))?;
        }
        // (gpu_va, end, entry), then sorted by gpu_va; (object, entry), sorted by object.
        let mut order = KVVec::<(u64, u64, u32)>::with_capacity(n, GFP_KERNEL).map_err(|e| no(e.into()))?;
        let mut same = KVVec::<(usize, u32)>::with_capacity(n, GFP_KERNEL).map_err(|e| no(e.into()))?;
        let mut list = KVVec::<DevBinding>::with_capacity(n, GFP_KERNEL).map_err(|e| no(e.into()))?;

        let mut st = this.state.lock();
        let ctx = this.ctx(dev, &mut st).map_err(no)?;
        for (i, (b, o)) in entries.iter().zip(objs.iter()).enumerate() {
            let at = Some(i as u32);
            let m = o.notifier.as_ref().ok_or((EINVAL, at))?.data();
            if !Arc::ptr_eq(&m.shared, &ctx.shared) {
                return Err((EINVAL, at));
            }
            let end = b.gpu_va.checked_add(m.size).ok_or((EINVAL, at))?;
            if end > VA_LIMIT {
                return Err((EINVAL, at));
            }
            if m.gpu_va.load(Ordering::Acquire) != 0 || ctx.overlaps(b.gpu_va, end) {
                return Err((EBUSY, at));
            }
            order.push((b.gpu_va, end, i as u32), GFP_KERNEL).map_err(|e| no(e.into()))?;
            same.push((core::ptr::from_ref::<Object>(o) as usize, i as u32), GFP_KERNEL).map_err(|e| no(e.into()))?;
            list.push(DevBinding { gpu_va: b.gpu_va, cpu_va: m.cpu, size: m.size }, GFP_KERNEL).map_err(|e| no(e.into()))?;
        }
        // Among the entries: no two ranges overlap (sorted, only neighbours can), no object
        // twice. The later entry of a pair is the one to blame.
        heap_sort_by_key(&mut order, |&(s, _, _)| s);
        for w in order.windows(2) {
            if w[0].1 > w[1].0 {
                return Err((EBUSY, Some(w[0].2.max(w[1].2))));
            }
        }
        heap_sort_by_key(&mut same, |&x| x);
        for w in same.windows(2) {
            if w[0].0 == w[1].0 {
                return Err((EBUSY, Some(w[0].1.max(w[1].1))));
            }
        }
        // Allocate before the device learns of the bindings: nothing may fail after it did.
        let in_place = n <= IN_PLACE_MAX;
        let mut merged = if in_place {
            ctx.bound.reserve(n, GFP_KERNEL).map_err(|e| no(e.into()))?;
            KVVec::new()
        } else {
            let total = ctx.bound.len().checked_add(n).ok_or((ENOMEM, None))?;
            KVVec::<ARef<Object>>::with_capacity(total, GFP_KERNEL).map_err(|e| no(e.into()))?
        };
        // Before the first change: wait for the context's running jobs (no job sees its
        // bindings change; none starts meanwhile, we hold the state lock).
        ctx.shared.running.wait_idle(Self::idle_wait_ms()).map_err(no)?;
        // The bindings own their ranges from now on: SVM entries there (identity mappings, or
        // a 2 MiB leaf overlapping one) go first, and the device drops their translations,
        // once per run of touching ranges. No job runs meanwhile (waited for above, and none
        // starts while we hold the state lock), so nothing maps them again. A failure here
        // changed nothing the process can see.
        {
            let g = ctx.shared.update.lock();
            let reason = uapi::vgpu_svm_inval_reason_VGPU_SVM_INVAL_BIND;
            coalesce(order.iter().map(|&(s, e, _)| (s, e)), |s, e| {
                ctx.shared.clear_and_flush(&g, s, e, reason).map(|_| ())
            })
            .map_err(no)?;
        }
        let batched = (dev.capset.protocol_version & 0xffff) >= BIND_ARRAY_MINOR;
        device_apply_all(&ctx.shared, batched, false, &list).map_err(no)?;
        {
            let _g = ctx.shared.update.lock();
            for (b, o) in entries.iter().zip(objs.iter()) {
                if let Some(n) = o.notifier.as_ref() {
                    n.data().gpu_va.store(b.gpu_va, Ordering::Release);
                    // Nothing is mirrored at the new VA yet: every page needs validation.
                    n.data().mark_all_stale();
                }
            }
        }
        // Into the sorted list, without allocating (reserved above).
        if in_place {
            for &(gva, _, i) in order.iter() {
                let at = ctx.bound.partition_point(|o| range_of(o).0 < gva);
                if let Some(o) = objs.get(i as usize) {
                    if ctx.bound.insert_within_capacity(at, o.clone()).is_err() {
                        // Cannot happen (reserved): see `keep`.
                        pr_err!("vgpu_svm: bound-object list short of its reservation\n");
                    }
                }
            }
            return Ok(());
        }
        // A large batch: merge the new bindings (by GPU VA) with the list in one pass.
        let mut old = core::mem::replace(&mut ctx.bound, KVVec::new());
        let mut rest = old.drain_all().peekable();
        for &(gva, _, i) in order.iter() {
            while let Some(o) = rest.next_if(|o| range_of(o).0 < gva) {
                Self::keep(&mut merged, o);
            }
            if let Some(o) = objs.get(i as usize) {
                Self::keep(&mut merged, o.clone());
            }
        }
        for o in rest {
            Self::keep(&mut merged, o);
        }
        ctx.bound = merged;
        Ok(())
    }

    /// Pushes a bound object into a list reserved for it (`bind_entries`).
    fn keep(list: &mut KVVec<ARef<Object>>, o: ARef<Object>) {
        if list.push_within_capacity(o).is_err() {
            // Cannot happen (the capacity was reserved for every object): a driver bug. The
            // object stays bound on the device and in its mirror; it is only dropped from the
            // list, so a later UNBIND gets ENOENT.
            pr_err!("vgpu_svm: bound-object list short of its reservation\n");
        }
    }

    /// Unbinds every entry or none (entries name bindings by `gpu_va`; handles are ignored).
    fn unbind_entries(dev: &VgpuDevice, file: &drm::File<File>, entries: &[uapi::drm_vgpu_svm_bind]) -> Result<(), BatchError> {
        let n = entries.len();
        for (i, b) in entries.iter().enumerate() {
            if b.pad != 0 {
                return Err((EINVAL, Some(i as u32)));
            }
        }
        let this = file.inner();
        owner_mm(&this).map_err(|e| (e, None))?;
        let no = |e: Error| (e, None);
        // (index in `bound`, entry), sorted by index.
        let mut pos = KVVec::<(usize, u32)>::with_capacity(n, GFP_KERNEL).map_err(|e| no(e.into()))?;
        let mut list = KVVec::<DevBinding>::with_capacity(n, GFP_KERNEL).map_err(|e| no(e.into()))?;
        let mut st = this.state.lock();
        // Nothing is bound on a file without a context: do not create one to find that out.
        let ctx = st.ctx.as_mut().ok_or((ENOENT, Some(0)))?;
        for (i, b) in entries.iter().enumerate() {
            let p = ctx.find(b.gpu_va).ok_or((ENOENT, Some(i as u32)))?;
            let m = ctx.bound[p].notifier.as_ref().ok_or((ENOENT, Some(i as u32)))?.data();
            pos.push((p, i as u32), GFP_KERNEL).map_err(|e| no(e.into()))?;
            list.push(DevBinding { gpu_va: b.gpu_va, cpu_va: m.cpu, size: m.size }, GFP_KERNEL).map_err(|e| no(e.into()))?;
        }
        heap_sort_by_key(&mut pos, |&x| x);
        for w in pos.windows(2) {
            if w[0].0 == w[1].0 {
                return Err((EINVAL, Some(w[0].1.max(w[1].1))));
            }
        }
        // Wait for the context's running jobs: none may see a binding go (and none starts
        // while we hold the state lock).
        ctx.shared.running.wait_idle(Self::idle_wait_ms()).map_err(no)?;
        // The device first: if it refuses, nothing changed here (and what it did is undone).
        // No job runs meanwhile, so no device access sees a binding the checker no longer
        // knows.
        device_apply_all(&ctx.shared, (dev.capset.protocol_version & 0xffff) >= BIND_ARRAY_MINOR, true, &list)
            .map_err(no)?;
        // Then the entries go and the device drops their translations: one update-lock
        // section for the batch, one clear per run of touching ranges (sorted: `bound` is).
        let cleared = {
            let g = ctx.shared.update.lock();
            for &(p, _) in pos.iter() {
                if let Some(n) = ctx.bound[p].notifier.as_ref() {
                    n.data().gpu_va.store(0, Ordering::Release);
                }
            }
            let reason = uapi::vgpu_svm_inval_reason_VGPU_SVM_INVAL_UNBIND;
            // `pos` is sorted by index in `bound`, so by GPU VA; `list` is in entry order.
            coalesce(
                pos.iter().filter_map(|&(_, i)| list.get(i as usize)).map(|d| (d.gpu_va, d.gpu_va.saturating_add(d.size))),
                |s, e| ctx.shared.clear_and_flush(&g, s, e, reason).map(|_| ()),
            )
        };
        // Drop the objects from the list (no allocation); freeing one removes its notifier,
        // which must not happen under the update lock. A few: removed in place, from the
        // highest index down (the lower ones stay valid).
        if n <= IN_PLACE_MAX {
            for &(p, _) in pos.iter().rev() {
                let _ = ctx.bound.remove(p);
            }
            return cleared.map_err(no);
        }
        let mut k = 0usize;
        let mut idx = 0usize;
        ctx.bound.retain(|_| {
            let gone = pos.get(k).is_some_and(|&(p, _)| p == idx);
            if gone {
                k += 1;
            }
            idx += 1;
            !gone
        });
        // A failed flush reset the device (the context is out of service): report it.
        cleared.map_err(no)
    }

    /// How long BIND, UNBIND and BIND_ARRAY wait for the context's running jobs
    /// ([`Running::wait_idle`]): a job's device round trip (the job timeout), the ABORT that
    /// may follow it (the command timeout), and a second of slack for the rest of SUBMIT.
    fn idle_wait_ms() -> u32 {
        gpu::job_timeout_ms().saturating_add(gpu::cmd_timeout_ms()).saturating_add(1000)
    }

    /// DRM_IOCTL_VGPU_SVM_SUBMIT: run a job and wait for it. The file's state lock is held
    /// only for the snapshot below; the job runs without it, so jobs of one file run
    /// concurrently (each with its own job id; the device runs them side by side).
    pub(crate) fn submit(dev: &VgpuDevice, req: &mut uapi::drm_vgpu_svm_submit, file: &drm::File<File>) -> Result<u32> {
        if req.flags & !uapi::VGPU_SVM_SUBMIT_PREFAULT != 0 || req.pad != 0 || req.nr_ops == 0 || req.nr_ops > uapi::VGPU_SVM_MAX_OPS || req.nr_handles > 1024 {
            return Err(EINVAL);
        }
        let this = file.inner();
        let mm = owner_mm(&this)?;
        let op_size = core::mem::size_of::<uapi::drm_vgpu_svm_op>();
        let mut ops = KVec::<uapi::drm_vgpu_svm_op>::with_capacity(req.nr_ops as usize, GFP_KERNEL)?;
        {
            let mut r = UserSlice::new(UserPtr::from_addr(req.ops as usize), req.nr_ops as usize * op_size).reader();
            for _ in 0..req.nr_ops {
                let mut raw = [0u8; core::mem::size_of::<uapi::drm_vgpu_svm_op>()];
                r.read_slice(&mut raw)?;
                let le = |a: usize| u64::from_ne_bytes([raw[a], raw[a + 1], raw[a + 2], raw[a + 3], raw[a + 4], raw[a + 5], raw[a + 6], raw[a + 7]]);
                let kind = u32::from_ne_bytes([raw[0], raw[1], raw[2], raw[3]]);
                let flags = u32::from_ne_bytes([raw[4], raw[5], raw[6], raw[7]]);
                ops.push(uapi::drm_vgpu_svm_op { kind, flags, dst: le(8), src: le(16), len: le(24), value: le(32) }, GFP_KERNEL)?;
            }
        }
        let ops = Ops(ops);
        ops.check()?;
        let mut handles = KVec::<u32>::with_capacity(req.nr_handles as usize, GFP_KERNEL)?;
        if req.nr_handles > 0 {
            let mut r = UserSlice::new(UserPtr::from_addr(req.handles as usize), req.nr_handles as usize * 4).reader();
            for _ in 0..req.nr_handles {
                let mut b = [0u8; 4];
                r.read_slice(&mut b)?;
                handles.push(u32::from_ne_bytes(b), GFP_KERNEL)?;
            }
        }
        let mut objs = KVec::<ARef<Object>>::with_capacity(handles.len(), GFP_KERNEL)?;
        for h in handles.iter() {
            objs.push(Object::lookup_handle(file, *h).map_err(|_| ENOENT)?, GFP_KERNEL)?;
        }

        // The snapshot, under the state lock: the job's id, the context, the SVM notifier (a
        // reference of our own) and the bindings (a copy); and the job counted as running
        // until `_running` drops, on every path out of here. The bindings cannot change while
        // it runs: BIND, UNBIND and BIND_ARRAY wait for the count to be 0 under the state
        // lock. CTX_CONFIG refuses once `next_job` moved.
        let (job_id, shared, svm, bindings, _running) = {
            let mut st = this.state.lock();
            let ctx = this.ctx(dev, &mut st)?;
            let job_id = ctx.next_job;
            ctx.next_job += 1;
            let mut bindings = KVVec::with_capacity(ctx.bound.len(), GFP_KERNEL)?;
            for r in ctx.bindings() {
                bindings.push(r, GFP_KERNEL)?;
            }
            let running = Running::start(&ctx.shared);
            (job_id, ctx.shared.clone(), ctx.svm.clone(), bindings, running)
        };
        let svm = svm.as_deref();
        if req.flags & uapi::VGPU_SVM_SUBMIT_PREFAULT != 0 {
            if let Some(n) = svm {
                crate::mirror::prefault(&shared, n, &ops.0, &bindings)?;
            }
        }
        let mut tries = 0;
        let done = loop {
            let mut validated = KVec::with_capacity(objs.len(), GFP_KERNEL)?;
            for o in objs.iter() {
                let n = o.notifier.as_ref().ok_or(EINVAL)?;
                if !Arc::ptr_eq(&n.data().shared, &shared) {
                    return Err(EINVAL);
                }
                validated.push(gem::validate(n, &mm)?, GFP_KERNEL)?;
            }
            match job::run(&shared, svm, &ops, job_id, &validated, &bindings) {
                Err(e) if e == EAGAIN && tries < 100 => {
                    tries += 1;
                    shared.stats.retries.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                r => break r?,
            }
        };
        req.result = done.result;
        req.faults = done.faults;
        Ok(0)
    }

    /// DRM_IOCTL_VGPU_SVM_STATS: device counters and this context's driver counters.
    pub(crate) fn stats(dev: &VgpuDevice, req: &mut uapi::drm_vgpu_svm_stats, file: &drm::File<File>) -> Result<u32> {
        let this = file.inner();
        let st = this.state.lock();
        // A privileged reader (CAP_PERFMON or CAP_SYS_ADMIN, as for perf) gets the device-wide
        // counters (STATS on context 0) and the module-wide notifier events; anyone else only
        // the counters of this file's own context, none of other processes'. STATS never
        // creates a context: that would use up the device's contexts for nothing.
        // SAFETY: `capable` only reads the current task's credentials.
        let privileged = unsafe {
            kernel::bindings::capable(kernel::bindings::CAP_PERFMON as i32)
                || kernel::bindings::capable(kernel::bindings::CAP_SYS_ADMIN as i32)
        };
        let own = st.ctx.as_ref().map(|c| c.shared.ctx_id);
        let query = |q: Option<u32>| -> Result<[u64; 12]> {
            match q {
                Some(ctx_id) => {
                    let r = dev.ctrl.submit(ctx_id, uapi::vgpu_svm_cmd_type_VGPU_SVM_CMD_STATS, 0, gpu::cmd_timeout_ms(), |_| {})?;
                    parse_stats(&r)
                }
                // No context yet: nothing of this file's to report.
                None => Ok([0u64; 12]),
            }
        };
        let d = query(if privileged { Some(0) } else { own })?;
        // This file's own context, for every reader (a second round trip only for a
        // privileged one).
        let mine = if privileged { query(own)? } else { d };
        req.ctx_accesses_checked = mine[0];
        req.ctx_violations = mine[1];
        req.ctx_device_faults = mine[5];
        req.ctx_jobs = mine[9];
        req.accesses_checked = d[0];
        req.violations = d[1];
        req.violations_no_page = d[2];
        req.violations_frame = d[3];
        req.violations_write = d[4];
        req.device_faults = d[5];
        req.device_invalidations = d[6];
        req.tlb_hits = d[7];
        req.tlb_misses = d[8];
        req.jobs = d[9];
        req.bytes = d[10];
        req.device_errors = d[11];
        if let Some(c) = st.ctx.as_ref() {
            let s = &c.shared.stats;
            req.faults_serviced = s.faults_serviced.load(Ordering::Relaxed);
            req.retries = s.retries.load(Ordering::Relaxed);
            req.invalidations = s.invalidations.load(Ordering::Relaxed);
            req.pages_mapped = s.pages_mapped.load(Ordering::Relaxed);
        }
        for i in 0..EVENTS.min(req.events.len()) {
            req.events[i] = if privileged {
                context::DEVICE_EVENTS[i].load(Ordering::Relaxed)
            } else {
                st.ctx.as_ref().map_or(0, |c| c.shared.stats.events[i].load(Ordering::Relaxed))
            };
        }
        Ok(0)
    }
}
