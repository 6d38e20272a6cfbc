//! The fuzzer's runtime: memory (arena, scratch buffers), files, workers, the mutator,
//! children, and the final verdict.

use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use super::gen::{self, Layout, Model, Op, RegionKind, OP_SIZE, PAGE};
use super::oracle::{self, errno_name, Arrays, BindArrayEntries, BindEntry, Caller, Ioctl, Ptr, SubmitArrays, Tri};
use super::rng::Rng;
use super::{cases, summary_line, Counters};
use crate::tap::Tap;

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The run's seed.
    pub seed: u64,
    /// Stop after this many ioctls (all streams together).
    pub ioctls: u64,
    /// Time budget: the run stops at `ioctls` or after this long, whichever comes first.
    pub seconds: u64,
    /// The least number of ioctls a run must make (its coverage floor); fewer when the time
    /// budget ends the run is a failure. `None`: `ioctls` (reaching the budget first fails).
    pub min_ioctls: Option<u64>,
    /// Worker threads.
    pub threads: usize,
    /// Shared files (slots) of the parent.
    pub files: usize,
    /// Fork children over the run.
    pub children: usize,
    /// ioctls per child.
    pub child_ioctls: u64,
    /// Run the memory mutator thread.
    pub mutator: bool,
    /// Also run the regression cases of known, unfixed driver bugs.
    pub known_bugs: bool,
    /// Only the regression cases.
    pub cases_only: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            seed: 0,
            ioctls: 100_000,
            seconds: 600,
            min_ioctls: None,
            threads: 4,
            files: 4,
            children: 8,
            child_ioctls: 2500,
            mutator: true,
            known_bugs: false,
            cases_only: false,
        }
    }
}

/// Usage text.
pub const USAGE: &str = "usage: vgpu-fuzz [--seed N] [--ioctls N] [--seconds S] [--min-ioctls N] [--threads N] [--files N]
                 [--children N] [--child-ioctls N] [--no-mutator] [--known-bugs] [--cases-only]
A seed replays a run's choices; with --threads 1 --children 0 --no-mutator it replays the
exact call sequence. Without --seed, a random seed (printed first).";

impl Config {
    /// Parses the arguments (without the program name).
    pub fn parse(args: &[String]) -> Result<Config, String> {
        let mut c = Config { seed: random_seed(), ..Config::default() };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut num = |name: &str| -> Result<u64, String> {
                let v = it.next().ok_or(format!("{name} needs a value"))?;
                let v = v.trim();
                let parsed = match v.strip_prefix("0x") {
                    Some(h) => u64::from_str_radix(h, 16),
                    None => v.parse(),
                };
                parsed.map_err(|_| format!("{name}: bad number `{v}`"))
            };
            match a.as_str() {
                "--seed" => c.seed = num("--seed")?,
                "--ioctls" => c.ioctls = num("--ioctls")?,
                "--seconds" => c.seconds = num("--seconds")?,
                "--min-ioctls" => c.min_ioctls = Some(num("--min-ioctls")?),
                "--threads" => c.threads = num("--threads")?.clamp(1, 16) as usize,
                "--files" => c.files = num("--files")?.clamp(1, 8) as usize,
                "--children" => c.children = num("--children")? as usize,
                "--child-ioctls" => c.child_ioctls = num("--child-ioctls")?,
                "--no-mutator" => c.mutator = false,
                "--known-bugs" => c.known_bugs = true,
                "--cases-only" => c.cases_only = true,
                "-h" | "--help" => return Err(USAGE.into()),
                _ => return Err(format!("unknown argument `{a}`\n{USAGE}")),
            }
        }
        Ok(c)
    }

    /// The least number of ioctls a run must make: `--min-ioctls`, at most `--ioctls`.
    pub fn floor(&self) -> u64 {
        self.min_ioctls.unwrap_or(self.ioctls).min(self.ioctls)
    }
}

fn random_seed() -> u64 {
    let mut b = [0u8; 8];
    if std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b)).is_ok() {
        return u64::from_le_bytes(b) >> 16; // short enough to type
    }
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// One ioctl on `fd`: 0, or the errno (a positive return value is reported as 1_000_000 + r,
/// which no oracle set contains).
pub fn ioctl(fd: i32, req: u32, arg: u64) -> i32 {
    // SAFETY: the kernel validates `arg`; the fuzzer only passes memory it owns or addresses
    // it expects to fault, and device writes stay in write-safe territory (gen.rs).
    let r = unsafe { libc::ioctl(fd, req as libc::Ioctl, arg as *mut libc::c_void) };
    match r {
        0 => 0,
        -1 => errno(),
        r => 1_000_000 + r,
    }
}

fn mmap_fixed(addr: u64, len: u64, prot: i32, flags: i32, fd: i32, off: i64) -> Result<(), i32> {
    // SAFETY: every fixed mapping the fuzzer makes is inside its own zone (scratch, arena).
    let p = unsafe { libc::mmap(addr as *mut libc::c_void, len as usize, prot, flags, fd, off) };
    if p == libc::MAP_FAILED {
        return Err(errno());
    }
    if p as u64 != addr {
        // SAFETY: the mapping just made, at the wrong place.
        unsafe { libc::munmap(p, len as usize) };
        return Err(libc::EEXIST);
    }
    Ok(())
}

fn memfd(len: u64) -> Result<i32, String> {
    // SAFETY: a valid C string.
    let fd = unsafe { libc::memfd_create(c"vgpu-fuzz".as_ptr(), libc::MFD_CLOEXEC) };
    // SAFETY: our fd.
    if fd < 0 || unsafe { libc::ftruncate(fd, len as i64) } != 0 {
        return Err(format!("memfd: {}", std::io::Error::last_os_error()));
    }
    Ok(fd)
}

/// The mappings of this process: (start, end, name).
fn maps() -> Vec<(u64, u64, String)> {
    let text = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let (range, rest) = l.split_once(' ')?;
            let (s, e) = range.split_once('-')?;
            let name = rest.split_whitespace().nth(4).unwrap_or("").to_string();
            Some((u64::from_str_radix(s, 16).ok()?, u64::from_str_radix(e, 16).ok()?, name))
        })
        .collect()
}

/// A scratch block: a memfd mapped read-write and read-only, each view followed by an
/// unmapped page.
#[derive(Debug, Clone, Copy)]
struct Block {
    rw: u64,
    ro: u64,
    len: u64,
}

impl Block {
    fn new(base: u64, pages: u64) -> Result<Block, String> {
        let len = pages * PAGE;
        let fd = memfd(len)?;
        let (rw, ro) = (base, base + len + PAGE);
        let shared = libc::MAP_SHARED | libc::MAP_FIXED_NOREPLACE;
        mmap_fixed(rw, len, libc::PROT_READ | libc::PROT_WRITE, shared, fd, 0).map_err(|e| format!("scratch rw at {rw:#x}: {}", errno_name(e)))?;
        mmap_fixed(ro, len, libc::PROT_READ, shared, fd, 0).map_err(|e| format!("scratch ro at {ro:#x}: {}", errno_name(e)))?;
        // SAFETY: the mappings keep the file.
        unsafe { libc::close(fd) };
        Ok(Block { rw, ro, len })
    }

    fn write(&self, off: u64, bytes: &[u8]) {
        let n = bytes.len().min((self.len - off.min(self.len)) as usize);
        // SAFETY: [rw + off, rw + off + n) is inside the read-write view, which only this
        // worker uses.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), (self.rw + off) as *mut u8, n) };
    }

    fn read(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        // SAFETY: callers pass an address inside the read-write view (a Valid/Misaligned
        // placement) with `len` bytes in it.
        unsafe { std::ptr::copy_nonoverlapping(addr as *const u8, v.as_mut_ptr(), len) };
        v
    }

    /// Puts `bytes` where class `ptr` says, for a kernel access of `span` bytes; returns the
    /// address, the class it really got, and whether all `span` bytes are readable.
    fn place(&self, r: &mut Rng, l: &Layout, bytes: &[u8], span: usize, ptr: Ptr) -> (u64, Ptr, Tri) {
        let span = span as u64;
        let fits = span <= self.len;
        match ptr {
            Ptr::Valid => {
                self.write(0, bytes);
                (self.rw, ptr, if fits { Tri::Yes } else { Tri::No })
            }
            Ptr::Misaligned => {
                let k = r.range(1, 7);
                if span + k > self.len {
                    return self.place(r, l, bytes, span as usize, Ptr::Valid);
                }
                self.write(k, bytes);
                (self.rw + k, ptr, Tri::Yes)
            }
            Ptr::ReadOnly => {
                self.write(0, bytes);
                (self.ro, ptr, if fits { Tri::Yes } else { Tri::No })
            }
            Ptr::Straddle => {
                let inside = (span / 2).max(1).min(self.len);
                let off = self.len - inside;
                self.write(off, &bytes[..bytes.len().min(inside as usize)]);
                // An access of one byte fits: then it is just a valid pointer.
                let class = if span > inside { ptr } else { Ptr::Valid };
                (self.rw + off, class, if span > inside { Tri::No } else { Tri::Yes })
            }
            Ptr::Null => (0, ptr, Tri::No),
            Ptr::Unmapped => (gen::UNMAPPED + r.below(16) * 8, ptr, Tri::No),
            Ptr::Kernel => (0xffff_8880_0000_0000 + r.below(1 << 20) * PAGE, ptr, Tri::No),
            Ptr::NonCanonical => (0x8000_0000_0000 + r.below(1 << 30) * PAGE, ptr, Tri::No),
            Ptr::VmIo => match l.vvar {
                Some((s, _)) => (s, ptr, Tri::Maybe),
                None => (gen::UNMAPPED, Ptr::Unmapped, Tri::No),
            },
            Ptr::Arena => (gen::arena_addr(r, l), ptr, Tri::Maybe),
        }
    }
}

