//! The uAPI header's promises that no other case asserted (tests/CONTRACTS.md maps every
//! promise to its tests): semantic B across VA reuse with other kinds of mappings, READONLY
//! objects over memory the process cannot write, the CTX_CONFIG window, SUBMIT's `result`,
//! the lifetime of a bound object whose handle was closed, BIND/UNBIND bookkeeping, a fork
//! child's use of the parent's objects, and the device's context slots (ENOSPC).
//!
//! Each function is one promise group; its doc comment quotes the promise and where it is
//! stated (uapi/vgpu_svm_drm.h unless said otherwise).

use std::os::fd::AsRawFd;

use vgpu::reference::{fnv1a64, pattern};
use vgpu::{uapi, Context, Device, Job, Param};

use crate::child::fork_child;
use crate::coherence::{CaseResult, Cx, Mode, Region, Step, Stop};
use crate::mem::{Expect, Mapping, HPAGE, PAGE};
use crate::sysutil::smaps_kb;

const EFAULT: i32 = libc::EFAULT;
const EPERM: i32 = libc::EPERM;
const EINVAL: i32 = libc::EINVAL;
const ENOENT: i32 = libc::ENOENT;
const EBUSY: i32 = libc::EBUSY;

/// GPU VAs for the bindings these cases make by hand (above the ones `Gpu::region` hands
/// out from `USERPTR_VA_BASE`, below 2^48).
const HAND_VA: u64 = 0x8000_0000_0000;

/// An ioctl on `fd`: Ok, or the errno.
fn raw_ioctl<T>(fd: i32, request: u32, arg: &mut T) -> Result<(), i32> {
    // SAFETY: callers pass the argument type of `request`; pointers inside it (SUBMIT's
    // arrays) point to live arrays of the stated length.
    let ret = unsafe { libc::ioctl(fd, request as libc::Ioctl, arg as *mut T) };
    if ret == -1 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(())
    }
}

/// `DRM_IOCTL_GEM_CLOSE` (drm.h: `DRM_IOW(0x09, struct drm_gem_close)`).
const DRM_IOCTL_GEM_CLOSE: u32 = 0x4008_6409;

/// GEM_CLOSE of `handle` on `fd`.
fn gem_close(fd: i32, handle: u32) -> Result<(), i32> {
    let mut arg = [handle, 0u32];
    raw_ioctl(fd, DRM_IOCTL_GEM_CLOSE, &mut arg)
}

/// A raw SUBMIT of `ops` with `handles` on `fd`.
fn submit_raw(fd: i32, ops: &[uapi::drm_vgpu_svm_op], handles: &[u32]) -> Result<uapi::drm_vgpu_svm_submit, i32> {
    let mut req = uapi::drm_vgpu_svm_submit {
        ops: ops.as_ptr() as u64,
        nr_ops: ops.len() as u32,
        handles: if handles.is_empty() { 0 } else { handles.as_ptr() as u64 },
        nr_handles: handles.len() as u32,
        ..Default::default()
    };
    raw_ioctl(fd, uapi::DRM_IOCTL_VGPU_SVM_SUBMIT, &mut req).map(|()| req)
}

fn read_op(src: u64, len: u64) -> uapi::drm_vgpu_svm_op {
    uapi::drm_vgpu_svm_op { kind: uapi::VGPU_SVM_OP_KIND_READ, flags: 0, dst: 0, src, len, value: 0 }
}

/// Checks that `r` (a raw ioctl's result) is the errno `want`.
fn check_raw<T>(cx: &mut Cx, desc: &str, r: Result<T, i32>, want: i32) -> bool {
    let name = |e: i32| std::io::Error::from_raw_os_error(e).to_string();
    match r {
        Err(e) if e == want => cx.check(true, desc),
        Err(e) => cx.check(false, format!("{desc}: got {}, want {}", name(e), name(want))),
        Ok(_) => cx.check(false, format!("{desc}: succeeded, want {}", name(want))),
    }
}

