//! The C ABI (`include/vgpu.h`): thin `extern "C"` wrappers over
//! [`Context`](crate::Context). Every function that can fail returns 0 or a
//! negative errno (`-EFAULT`, ...), exactly the kernel's.
//!
//! The library is built as `libvgpu.a` / `libvgpu.so` (crate types
//! `staticlib` and `cdylib`); `examples/c/copy.c` is a complete program.

use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_void, CStr, CString};

use vgpu_uapi::drm_vgpu_svm_op;

use crate::context::Context;
use crate::job::{Job, Op};
use crate::stats::{MmuEvent, EVENT_SLOTS};
use crate::{reference, Result};

/// `struct vgpu_ctx`: opaque to C.
pub struct VgpuCtx {
    ctx: Context,
}

/// `struct vgpu_op` (identical in layout to `struct drm_vgpu_svm_op`).
pub type VgpuOp = drm_vgpu_svm_op;

/// `struct vgpu_job_result`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct VgpuJobResult {
    /// The last HASH / ATOMIC_ADD result.
    pub result: u64,
    /// Device faults serviced.
    pub faults: u64,
}

/// `struct vgpu_stats` (identical in layout to `struct drm_vgpu_svm_stats`).
pub type VgpuStats = vgpu_uapi::drm_vgpu_svm_stats;

fn errno_of(r: Result<()>) -> c_int {
    match r {
        Ok(()) => 0,
        Err(e) => -e.errno().saturating_abs(),
    }
}

fn einval() -> c_int {
    -libc::EINVAL
}

/// # Safety
/// `ctx` is null or a live pointer from `vgpu_open*`.
unsafe fn ctx_ref<'a>(ctx: *mut VgpuCtx) -> Option<&'a Context> {
    // SAFETY: forwarded to the caller.
    unsafe { ctx.as_ref() }.map(|c| &c.ctx)
}

/// # Safety
/// `handles` is null or points to `nr` readable u32.
unsafe fn job_with_handles(mut job: Job, handles: *const u32, nr: u32) -> Option<Job> {
    if nr == 0 {
        return Some(job);
    }
    if handles.is_null() {
        return None;
    }
    // SAFETY: forwarded to the caller.
    for &h in unsafe { std::slice::from_raw_parts(handles, nr as usize) } {
        job = job.uses_handle(h);
    }
    Some(job)
}

/// # Safety
/// `ctx` as for [`ctx_ref`]; `handles` as for [`job_with_handles`]; `job`
/// writes only memory the C caller allows the device to write.
unsafe fn run(
    ctx: *mut VgpuCtx,
    job: Job,
    handles: *const u32,
    nr_handles: u32,
    out: Option<&mut VgpuJobResult>,
) -> c_int {
    // SAFETY: forwarded to the caller.
    let (Some(ctx), Some(job)) = (unsafe { ctx_ref(ctx) }, unsafe {
        job_with_handles(job, handles, nr_handles)
    }) else {
        return einval();
    };
    // SAFETY: C has no borrows; what the job writes is the caller's business.
    match unsafe { ctx.submit(&job) } {
        Ok(r) => {
            if let Some(out) = out {
                *out = VgpuJobResult {
                    result: r.result,
                    faults: r.faults,
                };
            }
            0
        }
        Err(e) => -e.errno().saturating_abs(),
    }
}

/// [`run`], then the job's result value to `*value` when it succeeded (`value` may be null).
///
/// # Safety
/// As for [`run`]; `value` null or valid.
unsafe fn run_with_value(
    ctx: *mut VgpuCtx,
    job: Job,
    handles: *const u32,
    nr_handles: u32,
    value: *mut u64,
) -> c_int {
    let mut r = VgpuJobResult::default();
    // SAFETY: forwarded to the caller.
    let ret = unsafe { run(ctx, job, handles, nr_handles, Some(&mut r)) };
    // SAFETY: null or valid, as promised.
    if let (0, Some(out)) = (ret, unsafe { value.as_mut() }) {
        *out = r.result;
    }
    ret
}

