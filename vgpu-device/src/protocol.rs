//! The VGPU_SVM command stream (`uapi/vgpu_svm_protocol.h`): parsing the
//! command carried by one SUBMIT_3D, and serializing `struct vgpu_svm_resp`.
//!
//! Every field is read with a bounds check from the byte slice, so a short
//! or garbage command is an error ([`Rejection`]), never a panic. Validation
//! that needs no device state happens here: reserved fields zero, sizes,
//! alignment, address ranges inside the 48-bit GPU VA space, op counts and
//! lengths. Trailing bytes after a command's layout are ignored (as virtio
//! does for requests).

use std::fmt;
use std::mem::{offset_of, size_of};

use serde::Serialize;
use vgpu_uapi as u;

use crate::layout::gpu;

/// Size of `struct vgpu_svm_resp` (the answer's payload after the ctrl header).
pub const RESP_SIZE: usize = size_of::<u::vgpu_svm_resp>();
/// Size of `struct vgpu_svm_cmd_hdr`.
pub const CMD_HDR_SIZE: usize = size_of::<u::vgpu_svm_cmd_hdr>();
/// Size of `struct vgpu_svm_op`.
pub const OP_SIZE: usize = size_of::<u::vgpu_svm_op>();
/// Size of `struct vgpu_svm_cmd_job` (without the ops).
pub const JOB_HDR_SIZE: usize = size_of::<u::vgpu_svm_cmd_job>();
/// SET_AS with `direct_map_base` and `tlb_gen_gpa` (protocol 0.5).
pub const SET_AS_SIZE: usize = size_of::<u::vgpu_svm_cmd_set_as>();
/// SET_AS of protocol 0.4 (ends at `direct_map_base`).
pub const SET_AS_SIZE_V0_4: usize = u::VGPU_SVM_CMD_SET_AS_SIZE_V0_4 as usize;
/// SET_AS of protocol 0.3 and before (ends at `padding`).
pub const SET_AS_SIZE_V0_3: usize = u::VGPU_SVM_CMD_SET_AS_SIZE_V0_3 as usize;
pub const MAX_OPS: u32 = u::VGPU_SVM_MAX_OPS;
pub const MAX_OP_LEN: u64 = u::VGPU_SVM_MAX_OP_LEN;
/// The GPU VA space: `[0, 2^48)`.
pub const VA_LIMIT: u64 = 1 << gpu::VA_BITS;
const PAGE_MASK: u64 = gpu::PAGE_SIZE - 1;

/// `enum vgpu_svm_error`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ErrorCode {
    Malformed,
    UnknownCmd,
    NoAs,
    BadAddress,
    BadPageTable,
    TooBig,
    UnknownJob,
    Busy,
    Aborted,
    Misaligned,
}

impl ErrorCode {
    pub fn code(self) -> u32 {
        match self {
            ErrorCode::Malformed => u::vgpu_svm_error_VGPU_SVM_ERR_MALFORMED,
            ErrorCode::UnknownCmd => u::vgpu_svm_error_VGPU_SVM_ERR_UNKNOWN_CMD,
            ErrorCode::NoAs => u::vgpu_svm_error_VGPU_SVM_ERR_NO_AS,
            ErrorCode::BadAddress => u::vgpu_svm_error_VGPU_SVM_ERR_BAD_ADDRESS,
            ErrorCode::BadPageTable => u::vgpu_svm_error_VGPU_SVM_ERR_BAD_PAGE_TABLE,
            ErrorCode::TooBig => u::vgpu_svm_error_VGPU_SVM_ERR_TOO_BIG,
            ErrorCode::UnknownJob => u::vgpu_svm_error_VGPU_SVM_ERR_UNKNOWN_JOB,
            ErrorCode::Busy => u::vgpu_svm_error_VGPU_SVM_ERR_BUSY,
            ErrorCode::Aborted => u::vgpu_svm_error_VGPU_SVM_ERR_ABORTED,
            ErrorCode::Misaligned => u::vgpu_svm_error_VGPU_SVM_ERR_MISALIGNED,
        }
    }

    pub fn from_code(c: u32) -> Option<Self> {
        use ErrorCode::*;
        [
            Malformed,
            UnknownCmd,
            NoAs,
            BadAddress,
            BadPageTable,
            TooBig,
            UnknownJob,
            Busy,
            Aborted,
            Misaligned,
        ]
        .into_iter()
        .find(|e| e.code() == c)
    }
}

/// A command refused before it ran: the error code and why (for the log).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub code: ErrorCode,
    pub why: String,
    /// The entry of a BIND_ARRAY/UNBIND_ARRAY that was refused (answered
    /// in `resp.result`).
    pub entry: Option<u32>,
}

impl Rejection {
    pub fn new(code: ErrorCode, why: impl Into<String>) -> Self {
        Self {
            code,
            why: why.into(),
            entry: None,
        }
    }

    /// The same rejection, blamed on entry `i` of an array command.
    pub fn at(mut self, i: usize) -> Self {
        self.entry = u32::try_from(i).ok();
        self.why = format!("entry {i}: {}", self.why);
        self
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.code, self.why)
    }
}

/// `enum vgpu_svm_cmd_type`, as a name (for logs and counters).
pub fn cmd_name(t: u32) -> &'static str {
    match t {
        u::vgpu_svm_cmd_type_VGPU_SVM_CMD_SET_AS => "SET_AS",
        u::vgpu_svm_cmd_type_VGPU_SVM_CMD_INVALIDATE => "INVALIDATE",
        u::vgpu_svm_cmd_type_VGPU_SVM_CMD_BIND => "BIND",
        u::vgpu_svm_cmd_type_VGPU_SVM_CMD_UNBIND => "UNBIND",
        u::vgpu_svm_cmd_type_VGPU_SVM_CMD_JOB => "JOB",
        u::vgpu_svm_cmd_type_VGPU_SVM_CMD_RESUME => "RESUME",
        u::vgpu_svm_cmd_type_VGPU_SVM_CMD_ABORT => "ABORT",
        u::vgpu_svm_cmd_type_VGPU_SVM_CMD_STATS => "STATS",
        u::vgpu_svm_cmd_type_VGPU_SVM_CMD_NOP => "NOP",
        u::vgpu_svm_cmd_type_VGPU_SVM_CMD_BIND_ARRAY => "BIND_ARRAY",
        u::vgpu_svm_cmd_type_VGPU_SVM_CMD_UNBIND_ARRAY => "UNBIND_ARRAY",
        _ => "UNKNOWN",
    }
}

/// A job operation (`struct vgpu_svm_op`), validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Op {
    pub kind: OpKind,
    pub dst: u64,
    pub src: u64,
    pub len: u64,
    pub value: u64,
}

/// `enum vgpu_svm_op_kind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    Copy,
    Fill,
    Hash,
    AtomicAdd,
    WritePattern,
    Read,
}

impl OpKind {
    pub fn code(self) -> u32 {
        match self {
            OpKind::Copy => u::vgpu_svm_op_kind_VGPU_SVM_OP_COPY,
            OpKind::Fill => u::vgpu_svm_op_kind_VGPU_SVM_OP_FILL,
            OpKind::Hash => u::vgpu_svm_op_kind_VGPU_SVM_OP_HASH,
            OpKind::AtomicAdd => u::vgpu_svm_op_kind_VGPU_SVM_OP_ATOMIC_ADD,
            OpKind::WritePattern => u::vgpu_svm_op_kind_VGPU_SVM_OP_WRITE_PATTERN,
            OpKind::Read => u::vgpu_svm_op_kind_VGPU_SVM_OP_READ,
        }
    }

    fn from_code(c: u32) -> Option<Self> {
        use OpKind::*;
        [Copy, Fill, Hash, AtomicAdd, WritePattern, Read]
            .into_iter()
            .find(|k| k.code() == c)
    }

