//! Cases for the mm features of a distribution kernel (tests/MM-FEATURES.md): NUMA
//! balancing, zswap, DAMON, multi-gen LRU eviction, userfaultfd write-protect, shmem THP,
//! anonymous mTHP, memory offlining and idle page tracking. Each drives one feature while
//! the device works on the memory and shows three things: a counter proving the feature
//! acted on the mirrored memory, that CPU and device see each other's data afterwards, and
//! (judged by the framework for every case) that the device checked accesses and found no
//! stale one.

use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use vgpu::reference::{fnv1a64, pattern};
use vgpu::MmuEvent;

use crate::child::fork_child;
use crate::coherence::{CaseResult, Cx, Gpu, Region, Step, Stop};
use crate::mem::{Expect, Mapping, HPAGE, PAGE};
use crate::sysutil::{
    ensure_zram_swap, mbind, page_out, pagemap, read_file, read_u64, smaps_kb, swapped_pages,
    write_file, Setting,
};

/// Runs `work` on this thread while another thread runs `device(round)` in a loop (device
/// jobs during the mm event); returns what `work` returned and the device loop's rounds, or
/// its first error.
fn with_device_loop<T>(
    work: impl FnOnce() -> T,
    device: impl Fn(u64) -> Result<(), String> + Sync,
) -> (T, Result<u64, String>) {
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let h = s.spawn(|| {
            let mut round = 0;
            while !stop.load(Ordering::Relaxed) {
                device(round)?;
                round += 1;
            }
            Ok(round)
        });
        let t = work();
        stop.store(true, Ordering::Relaxed);
        let r = h.join().unwrap_or_else(|_| Err("the device thread panicked".into()));
        (t, r)
    })
}

/// Notifier callbacks that cleared this context's entries so far (the per-event counts are
/// device-wide: in the busy patterns they include the other process's).
fn invalidations(g: &Gpu) -> u64 {
    g.driver_delta().invalidations
}

/// A device HASH of `r` must equal `want`'s hash of the same bytes.
fn hash_is(g: &Gpu, r: &Region<'_>, want: u64) -> Result<(), String> {
    match g.hash(r, 0, r.len) {
        Ok(h) if h == want => Ok(()),
        Ok(h) => Err(format!("device hash {h:#x}, want {want:#x}")),
        Err(e) => Err(format!("device HASH: {e}")),
    }
}

/// Private anonymous memory of small pages, each holding 512 pattern bytes (seed `seed` +
/// page) and zeros: compressible, so zswap keeps it and zram stores it small.
fn compressible(pages: usize, seed: u64) -> Result<(Mapping, Expect), Stop> {
    let m = Mapping::anon(pages * PAGE)?;
    m.madvise(0, m.len(), libc::MADV_NOHUGEPAGE)
        .step("MADV_NOHUGEPAGE")?;
    let mut want = Expect::zeros(m.len());
    for p in 0..pages {
        m.write_pattern(p * PAGE, 512, seed + p as u64);
        want.set_pattern(p * PAGE, 512, seed + p as u64);
    }
    Ok((m, want))
}

/// The device writes 256 more bytes into every other page of `r` (seed `seed` + page).
fn device_writes(g: &Gpu, r: &Region<'_>, want: &mut Expect, seed: u64) -> CaseResult {
    for p in (0..r.len / PAGE).step_by(2) {
        g.write_pattern(r, p * PAGE + 512, 256, seed + p as u64)
            .step("device write")?;
        want.set_pattern(p * PAGE + 512, 256, seed + p as u64);
    }
    Ok(())
}

/// Pages written to the zram swap device so far (its block-layer write sectors / 8). The
/// guest kernel has no CONFIG_VM_EVENT_COUNTERS, so /proc/vmstat has no pswpout or zswpout:
/// the device's own counter stands in for pswpout.
fn zram_pages_written() -> u64 {
    read_file("/sys/block/zram0/stat")
        .ok()
        .and_then(|s| s.split_whitespace().nth(6)?.parse::<u64>().ok())
        .map_or(0, |sectors| sectors / 8)
}

/// Pages zswap holds now (debugfs; the stand-in for zswpout and zswpin).
fn zswap_stored() -> u64 {
    read_u64("/sys/kernel/debug/zswap/stored_pages").unwrap_or(0)
}

/// The end of every case that swapped mirrored pages out: the device swaps them in and
/// sees the data, the CPU agrees, a device write over everything lands.
fn after_swap_out(cx: &mut Cx, g: &Gpu, m: &Mapping, r: &Region<'_>, want: &mut Expect) {
    cx.check_hash(
        "the device sees the data after swap-out (its faults swap in)",
        g,
        r,
        0,
        m.len(),
        want,
    );
    cx.check_mem("the CPU sees the same data", m, want);
    cx.check_ok(
        "device write over the whole range",
        g.write_pattern(r, 0, m.len(), 77),
    );
    want.set_pattern(0, m.len(), 77);
    cx.check_mem("the CPU sees it", m, want);
}

// ---------------------------------------------------------------------------
// NUMA balancing

/// A number field of this thread's `/proc/thread-self/sched` (`mm->numa_scan_seq`,
/// `total_numa_faults`, ...): the NUMA balancing counters there are the only ones without
/// CONFIG_VM_EVENT_COUNTERS (no numa_pte_updates in /proc/vmstat); 0 when absent.
fn sched_field(name: &str) -> u64 {
    fs::read_to_string("/proc/thread-self/sched")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == name).then(|| v.trim().parse::<f64>().ok().map(|x| x as u64))?
            })
        })
        .unwrap_or(0)
}

