// SPDX-License-Identifier: GPL-2.0

//! Binding the virtio device and registering the DRM device.

use kernel::{
    device::Core,
    drm::{self, gem, ioctl},
    prelude::*,
    sync::aref::ARef,
    virtio,
};

use core::sync::atomic::AtomicU32;

use crate::{
    debug,
    file::File,
    gem::VgpuObject,
    gpu::{Capset, ControlQueue},
};

/// virtio device type of a GPU (`VIRTIO_ID_GPU` in `include/uapi/linux/virtio_ids.h`).
const VIRTIO_ID_GPU: u32 = 16;

/// virtio-gpu feature bit: CTX_CREATE carries the context type (`VIRTIO_GPU_F_CONTEXT_INIT`).
const VIRTIO_GPU_F_CONTEXT_INIT: u32 = 4;

/// Offset of `num_capsets` in `struct virtio_gpu_config`.
const CONFIG_NUM_CAPSETS: u32 = 12;

pub(crate) struct VgpuDriver;

/// The virtio device's private data while bound: the registered DRM device and the debugfs
/// knobs.
#[pin_data]
pub(crate) struct Vgpu {
    _drm: ARef<drm::Device<VgpuDriver>>,
    #[pin]
    _knobs: debug::Knobs,
}

/// The DRM device of this driver.
pub(crate) type VgpuDevice<Ctx = drm::Registered> = drm::Device<VgpuDriver, Ctx>;

/// What every DRM file of the device shares.
#[pin_data]
pub(crate) struct VgpuData {
    /// Requests to the device. Fails with `ENODEV` once the virtio device is unbound.
    pub(crate) ctrl: ControlQueue,
    /// The device's VGPU_SVM capset, read at probe.
    pub(crate) capset: Capset,
    /// The next device context id (virtio-gpu context ids start at 1).
    pub(crate) next_ctx_id: AtomicU32,
    /// The driver's debugfs directory (`vgpu_svm/`): knobs and one file per context.
    pub(crate) debugfs: kernel::debugfs::Dir,
}

const INFO: drm::DriverInfo = drm::DriverInfo {
    major: 0,
    minor: 1,
    patchlevel: 0,
    name: c"vgpu_svm",
    desc: c"vgpu-svm virtual GPU (HMM shared virtual memory)",
};

kernel::virtio_device_table!(
    VIRTIO_TABLE,
    MODULE_VIRTIO_TABLE,
    <VgpuDriver as virtio::Driver>::IdInfo,
    [(virtio::DeviceId::new(VIRTIO_ID_GPU), ())]
);

impl virtio::Driver for VgpuDriver {
    type IdInfo = ();
    type Data<'bound> = Vgpu;
    const ID_TABLE: virtio::IdTable<Self::IdInfo> = &VIRTIO_TABLE;
    // CTX_CREATE names the context type (our capset) in `context_init`, which the device may
    // read only if this feature was negotiated.
    const FEATURES: &'static [u32] = &[VIRTIO_GPU_F_CONTEXT_INIT];

    fn probe<'bound>(
        vdev: &'bound virtio::Device<Core<'_>>,
        _info: &'bound Self::IdInfo,
    ) -> impl PinInit<Self::Data<'bound>, Error> + 'bound {
        let drm = Self::bind_device(vdev);
        let dir = drm.as_ref().ok().map(|d| d.debugfs.clone());
        try_pin_init!(Vgpu { _drm: drm?, _knobs <- debug::Knobs::new(dir.ok_or(ENODEV)?) }? Error)
    }
}


