//! The virtio-gpu wire format: parsing requests and serializing responses.
//!
//! Layouts follow `include/uapi/linux/virtio_gpu.h`; every field is
//! little-endian. Parsing is done field by field from byte slices (no
//! transmutes), so a short or garbage buffer yields an error, never a panic.
//! The numeric constants come from `virtio-bindings`.

use std::fmt;

use virtio_bindings::virtio_gpu as vg;

/// Size of `struct virtio_gpu_ctrl_hdr`.
pub const CTRL_HDR_SIZE: usize = 24;
/// Size of `struct virtio_gpu_display_one`.
pub const DISPLAY_ONE_SIZE: usize = 24;
/// Size of `struct virtio_gpu_resp_display_info`.
pub const RESP_DISPLAY_INFO_SIZE: usize = CTRL_HDR_SIZE + MAX_SCANOUTS * DISPLAY_ONE_SIZE;
/// Size of `struct virtio_gpu_resp_capset_info`.
pub const RESP_CAPSET_INFO_SIZE: usize = CTRL_HDR_SIZE + 16;
/// Size of the EDID blob in `struct virtio_gpu_resp_edid`.
pub const EDID_BLOB_SIZE: usize = 1024;
/// Size of `struct virtio_gpu_resp_edid`.
pub const RESP_EDID_SIZE: usize = CTRL_HDR_SIZE + 8 + EDID_BLOB_SIZE;
/// Length of `virtio_gpu_ctx_create.debug_name`.
pub const CTX_DEBUG_NAME_LEN: usize = 64;
/// Size of `struct virtio_gpu_config`.
pub const CONFIG_SIZE: usize = 16;
/// Size of `struct virtio_gpu_update_cursor` (also used by MOVE_CURSOR).
pub const UPDATE_CURSOR_SIZE: usize = CTRL_HDR_SIZE + 16 + 16;

pub const MAX_SCANOUTS: usize = vg::VIRTIO_GPU_MAX_SCANOUTS as usize;
pub const FLAG_FENCE: u32 = vg::VIRTIO_GPU_FLAG_FENCE;
pub const FLAG_INFO_RING_IDX: u32 = vg::VIRTIO_GPU_FLAG_INFO_RING_IDX;
pub const CONTEXT_INIT_CAPSET_ID_MASK: u32 = vg::VIRTIO_GPU_CONTEXT_INIT_CAPSET_ID_MASK;

// Device feature bits (virtio-gpu specific, bits 0..23).
pub const F_VIRGL: u32 = vg::VIRTIO_GPU_F_VIRGL;
pub const F_EDID: u32 = vg::VIRTIO_GPU_F_EDID;
pub const F_CONTEXT_INIT: u32 = vg::VIRTIO_GPU_F_CONTEXT_INIT;

/// Command and response type codes (`enum virtio_gpu_ctrl_type`).
pub mod ty {
    use virtio_bindings::virtio_gpu as vg;

    pub const CMD_GET_DISPLAY_INFO: u32 = vg::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_GET_DISPLAY_INFO;
    pub const CMD_RESOURCE_CREATE_2D: u32 =
        vg::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_RESOURCE_CREATE_2D;
    pub const CMD_GET_CAPSET_INFO: u32 = vg::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_GET_CAPSET_INFO;
    pub const CMD_GET_CAPSET: u32 = vg::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_GET_CAPSET;
    pub const CMD_GET_EDID: u32 = vg::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_GET_EDID;
    pub const CMD_SET_SCANOUT_BLOB: u32 = vg::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_SET_SCANOUT_BLOB;
    pub const CMD_CTX_CREATE: u32 = vg::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_CTX_CREATE;
    pub const CMD_CTX_DESTROY: u32 = vg::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_CTX_DESTROY;
    pub const CMD_SUBMIT_3D: u32 = vg::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_SUBMIT_3D;
    pub const CMD_RESOURCE_UNMAP_BLOB: u32 =
        vg::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_RESOURCE_UNMAP_BLOB;
    pub const CMD_UPDATE_CURSOR: u32 = vg::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_UPDATE_CURSOR;
    pub const CMD_MOVE_CURSOR: u32 = vg::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_MOVE_CURSOR;

