//! The oracle: what each ioctl may return, from `uapi/vgpu_svm_drm.h` (the errnos documented
//! for that ioctl) and the DRM core (`drm_ioctl`: ENOTTY for another ioctl type, EINVAL for
//! an unknown number, EFAULT when it cannot copy the argument in or out; GEM_CLOSE's EINVAL).
//!
//! A result is judged from what the kernel could see: [`transport`] says how many bytes
//! `drm_ioctl` copies in and out for a request number (the user's size and direction bits
//! meet the driver's), and a [`Ptr`] class says whether the argument's memory is readable and
//! writable. When the kernel read our bytes intact, the driver's rules for that ioctl apply to
//! exactly those bytes (short copies are zero-filled, as `drm_ioctl` does).

use super::gen::{Op, VA_LIMIT, PAGE};

/// `_IOC_WRITE`: user to kernel (DRM's `IOC_IN`).
pub const IOC_WRITE: u32 = 1;
/// `_IOC_READ`: kernel to user (DRM's `IOC_OUT`).
pub const IOC_READ: u32 = 2;
/// `DRM_IOCTL_BASE`.
pub const DRM_TYPE: u8 = b'd';
/// Largest op length (`VGPU_SVM_MAX_OP_LEN`).
pub const MAX_OP_LEN: u64 = 1 << 32;
/// `VGPU_SVM_MAX_OPS`.
pub const MAX_OPS: u32 = 64;
/// Most handles a SUBMIT takes.
pub const MAX_HANDLES: u32 = 1024;
/// Most entries of one BIND_ARRAY (`VGPU_SVM_BIND_ARRAY_MAX`).
pub const BIND_ARRAY_MAX: u32 = 4096;
/// `VGPU_SVM_BIND_ARRAY_UNBIND`.
pub const BIND_ARRAY_UNBIND: u32 = 1;
/// `VGPU_SVM_BIND_ARRAY_NO_ENTRY`: `.failed` when no single entry is to blame.
pub const NO_ENTRY: u32 = 0xffff_ffff;
/// Size of one BIND_ARRAY entry (`struct drm_vgpu_svm_bind`).
pub const BIND_ENTRY_SIZE: usize = 16;
/// Offset of `.failed` in `struct drm_vgpu_svm_bind_array`.
pub const FAILED_OFFSET: usize = 16;
/// The largest userptr object (USERPTR_CREATE refuses sizes above 64 GiB).
pub const MAX_OBJECT: u64 = 64 << 30;

/// An ioctl request number.
pub const fn ioc(dir: u32, ty: u8, nr: u8, size: usize) -> u32 {
    (dir << 30) | (((size as u32) & 0x3fff) << 16) | ((ty as u32) << 8) | nr as u32
}
/// Direction bits of a request.
pub const fn ioc_dir(req: u32) -> u32 {
    req >> 30
}
/// Size field of a request.
pub const fn ioc_size(req: u32) -> usize {
    ((req >> 16) & 0x3fff) as usize
}
/// Type byte of a request.
pub const fn ioc_type(req: u32) -> u8 {
    (req >> 8) as u8
}

/// The ioctls the fuzzer calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Ioctl {
    /// DRM_IOCTL_VGPU_SVM_GET_PARAM.
    GetParam,
    /// DRM_IOCTL_VGPU_SVM_CTX_CONFIG.
    CtxConfig,
    /// DRM_IOCTL_VGPU_SVM_USERPTR_CREATE.
    UserptrCreate,
    /// DRM_IOCTL_VGPU_SVM_BIND.
    Bind,
    /// DRM_IOCTL_VGPU_SVM_UNBIND.
    Unbind,
    /// DRM_IOCTL_VGPU_SVM_SUBMIT.
    Submit,
    /// DRM_IOCTL_VGPU_SVM_STATS.
    Stats,
    /// DRM_IOCTL_VGPU_SVM_BIND_ARRAY.
    BindArray,
    /// DRM_IOCTL_GEM_CLOSE (DRM core).
    GemClose,
    /// A driver-range number the driver does not define.
    Unknown,
}

// errno values (x86-64 Linux), named here so the tables read like the header.
pub use libc::{
    E2BIG, EACCES, EAGAIN, EBADF, EBUSY, EEXIST, EFAULT, EINTR, EINVAL, EIO, ENODEV, ENOENT, ENOMEM, ENOSPC,
    ENOSYS, ENOTTY, EOPNOTSUPP, EOVERFLOW, EPERM, ERANGE, ESRCH, ETIMEDOUT,
};

impl Ioctl {
    /// Every ioctl, in table order.
    pub const ALL: [Ioctl; 10] = [
        Ioctl::GetParam,
        Ioctl::CtxConfig,
        Ioctl::UserptrCreate,
        Ioctl::Bind,
        Ioctl::Unbind,
        Ioctl::Submit,
        Ioctl::Stats,
        Ioctl::BindArray,
        Ioctl::GemClose,
        Ioctl::Unknown,
    ];