/// Automatic NUMA balancing (`kernel.numa_balancing=1`, scanning sped up through debugfs):
/// the scanner makes the mirrored PTEs PROT_NONE (a PROTECTION_VMA callback: the device
/// must drop its entries) while this thread touches one half from the CPU and another thread
/// writes and hashes the other half on the device; the device's faults on the PROT_NONE
/// entries are hinting faults too. Shows scan passes (mm->numa_scan_seq), the CPU thread's
/// hinting faults and the context's PROTECTION_VMA callbacks.
pub fn numa_balancing(cx: &mut Cx) -> CaseResult {
    const NB: &str = "/proc/sys/kernel/numa_balancing";
    const SCAN: &str = "/sys/kernel/debug/sched/numa_balancing";
    if !Path::new(NB).exists() {
        return cx.skip(format!("{NB} is missing (CONFIG_NUMA_BALANCING)"));
    }
    let mut settings = vec![Setting::set(NB, "1").step(NB)?];
    for (f, v) in [
        ("scan_delay_ms", "0"),
        ("scan_period_min_ms", "10"),
        ("scan_period_max_ms", "100"),
    ] {
        let p = format!("{SCAN}/{f}");
        if Path::new(&p).exists() {
            settings.push(Setting::set(&p, v).step(&p)?);
        }
    }
    let len = 2 << 20;
    let half = len / 2;
    let g = cx.gpu()?;
    let m = Mapping::anon_small(len, 1)?;
    let r = g.map(&m)?;
    let dev = g.region(m.addr(), half)?;
    let (seq0, prot0) = (sched_field("mm->numa_scan_seq"), g.events(MmuEvent::ProtectionVma));
    let deadline = Instant::now() + Duration::from_secs(20);
    let (cpu, device) = with_device_loop(
        || {
            let mut round = 0u64;
            while Instant::now() < deadline {
                let seed = 200 + round % 8;
                m.write_pattern(half, half, seed);
                if m.read(half, half) != pattern(seed, half) {
                    return Err(format!("round {round}: the CPU read back other bytes"));
                }
                round += 1;
                if round.is_multiple_of(8)
                    && sched_field("mm->numa_scan_seq") > seq0 + 1
                    && sched_field("total_numa_faults") > 0
                    && g.events(MmuEvent::ProtectionVma) > prot0
                {
                    break;
                }
            }
            Ok(200 + (round - 1) % 8)
        },
        |round| {
            let seed = 100 + round;
            g.write_pattern(&dev, 0, half, seed)
                .map_err(|e| format!("device write: {e}"))?;
            hash_is(&g, &dev, fnv1a64(&pattern(seed, half)))
        },
    );
    let (seq, faults) = (sched_field("mm->numa_scan_seq") - seq0, sched_field("total_numa_faults"));
    let migrated = sched_field("numa_pages_migrated");
    drop(settings);
    let prot = g.events(MmuEvent::ProtectionVma) - prot0;
    cx.note(format!(
        "/proc/thread-self/sched: mm->numa_scan_seq +{seq}, total_numa_faults {faults}, \
         numa_pages_migrated {migrated}; PROTECTION_VMA callbacks on the context: {prot}"
    ));
    cx.check(seq > 0, "NUMA balancing scanned the address space (mm->numa_scan_seq grew)");
    cx.check(faults > 0, "the CPU thread took NUMA hinting faults (total_numa_faults)");
    cx.check(prot > 0, "the scan caused PROTECTION_VMA callbacks");
    let cpu_seed = cx.check_ok("the CPU saw its own writes throughout", cpu);
    let rounds = cx.check_ok("the device's writes and hashes agreed throughout", device);
    cx.note(format!("device rounds during the scan: {rounds:?}"));
    let mut want = Expect::pattern(len, 1);
    if let (Some(cs), Some(n)) = (cpu_seed, rounds) {
        want.set_pattern(half, half, cs);
        if n > 0 {
            want.set_pattern(0, half, 100 + n - 1);
        }
    }
    cx.check_mem("the CPU sees both halves", &m, &want);
    cx.check_hash("the device sees both halves", &g, &r, 0, len, &want);
    cx.check_ok("device write after the scan", g.write_pattern(&r, 0, len, 9));
    want.set_pattern(0, len, 9);
    cx.check_mem("the CPU sees it", &m, &want);
    Ok(())
}

// ---------------------------------------------------------------------------
// zswap

