//! `--kernel-tree DIR`: build the guest kernel from a user's own Linux tree (a git checkout
//! of 7.2 or later) with the project's overlay, without touching the user's tree.
//!
//! The user's sources are mirrored into a build tree in the cache, keyed by the tree's
//! path and the flavor ([`build_dir`]). A mirror only writes a file whose content changed
//! (and skips a file whose size and mtime match the last mirror, from a manifest), so the
//! build tree's objects stay valid and the next `make` is incremental: after a one-line
//! change in `mm/`, only that file recompiles. The overlay then goes on the build tree as
//! on Debian's source ([`crate::kernel::apply_overlay`]).
//!
//! Files the overlay owns (its new files and the canonical UAPI headers) are not mirrored:
//! the overlay's copy wins. A file the overlay or a `--kernel-patch` patches is mirrored
//! into the saved-pristine directory instead, from which the patch is re-applied.

use anyhow::{bail, Context, Result};
use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::Command,
};

use crate::{cmd, paths, say};

/// The oldest kernel the driver builds on: the Rust DRM (GEM, ioctl) abstractions and the
/// two-pass interval notifier it uses are those of 7.2.
pub const MIN_VERSION: (u32, u32) = (7, 2);

/// Paths whose absence means the tree cannot take the overlay (the Rust DRM abstractions
/// the driver builds on, and what the overlay's patches change).
const NEEDED: &[&str] = &[
    "rust/kernel/drm/gem/mod.rs",
    "rust/kernel/drm/driver.rs",
    "mm/mmu_notifier.c",
    "lib/test_hmm.c",
    "tools/testing/selftests/mm/hmm-tests.c",
];

/// A user's kernel tree, inspected.
#[derive(Debug, Clone)]
pub struct UserTree {
    pub dir: PathBuf,
    /// `VERSION.PATCHLEVEL.SUBLEVEL` plus `EXTRAVERSION`, from the top Makefile.
    pub version: String,
    /// `git rev-parse --short=12 HEAD`.
    pub head: String,
    /// Uncommitted changes to tracked files (they are built too).
    pub dirty: bool,
}

impl UserTree {
    /// `DIR at HEAD` (`+ uncommitted changes`): what provenance records.
    pub fn describe(&self) -> String {
        format!("{} at {}{}", self.dir.display(), self.head, if self.dirty { " + uncommitted changes" } else { "" })
    }
}

/// `VERSION`, `PATCHLEVEL`, `SUBLEVEL`, `EXTRAVERSION` from a top-level kernel Makefile.
pub fn makefile_version(text: &str) -> Option<(u32, u32, u32, String)> {
    let var = |k: &str| {
        text.lines().take(20).find_map(|l| {
            let (name, v) = l.split_once('=')?;
            (name.trim() == k).then(|| v.trim().to_string())
        })
    };
    Some((var("VERSION")?.parse().ok()?, var("PATCHLEVEL")?.parse().ok()?, var("SUBLEVEL")?.parse().ok()?, var("EXTRAVERSION").unwrap_or_default()))
}

fn git(dir: &Path, args: &[&str]) -> Result<std::process::Output> {
    Command::new("git").arg("-C").arg(dir).args(args).output().context("cannot run git")
}

/// Checks that `dir` is a git checkout of Linux 7.2 or later with what the overlay needs.
/// Every refusal is one line naming the tree.
pub fn inspect(dir: &Path) -> Result<UserTree> {
    let Ok(dir) = fs::canonicalize(dir) else { bail!("--kernel-tree {}: no such directory", dir.display()) };
    let makefile = fs::read_to_string(dir.join("Makefile")).ok();
    let Some((v, p, s, extra)) = makefile.as_deref().and_then(makefile_version) else {
        bail!("--kernel-tree {}: not a Linux source tree (no VERSION/PATCHLEVEL in its Makefile)", dir.display());
    };
    let version = format!("{v}.{p}.{s}{extra}");
    if (v, p) < MIN_VERSION {
        bail!(
            "--kernel-tree {}: Linux {version} is older than {}.{}, the first with the Rust DRM abstractions and interval notifier the driver needs",
            dir.display(),
            MIN_VERSION.0,
            MIN_VERSION.1
        );
    }
    if let Some(missing) = NEEDED.iter().find(|f| !dir.join(f).is_file()) {
        bail!("--kernel-tree {}: Linux {version} has no {missing}, which the overlay needs", dir.display());
    }
    let top = git(&dir, &["rev-parse", "--show-toplevel"])?;
    if !top.status.success() || fs::canonicalize(String::from_utf8_lossy(&top.stdout).trim()).ok().as_deref() != Some(&dir) {
        bail!("--kernel-tree {}: not the top of a git checkout (git ls-files names the sources to build)", dir.display());
    }
    let head = git(&dir, &["rev-parse", "--short=12", "HEAD"])?;
    if !head.status.success() {
        bail!("--kernel-tree {}: the git checkout has no commit", dir.display());
    }
    let dirty = !git(&dir, &["diff", "--quiet", "HEAD"])?.status.success();
    Ok(UserTree { dir, version, head: String::from_utf8_lossy(&head.stdout).trim().to_string(), dirty })
}