/// Opens the first vgpu_svm render node; a new GPU context.
///
/// # Safety
/// `out` must be a valid pointer to a `vgpu_ctx *`.
#[no_mangle]
pub unsafe extern "C" fn vgpu_open(out: *mut *mut VgpuCtx) -> c_int {
    if out.is_null() {
        return einval();
    }
    match Context::open_default() {
        Ok(ctx) => {
            // SAFETY: checked non-null; the caller promises it is valid.
            unsafe { *out = Box::into_raw(Box::new(VgpuCtx { ctx })) };
            0
        }
        Err(e) => -e.errno().saturating_abs(),
    }
}

/// Opens the render node at `path`; a new GPU context.
///
/// # Safety
/// `path` must be a NUL-terminated string; `out` a valid `vgpu_ctx **`.
#[no_mangle]
pub unsafe extern "C" fn vgpu_open_path(path: *const c_char, out: *mut *mut VgpuCtx) -> c_int {
    if path.is_null() || out.is_null() {
        return einval();
    }
    // SAFETY: the caller promises a NUL-terminated string.
    let path = unsafe { CStr::from_ptr(path) };
    let Ok(path) = path.to_str() else {
        return einval();
    };
    match Context::open(path) {
        Ok(ctx) => {
            // SAFETY: checked non-null; the caller promises it is valid.
            unsafe { *out = Box::into_raw(Box::new(VgpuCtx { ctx })) };
            0
        }
        Err(e) => -e.errno().saturating_abs(),
    }
}

/// Closes the context (its file, and with it every object and binding).
///
/// # Safety
/// `ctx` is null or a pointer from `vgpu_open*` not closed yet.
#[no_mangle]
pub unsafe extern "C" fn vgpu_close(ctx: *mut VgpuCtx) {
    if !ctx.is_null() {
        // SAFETY: the caller promises it came from Box::into_raw above.
        drop(unsafe { Box::from_raw(ctx) });
    }
}

/// CTX_CONFIG: `svm` non-zero for shared virtual memory.
///
/// # Safety
/// `ctx` from `vgpu_open*`.
#[no_mangle]
pub unsafe extern "C" fn vgpu_config(ctx: *mut VgpuCtx, svm: c_int) -> c_int {
    // SAFETY: forwarded to the caller.
    match unsafe { ctx_ref(ctx) } {
        Some(c) => errno_of(c.config(svm != 0)),
        None => einval(),
    }
}

/// USERPTR_CREATE over `size` bytes at `ptr` (page aligned); the handle goes
/// to `*handle`.
///
/// # Safety
/// `ctx` from `vgpu_open*`; `handle` a valid `uint32_t *`.
#[no_mangle]
pub unsafe extern "C" fn vgpu_userptr_create(
    ctx: *mut VgpuCtx,
    ptr: *mut c_void,
    size: u64,
    readonly: c_int,
    handle: *mut u32,
) -> c_int {
    // SAFETY: forwarded to the caller.
    let Some(c) = (unsafe { ctx_ref(ctx) }) else {
        return einval();
    };
    if handle.is_null() {
        return einval();
    }
    match c.userptr_create_handle(ptr as u64, size, readonly != 0) {
        Ok(h) => {
            // SAFETY: checked non-null; the caller promises it is valid.
            unsafe { *handle = h };
            0
        }
        Err(e) => -e.errno().saturating_abs(),
    }
}

/// GEM_CLOSE of a userptr object's handle.
///
/// # Safety
/// `ctx` from `vgpu_open*`.
#[no_mangle]
pub unsafe extern "C" fn vgpu_userptr_close(ctx: *mut VgpuCtx, handle: u32) -> c_int {
    // SAFETY: forwarded to the caller.
    match unsafe { ctx_ref(ctx) } {
        Some(c) => errno_of(c.gem_close(handle)),
        None => einval(),
    }
}

/// BIND `handle` at `gpu_va`.
///
/// # Safety
/// `ctx` from `vgpu_open*`.
#[no_mangle]
pub unsafe extern "C" fn vgpu_bind(ctx: *mut VgpuCtx, handle: u32, gpu_va: u64) -> c_int {
    // SAFETY: forwarded to the caller.
    match unsafe { ctx_ref(ctx) } {
        Some(c) => errno_of(c.bind_handle(handle, gpu_va)),
        None => einval(),
    }
}

