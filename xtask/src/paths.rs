//! Where things live: the work tree, and the cache outside it that keeps the kernel build
//! warm across sessions on the same machine.

use std::path::PathBuf;

/// The Linux package we build: `linux-source-7.2` from Debian (sid or trixie-backports).
pub const KERNEL_SERIES: &str = "7.2";

/// The work tree (the Cargo workspace root).
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// `$VGPU_CACHE_DIR`, else `$XDG_CACHE_HOME/vgpu-svm`, else `~/.cache/vgpu-svm`.
pub fn cache() -> PathBuf {
    if let Some(d) = std::env::var_os("VGPU_CACHE_DIR") {
        return PathBuf::from(d);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                .join(".cache")
        });
    base.join("vgpu-svm")
}

/// Downloaded packages (the linux-source .deb).
pub fn downloads() -> PathBuf {
    cache().join("downloads")
}

/// The private apt configuration used only to fetch linux-source.
pub fn private_apt() -> PathBuf {
    cache().join("apt")
}

/// Tools installed by the project (bindgen).
pub fn tools() -> PathBuf {
    cache().join("tools")
}

/// The pinned bindgen executable.
pub fn bindgen() -> PathBuf {
    tools().join("bindgen/bin/bindgen")
}

/// ccache's directory.
pub fn ccache() -> PathBuf {
    cache().join("ccache")
}

/// A kernel build tree, keyed by kernel version and configuration flavor.
pub fn kernel_tree(version: &str, flavor: &str) -> PathBuf {
    cache().join("kernel").join(format!("linux-{version}-{flavor}"))
}

/// Saved pristine copies of the kernel files the overlay patches.
pub fn kernel_orig(version: &str, flavor: &str) -> PathBuf {
    cache().join("kernel").join(format!("linux-{version}-{flavor}.orig"))
}

/// Cargo's target directory for host builds (`$CARGO_TARGET_DIR`, else `target/`).
pub fn cargo_target() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"))
}

/// Outputs of runs (logs, initramfs, summaries): `target/vgpu/`.
pub fn out() -> PathBuf {
    workspace().join("target").join("vgpu")
}

/// The guest programs' cargo target directory (static builds).
pub fn guest_target() -> PathBuf {
    workspace().join("target").join("guest")
}
