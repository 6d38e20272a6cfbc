// SPDX-License-Identifier: GPL-2.0

//! The virtio-gpu control channel: typed commands over the control virtqueue, and the
//! vgpu-svm device protocol carried in SUBMIT_3D (`include/uapi/linux/vgpu_svm_protocol.h`).

use core::mem::{offset_of, size_of};
use core::sync::atomic::{AtomicU32, Ordering};
use kernel::{prelude::*, sync::Arc, uapi, virtio, virtio::Wait};

/// What the device said about the VGPU_SVM capset at probe time.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Capset {
    pub(crate) id: u32,
    pub(crate) protocol_version: u32,
    pub(crate) max_contexts: u32,
    pub(crate) va_bits: u32,
    pub(crate) features: u64,
}

/// The control queue (virtio-gpu queue 0).
#[derive(Clone)]
pub(crate) struct ControlQueue {
    vq: Arc<virtio::Virtqueue>,
    /// VIRTIO_GPU_F_CONTEXT_INIT was negotiated: CTX_CREATE may name the context type.
    context_init: bool,
    /// The device speaks protocol 0.5 or later: INVALIDATE may carry its reason in
    /// `hdr.flags` (a 0.4 device answers ERR_MALFORMED to non-zero flags, and a failed
    /// INVALIDATE resets the device).
    inval_reasons: bool,
}

/// Protocol minor from which INVALIDATE carries a reason.
const INVAL_REASONS_MINOR: u32 = 5;

/// Size of `struct virtio_gpu_ctrl_hdr`, the start of every request and response.
const HDR_LEN: usize = size_of::<uapi::virtio_gpu_ctrl_hdr>();
/// SUBMIT_3D's fixed part before the command stream.
const SUBMIT_LEN: usize = size_of::<uapi::virtio_gpu_cmd_submit>();
/// A SUBMIT_3D answer: a control header and a `vgpu_svm_resp`.
pub(crate) const RESP_LEN: usize = HDR_LEN + size_of::<uapi::vgpu_svm_resp>();

/// How long the driver waits for the device: jobs may run long (a device copy of many MiB
/// under emulation), control commands (and invalidations) not. Set once at probe from the
/// module parameters `cmd_timeout_ms` and `job_timeout_ms` (clamped to
/// [`TIMEOUT_RANGE_MS`]); the fault-injection tests shorten them to stall the device for
/// longer than both without freezing the guest for minutes.
static CMD_TIMEOUT: AtomicU32 = AtomicU32::new(virtio::EXCHANGE_TIMEOUT_MS);
static JOB_TIMEOUT: AtomicU32 = AtomicU32::new(DEFAULT_JOB_TIMEOUT_MS);
/// The default of `job_timeout_ms`.
pub(crate) const DEFAULT_JOB_TIMEOUT_MS: u32 = 120_000;
/// Accepted timeouts: long enough for a round trip under emulation, short enough that a dead
/// device is noticed within minutes.
pub(crate) const TIMEOUT_RANGE_MS: core::ops::RangeInclusive<u32> = 100..=600_000;

/// Sets the timeouts (module parameters, at probe); out-of-range values are clamped.
pub(crate) fn set_timeouts(cmd_ms: u32, job_ms: u32) {
    let clamp = |v: u32| v.clamp(*TIMEOUT_RANGE_MS.start(), *TIMEOUT_RANGE_MS.end());
    CMD_TIMEOUT.store(clamp(cmd_ms), Ordering::Relaxed);
    JOB_TIMEOUT.store(clamp(job_ms), Ordering::Relaxed);
}

/// How long a control command (or an INVALIDATE) may take.
pub(crate) fn cmd_timeout_ms() -> u32 {
    CMD_TIMEOUT.load(Ordering::Relaxed)
}

/// How long a job (JOB or RESUME) may run.
pub(crate) fn job_timeout_ms() -> u32 {
    JOB_TIMEOUT.load(Ordering::Relaxed)
}

