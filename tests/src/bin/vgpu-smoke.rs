//! `vgpu-smoke`: the first guest check of a vgpu-svm VM.
//!
//! Run in the guest as `/bin/vgpu-smoke`. Verifies that the `vgpu_svm` render
//! node exists and answers its ioctls with the values the device's capset
//! carries, and that bad arguments fail with the right errno. Prints TAP, a
//! final `# N passed, M failed` line, and exits 1 if any check failed.

use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::process::ExitCode;

use vgpu::uapi::{self, drm_vgpu_svm_get_param};
use vgpu::{Device, Param, ProtocolVersion};
use vgpu_tests::tap::Tap;

const RENDER_NODE: &str = "/dev/dri/renderD128";

/// A parameter number no driver version will define.
const UNKNOWN_PARAM: u32 = 9999;

/// A check on an open device: `Ok(note)` passes (a non-empty note is printed
/// as a diagnostic), `Err(diag)` fails.
type Check = fn(&Device) -> Result<String, String>;

const DEVICE_CHECKS: &[(&str, Check)] = &[
    (
        "DRM_IOCTL_VERSION reports driver name vgpu_svm",
        check_version,
    ),
    (
        "GET_PARAM(PROTOCOL_VERSION) == VGPU_SVM_PROTOCOL_VERSION",
        check_protocol_version,
    ),
    (
        "GET_PARAM(CAPSET_ID) == VGPU_SVM_CAPSET_ID",
        check_capset_id,
    ),
    ("GET_PARAM(MAX_CONTEXTS) > 0", check_max_contexts),
    ("GET_PARAM(VA_BITS) == 48", check_va_bits),
    ("GET_PARAM(FEATURES) is readable", check_features),
    (
        "GET_PARAM with an unknown param fails with EINVAL",
        check_unknown_param,
    ),
    (
        "GET_PARAM with nonzero pad fails with EINVAL",
        check_nonzero_pad,
    ),
    (
        "STATS with the pre-ctx_* struct size (256 bytes) works and writes no byte past it",
        check_stats_old_size,
    ),
    (
        "GET_PARAM with a bad user pointer fails with EFAULT",
        check_bad_pointer,
    ),
    (
        "fdinfo and debugfs describe the file's GPU context",
        check_fdinfo_debugfs,
    ),
    (
        "a fork child using the parent's fd gets EPERM",
        check_fork_child_eperm,
    ),
    (
        "bad ioctl arguments fail with EINVAL/EFAULT/ENOENT/EBUSY",
        check_bad_arguments,
    ),
    (
        "VM_IO/VM_PFNMAP memory ([vvar]) cannot be mirrored: EFAULT",
        check_pfnmap_efault,
    ),
    (
        "hostile op addresses and lengths (overflowing sums) fail with EINVAL, no oops",
        check_hostile_ops,
    ),
    (
        "memfd_secret memory is never mirrored (SVM and userptr): EFAULT, nothing leaks",
        check_secretmem_refused,
    ),
    (
        "a binding inside SVM-mirrored memory owns its GPU VA range (SVM entries, windows and 2 MiB leaves stop at it)",
        check_binding_owns_its_range,
    ),
    (
        "userptr objects are bounded (64 GiB: EINVAL above) and a 4 GiB one validates in bounded chunks",
        check_userptr_bounds,
    ),
    (
        "STATS: an unprivileged reader sees only its own context's counters; STATS creates no context",
        check_stats_privacy,
    ),
    (
        "the SVM fault window is invisible: guard pages, EOF, sparse files and private file pages are left alone",
        check_fault_window_invisible,
    ),
    (
        "an SVM fault is not failed by another thread unmapping memory next to it (the window shrinks, the fault is served)",
        check_window_neighbour_unmapped,
    ),
    (
        "negative control: a driver that mirrors memfd_secret memory is caught by the device (no-direct-map violations)",
        check_secretmem_caught_by_device,
    ),
];

/// One READ op of `len` bytes at `src`.
fn read_op(src: u64, len: u64) -> uapi::drm_vgpu_svm_op {
    uapi::drm_vgpu_svm_op { kind: uapi::VGPU_SVM_OP_KIND_READ, flags: 0, dst: 0, src, len, value: 0 }
}

/// SUBMIT of `ops` using `handles`; the errno on failure.
fn submit_raw(dev: &Device, ops: &mut [uapi::drm_vgpu_svm_op], handles: &mut [u32]) -> Result<(), i32> {
    let mut req = uapi::drm_vgpu_svm_submit {
        ops: ops.as_mut_ptr() as u64,
        nr_ops: ops.len() as u32,
        handles: handles.as_mut_ptr() as u64,
        nr_handles: handles.len() as u32,
        ..Default::default()
    };
    raw_ioctl(dev, uapi::DRM_IOCTL_VGPU_SVM_SUBMIT, &mut req)
}

fn expect(what: &str, got: Result<(), i32>, want: i32) -> Result<(), String> {
    match got {
        Err(e) if e == want => Ok(()),
        Err(e) => Err(format!("{what}: errno {e}, want {want}")),
        Ok(()) => Err(format!("{what}: succeeded, want errno {want}")),
    }
}

fn userptr_raw(dev: &Device, addr: u64, size: u64, flags: u32) -> Result<u32, i32> {
    let mut req = uapi::drm_vgpu_svm_userptr_create { userptr: addr, size, flags, handle: 0 };
    raw_ioctl(dev, uapi::DRM_IOCTL_VGPU_SVM_USERPTR_CREATE, &mut req).map(|()| req.handle)
}

fn bind_raw(dev: &Device, handle: u32, gpu_va: u64) -> Result<(), i32> {
    let mut req = uapi::drm_vgpu_svm_bind { handle, pad: 0, gpu_va };
    raw_ioctl(dev, uapi::DRM_IOCTL_VGPU_SVM_BIND, &mut req)
}

