//! Userptr contracts beyond coherence: what the header promises about revalidation.

use vgpu::reference::fnv1a64;
use vgpu::Job;

use crate::coherence::{CaseResult, Cx, Step};
use crate::mem::{Mapping, PAGE};

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
