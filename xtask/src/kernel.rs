//! The guest kernel: extract linux-source, apply the overlay from `kernel-driver/`, configure
//! (tinyconfig + fragments) and build incrementally in a cached tree outside the work tree.

use crate::{cmd, paths, say, setup, usertree};
use anyhow::{bail, Context, Result};
use std::{
    collections::BTreeSet,
    fs,
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

pub const LIBCLANG_PATH: &str = "/usr/lib/llvm-19/lib";

/// A kernel configuration flavor: the base fragment plus extra ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// `kernel-driver/config/vgpu_svm.config`.
    Default,
    /// Default plus `debug.config` (lockdep, KASAN, DEBUG_VM, atomic-sleep checks).
    Debug,
}

impl Flavor {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "default" => Ok(Self::Default),
            "debug" => Ok(Self::Debug),
            _ => bail!("unknown kernel flavor `{s}` (default, debug)"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Default => "default",
            Self::Debug => "debug",
        }
    }

    /// The default bound of one VM run (`--timeout`) on this flavor. The debug kernel
    /// (KASAN, lockdep, DEBUG_VM) runs the same jobs 3-5x slower under TCG: its test VM's
    /// coherence suite took 818 s of case time for 317 of its 526 runs at ffb9973 (the
    /// default kernel: 298 s for all of them), past the default flavor's 900 s.
    pub fn vm_timeout(self) -> std::time::Duration {
        std::time::Duration::from_secs(match self {
            Self::Default => 900,
            Self::Debug => 3600,
        })
    }

    fn fragments(self) -> Vec<PathBuf> {
        let dir = driver_dir().join("config");
        let mut v = vec![dir.join("vgpu_svm.config")];
        if self == Self::Debug {
            v.push(dir.join("debug.config"));
        }
        v
    }
}

/// What a kernel build produced.
pub struct Built {
    pub tree: PathBuf,
    pub version: String,
    pub bzimage: PathBuf,
    /// Modules loaded in the guest, in load order.
    pub modules: Vec<PathBuf>,
}

fn driver_dir() -> PathBuf {
    paths::workspace().join("kernel-driver")
}

/// `make` in a kernel tree with the toolchain of TOOLCHAIN.md.
pub fn make(tree: &Path) -> Command {
    let mut c = Command::new("make");
    c.current_dir(tree)
        .arg(format!("-j{}", std::thread::available_parallelism().map_or(2, |n| n.get())))
        .arg("LLVM=-19")
        .arg(if cmd::have("ccache") { "CC=ccache clang-19" } else { "CC=clang-19" })
        .arg("RUSTC=/usr/bin/rustc")
        .arg("RUSTDOC=/usr/bin/rustdoc")
        .arg(format!("BINDGEN={}", paths::bindgen().display()))
        .env("LIBCLANG_PATH", LIBCLANG_PATH)
        .env("CCACHE_DIR", paths::ccache());
    c
}

/// Extracts the linux-source .deb into the flavor's tree, if not there yet.
fn extract(deb: &Path, tree: &Path) -> Result<()> {
    if tree.join("Makefile").exists() {
        return Ok(());
    }
    let parent = tree.parent().context("tree has a parent")?;
    fs::create_dir_all(parent)?;
    let tmp = parent.join(format!(".extract-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp)?;
    say!("kernel: extracting {} (about 20 s)", deb.display());
    let script = format!(
        "dpkg-deb --fsys-tarfile '{}' | tar -xO --wildcards '*usr/src/linux-source-*.tar.xz' | tar -xJ -C '{}'",
        deb.display(),
        tmp.display()
    );
    cmd::run(Command::new("bash").args(["-o", "pipefail", "-c", &script]))?;
    let src = fs::read_dir(&tmp)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.join("Makefile").exists())
        .context("the tarball held no kernel tree")?;
    fs::rename(&src, tree)?;
    fs::remove_dir_all(&tmp)?;
    Ok(())
}

/// Lists files under `dir`, relative to it.
fn files_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).with_context(|| format!("read {}", d.display()))? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir)?.to_path_buf());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The files a unified diff modifies (its `+++ b/...` lines).
pub fn patched_files(patch: &str) -> Vec<PathBuf> {
    patch
        .lines()
        .filter_map(|l| l.strip_prefix("+++ "))
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|p| p.split_once('/').map(|(_, rest)| PathBuf::from(rest)))
        .collect()
}

