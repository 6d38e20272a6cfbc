//! Regression cases: fixed, hand-written ioctl sequences run before the random phase, each
//! with the exact results the header promises. Reproducers of bugs the fuzzer (or a review)
//! found go here. A case of a driver bug that is not fixed yet is marked `known_bug`: it is
//! listed as a TAP `# TODO` and runs only with `--known-bugs` (it may oops the kernel).

use std::ffi::CStr;

use vgpu::uapi;

use super::gen::{Layout, RegionKind, GPU_ZONE, PAGE, VA_LIMIT};
use super::oracle::{errno_name, Ioctl, EBUSY, EFAULT, EINVAL, ENOENT, EPERM};
use super::run::ioctl;

/// What a case may use.
pub struct CaseEnv<'a> {
    /// The render node.
    pub node: &'a CStr,
    /// The arena (mapped, untouched yet).
    pub layout: &'a Layout,
}

/// One regression case.
pub struct Case {
    /// What it checks (the TAP description).
    pub name: &'static str,
    /// A driver bug not fixed yet: not run unless `--known-bugs`.
    pub known_bug: bool,
    /// The sequence: Ok(note) or Err(what went wrong).
    pub run: fn(&CaseEnv) -> Result<String, String>,
}

/// The cases, in order.
pub const CASES: &[Case] = &[
    Case { name: "SUBMIT: ATOMIC_ADD at 2^64 - 8 (the overflow-check oops) fails with EINVAL", known_bug: false, run: atomic_add_at_top },
    Case { name: "SUBMIT: every op kind whose address + length overflows or passes 2^48 fails with EINVAL", known_bug: false, run: overflowing_sums },
    Case { name: "UNBIND of GPU VA 0 and of an unaligned VA on a fresh file: ENOENT", known_bug: false, run: unbind_nothing },
    Case { name: "BIND ending exactly at 2^48 succeeds, one page further is EINVAL", known_bug: false, run: bind_at_the_limit },
    Case { name: "SUBMIT with 1024 handles naming one bound object succeeds", known_bug: false, run: many_handles },
    Case { name: "a fork child using its parent's file: EPERM for all but GET_PARAM and STATS", known_bug: false, run: fork_child_eperm },
    Case { name: "SUBMIT with its argument in read-only memory: the job runs, the copy back fails with EFAULT", known_bug: false, run: readonly_submit_arg },
    Case {
        name: "closing a file while another thread munmaps memory its context mirrors: the device stays up (found by the fuzzer, seed 1: INVALIDATE after CTX_DESTROY resets the device)",
        known_bug: RELEASE_RACE_KNOWN,
        run: release_vs_invalidate,
    },
    Case {
        name: "USERPTR_CREATE racing fork: no callback of a half-built notifier (found by the fuzzer: the notifier was live before its data was written, oops in the userptr callback)",
        known_bug: false,
        run: userptr_create_vs_fork,
    },
    Case {
        name: "a fork child's GEM_CLOSE on its parent's file frees a handle number the parent's next object gets: a BIND_ARRAY naming it twice is EBUSY at the later entry (the fuzzer's own bug behind seed 126948892842216)",
        known_bug: false,
        run: reused_handle_named_twice,
    },
];

/// Driver bugs whose reproducers are `known_bug` cases: while one is listed, the random
/// phase also avoids its trigger (unless `--known-bugs`), so that one known bug does not
/// hide the next. Here: files are closed only while no memory operation runs and no fork
/// child could hold the last reference.
pub fn avoid_release_race(known_bugs_enabled: bool) -> bool {
    RELEASE_RACE_KNOWN && !known_bugs_enabled
}

/// The release/invalidate race (see [`release_vs_invalidate`]): fixed (the release marks the
/// context destroyed under the update lock; later invalidations skip the device).
pub const RELEASE_RACE_KNOWN: bool = false;

/// An open render node, closed on drop.
struct File(i32);

