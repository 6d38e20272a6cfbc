//! Cases where the kernel moves or replaces pages behind the process's back:
//! THP collapse/split, NUMA migration, compaction, KSM, swap, file pages
//! (truncate, writeback and reclaim), hugetlbfs.

use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::time::Duration;

use vgpu::reference::fnv1a64_zeros;

use crate::child::fork_child;
use crate::coherence::{CaseResult, Cx, Step};
use crate::mem::{Expect, Mapping, HPAGE, PAGE};
use crate::sysutil::{
    compact_memory, drop_caches, ensure_ext2, ensure_zram_swap, mbind, migrate_pages, move_pages,
    numa_nodes, page_out, remount_ext2, smaps_kb, HugePages, KsmRun, MPOL_MF_MOVE, MPOL_MF_STRICT,
};

fn thp_kb(m: &Mapping) -> u64 {
    smaps_kb(m.addr(), "AnonHugePages").unwrap_or(0)
}

/// MADV_COLLAPSE turns small pages the device mapped into a THP.
pub fn thp_collapse(cx: &mut Cx) -> CaseResult {
    let len = 2 * HPAGE;
    let g = cx.gpu()?;
    let m = Mapping::anon_aligned(len, HPAGE)?;
    m.madvise(0, len, libc::MADV_NOHUGEPAGE)
        .step("MADV_NOHUGEPAGE")?;
    m.write_pattern(0, len, 1);
    let mut want = Expect::pattern(len, 1);
    let r = g.map(&m)?;
    cx.check_hash("device HASH of small pages", &g, &r, 0, len, &want);
    g.write_pattern(&r, 0, 64 << 10, 2).step("device write")?;
    want.set_pattern(0, 64 << 10, 2);
    m.madvise(0, len, libc::MADV_HUGEPAGE)
        .step("MADV_HUGEPAGE")?;
    let mut collapsed = Err(std::io::Error::from_raw_os_error(libc::EAGAIN));
    for _ in 0..3 {
        collapsed = m.madvise(0, len, libc::MADV_COLLAPSE);
        if collapsed.is_ok() {
            break;
        }
    }
    match collapsed {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            return cx.skip("MADV_COLLAPSE refused with EINVAL (kernel without it?)")
        }
        Err(e) => return cx.skip(format!("MADV_COLLAPSE failed: {e}")),
        Ok(()) => {}
    }
    let kb = thp_kb(&m);
    cx.note(format!("AnonHugePages after collapse: {kb} kB"));
    cx.check(
        kb >= 2048,
        "the range is backed by THPs after MADV_COLLAPSE",
    );
    cx.check_mem("the CPU sees the same data after collapse", &m, &want);
    cx.check_hash(
        "the device sees the same data after collapse",
        &g,
        &r,
        0,
        len,
        &want,
    );
    cx.check_ok(
        "device write into the THP",
        g.write_pattern(&r, HPAGE / 2, HPAGE, 3),
    );
    want.set_pattern(HPAGE / 2, HPAGE, 3);
    cx.check_mem("the CPU sees it", &m, &want);
    Ok(())
}