    /// The name used in reports (`by_ioctl`).
    pub fn name(self) -> &'static str {
        match self {
            Ioctl::GetParam => "GET_PARAM",
            Ioctl::CtxConfig => "CTX_CONFIG",
            Ioctl::UserptrCreate => "USERPTR_CREATE",
            Ioctl::Bind => "BIND",
            Ioctl::Unbind => "UNBIND",
            Ioctl::Submit => "SUBMIT",
            Ioctl::Stats => "STATS",
            Ioctl::BindArray => "BIND_ARRAY",
            Ioctl::GemClose => "GEM_CLOSE",
            Ioctl::Unknown => "UNKNOWN",
        }
    }

    /// The DRM number (`DRM_COMMAND_BASE + n` for the driver's).
    pub fn nr(self) -> u8 {
        match self {
            Ioctl::GetParam => 0x40,
            Ioctl::CtxConfig => 0x41,
            Ioctl::UserptrCreate => 0x42,
            Ioctl::Bind => 0x43,
            Ioctl::Unbind => 0x44,
            Ioctl::Submit => 0x45,
            Ioctl::Stats => 0x46,
            Ioctl::BindArray => 0x47,
            Ioctl::GemClose => 0x09,
            Ioctl::Unknown => 0x48,
        }
    }

    /// The kernel's direction bits for it.
    pub fn dir(self) -> u32 {
        match self {
            Ioctl::GetParam | Ioctl::UserptrCreate | Ioctl::Submit | Ioctl::BindArray => IOC_READ | IOC_WRITE,
            Ioctl::CtxConfig | Ioctl::Bind | Ioctl::Unbind | Ioctl::GemClose => IOC_WRITE,
            Ioctl::Stats => IOC_READ,
            Ioctl::Unknown => 0,
        }
    }

    /// The kernel's argument size.
    pub fn size(self) -> usize {
        match self {
            Ioctl::GetParam => 16,
            Ioctl::CtxConfig => 8,
            Ioctl::UserptrCreate => 24,
            Ioctl::Bind | Ioctl::Unbind => 16,
            Ioctl::Submit => 48,
            Ioctl::Stats => 288,
            Ioctl::BindArray => 24,
            Ioctl::GemClose => 8,
            Ioctl::Unknown => 0,
        }
    }

    /// The request number as the header defines it.
    pub fn request(self) -> u32 {
        ioc(self.dir(), DRM_TYPE, self.nr(), self.size())
    }

    /// The errnos documented for it (besides success and the DRM core's EFAULT for an
    /// argument it cannot copy). EINTR is documented only for a fatal signal, which the
    /// fuzzer never sends to a process it keeps, so it is not in these sets.
    pub fn documented(self) -> ErrSet {
        match self {
            Ioctl::GetParam => ErrSet::of(&[EINVAL]),
            Ioctl::CtxConfig => ErrSet::of(&[EINVAL, EBUSY, EPERM, ENOMEM, ENOSPC, ENODEV, EIO, ETIMEDOUT]),
            Ioctl::UserptrCreate => ErrSet::of(&[EINVAL, EPERM, ENOMEM, ENOSPC, ENODEV, EIO, ETIMEDOUT]),
            Ioctl::Bind => ErrSet::of(&[ENOENT, EINVAL, EBUSY, EPERM, EIO, ETIMEDOUT, ENODEV, ENOMEM]),
            Ioctl::Unbind => ErrSet::of(&[ENOENT, EINVAL, EPERM, EIO, ETIMEDOUT, ENODEV]),
            Ioctl::Submit => {
                ErrSet::of(&[EINVAL, EFAULT, ENOENT, EPERM, EAGAIN, EBUSY, ETIMEDOUT, EIO, ENODEV, ENOMEM, ENOSPC])
            }
            Ioctl::Stats => ErrSet::of(&[EIO, ETIMEDOUT, ENODEV, ENOMEM]),
            // EINTR is documented with the device errors ("did not confirm"); it is the
            // device wait cut short by a fatal signal, which the fuzzer never sends.
            Ioctl::BindArray => ErrSet::of(&[EINVAL, ENOENT, EBUSY, EFAULT, EPERM, ENOMEM, EIO, ETIMEDOUT, ENODEV]),
            Ioctl::GemClose => ErrSet::of(&[EINVAL, ENOENT]),
            Ioctl::Unknown => ErrSet::of(&[EINVAL, ENOTTY]),
        }
    }
}

/// A set of results: bit 0 is success, bit `e` errno `e` (errnos above 127 are never in a set:
/// a leaked ERESTARTSYS (512) is always a failure).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ErrSet(pub u128);

impl ErrSet {
    /// Success only.
    pub const OK: ErrSet = ErrSet(1);

    /// These errnos.
    pub const fn of(errnos: &[i32]) -> ErrSet {
        let mut m = 0u128;
        let mut i = 0;
        while i < errnos.len() {
            m |= 1u128 << errnos[i];
            i += 1;
        }
        ErrSet(m)
    }

    /// Exactly one errno.
    pub const fn only(e: i32) -> ErrSet {
        ErrSet(1u128 << e)
    }

    /// Also `r` (0 = success).
    pub fn with(self, r: i32) -> ErrSet {
        if (0..128).contains(&r) {
            ErrSet(self.0 | 1u128 << r)
        } else {
            self
        }
    }

    /// Without `r`.
    pub fn without(self, r: i32) -> ErrSet {
        if (0..128).contains(&r) {
            ErrSet(self.0 & !(1u128 << r))
        } else {
            self
        }
    }

    /// Union.
    pub fn or(self, o: ErrSet) -> ErrSet {
        ErrSet(self.0 | o.0)
    }

    /// Whether result `r` (0 or an errno) is in the set.
    pub fn has(self, r: i32) -> bool {
        (0..128).contains(&r) && self.0 & (1u128 << r) != 0
    }

    /// `0|EINVAL|EFAULT`.
    pub fn describe(self) -> String {
        let v: Vec<String> = (0..128).filter(|&r| self.has(r)).map(errno_name).collect();
        if v.is_empty() {
            "(nothing)".into()
        } else {
            v.join("|")
        }
    }
}

/// `EINVAL` for 22, `"0"` for success, `E<n>` for one without a name here.
pub fn errno_name(r: i32) -> String {
    let s = match r {
        0 => "0",
        EPERM => "EPERM",
        ENOENT => "ENOENT",
        ESRCH => "ESRCH",
        EINTR => "EINTR",
        EIO => "EIO",
        E2BIG => "E2BIG",
        EBADF => "EBADF",
        EAGAIN => "EAGAIN",
        ENOMEM => "ENOMEM",
        EACCES => "EACCES",
        EFAULT => "EFAULT",
        EBUSY => "EBUSY",
        EEXIST => "EEXIST",
        ENODEV => "ENODEV",
        EINVAL => "EINVAL",
        ENOTTY => "ENOTTY",
        ENOSPC => "ENOSPC",
        ERANGE => "ERANGE",
        ENOSYS => "ENOSYS",
        EOVERFLOW => "EOVERFLOW",
        EOPNOTSUPP => "EOPNOTSUPP",
        ETIMEDOUT => "ETIMEDOUT",
        512 => "ERESTARTSYS(512)",
        513 => "ERESTARTNOINTR(513)",
        514 => "ERESTARTNOHAND(514)",
        516 => "ERESTART_RESTARTBLOCK(516)",
        _ => return format!("E{r}"),
    };
    s.into()
}

/// Whether memory is readable/writable by the kernel's user copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tri {
    /// Certainly.
    Yes,
    /// Certainly not.
    No,
    /// Depends (memory another thread changes, or a special mapping).
    Maybe,
}

/// Where a user pointer (the ioctl argument, the ops or handles array) points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ptr {
    /// The worker's own read-write scratch buffer.
    Valid,
    /// The same, off by 1..7 bytes.
    Misaligned,
    /// 0.
    Null,
    /// A page of the fuzzer's zone that is never mapped.
    Unmapped,
    /// A read-only view of the scratch buffer (a shared memfd mapped twice).
    ReadOnly,
    /// The `[vvar]` mapping (VM_IO | VM_PFNMAP, read-only).
    VmIo,
    /// Somewhere in the arena (memory other threads munmap/mprotect meanwhile).
    Arena,
    /// A kernel address.
    Kernel,
    /// A non-canonical address.
    NonCanonical,
    /// The end of the scratch buffer running into an unmapped page.
    Straddle,
}

impl Ptr {
    /// Every class.
    pub const ALL: [Ptr; 10] = [
        Ptr::Valid,
        Ptr::Misaligned,
        Ptr::Null,
        Ptr::Unmapped,
        Ptr::ReadOnly,
        Ptr::VmIo,
        Ptr::Arena,
        Ptr::Kernel,
        Ptr::NonCanonical,
        Ptr::Straddle,
    ];

    /// Can the kernel read `len > 0` bytes there?
    pub fn readable(self) -> Tri {
        match self {
            Ptr::Valid | Ptr::Misaligned | Ptr::ReadOnly => Tri::Yes,
            Ptr::VmIo | Ptr::Arena => Tri::Maybe,
            Ptr::Null | Ptr::Unmapped | Ptr::Kernel | Ptr::NonCanonical | Ptr::Straddle => Tri::No,
        }
    }