/// zswap in front of the zram swap: MADV_PAGEOUT of device-written pages stores them
/// compressed in zswap (zswap's stored_pages grows by as many, zram's write counter does
/// not: they did not go to zram); the device's faults load them back (stored_pages falls)
/// and see the data; device writes land.
pub fn zswap(cx: &mut Cx) -> CaseResult {
    const ON: &str = "/sys/module/zswap/parameters/enabled";
    if let Err(e) = ensure_zram_swap() {
        return cx.skip(format!("zswap needs a swap device, no zram swap: {e}"));
    }
    if !Path::new(ON).exists() {
        return cx.skip(format!("{ON} is missing (CONFIG_ZSWAP)"));
    }
    let _on = Setting::set(ON, "Y").step(ON)?;
    let g = cx.gpu()?;
    let (m, mut want) = compressible(256, 1)?;
    let r = g.map(&m)?;
    device_writes(&g, &r, &mut want, 1000)?;
    cx.check_hash("device HASH before swap-out", &g, &r, 0, m.len(), &want);
    let (z0, w0) = (zswap_stored(), zram_pages_written());
    let swapped = page_out(&m, 3).step("MADV_PAGEOUT")?;
    let (stored, written) = (zswap_stored(), zram_pages_written() - w0);
    cx.note(format!(
        "{swapped} of {} pages swapped out; zswap stored_pages {z0} -> {stored}, pages \
         written to zram +{written}",
        m.pages()
    ));
    cx.check(swapped > 0, "MADV_PAGEOUT swapped mirrored pages out");
    cx.check(
        stored >= z0 + swapped as u64,
        "zswap stored every swapped-out page (stored_pages grew by at least that)",
    );
    cx.check(written < swapped as u64, "the pages went to zswap, not to zram");
    after_swap_out(cx, &g, &m, &r, &mut want);
    let left = zswap_stored();
    cx.note(format!("zswap stored_pages after the device's swap-in: {left}"));
    cx.check(
        left + swapped as u64 <= stored,
        "the device's faults loaded the pages back from zswap (stored_pages fell)",
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// DAMON

const KDAMONDS: &str = "/sys/kernel/mm/damon/admin/kdamonds";

/// One kdamond set up through DAMON's sysfs; turned off and removed on drop (also when a
/// check failed).
struct Kdamond;

impl Kdamond {
    /// A kdamond monitoring this process (vaddr) with one DAMOS scheme: `action` on regions
    /// not accessed in the last aggregation interval, inside `[start, end)` only (a core
    /// `addr` filter). Not started yet.
    fn vaddr_scheme(action: &str, start: u64, end: u64) -> Result<Kdamond, String> {
        let nr = format!("{KDAMONDS}/nr_kdamonds");
        write_file(&nr, "1").map_err(|e| format!("{nr}: {e}"))?;
        let k = Kdamond;
        let c = format!("{KDAMONDS}/0/contexts");
        let s = format!("{c}/0/schemes/0");
        let pid = std::process::id().to_string();
        let (start, end) = (start.to_string(), end.to_string());
        for (f, v) in [
            (format!("{c}/nr_contexts"), "1"),
            (format!("{c}/0/operations"), "vaddr"),
            (format!("{c}/0/monitoring_attrs/intervals/sample_us"), "5000"),
            (format!("{c}/0/monitoring_attrs/intervals/aggr_us"), "50000"),
            (format!("{c}/0/monitoring_attrs/intervals/update_us"), "200000"),
            (format!("{c}/0/targets/nr_targets"), "1"),
            (format!("{c}/0/targets/0/pid_target"), &pid),
            (format!("{c}/0/schemes/nr_schemes"), "1"),
            (format!("{s}/action"), action),
            // Every range defaults to [0, 0].
            (format!("{s}/access_pattern/sz/min"), "4096"),
            (format!("{s}/access_pattern/sz/max"), "18446744073709551615"),
            (format!("{s}/access_pattern/nr_accesses/min"), "0"),
            (format!("{s}/access_pattern/nr_accesses/max"), "0"),
            (format!("{s}/access_pattern/age/min"), "0"),
            (format!("{s}/access_pattern/age/max"), "4294967295"),
            (format!("{s}/core_filters/nr_filters"), "1"),
            (format!("{s}/core_filters/0/type"), "addr"),
            (format!("{s}/core_filters/0/matching"), "Y"),
            (format!("{s}/core_filters/0/allow"), "Y"),
            (format!("{s}/core_filters/0/addr_start"), &start),
            (format!("{s}/core_filters/0/addr_end"), &end),
        ] {
            write_file(&f, v).map_err(|e| format!("writing {v} to {f}: {e}"))?;
        }
        Ok(k)
    }

    fn state(&self, cmd: &str) -> Result<(), String> {
        let p = format!("{KDAMONDS}/0/state");
        write_file(&p, cmd).map_err(|e| format!("writing {cmd} to {p}: {e}"))
    }

    /// The scheme's stats file `name` (`nr_applied`, `sz_applied`, ...), refreshed.
    fn stat(&self, name: &str) -> u64 {
        let _ = self.state("update_schemes_stats");
        read_u64(format!("{KDAMONDS}/0/contexts/0/schemes/0/stats/{name}")).unwrap_or(0)
    }
}

impl Drop for Kdamond {
    fn drop(&mut self) {
        let _ = self.state("off");
        let _ = write_file(format!("{KDAMONDS}/nr_kdamonds"), "0");
    }
}

/// DAMON (sysfs, vaddr operations on this process) with a DAMOS `pageout` scheme for cold
/// regions, filtered to the mirrored range: the device's accesses do not set the CPU's
/// accessed bits (the driver mirrors without young-bit callbacks), so the range looks cold
/// while another thread hashes it on the device, and DAMON pages it out under the device's
/// feet. Shows the scheme's sz_applied and zram's writes grew; the device swaps back in.
pub fn damon_pageout(cx: &mut Cx) -> CaseResult {
    if let Err(e) = ensure_zram_swap() {
        return cx.skip(format!("pageout needs swap, no zram swap: {e}"));
    }
    if !Path::new(KDAMONDS).exists() {
        return cx.skip(format!("{KDAMONDS} is missing (CONFIG_DAMON_SYSFS)"));
    }
    let g = cx.gpu()?;
    let (m, mut want) = compressible(256, 1)?;
    let r = g.map(&m)?;
    device_writes(&g, &r, &mut want, 1000)?;
    let ro = g.region_ro(m.addr(), m.len())?;
    let whole = want.hash(0, m.len());
    let k = Kdamond::vaddr_scheme("pageout", m.addr(), m.addr() + m.len() as u64)?;
    let w0 = zram_pages_written();
    k.state("on")?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let (applied, device) = with_device_loop(
        || {
            let mut sz = 0;
            while Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
                sz = k.stat("sz_applied");
                if sz >= m.len() as u64 / 2 {
                    break;
                }
            }
            (sz, k.stat("nr_applied"), k.stat("sz_tried"))
        },
        |_| {
            std::thread::sleep(Duration::from_millis(20));
            hash_is(&g, &ro, whole)
        },
    );
    drop(k);
    let out = zram_pages_written() - w0;
    cx.note(format!(
        "DAMOS pageout: sz_applied {} bytes in {} regions (sz_tried {}); pages written to \
         zram +{out}",
        applied.0, applied.1, applied.2
    ));
    cx.check(
        applied.0 >= m.len() as u64 / 2,
        "the scheme paged out at least half the mirrored range (sz_applied)",
    );
    cx.check(out > 0, "pages were swapped out (zram writes grew)");
    let rounds = cx.check_ok("device hashes during DAMON saw the data", device);
    cx.note(format!("device hashes during DAMON: {rounds:?}"));
    after_swap_out(cx, &g, &m, &r, &mut want);
    Ok(())
}

// ---------------------------------------------------------------------------
// multi-gen LRU

const LRU_GEN: &str = "/sys/kernel/debug/lru_gen";

/// The lruvecs of `/sys/kernel/debug/lru_gen`: (memcg id, node, youngest generation).
fn lru_gens(text: &str) -> Vec<(u64, u32, u64)> {
    let (mut memcg, mut v) = (0, Vec::<(u64, u32, u64)>::new());
    for line in text.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            ["memcg", id, ..] => memcg = id.parse().unwrap_or(0),
            ["node", n] => v.extend(n.parse().ok().map(|n| (memcg, n, 0))),
            [seq, ..] => {
                if let (Some(last), Ok(s)) = (v.last_mut(), seq.parse::<u64>()) {
                    last.2 = last.2.max(s);
                }
            }
            [] => {}
        }
    }
    v
}