fn check_bad_arguments(_dev: &Device) -> Result<String, String> {
    // A fresh file: CTX_CONFIG must come before the first job.
    let dev = Device::open_default().map_err(|e| e.to_string())?;
    let dev = &dev;
    let mut cfg = uapi::drm_vgpu_svm_ctx_config { flags: 0x80, pad: 0 };
    expect("CTX_CONFIG with unknown flags", raw_ioctl(dev, uapi::DRM_IOCTL_VGPU_SVM_CTX_CONFIG, &mut cfg), libc::EINVAL)?;
    let mut cfg = uapi::drm_vgpu_svm_ctx_config { flags: uapi::VGPU_SVM_CTX_SVM, pad: 0 };
    raw_ioctl(dev, uapi::DRM_IOCTL_VGPU_SVM_CTX_CONFIG, &mut cfg).map_err(|e| format!("CTX_CONFIG(SVM): errno {e}"))?;

    let buf = vec![0u8; 3 * 4096];
    let page = ((buf.as_ptr() as u64) + 4095) & !4095;
    expect("USERPTR_CREATE with unknown flags", userptr_raw(dev, page, 4096, 0x80).map(|_| ()), libc::EINVAL)?;
    expect("USERPTR_CREATE unaligned", userptr_raw(dev, page + 1, 4096, 0).map(|_| ()), libc::EINVAL)?;
    expect("USERPTR_CREATE of size 0", userptr_raw(dev, page, 0, 0).map(|_| ()), libc::EINVAL)?;
    expect("BIND of a bad handle", bind_raw(dev, 0xdead, 1 << 40), libc::ENOENT)?;
    let h = userptr_raw(dev, page, 4096, 0).map_err(|e| format!("USERPTR_CREATE: errno {e}"))?;
    expect("BIND above 2^48", bind_raw(dev, h, (1 << 48) - 4096 + 4096), libc::EINVAL)?;
    expect("BIND unaligned", bind_raw(dev, h, (1 << 40) + 8), libc::EINVAL)?;
    bind_raw(dev, h, 1 << 40).map_err(|e| format!("BIND: errno {e}"))?;
    let h2 = userptr_raw(dev, page, 4096, 0).map_err(|e| format!("USERPTR_CREATE: errno {e}"))?;
    expect("BIND overlapping another binding", bind_raw(dev, h2, 1 << 40), libc::EBUSY)?;
    let mut unb = uapi::drm_vgpu_svm_bind { handle: 0, pad: 0, gpu_va: 0x1234_5000 };
    expect("UNBIND of nothing", raw_ioctl(dev, uapi::DRM_IOCTL_VGPU_SVM_UNBIND, &mut unb), libc::ENOENT)?;

    expect("SUBMIT with no ops", submit_raw(dev, &mut [], &mut []), libc::EINVAL)?;
    let mut many = vec![read_op(page, 8); 65];
    expect("SUBMIT with 65 ops", submit_raw(dev, &mut many, &mut []), libc::EINVAL)?;
    let mut bad_kind = [uapi::drm_vgpu_svm_op { kind: 99, ..read_op(page, 8) }];
    expect("SUBMIT with an unknown op", submit_raw(dev, &mut bad_kind, &mut []), libc::EINVAL)?;
    let mut beyond = [read_op((1 << 48) - 8, 64)];
    expect("SUBMIT reaching beyond 2^48", submit_raw(dev, &mut beyond, &mut []), libc::EINVAL)?;
    expect("SUBMIT with a bad handle", submit_raw(dev, &mut [read_op(page, 8)], &mut [0xdead]), libc::ENOENT)?;
    let mut req = uapi::drm_vgpu_svm_submit { ops: 0x10, nr_ops: 1, ..Default::default() };
    expect("SUBMIT with a bad ops pointer", raw_ioctl(dev, uapi::DRM_IOCTL_VGPU_SVM_SUBMIT, &mut req), libc::EFAULT)?;
    let mut cfg = uapi::drm_vgpu_svm_ctx_config { flags: uapi::VGPU_SVM_CTX_SVM, pad: 0 };
    submit_raw(dev, &mut [read_op(page, 8)], &mut []).map_err(|e| format!("SVM READ: errno {e}"))?;
    expect("CTX_CONFIG after the first job", raw_ioctl(dev, uapi::DRM_IOCTL_VGPU_SVM_CTX_CONFIG, &mut cfg), libc::EBUSY)?;
    drop(buf);
    Ok("16 bad arguments refused with the documented errno".into())
}

/// Addresses and lengths at the edges of the u64 and 48-bit ranges, whose sums overflow or
/// reach past the GPU VA space. Every op kind with each: a documented errno, never an oops
/// (an overflowing `+` in the driver is a BUG with CONFIG_RUST_OVERFLOW_CHECKS; seen:
/// ATOMIC_ADD at 2^64 - 8).
fn check_hostile_ops(_dev: &Device) -> Result<String, String> {
    let dev = Device::open_default().map_err(|e| e.to_string())?;
    let dev = &dev;
    let mut cfg = uapi::drm_vgpu_svm_ctx_config { flags: uapi::VGPU_SVM_CTX_SVM, pad: 0 };
    raw_ioctl(dev, uapi::DRM_IOCTL_VGPU_SVM_CTX_CONFIG, &mut cfg).map_err(|e| format!("CTX_CONFIG: errno {e}"))?;
    const ADDRS: [u64; 6] = [u64::MAX - 7, u64::MAX, u64::MAX - 4095, 1 << 63, 1 << 48, (1 << 48) - 4];
    const LENS: [u64; 4] = [u64::MAX, u64::MAX - 7, 1 << 63, 8];
    let kinds = [
        uapi::VGPU_SVM_OP_KIND_COPY,
        uapi::VGPU_SVM_OP_KIND_FILL,
        uapi::VGPU_SVM_OP_KIND_HASH,
        uapi::VGPU_SVM_OP_KIND_ATOMIC_ADD,
        uapi::VGPU_SVM_OP_KIND_WRITE_PATTERN,
        uapi::VGPU_SVM_OP_KIND_READ,
    ];
    let mut n = 0;
    for kind in kinds {
        for a in ADDRS {
            for len in LENS {
                // Both addresses hostile: whichever the kind uses is out of range.
                let mut op = [uapi::drm_vgpu_svm_op { kind, flags: 0, dst: a, src: a, len, value: 1 }];
                let what = format!("op kind {kind} at {a:#x} len {len:#x}");
                expect(&what, submit_raw(dev, &mut op, &mut []), libc::EINVAL)?;
                n += 1;
            }
        }
    }
    // The reproducer of the reported oops, on its own.
    let mut op = [uapi::drm_vgpu_svm_op { kind: uapi::VGPU_SVM_OP_KIND_ATOMIC_ADD, flags: 0, dst: 0xffff_ffff_ffff_fff8, src: 0, len: 0, value: 1 }];
    expect("ATOMIC_ADD at 2^64 - 8", submit_raw(dev, &mut op, &mut []), libc::EINVAL)?;
    Ok(format!("{} hostile ops refused with EINVAL", n + 1))
}