    /// Can the kernel write `len > 0` bytes there?
    pub fn writable(self) -> Tri {
        match self {
            Ptr::Valid | Ptr::Misaligned => Tri::Yes,
            Ptr::Arena => Tri::Maybe,
            _ => Tri::No,
        }
    }

    /// Whether the kernel sees exactly the bytes the fuzzer wrote there.
    pub fn intact(self) -> bool {
        self.readable() == Tri::Yes
    }
}

/// How many bytes `drm_ioctl` copies in and out for request `req` of `ioctl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transport {
    /// Bytes copied from user space (then zero-filled up to the driver's size).
    pub in_size: usize,
    /// Bytes copied back.
    pub out_size: usize,
    /// The type byte is not DRM's: ENOTTY before anything else.
    pub wrong_type: bool,
}

/// [`Transport`] of `req` for `ioctl` (as `drm_ioctl` computes it).
pub fn transport(ioctl: Ioctl, req: u32) -> Transport {
    let size = ioc_size(req);
    let common = ioc_dir(req) & ioctl.dir();
    Transport {
        in_size: if common & IOC_WRITE != 0 { size } else { 0 },
        out_size: if common & IOC_READ != 0 { size } else { 0 },
        wrong_type: ioc_type(req) != DRM_TYPE,
    }
}

/// The argument as the driver sees it: our bytes up to `in_size`, zeros after (at least
/// the driver's size).
pub fn kernel_view(ioctl: Ioctl, t: Transport, bytes: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8; ioctl.size().max(t.in_size)];
    let n = t.in_size.min(bytes.len());
    v[..n].copy_from_slice(&bytes[..n]);
    v
}

/// Little-endian field readers over a kernel view.
pub fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}
/// See [`u32_at`].
pub fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

/// What the fuzzer knows about a SUBMIT's arrays, for the oracle.
#[derive(Debug, Clone)]
pub struct SubmitArrays {
    /// The address placed in the `ops` field, its class, and the ops written there.
    pub ops_addr: u64,
    /// Readability of all `nr_ops` ops at `ops_addr`.
    pub ops_readable: Tri,
    /// The ops (as written, when readable).
    pub ops: Vec<Op>,
    /// The address in the `handles` field.
    pub handles_addr: u64,
    /// Readability of the handles array.
    pub handles_readable: Tri,
}

/// One BIND_ARRAY entry (`struct drm_vgpu_svm_bind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BindEntry {
    /// The object (ignored for an unbind).
    pub handle: u32,
    /// Must be 0.
    pub pad: u32,
    /// Where to bind it (for an unbind: the start of the binding).
    pub gpu_va: u64,
}

impl BindEntry {
    /// The ABI bytes.
    pub fn bytes(&self) -> [u8; BIND_ENTRY_SIZE] {
        let mut b = [0u8; BIND_ENTRY_SIZE];
        b[0..4].copy_from_slice(&self.handle.to_le_bytes());
        b[4..8].copy_from_slice(&self.pad.to_le_bytes());
        b[8..16].copy_from_slice(&self.gpu_va.to_le_bytes());
        b
    }
}

/// What the fuzzer knows about a BIND_ARRAY's entries, for the oracle.
#[derive(Debug, Clone)]
pub struct BindArrayEntries {
    /// The address placed in the `binds` field.
    pub addr: u64,
    /// Readability of all `count` entries at `addr`.
    pub readable: Tri,
    /// The entries written there (when readable; fewer than `count` if the call lies).
    pub entries: Vec<BindEntry>,
}

/// The user arrays an ioctl's argument points at, as the fuzzer placed them.
#[derive(Debug, Clone)]
pub enum Arrays {
    /// SUBMIT's ops and handles.
    Submit(SubmitArrays),
    /// BIND_ARRAY's entries.
    BindArray(BindArrayEntries),
}

impl Arrays {
    fn submit(&self) -> Option<&SubmitArrays> {
        match self {
            Arrays::Submit(a) => Some(a),
            Arrays::BindArray(_) => None,
        }
    }
    fn bind_array(&self) -> Option<&BindArrayEntries> {
        match self {
            Arrays::BindArray(a) => Some(a),
            Arrays::Submit(_) => None,
        }
    }
}

/// The caller's relation to the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// The process that opened the file.
    Owner,
    /// A fork child using its parent's file: EPERM for everything but GET_PARAM and STATS.
    Foreign,
}

/// An op that the header says SUBMIT refuses with EINVAL: unknown kind, nonzero flags, len
/// above VGPU_SVM_MAX_OP_LEN, a used range that overflows or ends past 2^48, ATOMIC_ADD not
/// 8-byte aligned.
pub fn op_invalid(op: &Op) -> bool {
    let past = |a: u64, len: u64| a.checked_add(len).is_none_or(|e| e > VA_LIMIT);
    if op.flags != 0 || op.len > MAX_OP_LEN {
        return true;
    }
    match op.kind {
        1 => past(op.dst, op.len) || past(op.src, op.len),
        2 | 5 => past(op.dst, op.len),
        3 | 6 => past(op.src, op.len),
        4 => op.dst % 8 != 0 || past(op.dst, 8),
        _ => true,
    }
}

/// Whether an op writes (and where, how many bytes): COPY/FILL/WRITE_PATTERN dst, ATOMIC_ADD
/// 8 bytes at dst.
pub fn op_write_range(op: &Op) -> Option<(u64, u64)> {
    match op.kind {
        1 | 2 | 5 => Some((op.dst, op.len)),
        4 => Some((op.dst, 8)),
        _ => None,
    }
}

/// What creating the file's device context (on first use, before most checks) may fail
/// with: the header lists these for every ioctl that creates it.
pub const CTX_CREATE_ERRORS: ErrSet = ErrSet::of(&[ENOMEM, ENOSPC, ENODEV, EIO, ETIMEDOUT]);

