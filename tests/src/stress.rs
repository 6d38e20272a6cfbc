//! A mixed device load for the fault-injection job and the soak: workers that each own a
//! context and memory and run device jobs in a loop, checking every result against what
//! the CPU sees, while they change their memory under the mirror (NUMA migration, re-mapping,
//! fork/COW, THP, swap-out).
//!
//! A worker is a [`Step`] (one job and its check) run by [`drive`] until it fails, goes
//! wrong or is told to stop; how it ended is an [`Outcome`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use vgpu::{Context, Job};

use crate::child::{fork_child, Exit};
use crate::mem::Mapping;

/// When set, the workers stop changing their memory (no migration, re-mapping or fork):
/// they only run jobs, so nothing of theirs invalidates while the device is stalled or dead.
/// Then the fault takes the path its test chose: the driver's job timeouts, or the test's own
/// munmap of memory that stayed mirrored (a fork clears every private mirrored page).
pub static QUIET: AtomicBool = AtomicBool::new(false);

fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// Documented and expected under load without any fault: try again.
pub const RETRY: [i32; 2] = [libc::EAGAIN, libc::EBUSY];

/// How one worker ended.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The worker's name.
    pub kind: &'static str,
    /// Steps that succeeded.
    pub iterations: u64,
    /// Steps that failed with a [`RETRY`] errno.
    pub retries: u64,
    /// The errno that ended it (None: stopped by the controller, or a data error).
    pub end_errno: Option<i32>,
    /// When it ended, since the fault was requested.
    pub end_after: Option<Duration>,
    /// How long the ioctl that failed took.
    pub end_ioctl: Duration,
    /// The errno of one more SUBMIT after the failure (later work).
    pub later_errno: Option<i32>,
    /// A wrong result, or a setup failure.
    pub error: Option<String>,
}

/// One step of a worker: a device job and the check of what it did. `Err(Ok(errno))` is an
/// ioctl failure, `Err(Err(msg))` a wrong result.
pub type Step<'a> = Box<dyn FnMut(u64) -> Result<(), Result<i32, String>> + 'a>;

/// Since when (ms after [`EPOCH`], +1) a worker is in its current step; 0: between steps.
pub type Busy = AtomicU64;

static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

fn now_ms() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// Waits until every worker has been inside one step for `stuck` at the same time (a step
/// takes milliseconds while the device works; one slow step under load proves nothing: a
/// single stuck worker once let the kill phase munmap before the daemon was dead): the proof
/// that the fault took effect, whatever the console's latency. It comes before any reset
/// (those wait for a timeout of at least the command timeout, and QEMU holds the vCPU
/// during one, so the workers would not be seen stuck). False after `limit`.
pub fn wait_stuck(busy: &[Busy], stuck: Duration, limit: Duration) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        let now = now_ms();
        if busy.iter().all(|b| {
            let since = b.load(Ordering::Relaxed);
            since != 0 && now.saturating_sub(since) >= stuck.as_millis() as u64
        }) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// One device job over all of `m` (private anonymous memory of the caller's worker): write
/// the pattern of `seed`, hash it back; the hash must be the CPU's.
pub fn write_and_hash(ctx: &Context, m: &Mapping, seed: u64) -> Result<(), Result<i32, String>> {
    let (a, len) = (m.addr(), m.len() as u64);
    // SAFETY: the job writes only `m`, which no one else uses (the caller's promise).
    let r = unsafe { ctx.submit(&Job::new().write_pattern(a, len, seed).hash(a, len)) }.map_err(|e| errno(e))?;
    let cpu = m.cpu_hash(0, m.len());
    if r.result != cpu {
        return Err(Err(format!("device hash {:#x} != CPU hash {cpu:#x}", r.result)));
    }
    Ok(())
}

/// A kind of worker: its name, whether its context is SVM, and how it is made.
pub type Worker = (&'static str, bool, fn(&Context) -> Result<Step<'_>, String>);