impl File {
    fn open(env: &CaseEnv) -> Result<File, String> {
        // SAFETY: a valid C string.
        let fd = unsafe { libc::open(env.node.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(format!("open: {}", std::io::Error::last_os_error()));
        }
        Ok(File(fd))
    }

    fn call<T>(&self, i: Ioctl, arg: &mut T) -> i32 {
        ioctl(self.0, i.request(), arg as *mut T as u64)
    }

    fn svm(env: &CaseEnv) -> Result<File, String> {
        let f = File::open(env)?;
        let mut cfg = uapi::drm_vgpu_svm_ctx_config { flags: uapi::VGPU_SVM_CTX_SVM, pad: 0 };
        want("CTX_CONFIG(SVM)", f.call(Ioctl::CtxConfig, &mut cfg), 0)?;
        Ok(f)
    }

    fn userptr(&self, addr: u64, size: u64) -> Result<u32, String> {
        let mut u = uapi::drm_vgpu_svm_userptr_create { userptr: addr, size, flags: 0, handle: 0 };
        want("USERPTR_CREATE", self.call(Ioctl::UserptrCreate, &mut u), 0)?;
        Ok(u.handle)
    }

    fn bind(&self, handle: u32, gpu_va: u64) -> i32 {
        let mut b = uapi::drm_vgpu_svm_bind { handle, pad: 0, gpu_va };
        self.call(Ioctl::Bind, &mut b)
    }

    fn submit(&self, ops: &[uapi::drm_vgpu_svm_op], handles: &[u32]) -> i32 {
        let mut s = uapi::drm_vgpu_svm_submit {
            ops: ops.as_ptr() as u64,
            nr_ops: ops.len() as u32,
            handles: handles.as_ptr() as u64,
            nr_handles: handles.len() as u32,
            ..Default::default()
        };
        self.call(Ioctl::Submit, &mut s)
    }
}

impl Drop for File {
    fn drop(&mut self) {
        // SAFETY: our fd.
        unsafe { libc::close(self.0) };
    }
}

fn want(what: &str, got: i32, want: i32) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: {}, want {}", errno_name(got), errno_name(want)))
    }
}

fn op(kind: u32, dst: u64, src: u64, len: u64) -> uapi::drm_vgpu_svm_op {
    uapi::drm_vgpu_svm_op { kind, flags: 0, dst, src, len, value: 1 }
}

/// A small private region of the arena (mapped read-write at start).
fn small(env: &CaseEnv) -> u64 {
    env.layout.regions.iter().find(|r| r.kind == RegionKind::Small).map_or(0, |r| r.base)
}

fn atomic_add_at_top(env: &CaseEnv) -> Result<String, String> {
    let f = File::svm(env)?;
    want("ATOMIC_ADD at 2^64 - 8", f.submit(&[op(uapi::VGPU_SVM_OP_KIND_ATOMIC_ADD, u64::MAX - 7, 0, 0)], &[]), EINVAL)?;
    Ok(String::new())
}

fn overflowing_sums(env: &CaseEnv) -> Result<String, String> {
    let f = File::svm(env)?;
    let addrs = [u64::MAX - 7, u64::MAX, u64::MAX - 4095, 1 << 63, VA_LIMIT, VA_LIMIT - 4];
    let lens = [u64::MAX, u64::MAX - 7, 1 << 63, 8];
    let mut n = 0;
    for kind in 1..=6 {
        for a in addrs {
            for len in lens {
                let what = format!("kind {kind} at {a:#x} len {len:#x}");
                want(&what, f.submit(&[op(kind, a, a, len)], &[]), EINVAL)?;
                n += 1;
            }
        }
    }
    Ok(format!("{n} ops refused"))
}

fn unbind_nothing(env: &CaseEnv) -> Result<String, String> {
    let f = File::open(env)?;
    for va in [0, 0x1234, VA_LIMIT, u64::MAX] {
        let mut b = uapi::drm_vgpu_svm_bind { handle: 0, pad: 0, gpu_va: va };
        want(&format!("UNBIND {va:#x}"), f.call(Ioctl::Unbind, &mut b), ENOENT)?;
    }
    Ok(String::new())
}

fn bind_at_the_limit(env: &CaseEnv) -> Result<String, String> {
    let f = File::svm(env)?;
    let h = f.userptr(small(env), PAGE)?;
    want("BIND at 2^48", f.bind(h, VA_LIMIT), EINVAL)?;
    want("BIND at 2^48 - 4096 + 8 (unaligned)", f.bind(h, VA_LIMIT - PAGE + 8), EINVAL)?;
    want("BIND at 2^48 - 4096", f.bind(h, VA_LIMIT - PAGE), 0)?;
    want("READ of the last GPU page", f.submit(&[op(uapi::VGPU_SVM_OP_KIND_READ, 0, VA_LIMIT - 8, 8)], &[h]), 0)?;
    let mut b = uapi::drm_vgpu_svm_bind { handle: h, pad: 0, gpu_va: VA_LIMIT - PAGE };
    want("UNBIND", f.call(Ioctl::Unbind, &mut b), 0)?;
    Ok(String::new())
}

