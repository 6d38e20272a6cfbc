//! [`Mapping`]: test memory from `mmap`, reached only through raw pointers (so
//! that the device may write it while no Rust reference to it exists), and
//! [`Expect`], a model of what the memory should hold.

use std::io;
use std::os::fd::RawFd;

use vgpu::reference::{self, fnv1a64};

/// Base page size.
pub const PAGE: usize = 4096;
/// PMD (THP, hugetlb) page size on x86-64.
pub const HPAGE: usize = 2 << 20;

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// An `mmap`ed range, unmapped on drop (unless [`Mapping::leak`]ed).
///
/// All accessors copy through raw pointers; none hands out a reference to the
/// memory, which the device (or a fork child, for shared mappings) may change
/// at any time.
#[derive(Debug)]
pub struct Mapping {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: a Mapping is an address range; every access goes through raw
// pointers with volatile or copy semantics, and concurrent device/CPU access
// is what the suite tests.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// `mmap(hint, len, prot, flags, fd, off)`.
    pub fn new(
        hint: u64,
        len: usize,
        prot: libc::c_int,
        flags: libc::c_int,
        fd: RawFd,
        off: i64,
    ) -> io::Result<Mapping> {
        // SAFETY: mmap with these arguments creates a new mapping; with
        // MAP_FIXED callers replace only ranges they own.
        let p = unsafe { libc::mmap(hint as *mut libc::c_void, len, prot, flags, fd, off) };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping { ptr: p.cast(), len })
    }

    /// Private anonymous read-write memory.
    pub fn anon(len: usize) -> io::Result<Mapping> {
        Self::new(
            0,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    }

    /// Private anonymous memory in 4 KiB pages only (`MADV_NOHUGEPAGE`: no THP backs it, so
    /// a case's page-sized events stay page-sized), filled with `pattern(seed)`: how most
    /// cases start.
    pub fn anon_small(len: usize, seed: u64) -> io::Result<Mapping> {
        let m = Self::anon(len)?;
        m.madvise(0, len, libc::MADV_NOHUGEPAGE)
            .map_err(|e| io::Error::new(e.kind(), format!("MADV_NOHUGEPAGE: {e}")))?;
        m.write_pattern(0, len, seed);
        Ok(m)
    }

    /// Shared anonymous read-write memory (shmem; shared with fork children).
    pub fn anon_shared(len: usize) -> io::Result<Mapping> {
        Self::new(
            0,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    }

    /// Private anonymous memory at exactly `addr` (`MAP_FIXED_NOREPLACE`).
    pub fn anon_at(addr: u64, len: usize) -> io::Result<Mapping> {
        let m = Self::new(
            addr,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )?;
        if m.addr() != addr {
            // Kernels before 4.17 ignore the flag and treat addr as a hint.
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        Ok(m)
    }

    /// Private anonymous memory whose start is `align`-aligned (for THP).
    pub fn anon_aligned(len: usize, align: usize) -> io::Result<Mapping> {
        let big = Self::anon(len + align)?;
        let start = (big.addr() as usize).next_multiple_of(align);
        let (base, total) = (big.addr() as usize, big.len);
        let _ = big.leak();
        // SAFETY: trimming the head and tail of the reservation just made.
        unsafe {
            if start > base {
                libc::munmap(base as *mut libc::c_void, start - base);
            }
            let end = start + len;
            if base + total > end {
                libc::munmap(end as *mut libc::c_void, base + total - end);
            }
        }
        // SAFETY: [start, start + len) is what is left of the mapping.
        Ok(unsafe { Mapping::from_raw(start as u64, len) })
    }

    /// A shared mapping of `len` bytes of file `fd` at offset 0.
    pub fn file_shared(fd: RawFd, len: usize) -> io::Result<Mapping> {
        Self::new(
            0,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        )
    }

    /// Private anonymous hugetlb memory (`MAP_HUGETLB`, default huge page size).
    pub fn hugetlb(len: usize) -> io::Result<Mapping> {
        Self::new(
            0,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_HUGETLB,
            -1,
            0,
        )
    }

    /// Adopts `[addr, addr + len)` (e.g. where `mremap` put a mapping).
    ///
    /// # Safety
    /// The range must be a mapping nobody else will unmap.
    pub unsafe fn from_raw(addr: u64, len: usize) -> Mapping {
        Mapping {
            ptr: addr as *mut u8,
            len,
        }
    }

    /// Start address.
    pub fn addr(&self) -> u64 {
        self.ptr as u64
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for a zero-length mapping.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of base pages.
    pub fn pages(&self) -> usize {
        self.len / PAGE
    }

    /// Start address of every base page.
    pub fn page_addrs(&self) -> Vec<u64> {
        (0..self.pages())
            .map(|i| self.addr() + (i * PAGE) as u64)
            .collect()
    }

    fn range(&self, off: usize, len: usize) -> *mut u8 {
        assert!(
            off.checked_add(len).is_some_and(|e| e <= self.len),
            "{off}+{len} outside a mapping of {}",
            self.len
        );
        // SAFETY: in bounds, checked above.
        unsafe { self.ptr.add(off) }
    }

    /// Copies `len` bytes at `off` out.
    pub fn read(&self, off: usize, len: usize) -> Vec<u8> {
        let p = self.range(off, len);
        let mut v = vec![0u8; len];
        // SAFETY: p is valid for len bytes of this mapping (which must be
        // readable: callers do not read PROT_NONE or truncated ranges).
        unsafe { std::ptr::copy_nonoverlapping(p, v.as_mut_ptr(), len) };
        v
    }

    /// Copies `data` in at `off`.
    pub fn write(&self, off: usize, data: &[u8]) {
        let p = self.range(off, data.len());
        // SAFETY: p is valid for data.len() bytes of this writable mapping.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), p, data.len()) };
    }

    /// Writes the device's WRITE_PATTERN bytes (seed `seed`) at `off` from the CPU.
    pub fn write_pattern(&self, off: usize, len: usize, seed: u64) {
        self.write(off, &reference::pattern(seed, len));
    }

    /// Sets `len` bytes at `off` to `byte` from the CPU.
    pub fn fill(&self, off: usize, len: usize, byte: u8) {
        let p = self.range(off, len);
        // SAFETY: as for write.
        unsafe { std::ptr::write_bytes(p, byte, len) };
    }

    /// Reads one byte of every page (volatile): maps the zero page for
    /// untouched private anonymous memory.
    pub fn touch_read(&self) -> u8 {
        let mut x = 0u8;
        for i in (0..self.len).step_by(PAGE) {
            // SAFETY: in bounds; volatile so the read happens.
            x ^= unsafe { std::ptr::read_volatile(self.ptr.add(i)) };
        }
        x
    }

    /// Volatile u64 load at `off` (8-aligned).
    pub fn read_u64(&self, off: usize) -> u64 {
        let p = self.range(off, 8).cast::<u64>();
        // SAFETY: in bounds and aligned (mappings are page aligned, off % 8 == 0
        // asserted by the cast's alignment requirement in debug builds).
        unsafe { std::ptr::read_volatile(p) }
    }

    /// Volatile u64 store at `off` (8-aligned).
    pub fn write_u64(&self, off: usize, v: u64) {
        let p = self.range(off, 8).cast::<u64>();
        // SAFETY: as for read_u64.
        unsafe { std::ptr::write_volatile(p, v) }
    }

    /// FNV-1a 64 of what the CPU sees at `off`.
    pub fn cpu_hash(&self, off: usize, len: usize) -> u64 {
        fnv1a64(&self.read(off, len))
    }

    /// `madvise(addr + off, len, advice)`.
    pub fn madvise(&self, off: usize, len: usize, advice: libc::c_int) -> io::Result<()> {
        let p = self.range(off, len);
        // SAFETY: advice on a range of this mapping.
        check(unsafe { libc::madvise(p.cast(), len, advice) })
    }

    /// `mprotect(addr + off, len, prot)`.
    pub fn mprotect(&self, off: usize, len: usize, prot: libc::c_int) -> io::Result<()> {
        let p = self.range(off, len);
        // SAFETY: protection change on a range of this mapping; callers do not
        // hold references into it.
        check(unsafe { libc::mprotect(p.cast(), len, prot) })
    }

    /// `msync(addr, len, flags)` of the whole mapping.
    pub fn msync(&self, flags: libc::c_int) -> io::Result<()> {
        // SAFETY: the whole mapping.
        check(unsafe { libc::msync(self.ptr.cast(), self.len, flags) })
    }

    /// Unmaps now, reporting errors.
    pub fn unmap(self) -> io::Result<()> {
        let (p, len) = (self.ptr, self.len);
        std::mem::forget(self);
        // SAFETY: our own mapping, given up here.
        check(unsafe { libc::munmap(p.cast(), len) })
    }

    /// Forgets the mapping without unmapping it (it moved, or someone else
    /// owns it now); returns (address, length).
    pub fn leak(self) -> (u64, usize) {
        let r = (self.addr(), self.len);
        std::mem::forget(self);
        r
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: our own mapping.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// `mremap(old, old_len, new_len, flags, new_addr)`: returns the new address.
/// The old [`Mapping`] must be leaked by the caller on success.
pub fn mremap(
    old: u64,
    old_len: usize,
    new_len: usize,
    flags: libc::c_int,
    new_addr: u64,
) -> io::Result<u64> {
    // SAFETY: moves a mapping the caller owns; the caller adopts the result.
    let p = unsafe {
        libc::mremap(
            old as *mut libc::c_void,
            old_len,
            new_len,
            flags,
            new_addr as *mut libc::c_void,
        )
    };
    if p == libc::MAP_FAILED {
        Err(io::Error::last_os_error())
    } else {
        Ok(p as u64)
    }
}

/// What a mapping should contain: a byte-exact model updated alongside every
/// CPU and device write, compared with [`Expect::mismatch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expect {
    /// The expected bytes.
    pub bytes: Vec<u8>,
}

impl Expect {
    /// `len` zero bytes.
    pub fn zeros(len: usize) -> Expect {
        Expect {
            bytes: vec![0; len],
        }
    }

    /// A pattern over the whole length.
    pub fn pattern(len: usize, seed: u64) -> Expect {
        Expect {
            bytes: reference::pattern(seed, len),
        }
    }

    /// WRITE_PATTERN of `len` bytes at `off`.
    pub fn set_pattern(&mut self, off: usize, len: usize, seed: u64) {
        reference::fill_pattern(&mut self.bytes[off..off + len], seed);
    }

    /// FILL of `len` bytes at `off`.
    pub fn set_fill(&mut self, off: usize, len: usize, byte: u8) {
        self.bytes[off..off + len].fill(byte);
    }

    /// COPY within the range.
    pub fn copy(&mut self, dst: usize, src: usize, len: usize) {
        self.bytes.copy_within(src..src + len, dst);
    }

    /// FNV-1a of `len` expected bytes at `off`.
    pub fn hash(&self, off: usize, len: usize) -> u64 {
        fnv1a64(&self.bytes[off..off + len])
    }

    /// `None` if `got` (read at `off`) matches, else a description of the
    /// first differing byte and how many differ.
    pub fn mismatch_at(&self, off: usize, got: &[u8]) -> Option<String> {
        let want = &self.bytes[off..off + got.len()];
        let first = got.iter().zip(want).position(|(g, w)| g != w)?;
        let n = got.iter().zip(want).filter(|(g, w)| g != w).count();
        let at = off + first;
        Some(format!(
            "byte {at:#x} (page {}): got {:#04x}, want {:#04x}; {n} bytes differ",
            at / PAGE,
            got[first],
            want[first]
        ))
    }

    /// Compares the whole of `m` with the model.
    pub fn mismatch(&self, m: &Mapping) -> Option<String> {
        self.mismatch_range(m, 0, self.bytes.len())
    }

    /// Compares `len` bytes of `m` at `off` with the model.
    pub fn mismatch_range(&self, m: &Mapping, off: usize, len: usize) -> Option<String> {
        self.mismatch_at(off, &m.read(off, len))
    }
}

/// A private fixed VA for [`Churn`]'s own test (others use their own).
#[cfg(test)]
const CHURN_TEST_VA: u64 = 0x2100_0000_0000;

/// A thread that maps `[addr, addr + len)` (private anonymous, read-write), touches every
/// page and unmaps it again, over and over, until dropped: memory appearing and vanishing
/// next to memory a device mirrors. `MAP_FIXED_NOREPLACE`: it never maps over anything.
/// Use a range far from where `mmap(NULL)` allocates (a private fixed VA): the kernel hands
/// out the highest free gap that fits, so a hole near the others is soon someone's.
pub struct Churn {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<(u64, u64)>>,
}

impl Churn {
    /// Starts the thread.
    pub fn start(addr: u64, len: usize) -> Churn {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let (mut cycles, mut busy) = (0u64, 0u64);
            while !s.load(Ordering::Relaxed) {
                // SAFETY: maps only where nothing is mapped; unmaps only what it mapped.
                unsafe {
                    let p = libc::mmap(
                        addr as *mut libc::c_void,
                        len,
                        libc::PROT_READ | libc::PROT_WRITE,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                        -1,
                        0,
                    );
                    if p == libc::MAP_FAILED {
                        busy += 1;
                        std::thread::yield_now();
                        continue;
                    }
                    if p as u64 != addr {
                        // A kernel without MAP_FIXED_NOREPLACE took it as a hint.
                        libc::munmap(p, len);
                        busy += 1;
                        continue;
                    }
                    std::ptr::write_bytes(p.cast::<u8>(), 1, len);
                    libc::munmap(p, len);
                }
                cycles += 1;
            }
            (cycles, busy)
        });
        Churn { stop, thread: Some(thread) }
    }

    /// Stops the thread; returns (cycles done, attempts that found the range taken).
    pub fn finish(mut self) -> (u64, u64) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take().map_or((0, 0), |t| t.join().unwrap_or((0, 0)))
    }
}

impl Drop for Churn {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn churn_maps_and_unmaps_next_to_a_mapping() {
        let whole = Mapping::anon_at(CHURN_TEST_VA, 8 * PAGE).unwrap();
        let (a, _) = whole.leak();
        let b = a + 2 * PAGE as u64;
        // SAFETY: the tail of the mapping just leaked.
        assert_eq!(unsafe { libc::munmap(b as *mut libc::c_void, 6 * PAGE) }, 0);
        // SAFETY: the head of it.
        let am = unsafe { Mapping::from_raw(a, 2 * PAGE) };
        let c = Churn::start(b, 6 * PAGE);
        std::thread::sleep(std::time::Duration::from_millis(100));
        am.fill(0, am.len(), 3);
        let (cycles, taken) = c.finish();
        assert!(cycles > 0, "{taken} attempts found B taken");
        // Gone again: B is free.
        let again = Mapping::new(b, 6 * PAGE, libc::PROT_READ, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE, -1, 0);
        assert_eq!(again.map(|m| m.addr()).ok(), Some(b));
    }

    #[test]
    fn mapping_read_write_and_pattern() {
        let m = Mapping::anon(4 * PAGE).unwrap();
        assert_eq!(m.addr() % PAGE as u64, 0);
        assert_eq!(m.pages(), 4);
        let mut e = Expect::zeros(m.len());
        assert_eq!(e.mismatch(&m), None);
        m.write_pattern(PAGE, PAGE, 9);
        e.set_pattern(PAGE, PAGE, 9);
        m.fill(3 * PAGE, 10, 0xee);
        e.set_fill(3 * PAGE, 10, 0xee);
        assert_eq!(e.mismatch(&m), None);
        assert_eq!(m.cpu_hash(PAGE, PAGE), e.hash(PAGE, PAGE));
        m.write_u64(2 * PAGE, 77);
        assert_eq!(m.read_u64(2 * PAGE), 77);
        let d = e.mismatch(&m).unwrap();
        assert!(
            d.starts_with("byte 0x2000 (page 2): got 0x4d, want 0x00; 1 bytes differ"),
            "{d}"
        );
    }

    #[test]
    fn expect_copy() {
        let mut e = Expect::pattern(3 * PAGE, 1);
        e.copy(2 * PAGE, 0, PAGE);
        assert_eq!(e.bytes[2 * PAGE..], reference::pattern(1, PAGE)[..]);
    }

    #[test]
    fn aligned_mapping() {
        let m = Mapping::anon_aligned(HPAGE, HPAGE).unwrap();
        assert_eq!(m.addr() % HPAGE as u64, 0);
        assert_eq!(m.len(), HPAGE);
        m.write_pattern(HPAGE - PAGE, PAGE, 3);
        assert_eq!(m.read(HPAGE - PAGE, 1)[0], reference::pattern_byte(3, 0));
    }

    /// A fixed address no other thread of the test process is handed: mmap(NULL) allocates
    /// top-down from below the stack (~128 TiB), far above this (32 TiB), so a range freed
    /// here stays free until this test maps it again. (Reusing the address that mremap
    /// vacated is racy: another test thread's mmap can take it in between; seen: EEXIST.)
    const PRIVATE_VA: u64 = 0x2000_0000_0000;

    #[test]
    fn anon_at_and_mremap() {
        let m = Mapping::anon(2 * PAGE).unwrap();
        m.write_pattern(0, 2 * PAGE, 5);
        let (old, len) = (m.addr(), m.len());
        let dst = Mapping::anon_at(PRIVATE_VA, len).unwrap();
        assert_eq!(dst.addr(), PRIVATE_VA);
        let new = mremap(
            old,
            len,
            len,
            libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
            dst.addr(),
        )
        .unwrap();
        assert_eq!(new, PRIVATE_VA);
        let _ = dst.leak();
        let _ = m.leak();
        // SAFETY: mremap moved the mapping there.
        let moved = unsafe { Mapping::from_raw(new, len) };
        assert_eq!(Expect::pattern(len, 5).mismatch(&moved), None);
        // The range is taken: MAP_FIXED_NOREPLACE refuses it.
        assert_eq!(
            Mapping::anon_at(PRIVATE_VA, len).unwrap_err().raw_os_error(),
            Some(libc::EEXIST)
        );
        drop(moved);
        // Free again: a new mapping there is fresh, zeroed memory.
        let again = Mapping::anon_at(PRIVATE_VA, len).unwrap();
        assert_eq!(again.addr(), PRIVATE_VA);
        assert_eq!(again.touch_read(), 0);
    }
}
