//! Userptr contracts beyond coherence: what the header promises about revalidation.

use vgpu::reference::fnv1a64;
use vgpu::Job;

use crate::coherence::{CaseResult, Cx, Region, Step, USERPTR_VA_BASE};
use crate::mem::{Expect, Mapping, HPAGE, PAGE};
use crate::sysutil::smaps_kb;

/// Semantic B, revalidated at submit (uapi/vgpu_svm_drm.h, USERPTR_CREATE: "every submit
/// that uses it revalidates what changed since it was last mirrored"): after part of the
/// object's range is zapped (MADV_DONTNEED) and written by the CPU, the next job sees the
/// new data without taking a device fault, because SUBMIT re-mirrored exactly what the
/// invalidation marked; and a job after nothing changed takes none either. A driver that
/// forgets to mark invalidated pages still gets the data right, through one device fault
/// per page, which is what the fault counts catch.
pub fn userptr_revalidate(cx: &mut Cx) -> CaseResult {
    const N: usize = 16;
    let len = N * PAGE;
    let g = cx.gpu()?;
    let m = Mapping::anon(len)?;
    m.madvise(0, len, libc::MADV_NOHUGEPAGE).step("MADV_NOHUGEPAGE")?;
    m.fill(0, len, 0x11);
    let r = g.map(&m)?;
    let hash = |cx: &mut Cx, what: &str| -> Option<vgpu::JobResult> {
        let res = g.submit(&[&r], Job::new().hash(r.va(0), len as u64));
        cx.check_ok(what, res)
    };
    let first = hash(cx, "first job over the object");
    cx.check_eq("the first job sees the CPU's bytes", first.map(|j| j.result), Some(fnv1a64(&m.read(0, len))));
    let again = hash(cx, "a job after nothing changed");
    cx.check_eq("a job after nothing changed takes no device fault", again.map(|j| j.faults), Some(0));
    m.madvise(4 * PAGE, 4 * PAGE, libc::MADV_DONTNEED).step("MADV_DONTNEED")?;
    m.fill(4 * PAGE, 4 * PAGE, 0x22);
    let after = hash(cx, "a job after MADV_DONTNEED and CPU writes");
    cx.check_eq("it sees the CPU's new bytes", after.map(|j| j.result), Some(fnv1a64(&m.read(0, len))));
    cx.check_eq(
        "it takes no device fault: SUBMIT re-mirrored the invalidated pages",
        after.map(|j| j.faults),
        Some(0),
    );
    Ok(())
}

/// A userptr object over a THP, bound at a GPU VA whose offset inside its 2 MiB block differs
/// from the CPU VA's: the GPU and CPU 2 MiB blocks do not line up, so no 2 MiB entry can map
/// the object (it would map the wrong 2 MiB of memory) and the driver must use 4 KiB entries.
/// The device's hash and writes must match the CPU's view at every offset. (The suite's
/// other userptr bindings keep the CPU's offset, so that 2 MiB entries are possible: a driver
/// that forgot the offset check passed all of them; mutant large-leaf-misaligned.)
pub fn userptr_misaligned_thp(cx: &mut Cx) -> CaseResult {
    let len = 2 * HPAGE;
    let g = cx.gpu()?;
    let m = Mapping::anon_aligned(len, HPAGE)?;
    m.madvise(0, len, libc::MADV_HUGEPAGE).step("MADV_HUGEPAGE")?;
    m.write_pattern(0, len, 5);
    let thp = smaps_kb(m.addr(), "AnonHugePages").unwrap_or(0);
    if thp == 0 {
        return cx.skip("no THP backs the buffer (transparent hugepages off?)");
    }
    cx.note(format!("{thp} KiB of THP"));
    let bo = g.ctx().userptr_raw(m.addr() as *const u8, len, false).step("USERPTR_CREATE")?;
    // 2 MiB aligned plus 3 pages: the CPU VA is 2 MiB aligned.
    let gpu = USERPTR_VA_BASE + 64 * HPAGE as u64 + 3 * PAGE as u64;
    bo.bind(gpu).step("BIND")?;
    let r = Region { cpu: m.addr(), len, gpu, bo: Some(bo) };
    let mut want = Expect::pattern(len, 5);
    cx.check_hash("the device hashes the object as the CPU sees it", &g, &r, 0, len, &want);
    cx.check_hash("and its second 2 MiB, from the middle of a GPU block", &g, &r, HPAGE, HPAGE, &want);
    cx.check_ok("a device write across the object", g.write_pattern(&r, PAGE, len - 2 * PAGE, 6));
    want.set_pattern(PAGE, len - 2 * PAGE, 6);
    cx.check_mem("the CPU sees the device's write at the right offsets", &m, &want);
    Ok(())
}

