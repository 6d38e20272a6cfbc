//! `vgpu-uapi`: the vgpu-svm ABIs as Rust types.
//!
//! Generated at build time by bindgen from the canonical C headers in this
//! directory: `vgpu_svm_drm.h` (the DRM ioctls of the `vgpu_svm` driver) and
//! `vgpu_svm_protocol.h` (what the driver and the `vgpu-device` daemon say to
//! each other inside virtio-gpu). Do not edit the generated items; change the
//! headers.

#![no_std]
#![allow(non_camel_case_types, non_upper_case_globals, non_snake_case, dead_code)]
#![allow(clippy::all)]

include!(concat!(env!("OUT_DIR"), "/bindings.rs"));

/// The ioctl numbers of `vgpu_svm_drm.h` (`#define`s there; see `wrapper.h`).
pub const DRM_IOCTL_VGPU_SVM_GET_PARAM: u32 = VGPU_UAPI_IOCTL_GET_PARAM;
pub const DRM_IOCTL_VGPU_SVM_CTX_CONFIG: u32 = VGPU_UAPI_IOCTL_CTX_CONFIG;
pub const DRM_IOCTL_VGPU_SVM_USERPTR_CREATE: u32 = VGPU_UAPI_IOCTL_USERPTR_CREATE;
pub const DRM_IOCTL_VGPU_SVM_BIND: u32 = VGPU_UAPI_IOCTL_BIND;
pub const DRM_IOCTL_VGPU_SVM_UNBIND: u32 = VGPU_UAPI_IOCTL_UNBIND;
pub const DRM_IOCTL_VGPU_SVM_SUBMIT: u32 = VGPU_UAPI_IOCTL_SUBMIT;
pub const DRM_IOCTL_VGPU_SVM_STATS: u32 = VGPU_UAPI_IOCTL_STATS;
pub const DRM_IOCTL_VGPU_SVM_BIND_ARRAY: u32 = VGPU_UAPI_IOCTL_BIND_ARRAY;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capset_layout_is_fixed() {
        // The capset is a wire format: its size must not drift.
        assert_eq!(core::mem::size_of::<vgpu_svm_capset>(), 56);
        assert!(VGPU_SVM_CAPSET_ID < 256, "capset id must fit context_init's low byte");
        assert_eq!(&VGPU_SVM_CAPSET_MAGIC.to_le_bytes(), b"VSVM");
    }

    /// `_IOC(dir, 'd', nr, size)` as in asm-generic/ioctl.h.
    const fn ioc(dir: u32, nr: u32, size: usize) -> u32 {
        (dir << 30) | ((size as u32) << 16) | ((b'd' as u32) << 8) | nr
    }

    #[test]
    fn every_ioctl_number_has_its_direction_size_and_index() {
        use core::mem::size_of;
        let (w, r, wr) = (1, 2, 3);
        let b = DRM_COMMAND_BASE;
        assert_eq!(DRM_IOCTL_VGPU_SVM_GET_PARAM, ioc(wr, b + DRM_VGPU_SVM_GET_PARAM, size_of::<drm_vgpu_svm_get_param>()));
        assert_eq!(DRM_IOCTL_VGPU_SVM_CTX_CONFIG, ioc(w, b + DRM_VGPU_SVM_CTX_CONFIG, size_of::<drm_vgpu_svm_ctx_config>()));
        assert_eq!(
            DRM_IOCTL_VGPU_SVM_USERPTR_CREATE,
            ioc(wr, b + DRM_VGPU_SVM_USERPTR_CREATE, size_of::<drm_vgpu_svm_userptr_create>())
        );
        assert_eq!(DRM_IOCTL_VGPU_SVM_BIND, ioc(w, b + DRM_VGPU_SVM_BIND, size_of::<drm_vgpu_svm_bind>()));
        assert_eq!(DRM_IOCTL_VGPU_SVM_UNBIND, ioc(w, b + DRM_VGPU_SVM_UNBIND, size_of::<drm_vgpu_svm_bind>()));
        assert_eq!(DRM_IOCTL_VGPU_SVM_SUBMIT, ioc(wr, b + DRM_VGPU_SVM_SUBMIT, size_of::<drm_vgpu_svm_submit>()));
        assert_eq!(DRM_IOCTL_VGPU_SVM_STATS, ioc(r, b + DRM_VGPU_SVM_STATS, size_of::<drm_vgpu_svm_stats>()));
        assert_eq!(DRM_IOCTL_VGPU_SVM_BIND_ARRAY, ioc(wr, b + DRM_VGPU_SVM_BIND_ARRAY, size_of::<drm_vgpu_svm_bind_array>()));
    }

    #[test]
    fn get_param_ioctl_number_matches_drm_iowr() {
        // _IOWR('d', DRM_COMMAND_BASE + 0, 16 bytes)
        let expected = (3u32 << 30) | (16 << 16) | ((b'd' as u32) << 8) | DRM_COMMAND_BASE;
        assert_eq!(DRM_IOCTL_VGPU_SVM_GET_PARAM as u32, expected);
        assert_eq!(core::mem::size_of::<drm_vgpu_svm_get_param>(), 16);
    }
}