/// UNBIND the binding at `gpu_va`.
///
/// # Safety
/// `ctx` from `vgpu_open*`.
#[no_mangle]
pub unsafe extern "C" fn vgpu_unbind(ctx: *mut VgpuCtx, gpu_va: u64) -> c_int {
    // SAFETY: forwarded to the caller.
    match unsafe { ctx_ref(ctx) } {
        Some(c) => errno_of(c.unbind(gpu_va)),
        None => einval(),
    }
}

/// BIND_ARRAY (or, with `unbind`, its unbind) of `count` entries.
///
/// # Safety
/// `ctx` from `vgpu_open*`; `gpu_vas` (and `handles` unless `unbind` and it is
/// NULL) point to `count` readable values; `failed` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn vgpu_bind_array(
    ctx: *mut VgpuCtx,
    handles: *const u32,
    gpu_vas: *const u64,
    count: u32,
    unbind: c_int,
    failed: *mut u32,
) -> c_int {
    // SAFETY: forwarded to the caller.
    let Some(c) = (unsafe { ctx_ref(ctx) }) else {
        return einval();
    };
    let n = count as usize;
    if gpu_vas.is_null() || (handles.is_null() && unbind == 0) || n == 0 || n > crate::BIND_ARRAY_MAX {
        return einval();
    }
    // SAFETY: the caller guarantees `count` readable values behind each non-NULL pointer.
    let vas = unsafe { std::slice::from_raw_parts(gpu_vas, n) };
    let hs = if handles.is_null() {
        None
    } else {
        // SAFETY: as above.
        Some(unsafe { std::slice::from_raw_parts(handles, n) })
    };
    let entries: Vec<(u32, u64)> = vas.iter().enumerate().map(|(i, &va)| (hs.map_or(0, |h| h[i]), va)).collect();
    let r = c.bind_array(&entries, unbind != 0);
    if !failed.is_null() {
        let at = match &r {
            Err(e) => e.entry.map_or(u32::MAX, |i| i as u32),
            Ok(()) => u32::MAX,
        };
        // SAFETY: the caller guarantees `failed` is writable when not NULL.
        unsafe { *failed = at };
    }
    errno_of(r.map_err(|e| e.error))
}

fn op_from_raw(o: &VgpuOp) -> Option<Op> {
    use vgpu_uapi as u;
    if o.flags != 0 {
        return None;
    }
    Some(match o.kind {
        u::VGPU_SVM_OP_KIND_COPY => Op::Copy {
            dst: o.dst,
            src: o.src,
            len: o.len,
        },
        u::VGPU_SVM_OP_KIND_FILL => Op::Fill {
            dst: o.dst,
            len: o.len,
            value: o.value as u8,
        },
        u::VGPU_SVM_OP_KIND_HASH => Op::Hash {
            src: o.src,
            len: o.len,
        },
        u::VGPU_SVM_OP_KIND_ATOMIC_ADD => Op::AtomicAdd {
            dst: o.dst,
            value: o.value,
        },
        u::VGPU_SVM_OP_KIND_WRITE_PATTERN => Op::WritePattern {
            dst: o.dst,
            len: o.len,
            seed: o.value,
        },
        u::VGPU_SVM_OP_KIND_READ => Op::Read {
            src: o.src,
            len: o.len,
        },
        _ => return None,
    })
}

/// SUBMIT of `nr_ops` ops using `nr_handles` userptr objects; `result` (may
/// be NULL) receives the job's result and fault count.
///
/// # Safety
/// `ctx` from `vgpu_open*`; `ops` points to `nr_ops` ops, `handles` to
/// `nr_handles` handles (or is NULL with 0); the job may write only memory
/// the program lets the device write.
#[no_mangle]
pub unsafe extern "C" fn vgpu_submit(
    ctx: *mut VgpuCtx,
    ops: *const VgpuOp,
    nr_ops: u32,
    handles: *const u32,
    nr_handles: u32,
    result: *mut VgpuJobResult,
) -> c_int {
    if ops.is_null() && nr_ops != 0 {
        return einval();
    }
    let raw = if nr_ops == 0 {
        &[][..]
    } else {
        // SAFETY: the caller promises nr_ops readable ops.
        unsafe { std::slice::from_raw_parts(ops, nr_ops as usize) }
    };
    let mut job = Job::new();
    for o in raw {
        match op_from_raw(o) {
            Some(op) => job = job.op(op),
            None => return einval(),
        }
    }
    // SAFETY: forwarded to the caller; result is null or valid.
    unsafe { run(ctx, job, handles, nr_handles, result.as_mut()) }
}

