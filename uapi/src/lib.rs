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

    #[test]
    fn get_param_ioctl_number_matches_drm_iowr() {
        // _IOWR('d', DRM_COMMAND_BASE + 0, 16 bytes)
        let expected = (3u32 << 30) | (16 << 16) | ((b'd' as u32) << 8) | DRM_COMMAND_BASE;
        assert_eq!(DRM_IOCTL_VGPU_SVM_GET_PARAM as u32, expected);
        assert_eq!(core::mem::size_of::<drm_vgpu_svm_get_param>(), 16);
    }
}
