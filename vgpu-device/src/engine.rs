//! Job execution: the ops of a JOB, run on the context's worker thread one
//! access at a time.
//!
//! Every access is one *step* inside an access section (see
//! [`crate::invalidate`]): enter the section, check that the context is not
//! being destroyed, translate the GPU VA (TLB or walk; DIRTY set before the
//! first write), let the checker compare with the CPU page table, move at
//! most one 4 KiB page of data, leave. A step never crosses a 4 KiB
//! boundary of its source or its destination, so an INVALIDATE waits for at
//! most one page copy.
//!
//! The job's position (op index, bytes done in that op, the running hash)
//! lives in [`Job`], so a fault stops the job exactly at the faulting access
//! and RESUME continues from there with a fresh translation. Semantics:
//! - COPY copies forward in page-sized steps (overlapping ranges are not
//!   memmove'd as a whole).
//! - HASH: FNV-1a 64 over the bytes; the job's result is the hash of its
//!   last HASH op. ATOMIC_ADD: a compare-and-swap on the guest's u64 (atomic
//!   with respect to the CPU), `len` ignored; the result is the old value.
//! - The result reported is that of the last op that produces one.
//!
//! Bounds: a worker runs a job for at most [`QUANTUM`] steps at a time (then
//! the job is preempted and continues later, see [`crate::pool`]), and a job
//! gets at most `max_job_steps` step attempts over its whole life, RESUMEs
//! included (a fault counts as an attempt): beyond that it fails with
//! TOO_BIG. A JOB whose ops need more steps than that is refused at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use vm_memory::{GuestAddress, GuestAddressSpace, GuestMemoryBackend, GuestMemoryMmap};

use crate::context::{fault_info, Context, GuestMem};
use crate::counters::JobTally;
use crate::layout::gpu::PAGE_SIZE;
use crate::mem::PhysMem;
use crate::mmu::Access;
use crate::protocol::{fnv, pattern_byte, ErrorCode, FaultInfo, Op, OpKind};

/// A job and where it stands.
pub struct Job {
    id: u64,
    ops: Vec<Op>,
    op_index: usize,
    progress: u64,
    hash: u64,
    result: u64,
    mem: GuestMem,
    abort_gen: u64,
    /// Step attempts so far (against the step budget).
    steps: u64,
    /// Set by ABORT of the job while it is queued or running (shared with
    /// the context's job table): the job stops at its next access.
    cancel: Arc<AtomicBool>,
    /// Counts not yet added to the context's counters (see [`JobTally`]).
    tally: JobTally,
}

/// Steps a worker runs of one job before it lets other contexts' jobs run.
pub const QUANTUM: u64 = 256;

/// The fewest steps the ops can take (one per 4 KiB page touched on the
/// side with the most pages; at least one per op).
pub fn min_steps(ops: &[Op]) -> u64 {
    ops.iter()
        .map(|o| o.bytes().div_ceil(PAGE_SIZE).max(1))
        .fold(0u64, u64::saturating_add)
}

impl Job {
    pub fn new(id: u64, ops: Vec<Op>, mem: GuestMem, abort_gen: u64) -> Self {
        Self {
            abort_gen,
            id,
            ops,
            op_index: 0,
            progress: 0,
            hash: fnv::OFFSET,
            result: 0,
            mem,
            steps: 0,
            cancel: Arc::new(AtomicBool::new(false)),
            tally: JobTally::default(),
        }
    }

    /// The job's cancel flag (ABORT sets it; the engine checks it inside
    /// every access section).
    pub fn cancel_flag(&self) -> Arc<AtomicBool> {
        self.cancel.clone()
    }

    /// Has an ABORT of this job been accepted?
    pub fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::Acquire)
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// The context's abort generation when the job was submitted.
    pub fn abort_gen(&self) -> u64 {
        self.abort_gen
    }

    /// Step attempts so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// (op index, bytes done in it).
    pub fn position(&self) -> (usize, u64) {
        (self.op_index, self.progress)
    }
}

/// How a run of a job ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Done {
        result: u64,
    },
    Fault(FaultInfo),
    Failed(ErrorCode),
    Aborted,
    /// The time slice is over; the job continues from here.
    Preempted,
}

/// Why one step could not be done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepError {
    Fault { va: u64, access: Access },
    Fail(ErrorCode),
    Aborted,
}

/// Bytes left in the 4 KiB page of `va`.
fn page_left(va: u64) -> u64 {
    PAGE_SIZE - (va & (PAGE_SIZE - 1))
}

fn bad(_: vm_memory::GuestMemoryError) -> StepError {
    StepError::Fail(ErrorCode::BadAddress)
}

/// Runs `job` from where it stands until it completes, faults or fails, or
/// `quantum` steps are done (then [`Outcome::Preempted`]). The job's counts
/// are in the context's counters when this returns (before any answer).
pub fn run(ctx: &Context, job: &mut Job, quantum: u64) -> Outcome {
    let outcome = run_steps(ctx, job, quantum);
    job.tally.publish(ctx.counters());
    outcome
}