/// A memfd of `len` bytes holding `bytes` (written with pwrite, not through a mapping).
fn memfd_with(bytes: &[u8]) -> Result<std::fs::File, Stop> {
    use std::os::fd::FromRawFd;
    // SAFETY: a valid C string.
    let fd = unsafe { libc::memfd_create(c"vgpu-promises".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(format!("memfd_create: {}", std::io::Error::last_os_error()).into());
    }
    // SAFETY: a fresh descriptor, owned from here on.
    let f = unsafe { std::fs::File::from_raw_fd(fd) };
    use std::os::unix::fs::FileExt;
    f.write_all_at(bytes, 0).step("pwrite the memfd")?;
    Ok(f)
}

/// The file's first `len` bytes, read with pread (not through a mapping).
fn file_bytes(f: &std::fs::File, len: usize) -> Result<Vec<u8>, Stop> {
    use std::os::unix::fs::FileExt;
    let mut v = vec![0u8; len];
    f.read_exact_at(&mut v, 0).step("pread the memfd")?;
    Ok(v)
}

/// `mmap(addr, len, prot, MAP_SHARED | MAP_FIXED_NOREPLACE, fd, 0)`, exactly at `addr`.
fn file_at(addr: u64, len: usize, prot: libc::c_int, fd: i32) -> Result<Mapping, Stop> {
    let m = Mapping::new(addr, len, prot, libc::MAP_SHARED | libc::MAP_FIXED_NOREPLACE, fd, 0).step("mmap the file at the old VA")?;
    if m.addr() != addr {
        return Err(format!("the file landed at {:#x}, not {addr:#x}", m.addr()).into());
    }
    Ok(m)
}

/// Semantic B follows the VA through every kind of mapping (USERPTR_CREATE: "the object
/// follows the VA range, not the pages. Every submit that uses it revalidates it ... after
/// munmap the next submit fails with -EFAULT; after a new mapping at the same VA it sees the
/// new memory"; "A READONLY object over memory that the process cannot write is fine; a
/// writable one needs writable memory"; SUBMIT: "-EFAULT ... unmapped"; DESIGN.md "Semantic
/// B follows the VA, not the page"). One 2 MiB VA range, with a read-write and a READONLY
/// view (userptr objects created while the range is a hole; in SVM mode the identity), is in
/// turn: a hole (EFAULT), private anonymous 4 KiB pages, a hole again, a MAP_SHARED memfd
/// (the device's write lands in the file: pread sees it), THP-backed anonymous memory, the
/// file mapped read-only from an O_RDONLY descriptor (the READONLY view reads it; the writable
/// object refuses even a read job with EPERM, the file is unchanged), and half a mapping
/// (userptr: the object is revalidated whole, so even a job over the mapped half fails with
/// EFAULT; SVM: the mapped half works). The existing `munmap` case covers anonymous ->
/// anonymous only.
pub fn semantic_b_va_reuse(cx: &mut Cx) -> CaseResult {
    let len = HPAGE;
    let userptr = cx.mode == Mode::Userptr;
    let g = cx.gpu()?;
    let hole = Mapping::anon_aligned(len, HPAGE)?;
    let addr = hole.addr();
    hole.unmap().step("munmap the reservation")?;
    let rw = g.region(addr, len).step("a read-write view of a hole (USERPTR_CREATE + BIND)")?;
    let ro = g.region_ro(addr, len).step("a READONLY view of a hole")?;
    cx.check_errno("a job over the hole fails (rw)", g.read(&rw, 0, len), &[EFAULT]);
    cx.check_errno("a job over the hole fails (READONLY)", g.read(&ro, 0, len), &[EFAULT]);

    // 1. Private anonymous 4 KiB pages.
    let m = Mapping::anon_at(addr, len).step("mmap anonymous memory at the VA")?;
    m.madvise(0, len, libc::MADV_NOHUGEPAGE).step("MADV_NOHUGEPAGE")?;
    m.write_pattern(0, len, 1);
    let mut want = Expect::pattern(len, 1);
    cx.check_hash("anonymous: the rw view sees the new memory", &g, &rw, 0, len, &want);
    cx.check_hash("anonymous: the READONLY view sees it", &g, &ro, 0, len, &want);
    cx.check_ok("anonymous: a device write", g.write_pattern(&rw, 0, 4 * PAGE, 2));
    want.set_pattern(0, 4 * PAGE, 2);
    cx.check_mem("anonymous: the CPU sees the device's write", &m, &want);
    m.unmap().step("munmap the anonymous memory")?;
    cx.check_errno("after munmap a job fails (rw)", g.read(&rw, 0, len), &[EFAULT]);
    cx.check_errno("after munmap a job fails (READONLY)", g.hash(&ro, 0, len), &[EFAULT]);

    // 2. A MAP_SHARED file at the same VA.
    let file = memfd_with(&pattern(3, len))?;
    let fm = file_at(addr, len, libc::PROT_READ | libc::PROT_WRITE, file.as_raw_fd())?;
    let mut fwant = Expect::pattern(len, 3);
    cx.check_hash("shared file: the rw view sees the file's bytes", &g, &rw, 0, len, &fwant);
    cx.check_hash("shared file: the READONLY view sees them", &g, &ro, 0, len, &fwant);
    cx.check_ok("shared file: a device write", g.write_pattern(&rw, PAGE, 8 * PAGE, 4));
    fwant.set_pattern(PAGE, 8 * PAGE, 4);
    let got = file_bytes(&file, len)?;
    cx.check(
        fwant.mismatch_at(0, &got).is_none(),
        format!("shared file: the device's write is in the file (pread): {}", fwant.mismatch_at(0, &got).unwrap_or_default()),
    );
    fm.unmap().step("munmap the file")?;
    cx.check_errno("after munmap of the file a job fails", g.read(&rw, 0, len), &[EFAULT]);

    // 3. THP-backed anonymous memory at the same VA.
    let t = Mapping::anon_at(addr, len).step("mmap anonymous memory at the VA again")?;
    t.madvise(0, len, libc::MADV_HUGEPAGE).step("MADV_HUGEPAGE")?;
    t.write_pattern(0, len, 5);
    let thp = smaps_kb(addr, "AnonHugePages").unwrap_or(0);
    cx.note(format!("THP step: {thp} KiB of THP at the VA"));
    let mut twant = Expect::pattern(len, 5);
    cx.check_hash("THP: the rw view sees the new memory (not the file's)", &g, &rw, 0, len, &twant);
    cx.check_ok("THP: a device write across the middle", g.write_pattern(&rw, len / 2 - PAGE, 2 * PAGE, 6));
    twant.set_pattern(len / 2 - PAGE, 2 * PAGE, 6);
    cx.check_mem("THP: the CPU sees the device's write", &t, &twant);
    cx.check_hash("THP: the READONLY view sees it too", &g, &ro, 0, len, &twant);
    t.unmap().step("munmap the THP memory")?;

    // 4. The file again, read-only, from an O_RDONLY descriptor: the process cannot write it
    //    (mprotect(PROT_WRITE) would fail with EACCES).
    let path = format!("/proc/self/fd/{}", file.as_raw_fd());
    let rdonly = std::fs::File::open(&path).step("open the memfd O_RDONLY")?;
    let rm = file_at(addr, len, libc::PROT_READ, rdonly.as_raw_fd())?;
    cx.check(
        rm.mprotect(0, PAGE, libc::PROT_READ | libc::PROT_WRITE).is_err(),
        "read-only file: the process cannot make it writable (mprotect fails)",
    );
    cx.check_hash("read-only file: the READONLY view reads it", &g, &ro, 0, len, &fwant);
    if userptr {
        cx.check_errno(
            "read-only file: a READ job through the writable object fails (it needs writable memory)",
            g.read(&rw, 0, PAGE),
            &[EPERM],
        );
    } else {
        cx.check_ok("read-only file: an SVM READ works", g.read(&rw, 0, len));
    }
    cx.check_errno("read-only file: a device write fails", g.fill(&rw, 0, PAGE, 0xee), &[EPERM]);
    cx.check_errno("read-only file: a write through the READONLY view fails", g.fill(&ro, 0, PAGE, 0xee), &[EPERM]);
    let got = file_bytes(&file, len)?;
    cx.check(fwant.mismatch_at(0, &got).is_none(), "read-only file: the refused writes left the file alone");
    rm.unmap().step("munmap the read-only file")?;

    // 5. Half a mapping: the object's second half is a hole.
    let h = Mapping::anon_at(addr, len / 2).step("mmap half the range")?;
    h.write_pattern(0, len / 2, 7);
    if userptr {
        cx.check_errno(
            "half mapped: a job over the mapped half fails too (the object is revalidated whole)",
            g.read(&rw, 0, PAGE),
            &[EFAULT],
        );
    } else {
        cx.check_hash("half mapped: the mapped half works (SVM)", &g, &rw, 0, len / 2, &Expect::pattern(len / 2, 7));
    }
    cx.check_errno("half mapped: a job over the whole range fails", g.read(&rw, 0, len), &[EFAULT]);
    drop(h);
    Ok(())
}

/// READONLY objects and read-only memory (USERPTR_CREATE: "A READONLY object over memory
/// that the process cannot write is fine; a writable one needs writable memory"; SUBMIT:
/// "-EPERM: ... a write to read-only memory or a READONLY object"). Unlike the `mprotect`
/// case (objects created over writable memory, then mprotect'ed; EPERM or EFAULT accepted),
/// the objects here are created over memory that is already PROT_READ: both creations and
/// bindings succeed; the READONLY one reads, refuses writes with EPERM; the writable one
/// refuses even a READ job with EPERM; after mprotect(PROT_READ|PROT_WRITE) the writable one
/// works and the READONLY one still refuses writes (the flag is the object's, not the
/// memory's). PROT_NONE of the bound range: every job fails with EFAULT; PROT_READ again: the
/// READONLY object reads the same bytes again.
pub fn readonly_objects(cx: &mut Cx) -> CaseResult {
    let len = 4 * PAGE;
    let g = cx.gpu()?;
    let m = Mapping::anon(len)?;
    m.write_pattern(0, len, 1);
    let mut want = Expect::pattern(len, 1);
    m.mprotect(0, len, libc::PROT_READ).step("mprotect(PROT_READ)")?;
    let ro = g.map_ro(&m).step("a READONLY object over PROT_READ memory (create + bind)")?;
    let rw = g.map(&m).step("a writable object over PROT_READ memory (create + bind)")?;
    cx.check_hash("the READONLY object over read-only memory reads", &g, &ro, 0, len, &want);
    cx.check_errno("a write through the READONLY object fails", g.fill(&ro, 0, PAGE, 0x11), &[EPERM]);
    cx.check_errno("a READ job through the writable object over read-only memory fails", g.read(&rw, 0, len), &[EPERM]);
    cx.check_errno("a write through the writable object over read-only memory fails", g.fill(&rw, 0, PAGE, 0x11), &[EPERM]);
    cx.check_mem("the refused writes left the memory alone", &m, &want);

    m.mprotect(0, len, libc::PROT_READ | libc::PROT_WRITE).step("mprotect(RW)")?;
    cx.check_ok("after mprotect(RW) the writable object writes", g.write_pattern(&rw, 0, len, 2));
    want.set_pattern(0, len, 2);
    cx.check_mem("the CPU sees it", &m, &want);
    cx.check_errno("the READONLY object still refuses writes over writable memory", g.fill(&ro, 0, PAGE, 0x11), &[EPERM]);
    cx.check_mem("and writes nothing", &m, &want);

    m.mprotect(0, len, libc::PROT_NONE).step("mprotect(PROT_NONE)")?;
    cx.check_errno("PROT_NONE: a READ job through the READONLY object fails", g.read(&ro, 0, len), &[EFAULT]);
    cx.check_errno("PROT_NONE: a write through the writable object fails", g.fill(&rw, 0, PAGE, 0x11), &[EFAULT]);
    m.mprotect(0, len, libc::PROT_READ).step("mprotect(PROT_READ) again")?;
    cx.check_hash("PROT_READ again: the READONLY object reads the same bytes", &g, &ro, 0, len, &want);
    Ok(())
}

/// The CTX_CONFIG window (CTX_CONFIG: "May be called before the first job only (-EBUSY
/// after)"; "The context is created by the first of CTX_CONFIG, USERPTR_CREATE and SUBMIT").
/// A context created by USERPTR_CREATE can still be configured, and configured again (SVM
/// on, off, on); a SUBMIT refused for its arguments (nr_ops 0) is not a job. After the first job, CTX_CONFIG fails with EBUSY with either flag value, and
/// the context keeps its configuration (SVM: a job on fresh memory is serviced). A job that
/// ran and failed (EFAULT) also ends the window (noted: the header does not say whether a
/// failed job counts).
pub fn ctx_config_window(cx: &mut Cx) -> CaseResult {
    let m = Mapping::anon(2 * PAGE)?;
    m.fill(0, 2 * PAGE, 0x42);
    let c = Context::open_default().step("open")?;
    let fd = c.device().as_raw_fd();
    let bo = c.userptr_raw(m.addr() as *const u8, PAGE, true).step("USERPTR_CREATE (creates the context)")?;
    cx.check_ok("CTX_CONFIG(SVM) after USERPTR_CREATE created the context", c.config(true));
    cx.check_ok("CTX_CONFIG(0) again before any job", c.config(false));
    check_raw(cx, "a SUBMIT with nr_ops 0 is refused (EINVAL)", submit_raw(fd, &[], &[]), EINVAL);
    cx.check_ok("CTX_CONFIG(SVM) after a refused SUBMIT (not a job)", c.config(true));
    let first = c.submit_readonly(&Job::new().hash(m.addr(), PAGE as u64));
    if let Some(j) = cx.check_ok("the first job (SVM HASH)", first) {
        cx.check_eq("it sees the CPU's bytes", j.result, fnv1a64(&m.read(0, PAGE)));
    }
    cx.check_errno("CTX_CONFIG(SVM) after the first job", c.config(true), &[EBUSY]);
    cx.check_errno("CTX_CONFIG(0) after the first job", c.config(false), &[EBUSY]);
    let fresh = Mapping::anon(PAGE)?;
    fresh.fill(0, PAGE, 0x24);
    let j = c.submit_readonly(&Job::new().hash(fresh.addr(), PAGE as u64));
    if let Some(j) = cx.check_ok("the context is still SVM: a job on fresh memory works", j) {
        cx.check_eq("and sees the CPU's bytes", j.result, fnv1a64(&fresh.read(0, PAGE)));
    }
    drop(bo);

    // A failed job (non-SVM, outside every binding).
    let c2 = Context::open_default().step("open a second file")?;
    c2.config(false).step("CTX_CONFIG(0)")?;
    cx.check_errno(
        "a non-SVM job outside every binding fails",
        c2.submit_readonly(&Job::new().read(m.addr(), 8)),
        &[EFAULT],
    );
    match c2.config(true) {
        Err(e) if e.is(EBUSY) => cx.note("a failed job ends the CTX_CONFIG window (EBUSY after it)"),
        Ok(()) => cx.note("a failed job does not end the CTX_CONFIG window"),
        Err(e) => {
            cx.check(false, format!("CTX_CONFIG after a failed job: {e} (want success or EBUSY)"));
        }
    }
    Ok(())
}

/// SUBMIT's outputs (SUBMIT: "@result: out: the result of the last HASH or ATOMIC_ADD op";
/// "@nr_ops: 1..64"; "@faults: out: device faults serviced while the job ran"; op kinds:
/// "ATOMIC_ADD ... old -> result", "HASH: FNV-1a 64 ... -> result"). Mixed jobs whose last
/// result-producing op is a HASH or an ATOMIC_ADD, with other ops after it; ops run in order
/// (a HASH before a FILL of the same bytes sees the old bytes, after it the new ones); a job of
/// 64 ATOMIC_ADDs (the most ops a job may have) adds 64 times and reports the 64th's old value.
/// SVM: the first job on untouched memory reports device faults, the next one none.
pub fn submit_result(cx: &mut Cx) -> CaseResult {
    let len = 2 * PAGE;
    let g = cx.gpu()?;
    let m = Mapping::anon(len)?;
    m.madvise(0, len, libc::MADV_NOHUGEPAGE).step("MADV_NOHUGEPAGE")?;
    let r = g.map(&m)?;
    if g.mode() == Mode::Svm {
        let first = g.submit(&[&r], Job::new().read(r.va(0), len as u64));
        if let Some(j) = cx.check_ok("the first job on untouched memory", first) {
            cx.check(j.faults > 0, format!("it reports device faults ({})", j.faults));
        }
        let again = g.submit(&[&r], Job::new().read(r.va(0), len as u64));
        cx.check_eq("a second job over mirrored memory reports none", again.ok().map(|j| j.faults), Some(0));
    }
    m.write_pattern(PAGE, PAGE, 1);
    m.write_u64(0, 5);
    let page1 = |m: &Mapping| fnv1a64(&m.read(PAGE, PAGE));
    let h1 = page1(&m);

    let job = Job::new().atomic_add(r.va(0), 1).hash(r.va(PAGE), PAGE as u64).read(r.va(0), len as u64);
    let res = g.submit(&[&r], job).ok().map(|j| j.result);
    cx.check_eq("[ATOMIC_ADD, HASH, READ]: result is the HASH's", res, Some(h1));
    cx.check_eq("the ATOMIC_ADD ran", m.read_u64(0), 6);

    let job = Job::new().hash(r.va(PAGE), PAGE as u64).atomic_add(r.va(0), 10).fill(r.va(8), 8, 0x77);
    let res = g.submit(&[&r], job).ok().map(|j| j.result);
    cx.check_eq("[HASH, ATOMIC_ADD, FILL]: result is the ATOMIC_ADD's old value", res, Some(6));
    cx.check_eq("the ATOMIC_ADD ran", m.read_u64(0), 16);

    let job = Job::new().hash(r.va(PAGE), PAGE as u64).fill(r.va(PAGE), PAGE as u64, 0x33).read(r.va(PAGE), 64);
    let res = g.submit(&[&r], job).ok().map(|j| j.result);
    cx.check_eq("[HASH, FILL of the same bytes, READ]: the HASH saw the bytes before the FILL", res, Some(h1));
    let filled = fnv1a64(&[0x33u8; PAGE]);
    cx.check_eq("the FILL ran", page1(&m), filled);
    let job = Job::new().write_pattern(r.va(PAGE), PAGE as u64, 9).hash(r.va(PAGE), PAGE as u64);
    let res = g.submit(&[&r], job).ok().map(|j| j.result);
    cx.check_eq("[WRITE_PATTERN, HASH]: the HASH saw the new bytes", res, Some(fnv1a64(&pattern(9, PAGE))));
    let job = Job::new().hash(r.va(PAGE), 64).hash(r.va(PAGE + 64), 64);
    let res = g.submit(&[&r], job).ok().map(|j| j.result);
    cx.check_eq("[HASH a, HASH b]: result is the second HASH's", res, Some(fnv1a64(&pattern(9, PAGE)[64..128])));

    m.write_u64(16, 100);
    let mut job = Job::new();
    for _ in 0..vgpu::MAX_OPS {
        job = job.atomic_add(r.va(16), 1);
    }
    cx.check_eq("the job has the most ops allowed", job.len(), 64);
    let res = g.submit(&[&r], job);
    if let Some(j) = cx.check_ok("a job of 64 ops", res) {
        cx.check_eq("its result is the 64th ATOMIC_ADD's old value", j.result, 163);
    }
    cx.check_eq("all 64 ran", m.read_u64(16), 164);
    let res = g.submit(&[&r], Job::new().fill(r.va(PAGE), 64, 3).read(r.va(0), 64)).ok().map(|j| j.result);
    cx.check_eq("[FILL, READ]: result is 0 (no HASH or ATOMIC_ADD)", res, Some(0));
    Ok(())
}

/// BIND/UNBIND bookkeeping (BIND: "-EBUSY (the object is already bound, or the range
/// overlaps another binding)"; UNBIND: "gpu_va identifies the binding; -ENOENT if there is
/// none"; SUBMIT: "-EINVAL ... a handle of an object that is not bound"; CTX_CONFIG: "a job
/// touching memory that is not a bound userptr BO fails with -EFAULT"). An object bound
/// twice: EBUSY; a job naming an object never bound, or unbound: EINVAL; UNBIND at a VA
/// inside a binding but not its start: ENOENT (and the binding stays: a job through it
/// works); UNBIND twice: ENOENT the second time; after UNBIND a job at the old GPU VA fails
/// with EFAULT; the object binds again at another VA and sees the same memory.
pub fn bind_unbind(cx: &mut Cx) -> CaseResult {
    let len = 4 * PAGE;
    let g = cx.gpu()?;
    let c = g.ctx();
    let m = Mapping::anon(len)?;
    m.write_pattern(0, len, 1);
    let want = Expect::pattern(len, 1);
    let bo = c.userptr_raw(m.addr() as *const u8, len, false).step("USERPTR_CREATE")?;
    let va = HAND_VA + 16 * HPAGE as u64;
    // SAFETY (all submits below): jobs write only the mapping `m`, which nothing borrows.
    let unbound = unsafe { c.submit(&Job::new().read(va, 8).uses(&bo)) };
    cx.check_errno("a job naming an object that was never bound", unbound, &[EINVAL]);
    bo.bind(va).step("BIND")?;
    cx.check_errno("BIND of the bound object at another VA", c.bind_handle(bo.handle(), va + HPAGE as u64), &[EBUSY]);
    // Another object whose range covers the binding's start (it starts before it) or the
    // whole binding: each overlaps it, so EBUSY (seen: mutant bind-overlap-start-only, which
    // checks only whether the new range starts inside an existing one, passed everything).
    let other = c.userptr_raw(m.addr() as *const u8, len + 2 * PAGE, true).step("USERPTR_CREATE (other)")?;
    for (what, at) in [("covering the binding's start", va - 2 * PAGE as u64), ("covering the whole binding", va - PAGE as u64)] {
        cx.check_errno(format!("BIND of another object {what}"), c.bind_handle(other.handle(), at), &[EBUSY]);
    }
    cx.check_errno("UNBIND inside the binding (not its start)", c.unbind(va + PAGE as u64), &[ENOENT]);
    let h = unsafe { c.submit(&Job::new().hash(va, len as u64).uses(&bo)) };
    cx.check_eq("the binding survived the refused UNBIND", h.ok().map(|j| j.result), Some(want.hash(0, len)));
    cx.check_ok("UNBIND at the binding's start", c.unbind(va));
    cx.check_errno("UNBIND at the same VA again", c.unbind(va), &[ENOENT]);
    let after = unsafe { c.submit(&Job::new().read(va, 8).uses(&bo)) };
    cx.check_errno("a job naming the unbound object", after, &[EINVAL]);
    let after = unsafe { c.submit(&Job::new().read(va, 8)) };
    cx.check_errno("a job at the old GPU VA (no binding there)", after, &[EFAULT]);
    let va2 = va + 2 * HPAGE as u64;
    cx.check_ok("the object binds again at another VA", c.bind_handle(bo.handle(), va2));
    let h = unsafe { c.submit(&Job::new().hash(va2, len as u64).uses(&bo)) };
    cx.check_eq("and sees the same memory there", h.ok().map(|j| j.result), Some(want.hash(0, len)));
    cx.check_ok("UNBIND of the new binding", c.unbind(va2));
    Ok(())
}

/// A bound object whose GEM handle is closed (object lifetime; the header does not say what
/// GEM_CLOSE of a bound object does: this asserts the driver's answer, that the binding
/// outlives the handle until UNBIND or the file's close, and stays sound). GEM_CLOSE
/// succeeds; a job naming the closed handle fails with ENOENT (SUBMIT: "-ENOENT: a handle
/// names no object"); a job touching the binding without naming it may use the entries the
/// last validation left (they are kept coherent: it sees the CPU's bytes) and fails with
/// EFAULT once an invalidation cleared them (nothing revalidates an unnamed object); the
/// binding still owns its GPU VA range (BIND of another object there: EBUSY); UNBIND at its VA
/// succeeds once, then ENOENT; then another object binds there and works. While the closed
/// object is bound, the CPU rewrites its memory after MADV_DONTNEED (its notifier still runs:
/// the device's verdict covers it) and the new object sees the new bytes.
pub fn closed_bound_object(cx: &mut Cx) -> CaseResult {
    let len = 4 * PAGE;
    let g = cx.gpu()?;
    let c = g.ctx();
    let fd = c.device().as_raw_fd();
    let m = Mapping::anon(len)?;
    m.write_pattern(0, len, 1);
    let bo = c.userptr_raw(m.addr() as *const u8, len, false).step("USERPTR_CREATE")?;
    let va = HAND_VA + 32 * HPAGE as u64;
    bo.bind(va).step("BIND")?;
    // SAFETY (all submits below): jobs write only the mapping `m`, which nothing borrows.
    let ok = unsafe { c.submit(&Job::new().write_pattern(va, PAGE as u64, 2).uses(&bo)) };
    cx.check_ok("a job through the bound object", ok);
    let h = bo.handle();
    // The handle is ours to close now; the library value must not close it (or a reused
    // handle number) again.
    std::mem::forget(bo);
    let closed = gem_close(fd, h);
    cx.check(closed.is_ok(), format!("GEM_CLOSE of the bound object: {closed:?}"));
    check_raw(cx, "a job naming the closed handle", submit_raw(fd, &[read_op(va, 8)], &[h]), ENOENT);
    // Not naming the object: the header promises EFAULT only "outside every binding". The
    // entries the last job mirrored are still there (and kept coherent by the object's
    // notifier), so a job that does not name the object may use them: it must then see what
    // the CPU sees.
    let mut want = Expect::pattern(len, 1);
    want.set_pattern(0, PAGE, 2);
    let hash = uapi::drm_vgpu_svm_op { kind: uapi::VGPU_SVM_OP_KIND_HASH, flags: 0, dst: 0, src: va, len: PAGE as u64, value: 0 };
    match submit_raw(fd, &[hash], &[]) {
        Ok(r) => {
            cx.note("a job not naming the closed object used its still-mirrored entries");
            cx.check_eq("such a job sees the CPU's bytes", r.result, want.hash(0, PAGE));
        }
        Err(e) => {
            cx.check(e == EFAULT, format!("a job not naming the closed object: errno {e}, want success or EFAULT"));
        }
    }
    m.madvise(0, len, libc::MADV_DONTNEED).step("MADV_DONTNEED")?;
    m.write_pattern(0, len, 3);
    // The invalidation cleared the entries and nothing names the object to revalidate them.
    check_raw(cx, "after MADV_DONTNEED a job not naming the closed object fails", submit_raw(fd, &[read_op(va, 8)], &[]), EFAULT);
    let other = c.userptr_raw(m.addr() as *const u8, len, true).step("USERPTR_CREATE (another object)")?;
    cx.check_errno("BIND of another object over the closed object's binding", other.bind(va), &[EBUSY]);
    cx.check_ok("UNBIND at the closed object's VA", c.unbind(va));
    cx.check_errno("UNBIND there again", c.unbind(va), &[ENOENT]);
    cx.check_ok("the other object binds there now", other.bind(va));
    let r = Region { cpu: m.addr(), len, gpu: va, bo: Some(other) };
    cx.check_hash("and sees the CPU's new bytes", &g, &r, 0, len, &Expect::pattern(len, 3));
    Ok(())
}

/// A fork child holding the parent's file and objects (the GPU context comment: "Any ioctl
/// other than GET_PARAM and STATS from a process with another mm (e.g. a fork child using the
/// parent's fd) fails with -EPERM"; DESIGN.md "a fork child using the parent's fd gets -EPERM,
/// and opens its own"). The parent's userptr object is bound; in the child, SUBMIT naming it,
/// BIND and UNBIND of it, USERPTR_CREATE and CTX_CONFIG fail with EPERM, STATS and GET_PARAM
/// work; the child writes its (COW) copy of the memory and runs a job through an object of
/// its own file over the same VA. The parent's object keeps working and sees the parent's
/// bytes, not the child's. The child's GEM_CLOSE of a second parent handle is a DRM core
/// ioctl the driver cannot refuse: its result is noted (the header's "any ioctl" reads as if
/// it were EPERM), and the parent's second binding still unbinds.
pub fn fork_child_objects(cx: &mut Cx) -> CaseResult {
    let len = 4 * PAGE;
    let g = cx.gpu()?;
    let c = g.ctx();
    let fd = c.device().as_raw_fd();
    let m = Mapping::anon(len)?;
    m.write_pattern(0, len, 1);
    let bo = c.userptr_raw(m.addr() as *const u8, len, false).step("USERPTR_CREATE")?;
    let va = HAND_VA + 48 * HPAGE as u64;
    bo.bind(va).step("BIND")?;
    let bo2 = c.userptr_raw(m.addr() as *const u8, PAGE, true).step("USERPTR_CREATE (second)")?;
    let va2 = va + 2 * HPAGE as u64;
    bo2.bind(va2).step("BIND (second)")?;
    let (h, h2) = (bo.handle(), bo2.handle());
    let mode = cx.mode;
    let addr = m.addr();
    let child = fork_child(|_| {
        let eperm = |what: &str, r: Result<(), i32>| match r {
            Err(e) if e == EPERM => Ok(()),
            Err(e) => Err(format!("child: {what}: errno {e}, want EPERM")),
            Ok(()) => Err(format!("child: {what}: succeeded, want EPERM")),
        };
        eperm("SUBMIT naming the parent's object", submit_raw(fd, &[read_op(va, 8)], &[h]).map(|_| ()))?;
        let mut b = uapi::drm_vgpu_svm_bind { handle: h, pad: 0, gpu_va: va + HPAGE as u64 };
        eperm("BIND of the parent's object", raw_ioctl(fd, uapi::DRM_IOCTL_VGPU_SVM_BIND, &mut b))?;
        let mut b = uapi::drm_vgpu_svm_bind { handle: 0, pad: 0, gpu_va: va };
        eperm("UNBIND of the parent's binding", raw_ioctl(fd, uapi::DRM_IOCTL_VGPU_SVM_UNBIND, &mut b))?;
        let mut u = uapi::drm_vgpu_svm_userptr_create { userptr: addr, size: PAGE as u64, flags: 0, handle: 0 };
        eperm("USERPTR_CREATE", raw_ioctl(fd, uapi::DRM_IOCTL_VGPU_SVM_USERPTR_CREATE, &mut u))?;
        let mut cfg = uapi::drm_vgpu_svm_ctx_config { flags: 0, pad: 0 };
        eperm("CTX_CONFIG", raw_ioctl(fd, uapi::DRM_IOCTL_VGPU_SVM_CTX_CONFIG, &mut cfg))?;
        let mut st = uapi::drm_vgpu_svm_stats::default();
        raw_ioctl(fd, uapi::DRM_IOCTL_VGPU_SVM_STATS, &mut st).map_err(|e| format!("child: STATS: errno {e}"))?;
        let mut p = uapi::drm_vgpu_svm_get_param { param: uapi::VGPU_SVM_PARAM_VA_BITS, pad: 0, value: 0 };
        raw_ioctl(fd, uapi::DRM_IOCTL_VGPU_SVM_GET_PARAM, &mut p).map_err(|e| format!("child: GET_PARAM: errno {e}"))?;
        // The child's own memory (COW) and its own file.
        m.write_pattern(0, len, 9);
        let own = crate::coherence::Gpu::open(mode, None).map_err(|e| format!("child: open: {e}"))?;
        let r = own.region(addr, len).map_err(|e| format!("child: region: {e}"))?;
        let got = own.hash(&r, 0, len).map_err(|e| format!("child: HASH: {e}"))?;
        if got != fnv1a64(&pattern(9, len)) {
            return Err("child: its own context does not see its own write".into());
        }
        drop(r);
        // GEM_CLOSE is the DRM core's: exit code 0 if it succeeded.
        let closed = gem_close(fd, h2);
        match closed {
            Ok(()) => Ok(()),
            Err(e) => Err(format!("gem_close:{e}")),
        }
    })?;
    let res = child.join();
    let child_closed = match &res {
        Ok(()) => true,
        Err(e) if e.starts_with("gem_close:") => false,
        Err(e) => {
            cx.check(false, format!("the child's ioctls: {e}"));
            false
        }
    };
    cx.note(format!(
        "the child's GEM_CLOSE of a parent handle (DRM core) {}",
        if child_closed { "succeeded: the handle is gone in the parent's file too" } else { "failed" }
    ));
    // SAFETY: the job writes only the mapping `m`.
    let j = unsafe { c.submit(&Job::new().hash(va, len as u64).uses(&bo)) };
    cx.check_eq(
        "the parent's object sees the parent's bytes, not the child's",
        j.ok().map(|j| j.result),
        Some(fnv1a64(&pattern(1, len))),
    );
    let j = unsafe { c.submit(&Job::new().write_pattern(va, len as u64, 2).uses(&bo)) };
    cx.check_ok("the parent's object still writes", j);
    cx.check_mem("the parent's CPU sees it", &m, &Expect::pattern(len, 2));
    if child_closed {
        std::mem::forget(bo2); // its handle is closed; do not close a reused number later
        cx.check_ok("the parent's second binding (handle closed by the child) still unbinds", c.unbind(va2));
    } else {
        cx.check_ok("the parent's second object still unbinds", bo2.unbind(va2));
    }
    Ok(())
}

/// The device's context slots (CTX_CONFIG: "-ENOSPC (the device has no free context: all
/// VGPU_SVM_PARAM_MAX_CONTEXTS are in use; retry after another file was closed)"; "The context
/// is created by the first of CTX_CONFIG, USERPTR_CREATE and SUBMIT on the file: each of them
/// may fail with these errors then (UNBIND on a file without a context: -ENOENT)"; STATS:
/// "STATS never creates one"). Files take contexts until CTX_CONFIG fails with ENOSPC (at
/// most MAX_CONTEXTS files); then on a fresh file USERPTR_CREATE and SUBMIT fail with ENOSPC,
/// UNBIND with ENOENT, STATS and GET_PARAM work; after one file is closed, the file that
/// failed gets a context (CTX_CONFIG succeeds on retry) and runs a job.
pub fn context_slots(cx: &mut Cx) -> CaseResult {
    let dev = Device::open_default().step("open")?;
    let max = dev.get_param(Param::MaxContexts).step("GET_PARAM(MAX_CONTEXTS)")?;
    cx.check(max > 0 && max <= 1024, format!("MAX_CONTEXTS is {max}"));
    let mut held: Vec<Context> = Vec::new();
    let mut refused = None;
    for _ in 0..=max {
        let c = Context::open_default().step("open a file")?;
        match c.config(false) {
            Ok(()) => held.push(c),
            Err(e) => {
                refused = Some((c, e));
                break;
            }
        }
    }
    cx.note(format!("{} files got a context of {max}", held.len()));
    let Some((full, e)) = refused else {
        cx.check(false, format!("{} files all got a context: MAX_CONTEXTS ({max}) is not enforced", max + 1));
        return Ok(());
    };
    cx.check(e.is(libc::ENOSPC), format!("CTX_CONFIG with every context in use fails with ENOSPC: {e}"));
    let m = Mapping::anon(PAGE)?;
    m.fill(0, PAGE, 0x5c);
    let f = Context::open_default().step("open a fresh file")?;
    let ffd = f.device().as_raw_fd();
    cx.check_errno("USERPTR_CREATE with every context in use", f.userptr_raw(m.addr() as *const u8, PAGE, true).map(|_| ()), &[libc::ENOSPC]);
    check_raw(cx, "SUBMIT with every context in use", submit_raw(ffd, &[read_op(m.addr(), 8)], &[]), libc::ENOSPC);
    cx.check_errno("UNBIND on a file without a context", f.unbind(HAND_VA), &[ENOENT]);
    let st = f.stats();
    cx.check(st.is_ok(), format!("STATS on a file without a context works: {:?}", st.as_ref().err()));
    cx.check_ok("GET_PARAM works", f.device().get_param(Param::VaBits));
    drop(f);
    held.pop();
    cx.check_ok("after another file was closed, CTX_CONFIG on the refused file succeeds", full.config(true));
    let j = full.submit_readonly(&Job::new().hash(m.addr(), PAGE as u64));
    cx.check_eq("and it runs a job", j.ok().map(|j| j.result), Some(fnv1a64(&[0x5c; PAGE])));
    drop(held);
    Ok(())
}

/// RELEASE seen by a privileged reader (STATS: "notifier callbacks by enum mmu_notifier_event
/// ...; for a privileged reader counted over every context of the device, so that a context's
/// RELEASE (its process exiting) is visible to others"). A fork child opens its own context,
/// mirrors memory with a job and exits with the file still open (its mm is torn down before
/// its files are closed: the context's notifiers see RELEASE). The parent, root, reads STATS
/// on a file of its own that has no context: the device-wide RELEASE count went up, and the
/// STATS call created no context (the parent's file still has none: UNBIND gives ENOENT).
pub fn release_visible(cx: &mut Cx) -> CaseResult {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return cx.skip("needs root (CAP_SYS_ADMIN) for the device-wide STATS");
    }
    let reader = Context::open_default().step("open the reader's file")?;
    let before = reader.stats().step("STATS before")?.event(vgpu::MmuEvent::Release);
    let mode = cx.mode;
    let child = fork_child(|_| {
        let g = crate::coherence::Gpu::open(mode, None).map_err(|e| format!("child: open: {e}"))?;
        let m = Mapping::anon(4 * PAGE).map_err(|e| format!("child: mmap: {e}"))?;
        let r = g.map(&m).map_err(|e| format!("child: region: {e}"))?;
        g.write_pattern(&r, 0, 4 * PAGE, 3).map_err(|e| format!("child: job: {e}"))?;
        if Expect::pattern(4 * PAGE, 3).mismatch(&m).is_some() {
            return Err("child: the CPU does not see its device's write".into());
        }
        // Exit with the file (and the mapping) still there: no destructor runs.
        std::mem::forget(r);
        std::mem::forget(g);
        std::mem::forget(m);
        Ok(())
    })?;
    cx.check_ok("the child mirrored memory and exited", child.join());
    let after = reader.stats().step("STATS after")?.event(vgpu::MmuEvent::Release);
    cx.check(after > before, format!("the device-wide RELEASE count went up ({before} -> {after})"));
    cx.check_errno("the reader's STATS created no context (UNBIND: ENOENT)", reader.unbind(HAND_VA), &[ENOENT]);
    Ok(())
}