fn many_handles(env: &CaseEnv) -> Result<String, String> {
    let f = File::svm(env)?;
    let h = f.userptr(small(env), 2 * PAGE)?;
    want("BIND", f.bind(h, GPU_ZONE), 0)?;
    let handles = vec![h; 1024];
    want("SUBMIT with 1024 copies of one handle", f.submit(&[op(uapi::VGPU_SVM_OP_KIND_READ, 0, GPU_ZONE, 2 * PAGE)], &handles), 0)?;
    let too_many = vec![h; 1025];
    want("SUBMIT with 1025 handles", f.submit(&[op(uapi::VGPU_SVM_OP_KIND_READ, 0, GPU_ZONE, 8)], &too_many), EINVAL)?;
    Ok(String::new())
}

fn fork_child_eperm(env: &CaseEnv) -> Result<String, String> {
    let f = File::svm(env)?;
    let h = f.userptr(small(env), PAGE)?;
    let fd = f.0;
    let base = small(env);
    let child = crate::child::fork_child(move |_| {
        let call = |i: Ioctl, p: u64| ioctl(fd, i.request(), p);
        let mut cfg = uapi::drm_vgpu_svm_ctx_config { flags: 1, pad: 0 };
        let mut u = uapi::drm_vgpu_svm_userptr_create { userptr: base, size: PAGE, flags: 0, handle: 0 };
        let mut b = uapi::drm_vgpu_svm_bind { handle: h, pad: 0, gpu_va: GPU_ZONE };
        let ops = [op(uapi::VGPU_SVM_OP_KIND_READ, 0, base, 8)];
        let mut s = uapi::drm_vgpu_svm_submit { ops: ops.as_ptr() as u64, nr_ops: 1, ..Default::default() };
        let mut g = uapi::drm_vgpu_svm_get_param { param: 1, pad: 0, value: 0 };
        let mut st = uapi::drm_vgpu_svm_stats::default();
        want("CTX_CONFIG", call(Ioctl::CtxConfig, &mut cfg as *mut _ as u64), EPERM)?;
        want("USERPTR_CREATE", call(Ioctl::UserptrCreate, &mut u as *mut _ as u64), EPERM)?;
        want("BIND", call(Ioctl::Bind, &mut b as *mut _ as u64), EPERM)?;
        want("UNBIND", call(Ioctl::Unbind, &mut b as *mut _ as u64), EPERM)?;
        want("SUBMIT", call(Ioctl::Submit, &mut s as *mut _ as u64), EPERM)?;
        want("GET_PARAM", call(Ioctl::GetParam, &mut g as *mut _ as u64), 0)?;
        want("STATS", call(Ioctl::Stats, &mut st as *mut _ as u64), 0)?;
        Ok(())
    })
    .map_err(|e| format!("fork: {e}"))?;
    child.join()?;
    // The parent's file still works.
    want("the parent's SUBMIT", f.submit(&[op(uapi::VGPU_SVM_OP_KIND_READ, 0, base, 8)], &[]), 0)?;
    Ok(String::new())
}

fn readonly_submit_arg(env: &CaseEnv) -> Result<String, String> {
    let f = File::svm(env)?;
    let base = small(env);
    // A memfd mapped twice: write the argument through one view, pass the read-only one.
    // SAFETY: a valid C string; our fd.
    let mfd = unsafe { libc::memfd_create(c"vgpu-fuzz-case".as_ptr(), libc::MFD_CLOEXEC) };
    if mfd < 0 || unsafe { libc::ftruncate(mfd, PAGE as i64) } != 0 {
        return Err("memfd".into());
    }
    let rw = crate::mem::Mapping::file_shared(mfd, PAGE as usize).map_err(|e| e.to_string())?;
    let ro = crate::mem::Mapping::new(0, PAGE as usize, libc::PROT_READ, libc::MAP_SHARED, mfd, 0).map_err(|e| e.to_string())?;
    // SAFETY: the mappings keep the file.
    unsafe { libc::close(mfd) };
    let ops = [op(uapi::VGPU_SVM_OP_KIND_FILL, base, 0, 64)];
    let s = uapi::drm_vgpu_svm_submit { ops: ops.as_ptr() as u64, nr_ops: 1, ..Default::default() };
    // SAFETY: plain bytes of a repr(C) struct.
    let bytes = unsafe { std::slice::from_raw_parts(&s as *const _ as *const u8, std::mem::size_of_val(&s)) };
    rw.write(0, bytes);
    want("SUBMIT with a read-only argument", ioctl(f.0, Ioctl::Submit.request(), ro.addr()), EFAULT)?;
    // The FILL happened: the job ran before the copy back.
    let mut got = [0u8; 1];
    let local = libc::iovec { iov_base: got.as_mut_ptr().cast(), iov_len: 1 };
    let remote = libc::iovec { iov_base: base as *mut libc::c_void, iov_len: 1 };
    // SAFETY: reads one byte of our own arena through the kernel.
    unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
    if got[0] != 1 {
        return Err(format!("the FILL did not run (byte {:#x})", got[0]));
    }
    Ok(String::new())
}