fn run_steps(ctx: &Context, job: &mut Job, quantum: u64) -> Outcome {
    let budget = ctx.config().max_job_steps;
    let mut slice = 0u64;
    while let Some(&op) = job.ops.get(job.op_index) {
        let total = op.bytes();
        while job.progress < total {
            if slice >= quantum {
                return Outcome::Preempted;
            }
            if job.steps >= budget {
                log::debug!(
                    "ctx {} job {}: step budget of {budget} spent",
                    ctx.id,
                    job.id
                );
                return Outcome::Failed(ErrorCode::TooBig);
            }
            slice += 1;
            job.steps += 1;
            match step(ctx, job, &op, total - job.progress, slice == 1) {
                Ok(n) => {
                    job.progress += n;
                    job.tally.bytes += n;
                }
                Err(StepError::Fault { va, access }) => {
                    return Outcome::Fault(fault_info(va, access, job.op_index, job.progress))
                }
                Err(StepError::Fail(code)) => return Outcome::Failed(code),
                Err(StepError::Aborted) => return Outcome::Aborted,
            }
        }
        if op.kind == OpKind::Hash {
            job.result = job.hash;
            job.hash = fnv::OFFSET;
        }
        job.op_index += 1;
        job.progress = 0;
    }
    Outcome::Done { result: job.result }
}

/// One access (at most one page of source and of destination). Returns the
/// bytes done. `first`: the first step of a run (its counts are published
/// before the data moves, so that a running job is seen to have started).
fn step(
    ctx: &Context,
    job: &mut Job,
    op: &Op,
    remaining: u64,
    first: bool,
) -> Result<u64, StepError> {
    let mem = job.mem.memory();
    let mem: &GuestMemoryMmap = &mem;
    let section = ctx.barrier().enter();
    if ctx.must_stop_job(job) {
        return Err(StepError::Aborted);
    }
    let p = job.progress;
    let delay = ctx.config().access_delay;
    let (id, tally) = (job.id, &mut job.tally);
    let n = match op.kind {
        OpKind::Copy => {
            let (s, d) = (op.src + p, op.dst + p);
            let n = remaining.min(page_left(s)).min(page_left(d));
            let [ps, pd] = translate(
                ctx,
                mem,
                id,
                tally,
                first,
                [(s, Access::Read), (d, Access::Write)],
            )?;
            pause(delay);
            let src = mem.get_slice(GuestAddress(ps), n as usize).map_err(bad)?;
            let dst = mem.get_slice(GuestAddress(pd), n as usize).map_err(bad)?;
            src.copy_to_volatile_slice(dst);
            n
        }
        OpKind::Fill | OpKind::WritePattern => {
            let d = op.dst + p;
            let n = remaining.min(page_left(d));
            let [pd] = translate(ctx, mem, id, tally, first, [(d, Access::Write)])?;
            pause(delay);
            let mut buf = [0u8; PAGE_SIZE as usize];
            let buf = &mut buf[..n as usize];
            if op.kind == OpKind::Fill {
                buf.fill(op.value as u8);
            } else {
                for (i, b) in buf.iter_mut().enumerate() {
                    *b = pattern_byte(op.value, p + i as u64);
                }
            }
            let dst = mem.get_slice(GuestAddress(pd), n as usize).map_err(bad)?;
            dst.copy_from(buf);
            n
        }
        OpKind::Hash | OpKind::Read => {
            let s = op.src + p;
            let n = remaining.min(page_left(s));
            let [ps] = translate(ctx, mem, id, tally, first, [(s, Access::Read)])?;
            pause(delay);
            let src = mem.get_slice(GuestAddress(ps), n as usize).map_err(bad)?;
            let mut buf = [0u8; PAGE_SIZE as usize];
            let buf = &mut buf[..n as usize];
            src.copy_to(buf);
            if op.kind == OpKind::Hash {
                job.hash = fnv::update(job.hash, buf);
            } else {
                std::hint::black_box(buf);
            }
            n
        }
        OpKind::AtomicAdd => {
            let [pd] = translate(ctx, mem, id, tally, first, [(op.dst, Access::Write)])?;
            pause(delay);
            job.result = atomic_add(mem, pd, op.value)?;
            8
        }
    };
    drop(section);
    Ok(n)
}

/// Translates and checks a step's pages (one space lock for all, see
/// [`Context::access_step`]); publishes the counts of a run's first step.
fn translate<const N: usize>(
    ctx: &Context,
    mem: &GuestMemoryMmap,
    job: u64,
    tally: &mut JobTally,
    first: bool,
    accesses: [(u64, Access); N],
) -> Result<[u64; N], StepError> {
    let r = ctx.access_step(mem, job, tally, accesses);
    if first {
        tally.publish(ctx.counters());
    }
    r
}

fn pause(d: std::time::Duration) {
    if !d.is_zero() {
        std::thread::sleep(d);
    }
}

fn atomic_add(mem: &GuestMemoryMmap, pa: u64, value: u64) -> Result<u64, StepError> {
    let err = StepError::Fail(ErrorCode::BadAddress);
    let mut old = mem.load_u64(pa).map_err(|_| err)?;
    for _ in 0..crate::context::atomic_retries() {
        match mem.cas_u64(pa, old, old.wrapping_add(value)) {
            Ok(Ok(_)) => return Ok(old),
            Ok(Err(cur)) => old = cur,
            Err(_) => return Err(err),
        }
    }
    Err(StepError::Fail(ErrorCode::Busy))
}