/// Multi-gen LRU eviction through `/sys/kernel/debug/lru_gen`: three agings of every
/// lruvec (the first moves the pages the CPU touched to a new generation, the others leave
/// them behind, untouched), then eviction of all but the two youngest generations, anon
/// only (swappiness `max`), bounded by nr_to_reclaim. Shows the mirrored pages were
/// reclaimed (swapped out per pagemap, zram's writes grew); the device swaps them back in.
pub fn mglru_evict(cx: &mut Cx) -> CaseResult {
    if let Err(e) = ensure_zram_swap() {
        return cx.skip(format!("anon eviction needs swap, no zram swap: {e}"));
    }
    if !Path::new(LRU_GEN).exists() {
        return cx.skip(format!("{LRU_GEN} is missing (CONFIG_LRU_GEN, debugfs)"));
    }
    let enabled = read_file("/sys/kernel/mm/lru_gen/enabled").unwrap_or_default();
    if u64::from_str_radix(enabled.trim_start_matches("0x"), 16).unwrap_or(0) == 0 {
        return cx.skip(format!("multi-gen LRU is off (enabled = {enabled:?})"));
    }
    let g = cx.gpu()?;
    let (m, mut want) = compressible(256, 1)?;
    let r = g.map(&m)?;
    device_writes(&g, &r, &mut want, 1000)?;
    cx.check_hash("device HASH before eviction", &g, &r, 0, m.len(), &want);
    let w0 = zram_pages_written();
    let mut swapped = 0;
    for _round in 0..3 {
        let lruvecs = lru_gens(&fs::read_to_string(LRU_GEN)?);
        for &(memcg, node, _) in &lruvecs {
            for _ in 0..3 {
                let max = lru_gens(&fs::read_to_string(LRU_GEN)?)
                    .into_iter()
                    .find(|l| (l.0, l.1) == (memcg, node))
                    .map_or(0, |l| l.2);
                // EEXIST: this generation could not be aged now; the next try may.
                let _ = write_file(LRU_GEN, &format!("+ {memcg} {node} {max}"));
            }
            let max = lru_gens(&fs::read_to_string(LRU_GEN)?)
                .into_iter()
                .find(|l| (l.0, l.1) == (memcg, node))
                .map_or(0, |l| l.2);
            if max >= 2 {
                if let Err(e) = write_file(LRU_GEN, &format!("- {memcg} {node} {} max 16384", max - 2)) {
                    cx.note(format!("eviction on node {node}: {e}"));
                }
            }
        }
        swapped = swapped_pages(m.addr(), m.pages()).step("pagemap")?;
        if swapped > 0 {
            break;
        }
    }
    let out = zram_pages_written() - w0;
    cx.note(format!(
        "{swapped} of {} mirrored pages evicted to swap; pages written to zram +{out}",
        m.pages()
    ));
    cx.check(swapped > 0, "MGLRU eviction reclaimed mirrored pages (pagemap: swapped)");
    cx.check(out >= swapped as u64, "zram's writes grew by at least as many");
    after_swap_out(cx, &g, &m, &r, &mut want);
    Ok(())
}

// ---------------------------------------------------------------------------
// userfaultfd write-protect

const UFFD_API: u64 = 0xaa;
const UFFD_FEATURE_SIGBUS: u64 = 1 << 7;
const UFFDIO_REGISTER_MODE_WP: u64 = 1 << 1;
const UFFDIO_WRITEPROTECT_MODE_WP: u64 = 1 << 0;
/// `_IOWR(0xaa, 0x3f, struct uffdio_api)` (24 bytes).
const UFFDIO_API: u64 = 0xc018_aa3f;
/// `_IOWR(0xaa, 0x00, struct uffdio_register)` (32 bytes).
const UFFDIO_REGISTER: u64 = 0xc020_aa00;
/// `_IOWR(0xaa, 0x06, struct uffdio_writeprotect)` (24 bytes).
const UFFDIO_WRITEPROTECT: u64 = 0xc018_aa06;