impl VgpuDriver {
    /// Sets up the queues, reads the capset and registers the DRM device.
    fn bind_device(vdev: &virtio::Device<Core<'_>>) -> Result<ARef<drm::Device<VgpuDriver>>> {
        debug::set_unsafe_debug(*crate::module_parameters::unsafe_debug.value() == 1);
        crate::gpu::set_timeouts(
            *crate::module_parameters::cmd_timeout_ms.value(),
            *crate::module_parameters::job_timeout_ms.value(),
        );

        // virtio-gpu has a control queue and a cursor queue; we only use the first.
        // Without VIRTIO_GPU_F_CONTEXT_INIT (QEMU 10.0's vhost-user-gpu never offers it),
        // CTX_CREATE's `context_init` is not defined: it is sent as zero and the device's only
        // context type, VGPU_SVM, is implied.
        let context_init = vdev.has_feature(VIRTIO_GPU_F_CONTEXT_INIT);
        let mut queues = vdev.find_vqs(&[c"control", c"cursor"])?;
        vdev.ready();

        let mut num_capsets = [0u8; 4];
        vdev.config_read(CONFIG_NUM_CAPSETS, &mut num_capsets)?;
        let num_capsets = u32::from_le_bytes(num_capsets);

        queues.truncate(1);
        let mut ctrl = ControlQueue::new(queues.pop().ok_or(ENODEV)?, context_init);
        let capset = ctrl.discover(num_capsets)?;
        ctrl.set_protocol(capset.protocol_version);
        dev_info!(
            vdev.as_ref(),
            "VGPU_SVM capset 0x{:x}: protocol {}.{}, {} contexts, {}-bit VA, features 0x{:x}\n",
            capset.id,
            capset.protocol_version >> 16,
            capset.protocol_version & 0xffff,
            capset.max_contexts,
            capset.va_bits,
            capset.features
        );

        let debugfs = kernel::debugfs::Dir::new(c"vgpu_svm");
        let data = try_pin_init!(VgpuData { ctrl, capset, next_ctx_id: AtomicU32::new(1), debugfs });
        let drm = drm::UnregisteredDevice::<Self>::new(vdev.as_ref(), data)?;
        let drm = drm::Registration::new_foreign_owned(drm, vdev.as_ref(), 0)?;

        Ok(drm.into())
    }
}

// The ioctl numbers are `#define`s in `vgpu_svm_drm.h`; `rust/uapi/uapi_helper.h` carries
// their values as constants (bindgen cannot expand the macros). `declare_drm_ioctls!` looks
// these names up and checks each one's index and argument size at compile time.
const DRM_IOCTL_VGPU_SVM_GET_PARAM: u32 = kernel::uapi::VGPU_SVM_RUST_IOCTL_GET_PARAM;
const DRM_IOCTL_VGPU_SVM_CTX_CONFIG: u32 = kernel::uapi::VGPU_SVM_RUST_IOCTL_CTX_CONFIG;
const DRM_IOCTL_VGPU_SVM_USERPTR_CREATE: u32 = kernel::uapi::VGPU_SVM_RUST_IOCTL_USERPTR_CREATE;
const DRM_IOCTL_VGPU_SVM_BIND: u32 = kernel::uapi::VGPU_SVM_RUST_IOCTL_BIND;
const DRM_IOCTL_VGPU_SVM_UNBIND: u32 = kernel::uapi::VGPU_SVM_RUST_IOCTL_UNBIND;
const DRM_IOCTL_VGPU_SVM_SUBMIT: u32 = kernel::uapi::VGPU_SVM_RUST_IOCTL_SUBMIT;
const DRM_IOCTL_VGPU_SVM_STATS: u32 = kernel::uapi::VGPU_SVM_RUST_IOCTL_STATS;
const DRM_IOCTL_VGPU_SVM_BIND_ARRAY: u32 = kernel::uapi::VGPU_SVM_RUST_IOCTL_BIND_ARRAY;

#[vtable]
impl drm::Driver for VgpuDriver {
    type Data = VgpuData;
    type File = File;
    type Object<Ctx: drm::DeviceContext> = gem::Object<VgpuObject, Ctx>;

    const INFO: drm::DriverInfo = INFO;
    const FEAT_RENDER: bool = true;
    // Open render nodes keep the module loaded (rmmod refuses while a context is live).
    const OWNER: *mut kernel::bindings::module = crate::THIS_MODULE.as_ptr();

    fn show_fdinfo(file: &drm::File<File>, out: &mut dyn core::fmt::Write) {
        file.inner().show_fdinfo(out);
    }

    kernel::declare_drm_ioctls! {
        (VGPU_SVM_GET_PARAM, drm_vgpu_svm_get_param, ioctl::RENDER_ALLOW, File::get_param),
        (VGPU_SVM_CTX_CONFIG, drm_vgpu_svm_ctx_config, ioctl::RENDER_ALLOW, File::ctx_config),
        (VGPU_SVM_USERPTR_CREATE, drm_vgpu_svm_userptr_create, ioctl::RENDER_ALLOW, File::userptr_create),
        (VGPU_SVM_BIND, drm_vgpu_svm_bind, ioctl::RENDER_ALLOW, File::bind),
        (VGPU_SVM_UNBIND, drm_vgpu_svm_bind, ioctl::RENDER_ALLOW, File::unbind),
        (VGPU_SVM_SUBMIT, drm_vgpu_svm_submit, ioctl::RENDER_ALLOW, File::submit),
        (VGPU_SVM_STATS, drm_vgpu_svm_stats, ioctl::RENDER_ALLOW, File::stats),
        (VGPU_SVM_BIND_ARRAY, drm_vgpu_svm_bind_array, ioctl::RENDER_ALLOW, File::bind_array),
    }
}