/// A worker's scratch buffers: the argument, the ops array, the handles array, BIND_ARRAY's
/// entries.
struct Scratch {
    arg: Block,
    ops: Block,
    handles: Block,
    binds: Block,
}

impl Scratch {
    fn new(index: u64) -> Result<Scratch, String> {
        let base = gen::SCRATCH_BASE + index * gen::SCRATCH_STRIDE;
        Ok(Scratch {
            arg: Block::new(base, 5)?,
            ops: Block::new(base + 0x20000, 1)?,
            handles: Block::new(base + 0x40000, 2)?,
            // The limit's 64 KiB of entries, and one more.
            binds: Block::new(base + 0x60000, 17)?,
        })
    }
}

/// Maps (or maps again) `[addr, addr + len)` of an arena region with its own backing.
fn map_arena(kind: RegionKind, region_base: u64, addr: u64, len: u64, shared_fd: i32, noreplace: bool) -> Result<(), i32> {
    let fixed = if noreplace { libc::MAP_FIXED_NOREPLACE } else { libc::MAP_FIXED };
    let anon = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | fixed;
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    match kind {
        RegionKind::Thp => {
            mmap_fixed(addr, len, rw, anon, -1, 0)?;
            // SAFETY: our own arena range.
            unsafe { libc::madvise(addr as *mut libc::c_void, len as usize, libc::MADV_HUGEPAGE) };
            Ok(())
        }
        RegionKind::Small => mmap_fixed(addr, len, rw, anon, -1, 0),
        RegionKind::Shared => mmap_fixed(addr, len, rw, libc::MAP_SHARED | fixed, shared_fd, (addr - region_base) as i64),
        RegionKind::ReadOnly => mmap_fixed(addr, len, libc::PROT_READ, anon, -1, 0),
    }
}

/// Writes random bytes into arena pages through the kernel (process_vm_writev), so that a
/// page the mutator unmapped or protected meanwhile costs an error, not a SIGSEGV.
fn touch(r: &mut Rng, addr: u64, len: u64) {
    let mut buf = [0u8; 64];
    r.fill(&mut buf);
    let mut a = addr;
    while a < addr + len {
        let local = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: 8 };
        let remote = libc::iovec { iov_base: (a + r.below(PAGE - 8)) as *mut libc::c_void, iov_len: 8 };
        // SAFETY: writes 8 bytes of this process's arena through the kernel (fails on
        // unmapped or read-only pages).
        unsafe { libc::process_vm_writev(libc::getpid(), &local, 1, &remote, 1, 0) };
        a += PAGE * r.range(1, 4);
    }
}

/// One random memory operation on the arena; returns its name.
fn mem_op(r: &mut Rng, l: &Layout, shared_fd: i32) -> &'static str {
    let (reg, s, n) = l.subrange(r);
    let p = s as *mut libc::c_void;
    // SAFETY (all arms): the ranges are inside the arena, which only the fuzzer's jobs and
    // this function use; nothing in the fuzzer dereferences arena memory.
    match r.below(100) {
        0..=9 => {
            unsafe { libc::munmap(p, n as usize) };
            "munmap"
        }
        10..=31 => {
            let _ = map_arena(reg.kind, reg.base, s, n, shared_fd, false);
            "remap"
        }
        32..=35 => {
            let _ = map_arena(reg.kind, reg.base, reg.base, reg.len, shared_fd, false);
            "remap-region"
        }
        36..=45 => {
            let prot = r.pick(&[libc::PROT_NONE, libc::PROT_READ, libc::PROT_READ | libc::PROT_WRITE]);
            unsafe { libc::mprotect(p, n as usize, prot) };
            "mprotect"
        }
        46..=52 => {
            let (_, d, _) = l.subrange(r);
            let dontunmap = if r.one_in(3) { libc::MREMAP_DONTUNMAP } else { 0 };
            unsafe { libc::mremap(p, n as usize, n as usize, libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED | dontunmap, d as *mut libc::c_void) };
            "mremap"
        }
        53..=74 => {
            let advice = r.pick(&[
                libc::MADV_DONTNEED,
                libc::MADV_FREE,
                libc::MADV_PAGEOUT,
                libc::MADV_COLD,
                libc::MADV_HUGEPAGE,
                libc::MADV_NOHUGEPAGE,
                25, // MADV_COLLAPSE
                libc::MADV_WILLNEED,
                libc::MADV_REMOVE,
                libc::MADV_WIPEONFORK,
                libc::MADV_KEEPONFORK,
            ]);
            unsafe { libc::madvise(p, n as usize, advice) };
            "madvise"
        }
        75..=96 => {
            touch(r, s, n);
            "touch"
        }
        _ => {
            let _ = crate::child::fork_and_exit();
            "fork"
        }
    }
}

/// Maps the whole arena afresh: every GPU entry of every context over it is cleared (and
/// flushed) now, while the contexts are alive, so that an invalidation racing a file's
/// release afterwards (the known bug, cases.rs) finds nothing mirrored to flush.
fn scrub_arena(l: &Layout, shared_fd: i32) {
    for reg in &l.regions {
        let _ = map_arena(reg.kind, reg.base, reg.base, reg.len, shared_fd, false);
    }
}

/// A file slot shared by the parent's workers: its fd (write-locked to close and reopen it)
/// and what the fuzzer believes about it.
struct Slot {
    fd: RwLock<i32>,
    model: Mutex<Model>,
}

/// Run-wide state, read-only after start (children get a copy).
struct Global {
    cfg: Config,
    layout: Layout,
    node: CString,
    node_rdev: u64,
    shared_fd: i32,
    /// GET_PARAM values, by param (1..=5).
    params: [u64; 6],
    /// Device-wide violations before the run: the device's counters are cumulative, and a
    /// run may follow other tests (the mutant job runs it after the coherence suite's
    /// negative controls); only violations during the run count.
    violations_before: u64,
    /// ioctls of every process (in a MAP_SHARED page).
    total: &'static AtomicU64,
    /// Set when the run ends (in the same page): children see it too.
    stop: &'static AtomicBool,
    deadline: Instant,
    /// Work around a known driver bug (cases.rs): closing a file excludes memory operations
    /// (write) and fork children holding files (the gate counts running children). Parent
    /// only: a child never touches these (a copy of a held lock would deadlock it).
    avoid_release_race: bool,
    release: RwLock<()>,
    gate: Mutex<Gate>,
}

/// What a fork must know about the parent's files, under one lock: the coordinator holds it
/// across each fork, so a child sees every list complete.
struct Gate {
    /// Fork children running.
    children: usize,
    /// The worker threads' private files (open now). A fork child inherits every fd; it
    /// closes these first thing, so that it only ever uses its parent's shared files. Else its
    /// GEM_CLOSE (the DRM core's, allowed from any process) frees a handle on a worker's
    /// private file, DRM gives the worker's next object that number again, and the worker's
    /// all-or-nothing check names one object twice and blames the driver (seed
    /// 126948892842216; cases.rs, reused_handle_named_twice).
    private_fds: Vec<i32>,
}

impl Global {
    /// A new shared file: SVM configured on three of four (the first job freezes the
    /// configuration, and the random calls rarely start with CTX_CONFIG).
    fn open_slot(&self, r: &mut Rng) -> Result<i32, String> {
        let fd = self.open()?;
        if r.pct(75) {
            let cfg = Bytes32::ctx_config(1);
            let e = ioctl(fd, Ioctl::CtxConfig.request(), cfg.as_ptr() as u64);
            // ENOSPC: every device context is in use (the workers' and children's files);
            // the file stays unconfigured, and its first use tries again.
            if e != 0 && e != libc::ENOSPC {
                return Err(format!("CTX_CONFIG(SVM) on a new file: {}", errno_name(e)));
            }
        }
        Ok(fd)
    }