/// `memfd_secret(2)` memory is removed from the kernel's direct map and no device may reach
/// it (GUP refuses it). 7.2's hmm_range_fault does not check, so the driver must: every job
/// that touches it fails with EFAULT, in SVM mode and through a userptr object, and neither
/// the secret nor an ordinary destination buffer changes (seen before the fix: the device
/// hashed the secret, copied it into an ordinary page and overwrote it).
fn check_secretmem_refused(_dev: &Device) -> Result<String, String> {
    use vgpu_tests::mem::Mapping;
    const LEN: usize = 2 * 4096;
    // SAFETY: memfd_secret(flags) takes no pointers.
    let fd = unsafe { libc::syscall(libc::SYS_memfd_secret, 0) };
    if fd < 0 {
        // The guest kernel is built with CONFIG_SECRETMEM: not having it is a failure.
        return Err(format!("memfd_secret: {}", std::io::Error::last_os_error()));
    }
    let fd = fd as i32;
    // SAFETY: `fd` is ours.
    if unsafe { libc::ftruncate(fd, LEN as i64) } != 0 {
        return Err(format!("ftruncate(memfd_secret): {}", std::io::Error::last_os_error()));
    }
    let secret = Mapping::file_shared(fd, LEN).map_err(|e| format!("mmap(memfd_secret): {e}"))?;
    // SAFETY: the mapping keeps the file alive.
    unsafe { libc::close(fd) };
    secret.fill(0, LEN, 0x5a);
    let plain = Mapping::anon(LEN).map_err(|e| e.to_string())?;
    plain.fill(0, LEN, 0x11);
    let (s, p, l) = (secret.addr(), plain.addr(), LEN as u64);
    let op = |kind, dst, src| uapi::drm_vgpu_svm_op { kind, flags: 0, dst, src, len: l, value: 0x77 };

    let dev = Device::open_default().map_err(|e| e.to_string())?;
    let dev = &dev;
    let mut cfg = uapi::drm_vgpu_svm_ctx_config { flags: uapi::VGPU_SVM_CTX_SVM, pad: 0 };
    raw_ioctl(dev, uapi::DRM_IOCTL_VGPU_SVM_CTX_CONFIG, &mut cfg).map_err(|e| format!("CTX_CONFIG: errno {e}"))?;
    let svm_jobs = [
        ("SVM HASH of the secret", op(uapi::VGPU_SVM_OP_KIND_HASH, 0, s)),
        ("SVM READ of the secret", op(uapi::VGPU_SVM_OP_KIND_READ, 0, s)),
        ("SVM COPY secret -> plain", op(uapi::VGPU_SVM_OP_KIND_COPY, p, s)),
        ("SVM FILL of the secret", op(uapi::VGPU_SVM_OP_KIND_FILL, s, 0)),
    ];
    for (what, o) in svm_jobs {
        expect(what, submit_raw(dev, &mut [o], &mut []), libc::EFAULT)?;
    }
    // The same through a userptr object bound away from the identity range.
    let gva = 1u64 << 42;
    let h = userptr_raw(dev, s, l, 0).map_err(|e| format!("USERPTR_CREATE(memfd_secret): errno {e}"))?;
    bind_raw(dev, h, gva).map_err(|e| format!("BIND: errno {e}"))?;
    let bo_jobs = [
        ("userptr HASH of the secret", op(uapi::VGPU_SVM_OP_KIND_HASH, 0, gva)),
        ("userptr COPY secret -> plain", op(uapi::VGPU_SVM_OP_KIND_COPY, p, gva)),
        ("userptr FILL of the secret", op(uapi::VGPU_SVM_OP_KIND_FILL, gva, 0)),
    ];
    for (what, o) in bo_jobs {
        expect(what, submit_raw(dev, &mut [o], &mut [h]), libc::EFAULT)?;
    }
    if let Some(i) = secret.read(0, LEN).iter().position(|&b| b != 0x5a) {
        return Err(format!("the secret changed at byte {i}"));
    }
    if let Some(i) = plain.read(0, LEN).iter().position(|&b| b != 0x11) {
        return Err(format!("the ordinary buffer changed at byte {i} (secret copied out?)"));
    }
    Ok("7 jobs over memfd_secret memory refused with EFAULT; secret and buffer intact".into())
}