/// The fuzzer's first find (seed 1): `Ctx::drop` (file.rs) destroys the device context
/// (CTX_DESTROY) before it removes the SVM and userptr notifiers, and keeps the GPU page
/// table's entries. An invalidation in that window (a munmap by another thread of the same
/// process, a fork, reclaim) finds valid entries, sends INVALIDATE for the destroyed context,
/// the device answers ERR_INVALID_CONTEXT_ID, `Shared::flush` takes that for "not confirmed"
/// and resets the device: every context of every process gets ENODEV from then on.
fn release_vs_invalidate(env: &CaseEnv) -> Result<String, String> {
    const LEN: usize = 64 * 4096;
    for i in 0..200u64 {
        let f = File::svm(env)?;
        let m = crate::mem::Mapping::anon(LEN).map_err(|e| e.to_string())?;
        m.fill(0, LEN, 1);
        // Mirror all of it.
        want("READ", f.submit(&[op(uapi::VGPU_SVM_OP_KIND_READ, 0, m.addr(), LEN as u64)], &[]), 0)?;
        let (addr, len) = m.leak();
        let t = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_micros(i % 20 * 150));
            // SAFETY: the mapping leaked above, used by nothing else.
            unsafe { libc::munmap(addr as *mut libc::c_void, len) };
        });
        drop(f); // close: Ctx::drop runs now, racing the munmap
        let _ = t.join();
        let probe = File::svm(env)?;
        let buf = crate::mem::Mapping::anon(4096).map_err(|e| e.to_string())?;
        let r = probe.submit(&[op(uapi::VGPU_SVM_OP_KIND_READ, 0, buf.addr(), 8)], &[]);
        if r != 0 {
            return Err(format!("iteration {i}: after closing a file during a munmap, a new context's READ fails with {} (device reset?)", errno_name(r)));
        }
    }
    Ok("200 closes raced with munmaps; the device stayed up".into())
}