    pub const RESP_OK_NODATA: u32 = vg::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_OK_NODATA;
    pub const RESP_OK_DISPLAY_INFO: u32 = vg::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_OK_DISPLAY_INFO;
    pub const RESP_OK_CAPSET_INFO: u32 = vg::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_OK_CAPSET_INFO;
    pub const RESP_OK_CAPSET: u32 = vg::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_OK_CAPSET;
    pub const RESP_OK_EDID: u32 = vg::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_OK_EDID;
    pub const RESP_ERR_UNSPEC: u32 = vg::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_ERR_UNSPEC;
    pub const RESP_ERR_OUT_OF_MEMORY: u32 =
        vg::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY;
    pub const RESP_ERR_INVALID_SCANOUT_ID: u32 =
        vg::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_ERR_INVALID_SCANOUT_ID;
    pub const RESP_ERR_INVALID_RESOURCE_ID: u32 =
        vg::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID;
    pub const RESP_ERR_INVALID_CONTEXT_ID: u32 =
        vg::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_ERR_INVALID_CONTEXT_ID;
    pub const RESP_ERR_INVALID_PARAMETER: u32 =
        vg::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER;
}

/// A short human name for a command or response type (for logs and stats).
pub fn type_name(t: u32) -> &'static str {
    match t {
        ty::CMD_GET_DISPLAY_INFO => "GET_DISPLAY_INFO",
        ty::CMD_GET_CAPSET_INFO => "GET_CAPSET_INFO",
        ty::CMD_GET_CAPSET => "GET_CAPSET",
        ty::CMD_GET_EDID => "GET_EDID",
        ty::CMD_CTX_CREATE => "CTX_CREATE",
        ty::CMD_CTX_DESTROY => "CTX_DESTROY",
        ty::CMD_SUBMIT_3D => "SUBMIT_3D",
        ty::CMD_UPDATE_CURSOR => "UPDATE_CURSOR",
        ty::CMD_MOVE_CURSOR => "MOVE_CURSOR",
        ty::CMD_RESOURCE_CREATE_2D..=ty::CMD_SET_SCANOUT_BLOB => "UNSUPPORTED_2D",
        0x0202..=ty::CMD_RESOURCE_UNMAP_BLOB => "UNSUPPORTED_3D",
        ty::RESP_OK_NODATA => "OK_NODATA",
        ty::RESP_OK_DISPLAY_INFO => "OK_DISPLAY_INFO",
        ty::RESP_OK_CAPSET_INFO => "OK_CAPSET_INFO",
        ty::RESP_OK_CAPSET => "OK_CAPSET",
        ty::RESP_OK_EDID => "OK_EDID",
        ty::RESP_ERR_UNSPEC => "ERR_UNSPEC",
        ty::RESP_ERR_OUT_OF_MEMORY => "ERR_OUT_OF_MEMORY",
        ty::RESP_ERR_INVALID_SCANOUT_ID => "ERR_INVALID_SCANOUT_ID",
        ty::RESP_ERR_INVALID_RESOURCE_ID => "ERR_INVALID_RESOURCE_ID",
        ty::RESP_ERR_INVALID_CONTEXT_ID => "ERR_INVALID_CONTEXT_ID",
        ty::RESP_ERR_INVALID_PARAMETER => "ERR_INVALID_PARAMETER",
        _ => "UNKNOWN",
    }
}