/// The cached build tree for a user tree and flavor, and its saved-pristine directory.
pub fn build_dir(t: &UserTree, flavor: &str) -> (PathBuf, PathBuf) {
    let key = format!("tree-{:012x}-{}-{flavor}", cmd::fnv1a(&[t.dir.as_os_str().as_encoded_bytes()]) & 0xffff_ffff_ffff, t.version);
    let base = paths::cache().join("kernel");
    (base.join(&key), base.join(format!("{key}.orig")))
}

/// The sources of the checkout: tracked and untracked-but-not-ignored files that exist
/// (a tracked file deleted in the work tree is gone from the build too).
fn list_sources(dir: &Path) -> Result<Vec<PathBuf>> {
    let out = git(dir, &["ls-files", "-z", "--cached", "--others", "--exclude-standard"])?;
    if !out.status.success() {
        bail!("--kernel-tree {}: git ls-files failed: {}", dir.display(), String::from_utf8_lossy(&out.stderr).trim());
    }
    let set: BTreeSet<PathBuf> = out
        .stdout
        .split(|&b| b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| PathBuf::from(String::from_utf8_lossy(p).into_owned()))
        .collect();
    Ok(set.into_iter().collect())
}

/// The manifest of the last mirror: `size mtime_ns path` per line.
type Manifest = BTreeMap<PathBuf, (u64, i128)>;

fn read_manifest(path: &Path) -> Manifest {
    let text = fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ' ');
            let size = it.next()?.parse().ok()?;
            let mtime = it.next()?.parse().ok()?;
            Some((PathBuf::from(it.next()?), (size, mtime)))
        })
        .collect()
}

fn write_manifest(path: &Path, m: &Manifest) -> Result<()> {
    let mut s = String::new();
    for (p, (size, mtime)) in m {
        s += &format!("{size} {mtime} {}\n", p.display());
    }
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, s)?;
    fs::rename(&tmp, path)?;
    Ok(())
}

/// What a mirror did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Mirrored {
    pub files: usize,
    pub written: usize,
    pub removed: usize,
}