/// The fuzzer's second find (seed 164733875509957, default kernel): `IntervalNotifier::insert`
/// (rust/kernel/mmu_notifier.rs) inserted the notifier into the mm's interval tree before it
/// wrote the owner's data, so a fork by another thread (dup_mmap -> copy_page_range ->
/// invalidate_range_start) could call the new userptr object's callback on uninitialized
/// memory: "BUG: kernel NULL pointer dereference" in `UserptrMirror::invalidate`. Here one
/// thread creates and closes userptr objects over populated anonymous memory while another
/// forks (each fork write-protects that memory: an invalidation over it) for a bounded time.
/// The window is a few instructions wide, so this catches the old order only sometimes; the
/// fix makes it impossible by construction (data first, insertion last).
fn userptr_create_vs_fork(env: &CaseEnv) -> Result<String, String> {
    use std::sync::atomic::{AtomicBool, Ordering};
    const LEN: usize = 16 * 4096;
    const RUN: std::time::Duration = std::time::Duration::from_secs(2);
    let f = File::svm(env)?;
    let m = crate::mem::Mapping::anon(LEN).map_err(|e| e.to_string())?;
    m.fill(0, LEN, 7);
    let stop = AtomicBool::new(false);
    let (created, forks) = std::thread::scope(|s| -> Result<(u64, u64), String> {
        let forker = s.spawn(|| {
            let mut forks = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // SAFETY: the child only calls _exit.
                let pid = unsafe { libc::fork() };
                if pid == 0 {
                    // SAFETY: async-signal-safe.
                    unsafe { libc::_exit(0) };
                }
                if pid > 0 {
                    let mut st = 0;
                    // SAFETY: our child.
                    unsafe { libc::waitpid(pid, &mut st, 0) };
                    forks += 1;
                }
            }
            forks
        });
        let t0 = std::time::Instant::now();
        let mut created = 0u64;
        let mut result = Ok(());
        while t0.elapsed() < RUN {
            match f.userptr(m.addr(), LEN as u64) {
                Ok(h) => {
                    let mut c = [h, 0u32]; // struct drm_gem_close { handle, pad }
                    if let Err(e) = want("GEM_CLOSE", ioctl(f.0, Ioctl::GemClose.request(), &mut c as *mut _ as u64), 0) {
                        result = Err(e);
                        break;
                    }
                    created += 1;
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
        let forks = forker.join().map_err(|_| "the forking thread panicked".to_string())?;
        result.map(|()| (created, forks))
    })?;
    Ok(format!("{created} objects created and closed during {forks} forks"))
}

/// Why the fuzzer's BIND_ARRAY all-or-nothing check failed at seed 126948892842216 (EBUSY at
/// entry 33 of an array of fresh objects): a fork child, using every render fd it inherited,
/// closed a handle on a worker's private file (GEM_CLOSE is the DRM core's and works from
/// any process); DRM gives the next object the lowest free number, so the worker's list held
/// one number for two objects and its array named the new one twice. The driver was right:
/// pads are checked before handles (EINVAL at the bad pad), and an object named twice is
/// EBUSY at the later entry (file.rs, `bind_entries`; the header's "named twice").
fn reused_handle_named_twice(env: &CaseEnv) -> Result<String, String> {
    let f = File::svm(env)?;
    let base = small(env);
    let first = (0..3u64).map(|k| f.userptr(base + k * PAGE, PAGE)).collect::<Result<Vec<u32>, String>>()?;
    if first != [1, 2, 3] {
        return Err(format!("a fresh file's first handles are {first:?}, want [1, 2, 3]"));
    }
    let fd = f.0;
    let child = crate::child::fork_child(move |_| {
        let mut c = [1u32, 0]; // struct drm_gem_close { handle, pad }
        want("the child's GEM_CLOSE of handle 1 on its parent's file", ioctl(fd, Ioctl::GemClose.request(), &mut c as *mut _ as u64), 0)
    })
    .map_err(|e| format!("fork: {e}"))?;
    child.join()?;
    let h = f.userptr(base + 3 * PAGE, PAGE)?;
    if h != 1 {
        return Err(format!("the parent's next USERPTR_CREATE got handle {h}, want 1 (the lowest free number)"));
    }
    // What a list that missed the close holds: objects 1, 2, 3 and "another" 1.
    let mut e: Vec<uapi::drm_vgpu_svm_bind> =
        [1u32, 2, 3, 1].iter().enumerate().map(|(k, &handle)| uapi::drm_vgpu_svm_bind { handle, pad: 0, gpu_va: GPU_ZONE + k as u64 * 2 * PAGE }).collect();
    let array = |e: &[uapi::drm_vgpu_svm_bind], flags: u32| -> (i32, u32) {
        let mut a = uapi::drm_vgpu_svm_bind_array { binds: e.as_ptr() as u64, count: e.len() as u32, flags, failed: 0, pad: 0 };
        let r = f.call(Ioctl::BindArray, &mut a);
        (r, a.failed)
    };
    let check = |what: &str, got: (i32, u32), want: (i32, u32)| -> Result<(), String> {
        if got == want {
            Ok(())
        } else {
            Err(format!("{what}: {} .failed {:#x}, want {} .failed {:#x}", errno_name(got.0), got.1, errno_name(want.0), want.1))
        }
    };
    e[2].pad = 1;
    check("BIND_ARRAY [1, 2, 3 (pad 1), 1]", array(&e, 0), (EINVAL, 2))?;
    e[2].pad = 0;
    check("BIND_ARRAY [1, 2, 3, 1]", array(&e, 0), (EBUSY, 3))?;
    // The failed calls bound nothing: the first three bind and unbind whole.
    let no = uapi::VGPU_SVM_BIND_ARRAY_NO_ENTRY;
    check("BIND_ARRAY [1, 2, 3]", array(&e[..3], 0), (0, no))?;
    check("BIND_ARRAY(UNBIND) [1, 2, 3]", array(&e[..3], uapi::VGPU_SVM_BIND_ARRAY_UNBIND), (0, no))?;
    Ok(String::new())
}
