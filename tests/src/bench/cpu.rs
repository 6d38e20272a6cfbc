//! Figure 3: the CPU-side cost of being mirrored. munmap, fork, mprotect and
//! NUMA migration (move_pages to the other node) of a CPU-populated range,
//! timed in four states: unmirrored (nothing open), mirrored by an SVM
//! context (a device job wrote the whole range), covered by a validated
//! userptr object, and mirrored by dmirror (HMM_DMIRROR_READ of the range).

use vgpu::{Context, Job, UserptrBo};
use vgpu_tests::mem::Mapping;

use super::fault::{fresh, svm_context};
use super::*;

pub struct Params {
    pub size: usize,
    /// Repetitions per (op, state); the median is reported.
    pub reps: usize,
}

pub const DEFAULT: Params = Params {
    size: 256 * MIB,
    reps: 3,
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

/// What keeps the range mirrored while the op runs.
#[allow(dead_code)]
enum Holder<'a> {
    None,
    Ctx(&'a Context),
    Bo(UserptrBo<'a>),
    Dm(Dmirror),
}

const GPU_VA: u64 = 0x1000_0000_0000;
const DM_CHUNK: usize = 16 * MIB;

fn mirror<'a>(
    state: State,
    m: &Mapping,
    svm: &'a Context,
    up: &'a Context,
    dm_buf: &Mapping,
) -> R<Holder<'a>> {
    let len = m.len();
    Ok(match state {
        State::Unmirrored => Holder::None,
        State::Svm => {
            // SAFETY: writes only the private mapping `m`.
            unsafe { svm.submit(&Job::new().write_pattern(m.addr(), len as u64, 7)) }
                .ctx("svm mirror job")?;
            Holder::Ctx(svm)
        }
        State::Userptr => {
            let bo = up
                .userptr_raw(m.addr() as *const u8, len, false)
                .ctx("USERPTR_CREATE")?;
            bo.bind(GPU_VA).ctx("BIND")?;
            up.submit_readonly(&Job::new().read(GPU_VA, PAGE as u64).uses(&bo))
                .ctx("validate")?;
            Holder::Bo(bo)
        }
        State::Dmirror => {
            let dm = Dmirror::open()?;
            for off in (0..len).step_by(DM_CHUNK) {
                let n = DM_CHUNK.min(len - off);
                dm.read(m.addr() + off as u64, dm_buf.addr(), (n / PAGE) as u64)?;
            }
            Holder::Dm(dm)
        }
    })
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
    let svm = svm_context()?;
    let up = Context::open_default().ctx("open")?;
    up.config(false).ctx("CTX_CONFIG")?;
    let dm_buf = Mapping::anon(DM_CHUNK).ctx("mmap")?;
    touch_pages(dm_buf.addr(), DM_CHUNK);
    let states = [
        State::Unmirrored,
        State::Svm,
        State::Userptr,
        State::Dmirror,
    ];
    for op in [Op::Munmap, Op::Fork, Op::Mprotect, Op::MovePages] {
        // move_pages is slow when mirrored (seconds): once; the others p.reps times,
        // the states in turn so that drift hits them alike.
        let reps = if matches!(op, Op::MovePages) {
            1
        } else {
            p.reps
        };
        let mut times: Vec<Vec<f64>> = vec![Vec::new(); states.len()];
        let mut moved = vec![0i64; states.len()];
        for _ in 0..reps {
            for (si, &state) in states.iter().enumerate() {
                let m = fresh(p.size, false)?;
                touch_pages(m.addr(), p.size);
                let holder = mirror(state, &m, &svm, &up, &dm_buf)?;
                let (t, rest, extra) = do_op(op, m)?;
                moved[si] = extra;
                times[si].push(t);
                drop(holder);
                drop(rest);
            }
        }
        let res: Vec<(State, f64, i64)> = states
            .iter()
            .enumerate()
            .map(|(i, &s)| (s, median(&times[i]), moved[i]))
            .collect();
        let base = res[0].1;
        let dm = res[3].1;
        for &(state, t, moved) in &res[1..] {
            let mut f = Figure::new(
                format!("{}_{}m.{}", op.name(), p.size / MIB, state.name()),
                t,
                "ms",
            )
            .baseline(format!("{}_{}m.unmirrored", op.name(), p.size / MIB), base)
            .param("size_mib", p.size / MIB)
            .param(
                "mapping",
                "private anonymous, MADV_NOHUGEPAGE, populated by the CPU",
            )
            .param("reps", reps);
            if matches!(op, Op::MovePages) {
                f = f.param("pages_moved", moved);
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
        for &(state, t, _) in &res[1..3] {
            Figure::new(
                format!(
                    "{}_{}m.{}_vs_dmirror",
                    op.name(),
                    p.size / MIB,
                    state.name()
                ),
                t,
                "ms",
            )
            .baseline(format!("{}_{}m.dmirror", op.name(), p.size / MIB), dm)
            .param("size_mib", p.size / MIB)
            .emit();
        }
    }
    Ok(())
}