fn le32(bytes: &[u8], at: usize) -> Result<u32> {
    let b = bytes.get(at..at + 4).ok_or(EIO)?;
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn le64(bytes: &[u8], at: usize) -> Result<u64> {
    Ok(u64::from(le32(bytes, at)?) | (u64::from(le32(bytes, at + 4)?) << 32))
}

/// Little-endian writer into a byte buffer (commands are built field by field).
pub(crate) struct Writer<'a> {
    buf: &'a mut [u8],
    at: usize,
}

impl<'a> Writer<'a> {
    pub(crate) fn new(buf: &'a mut [u8]) -> Self {
        Self { buf, at: 0 }
    }

    pub(crate) fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }

    pub(crate) fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }

    pub(crate) fn bytes(&mut self, b: &[u8]) -> &mut Self {
        // Callers size the buffer from the C structs; a short buffer is a driver bug, and
        // writing nothing past it keeps it harmless (the device sees a malformed command).
        if let Some(dst) = self.buf.get_mut(self.at..self.at + b.len()) {
            dst.copy_from_slice(b);
        }
        self.at += b.len();
        self
    }

    /// A virtio-gpu control header.
    pub(crate) fn hdr(&mut self, ty: u32, ctx_id: u32) -> &mut Self {
        self.u32(ty).u32(0).u64(0).u32(ctx_id).u32(0) // type, flags, fence_id, ctx_id, ring_idx+padding
    }

    /// A SUBMIT_3D header for a command stream of `size` bytes, then the command header.
    pub(crate) fn submit(&mut self, ctx_id: u32, size: usize, cmd: u32) -> &mut Self {
        self.submit_with_flags(ctx_id, size, cmd, 0)
    }

    /// [`Self::submit`] with the command header's `flags` (INVALIDATE's reason, 0.5).
    pub(crate) fn submit_with_flags(&mut self, ctx_id: u32, size: usize, cmd: u32, flags: u32) -> &mut Self {
        self.hdr(uapi::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_SUBMIT_3D, ctx_id)
            .u32(size as u32)
            .u32(0)
            .u32(cmd)
            .u32(flags)
    }
}

/// A device fault report (`struct vgpu_svm_fault`).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Fault {
    pub(crate) va: u64,
    pub(crate) write: bool,
    pub(crate) op_index: u32,
}

/// A decoded `struct vgpu_svm_resp`.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Resp {
    Ok { result: u64 },
    Fault(Fault),
    Error(u32),
}

/// Decodes a SUBMIT_3D answer (control header + `vgpu_svm_resp`).
pub(crate) fn parse_resp(bytes: &[u8]) -> Result<Resp> {
    let ty = le32(bytes, 0)?;
    if ty != uapi::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_OK_NODATA {
        pr_err!("vgpu_svm: device rejected a submit: 0x{ty:x}\n");
        return Err(EIO);
    }
    let r = bytes.get(HDR_LEN..).ok_or(EIO)?;
    let status = le32(r, offset_of!(uapi::vgpu_svm_resp, status))?;
    let f = offset_of!(uapi::vgpu_svm_resp, fault);
    Ok(match status {
        uapi::vgpu_svm_status_VGPU_SVM_STATUS_OK => Resp::Ok {
            result: le64(r, offset_of!(uapi::vgpu_svm_resp, result))?,
        },
        uapi::vgpu_svm_status_VGPU_SVM_STATUS_FAULT => Resp::Fault(Fault {
            va: le64(r, f + offset_of!(uapi::vgpu_svm_fault, va))?,
            write: le32(r, f + offset_of!(uapi::vgpu_svm_fault, access))? == uapi::VGPU_SVM_ACCESS_WRITE,
            op_index: le32(r, f + offset_of!(uapi::vgpu_svm_fault, op_index))?,
        }),
        _ => Resp::Error(le32(r, offset_of!(uapi::vgpu_svm_resp, error))?),
    })
}

/// The device's counters from a STATS answer, in `struct vgpu_svm_stats` order.
pub(crate) fn parse_stats(bytes: &[u8]) -> Result<[u64; 12]> {
    let base = HDR_LEN + offset_of!(uapi::vgpu_svm_resp, stats);
    let mut out = [0u64; 12];
    for (i, v) in out.iter_mut().enumerate() {
        *v = le64(bytes, base + 8 * i)?;
    }
    Ok(out)
}