/// A small userptr object inside a THP, bound at the CPU's 2 MiB offset (so a 2 MiB entry
/// would map the object's frames right): the object's notifier watches only its own range,
/// so the driver may not map the rest of the 2 MiB block. A job of the (non-SVM) context
/// that touches the GPU VA just past the object, or just before it, must fail with EFAULT
/// (it is outside every binding); a 2 MiB leaf would let it read memory no notifier
/// protects (mutant large-leaf-beyond-notifier passed every other check).
pub fn userptr_small_in_thp(cx: &mut Cx) -> CaseResult {
    const OBJ: usize = 16 * PAGE;
    const AT: usize = 4 * PAGE;
    let g = cx.gpu()?;
    let m = Mapping::anon_aligned(HPAGE, HPAGE)?;
    m.madvise(0, HPAGE, libc::MADV_HUGEPAGE).step("MADV_HUGEPAGE")?;
    m.write_pattern(0, HPAGE, 8);
    if smaps_kb(m.addr(), "AnonHugePages").unwrap_or(0) == 0 {
        return cx.skip("no THP backs the buffer (transparent hugepages off?)");
    }
    let bo = g.ctx().userptr_raw((m.addr() + AT as u64) as *const u8, OBJ, false).step("USERPTR_CREATE")?;
    let gpu = USERPTR_VA_BASE + 128 * HPAGE as u64 + AT as u64;
    bo.bind(gpu).step("BIND")?;
    let r = Region { cpu: m.addr() + AT as u64, len: OBJ, gpu, bo: Some(bo) };
    let mut want = Expect::zeros(OBJ);
    want.bytes.copy_from_slice(&m.read(AT, OBJ));
    cx.check_hash("the device hashes the object as the CPU sees it", &g, &r, 0, OBJ, &want);
    let past = g.submit(&[&r], Job::new().read(gpu + OBJ as u64, PAGE as u64));
    cx.check_errno("a job reading the page just past the object fails", past.map(|_| ()), &[libc::EFAULT]);
    let before = g.submit(&[&r], Job::new().read(gpu - PAGE as u64, PAGE as u64));
    cx.check_errno("a job reading the page just before the object fails", before.map(|_| ()), &[libc::EFAULT]);
    Ok(())
}

/// Another file's object (the same process, so every per-process check passes): a GEM name
/// (`GEM_FLINK` on the primary node) lets file 2 open file 1's userptr object, but it stays
/// file 1's: BIND and SUBMIT of it in file 2's context fail with `EINVAL` (uapi header:
/// "a handle of an object that is not bound" to this context), nothing is written, and file 1
/// still uses it. A driver that validated a foreign object would mirror it under the other
/// context's notifier and lock, not the job's (mutant submit-accepts-foreign-object passed
/// every other check: no case had a foreign handle).
pub fn foreign_object(cx: &mut Cx) -> CaseResult {
    const LEN: usize = 4 * PAGE;
    let svm = cx.mode == crate::coherence::Mode::Svm;
    let render = vgpu::Device::open_default().step("open render node")?;
    let card = match render.primary_node() {
        Ok(p) => p,
        Err(e) => return cx.skip(format!("no primary node for GEM names: {e}")),
    };
    let open = |what: &str| -> Result<vgpu::Context, crate::coherence::Stop> {
        let c = vgpu::Context::open(&card).step(what)?;
        c.config(svm).step("CTX_CONFIG")?;
        Ok(c)
    };
    let (c1, c2) = (open("open primary node (file 1)")?, open("open primary node (file 2)")?);
    let m = Mapping::anon(LEN)?;
    m.fill(0, LEN, 0x5a);
    let bo = c1.userptr_raw(m.addr() as *const u8, LEN, false).step("USERPTR_CREATE (file 1)")?;
    let gpu = USERPTR_VA_BASE + 192 * HPAGE as u64;
    bo.bind(gpu).step("BIND (file 1)")?;
    let name = c1.gem_flink(bo.handle()).step("GEM_FLINK")?;
    let (h2, size) = c2.gem_open(name).step("GEM_OPEN (file 2)")?;
    cx.check_eq("GEM_OPEN gives the object's size", size, LEN as u64);
    cx.check_errno("BIND of the foreign object in file 2", c2.bind_handle(h2, gpu + HPAGE as u64), &[libc::EINVAL]);
    let job = Job::new().write_pattern(gpu, LEN as u64, 7).uses_handle(h2);
    // SAFETY: the job may write only the mapping `m`, which nothing borrows.
    let r = unsafe { c2.submit(&job) };
    cx.check_errno("SUBMIT with the foreign object's handle in file 2", r.map(|_| ()), &[libc::EINVAL]);
    let mut untouched = Expect::zeros(LEN);
    untouched.bytes.fill(0x5a);
    cx.check_mem("nothing was written", &m, &untouched);
    let job = Job::new().write_pattern(gpu, LEN as u64, 7).uses(&bo);
    // SAFETY: as above.
    let r = unsafe { c1.submit(&job) };
    cx.check_ok("file 1 still uses its object", r);
    cx.check_mem("the CPU sees file 1's write", &m, &Expect::pattern(LEN, 7));
    Ok(())
}
