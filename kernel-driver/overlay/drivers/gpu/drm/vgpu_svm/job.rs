// SPDX-License-Identifier: GPL-2.0

//! Running a job: validate userptr objects, send JOB, service device faults and RESUME
//! until the device reports completion.

use core::mem::size_of;
use core::sync::atomic::Ordering;
use kernel::{hmm, prelude::*, uapi};

use crate::{
    context::Shared,
    gpu::{self, parse_resp, Resp},
    mirror,
    pagetable::VA_LIMIT,
    gem::Validated,
};

/// Operations of one job, copied from user space and checked.
pub(crate) struct Ops(pub(crate) KVec<uapi::drm_vgpu_svm_op>);

/// A range of GPU VA an op touches: `len` bytes from `addr`, written or only read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Span {
    pub(crate) addr: u64,
    pub(crate) len: u64,
    pub(crate) write: bool,
}

/// What `op` touches, source before destination (the order the device accesses them in);
/// `None` for an unknown kind. The one place that maps op kinds to memory: the checks at
/// submit ([`Ops::check`]), SUBMIT_PREFAULT and the fault window (`mirror::op_ranges`) all
/// read it. The spans are as user space wrote them: unchecked until [`Ops::check`] passed.
pub(crate) fn op_spans(op: &uapi::drm_vgpu_svm_op) -> Option<[Option<Span>; 2]> {
    let span = |addr: u64, len: u64, write: bool| Some(Span { addr, len, write });
    Some(match op.kind {
        uapi::VGPU_SVM_OP_KIND_COPY => [span(op.src, op.len, false), span(op.dst, op.len, true)],
        uapi::VGPU_SVM_OP_KIND_FILL | uapi::VGPU_SVM_OP_KIND_WRITE_PATTERN => [span(op.dst, op.len, true), None],
        uapi::VGPU_SVM_OP_KIND_HASH | uapi::VGPU_SVM_OP_KIND_READ => [span(op.src, op.len, false), None],
        // One u64, whatever `len` says.
        uapi::VGPU_SVM_OP_KIND_ATOMIC_ADD => [span(op.dst, 8, true), None],
        _ => return None,
    })
}

impl Ops {
    /// Checks kinds, flags, lengths and address ranges.
    pub(crate) fn check(&self) -> Result {
        let n = self.0.len();
        if n == 0 || n > uapi::VGPU_SVM_MAX_OPS as usize {
            return Err(EINVAL);
        }
        for op in self.0.iter() {
            if op.flags != 0 || op.len > uapi::VGPU_SVM_MAX_OP_LEN as u64 {
                return Err(EINVAL);
            }
            // Every address and length is the user's: checked arithmetic only (an overflowing
            // `+` is a BUG with CONFIG_RUST_OVERFLOW_CHECKS).
            let in_va = |a: u64, len: u64| a.checked_add(len).is_some_and(|e| e <= VA_LIMIT);
            let spans = op_spans(op).ok_or(EINVAL)?;
            let aligned = op.kind != uapi::VGPU_SVM_OP_KIND_ATOMIC_ADD || op.dst % 8 == 0;
            if !aligned || !spans.iter().flatten().all(|s| in_va(s.addr, s.len)) {
                return Err(EINVAL);
            }
        }
        Ok(())
    }
}

/// What a completed job returned.
pub(crate) struct Done {
    pub(crate) result: u64,
    pub(crate) faults: u64,
}

fn device_error(code: u32) -> Error {
    match code {
        uapi::vgpu_svm_error_VGPU_SVM_ERR_ABORTED => EINTR,
        uapi::vgpu_svm_error_VGPU_SVM_ERR_MALFORMED
        | uapi::vgpu_svm_error_VGPU_SVM_ERR_TOO_BIG
        | uapi::vgpu_svm_error_VGPU_SVM_ERR_MISALIGNED => EINVAL,
        _ => EIO,
    }
}

/// Device faults one job may take before it is aborted with `EBUSY` (a job's ops cover at
/// most 64 x 4 GiB; a fault mirrors up to a window of pages, so an honest job needs far
/// fewer): the fault/RESUME loop is bounded.
const MAX_FAULTS_PER_JOB: u64 = 1 << 20;