/// Little-endian field reader over a byte slice; every read is bounds-checked.
struct LeReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> LeReader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    fn u8(&mut self) -> Option<u8> {
        self.bytes(1).map(|b| b[0])
    }

    fn u32(&mut self) -> Option<u32> {
        self.bytes(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Option<u64> {
        self.bytes(8).map(|b| {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            u64::from_le_bytes(a)
        })
    }
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// `struct virtio_gpu_ctrl_hdr`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtrlHdr {
    pub type_: u32,
    pub flags: u32,
    pub fence_id: u64,
    pub ctx_id: u32,
    pub ring_idx: u8,
}

impl CtrlHdr {
    /// Parses the header at the start of `buf`.
    pub fn parse(buf: &[u8]) -> Result<Self, ParseError> {
        let mut r = LeReader::new(buf);
        let truncated = ParseError::Truncated {
            hdr: None,
            need: CTRL_HDR_SIZE,
            got: buf.len(),
        };
        let hdr = (|| {
            let type_ = r.u32()?;
            let flags = r.u32()?;
            let fence_id = r.u64()?;
            let ctx_id = r.u32()?;
            let ring_idx = r.u8()?;
            r.bytes(3)?;
            Some(CtrlHdr {
                type_,
                flags,
                fence_id,
                ctx_id,
                ring_idx,
            })
        })();
        hdr.ok_or(truncated)
    }

    /// Appends the 24-byte wire form.
    pub fn write(&self, out: &mut Vec<u8>) {
        put_u32(out, self.type_);
        put_u32(out, self.flags);
        put_u64(out, self.fence_id);
        put_u32(out, self.ctx_id);
        out.push(self.ring_idx);
        out.extend_from_slice(&[0u8; 3]);
    }

    /// The header of a response to a request with this header: the given
    /// type, and the request's fence flag, fence id, context id and ring
    /// index, as virtio-gpu requires for fence completion.
    pub fn response(&self, resp_type: u32) -> CtrlHdr {
        CtrlHdr {
            type_: resp_type,
            flags: self.flags & (FLAG_FENCE | FLAG_INFO_RING_IDX),
            fence_id: self.fence_id,
            ctx_id: self.ctx_id,
            ring_idx: self.ring_idx,
        }
    }

    pub fn is_fenced(&self) -> bool {
        self.flags & FLAG_FENCE != 0
    }
}

/// A parsed request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    pub hdr: CtrlHdr,
    pub cmd: Command<'a>,
}

/// The commands the device understands (payload after the header).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command<'a> {
    GetDisplayInfo,
    GetCapsetInfo {
        capset_index: u32,
    },
    GetCapset {
        capset_id: u32,
        capset_version: u32,
    },
    GetEdid {
        scanout: u32,
    },
    CtxCreate {
        context_init: u32,
        /// The debug name, `nlen` bytes of `debug_name` (clamped to 64).
        debug_name: &'a [u8],
    },
    CtxDestroy,
    Submit3d {
        /// The command stream (`size` bytes following the submit header).
        cmds: &'a [u8],
    },
    UpdateCursor,
    MoveCursor,
    /// A valid virtio-gpu command this device does not implement (2D
    /// resources, blobs, ...).
    Unsupported(u32),
}

/// Why a request could not be parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// The buffer is shorter than the command's fixed layout. `hdr` is the
    /// header when at least the header could be read.
    Truncated {
        hdr: Option<CtrlHdr>,
        need: usize,
        got: usize,
    },
    /// The type field is not a virtio-gpu command.
    UnknownCommand(CtrlHdr),
}

impl ParseError {
    pub fn hdr(&self) -> Option<CtrlHdr> {
        match self {
            ParseError::Truncated { hdr, .. } => *hdr,
            ParseError::UnknownCommand(h) => Some(*h),
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Truncated { hdr, need, got } => {
                let name = hdr.map(|h| type_name(h.type_)).unwrap_or("request");
                write!(f, "truncated {name}: need {need} bytes, got {got}")
            }
            ParseError::UnknownCommand(h) => write!(f, "unknown command type {:#x}", h.type_),
        }
    }
}