    /// Does the op read `src`?
    pub fn reads_src(self) -> bool {
        matches!(self, OpKind::Copy | OpKind::Hash | OpKind::Read)
    }

    /// Does the op write `dst`?
    pub fn writes_dst(self) -> bool {
        matches!(
            self,
            OpKind::Copy | OpKind::Fill | OpKind::AtomicAdd | OpKind::WritePattern
        )
    }
}

impl Op {
    /// Bytes the op accesses (ATOMIC_ADD: always 8, `len` is ignored).
    pub fn bytes(&self) -> u64 {
        if self.kind == OpKind::AtomicAdd {
            8
        } else {
            self.len
        }
    }
}

/// `enum vgpu_svm_inval_reason` (INVALIDATE's `hdr.flags`, protocol 0.5):
/// why the driver invalidates. The device only records it (for the
/// violation records, [`crate::history`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InvalReason {
    /// 0: not said (a driver of protocol 0.4 or before).
    #[default]
    Unknown,
    Unmap,
    Clear,
    ProtectionVma,
    ProtectionPage,
    SoftDirty,
    Release,
    Migrate,
    Exclusive,
    /// The driver's own: SVM entries gave way to a userptr binding.
    Bind,
    /// The driver's own: a userptr binding went.
    Unbind,
    /// The driver's own: a 2 MiB leaf gave way to a 4 KiB table.
    Split,
}

impl InvalReason {
    pub const ALL: [InvalReason; 12] = [
        InvalReason::Unknown,
        InvalReason::Unmap,
        InvalReason::Clear,
        InvalReason::ProtectionVma,
        InvalReason::ProtectionPage,
        InvalReason::SoftDirty,
        InvalReason::Release,
        InvalReason::Migrate,
        InvalReason::Exclusive,
        InvalReason::Bind,
        InvalReason::Unbind,
        InvalReason::Split,
    ];

    pub fn code(self) -> u32 {
        use InvalReason::*;
        match self {
            Unknown => u::vgpu_svm_inval_reason_VGPU_SVM_INVAL_UNKNOWN,
            Unmap => u::vgpu_svm_inval_reason_VGPU_SVM_INVAL_UNMAP,
            Clear => u::vgpu_svm_inval_reason_VGPU_SVM_INVAL_CLEAR,
            ProtectionVma => u::vgpu_svm_inval_reason_VGPU_SVM_INVAL_PROTECTION_VMA,
            ProtectionPage => u::vgpu_svm_inval_reason_VGPU_SVM_INVAL_PROTECTION_PAGE,
            SoftDirty => u::vgpu_svm_inval_reason_VGPU_SVM_INVAL_SOFT_DIRTY,
            Release => u::vgpu_svm_inval_reason_VGPU_SVM_INVAL_RELEASE,
            Migrate => u::vgpu_svm_inval_reason_VGPU_SVM_INVAL_MIGRATE,
            Exclusive => u::vgpu_svm_inval_reason_VGPU_SVM_INVAL_EXCLUSIVE,
            Bind => u::vgpu_svm_inval_reason_VGPU_SVM_INVAL_BIND,
            Unbind => u::vgpu_svm_inval_reason_VGPU_SVM_INVAL_UNBIND,
            Split => u::vgpu_svm_inval_reason_VGPU_SVM_INVAL_SPLIT,
        }
    }

    /// The reason a `flags` value names; `None` for anything else.
    pub fn from_code(c: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.code() == c)
    }

    /// Its name in logs (the kernel's event names, lower case).
    pub fn name(self) -> &'static str {
        use InvalReason::*;
        match self {
            Unknown => "unknown",
            Unmap => "unmap",
            Clear => "clear",
            ProtectionVma => "protection_vma",
            ProtectionPage => "protection_page",
            SoftDirty => "soft_dirty",
            Release => "release",
            Migrate => "migrate",
            Exclusive => "exclusive",
            Bind => "driver_bind",
            Unbind => "driver_unbind",
            Split => "driver_split",
        }
    }
}

impl fmt::Display for InvalReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A parsed VGPU_SVM command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SvmCommand {
    SetAs {
        gpu_pt_root: u64,
        cpu_pt_root: u64,
        cpu_pt_levels: u32,
        /// The guest kernel's direct-map base (page_offset_base): `None`
        /// for the 32-byte SET_AS of protocol 0.3 or a base of 0 (no
        /// direct-map check). Page aligned, otherwise any value (a base
        /// that wraps or is not canonical is the checker's business).
        direct_map_base: Option<u64>,
        /// Guest-physical address of the context's TLB generation (a u64
        /// the device loads at every JOB and RESUME, see [`crate::tlbgen`]):
        /// `None` for the 32/40-byte forms or an address of 0. 8-byte
        /// aligned; whether it is in guest RAM is checked by the context.
        tlb_gen_gpa: Option<u64>,
    },
    /// `[start, end)`, clipped to the GPU VA space (may be empty after clipping).
    Invalidate {
        start: u64,
        end: u64,
        /// `hdr.flags` (protocol 0.5; `Unknown` from older drivers).
        reason: InvalReason,
    },
    Bind {
        gpu_va: u64,
        cpu_va: u64,
        size: u64,
    },
    Unbind {
        start: u64,
        size: u64,
    },
    /// BIND_ARRAY (0.6): 1..=MAX_BIND_ENTRIES bindings, each checked as a
    /// BIND's; overlaps are the context's business.
    BindArray {
        entries: Vec<BindEntry>,
    },
    /// UNBIND_ARRAY (0.6): 1..=MAX_BIND_ENTRIES `(start, size)`, each
    /// checked as an UNBIND's.
    UnbindArray {
        entries: Vec<(u64, u64)>,
    },
    Job {
        job_id: u64,
        ops: Vec<Op>,
    },
    Resume {
        job_id: u64,
    },
    Abort {
        job_id: u64,
    },
    Stats,
    Nop,
}

impl SvmCommand {
    pub fn name(&self) -> &'static str {
        match self {
            SvmCommand::SetAs { .. } => "SET_AS",
            SvmCommand::Invalidate { .. } => "INVALIDATE",
            SvmCommand::Bind { .. } => "BIND",
            SvmCommand::Unbind { .. } => "UNBIND",
            SvmCommand::BindArray { .. } => "BIND_ARRAY",
            SvmCommand::UnbindArray { .. } => "UNBIND_ARRAY",
            SvmCommand::Job { .. } => "JOB",
            SvmCommand::Resume { .. } => "RESUME",
            SvmCommand::Abort { .. } => "ABORT",
            SvmCommand::Stats => "STATS",
            SvmCommand::Nop => "NOP",
        }
    }
}

/// One binding of a BIND_ARRAY (`struct vgpu_svm_bind_entry`), validated
/// as a BIND.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BindEntry {
    pub gpu_va: u64,
    pub cpu_va: u64,
    pub size: u64,
}

/// Most entries of a BIND_ARRAY / UNBIND_ARRAY.
pub const MAX_BIND_ENTRIES: u32 = u::VGPU_SVM_MAX_BIND_ENTRIES;
/// Size of `struct vgpu_svm_cmd_bind_array` (without the entries).
pub const BIND_ARRAY_HDR_SIZE: usize = size_of::<u::vgpu_svm_cmd_bind_array>();

/// Checks a BIND's fields (also each BIND_ARRAY entry's).
fn bind_fields(what: &str, gpu_va: u64, cpu_va: u64, size: u64) -> Result<BindEntry, Rejection> {
    gpu_range(what, gpu_va, size)?;
    if cpu_va & PAGE_MASK != 0 {
        return Err(misaligned(&format!("{what} cpu_va"), cpu_va));
    }
    if cpu_va.checked_add(size).is_none() {
        return Err(Rejection::new(
            ErrorCode::Malformed,
            format!("{what}: cpu_va {cpu_va:#x} + {size:#x} wraps around"),
        ));
    }
    Ok(BindEntry {
        gpu_va,
        cpu_va,
        size,
    })
}

