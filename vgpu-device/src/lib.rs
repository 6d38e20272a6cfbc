//! vgpu-device: the virtual GPU of vgpu-svm, a vhost-user virtio-gpu backend.
//!
//! - [`virtio_gpu`]: the virtio-gpu wire format.
//! - [`device`]: command dispatch and the VGPU_SVM contexts (no vhost-user).
//! - [`backend`]: the vhost-user glue for QEMU's `vhost-user-gpu-pci`.
//! - [`stats`]: the JSON counters file.
//! - [`layout`]: the GPU and x86-64 page-table bit layouts, in one place.
//! - [`mem`]: atomic 64-bit guest-physical access.
//! - [`mmu`]: the GPU page-table walker and DIRTY protocol.
//! - [`tlb`]: the GPU TLB (set-associative, range invalidation).
//! - [`checker`]: the x86-64 CPU walker and the coherence verdicts.
//! - [`protocol`]: the VGPU_SVM command stream (parse, answer layout).
//! - [`context`]: per-context state (address spaces, bindings, jobs) and
//!   the command semantics.
//! - [`engine`]: job execution, one page-sized access at a time.
//! - [`invalidate`]: the access barrier behind INVALIDATE's guarantee.
//! - [`history`]: each context's recent INVALIDATEs, for violation records.
//! - [`tlbgen`]: the TLB generation checked at JOB/RESUME (protocol 0.5).
//! - [`pool`]: the bounded pool of job worker threads.
//! - [`ratelimit`]: rate limiting of guest-triggered warnings.
//! - [`counters`]: the SVM counters shared by all threads.

pub mod backend;
pub mod device;
pub mod stats;
pub mod virtio_gpu;

// Device logic of the memory model, independent of vhost-user.
pub mod checker;
pub mod layout;
pub mod mem;
pub mod mmu;
pub mod tlb;

// The VGPU_SVM protocol and its execution.
pub mod context;
pub mod counters;
pub mod engine;
pub mod history;
pub mod invalidate;
pub mod pool;
pub mod protocol;
pub mod ratelimit;
pub mod tlbgen;

#[cfg(test)]
mod svm_tests;