/// Times in a row the device may fault at the same page with the same access after the
/// driver serviced it: one more is a driver/device disagreement (or an invalidation storm
/// on that very page) and the job ends with `EBUSY` at once, instead of after
/// [`MAX_FAULTS_PER_JOB`] round trips (minutes).
const MAX_SAME_FAULT: u32 = 16;

/// Counts faults in a row at one page with one access.
#[derive(Default)]
struct Progress {
    last: Option<(u64, bool)>,
    repeats: u32,
}

impl Progress {
    /// Records a fault; false if it is one too many in a row at the same page and access.
    fn record(&mut self, va: u64, write: bool) -> bool {
        let key = (va & !(crate::pagetable::PAGE - 1), write);
        if self.last == Some(key) {
            self.repeats += 1;
        } else {
            self.last = Some(key);
            self.repeats = 0;
        }
        self.repeats <= MAX_SAME_FAULT
    }
}

/// Between counting a JOB/RESUME in flight (under the update lock) and sending it: a full
/// barrier. An invalidation that took the idle fast path just before (cleared GPU entries,
/// stored a new TLB generation, released the lock; see `Shared::flush_idle`) may have run on
/// another CPU: the lock's release/acquire makes its stores visible to this thread, and this
/// barrier (cumulative, unlike the virtqueue's `virtio_wmb` alone) makes them visible to the
/// device before the request's descriptor and avail index, which the device reads before it
/// loads the generation. (x86 orders this anyway; the barrier says so in the code, for the
/// price of one fence per job start, next to a device round trip.)
fn publish_barrier() {
    kernel::sync::barrier::smp_mb();
}

/// RESUMEs a faulted job: the wait for its next answer is killable (`EINTR`).
fn resume(shared: &Shared, job_id: u64) -> Result<KVec<u8>> {
    shared.ctrl.submit(shared.ctx_id, uapi::vgpu_svm_cmd_type_VGPU_SVM_CMD_RESUME, 8, gpu::job_timeout_ms(), |w| {
        w.u64(job_id);
    })
}

/// ABORTs a job, faulted or running. The device answers once no access of the job is in
/// flight (any answer will do: ABORTED, OK, or UNKNOWN_JOB if it ended meanwhile). Not
/// interruptible: it often runs because the task is being killed.
fn abort(shared: &Shared, job_id: u64) {
    let r = shared.ctrl.submit_as(
        shared.ctx_id,
        uapi::vgpu_svm_cmd_type_VGPU_SVM_CMD_ABORT,
        8,
        gpu::cmd_timeout_ms(),
        kernel::virtio::Wait::Uninterruptible,
        |w| {
            w.u64(job_id);
        },
    );
    if let Err(e) = r {
        // The device did not confirm that the job is gone: it may still run there and touch
        // memory that the caller, once the ioctl returned, may free (a userptr object closed,
        // its range unmapped without a notifier left to ask the device). Reset the device:
        // when that returns it touches no guest memory. Nothing runs on this context again.
        pr_err!("vgpu_svm: ctx {}: job {job_id}: ABORT not confirmed ({e:?}); resetting the device\n", shared.ctx_id);
        shared.broken.store(true, Ordering::Release);
        shared.ctrl.reset_device();
    }
}

/// A JOB or RESUME went unanswered (timeout or fatal signal): the job may still run on the
/// device. Cancel it there (ABORT, answered once none of its accesses is in flight); if the
/// device does not confirm, `abort` resets the device, the context is out of service and the file's
/// release destroys it (CTX_DESTROY aborts every job too).
fn abandoned(shared: &Shared, job_id: u64, e: Error) -> Error {
    if e == EINTR || e == ETIMEDOUT {
        let how = if e == EINTR { "killed" } else { "timed out" };
        pr_warn!("vgpu_svm: ctx {} job {job_id}: {how} while running; aborting it on the device\n", shared.ctx_id);
        abort(shared, job_id);
    }
    e
}