/// The header of BIND_ARRAY / UNBIND_ARRAY and its entries' bytes
/// (`count` entries of `entry_size`, all present).
fn array_entries<'a>(
    buf: &'a [u8],
    name: &'static str,
    entry_size: usize,
) -> Result<std::slice::ChunksExact<'a, u8>, Rejection> {
    type S = u::vgpu_svm_cmd_bind_array;
    let f = Fields::need(buf, BIND_ARRAY_HDR_SIZE, name)?;
    f.zero32(offset_of!(S, padding), "padding")?;
    let count = f.u32(offset_of!(S, count));
    if count == 0 {
        return Err(Rejection::new(
            ErrorCode::Malformed,
            format!("{name} with 0 entries"),
        ));
    }
    if count > MAX_BIND_ENTRIES {
        return Err(Rejection::new(
            ErrorCode::TooBig,
            format!("{name} with {count} entries (max {MAX_BIND_ENTRIES})"),
        ));
    }
    // At most 1024 * 24 bytes: no overflow.
    let need = BIND_ARRAY_HDR_SIZE + count as usize * entry_size;
    Fields::need(buf, need, name)?;
    Ok(buf[BIND_ARRAY_HDR_SIZE..need].chunks_exact(entry_size))
}

/// Bounds-checked little-endian reads at fixed offsets.
struct Fields<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Fields<'a> {
    fn need(buf: &'a [u8], size: usize, what: &'static str) -> Result<Self, Rejection> {
        if buf.len() < size {
            return Err(Rejection::new(
                ErrorCode::Malformed,
                format!("truncated {what}: {} bytes, need {size}", buf.len()),
            ));
        }
        Ok(Self { buf, what })
    }

    fn u32(&self, off: usize) -> u32 {
        // In bounds: `need` checked the struct size, offsets come from it.
        let b = &self.buf[off..off + 4];
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }

    fn u64(&self, off: usize) -> u64 {
        let mut a = [0u8; 8];
        a.copy_from_slice(&self.buf[off..off + 8]);
        u64::from_le_bytes(a)
    }

    fn zero32(&self, off: usize, field: &str) -> Result<(), Rejection> {
        match self.u32(off) {
            0 => Ok(()),
            v => Err(Rejection::new(
                ErrorCode::Malformed,
                format!("{}: reserved field {field} is {v:#x}", self.what),
            )),
        }
    }
}

fn misaligned(what: &str, v: u64) -> Rejection {
    Rejection::new(
        ErrorCode::Misaligned,
        format!("{what} {v:#x} is not page aligned"),
    )
}

/// A GPU VA range must be page aligned, non-empty and inside the VA space.
fn gpu_range(what: &str, start: u64, size: u64) -> Result<(), Rejection> {
    if start & PAGE_MASK != 0 {
        return Err(misaligned(what, start));
    }
    if size & PAGE_MASK != 0 {
        return Err(misaligned(&format!("{what} size"), size));
    }
    if size == 0 {
        return Err(Rejection::new(
            ErrorCode::Malformed,
            format!("{what}: size 0"),
        ));
    }
    if u128::from(start) + u128::from(size) > u128::from(VA_LIMIT) {
        return Err(Rejection::new(
            ErrorCode::Malformed,
            format!("{what} [{start:#x}, +{size:#x}) beyond the 48-bit GPU VA space"),
        ));
    }
    Ok(())
}

/// Guest-physical addresses that the page-table formats can express (52 bits).
fn phys_ok(addr: u64) -> bool {
    addr & !gpu::ADDR_MASK & !PAGE_MASK == 0
}

