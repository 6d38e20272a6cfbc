// SPDX-License-Identifier: GPL-2.0

//! Per-open state and the ioctls.

use kernel::{drm, prelude::*, uapi};

use crate::driver::{VgpuDevice, VgpuDriver};

/// One open DRM file. (It becomes the GPU context bound to the opener's mm.)
pub(crate) struct File;

impl drm::file::DriverFile for File {
    type Driver = VgpuDriver;

    fn open(_dev: &VgpuDevice) -> Result<Pin<KBox<Self>>> {
        Ok(KBox::new(Self, GFP_KERNEL)?.into())
    }
}

impl File {
    /// DRM_IOCTL_VGPU_SVM_GET_PARAM: a device or driver parameter.
    pub(crate) fn get_param(
        dev: &VgpuDevice,
        req: &mut uapi::drm_vgpu_svm_get_param,
        _file: &drm::File<File>,
    ) -> Result<u32> {
        if req.pad != 0 {
            return Err(EINVAL);
        }
        let cap = &dev.capset;
        req.value = match req.param {
            uapi::VGPU_SVM_PARAM_PROTOCOL_VERSION => cap.protocol_version.into(),
            uapi::VGPU_SVM_PARAM_CAPSET_ID => cap.id.into(),
            uapi::VGPU_SVM_PARAM_MAX_CONTEXTS => cap.max_contexts.into(),
            uapi::VGPU_SVM_PARAM_VA_BITS => cap.va_bits.into(),
            uapi::VGPU_SVM_PARAM_FEATURES => cap.features,
            _ => return Err(EINVAL),
        };
        Ok(0)
    }
}