/// A preallocated CTX_DESTROY for one context: the file's release sends it under the update
/// lock (so that no INVALIDATE of the context races it), where nothing may allocate with
/// reclaim (reclaim runs notifier callbacks, which take that lock).
pub(crate) struct DestroyMsg {
    x: Arc<virtio::Exchange>,
    ctx_id: u32,
}

impl DestroyMsg {
    const CMD_LEN: usize = size_of::<uapi::virtio_gpu_ctx_destroy>();

    pub(crate) fn new(ctx_id: u32) -> Result<Self> {
        // Reserved queue slots: teardown never waits behind jobs stuck on the device.
        Ok(Self { x: virtio::Exchange::new_reserved(Self::CMD_LEN, HDR_LEN)?, ctx_id })
    }

    /// Sends CTX_DESTROY and waits (uninterruptibly, bounded) for OK_NODATA: then the device
    /// runs none of the context's jobs and holds none of its translations. Allocates nothing.
    pub(crate) fn send(&self, q: &ControlQueue) -> Result {
        let ctx_id = self.ctx_id;
        self.x.fill(|buf| {
            Writer::new(buf).hdr(uapi::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_CTX_DESTROY, ctx_id);
        })?;
        q.vq.send(&self.x, cmd_timeout_ms())?;
        let ty = self.x.with_response(|r| le32(r, 0))??;
        if ty != uapi::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_OK_NODATA {
            pr_err!("vgpu_svm: CTX_DESTROY {ctx_id}: device answered 0x{ty:x}\n");
            return Err(EIO);
        }
        Ok(())
    }
}

/// A preallocated INVALIDATE(range) for one context: sending it allocates nothing, so it can
/// be used from the notifier callback (a memory-reclaim path).
pub(crate) struct InvalidateMsg {
    x: Arc<virtio::Exchange>,
    ctx_id: u32,
}

impl InvalidateMsg {
    const CMD_LEN: usize = size_of::<uapi::vgpu_svm_cmd_range>();

    pub(crate) fn new(ctx_id: u32) -> Result<Self> {
        // Reserved queue slots: an invalidation never waits behind jobs stuck on the device.
        Ok(Self { x: virtio::Exchange::new_reserved(SUBMIT_LEN + Self::CMD_LEN, RESP_LEN)?, ctx_id })
    }

    /// Sends INVALIDATE(start, size) and waits until the device confirms that no access to
    /// the range is in flight and no translation of it is cached. `reason` (an `enum
    /// vgpu_svm_inval_reason`) goes only to a device of protocol 0.5 or later; older ones
    /// get 0 ("unknown").
    pub(crate) fn send(&self, q: &ControlQueue, start: u64, size: u64, reason: u32) -> Result {
        self.post(q, start, size, reason)?;
        self.collect(q)
    }

    /// The first half of [`Self::send`]: queues the INVALIDATE without waiting for the answer
    /// (sleeps only while the queue is full, bounded). Collect the answer with
    /// [`Self::collect`]; until then the device may still use the old translations.
    pub(crate) fn post(&self, q: &ControlQueue, start: u64, size: u64, reason: u32) -> Result {
        let ctx_id = self.ctx_id;
        let flags = if q.inval_reasons { reason } else { uapi::vgpu_svm_inval_reason_VGPU_SVM_INVAL_UNKNOWN };
        self.x.fill(|buf| {
            Writer::new(buf)
                .submit_with_flags(ctx_id, Self::CMD_LEN, uapi::vgpu_svm_cmd_type_VGPU_SVM_CMD_INVALIDATE, flags)
                .u64(start)
                .u64(size);
        })?;
        q.vq.start(&self.x, cmd_timeout_ms())
    }

    /// The second half of [`Self::send`]: waits (uninterruptibly, bounded) for the answer to
    /// the INVALIDATE [`Self::post`] queued; `Ok` once the device confirmed.
    pub(crate) fn collect(&self, q: &ControlQueue) -> Result {
        q.vq.wait(&self.x, cmd_timeout_ms())?;
        match self.x.with_response(parse_resp)?? {
            Resp::Ok { .. } => Ok(()),
            other => {
                pr_err!("vgpu_svm: INVALIDATE failed: {other:?}\n");
                Err(EIO)
            }
        }
    }
}