/// The results the driver may give for the argument `v` (a kernel view) of `ioctl`.
pub fn driver_expect(ioctl: Ioctl, v: &[u8], caller: Caller, arrays: Option<&Arrays>) -> ErrSet {
    let doc = ioctl.documented();
    // `shape`: an EINVAL condition the header names. `owner`: the result set for the owner
    // once the argument is well formed.
    let (shape, owner) = match ioctl {
        Ioctl::GetParam => {
            let (param, pad) = (u32_at(v, 0), u32_at(v, 4));
            if pad != 0 || !(1..=5).contains(&param) {
                (true, ErrSet::only(EINVAL))
            } else {
                (false, ErrSet::OK)
            }
        }
        Ioctl::CtxConfig => {
            let (flags, pad) = (u32_at(v, 0), u32_at(v, 4));
            let bad = pad != 0 || flags & !1 != 0;
            (bad, if bad { ErrSet::only(EINVAL) } else { doc.without(EINVAL).without(EPERM).with(0) })
        }
        Ioctl::UserptrCreate => {
            let (addr, size, flags) = (u64_at(v, 0), u64_at(v, 8), u32_at(v, 16));
            let bad_flags = flags & !1 != 0;
            let bad = bad_flags || size == 0 || addr % PAGE != 0 || size % PAGE != 0 || addr.checked_add(size).is_none();
            if bad_flags {
                (true, ErrSet::only(EINVAL))
            } else if bad {
                // The range is checked after the context exists (the header gives no order).
                (true, ErrSet::only(EINVAL).or(CTX_CREATE_ERRORS))
            } else {
                (false, doc.without(EPERM).with(0))
            }
        }
        Ioctl::Bind => {
            let (pad, gva) = (u32_at(v, 4), u64_at(v, 8));
            if pad != 0 || gva == 0 || gva % PAGE != 0 {
                (true, ErrSet::only(EINVAL))
            } else if gva >= VA_LIMIT {
                (true, ErrSet::of(&[EINVAL, ENOENT]).or(CTX_CREATE_ERRORS))
            } else {
                (false, doc.without(EPERM).with(0))
            }
        }
        Ioctl::Unbind => {
            let (pad, gva) = (u32_at(v, 4), u64_at(v, 8));
            if pad != 0 {
                (true, ErrSet::only(EINVAL))
            } else if gva == 0 || gva % PAGE != 0 || gva >= VA_LIMIT {
                // No binding can be there; creating the context on the way may fail.
                (false, ErrSet::of(&[ENOENT, EIO, ETIMEDOUT, ENODEV]))
            } else {
                (false, doc.without(EPERM).without(EINVAL).with(0))
            }
        }
        Ioctl::Submit => return submit_expect(v, caller, arrays.and_then(Arrays::submit)),
        Ioctl::BindArray => return bind_array_expect(v, caller, arrays.and_then(Arrays::bind_array)),
        Ioctl::Stats => (false, doc.with(0)),
        Ioctl::GemClose => (false, doc.with(0)),
        Ioctl::Unknown => (false, doc),
    };
    match (caller, ioctl) {
        (Caller::Owner, _) | (_, Ioctl::GetParam | Ioctl::Stats | Ioctl::GemClose | Ioctl::Unknown) => owner,
        (Caller::Foreign, _) if shape => ErrSet::of(&[EINVAL, EPERM]),
        (Caller::Foreign, _) => ErrSet::only(EPERM),
    }
}

fn submit_expect(v: &[u8], caller: Caller, arrays: Option<&SubmitArrays>) -> ErrSet {
    let doc = Ioctl::Submit.documented();
    let (ops_addr, nr_ops, flags) = (u64_at(v, 0), u32_at(v, 8), u32_at(v, 12));
    let (handles_addr, nr_handles, pad) = (u64_at(v, 16), u32_at(v, 24), u32_at(v, 28));
    if flags & !vgpu::uapi::VGPU_SVM_SUBMIT_PREFAULT != 0 || pad != 0 || nr_ops == 0 || nr_ops > MAX_OPS || nr_handles > MAX_HANDLES {
        return match caller {
            Caller::Owner => ErrSet::only(EINVAL),
            Caller::Foreign => ErrSet::of(&[EINVAL, EPERM]),
        };
    }
    let mut extra = ErrSet::default(); // what the header allows besides EPERM for a foreign caller
    let mut exact = None;
    // The arrays: what we know only if the view carries the addresses we placed.
    let ops_r = match arrays {
        Some(a) if a.ops_addr == ops_addr => a.ops_readable,
        _ if ops_addr == 0 => Tri::No,
        _ => Tri::Maybe,
    };
    match ops_r {
        Tri::No => exact = Some(ErrSet::only(EFAULT)),
        Tri::Yes => {
            let a = arrays.expect("readable ops come from the arrays we placed");
            let ops = &a.ops[..(nr_ops as usize).min(a.ops.len())];
            if ops.len() == nr_ops as usize && ops.iter().any(op_invalid) {
                exact = Some(ErrSet::only(EINVAL));
            } else if nr_handles > 0 {
                let h_r = match arrays {
                    Some(a) if a.handles_addr == handles_addr => a.handles_readable,
                    _ if handles_addr == 0 => Tri::No,
                    _ => Tri::Maybe,
                };
                if h_r == Tri::No {
                    exact = Some(ErrSet::only(EFAULT));
                }
            }
        }
        Tri::Maybe => {}
    }
    if let Some(e) = exact {
        extra = e;
    }
    match caller {
        Caller::Owner => exact.unwrap_or(doc.with(0)),
        Caller::Foreign => extra.with(EPERM),
    }
}

/// BIND_ARRAY's array-level fields are wrong (count 0 or above the maximum, unknown
/// flags, nonzero pad): EINVAL before any entry is looked at, `.failed` NO_ENTRY.
pub fn bind_array_shape_bad(v: &[u8]) -> bool {
    let (count, flags, pad) = (u32_at(v, 8), u32_at(v, 12), u32_at(v, 20));
    count == 0 || count > BIND_ARRAY_MAX || flags & !BIND_ARRAY_UNBIND != 0 || pad != 0
}

/// A BIND_ARRAY entry that the header says fails with EINVAL whatever the file holds: nonzero
/// pad; for a bind also gpu_va 0, unaligned or at/above 2^48.
fn entry_invalid(e: &BindEntry, unbind: bool) -> bool {
    e.pad != 0 || (!unbind && (e.gpu_va == 0 || e.gpu_va % PAGE != 0 || e.gpu_va >= VA_LIMIT))
}

/// Whether entry `i` of `entries` can be the one an EINVAL is due to (`.failed == i`): its
/// pad; for a bind its gpu_va (0, unaligned, or a range that may end past 2^48: objects are
/// at most 64 GiB) or its object (one of another file: the fuzzer never shares objects
/// between files, so that cannot be); for an unbind the same binding named at an earlier
/// entry ("@failed the second").
pub fn entry_may_be_einval(entries: &[BindEntry], i: usize, unbind: bool) -> bool {
    let e = entries[i];
    if e.pad != 0 {
        return true;
    }
    if unbind {
        return entries[..i].iter().any(|p| p.gpu_va == e.gpu_va);
    }
    e.gpu_va == 0 || e.gpu_va % PAGE != 0 || e.gpu_va.checked_add(MAX_OBJECT).is_none_or(|end| end > VA_LIMIT)
}

/// What a BIND_ARRAY whose entries are all known must fail with, if the header says it
/// cannot succeed whatever the file holds (None: it may). A bind cannot with an invalid
/// entry, two entries naming one object ("named twice") or starting at one gpu_va (ranges of
/// at least a page overlap); an unbind cannot with nonzero pad, a gpu_va where no binding can
/// start (0, unaligned, at/above 2^48) or one binding named twice. Which entry's error comes
/// first the header does not say, so any of the per-entry errors (and ENOMEM); the device
/// never learns of the array, so no device error.
pub fn bind_array_doomed(entries: &[BindEntry], unbind: bool) -> Option<ErrSet> {
    let dup = |f: fn(&BindEntry) -> u64| {
        let mut v: Vec<u64> = entries.iter().map(f).collect();
        v.sort_unstable();
        v.windows(2).any(|w| w[0] == w[1])
    };
    if unbind {
        let nowhere = |e: &BindEntry| e.gpu_va == 0 || e.gpu_va % PAGE != 0 || e.gpu_va >= VA_LIMIT;
        if entries.iter().any(|e| entry_invalid(e, true) || nowhere(e)) || dup(|e| e.gpu_va) {
            return Some(ErrSet::of(&[EINVAL, ENOENT, ENOMEM]));
        }
        return None;
    }
    if entries.iter().any(|e| entry_invalid(e, false)) || dup(|e| e.handle as u64) || dup(|e| e.gpu_va) {
        return Some(ErrSet::of(&[EINVAL, ENOENT, EBUSY, ENOMEM]));
    }
    None
}

