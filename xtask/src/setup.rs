//! Provisioning: installs what is missing, from the facts in shared/TOOLCHAIN.md. Idempotent;
//! prints what it does. The kernel source comes through a private apt configuration of its
//! own (trixie/sid appear only in that private config, never in the system's sources).

use crate::{cmd, paths, say};
use anyhow::{bail, Context, Result};
use std::{fs, path::PathBuf, process::Command};

/// Debian packages from bookworm (and bookworm-security).
const PACKAGES: &[&str] = &[
    // Rust for the kernel: /usr/bin/rustc 1.96 with library sources (rustup has no rust-src).
    "rustc-web",
    "rust-web-src",
    // C toolchain for the kernel (LLVM=-19) and libclang for bindgen.
    "clang-19",
    "lld-19",
    "llvm-19",
    "libclang-19-dev",
    // Kernel build dependencies.
    "bc",
    "bison",
    "flex",
    "libelf-dev",
    "libssl-dev",
    "cpio",
    "kmod",
    "rsync",
    "patch",
    "xz-utils",
    "ccache",
    // Guest userland.
    "busybox-static",
    // Host side: the DRM UAPI headers (drm.h) for the vgpu-uapi crate's bindgen.
    "libdrm-dev",
];

/// QEMU 10.0 comes from bookworm-backports, without recommends (they drag GTK in).
const BACKPORTS_PACKAGES: &[&str] = &["qemu-system-x86"];

const BACKPORTS_SOURCES: &str = "/etc/apt/sources.list.d/vgpu-svm-bookworm-backports.sources";
const BACKPORTS_ENTRY: &str = "Types: deb\n\
URIs: http://deb.debian.org/debian\n\
Suites: bookworm-backports\n\
Components: main\n\
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n";

/// The private apt sources that hold linux-source-7.2. Used only through `-o Dir::...`
/// options: the system's sources are never touched.
const KERNEL_SOURCES: &str = "\
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian sid main\n\
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie-backports main\n";

pub const BINDGEN_VERSION: &str = "0.72.1";

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn installed(pkg: &str) -> bool {
    cmd::output(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg]))
        .map(|s| s.contains("install ok installed"))
        .unwrap_or(false)
}

fn backports_configured() -> bool {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(rd) = fs::read_dir("/etc/apt/sources.list.d") {
        files.extend(rd.flatten().map(|e| e.path()));
    }
    files
        .iter()
        .filter_map(|f| fs::read_to_string(f).ok())
        .any(|s| s.contains("bookworm-backports"))
}

/// Installs the Debian packages that are missing.
fn apt_packages() -> Result<()> {
    let missing: Vec<&str> = PACKAGES.iter().copied().filter(|p| !installed(p)).collect();
    let missing_bp: Vec<&str> =
        BACKPORTS_PACKAGES.iter().copied().filter(|p| !installed(p)).collect();
    let need_bp_source = !backports_configured();
    if missing.is_empty() && missing_bp.is_empty() {
        say!("setup: Debian packages present ({} + qemu-system-x86)", PACKAGES.len());
        return Ok(());
    }
    if !is_root() {
        let mut msg = String::from("setup needs root to install Debian packages. Run:\n");
        if need_bp_source {
            msg += &format!(
                "  printf '{}' | sudo tee {BACKPORTS_SOURCES}\n",
                BACKPORTS_ENTRY.replace('\n', "\\n")
            );
        }
        msg += "  sudo apt-get update\n";
        if !missing.is_empty() {
            msg += &format!(
                "  sudo apt-get install -y --no-install-recommends {}\n",
                missing.join(" ")
            );
        }
        if !missing_bp.is_empty() {
            msg += &format!(
                "  sudo apt-get install -y -t bookworm-backports --no-install-recommends {}\n",
                missing_bp.join(" ")
            );
        }
        msg += "then run `cargo xtask setup` again.";
        bail!(msg);
    }
    if need_bp_source {
        say!("setup: adding bookworm-backports to apt sources ({BACKPORTS_SOURCES})");
        fs::write(BACKPORTS_SOURCES, BACKPORTS_ENTRY)?;
    }
    cmd::run(Command::new("apt-get").args(["update", "-q"]))?;
    let apt = |extra: &[&str], pkgs: &[&str]| {
        cmd::run(
            Command::new("apt-get")
                .env("DEBIAN_FRONTEND", "noninteractive")
                .args(["install", "-y", "-q", "--no-install-recommends"])
                .args(extra)
                .args(pkgs),
        )
    };
    if !missing.is_empty() {
        say!("setup: installing {}", missing.join(" "));
        apt(&[], &missing)?;
    }
    if !missing_bp.is_empty() {
        say!("setup: installing {} from bookworm-backports", missing_bp.join(" "));
        apt(&["-t", "bookworm-backports"], &missing_bp)?;
    }
    Ok(())
}