/// A THP the device mapped is split by mprotect of one page and by
/// MADV_DONTNEED of a subrange.
pub fn thp_split(cx: &mut Cx) -> CaseResult {
    let len = 2 * HPAGE;
    let g = cx.gpu()?;
    let m = Mapping::anon_aligned(len, HPAGE)?;
    m.madvise(0, len, libc::MADV_HUGEPAGE)
        .step("MADV_HUGEPAGE")?;
    m.write_pattern(0, len, 1);
    let kb = thp_kb(&m);
    cx.note(format!("AnonHugePages before split: {kb} kB"));
    if kb == 0 {
        cx.note("no THP was allocated (fragmented memory?): the split paths are not exercised");
    }
    let mut want = Expect::pattern(len, 1);
    let r = g.map(&m)?;
    cx.check_ok("device write over the THPs", g.write_pattern(&r, 0, len, 2));
    want.set_pattern(0, len, 2);
    cx.check_mem("the CPU sees it", &m, &want);

    // Split 1: one read-only page in the middle of the first THP.
    let p = HPAGE / 2;
    m.mprotect(p, PAGE, libc::PROT_READ)
        .step("mprotect one page")?;
    let lo = g.region(m.addr(), p)?;
    let hi = g.region(m.addr() + (p + PAGE) as u64, HPAGE - p - PAGE)?;
    let one = g.region(m.addr() + p as u64, PAGE)?;
    cx.check_errno(
        "device write to the read-only page fails",
        g.fill(&one, 0, PAGE, 0),
        &[libc::EPERM, libc::EFAULT],
    );
    cx.check_ok("device write below it", g.write_pattern(&lo, 0, p, 3));
    cx.check_ok("device write above it", g.write_pattern(&hi, 0, hi.len, 4));
    want.set_pattern(0, p, 3);
    want.set_pattern(p + PAGE, hi.len, 4);
    cx.check_mem(
        "the CPU sees both and the read-only page unchanged",
        &m,
        &want,
    );
    let ro = g.region_ro(m.addr(), HPAGE)?;
    cx.check_hash("device HASH across the split THP", &g, &ro, 0, HPAGE, &want);

    // Split 2: MADV_DONTNEED of 64 KiB inside the second THP.
    let (off, sub) = (HPAGE + (256 << 10), 64 << 10);
    m.madvise(off, sub, libc::MADV_DONTNEED)
        .step("MADV_DONTNEED")?;
    want.set_fill(off, sub, 0);
    let second = g.region(m.addr() + HPAGE as u64, HPAGE)?;
    cx.check_hash(
        "the device sees the zapped subrange as zeros",
        &g,
        &second,
        0,
        HPAGE,
        &{
            let mut e = Expect::zeros(HPAGE);
            e.bytes.copy_from_slice(&want.bytes[HPAGE..]);
            e
        },
    );
    cx.check_ok(
        "device write into the zapped subrange",
        g.write_pattern(&second, off - HPAGE, sub, 5),
    );
    want.set_pattern(off, sub, 5);
    m.mprotect(p, PAGE, libc::PROT_READ | libc::PROT_WRITE)
        .step("mprotect back")?;
    cx.check_mem("the CPU sees everything", &m, &want);
    cx.check_hash("the device sees everything", &g, &r, 0, len, &want);
    Ok(())
}

/// The two nodes to move between, or a skip.
fn two_nodes(cx: &Cx) -> Result<(u32, u32), crate::coherence::Stop> {
    let nodes = numa_nodes();
    if nodes.len() < 2 {
        return cx.skip(format!("needs two NUMA nodes, the guest has {nodes:?}"));
    }
    Ok((nodes[0], nodes[1]))
}

fn nodes_of(m: &Mapping) -> Vec<i32> {
    move_pages(&m.page_addrs(), None).unwrap_or_default()
}

/// How the pages of a mapping are moved to another node.
#[derive(Debug, Clone, Copy)]
enum Migrate {
    MovePages,
    Mbind,
    WholeProcess,
}

impl Migrate {
    fn name(self) -> &'static str {
        match self {
            Migrate::MovePages => "move_pages",
            Migrate::Mbind => "mbind",
            Migrate::WholeProcess => "migrate_pages",
        }
    }
}

