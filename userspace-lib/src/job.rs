//! [`Job`]: a list of device operations on GPU virtual addresses, built with a
//! fluent builder and run by [`Context::submit`](crate::Context::submit).

use vgpu_uapi::drm_vgpu_svm_op;

use crate::context::UserptrBo;

/// Most ops one job may carry (`VGPU_SVM_MAX_OPS`).
pub const MAX_OPS: usize = vgpu_uapi::VGPU_SVM_MAX_OPS as usize;

/// Most userptr objects one job may name (the SUBMIT ioctl's limit).
pub const MAX_HANDLES: usize = 1024;

/// Longest single op in bytes (`VGPU_SVM_MAX_OP_LEN`).
pub const MAX_OP_LEN: u64 = vgpu_uapi::VGPU_SVM_MAX_OP_LEN;
/// Most bytes [`Job::prefault`] mirrors per job (`VGPU_SVM_PREFAULT_MAX`).
pub const PREFAULT_MAX: u64 = vgpu_uapi::VGPU_SVM_PREFAULT_MAX as u64;

/// One device operation. Addresses are GPU virtual addresses: in an SVM
/// context the same as the CPU's, otherwise inside a bound userptr object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `dst <- src`, `len` bytes.
    Copy {
        /// Destination GPU VA.
        dst: u64,
        /// Source GPU VA.
        src: u64,
        /// Bytes.
        len: u64,
    },
    /// `len` bytes at `dst` set to `value`.
    Fill {
        /// Destination GPU VA.
        dst: u64,
        /// Bytes.
        len: u64,
        /// The byte.
        value: u8,
    },
    /// FNV-1a 64 of `len` bytes at `src` (see [`crate::reference::fnv1a64`]);
    /// the job's [`JobResult::result`] if it is the last HASH/ATOMIC_ADD.
    Hash {
        /// Source GPU VA.
        src: u64,
        /// Bytes.
        len: u64,
    },
    /// `*(u64 *)dst += value` atomically (`dst` 8-byte aligned); the old value
    /// is the job's [`JobResult::result`] if it is the last HASH/ATOMIC_ADD.
    AtomicAdd {
        /// Destination GPU VA, 8-byte aligned.
        dst: u64,
        /// Addend.
        value: u64,
    },
    /// `dst[i] = pattern_byte(seed, i)` for `i < len` (see
    /// [`crate::reference::pattern_byte`]).
    WritePattern {
        /// Destination GPU VA.
        dst: u64,
        /// Bytes.
        len: u64,
        /// Pattern seed.
        seed: u64,
    },
    /// Reads `len` bytes at `src` and discards them (touch only; every page is
    /// still translated and checked).
    Read {
        /// Source GPU VA.
        src: u64,
        /// Bytes.
        len: u64,
    },
}

impl Op {
    /// The ABI form (`struct drm_vgpu_svm_op`).
    pub fn to_raw(self) -> drm_vgpu_svm_op {
        use vgpu_uapi as u;
        let (kind, dst, src, len, value) = match self {
            Op::Copy { dst, src, len } => (u::VGPU_SVM_OP_KIND_COPY, dst, src, len, 0),
            Op::Fill { dst, len, value } => {
                (u::VGPU_SVM_OP_KIND_FILL, dst, 0, len, u64::from(value))
            }
            Op::Hash { src, len } => (u::VGPU_SVM_OP_KIND_HASH, 0, src, len, 0),
            Op::AtomicAdd { dst, value } => (u::VGPU_SVM_OP_KIND_ATOMIC_ADD, dst, 0, 8, value),
            Op::WritePattern { dst, len, seed } => {
                (u::VGPU_SVM_OP_KIND_WRITE_PATTERN, dst, 0, len, seed)
            }
            Op::Read { src, len } => (u::VGPU_SVM_OP_KIND_READ, 0, src, len, 0),
        };
        drm_vgpu_svm_op {
            kind,
            flags: 0,
            dst,
            src,
            len,
            value,
        }
    }

    /// Whether the op writes memory.
    pub fn writes(self) -> bool {
        matches!(
            self,
            Op::Copy { .. } | Op::Fill { .. } | Op::AtomicAdd { .. } | Op::WritePattern { .. }
        )
    }
}

/// What a completed job reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JobResult {
    /// The result of the job's last HASH or ATOMIC_ADD op (0 if none).
    pub result: u64,
    /// Device faults the driver serviced while the job ran.
    pub faults: u64,
}

/// A device job: up to [`MAX_OPS`] operations run in order, plus the userptr
/// objects they use (validated by the driver before the job runs).
///
/// ```
/// use vgpu::{Job, Op};
/// let job = Job::new()
///     .write_pattern(0x10000, 4096, 7)
///     .copy(0x20000, 0x10000, 4096)
///     .hash(0x20000, 4096);
/// assert_eq!(job.len(), 3);
/// assert!(job.writes());
/// assert_eq!(job.op_list()[2], Op::Hash { src: 0x20000, len: 4096 });
/// ```
///
/// The builder does not enforce the ABI's limits (1..=64 ops, 0..=1024
/// handles): the driver does, so that tests can probe it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Job {
    ops: Vec<Op>,
    handles: Vec<u32>,
    prefault: bool,
}