/// Parses the command stream of one SUBMIT_3D.
pub fn parse(buf: &[u8]) -> Result<SvmCommand, Rejection> {
    let h = Fields::need(buf, CMD_HDR_SIZE, "command header")?;
    let ty = h.u32(offset_of!(u::vgpu_svm_cmd_hdr, type_));
    let flags = h.u32(offset_of!(u::vgpu_svm_cmd_hdr, flags));
    let name = cmd_name(ty);
    if name == "UNKNOWN" {
        return Err(Rejection::new(
            ErrorCode::UnknownCmd,
            format!("unknown command type {ty}"),
        ));
    }
    // Only INVALIDATE has flags (its reason, protocol 0.5); 0 is always
    // fine (what a 0.4 driver sends).
    let reason = match (ty, InvalReason::from_code(flags)) {
        (_, Some(InvalReason::Unknown)) => InvalReason::Unknown,
        (u::vgpu_svm_cmd_type_VGPU_SVM_CMD_INVALIDATE, Some(r)) => r,
        (u::vgpu_svm_cmd_type_VGPU_SVM_CMD_INVALIDATE, None) => {
            return Err(Rejection::new(
                ErrorCode::Malformed,
                format!("INVALIDATE: flags {flags:#x} (not a vgpu_svm_inval_reason)"),
            ))
        }
        _ => {
            return Err(Rejection::new(
                ErrorCode::Malformed,
                format!("{name}: flags {flags:#x} (must be 0)"),
            ))
        }
    };
    match ty {
        u::vgpu_svm_cmd_type_VGPU_SVM_CMD_SET_AS => {
            type S = u::vgpu_svm_cmd_set_as;
            // Two sizes: 0.3's (no direct_map_base) and 0.4's. Bytes after
            // a layout are ignored, so 33..39 bytes are the 0.3 form.
            let f = Fields::need(buf, SET_AS_SIZE_V0_3, "SET_AS")?;
            f.zero32(offset_of!(S, padding), "padding")?;
            let gpu_pt_root = f.u64(offset_of!(S, gpu_pt_root));
            let cpu_pt_root = f.u64(offset_of!(S, cpu_pt_root));
            let cpu_pt_levels = f.u32(offset_of!(S, cpu_pt_levels));
            if cpu_pt_levels != u::VGPU_SVM_CPU_LEVELS_4
                && cpu_pt_levels != u::VGPU_SVM_CPU_LEVELS_5
            {
                return Err(Rejection::new(
                    ErrorCode::Malformed,
                    format!("SET_AS: cpu_pt_levels {cpu_pt_levels} (4 or 5)"),
                ));
            }
            if gpu_pt_root & PAGE_MASK != 0 {
                return Err(misaligned("SET_AS gpu_pt_root", gpu_pt_root));
            }
            if cpu_pt_root & PAGE_MASK != 0 {
                return Err(misaligned("SET_AS cpu_pt_root", cpu_pt_root));
            }
            if !phys_ok(gpu_pt_root) || !phys_ok(cpu_pt_root) {
                return Err(Rejection::new(
                    ErrorCode::BadAddress,
                    format!("SET_AS: roots {gpu_pt_root:#x} / {cpu_pt_root:#x} beyond 52 bits"),
                ));
            }
            let direct_map_base = match Fields::need(buf, SET_AS_SIZE_V0_4, "SET_AS") {
                Ok(f) => f.u64(offset_of!(S, direct_map_base)),
                Err(_) => 0,
            };
            if direct_map_base & PAGE_MASK != 0 {
                return Err(misaligned("SET_AS direct_map_base", direct_map_base));
            }
            // 0.5: 48 bytes with tlb_gen_gpa (41..47 bytes are the 0.4 form).
            let tlb_gen_gpa = match Fields::need(buf, SET_AS_SIZE, "SET_AS") {
                Ok(f) => f.u64(offset_of!(S, tlb_gen_gpa)),
                Err(_) => 0,
            };
            if tlb_gen_gpa % 8 != 0 {
                return Err(Rejection::new(
                    ErrorCode::Misaligned,
                    format!("SET_AS tlb_gen_gpa {tlb_gen_gpa:#x} is not 8-byte aligned"),
                ));
            }
            Ok(SvmCommand::SetAs {
                gpu_pt_root,
                cpu_pt_root,
                cpu_pt_levels,
                direct_map_base: (direct_map_base != 0).then_some(direct_map_base),
                tlb_gen_gpa: (tlb_gen_gpa != 0).then_some(tlb_gen_gpa),
            })
        }
        u::vgpu_svm_cmd_type_VGPU_SVM_CMD_INVALIDATE | u::vgpu_svm_cmd_type_VGPU_SVM_CMD_UNBIND => {
            type S = u::vgpu_svm_cmd_range;
            let f = Fields::need(buf, size_of::<S>(), name)?;
            let start = f.u64(offset_of!(S, start));
            let size = f.u64(offset_of!(S, size));
            if ty == u::vgpu_svm_cmd_type_VGPU_SVM_CMD_UNBIND {
                gpu_range("UNBIND", start, size)?;
                return Ok(SvmCommand::Unbind { start, size });
            }
            // INVALIDATE may name any range (a notifier's range can reach
            // past the GPU VA space, e.g. at mm teardown): it is clipped.
            if start & PAGE_MASK != 0 {
                return Err(misaligned("INVALIDATE start", start));
            }
            if size & PAGE_MASK != 0 {
                return Err(misaligned("INVALIDATE size", size));
            }
            if size == 0 {
                return Err(Rejection::new(ErrorCode::Malformed, "INVALIDATE: size 0"));
            }
            let end = u128::from(start) + u128::from(size);
            if end > 1u128 << 64 {
                return Err(Rejection::new(
                    ErrorCode::Malformed,
                    format!("INVALIDATE [{start:#x}, +{size:#x}) wraps around"),
                ));
            }
            let end = end.min(u128::from(VA_LIMIT)) as u64;
            Ok(SvmCommand::Invalidate {
                start: start.min(end),
                end,
                reason,
            })
        }
        u::vgpu_svm_cmd_type_VGPU_SVM_CMD_BIND => {
            type S = u::vgpu_svm_cmd_bind;
            let f = Fields::need(buf, size_of::<S>(), "BIND")?;
            let gpu_va = f.u64(offset_of!(S, gpu_va));
            let cpu_va = f.u64(offset_of!(S, cpu_va));
            let size = f.u64(offset_of!(S, size));
            let e = bind_fields("BIND", gpu_va, cpu_va, size)?;
            Ok(SvmCommand::Bind {
                gpu_va: e.gpu_va,
                cpu_va: e.cpu_va,
                size: e.size,
            })
        }
        u::vgpu_svm_cmd_type_VGPU_SVM_CMD_BIND_ARRAY => {
            type E = u::vgpu_svm_bind_entry;
            let chunks = array_entries(buf, "BIND_ARRAY", size_of::<E>())?;
            let mut entries = Vec::with_capacity(chunks.len());
            for (i, b) in chunks.enumerate() {
                let f = Fields::need(b, size_of::<E>(), "BIND_ARRAY entry")?;
                let e = bind_fields(
                    "BIND_ARRAY",
                    f.u64(offset_of!(E, gpu_va)),
                    f.u64(offset_of!(E, cpu_va)),
                    f.u64(offset_of!(E, size)),
                )
                .map_err(|r| r.at(i))?;
                entries.push(e);
            }
            Ok(SvmCommand::BindArray { entries })
        }
        u::vgpu_svm_cmd_type_VGPU_SVM_CMD_UNBIND_ARRAY => {
            type E = u::vgpu_svm_unbind_entry;
            let chunks = array_entries(buf, "UNBIND_ARRAY", size_of::<E>())?;
            let mut entries = Vec::with_capacity(chunks.len());
            for (i, b) in chunks.enumerate() {
                let f = Fields::need(b, size_of::<E>(), "UNBIND_ARRAY entry")?;
                let (start, size) = (f.u64(offset_of!(E, start)), f.u64(offset_of!(E, size)));
                gpu_range("UNBIND_ARRAY", start, size).map_err(|r| r.at(i))?;
                entries.push((start, size));
            }
            Ok(SvmCommand::UnbindArray { entries })
        }
        u::vgpu_svm_cmd_type_VGPU_SVM_CMD_JOB => {
            type S = u::vgpu_svm_cmd_job;
            let f = Fields::need(buf, JOB_HDR_SIZE, "JOB")?;
            f.zero32(offset_of!(S, padding), "padding")?;
            let job_id = f.u64(offset_of!(S, job_id));
            let nr_ops = f.u32(offset_of!(S, nr_ops));
            if nr_ops == 0 {
                return Err(Rejection::new(ErrorCode::Malformed, "JOB with 0 ops"));
            }
            if nr_ops > MAX_OPS {
                return Err(Rejection::new(
                    ErrorCode::TooBig,
                    format!("JOB with {nr_ops} ops (max {MAX_OPS})"),
                ));
            }
            let need = JOB_HDR_SIZE + nr_ops as usize * OP_SIZE;
            Fields::need(buf, need, "JOB ops")?;
            let ops = (0..nr_ops as usize)
                .map(|i| parse_op(i, &buf[JOB_HDR_SIZE + i * OP_SIZE..][..OP_SIZE]))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(SvmCommand::Job { job_id, ops })
        }
        u::vgpu_svm_cmd_type_VGPU_SVM_CMD_RESUME | u::vgpu_svm_cmd_type_VGPU_SVM_CMD_ABORT => {
            type S = u::vgpu_svm_cmd_resume;
            let f = Fields::need(buf, size_of::<S>(), name)?;
            let job_id = f.u64(offset_of!(S, job_id));
            Ok(if ty == u::vgpu_svm_cmd_type_VGPU_SVM_CMD_RESUME {
                SvmCommand::Resume { job_id }
            } else {
                SvmCommand::Abort { job_id }
            })
        }
        u::vgpu_svm_cmd_type_VGPU_SVM_CMD_STATS => Ok(SvmCommand::Stats),
        _ => Ok(SvmCommand::Nop),
    }
}

fn parse_op(i: usize, b: &[u8]) -> Result<Op, Rejection> {
    type S = u::vgpu_svm_op;
    let f = Fields::need(b, OP_SIZE, "op")?;
    let kind_code = f.u32(offset_of!(S, kind));
    let kind = OpKind::from_code(kind_code).ok_or_else(|| {
        Rejection::new(
            ErrorCode::Malformed,
            format!("op {i}: unknown kind {kind_code}"),
        )
    })?;
    f.zero32(offset_of!(S, flags), "op flags")?;
    let op = Op {
        kind,
        dst: f.u64(offset_of!(S, dst)),
        src: f.u64(offset_of!(S, src)),
        len: f.u64(offset_of!(S, len)),
        value: f.u64(offset_of!(S, value)),
    };
    if op.len > MAX_OP_LEN {
        return Err(Rejection::new(
            ErrorCode::TooBig,
            format!("op {i}: len {:#x} (max {MAX_OP_LEN:#x})", op.len),
        ));
    }
    if kind == OpKind::AtomicAdd && op.dst & 7 != 0 {
        return Err(Rejection::new(
            ErrorCode::Misaligned,
            format!("op {i}: ATOMIC_ADD dst {:#x} not 8-byte aligned", op.dst),
        ));
    }
    let in_va = |a: u64| u128::from(a) + u128::from(op.bytes()) <= u128::from(VA_LIMIT);
    if (kind.writes_dst() && !in_va(op.dst)) || (kind.reads_src() && !in_va(op.src)) {
        return Err(Rejection::new(
            ErrorCode::Malformed,
            format!("op {i}: {kind:?} range beyond the 48-bit GPU VA space"),
        ));
    }
    Ok(op)
}

/// `enum vgpu_svm_status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Status {
    #[default]
    Ok,
    Fault,
    Error,
}

impl Status {
    pub fn code(self) -> u32 {
        match self {
            Status::Ok => u::vgpu_svm_status_VGPU_SVM_STATUS_OK,
            Status::Fault => u::vgpu_svm_status_VGPU_SVM_STATUS_FAULT,
            Status::Error => u::vgpu_svm_status_VGPU_SVM_STATUS_ERROR,
        }
    }
}