fn numa_common(cx: &mut Cx, how: Migrate) -> CaseResult {
    let (n0, n1) = two_nodes(cx)?;
    const N: usize = 64;
    let len = N * PAGE;
    let g = cx.gpu()?;
    let m = Mapping::anon_small(len, 1)?;
    let r = g.map(&m)?;
    g.write_pattern(&r, 0, len / 2, 2).step("device write")?;
    let mut want = Expect::pattern(len, 1);
    want.set_pattern(0, len / 2, 2);
    cx.check_hash("device HASH before migration", &g, &r, 0, len, &want);

    let from = nodes_of(&m).first().copied().unwrap_or(n0 as i32);
    let to = if from == n0 as i32 { n1 } else { n0 };
    let back = if to == n0 { n1 } else { n0 };
    for (round, target, source) in [(1, to, back), (2, back, to)] {
        let moved = match how {
            Migrate::MovePages => move_pages(&m.page_addrs(), Some(target)).map(|_| ()),
            Migrate::Mbind => mbind(
                m.addr(),
                len,
                libc::MPOL_BIND,
                &[target],
                MPOL_MF_MOVE | MPOL_MF_STRICT,
            ),
            Migrate::WholeProcess => migrate_pages(&[source], &[target]).map(|left| {
                if left > 0 {
                    cx.note(format!("migrate_pages: {left} pages not moved"));
                }
            }),
        };
        if let Err(e) = moved {
            return Err(format!("{} to node {target}: {e}", how.name()).into());
        }
        let on = nodes_of(&m);
        let there = on.iter().filter(|&&n| n == target as i32).count();
        cx.note(format!(
            "round {round}: {there} of {N} pages on node {target}"
        ));
        cx.check(
            there == N,
            format!("{}: every page is on node {target}", how.name()),
        );
        cx.check_mem(
            format!("round {round}: the CPU sees the same data"),
            &m,
            &want,
        );
        cx.check_hash(
            format!("round {round}: the device sees the same data"),
            &g,
            &r,
            0,
            len,
            &want,
        );
        let seed = 10 + round;
        cx.check_ok(
            format!("round {round}: device write after migration"),
            g.write_pattern(&r, len / 2, len / 2, seed),
        );
        want.set_pattern(len / 2, len / 2, seed);
        cx.check_mem(format!("round {round}: the CPU sees it"), &m, &want);
    }
    Ok(())
}

/// move_pages(2) between the two nodes.
pub fn numa_move_pages(cx: &mut Cx) -> CaseResult {
    numa_common(cx, Migrate::MovePages)
}

/// mbind(MPOL_BIND, MPOL_MF_MOVE) between the two nodes.
pub fn numa_mbind(cx: &mut Cx) -> CaseResult {
    numa_common(cx, Migrate::Mbind)
}

/// migrate_pages(2) of the whole process between the two nodes.
pub fn numa_migrate_pages(cx: &mut Cx) -> CaseResult {
    numa_common(cx, Migrate::WholeProcess)
}

/// Compaction moves movable pages: fragment memory, compact, check.
pub fn compaction(cx: &mut Cx) -> CaseResult {
    let g = cx.gpu()?;
    // Fragment: 32 MiB touched, every other page dropped.
    let frag = Mapping::anon(32 << 20)?;
    frag.madvise(0, frag.len(), libc::MADV_NOHUGEPAGE)
        .step("MADV_NOHUGEPAGE")?;
    for p in 0..frag.pages() {
        frag.fill(p * PAGE, 1, 1);
    }
    let m = Mapping::anon(4 << 20)?;
    let len = m.len();
    m.madvise(0, len, libc::MADV_NOHUGEPAGE)
        .step("MADV_NOHUGEPAGE")?;
    m.write_pattern(0, len, 1);
    for p in (1..frag.pages()).step_by(2) {
        frag.madvise(p * PAGE, PAGE, libc::MADV_DONTNEED)
            .step("MADV_DONTNEED")?;
    }
    let r = g.map(&m)?;
    g.write_pattern(&r, 0, len / 2, 2).step("device write")?;
    let mut want = Expect::pattern(len, 1);
    want.set_pattern(0, len / 2, 2);
    cx.check_hash("device HASH before compaction", &g, &r, 0, len, &want);
    if let Err(e) = compact_memory() {
        return cx.skip(format!(
            "/proc/sys/vm/compact_memory: {e} (CONFIG_COMPACTION)"
        ));
    }
    cx.check_mem("the CPU sees the same data after compaction", &m, &want);
    cx.check_hash(
        "the device sees the same data after compaction",
        &g,
        &r,
        0,
        len,
        &want,
    );
    cx.check_ok(
        "device write after compaction",
        g.write_pattern(&r, len / 2, len / 2, 3),
    );
    want.set_pattern(len / 2, len / 2, 3);
    cx.check_mem("the CPU sees it", &m, &want);
    drop(frag);
    Ok(())
}