/// Applies the overlay: copies new files, installs the UAPI headers, and applies the patches
/// (the overlay's, then `extra`: the user's `--kernel-patch` files, in the order given) to
/// pristine copies of the files they touch. Only files whose content changes are written,
/// so an unchanged overlay costs nothing in the next `make`, and a file no patch touches any
/// more gets its pristine content back: a patch set stays applied (and built) until the set
/// changes.
pub fn apply_overlay(tree: &Path, orig: &Path, extra: &[PathBuf]) -> Result<usize> {
    let mut written = 0;
    // 1. New files, and 2. the canonical ABI headers.
    for (rel, src) in overlay_files()? {
        written += cmd::write_if_changed(&tree.join(&rel), &fs::read(&src)?)? as usize;
    }
    // 3. Patches, applied in name order to pristine copies.
    let pdir = driver_dir().join("patches");
    let mut patches: Vec<PathBuf> = files_under(&pdir)?
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "patch"))
        .map(|p| pdir.join(p))
        .collect();
    patches.sort();
    let ours = patches.len();
    patches.extend(extra.iter().cloned());
    let mut touched = BTreeSet::new();
    for (i, p) in patches.iter().enumerate() {
        let text = fs::read_to_string(p).with_context(|| format!("read {}", p.display()))?;
        let files = patched_files(&text);
        if i >= ours {
            if files.is_empty() {
                bail!("kernel patch {} changes no file (no `+++ b/...` line)", p.display());
            }
            if let Some(f) = files.iter().find(|f| !tree.join(f).is_file() && !orig.join(f).is_file()) {
                bail!("kernel patch {} creates {} (new files are not supported: change existing ones)", p.display(), f.display());
            }
        }
        touched.extend(files);
    }
    let scratch = tree.parent().context("tree parent")?.join(format!(".patch-{}", std::process::id()));
    let _ = fs::remove_dir_all(&scratch);
    for rel in &touched {
        let saved = orig.join(rel);
        if !saved.exists() {
            // First time this file is patched: the tree still has the pristine version.
            fs::create_dir_all(saved.parent().context("parent")?)?;
            fs::copy(tree.join(rel), &saved)
                .with_context(|| format!("save pristine {}", rel.display()))?;
        }
        fs::create_dir_all(scratch.join(rel).parent().context("parent")?)?;
        fs::copy(&saved, scratch.join(rel))?;
    }
    for (i, p) in patches.iter().enumerate() {
        let out = Command::new("patch")
            .args(["-p1", "--batch", "--forward", "--no-backup-if-mismatch", "-r", "-", "-s", "-d"])
            .arg(&scratch)
            .stdin(fs::File::open(p)?)
            .output()?;
        if !out.status.success() {
            let _ = fs::remove_dir_all(&scratch);
            // One line: the user reads it, and the tree is left as it was; patch's whole
            // answer goes to a log.
            let why = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            fs::create_dir_all(paths::out())?;
            let log = paths::out().join("kernel-patch-failure.log");
            fs::write(&log, format!("patch -p1 < {}\nin a copy of {}:\n{why}", p.display(), tree.display()))?;
            let first = patch_failure_line(&why);
            let whose = if i >= ours { "kernel patch" } else { "the vgpu-svm overlay's patch" };
            bail!("{whose} {} does not apply to {}: {} (patch's output: {})", p.display(), tree.file_name().unwrap_or_default().to_string_lossy(), first, log.display());
        }
    }
    for rel in &touched {
        written += cmd::write_if_changed(&tree.join(rel), &fs::read(scratch.join(rel))?)? as usize;
    }
    // Files patched by an earlier overlay but not any more: restore them.
    if orig.exists() {
        for rel in files_under(orig)? {
            if !touched.contains(&rel) {
                written += cmd::write_if_changed(&tree.join(&rel), &fs::read(orig.join(&rel))?)? as usize;
            }
        }
    }
    let _ = fs::remove_dir_all(&scratch);
    Ok(written)
}