/// Runs `ops` on the context. `validated` are the userptr objects the job uses, already
/// mirrored; `bindings` are the GPU VA ranges of every bound object of the context (SVM
/// never mirrors into them). For a context that cannot fault, the job is started under the update lock only
/// if none of them was invalidated since (else `EAGAIN`: the caller revalidates).
pub(crate) fn run(
    shared: &Shared,
    svm: Option<&crate::file::SvmNotifier>,
    ops: &Ops,
    job_id: u64,
    validated: &[Validated<'_>],
    bindings: &[(u64, u64)],
) -> Result<Done> {
    if shared.broken.load(Ordering::Acquire) {
        return Err(EIO);
    }
    let body = size_of::<uapi::vgpu_svm_cmd_job>() - size_of::<uapi::vgpu_svm_cmd_hdr>()
        + ops.0.len() * size_of::<uapi::vgpu_svm_op>();
    let build = |w: &mut gpu::Writer<'_>| {
        w.u64(job_id).u32(ops.0.len() as u32).u32(0);
        for op in ops.0.iter() {
            w.u32(op.kind).u32(0).u64(op.dst).u64(op.src).u64(op.len).u64(op.value);
        }
    };

    // Commit: under the update lock, check that no userptr object changed, and count the
    // job in flight so that invalidations of a non-faulting context wait for it.
    {
        let mut guard = shared.update.lock();
        for v in validated {
            if v.changed(&guard) {
                return Err(EAGAIN);
            }
        }
        guard.jobs_in_flight += 1;
    }
    publish_barrier();
    // SAFETY: No preconditions.
    let t0 = unsafe { kernel::bindings::ktime_get() };
    let resp = shared.ctrl.submit(shared.ctx_id, uapi::vgpu_svm_cmd_type_VGPU_SVM_CMD_JOB, body, gpu::job_timeout_ms(), build);
    let out = (|| {
        let mut resp = resp.map_err(|e| abandoned(shared, job_id, e))?;
        let mut faults = 0u64;
        let mut progress = Progress::default();
        loop {
            match parse_resp(&resp)? {
                Resp::Ok { result } => return Ok(Done { result, faults }),
                Resp::Error(code) => return Err(device_error(code)),
                Resp::Fault(f) => {
                    faults += 1;
                    // The job is stopped at the fault: it is not running on the device while
                    // the fault is serviced (which allocates and may enter reclaim, whose
                    // invalidations of this context must not wait for this very job).
                    shared.update.lock().jobs_in_flight -= 1;
                    let serviced = if hmm::fatal_signal_pending() {
                        Err(EINTR)
                    } else if faults > MAX_FAULTS_PER_JOB || !progress.record(f.va, f.write) {
                        Err(EBUSY)
                    } else if let Some(v) = validated.iter().find(|v| v.contains(f.va)) {
                        // A userptr binding: re-mirror the object (semantic B).
                        match shared.mm.mmget_not_zero() {
                            Some(mm) => crate::gem::service_fault(v, &mm, f.va, f.write),
                            None => Err(EFAULT),
                        }
                    } else {
                        match svm {
                            // Outside any listed binding and without SVM there is nothing to
                            // mirror.
                            None => Err(EFAULT),
                            // (Refuses a fault inside the binding of an object the job does
                            // not list: only that object may back its range.)
                            Some(n) => {
                                let fault_end = mirror::op_range_end(&ops.0, f.op_index, f.va, f.write);
                                mirror::service_fault(shared, n, f.va, f.write, bindings, fault_end)
                            }
                        }
                    };
                    if let Err(e) = &serviced {
                        pr_debug!(
                            "vgpu_svm: ctx {} job {job_id}: fault at 0x{:x} ({}, op {}) not serviced: {e:?}\n",
                            shared.ctx_id,
                            f.va,
                            if f.write { "write" } else { "read" },
                            f.op_index
                        );
                        abort(shared, job_id);
                    }
                    shared.update.lock().jobs_in_flight += 1;
                    publish_barrier();
                    serviced?;
                    resp = resume(shared, job_id).map_err(|e| abandoned(shared, job_id, e))?;
                }
            }
        }
    })();
    shared.update.lock().jobs_in_flight -= 1;
    // SAFETY: No preconditions.
    let t1 = unsafe { kernel::bindings::ktime_get() };
    shared.stats.busy_ns.fetch_add(t1.saturating_sub(t0) as u64, Ordering::Relaxed);
    out
}