/// Mirrors the user's sources into `tree` (or, for a file with a saved pristine copy in
/// `orig`, into that copy); `owned` are paths the overlay provides, never mirrored. The
/// user's tree is only read.
pub fn mirror(src: &Path, tree: &Path, orig: &Path, owned: &BTreeSet<PathBuf>) -> Result<Mirrored> {
    let manifest_path = tree.join(".vgpu-mirror-manifest");
    let old = if tree.join("Makefile").exists() { read_manifest(&manifest_path) } else { Manifest::new() };
    let mut new = Manifest::new();
    let mut r = Mirrored::default();
    let sources = list_sources(src)?;
    if old.is_empty() {
        say!("kernel: mirroring {} files of {} into {} (first time: about a minute)", sources.len(), src.display(), tree.display());
    }
    for rel in sources {
        if owned.contains(&rel) {
            continue;
        }
        let from = src.join(&rel);
        let Ok(meta) = fs::symlink_metadata(&from) else { continue };
        let stamp = (meta.size(), meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128);
        r.files += 1;
        new.insert(rel.clone(), stamp);
        if old.get(&rel) == Some(&stamp) {
            continue;
        }
        let saved = orig.join(&rel);
        let to = if saved.exists() { saved } else { tree.join(&rel) };
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&from)?;
            if fs::read_link(&to).ok().as_ref() != Some(&target) {
                let _ = fs::remove_file(&to);
                fs::create_dir_all(to.parent().context("parent")?)?;
                std::os::unix::fs::symlink(&target, &to).with_context(|| format!("symlink {}", to.display()))?;
                r.written += 1;
            }
        } else if meta.is_file() {
            let data = fs::read(&from).with_context(|| format!("read {}", from.display()))?;
            if cmd::write_if_changed(&to, &data)? {
                fs::set_permissions(&to, meta.permissions())?;
                r.written += 1;
            }
        }
    }
    for rel in old.keys().filter(|k| !new.contains_key(*k)) {
        for p in [tree.join(rel), orig.join(rel)] {
            if fs::remove_file(&p).is_ok() {
                r.removed += 1;
            }
        }
    }
    write_manifest(&manifest_path, &new)?;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_from_makefiles() {
        let m = "# SPDX\nVERSION = 7\nPATCHLEVEL = 2\nSUBLEVEL = 13\nEXTRAVERSION = -rc1\nNAME = Baby Opossum\n";
        assert_eq!(makefile_version(m), Some((7, 2, 13, "-rc1".into())));
        assert_eq!(makefile_version("VERSION = 6\nPATCHLEVEL = 12\nSUBLEVEL = 0\nEXTRAVERSION =\n"), Some((6, 12, 0, String::new())));
        assert_eq!(makefile_version("all:\n\techo\n"), None);
    }

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("xtask-usertree-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn git_tree(dir: &Path, makefile: &str) {
        fs::write(dir.join("Makefile"), makefile).unwrap();
        for f in NEEDED {
            fs::create_dir_all(dir.join(f).parent().unwrap()).unwrap();
            fs::write(dir.join(f), "x\n").unwrap();
        }
        let g = |args: &[&str]| assert!(Command::new("git").arg("-C").arg(dir).args(args).output().unwrap().status.success());
        g(&["init", "-q"]);
        g(&["add", "-A"]);
        g(&["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "t"]);
    }

    #[test]
    fn refusals_are_one_line() {
        let d = scratch("old");
        git_tree(&d, "VERSION = 6\nPATCHLEVEL = 12\nSUBLEVEL = 3\nEXTRAVERSION =\n");
        let e = inspect(&d).unwrap_err().to_string();
        assert!(e.contains("Linux 6.12.3 is older than 7.2"), "{e}");
        assert!(!e.contains('\n'), "{e}");
        let e = inspect(&d.join("nope")).unwrap_err().to_string();
        assert!(e.contains("no such directory") && !e.contains('\n'), "{e}");
        fs::write(d.join("Makefile"), "VERSION = 7\nPATCHLEVEL = 3\nSUBLEVEL = 0\nEXTRAVERSION = -rc2\n").unwrap();
        fs::remove_file(d.join("rust/kernel/drm/driver.rs")).unwrap();
        let e = inspect(&d).unwrap_err().to_string();
        assert!(e.contains("has no rust/kernel/drm/driver.rs") && !e.contains('\n'), "{e}");
        let plain = scratch("plain");
        fs::write(plain.join("Makefile"), "VERSION = 7\nPATCHLEVEL = 2\nSUBLEVEL = 0\n").unwrap();
        for f in NEEDED {
            fs::create_dir_all(plain.join(f).parent().unwrap()).unwrap();
            fs::write(plain.join(f), "x\n").unwrap();
        }
        let e = inspect(&plain).unwrap_err().to_string();
        assert!(e.contains("not the top of a git checkout"), "{e}");
        fs::remove_dir_all(d).unwrap();
        fs::remove_dir_all(plain).unwrap();
    }

    #[test]
    fn mirror_writes_only_changes_and_never_the_source() {
        let src = scratch("src");
        git_tree(&src, "VERSION = 7\nPATCHLEVEL = 2\nSUBLEVEL = 13\nEXTRAVERSION =\n");
        fs::write(src.join("mm/extra.c"), "untracked\n").unwrap();
        fs::create_dir_all(src.join("drivers/gpu/drm/vgpu_svm")).unwrap();
        fs::write(src.join("drivers/gpu/drm/vgpu_svm/Kconfig"), "the user's\n").unwrap();
        let t = inspect(&src).unwrap();
        assert!(!t.dirty, "untracked files do not make it dirty");
        let out = scratch("out");
        let (tree, orig) = (out.join("tree"), out.join("orig"));
        let owned: BTreeSet<PathBuf> = [PathBuf::from("drivers/gpu/drm/vgpu_svm/Kconfig")].into();
        let first = mirror(&src, &tree, &orig, &owned).unwrap();
        assert_eq!((first.files, first.written, first.removed), (NEEDED.len() + 2, NEEDED.len() + 2, 0));
        assert_eq!(fs::read_to_string(tree.join("mm/extra.c")).unwrap(), "untracked\n");
        assert!(!tree.join("drivers/gpu/drm/vgpu_svm/Kconfig").exists(), "overlay-owned paths are not mirrored");
        // Nothing changed: nothing written.
        assert_eq!(mirror(&src, &tree, &orig, &owned).unwrap().written, 0);
        // A change, a deletion, and a file with a saved pristine copy.
        fs::write(src.join("mm/mmu_notifier.c"), "changed\n").unwrap();
        fs::remove_file(src.join("mm/extra.c")).unwrap();
        fs::create_dir_all(orig.join("lib")).unwrap();
        fs::write(orig.join("lib/test_hmm.c"), "x\n").unwrap();
        fs::write(src.join("lib/test_hmm.c"), "user edit\n").unwrap();
        let r = mirror(&src, &tree, &orig, &owned).unwrap();
        assert_eq!((r.written, r.removed), (2, 1));
        assert_eq!(fs::read_to_string(tree.join("mm/mmu_notifier.c")).unwrap(), "changed\n");
        assert!(!tree.join("mm/extra.c").exists());
        assert_eq!(fs::read_to_string(orig.join("lib/test_hmm.c")).unwrap(), "user edit\n", "patched files go to the pristine copy");
        assert_eq!(fs::read_to_string(tree.join("lib/test_hmm.c")).unwrap(), "x\n", "the build tree's copy is the overlay's to write");
        assert!(inspect(&src).unwrap().dirty);
        assert!(!src.join(".vgpu-mirror-manifest").exists());
        fs::remove_dir_all(src).unwrap();
        fs::remove_dir_all(out).unwrap();
    }
}