/// SUBMIT of one COPY.
///
/// # Safety
/// As for [`vgpu_submit`].
#[no_mangle]
pub unsafe extern "C" fn vgpu_submit_copy(
    ctx: *mut VgpuCtx,
    dst: u64,
    src: u64,
    len: u64,
    handles: *const u32,
    nr_handles: u32,
) -> c_int {
    // SAFETY: forwarded to the caller.
    unsafe {
        run(
            ctx,
            Job::new().copy(dst, src, len),
            handles,
            nr_handles,
            None,
        )
    }
}

/// SUBMIT of one FILL.
///
/// # Safety
/// As for [`vgpu_submit`].
#[no_mangle]
pub unsafe extern "C" fn vgpu_submit_fill(
    ctx: *mut VgpuCtx,
    dst: u64,
    len: u64,
    value: u8,
    handles: *const u32,
    nr_handles: u32,
) -> c_int {
    // SAFETY: forwarded to the caller.
    unsafe {
        run(
            ctx,
            Job::new().fill(dst, len, value),
            handles,
            nr_handles,
            None,
        )
    }
}

/// SUBMIT of one WRITE_PATTERN.
///
/// # Safety
/// As for [`vgpu_submit`].
#[no_mangle]
pub unsafe extern "C" fn vgpu_submit_write_pattern(
    ctx: *mut VgpuCtx,
    dst: u64,
    len: u64,
    seed: u64,
    handles: *const u32,
    nr_handles: u32,
) -> c_int {
    // SAFETY: forwarded to the caller.
    unsafe {
        run(
            ctx,
            Job::new().write_pattern(dst, len, seed),
            handles,
            nr_handles,
            None,
        )
    }
}

/// SUBMIT of one HASH; the hash goes to `*hash` (may be NULL).
///
/// # Safety
/// As for [`vgpu_submit`]; `hash` null or valid.
#[no_mangle]
pub unsafe extern "C" fn vgpu_submit_hash(
    ctx: *mut VgpuCtx,
    src: u64,
    len: u64,
    handles: *const u32,
    nr_handles: u32,
    hash: *mut u64,
) -> c_int {
    // SAFETY: forwarded to the caller.
    unsafe { run_with_value(ctx, Job::new().hash(src, len), handles, nr_handles, hash) }
}

/// SUBMIT of one ATOMIC_ADD; the old value goes to `*old` (may be NULL).
///
/// # Safety
/// As for [`vgpu_submit`]; `old` null or valid.
#[no_mangle]
pub unsafe extern "C" fn vgpu_submit_atomic_add(
    ctx: *mut VgpuCtx,
    dst: u64,
    value: u64,
    handles: *const u32,
    nr_handles: u32,
    old: *mut u64,
) -> c_int {
    // SAFETY: forwarded to the caller.
    unsafe { run_with_value(ctx, Job::new().atomic_add(dst, value), handles, nr_handles, old) }
}

/// SUBMIT of one READ (touch).
///
/// # Safety
/// As for [`vgpu_submit`].
#[no_mangle]
pub unsafe extern "C" fn vgpu_submit_read(
    ctx: *mut VgpuCtx,
    src: u64,
    len: u64,
    handles: *const u32,
    nr_handles: u32,
) -> c_int {
    // SAFETY: forwarded to the caller.
    unsafe { run(ctx, Job::new().read(src, len), handles, nr_handles, None) }
}