/// Parses a complete request (header and payload) from `buf`. Trailing
/// bytes beyond the command's layout are ignored, as virtio allows.
pub fn parse_request(buf: &[u8]) -> Result<Request<'_>, ParseError> {
    let hdr = CtrlHdr::parse(buf)?;
    let mut r = LeReader::new(&buf[CTRL_HDR_SIZE..]);
    let truncated = |need_payload: usize| ParseError::Truncated {
        hdr: Some(hdr),
        need: CTRL_HDR_SIZE + need_payload,
        got: buf.len(),
    };
    let cmd = match hdr.type_ {
        ty::CMD_GET_DISPLAY_INFO => Command::GetDisplayInfo,
        ty::CMD_GET_CAPSET_INFO => {
            let capset_index = r.u32().ok_or(truncated(8))?;
            r.u32().ok_or(truncated(8))?;
            Command::GetCapsetInfo { capset_index }
        }
        ty::CMD_GET_CAPSET => {
            let capset_id = r.u32().ok_or(truncated(8))?;
            let capset_version = r.u32().ok_or(truncated(8))?;
            Command::GetCapset {
                capset_id,
                capset_version,
            }
        }
        ty::CMD_GET_EDID => {
            let scanout = r.u32().ok_or(truncated(8))?;
            r.u32().ok_or(truncated(8))?;
            Command::GetEdid { scanout }
        }
        ty::CMD_CTX_CREATE => {
            let need = 8 + CTX_DEBUG_NAME_LEN;
            let nlen = r.u32().ok_or(truncated(need))?;
            let context_init = r.u32().ok_or(truncated(need))?;
            let name = r.bytes(CTX_DEBUG_NAME_LEN).ok_or(truncated(need))?;
            let n = (nlen as usize).min(CTX_DEBUG_NAME_LEN);
            Command::CtxCreate {
                context_init,
                debug_name: &name[..n],
            }
        }
        ty::CMD_CTX_DESTROY => Command::CtxDestroy,
        ty::CMD_SUBMIT_3D => {
            let size = r.u32().ok_or(truncated(8))?;
            r.u32().ok_or(truncated(8))?;
            let need = 8usize.saturating_add(size as usize);
            let cmds = r.bytes(size as usize).ok_or(truncated(need))?;
            Command::Submit3d { cmds }
        }
        ty::CMD_UPDATE_CURSOR | ty::CMD_MOVE_CURSOR => {
            r.bytes(UPDATE_CURSOR_SIZE - CTRL_HDR_SIZE)
                .ok_or(truncated(UPDATE_CURSOR_SIZE - CTRL_HDR_SIZE))?;
            if hdr.type_ == ty::CMD_UPDATE_CURSOR {
                Command::UpdateCursor
            } else {
                Command::MoveCursor
            }
        }
        t @ (ty::CMD_RESOURCE_CREATE_2D..=ty::CMD_SET_SCANOUT_BLOB
        | 0x0202..=ty::CMD_RESOURCE_UNMAP_BLOB) => Command::Unsupported(t),
        _ => return Err(ParseError::UnknownCommand(hdr)),
    };
    Ok(Request { hdr, cmd })
}

/// `struct virtio_gpu_display_one`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DisplayOne {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
    pub enabled: u32,
    pub flags: u32,
}

/// A response body (the header is derived from the request's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    OkNoData,
    /// RESP_OK_NODATA followed by a payload (the VGPU_SVM answer, `struct
    /// vgpu_svm_resp`, rides behind an OK_NODATA header).
    OkNoDataWith(Vec<u8>),
    OkDisplayInfo(Box<[DisplayOne; MAX_SCANOUTS]>),
    OkCapsetInfo {
        capset_id: u32,
        max_version: u32,
        max_size: u32,
    },
    OkCapset(Vec<u8>),
    /// RESP_OK_EDID with `size` valid bytes out of the 1024-byte blob.
    OkEdid {
        size: u32,
        edid: Vec<u8>,
    },
    /// An error response: one of the `ty::RESP_ERR_*` codes.
    Err(u32),
}

impl Response {
    pub fn type_code(&self) -> u32 {
        match self {
            Response::OkNoData | Response::OkNoDataWith(_) => ty::RESP_OK_NODATA,
            Response::OkDisplayInfo(_) => ty::RESP_OK_DISPLAY_INFO,
            Response::OkCapsetInfo { .. } => ty::RESP_OK_CAPSET_INFO,
            Response::OkCapset(_) => ty::RESP_OK_CAPSET,
            Response::OkEdid { .. } => ty::RESP_OK_EDID,
            Response::Err(code) => *code,
        }
    }

    pub fn is_err(&self) -> bool {
        matches!(self, Response::Err(_))
    }