impl Job {
    /// An empty job.
    pub fn new() -> Job {
        Job::default()
    }

    /// Appends `op`.
    pub fn op(mut self, op: Op) -> Job {
        self.ops.push(op);
        self
    }

    /// Appends a COPY of `len` bytes from `src` to `dst`.
    pub fn copy(self, dst: u64, src: u64, len: u64) -> Job {
        self.op(Op::Copy { dst, src, len })
    }

    /// Appends a FILL of `len` bytes at `dst` with `value`.
    pub fn fill(self, dst: u64, len: u64, value: u8) -> Job {
        self.op(Op::Fill { dst, len, value })
    }

    /// Appends a HASH (FNV-1a 64) of `len` bytes at `src`.
    pub fn hash(self, src: u64, len: u64) -> Job {
        self.op(Op::Hash { src, len })
    }

    /// Appends an ATOMIC_ADD of `value` to the u64 at `dst`.
    pub fn atomic_add(self, dst: u64, value: u64) -> Job {
        self.op(Op::AtomicAdd { dst, value })
    }

    /// Appends a WRITE_PATTERN of `len` bytes at `dst` with `seed`.
    pub fn write_pattern(self, dst: u64, len: u64, seed: u64) -> Job {
        self.op(Op::WritePattern { dst, len, seed })
    }

    /// Appends a READ (touch) of `len` bytes at `src`.
    pub fn read(self, src: u64, len: u64) -> Job {
        self.op(Op::Read { src, len })
    }

    /// Names `bo` as used by the job (once, however often it is named).
    pub fn uses(self, bo: &UserptrBo<'_>) -> Job {
        self.uses_handle(bo.handle())
    }

    /// Asks the driver to mirror what the ops will touch before the job starts
    /// (`VGPU_SVM_SUBMIT_PREFAULT`, SVM contexts, at most
    /// [`PREFAULT_MAX`] bytes): a job on memory it has not touched yet then
    /// takes no device fault. See the flag's documentation in the uAPI header
    /// for what it may fault in when the job fails early.
    pub fn prefault(mut self) -> Job {
        self.prefault = true;
        self
    }

    /// The SUBMIT flags this job asks for.
    pub fn submit_flags(&self) -> u32 {
        if self.prefault {
            vgpu_uapi::VGPU_SVM_SUBMIT_PREFAULT
        } else {
            0
        }
    }

    /// Names a raw GEM handle as used by the job (for the C API and for tests
    /// that send handles the driver must refuse).
    pub fn uses_handle(mut self, handle: u32) -> Job {
        if !self.handles.contains(&handle) {
            self.handles.push(handle);
        }
        self
    }

    /// The ops, in order.
    pub fn op_list(&self) -> &[Op] {
        &self.ops
    }

    /// The GEM handles the job names.
    pub fn handles(&self) -> &[u32] {
        &self.handles
    }

    /// Number of ops.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// True if the job has no ops (the driver refuses it with `EINVAL`).
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Whether any op writes memory.
    pub fn writes(&self) -> bool {
        self.ops.iter().any(|op| op.writes())
    }

    /// The ops in ABI form.
    pub fn raw_ops(&self) -> Vec<drm_vgpu_svm_op> {
        self.ops.iter().map(|op| op.to_raw()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vgpu_uapi as u;

    #[test]
    fn raw_encoding() {
        let job = Job::new()
            .copy(1, 2, 3)
            .fill(4, 5, 0xab)
            .hash(6, 7)
            .atomic_add(8, 9)
            .write_pattern(10, 11, 12)
            .read(13, 14);
        let raw = job.raw_ops();
        let k: Vec<u32> = raw.iter().map(|o| o.kind).collect();
        assert_eq!(
            k,
            [
                u::VGPU_SVM_OP_KIND_COPY,
                u::VGPU_SVM_OP_KIND_FILL,
                u::VGPU_SVM_OP_KIND_HASH,
                u::VGPU_SVM_OP_KIND_ATOMIC_ADD,
                u::VGPU_SVM_OP_KIND_WRITE_PATTERN,
                u::VGPU_SVM_OP_KIND_READ
            ]
        );
        assert_eq!((raw[0].dst, raw[0].src, raw[0].len), (1, 2, 3));
        assert_eq!((raw[1].dst, raw[1].len, raw[1].value), (4, 5, 0xab));
        assert_eq!((raw[2].src, raw[2].len), (6, 7));
        assert_eq!((raw[3].dst, raw[3].value), (8, 9));
        assert_eq!((raw[4].dst, raw[4].len, raw[4].value), (10, 11, 12));
        assert_eq!((raw[5].src, raw[5].len), (13, 14));
        assert!(raw.iter().all(|o| o.flags == 0));
    }

    #[test]
    fn writes_and_handles() {
        assert!(!Job::new().hash(0, 1).read(0, 1).writes());
        assert!(Job::new().hash(0, 1).fill(0, 1, 0).writes());
        let j = Job::new().uses_handle(3).uses_handle(3).uses_handle(5);
        assert_eq!(j.handles(), &[3, 5]);
        assert!(j.is_empty());
    }

    #[test]
    fn limits_match_abi() {
        assert_eq!(MAX_OPS, 64);
        assert_eq!(MAX_OP_LEN, 1 << 32);
    }
}
