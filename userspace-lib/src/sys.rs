//! Raw ABI items that `vgpu-uapi` does not generate: the generic DRM
//! `DRM_IOCTL_VERSION` and the Linux ioctl number encoding.

use std::os::raw::{c_char, c_int};

/// `struct drm_version` from the kernel's `include/uapi/drm/drm.h`
/// (libdrm ships a copy as `/usr/include/libdrm/drm.h`).
///
/// `vgpu-uapi` only generates the vgpu headers, so this one is mirrored by
/// hand; the unit tests pin its size and field offsets.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct drm_version {
    pub version_major: c_int,
    pub version_minor: c_int,
    pub version_patchlevel: c_int,
    pub name_len: usize, // __kernel_size_t
    pub name: *mut c_char,
    pub date_len: usize,
    pub date: *mut c_char,
    pub desc_len: usize,
    pub desc: *mut c_char,
}

impl Default for drm_version {
    fn default() -> Self {
        Self {
            version_major: 0,
            version_minor: 0,
            version_patchlevel: 0,
            name_len: 0,
            name: std::ptr::null_mut(),
            date_len: 0,
            date: std::ptr::null_mut(),
            desc_len: 0,
            desc: std::ptr::null_mut(),
        }
    }
}

/// The request type `libc::ioctl` takes on this target.
pub(crate) type Request = libc::Ioctl;

// The asm-generic ioctl encoding (x86, arm, arm64, riscv; the guest is x86_64).
// powerpc, mips and sparc use other direction bits and sizes.
#[cfg(any(
    target_arch = "powerpc",
    target_arch = "powerpc64",
    target_arch = "mips",
    target_arch = "mips64",
    target_arch = "sparc",
    target_arch = "sparc64"
))]
compile_error!("vgpu: ioctl number encoding is only written for the asm-generic layout");

const IOC_NRBITS: u32 = 8;
const IOC_TYPEBITS: u32 = 8;
const IOC_SIZEBITS: u32 = 14;
const IOC_NRSHIFT: u32 = 0;
const IOC_TYPESHIFT: u32 = IOC_NRSHIFT + IOC_NRBITS;
const IOC_SIZESHIFT: u32 = IOC_TYPESHIFT + IOC_TYPEBITS;
const IOC_DIRSHIFT: u32 = IOC_SIZESHIFT + IOC_SIZEBITS;
const IOC_WRITE: u32 = 1;
const IOC_READ: u32 = 2;

/// `_IOW(ty, nr, size)`.
pub(crate) const fn iow(ty: u8, nr: u8, size: usize) -> u32 {
    assert!(size < (1 << IOC_SIZEBITS), "ioctl argument too large");
    (IOC_WRITE << IOC_DIRSHIFT)
        | ((size as u32) << IOC_SIZESHIFT)
        | ((ty as u32) << IOC_TYPESHIFT)
        | ((nr as u32) << IOC_NRSHIFT)
}

/// `_IOWR(ty, nr, size)`.
pub(crate) const fn iowr(ty: u8, nr: u8, size: usize) -> u32 {
    assert!(size < (1 << IOC_SIZEBITS), "ioctl argument too large");
    ((IOC_READ | IOC_WRITE) << IOC_DIRSHIFT)
        | ((size as u32) << IOC_SIZESHIFT)
        | ((ty as u32) << IOC_TYPESHIFT)
        | ((nr as u32) << IOC_NRSHIFT)
}

/// `DRM_IOCTL_BASE` (`'d'`).
pub(crate) const DRM_IOCTL_BASE: u8 = b'd';

/// `DRM_IOCTL_VERSION` = `DRM_IOWR(0x00, struct drm_version)`.
pub(crate) const DRM_IOCTL_VERSION: u32 =
    iowr(DRM_IOCTL_BASE, 0x00, std::mem::size_of::<drm_version>());

/// `struct drm_gem_close` from `drm.h`: the argument of `DRM_IOCTL_GEM_CLOSE`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct drm_gem_close {
    pub handle: u32,
    pub pad: u32,
}

/// `DRM_IOCTL_GEM_CLOSE` = `DRM_IOW(0x09, struct drm_gem_close)`.
pub(crate) const DRM_IOCTL_GEM_CLOSE: u32 =
    iow(DRM_IOCTL_BASE, 0x09, std::mem::size_of::<drm_gem_close>());

/// `struct drm_gem_flink` from `drm.h`: the argument of `DRM_IOCTL_GEM_FLINK`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct drm_gem_flink {
    pub handle: u32,
    pub name: u32,
}