/// Which pages of `m` are resident (`mincore(2)`).
fn resident_pages(m: &Mapping) -> Vec<bool> {
    let mut v = vec![0u8; m.pages()];
    // SAFETY: `m` is a live mapping of `m.len()` bytes; `v` has one byte per page.
    let r = unsafe { libc::mincore(m.addr() as *mut libc::c_void, m.len(), v.as_mut_ptr()) };
    if r != 0 {
        return Vec::new();
    }
    v.iter().map(|b| b & 1 != 0).collect()
}

/// SUBMIT's `VGPU_SVM_SUBMIT_PREFAULT` ("before the job starts, the driver mirrors what its
/// ops will touch, as the device's own faults would (writable for a destination), in op
/// order, at most VGPU_SVM_PREFAULT_MAX bytes per job"; "a job on memory it has not touched
/// yet then takes no device fault"; "best effort: what cannot be mirrored is left to the
/// device's faults, which fail the job as without the flag"; "ignored without SVM"; unknown
/// flags are -EINVAL). SVM: a job writing 3 untouched pages and reading a fourth takes no
/// device fault, its data is right, and exactly those 4 pages became resident (no neighbour
/// faulted in); a write to read-only memory still fails with EPERM; a job larger than
/// VGPU_SVM_PREFAULT_MAX takes device faults for the rest and is complete. Without the flag,
/// a device fault faults in the pages the faulting op touches next within its window: a job
/// writing 64 untouched pages takes one fault, and the pages after the op stay untouched.
pub fn submit_prefault(cx: &mut Cx) -> CaseResult {
    let g = cx.gpu()?;
    let m = Mapping::anon(8 * PAGE)?;
    m.madvise(0, 8 * PAGE, libc::MADV_NOHUGEPAGE).step("MADV_NOHUGEPAGE")?;
    let r = g.map(&m)?;
    let job = Job::new().write_pattern(r.va(PAGE), 3 * PAGE as u64, 7).read(r.va(5 * PAGE), PAGE as u64).prefault();
    let res = g.submit(&[&r], job);
    if let Some(j) = cx.check_ok("a PREFAULT job writing 3 pages and reading 1", res) {
        if g.mode() == Mode::Svm {
            cx.check_eq("it takes no device fault (on untouched memory)", j.faults, 0);
        }
    }
    if g.mode() == Mode::Svm {
        // (Before the CPU reads the memory below, which maps every page.)
        let res = resident_pages(&m);
        let expect: Vec<bool> = (0..8).map(|i| (1..=3).contains(&i) || i == 5).collect();
        cx.check_eq("only the pages the ops touch became resident (mincore)", res, expect);
    }
    let mut want = Expect::zeros(8 * PAGE);
    want.set_pattern(PAGE, 3 * PAGE, 7);
    cx.check(want.mismatch(&m).is_none(), format!("the memory holds the job's writes ({:?})", want.mismatch(&m)));
    if g.mode() == Mode::Svm {
        let before = g.ctx().stats().map(|s| s.faults_serviced).unwrap_or(0);
        // Read-only memory: the prefault leaves the write to the device, which fails it.
        let ro = Mapping::anon(PAGE)?;
        ro.mprotect(0, PAGE, libc::PROT_READ).step("mprotect PROT_READ")?;
        let rr = g.map(&ro)?;
        let res = g.submit(&[&rr], Job::new().fill(rr.va(0), 8, 1).prefault());
        cx.check_errno("a PREFAULT write to read-only memory", res, &[EPERM]);
        // Beyond the limit: the rest faults on the device, and the job is complete.
        let big = 2 * vgpu::PREFAULT_MAX as usize;
        let b = Mapping::anon(big)?;
        b.madvise(0, big, libc::MADV_NOHUGEPAGE).step("MADV_NOHUGEPAGE")?;
        let rb = g.map(&b)?;
        let res = g.submit(&[&rb], Job::new().write_pattern(rb.va(0), big as u64, 9).prefault());
        if let Some(j) = cx.check_ok("a PREFAULT job of twice VGPU_SVM_PREFAULT_MAX", res) {
            cx.check(j.faults > 0, format!("it takes device faults beyond the limit ({})", j.faults));
        }
        cx.check(Expect::pattern(big, 9).mismatch(&b).is_none(), "the large job's writes are all there");
        let after = g.ctx().stats().map(|s| s.faults_serviced).unwrap_or(0);
        cx.note(format!("faults serviced by the driver meanwhile: {}", after - before));
        // Without PREFAULT, a device fault faults in what the faulting op touches next
        // (within the fault window), and nothing beyond the op.
        let w = Mapping::anon(80 * PAGE)?;
        w.madvise(0, 80 * PAGE, libc::MADV_NOHUGEPAGE).step("MADV_NOHUGEPAGE")?;
        let rw = g.map(&w)?;
        let res = g.submit(&[&rw], Job::new().write_pattern(rw.va(0), 64 * PAGE as u64, 3));
        if let Some(j) = cx.check_ok("a job writing 64 untouched pages (no PREFAULT)", res) {
            // One fault per 64-page window; a few more if something invalidated meanwhile.
            cx.check((1..=4).contains(&j.faults), format!("it takes 1 device fault, not one per page ({})", j.faults));
        }
        let expect: Vec<bool> = (0..80).map(|i| i < 64).collect();
        cx.check_eq("the 64 pages the op writes became resident, the 16 after it did not", resident_pages(&w), expect);
        // Unknown flags.
        let op = uapi::drm_vgpu_svm_op { kind: uapi::VGPU_SVM_OP_KIND_READ, src: r.va(0), len: 8, ..Default::default() };
        let mut req = uapi::drm_vgpu_svm_submit {
            ops: &op as *const _ as u64,
            nr_ops: 1,
            flags: uapi::VGPU_SVM_SUBMIT_PREFAULT << 1,
            ..Default::default()
        };
        let e = raw_ioctl(g.ctx().device().as_raw_fd(), uapi::DRM_IOCTL_VGPU_SVM_SUBMIT, &mut req);
        cx.check_eq("SUBMIT with an unknown flag", e, Err(EINVAL));
    }
    Ok(())
}