/// The files the overlay provides whole: (path in the kernel tree, the project's file). Its
/// new files, and the canonical ABI headers from `uapi/`.
pub fn overlay_files() -> Result<Vec<(PathBuf, PathBuf)>> {
    let overlay = driver_dir().join("overlay");
    let mut v: Vec<(PathBuf, PathBuf)> = files_under(&overlay)?.into_iter().map(|rel| (rel.clone(), overlay.join(rel))).collect();
    let uapi = paths::workspace().join("uapi");
    for (src, dst) in [
        ("vgpu_svm_drm.h", "include/uapi/drm/vgpu_svm_drm.h"),
        ("vgpu_svm_protocol.h", "include/uapi/linux/vgpu_svm_protocol.h"),
    ] {
        v.push((PathBuf::from(dst), uapi.join(src)));
    }
    Ok(v)
}

/// The line of `patch`'s output that says why it failed (its first FAILED line, else its
/// first line), for one-line errors.
pub fn patch_failure_line(output: &str) -> &str {
    output.lines().find(|l| l.contains("FAILED") || l.contains("failed")).or_else(|| output.lines().next()).unwrap_or("patch failed").trim()
}

/// The options a fragment asks for: (name, value) with `n` for "is not set".
pub fn fragment_options(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            if let Some(rest) = l.strip_prefix("# CONFIG_") {
                rest.strip_suffix(" is not set").map(|n| (format!("CONFIG_{n}"), "n".to_string()))
            } else if l.starts_with("CONFIG_") {
                l.split_once('=').map(|(k, v)| (k.to_string(), v.to_string()))
            } else {
                None
            }
        })
        .collect()
}

/// Checks that the final .config has what the fragments asked for; options the kernel
/// dropped (unmet dependencies) are reported by name.
fn verify_config(tree: &Path, fragments: &str) -> Result<()> {
    let config = fs::read_to_string(tree.join(".config"))?;
    let have = fragment_options(&config);
    let lookup = |k: &str| have.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let mut bad = Vec::new();
    for (k, want) in fragment_options(fragments) {
        let got = lookup(&k).unwrap_or("n");
        if got != want && k != "CONFIG_NR_CPUS" {
            bad.push(format!("{k}: asked {want}, got {got}"));
        }
    }
    if !bad.is_empty() {
        bail!("the kernel configuration lost options (unmet dependencies?):\n  {}", bad.join("\n  "));
    }
    Ok(())
}

/// Configures the tree if the fragments changed since the last configuration.
fn configure(tree: &Path, flavor: Flavor) -> Result<()> {
    let mut text = String::new();
    for f in flavor.fragments() {
        text += &fs::read_to_string(&f).with_context(|| format!("read {}", f.display()))?;
        text.push('\n');
    }
    let kconfig = fs::read(tree.join("drivers/gpu/drm/vgpu_svm/Kconfig")).unwrap_or_default();
    let stamp = format!("{:016x}\n", cmd::fnv1a(&[text.as_bytes(), &kconfig]));
    let stamp_file = tree.join(".vgpu-config-stamp");
    if tree.join(".config").exists() && fs::read_to_string(&stamp_file).ok().as_deref() == Some(&stamp) {
        return Ok(());
    }
    say!("kernel: configuring ({} flavor: tinyconfig + {} fragment(s))", flavor.name(), flavor.fragments().len());
    let merged = tree.join(".vgpu-fragments.config");
    fs::write(&merged, &text)?;
    cmd::output(make(tree).arg("tinyconfig"))?;
    cmd::output(
        Command::new("scripts/kconfig/merge_config.sh")
            .current_dir(tree)
            .args(["-m", ".config"])
            .arg(&merged),
    )?;
    cmd::output(make(tree).arg("olddefconfig"))?;
    verify_config(tree, &text)?;
    fs::write(stamp_file, stamp)?;
    Ok(())
}