    fn open(&self) -> Result<i32, String> {
        // SAFETY: a valid C string.
        let fd = unsafe { libc::open(self.node.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(format!("open {:?}: {}", self.node, std::io::Error::last_os_error()));
        }
        Ok(fd)
    }

    fn should_stop(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || self.total.load(Ordering::Relaxed) >= self.cfg.ioctls || Instant::now() >= self.deadline
    }
}

/// A worker's own file and buffer for data checks (SVM on, nobody else touches either).
struct Private {
    fd: i32,
    buf: crate::mem::Mapping,
}

/// Where an ioctl goes.
#[derive(Debug, Clone, Copy)]
enum Target {
    Slot(usize),
    Foreign(i32),
}

/// A worker: one stream of random calls.
struct Worker<'a> {
    name: String,
    g: &'a Global,
    rng: Rng,
    slots: &'a [Slot],
    own_slot: usize,
    foreign: Vec<i32>,
    scratch: Scratch,
    private: Option<Private>,
    c: Counters,
    step: u64,
    quota: u64,
    saw_violations: bool,
    in_child: bool,
    /// The all-or-nothing check left the private file in a state it does not know: no more
    /// such checks on it.
    private_dirty: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Action {
    Call(Ioctl),
    Mem,
    Reopen,
    DataCheck,
    BindArrayCheck,
    Foreign,
}

impl<'a> Worker<'a> {
    fn new(name: String, g: &'a Global, stream: u64, slots: &'a [Slot], foreign: Vec<i32>, quota: u64, in_child: bool) -> Result<Worker<'a>, String> {
        let scratch = Scratch::new(stream)?;
        let fd = if in_child {
            g.open()? // nobody forks a child's process
        } else {
            // Opened and listed under the gate: a fork sees it listed or not open yet.
            let mut gate = g.gate.lock().unwrap();
            let fd = g.open()?;
            gate.private_fds.push(fd);
            fd
        };
        let cfg = Bytes32::ctx_config(1);
        // ENOSPC: every device context is in use; others' reopens and exits free them, so
        // try again for a while (bounded: 5 s).
        let mut r = ioctl(fd, Ioctl::CtxConfig.request(), cfg.as_ptr() as u64);
        for _ in 0..500 {
            if r != libc::ENOSPC {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
            r = ioctl(fd, Ioctl::CtxConfig.request(), cfg.as_ptr() as u64);
        }
        if r != 0 {
            return Err(format!("{name}: CTX_CONFIG(SVM) on its own file: {}", errno_name(r)));
        }
        let buf = crate::mem::Mapping::anon(64 * 1024).map_err(|e| e.to_string())?;
        Ok(Worker {
            own_slot: stream as usize % slots.len().max(1),
            name,
            g,
            rng: Rng::stream(g.cfg.seed, stream),
            slots,
            foreign,
            scratch,
            private: Some(Private { fd, buf }),
            c: Counters::default(),
            step: 0,
            quota,
            saw_violations: false,
            in_child,
            private_dirty: false,
        })
    }

    fn run(mut self) -> Counters {
        while !self.g.should_stop() && self.c.ioctls < self.quota {
            self.step += 1;
            self.one();
        }
        if let Some(p) = self.private.take() {
            let _g = self.avoid().then(|| self.g.release.write().unwrap());
            let fd = p.fd;
            if !self.in_child {
                // Unlisted before it closes, so a listed number is always this private file
                // (a child forked in between keeps a copy it may use: no check runs any more).
                self.g.gate.lock().unwrap().private_fds.retain(|&f| f != fd);
            }
            // Unmap the buffer first (its entries are flushed while the context lives).
            drop(p);
            // SAFETY: our fd.
            unsafe { libc::close(fd) };
        }
        self.c
    }

    fn one(&mut self) {
        let crowded = self.slots.iter().any(|s| s.model.lock().map_or(false, |m| m.handles.len() >= gen::MODEL_HANDLES));
        let w = |i: Ioctl| -> u32 {
            match i {
                Ioctl::GetParam => 80,
                Ioctl::CtxConfig => 30,
                Ioctl::UserptrCreate => if crowded { 40 } else { 100 },
                Ioctl::Bind => 90,
                Ioctl::Unbind => 50,
                Ioctl::Submit => 360,
                Ioctl::Stats => 15,
                Ioctl::BindArray => 90,
                Ioctl::GemClose => if crowded { 200 } else { 80 },
                Ioctl::Unknown => 20,
            }
        };
        let mut table: Vec<(Action, u32)> = Ioctl::ALL.iter().map(|&i| (Action::Call(i), w(i))).collect();
        table.push((Action::Mem, 30));
        table.push((Action::Reopen, 2));
        table.push((Action::DataCheck, 20));
        // On unless VGPU_FUZZ_NO_BIND_ARRAY_CHECK is set in vgpu-fuzz's environment (it was
        // off from 2cb3637 on for a failure at seed 126948892842216, a fuzzer bug: see
        // `bind_array_check_on` and the regression case reused_handle_named_twice).
        if std::env::var_os("VGPU_FUZZ_NO_BIND_ARRAY_CHECK").is_none() {
            table.push((Action::BindArrayCheck, 2));
        }
        if !self.foreign.is_empty() {
            table.push((Action::Foreign, 150));
        }
        if self.slots.is_empty() {
            table.retain(|(a, _)| !matches!(a, Action::Call(_) | Action::Reopen));
        }
        match self.rng.weighted(&table) {
            Action::Call(i) => {
                let s = if self.rng.pct(50) { self.own_slot } else { self.rng.below(self.slots.len() as u64) as usize };
                self.call(i, Target::Slot(s));
            }
            Action::Foreign => {
                let fd = self.rng.pick(&self.foreign);
                let i = self.rng.pick(&Ioctl::ALL);
                self.call(i, Target::Foreign(fd));
            }
            Action::Mem => {
                let _g = self.avoid().then(|| self.g.release.read().unwrap());
                mem_op(&mut self.rng, &self.g.layout, self.g.shared_fd);
                self.c.mem_ops += 1;
            }
            Action::Reopen => self.reopen(),
            Action::DataCheck => self.data_check(),
            Action::BindArrayCheck => self.bind_array_check(),
        }
    }

