//! One VGPU_SVM context: its address spaces (GPU page table + TLB, CPU page
//! table for the checker), userptr bindings, live jobs and their queue, and
//! the execution of the protocol commands that concern it.
//!
//! Locks, always taken in this order and never held while waiting for
//! anything else:
//! - `barrier` (read side: one device access; write side: the INVALIDATE
//!   wait, see [`crate::invalidate`]);
//! - `space` (the MMU/TLB, checker and bindings: held for the translation
//!   and the checker walk of one access, not for the copy);
//! - `jobs` (the live-job table), `work` (the context's job queue; held
//!   while making the context ready in the worker pool, [`crate::pool`]).
//!
//! Answers to JOB and RESUME are [`Completion`]s: the worker thread calls
//! them when the job completes, faults or fails. A completion must never be
//! called on the control-queue thread while it holds the virtqueue (the
//! transport's responder takes the vring lock): completions produced while
//! handling a command (CTX_DESTROY draining queued jobs) are returned to the
//! caller, which runs them after releasing the queue.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use log::{debug, info};
use vm_memory::{
    GuestAddress, GuestAddressSpace, GuestMemoryAtomic, GuestMemoryBackend, GuestMemoryMmap,
};

use crate::checker::x86::{Levels, RunWalks};
use crate::checker::{AccessInfo, Checker, Verdict};
use crate::counters::{JobTally, SvmCounters};
use crate::engine::{self, Job, Outcome, StepError};
use crate::history::InvalHistory;
use crate::invalidate::AccessBarrier;
use crate::layout::gpu;
use crate::mem::RegionCache;
use crate::mmu::{Access, Mmu, MmuError, WalkError};
use crate::pool::Pool;
use crate::protocol::{
    BindEntry, ErrorCode, FaultInfo, InvalReason, Op, Status, SvmCommand, SvmResp,
};
use crate::tlbgen::TlbGen;
use crate::virtio_gpu::{ty, CtrlHdr};

/// Guest memory as the transport provides it (swapped on SET_MEM_TABLE).
pub type GuestMem = GuestMemoryAtomic<GuestMemoryMmap>;

/// Whether the coherence checker walks the CPU page table on every access.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckerMode {
    /// Check every page every job touches.
    #[default]
    Strict,
    /// Skip the CPU walk (to measure what it costs).
    Off,
}

/// Engine parameters fixed at start.
#[derive(Clone, Copy, Debug)]
pub struct EngineConfig {
    pub checker: CheckerMode,
    /// TLB entries per context.
    pub tlb_capacity: usize,
    /// Live jobs (queued, running or faulted) per context.
    pub max_live_jobs: usize,
    /// Userptr bindings per context.
    pub max_bindings: usize,
    /// Artificial time spent inside every access section (tests of the
    /// invalidation races; zero in production).
    pub access_delay: Duration,
    /// Step attempts a job may make over its life (RESUMEs included)
    /// before it fails with TOO_BIG.
    pub max_job_steps: u64,
    /// Cap of job worker threads shared by all contexts.
    pub workers: usize,
    /// Starts a job worker thread (a parameter so that tests can make it
    /// fail; [`spawn_thread`] in production).
    pub spawn: SpawnFn,
}

/// Default step budget of a job: 2^21 page-sized accesses (8 GiB in 4 KiB
/// steps; the guest has a few GiB).
pub const DEFAULT_MAX_JOB_STEPS: u64 = 1 << 21;

/// Starts a named thread running the closure.
pub type SpawnFn = fn(String, Box<dyn FnOnce() + Send>) -> std::io::Result<()>;

/// The production [`SpawnFn`]: `std::thread::Builder::spawn`.
pub fn spawn_thread(name: String, f: Box<dyn FnOnce() + Send>) -> std::io::Result<()> {
    std::thread::Builder::new().name(name).spawn(f).map(drop)
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            checker: CheckerMode::Strict,
            tlb_capacity: 8192,
            max_live_jobs: 64,
            max_bindings: 65536,
            access_delay: Duration::ZERO,
            max_job_steps: DEFAULT_MAX_JOB_STEPS,
            workers: crate::pool::DEFAULT_WORKERS,
            spawn: spawn_thread,
        }
    }
}

/// Where the bytes of a deferred answer go (the transport's side).
pub trait Responder: Send {
    /// Writes the complete answer (control header included) and returns the
    /// descriptor chain to the driver.
    fn respond(self: Box<Self>, bytes: &[u8]);
}

/// A deferred SUBMIT_3D answer: the request's header (fence fields) and
/// the transport's responder.
pub struct Completion {
    pub hdr: CtrlHdr,
    pub responder: Box<dyn Responder>,
}

impl Completion {
    pub fn complete(self, resp: &SvmResp) {
        self.responder.respond(&encode_answer(&self.hdr, resp));
    }
}

/// RESP_OK_NODATA (with the request's fence fields) + `struct vgpu_svm_resp`.
pub fn encode_answer(req: &CtrlHdr, resp: &SvmResp) -> Vec<u8> {
    let mut out = Vec::with_capacity(crate::virtio_gpu::CTRL_HDR_SIZE + crate::protocol::RESP_SIZE);
    req.response(ty::RESP_OK_NODATA).write(&mut out);
    out.extend_from_slice(&resp.encode());
    out
}