/// SVM (identity) and userptr bindings share one GPU VA space: a binding owns its range.
/// R is SVM memory the device has already mirrored (2 MiB aligned, so 2 MiB leaves where the
/// CPU has a THP, and 64-page fault windows); a userptr object over another buffer A is bound
/// at a GPU VA inside R. A job `{READ R; FILL binding}` that lists the object must fill A and
/// leave R alone; a job that does not list the object and touches the binding fails with
/// EFAULT (a fault in a binding is serviced only through it). The device's checker must see
/// no violation. Seen before the fix: A untouched, R overwritten, 16 violations.
fn check_binding_owns_its_range(_dev: &Device) -> Result<String, String> {
    use vgpu_tests::mem::Mapping;
    const MIB: usize = 1 << 20;
    let ctx = vgpu::Context::open_default().map_err(|e| e.to_string())?;
    ctx.config(true).map_err(|e| e.to_string())?;
    let r = Mapping::anon_aligned(4 * MIB, 2 * MIB).map_err(|e| e.to_string())?;
    let _ = r.madvise(0, 4 * MIB, libc::MADV_HUGEPAGE);
    r.fill(0, 4 * MIB, 0x33);
    let a = Mapping::anon(64 * 1024).map_err(|e| e.to_string())?;
    a.fill(0, 64 * 1024, 0x11);
    let before = ctx.stats().map_err(|e| e.to_string())?;

    // The device mirrors all of R through SVM (reads only).
    ctx.submit_readonly(&vgpu::Job::new().read(r.addr(), 4 * MIB as u64)).map_err(|e| format!("SVM READ of R: {e}"))?;
    // A bound inside R: 1 MiB + 16 KiB in, not 2 MiB aligned, inside a possibly 2 MiB leaf.
    // SAFETY: `a` is a private mapping reached only through raw pointers.
    let bo = ctx.userptr_raw(a.addr() as *const u8, a.len(), false).map_err(|e| e.to_string())?;
    let gva = r.addr() + (MIB as u64) + 16 * 1024;
    ctx.bind(&bo, gva).map_err(|e| format!("BIND inside R: {e}"))?;
    let job = vgpu::Job::new().read(r.addr(), 4 * MIB as u64).fill(gva, a.len() as u64, 0xab).uses(&bo);
    // SAFETY: the job writes A (a raw mapping) only.
    unsafe { ctx.submit(&job) }.map_err(|e| format!("{{READ R; FILL binding}}: {e}"))?;
    if let Some(i) = a.read(0, a.len()).iter().position(|&b| b != 0xab) {
        return Err(format!("A was not filled (byte {i} is not 0xab): the job wrote elsewhere"));
    }
    if let Some(i) = r.read(0, 4 * MIB).iter().position(|&b| b != 0x33) {
        return Err(format!("R changed at offset {i:#x}: the binding's FILL went to SVM memory"));
    }
    // A fault inside the binding of an object the job does not list is never serviced as
    // identity: a second object, bound inside R but not yet mirrored (BIND cleared R's SVM
    // entries there), and a job that does not list it.
    let a2 = Mapping::anon(4096).map_err(|e| e.to_string())?;
    a2.fill(0, 4096, 0x22);
    let bo2 = ctx.userptr_raw(a2.addr() as *const u8, a2.len(), false).map_err(|e| e.to_string())?;
    let gva2 = r.addr() + 3 * MIB as u64;
    ctx.bind(&bo2, gva2).map_err(|e| format!("BIND of a second object inside R: {e}"))?;
    // Also with SUBMIT_PREFAULT: the prefault leaves ranges that overlap a binding alone.
    for (stray, how) in [
        (vgpu::Job::new().fill(gva2, 4096, 0xcd), ""),
        (vgpu::Job::new().fill(gva2 - 4096, 8192, 0xcd).prefault(), " (PREFAULT, the range starting below it)"),
        (vgpu::Job::new().fill(gva2, 4096, 0xcd).prefault(), " (PREFAULT)"),
    ] {
        // SAFETY: if it ran, it would write A2 or R, both raw mappings.
        match unsafe { ctx.submit(&stray) } {
            Err(e) if e.errno() == libc::EFAULT => {}
            Err(e) => return Err(format!("FILL of a binding the job does not list{how}: {e}, want EFAULT")),
            Ok(_) => return Err(format!("FILL of a binding the job does not list{how} succeeded, want EFAULT")),
        }
        if a2.read(0, 4096).iter().any(|&b| b != 0x22) || r.read(3 * MIB, 4096).iter().any(|&b| b != 0x33) {
            return Err(format!("the refused FILL{how} changed memory"));
        }
    }
    // SVM next to the binding still works, and its fault window does not run across it.
    let below = gva - 4096;
    let job = vgpu::Job::new().fill(below, 4096, 0x44).read(gva, 4096).uses(&bo);
    // SAFETY: writes one page of R, a raw mapping.
    unsafe { ctx.submit(&job) }.map_err(|e| format!("SVM FILL next to the binding: {e}"))?;
    if r.read(MIB + 12 * 1024, 4096).iter().any(|&b| b != 0x44) || r.read(MIB + 16 * 1024, 4096).iter().any(|&b| b != 0x33) {
        return Err("the SVM FILL below the binding hit the wrong memory".into());
    }
    let after = ctx.stats().map_err(|e| e.to_string())?;
    let (checked, bad) = (after.accesses_checked - before.accesses_checked, after.violations - before.violations);
    if checked == 0 || bad != 0 {
        return Err(format!("device: {checked} accesses checked, {bad} violations (want > 0 and 0)"));
    }
    Ok(format!("device: {checked} accesses checked, 0 violations"))
}

/// A userptr object's kernel memory is bounded, and validating a large one is done in
/// bounded chunks: one `hmm_range_fault` over a 4 GiB stale run needed an 8 MiB pfn array
/// (a page allocation above MAX_PAGE_ORDER: WARN and ENOMEM). The 4 GiB object mirrors a
/// MADV_HUGEPAGE reservation that is only read, so the CPU maps the huge zero page: cheap.
fn check_userptr_bounds(_dev: &Device) -> Result<String, String> {
    use vgpu_tests::mem::Mapping;
    const GIB: u64 = 1 << 30;
    let dev = Device::open_default().map_err(|e| e.to_string())?;
    let dev = &dev;
    let buf = Mapping::anon(4096).map_err(|e| e.to_string())?;
    expect("USERPTR_CREATE of 64 GiB + 4 KiB", userptr_raw(dev, buf.addr(), 64 * GIB + 4096, 0).map(|_| ()), libc::EINVAL)?;
    expect("USERPTR_CREATE reaching past 2^48", userptr_raw(dev, (1 << 48) - 4096, 8192, 0).map(|_| ()), libc::EINVAL)?;
    expect("USERPTR_CREATE of 2^64 - 4 KiB", userptr_raw(dev, 4096, u64::MAX - 4095, 0).map(|_| ()), libc::EINVAL)?;
    let len = 4 * GIB as usize;
    let big = Mapping::new(
        0,
        len + (2 << 20),
        libc::PROT_READ,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
        -1,
        0,
    )
    .map_err(|e| format!("mmap 4 GiB: {e}"))?;
    let start = big.addr().next_multiple_of(2 << 20);
    let off = (start - big.addr()) as usize;
    let _ = big.madvise(off, len, libc::MADV_HUGEPAGE);
    let h = userptr_raw(dev, start, len as u64, uapi::VGPU_SVM_USERPTR_READONLY).map_err(|e| format!("USERPTR_CREATE of 4 GiB: errno {e}"))?;
    let gva = 1u64 << 44;
    bind_raw(dev, h, gva).map_err(|e| format!("BIND: errno {e}"))?;
    let t0 = std::time::Instant::now();
    submit_raw(dev, &mut [read_op(gva + (len as u64) - 4096, 8)], &mut [h])
        .map_err(|e| format!("a job using the 4 GiB object: errno {e} (want success)"))?;
    Ok(format!("4 GiB object validated in {:.1} s", t0.elapsed().as_secs_f64()))
}