/// How a long job A of [`one_file_jobs`] went, and what another thread saw while it ran.
struct Race<T> {
    /// A's result and how long its SUBMIT took.
    a: (vgpu::Result<vgpu::JobResult>, std::time::Duration),
    /// What the other thread did once A was on the device, how long it took, whether A's
    /// SUBMIT had returned when it did, and whether A's last op (a FILL of `flag`'s second
    /// byte with [`A_ENDED`]) had landed by then (the device ran all of A).
    other: (T, std::time::Duration, bool, bool),
}

/// Runs `a` on a thread of its own and, once its first op (a FILL of `flag`'s first byte with
/// [`A_STARTED`]) has landed, i.e. once A runs on the device, `other` on this thread; records
/// whether A's SUBMIT had returned when `other` did (an order seen through an atomic, not a
/// timing threshold), and whether A's last op had landed (seen through memory: A's thread
/// records its return only after the ioctl, so an ioctl that rightly waited for A's job can
/// return just before that). `Err` if A's first FILL never showed within 60 s.
fn race<T>(
    flag: &Mapping,
    a: impl FnOnce() -> vgpu::Result<vgpu::JobResult> + Send,
    other: impl FnOnce() -> T,
) -> Result<Race<T>, Stop> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};
    flag.write_u64(0, 0);
    let a_done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let ha = s.spawn(|| {
            let t = Instant::now();
            let r = a();
            a_done.store(true, Ordering::SeqCst);
            (r, t.elapsed())
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        while flag.read_u64(0) & 0xff != A_STARTED as u64 && !a_done.load(Ordering::SeqCst) {
            if Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        let started = flag.read_u64(0) & 0xff == A_STARTED as u64;
        let other = if started && !a_done.load(Ordering::SeqCst) {
            let t = Instant::now();
            let v = other();
            let done_then = a_done.load(Ordering::SeqCst);
            let ended_then = flag.read_u64(0) >> 8 & 0xff == A_ENDED as u64;
            Some((v, t.elapsed(), done_then, ended_then))
        } else {
            None
        };
        let a = ha.join().map_err(|_| Stop::from("job A's thread panicked"))?;
        match other {
            Some(other) => Ok(Race { a, other }),
            None if started => Err(Stop::from(format!(
                "job A ({:?}) returned before the other thread saw it running: make it longer",
                a.1
            ))),
            None => Err(Stop::from(format!("job A's first op never showed within 60 s: {:?}", a.0))),
        }
    })
}