/// `struct vgpu_svm_fault`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FaultInfo {
    pub va: u64,
    /// `VGPU_SVM_ACCESS_READ` or `_WRITE`.
    pub access: u32,
    pub op_index: u32,
    pub progress: u64,
}

/// Number of counters in `struct vgpu_svm_stats` (before `reserved`).
pub const WIRE_COUNTERS: usize = 15;

/// `struct vgpu_svm_stats`: the counters, in wire order (the first twelve
/// are what older drivers read).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize)]
pub struct WireStats {
    pub accesses_checked: u64,
    pub violations: u64,
    pub violations_no_page: u64,
    pub violations_frame: u64,
    pub violations_write: u64,
    pub faults: u64,
    pub invalidations: u64,
    pub tlb_hits: u64,
    pub tlb_misses: u64,
    pub jobs: u64,
    pub bytes: u64,
    pub errors: u64,
    /// CPU page tables the checker could not walk (not violations).
    pub cpu_walk_errors: u64,
    /// Pages accessed without a CPU-table check (`--checker off`).
    pub unchecked_accesses: u64,
    /// Accesses to frames missing from the guest kernel's direct map
    /// (protocol 0.4; also in `violations`).
    pub violations_no_direct_map: u64,
}

impl WireStats {
    pub fn to_array(&self) -> [u64; WIRE_COUNTERS] {
        [
            self.accesses_checked,
            self.violations,
            self.violations_no_page,
            self.violations_frame,
            self.violations_write,
            self.faults,
            self.invalidations,
            self.tlb_hits,
            self.tlb_misses,
            self.jobs,
            self.bytes,
            self.errors,
            self.cpu_walk_errors,
            self.unchecked_accesses,
            self.violations_no_direct_map,
        ]
    }

    pub fn from_array(a: [u64; WIRE_COUNTERS]) -> Self {
        Self {
            accesses_checked: a[0],
            violations: a[1],
            violations_no_page: a[2],
            violations_frame: a[3],
            violations_write: a[4],
            faults: a[5],
            invalidations: a[6],
            tlb_hits: a[7],
            tlb_misses: a[8],
            jobs: a[9],
            bytes: a[10],
            errors: a[11],
            cpu_walk_errors: a[12],
            unchecked_accesses: a[13],
            violations_no_direct_map: a[14],
        }
    }
}

/// `struct vgpu_svm_resp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SvmResp {
    pub status: Status,
    /// Meaningful when `status` is `Error`.
    pub error: Option<ErrorCode>,
    pub job_id: u64,
    pub result: u64,
    pub fault: FaultInfo,
    pub stats: WireStats,
}

impl SvmResp {
    pub fn ok() -> Self {
        Self::default()
    }

    pub fn error(code: ErrorCode, job_id: u64) -> Self {
        Self {
            status: Status::Error,
            error: Some(code),
            job_id,
            ..Self::default()
        }
    }

    /// The wire form (`RESP_SIZE` bytes, little-endian, reserved fields zero).
    pub fn encode(&self) -> [u8; RESP_SIZE] {
        type R = u::vgpu_svm_resp;
        type F = u::vgpu_svm_fault;
        let mut b = [0u8; RESP_SIZE];
        let mut put = |off: usize, v: &[u8]| b[off..off + v.len()].copy_from_slice(v);
        put(offset_of!(R, status), &self.status.code().to_le_bytes());
        put(
            offset_of!(R, error),
            &self.error.map_or(0, ErrorCode::code).to_le_bytes(),
        );
        put(offset_of!(R, job_id), &self.job_id.to_le_bytes());
        put(offset_of!(R, result), &self.result.to_le_bytes());
        let f = offset_of!(R, fault);
        put(f + offset_of!(F, va), &self.fault.va.to_le_bytes());
        put(f + offset_of!(F, access), &self.fault.access.to_le_bytes());
        put(
            f + offset_of!(F, op_index),
            &self.fault.op_index.to_le_bytes(),
        );
        put(
            f + offset_of!(F, progress),
            &self.fault.progress.to_le_bytes(),
        );
        let s = offset_of!(R, stats);
        for (i, v) in self.stats.to_array().into_iter().enumerate() {
            put(s + 8 * i, &v.to_le_bytes());
        }
        b
    }

    /// Parses the wire form (for tests, benchmarks and tools).
    pub fn decode(b: &[u8]) -> Option<Self> {
        type R = u::vgpu_svm_resp;
        type F = u::vgpu_svm_fault;
        if b.len() < RESP_SIZE {
            return None;
        }
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
        let status = match u32_at(offset_of!(R, status)) {
            u::vgpu_svm_status_VGPU_SVM_STATUS_OK => Status::Ok,
            u::vgpu_svm_status_VGPU_SVM_STATUS_FAULT => Status::Fault,
            u::vgpu_svm_status_VGPU_SVM_STATUS_ERROR => Status::Error,
            _ => return None,
        };
        let f = offset_of!(R, fault);
        let s = offset_of!(R, stats);
        let mut stats = [0u64; WIRE_COUNTERS];
        for (i, v) in stats.iter_mut().enumerate() {
            *v = u64_at(s + 8 * i);
        }
        Some(Self {
            status,
            error: ErrorCode::from_code(u32_at(offset_of!(R, error))),
            job_id: u64_at(offset_of!(R, job_id)),
            result: u64_at(offset_of!(R, result)),
            fault: FaultInfo {
                va: u64_at(f + offset_of!(F, va)),
                access: u32_at(f + offset_of!(F, access)),
                op_index: u32_at(f + offset_of!(F, op_index)),
                progress: u64_at(f + offset_of!(F, progress)),
            },
            stats: WireStats::from_array(stats),
        })
    }
}

/// FNV-1a 64 (the HASH op).
pub mod fnv {
    pub const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    pub const PRIME: u64 = 0x0000_0100_0000_01b3;

    pub fn update(mut h: u64, bytes: &[u8]) -> u64 {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(PRIME);
        }
        h
    }

    pub fn hash(bytes: &[u8]) -> u64 {
        update(OFFSET, bytes)
    }
}

/// Byte `i` of WRITE_PATTERN with seed `seed`.
pub fn pattern_byte(seed: u64, i: u64) -> u8 {
    (seed
        .wrapping_add(i)
        .wrapping_mul(u::VGPU_SVM_PATTERN_MUL as u64)
        >> 56) as u8
}

/// Builders of command streams (the bytes inside SUBMIT_3D), for tests,
/// benchmarks and anyone driving the device without the guest driver.
pub mod build {
    use super::*;

    fn hdr(ty: u32) -> Vec<u8> {
        let mut v = Vec::with_capacity(64);
        v.extend_from_slice(&ty.to_le_bytes());
        v.extend_from_slice(&0u32.to_le_bytes());
        v
    }

    fn u64s(mut v: Vec<u8>, xs: &[u64]) -> Vec<u8> {
        for x in xs {
            v.extend_from_slice(&x.to_le_bytes());
        }
        v
    }

    /// SET_AS of protocol 0.4 (40 bytes) with `direct_map_base` 0 (no
    /// direct-map check).
    pub fn set_as(gpu_pt_root: u64, cpu_pt_root: u64, levels: u32) -> Vec<u8> {
        set_as_with_direct_map(gpu_pt_root, cpu_pt_root, levels, 0)
    }

    /// SET_AS of protocol 0.4 (40 bytes).
    pub fn set_as_with_direct_map(
        gpu_pt_root: u64,
        cpu_pt_root: u64,
        levels: u32,
        direct_map_base: u64,
    ) -> Vec<u8> {
        u64s(
            set_as_v0_3(gpu_pt_root, cpu_pt_root, levels),
            &[direct_map_base],
        )
    }

