//! The C example of the `vgpu` library (`userspace-lib/examples/c/copy.c`), built as a static
//! guest program against `libvgpu.a`.
//!
//! Wiring (for `guest.rs`): after [`crate::guest::build_programs`], call
//! `cexample::build_c_example(&paths::workspace(), &paths::guest_target(), &paths::out())` and
//! add the returned path to the initramfs binaries as `vgpu-c-copy`; the guest job runs
//! `/bin/vgpu-c-copy`, which prints TAP and a `# N passed, M failed` line.
//!
//! The commands it runs, from the workspace root (`$T` = the guest target dir):
//!
//! ```text
//! CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static" \
//!   cargo build --quiet --release --package vgpu --target x86_64-unknown-linux-gnu --target-dir $T
//! gcc -static -O2 -Wall -Wextra -Iuserspace-lib/include userspace-lib/examples/c/copy.c \
//!   $T/x86_64-unknown-linux-gnu/release/libvgpu.a -Wl,--gc-sections \
//!   -lpthread -ldl -lm -lrt -o <out>/vgpu-c-copy
//! ```
//!
//! (`cargo` warns "dropping unsupported crate type `cdylib`" under `+crt-static`: expected, the
//! static library is what is needed. The linker's glibc warnings about `getpwuid_r` and
//! `getaddrinfo` in static programs come from std code the example never calls.)

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "x86_64-unknown-linux-gnu";

/// The guest binary's name (`/bin/vgpu-c-copy`).
pub const C_EXAMPLE_NAME: &str = "vgpu-c-copy";

/// Where cargo leaves `libvgpu.a` for `target_dir`.
pub fn staticlib_path(target_dir: &Path) -> PathBuf {
    target_dir.join(TARGET).join("release").join("libvgpu.a")
}

/// The gcc invocation that links `copy.c` statically against `lib` into `out`.
pub fn gcc_command(workspace: &Path, lib: &Path, out: &Path) -> Command {
    let mut c = Command::new("gcc");
    c.current_dir(workspace)
        .args(["-static", "-O2", "-Wall", "-Wextra"])
        .arg(format!("-I{}", workspace.join("userspace-lib/include").display()))
        .arg(workspace.join("userspace-lib/examples/c/copy.c"))
        .arg(lib)
        .args(["-Wl,--gc-sections", "-lpthread", "-ldl", "-lm", "-lrt", "-o"])
        .arg(out);
    c
}

/// Builds `libvgpu.a` (static CRT, like the other guest programs) in `target_dir`, then
/// `copy.c` against it; returns the path of the static executable `<out_dir>/vgpu-c-copy`.
pub fn build_c_example(workspace: &Path, target_dir: &Path, out_dir: &Path) -> Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .current_dir(workspace)
        .args(["build", "--quiet", "--release", "--package", "vgpu", "--target", TARGET])
        .arg("--target-dir")
        .arg(target_dir)
        .env("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS", "-C target-feature=+crt-static")
        .status()
        .with_context(|| format!("running {cargo} build --package vgpu"))?;
    if !status.success() {
        bail!("building libvgpu.a failed: {status}");
    }
    let lib = staticlib_path(target_dir);
    if !lib.exists() {
        bail!("cargo did not produce {}", lib.display());
    }
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let out = out_dir.join(C_EXAMPLE_NAME);
    let output = gcc_command(workspace, &lib, &out)
        .output()
        .context("running gcc (install gcc: `cargo xtask setup`)")?;
    if !output.status.success() {
        bail!(
            "gcc failed on userspace-lib/examples/c/copy.c ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcc_command_links_statically_against_the_staticlib() {
        let ws = Path::new("/ws");
        let lib = staticlib_path(Path::new("/t"));
        assert_eq!(lib, Path::new("/t/x86_64-unknown-linux-gnu/release/libvgpu.a"));
        let c = gcc_command(ws, &lib, Path::new("/o/vgpu-c-copy"));
        let args: Vec<String> = c.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(c.get_program(), "gcc");
        assert_eq!(args[0], "-static");
        assert!(args.contains(&"-I/ws/userspace-lib/include".to_string()), "{args:?}");
        let src = args.iter().position(|a| a == "/ws/userspace-lib/examples/c/copy.c").unwrap();
        let l = args.iter().position(|a| a.ends_with("libvgpu.a")).unwrap();
        let pthread = args.iter().position(|a| a == "-lpthread").unwrap();
        assert!(src < l && l < pthread, "source, then the library, then libc's parts: {args:?}");
        assert_eq!(args.last().unwrap(), "/o/vgpu-c-copy");
    }
}