    /// Serializes the response to a request with header `req`.
    pub fn encode(&self, req: &CtrlHdr) -> Vec<u8> {
        let mut out = Vec::with_capacity(CTRL_HDR_SIZE + 64);
        req.response(self.type_code()).write(&mut out);
        match self {
            Response::OkNoData | Response::Err(_) => {}
            Response::OkDisplayInfo(modes) => {
                for m in modes.iter() {
                    for v in [m.x, m.y, m.width, m.height, m.enabled, m.flags] {
                        put_u32(&mut out, v);
                    }
                }
            }
            Response::OkCapsetInfo {
                capset_id,
                max_version,
                max_size,
            } => {
                for v in [*capset_id, *max_version, *max_size, 0] {
                    put_u32(&mut out, v);
                }
            }
            Response::OkCapset(body) | Response::OkNoDataWith(body) => out.extend_from_slice(body),
            Response::OkEdid { size, edid } => {
                put_u32(&mut out, *size);
                put_u32(&mut out, 0);
                let mut blob = [0u8; EDID_BLOB_SIZE];
                let n = edid.len().min(EDID_BLOB_SIZE);
                blob[..n].copy_from_slice(&edid[..n]);
                out.extend_from_slice(&blob);
            }
        }
        out
    }
}

/// `struct virtio_gpu_config`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    pub events_read: u32,
    pub events_clear: u32,
    pub num_scanouts: u32,
    pub num_capsets: u32,
}

impl Config {
    pub fn to_bytes(&self) -> [u8; CONFIG_SIZE] {
        let mut b = [0u8; CONFIG_SIZE];
        for (i, v) in [
            self.events_read,
            self.events_clear,
            self.num_scanouts,
            self.num_capsets,
        ]
        .into_iter()
        .enumerate()
        {
            b[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes());
        }
        b
    }
}

/// Builders of request buffers, for tests (and for anyone driving the device
/// without a guest).
pub mod build {
    use super::*;

    pub fn hdr(type_: u32, flags: u32, fence_id: u64, ctx_id: u32, ring_idx: u8) -> Vec<u8> {
        let mut v = Vec::new();
        CtrlHdr {
            type_,
            flags,
            fence_id,
            ctx_id,
            ring_idx,
        }
        .write(&mut v);
        v
    }

    pub fn get_display_info() -> Vec<u8> {
        hdr(ty::CMD_GET_DISPLAY_INFO, 0, 0, 0, 0)
    }

    pub fn get_capset_info(index: u32) -> Vec<u8> {
        let mut v = hdr(ty::CMD_GET_CAPSET_INFO, 0, 0, 0, 0);
        put_u32(&mut v, index);
        put_u32(&mut v, 0);
        v
    }

    pub fn get_capset(id: u32, version: u32) -> Vec<u8> {
        let mut v = hdr(ty::CMD_GET_CAPSET, 0, 0, 0, 0);
        put_u32(&mut v, id);
        put_u32(&mut v, version);
        v
    }

    pub fn get_edid(scanout: u32) -> Vec<u8> {
        let mut v = hdr(ty::CMD_GET_EDID, 0, 0, 0, 0);
        put_u32(&mut v, scanout);
        put_u32(&mut v, 0);
        v
    }

    pub fn ctx_create(ctx_id: u32, context_init: u32, name: &str) -> Vec<u8> {
        let mut v = hdr(ty::CMD_CTX_CREATE, 0, 0, ctx_id, 0);
        let n = name.len().min(CTX_DEBUG_NAME_LEN);
        put_u32(&mut v, n as u32);
        put_u32(&mut v, context_init);
        let mut dn = [0u8; CTX_DEBUG_NAME_LEN];
        dn[..n].copy_from_slice(&name.as_bytes()[..n]);
        v.extend_from_slice(&dn);
        v
    }

    pub fn ctx_destroy(ctx_id: u32) -> Vec<u8> {
        hdr(ty::CMD_CTX_DESTROY, 0, 0, ctx_id, 0)
    }

    pub fn submit_3d(ctx_id: u32, cmds: &[u8]) -> Vec<u8> {
        let mut v = hdr(ty::CMD_SUBMIT_3D, 0, 0, ctx_id, 0);
        put_u32(&mut v, cmds.len() as u32);
        put_u32(&mut v, 0);
        v.extend_from_slice(cmds);
        v
    }

    pub fn move_cursor() -> Vec<u8> {
        let mut v = hdr(ty::CMD_MOVE_CURSOR, 0, 0, 0, 0);
        v.resize(UPDATE_CURSOR_SIZE, 0);
        v
    }

