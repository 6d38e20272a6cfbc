//! `vgpu`: a safe Rust API over the ioctls of the `vgpu_svm` DRM driver.
//!
//! - [`Device`]: an open render node ([`Device::open_default`] opens a new file
//!   each time), with [`Device::version`] and [`Device::get_param`].
//! - [`Context`]: the GPU context of one open file, bound to the opener's
//!   address space: [`Context::config`] (SVM or not), userptr objects
//!   ([`Context::userptr`], [`UserptrBo`]), bindings ([`Context::bind`]), jobs
//!   ([`Job`], [`Context::submit`]) and counters ([`Context::stats`],
//!   [`Stats`], [`MmuEvent`]).
//! - [`reference`]: what the device computes (FNV-1a hash, WRITE_PATTERN
//!   bytes), so programs can check results on the CPU.
//! - A C ABI (`include/vgpu.h`, `libvgpu.a`): see the `capi` module.
//!
//! Every failure is an [`Error`] naming the operation and carrying the errno
//! exactly as the kernel returned it.
//!
//! The ABI itself (structs, ioctl numbers, constants) lives in the `vgpu-uapi`
//! crate, generated from `uapi/vgpu_svm_drm.h`; it is re-exported as
//! [`uapi`].
//!
//! # Example
//!
//! ```no_run
//! use vgpu::{reference, Context, Job, MmuEvent};
//!
//! fn main() -> Result<(), vgpu::Error> {
//!     let ctx = Context::open_default()?;
//!     assert_eq!(ctx.device().version()?.name, "vgpu_svm");
//!     ctx.config(true)?; // shared virtual memory: GPU VA == CPU VA
//!
//!     let len = 4096;
//!     // SAFETY: a fresh private anonymous mapping.
//!     let p = unsafe {
//!         libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE,
//!                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
//!     } as *mut u8;
//!     let va = p as u64;
//!
//!     let before = ctx.stats()?;
//!     // SAFETY: the job writes only the mapping, reached through `p` alone.
//!     let done = unsafe { ctx.submit(&Job::new().write_pattern(va, len as u64, 1).hash(va, len as u64))? };
//!     assert_eq!(done.result, reference::fnv1a64(&reference::pattern(1, len)));
//!     // SAFETY: the device is done; `p` is valid for `len` bytes.
//!     let seen = unsafe { std::slice::from_raw_parts(p, len) };
//!     assert_eq!(seen, &reference::pattern(1, len)[..]);
//!
//!     // SAFETY: as above.
//!     unsafe { libc::munmap(p.cast(), len) };
//!     let e = ctx.submit_readonly(&Job::new().read(va, len as u64)).unwrap_err();
//!     assert!(e.is(libc::EFAULT));
//!
//!     let d = ctx.stats()?.delta_since(&before);
//!     assert!(d.accesses_checked > 0 && d.violations == 0);
//!     println!("unmap events: {}", d.event(MmuEvent::Unmap));
//!     Ok(())
//! }
//! ```

#![warn(missing_docs)]

pub mod capi;
mod context;
mod device;
mod error;
mod job;
pub mod reference;
mod stats;
mod sys;

pub use context::{BatchError, Context, UserptrBo, BIND_ARRAY_MAX, GPU_VA_BITS, PAGE_SIZE};
pub use device::{Device, DrmVersion, Param, ProtocolVersion, DRIVER_NAME, DRI_DIR, RENDER_MINORS};
pub use error::{Error, Result};
pub use job::{Job, JobResult, Op, MAX_HANDLES, MAX_OPS, MAX_OP_LEN, PREFAULT_MAX};
pub use stats::{MmuEvent, Stats, EVENT_SLOTS};
pub use vgpu_uapi as uapi;
