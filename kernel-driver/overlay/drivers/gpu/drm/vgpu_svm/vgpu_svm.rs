// SPDX-License-Identifier: GPL-2.0

//! vgpu_svm: a DRM driver for the vgpu-svm virtual GPU.
//!
//! The device is a virtio-gpu device (virtio id 16) served by the `vgpu-device` vhost-user
//! daemon; it offers the private `VGPU_SVM` capset, whose contexts carry the vgpu-svm device
//! protocol (`include/uapi/linux/vgpu_svm_protocol.h`). The driver binds the virtio device,
//! discovers the capset over the control queue and registers a DRM render node whose ioctls
//! are defined in `include/uapi/drm/vgpu_svm_drm.h`.
//!
//! Layout: `driver.rs` (virtio probe, DRM driver), `gpu.rs` (the virtio-gpu control channel
//! and the device protocol), `file.rs` (per-open state and ioctls), `context.rs` (a GPU
//! context and the invalidation protocol), `mirror.rs` (the populate loop), `pagetable.rs`
//! (the GPU page table), `gem.rs` (userptr objects), `job.rs` (running jobs, servicing
//! faults), `debug.rs` (debugfs knobs for the negative controls).

mod context;
mod debug;
mod driver;
mod file;
mod gem;
mod gpu;
mod job;
mod mirror;
mod pagetable;

kernel::module_virtio_driver! {
    type: driver::VgpuDriver,
    name: "vgpu_svm",
    authors: ["vgpu-svm developers"],
    description: "vgpu-svm virtual GPU: HMM-mirrored shared virtual memory",
    license: "GPL v2",
    params: {
        unsafe_debug: u32 {
            default: 0,
            description: "1: allow the debugfs knobs that break coherence on purpose (tests only)",
        },
        cmd_timeout_ms: u32 {
            default: 10000,
            description: "how long to wait for the device to answer a command or invalidation (100..600000 ms)",
        },
        job_timeout_ms: u32 {
            default: 120000,
            description: "how long a job may run on the device (100..600000 ms)",
        },
    },
}