/// Runs make, showing progress (a line every few seconds) and keeping the full log.
fn build_with_progress(tree: &Path, log: &Path, targets: &[&str]) -> Result<()> {
    let start = Instant::now();
    let mut child = make(tree)
        .args(targets)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start make")?;
    let stderr = child.stderr.take().context("stderr")?;
    let err_log = log.with_extension("stderr.log");
    let err_thread = std::thread::spawn({
        let err_log = err_log.clone();
        move || -> std::io::Result<()> {
            let mut f = fs::File::create(err_log)?;
            for line in BufReader::new(stderr).lines() {
                writeln!(f, "{}", line?)?;
            }
            Ok(())
        }
    });
    let mut out = fs::File::create(log)?;
    let mut steps = 0u64;
    let mut last_print = Instant::now();
    for line in BufReader::new(child.stdout.take().context("stdout")?).lines() {
        let line = line?;
        writeln!(out, "{line}")?;
        steps += 1;
        if last_print.elapsed() >= Duration::from_secs(10) {
            last_print = Instant::now();
            say!("kernel: {:>4}s, {steps} steps, now: {}", start.elapsed().as_secs(), line.trim());
        }
    }
    let status = child.wait()?;
    let _ = err_thread.join();
    if !status.success() {
        let errs = fs::read_to_string(&err_log).unwrap_or_default();
        let tail: Vec<&str> = errs.lines().rev().take(40).collect();
        bail!(
            "kernel build failed ({status}); last errors:\n{}\nfull logs: {} and {}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
            log.display(),
            err_log.display()
        );
    }
    say!("kernel: built in {}s ({steps} steps)", start.elapsed().as_secs());
    Ok(())
}

/// Extracts, overlays, configures and builds; returns the artifacts.
pub fn build(flavor: Flavor) -> Result<Built> {
    build_variant(flavor, &Variant::default())
}

/// What a build changes on top of the overlay.
#[derive(Debug, Clone, Copy, Default)]
pub struct Variant<'a> {
    /// A driver mutant applied over the overlay (`cargo xtask mutants`).
    pub mutant: Option<&'a Path>,
    /// The user's patches to the kernel source (`--kernel-patch`), applied after the
    /// overlay's, in this order.
    pub kernel_patches: &'a [PathBuf],
    /// The user's kernel tree (`--kernel-tree`) instead of Debian's linux-source.
    pub kernel_tree: Option<&'a usertree::UserTree>,
}