/// STATS into `*out`.
///
/// # Safety
/// `ctx` from `vgpu_open*`; `out` a valid `struct vgpu_stats *`.
#[no_mangle]
pub unsafe extern "C" fn vgpu_stats(ctx: *mut VgpuCtx, out: *mut VgpuStats) -> c_int {
    // SAFETY: forwarded to the caller.
    let Some(c) = (unsafe { ctx_ref(ctx) }) else {
        return einval();
    };
    if out.is_null() {
        return einval();
    }
    match c.stats() {
        Ok(s) => {
            // SAFETY: checked non-null; the caller promises it is valid.
            unsafe { *out = VgpuStats::from(&s) };
            0
        }
        Err(e) => -e.errno().saturating_abs(),
    }
}

thread_local! {
    static STRERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// The message for an errno, given positive or negative (`vgpu_strerror(-14)`
/// is "Bad address (os error 14)"). The string stays valid until the calling
/// thread's next `vgpu_strerror` call.
#[no_mangle]
pub extern "C" fn vgpu_strerror(err: c_int) -> *const c_char {
    let text = if err == 0 {
        "Success".to_owned()
    } else {
        std::io::Error::from_raw_os_error(err.saturating_abs()).to_string()
    };
    let c = CString::new(text).unwrap_or_default();
    STRERROR.with(|s| {
        *s.borrow_mut() = c;
        s.borrow().as_ptr()
    })
}

/// FNV-1a 64 of `len` bytes at `data` (what a HASH op returns).
///
/// # Safety
/// `data` points to `len` readable bytes (or `len` is 0).
#[no_mangle]
pub unsafe extern "C" fn vgpu_fnv1a64(data: *const c_void, len: usize) -> u64 {
    if len == 0 || data.is_null() {
        return reference::fnv1a64(&[]);
    }
    // SAFETY: the caller promises len readable bytes.
    reference::fnv1a64(unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len) })
}

/// Byte `i` of the WRITE_PATTERN pattern with seed `seed`.
#[no_mangle]
pub extern "C" fn vgpu_pattern_byte(seed: u64, i: u64) -> u8 {
    reference::pattern_byte(seed, i)
}

/// Fills `len` bytes at `buf` with the pattern of seed `seed`.
///
/// # Safety
/// `buf` points to `len` writable bytes (or `len` is 0).
#[no_mangle]
pub unsafe extern "C" fn vgpu_fill_pattern(buf: *mut c_void, len: usize, seed: u64) {
    if len == 0 || buf.is_null() {
        return;
    }
    // SAFETY: the caller promises len writable bytes.
    reference::fill_pattern(
        unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), len) },
        seed,
    )
}

/// The name of `enum mmu_notifier_event` value `event` ("unmap", ...), or
/// NULL if unknown.
#[no_mangle]
pub extern "C" fn vgpu_event_name(event: c_int) -> *const c_char {
    const NAMES: [&CStr; 8] = [
        c"unmap",
        c"clear",
        c"protection_vma",
        c"protection_page",
        c"soft_dirty",
        c"release",
        c"migrate",
        c"exclusive",
    ];
    debug_assert_eq!(NAMES.len(), MmuEvent::ALL.len());
    usize::try_from(event)
        .ok()
        .and_then(|i| NAMES.get(i))
        .map_or(std::ptr::null(), |n| n.as_ptr())
}

