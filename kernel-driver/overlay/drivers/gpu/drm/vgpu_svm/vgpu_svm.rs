// SPDX-License-Identifier: GPL-2.0

//! vgpu_svm: a DRM driver for the vgpu-svm virtual GPU.
//!
//! The device is a virtio-gpu device (virtio id 16) served by the `vgpu-device` vhost-user
//! daemon; it offers the private `VGPU_SVM` capset, whose contexts carry the vgpu-svm device
//! protocol (`include/uapi/linux/vgpu_svm_protocol.h`). The driver binds the virtio device,
//! discovers the capset over the control queue and registers a DRM render node whose ioctls
//! are defined in `include/uapi/drm/vgpu_svm_drm.h`.
//!
//! Layout: `driver.rs` (virtio probe, DRM driver), `gpu.rs` (the virtio-gpu control
//! channel), `file.rs` (per-open state and ioctls), `gem.rs` (GEM objects).

mod driver;
mod file;
mod gem;
mod gpu;

kernel::module_virtio_driver! {
    type: driver::VgpuDriver,
    name: "vgpu_svm",
    authors: ["vgpu-svm developers"],
    description: "vgpu-svm virtual GPU: HMM-mirrored shared virtual memory",
    license: "GPL v2",
}