/// How a command was answered.
pub enum Answer {
    Now(SvmResp),
    /// The completion was handed to the job worker.
    Later,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Binding {
    cpu_va: u64,
    size: u64,
}

/// The address spaces set by SET_AS.
struct AddressSpace {
    mmu: Mmu,
    /// None when the checker is off (`--checker off`; only then may the
    /// driver give no CPU table, 0).
    checker: Option<Checker>,
    /// The TLB generation (SET_AS of protocol 0.5), synced at every JOB and
    /// RESUME ([`Context::sync_tlb_gen`]).
    tlb_gen: Option<TlbGen>,
}

struct SpaceState {
    space: Option<AddressSpace>,
    bindings: BTreeMap<u64, Binding>,
    /// The context's recent INVALIDATEs (from its creation, across SET_AS),
    /// for the violation records.
    history: InvalHistory,
}

impl SpaceState {
    /// The CPU VA that GPU VA `va` mirrors.
    fn cpu_va(&self, va: u64) -> u64 {
        Self::cpu_va_in(&self.bindings, va)
    }

    /// [`SpaceState::cpu_va`] from the bindings alone (while the address
    /// space is borrowed).
    fn cpu_va_in(bindings: &BTreeMap<u64, Binding>, va: u64) -> u64 {
        match bindings.range(..=va).next_back() {
            Some((&g, b)) if va - g < b.size => b.cpu_va + (va - g),
            _ => va,
        }
    }
}

enum JobSlot {
    /// Queued, running on a worker, or between two time slices: its JOB or
    /// RESUME request is not answered yet.
    Live(LiveJob),
    Faulted(Box<Job>),
}

struct LiveJob {
    /// The job's cancel flag ([`Job::cancel_flag`]).
    cancel: Arc<AtomicBool>,
    /// ABORTs of the job accepted while it was on a worker: answered OK by
    /// that worker once the job has stopped (after the job's own answer).
    aborts: Vec<Completion>,
}

impl JobSlot {
    fn live(job: &Job) -> Self {
        JobSlot::Live(LiveJob {
            cancel: job.cancel_flag(),
            aborts: Vec::new(),
        })
    }
}

/// Most ABORTs of one running job waiting for it to stop; one more is
/// answered BUSY.
pub const MAX_ABORT_WAITERS: usize = 16;

struct WorkQueue {
    items: VecDeque<(Box<Job>, Completion)>,
    /// In the pool's ready queue or being run by a worker.
    scheduled: bool,
}
/// How many times ATOMIC_ADD retries a compare-and-swap that the CPU keeps
/// winning before the job fails with BUSY.
const ATOMIC_RETRIES: usize = 100_000;

pub struct Context {
    pub id: u32,
    pub debug_name: String,
    pub submits: AtomicU64,
    cfg: EngineConfig,
    counters: Arc<SvmCounters>,
    barrier: AccessBarrier,
    space: Mutex<SpaceState>,
    jobs: Mutex<HashMap<u64, JobSlot>>,
    work: Mutex<WorkQueue>,
    pool: Arc<Pool>,
    cancelled: AtomicBool,
    /// Bumped to abort every job started before (queue stop).
    abort_gen: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn walk_error_code(e: WalkError) -> ErrorCode {
    match e {
        WalkError::BadAddress { .. } => ErrorCode::BadAddress,
        WalkError::Malformed { .. } | WalkError::VaOutOfRange { .. } => ErrorCode::BadPageTable,
        WalkError::NotMapped { .. } => ErrorCode::BadPageTable, // reported as Fault before
    }
}

impl Context {
    pub fn new(
        id: u32,
        debug_name: String,
        cfg: EngineConfig,
        // The context's own (a [`SvmCounters::child`] of the device's).
        counters: Arc<SvmCounters>,
        pool: Arc<Pool>,
    ) -> Self {
        Self {
            id,
            debug_name,
            submits: AtomicU64::new(0),
            cfg,
            counters,
            barrier: AccessBarrier::new(),
            space: Mutex::new(SpaceState {
                space: None,
                bindings: BTreeMap::new(),
                history: InvalHistory::new(),
            }),
            jobs: Mutex::new(HashMap::new()),
            work: Mutex::new(WorkQueue {
                items: VecDeque::new(),
                scheduled: false,
            }),
            pool,
            cancelled: AtomicBool::new(false),
            abort_gen: AtomicU64::new(0),
        }
    }

    /// The context's own counters (each addition also goes to the
    /// device's).
    pub fn counters(&self) -> &SvmCounters {
        &self.counters
    }

