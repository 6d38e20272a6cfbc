//! The guest's knobs the coherence suite turns: procfs/sysfs files, NUMA
//! syscalls (raw, no libnuma), pagemap and smaps, zram swap, an ext2 file
//! system on zram, KSM, hugetlb pages, and the driver's debugfs knobs.

use std::ffi::CString;
use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::mem::PAGE;

/// Writes `value` to a procfs/sysfs/debugfs file (one write call).
pub fn write_file(path: impl AsRef<Path>, value: &str) -> io::Result<()> {
    let path = path.as_ref();
    let mut f = fs::OpenOptions::new().write(true).open(path)?;
    f.write_all(value.as_bytes())
}

/// Reads a small text file, trimmed.
pub fn read_file(path: impl AsRef<Path>) -> io::Result<String> {
    Ok(fs::read_to_string(path)?.trim().to_owned())
}

/// Reads a file holding one unsigned number.
pub fn read_u64(path: impl AsRef<Path>) -> io::Result<u64> {
    let s = read_file(path)?;
    s.parse()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("not a number: {s:?}")))
}

/// A file setting restored on drop.
#[derive(Debug)]
pub struct Setting {
    path: PathBuf,
    old: Option<String>,
}

impl Setting {
    /// Writes `value` to `path`, remembering the old value.
    /// A choice file (`always [madvise] never`) remembers its selected word.
    pub fn set(path: impl AsRef<Path>, value: &str) -> io::Result<Setting> {
        let path = path.as_ref().to_owned();
        let old = read_file(&path).ok().map(|s| selected(&s).to_owned());
        write_file(&path, value)?;
        Ok(Setting { path, old })
    }
}

impl Drop for Setting {
    fn drop(&mut self) {
        if let Some(old) = &self.old {
            let _ = write_file(&self.path, old);
        }
    }
}

/// The selected word of a sysfs choice file (`always [madvise] never` -> `madvise`), or the
/// whole text when nothing is bracketed.
pub fn selected(text: &str) -> &str {
    text.split_whitespace()
        .find_map(|w| w.strip_prefix('[').and_then(|w| w.strip_suffix(']')))
        .unwrap_or(text)
}

// ---------------------------------------------------------------------------
// NUMA (x86-64 syscalls through libc::syscall)

/// `MPOL_MF_STRICT`.
pub const MPOL_MF_STRICT: u32 = 1 << 0;
/// `MPOL_MF_MOVE`.
pub const MPOL_MF_MOVE: u32 = 1 << 1;
/// Bits in our node masks (CONFIG_NODES_SHIFT=6 in the guest).
const MASK_BITS: u64 = 64;

/// The online NUMA nodes (`/sys/devices/system/node/online`, e.g. `0-1`).
pub fn numa_nodes() -> Vec<u32> {
    let Ok(s) = read_file("/sys/devices/system/node/online") else {
        return vec![0];
    };
    parse_node_list(&s)
}

/// Parses a kernel node list (`0-1,3`).
pub fn parse_node_list(s: &str) -> Vec<u32> {
    let mut v = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<u32>(), b.parse::<u32>()) {
                    v.extend(a..=b);
                }
            }
            None => v.extend(part.parse::<u32>().ok()),
        }
    }
    v
}

fn mask(nodes: &[u32]) -> u64 {
    nodes
        .iter()
        .filter(|&&n| u64::from(n) < MASK_BITS)
        .fold(0, |m, &n| m | 1 << n)
}