/// Starts `workers` in `scope`, each on a context of its own, driven by [`drive`] with its
/// slot of `busy`; each sends its [`Outcome`] on `tx` when it ends (a failed setup is an
/// outcome with `error`).
pub fn spawn_workers<'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    workers: &[Worker],
    stop: &'scope AtomicBool,
    fault_at: &'scope OnceLock<Instant>,
    busy: &'scope [Busy],
    tx: &std::sync::mpsc::Sender<Outcome>,
) {
    for (&(kind, svm, make), busy) in workers.iter().zip(busy) {
        let tx = tx.clone();
        scope.spawn(move || {
            let o = (|| {
                let ctx = Context::open_default().map_err(|e| e.to_string())?;
                ctx.config(svm).map_err(|e| e.to_string())?;
                let step = make(&ctx)?;
                Ok::<_, String>(drive(kind, step, stop, fault_at, busy))
            })()
            .unwrap_or_else(|e| Outcome { kind, error: Some(format!("setup: {e}")), ..Outcome::default() });
            let _ = tx.send(o);
        });
    }
}

/// Runs `step` until it fails with a device-failure errno, `stop` is set, or it goes wrong.
pub fn drive(kind: &'static str, mut step: Step<'_>, stop: &AtomicBool, fault_at: &OnceLock<Instant>, busy: &Busy) -> Outcome {
    let mut o = Outcome { kind, ..Outcome::default() };
    while !stop.load(Ordering::Relaxed) {
        let t0 = Instant::now();
        busy.store(now_ms(), Ordering::Relaxed);
        let r = step(o.iterations);
        busy.store(0, Ordering::Relaxed);
        match r {
            Ok(()) => o.iterations += 1,
            Err(Ok(e)) if RETRY.contains(&e) => o.retries += 1,
            Err(Ok(e)) => {
                o.end_errno = Some(e);
                o.end_ioctl = t0.elapsed();
                o.end_after = fault_at.get().map(|t| t.elapsed());
                o.later_errno = step(o.iterations).err().and_then(|r| r.ok());
                return o;
            }
            Err(Err(msg)) => {
                o.error = Some(format!("iteration {}: {msg}", o.iterations));
                return o;
            }
        }
    }
    o
}

fn errno(e: vgpu::Error) -> Result<i32, String> {
    Ok(e.errno())
}

/// SVM: write a pattern with the device, hash it back, compare with the CPU; every 4th
/// iteration move the buffer to the other NUMA node, every 16th map it afresh.
pub fn svm_worker(ctx: &Context, pages: usize) -> Result<Step<'_>, String> {
    let mut m = Mapping::anon(pages * 4096).map_err(|e| e.to_string())?;
    let nodes = crate::sysutil::numa_nodes();
    Ok(Box::new(move |i| {
        if i % 16 == 15 && !quiet() {
            m = Mapping::anon(pages * 4096).map_err(|e| Err(format!("mmap: {e}")))?;
        }
        if i % 4 == 3 && nodes.len() > 1 && !quiet() {
            let node = nodes[(i / 4) as usize % nodes.len()];
            let _ = crate::sysutil::move_pages(&m.page_addrs(), Some(node));
        }
        write_and_hash(ctx, &m, i)
    }))
}

/// Userptr: the device fills a bound object, the CPU checks the bytes.
pub fn userptr_worker(ctx: &Context, pages: usize, gpu_va: u64) -> Result<Step<'_>, String> {
    let m = Mapping::anon(pages * 4096).map_err(|e| e.to_string())?;
    let bo = ctx.userptr_raw(m.addr() as *const u8, m.len(), false).map_err(|e| e.to_string())?;
    bo.bind(gpu_va).map_err(|e| e.to_string())?;
    Ok(Box::new(move |i| {
        let byte = (i % 251) as u8 + 1;
        // SAFETY: the job writes only the object, which covers `m`, memory of this worker.
        unsafe { ctx.submit(&Job::new().fill(gpu_va, m.len() as u64, byte).uses(&bo)) }.map_err(|e| errno(e))?;
        let got = m.read(0, m.len());
        if let Some(p) = got.iter().position(|&b| b != byte) {
            return Err(Err(format!("byte {p} is {:#x} after a device fill with {byte:#x}", got[p])));
        }
        Ok(())
    }))
}

