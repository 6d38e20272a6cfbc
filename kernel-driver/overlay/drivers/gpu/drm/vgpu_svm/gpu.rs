// SPDX-License-Identifier: GPL-2.0

//! The virtio-gpu control channel: typed commands over the control virtqueue.

use kernel::{prelude::*, sync::Arc, uapi, virtio};

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
pub(crate) struct ControlQueue {
    vq: Arc<virtio::Virtqueue>,
}

/// Size of `struct virtio_gpu_ctrl_hdr`, the start of every request and response.
const HDR_LEN: usize = core::mem::size_of::<uapi::virtio_gpu_ctrl_hdr>();

fn le32(bytes: &[u8], at: usize) -> Result<u32> {
    let b = bytes.get(at..at + 4).ok_or(EIO)?;
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn le64(bytes: &[u8], at: usize) -> Result<u64> {
    Ok(u64::from(le32(bytes, at)?) | (u64::from(le32(bytes, at + 4)?) << 32))
}

/// A request: a control header of type `cmd` followed by little-endian `u32` arguments.
fn request(cmd: u32, args: &[u32]) -> Result<KVec<u8>> {
    let mut req = KVec::with_capacity(HDR_LEN + 4 * args.len(), GFP_KERNEL)?;
    req.extend_from_slice(&cmd.to_le_bytes(), GFP_KERNEL)?;
    req.resize(HDR_LEN, 0, GFP_KERNEL)?; // flags, fence_id, ctx_id, ring_idx: zero
    for a in args {
        req.extend_from_slice(&a.to_le_bytes(), GFP_KERNEL)?;
    }
    Ok(req)
}

impl ControlQueue {
    pub(crate) fn new(vq: Arc<virtio::Virtqueue>) -> Self {
        Self { vq }
    }

    /// Sends `req` and returns the response if its type is `expect`; a device error response
    /// (or a short one) becomes `EIO`.
    fn call(&self, req: KVec<u8>, resp_len: usize, expect: u32) -> Result<KVec<u8>> {
        let resp = self.vq.exchange(req, resp_len, virtio::EXCHANGE_TIMEOUT_MS)?;
        let len = resp.len();
        if len < HDR_LEN {
            pr_err!("vgpu_svm: short response ({len} bytes) from the device\n");
            return Err(EIO);
        }
        let ty = le32(&resp, 0)?;
        if ty != expect {
            pr_err!("vgpu_svm: device answered 0x{ty:x}, expected 0x{expect:x}\n");
            return Err(EIO);
        }
        Ok(resp)
    }

    /// GET_CAPSET_INFO(index) -> (capset id, max version, max size).
    fn capset_info(&self, index: u32) -> Result<(u32, u32, u32)> {
        let req = request(uapi::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_GET_CAPSET_INFO, &[index, 0])?;
        let resp = self.call(
            req,
            core::mem::size_of::<uapi::virtio_gpu_resp_capset_info>(),
            uapi::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_OK_CAPSET_INFO,
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
            let body_len = core::mem::size_of::<uapi::vgpu_svm_capset>();
            if (max_size as usize) < body_len || max_version < uapi::VGPU_SVM_CAPSET_VERSION {
                pr_err!("vgpu_svm: capset too small ({max_size}) or too old (v{max_version})\n");
                return Err(ENODEV);
            }
            let req = request(
                uapi::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_GET_CAPSET,
                &[id, uapi::VGPU_SVM_CAPSET_VERSION],
            )?;
            let resp = self.call(
                req,
                HDR_LEN + max_size as usize,
                uapi::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_OK_CAPSET,
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
}