/// STATS used to show every process's device counters to any client, and to create a
/// device context as a side effect (16 open files exhausted the device). A child that opened
/// the device as root, ran one small job and then dropped to `nobody` must see its own
/// context's counters only (at most what its job did), and a file without a context zeros.
fn check_stats_privacy(_dev: &Device) -> Result<String, String> {
    use vgpu_tests::mem::Mapping;
    const PAGES: u64 = 4;
    let global = vgpu::Context::open_default().map_err(|e| e.to_string())?;
    // The child only uses the device and drops its privileges (never the parent's).
    vgpu_tests::child::fork_child(|_| {
        let ctx = vgpu::Context::open_default().map_err(|e| e.to_string())?;
        let bare = vgpu::Context::open_default().map_err(|e| e.to_string())?;
        ctx.config(true).map_err(|e| e.to_string())?;
        let m = Mapping::anon(PAGES as usize * 4096).map_err(|e| e.to_string())?;
        m.fill(0, m.len(), 1);
        ctx.submit_readonly(&vgpu::Job::new().hash(m.addr(), m.len() as u64)).map_err(|e| e.to_string())?;
        // SAFETY: plain syscalls; from root to nobody, which drops every capability.
        if unsafe { libc::setgid(65534) } != 0 || unsafe { libc::setuid(65534) } != 0 {
            return Err(format!("setuid(nobody): {}", std::io::Error::last_os_error()));
        }
        let own = ctx.stats().map_err(|e| e.to_string())?;
        if own.accesses_checked == 0 || own.accesses_checked > 4 * PAGES {
            return Err(format!("unprivileged STATS: {} accesses checked, want 1..={} (this context's)", own.accesses_checked, 4 * PAGES));
        }
        let none = bare.stats().map_err(|e| e.to_string())?;
        if none.accesses_checked != 0 || none.jobs != 0 || none.events.iter().any(|&e| e != 0) {
            return Err(format!("STATS of a file without a context: {none:?}, want zeros"));
        }
        Ok(())
    })
    .map_err(|e| format!("fork: {e}"))?
    .join()
    .map_err(|e| format!("the unprivileged child: {e}"))?;
    let all = global.stats().map_err(|e| e.to_string())?;
    if all.accesses_checked <= PAGES {
        return Err(format!("privileged STATS: {} accesses checked: not device-wide", all.accesses_checked));
    }
    Ok(format!("device-wide {} accesses; the child saw only its own", all.accesses_checked))
}

const MIRROR_SECRETMEM_KNOB: &str = "/sys/kernel/debug/vgpu_svm/mirror_secretmem";

/// Whether the driver's debug knobs accept writes (module loaded with `unsafe_debug=1`):
/// writing the knob's off value fails with EPERM otherwise.
fn debug_knobs_writable() -> bool {
    std::fs::write(MIRROR_SECRETMEM_KNOB, "0").is_ok()
}

/// The oracle must catch memory no device may reach without knowing the VMA type: with the
/// `mirror_secretmem` knob (unsafe_debug only) the driver mirrors memfd_secret memory as
/// 7.2's hmm_range_fault would let it, and the device's checker must flag every access, since
/// those frames are missing from the guest kernel's direct map.
fn check_secretmem_caught_by_device(_dev: &Device) -> Result<String, String> {
    use vgpu_tests::mem::Mapping;
    if std::fs::metadata(MIRROR_SECRETMEM_KNOB).is_err() {
        return Err(format!("{MIRROR_SECRETMEM_KNOB} is missing"));
    }
    // SAFETY: memfd_secret(flags) takes no pointers.
    let fd = unsafe { libc::syscall(libc::SYS_memfd_secret, 0) } as i32;
    // SAFETY: our fd.
    if fd < 0 || unsafe { libc::ftruncate(fd, 4096) } != 0 {
        return Err(format!("memfd_secret: {}", std::io::Error::last_os_error()));
    }
    let secret = Mapping::file_shared(fd, 4096).map_err(|e| e.to_string())?;
    // SAFETY: the mapping keeps the file alive.
    unsafe { libc::close(fd) };
    secret.fill(0, 4096, 0x5a);
    let ctx = vgpu::Context::open_default().map_err(|e| e.to_string())?;
    ctx.config(true).map_err(|e| e.to_string())?;
    let before = ctx.stats().map_err(|e| e.to_string())?;
    std::fs::write(MIRROR_SECRETMEM_KNOB, "1").map_err(|e| format!("{MIRROR_SECRETMEM_KNOB}: {e}"))?;
    let r = ctx.submit_readonly(&vgpu::Job::new().hash(secret.addr(), 4096));
    let off = std::fs::write(MIRROR_SECRETMEM_KNOB, "0");
    r.map_err(|e| format!("HASH of the secret with the knob on: {e} (want it mirrored)"))?;
    off.map_err(|e| format!("{MIRROR_SECRETMEM_KNOB}: {e}"))?;
    let after = ctx.stats().map_err(|e| e.to_string())?;
    let bad = after.violations - before.violations;
    if bad == 0 {
        return Err("the device checked the secret pages and reported no violation".into());
    }
    Ok(format!("{bad} violations for one page of secret memory"))
}

/// A memfd of `len` bytes (sparse: nothing allocated).
fn memfd(len: usize) -> Result<i32, String> {
    // SAFETY: the name is a valid C string.
    let fd = unsafe { libc::memfd_create(c"vgpu-smoke".as_ptr(), 0) };
    // SAFETY: plain syscall on our fd.
    if fd < 0 || unsafe { libc::ftruncate(fd, len as i64) } != 0 {
        return Err(format!("memfd: {}", std::io::Error::last_os_error()));
    }
    Ok(fd)
}

/// Bytes of backing store a file uses.
fn allocated(fd: i32) -> u64 {
    // SAFETY: `st` is a valid out pointer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::fstat(fd, &mut st) };
    st.st_blocks as u64 * 512
}

/// Servicing a device fault may mirror neighbours of the faulting page, but must not change
/// what the process sees or fail an access the CPU could make (DESIGN.md, "The fault window
/// must be invisible"). Before the fix the driver faulted in (for write on a write fault)
/// up to 64 pages, all or nothing.
/// Found by the fault-injection stress: the fault window is computed from the VMA under one
/// mmap lock and checked under the next; a neighbour that another thread unmaps in between
/// left a hole in the window, and the whole fault failed with EFAULT although the faulting
/// page was fine. A's pages are faulted again and again (MADV_DONTNEED before each job)
/// while a thread maps and unmaps B right after A (the same flags: one merged VMA, so the
/// window reaches into B). Every job must succeed.
/// Where [`check_window_neighbour_unmapped`] puts A and B: far below mmap(NULL)'s range.
const NEIGHBOUR_RACE_VA: u64 = 0x2200_0000_0000;