    pub fn counters_arc(&self) -> Arc<SvmCounters> {
        self.counters.clone()
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    pub fn barrier(&self) -> &AccessBarrier {
        &self.barrier
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    /// Must a job started in abort generation `gen` stop?
    pub fn must_stop(&self, gen: u64) -> bool {
        self.is_cancelled() || self.abort_gen.load(Ordering::Acquire) != gen
    }

    /// Must `job` stop (context destroyed, queue stopped, or the job
    /// ABORTed)?
    pub fn must_stop_job(&self, job: &Job) -> bool {
        job.is_cancelled() || self.must_stop(job.abort_gen())
    }

    /// Live jobs (queued, running or faulted).
    pub fn live_jobs(&self) -> usize {
        lock(&self.jobs).len()
    }

    /// Executes one parsed command. `defer` makes the completion of a
    /// command answered later (JOB, RESUME, a waiting INVALIDATE, SET_AS or
    /// ABORT; called only when the command is accepted). Answers of other
    /// requests that the command produces (the JOB answer of a queued job
    /// that ABORT ends) go to `pending`, for the caller to send once it has
    /// released the queue.
    pub fn execute(
        self: &Arc<Self>,
        cmd: SvmCommand,
        mem: Option<&GuestMem>,
        defer: &mut dyn FnMut() -> Completion,
        pending: &mut Vec<(Completion, SvmResp)>,
    ) -> Answer {
        match cmd {
            SvmCommand::Nop => Answer::Now(SvmResp::ok()),
            SvmCommand::Stats => Answer::Now(SvmResp {
                stats: self.counters.wire(),
                ..SvmResp::ok()
            }),
            SvmCommand::SetAs {
                gpu_pt_root,
                cpu_pt_root,
                cpu_pt_levels,
                direct_map_base,
                tlb_gen_gpa,
            } => match self.set_as(
                mem,
                gpu_pt_root,
                cpu_pt_root,
                cpu_pt_levels,
                direct_map_base,
                tlb_gen_gpa,
            ) {
                Ok(()) => self.answer_after_accesses(None, defer),
                Err(code) => Answer::Now(SvmResp::error(code, 0)),
            },
            SvmCommand::Invalidate { start, end, reason } => {
                let seq = self.drop_translations(start, end, reason);
                self.answer_after_accesses(Some((seq, reason, start, end)), defer)
            }
            SvmCommand::Bind {
                gpu_va,
                cpu_va,
                size,
            } => Answer::Now(self.bind(gpu_va, cpu_va, size)),
            SvmCommand::Unbind { start, size } => Answer::Now(self.unbind(start, size)),
            SvmCommand::BindArray { entries } => Answer::Now(self.bind_array(&entries)),
            SvmCommand::UnbindArray { entries } => Answer::Now(self.unbind_array(&entries)),
            SvmCommand::Job { job_id, ops } => match self.submit_job(mem, job_id, ops) {
                Ok(job) => match self.push_work(job, defer) {
                    Ok(()) => Answer::Later,
                    Err(_job) => {
                        // Never run it here: this thread holds the vring.
                        lock(&self.jobs).remove(&job_id);
                        Answer::Now(SvmResp::error(ErrorCode::Busy, job_id))
                    }
                },
                Err(code) => Answer::Now(SvmResp::error(code, job_id)),
            },
            SvmCommand::Resume { job_id } => match self.take_faulted(mem, job_id) {
                Some(job) => {
                    debug!("ctx {} RESUME job {job_id}", self.id);
                    match self.push_work(job, defer) {
                        Ok(()) => Answer::Later,
                        Err(job) => {
                            // Still faulted: the driver may RESUME or ABORT again.
                            lock(&self.jobs).insert(job_id, JobSlot::Faulted(job));
                            Answer::Now(SvmResp::error(ErrorCode::Busy, job_id))
                        }
                    }
                }
                None => Answer::Now(SvmResp::error(ErrorCode::UnknownJob, job_id)),
            },
            SvmCommand::Abort { job_id } => self.abort(job_id, defer, pending),
        }
    }

    /// ABORT. A faulted job just goes (answer ERROR / ABORTED, as in
    /// protocol 0.2). A queued job (not on a worker now, nothing of it in
    /// flight) is taken off the queue: its JOB/RESUME request is answered
    /// ERROR / ABORTED (through `pending`) and the ABORT OK, both at once. A
    /// job on a worker gets its cancel flag set and the ABORT answer is
    /// parked in its slot: the worker stops the job at its next access (the
    /// flag is checked inside the access section), answers the job's
    /// request ABORTED, then the ABORT OK: when that arrives, no access of
    /// the job is in flight and none will start. Unknown or finished jobs:
    /// UNKNOWN_JOB.
    fn abort(
        &self,
        job_id: u64,
        defer: &mut dyn FnMut() -> Completion,
        pending: &mut Vec<(Completion, SvmResp)>,
    ) -> Answer {
        let mut jobs = lock(&self.jobs);
        match jobs.get_mut(&job_id) {
            None => Answer::Now(SvmResp::error(ErrorCode::UnknownJob, job_id)),
            Some(JobSlot::Faulted(_)) => {
                jobs.remove(&job_id);
                drop(jobs);
                self.counters.inc(|s| &s.jobs_aborted);
                info!("ctx {} job {job_id} aborted", self.id);
                Answer::Now(SvmResp::error(ErrorCode::Aborted, job_id))
            }
            Some(JobSlot::Live(live)) => {
                // Order: jobs, then work. A worker takes a job off the
                // queue under `work` and answers it (finish) under `jobs`.
                let mut w = lock(&self.work);
                if let Some(pos) = w.items.iter().position(|(j, _)| j.id() == job_id) {
                    let (_job, done) = w.items.remove(pos).expect("position is in range");
                    drop(w);
                    let Some(JobSlot::Live(live)) = jobs.remove(&job_id) else {
                        unreachable!("matched above")
                    };
                    drop(jobs);
                    self.counters.inc(|s| &s.jobs_aborted);
                    info!("ctx {} queued job {job_id} aborted", self.id);
                    pending.push((done, SvmResp::error(ErrorCode::Aborted, job_id)));
                    pending.extend(live.aborts.into_iter().map(|c| (c, abort_ok(job_id))));
                    return Answer::Now(abort_ok(job_id));
                }
                drop(w);
                if live.aborts.len() >= MAX_ABORT_WAITERS {
                    crate::guest_warn!(
                        "svm-command",
                        "ctx {}: ABORT of job {job_id}: {MAX_ABORT_WAITERS} ABORTs wait already -> BUSY",
                        self.id
                    );
                    return Answer::Now(SvmResp::error(ErrorCode::Busy, job_id));
                }
                live.cancel.store(true, Ordering::Release);
                live.aborts.push(defer());
                debug!("ctx {} ABORT of running job {job_id}: parked", self.id);
                Answer::Later
            }
        }
    }

    /// OK once every access section in flight now has ended: at once if
    /// there is none, else from the worker that ends the last (the control
    /// queue does not wait; see [`crate::invalidate`]). `inval`: the
    /// sequence number, reason and range of an INVALIDATE (counted when
    /// answered).
    fn answer_after_accesses(
        &self,
        inval: Option<(u64, InvalReason, u64, u64)>,
        defer: &mut dyn FnMut() -> Completion,
    ) -> Answer {
        let (counters, id) = (self.counters.clone(), self.id);
        let done = move || {
            if let Some((seq, reason, start, end)) = inval {
                counters.inc(|s| &s.invalidations);
                debug!("ctx {id} INVALIDATE #{seq} {reason} [{start:#x}, {end:#x}) done");
            }
        };
        let parked = self.barrier.defer_until_drained(&mut || {
            let c = defer();
            let done = done.clone();
            Box::new(move || {
                done();
                c.complete(&SvmResp::ok());
            })
        });
        if parked {
            Answer::Later
        } else {
            done();
            Answer::Now(SvmResp::ok())
        }
    }

    /// At the start of a JOB or RESUME (before the job is queued, so before
    /// its first access): drop the TLB if the driver stored a new TLB
    /// generation (see [`crate::tlbgen`]). Without guest memory the job
    /// cannot run; the TLB goes anyway.
    fn sync_tlb_gen(&self, mem: Option<&GuestMem>) {
        let mut s = lock(&self.space);
        let Some(space) = s.space.as_mut() else {
            return; // JOB answers NO_AS, RESUME UNKNOWN_JOB
        };
        let Some(gen) = space.tlb_gen.as_mut() else {
            return;
        };
        let flushed = match mem {
            Some(mem) => gen.sync(&*mem.memory(), &mut space.mmu.tlb),
            None => {
                space.mmu.tlb.invalidate_all();
                true
            }
        };
        if flushed {
            debug!("ctx {}: new TLB generation: TLB dropped", self.id);
        }
    }

    /// SET_AS: the new address spaces (the caller then waits for the
    /// accesses through the old ones). `direct_map`: the guest kernel's
    /// direct-map base, for the checker's direct-map check (none: no check).
    /// `tlb_gen`: where the TLB generation is (none: no idle fast path).
    fn set_as(
        &self,
        mem: Option<&GuestMem>,
        gpu_root: u64,
        cpu_root: u64,
        levels: u32,
        direct_map: Option<u64>,
        tlb_gen: Option<u64>,
    ) -> Result<(), ErrorCode> {
        let in_ram = |a: u64| {
            mem.is_some_and(|m| {
                m.memory()
                    .check_range(GuestAddress(a), gpu::PAGE_SIZE as usize)
            })
        };
        if !in_ram(gpu_root) || (cpu_root != 0 && !in_ram(cpu_root)) {
            crate::guest_warn!(
                "svm-command",
                "ctx {}: SET_AS roots {gpu_root:#x} / {cpu_root:#x} outside guest RAM",
                self.id
            );
            return Err(ErrorCode::BadAddress);
        }
        let gen_in_ram = |a: u64| mem.is_some_and(|m| m.memory().check_range(GuestAddress(a), 8));
        if let Some(g) = tlb_gen.filter(|&g| !gen_in_ram(g)) {
            crate::guest_warn!(
                "svm-command",
                "ctx {}: SET_AS tlb_gen_gpa {g:#x} outside guest RAM",
                self.id
            );
            return Err(ErrorCode::BadAddress);
        }
        let Some(levels) = Levels::from_count(levels) else {
            return Err(ErrorCode::Malformed);
        };
        if cpu_root == 0 && self.cfg.checker == CheckerMode::Strict {
            // The guest cannot switch the checker off.
            crate::guest_warn!(
                "svm-command",
                "ctx {}: SET_AS without a CPU page table (root 0) refused: the checker is strict",
                self.id
            );
            return Err(ErrorCode::Malformed);
        }
        let checker = (self.cfg.checker == CheckerMode::Strict && cpu_root != 0).then(|| {
            let mut c = Checker::new(cpu_root, levels);
            c.set_direct_map(direct_map);
            c
        });
        info!(
            "ctx {} SET_AS gpu root {gpu_root:#x}, cpu root {cpu_root:#x} ({} levels), checker {}, direct map {}, TLB generation {}",
            self.id,
            levels.count(),
            if checker.is_some() { "on" } else { "off" },
            match direct_map {
                Some(b) => format!("at {b:#x}"),
                None => "unknown (not checked)".to_owned(),
            },
            match tlb_gen {
                Some(g) => format!("at {g:#x}"),
                None => "none".to_owned(),
            }
        );
        lock(&self.space).space = Some(AddressSpace {
            mmu: Mmu::new(gpu_root, self.cfg.tlb_capacity),
            checker,
            tlb_gen: tlb_gen.map(TlbGen::new),
        });
        Ok(())
    }

    /// INVALIDATE, first half: record it in the context's history and drop
    /// the TLB entries of `[start, end)` (the answer then waits for the
    /// accesses in flight). Returns its sequence number in the context.
    fn drop_translations(&self, start: u64, end: u64, reason: InvalReason) -> u64 {
        let mut st = lock(&self.space);
        let seq = st
            .history
            .record(reason, start, end, crate::checker::now_us());
        if start < end {
            if let Some(s) = st.space.as_mut() {
                s.mmu.tlb.invalidate_range(start, end);
            }
        }
        seq
    }

    /// INVALIDATE on the calling thread (reason unknown): drop the TLB
    /// entries of `[start, end)`, then wait until every access section in
    /// flight has ended.
    pub fn invalidate(&self, start: u64, end: u64) {
        self.drop_translations(start, end, InvalReason::Unknown);
        self.barrier.wait_for_accesses();
        self.counters.inc(|s| &s.invalidations);
    }

    fn bind(&self, gpu_va: u64, cpu_va: u64, size: u64) -> SvmResp {
        let mut s = lock(&self.space);
        let end = gpu_va + size; // parse checked: inside the VA space
        let overlaps = s
            .bindings
            .range(..end)
            .next_back()
            .is_some_and(|(&g, b)| g + b.size > gpu_va);
        if overlaps {
            crate::guest_warn!(
                "svm-command",
                "ctx {}: BIND [{gpu_va:#x}, {end:#x}) overlaps a binding",
                self.id
            );
            return SvmResp::error(ErrorCode::Busy, 0);
        }
        if s.bindings.len() >= self.cfg.max_bindings {
            return SvmResp::error(ErrorCode::TooBig, 0);
        }
        s.bindings.insert(gpu_va, Binding { cpu_va, size });
        debug!(
            "ctx {} BIND gpu [{gpu_va:#x}, {end:#x}) -> cpu {cpu_va:#x}",
            self.id
        );
        SvmResp::ok()
    }

    fn unbind(&self, start: u64, size: u64) -> SvmResp {
        let mut s = lock(&self.space);
        match s.bindings.get(&start) {
            Some(b) if b.size == size => {
                s.bindings.remove(&start);
                SvmResp::ok()
            }
            _ => {
                crate::guest_warn!(
                    "svm-command",
                    "ctx {}: UNBIND [{start:#x}, +{size:#x}) is not a binding",
                    self.id
                );
                SvmResp::error(ErrorCode::Malformed, 0)
            }
        }
    }

    /// BIND_ARRAY: every entry (checked by the parser as a BIND) or none.
    /// An entry must overlap neither an existing binding nor another entry
    /// (ERR_BUSY), and the context must have room for all (ERR_TOO_BIG);
    /// on an error `result` is the index of the entry refused.
    fn bind_array(&self, entries: &[BindEntry]) -> SvmResp {
        let refuse = |code: ErrorCode, i: usize, why: &str| {
            crate::guest_warn!(
                "svm-command",
                "ctx {}: BIND_ARRAY entry {i} {why}: nothing bound",
                self.id
            );
            SvmResp {
                result: i as u64,
                ..SvmResp::error(code, 0)
            }
        };
        // The entries by GPU VA (parse bounded them to MAX_BIND_ENTRIES).
        let mut order: Vec<usize> = (0..entries.len()).collect();
        order.sort_unstable_by_key(|&i| entries[i].gpu_va);
        for w in order.windows(2) {
            let (a, b) = (&entries[w[0]], &entries[w[1]]);
            // Parse checked: inside the VA space, so no overflow.
            if a.gpu_va + a.size > b.gpu_va {
                return refuse(ErrorCode::Busy, w[0].max(w[1]), "overlaps another entry");
            }
        }
        let mut s = lock(&self.space);
        for (i, e) in entries.iter().enumerate() {
            let end = e.gpu_va + e.size;
            let overlaps = s
                .bindings
                .range(..end)
                .next_back()
                .is_some_and(|(&g, b)| g + b.size > e.gpu_va);
            if overlaps {
                return refuse(ErrorCode::Busy, i, "overlaps a binding");
            }
        }
        if s.bindings.len().saturating_add(entries.len()) > self.cfg.max_bindings {
            return refuse(ErrorCode::TooBig, 0, "exceeds the context's bindings");
        }
        for e in entries {
            s.bindings.insert(
                e.gpu_va,
                Binding {
                    cpu_va: e.cpu_va,
                    size: e.size,
                },
            );
        }
        debug!("ctx {} BIND_ARRAY of {}", self.id, entries.len());
        SvmResp::ok()
    }

    /// UNBIND_ARRAY: every entry names exactly one binding, none twice, or
    /// nothing is unbound (ERR_MALFORMED, `result` the entry refused).
    fn unbind_array(&self, entries: &[(u64, u64)]) -> SvmResp {
        let refuse = |i: usize, why: &str| {
            crate::guest_warn!(
                "svm-command",
                "ctx {}: UNBIND_ARRAY entry {i} {why}: nothing unbound",
                self.id
            );
            SvmResp {
                result: i as u64,
                ..SvmResp::error(ErrorCode::Malformed, 0)
            }
        };
        let mut order: Vec<usize> = (0..entries.len()).collect();
        order.sort_unstable_by_key(|&i| entries[i].0);
        for w in order.windows(2) {
            if entries[w[0]].0 == entries[w[1]].0 {
                return refuse(w[0].max(w[1]), "names a binding twice");
            }
        }
        let mut s = lock(&self.space);
        for (i, &(start, size)) in entries.iter().enumerate() {
            if s.bindings.get(&start).is_none_or(|b| b.size != size) {
                return refuse(i, "is not a binding");
            }
        }
        for &(start, _) in entries {
            s.bindings.remove(&start);
        }
        debug!("ctx {} UNBIND_ARRAY of {}", self.id, entries.len());
        SvmResp::ok()
    }

    fn submit_job(
        &self,
        mem: Option<&GuestMem>,
        job_id: u64,
        ops: Vec<Op>,
    ) -> Result<Box<Job>, ErrorCode> {
        // Before the job can be queued, so before its first access.
        self.sync_tlb_gen(mem);
        if lock(&self.space).space.is_none() {
            crate::guest_warn!("svm-command", "ctx {}: JOB {job_id} before SET_AS", self.id);
            return Err(ErrorCode::NoAs);
        }
        let Some(mem) = mem else {
            return Err(ErrorCode::BadAddress);
        };
        let mut jobs = lock(&self.jobs);
        if jobs.contains_key(&job_id) {
            crate::guest_warn!(
                "svm-command",
                "ctx {}: JOB {job_id} is already live",
                self.id
            );
            return Err(ErrorCode::Busy);
        }
        if jobs.len() >= self.cfg.max_live_jobs {
            crate::guest_warn!(
                "svm-command",
                "ctx {}: JOB {job_id}: {} live jobs already",
                self.id,
                jobs.len()
            );
            return Err(ErrorCode::Busy);
        }
        let need = engine::min_steps(&ops);
        if need > self.cfg.max_job_steps {
            crate::guest_warn!(
                "svm-command",
                "ctx {}: JOB {job_id} needs at least {need} steps, the budget is {}",
                self.id,
                self.cfg.max_job_steps
            );
            return Err(ErrorCode::TooBig);
        }
        debug!("ctx {} JOB {job_id}: {} op(s)", self.id, ops.len());
        let job = Box::new(Job::new(
            job_id,
            ops,
            mem.clone(),
            self.abort_gen.load(Ordering::Acquire),
        ));
        jobs.insert(job_id, JobSlot::live(&job));
        Ok(job)
    }

    fn take_faulted(&self, mem: Option<&GuestMem>, job_id: u64) -> Option<Box<Job>> {
        // Before the job can be queued again, so before its next access.
        self.sync_tlb_gen(mem);
        let mut jobs = lock(&self.jobs);
        let slot = jobs.get_mut(&job_id)?;
        if !matches!(slot, JobSlot::Faulted(_)) {
            return None;
        }
        let JobSlot::Faulted(job) = slot else {
            unreachable!("checked above")
        };
        let live = JobSlot::live(job);
        match std::mem::replace(slot, live) {
            JobSlot::Faulted(job) => Some(job),
            _ => unreachable!("checked above"),
        }
    }

    /// Queues `job` for the worker pool; the completion is made only once
    /// the job is sure to run. Gives the job back when no worker runs and
    /// none can be started: the caller answers BUSY. (The job is never run
    /// inline: the caller holds the vring lock that the completion needs.)
    fn push_work(
        self: &Arc<Self>,
        job: Box<Job>,
        defer: &mut dyn FnMut() -> Completion,
    ) -> Result<(), Box<Job>> {
        let mut w = lock(&self.work);
        if !w.scheduled {
            if let Err(e) = self.pool.make_ready(self.clone()) {
                crate::guest_warn!(
                    "job",
                    "ctx {}: cannot start a job worker: {} -> BUSY",
                    self.id,
                    e.0
                );
                return Err(job);
            }
            w.scheduled = true;
        }
        // (A worker that already took the context waits for `work`.)
        w.items.push_back((job, defer()));
        Ok(())
    }

    /// On a pool worker: runs the context's first job for one time slice,
    /// puts it back at the end of the context's queue if it is not done, and
    /// the context back in the pool's queue if work is left.
    pub(crate) fn run_slice(self: Arc<Self>, pool: &Pool) {
        let Some((mut job, done)) = lock(&self.work).items.pop_front() else {
            lock(&self.work).scheduled = false;
            return;
        };
        let outcome = engine::run(&self, &mut job, engine::QUANTUM);
        if outcome == Outcome::Preempted {
            // Behind the context's other jobs: the jobs of one context share it by time
            // slices (a short job submitted while a long one runs does not wait for all of
            // it; the driver runs jobs of one file concurrently).
            lock(&self.work).items.push_back((job, done));
            pool.requeue(self);
            return;
        }
        let (resp, aborts) = self.finish(job, outcome);
        done.complete(&resp);
        // After the job's own answer: it has stopped, none of its accesses
        // is in flight.
        for a in aborts {
            a.complete(&abort_ok(resp.job_id));
        }
        let mut w = lock(&self.work);
        if w.items.is_empty() {
            w.scheduled = false;
        } else {
            drop(w);
            pool.requeue(self);
        }
    }

    /// The answer to a job run that ended (not preempted), and the job's
    /// new state.
    fn finish(&self, job: Box<Job>, outcome: Outcome) -> (SvmResp, Vec<Completion>) {
        let id = job.id();
        let c = &self.counters;
        let mut jobs = lock(&self.jobs);
        // ABORTs that wait for this job to stop (answered after its own
        // answer by the caller).
        let aborts = match jobs.get_mut(&id) {
            Some(JobSlot::Live(live)) => std::mem::take(&mut live.aborts),
            _ => Vec::new(),
        };
        let stop = match outcome {
            // An ABORT of the job was accepted: whatever its last run did
            // (even completing), the answer is ABORTED.
            Outcome::Done { .. } | Outcome::Failed(_) => job.is_cancelled(),
            // A job stopped by a fault does not stay faulted if it was
            // ABORTed or its context or queue is going.
            Outcome::Fault(_) => self.must_stop_job(&job),
            Outcome::Aborted | Outcome::Preempted => false,
        };
        if stop {
            jobs.remove(&id);
            drop(jobs);
            c.inc(|s| &s.jobs_aborted);
            info!("ctx {} job {id} aborted", self.id);
            return (SvmResp::error(ErrorCode::Aborted, id), aborts);
        }
        let resp = match outcome {
            Outcome::Done { result } => {
                jobs.remove(&id);
                drop(jobs);
                c.inc(|s| &s.jobs);
                debug!("ctx {} job {id} done", self.id);
                SvmResp {
                    job_id: id,
                    result,
                    ..SvmResp::ok()
                }
            }
            Outcome::Fault(fault) => {
                jobs.insert(id, JobSlot::Faulted(job));
                drop(jobs);
                c.inc(|s| &s.faults);
                debug!(
                    "ctx {} job {id} faulted at {:#x} ({}) op {} progress {:#x}",
                    self.id,
                    fault.va,
                    if fault.access == vgpu_uapi::VGPU_SVM_ACCESS_WRITE {
                        "write"
                    } else {
                        "read"
                    },
                    fault.op_index,
                    fault.progress
                );
                SvmResp {
                    status: Status::Fault,
                    job_id: id,
                    fault,
                    ..SvmResp::ok()
                }
            }
            Outcome::Failed(code) => {
                jobs.remove(&id);
                drop(jobs);
                c.inc(|s| &s.errors);
                c.inc(|s| &s.jobs_failed);
                crate::guest_warn!("job", "ctx {} job {id} failed: {code:?}", self.id);
                SvmResp::error(code, id)
            }
            Outcome::Aborted | Outcome::Preempted => {
                jobs.remove(&id);
                drop(jobs);
                c.inc(|s| &s.jobs_aborted);
                info!("ctx {} job {id} aborted", self.id);
                SvmResp::error(ErrorCode::Aborted, id)
            }
        };
        (resp, aborts)
    }

    /// CTX_DESTROY / device reset: stop every job. Returns when no access of
    /// this context is in flight (and none will start); queued jobs'
    /// completions (ABORTED) are pushed to `pending` for the caller.
    pub fn destroy(&self, pending: &mut Vec<(Completion, SvmResp)>) {
        self.cancelled.store(true, Ordering::Release);
        self.abort_jobs(pending);
    }

    /// Ends every job (queued ones' ABORTED answers go to `pending`; the
    /// running one answers ABORTED from its worker; faulted ones just go).
    /// Returns when no access of those jobs is in flight.
    pub fn abort_jobs(&self, pending: &mut Vec<(Completion, SvmResp)>) {
        self.abort_gen.fetch_add(1, Ordering::AcqRel);
        self.barrier.wait_for_accesses();
        let queued: Vec<_> = lock(&self.work).items.drain(..).collect();
        let mut jobs = lock(&self.jobs);
        for (job, done) in queued {
            let id = job.id();
            self.counters.inc(|s| &s.jobs_aborted);
            pending.push((done, SvmResp::error(ErrorCode::Aborted, id)));
            // ABORTs parked while the job was between two time slices.
            if let Some(JobSlot::Live(live)) = jobs.remove(&id) {
                pending.extend(live.aborts.into_iter().map(|c| (c, abort_ok(id))));
            }
        }
        // Faulted jobs have no pending request: they just go.
        let faulted = jobs
            .values()
            .filter(|s| matches!(s, JobSlot::Faulted(_)))
            .count();
        jobs.retain(|_, s| !matches!(s, JobSlot::Faulted(_)));
        self.counters.add(|s| &s.jobs_aborted, faulted as u64);
    }

    /// Translates (and checks) the accesses of one run of `job` (see
    /// [`crate::engine`]: up to [`crate::engine::RUN_PAGES`] page-sized
    /// steps, a COPY's source and destination each), in order, inside one
    /// access section, under one acquisition of the space lock. Fills
    /// `out` and returns how many accesses, from the first, were translated,
    /// and the error of the one after them, if any (the engine reports it
    /// when it is the run's first step, else retries it as the next run).
    /// Counts go to `tally` (published by the engine), violations at once
    /// to the context's counters.
    ///
    /// The CPU page table is walked once for the run (its upper levels once
    /// per 2 MiB span, each access's 4 KiB entry for that access:
    /// [`RunWalks`]; the direct map afresh for every access); nothing of the
    /// CPU side is kept past the run, nothing the driver says is trusted for
    /// it; [`Context::recheck_run`] walks it all again after the data moved.
    pub(crate) fn access_run(
        &self,
        mem: &GuestMemoryMmap,
        job: u64,
        tally: &mut JobTally,
        accesses: &[(u64, Access)],
        out: &mut [Checked],
    ) -> (usize, Option<StepError>) {
        // Page-table loads of this run go through one region cache.
        let pm = RegionCache::new(mem);
        let mut st = lock(&self.space);
        let st = &mut *st;
        let Some(space) = st.space.as_mut() else {
            return (0, Some(StepError::Fail(ErrorCode::NoAs)));
        };
        // This run's checks, before any of its data moves (see RunWalks).
        let mut walks = space.checker.as_ref().map(Checker::run_walks);
        for (i, (&(va, access), slot)) in accesses.iter().zip(out.iter_mut()).enumerate() {
            let cpu_va = SpaceState::cpu_va_in(&st.bindings, va);
            match self.access_one(
                &pm,
                space,
                walks.as_mut(),
                &st.history,
                cpu_va,
                job,
                tally,
                va,
                access,
            ) {
                Ok(c) => *slot = c,
                Err(e) => return (i, Some(e)),
            }
        }
        (accesses.len().min(out.len()), None)
    }

    /// After a run's data moved, still inside its access section: walks
    /// the CPU page table again (the mirrored VA, not the direct map) for
    /// every access that was clean before
    /// (`checked`, from [`Context::access_run`]) and counts a violation if
    /// the CPU no longer maps the frame the device used (or lets it write
    /// it): the kernel changed the entry while the device was using it,
    /// which only a missing or early INVALIDATE allows. Not counted as
    /// further accesses checked.
    pub(crate) fn recheck_run(
        &self,
        mem: &GuestMemoryMmap,
        job: u64,
        tally: &mut JobTally,
        accesses: &[(u64, Access)],
        checked: &[Checked],
    ) {
        let pm = RegionCache::new(mem);
        let mut st = lock(&self.space);
        let st = &mut *st;
        let Some(checker) = st.space.as_mut().and_then(|s| s.checker.as_mut()) else {
            return;
        };
        // Walks read afresh after the data moved: nothing read before the
        // copy answers them.
        let mut walks = checker.run_walks();
        for (&(va, access), c) in accesses.iter().zip(checked) {
            if !c.clean {
                continue;
            }
            let cpu_va = SpaceState::cpu_va_in(&st.bindings, va);
            let info = AccessInfo {
                ctx: self.id,
                job,
                gpu_va: va,
                history: Some(&st.history),
            };
            // (The direct-map check is not repeated: as before runs, once
            // per access, before the data moves.)
            let verdict = checker.check_in(&pm, &mut walks, info, cpu_va, c.pa, access);
            self.count_verdict(tally, verdict);
        }
    }

    /// Counts one checker verdict (violations at once, after the tally).
    fn count_verdict(&self, tally: &mut JobTally, verdict: Verdict) -> bool {
        match verdict {
            Verdict::Ok => true,
            Verdict::Violation(v) => {
                // The accesses first: never more violations than checks.
                tally.publish(&self.counters);
                self.counters.violation(&v);
                false
            }
            Verdict::CpuWalkError(_) => {
                tally.cpu_walk_errors += 1;
                false
            }
        }
    }

    /// One access of [`Context::access_run`] (the space lock held).
    #[allow(clippy::too_many_arguments)]
    fn access_one(
        &self,
        mem: &RegionCache<'_, GuestMemoryMmap>,
        space: &mut AddressSpace,
        walks: Option<&mut RunWalks>,
        history: &InvalHistory,
        cpu_va: u64,
        job: u64,
        tally: &mut JobTally,
        va: u64,
        access: Access,
    ) -> Result<Checked, StepError> {
        let tlb = space.mmu.tlb.stats;
        let mut r = space.mmu.translate(mem, va, access);
        if let Err(MmuError::Fault { .. }) = r {
            // Maybe a stale read-only TLB entry for a write: like a CPU,
            // drop the entry and walk again before raising the fault.
            let page = va & !(gpu::PAGE_SIZE - 1);
            space.mmu.tlb.invalidate_range(page, page + gpu::PAGE_SIZE);
            r = space.mmu.translate(mem, va, access);
        }
        tally.tlb_hits += space.mmu.tlb.stats.hits - tlb.hits;
        tally.tlb_misses += space.mmu.tlb.stats.misses - tlb.misses;
        let t = match r {
            Ok(t) => t,
            Err(MmuError::Fault { va, access }) => return Err(StepError::Fault { va, access }),
            Err(MmuError::Walk(e)) => {
                crate::guest_warn!("job", "ctx {} job {job}: {e}", self.id);
                return Err(StepError::Fail(walk_error_code(e)));
            }
            Err(e @ MmuError::Unstable { .. }) => {
                crate::guest_warn!("job", "ctx {} job {job}: {e}", self.id);
                return Err(StepError::Fail(ErrorCode::BadPageTable));
            }
        };
        let pa = t.phys(va);
        tally.pages_accessed += 1;
        let (Some(checker), Some(walks)) = (space.checker.as_mut(), walks) else {
            tally.unchecked_accesses += 1;
            return Ok(Checked { pa, clean: false });
        };
        let info = AccessInfo {
            ctx: self.id,
            job,
            gpu_va: va,
            history: Some(history),
        };
        tally.accesses_checked += 1;
        let verdicts = [
            checker.check_in(mem, walks, info, cpu_va, pa, access),
            // Then the frame itself: is it in the kernel's direct map?
            checker.check_frame(mem, info, cpu_va, pa, access),
        ];
        let mut clean = true;
        for verdict in verdicts {
            clean &= self.count_verdict(tally, verdict);
        }
        Ok(Checked { pa, clean })
    }

    /// The GPU VA -> CPU VA mapping the checker uses (for tests and logs).
    pub fn mirrored_cpu_va(&self, va: u64) -> u64 {
        lock(&self.space).cpu_va(va)
    }
}

/// One translated access of a run: the guest physical address, and
/// whether the checker found it clean (then it is checked again after the
/// data moved; `false` also when the checker is off).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Checked {
    pub pa: u64,
    pub clean: bool,
}

/// The answer to an ABORT of a queued or running job, once it has stopped.
fn abort_ok(job_id: u64) -> SvmResp {
    SvmResp {
        job_id,
        ..SvmResp::ok()
    }
}

/// A fault report for `va` while running op `op_index` at `progress`.
pub(crate) fn fault_info(va: u64, access: Access, op_index: usize, progress: u64) -> FaultInfo {
    FaultInfo {
        va: va & !(gpu::PAGE_SIZE - 1),
        access: match access {
            Access::Read => vgpu_uapi::VGPU_SVM_ACCESS_READ,
            Access::Write => vgpu_uapi::VGPU_SVM_ACCESS_WRITE,
        },
        op_index: op_index as u32,
        progress,
    }
}

/// ATOMIC_ADD's retry bound (see the engine).
pub(crate) const fn atomic_retries() -> usize {
    ATOMIC_RETRIES
}

/// Tests: waits (up to a minute) until the context's pool has no worker.
#[cfg(test)]
pub(crate) fn tests_wait_worker_gone(ctx: &Context) {
    let t = std::time::Instant::now();
    while ctx.pool.threads() > 0 {
        assert!(t.elapsed() < Duration::from_secs(60), "worker did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
}