    fn record(&mut self, ioctl: Ioctl, got: i32) {
        self.c.record(ioctl, got);
        self.g.total.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether to steer clear of the known release/invalidate race (parent only).
    fn avoid(&self) -> bool {
        self.g.avoid_release_race && !self.in_child
    }

    fn reopen(&mut self) {
        let s = self.rng.below(self.slots.len() as u64) as usize;
        let slot = &self.slots[s];
        let (_gate, _release) = if self.avoid() {
            let gate = self.g.gate.lock().unwrap();
            if gate.children > 0 {
                return; // a fork child may hold the file: its exit would release it
            }
            (Some(gate), Some(self.g.release.write().unwrap()))
        } else {
            (None, None)
        };
        let mut fd = slot.fd.write().unwrap();
        if self.g.avoid_release_race {
            scrub_arena(&self.g.layout, self.g.shared_fd);
        }
        // SAFETY: our fd; no ioctl uses it (write lock).
        unsafe { libc::close(*fd) };
        match self.g.open_slot(&mut self.rng) {
            Ok(n) => *fd = n,
            Err(e) => {
                self.c.fail(format!("seed {} {} step {}: reopen: {e}", self.g.cfg.seed, self.name, self.step));
                // Keep a valid fd there: the next reopen tries again.
                *fd = self.g.open().unwrap_or(-1);
            }
        }
        *slot.model.lock().unwrap() = Model::default();
        self.c.reopens += 1;
    }

    /// One generated call on `t`, judged by the oracle.
    fn call(&mut self, ioctl: Ioctl, t: Target) {
        let (guard, model) = match t {
            Target::Slot(s) => {
                let slot = &self.slots[s];
                (Some(slot.fd.read().unwrap()), slot.model.lock().unwrap().clone())
            }
            Target::Foreign(_) => (None, Model::default()),
        };
        let fd = match (t, &guard) {
            (Target::Foreign(fd), _) => fd,
            (_, Some(g)) => **g,
            _ => unreachable!(),
        };
        if fd < 0 {
            return;
        }
        let caller = if matches!(t, Target::Foreign(_)) { Caller::Foreign } else { Caller::Owner };
        let r = &mut self.rng;
        let l = &self.g.layout;
        let req = if ioctl == Ioctl::Unknown { gen::unknown_request(r) } else { gen::request(r, ioctl) };
        let mut arrays = None;
        let mut bind_size = 0;
        let mut array_entries: Vec<(BindEntry, u64)> = Vec::new();
        let arg: Vec<u8> = match ioctl {
            Ioctl::GetParam => gen::Bytes::default().u32(gen::param(r)).u32(gen::pad(r)).u64(r.next_u64()).0,
            Ioctl::CtxConfig => gen::Bytes::default().u32(gen::ctx_flags(r)).u32(gen::pad(r)).0,
            Ioctl::UserptrCreate => {
                let (a, s, f) = gen::userptr_args(r, l);
                gen::Bytes::default().u64(a).u64(s).u32(f).u32(r.next_u32()).0
            }
            Ioctl::Bind => {
                let h = gen::handle(r, &model);
                let size = model.handle(h).map_or_else(|| r.range(1, 16) * PAGE, |o| o.size);
                bind_size = size;
                let va = gen::bind_gpu_va(r, l, &model, size);
                gen::Bytes::default().u32(h).u32(gen::pad(r)).u64(va).0
            }
            Ioctl::Unbind => gen::Bytes::default().u32(r.next_u32()).u32(gen::pad(r)).u64(gen::unbind_gpu_va(r, l, &model)).0,
            Ioctl::Submit => {
                let nr = gen::nr_ops(r);
                let plausible = r.pct(45);
                let ops: Vec<Op> = (0..nr.min(oracle::MAX_OPS))
                    .map(|_| {
                        let mut o = if plausible { gen::plausible_op(r, l, &model) } else { gen::op(r, l, &model) };
                        gen::sanitize_op(l, &mut o);
                        o
                    })
                    .collect();
                let (handles, nr_h) = if plausible && r.pct(70) && !model.bindings.is_empty() {
                    // The objects whose bindings the ops may touch.
                    let mut h: Vec<u32> = model.bindings.iter().map(|b| b.handle).filter(|h| model.handle(*h).is_some()).collect();
                    h.sort_unstable();
                    h.dedup();
                    h.truncate(64);
                    let n = h.len() as u32;
                    (h, n)
                } else {
                    gen::handles_array(r, &model)
                };
                let ops_bytes: Vec<u8> = ops.iter().flat_map(|o| o.bytes()).collect();
                let ops_class = if r.pct(92) { Ptr::Valid } else { gen::ptr_class(r) };
                let (ops_addr, _, ops_readable) = self.scratch.ops.place(r, l, &ops_bytes, nr.min(oracle::MAX_OPS) as usize * OP_SIZE, ops_class);
                let h_bytes: Vec<u8> = handles.iter().flat_map(|h| h.to_le_bytes()).collect();
                let h_class = if r.pct(92) { Ptr::Valid } else { gen::ptr_class(r) };
                let h_span = (nr_h.min(oracle::MAX_HANDLES) as usize) * 4;
                let (handles_addr, _, handles_readable) = self.scratch.handles.place(r, l, &h_bytes, h_span, h_class);
                let handles_field = if nr_h == 0 && r.pct(50) { 0 } else { handles_addr };
                arrays = Some(Arrays::Submit(SubmitArrays { ops_addr, ops_readable, ops, handles_addr: handles_field, handles_readable }));
                gen::Bytes::default()
                    .u64(ops_addr)
                    .u32(nr)
                    // Flags: PREFAULT (valid) a third of the time, otherwise mostly zero.
                    .u32(if r.below(3) == 0 { vgpu::uapi::VGPU_SVM_SUBMIT_PREFAULT } else { gen::pad(r) })
                    .u64(handles_field)
                    .u32(nr_h)
                    .u32(gen::pad(r))
                    .u64(r.next_u64())
                    .u64(r.next_u64())
                    .0
            }
            Ioctl::BindArray => {
                let flags = gen::bind_array_flags(r);
                let n = gen::bind_array_len(r);
                array_entries = gen::bind_array_entries(r, l, &model, n, flags & oracle::BIND_ARRAY_UNBIND != 0);
                let count = gen::bind_array_count(r, n);
                let bytes: Vec<u8> = array_entries.iter().flat_map(|(e, _)| e.bytes()).collect();
                // Mostly readable; else NULL, unmapped, half mapped (Straddle), [vvar], ...
                let class = if r.pct(90) { Ptr::Valid } else { gen::ptr_class(r) };
                let span = count.min(oracle::BIND_ARRAY_MAX + 1) as usize * oracle::BIND_ENTRY_SIZE;
                let (addr, _, readable) = self.scratch.binds.place(r, l, &bytes, span, class);
                let entries = array_entries.iter().map(|(e, _)| *e).collect();
                arrays = Some(Arrays::BindArray(BindArrayEntries { addr, readable, entries }));
                // `failed` is out only: start it at anything but NO_ENTRY, so that a driver
                // that does not write it is seen.
                let failed = r.next_u32() >> 1;
                gen::Bytes::default().u64(addr).u32(count).u32(flags).u32(failed).u32(gen::pad(r)).0
            }
            Ioctl::Stats => {
                let mut b = vec![0u8; Ioctl::Stats.size()];
                r.fill(&mut b);
                b
            }
            Ioctl::GemClose => gen::Bytes::default().u32(gen::handle(r, &model)).u32(gen::pad(r)).0,
            Ioctl::Unknown => {
                let mut b = vec![0u8; 64];
                r.fill(&mut b);
                b
            }
        };
        let arg = gen::fit(r, arg, req);
        let tr = oracle::transport(ioctl, req);
        let span = tr.in_size.max(tr.out_size);
        let class = if r.pct(88) { Ptr::Valid } else { gen::ptr_class(r) };
        let (addr, class, _) = self.scratch.arg.place(r, l, &arg, span, class);
        // A Straddle or short placement may not carry all the bytes: the oracle sees what
        // the kernel can read.
        let want = oracle::expect(ioctl, req, class, &arg, caller, arrays.as_ref());
        let got = ioctl_call(fd, req, addr);
        self.record(ioctl, got);
        if req != ioctl.request() {
            self.c.odd_requests += 1;
        }
        if !want.has(got) {
            let d = describe(ioctl, req, class, &arg, arrays.as_ref());
            self.c.fail(format!(
                "seed {} {} step {}: {} {d} -> {}, want {} ({})",
                self.g.cfg.seed,
                self.name,
                self.step,
                ioctl.name(),
                errno_name(got),
                want.describe(),
                if caller == Caller::Foreign { "fork child on its parent's file" } else { "owner" }
            ));
        }
        if got == 0 && ioctl == Ioctl::Submit {
            self.c.jobs_ok += 1;
        }
        // BIND_ARRAY's `.failed`, whatever the result, when the kernel read our exact struct
        // and could write it back (only results the oracle allowed: others are reported).
        if ioctl == Ioctl::BindArray && req == ioctl.request() && matches!(class, Ptr::Valid | Ptr::Misaligned) && want.has(got) {
            let failed = oracle::u32_at(&self.scratch.arg.read(addr, 24), oracle::FAILED_OFFSET);
            let entries = match &arrays {
                Some(Arrays::BindArray(a)) if a.readable == Tri::Yes => Some(&a.entries[..]),
                _ => None,
            };
            if !oracle::bind_array_failed_ok(&arg, got, failed, entries) {
                let d = describe(ioctl, req, class, &arg, arrays.as_ref());
                self.c.fail(format!(
                    "seed {} {} step {}: BIND_ARRAY {d} -> {}, .failed {failed:#x}: not what the header promises for that result ({})",
                    self.g.cfg.seed,
                    self.name,
                    self.step,
                    errno_name(got),
                    if caller == Caller::Foreign { "fork child on its parent's file" } else { "owner" }
                ));
            }
        }
        // What a success tells, when the kernel saw our exact struct at a readable and
        // writable place.
        let exact = got == 0 && req == ioctl.request() && matches!(class, Ptr::Valid | Ptr::Misaligned) && caller == Caller::Owner;
        let exact_any = got == 0 && req == ioctl.request() && matches!(class, Ptr::Valid | Ptr::Misaligned);
        if exact_any && ioctl == Ioctl::GetParam {
            let out = self.scratch.arg.read(addr, 16);
            let p = oracle::u32_at(&out, 0) as usize;
            let v = oracle::u64_at(&out, 8);
            if (1..=5).contains(&p) && v != self.g.params[p] {
                self.c.fail(format!("seed {} {} step {}: GET_PARAM({p}) = {v:#x}, want {:#x}", self.g.cfg.seed, self.name, self.step, self.g.params[p]));
            }
        }
        if exact_any && ioctl == Ioctl::Stats {
            let out = self.scratch.arg.read(addr, 16);
            let v = oracle::u64_at(&out, 8);
            self.c.max_violations_seen = self.c.max_violations_seen.max(v);
            if v > self.g.violations_before && !self.saw_violations {
                self.saw_violations = true;
                let new = v - self.g.violations_before;
                self.c.fail(format!("seed {} {} step {}: STATS shows {new} device violations during the run", self.g.cfg.seed, self.name, self.step));
            }
        }
        if !exact {
            return;
        }
        let Target::Slot(s) = t else { return };
        let mut m = self.slots[s].model.lock().unwrap();
        match ioctl {
            Ioctl::UserptrCreate => {
                let out = self.scratch.arg.read(addr, 24);
                let h = oracle::u32_at(&out, 20);
                if h == 0 {
                    drop(m);
                    self.c.fail(format!("seed {} {} step {}: USERPTR_CREATE succeeded with handle 0", self.g.cfg.seed, self.name, self.step));
                    return;
                }
                m.add_handle(gen::Handle { handle: h, cpu: oracle::u64_at(&arg, 0), size: oracle::u64_at(&arg, 8), ro: oracle::u32_at(&arg, 16) & 1 != 0 });
            }
            Ioctl::Bind => m.bind(gen::Binding { gpu_va: oracle::u64_at(&arg, 8), size: bind_size, handle: oracle::u32_at(&arg, 0) }),
            Ioctl::Unbind => m.unbind(oracle::u64_at(&arg, 8)),
            // All or nothing: every entry applied (a failed call changed nothing).
            Ioctl::BindArray if oracle::u32_at(&arg, 12) & oracle::BIND_ARRAY_UNBIND != 0 => {
                for (e, _) in &array_entries {
                    m.unbind(e.gpu_va);
                }
            }
            Ioctl::BindArray => {
                for &(e, size) in &array_entries {
                    m.bind(gen::Binding { gpu_va: e.gpu_va, size, handle: e.handle });
                }
            }
            Ioctl::GemClose => m.close(oracle::u32_at(&arg, 0)),
            _ => {}
        }
    }

    /// A job on the worker's own file and memory whose result is known: the device must
    /// have done exactly that.
    fn data_check(&mut self) {
        let Some(p) = self.private.take() else { return };
        self.data_check_on(&p);
        self.private = Some(p);
    }

    fn data_check_on(&mut self, p: &Private) {
        let r = &mut self.rng;
        let base = p.buf.addr();
        let size = p.buf.len() as u64;
        let kind = r.below(3);
        let len = r.range(1, 2 * PAGE);
        let off = r.range(8, size - len - 8) & !7;
        let dst = base + off;
        let seed = r.next_u64();
        let (ops, what): (Vec<Op>, &str) = match kind {
            0 => (vec![Op { kind: gen::FILL, dst, len, value: seed, ..Op::default() }], "FILL"),
            1 => (
                vec![
                    Op { kind: gen::WRITE_PATTERN, dst, len, value: seed, ..Op::default() },
                    Op { kind: gen::HASH, src: dst, len, ..Op::default() },
                ],
                "WRITE_PATTERN+HASH",
            ),
            _ => (vec![Op { kind: gen::ATOMIC_ADD, dst, len: 8, value: seed, ..Op::default() }], "ATOMIC_ADD"),
        };
        let before = p.buf.read(0, size as usize);
        let bytes: Vec<u8> = ops.iter().flat_map(|o| o.bytes()).collect();
        self.scratch.ops.write(0, &bytes);
        let req = gen::Bytes::default().u64(self.scratch.ops.rw).u32(ops.len() as u32).u32(0).u64(0).u32(0).u32(0).u64(0).u64(0).0;
        self.scratch.arg.write(0, &req);
        let got = ioctl_call(p.fd, Ioctl::Submit.request(), self.scratch.arg.rw);
        self.record(Ioctl::Submit, got);
        let fail = |c: &mut Counters, msg: String| c.fail(format!("seed {} {} step {}: data check {what} at {dst:#x} len {len}: {msg}", self.g.cfg.seed, self.name, self.step));
        match got {
            0 => {}
            // The memory may keep changing under the mirror (fork by the mutator).
            libc::EAGAIN | libc::EBUSY | libc::ENOMEM => return,
            e => return fail(&mut self.c, format!("SUBMIT -> {} on valid private memory", errno_name(e))),
        }
        self.c.jobs_ok += 1;
        self.c.data_checks += 1;
        let after = p.buf.read(0, size as usize);
        let result = oracle::u64_at(&self.scratch.arg.read(self.scratch.arg.rw, 48), 32);
        let mut want = before.clone();
        let (s, e) = (off as usize, (off + len) as usize);
        match kind {
            0 => want[s..e].fill(seed as u8),
            1 => {
                want[s..e].copy_from_slice(&vgpu::reference::pattern(seed, len as usize));
                let h = vgpu::reference::fnv1a64(&want[s..e]);
                if result != h {
                    return fail(&mut self.c, format!("HASH result {result:#x}, want {h:#x}"));
                }
            }
            _ => {
                let old = u64::from_le_bytes(before[s..s + 8].try_into().unwrap());
                want[s..s + 8].copy_from_slice(&old.wrapping_add(seed).to_le_bytes());
                if result != old {
                    return fail(&mut self.c, format!("ATOMIC_ADD returned {result:#x}, want the old value {old:#x}"));
                }
            }
        }
        if let Some(i) = (0..size as usize).find(|&i| after[i] != want[i]) {
            fail(&mut self.c, format!("memory differs at offset {i}: {:#x}, want {:#x}", after[i], want[i]));
        }
    }
}

/// What a step of the all-or-nothing check wants: a result and the `.failed` values allowed.
struct Want {
    errno: i32,
    failed: Vec<u32>,
}

impl Want {
    fn ok() -> Want {
        Want { errno: 0, failed: vec![oracle::NO_ENTRY] }
    }
    fn err(errno: i32, failed: &[u32]) -> Want {
        Want { errno, failed: failed.to_vec() }
    }
}

impl Worker<'_> {
    /// All or nothing, on the worker's own file (nobody else binds there, so every outcome
    /// is known): objects over its buffer, then a BIND_ARRAY with one bad entry (or a bad
    /// array pointer, or after part of it was bound already) must fail with that entry's
    /// errno and index and add nothing: the same array without the bad entry then binds
    /// whole. The same for an unbind. Then everything is unbound (binding it all again
    /// proves it) and the objects closed.
    fn bind_array_check(&mut self) {
        if self.private_dirty {
            return;
        }
        let Some(p) = self.private.take() else { return };
        let mut handles = Vec::new();
        let res = self.bind_array_check_on(&p, &mut handles);
        for h in &handles {
            let arg = gen::Bytes::default().u32(*h).u32(0).0;
            self.scratch.arg.write(0, &arg);
            let got = ioctl_call(p.fd, Ioctl::GemClose.request(), self.scratch.arg.rw);
            self.record(Ioctl::GemClose, got);
        }
        match res {
            Ok(true) => {}
            // Out of memory on the way: the file's bindings are unknown now.
            Ok(false) => self.private_dirty = true,
            Err(e) => {
                self.private_dirty = true;
                self.c.fail(format!("seed {} {} step {}: BIND_ARRAY all-or-nothing check on the worker's own file: {e}", self.g.cfg.seed, self.name, self.step));
            }
        }
        self.private = Some(p);
    }