/// Installs the pinned bindgen-cli into the cache (the kernel needs >= 0.71.1).
fn bindgen() -> Result<()> {
    let bin = paths::bindgen();
    if let Ok(v) = cmd::output(Command::new(&bin).arg("--version")) {
        if v.contains(BINDGEN_VERSION) {
            say!("setup: bindgen {BINDGEN_VERSION} present");
            return Ok(());
        }
    }
    say!("setup: installing bindgen-cli {BINDGEN_VERSION} (about 70 s)");
    cmd::run(
        Command::new("cargo")
            .args(["install", "bindgen-cli", "--version", BINDGEN_VERSION, "--locked", "--root"])
            .arg(paths::tools().join("bindgen"))
            .env("LIBCLANG_PATH", crate::kernel::LIBCLANG_PATH),
    )
}

fn private_apt_args() -> Vec<String> {
    let d = paths::private_apt();
    vec![
        format!("-oDir::Etc::SourceList={}", d.join("sources.list").display()),
        format!("-oDir::Etc::SourceParts={}", d.join("sources.list.d").display()),
        format!("-oDir::State::Lists={}", d.join("lists").display()),
        format!("-oDir::Cache={}", d.join("cache").display()),
        "-oDir::State::status=/dev/null".into(),
        "-oAPT::Architecture=amd64".into(),
        "-oDebug::NoLocking=1".into(),
    ]
}

/// The downloaded linux-source .deb, if any (newest first by name).
pub fn kernel_deb() -> Option<PathBuf> {
    let mut debs: Vec<PathBuf> = fs::read_dir(paths::downloads())
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("linux-source-{}_", paths::KERNEL_SERIES)) && n.ends_with(".deb"))
        })
        .collect();
    debs.sort();
    debs.pop()
}

/// The full upstream version in a linux-source .deb's name (`7.2.13` of `7.2.13-1`).
pub fn kernel_version(deb: &std::path::Path) -> Result<String> {
    let name = deb.file_name().and_then(|n| n.to_str()).context("deb name")?;
    let ver = name.split('_').nth(1).context("no version in the .deb's name")?;
    Ok(ver.split(['-', '~', '+']).next().unwrap_or(ver).to_string())
}

/// Downloads linux-source-7.2 with the private apt configuration (cached).
fn kernel_source() -> Result<PathBuf> {
    if let Some(deb) = kernel_deb() {
        say!("setup: kernel source package present: {}", deb.display());
        return Ok(deb);
    }
    let d = paths::private_apt();
    for sub in ["lists/partial", "cache/archives/partial", "sources.list.d"] {
        fs::create_dir_all(d.join(sub))?;
    }
    fs::write(d.join("sources.list"), KERNEL_SOURCES)?;
    fs::create_dir_all(paths::downloads())?;
    say!("setup: fetching the package lists of sid and trixie-backports (private apt config in {})", d.display());
    cmd::run(Command::new("apt-get").args(private_apt_args()).args(["update", "-q"]))?;
    let pkg = format!("linux-source-{}", paths::KERNEL_SERIES);
    say!("setup: downloading {pkg} (about 164 MB)");
    cmd::run(
        Command::new("apt-get")
            .current_dir(paths::downloads())
            .args(private_apt_args())
            .args(["download", &pkg]),
    )?;
    kernel_deb().context("apt-get download succeeded but no linux-source .deb appeared")
}

/// Runs every provisioning step.
pub fn setup() -> Result<()> {
    apt_packages()?;
    bindgen()?;
    let deb = kernel_source()?;
    say!("setup: done (kernel {})", kernel_version(&deb)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_from_deb_names() {
        let v = |n: &str| kernel_version(std::path::Path::new(n)).unwrap();
        assert_eq!(v("linux-source-7.2_7.2.13-1_all.deb"), "7.2.13");
        assert_eq!(v("linux-source-7.2_7.2.12-1~bpo13+1_all.deb"), "7.2.12");
    }

    #[test]
    fn private_sources_never_reach_the_system() {
        // The private apt config points every directory at the cache.
        for a in private_apt_args() {
            assert!(!a.contains("/etc/apt"), "{a}");
        }
        assert!(!BACKPORTS_ENTRY.contains("trixie") && !BACKPORTS_ENTRY.contains("sid"));
    }
}