impl ControlQueue {
    pub(crate) fn new(vq: Arc<virtio::Virtqueue>, context_init: bool) -> Self {
        Self { vq, context_init, inval_reasons: false }
    }

    /// Adapts to the device's protocol version (from [`Self::discover`]; same major).
    pub(crate) fn set_protocol(&mut self, version: u32) {
        self.inval_reasons = version & 0xffff >= INVAL_REASONS_MINOR;
    }

    /// Resets the device (see [`virtio::Virtqueue::reset_device`]): when it returns, the
    /// device uses no guest memory any more, and every later request fails with `ENODEV`.
    pub(crate) fn reset_device(&self) {
        self.vq.reset_device();
    }

    /// Sends `req` and returns the response if its type is `expect`; a device error response
    /// (or a short one) becomes `EIO`.
    fn call(&self, req: &[u8], resp_len: usize, expect: u32, timeout_ms: u32, wait: Wait) -> Result<KVec<u8>> {
        let resp = self.vq.exchange(req, resp_len, timeout_ms, wait)?;
        if resp.len() < HDR_LEN {
            pr_err!("vgpu_svm: short response ({} bytes) from the device\n", resp.len());
            return Err(EIO);
        }
        let ty = le32(&resp, 0)?;
        if ty != expect {
            pr_err!("vgpu_svm: device answered 0x{ty:x}, expected 0x{expect:x}\n");
            return Err(EIO);
        }
        Ok(resp)
    }

    /// A control command that is answered with OK_NODATA.
    fn call_nodata(&self, req: &[u8], wait: Wait) -> Result {
        self.call(req, HDR_LEN, uapi::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_OK_NODATA, cmd_timeout_ms(), wait)
            .map(|_| ())
    }

    /// GET_CAPSET_INFO(index) -> (capset id, max version, max size).
    fn capset_info(&self, index: u32) -> Result<(u32, u32, u32)> {
        let mut req = [0u8; size_of::<uapi::virtio_gpu_get_capset_info>()];
        Writer::new(&mut req)
            .hdr(uapi::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_GET_CAPSET_INFO, 0)
            .u32(index)
            .u32(0);
        let resp = self.call(
            &req,
            size_of::<uapi::virtio_gpu_resp_capset_info>(),
            uapi::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_OK_CAPSET_INFO,
            cmd_timeout_ms(),
            Wait::Killable,
        )?;
        Ok((le32(&resp, HDR_LEN)?, le32(&resp, HDR_LEN + 4)?, le32(&resp, HDR_LEN + 8)?))
    }

    /// Finds the VGPU_SVM capset among the device's `num_capsets` and reads it.
    pub(crate) fn discover(&self, num_capsets: u32) -> Result<Capset> {
        for index in 0..num_capsets {
            let (id, max_version, max_size) = self.capset_info(index)?;
            if id != uapi::VGPU_SVM_CAPSET_ID {
                continue;
            }
            let body_len = size_of::<uapi::vgpu_svm_capset>();
            if (max_size as usize) < body_len || max_version < uapi::VGPU_SVM_CAPSET_VERSION {
                pr_err!("vgpu_svm: capset too small ({max_size}) or too old (v{max_version})\n");
                return Err(ENODEV);
            }
            let mut req = [0u8; size_of::<uapi::virtio_gpu_get_capset>()];
            Writer::new(&mut req)
                .hdr(uapi::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_GET_CAPSET, 0)
                .u32(id)
                .u32(uapi::VGPU_SVM_CAPSET_VERSION);
            let resp = self.call(
                &req,
                HDR_LEN + max_size as usize,
                uapi::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_OK_CAPSET,
                cmd_timeout_ms(),
                Wait::Killable,
            )?;
            let body = resp.get(HDR_LEN..).ok_or(EIO)?;
            if le32(body, 0)? != uapi::VGPU_SVM_CAPSET_MAGIC {
                pr_err!("vgpu_svm: capset has a bad magic\n");
                return Err(ENODEV);
            }
            let cap = Capset {
                id,
                protocol_version: le32(body, 4)?,
                max_contexts: le32(body, 8)?,
                va_bits: le32(body, 12)?,
                features: le64(body, 16)?,
            };
            if cap.protocol_version >> 16 != uapi::VGPU_SVM_PROTOCOL_MAJOR {
                pr_err!(
                    "vgpu_svm: device speaks protocol {}.{}, driver {}.{}\n",
                    cap.protocol_version >> 16,
                    cap.protocol_version & 0xffff,
                    uapi::VGPU_SVM_PROTOCOL_MAJOR,
                    uapi::VGPU_SVM_PROTOCOL_MINOR
                );
                return Err(ENODEV);
            }
            return Ok(cap);
        }
        pr_err!("vgpu_svm: the device has no VGPU_SVM capset (of {num_capsets})\n");
        Err(ENODEV)
    }