fn syscall_ret(r: libc::c_long) -> io::Result<libc::c_long> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// `move_pages(0, pages, nodes, status, MPOL_MF_MOVE)`: moves each page to
/// `node` (or, with `None`, only queries). Returns the per-page status: the
/// node the page is on, or a negative errno (`-ENOENT`: not present).
pub fn move_pages(pages: &[u64], node: Option<u32>) -> io::Result<Vec<i32>> {
    let ptrs: Vec<*mut libc::c_void> = pages.iter().map(|&a| a as *mut libc::c_void).collect();
    let nodes: Vec<libc::c_int> = vec![node.unwrap_or(0) as libc::c_int; pages.len()];
    let mut status = vec![0 as libc::c_int; pages.len()];
    // SAFETY: arrays of pages.len() elements each; pid 0 = this process.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_pages,
            0,
            pages.len() as libc::c_ulong,
            ptrs.as_ptr(),
            if node.is_some() {
                nodes.as_ptr()
            } else {
                std::ptr::null()
            },
            status.as_mut_ptr(),
            MPOL_MF_MOVE as libc::c_int,
        )
    };
    syscall_ret(r)?;
    Ok(status)
}

/// `mbind(addr, len, mode, nodes, flags)`.
pub fn mbind(addr: u64, len: usize, mode: i32, nodes: &[u32], flags: u32) -> io::Result<()> {
    let m = mask(nodes);
    // SAFETY: a one-word node mask of MASK_BITS bits (maxnode = bits + 1).
    let r = unsafe {
        libc::syscall(
            libc::SYS_mbind,
            addr,
            len,
            mode,
            &m as *const u64,
            MASK_BITS + 1,
            flags,
        )
    };
    syscall_ret(r).map(|_| ())
}

/// `migrate_pages(0, maxnode, from, to)`: moves this process's pages on
/// `from` nodes to `to` nodes. Returns the number of pages that could not be
/// moved.
pub fn migrate_pages(from: &[u32], to: &[u32]) -> io::Result<u64> {
    let (f, t) = (mask(from), mask(to));
    // SAFETY: one-word node masks; pid 0 = this process.
    let r = unsafe {
        libc::syscall(
            libc::SYS_migrate_pages,
            0,
            MASK_BITS + 1,
            &f as *const u64,
            &t as *const u64,
        )
    };
    syscall_ret(r).map(|n| n as u64)
}

// ---------------------------------------------------------------------------
// pagemap, smaps, meminfo

/// A `/proc/self/pagemap` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PagemapEntry(pub u64);

impl PagemapEntry {
    /// Page present in RAM (bit 63).
    pub fn present(self) -> bool {
        self.0 >> 63 & 1 == 1
    }
    /// Page swapped out (bit 62).
    pub fn swapped(self) -> bool {
        self.0 >> 62 & 1 == 1
    }
    /// Soft-dirty (bit 55; only tracked with CONFIG_MEM_SOFT_DIRTY).
    pub fn soft_dirty(self) -> bool {
        self.0 >> 55 & 1 == 1
    }
    /// Page frame number (bits 0-54; zero without CAP_SYS_ADMIN).
    pub fn pfn(self) -> u64 {
        self.0 & ((1 << 55) - 1)
    }
}

/// The pagemap entries of `pages` pages starting at `addr`.
pub fn pagemap(addr: u64, pages: usize) -> io::Result<Vec<PagemapEntry>> {
    let mut f = fs::File::open("/proc/self/pagemap")?;
    f.seek(SeekFrom::Start(addr / PAGE as u64 * 8))?;
    let mut buf = vec![0u8; pages * 8];
    f.read_exact(&mut buf)?;
    Ok(buf
        .chunks_exact(8)
        .map(|c| PagemapEntry(u64::from_ne_bytes(c.try_into().unwrap())))
        .collect())
}

/// How many of the `pages` pages at `addr` are swapped out (pagemap).
pub fn swapped_pages(addr: u64, pages: usize) -> io::Result<usize> {
    Ok(pagemap(addr, pages)?.iter().filter(|e| e.swapped()).count())
}

/// `MADV_PAGEOUT` of the whole of `m`, up to `tries` times until some page is swapped out;
/// returns how many are.
pub fn page_out(m: &crate::mem::Mapping, tries: usize) -> io::Result<usize> {
    let mut swapped = 0;
    for _ in 0..tries {
        m.madvise(0, m.len(), libc::MADV_PAGEOUT)?;
        swapped = swapped_pages(m.addr(), m.pages())?;
        if swapped > 0 {
            break;
        }
    }
    Ok(swapped)
}