    /// SET_AS of protocol 0.5 (48 bytes): with `tlb_gen_gpa`.
    pub fn set_as_with_tlb_gen(
        gpu_pt_root: u64,
        cpu_pt_root: u64,
        levels: u32,
        direct_map_base: u64,
        tlb_gen_gpa: u64,
    ) -> Vec<u8> {
        u64s(
            set_as_with_direct_map(gpu_pt_root, cpu_pt_root, levels, direct_map_base),
            &[tlb_gen_gpa],
        )
    }

    /// SET_AS of protocol 0.3 (32 bytes, no `direct_map_base`).
    pub fn set_as_v0_3(gpu_pt_root: u64, cpu_pt_root: u64, levels: u32) -> Vec<u8> {
        let mut v = u64s(
            hdr(u::vgpu_svm_cmd_type_VGPU_SVM_CMD_SET_AS),
            &[gpu_pt_root, cpu_pt_root],
        );
        v.extend_from_slice(&levels.to_le_bytes());
        v.extend_from_slice(&0u32.to_le_bytes());
        v
    }

    /// INVALIDATE of protocol 0.4 (flags 0: reason unknown).
    pub fn invalidate(start: u64, size: u64) -> Vec<u8> {
        invalidate_for(start, size, InvalReason::Unknown)
    }

    /// INVALIDATE with a reason (protocol 0.5).
    pub fn invalidate_for(start: u64, size: u64, reason: InvalReason) -> Vec<u8> {
        let mut v = u64s(
            hdr(u::vgpu_svm_cmd_type_VGPU_SVM_CMD_INVALIDATE),
            &[start, size],
        );
        v[4..8].copy_from_slice(&reason.code().to_le_bytes());
        v
    }

    pub fn bind(gpu_va: u64, cpu_va: u64, size: u64) -> Vec<u8> {
        u64s(
            hdr(u::vgpu_svm_cmd_type_VGPU_SVM_CMD_BIND),
            &[gpu_va, cpu_va, size],
        )
    }

    pub fn unbind(start: u64, size: u64) -> Vec<u8> {
        u64s(
            hdr(u::vgpu_svm_cmd_type_VGPU_SVM_CMD_UNBIND),
            &[start, size],
        )
    }

    fn array_hdr(ty: u32, count: u32) -> Vec<u8> {
        let mut v = hdr(ty);
        v.extend_from_slice(&count.to_le_bytes());
        v.extend_from_slice(&0u32.to_le_bytes());
        v
    }

    /// BIND_ARRAY (0.6) of `(gpu_va, cpu_va, size)` entries.
    pub fn bind_array(entries: &[(u64, u64, u64)]) -> Vec<u8> {
        let mut v = array_hdr(
            u::vgpu_svm_cmd_type_VGPU_SVM_CMD_BIND_ARRAY,
            entries.len() as u32,
        );
        for &(g, c, s) in entries {
            v = u64s(v, &[g, c, s]);
        }
        v
    }

    /// UNBIND_ARRAY (0.6) of `(start, size)` entries.
    pub fn unbind_array(entries: &[(u64, u64)]) -> Vec<u8> {
        let mut v = array_hdr(
            u::vgpu_svm_cmd_type_VGPU_SVM_CMD_UNBIND_ARRAY,
            entries.len() as u32,
        );
        for &(st, sz) in entries {
            v = u64s(v, &[st, sz]);
        }
        v
    }

    pub fn op(kind: OpKind, dst: u64, src: u64, len: u64, value: u64) -> Op {
        Op {
            kind,
            dst,
            src,
            len,
            value,
        }
    }

    pub fn job(job_id: u64, ops: &[Op]) -> Vec<u8> {
        let mut v = u64s(hdr(u::vgpu_svm_cmd_type_VGPU_SVM_CMD_JOB), &[job_id]);
        v.extend_from_slice(&(ops.len() as u32).to_le_bytes());
        v.extend_from_slice(&0u32.to_le_bytes());
        for o in ops {
            v.extend_from_slice(&o.kind.code().to_le_bytes());
            v.extend_from_slice(&0u32.to_le_bytes());
            v = u64s(v, &[o.dst, o.src, o.len, o.value]);
        }
        v
    }

    pub fn resume(job_id: u64) -> Vec<u8> {
        u64s(hdr(u::vgpu_svm_cmd_type_VGPU_SVM_CMD_RESUME), &[job_id])
    }

    pub fn abort(job_id: u64) -> Vec<u8> {
        u64s(hdr(u::vgpu_svm_cmd_type_VGPU_SVM_CMD_ABORT), &[job_id])
    }

    pub fn stats() -> Vec<u8> {
        hdr(u::vgpu_svm_cmd_type_VGPU_SVM_CMD_STATS)
    }

    pub fn nop() -> Vec<u8> {
        hdr(u::vgpu_svm_cmd_type_VGPU_SVM_CMD_NOP)
    }
}

#[cfg(test)]
mod tests {
    use super::build::*;
    use super::*;

    #[test]
    fn sizes_match_the_header() {
        assert_eq!(RESP_SIZE, 176);
        assert_eq!(
            offset_of!(u::vgpu_svm_stats, reserved),
            8 * WIRE_COUNTERS,
            "WireStats and struct vgpu_svm_stats disagree"
        );
        assert_eq!(OP_SIZE, 40);
        assert_eq!(JOB_HDR_SIZE, 24);
        assert_eq!(
            set_as_with_tlb_gen(0, 0, 4, 0, 0).len(),
            size_of::<u::vgpu_svm_cmd_set_as>()
        );
        assert_eq!(SET_AS_SIZE, 48);
        assert_eq!(set_as(0, 0, 4).len(), SET_AS_SIZE_V0_4);
        assert_eq!(SET_AS_SIZE_V0_4, 40);
        assert_eq!(set_as_v0_3(0, 0, 4).len(), SET_AS_SIZE_V0_3);
        assert_eq!(SET_AS_SIZE_V0_3, 32);
        assert_eq!(u::VGPU_SVM_PROTOCOL_MINOR, 6, "BIND_ARRAY and UNBIND_ARRAY are 0.6");
        assert_eq!(BIND_ARRAY_HDR_SIZE, 16);
        assert_eq!(size_of::<u::vgpu_svm_bind_entry>(), 24);
        assert_eq!(size_of::<u::vgpu_svm_unbind_entry>(), 16);
        assert_eq!(bind_array(&[(0, 0, 0)]).len(), 16 + 24);
        assert_eq!(unbind_array(&[(0, 0)]).len(), 16 + 16);
        assert_eq!(offset_of!(u::vgpu_svm_cmd_set_as, direct_map_base), 32);
        assert_eq!(offset_of!(u::vgpu_svm_cmd_set_as, tlb_gen_gpa), 40);
        assert_eq!(offset_of!(u::vgpu_svm_stats, violations_no_direct_map), 112);
        assert_eq!(size_of::<u::vgpu_svm_stats>(), 128);
        assert_eq!(invalidate(0, 0).len(), size_of::<u::vgpu_svm_cmd_range>());
        assert_eq!(bind(0, 0, 0).len(), size_of::<u::vgpu_svm_cmd_bind>());
        assert_eq!(resume(0).len(), size_of::<u::vgpu_svm_cmd_resume>());
        let j = job(1, &[op(OpKind::Copy, 0, 0, 0, 0); 3]);
        assert_eq!(j.len(), JOB_HDR_SIZE + 3 * OP_SIZE);
    }