/// `DRM_IOCTL_GEM_FLINK` = `DRM_IOWR(0x0a, struct drm_gem_flink)`.
pub(crate) const DRM_IOCTL_GEM_FLINK: u32 =
    iowr(DRM_IOCTL_BASE, 0x0a, std::mem::size_of::<drm_gem_flink>());

/// `struct drm_gem_open` from `drm.h`: the argument of `DRM_IOCTL_GEM_OPEN`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct drm_gem_open {
    pub name: u32,
    pub handle: u32,
    pub size: u64,
}

/// `DRM_IOCTL_GEM_OPEN` = `DRM_IOWR(0x0b, struct drm_gem_open)`.
pub(crate) const DRM_IOCTL_GEM_OPEN: u32 =
    iowr(DRM_IOCTL_BASE, 0x0b, std::mem::size_of::<drm_gem_open>());

// The driver's ioctl numbers, from the generated bindings (an anonymous C enum
// there, whose Rust type is whatever bindgen picks: hence the casts).

/// `DRM_IOCTL_VGPU_SVM_GET_PARAM`.
#[allow(clippy::unnecessary_cast)]
pub(crate) const DRM_IOCTL_VGPU_SVM_GET_PARAM: u32 = vgpu_uapi::DRM_IOCTL_VGPU_SVM_GET_PARAM as u32;
/// `DRM_IOCTL_VGPU_SVM_CTX_CONFIG`.
#[allow(clippy::unnecessary_cast)]
pub(crate) const DRM_IOCTL_VGPU_SVM_CTX_CONFIG: u32 =
    vgpu_uapi::DRM_IOCTL_VGPU_SVM_CTX_CONFIG as u32;
/// `DRM_IOCTL_VGPU_SVM_USERPTR_CREATE`.
#[allow(clippy::unnecessary_cast)]
pub(crate) const DRM_IOCTL_VGPU_SVM_USERPTR_CREATE: u32 =
    vgpu_uapi::DRM_IOCTL_VGPU_SVM_USERPTR_CREATE as u32;