fn check_window_neighbour_unmapped(_dev: &Device) -> Result<String, String> {
    use vgpu_tests::mem::{Churn, Mapping};
    const P: usize = 4096;
    const A_PAGES: usize = 8;
    const B_PAGES: usize = 48;
    const JOBS: u32 = 1500;
    let ctx = vgpu::Context::open_default().map_err(|e| e.to_string())?;
    ctx.config(true).map_err(|e| e.to_string())?;
    // Reserve A and B together at a private fixed VA (a hole next to mmap(NULL)'s
    // allocations is soon reused), keep A.
    let whole = Mapping::anon_at(NEIGHBOUR_RACE_VA, (A_PAGES + B_PAGES) * P).map_err(|e| format!("mmap at {NEIGHBOUR_RACE_VA:#x}: {e}"))?;
    let (a, _) = whole.leak();
    let b = a + (A_PAGES * P) as u64;
    // SAFETY: B is the tail of the reservation just leaked: ours, unused.
    if unsafe { libc::munmap(b as *mut libc::c_void, B_PAGES * P) } != 0 {
        return Err(format!("munmap: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: A is the rest of that reservation, owned from here on by `am`.
    let am = unsafe { Mapping::from_raw(a, A_PAGES * P) };
    am.fill(0, am.len(), 0x42);
    let churn = Churn::start(b, B_PAGES * P);
    let mut failures = Vec::new();
    for i in 0..JOBS {
        let _ = am.madvise(0, am.len(), libc::MADV_DONTNEED);
        if let Err(e) = ctx.submit_readonly(&vgpu::Job::new().read(a, am.len() as u64)) {
            failures.push(format!("job {i}: {e}"));
            if failures.len() >= 5 {
                break;
            }
        }
    }
    let (cycles, taken) = churn.finish();
    if !failures.is_empty() {
        return Err(format!("{} READs of A failed while B was mapped and unmapped ({cycles} cycles): {}", failures.len(), failures.join("; ")));
    }
    if cycles == 0 {
        return Err(format!("B was never mapped ({taken} attempts found it taken): the race was not run"));
    }
    Ok(format!("{JOBS} READs of A, each faulting, while B was mapped and unmapped {cycles} times"))
}

fn check_fault_window_invisible(_dev: &Device) -> Result<String, String> {
    use vgpu_tests::mem::Mapping;
    const P: usize = 4096;
    const MADV_GUARD_INSTALL: i32 = 102;
    let ctx = vgpu::Context::open_default().map_err(|e| e.to_string())?;
    ctx.config(true).map_err(|e| e.to_string())?;

    // 1. A guard page 10 pages after a valid one, same VMA: the valid page is readable.
    let g = Mapping::anon(16 * P).map_err(|e| e.to_string())?;
    g.fill(0, P, 1);
    g.madvise(10 * P, P, MADV_GUARD_INSTALL).map_err(|e| format!("MADV_GUARD_INSTALL: {e}"))?;
    ctx.submit_readonly(&vgpu::Job::new().read(g.addr(), 8))
        .map_err(|e| format!("device READ of a page 10 pages before a guard page: {e} (the CPU can read it)"))?;

    // 2. A shared file mapping longer than the file: its valid first page is readable.
    let fd = memfd(P)?;
    let f = Mapping::new(0, 16 * P, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd, 0).map_err(|e| e.to_string())?;
    ctx.submit_readonly(&vgpu::Job::new().read(f.addr(), 8))
        .map_err(|e| format!("device READ of the first page of a mapping past EOF: {e}"))?;
    drop(f);
    // SAFETY: our fd.
    unsafe { libc::close(fd) };

    // 3. A one-page device write into a sparse shared file allocates one page.
    let fd = memfd(64 * P)?;
    let f = Mapping::file_shared(fd, 64 * P).map_err(|e| e.to_string())?;
    // SAFETY: writes one page of a raw shared mapping.
    unsafe { ctx.submit(&vgpu::Job::new().fill(f.addr(), P as u64, 0x5a)) }.map_err(|e| format!("FILL of a sparse file: {e}"))?;
    let used = allocated(fd);
    if f.read(0, P).iter().any(|&b| b != 0x5a) || used > 2 * P as u64 {
        return Err(format!("a one-page device write into a sparse file allocated {used} bytes (want one page)"));
    }
    drop(f);
    // SAFETY: our fd.
    unsafe { libc::close(fd) };

    // 4. A device write to page 0 of a MAP_PRIVATE file mapping COWs page 0 only: page 1 still
    //    shows the file's later changes.
    let fd = memfd(16 * P)?;
    let ones = vec![0x11u8; 16 * P];
    // SAFETY: `ones` is a live buffer of that length.
    unsafe { libc::pwrite(fd, ones.as_ptr().cast(), ones.len(), 0) };
    let m = Mapping::new(0, 16 * P, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE, fd, 0).map_err(|e| e.to_string())?;
    let _ = m.read(P, 1); // the CPU maps page 1 (read-only, the file's page)
    // SAFETY: writes one page of a raw private mapping.
    unsafe { ctx.submit(&vgpu::Job::new().fill(m.addr(), P as u64, 0xaa)) }.map_err(|e| format!("FILL of a private file page: {e}"))?;
    let twos = vec![0x22u8; P];
    // SAFETY: as above.
    unsafe { libc::pwrite(fd, twos.as_ptr().cast(), P, P as i64) };
    let (p0, p1) = (m.read(0, 1)[0], m.read(P, 1)[0]);
    // SAFETY: our fd.
    unsafe { libc::close(fd) };
    if p0 != 0xaa || p1 != 0x22 {
        return Err(format!(
            "MAP_PRIVATE file: page 0 is {p0:#x} (want 0xaa), page 1 is {p1:#x} (want the file's new 0x22: a neighbour was COW-broken)"
        ));
    }
    Ok(format!("sparse file: {used} bytes allocated by a one-page write"))
}

/// The `[vvar]` mapping (VM_IO | VM_PFNMAP) of this process, if any.
fn vvar() -> Option<u64> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let line = maps.lines().find(|l| l.ends_with("[vvar]"))?;
    u64::from_str_radix(line.split('-').next()?, 16).ok()
}

fn check_pfnmap_efault(_dev: &Device) -> Result<String, String> {
    let Some(addr) = vvar() else {
        return Ok("no [vvar] mapping in this kernel: nothing to check".into());
    };
    let dev = Device::open_default().map_err(|e| e.to_string())?;
    let dev = &dev;
    let mut cfg = uapi::drm_vgpu_svm_ctx_config { flags: uapi::VGPU_SVM_CTX_SVM, pad: 0 };
    raw_ioctl(dev, uapi::DRM_IOCTL_VGPU_SVM_CTX_CONFIG, &mut cfg).map_err(|e| format!("CTX_CONFIG: errno {e}"))?;
    expect("an SVM READ of [vvar]", submit_raw(dev, &mut [read_op(addr, 8)], &mut []), libc::EFAULT)?;
    let h = userptr_raw(dev, addr, 4096, uapi::VGPU_SVM_USERPTR_READONLY).map_err(|e| format!("USERPTR_CREATE([vvar]): errno {e}"))?;
    bind_raw(dev, h, 1 << 41).map_err(|e| format!("BIND: errno {e}"))?;
    expect("a job using a userptr object over [vvar]", submit_raw(dev, &mut [read_op(1 << 41, 8)], &mut [h]), libc::EFAULT)?;
    Ok(format!("[vvar] at {addr:#x}"))
}

/// Runs a context ioctl on the raw fd; returns the errno on failure.
fn raw_ioctl<T>(dev: &Device, request: u32, arg: &mut T) -> Result<(), i32> {
    // SAFETY: `arg` is a live, correctly sized ioctl argument for `request`.
    let ret = unsafe { libc::ioctl(dev.as_raw_fd(), request as libc::Ioctl, arg as *mut T) };
    if ret == -1 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(())
    }
}

/// The header: the ctx_* fields were "added after events[]: the DRM core zero-fills and
/// truncates, so a caller built with the shorter struct still works". Such a caller's request
/// number encodes 256 bytes; the kernel must copy back 256, not 288.
fn check_stats_old_size(dev: &Device) -> Result<String, String> {
    const OLD: usize = 256;
    let full = std::mem::size_of::<uapi::drm_vgpu_svm_stats>();
    if full <= OLD {
        return Err(format!("struct drm_vgpu_svm_stats is {full} bytes: not grown past {OLD}"));
    }
    let request = (uapi::DRM_IOCTL_VGPU_SVM_STATS & !(0x3fff << 16)) | ((OLD as u32) << 16);
    let mut buf = vec![0xa5u8; full];
    // SAFETY: `buf` has room for the whole struct; the request asks for 256 bytes of it.
    let ret = unsafe { libc::ioctl(dev.as_raw_fd(), request as libc::Ioctl, buf.as_mut_ptr()) };
    if ret == -1 {
        return Err(format!("STATS with size {OLD}: {}", std::io::Error::last_os_error()));
    }
    if let Some(i) = buf[OLD..].iter().position(|&b| b != 0xa5) {
        return Err(format!("the kernel wrote byte {} of the buffer, past the {OLD} asked for", OLD + i));
    }
    Ok(format!("{OLD} of {full} bytes returned"))
}

fn check_fdinfo_debugfs(dev: &Device) -> Result<String, String> {
    // CTX_CONFIG creates the file's context (STATS does not: see check_stats_privacy).
    let mut cfg = uapi::drm_vgpu_svm_ctx_config { flags: 0, pad: 0 };
    raw_ioctl(dev, uapi::DRM_IOCTL_VGPU_SVM_CTX_CONFIG, &mut cfg).map_err(|e| format!("CTX_CONFIG: errno {e}"))?;
    let fdinfo = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", dev.as_raw_fd()))
        .map_err(|e| format!("fdinfo: {e}"))?;
    for key in ["drm-driver:\tvgpu_svm", "drm-client-id:", "drm-engine-vgpu:", "drm-resident-gpuvm:", "vgpu_svm-events-unmap:"] {
        if !fdinfo.contains(key) {
            return Err(format!("fdinfo lacks `{key}`:\n{fdinfo}"));
        }
    }
    let ctx = fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("vgpu_svm-ctx:"))
        .map(|v| v.trim().to_string())
        .ok_or_else(|| format!("fdinfo lacks vgpu_svm-ctx:\n{fdinfo}"))?;
    let path = format!("/sys/kernel/debug/vgpu_svm/ctx{ctx}");
    let dbg = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    if !dbg.contains(&format!("ctx: {ctx}")) || !dbg.contains("mapped ranges") {
        return Err(format!("{path} is not the context's description:\n{dbg}"));
    }
    Ok(format!("context {ctx}: fdinfo has {} lines, {path} has {} lines", fdinfo.lines().count(), dbg.lines().count()))
}