/// A `kB` field (e.g. `AnonHugePages`) of the `/proc/self/smaps` entry of
/// the VMA containing `addr`.
pub fn smaps_kb(addr: u64, field: &str) -> Option<u64> {
    let text = fs::read_to_string("/proc/self/smaps").ok()?;
    smaps_kb_in(&text, addr, field)
}

/// [`smaps_kb`] over given smaps text.
pub fn smaps_kb_in(text: &str, addr: u64, field: &str) -> Option<u64> {
    let mut inside = false;
    for line in text.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((a, b)) = first.split_once('-') {
            if let (Ok(a), Ok(b)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) {
                inside = a <= addr && addr < b;
                continue;
            }
        }
        if inside {
            if let Some(rest) = line.strip_prefix(field).and_then(|r| r.strip_prefix(':')) {
                return rest.split_whitespace().next()?.parse().ok();
            }
        }
    }
    None
}

/// A field of `/proc/meminfo` (kB, or a count for `HugePages_*`).
pub fn meminfo(field: &str) -> Option<u64> {
    let text = fs::read_to_string("/proc/meminfo").ok()?;
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// `echo 3 > /proc/sys/vm/drop_caches` (after `sync`).
pub fn drop_caches() -> io::Result<()> {
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
    write_file("/proc/sys/vm/drop_caches", "3")
}

/// `echo 1 > /proc/sys/vm/compact_memory`.
pub fn compact_memory() -> io::Result<()> {
    write_file("/proc/sys/vm/compact_memory", "1")
}

/// Whether `/proc/filesystems` lists `fs`.
pub fn filesystem_supported(fs: &str) -> bool {
    fs::read_to_string("/proc/filesystems")
        .map(|t| t.lines().any(|l| l.split_whitespace().last() == Some(fs)))
        .unwrap_or(false)
}

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

// ---------------------------------------------------------------------------
// zram: swap and a scratch block device

/// The swap header (`struct swap_header`, version 1) for a device of `bytes`.
pub fn swap_header(bytes: u64) -> Vec<u8> {
    let mut h = vec![0u8; PAGE];
    let last_page = (bytes / PAGE as u64).saturating_sub(1) as u32;
    h[1024..1028].copy_from_slice(&1u32.to_ne_bytes()); // version
    h[1028..1032].copy_from_slice(&last_page.to_ne_bytes()); // last_page
                                                             // nr_badpages = 0; uuid, label zero
    h[1052..1052 + 9].copy_from_slice(b"vgpu-swap");
    h[PAGE - 10..].copy_from_slice(b"SWAPSPACE2");
    h
}

/// Whether `/proc/swaps` lists `dev` as active.
pub fn swap_active(dev: &str) -> bool {
    fs::read_to_string("/proc/swaps")
        .map(|t| {
            t.lines()
                .skip(1)
                .any(|l| l.split_whitespace().next() == Some(dev))
        })
        .unwrap_or(false)
}

/// Sets up zram device `n` with `size` (e.g. "128M") unless it already has
/// a disk size; returns its path.
pub fn zram_setup(n: u32, size: &str) -> Result<PathBuf, String> {
    let sys = format!("/sys/block/zram{n}");
    if !Path::new(&sys).exists() {
        return Err(format!("{sys} is missing (CONFIG_ZRAM, or no such device)"));
    }
    let cur = read_u64(format!("{sys}/disksize")).unwrap_or(0);
    if cur == 0 {
        write_file(format!("{sys}/disksize"), size)
            .map_err(|e| format!("writing {size} to {sys}/disksize: {e}"))?;
    }
    let dev = PathBuf::from(format!("/dev/zram{n}"));
    if !dev.exists() {
        // devtmpfs creates it; give udev-less systems a moment.
        std::thread::sleep(Duration::from_millis(100));
        if !dev.exists() {
            return Err(format!("{} did not appear", dev.display()));
        }
    }
    Ok(dev)
}

/// Set when [`ensure_zram_swap`] turned swap on (so [`swapoff_zram`] only
/// undoes what this process did).
static SWAP_IS_OURS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes sure swap on `/dev/zram0` (128 MiB) is on; returns its path.
pub fn ensure_zram_swap() -> Result<String, String> {
    const DEV: &str = "/dev/zram0";
    if swap_active(DEV) {
        return Ok(DEV.into());
    }
    let dev = zram_setup(0, "128M")?;
    let bytes = read_u64("/sys/block/zram0/disksize").map_err(|e| e.to_string())?;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open(&dev)
        .map_err(|e| format!("open {}: {e}", dev.display()))?;
    f.write_all(&swap_header(bytes))
        .and_then(|_| f.sync_all())
        .map_err(|e| format!("writing the swap header: {e}"))?;
    drop(f);
    let c = cstr(&dev).map_err(|e| e.to_string())?;
    // SAFETY: a NUL-terminated path.
    if unsafe { libc::swapon(c.as_ptr(), 0) } != 0 {
        return Err(format!("swapon {DEV}: {}", io::Error::last_os_error()));
    }
    SWAP_IS_OURS.store(true, std::sync::atomic::Ordering::Relaxed);
    Ok(DEV.into())
}

/// Turns the zram swap off again if [`ensure_zram_swap`] turned it on (used
/// at the end of the run).
pub fn swapoff_zram() {
    if SWAP_IS_OURS.swap(false, std::sync::atomic::Ordering::Relaxed) && swap_active("/dev/zram0") {
        let c = CString::new("/dev/zram0").unwrap();
        // SAFETY: a NUL-terminated path.
        unsafe { libc::swapoff(c.as_ptr()) };
    }
}

/// Where [`ensure_ext2`] mounts its file system.
pub const EXT2_MOUNT: &str = "/mnt/vgpu-ext2";

fn mounted(dir: &str) -> bool {
    fs::read_to_string("/proc/mounts")
        .map(|t| t.lines().any(|l| l.split_whitespace().nth(1) == Some(dir)))
        .unwrap_or(false)
}

/// A real file system with writeback: ext2 on a second zram device, mounted
/// at [`EXT2_MOUNT`]. Err(reason) when it cannot be had (reason says what
/// the guest kernel lacks).
pub fn ensure_ext2() -> Result<PathBuf, String> {
    if mounted(EXT2_MOUNT) {
        return Ok(EXT2_MOUNT.into());
    }
    if !filesystem_supported("ext2") {
        return Err(
            "the guest kernel has no ext2 (needs CONFIG_EXT2_FS=y, or CONFIG_EXT4_FS=y with \
             CONFIG_EXT4_USE_FOR_EXT2=y)"
                .into(),
        );
    }
    // A second zram device: /sys/class/zram-control/hot_add answers its number.
    let n = if Path::new("/sys/block/zram1").exists() {
        1
    } else {
        read_u64("/sys/class/zram-control/hot_add").map_err(|e| format!("zram hot_add: {e}"))?
            as u32
    };
    let dev = zram_setup(n, "64M")?;
    let out = std::process::Command::new("mke2fs")
        .args(["-q", "-F", "-b", "4096"])
        .arg(&dev)
        .output()
        .map_err(|e| format!("running mke2fs (busybox): {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "mke2fs {} failed: {}",
            dev.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    fs::create_dir_all(EXT2_MOUNT).map_err(|e| format!("mkdir {EXT2_MOUNT}: {e}"))?;
    mount_ext2(&dev)?;
    Ok(EXT2_MOUNT.into())
}

fn ext2_device() -> Option<PathBuf> {
    let t = fs::read_to_string("/proc/mounts").ok()?;
    t.lines().find_map(|l| {
        let mut w = l.split_whitespace();
        let dev = w.next()?;
        (w.next()? == EXT2_MOUNT).then(|| PathBuf::from(dev))
    })
}

fn mount_ext2(dev: &Path) -> Result<(), String> {
    let (src, dir, ty) = (
        cstr(dev).map_err(|e| e.to_string())?,
        CString::new(EXT2_MOUNT).unwrap(),
        CString::new("ext2").unwrap(),
    );
    // SAFETY: NUL-terminated strings; no data argument.
    let r = unsafe { libc::mount(src.as_ptr(), dir.as_ptr(), ty.as_ptr(), 0, std::ptr::null()) };
    if r != 0 {
        return Err(format!(
            "mount -t ext2 {} {EXT2_MOUNT}: {}",
            dev.display(),
            io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Unmounts and mounts the ext2 file system again: everything cached about
/// it is gone, file contents come from the block device.
pub fn remount_ext2() -> Result<(), String> {
    let dev = ext2_device().ok_or("ext2 is not mounted")?;
    let dir = CString::new(EXT2_MOUNT).unwrap();
    // SAFETY: a NUL-terminated path.
    if unsafe { libc::umount(dir.as_ptr()) } != 0 {
        return Err(format!(
            "umount {EXT2_MOUNT}: {}",
            io::Error::last_os_error()
        ));
    }
    mount_ext2(&dev)
}

// ---------------------------------------------------------------------------
// KSM, hugetlb

/// KSM's sysfs directory.
pub const KSM: &str = "/sys/kernel/mm/ksm";

/// KSM running fast while this lives; restores the settings on drop.
#[derive(Debug)]
pub struct KsmRun {
    _settings: Vec<Setting>,
}

impl KsmRun {
    /// Starts KSM (`run=1`, 1000 pages every 10 ms).
    pub fn start() -> Result<KsmRun, String> {
        if !Path::new(KSM).exists() {
            return Err(format!("{KSM} is missing (CONFIG_KSM)"));
        }
        let mut s = Vec::new();
        for (f, v) in [
            ("pages_to_scan", "1000"),
            ("sleep_millisecs", "10"),
            ("run", "1"),
        ] {
            s.push(Setting::set(format!("{KSM}/{f}"), v).map_err(|e| format!("{KSM}/{f}: {e}"))?);
        }
        Ok(KsmRun { _settings: s })
    }

    /// Pages of this process KSM has merged (`/proc/self/ksm_merging_pages`,
    /// or the global `pages_sharing` where that file does not exist).
    pub fn merged_pages() -> u64 {
        read_u64("/proc/self/ksm_merging_pages")
            .or_else(|_| read_u64(format!("{KSM}/pages_sharing")))
            .unwrap_or(0)
    }

    /// Waits until at least `n` pages are merged, up to `timeout`.
    pub fn wait_merged(n: u64, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if Self::merged_pages() >= n {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Self::merged_pages() >= n
    }
}

/// `n` more huge pages in the pool while this lives.
#[derive(Debug)]
pub struct HugePages {
    _setting: Setting,
}

impl HugePages {
    /// Grows `/proc/sys/vm/nr_hugepages` by `n`; fails unless `n` are free.
    pub fn reserve(n: u64) -> Result<HugePages, String> {
        const P: &str = "/proc/sys/vm/nr_hugepages";
        let cur = read_u64(P).map_err(|e| format!("{P}: {e} (CONFIG_HUGETLBFS)"))?;
        let s = Setting::set(P, &(cur + n).to_string()).map_err(|e| format!("{P}: {e}"))?;
        let free = meminfo("HugePages_Free").unwrap_or(0);
        if free < n {
            return Err(format!("asked for {n} more huge pages, {free} free"));
        }
        Ok(HugePages { _setting: s })
    }
}

// ---------------------------------------------------------------------------
// The driver's debugfs knobs (negative controls)

/// The driver's debugfs directory.
pub const DEBUGFS: &str = "/sys/kernel/debug/vgpu_svm";

/// A debugfs knob of the driver set while this lives, reset to `reset` on drop.
#[derive(Debug)]
pub struct Knob {
    path: PathBuf,
    reset: String,
}

impl Knob {
    /// Writes `value` to `DEBUGFS/name`. Err(reason) explains what is
    /// missing (the driver refuses unless loaded with `unsafe_debug=1`).
    pub fn set(name: &str, value: &str, reset: &str) -> Result<Knob, String> {
        let path = Path::new(DEBUGFS).join(name);
        if !path.exists() {
            return Err(format!(
                "{} does not exist (debugfs not mounted, or the driver lacks the knob)",
                path.display()
            ));
        }
        write_file(&path, value).map_err(|e| {
            format!(
                "writing {value} to {}: {e} (load vgpu_svm with unsafe_debug=1)",
                path.display()
            )
        })?;
        Ok(Knob {
            path,
            reset: reset.into(),
        })
    }
}

impl Drop for Knob {
    fn drop(&mut self) {
        let _ = write_file(&self.path, &self.reset);
    }
}

/// Waits until the task whose `/proc/.../syscall` file is `path` is blocked in `ioctl(2)`
/// (syscall 16 on x86-64) with request number `request`, polling every 10 ms for at most
/// `limit`: a test that must act while a SUBMIT runs knows it really does, instead of
/// guessing with a sleep.
pub fn wait_in_ioctl(path: &str, request: u32, limit: std::time::Duration) -> Result<(), String> {
    let t0 = std::time::Instant::now();
    let want = format!("{request:#x}");
    loop {
        match std::fs::read_to_string(path) {
            Ok(s) if {
                let mut f = s.split_whitespace();
                f.next() == Some("16") && f.nth(1) == Some(want.as_str())
            } =>
            {
                return Ok(())
            }
            Ok(_) => {}
            Err(e) => return Err(format!("{path}: {e}")),
        }
        if t0.elapsed() > limit {
            return Err(format!("the task never blocked in ioctl within {limit:?} ({path})"));
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_lists() {
        assert_eq!(parse_node_list("0"), vec![0]);
        assert_eq!(parse_node_list("0-1\n"), vec![0, 1]);
        assert_eq!(parse_node_list("0-2,5"), vec![0, 1, 2, 5]);
        assert_eq!(parse_node_list(""), Vec::<u32>::new());
        assert_eq!(mask(&[0, 1, 63, 64]), 0x8000_0000_0000_0003);
    }

    #[test]
    fn swap_header_layout() {
        let h = swap_header(128 << 20);
        assert_eq!(h.len(), 4096);
        assert_eq!(&h[4086..], b"SWAPSPACE2");
        assert_eq!(u32::from_ne_bytes(h[1024..1028].try_into().unwrap()), 1);
        assert_eq!(
            u32::from_ne_bytes(h[1028..1032].try_into().unwrap()),
            (128 << 20) / 4096 - 1
        );
    }

    #[test]
    fn smaps_parsing() {
        let t = "\
7f0000000000-7f0000400000 rw-p 00000000 00:00 0
Size:               4096 kB
AnonHugePages:      2048 kB
7f0000400000-7f0000401000 r--p 00000000 00:00 0
AnonHugePages:         0 kB
";
        assert_eq!(
            smaps_kb_in(t, 0x7f00_0000_1000, "AnonHugePages"),
            Some(2048)
        );
        assert_eq!(smaps_kb_in(t, 0x7f00_0040_0000, "AnonHugePages"), Some(0));
        assert_eq!(smaps_kb_in(t, 0x1000, "AnonHugePages"), None);
        assert_eq!(smaps_kb_in(t, 0x7f00_0000_1000, "Size"), Some(4096));
    }

    #[test]
    fn pagemap_of_own_memory() {
        let m = crate::mem::Mapping::anon(2 * PAGE).unwrap();
        m.fill(0, 1, 1);
        let e = pagemap(m.addr(), 2).unwrap();
        assert!(e[0].present());
        assert!(!e[0].swapped());
        assert!(!e[1].present());
    }

    #[test]
    fn choice_files() {
        assert_eq!(selected("always [madvise] never"), "madvise");
        assert_eq!(selected("always inherit madvise [never]"), "never");
        assert_eq!(selected("0"), "0");
    }

    #[test]
    fn meminfo_reads() {
        assert!(meminfo("MemTotal").unwrap() > 0);
        assert_eq!(meminfo("NoSuchField"), None);
    }
}