/// The byte A's first op writes (see [`race`]).
const A_STARTED: u8 = 0xa5;
/// The byte A's last op writes, after A_STARTED (see [`race`]).
const A_ENDED: u8 = 0x5a;

/// Jobs of one file do not wait for each other, and the bindings do not change under a
/// running job (SUBMIT: "jobs of one file run concurrently: ..."; BIND/UNBIND/BIND_ARRAY:
/// "wait until the file's running jobs have ended ... -ETIMEDOUT ... -EINTR"). On one file
/// (one `Context`), a long job A (a FILL of a flag, then HASHes over 32 MiB, tens of times the
/// device time of a short job) runs on a thread; once the flag shows A is on the device:
/// - a short job B on other memory, USERPTR_CREATE and STATS on this thread all return while
///   A is still running (before, SUBMIT held the file's state lock for the whole job: B
///   returned after A);
/// - BIND of a new object at a free GPU VA returns only after A's job ended (its last op, a
///   FILL of the flag's second byte, landed), or with the documented ETIMEDOUT, and the
///   binding works;
/// - UNBIND of that binding, while another A names the object and HASHes it (its last
///   HASH), returns only after A's job ended, and that HASH saw the object's bytes.
/// Every A's result is the hash the CPU computes. The device's verdict judges all of it.
pub fn one_file_jobs(cx: &mut Cx) -> CaseResult {
    use std::time::{Duration, Instant};
    let g = cx.gpu()?;
    let c = g.ctx();
    let big_len = 32 << 20;
    let big = Mapping::anon(big_len)?;
    big.write_pattern(0, big_len, 7);
    let flag = Mapping::anon(PAGE)?;
    let small = Mapping::anon(PAGE)?;
    small.write_pattern(0, PAGE, 3);
    let obj = Mapping::anon(PAGE)?;
    obj.write_pattern(0, PAGE, 5);
    let rb = g.map(&big)?;
    let rf = g.map(&flag)?;
    let rs = g.map(&small)?;
    let big_hash = Expect::pattern(big_len, 7).hash(0, big_len);
    let small_hash = Expect::pattern(PAGE, 3).hash(0, PAGE);
    // Mirror everything once (SVM: A's time is then device time, not fault servicing), and
    // measure one pass over the buffer and a short job alone.
    g.fill(&rf, 0, 8, 0).step("FILL of the flag")?;
    let t = Instant::now();
    let h = g.hash(&rb, 0, big_len).step("HASH of the buffer")?;
    let pass = t.elapsed();
    cx.check_eq("the device's hash of the buffer", h, big_hash);
    let t = Instant::now();
    cx.check_eq("job B alone: the hash of the small buffer", g.hash(&rs, 0, PAGE).ok(), Some(small_hash));
    let b_alone = t.elapsed();
    // A: at least 40 times B alone and at least 1.5 s of device time, at most 61 passes (A
    // has a FILL before them, a FILL after them and, in the UNBIND round, a HASH between:
    // 64 ops at most).
    let want = (b_alone * 40).max(Duration::from_millis(1500));
    let passes = (want.as_nanos() / pass.as_nanos().max(1) + 1).clamp(2, 61) as usize;
    cx.note(format!("one HASH pass over 32 MiB: {pass:?}; job B alone: {b_alone:?}; A does {passes} passes"));
    let job_a = |last: Option<(u64, &vgpu::UserptrBo<'_>)>| {
        let mut j = Job::new().fill(rf.va(0), 1, A_STARTED);
        for _ in 0..passes {
            j = j.hash(rb.va(0), big_len as u64);
        }
        if let Some((va, bo)) = last {
            j = j.hash(va, PAGE as u64).uses(bo);
        }
        // (SUBMIT's result stays the last HASH's.)
        g.submit(&[&rb, &rf], j.fill(rf.va(1), 1, A_ENDED))
    };

    // Round 1: B, USERPTR_CREATE and STATS while A runs.
    let r = race(&flag, || job_a(None), || {
        let t = Instant::now();
        let b = g.submit(&[&rs], Job::new().hash(rs.va(0), PAGE as u64));
        let b_time = t.elapsed();
        let bo = c.userptr_raw(obj.addr() as *const u8, PAGE, false);
        let stats = c.stats();
        (b, b_time, bo, stats)
    })?;
    let ((b, b_time, bo, stats), _, a_returned, a_ended) = r.other;
    let a_time = r.a.1;
    cx.check_eq("job A's result (the buffer's hash)", r.a.0.ok().map(|j| j.result), Some(big_hash));
    cx.check_eq("job B's result", b.ok().map(|j| j.result), Some(small_hash));
    cx.note(format!("job A took {a_time:?}; job B, submitted while A ran, {b_time:?} ({:.0}x shorter)",
        a_time.as_secs_f64() / b_time.as_secs_f64().max(1e-6)));
    cx.check(
        !a_returned && !a_ended,
        "job B, USERPTR_CREATE and STATS on the same file returned while job A still ran (its SUBMIT had not returned, its last op not run)",
    );
    cx.check_ok("STATS while job A ran", stats);
    let bo = bo.step("USERPTR_CREATE while job A ran")?;

    // Round 2: BIND while A runs waits for A.
    let va = HAND_VA + 64 * HPAGE as u64;
    let r = race(&flag, || job_a(None), || c.bind_handle(bo.handle(), va))?;
    let (bound, bind_time, _, a_ended) = r.other;
    cx.check_eq("job A's result (round 2)", r.a.0.ok().map(|j| j.result), Some(big_hash));
    match bound {
        Ok(()) => {
            cx.check(a_ended, format!("BIND while job A ran returned only after A's last op ran ({bind_time:?}; A {:?})", r.a.1));
        }
        Err(e) if e.is(libc::ETIMEDOUT) => {
            cx.note(format!("BIND while job A ran: ETIMEDOUT after {bind_time:?}"));
            cx.check_ok("BIND after job A", c.bind_handle(bo.handle(), va)).ok_or("BIND after job A")?;
        }
        Err(e) => {
            cx.check(false, format!("BIND while job A ran: {e}"));
            return Ok(());
        }
    }
    // SAFETY: the job only reads.
    let h = unsafe { c.submit(&Job::new().hash(va, PAGE as u64).uses(&bo)) };
    cx.check_eq("a job through the new binding sees the object's bytes", h.ok().map(|j| j.result), Some(Expect::pattern(PAGE, 5).hash(0, PAGE)));

    // Round 3: UNBIND of a binding that A names (and HASHes last) waits for A.
    let r = race(&flag, || job_a(Some((va, &bo))), || c.unbind(va))?;
    let (unbound, unbind_time, _, a_ended) = r.other;
    cx.check_eq(
        "job A naming the object: its last HASH, over the binding, saw the object's bytes",
        r.a.0.ok().map(|j| j.result),
        Some(Expect::pattern(PAGE, 5).hash(0, PAGE)),
    );
    match unbound {
        Ok(()) => {
            cx.check(a_ended, format!("UNBIND while job A ran returned only after A's last op ran ({unbind_time:?}; A {:?})", r.a.1));
        }
        Err(e) if e.is(libc::ETIMEDOUT) => {
            cx.note(format!("UNBIND while job A ran: ETIMEDOUT after {unbind_time:?}"));
            cx.check_ok("UNBIND after job A", c.unbind(va));
        }
        Err(e) => {
            cx.check(false, format!("UNBIND while job A ran: {e}"));
        }
    }
    // SAFETY: the job only reads.
    let after = unsafe { c.submit(&Job::new().read(va, 8)) };
    cx.check_errno("a job at the unbound GPU VA", after, &[EFAULT]);
    Ok(())
}
