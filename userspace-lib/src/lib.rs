//! `vgpu`: a safe Rust API over the ioctls of the `vgpu_svm` DRM driver.
//!
//! A guest program opens the driver's render node with [`Device::open_default`]
//! (or [`Device::open`] for an explicit path) and talks to it through methods
//! on [`Device`]. Every failure is an [`Error`] naming the operation and
//! carrying the errno exactly as the kernel returned it.
//!
//! The ABI itself (structs, ioctl numbers, constants) lives in the `vgpu-uapi`
//! crate, generated from `uapi/vgpu_svm_drm.h`; it is re-exported as
//! [`uapi`].
//!
//! # Example
//!
//! ```no_run
//! use vgpu::{Device, Param, ProtocolVersion};
//!
//! fn main() -> Result<(), vgpu::Error> {
//!     let dev = Device::open_default()?;
//!     let version = dev.version()?;
//!     assert_eq!(version.name, "vgpu_svm");
//!
//!     let proto = ProtocolVersion::from_raw(dev.get_param(Param::ProtocolVersion)? as u32);
//!     println!("{version}: device protocol {proto}");
//!
//!     // Errors keep the kernel's errno.
//!     match dev.get_param(Param::Features) {
//!         Ok(bits) => println!("features {bits:#x}"),
//!         Err(e) if e.is(libc::EINVAL) => println!("driver predates FEATURES"),
//!         Err(e) => return Err(e), // e.g. "DRM_IOCTL_VGPU_SVM_GET_PARAM: Bad address (os error 14)"
//!     }
//!     Ok(())
//! }
//! ```

#![warn(missing_docs)]

mod device;
mod error;
mod sys;

pub use device::{Device, DrmVersion, Param, ProtocolVersion, DRIVER_NAME, DRI_DIR, RENDER_MINORS};
pub use error::{Error, Result};
pub use vgpu_uapi as uapi;