fn uffd_ioctl(fd: &OwnedFd, req: u64, arg: &mut [u64]) -> std::io::Result<()> {
    // SAFETY: `arg` is the request's struct (all u64 fields), readable and writable.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req as _, arg.as_mut_ptr()) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// userfaultfd write-protection of private anonymous memory the device mirrors writable:
/// UFFDIO_WRITEPROTECT is a PROTECTION_VMA callback; then a device WRITE fails with EFAULT
/// and changes nothing, because hmm_range_fault faults without FAULT_FLAG_ALLOW_RETRY and
/// handle_userfault cannot wait for a handler: with UFFD_FEATURE_SIGBUS it answers SIGBUS
/// (EFAULT to the device) at once. (Without the feature it would also fail, but a DEBUG_VM
/// kernel prints "FAULT_FLAG_ALLOW_RETRY missing" with a stack dump, which the debug
/// flavor's kernel-log check reports.) A device READ still works; after un-protecting, a
/// device write lands.
pub fn uffd_wp(cx: &mut Cx) -> CaseResult {
    const N: usize = 16;
    let len = N * PAGE;
    let g = cx.gpu()?;
    let m = Mapping::anon_small(len, 1)?;
    let mut want = Expect::pattern(len, 1);
    let r = g.map(&m)?;
    let ro = g.region_ro(m.addr(), len)?;
    g.write_pattern(&r, 0, len / 2, 2).step("device write")?;
    want.set_pattern(0, len / 2, 2);
    cx.check_mem("the CPU sees the device's write", &m, &want);

    // SAFETY: userfaultfd(flags) takes no pointers.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | libc::O_NONBLOCK) };
    if fd < 0 {
        return cx.skip(format!(
            "userfaultfd: {} (CONFIG_USERFAULTFD)",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: a fresh descriptor owned here.
    let uffd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let mut api = [UFFD_API, UFFD_FEATURE_SIGBUS, 0];
    uffd_ioctl(&uffd, UFFDIO_API, &mut api).step("UFFDIO_API with UFFD_FEATURE_SIGBUS")?;
    let mut reg = [m.addr(), len as u64, UFFDIO_REGISTER_MODE_WP, 0];
    uffd_ioctl(&uffd, UFFDIO_REGISTER, &mut reg).step("UFFDIO_REGISTER (mode WP)")?;
    let (before, i0) = (g.events(MmuEvent::ProtectionVma), invalidations(&g));
    let mut wp = [m.addr(), len as u64, UFFDIO_WRITEPROTECT_MODE_WP];
    uffd_ioctl(&uffd, UFFDIO_WRITEPROTECT, &mut wp).step("UFFDIO_WRITEPROTECT")?;
    let prot = g.events(MmuEvent::ProtectionVma) - before;
    cx.note(format!("PROTECTION_VMA callbacks for the write-protect: {prot}"));
    cx.check(prot > 0, "write-protecting caused PROTECTION_VMA callbacks");
    cx.check(invalidations(&g) > i0, "they invalidated this context's mirror");

    cx.check_errno(
        "device write to write-protected memory fails with EFAULT",
        g.write_pattern(&r, 0, len, 3),
        &[libc::EFAULT],
    );
    cx.check_mem("the memory is unchanged", &m, &want);
    cx.check_hash("a device read of it works and sees the data", &g, &ro, 0, len, &want);

    let mut un = [m.addr(), len as u64, 0];
    uffd_ioctl(&uffd, UFFDIO_WRITEPROTECT, &mut un).step("UFFDIO_WRITEPROTECT off")?;
    cx.check_ok("device write after un-protecting", g.write_pattern(&r, 0, len, 4));
    want.set_pattern(0, len, 4);
    cx.check_mem("the CPU sees it", &m, &want);
    drop(uffd);
    cx.check_hash("the device agrees after the uffd is closed", &g, &r, 0, len, &want);
    Ok(())
}

// ---------------------------------------------------------------------------
// THP: shmem and anonymous mTHP

const THP: &str = "/sys/kernel/mm/transparent_hugepage";

/// A memfd mapped shared at a 2 MiB-aligned VA with shmem THP on (`shmem_enabled =
/// always`): the device's write faults allocate PMD THPs (ShmemPmdMapped in smaps), the
/// device maps them; FALLOC_FL_PUNCH_HOLE of 64 KiB inside the first one splits it under
/// the mirror. The hole reads as zeros to CPU and device; device writes into it land.
pub fn shmem_thp(cx: &mut Cx) -> CaseResult {
    let knob = format!("{THP}/shmem_enabled");
    if !Path::new(&knob).exists() {
        return cx.skip(format!("{knob} is missing (CONFIG_TRANSPARENT_HUGEPAGE)"));
    }
    let mut settings = vec![Setting::set(&knob, "always").step(&knob)?];
    let pmd = format!("{THP}/hugepages-2048kB/shmem_enabled");
    if Path::new(&pmd).exists() {
        settings.push(Setting::set(&pmd, "inherit").step(&pmd)?);
    }
    let len = 2 * HPAGE;
    // SAFETY: a NUL-terminated name.
    let fd = unsafe { libc::memfd_create(c"vgpu-shmem-thp".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(format!("memfd_create: {}", std::io::Error::last_os_error()).into());
    }
    // SAFETY: a fresh descriptor owned here.
    let f = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    f.set_len(len as u64)?;
    let at = Mapping::anon_aligned(len, HPAGE)?.leak().0;
    let m = Mapping::new(
        at,
        len,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_SHARED | libc::MAP_FIXED,
        f.as_raw_fd(),
        0,
    )
    .step("mmap the memfd over the aligned reservation")?;
    let g = cx.gpu()?;
    let r = g.map(&m)?;
    g.write_pattern(&r, 0, len, 1).step("device write")?;
    let mut want = Expect::pattern(len, 1);
    let pmd_kb = |m: &Mapping| {
        smaps_kb(m.addr(), "ShmemPmdMapped").unwrap_or(0)
            + smaps_kb(m.addr(), "FilePmdMapped").unwrap_or(0)
    };
    let before = pmd_kb(&m);
    cx.note(format!("ShmemPmdMapped before the hole: {before} kB"));
    cx.check(before >= 2048, "PMD THPs back the shared mapping (ShmemPmdMapped)");
    cx.check_mem("the CPU sees the device's write", &m, &want);
    m.write_pattern(HPAGE, 64 << 10, 2);
    want.set_pattern(HPAGE, 64 << 10, 2);
    cx.check_hash("the device sees the CPU's write", &g, &r, 0, len, &want);

    let (hole, hlen) = (256 << 10, 64 << 10);
    let i0 = invalidations(&g);
    // SAFETY: fallocate on our own descriptor.
    let rc = unsafe {
        libc::fallocate(
            f.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            hole as i64,
            hlen as i64,
        )
    };
    if rc != 0 {
        return Err(format!("punch hole: {}", std::io::Error::last_os_error()).into());
    }
    want.set_fill(hole, hlen, 0);
    let inval = invalidations(&g) - i0;
    cx.note(format!(
        "ShmemPmdMapped after the hole: {} kB; invalidations for it: {inval}",
        pmd_kb(&m)
    ));
    cx.check(inval > 0, "the punched hole invalidated the mirror");
    cx.check_hash("the device sees the hole as zeros", &g, &r, 0, len, &want);
    cx.check_mem("the CPU agrees", &m, &want);
    cx.check_ok(
        "device write into the hole and around it",
        g.write_pattern(&r, hole - PAGE, hlen + 2 * PAGE, 3),
    );
    want.set_pattern(hole - PAGE, hlen + 2 * PAGE, 3);
    cx.check_mem("the CPU sees it", &m, &want);
    drop(settings);
    Ok(())
}

/// Anonymous mTHP of 64 KiB (`hugepages-64kB/enabled = always`) in a 1 MiB mapping (too
/// small for a PMD THP): the device's first write faults allocate 64 KiB folios
/// (stats/anon_fault_alloc); MADV_DONTNEED of 16 KiB inside one of them (a partial zap of a
/// large folio), then fork and device writes (COW of large folios): the child keeps the
/// pre-fork data, the parent sees the device's writes.
pub fn mthp_anon(cx: &mut Cx) -> CaseResult {
    let dir = format!("{THP}/hugepages-64kB");
    if !Path::new(&dir).exists() {
        return cx.skip(format!("{dir} is missing (mTHP needs Linux 6.8)"));
    }
    let _on = Setting::set(format!("{dir}/enabled"), "always").step("hugepages-64kB/enabled")?;
    let allocs = || read_u64(format!("{dir}/stats/anon_fault_alloc")).unwrap_or(0);
    let (len, folio) = (1 << 20, 64 << 10);
    let g = cx.gpu()?;
    let m = Mapping::anon_aligned(len, folio)?;
    let r = g.map(&m)?;
    let a0 = allocs();
    g.write_pattern(&r, 0, len, 1).step("device write")?;
    let mut want = Expect::pattern(len, 1);
    let n = allocs() - a0;
    cx.note(format!("64 KiB folios allocated by the device's faults: {n}"));
    cx.check(
        n >= (len / folio) as u64 / 2,
        "the device's write faults allocated 64 KiB folios (anon_fault_alloc)",
    );
    cx.check_mem("the CPU sees the device's write", &m, &want);

    let (off, sub) = (folio + 8 * PAGE, 4 * PAGE);
    m.madvise(off, sub, libc::MADV_DONTNEED)
        .step("MADV_DONTNEED inside a folio")?;
    want.set_fill(off, sub, 0);
    cx.check_hash("the device sees the zapped pages as zeros", &g, &r, 0, len, &want);
    cx.check_ok("device write into them", g.write_pattern(&r, off, sub, 2));
    want.set_pattern(off, sub, 2);
    cx.check_mem("the CPU sees it", &m, &want);

    let before = want.clone();
    let mut child = fork_child(|side| {
        side.signal();
        side.wait()?;
        match before.mismatch(&m) {
            None => Ok(()),
            Some(d) => Err(format!("the parent's device write leaked into the child: {d}")),
        }
    })?;
    child.wait_signal()?;
    for (i, o) in [0, 3 * folio + PAGE, 7 * folio + 5 * PAGE].into_iter().enumerate() {
        cx.check_ok(
            format!("device write {i} after fork (COW of a 64 KiB folio)"),
            g.write_pattern(&r, o, 3 * PAGE, 10 + i as u64),
        );
        want.set_pattern(o, 3 * PAGE, 10 + i as u64);
    }
    cx.check_mem("the parent sees the device's writes", &m, &want);
    child.go();
    cx.check_ok("the child kept the pre-fork data", child.join());
    cx.check_hash("the device sees the parent's memory", &g, &r, 0, len, &want);
    Ok(())
}

// ---------------------------------------------------------------------------
// memory offlining

const MEMORY: &str = "/sys/devices/system/memory";

/// The nodes of the memory blocks in ZONE_MOVABLE (each block directory links its node).
fn movable_nodes() -> Vec<u32> {
    let mut v = Vec::new();
    for e in fs::read_dir(MEMORY).into_iter().flatten().flatten() {
        let dir = e.path();
        if !read_file(dir.join("valid_zones")).is_ok_and(|z| z.contains("Movable")) {
            continue;
        }
        for n in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = n.file_name().to_string_lossy().into_owned();
            if let Some(id) = name.strip_prefix("node").and_then(|i| i.parse().ok()) {
                if !v.contains(&id) {
                    v.push(id);
                }
            }
        }
    }
    v
}

/// A memory block taken offline; onlined again (movable) on drop, also when a check failed.
struct Offline(String);

impl Drop for Offline {
    fn drop(&mut self) {
        for _ in 0..5 {
            if write_file(&self.0, "online_movable").is_ok() || read_file(&self.0).is_ok_and(|s| s == "online") {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Memory offlining of a ZONE_MOVABLE block (the guest boots with `movablecore=`) that
/// holds mirrored pages, while another thread hashes them on the device: offlining migrates
/// every page out of the block (invalidations), their PFNs change, device and CPU see the
/// same data; the block is onlined again. A block with holes (the last one below 2 GiB
/// holds firmware's reserved pages) cannot be offlined (EINVAL): then the next 256 KiB of a
/// pool of two blocks' size, bound to one movable node, is faulted in and mirrored instead,
/// until its pages land in another movable block; then the next node's pool (bounded by the
/// pools).
pub fn memory_offline(cx: &mut Cx) -> CaseResult {
    let bs = read_file(format!("{MEMORY}/block_size_bytes"))
        .ok()
        .and_then(|s| u64::from_str_radix(&s, 16).ok());
    let Some(block_size) = bs else {
        return cx.skip(format!("{MEMORY}/block_size_bytes is missing (CONFIG_MEMORY_HOTPLUG)"));
    };
    const N: usize = 64;
    let len = N * PAGE;
    let g = cx.gpu()?;
    let nodes = movable_nodes();
    if nodes.is_empty() {
        return cx.skip(format!(
            "no memory block is in ZONE_MOVABLE (kernel command line: {:?}; movable memory \
             needs movablecore=)",
            read_file("/proc/cmdline").unwrap_or_default()
        ));
    }
    let block_of = |pfn: u64| pfn * PAGE as u64 / block_size;
    let movable = |b: u64| {
        read_file(format!("{MEMORY}/memory{b}/valid_zones")).is_ok_and(|z| z.contains("Movable"))
    };
    let mut bad = Vec::new();
    let mut found = None;
    // One pool per movable node, bound to that node alone: a node's zonelist falls back from
    // its movable zone to its normal zone before another node's movable zone, so a pool bound
    // to all of them may never reach some movable blocks (seen on the debug kernel: every
    // page of a two-node pool in memory15, which has holes, or in ZONE_NORMAL; memory7 and
    // memory14 never used).
    let mut pools = Vec::new();
    'nodes: for &node in &nodes {
        let pool = Mapping::anon(2 * block_size as usize)?;
        pool.madvise(0, pool.len(), libc::MADV_NOHUGEPAGE)
            .step("MADV_NOHUGEPAGE")?;
        mbind(pool.addr(), pool.len(), libc::MPOL_BIND, &[node], 0).step("mbind")?;
        let pool_addr = pool.addr();
        let chunks = pool.len() / len;
        pools.push(pool);
        for chunk in 0..chunks {
            let off = chunk * len;
            pools.last().expect("pushed").write_pattern(off, len, 1 + chunk as u64);
            let pfns: Vec<u64> = pagemap(pool_addr + off as u64, N)
                .step("pagemap")?
                .iter()
                .map(|e| e.pfn())
                .collect();
            if pfns.iter().all(|&p| p == 0) {
                return Err("pagemap shows no PFNs (not CAP_SYS_ADMIN?)".into());
            }
            let Some(page) = (0..N).find(|&i| {
                let b = block_of(pfns[i]);
                pfns[i] != 0 && movable(b) && !bad.contains(&b)
            }) else {
                continue;
            };
            let block = block_of(pfns[page]);
            // SAFETY: a view of one chunk of the pool, which outlives it (leaked below).
            let m = unsafe { Mapping::from_raw(pool_addr + off as u64, len) };
            let mut want = Expect::pattern(len, 1 + chunk as u64);
            let r = g.map(&m)?;
            g.write_pattern(&r, 0, len / 2, 2).step("device write")?;
            want.set_pattern(0, len / 2, 2);
            let state = format!("{MEMORY}/memory{block}/state");
            let ro = g.region_ro(m.addr(), len)?;
            let whole = want.hash(0, len);
            let t0 = Instant::now();
            let (offlined, device) = with_device_loop(
                || {
                    let mut last = String::new();
                    for _ in 0..5 {
                        match write_file(&state, "offline") {
                            Ok(()) => return Ok(Offline(state.clone())),
                            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                                return Err(e.to_string())
                            }
                            Err(e) => last = e.to_string(),
                        }
                        std::thread::sleep(Duration::from_millis(200));
                    }
                    Err(last)
                },
                |_| hash_is(&g, &ro, whole),
            );
            let dt = t0.elapsed();
            let rounds = cx.check_ok("device hashes during the offlining saw the data", device);
            match offlined {
                Ok(o) => found = Some((o, m, r, want, block, page, pfns[page], dt, rounds)),
                Err(e) => {
                    cx.note(format!("offlining memory{block}: {e}"));
                    let _ = m.leak();
                    bad.push(block);
                    continue;
                }
            }
            break 'nodes;
        }
    }
    let Some((offline, m, r, mut want, block, page, old, dt, rounds)) = found else {
        let blocks: Vec<String> = fs::read_dir(MEMORY)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| {
                read_file(e.path().join("valid_zones")).is_ok_and(|z| z.contains("Movable"))
            })
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        return Err(format!(
            "no movable memory block could be offlined (tried {bad:?}; movable: {blocks:?})"
        )
        .into());
    };
    let new = pagemap(m.addr(), N).step("pagemap")?[page].pfn();
    cx.note(format!(
        "memory{block} (block size {} MiB) offline in {dt:?}; page {page}: PFN {old:#x} -> \
         {new:#x}; device hashes during it: {rounds:?}",
        block_size >> 20
    ));
    cx.check_eq("the block is offline", read_file(&offline.0).ok(), Some("offline".into()));
    cx.check(
        new != 0 && block_of(new) != block,
        "the mirrored page was migrated out of the block (its PFN changed)",
    );
    cx.check_hash("the device sees the same data", &g, &r, 0, len, &want);
    cx.check_ok("device write after the offlining", g.write_pattern(&r, len / 2, len / 2, 3));
    want.set_pattern(len / 2, len / 2, 3);
    cx.check_mem("the CPU sees it", &m, &want);
    let state = offline.0.clone();
    drop(offline);
    cx.check_eq("the block is online again", read_file(&state).ok(), Some("online".into()));
    drop(r);
    let _ = m.leak();
    Ok(())
}

// ---------------------------------------------------------------------------
// idle page tracking

const PAGE_IDLE: &str = "/sys/kernel/mm/page_idle/bitmap";

/// The idle bits of `pfns` in the page_idle bitmap (one u64 per 64 PFNs).
fn idle_bits(pfns: &[u64]) -> std::io::Result<Vec<bool>> {
    use std::os::unix::fs::FileExt;
    let f = fs::File::open(PAGE_IDLE)?;
    pfns.iter()
        .map(|&p| {
            let mut b = [0u8; 8];
            f.read_exact_at(&mut b, p / 64 * 8)?;
            Ok(u64::from_ne_bytes(b) >> (p % 64) & 1 == 1)
        })
        .collect()
}

/// Marks `pfns` idle.
fn set_idle(pfns: &[u64]) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let f = fs::OpenOptions::new().write(true).open(PAGE_IDLE)?;
    for &p in pfns {
        f.write_all_at(&(1u64 << (p % 64)).to_ne_bytes(), p / 64 * 8)?;
    }
    Ok(())
}

/// Whether the bitmap answers for `pfn`: it reads and writes whole 64-PFN chunks below
/// max_pfn only, so the last, partial chunk of RAM (below firmware's reserved pages at the
/// top of the low 2 GiB) reads and writes nothing.
fn idle_trackable(pfn: u64) -> bool {
    use std::os::unix::fs::FileExt;
    let mut b = [0u8; 8];
    fs::File::open(PAGE_IDLE).is_ok_and(|f| f.read_at(&mut b, pfn / 64 * 8).is_ok_and(|n| n == 8))
}

/// Pins the calling thread to the CPU it runs on until dropped (then restores its mask).
struct PinnedToThisCpu(Option<libc::cpu_set_t>);

impl PinnedToThisCpu {
    fn new() -> PinnedToThisCpu {
        // SAFETY: plain syscalls on this thread with a zeroed, correctly sized cpu_set_t.
        unsafe {
            let mut old: libc::cpu_set_t = std::mem::zeroed();
            let cpu = libc::sched_getcpu();
            if cpu < 0 || libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut old) != 0 {
                return PinnedToThisCpu(None);
            }
            let mut one: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu as usize, &mut one);
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &one) != 0 {
                return PinnedToThisCpu(None);
            }
            PinnedToThisCpu(Some(old))
        }
    }
}

impl Drop for PinnedToThisCpu {
    fn drop(&mut self) {
        if let Some(old) = self.0.take() {
            // SAFETY: restores the mask read in `new`, for this thread.
            unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &old) };
        }
    }
}