    #[test]
    fn parse_each_command() {
        assert_eq!(
            parse(&set_as(0x1000, 0x2000, 5)).unwrap(),
            SvmCommand::SetAs {
                gpu_pt_root: 0x1000,
                cpu_pt_root: 0x2000,
                cpu_pt_levels: 5,
                direct_map_base: None,
                tlb_gen_gpa: None,
            }
        );
        // 0.4 with a base; 0.3's 32 bytes (and 33..39) and a base of 0: none.
        let base = 0xffff_8880_0000_0000u64;
        assert_eq!(
            parse(&set_as_with_direct_map(0x1000, 0x2000, 4, base)).unwrap(),
            SvmCommand::SetAs {
                gpu_pt_root: 0x1000,
                cpu_pt_root: 0x2000,
                cpu_pt_levels: 4,
                direct_map_base: Some(base),
                tlb_gen_gpa: None,
            }
        );
        let full = set_as_with_direct_map(0x1000, 0x2000, 4, base);
        for n in SET_AS_SIZE_V0_3..SET_AS_SIZE_V0_4 {
            assert_eq!(
                parse(&full[..n]).unwrap(),
                SvmCommand::SetAs {
                    gpu_pt_root: 0x1000,
                    cpu_pt_root: 0x2000,
                    cpu_pt_levels: 4,
                    direct_map_base: None,
                    tlb_gen_gpa: None,
                },
                "{n} bytes"
            );
        }
        // 0.5: 48 bytes with tlb_gen_gpa; 41..47 bytes are the 0.4 form.
        let gen = 0x1234_5678u64 & !7;
        let full = set_as_with_tlb_gen(0x1000, 0x2000, 4, base, gen);
        assert_eq!(
            parse(&full).unwrap(),
            SvmCommand::SetAs {
                gpu_pt_root: 0x1000,
                cpu_pt_root: 0x2000,
                cpu_pt_levels: 4,
                direct_map_base: Some(base),
                tlb_gen_gpa: Some(gen),
            }
        );
        for n in SET_AS_SIZE_V0_4..SET_AS_SIZE {
            assert!(
                matches!(
                    parse(&full[..n]).unwrap(),
                    SvmCommand::SetAs { direct_map_base: Some(b), tlb_gen_gpa: None, .. } if b == base
                ),
                "{n} bytes"
            );
        }
        // 0 is none; a misaligned address is refused; any aligned one is the
        // context's to check against guest RAM.
        assert!(matches!(
            parse(&set_as_with_tlb_gen(0x1000, 0x2000, 4, 0, 0)).unwrap(),
            SvmCommand::SetAs { tlb_gen_gpa: None, .. }
        ));
        for bad in [1u64, 4, 0x1001, !0] {
            let e = parse(&set_as_with_tlb_gen(0x1000, 0x2000, 4, 0, bad)).unwrap_err();
            assert_eq!(e.code, ErrorCode::Misaligned, "{bad:#x}");
        }
        for ok in [8u64, 0xfff8, !7] {
            assert!(matches!(
                parse(&set_as_with_tlb_gen(0x1000, 0x2000, 4, 0, ok)).unwrap(),
                SvmCommand::SetAs { tlb_gen_gpa: Some(x), .. } if x == ok
            ));
        }
        assert_eq!(
            parse(&set_as_v0_3(0x1000, 0x2000, 4)).unwrap(),
            parse(&full[..32]).unwrap()
        );
        assert!(matches!(
            parse(&set_as(0x1000, 0x2000, 4)).unwrap(),
            SvmCommand::SetAs {
                direct_map_base: None,
                ..
            }
        ));
        // Hostile bases are accepted when page aligned (the checker copes).
        for b in [!0xfffu64, 0x8000_0000_0000, 1 << 63, 0x1000] {
            assert!(matches!(
                parse(&set_as_with_direct_map(0x1000, 0x2000, 5, b)).unwrap(),
                SvmCommand::SetAs { direct_map_base: Some(x), .. } if x == b
            ));
        }
        assert_eq!(
            parse(&invalidate(0x1000, 0x2000)).unwrap(),
            SvmCommand::Invalidate {
                start: 0x1000,
                end: 0x3000,
                reason: InvalReason::Unknown,
            }
        );
        // Clipped to the VA space; a range entirely above it is empty.
        assert_eq!(
            parse(&invalidate(0, !0xfffu64)).unwrap(),
            SvmCommand::Invalidate {
                start: 0,
                end: VA_LIMIT,
                reason: InvalReason::Unknown,
            }
        );
        assert_eq!(
            parse(&invalidate(1 << 50, 0x1000)).unwrap(),
            SvmCommand::Invalidate {
                start: VA_LIMIT,
                end: VA_LIMIT,
                reason: InvalReason::Unknown,
            }
        );
        assert_eq!(
            parse(&bind(0x1000, 0x7f00_0000_0000, 0x1000)).unwrap(),
            SvmCommand::Bind {
                gpu_va: 0x1000,
                cpu_va: 0x7f00_0000_0000,
                size: 0x1000
            }
        );
        assert_eq!(
            parse(&unbind(0x1000, 0x1000)).unwrap(),
            SvmCommand::Unbind {
                start: 0x1000,
                size: 0x1000
            }
        );
        let ops = [
            op(OpKind::Copy, 0x1000, 0x2000, 10, 0),
            op(OpKind::AtomicAdd, 0x1008, 0, 0, 5),
        ];
        assert_eq!(
            parse(&job(7, &ops)).unwrap(),
            SvmCommand::Job {
                job_id: 7,
                ops: ops.to_vec()
            }
        );
        assert_eq!(parse(&resume(3)).unwrap(), SvmCommand::Resume { job_id: 3 });
        assert_eq!(parse(&abort(3)).unwrap(), SvmCommand::Abort { job_id: 3 });
        assert_eq!(parse(&stats()).unwrap(), SvmCommand::Stats);
        assert_eq!(parse(&nop()).unwrap(), SvmCommand::Nop);
    }

    fn code(b: &[u8]) -> ErrorCode {
        parse(b).unwrap_err().code
    }

    #[test]
    fn rejections() {
        use ErrorCode::*;
        // Truncation at every length.
        for full in [
            set_as_v0_3(0, 0, 4),
            invalidate(0, 0x1000),
            bind(0, 0, 0x1000),
            job(1, &[op(OpKind::Fill, 0, 0, 1, 0)]),
            resume(1),
        ] {
            for n in 0..full.len() {
                assert_eq!(code(&full[..n]), Malformed, "{n} of {}", full.len());
            }
        }
        assert_eq!(code(&[0x99, 0, 0, 0, 0, 0, 0, 0]), UnknownCmd);
        let mut n = nop();
        n[4] = 1;
        assert_eq!(code(&n), Malformed);
        let mut s = set_as(0x1000, 0x2000, 4);
        s[28] = 1; // padding
        assert_eq!(code(&s), Malformed);
        assert_eq!(code(&set_as(0x1000, 0x2000, 3)), Malformed);
        assert_eq!(code(&set_as(0x1001, 0x2000, 4)), Misaligned);
        assert_eq!(code(&set_as(0x1000, 0x2008, 4)), Misaligned);
        assert_eq!(code(&set_as(1 << 60, 0x2000, 4)), BadAddress);
        assert_eq!(
            code(&set_as_with_direct_map(
                0x1000,
                0x2000,
                4,
                0xffff_8880_0000_0008
            )),
            Misaligned
        );
        assert_eq!(code(&invalidate(0x1001, 0x1000)), Misaligned);
        assert_eq!(code(&invalidate(0x1000, 0x10)), Misaligned);
        assert_eq!(code(&invalidate(0x1000, 0)), Malformed);
        assert_eq!(code(&invalidate(!0xfffu64, 0x2000)), Malformed);
        assert_eq!(code(&bind(0, 0, 0)), Malformed);
        assert_eq!(code(&bind(VA_LIMIT - 0x1000, 0, 0x2000)), Malformed);
        assert_eq!(code(&bind(0, 0x10, 0x1000)), Misaligned);
        assert_eq!(code(&bind(0, !0xfffu64, 0x2000)), Malformed);
        assert_eq!(code(&unbind(0x1000, 0)), Malformed);
        assert_eq!(code(&job(1, &[])), Malformed);
        assert_eq!(code(&job(1, &[op(OpKind::Fill, 0, 0, 1, 0); 65])), TooBig);
        assert_eq!(
            code(&job(1, &[op(OpKind::Fill, 0, 0, MAX_OP_LEN + 1, 0)])),
            TooBig
        );
        assert_eq!(
            code(&job(1, &[op(OpKind::AtomicAdd, 4, 0, 8, 0)])),
            Misaligned
        );
        assert_eq!(
            code(&job(1, &[op(OpKind::Copy, VA_LIMIT - 8, 0, 16, 0)])),
            Malformed
        );
        assert_eq!(
            code(&job(1, &[op(OpKind::Hash, 0, u64::MAX, 16, 0)])),
            Malformed
        );
        let mut j = job(1, &[op(OpKind::Fill, 0, 0, 1, 0)]);
        j[24] = 99; // op kind
        assert_eq!(code(&j), Malformed);
        let mut j = job(1, &[op(OpKind::Fill, 0, 0, 1, 0)]);
        j[28] = 1; // op flags
        assert_eq!(code(&j), Malformed);
        let mut j = job(1, &[op(OpKind::Fill, 0, 0, 1, 0)]);
        j[20] = 1; // job padding
        assert_eq!(code(&j), Malformed);
        // nr_ops larger than the ops present.
        let mut j = job(1, &[op(OpKind::Fill, 0, 0, 1, 0)]);
        j[16] = 2;
        assert_eq!(code(&j), Malformed);
    }