fn bind_array_expect(v: &[u8], caller: Caller, arrays: Option<&BindArrayEntries>) -> ErrSet {
    let doc = Ioctl::BindArray.documented();
    if bind_array_shape_bad(v) {
        return match caller {
            Caller::Owner => ErrSet::only(EINVAL),
            Caller::Foreign => ErrSet::of(&[EINVAL, EPERM]),
        };
    }
    let (addr, count, unbind) = (u64_at(v, 0), u32_at(v, 8), u32_at(v, 12) & BIND_ARRAY_UNBIND != 0);
    // EBUSY is a bind error only.
    let doc = if unbind { doc.without(EBUSY) } else { doc };
    // The entries: what we know only if the view carries the address we placed.
    let readable = match arrays {
        Some(a) if a.addr == addr => a.readable,
        _ if addr == 0 => Tri::No,
        _ => Tri::Maybe,
    };
    // `exact`: what the owner gets; for a foreign caller these or EPERM (no order given).
    let exact = match readable {
        Tri::No => Some(ErrSet::only(EFAULT)),
        Tri::Yes => {
            let a = arrays.expect("readable entries come from the array we placed");
            match a.entries.get(..count as usize) {
                Some(e) => bind_array_doomed(e, unbind),
                None => None,
            }
            .or(Some(doc.without(EPERM).without(EFAULT).with(0)))
        }
        Tri::Maybe => None,
    };
    match caller {
        Caller::Owner => exact.unwrap_or(doc.without(EPERM).with(0)),
        Caller::Foreign => match (readable, exact) {
            (_, Some(e)) if !e.has(0) => e.with(EPERM),
            // Unknown entries: whatever they may cause before the mm is checked, never
            // success and no device error (the device never learns of the array).
            (Tri::Maybe, _) => ErrSet::of(&[EPERM, EFAULT, EINVAL, ENOENT, ENOMEM]).or(if unbind { ErrSet::default() } else { ErrSet::only(EBUSY) }),
            _ => ErrSet::only(EPERM),
        },
    }
}

/// Whether BIND_ARRAY's `.failed`, read back after a call that returned `got`, is what the
/// header promises (`v`: the kernel view of the argument; `entries`: the entries, when all
/// `count` are known): VGPU_SVM_BIND_ARRAY_NO_ENTRY on success and for an error no single
/// entry is to blame (the array-level fields, EFAULT, EPERM, ENOMEM, the device errors); an
/// index below `count` for ENOENT and EBUSY; either for EINVAL, and an index only of an
/// entry that can be to blame.
pub fn bind_array_failed_ok(v: &[u8], got: i32, failed: u32, entries: Option<&[BindEntry]>) -> bool {
    let count = u32_at(v, 8);
    let unbind = u32_at(v, 12) & BIND_ARRAY_UNBIND != 0;
    if got == 0 || bind_array_shape_bad(v) {
        return failed == NO_ENTRY;
    }
    match got {
        ENOENT | EBUSY => failed < count,
        EINVAL => {
            failed == NO_ENTRY
                || (failed < count
                    && entries.is_none_or(|e| e.len() < count as usize || entry_may_be_einval(e, failed as usize, unbind)))
        }
        _ => failed == NO_ENTRY,
    }
}