    /// CTX_CREATE of a VGPU_SVM context. `ENOSPC` if the device has no free context (it
    /// answers ERR_OUT_OF_MEMORY when all of the capset's `max_contexts` are in use): a
    /// state of the device, not a failure of it, so user space can tell it from `EIO`.
    pub(crate) fn ctx_create(&self, ctx_id: u32) -> Result {
        let mut req = [0u8; size_of::<uapi::virtio_gpu_ctx_create>()];
        let name = b"vgpu_svm";
        Writer::new(&mut req)
            .hdr(uapi::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_CTX_CREATE, ctx_id)
            .u32(name.len() as u32)
            .u32(if self.context_init { uapi::VGPU_SVM_CAPSET_ID } else { 0 })
            .bytes(name);
        let resp = self.vq.exchange(&req, HDR_LEN, cmd_timeout_ms(), Wait::Killable)?;
        match le32(&resp, 0)? {
            uapi::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_OK_NODATA => Ok(()),
            uapi::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY => Err(ENOSPC),
            ty => {
                pr_err!("vgpu_svm: CTX_CREATE {ctx_id}: device answered 0x{ty:x}\n");
                Err(EIO)
            }
        }
    }

    /// CTX_DESTROY. Not interruptible: it runs when a file is released, often by a task that
    /// is being killed, and what the context's memory may be freed depends on its answer.
    pub(crate) fn ctx_destroy(&self, ctx_id: u32) -> Result {
        let mut req = [0u8; size_of::<uapi::virtio_gpu_ctx_destroy>()];
        Writer::new(&mut req).hdr(uapi::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_CTX_DESTROY, ctx_id);
        self.call_nodata(&req, Wait::Uninterruptible)
    }

    /// Sends one protocol command (built by `build` after the SUBMIT_3D + command headers,
    /// `body_len` bytes) and returns the raw answer. The wait ends on a fatal signal
    /// (`EINTR`); see [`Self::submit_as`].
    pub(crate) fn submit(
        &self,
        ctx_id: u32,
        cmd: u32,
        body_len: usize,
        timeout_ms: u32,
        build: impl FnOnce(&mut Writer<'_>),
    ) -> Result<KVec<u8>> {
        self.submit_as(ctx_id, cmd, body_len, timeout_ms, Wait::Killable, build)
    }

    /// [`Self::submit`] with a choice of wait (cleanup after a fatal signal must not be cut
    /// short by that same signal).
    pub(crate) fn submit_as(
        &self,
        ctx_id: u32,
        cmd: u32,
        body_len: usize,
        timeout_ms: u32,
        wait: Wait,
        build: impl FnOnce(&mut Writer<'_>),
    ) -> Result<KVec<u8>> {
        let cmd_len = size_of::<uapi::vgpu_svm_cmd_hdr>() + body_len;
        let mut req = KVec::new();
        req.resize(SUBMIT_LEN + cmd_len, 0, GFP_KERNEL)?;
        {
            let mut w = Writer::new(&mut req);
            w.submit(ctx_id, cmd_len, cmd);
            build(&mut w);
        }
        self.call(&req, RESP_LEN, uapi::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_OK_NODATA, timeout_ms, wait)
    }
}