    /// One BIND_ARRAY of `entries` on `fd` (the array placed as `ptr` says); (result, .failed).
    fn bind_array_call(&mut self, fd: i32, entries: &[BindEntry], unbind: bool, ptr: Ptr) -> (i32, u32) {
        let bytes: Vec<u8> = entries.iter().flat_map(|e| e.bytes()).collect();
        let (addr, _, _) = self.scratch.binds.place(&mut self.rng, &self.g.layout, &bytes, bytes.len(), ptr);
        let flags = if unbind { oracle::BIND_ARRAY_UNBIND } else { 0 };
        let arg = gen::Bytes::default().u64(addr).u32(entries.len() as u32).u32(flags).u32(0x5a5a_5a5a).u32(0).0;
        self.scratch.arg.write(0, &arg);
        let got = ioctl_call(fd, Ioctl::BindArray.request(), self.scratch.arg.rw);
        self.record(Ioctl::BindArray, got);
        let failed = oracle::u32_at(&self.scratch.arg.read(self.scratch.arg.rw, 24), oracle::FAILED_OFFSET);
        (got, failed)
    }

    /// A step: Ok(true) as wanted, Ok(false) ENOMEM (give up), Err otherwise.
    fn bind_array_step(&mut self, fd: i32, entries: &[BindEntry], unbind: bool, ptr: Ptr, want: Want, what: &str) -> Result<bool, String> {
        let (got, failed) = self.bind_array_call(fd, entries, unbind, ptr);
        if got == want.errno && want.failed.contains(&failed) {
            return Ok(true);
        }
        if got == libc::ENOMEM {
            return Ok(false);
        }
        let shown: Vec<String> = entries.iter().take(6).map(|e| format!("{{handle {} pad {:#x} gpu_va {:#x}}}", e.handle, e.pad, e.gpu_va)).collect();
        let wanted: Vec<String> = want.failed.iter().map(|f| format!("{f:#x}")).collect();
        Err(format!(
            "{what}: BIND_ARRAY{} of {} entries (array {ptr:?}) [{}{}] -> {} .failed {failed:#x}, want {} .failed {}",
            if unbind { "(UNBIND)" } else { "" },
            entries.len(),
            shown.join(" "),
            if entries.len() > 6 { " ..." } else { "" },
            errno_name(got),
            errno_name(want.errno),
            wanted.join("|")
        ))
    }