/// All results allowed for a call of `ioctl` with request `req` and argument bytes `bytes` at
/// a pointer of class `ptr`.
pub fn expect(ioctl: Ioctl, req: u32, ptr: Ptr, bytes: &[u8], caller: Caller, arrays: Option<&Arrays>) -> ErrSet {
    let t = transport(ioctl, req);
    if t.wrong_type {
        return ErrSet::only(ENOTTY);
    }
    if ioctl == Ioctl::Unknown {
        return ErrSet::only(EINVAL);
    }
    // drm_ioctl kmallocs arguments above 128 bytes.
    let kmalloc = if t.in_size.max(t.out_size).max(ioctl.size()) > 128 { ErrSet::only(ENOMEM) } else { ErrSet::default() };
    let driver = if t.in_size == 0 {
        driver_expect(ioctl, &kernel_view(ioctl, t, &[]), caller, None)
    } else {
        match ptr.readable() {
            Tri::No => return ErrSet::only(EFAULT).or(kmalloc),
            Tri::Maybe => match (caller, ioctl) {
                (
                    Caller::Foreign,
                    Ioctl::CtxConfig | Ioctl::UserptrCreate | Ioctl::Bind | Ioctl::Unbind | Ioctl::Submit | Ioctl::BindArray,
                ) => {
                    ErrSet::of(&[EINVAL, EPERM, EFAULT])
                }
                _ => ioctl.documented().with(0).with(EFAULT),
            },
            Tri::Yes => driver_expect(ioctl, &kernel_view(ioctl, t, bytes), caller, arrays),
        }
    };
    let out = if t.out_size == 0 {
        driver
    } else {
        match ptr.writable() {
            Tri::No => ErrSet::only(EFAULT),
            Tri::Maybe => driver.with(EFAULT),
            Tri::Yes => driver,
        }
    };
    out.or(kmalloc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vgpu::uapi;

    #[test]
    fn request_numbers_match_the_header() {
        assert_eq!(Ioctl::GetParam.request(), uapi::DRM_IOCTL_VGPU_SVM_GET_PARAM);
        assert_eq!(Ioctl::CtxConfig.request(), uapi::DRM_IOCTL_VGPU_SVM_CTX_CONFIG);
        assert_eq!(Ioctl::UserptrCreate.request(), uapi::DRM_IOCTL_VGPU_SVM_USERPTR_CREATE);
        assert_eq!(Ioctl::Bind.request(), uapi::DRM_IOCTL_VGPU_SVM_BIND);
        assert_eq!(Ioctl::Unbind.request(), uapi::DRM_IOCTL_VGPU_SVM_UNBIND);
        assert_eq!(Ioctl::Submit.request(), uapi::DRM_IOCTL_VGPU_SVM_SUBMIT);
        assert_eq!(Ioctl::Stats.request(), uapi::DRM_IOCTL_VGPU_SVM_STATS);
        assert_eq!(Ioctl::BindArray.request(), uapi::DRM_IOCTL_VGPU_SVM_BIND_ARRAY);
        assert_eq!(Ioctl::BindArray.size(), std::mem::size_of::<uapi::drm_vgpu_svm_bind_array>());
        assert_eq!(FAILED_OFFSET, std::mem::offset_of!(uapi::drm_vgpu_svm_bind_array, failed));
        assert_eq!(BIND_ENTRY_SIZE, std::mem::size_of::<uapi::drm_vgpu_svm_bind>());
        assert_eq!(BIND_ARRAY_MAX, uapi::VGPU_SVM_BIND_ARRAY_MAX);
        assert_eq!(BIND_ARRAY_UNBIND, uapi::VGPU_SVM_BIND_ARRAY_UNBIND);
        assert_eq!(NO_ENTRY, uapi::VGPU_SVM_BIND_ARRAY_NO_ENTRY);
        // Every ioctl has its own number (the unknown one is past the driver's table).
        let mut nrs: Vec<u8> = Ioctl::ALL.iter().map(|i| i.nr()).collect();
        nrs.sort_unstable();
        nrs.dedup();
        assert_eq!(nrs.len(), Ioctl::ALL.len());
        assert_eq!(Ioctl::GemClose.request(), 0x4008_6409);
        assert_eq!(Ioctl::Stats.size(), std::mem::size_of::<uapi::drm_vgpu_svm_stats>());
        assert_eq!(Ioctl::Submit.size(), std::mem::size_of::<uapi::drm_vgpu_svm_submit>());
        assert_eq!(Ioctl::UserptrCreate.size(), std::mem::size_of::<uapi::drm_vgpu_svm_userptr_create>());
        assert_eq!(MAX_OP_LEN, uapi::VGPU_SVM_MAX_OP_LEN);
        assert_eq!(MAX_OPS, uapi::VGPU_SVM_MAX_OPS);
    }

    #[test]
    fn errsets_and_names() {
        let s = ErrSet::of(&[EINVAL, EFAULT]).with(0);
        assert!(s.has(0) && s.has(EINVAL) && !s.has(EPERM) && !s.has(512) && !s.has(-1));
        assert_eq!(s.describe(), "0|EFAULT|EINVAL");
        assert_eq!(errno_name(512), "ERESTARTSYS(512)");
        assert_eq!(errno_name(200), "E200");
        assert!(!Ioctl::Submit.documented().has(EINTR), "no signals: EINTR is a failure");
        assert!(!Ioctl::Unbind.documented().has(ENOMEM));
    }

    fn getp(param: u32, pad: u32) -> Vec<u8> {
        let mut b = vec![0u8; 16];
        b[..4].copy_from_slice(&param.to_le_bytes());
        b[4..8].copy_from_slice(&pad.to_le_bytes());
        b
    }

    #[test]
    fn arguments_the_kernel_cannot_copy() {
        let req = Ioctl::GetParam.request();
        let o = Caller::Owner;
        assert_eq!(expect(Ioctl::GetParam, req, Ptr::Valid, &getp(1, 0), o, None), ErrSet::OK);
        assert_eq!(expect(Ioctl::GetParam, req, Ptr::Valid, &getp(99, 0), o, None), ErrSet::only(EINVAL));
        assert_eq!(expect(Ioctl::GetParam, req, Ptr::Null, &getp(1, 0), o, None), ErrSet::only(EFAULT));
        // Read-only: read fine, the copy back fails whatever the driver said.
        assert_eq!(expect(Ioctl::GetParam, req, Ptr::ReadOnly, &getp(99, 0), o, None), ErrSet::only(EFAULT));
        // CTX_CONFIG is _IOW: a read-only argument is fine.
        let cfg = [1u8, 0, 0, 0, 0, 0, 0, 0];
        let e = expect(Ioctl::CtxConfig, Ioctl::CtxConfig.request(), Ptr::ReadOnly, &cfg, o, None);
        assert!(e.has(0) && e.has(EBUSY) && !e.has(EFAULT) && !e.has(EPERM));
        // STATS is _IOR: nothing is read.
        let e = expect(Ioctl::Stats, Ioctl::Stats.request(), Ptr::Null, &[], o, None);
        assert_eq!(e, ErrSet::only(EFAULT).or(ErrSet::only(ENOMEM)));
        // Another type byte: ENOTTY first.
        let wrong = ioc(3, b'x', 0x40, 16);
        assert_eq!(expect(Ioctl::GetParam, wrong, Ptr::Null, &[], o, None), ErrSet::only(ENOTTY));
        // A short GET_PARAM (4 bytes): pad reads as 0, so a known param succeeds.
        let short = ioc(3, b'd', 0x40, 4);
        assert_eq!(expect(Ioctl::GetParam, short, Ptr::Valid, &getp(2, 7), o, None), ErrSet::OK);
        // No IN bit: the driver sees zeros (param 0).
        let out_only = ioc(IOC_READ, b'd', 0x40, 16);
        assert_eq!(expect(Ioctl::GetParam, out_only, Ptr::Valid, &getp(2, 0), o, None), ErrSet::only(EINVAL));
        assert_eq!(expect(Ioctl::Unknown, ioc(3, b'd', 0x50, 8), Ptr::Null, &[], o, None), ErrSet::only(EINVAL));
        // Maybe-readable memory: anything documented.
        let e = expect(Ioctl::Bind, Ioctl::Bind.request(), Ptr::Arena, &[0; 16], o, None);
        assert!(e.has(0) && e.has(EFAULT) && e.has(ENOENT) && !e.has(ENOSPC));
    }

    fn submit_bytes(ops: u64, nr_ops: u32, handles: u64, nr_handles: u32) -> Vec<u8> {
        let mut b = vec![0u8; 48];
        b[..8].copy_from_slice(&ops.to_le_bytes());
        b[8..12].copy_from_slice(&nr_ops.to_le_bytes());
        b[16..24].copy_from_slice(&handles.to_le_bytes());
        b[24..28].copy_from_slice(&nr_handles.to_le_bytes());
        b
    }

    #[test]
    fn submit_rules() {
        let read = Op { kind: 6, flags: 0, dst: 0, src: 0x1000, len: 8, value: 0 };
        let arrays = |ops: Vec<Op>, r: Tri, hr: Tri| Arrays::Submit(SubmitArrays { ops_addr: 0x5000, ops_readable: r, ops, handles_addr: 0x6000, handles_readable: hr });
        let req = Ioctl::Submit.request();
        let o = Caller::Owner;
        let ok = arrays(vec![read], Tri::Yes, Tri::Yes);
        let e = expect(Ioctl::Submit, req, Ptr::Valid, &submit_bytes(0x5000, 1, 0x6000, 1), o, Some(&ok));
        assert!(e.has(0) && e.has(EFAULT) && e.has(EPERM) && !e.has(EINTR));
        assert_eq!(expect(Ioctl::Submit, req, Ptr::Valid, &submit_bytes(0x5000, 0, 0, 0), o, Some(&ok)), ErrSet::only(EINVAL));
        assert_eq!(expect(Ioctl::Submit, req, Ptr::Valid, &submit_bytes(0x5000, 65, 0, 0), o, Some(&ok)), ErrSet::only(EINVAL));
        let bad = arrays(vec![Op { len: MAX_OP_LEN + 1, ..read }], Tri::Yes, Tri::Yes);
        assert_eq!(expect(Ioctl::Submit, req, Ptr::Valid, &submit_bytes(0x5000, 1, 0, 0), o, Some(&bad)), ErrSet::only(EINVAL));
        let unreadable = arrays(vec![read], Tri::No, Tri::Yes);
        assert_eq!(expect(Ioctl::Submit, req, Ptr::Valid, &submit_bytes(0x5000, 1, 0, 0), o, Some(&unreadable)), ErrSet::only(EFAULT));
        let bad_handles = arrays(vec![read], Tri::Yes, Tri::No);
        assert_eq!(expect(Ioctl::Submit, req, Ptr::Valid, &submit_bytes(0x5000, 1, 0x6000, 3), o, Some(&bad_handles)), ErrSet::only(EFAULT));
        // nr_handles 0: the array is not read.
        assert!(expect(Ioctl::Submit, req, Ptr::Valid, &submit_bytes(0x5000, 1, 0x6000, 0), o, Some(&bad_handles)).has(0));
        // A fork child with the parent's file: EPERM for a well-formed job, never success.
        let f = Caller::Foreign;
        assert_eq!(expect(Ioctl::Submit, req, Ptr::Valid, &submit_bytes(0x5000, 1, 0x6000, 1), f, Some(&ok)), ErrSet::only(EPERM));
        assert_eq!(expect(Ioctl::Submit, req, Ptr::Valid, &submit_bytes(0x5000, 0, 0, 0), f, Some(&ok)), ErrSet::of(&[EINVAL, EPERM]));
        // The submit is _IOWR: a read-only argument runs the job, then the copy back fails.
        assert_eq!(expect(Ioctl::Submit, req, Ptr::ReadOnly, &submit_bytes(0x5000, 1, 0, 0), o, Some(&ok)), ErrSet::only(EFAULT));
    }

    fn bind_array_bytes(binds: u64, count: u32, flags: u32, pad: u32) -> Vec<u8> {
        let mut b = vec![0u8; 24];
        b[..8].copy_from_slice(&binds.to_le_bytes());
        b[8..12].copy_from_slice(&count.to_le_bytes());
        b[12..16].copy_from_slice(&flags.to_le_bytes());
        b[16..20].copy_from_slice(&0x1234u32.to_le_bytes()); // failed: out only
        b[20..24].copy_from_slice(&pad.to_le_bytes());
        b
    }

    fn entries(r: Tri, e: &[(u32, u32, u64)]) -> Arrays {
        Arrays::BindArray(BindArrayEntries {
            addr: 0x7000,
            readable: r,
            entries: e.iter().map(|&(handle, pad, gpu_va)| BindEntry { handle, pad, gpu_va }).collect(),
        })
    }

    #[test]
    fn bind_array_rules() {
        let req = Ioctl::BindArray.request();
        let (o, f) = (Caller::Owner, Caller::Foreign);
        let ba = |a: &Arrays, count, flags, pad, c| expect(Ioctl::BindArray, req, Ptr::Valid, &bind_array_bytes(0x7000, count, flags, pad), c, Some(a));
        let g = 0x3000_0000_0000u64;
        let ok = entries(Tri::Yes, &[(1, 0, g), (2, 0, g + 0x10000)]);
        let e = ba(&ok, 2, 0, 0, o);
        assert!(e.has(0) && e.has(ENOENT) && e.has(EBUSY) && e.has(EIO) && e.has(ENOMEM) && e.has(EINVAL));
        assert!(!e.has(EFAULT) && !e.has(EPERM) && !e.has(EINTR) && !e.has(ENOSPC), "{}", e.describe());
        // Array-level fields: EINVAL, nothing else.
        for (count, flags, pad) in [(0, 0, 0), (BIND_ARRAY_MAX + 1, 0, 0), (u32::MAX, 0, 0), (2, 2, 0), (2, 1 << 31, 0), (2, 0, 1)] {
            assert_eq!(ba(&ok, count, flags, pad, o), ErrSet::only(EINVAL), "count {count} flags {flags:#x} pad {pad:#x}");
            assert_eq!(ba(&ok, count, flags, pad, f), ErrSet::of(&[EINVAL, EPERM]));
        }
        // The limit itself is fine (entries beyond those written: unknown, anything documented).
        assert!(ba(&ok, BIND_ARRAY_MAX, 0, 0, o).has(0));
        // Unreadable entries (NULL, unmapped, half mapped): EFAULT.
        let bad_ptr = entries(Tri::No, &[(1, 0, g)]);
        assert_eq!(ba(&bad_ptr, 1, 0, 0, o), ErrSet::only(EFAULT));
        assert_eq!(ba(&bad_ptr, 1, 1, 0, o), ErrSet::only(EFAULT));
        assert_eq!(ba(&bad_ptr, 1, 0, 0, f), ErrSet::of(&[EFAULT, EPERM]));
        assert_eq!(expect(Ioctl::BindArray, req, Ptr::Valid, &bind_array_bytes(0, 3, 0, 0), o, None), ErrSet::only(EFAULT));
        // Entries the oracle cannot see (memory others change): anything documented.
        let maybe = entries(Tri::Maybe, &[]);
        let e = ba(&maybe, 5, 0, 0, o);
        assert!(e.has(0) && e.has(EFAULT) && !e.has(EPERM));
        assert!(!ba(&maybe, 5, 0, 0, f).has(0));
        // Bind entries that cannot succeed: per-entry errors only, never success or a device error.
        let doomed = |e: &[(u32, u32, u64)], flags| ba(&entries(Tri::Yes, e), e.len() as u32, flags, 0, o);
        let per_entry = ErrSet::of(&[EINVAL, ENOENT, EBUSY, ENOMEM]);
        assert_eq!(doomed(&[(1, 0, g), (2, 1, g + 0x10000)], 0), per_entry, "nonzero pad");
        assert_eq!(doomed(&[(1, 0, g), (2, 0, 0)], 0), per_entry, "gpu_va 0");
        assert_eq!(doomed(&[(1, 0, g + 8), (2, 0, g + 0x10000)], 0), per_entry, "misaligned");
        assert_eq!(doomed(&[(1, 0, VA_LIMIT), (2, 0, g)], 0), per_entry, "at 2^48");
        assert_eq!(doomed(&[(1, 0, u64::MAX - 4095)], 0), per_entry, "wrapping");
        assert_eq!(doomed(&[(1, 0, g), (1, 0, g + 0x10000)], 0), per_entry, "an object named twice");
        assert_eq!(doomed(&[(1, 0, g), (2, 0, g)], 0), per_entry, "two ranges at one gpu_va");
        // Adjacent, or the highest page below 2^48: may succeed.
        assert!(doomed(&[(1, 0, g), (2, 0, g + 4096)], 0).has(0));
        assert!(doomed(&[(1, 0, VA_LIMIT - 4096)], 0).has(0));
        // A foreign caller: EPERM, or the entry error; never success.
        let fe = ba(&entries(Tri::Yes, &[(1, 0, g), (1, 0, g + 0x10000)]), 2, 0, 0, f);
        assert_eq!(fe, per_entry.with(EPERM));
        assert_eq!(ba(&ok, 2, 0, 0, f), ErrSet::only(EPERM));
        assert_eq!(ba(&ok, 2, BIND_ARRAY_UNBIND, 0, f), ErrSet::only(EPERM));
        // Unbind: handles are ignored; pad, an impossible gpu_va or a binding named twice fail.
        let u = ErrSet::of(&[EINVAL, ENOENT, ENOMEM]);
        let e = doomed(&[(1, 0, g), (1, 0, g + 0x10000)], BIND_ARRAY_UNBIND);
        assert!(e.has(0) && e.has(ENOENT) && e.has(EIO) && !e.has(EFAULT), "the same handle twice is fine for an unbind");
        assert!(!e.has(EBUSY), "EBUSY is not an unbind error");
        assert!(!ba(&maybe, 5, BIND_ARRAY_UNBIND, 0, o).has(EBUSY) && !ba(&maybe, 5, BIND_ARRAY_UNBIND, 0, f).has(EBUSY));
        assert_eq!(doomed(&[(1, 0, g), (2, 0, g)], BIND_ARRAY_UNBIND), u, "one binding named twice");
        assert_eq!(doomed(&[(1, 7, g)], BIND_ARRAY_UNBIND), u, "nonzero pad");
        assert_eq!(doomed(&[(1, 0, g), (1, 0, g + 1)], BIND_ARRAY_UNBIND), u, "no binding starts unaligned");
        assert_eq!(doomed(&[(1, 0, 0)], BIND_ARRAY_UNBIND), u);
        assert_eq!(doomed(&[(1, 0, VA_LIMIT)], BIND_ARRAY_UNBIND), u);
        // _IOWR: a read-only argument fails the copy back; a short request number sees zeros.
        let ro = expect(Ioctl::BindArray, req, Ptr::ReadOnly, &bind_array_bytes(0x7000, 2, 0, 0), o, Some(&ok));
        assert_eq!(ro, ErrSet::only(EFAULT));
        let short = ioc(IOC_READ | IOC_WRITE, b'd', 0x47, 8);
        assert_eq!(expect(Ioctl::BindArray, short, Ptr::Valid, &bind_array_bytes(0x7000, 2, 0, 0), o, Some(&ok)), ErrSet::only(EINVAL), "count reads 0");
    }

    #[test]
    fn bind_array_failed_index() {
        let g = 0x3000_0000_0000u64;
        let v = bind_array_bytes(0x7000, 3, 0, 0);
        let u = bind_array_bytes(0x7000, 3, BIND_ARRAY_UNBIND, 0);
        let en = |e: &[(u32, u32, u64)]| e.iter().map(|&(handle, pad, gpu_va)| BindEntry { handle, pad, gpu_va }).collect::<Vec<_>>();
        let clean = en(&[(1, 0, g), (2, 0, g + 0x10000), (3, 0, g + 0x20000)]);
        // Success: NO_ENTRY, nothing else.
        assert!(bind_array_failed_ok(&v, 0, NO_ENTRY, Some(&clean)));
        assert!(!bind_array_failed_ok(&v, 0, 0, Some(&clean)));
        assert!(!bind_array_failed_ok(&v, 0, 0x1234, None));
        // An entry to blame: an index below count.
        for e in [ENOENT, EBUSY] {
            assert!(bind_array_failed_ok(&v, e, 2, Some(&clean)));
            assert!(!bind_array_failed_ok(&v, e, 3, Some(&clean)));
            assert!(!bind_array_failed_ok(&v, e, NO_ENTRY, Some(&clean)));
        }
        // No entry to blame: NO_ENTRY.
        for e in [EFAULT, EPERM, ENOMEM, EIO, ETIMEDOUT, ENODEV] {
            assert!(bind_array_failed_ok(&v, e, NO_ENTRY, None));
            assert!(!bind_array_failed_ok(&v, e, 0, None), "{}", errno_name(e));
        }
        // EINVAL: array-level fields -> NO_ENTRY; else NO_ENTRY or an entry that can be to blame.
        assert!(!bind_array_failed_ok(&bind_array_bytes(0x7000, 3, 4, 0), EINVAL, 0, Some(&clean)));
        assert!(bind_array_failed_ok(&bind_array_bytes(0x7000, 0, 0, 0), EINVAL, NO_ENTRY, None));
        assert!(bind_array_failed_ok(&v, EINVAL, NO_ENTRY, Some(&clean)));
        assert!(!bind_array_failed_ok(&v, EINVAL, 1, Some(&clean)), "entry 1 is a fine bind");
        assert!(bind_array_failed_ok(&v, EINVAL, 1, None), "entries unknown");
        assert!(!bind_array_failed_ok(&v, EINVAL, 3, None));
        let bad = en(&[(1, 0, g), (2, 0, g + 12), (3, 1, g + 0x20000)]);
        assert!(bind_array_failed_ok(&v, EINVAL, 1, Some(&bad)) && bind_array_failed_ok(&v, EINVAL, 2, Some(&bad)));
        assert!(!bind_array_failed_ok(&v, EINVAL, 0, Some(&bad)));
        let high = en(&[(1, 0, VA_LIMIT - 8192), (2, 0, g), (3, 0, g + 0x10000)]);
        assert!(bind_array_failed_ok(&v, EINVAL, 0, Some(&high)), "an object's range may end past 2^48");
        // Unbind: the second of two entries naming one binding, or a nonzero pad.
        let twice = en(&[(9, 0, g), (9, 0, g + 0x10000), (9, 0, g)]);
        assert!(bind_array_failed_ok(&u, EINVAL, 2, Some(&twice)));
        assert!(!bind_array_failed_ok(&u, EINVAL, 0, Some(&twice)), "the first of the pair is not to blame");
        assert!(!bind_array_failed_ok(&u, EINVAL, 1, Some(&twice)));
        assert!(bind_array_failed_ok(&u, ENOENT, 0, Some(&twice)));
    }

    #[test]
    fn op_validity_follows_the_header() {
        let op = |kind, dst, src, len| Op { kind, flags: 0, dst, src, len, value: 0 };
        assert!(!op_invalid(&op(6, 0, VA_LIMIT - 8, 8)));
        assert!(op_invalid(&op(6, 0, VA_LIMIT - 8, 9)));
        assert!(op_invalid(&op(4, u64::MAX - 7, 0, 0)), "the ATOMIC_ADD at 2^64 - 8 oops");
        assert!(op_invalid(&op(4, 0x1004, 0, 0)));
        assert!(!op_invalid(&op(4, 0x1008, 0, u64::MAX >> 40)));
        assert!(op_invalid(&op(4, 0x1008, 0, u64::MAX)), "len above the maximum, whatever the kind");
        assert!(op_invalid(&op(2, u64::MAX, 0, 2)));
        assert!(!op_invalid(&op(2, 0x1000, u64::MAX, 2)), "FILL does not use src");
        assert!(op_invalid(&op(1, 0x1000, u64::MAX, 2)));
        assert!(op_invalid(&op(0, 0x1000, 0x1000, 2)));
        assert!(op_invalid(&op(7, 0x1000, 0x1000, 2)));
        assert!(op_invalid(&Op { flags: 1, ..op(6, 0, 0x1000, 1) }));
        assert_eq!(op_write_range(&op(4, 8, 0, 99)), Some((8, 8)));
        assert_eq!(op_write_range(&op(3, 8, 0, 99)), None);
    }
}
