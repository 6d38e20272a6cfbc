//! Figure 3: the CPU-side cost of being mirrored. munmap, fork, mprotect and
//! NUMA migration (move_pages to the other node) of a CPU-populated range,
//! timed in four states: unmirrored (nothing open), mirrored by an SVM
//! context (a device job wrote the whole range), covered by a validated
//! userptr object, and mirrored by dmirror (HMM_DMIRROR_READ of the range);
//! 7 repetitions (move_pages) or 11 (the others), the four states in turn
//! in each. The unmirrored baseline
//! runs in a forked child while the bench has nothing open.

use vgpu::{Context, Job, UserptrBo};
use vgpu_tests::mem::Mapping;

use super::fault::{fresh, svm_context};
use super::*;

pub struct Params {
    pub size: usize,
    /// Repetitions of move_pages per state, the states interleaved.
    pub reps: usize,
    /// Repetitions of munmap, fork and mprotect (cheaper than move_pages, and
    /// noisier: a few ms under TCG).
    pub quick_reps: usize,
}

pub const DEFAULT: Params = Params {
    size: 256 * MIB,
    reps: 7,
    quick_reps: 11,
};

#[derive(Clone, Copy, PartialEq)]
enum State {
    Unmirrored,
    Svm,
    Userptr,
    Dmirror,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Unmirrored => "unmirrored",
            State::Svm => "svm",
            State::Userptr => "userptr",
            State::Dmirror => "dmirror",
        }
    }
}

#[derive(Clone, Copy)]
enum Op {
    Munmap,
    Fork,
    Mprotect,
    MovePages,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Munmap => "munmap",
            Op::Fork => "fork",
            Op::Mprotect => "mprotect",
            Op::MovePages => "move_pages",
        }
    }
}

const GPU_VA: u64 = 0x1000_0000_0000;
const DM_CHUNK: usize = 16 * MIB;

/// One repetition of `op` in `state`: a fresh CPU-populated range, mirrored as `state`
/// says (the context, object or dmirror opened for this repetition only and closed
/// after), the op timed. Returns (ms, pages moved by move_pages).
fn one(op: Op, state: State, size: usize) -> R<(f64, i64)> {
    let m = fresh(size, false)?;
    touch_pages(m.addr(), size);
    match state {
        State::Unmirrored => {
            let (t, rest, extra) = do_op(op, m)?;
            drop(rest);
            Ok((t, extra))
        }
        State::Svm => {
            let svm = svm_context()?;
            // SAFETY: writes only the private mapping `m`.
            unsafe { svm.submit(&Job::new().write_pattern(m.addr(), size as u64, 7)) }
                .ctx("svm mirror job")?;
            let (t, rest, extra) = do_op(op, m)?;
            drop(rest);
            drop(svm);
            Ok((t, extra))
        }
        State::Userptr => {
            let up = Context::open_default().ctx("open")?;
            up.config(false).ctx("CTX_CONFIG")?;
            let bo: UserptrBo = up
                .userptr_raw(m.addr() as *const u8, size, false)
                .ctx("USERPTR_CREATE")?;
            bo.bind(GPU_VA).ctx("BIND")?;
            up.submit_readonly(&Job::new().read(GPU_VA, PAGE as u64).uses(&bo))
                .ctx("validate")?;
            let (t, rest, extra) = do_op(op, m)?;
            drop(bo);
            drop(rest);
            drop(up);
            Ok((t, extra))
        }
        State::Dmirror => {
            let dm_buf = Mapping::anon(DM_CHUNK).ctx("mmap")?;
            touch_pages(dm_buf.addr(), DM_CHUNK);
            let dm = Dmirror::open()?;
            for off in (0..size).step_by(DM_CHUNK) {
                let n = DM_CHUNK.min(size - off);
                dm.read(m.addr() + off as u64, dm_buf.addr(), (n / PAGE) as u64)?;
            }
            let (t, rest, extra) = do_op(op, m)?;
            drop(rest);
            drop(dm);
            Ok((t, extra))
        }
    }
}

