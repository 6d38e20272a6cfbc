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

/// `DRM_IOCTL_VGPU_SVM_GET_PARAM`, from the generated bindings (an anonymous
/// C enum there, whose Rust type is whatever bindgen picks: hence the cast).
#[allow(clippy::unnecessary_cast)]
pub(crate) const DRM_IOCTL_VGPU_SVM_GET_PARAM: u32 = vgpu_uapi::DRM_IOCTL_VGPU_SVM_GET_PARAM as u32;

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

    #[test]
    fn iowr_fields() {
        let n = iowr(b'x', 0x12, 0x345);
        assert_eq!(n >> 30, 3, "read|write direction");
        assert_eq!((n >> 16) & 0x3fff, 0x345);
        assert_eq!((n >> 8) & 0xff, u32::from(b'x'));
        assert_eq!(n & 0xff, 0x12);
    }
}