fn check_fork_child_eperm(dev: &Device) -> Result<String, String> {
    // SAFETY: the child only makes one ioctl and exits with `_exit`.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err("fork failed".into());
    }
    if pid == 0 {
        let mut cfg = uapi::drm_vgpu_svm_ctx_config { flags: uapi::VGPU_SVM_CTX_SVM, pad: 0 };
        let code = match raw_ioctl(dev, uapi::DRM_IOCTL_VGPU_SVM_CTX_CONFIG, &mut cfg) {
            Err(e) if e == libc::EPERM => 0,
            Err(e) => 10 + e.min(100),
            Ok(()) => 1,
        };
        // SAFETY: leaving the forked child without running the parent's destructors.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: `pid` is our child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    match libc::WEXITSTATUS(status) {
        0 => Ok(String::new()),
        1 => Err("CTX_CONFIG from the child succeeded".into()),
        c => Err(format!("CTX_CONFIG from the child failed with errno {}, not EPERM", c - 10)),
    }
}

/// `vgpu-smoke --hold SECS`: open a GPU context and keep it for SECS seconds (the test job
/// uses it to check that rmmod refuses while a context is live).
fn hold(secs: u64) -> ExitCode {
    let Ok(dev) = Device::open_default() else {
        return ExitCode::FAILURE;
    };
    let mut stats = uapi::drm_vgpu_svm_stats::default();
    if raw_ioctl(&dev, uapi::DRM_IOCTL_VGPU_SVM_STATS, &mut stats).is_err() {
        return ExitCode::FAILURE;
    }
    std::thread::sleep(std::time::Duration::from_secs(secs));
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--hold") {
        return hold(args.get(2).and_then(|s| s.parse().ok()).unwrap_or(30));
    }
    let mut tap = Tap::new(2 + DEVICE_CHECKS.len());

    tap.run(
        &format!("{RENDER_NODE} exists and is a character device"),
        || match std::fs::metadata(Path::new(RENDER_NODE)) {
            Ok(m) if m.file_type().is_char_device() => Ok(()),
            Ok(m) => Err(format!("not a character device: {:?}", m.file_type())),
            Err(e) => Err(e.to_string()),
        },
    );

    match Device::open_default() {
        Ok(dev) => {
            tap.pass("Device::open_default() finds the vgpu_svm render node");
            tap.diag(format!("opened {}", dev.path().display()));
            for (desc, check) in DEVICE_CHECKS {
                if std::ptr::fn_addr_eq(*check, check_secretmem_caught_by_device as Check) && !debug_knobs_writable() {
                    // The demo loads the module without unsafe_debug=1; the test job with it.
                    tap.skip(desc, "the debug knobs need vgpu_svm loaded with unsafe_debug=1");
                    continue;
                }
                match check(&dev) {
                    Ok(note) => {
                        tap.pass(desc);
                        if !note.is_empty() {
                            tap.diag(note);
                        }
                    }
                    Err(diag) => tap.fail(desc, diag),
                }
            }
        }
        Err(e) => {
            tap.fail("Device::open_default() finds the vgpu_svm render node", &e);
            for (desc, _) in DEVICE_CHECKS {
                tap.not_run(desc, "no vgpu_svm device open");
            }
        }
    }

    tap.finish().exit_code()
}