/// Fork/COW: the device writes mirrored memory, a child writes it too (breaking COW), the
/// device hashes the parent's copy, which must be the device's pattern.
pub fn fork_worker(ctx: &Context, pages: usize) -> Result<Step<'_>, String> {
    let m = Mapping::anon(pages * 4096).map_err(|e| e.to_string())?;
    Ok(Box::new(move |i| {
        let (a, len) = (m.addr(), m.len() as u64);
        // SAFETY: the job writes only `m`, private anonymous memory of this worker.
        unsafe { ctx.submit(&Job::new().write_pattern(a, len, i)) }.map_err(|e| errno(e))?;
        let want = m.cpu_hash(0, m.len());
        if quiet() {
            return Ok(());
        }
        let mut child = fork_child(|_| {
            m.fill(0, m.len(), 0xee);
            Ok(())
        })
        .map_err(|e| Err(format!("fork: {e}")))?;
        let exit = child.wait_exit(Duration::from_secs(60)).map_err(Err)?;
        if exit != Exit::Code(0) {
            return Err(Err(format!("COW child: {exit:?}")));
        }
        let r = ctx.submit_readonly(&Job::new().hash(a, len)).map_err(|e| errno(e))?;
        if r.result != want {
            return Err(Err(format!("after the child's COW writes the device hashes {:#x}, want {want:#x}", r.result)));
        }
        Ok(())
    }))
}

/// The errno's name for reports (`ENODEV`), or `errno N`.
pub fn errno_name(e: i32) -> String {
    match e {
        libc::ENODEV => "ENODEV".into(),
        libc::EIO => "EIO".into(),
        libc::ETIMEDOUT => "ETIMEDOUT".into(),
        libc::EINTR => "EINTR".into(),
        libc::EAGAIN => "EAGAIN".into(),
        libc::EBUSY => "EBUSY".into(),
        libc::EFAULT => "EFAULT".into(),
        libc::EINVAL => "EINVAL".into(),
        libc::ENOMEM => "ENOMEM".into(),
        e => format!("errno {e}"),
    }
}


/// THP and swap: a 2 MiB-aligned buffer with `MADV_HUGEPAGE` that the device writes and
/// hashes whole (2 MiB GPU entries where the CPU maps a PMD); every 8th iteration part of it
/// is paged out (`MADV_PAGEOUT`: swapped if swap is on), every 16th one page's protection is
/// changed and restored (splitting the PMD mapping).
pub fn thp_worker(ctx: &Context, huge_pages: usize) -> Result<Step<'_>, String> {
    const HUGE: usize = 2 << 20;
    const MADV_PAGEOUT: i32 = 21;
    let m = Mapping::anon_aligned(huge_pages * HUGE, HUGE).map_err(|e| e.to_string())?;
    m.madvise(0, m.len(), libc::MADV_HUGEPAGE).map_err(|e| format!("MADV_HUGEPAGE: {e}"))?;
    m.fill(0, m.len(), 0);
    Ok(Box::new(move |i| {
        if i % 8 == 7 {
            let _ = m.madvise((i as usize / 8 % 8) * 65536, 65536, MADV_PAGEOUT);
        }
        if i % 16 == 15 {
            let off = (i as usize / 16 % 512) * 4096;
            m.mprotect(off, 4096, libc::PROT_READ).map_err(|e| Err(format!("mprotect: {e}")))?;
            m.mprotect(off, 4096, libc::PROT_READ | libc::PROT_WRITE).map_err(|e| Err(format!("mprotect: {e}")))?;
        }
        write_and_hash(ctx, &m, i)
    }))
}