/// KSM merges identical pages the device has mapped (read-only), a device
/// write breaks the merge (COW), MADV_UNMERGEABLE unmerges the rest.
pub fn ksm(cx: &mut Cx) -> CaseResult {
    const N: usize = 32;
    let len = N * PAGE;
    let run = match KsmRun::start() {
        Ok(r) => r,
        Err(e) => return cx.skip(e),
    };
    let g = cx.gpu()?;
    let m = Mapping::anon(len)?;
    m.madvise(0, len, libc::MADV_NOHUGEPAGE)
        .step("MADV_NOHUGEPAGE")?;
    let mut want = Expect::zeros(len);
    for p in 0..N {
        m.write_pattern(p * PAGE, PAGE, 500); // every page the same
        want.set_pattern(p * PAGE, PAGE, 500);
    }
    let ro = g.map_ro(&m)?;
    let rw_page = g.region(m.addr() + 3 * PAGE as u64, PAGE)?;
    cx.check_hash("device HASH before merging", &g, &ro, 0, len, &want);
    let before = KsmRun::merged_pages();
    m.madvise(0, len, libc::MADV_MERGEABLE)
        .step("MADV_MERGEABLE")?;
    if !KsmRun::wait_merged(before + N as u64 / 2, Duration::from_secs(30)) {
        return cx.skip(format!(
            "KSM merged only {} pages within 30 s",
            KsmRun::merged_pages()
        ));
    }
    cx.note(format!("KSM merged pages: {}", KsmRun::merged_pages()));
    cx.check_hash(
        "the device sees the same data after the merge",
        &g,
        &ro,
        0,
        len,
        &want,
    );
    cx.check_ok(
        "device write into a merged page",
        g.write_pattern(&rw_page, 0, PAGE, 9),
    );
    want.set_pattern(3 * PAGE, PAGE, 9);
    cx.check_mem("the CPU sees it in that page only", &m, &want);
    cx.check_hash("the device agrees", &g, &ro, 0, len, &want);
    m.madvise(0, len, libc::MADV_UNMERGEABLE)
        .step("MADV_UNMERGEABLE")?;
    cx.check_hash(
        "the device sees the same data after unmerge",
        &g,
        &ro,
        0,
        len,
        &want,
    );
    let rw = g.map(&m)?;
    cx.check_ok(
        "device write after unmerge",
        g.write_pattern(&rw, 5 * PAGE, PAGE, 10),
    );
    want.set_pattern(5 * PAGE, PAGE, 10);
    cx.check_mem("the CPU sees it", &m, &want);
    drop(run);
    Ok(())
}

/// Swap out (MADV_PAGEOUT to zram) pages the device wrote; the device swaps
/// them back in by faulting (or validating).
pub fn swap_zram(cx: &mut Cx) -> CaseResult {
    if let Err(e) = ensure_zram_swap() {
        return cx.skip(format!("no zram swap: {e}"));
    }
    let len = 4 << 20;
    let g = cx.gpu()?;
    let m = Mapping::anon(len)?;
    let n = m.pages();
    m.madvise(0, len, libc::MADV_NOHUGEPAGE)
        .step("MADV_NOHUGEPAGE")?;
    m.write_pattern(0, len, 1);
    let mut want = Expect::pattern(len, 1);
    let r = g.map(&m)?;
    for p in (0..n).step_by(2) {
        g.write_pattern(&r, p * PAGE, PAGE, 100 + p as u64)
            .step("device write")?;
        want.set_pattern(p * PAGE, PAGE, 100 + p as u64);
    }
    let swapped = page_out(&m, 3).step("MADV_PAGEOUT")?;
    cx.note(format!("{swapped} of {n} pages swapped out"));
    if swapped == 0 {
        return cx.skip("MADV_PAGEOUT swapped nothing out");
    }
    cx.check_hash(
        "the device sees the data after swap-out (swap-in by the device)",
        &g,
        &r,
        0,
        len,
        &want,
    );
    cx.check_mem("the CPU sees the same data", &m, &want);
    m.madvise(0, len, libc::MADV_PAGEOUT).step("MADV_PAGEOUT")?;
    cx.check_ok(
        "device write into swapped-out pages",
        g.write_pattern(&r, 0, len, 7),
    );
    want.set_pattern(0, len, 7);
    cx.check_mem("the CPU sees it", &m, &want);
    Ok(())
}