    /// Sets the fence flag, fence id and ring index of a built request.
    pub fn fenced(mut req: Vec<u8>, fence_id: u64, ring_idx: Option<u8>) -> Vec<u8> {
        let mut flags = FLAG_FENCE;
        if let Some(ri) = ring_idx {
            flags |= FLAG_INFO_RING_IDX;
            req[20] = ri;
        }
        req[4..8].copy_from_slice(&flags.to_le_bytes());
        req[8..16].copy_from_slice(&fence_id.to_le_bytes());
        req
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_roundtrip_and_size() {
        let h = CtrlHdr {
            type_: ty::CMD_SUBMIT_3D,
            flags: FLAG_FENCE | FLAG_INFO_RING_IDX,
            fence_id: 0x0102_0304_0506_0708,
            ctx_id: 7,
            ring_idx: 3,
        };
        let mut v = Vec::new();
        h.write(&mut v);
        assert_eq!(v.len(), CTRL_HDR_SIZE);
        // Little-endian, field offsets as in the C struct.
        assert_eq!(&v[0..4], &0x0207u32.to_le_bytes());
        assert_eq!(&v[8..16], &0x0102_0304_0506_0708u64.to_le_bytes());
        assert_eq!(v[20], 3);
        assert_eq!(&v[21..24], &[0, 0, 0]);
        assert_eq!(CtrlHdr::parse(&v).unwrap(), h);
    }

    #[test]
    fn truncated_header() {
        for n in 0..CTRL_HDR_SIZE {
            let v = vec![0xffu8; n];
            assert_eq!(
                CtrlHdr::parse(&v),
                Err(ParseError::Truncated {
                    hdr: None,
                    need: CTRL_HDR_SIZE,
                    got: n
                })
            );
            assert!(parse_request(&v).is_err());
        }
    }

    #[test]
    fn response_copies_fence_fields_only() {
        let req = CtrlHdr {
            type_: ty::CMD_CTX_CREATE,
            flags: FLAG_FENCE | FLAG_INFO_RING_IDX | 0x80,
            fence_id: 42,
            ctx_id: 9,
            ring_idx: 2,
        };
        let r = req.response(ty::RESP_OK_NODATA);
        assert_eq!(r.type_, ty::RESP_OK_NODATA);
        assert_eq!(r.flags, FLAG_FENCE | FLAG_INFO_RING_IDX);
        assert_eq!((r.fence_id, r.ctx_id, r.ring_idx), (42, 9, 2));
    }

    #[test]
    fn parse_each_command() {
        use build::*;
        assert_eq!(
            parse_request(&get_display_info()).unwrap().cmd,
            Command::GetDisplayInfo
        );
        assert_eq!(
            parse_request(&get_capset_info(3)).unwrap().cmd,
            Command::GetCapsetInfo { capset_index: 3 }
        );
        assert_eq!(
            parse_request(&get_capset(0x53, 1)).unwrap().cmd,
            Command::GetCapset {
                capset_id: 0x53,
                capset_version: 1
            }
        );
        assert_eq!(
            parse_request(&get_edid(0)).unwrap().cmd,
            Command::GetEdid { scanout: 0 }
        );
        let r = ctx_create(5, 0x53, "test");
        assert_eq!(r.len(), CTRL_HDR_SIZE + 8 + 64);
        let p = parse_request(&r).unwrap();
        assert_eq!(p.hdr.ctx_id, 5);
        assert_eq!(
            p.cmd,
            Command::CtxCreate {
                context_init: 0x53,
                debug_name: b"test"
            }
        );
        assert_eq!(
            parse_request(&ctx_destroy(5)).unwrap().cmd,
            Command::CtxDestroy
        );
        assert_eq!(
            parse_request(&submit_3d(5, &[1, 2, 3])).unwrap().cmd,
            Command::Submit3d { cmds: &[1, 2, 3] }
        );
        assert_eq!(
            parse_request(&move_cursor()).unwrap().cmd,
            Command::MoveCursor
        );
        let r = hdr(ty::CMD_RESOURCE_CREATE_2D, 0, 0, 0, 0);
        assert_eq!(
            parse_request(&r).unwrap().cmd,
            Command::Unsupported(ty::CMD_RESOURCE_CREATE_2D)
        );
    }

    #[test]
    fn nlen_is_clamped() {
        let mut r = build::ctx_create(1, 0x53, "abc");
        r[24..28].copy_from_slice(&1000u32.to_le_bytes());
        match parse_request(&r).unwrap().cmd {
            Command::CtxCreate { debug_name, .. } => assert_eq!(debug_name.len(), 64),
            c => panic!("{c:?}"),
        }
    }

    #[test]
    fn truncated_payloads() {
        use build::*;
        for full in [
            get_capset_info(0),
            get_capset(0x53, 1),
            get_edid(0),
            ctx_create(1, 0x53, "x"),
            submit_3d(1, &[0u8; 16]),
            move_cursor(),
        ] {
            for n in CTRL_HDR_SIZE..full.len() {
                match parse_request(&full[..n]) {
                    Err(ParseError::Truncated {
                        hdr: Some(h),
                        got,
                        need,
                    }) => {
                        assert_eq!(got, n);
                        assert!(need > n);
                        assert_eq!(h, CtrlHdr::parse(&full).unwrap());
                    }
                    other => panic!("len {n} of {}: {other:?}", full.len()),
                }
            }
            assert!(parse_request(&full).is_ok());
        }
    }

    #[test]
    fn submit_size_overflow_is_truncation() {
        let mut r = build::submit_3d(1, &[]);
        r[24..28].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            parse_request(&r),
            Err(ParseError::Truncated { .. })
        ));
    }

    #[test]
    fn unknown_command() {
        let r = build::hdr(0x9999, FLAG_FENCE, 5, 1, 0);
        match parse_request(&r) {
            Err(ParseError::UnknownCommand(h)) => assert_eq!(h.fence_id, 5),
            other => panic!("{other:?}"),
        }
        // Response codes are not commands.
        let r = build::hdr(ty::RESP_OK_NODATA, 0, 0, 0, 0);
        assert!(matches!(
            parse_request(&r),
            Err(ParseError::UnknownCommand(_))
        ));
    }

    #[test]
    fn response_sizes() {
        let h = CtrlHdr::default();
        assert_eq!(Response::OkNoData.encode(&h).len(), CTRL_HDR_SIZE);
        assert_eq!(
            Response::OkDisplayInfo(Box::new([DisplayOne::default(); MAX_SCANOUTS]))
                .encode(&h)
                .len(),
            RESP_DISPLAY_INFO_SIZE
        );
        assert_eq!(RESP_DISPLAY_INFO_SIZE, 408);
        let ci = Response::OkCapsetInfo {
            capset_id: 0x53,
            max_version: 1,
            max_size: 56,
        }
        .encode(&h);
        assert_eq!(ci.len(), RESP_CAPSET_INFO_SIZE);
        assert_eq!(&ci[24..28], &0x53u32.to_le_bytes());
        assert_eq!(&ci[28..32], &1u32.to_le_bytes());
        assert_eq!(&ci[32..36], &56u32.to_le_bytes());
        let e = Response::OkEdid {
            size: 0,
            edid: vec![],
        }
        .encode(&h);
        assert_eq!(e.len(), RESP_EDID_SIZE);
        let err = Response::Err(ty::RESP_ERR_UNSPEC).encode(&h);
        assert_eq!(&err[0..4], &0x1200u32.to_le_bytes());
    }

    #[test]
    fn config_bytes() {
        let c = Config {
            num_capsets: 1,
            ..Default::default()
        };
        let b = c.to_bytes();
        assert_eq!(&b[12..16], &1u32.to_le_bytes());
        assert_eq!(&b[..12], &[0u8; 12]);
    }

    #[test]
    fn garbage_never_panics() {
        // A cheap deterministic fuzz: random lengths and bytes, with the type
        // field forced into the command ranges now and then.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for i in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 200) as usize;
            let mut v: Vec<u8> = (0..len).map(|j| (x >> (j % 56)) as u8).collect();
            if len >= 4 && i % 2 == 0 {
                let t = [0x100u32, 0x108, 0x109, 0x200, 0x201, 0x207, 0x300][i % 7];
                v[0..4].copy_from_slice(&t.to_le_bytes());
            }
            let _ = parse_request(&v);
        }
    }
}