// Layout guarantees the header relies on.
const _: () = {
    assert!(std::mem::size_of::<VgpuOp>() == 40);
    assert!(std::mem::size_of::<VgpuJobResult>() == 16);
    assert!(std::mem::size_of::<VgpuStats>() == (16 + EVENT_SLOTS + 4) * 8);
};

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = include_str!("../include/vgpu.h");

    #[test]
    fn header_declares_every_exported_function() {
        let src = include_str!("capi.rs");
        let names: Vec<&str> = src
            .split("extern \"C\" fn ")
            .skip(1)
            .filter_map(|rest| rest.split('(').next())
            .collect();
        assert!(names.len() >= 20, "{names:?}");
        for n in names {
            let declared = HEADER.contains(&format!(" {n}(")) || HEADER.contains(&format!("*{n}("));
            assert!(declared, "vgpu.h lacks {n}");
        }
    }

    #[test]
    fn header_constants_match_the_abi() {
        use vgpu_uapi as u;
        for (name, v) in [
            ("VGPU_OP_COPY", u::VGPU_SVM_OP_KIND_COPY),
            ("VGPU_OP_FILL", u::VGPU_SVM_OP_KIND_FILL),
            ("VGPU_OP_HASH", u::VGPU_SVM_OP_KIND_HASH),
            ("VGPU_OP_ATOMIC_ADD", u::VGPU_SVM_OP_KIND_ATOMIC_ADD),
            ("VGPU_OP_WRITE_PATTERN", u::VGPU_SVM_OP_KIND_WRITE_PATTERN),
            ("VGPU_OP_READ", u::VGPU_SVM_OP_KIND_READ),
            ("VGPU_EVENT_UNMAP", 0),
            ("VGPU_EVENT_EXCLUSIVE", 7),
            ("VGPU_EVENT_SLOTS", EVENT_SLOTS as u32),
        ] {
            let line = HEADER
                .lines()
                .find(|l| {
                    l.split_whitespace().nth(1) == Some(name) || l.trim_start().starts_with(name)
                })
                .unwrap_or_else(|| panic!("{name} missing from vgpu.h"));
            assert!(line.contains(&format!(" {v}")), "{name}: {line}");
        }
        // Every stats field, in order.
        let body = &HEADER[HEADER.find("struct vgpu_stats {").unwrap()..];
        let body = &body[..body.find("};").unwrap()];
        let fields: Vec<&str> = body
            .lines()
            .filter_map(|l| l.trim().strip_prefix("uint64_t "))
            .map(|l| {
                l.trim_end_matches(';')
                    .split([';', '['])
                    .next()
                    .unwrap()
                    .trim()
            })
            .collect();
        let mut want: Vec<&str> = crate::Stats::default()
            .counters()
            .iter()
            .map(|(n, _)| *n)
            .collect();
        // The ABI order: events[] before the ctx_* fields added after it.
        let at = want.iter().position(|n| n.starts_with("ctx_")).unwrap_or(want.len());
        want.insert(at, "events");
        assert_eq!(fields, want);
    }

    #[test]
    fn strerror_and_reference_functions() {
        let s = unsafe { CStr::from_ptr(vgpu_strerror(-libc::EFAULT)) };
        assert_eq!(s.to_str().unwrap(), "Bad address (os error 14)");
        let s = unsafe { CStr::from_ptr(vgpu_strerror(libc::EPERM)) };
        assert_eq!(s.to_str().unwrap(), "Operation not permitted (os error 1)");
        let data = b"foobar";
        assert_eq!(
            unsafe { vgpu_fnv1a64(data.as_ptr().cast(), 6) },
            0x85944171f73967e8
        );
        let mut buf = [0u8; 64];
        unsafe { vgpu_fill_pattern(buf.as_mut_ptr().cast(), 64, 5) };
        assert_eq!(buf[..], reference::pattern(5, 64)[..]);
        assert_eq!(vgpu_pattern_byte(5, 3), buf[3]);
        let n = unsafe { CStr::from_ptr(vgpu_event_name(6)) };
        assert_eq!(n.to_str().unwrap(), MmuEvent::Migrate.name());
        assert!(vgpu_event_name(8).is_null());
        assert!(vgpu_event_name(-1).is_null());
    }

    #[test]
    fn bad_arguments_are_einval() {
        unsafe {
            assert_eq!(vgpu_config(std::ptr::null_mut(), 1), -libc::EINVAL);
            assert_eq!(vgpu_open(std::ptr::null_mut()), -libc::EINVAL);
            let bad = VgpuOp {
                kind: 99,
                ..Default::default()
            };
            let mut out = std::ptr::null_mut();
            assert_eq!(vgpu_open_path(c"/dev/null".as_ptr(), &mut out), 0);
            assert_eq!(
                vgpu_submit(out, &bad, 1, std::ptr::null(), 0, std::ptr::null_mut()),
                -libc::EINVAL
            );
            // A real ioctl on a non-DRM file: the kernel's ENOTTY comes back.
            assert_eq!(vgpu_config(out, 1), -libc::ENOTTY);
            assert_eq!(
                vgpu_submit_copy(out, 0, 0, 1, std::ptr::null(), 0),
                -libc::ENOTTY
            );
            vgpu_close(out);
        }
    }
}