fn temp_file(dir: &str, cx: &Cx) -> std::io::Result<(File, String)> {
    let path = format!(
        "{dir}/vgpu-coherence-{}-{}-{}",
        cx.name,
        cx.mode.name(),
        std::process::id()
    );
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)?;
    Ok((f, path))
}

fn file_bytes(f: &File, len: usize) -> std::io::Result<Vec<u8>> {
    let mut v = vec![0u8; len];
    f.read_exact_at(&mut v, 0)?;
    Ok(v)
}

/// A MAP_SHARED tmpfs file: the device and read()/write() see the same page
/// cache; ftruncate shrinking makes the tail fault; hole punching zeroes.
pub fn file_truncate(cx: &mut Cx) -> CaseResult {
    const N: usize = 16;
    let len = N * PAGE;
    let (f, path) = temp_file("/tmp", cx).step("create a tmpfs file")?;
    let _rm = RemoveOnDrop(path);
    f.set_len(len as u64)?;
    let g = cx.gpu()?;
    let m = Mapping::file_shared(f.as_raw_fd(), len)?;
    let r = g.map(&m)?;
    let lo = g.region(m.addr(), len / 2)?;
    g.write_pattern(&r, 0, len, 1).step("device write")?;
    let mut want = Expect::pattern(len, 1);
    cx.check_eq(
        "read() sees the device's write",
        file_bytes(&f, len).ok(),
        Some(want.bytes.clone()),
    );
    f.write_all_at(&vgpu::reference::pattern(7, PAGE), 2 * PAGE as u64)?;
    want.set_pattern(2 * PAGE, PAGE, 7);
    cx.check_hash("the device sees write()", &g, &r, 0, len, &want);

    f.set_len((len / 2) as u64).step("ftruncate shrink")?;
    cx.check_errno(
        "device READ beyond the new end of file fails",
        g.read(&r, 0, len),
        &[libc::EFAULT],
    );
    cx.check_hash(
        "the device still sees the first half",
        &g,
        &lo,
        0,
        len / 2,
        &want,
    );

    f.set_len(len as u64).step("ftruncate grow")?;
    want.set_fill(len / 2, len / 2, 0);
    cx.check_hash(
        "after growing, the tail reads as zeros",
        &g,
        &r,
        0,
        len,
        &want,
    );
    cx.check_ok(
        "device write into the regrown tail",
        g.write_pattern(&r, len / 2, len / 2, 3),
    );
    want.set_pattern(len / 2, len / 2, 3);
    cx.check_eq(
        "read() sees it",
        file_bytes(&f, len).ok(),
        Some(want.bytes.clone()),
    );

    // SAFETY: fallocate on our own file descriptor.
    let rc = unsafe {
        libc::fallocate(
            f.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            4 * PAGE as i64,
            PAGE as i64,
        )
    };
    if rc == 0 {
        want.set_fill(4 * PAGE, PAGE, 0);
        cx.check_hash(
            "a punched hole reads as zeros to the device",
            &g,
            &r,
            0,
            len,
            &want,
        );
    } else {
        cx.note(format!("punch hole: {}", std::io::Error::last_os_error()));
    }
    cx.check_mem("the CPU sees what the device sees", &m, &want);
    Ok(())
}