/// Runs `op` on `m` (consumed for munmap); returns its duration.
fn do_op(op: Op, m: Mapping) -> R<(f64, Option<Mapping>, i64)> {
    let (addr, len) = (m.addr(), m.len());
    let mut extra = 0i64;
    let d = match op {
        Op::Munmap => {
            let (addr, len) = m.leak();
            // SAFETY: our own mapping, leaked just above.
            let (r, d) = timed(|| unsafe { libc::munmap(addr as *mut libc::c_void, len) });
            if r != 0 {
                return Err(format!("munmap: {}", io::Error::last_os_error()));
            }
            return Ok((ms(d), None, 0));
        }
        Op::Mprotect => {
            // SAFETY: our own mapping.
            let (r, d) = timed(|| unsafe {
                libc::mprotect(addr as *mut libc::c_void, len, libc::PROT_READ)
            });
            if r != 0 {
                return Err(format!("mprotect: {}", io::Error::last_os_error()));
            }
            d
        }
        Op::Fork => {
            // SAFETY: the child only calls _exit.
            let (pid, d) = timed(|| unsafe { libc::fork() });
            if pid < 0 {
                return Err(format!("fork: {}", io::Error::last_os_error()));
            }
            if pid == 0 {
                // SAFETY: leave at once, running nothing of the parent's.
                unsafe { libc::_exit(0) };
            }
            let mut st = 0;
            // SAFETY: our child.
            unsafe { libc::waitpid(pid, &mut st, 0) };
            d
        }
        Op::MovePages => {
            let pages = m.page_addrs();
            let from =
                vgpu_tests::sysutil::move_pages(&pages[..1], None).ctx("move_pages query")?[0];
            let to = if from == 0 { 1 } else { 0 };
            let (r, d) = timed(|| vgpu_tests::sysutil::move_pages(&pages, Some(to)));
            let st = r.ctx("move_pages")?;
            extra = st.iter().filter(|&&s| s == to as i32).count() as i64;
            d
        }
    };
    Ok((ms(d), Some(m), extra))
}

pub fn run(p: &Params) -> R<()> {
    if vgpu_tests::sysutil::numa_nodes().len() < 2 {
        return Err("move_pages needs two NUMA nodes".into());
    }
    let states = [
        State::Unmirrored,
        State::Svm,
        State::Userptr,
        State::Dmirror,
    ];
    let size = p.size;
    for op in [Op::Munmap, Op::Fork, Op::Mprotect, Op::MovePages] {
        // The states in turn within each repetition (unmirrored, svm, userptr,
        // dmirror, unmirrored, ...), so that drift hits them alike; the
        // unmirrored one in a child forked with nothing open.
        let mut times: Vec<Vec<f64>> = vec![Vec::new(); states.len()];
        let mut moved = vec![0i64; states.len()];
        let reps = if matches!(op, Op::MovePages) {
            p.reps
        } else {
            p.quick_reps
        };
        for rep in 0..reps {
            progress(&format!("cpu: {} {} MiB, rep {}/{reps}", op.name(), size / MIB, rep + 1));
            for (si, &state) in states.iter().enumerate() {
                let (t, extra) = if state == State::Unmirrored {
                    let v = in_child(move || one(op, state, size).map(|(t, e)| vec![t, e as f64]))?;
                    (v[0], v[1] as i64)
                } else {
                    one(op, state, size)?
                };
                moved[si] = extra;
                times[si].push(t);
            }
        }
        let base = &times[0];
        let dm = &times[3];
        for (si, &state) in states.iter().enumerate().skip(1) {
            let mut f = Figure::from_reps(
                format!("{}_{}m.{}", op.name(), p.size / MIB, state.name()),
                &times[si],
                "ms",
            )
            .baseline_reps(format!("{}_{}m.unmirrored", op.name(), p.size / MIB), base)
            .param("size_mib", p.size / MIB)
            .param(
                "mapping",
                "private anonymous, MADV_NOHUGEPAGE, populated by the CPU",
            )
            .param("unmirrored", "in a forked child of a bench with nothing open (no vgpu context, no dmirror; the child never opens /dev/dri)")
            .param("mirrored", "the context / object / dmirror is opened for the repetition and closed after it")
            .param("reps", reps);
            if matches!(op, Op::MovePages) {
                f = f.param("pages_moved", moved[si]);
            }
            if matches!(op, Op::Mprotect) {
                f = f.param("op", "mprotect(PROT_READ) of the whole range");
            }
            if matches!(op, Op::Fork) {
                f = f.param(
                    "op",
                    "fork() in the parent (write-protects every page for COW); child _exits",
                );
            }
            f.emit();
        }
        for (si, &state) in states.iter().enumerate().take(3).skip(1) {
            Figure::from_reps(
                format!(
                    "{}_{}m.{}_vs_dmirror",
                    op.name(),
                    p.size / MIB,
                    state.name()
                ),
                &times[si],
                "ms",
            )
            .baseline_reps(format!("{}_{}m.dmirror", op.name(), p.size / MIB), dm)
            .param("size_mib", p.size / MIB)
            .emit();
        }
    }
    Ok(())
}
