//! The job worker pool: a fixed cap of worker threads shared by every
//! context (`--workers`, default [`DEFAULT_WORKERS`]).
//!
//! A context with work is *ready*: it sits once in the pool's round-robin
//! queue. A worker takes the first ready context, runs its first job for at
//! most one time slice ([`crate::engine::QUANTUM`] accesses), and puts the
//! context back at the end of the queue if it has work left; a job that is
//! not done goes to the end of its context's own queue (it continues where
//! it stopped in a later slice). So the jobs of one context never run two
//! at once but share the context by time slices, round robin (a short job
//! submitted while a long one runs ends after at most a slice of each job
//! ahead of it), and a long or slow job of one context cannot keep the jobs
//! of other contexts from running for more than a slice per worker.
//!
//! Nothing on the control queue ever waits for a worker: INVALIDATE waits
//! only for the access sections of its own context ([`crate::invalidate`]).
//!
//! Threads are started on demand, up to the cap, and exit after
//! [`WORKER_IDLE`] without work. If no thread can be started while none
//! runs, the job is refused (BUSY); if some run, it waits for them.
//!
//! Locks: a context's `work` lock may be held while taking the pool's lock
//! (to make the context ready), never the other way round.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use log::warn;

use crate::context::{Context, SpawnFn};

/// Default cap of worker threads.
pub const DEFAULT_WORKERS: usize = 4;
/// Largest accepted cap.
pub const MAX_WORKERS: usize = 256;
/// How long an idle worker waits for more work before it exits.
pub const WORKER_IDLE: Duration = Duration::from_millis(500);

#[derive(Default)]
struct State {
    ready: VecDeque<Arc<Context>>,
    /// Worker threads alive.
    threads: usize,
    /// Of those, waiting for work.
    idle: usize,
    /// Most threads ever alive at once (for tests and the log).
    peak: usize,
}

pub struct Pool {
    state: Mutex<State>,
    cv: Condvar,
    max: usize,
    spawn: SpawnFn,
}

/// The pool could not start a worker and has none.
#[derive(Debug)]
pub struct NoWorker(pub std::io::Error);

impl Pool {
    pub fn new(max: usize, spawn: SpawnFn) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State::default()),
            cv: Condvar::new(),
            max: max.clamp(1, MAX_WORKERS),
            spawn,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cap of worker threads.
    pub fn max_workers(&self) -> usize {
        self.max
    }

    /// Worker threads alive now.
    pub fn threads(&self) -> usize {
        self.lock().threads
    }

    /// Most worker threads alive at once so far.
    pub fn peak_threads(&self) -> usize {
        self.lock().peak
    }

    /// Makes `ctx` ready (the caller holds its `work` lock and knows it is
    /// not ready yet), starting a worker if none is idle and the cap allows.
    /// Fails only when no worker runs and none can be started.
    pub fn make_ready(self: &Arc<Self>, ctx: Arc<Context>) -> Result<(), NoWorker> {
        let mut st = self.lock();
        // Idle workers that are not already promised to a ready context.
        if st.idle <= st.ready.len() && st.threads < self.max {
            let pool = self.clone();
            match (self.spawn)("vgpu-worker".into(), Box::new(move || pool.worker())) {
                Ok(()) => {
                    st.threads += 1;
                    st.peak = st.peak.max(st.threads);
                }
                Err(e) if st.threads == 0 => return Err(NoWorker(e)),
                Err(e) => warn!(
                    "cannot start a job worker ({e}); {} running will do",
                    st.threads
                ),
            }
        }
        st.ready.push_back(ctx);
        drop(st);
        self.cv.notify_one();
        Ok(())
    }

    /// Puts a context that still has work back at the end of the queue
    /// (from a worker: a thread is running, no need to start one).
    pub fn requeue(&self, ctx: Arc<Context>) {
        self.lock().ready.push_back(ctx);
        self.cv.notify_one();
    }

    /// The next ready context, or None when the worker should exit.
    fn next(&self) -> Option<Arc<Context>> {
        let mut st = self.lock();
        loop {
            if let Some(c) = st.ready.pop_front() {
                return Some(c);
            }
            st.idle += 1;
            let (g, t) = self
                .cv
                .wait_timeout(st, WORKER_IDLE)
                .unwrap_or_else(|p| p.into_inner());
            st = g;
            st.idle -= 1;
            if t.timed_out() && st.ready.is_empty() {
                st.threads -= 1;
                return None;
            }
        }
    }

    fn worker(self: Arc<Self>) {
        while let Some(ctx) = self.next() {
            ctx.run_slice(&self);
        }
    }
}
