//! Job execution: the ops of a JOB, run on the context's worker thread one
//! page-sized access (a *step*) at a time, a *run* of up to [`RUN_PAGES`]
//! consecutive steps per access section.
//!
//! A step never crosses a 4 KiB boundary of its source or its destination.
//! A run (see [`crate::invalidate`]): enter the section, check that the
//! context is not being destroyed nor the job aborted, translate the GPU VA
//! of every page of every step under one space lock (TLB or walk; DIRTY set
//! before the first write) and let the checker compare each with the CPU
//! page table, move the data step by step, let the checker walk the CPU
//! page table again for each page (a change while the device used it is a
//! violation), leave. So an INVALIDATE waits for at most one run of page
//! copies; with `access_delay` (tests of the races) a run is one step.
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

use crate::context::{fault_info, Checked, Context, GuestMem};
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
    // Runs of one step when accesses are slowed down on purpose (the
    // invalidation race tests): each access its own section, as there.
    let run_max = if ctx.config().access_delay.is_zero() {
        RUN_PAGES as u64
    } else {
        1
    };
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
            let max = run_max.min(quantum - slice).min(budget - job.steps);
            let first = slice == 0;
            match run_once(ctx, job, &op, total - job.progress, max as usize, first) {
                Ok((bytes, steps)) => {
                    slice += steps;
                    job.steps += steps;
                    job.progress += bytes;
                    job.tally.bytes += bytes;
                }
                Err(e) => {
                    // The failed step was an attempt too.
                    job.steps += 1;
                    match e {
                        StepError::Fault { va, access } => {
                            return Outcome::Fault(fault_info(
                                va,
                                access,
                                job.op_index,
                                job.progress,
                            ))
                        }
                        StepError::Fail(code) => return Outcome::Failed(code),
                        StepError::Aborted => return Outcome::Aborted,
                    }
                }
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

/// Most steps (page-sized accesses) one run covers.
pub const RUN_PAGES: usize = 16;

/// One step of a run: where in the op it starts (GPU VAs) and its bytes.
#[derive(Clone, Copy, Default)]
struct Step {
    src: u64,
    dst: u64,
    n: u64,
}

/// The GPU pages one step of `kind` touches, in the order they are
/// translated (a COPY: source, then destination).
fn step_accesses(kind: OpKind, st: &Step) -> ([(u64, Access); 2], usize) {
    match kind {
        OpKind::Copy => ([(st.src, Access::Read), (st.dst, Access::Write)], 2),
        OpKind::Hash | OpKind::Read => ([(st.src, Access::Read); 2], 1),
        OpKind::Fill | OpKind::WritePattern | OpKind::AtomicAdd => {
            ([(st.dst, Access::Write); 2], 1)
        }
    }
}

/// The next steps of `op` from `progress` (`remaining` bytes left), at
/// most `max`: each within one 4 KiB page of its source and destination.
fn plan(op: &Op, progress: u64, remaining: u64, max: usize, out: &mut [Step; RUN_PAGES]) -> usize {
    if op.kind == OpKind::AtomicAdd {
        out[0] = Step {
            src: 0,
            dst: op.dst,
            n: remaining,
        };
        return 1;
    }
    let (mut p, mut left, mut k) = (progress, remaining, 0);
    while left > 0 && k < max.min(RUN_PAGES) {
        let (s, d) = (op.src.wrapping_add(p), op.dst.wrapping_add(p));
        let n = match op.kind {
            OpKind::Copy => left.min(page_left(s)).min(page_left(d)),
            OpKind::Hash | OpKind::Read => left.min(page_left(s)),
            _ => left.min(page_left(d)),
        };
        out[k] = Step { src: s, dst: d, n };
        (p, left, k) = (p + n, left - n, k + 1);
    }
    k
}

/// One run: up to `max` consecutive steps of the op in one access section
/// (enter, check that the job may go on, translate and check every page of
/// every step under one space lock, move the data step by step, walk the
/// CPU page tables again, leave), so that per-section and per-lock costs
/// are paid once per run, not per page; an INVALIDATE waits for at most
/// one run ([`RUN_PAGES`] page copies). A step whose translation fails ends
/// the run before it: its error is returned if it is the run's first step,
/// else it is met again (and reported with the exact progress) as the
/// next run's first. Returns the bytes done and the steps taken.
/// `first`: the first run of a time slice (its counts are published before
/// the data moves, so that a running job is seen to have started).
fn run_once(
    ctx: &Context,
    job: &mut Job,
    op: &Op,
    remaining: u64,
    max: usize,
    first: bool,
) -> Result<(u64, u64), StepError> {
    let mem = job.mem.memory();
    let mem: &GuestMemoryMmap = &mem;
    let section = ctx.barrier().enter();
    if ctx.must_stop_job(job) {
        return Err(StepError::Aborted);
    }
    let mut steps = [Step::default(); RUN_PAGES];
    let planned = plan(op, job.progress, remaining, max, &mut steps);
    let mut accesses = [(0u64, Access::Read); 2 * RUN_PAGES];
    let mut na = 0;
    for st in &steps[..planned] {
        let (a, k) = step_accesses(op.kind, st);
        accesses[na..na + k].copy_from_slice(&a[..k]);
        na += k;
    }
    let accesses = &accesses[..na];
    let per_step = step_accesses(op.kind, &steps[0]).1;
    let mut checked = [Checked::default(); 2 * RUN_PAGES];
    let (ok, err) = ctx.access_run(mem, job.id, &mut job.tally, accesses, &mut checked);
    if first {
        job.tally.publish(ctx.counters());
    }
    let done = ok / per_step;
    if done == 0 {
        return Err(err.unwrap_or(StepError::Fail(ErrorCode::BadAddress)));
    }
    pause(ctx.config().access_delay);
    let mut bytes = 0;
    for (i, st) in steps[..done].iter().enumerate() {
        let pa = |j: usize| checked[i * per_step + j].pa;
        move_data(
            job,
            op,
            st,
            job.progress + bytes,
            mem,
            pa(0),
            pa(per_step - 1),
        )?;
        bytes += st.n;
    }
    ctx.recheck_run(
        mem,
        job.id,
        &mut job.tally,
        &accesses[..done * per_step],
        &checked[..done * per_step],
    );
    drop(section);
    Ok((bytes, done as u64))
}

/// Moves one step's data: `p` is the op's progress at the step, `ps` and
/// `pd` the guest physical addresses of its source and destination (the
/// same for one-sided ops).
fn move_data(
    job: &mut Job,
    op: &Op,
    st: &Step,
    p: u64,
    mem: &GuestMemoryMmap,
    ps: u64,
    pd: u64,
) -> Result<(), StepError> {
    let n = st.n as usize;
    match op.kind {
        OpKind::Copy => {
            let src = mem.get_slice(GuestAddress(ps), n).map_err(bad)?;
            let dst = mem.get_slice(GuestAddress(pd), n).map_err(bad)?;
            src.copy_to_volatile_slice(dst);
        }
        OpKind::Fill | OpKind::WritePattern => {
            let mut buf = [0u8; PAGE_SIZE as usize];
            let buf = &mut buf[..n];
            if op.kind == OpKind::Fill {
                buf.fill(op.value as u8);
            } else {
                for (i, b) in buf.iter_mut().enumerate() {
                    *b = pattern_byte(op.value, p + i as u64);
                }
            }
            let dst = mem.get_slice(GuestAddress(pd), n).map_err(bad)?;
            dst.copy_from(buf);
        }
        OpKind::Hash | OpKind::Read => {
            let src = mem.get_slice(GuestAddress(ps), n).map_err(bad)?;
            let mut buf = [0u8; PAGE_SIZE as usize];
            let buf = &mut buf[..n];
            src.copy_to(buf);
            if op.kind == OpKind::Hash {
                job.hash = fnv::update(job.hash, buf);
            } else {
                std::hint::black_box(buf);
            }
        }
        OpKind::AtomicAdd => {
            job.result = atomic_add(mem, pd, op.value)?;
        }
    }
    Ok(())
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