/// `DRM_IOCTL_VGPU_SVM_BIND`.
#[allow(clippy::unnecessary_cast)]
pub(crate) const DRM_IOCTL_VGPU_SVM_BIND: u32 = vgpu_uapi::DRM_IOCTL_VGPU_SVM_BIND as u32;
/// `DRM_IOCTL_VGPU_SVM_UNBIND`.
#[allow(clippy::unnecessary_cast)]
pub(crate) const DRM_IOCTL_VGPU_SVM_UNBIND: u32 = vgpu_uapi::DRM_IOCTL_VGPU_SVM_UNBIND as u32;
/// `DRM_IOCTL_VGPU_SVM_BIND_ARRAY`.
#[allow(clippy::unnecessary_cast)]
pub(crate) const DRM_IOCTL_VGPU_SVM_BIND_ARRAY: u32 = vgpu_uapi::DRM_IOCTL_VGPU_SVM_BIND_ARRAY as u32;
/// `DRM_IOCTL_VGPU_SVM_SUBMIT`.
#[allow(clippy::unnecessary_cast)]
pub(crate) const DRM_IOCTL_VGPU_SVM_SUBMIT: u32 = vgpu_uapi::DRM_IOCTL_VGPU_SVM_SUBMIT as u32;
/// `DRM_IOCTL_VGPU_SVM_STATS`.
#[allow(clippy::unnecessary_cast)]
pub(crate) const DRM_IOCTL_VGPU_SVM_STATS: u32 = vgpu_uapi::DRM_IOCTL_VGPU_SVM_STATS as u32;

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    #[cfg(target_pointer_width = "64")]
    #[test]
    fn drm_version_layout_matches_drm_h() {
        // 3 ints, 4 bytes of padding, then 3 x (size_t, char *).
        assert_eq!(size_of::<drm_version>(), 64);
        assert_eq!(offset_of!(drm_version, version_patchlevel), 8);
        assert_eq!(offset_of!(drm_version, name_len), 16);
        assert_eq!(offset_of!(drm_version, name), 24);
        assert_eq!(offset_of!(drm_version, date_len), 32);
        assert_eq!(offset_of!(drm_version, date), 40);
        assert_eq!(offset_of!(drm_version, desc_len), 48);
        assert_eq!(offset_of!(drm_version, desc), 56);
    }

    #[cfg(target_pointer_width = "64")]
    #[test]
    fn drm_ioctl_version_number() {
        // The well-known value of DRM_IOCTL_VERSION on 64-bit asm-generic targets.
        assert_eq!(DRM_IOCTL_VERSION, 0xc040_6400);
    }

    #[test]
    fn iowr_agrees_with_bindgen_get_param() {
        // Our encoder, fed the header's inputs, must reproduce what bindgen
        // evaluated from the C macros.
        let nr = (vgpu_uapi::DRM_COMMAND_BASE + vgpu_uapi::DRM_VGPU_SVM_GET_PARAM) as u8;
        let size = size_of::<vgpu_uapi::drm_vgpu_svm_get_param>();
        assert_eq!(size, 16);
        assert_eq!(iowr(DRM_IOCTL_BASE, nr, size), DRM_IOCTL_VGPU_SVM_GET_PARAM);
        assert_eq!(DRM_IOCTL_VGPU_SVM_GET_PARAM, 0xc010_6440);
    }

    #[cfg(target_pointer_width = "64")]
    #[test]
    fn drm_ioctl_gem_close_number() {
        // The well-known value of DRM_IOCTL_GEM_CLOSE (libdrm's xf86drm.h users see it).
        assert_eq!(size_of::<drm_gem_close>(), 8);
        assert_eq!(DRM_IOCTL_GEM_CLOSE, 0x4008_6409);
    }

    #[test]
    fn driver_ioctl_numbers_encode_their_structs() {
        use vgpu_uapi as u;
        let nr = |n: u32| (u::DRM_COMMAND_BASE + n) as u8;
        let b = DRM_IOCTL_BASE;
        assert_eq!(
            iow(
                b,
                nr(u::DRM_VGPU_SVM_CTX_CONFIG),
                size_of::<u::drm_vgpu_svm_ctx_config>()
            ),
            DRM_IOCTL_VGPU_SVM_CTX_CONFIG
        );
        assert_eq!(
            iowr(
                b,
                nr(u::DRM_VGPU_SVM_USERPTR_CREATE),
                size_of::<u::drm_vgpu_svm_userptr_create>()
            ),
            DRM_IOCTL_VGPU_SVM_USERPTR_CREATE
        );
        assert_eq!(
            iow(
                b,
                nr(u::DRM_VGPU_SVM_BIND),
                size_of::<u::drm_vgpu_svm_bind>()
            ),
            DRM_IOCTL_VGPU_SVM_BIND
        );
        assert_eq!(
            iow(
                b,
                nr(u::DRM_VGPU_SVM_UNBIND),
                size_of::<u::drm_vgpu_svm_bind>()
            ),
            DRM_IOCTL_VGPU_SVM_UNBIND
        );
        assert_eq!(
            iowr(
                b,
                nr(u::DRM_VGPU_SVM_SUBMIT),
                size_of::<u::drm_vgpu_svm_submit>()
            ),
            DRM_IOCTL_VGPU_SVM_SUBMIT
        );
        assert_eq!(
            iowr(
                b,
                nr(u::DRM_VGPU_SVM_BIND_ARRAY),
                size_of::<u::drm_vgpu_svm_bind_array>()
            ),
            DRM_IOCTL_VGPU_SVM_BIND_ARRAY
        );
        // STATS is _IOR: direction bits 2 (read) only.
        let stats = DRM_IOCTL_VGPU_SVM_STATS;
        assert_eq!(stats >> 30, 2);
        assert_eq!(
            (stats >> 16) & 0x3fff,
            size_of::<u::drm_vgpu_svm_stats>() as u32
        );
        assert_eq!(stats & 0xff, u32::from(nr(u::DRM_VGPU_SVM_STATS)));
    }

    #[test]
    fn gem_name_ioctls_match_drm_h() {
        // The values libdrm's drm.h gives on x86-64.
        assert_eq!(DRM_IOCTL_GEM_FLINK, 0xc008_640a);
        assert_eq!(DRM_IOCTL_GEM_OPEN, 0xc010_640b);
        assert_eq!(DRM_IOCTL_GEM_CLOSE, 0x4008_6409);
    }

    #[test]
    fn iowr_fields() {
        let n = iowr(b'x', 0x12, 0x345);
        assert_eq!(n >> 30, 3, "read|write direction");
        assert_eq!((n >> 16) & 0x3fff, 0x345);
        assert_eq!((n >> 8) & 0xff, u32::from(b'x'));
        assert_eq!(n & 0xff, 0x12);
    }
}