    fn bind_array_check_on(&mut self, p: &Private, handles: &mut Vec<u32>) -> Result<bool, String> {
        let fd = p.fd;
        let r = &mut self.rng;
        let n = match r.below(100) {
            0..=69 => r.range(1, 8),
            70..=96 => r.range(9, 64),
            97 | 98 => r.range(65, 512),
            // The limit: 4096 objects (a few per run).
            _ if r.pct(35) => oracle::BIND_ARRAY_MAX as u64,
            _ => r.range(513, oracle::BIND_ARRAY_MAX as u64 - 1),
        } as usize;
        // Objects: READONLY userptr ranges over the worker's buffer (no job uses them).
        let mut sizes = Vec::with_capacity(n);
        for k in 0..n {
            let pages = self.rng.range(1, 4);
            let cpu = p.buf.addr() + (k as u64 % 8) * PAGE;
            let arg = gen::Bytes::default().u64(cpu).u64(pages * PAGE).u32(vgpu::uapi::VGPU_SVM_USERPTR_READONLY).u32(0).0;
            self.scratch.arg.write(0, &arg);
            let got = ioctl_call(fd, Ioctl::UserptrCreate.request(), self.scratch.arg.rw);
            self.record(Ioctl::UserptrCreate, got);
            match got {
                0 => {}
                libc::ENOMEM => return Ok(true), // nothing bound yet
                e => return Err(format!("USERPTR_CREATE of {pages} pages of its own buffer -> {}", errno_name(e))),
            }
            let h = oracle::u32_at(&self.scratch.arg.read(self.scratch.arg.rw, 24), 20);
            // DRM gives a new object the lowest free handle number: a number this check
            // already holds means someone else closed that object on this file (a fork child
            // using the file as its parent's), so the file is not the worker's alone and the
            // arrays below would name one object twice. A fuzzer bug, not the driver's.
            // (`handles` holds `h` once already: the new object is closed once, below.)
            if let Some(i) = handles.iter().position(|&o| o == h) {
                return Err(format!(
                    "fuzzer bug, not a driver finding: USERPTR_CREATE {k} returned handle {h}, which object {i} of this check holds already: \
                     another process closed it on the worker's private file (the model would name one handle twice)"
                ));
            }
            handles.push(h);
            sizes.push(pages * PAGE);
        }
        self.c.bind_array_checks += 1;
        // Back to back, or with gaps, somewhere in the GPU zone (this file binds nothing else).
        let r = &mut self.rng;
        let gaps = r.pct(50);
        let mut va = gen::GPU_ZONE + r.below((gen::GPU_ZONE_LEN >> 1) / PAGE) * PAGE;
        let mut good = Vec::with_capacity(n);
        for (h, size) in handles.iter().zip(&sizes) {
            good.push(BindEntry { handle: *h, pad: 0, gpu_va: va });
            va += size + if gaps { r.below(3) * PAGE } else { 0 };
        }
        let no = oracle::NO_ENTRY;
        let j = r.below(n as u64) as usize;
        let i = if j > 0 { r.below(j as u64) as usize } else { 0 };
        let ji = j as u32;
        let unknown = handles.iter().copied().max().unwrap_or(0) + 1 + r.below(1000) as u32;
        let bad_ptr = r.pick(&[Ptr::Null, Ptr::Unmapped, Ptr::Straddle, Ptr::Kernel]);
        // A bind with one bad entry, or after part of it was bound.
        let mut bad = good.clone();
        let kind = r.below(9);
        let (want, what, ptr) = match kind {
            0 => {
                bad[j].pad = 1 << r.below(32);
                (Want::err(libc::EINVAL, &[ji]), "nonzero pad", Ptr::Valid)
            }
            1 => {
                bad[j].gpu_va += r.range(1, PAGE - 1);
                (Want::err(libc::EINVAL, &[ji]), "misaligned gpu_va", Ptr::Valid)
            }
            2 => {
                bad[j].gpu_va = 0;
                (Want::err(libc::EINVAL, &[ji]), "gpu_va 0", Ptr::Valid)
            }
            3 => {
                bad[j].gpu_va = if sizes[j] > PAGE && r.pct(50) { gen::VA_LIMIT - PAGE } else { gen::VA_LIMIT };
                (Want::err(libc::EINVAL, &[ji]), "a range past 2^48", Ptr::Valid)
            }
            4 => {
                bad[j].handle = unknown;
                (Want::err(libc::ENOENT, &[ji]), "an unknown handle", Ptr::Valid)
            }
            // An earlier object no larger than entry j's own: its range at entry j's gpu_va
            // then overlaps no other entry (else that overlap may be the error found).
            5 if (0..j).any(|k| sizes[k] <= sizes[j]) => {
                let fit: Vec<usize> = (0..j).filter(|&k| sizes[k] <= sizes[j]).collect();
                let i = fit[r.below(fit.len() as u64) as usize];
                bad[j].handle = bad[i].handle;
                (Want::err(libc::EBUSY, &[i as u32, ji]), "one object named twice", Ptr::Valid)
            }
            6 if j > 0 => {
                bad[j].gpu_va = good[i].gpu_va + r.below(sizes[i] / PAGE) * PAGE;
                (Want::err(libc::EBUSY, &[ji]), "a range overlapping an earlier entry's", Ptr::Valid)
            }
            7 => (Want::err(libc::EBUSY, &(0..=ji).collect::<Vec<u32>>()), "entries 0..=j bound already", Ptr::Valid),
            _ => (Want::err(libc::EFAULT, &[no]), "an unreadable array", bad_ptr),
        };
        let what = format!("{what} (j = {j})");
        if kind == 7 {
            if !self.bind_array_step(fd, &good[..=j], false, Ptr::Valid, Want::ok(), &format!("{what}: binding entries 0..=j"))? {
                return Ok(false);
            }
        }
        if !self.bind_array_step(fd, &bad, false, ptr, want, &what)? {
            return Ok(false);
        }
        // Nothing was added: the rest binds whole (EBUSY here would be a partial apply).
        let rest = if kind == 7 { &good[j + 1..] } else { &good[..] };
        if !rest.is_empty() && !self.bind_array_step(fd, rest, false, Ptr::Valid, Want::ok(), &format!("{what}, then the array without it (a failed call must add nothing)"))? {
            return Ok(false);
        }
        // An unbind with one bad entry (half the time), then the whole unbind.
        let r = &mut self.rng;
        if r.pct(50) {
            let mut bad = good.clone();
            let (want, what, ptr) = match r.below(4) {
                0 => {
                    bad[j].gpu_va = if sizes[j] > PAGE { good[j].gpu_va + PAGE } else { good[0].gpu_va - PAGE };
                    (Want::err(libc::ENOENT, &[ji]), "no binding at an entry's gpu_va", Ptr::Valid)
                }
                1 if j > 0 => {
                    bad[j].gpu_va = good[i].gpu_va;
                    (Want::err(libc::EINVAL, &[ji]), "one binding named twice", Ptr::Valid)
                }
                2 => {
                    bad[j].pad = 1 | r.next_u32();
                    (Want::err(libc::EINVAL, &[ji]), "nonzero pad", Ptr::Valid)
                }
                _ => (Want::err(libc::EFAULT, &[no]), "an unreadable array", bad_ptr),
            };
            let what = format!("unbind: {what} (j = {j})");
            if !self.bind_array_step(fd, &bad, true, ptr, want, &what)? {
                return Ok(false);
            }
        }
        if !self.bind_array_step(fd, &good, true, Ptr::Valid, Want::ok(), "unbinding all (a failed unbind must remove nothing)")? {
            return Ok(false);
        }
        // All gone: everything binds again, and unbinds again.
        if !self.bind_array_step(fd, &good, false, Ptr::Valid, Want::ok(), "binding all again after the unbind (it must have removed every binding)")? {
            return Ok(false);
        }
        self.bind_array_step(fd, &good, true, Ptr::Valid, Want::ok(), "the last unbind")
    }
}

fn ioctl_call(fd: i32, req: u32, addr: u64) -> i32 {
    ioctl(fd, req, addr)
}

/// A small argument on the stack (for setup calls).
struct Bytes32([u8; 32]);

impl Bytes32 {
    fn ctx_config(flags: u32) -> Bytes32 {
        let mut b = [0u8; 32];
        b[..4].copy_from_slice(&flags.to_le_bytes());
        Bytes32(b)
    }
    fn as_ptr(&self) -> *const u8 {
        self.0.as_ptr()
    }
}

/// A one-line description of a call's argument for a failure report.
fn describe(ioctl: Ioctl, req: u32, class: Ptr, arg: &[u8], arrays: Option<&Arrays>) -> String {
    let u32s = |o: usize| if arg.len() >= o + 4 { oracle::u32_at(arg, o) } else { 0 };
    let u64s = |o: usize| if arg.len() >= o + 8 { oracle::u64_at(arg, o) } else { 0 };
    let fields = match ioctl {
        Ioctl::GetParam => format!("param {} pad {:#x}", u32s(0), u32s(4)),
        Ioctl::CtxConfig => format!("flags {:#x} pad {:#x}", u32s(0), u32s(4)),
        Ioctl::UserptrCreate => format!("userptr {:#x} size {:#x} flags {:#x}", u64s(0), u64s(8), u32s(16)),
        Ioctl::Bind | Ioctl::Unbind => format!("handle {} pad {:#x} gpu_va {:#x}", u32s(0), u32s(4), u64s(8)),
        Ioctl::Submit => {
            let mut s = format!(
                "ops {:#x} nr_ops {} flags {:#x} handles {:#x} nr_handles {} pad {:#x}",
                u64s(0),
                u32s(8),
                u32s(12),
                u64s(16),
                u32s(24),
                u32s(28)
            );
            if let Some(Arrays::Submit(a)) = arrays {
                s.push_str(&format!(" [ops {:?}, handles {:?}]", a.ops_readable, a.handles_readable));
                for (i, o) in a.ops.iter().take(6).enumerate() {
                    s.push_str(&format!(" op{i}={{kind {} flags {:#x} dst {:#x} src {:#x} len {:#x} value {:#x}}}", o.kind, o.flags, o.dst, o.src, o.len, o.value));
                }
                if a.ops.len() > 6 {
                    s.push_str(&format!(" (+{} ops)", a.ops.len() - 6));
                }
            }
            s
        }
        Ioctl::BindArray => {
            let mut s = format!("binds {:#x} count {} flags {:#x} pad {:#x}", u64s(0), u32s(8), u32s(12), u32s(20));
            if let Some(Arrays::BindArray(a)) = arrays {
                s.push_str(&format!(" [entries {:?}, {} written]", a.readable, a.entries.len()));
                for (i, e) in a.entries.iter().take(8).enumerate() {
                    s.push_str(&format!(" e{i}={{handle {} pad {:#x} gpu_va {:#x}}}", e.handle, e.pad, e.gpu_va));
                }
                if a.entries.len() > 8 {
                    s.push_str(&format!(" (+{} entries)", a.entries.len() - 8));
                }
            }
            s
        }
        Ioctl::GemClose => format!("handle {} pad {:#x}", u32s(0), u32s(4)),
        Ioctl::Stats | Ioctl::Unknown => String::new(),
    };
    format!("req {req:#010x} arg {class:?} {fields}")
}

/// A running fork child: its pid and the pipe its counters come through.
struct RunningChild {
    pid: libc::pid_t,
    pipe: std::fs::File,
    out: Vec<u8>,
    index: u64,
}

/// Render-node fds of this process (in a fork child: its parent's files).
fn render_fds(rdev: u64) -> Vec<i32> {
    (0..1024)
        .filter(|&fd| {
            // SAFETY: `st` is a valid out pointer; fstat of any number is harmless.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            unsafe { libc::fstat(fd, &mut st) == 0 && st.st_mode & libc::S_IFMT == libc::S_IFCHR && st.st_rdev == rdev }
        })
        .collect()
}

/// Forks child `index`; `private` are the worker threads' private files (the caller holds the
/// gate: no worker opens or closes one meanwhile).
fn spawn_child(g: &Global, index: u64, private: &[i32]) -> Result<RunningChild, String> {
    let mut fds = [0; 2];
    // SAFETY: room for two fds.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!("pipe: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: the child only runs `child_main` and leaves with _exit (glibc's malloc is
    // fork-safe; the child touches no lock of the parent's: fresh slots, no stdout).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        // SAFETY: the read end is the parent's.
        unsafe { libc::close(fds[0]) };
        let c = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| child_main(g, index, private))).unwrap_or_else(|_| {
            let mut c = Counters::default();
            c.fail(format!("seed {} child {index}: panicked", g.cfg.seed));
            c
        });
        let s = c.to_json().to_string();
        let mut off = 0;
        while off < s.len() {
            // SAFETY: writes our buffer to our pipe.
            let n = unsafe { libc::write(fds[1], s.as_ptr().add(off).cast(), s.len() - off) };
            if n <= 0 {
                break;
            }
            off += n as usize;
        }
        // SAFETY: leave without running the parent's destructors or atexit handlers.
        unsafe { libc::_exit(0) };
    }
    // SAFETY: the write end is the child's.
    unsafe { libc::close(fds[1]) };
    // SAFETY: a fresh fd, ours.
    let pipe = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fds[0]) };
    // SAFETY: our fd.
    unsafe { libc::fcntl(pipe.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
    Ok(RunningChild { pid, pipe, out: Vec::new(), index })
}

/// A fork child: its parent's shared files (EPERM checks) and files of its own, its own copy
/// of the arena.
fn child_main(g: &Global, index: u64, private: &[i32]) -> Counters {
    // First thing: the worker threads' private files are theirs alone (see `Gate`).
    for &fd in private {
        // SAFETY: this process's copy of a parent's fd; the parent keeps its own.
        unsafe { libc::close(fd) };
    }
    let foreign = render_fds(g.node_rdev);
    let mut r = Rng::stream(g.cfg.seed, 500 + index);
    let slots: Vec<Slot> = (0..1).filter_map(|_| g.open_slot(&mut r).ok()).map(|fd| Slot { fd: RwLock::new(fd), model: Mutex::new(Model::default()) }).collect();
    let mut c = match Worker::new(format!("child{index}"), g, 100 + index, &slots, foreign, g.cfg.child_ioctls, true) {
        Ok(w) => w.run(),
        Err(e) => {
            let mut c = Counters::default();
            c.fail(format!("seed {} child {index}: {e}", g.cfg.seed));
            c
        }
    };
    c.children = 1;
    c
}

impl RunningChild {
    /// Reads what is there; Some(counters) once the child closed the pipe (and was reaped).
    fn poll(&mut self, seed: u64, force: bool) -> Option<Counters> {
        let mut buf = [0u8; 65536];
        loop {
            match std::io::Read::read(&mut self.pipe, &mut buf) {
                Ok(0) => break,
                Ok(n) => self.out.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && !force => return None,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        let mut status = 0;
        // SAFETY: our child.
        unsafe { libc::waitpid(self.pid, &mut status, 0) };
        let parsed = serde_json::from_slice(&self.out).ok().and_then(|v| Counters::from_json(&v));
        Some(parsed.unwrap_or_else(|| {
            let mut c = Counters::default();
            c.fail(format!(
                "seed {seed} child {}: no report (exit status {:#x}{})",
                self.index,
                status,
                if libc::WIFSIGNALED(status) { format!(", signal {}", libc::WTERMSIG(status)) } else { String::new() }
            ));
            c
        }))
    }
}

/// Device-wide (accesses_checked, violations) through a file of our own (the guest runs as
/// root, so STATS is device-wide).
fn device_stats(g: &Global) -> Result<(u64, u64), String> {
    let fd = g.open()?;
    // The kernel writes the whole struct the request number names (a fixed 256 here
    // overflowed the heap once the struct grew to 288 bytes).
    let mut b = vec![0u8; Ioctl::Stats.size()];
    let r = ioctl(fd, Ioctl::Stats.request(), b.as_mut_ptr() as u64);
    // SAFETY: our fd.
    unsafe { libc::close(fd) };
    if r != 0 {
        return Err(format!("STATS: {}", errno_name(r)));
    }
    Ok((oracle::u64_at(&b, 0), oracle::u64_at(&b, 8)))
}

/// The `[vvar]` mapping.
fn vvar() -> Option<(u64, u64)> {
    maps().into_iter().find(|(_, _, n)| n == "[vvar]").map(|(s, e, _)| (s, e))
}

/// Sets up the memory and reads the device's parameters (an error if the zone is not free).
fn setup(cfg: &Config) -> Result<Global, String> {
    if let Some((s, e, n)) = maps().into_iter().find(|&(s, e, _)| s < gen::ZONE_HI && e > gen::SCRATCH_BASE) {
        return Err(format!("the fuzz zone is not free: {s:#x}-{e:#x} {n}"));
    }
    let layout = Layout::standard(vvar());
    let shared_len = layout.regions.iter().find(|r| r.kind == RegionKind::Shared).map_or(PAGE, |r| r.len);
    let shared_fd = memfd(shared_len)?;
    for reg in &layout.regions {
        map_arena(reg.kind, reg.base, reg.base, reg.len, shared_fd, true).map_err(|e| format!("arena at {:#x}: {}", reg.base, errno_name(e)))?;
    }
    // SAFETY: a fresh shared page for the cross-process counters, never unmapped.
    let page = unsafe { libc::mmap(std::ptr::null_mut(), PAGE as usize, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED | libc::MAP_ANONYMOUS, -1, 0) };
    if page == libc::MAP_FAILED {
        return Err("mmap of the shared counter page failed".into());
    }
    // SAFETY: the page is zeroed, aligned and lives for the whole process (and its children).
    let (total, stop) = unsafe { (&*(page as *const AtomicU64), &*((page as *const u8).add(64) as *const AtomicBool)) };
    let dev = vgpu::Device::open_default().map_err(|e| e.to_string())?;
    let mut params = [0u64; 6];
    for p in vgpu::Param::ALL {
        params[p.raw() as usize] = dev.get_param(p).map_err(|e| e.to_string())?;
    }
    // SAFETY: as above.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: our fd and a valid out pointer.
    unsafe { libc::fstat(dev.as_raw_fd(), &mut st) };
    let node = CString::new(dev.path().as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
    Ok(Global {
        cfg: cfg.clone(),
        layout,
        node,
        node_rdev: st.st_rdev,
        shared_fd,
        params,
        violations_before: 0,
        total,
        stop,
        deadline: Instant::now() + Duration::from_secs(cfg.seconds),
        avoid_release_race: cases::avoid_release_race(cfg.known_bugs),
        release: RwLock::new(()),
        gate: Mutex::new(Gate { children: 0, private_fds: Vec::new() }),
    })
}


/// Collects the fork children that have ended: their counters go into `total`, and each
/// frees its slot of `gate`.
fn reap_children(running: &mut Vec<RunningChild>, total: &mut Counters, gate: &Mutex<Gate>, seed: u64) {
    let mut i = 0;
    while i < running.len() {
        if let Some(c) = running[i].poll(seed, false) {
            total.merge(&c);
            running.swap_remove(i);
            gate.lock().unwrap().children -= 1;
        } else {
            i += 1;
        }
    }
}
/// The whole run; returns the exit status.
pub fn main(cfg: Config) -> i32 {
    println!("# vgpu-fuzz: seed {} (replay: vgpu-fuzz --seed {})", cfg.seed, cfg.seed);
    println!("# vgpu-fuzz: {cfg:?}");
    let mut tap = Tap::unplanned();
    let mut g = match setup(&cfg) {
        Ok(g) => g,
        Err(e) => {
            tap.fail("fuzzer setup (arena, device parameters)", e);
            return tap.finish().exit_status();
        }
    };
    let started = Instant::now();
    let (checked0, violations0) = device_stats(&g).unwrap_or((0, 0));
    println!("# vgpu-fuzz: device before: {checked0} accesses checked, {violations0} violations");
    g.violations_before = violations0;

    // 1. Regression cases.
    let mut ncases = 0;
    for case in cases::CASES {
        ncases += 1;
        let desc = format!("regression: {}", case.name);
        if case.known_bug && !cfg.known_bugs {
            tap.todo(&desc, "known driver bug, not run (--known-bugs runs it)");
            continue;
        }
        match (case.run)(&cases::CaseEnv { node: &g.node, layout: &g.layout }) {
            Ok(note) => {
                tap.pass(&desc);
                if !note.is_empty() {
                    tap.diag(note);
                }
            }
            Err(e) => tap.fail(&desc, e),
        }
    }
    if cfg.cases_only {
        return tap.finish().exit_status();
    }

    // 2. The random phase.
    let mut r = Rng::stream(cfg.seed, 998);
    let slots: Vec<Slot> = match (0..cfg.files).map(|_| g.open_slot(&mut r)).collect::<Result<Vec<i32>, String>>() {
        Ok(fds) => fds.into_iter().map(|fd| Slot { fd: RwLock::new(fd), model: Mutex::new(Model::default()) }).collect(),
        Err(e) => {
            tap.fail("open the shared files", e);
            return tap.finish().exit_status();
        }
    };
    let mut total = Counters::default();
    let mut children_failed_to_start = 0;
    std::thread::scope(|s| {
        let mut handles = Vec::new();
        for t in 0..cfg.threads {
            let (g, slots) = (&g, &slots[..]);
            handles.push(s.spawn(move || match Worker::new(format!("thread{t}"), g, t as u64, slots, vec![], u64::MAX, false) {
                Ok(w) => w.run(),
                Err(e) => {
                    let mut c = Counters::default();
                    c.fail(format!("seed {} thread {t}: {e}", g.cfg.seed));
                    c
                }
            }));
        }
        let mutator = cfg.mutator.then(|| {
            let g = &g;
            s.spawn(move || {
                let mut r = Rng::stream(g.cfg.seed, 999);
                let mut n = 0u64;
                while !g.should_stop() {
                    let guard = g.avoid_release_race.then(|| g.release.read().unwrap());
                    mem_op(&mut r, &g.layout, g.shared_fd);
                    drop(guard);
                    n += 1;
                    std::thread::sleep(Duration::from_micros(r.range(200, 3000)));
                }
                n
            })
        });

        // The coordinator: children, progress, the stop.
        let mut running: Vec<RunningChild> = Vec::new();
        let mut spawned = 0u64;
        let mut last_progress = Instant::now();
        loop {
            let done = g.total.load(Ordering::Relaxed);
            // Every worker gone (e.g. none could set up its file): nothing more will happen.
            let stopping = g.should_stop() || handles.iter().all(|h| h.is_finished());
            // Spread the children over the run, at most two at a time.
            let due = (spawned + 1) * cfg.ioctls / (cfg.children as u64 + 1);
            if !stopping && running.len() < 2 && (spawned as usize) < cfg.children && done >= due {
                let mut gate = g.gate.lock().unwrap();
                match spawn_child(&g, spawned, &gate.private_fds) {
                    Ok(c) => {
                        running.push(c);
                        gate.children += 1;
                    }
                    Err(e) => {
                        children_failed_to_start += 1;
                        total.fail(format!("seed {} fork child {spawned}: {e}", cfg.seed));
                    }
                }
                spawned += 1;
            }
            reap_children(&mut running, &mut total, &g.gate, cfg.seed);
            if last_progress.elapsed() >= Duration::from_secs(10) {
                last_progress = Instant::now();
                let secs = started.elapsed().as_secs_f64();
                println!(
                    "# vgpu-fuzz: {secs:.0}s: {done} ioctls ({:.0}/s), children {} running, {} spawned",
                    done as f64 / secs.max(0.001),
                    running.len(),
                    spawned
                );
            }
            if stopping {
                g.stop.store(true, Ordering::Relaxed);
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Children stop at the flag; bounded wait, then SIGKILL (a failure).
        let end = Instant::now() + Duration::from_secs(120);
        while !running.is_empty() {
            reap_children(&mut running, &mut total, &g.gate, cfg.seed);
            if Instant::now() >= end {
                for c in &mut running {
                    // SAFETY: our child; SIGKILL ends that whole process.
                    unsafe { libc::kill(c.pid, libc::SIGKILL) };
                    total.fail(format!("seed {} child {}: did not stop within 120 s of the end; killed", cfg.seed, c.index));
                    let _ = c.poll(cfg.seed, true);
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for h in handles {
            match h.join() {
                Ok(c) => total.merge(&c),
                Err(_) => total.fail(format!("seed {}: a worker thread panicked", cfg.seed)),
            }
        }
        if let Some(m) = mutator {
            total.mem_ops += m.join().unwrap_or(0);
        }
    });
    if g.avoid_release_race {
        scrub_arena(&g.layout, g.shared_fd);
    }
    for s in &slots {
        // SAFETY: our fds; no worker runs any more.
        unsafe { libc::close(*s.fd.read().unwrap()) };
    }
    let seconds = started.elapsed().as_secs_f64();
    let timed_out = total.ioctls < cfg.ioctls;
    let floor = cfg.floor();
    let short = total.ioctls < floor;

    // 3. The verdict.
    let (checked, violations) = match device_stats(&g) {
        Ok((c, v)) => (c, v.saturating_sub(violations0)),
        Err(e) => {
            total.fail(format!("final device STATS: {e}"));
            (0, u64::MAX)
        }
    };
    println!(
        "# vgpu-fuzz: {} ioctls in {seconds:.1}s ({:.0}/s); {} jobs completed, {} data checks, {} BIND_ARRAY all-or-nothing checks, {} memory ops, {} reopens, {} odd request numbers, {} children",
        total.ioctls,
        total.ioctls as f64 / seconds.max(0.001),
        total.jobs_ok,
        total.data_checks,
        total.bind_array_checks,
        total.mem_ops,
        total.reopens,
        total.odd_requests,
        total.children
    );
    for (name, m) in &total.by_ioctl_errno {
        let parts: Vec<String> = m.iter().map(|(e, n)| format!("{e} {n}")).collect();
        println!("#   {name}: {}", parts.join(", "));
    }
    let failures = total.failure_log.join("\n");
    let more = if total.failures as usize > total.failure_log.len() { format!("\n... and {} more", total.failures as usize - total.failure_log.len()) } else { String::new() };
    if total.failures == 0 {
        tap.pass("every ioctl returned 0 or an errno documented for it; device results of known jobs are right");
    } else {
        tap.fail(
            &format!("every ioctl returned 0 or an errno documented for it; device results of known jobs are right ({} failures)", total.failures),
            format!("{failures}{more}"),
        );
    }
    let count_desc = format!(
        "at least {floor} ioctls (budget {} ioctls or {} s; got {} in {seconds:.0} s{})",
        cfg.ioctls,
        cfg.seconds,
        total.ioctls,
        if timed_out { ", the time budget ended the run" } else { "" }
    );
    if short {
        tap.fail(&count_desc, "the time budget ended the run below the floor: the fuzzer is too slow for this budget (a failure, not a skip)");
    } else {
        tap.pass(&count_desc);
    }
    println!("# vgpu-fuzz: {} fork children reported ({} failed to start)", total.children, children_failed_to_start);
    let enodev = total.by_errno.get("ENODEV").copied().unwrap_or(0);
    tap.ok(enodev == 0, &format!("the device stayed up: no ENODEV (a device reset) during the run (got {enodev})"));
    tap.ok(
        violations == 0,
        &format!("device-wide STATS: {violations} violations during the run ({checked} accesses checked, {} during the run)", checked.saturating_sub(checked0)),
    );
    let passed = total.failures == 0 && !short && violations == 0 && enodev == 0;
    println!("{}", summary_line(&total, cfg.seed, seconds, cfg.threads, violations, checked, ncases, passed));
    let s = tap.finish();
    if passed { s.exit_status() } else { 1 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_parses() {
        let a: Vec<String> = ["--seed", "0x10", "--ioctls", "500", "--threads", "2", "--no-mutator", "--children", "0"].iter().map(|s| s.to_string()).collect();
        let c = Config::parse(&a).unwrap();
        assert_eq!((c.seed, c.ioctls, c.threads, c.mutator, c.children), (16, 500, 2, false, 0));
        assert!(Config::parse(&["--bogus".to_string()]).is_err());
        assert!(Config::parse(&["--seed".to_string()]).is_err());
        assert!(Config::parse(&["--seed".to_string(), "x".to_string()]).is_err());
        assert_eq!(Config::parse(&[]).unwrap().ioctls, 100_000);
        // The floor: the budget's count unless --min-ioctls lowers it (never raises it).
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(Config::parse(&args(&["--ioctls", "300"])).unwrap().floor(), 300);
        assert_eq!(Config::parse(&args(&["--ioctls", "300", "--min-ioctls", "100"])).unwrap().floor(), 100);
        assert_eq!(Config::parse(&args(&["--ioctls", "300", "--min-ioctls", "900"])).unwrap().floor(), 300);
        assert!(Config::parse(&args(&["--min-ioctls"])).is_err());
    }

    #[test]
    fn scratch_placement_classes() {
        // Host-side: scratch blocks in the fuzz zone work without a device.
        let idx = 200 + (std::process::id() as u64 % 50);
        let s = match Scratch::new(idx) {
            Ok(s) => s,
            Err(_) => return, // the zone is taken on this host: nothing to check
        };
        let l = Layout::standard(None);
        let mut r = Rng::new(5);
        let bytes = [7u8; 48];
        let (a, c, rd) = s.arg.place(&mut r, &l, &bytes, 48, Ptr::Valid);
        assert_eq!((c, rd), (Ptr::Valid, Tri::Yes));
        assert_eq!(s.arg.read(a, 48), bytes.to_vec());
        let (a, _, rd) = s.arg.place(&mut r, &l, &bytes, 48, Ptr::ReadOnly);
        assert_eq!(rd, Tri::Yes);
        assert_eq!(s.arg.read(a, 48), bytes.to_vec(), "the read-only view shows what was written");
        let (a, _, rd) = s.arg.place(&mut r, &l, &bytes, 48, Ptr::Straddle);
        assert_eq!(rd, Tri::No);
        assert_eq!(a + 24, s.arg.rw + s.arg.len);
        let (_, c, _) = s.arg.place(&mut r, &l, &bytes, 48, Ptr::VmIo);
        assert_eq!(c, Ptr::Unmapped, "no vvar known: the class degrades");
        // The kernel agrees: reading the straddling or the null argument fails.
        let local = libc::iovec { iov_base: [0u8; 48].as_mut_ptr().cast(), iov_len: 48 };
        let remote = libc::iovec { iov_base: a as *mut libc::c_void, iov_len: 48 };
        // SAFETY: reads our own memory through the kernel.
        let n = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
        assert_eq!(n, 24, "only the first half is mapped");
    }
}