fn param(dev: &Device, p: Param) -> Result<u64, String> {
    dev.get_param(p).map_err(|e| e.to_string())
}

fn expect_eq(got: u64, want: u64) -> Result<String, String> {
    if got == want {
        Ok(String::new())
    } else {
        Err(format!("got:  {got:#x}\nwant: {want:#x}"))
    }
}

/// `res` must be an error with exactly `errno`.
fn expect_errno<T: std::fmt::Debug>(res: vgpu::Result<T>, errno: i32) -> Result<String, String> {
    let want = std::io::Error::from_raw_os_error(errno);
    match res {
        Err(e) if e.is(errno) => Ok(String::new()),
        Err(e) => Err(format!("got:  {e}\nwant: {want}")),
        Ok(v) => Err(format!("got:  success ({v:?})\nwant: {want}")),
    }
}

fn check_version(dev: &Device) -> Result<String, String> {
    let v = dev.version().map_err(|e| e.to_string())?;
    if v.name == vgpu::DRIVER_NAME {
        Ok(format!("driver: {v}, date {:?}", v.date))
    } else {
        Err(format!("got:  {:?}\nwant: {:?}", v.name, vgpu::DRIVER_NAME))
    }
}

fn check_protocol_version(dev: &Device) -> Result<String, String> {
    let raw = param(dev, Param::ProtocolVersion)?;
    let want = u64::from(uapi::VGPU_SVM_PROTOCOL_VERSION);
    let shown = match u32::try_from(raw) {
        Ok(v) => ProtocolVersion::from_raw(v).to_string(),
        Err(_) => format!("{raw:#x} (does not fit 32 bits)"),
    };
    expect_eq(raw, want)
        .map(|_| format!("device protocol version {shown}"))
        .map_err(|d| {
            format!(
                "{d}\ndevice speaks {shown}, this build {}",
                ProtocolVersion::CURRENT
            )
        })
}

fn check_capset_id(dev: &Device) -> Result<String, String> {
    expect_eq(
        param(dev, Param::CapsetId)?,
        u64::from(uapi::VGPU_SVM_CAPSET_ID),
    )
}

fn check_max_contexts(dev: &Device) -> Result<String, String> {
    match param(dev, Param::MaxContexts)? {
        0 => Err("got 0".into()),
        n => Ok(format!("max contexts {n}")),
    }
}

fn check_va_bits(dev: &Device) -> Result<String, String> {
    expect_eq(param(dev, Param::VaBits)?, 48)
}

fn check_features(dev: &Device) -> Result<String, String> {
    let f = param(dev, Param::Features)?;
    let checker = f & u64::from(uapi::VGPU_SVM_FEATURE_CHECKER) != 0;
    Ok(format!(
        "features {f:#x} (coherence checker: {})",
        if checker { "yes" } else { "no" }
    ))
}

fn check_unknown_param(dev: &Device) -> Result<String, String> {
    let mut arg = drm_vgpu_svm_get_param {
        param: UNKNOWN_PARAM,
        ..Default::default()
    };
    expect_errno(
        dev.get_param_raw(&mut arg).map(|()| arg.value),
        libc::EINVAL,
    )
}

fn check_nonzero_pad(dev: &Device) -> Result<String, String> {
    // A valid param, so that only the padding is wrong.
    let mut arg = drm_vgpu_svm_get_param {
        param: Param::ProtocolVersion.raw(),
        pad: 1,
        ..Default::default()
    };
    expect_errno(
        dev.get_param_raw(&mut arg).map(|()| arg.value),
        libc::EINVAL,
    )
}

fn check_bad_pointer(dev: &Device) -> Result<String, String> {
    // Page 0 is never mapped (mmap_min_addr), so the DRM core's copy of the
    // argument must fault.
    let bad = std::ptr::without_provenance_mut::<libc::c_void>(0x1);
    // SAFETY: the kernel validates the user pointer; nothing in this process
    // is read or written through it.
    let ret = unsafe {
        #[allow(clippy::unnecessary_cast)] // bindgen's enum type is an alias
        libc::ioctl(
            dev.as_raw_fd(),
            uapi::DRM_IOCTL_VGPU_SVM_GET_PARAM as libc::Ioctl,
            bad,
        )
    };
    let res = if ret == -1 {
        let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        Err(vgpu::Error::new("DRM_IOCTL_VGPU_SVM_GET_PARAM", errno))
    } else {
        Ok(ret)
    };
    expect_errno(res, libc::EFAULT)
}