struct RemoveOnDrop(String);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// Device writes into a MAP_SHARED file on a real file system (ext2 on
/// zram) survive writeback (msync), cache eviction and a remount.
pub fn file_writeback(cx: &mut Cx) -> CaseResult {
    let dir = match ensure_ext2() {
        Ok(d) => d,
        Err(e) => return cx.skip(e),
    };
    const N: usize = 64;
    let len = N * PAGE;
    let (f, path) = temp_file(&dir.to_string_lossy(), cx).step("create a file on ext2")?;
    let _rm = RemoveOnDrop(path.clone());
    f.write_all_at(&vec![0u8; len], 0)?;
    f.sync_all()?;
    let g = cx.gpu()?;
    let mut want = Expect::zeros(len);
    {
        let m = Mapping::file_shared(f.as_raw_fd(), len)?;
        let r = g.map(&m)?;
        g.write_pattern(&r, 0, len, 1).step("device write")?;
        want.set_pattern(0, len, 1);
        m.msync(libc::MS_SYNC).step("msync")?;
        // After writeback cleaned the pages, the device must fault again
        // (page_mkwrite) or its writes stay invisible to writeback.
        g.write_pattern(&r, 0, len / 2, 2)
            .step("device write after msync")?;
        want.set_pattern(0, len / 2, 2);
        cx.check_mem("the CPU sees it", &m, &want);
    }
    f.sync_all()?;
    drop_caches().step("drop_caches")?;
    cx.check_eq(
        "after fsync and dropping caches, read() sees the device's writes",
        file_bytes(&f, len).ok(),
        Some(want.bytes.clone()),
    );
    {
        let m = Mapping::file_shared(f.as_raw_fd(), len)?;
        let r = g.map(&m)?;
        cx.check_hash(
            "the device reads the file back from disk",
            &g,
            &r,
            0,
            len,
            &want,
        );
        g.write_pattern(&r, len / 4, len / 2, 3)
            .step("device write")?;
        want.set_pattern(len / 4, len / 2, 3);
        let _ = m.madvise(0, len, libc::MADV_PAGEOUT);
    }
    drop(f);
    if let Err(e) = remount_ext2() {
        cx.check(false, format!("remount: {e}"));
        return Ok(());
    }
    let f = File::open(&path)?;
    cx.check_eq(
        "after unmap, close and remount, the file has the device's writes",
        file_bytes(&f, len).ok(),
        Some(want.bytes.clone()),
    );
    Ok(())
}

/// hugetlbfs (MAP_HUGETLB) memory: device writes, CPU writes, fork COW of a
/// huge page, MADV_DONTNEED of a huge page.
pub fn hugetlbfs(cx: &mut Cx) -> CaseResult {
    let _pool = match HugePages::reserve(4) {
        Ok(p) => p,
        Err(e) => return cx.skip(e),
    };
    let len = 2 * HPAGE;
    let m = match Mapping::hugetlb(len) {
        Ok(m) => m,
        Err(e) => return cx.skip(format!("mmap(MAP_HUGETLB): {e}")),
    };
    let g = cx.gpu()?;
    let r = g.map(&m)?;
    g.write_pattern(&r, 0, len, 1).step("device write")?;
    let mut want = Expect::pattern(len, 1);
    cx.check_mem("the CPU sees the device's write", &m, &want);
    m.write_pattern(0, 64 << 10, 2);
    want.set_pattern(0, 64 << 10, 2);
    cx.check_hash("the device sees the CPU's write", &g, &r, 0, len, &want);

    let before = want.clone();
    let mut child = fork_child(|side| {
        side.signal();
        side.wait()?;
        match before.mismatch(&m) {
            None => Ok(()),
            Some(d) => Err(format!(
                "the parent's write leaked into the child's huge page: {d}"
            )),
        }
    })?;
    child.wait_signal()?;
    cx.check_ok(
        "device write after fork (huge page COW)",
        g.write_pattern(&r, HPAGE, HPAGE, 3),
    );
    want.set_pattern(HPAGE, HPAGE, 3);
    cx.check_mem("the parent sees it", &m, &want);
    child.go();
    cx.check_ok("the child kept its own huge page", child.join());

    m.madvise(HPAGE, HPAGE, libc::MADV_DONTNEED)
        .step("MADV_DONTNEED")?;
    want.set_fill(HPAGE, HPAGE, 0);
    cx.check_eq(
        "the device sees the dropped huge page as zeros",
        g.hash(&r, HPAGE, HPAGE).ok(),
        Some(fnv1a64_zeros(HPAGE)),
    );
    cx.check_mem("the CPU agrees", &m, &want);
    Ok(())
}