/// Idle page tracking of mirrored pages: writing their bits to the page_idle bitmap clears
/// the accessed bits through the rmap (a clear_young notification, which the interval
/// notifiers do not receive: no invalidation), so the device keeps its entries and its
/// accesses stay coherent; the bitmap reads them idle, and not idle after the CPU touched
/// them. (Device accesses do not make a page non-idle: the mirror has no young bit.)
pub fn idle_page_tracking(cx: &mut Cx) -> CaseResult {
    if !Path::new(PAGE_IDLE).exists() {
        return cx.skip(format!("{PAGE_IDLE} is missing (CONFIG_IDLE_PAGE_TRACKING)"));
    }
    const N: usize = 32;
    let len = N * PAGE;
    // page_idle tracks only pages on an LRU list, and a fresh page waits in the per-CPU
    // lru_add batch of the CPU that faulted it until that CPU drains it. The retries below
    // fill a scratch mapping to drain this CPU's batch; a thread that moved to the other CPU
    // in between left its pages in a batch nothing here drains (seen: 13 of 32 idle). So the
    // case stays on one CPU from the first fault to the last bitmap read.
    let _pinned = PinnedToThisCpu::new();
    let g = cx.gpu()?;
    let m = Mapping::anon_small(len, 1)?;
    let mut want = Expect::pattern(len, 1);
    let r = g.map(&m)?;
    g.write_pattern(&r, 0, len / 2, 2).step("device write")?;
    want.set_pattern(0, len / 2, 2);
    let pfns: Vec<u64> = pagemap(m.addr(), N).step("pagemap")?.iter().map(|e| e.pfn()).collect();
    if pfns.contains(&0) {
        return Err("pagemap shows no PFNs (not present, or not CAP_SYS_ADMIN?)".into());
    }
    let count = |v: Vec<bool>| v.into_iter().filter(|&b| b).count();
    let all = pfns.len();
    let pfns: Vec<u64> = pfns.into_iter().filter(|&p| idle_trackable(p)).collect();
    let n = pfns.len();
    // page_idle tracks only pages on an LRU list; fresh pages may still sit in a per-CPU
    // batch: faulting in more pages (a scratch mapping) pushes them on. Bounded retries.
    let scratch = Mapping::anon(2 << 20)?;
    scratch.madvise(0, scratch.len(), libc::MADV_NOHUGEPAGE)
        .step("MADV_NOHUGEPAGE")?;
    let i0 = invalidations(&g);
    let mut n_idle = 0;
    for round in 0..5u8 {
        scratch.fill(0, scratch.len(), round);
        set_idle(&pfns).step("writing the page_idle bitmap")?;
        n_idle = count(idle_bits(&pfns).step("reading the page_idle bitmap")?);
        if n_idle == n {
            break;
        }
    }
    cx.check_eq(
        "marking the pages idle invalidated nothing of the mirror",
        invalidations(&g) - i0,
        0,
    );
    if n < all {
        cx.note(format!("{} of {all} pages in the bitmap's partial last chunk", all - n));
    }
    cx.check(n >= all / 2, "the bitmap answers for most mirrored pages");
    cx.check_eq("the bitmap reads every tracked mirrored page idle", n_idle, n);
    cx.check_hash("the device sees the data", &g, &r, 0, len, &want);
    cx.check_ok("device write to idle pages", g.write_pattern(&r, len / 2, len / 2, 3));
    want.set_pattern(len / 2, len / 2, 3);
    let dev_idle = count(idle_bits(&pfns).step("reading the page_idle bitmap")?);
    // Clearing accessed bits flushes no TLB (x86, like the kernel's ptep_clear_young): the
    // CPU's cached translations would not set them again. Unmapping the 512-page scratch
    // mapping flushes this mm's whole TLB (more than tlb_single_page_flush_ceiling pages).
    scratch.unmap().step("munmap the scratch mapping")?;
    cx.check_mem("the CPU sees it", &m, &want);
    // That CPU read made every page young again.
    let still = count(idle_bits(&pfns).step("reading the page_idle bitmap")?);
    cx.note(format!(
        "idle of {n}: after marking {n_idle}, after device accesses {dev_idle}, after the \
         CPU's {still}"
    ));
    cx.check_eq("after the CPU's access no page reads idle", still, 0);
    cx.check_hash("the device agrees", &g, &r, 0, len, &want);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lru_gen_file_parsing() {
        let t = "memcg     0 \n node     0\n          5      12345       100        200 \n          \
                 6         10        30         40 \n node     1\n          2        100  0  0\n          \
                 3          0  1  1\n";
        assert_eq!(lru_gens(t), vec![(0, 0, 6), (0, 1, 3)]);
        assert_eq!(lru_gens(""), vec![]);
    }
}
