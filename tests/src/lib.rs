//! `vgpu-tests`: the guest test programs of vgpu-svm and what they share.
//!
//! Each guest program is a binary in `src/bin/`, built by the xtask as a
//! static executable and run inside the VM (e.g. `/bin/vgpu-smoke`). They
//! report in TAP through [`tap::Tap`]: one line per check, a final
//! `# N passed, M failed` line, and exit status 1 if anything failed.
//!
//! `vgpu-coherence` is the coherence suite: [`cases::CASES`] run by the
//! machinery in [`coherence`] over test memory from [`mem`], with fork
//! helpers in [`child`] and the guest's knobs in [`sysutil`].
//!
//! `vgpu-fuzz` is the structured ioctl fuzzer: [`fuzz`].

#![warn(missing_docs)]

pub mod cases;
pub mod child;
pub mod coherence;
pub mod fuzz;
pub mod mem;
pub mod patterns;
pub mod stress;
pub mod sysutil;
pub mod tap;