    /// Protocol 0.5: INVALIDATE's `hdr.flags` is its reason. Every reason
    /// parses (0 is a 0.4 driver's "unknown"); any other value, or a bit
    /// beside a reason, is MALFORMED; other commands still need 0.
    #[test]
    fn invalidate_reasons() {
        let codes: Vec<u32> = InvalReason::ALL.iter().map(|r| r.code()).collect();
        assert_eq!(codes, [0, 1, 2, 3, 4, 5, 6, 7, 8, 0x10, 0x11, 0x12]);
        for r in InvalReason::ALL {
            assert_eq!(
                parse(&invalidate_for(0x1000, 0x1000, r)).unwrap(),
                SvmCommand::Invalidate {
                    start: 0x1000,
                    end: 0x2000,
                    reason: r
                },
                "{r}"
            );
            assert_eq!(InvalReason::from_code(r.code()), Some(r));
        }
        // The kernel's events, in enum mmu_notifier_event order, are 1..=8.
        assert_eq!(InvalReason::Unmap.code(), 1);
        assert_eq!(InvalReason::Exclusive.code(), 8);
        let with_flags = |f: u32| {
            let mut b = invalidate(0x1000, 0x1000);
            b[4..8].copy_from_slice(&f.to_le_bytes());
            b
        };
        assert!(matches!(
            parse(&with_flags(0)).unwrap(),
            SvmCommand::Invalidate {
                reason: InvalReason::Unknown,
                ..
            }
        ));
        for bad in [9, 0xf, 0x13, 0xff, 0x100, 0x102, 1 << 31, 0x8000_0002, !0] {
            let e = parse(&with_flags(bad)).unwrap_err();
            assert_eq!(e.code, ErrorCode::Malformed, "{bad:#x}");
            assert!(e.why.contains("vgpu_svm_inval_reason"), "{e}");
        }
        // A reason on any other command is not allowed.
        for mut other in [unbind(0x1000, 0x1000), nop(), stats(), resume(1)] {
            other[4..8].copy_from_slice(&2u32.to_le_bytes());
            assert_eq!(code(&other), ErrorCode::Malformed);
        }
        // Still validated like before with a reason.
        assert_eq!(
            code(&invalidate_for(0x1001, 0x1000, InvalReason::Clear)),
            ErrorCode::Misaligned
        );
    }

    #[test]
    fn resp_roundtrip_and_offsets() {
        let r = SvmResp {
            status: Status::Fault,
            error: None,
            job_id: 0x1122,
            result: 0x3344,
            fault: FaultInfo {
                va: 0x7000,
                access: u::VGPU_SVM_ACCESS_WRITE,
                op_index: 3,
                progress: 0x500,
            },
            stats: WireStats::from_array(std::array::from_fn(|i| i as u64 + 100)),
        };
        let b = r.encode();
        assert_eq!(&b[0..4], &1u32.to_le_bytes());
        assert_eq!(&b[8..16], &0x1122u64.to_le_bytes());
        assert_eq!(&b[24..32], &0x7000u64.to_le_bytes());
        assert_eq!(&b[32..36], &2u32.to_le_bytes());
        assert_eq!(&b[36..40], &3u32.to_le_bytes());
        assert_eq!(&b[48..56], &100u64.to_le_bytes());
        assert_eq!(&b[48 + 11 * 8..48 + 12 * 8], &111u64.to_le_bytes());
        let s = offset_of!(u::vgpu_svm_resp, stats);
        assert_eq!(
            &b[s + offset_of!(u::vgpu_svm_stats, cpu_walk_errors)..][..8],
            &112u64.to_le_bytes()
        );
        assert_eq!(
            &b[s + offset_of!(u::vgpu_svm_stats, unchecked_accesses)..][..8],
            &113u64.to_le_bytes()
        );
        assert_eq!(
            &b[s + offset_of!(u::vgpu_svm_stats, violations_no_direct_map)..][..8],
            &114u64.to_le_bytes()
        );
        assert_eq!(
            s + offset_of!(u::vgpu_svm_stats, violations_no_direct_map),
            160
        );
        assert!(b[48 + 15 * 8..].iter().all(|&x| x == 0));
        assert_eq!(SvmResp::decode(&b).unwrap(), r);
        let e = SvmResp::error(ErrorCode::Aborted, 9);
        assert_eq!(SvmResp::decode(&e.encode()).unwrap(), e);
    }

    #[test]
    fn fnv_and_pattern() {
        assert_eq!(fnv::hash(b""), fnv::OFFSET);
        assert_eq!(fnv::hash(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv::update(fnv::hash(b"foo"), b"bar"), fnv::hash(b"foobar"));
        assert_eq!(pattern_byte(0, 0), 0);
        assert_eq!(pattern_byte(1, 0), (0x9e37_79b9_7f4a_7c15u64 >> 56) as u8);
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

            /// Arbitrary bytes, with the type field steered into the command
            /// range half of the time: parse never panics, and whatever it
            /// accepts re-validates.
            #[test]
            fn parse_never_panics(mut bytes in proptest::collection::vec(any::<u8>(), 0..400),
                                  ty in 0u32..12, steer in any::<bool>()) {
                if steer && bytes.len() >= 8 {
                    bytes[0..4].copy_from_slice(&ty.to_le_bytes());
                    bytes[4..8].copy_from_slice(&0u32.to_le_bytes());
                }
                if let Ok(SvmCommand::Job { ops, .. }) = parse(&bytes) {
                    prop_assert!(!ops.is_empty() && ops.len() <= MAX_OPS as usize);
                    for o in ops {
                        prop_assert!(o.len <= MAX_OP_LEN);
                        if o.kind.writes_dst() {
                            prop_assert!(o.dst as u128 + o.bytes() as u128 <= VA_LIMIT as u128);
                        }
                    }
                }
            }

            /// Well-formed jobs with arbitrary fields: accepted or rejected, never a panic.
            #[test]
            fn jobs_with_arbitrary_fields(id in any::<u64>(), n in 1usize..70,
                                          kind in 0u32..8, dst in any::<u64>(), src in any::<u64>(),
                                          len in any::<u64>(), value in any::<u64>()) {
                let mut v = job(id, &vec![op(OpKind::Copy, dst, src, len, value); n]);
                for i in 0..n {
                    v[JOB_HDR_SIZE + i * OP_SIZE..][..4].copy_from_slice(&kind.to_le_bytes());
                }
                let _ = parse(&v);
            }

            #[test]
            fn resp_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
                let _ = SvmResp::decode(&bytes);
            }
        }
    }
}