/// Applies a driver mutant (a unified diff against the overlay's files, paths relative to
/// the kernel tree) on top of the overlay in `tree`. The next [`apply_overlay`] undoes it:
/// the files it changes are overlay files, rewritten when they differ from the overlay.
fn apply_mutant(tree: &Path, mutant: &Path) -> Result<()> {
    let text = fs::read_to_string(mutant).with_context(|| format!("read {}", mutant.display()))?;
    let overlay = driver_dir().join("overlay");
    let files = patched_files(&text);
    if files.is_empty() {
        bail!("mutant {} changes no file (no `+++ b/...` line)", mutant.display());
    }
    if let Some(f) = files.iter().find(|f| !overlay.join(f).is_file()) {
        bail!("mutant {} changes {}, which is not an overlay file", mutant.display(), f.display());
    }
    let out = Command::new("patch")
        .args(["-p1", "--batch", "--forward", "--fuzz=0", "--no-backup-if-mismatch", "-r", "-", "-s", "-d"])
        .arg(tree)
        .stdin(fs::File::open(mutant)?)
        .output()?;
    if !out.status.success() {
        // Leave nothing half-applied: put the overlay's files back.
        for f in &files {
            cmd::write_if_changed(&tree.join(f), &fs::read(overlay.join(f))?)?;
        }
        bail!(
            "mutant {} does not apply to the overlay (regenerate it):\n{}{}",
            mutant.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The cached build tree of Debian's linux-source for `flavor`, and its saved-pristine
/// directory.
pub fn debian_tree(flavor: Flavor) -> Result<(PathBuf, PathBuf)> {
    let deb = setup::kernel_deb().context("no kernel source downloaded: run `cargo xtask setup` first")?;
    let version = setup::kernel_version(&deb)?;
    Ok((paths::kernel_tree(&version, flavor.name()), paths::kernel_orig(&version, flavor.name())))
}

/// [`build`], with the variant's kernel patches and driver mutant.
pub fn build_variant(flavor: Flavor, v: &Variant<'_>) -> Result<Built> {
    let mutant = v.mutant;
    if !paths::bindgen().exists() {
        bail!("bindgen is missing: run `cargo xtask setup` first");
    }
    let (tree, orig, version) = match v.kernel_tree {
        Some(user) => {
            let (tree, orig) = usertree::build_dir(user, flavor.name());
            let owned = overlay_files()?.into_iter().map(|(rel, _)| rel).collect();
            let m = usertree::mirror(&user.dir, &tree, &orig, &owned)?;
            say!("kernel: your tree {} ({} files; {} changed, {} removed since the last build)", user.describe(), m.files, m.written, m.removed);
            (tree, orig, user.version.clone())
        }
        None => {
            let deb = setup::kernel_deb().context("no kernel source downloaded: run `cargo xtask setup` first")?;
            let version = setup::kernel_version(&deb)?;
            let (tree, orig) = debian_tree(flavor)?;
            extract(&deb, &tree)?;
            (tree, orig, version)
        }
    };
    let n = match v.kernel_tree {
        Some(user) => apply_overlay(&tree, &orig, v.kernel_patches).map_err(|e| anyhow::anyhow!("--kernel-tree {}: {e}", user.dir.display()))?,
        None => apply_overlay(&tree, &orig, v.kernel_patches)?,
    };
    say!("kernel: linux {version} ({} flavor) in {}; overlay: {n} file(s) changed", flavor.name(), tree.display());
    for p in v.kernel_patches {
        say!("kernel: with kernel patch {}", p.display());
    }
    if let Some(m) = mutant {
        apply_mutant(&tree, m)?;
        say!("kernel: mutant {} applied", m.display());
    }
    configure(&tree, flavor)?;
    fs::create_dir_all(paths::out())?;
    let log = paths::out().join(format!("kernel-build-{}.log", flavor.name()));
    say!("kernel: building bzImage and modules (cold: about 10 min on 2 cores; log: {})", log.display());
    build_with_progress(&tree, &log, &["bzImage", "modules"])?;
    let modules = vec![
        tree.join("lib/test_hmm.ko"),
        tree.join("drivers/gpu/drm/vgpu_svm/vgpu_svm.ko"),
    ];
    for m in &modules {
        if !m.exists() {
            bail!("the build did not produce {}", m.display());
        }
    }
    Ok(Built { bzimage: tree.join("arch/x86/boot/bzImage"), tree, version, modules })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patched_files_reads_plus_lines() {
        let p = "diff -ruN a/x b/x\n--- a/rust/kernel/lib.rs\t2026\n+++ b/rust/kernel/lib.rs\t2026\n@@ -1 +1 @@\n";
        assert_eq!(patched_files(p), vec![PathBuf::from("rust/kernel/lib.rs")]);
    }

    #[test]
    fn fragment_options_reads_set_and_unset() {
        let o = fragment_options("# c\nCONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=m\n");
        assert_eq!(o, vec![("CONFIG_A".into(), "y".into()), ("CONFIG_B".into(), "n".into()), ("CONFIG_C".into(), "m".into())]);
    }

    #[test]
    fn overlay_patches_exist_and_name_their_files() {
        let dir = driver_dir().join("patches");
        let mut n = 0;
        for rel in files_under(&dir).unwrap() {
            let text = fs::read_to_string(dir.join(rel)).unwrap();
            assert!(!patched_files(&text).is_empty());
            n += 1;
        }
        assert!(n > 0);
    }
}
