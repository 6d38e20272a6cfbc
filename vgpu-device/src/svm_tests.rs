//! In-process tests of the VGPU_SVM protocol: a [`Device`] over synthetic
//! guest memory with GPU and CPU page tables built in it, driven through
//! `handle_control` (which waits for deferred answers).

use vgpu_uapi::{VGPU_SVM_ACCESS_READ, VGPU_SVM_ACCESS_WRITE, VGPU_SVM_CAPSET_ID};
use vm_memory::{Bytes, GuestAddress, GuestMemoryAtomic, GuestMemoryMmap};

use crate::checker::x86::tests::CpuBuilder;
use crate::checker::x86::Levels;
use crate::context::{CheckerMode, EngineConfig};
use crate::device::{Device, DeviceConfig};
use crate::layout::gpu::{DIRTY, VALID, WRITE};
use crate::mem::testmem::{get, put};
use crate::mmu::tests::Builder;
use crate::protocol::{self, build::*, fnv, pattern_byte, ErrorCode, OpKind, Status, SvmResp};
use crate::virtio_gpu::{build as vg, ty, CtrlHdr, CTRL_HDR_SIZE};

const MB: u64 = 1 << 20;
const GPU_PT: u64 = 0x10_0000;
const CPU_PT: u64 = 0x80_0000;
const DATA: u64 = 0x100_0000; // 16 MiB: data frames from here
const MEM: usize = 64 << 20;
const CTX: u32 = 1;
const BIG: usize = 4096;

struct Rig {
    dev: Device,
    mem: GuestMemoryMmap,
}

impl Rig {
    fn new(checker: CheckerMode) -> Self {
        Self::with(EngineConfig {
            checker,
            ..EngineConfig::default()
        })
    }

    fn with(engine: EngineConfig) -> Self {
        let mem = crate::mem::testmem::new(MEM);
        let mut dev = Device::new(DeviceConfig {
            max_contexts: 4,
            engine,
        });
        dev.set_memory(GuestMemoryAtomic::new(mem.clone()));
        let r = dev.handle_control(&vg::ctx_create(CTX, VGPU_SVM_CAPSET_ID, "t"), BIG);
        assert_eq!(CtrlHdr::parse(&r).unwrap().type_, ty::RESP_OK_NODATA);
        Self { dev, mem }
    }

    fn cmd(&mut self, cmd: &[u8]) -> SvmResp {
        let r = self.dev.handle_control(&vg::submit_3d(CTX, cmd), BIG);
        let h = CtrlHdr::parse(&r).unwrap();
        assert_eq!(
            h.type_,
            ty::RESP_OK_NODATA,
            "{}",
            protocol::cmd_name(cmd[0] as u32)
        );
        assert_eq!(r.len(), CTRL_HDR_SIZE + protocol::RESP_SIZE);
        SvmResp::decode(&r[CTRL_HDR_SIZE..]).unwrap()
    }

    fn ok(&mut self, cmd: &[u8]) -> SvmResp {
        let r = self.cmd(cmd);
        assert_eq!(r.status, Status::Ok, "{r:?}");
        r
    }

    fn err(&mut self, cmd: &[u8]) -> ErrorCode {
        let r = self.cmd(cmd);
        assert_eq!(r.status, Status::Error, "{r:?}");
        r.error.unwrap()
    }

    fn set_as(&mut self) {
        self.ok(&set_as(GPU_PT, CPU_PT, 4));
    }

    fn write(&self, pa: u64, b: &[u8]) {
        self.mem.write_slice(b, GuestAddress(pa)).unwrap();
    }

    fn read(&self, pa: u64, n: usize) -> Vec<u8> {
        let mut v = vec![0; n];
        self.mem.read_slice(&mut v, GuestAddress(pa)).unwrap();
        v
    }

    fn stats(&mut self) -> protocol::WireStats {
        self.ok(&stats()).stats
    }
}

/// Page tables shared by both sides: GPU VA == CPU VA -> same frame.
struct Tables<'a> {
    gpu: Builder<'a>,
    cpu: CpuBuilder<'a>,
}

impl<'a> Tables<'a> {
    fn new(mem: &'a GuestMemoryMmap) -> Self {
        Self {
            gpu: Builder::new(mem, GPU_PT),
            cpu: CpuBuilder::new(mem, Levels::Four, CPU_PT),
        }
    }

    /// More mappings into the same tables (new tables from a fresh area).
    fn again(mem: &'a GuestMemoryMmap, n: u64) -> Self {
        Self {
            gpu: Builder::at(mem, GPU_PT, GPU_PT + n * 0x10_0000 / 4),
            cpu: CpuBuilder::at(mem, Levels::Four, CPU_PT, CPU_PT + n * 0x10_0000 / 4),
        }
    }

    fn map_4k(&mut self, va: u64, frame: u64, write: bool) -> u64 {
        self.cpu.map_4k(va, frame, write);
        self.gpu.map_4k(va, frame, write)
    }

    fn map_2m(&mut self, va: u64, frame: u64) -> u64 {
        for i in 0..512 {
            self.cpu.map_4k(va + i * 4096, frame + i * 4096, true);
        }
        self.gpu.map_2m(va, frame, true)
    }
}

fn rand_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn copy_through_4k_and_2m_pages_and_dirty_bits() {
    let mut r = Rig::new(CheckerMode::Strict);
    let src_va = 0x7f00_0000_0000u64;
    let dst_va = 0x7f00_4000_0000u64; // 2 MiB aligned
    let mut t = Tables::new(&r.mem);
    // Source: 4 KiB pages at scattered frames (reverse order).
    let mut src_ptes = Vec::new();
    for i in 0..16u64 {
        src_ptes.push(t.map_4k(src_va + i * 4096, DATA + (15 - i) * 4096, false));
    }
    let dst_pte = t.map_2m(dst_va, DATA + 2 * MB);
    let _ = t;
    let data = rand_bytes(16 * 4096, 7);
    for i in 0..16u64 {
        r.write(DATA + (15 - i) * 4096, &data[(i * 4096) as usize..][..4096]);
    }
    r.set_as();
    // An unaligned copy crossing pages on both sides.
    let resp = r.ok(&job(
        1,
        &[
            op(OpKind::Copy, dst_va + 100, src_va + 3, 60_000, 0),
            op(OpKind::Hash, 0, dst_va + 100, 60_000, 0),
        ],
    ));
    assert_eq!(resp.job_id, 1);
    assert_eq!(resp.result, fnv::hash(&data[3..60_003]));
    assert_eq!(r.read(DATA + 2 * MB + 100, 60_000), &data[3..60_003]);
    assert_eq!(r.read(DATA + 2 * MB, 100), vec![0; 100]);
    // DIRTY set in the written 2 MiB leaf only.
    assert_ne!(get(&r.mem, dst_pte) & DIRTY, 0);
    assert!(src_ptes.iter().all(|&a| get(&r.mem, a) & DIRTY == 0));
    let s = r.stats();
    assert_eq!(s.jobs, 1);
    assert_eq!(s.violations, 0);
    assert!(s.accesses_checked >= 2 * 15);
    assert_eq!(s.bytes, 120_000);
    assert!(s.tlb_misses >= 1 && s.tlb_hits > 0);
}

#[test]
fn fill_pattern_atomic_read() {
    let mut r = Rig::new(CheckerMode::Strict);
    let va = 0x4000_0000u64;
    let mut t = Tables::new(&r.mem);
    for i in 0..4 {
        t.map_4k(va + i * 4096, DATA + i * 4096, true);
    }
    let _ = t;
    put(&r.mem, DATA + 0x3008, 40);
    r.set_as();
    let resp = r.ok(&job(
        9,
        &[
            op(OpKind::Fill, va + 10, 0, 5000, 0x1ab),
            op(OpKind::WritePattern, va + 0x2000, 0, 100, 77),
            op(OpKind::AtomicAdd, va + 0x3008, 0, 0, 2),
            op(OpKind::Read, 0, va, 0x4000, 0),
        ],
    ));
    assert_eq!(resp.result, 40);
    assert_eq!(get(&r.mem, DATA + 0x3008), 42);
    assert_eq!(r.read(DATA + 10, 5000), vec![0xab; 5000]);
    assert_eq!(r.read(DATA + 9, 1), vec![0]);
    let pat: Vec<u8> = (0..100).map(|i| pattern_byte(77, i)).collect();
    assert_eq!(r.read(DATA + 0x2000, 100), pat);
    assert_eq!(r.stats().violations, 0);
}

#[test]
fn fault_resume_abort() {
    let mut r = Rig::new(CheckerMode::Strict);
    let va = 0x10_0000_0000u64;
    let mut t = Tables::new(&r.mem);
    t.map_4k(va, DATA, true);
    // Second page: present for the CPU, not yet for the GPU.
    t.cpu.map_4k(va + 4096, DATA + 4096, true);
    // Third page: read-only for the GPU (and the CPU allows writes).
    t.cpu.map_4k(va + 8192, DATA + 8192, true);
    let ro = t.gpu.map_4k(va + 8192, DATA + 8192, false);
    let _ = t;
    r.set_as();
    let pattern = op(OpKind::WritePattern, va + 16, 0, 3 * 4096 - 16, 5);
    let f = r.cmd(&job(3, &[op(OpKind::Fill, va, 0, 16, 1), pattern]));
    assert_eq!(f.status, Status::Fault);
    assert_eq!(f.job_id, 3);
    assert_eq!(
        (
            f.fault.va,
            f.fault.access,
            f.fault.op_index,
            f.fault.progress
        ),
        (va + 4096, VGPU_SVM_ACCESS_WRITE, 1, 4096 - 16)
    );
    // Same job id while it is faulted: BUSY. RESUME of another: UNKNOWN_JOB.
    assert_eq!(
        r.err(&job(3, &[op(OpKind::Read, 0, va, 1, 0)])),
        ErrorCode::Busy
    );
    assert_eq!(r.err(&resume(4)), ErrorCode::UnknownJob);
    // RESUME without fixing anything: the same fault again.
    let f2 = r.cmd(&resume(3));
    assert_eq!((f2.status, f2.fault), (Status::Fault, f.fault));
    // Map page 2: the job runs on and faults on the read-only page 3.
    let mut t = Tables::again(&r.mem, 1);
    t.gpu.map_4k(va + 4096, DATA + 4096, true);
    let _ = t;
    let f3 = r.cmd(&resume(3));
    assert_eq!(f3.status, Status::Fault);
    assert_eq!(
        (f3.fault.va, f3.fault.access, f3.fault.progress),
        (va + 8192, VGPU_SVM_ACCESS_WRITE, 2 * 4096 - 16)
    );
    // Upgrade the entry (no INVALIDATE: a stale read-only TLB entry must
    // not keep the job faulting).
    put(&r.mem, ro, (DATA + 8192) | VALID | WRITE);
    let done = r.ok(&resume(3));
    assert_eq!(done.job_id, 3);
    let pat: Vec<u8> = (0..3 * 4096 - 16).map(|i| pattern_byte(5, i)).collect();
    assert_eq!(r.read(DATA + 16, 3 * 4096 - 16), pat);
    assert_eq!(r.read(DATA, 16), vec![1; 16]);
    // RESUME of a completed job.
    assert_eq!(r.err(&resume(3)), ErrorCode::UnknownJob);

    // ABORT: a read fault on an unmapped page, then abort.
    let f = r.cmd(&job(4, &[op(OpKind::Hash, 0, 0x20_0000_0000, 8, 0)]));
    assert_eq!(
        (f.status, f.fault.access, f.fault.va),
        (Status::Fault, VGPU_SVM_ACCESS_READ, 0x20_0000_0000)
    );
    let a = r.cmd(&abort(4));
    assert_eq!(
        (a.status, a.error, a.job_id),
        (Status::Error, Some(ErrorCode::Aborted), 4)
    );
    assert_eq!(r.err(&abort(4)), ErrorCode::UnknownJob);
    assert_eq!(r.err(&resume(4)), ErrorCode::UnknownJob);
    let s = r.stats();
    assert_eq!((s.faults, s.jobs, s.violations), (4, 1, 0));
    let snap = r.dev.counters().snapshot();
    assert_eq!(snap.jobs_aborted, 1);
}

#[test]
fn each_violation_kind_fires() {
    let mut r = Rig::new(CheckerMode::Strict);
    let va = 0x7000_0000_0000u64;
    let mut t = Tables::new(&r.mem);
    // 0: no CPU page behind the GPU entry.
    t.gpu.map_4k(va, DATA, true);
    // 1: the CPU maps a different frame (stale GPU entry after a COW).
    t.gpu.map_4k(va + 0x1000, DATA + 0x1000, true);
    t.cpu.map_4k(va + 0x1000, DATA + 0x9000, true);
    // 2: a write through a read-only CPU entry (COW-shared page).
    t.gpu.map_4k(va + 0x2000, DATA + 0x2000, true);
    t.cpu.map_4k(va + 0x2000, DATA + 0x2000, false);
    let _ = t;
    r.set_as();
    r.ok(&job(1, &[op(OpKind::Read, 0, va, 8, 0)]));
    let s = r.stats();
    assert_eq!((s.violations, s.violations_no_page), (1, 1));
    r.ok(&job(2, &[op(OpKind::Read, 0, va + 0x1000, 8, 0)]));
    let s = r.stats();
    assert_eq!((s.violations, s.violations_frame), (2, 1));
    // Reading the read-only page is fine; writing it is not.
    r.ok(&job(3, &[op(OpKind::Read, 0, va + 0x2000, 8, 0)]));
    assert_eq!(r.stats().violations, 2);
    r.ok(&job(4, &[op(OpKind::Fill, va + 0x2000, 0, 8, 0)]));
    let s = r.stats();
    assert_eq!((s.violations, s.violations_write), (3, 1));
    let snap = r.dev.counters().snapshot();
    let v = &snap.violations_recent[2];
    assert_eq!(
        (v.ctx, v.job, v.gpu_va, v.gpu_phys),
        (CTX, 4, va + 0x2000, DATA + 0x2000)
    );
    // The stats document carries them.
    let j = serde_json::to_value(r.dev.stats_doc()).unwrap();
    assert_eq!(j["svm"]["violations"], 3);
    assert_eq!(j["svm"]["violations_frame"], 1);
    assert_eq!(j["svm"]["violations_recent"].as_array().unwrap().len(), 3);
}

/// A CPU page-table change with no INVALIDATE at all for its VA: the
/// violation's record (the device's log line and `violations_recent`) says
/// that none of the context's last INVALIDATEs covered the VA, and names
/// the change ("CPU PTE cleared").
#[test]
fn violation_without_a_covering_invalidate_says_so() {
    let mut r = Rig::new(CheckerMode::Strict);
    let va = 0x7000_0000_0000u64;
    let mut t = Tables::new(&r.mem);
    t.gpu.map_4k(va, DATA, true);
    let pte = t.cpu.map_4k(va, DATA, true);
    let _ = t;
    r.set_as();
    r.ok(&job(1, &[op(OpKind::Read, 0, va, 8, 0)]));
    assert_eq!(r.stats().violations, 0);
    // 70 INVALIDATEs elsewhere (more than the ring holds), with reasons.
    for i in 0..70u64 {
        r.ok(&invalidate_for(
            va + (1 + i) * 0x1000,
            0x1000,
            protocol::InvalReason::Clear,
        ));
    }
    // The CPU PTE goes (a zap) and the device is not told.
    put(&r.mem, pte, 0);
    r.ok(&job(2, &[op(OpKind::Read, 0, va, 8, 0)]));
    assert_eq!(r.stats().violations_no_page, 1);
    let snap = r.dev.counters().snapshot();
    let v = &snap.violations_recent[0];
    let h = v
        .invalidations
        .as_ref()
        .expect("the context's history is attached");
    assert_eq!((h.invalidations, h.searched), (70, 64));
    assert!(h.covering.is_empty());
    let line = v.to_string();
    assert!(!line.contains('\n'), "{line}");
    assert!(
        line.contains("hint: CPU PTE cleared (unmap/zap/reap) without a notifier"),
        "{line}"
    );
    assert!(
        line.ends_with("; no INVALIDATE covered this va in the last 64 of 70"),
        "{line}"
    );
    let j = serde_json::to_value(r.dev.stats_doc()).unwrap();
    let jv = &j["svm"]["violations_recent"][0];
    assert_eq!(jv["invalidations"]["invalidations"], 70);
    assert_eq!(jv["invalidations"]["covering"].as_array().unwrap().len(), 0);
    assert!(jv["hint"].as_str().unwrap().starts_with("CPU PTE cleared"));
}

/// INVALIDATEs with reasons (protocol 0.5), one of them covering the VA
/// and one (CLEAR) of another range, then a CPU page replaced without a
/// notifier: the record lists only the covering one, with its reason, and
/// the hint names a page replacement. A 0.4 INVALIDATE (flags 0) is
/// recorded as `unknown`.
#[test]
fn violation_names_only_the_covering_invalidates() {
    use protocol::InvalReason;
    let mut r = Rig::new(CheckerMode::Strict);
    let va = 0x7000_0000_0000u64;
    let mem = r.mem.clone();
    let mut t = Tables::new(&mem);
    t.gpu.map_4k(va, DATA, true);
    t.cpu.map_4k(va, DATA, true);
    r.set_as();
    r.ok(&invalidate_for(va, 0x1000, InvalReason::Migrate)); // #1: covers
    r.ok(&invalidate_for(va + 0x1000, 0x1000, InvalReason::Clear)); // #2: another range
    r.ok(&invalidate(va - 0x10_0000, 0x20_0000)); // #3: 0.4 form, covers
    r.ok(&invalidate_for(va + 0x2000, 0x3000, InvalReason::Clear)); // #4: another range
                                                                    // The CPU now maps another frame (a COW, say) and nobody told the device.
    t.cpu.map_4k(va, DATA + 0x5000, true);
    let _ = t;
    r.ok(&job(1, &[op(OpKind::Fill, va, 0, 8, 1)]));
    assert_eq!(r.stats().violations_frame, 1);
    let snap = r.dev.counters().snapshot();
    let v = &snap.violations_recent[0];
    let h = v.invalidations.as_ref().unwrap();
    assert_eq!((h.invalidations, h.searched), (4, 4));
    assert_eq!(
        h.covering
            .iter()
            .map(|c| (c.seq, c.reason, c.start, c.end))
            .collect::<Vec<_>>(),
        [
            (3, InvalReason::Unknown, va - 0x10_0000, va + 0x10_0000),
            (1, InvalReason::Migrate, va, va + 0x1000),
        ]
    );
    let line = v.to_string();
    assert!(!line.contains('\n'), "{line}");
    assert!(
        line.contains("hint: CPU maps another frame: page replaced"),
        "{line}"
    );
    assert!(
        line.contains("last INVALIDATEs covering this va (of 4): #3 unknown ["),
        "{line}"
    );
    assert!(
        line.contains(", #1 migrate [0x700000000000, 0x700000001000) "),
        "{line}"
    );
    assert!(!line.contains("clear"), "{line}");
    let j = serde_json::to_value(r.dev.stats_doc()).unwrap();
    let c = &j["svm"]["violations_recent"][0]["invalidations"]["covering"];
    assert_eq!(c[1]["reason"], "migrate");
    assert_eq!(c[1]["seq"], 1);
    assert_eq!(c.as_array().unwrap().len(), 2);
}

/// Bad INVALIDATE flags (no reason, extra bits) are refused as MALFORMED
/// and leave no trace in the history.
#[test]
fn invalidate_with_bad_flags_is_malformed() {
    let mut r = Rig::new(CheckerMode::Strict);
    r.set_as();
    for bad in [9u32, 0x13, 0x102, 1 << 31] {
        let mut c = invalidate(0x1000, 0x1000);
        c[4..8].copy_from_slice(&bad.to_le_bytes());
        assert_eq!(r.err(&c), ErrorCode::Malformed, "{bad:#x}");
    }
    r.ok(&invalidate_for(
        0x1000,
        0x1000,
        protocol::InvalReason::Split,
    ));
    assert_eq!(r.stats().invalidations, 1);
}

/// The guest kernel's direct map (SET_AS direct_map_base, protocol 0.4):
/// RAM mapped with 2 MiB leaves at `base` in the same CPU root as the user
/// half (its tables from a fresh area).
fn direct_map(mem: &GuestMemoryMmap, base: u64) -> CpuBuilder<'_> {
    let mut dm = Tables::again(mem, 20).cpu;
    dm.map_direct_map(base, MEM as u64, false);
    dm
}

/// A frame the guest kernel removed from its direct map (what memfd_secret
/// does, splitting the 2 MiB leaf) is a `violations_no_direct_map` violation
/// even though the user mapping agrees with the GPU's; the frames around it
/// (same split region, or a 2 MiB GPU leaf over it) are fine; the check
/// runs only with a direct-map base (not for a SET_AS of protocol 0.3, nor
/// with a base of 0).
#[test]
fn frames_outside_the_direct_map_are_violations() {
    use crate::checker::x86::tests::DIRECT_MAP_4;
    let mut r = Rig::new(CheckerMode::Strict);
    let va = 0x7000_0000_0000u64;
    let va2 = 0x7000_0040_0000u64; // 2 MiB aligned
    let big = DATA + 4 * MB; // 2 MiB aligned frame
    let mut t = Tables::new(&r.mem);
    t.map_4k(va, DATA, true);
    t.map_4k(va + 0x1000, DATA + 0x1000, true);
    t.map_2m(va2, big);
    let _ = t;
    let mem = r.mem.clone();
    let mut dm = direct_map(&mem, DIRECT_MAP_4);
    r.ok(&set_as_with_direct_map(GPU_PT, CPU_PT, 4, DIRECT_MAP_4));
    r.ok(&job(1, &[op(OpKind::Read, 0, va, 8192, 0)]));
    r.ok(&job(2, &[op(OpKind::Read, 0, va2, 2 * MB, 0)]));
    let s = r.stats();
    assert_eq!(
        (s.accesses_checked, s.violations, s.cpu_walk_errors),
        (514, 0, 0)
    );

    // memfd_secret: the second page's frame leaves the direct map.
    dm.remove_from_direct_map(DIRECT_MAP_4, DATA + 0x1000);
    r.ok(&job(3, &[op(OpKind::Read, 0, va, 8192, 0)]));
    let s = r.stats();
    assert_eq!((s.violations, s.violations_no_direct_map), (1, 1));
    assert_eq!(
        (s.violations_no_page, s.violations_frame, s.violations_write),
        (0, 0, 0)
    );
    // One frame inside a 2 MiB GPU leaf: exactly one of its 512 pages, by
    // a read and by a write (FILL).
    dm.remove_from_direct_map(DIRECT_MAP_4, big + 0x5000);
    r.ok(&job(4, &[op(OpKind::Read, 0, va2, 2 * MB, 0)]));
    assert_eq!(r.stats().violations_no_direct_map, 2);
    r.ok(&job(5, &[op(OpKind::Fill, va2 + 0x4000, 0, 0x3000, 0x5a)]));
    let s = r.stats();
    assert_eq!((s.violations, s.violations_no_direct_map), (3, 3));
    // The last violation in full, and the counters at every level.
    let snap = r.dev.counters().snapshot();
    let v = snap.violations_recent.last().unwrap();
    assert_eq!(
        (v.ctx, v.job, v.gpu_va, v.gpu_phys, v.direct_map_va),
        (
            CTX,
            5,
            va2 + 0x5000,
            big + 0x5000,
            Some(DIRECT_MAP_4 + big + 0x5000)
        )
    );
    assert!(matches!(
        v.kind,
        crate::checker::ViolationKind::NoDirectMap(_)
    ));
    assert_eq!(stats_on(&mut r.dev, 0).violations_no_direct_map, 3);
    let j = serde_json::to_value(r.dev.stats_doc()).unwrap();
    assert_eq!(j["svm"]["violations"], 3);
    assert_eq!(j["svm"]["violations_no_direct_map"], 3);
    assert_eq!(
        j["svm_contexts"][CTX.to_string()]["violations_no_direct_map"],
        3
    );
    assert_eq!(
        j["svm"]["violations_recent"][2]["direct_map_va"],
        DIRECT_MAP_4 + big + 0x5000
    );

    // SET_AS of protocol 0.3 (32 bytes), or a base of 0: no direct-map check.
    for old in [
        set_as_v0_3(GPU_PT, CPU_PT, 4),
        set_as_with_direct_map(GPU_PT, CPU_PT, 4, 0),
    ] {
        r.ok(&old);
        r.ok(&job(6, &[op(OpKind::Read, 0, va, 8192, 0)]));
        r.ok(&job(7, &[op(OpKind::Fill, va2, 0, 2 * MB, 1)]));
        let s = r.stats();
        assert_eq!((s.violations, s.violations_no_direct_map), (3, 3));
    }
    // And on again.
    r.ok(&set_as_with_direct_map(GPU_PT, CPU_PT, 4, DIRECT_MAP_4));
    r.ok(&job(8, &[op(OpKind::Read, 0, va + 0x1000, 8, 0)]));
    assert_eq!(r.stats().violations_no_direct_map, 4);
}

/// Five levels: the direct map at the LA57 page_offset_base.
#[test]
fn direct_map_with_five_levels() {
    use crate::checker::x86::tests::DIRECT_MAP_5;
    let mut r = Rig::new(CheckerMode::Strict);
    let va = (5u64 << 48) | 0x1000;
    let mem = r.mem.clone();
    let mut cpu = CpuBuilder::new(&mem, Levels::Five, CPU_PT);
    cpu.map_4k(va, DATA, true);
    cpu.map_4k(va + 0x1000, DATA + 0x1000, true);
    cpu.map_direct_map(DIRECT_MAP_5, MEM as u64, false);
    cpu.remove_from_direct_map(DIRECT_MAP_5, DATA + 0x1000);
    let mut gpu = Builder::new(&mem, GPU_PT);
    // GPU VAs are 48 bits: bind them to the 57-bit CPU VAs.
    gpu.map_4k(0x1000, DATA, true);
    gpu.map_4k(0x2000, DATA + 0x1000, true);
    r.ok(&set_as_with_direct_map(GPU_PT, CPU_PT, 5, DIRECT_MAP_5));
    r.ok(&bind(0x1000, va, 0x2000));
    r.ok(&job(1, &[op(OpKind::Read, 0, 0x1000, 4096, 0)]));
    assert_eq!(r.stats().violations, 0);
    r.ok(&job(2, &[op(OpKind::Read, 0, 0x2000, 4096, 0)]));
    let s = r.stats();
    assert_eq!((s.violations, s.violations_no_direct_map), (1, 1));
}

/// Hostile direct-map bases: SET_AS accepts any page-aligned one; a base
/// whose sum with a frame wraps or is not canonical makes the check a CPU
/// walk error (the job runs on), never a violation, never a panic. A
/// misaligned base is refused.
#[test]
fn hostile_direct_map_bases_are_walk_errors() {
    let mut r = Rig::new(CheckerMode::Strict);
    let va = 0x7000_0000_0000u64;
    let mut t = Tables::new(&r.mem);
    t.map_4k(va, DATA, true);
    let _ = t;
    let _dm = direct_map(&r.mem, crate::checker::x86::tests::DIRECT_MAP_4);
    let mut errors = 0;
    for base in [
        !0xfffu64,             // wraps
        0xffff_ffff_ff00_0000, // wraps for a frame at 16 MiB
        0x8000_0000_0000,      // not canonical
        1 << 63,               // not canonical
        0x7fff_ff00_0000,      // not canonical for a frame at 16 MiB
    ] {
        r.ok(&set_as_with_direct_map(GPU_PT, CPU_PT, 4, base));
        r.ok(&job(1, &[op(OpKind::Fill, va, 0, 4096, 3)]));
        errors += 1;
        let s = r.stats();
        assert_eq!((s.violations, s.cpu_walk_errors), (0, errors), "{base:#x}");
        assert_eq!(r.read(DATA, 4096), vec![3; 4096]);
    }
    assert_eq!(
        r.err(&set_as_with_direct_map(
            GPU_PT,
            CPU_PT,
            4,
            0xffff_8880_0000_0800
        )),
        ErrorCode::Misaligned
    );
    // A user-half base: the user mapping is not there, so it is a
    // violation of that frame (the driver lied), not a crash.
    r.ok(&set_as_with_direct_map(GPU_PT, CPU_PT, 4, 0x1000_0000_0000));
    r.ok(&job(2, &[op(OpKind::Read, 0, va, 8, 0)]));
    assert_eq!(r.stats().violations_no_direct_map, 1);
}

#[test]
fn checker_off_checks_nothing() {
    let mut r = Rig::new(CheckerMode::Off);
    let va = 0x7000_0000_0000u64;
    Builder::new(&r.mem, GPU_PT).map_4k(va, DATA, true);
    r.set_as();
    r.ok(&job(1, &[op(OpKind::Fill, va, 0, 4096, 1)]));
    let s = r.stats();
    assert_eq!((s.accesses_checked, s.violations, s.jobs), (0, 0, 1));

    assert_eq!(s.unchecked_accesses, 1);
    // With the checker off the driver may give no CPU table.
    r.ok(&set_as(GPU_PT, 0, 4));
    r.ok(&job(2, &[op(OpKind::Fill, va, 0, 4096, 1)]));
    assert_eq!(r.stats().unchecked_accesses, 2);
    let j = serde_json::to_value(r.dev.stats_doc()).unwrap();
    assert_eq!(j["svm"]["unchecked_accesses"], 2);
}

/// Strict mode: the guest cannot switch the checker off (SET_AS with a CPU
/// root of 0 is refused), and what the checker could not check is counted
/// in STATS and in the stats file: CPU walk errors, unchecked accesses.
#[test]
fn strict_checker_cannot_be_switched_off_by_the_guest() {
    use crate::layout::x86;
    let mut r = Rig::new(CheckerMode::Strict);
    let va = 0x7000_0000_0000u64;
    Builder::new(&r.mem, GPU_PT).map_4k(va, DATA, true);
    assert_eq!(r.err(&set_as(GPU_PT, 0, 4)), ErrorCode::Malformed);
    assert_eq!(r.err(&set_as(GPU_PT, 0, 5)), ErrorCode::Malformed);
    // No address space was set.
    assert_eq!(
        r.err(&job(1, &[op(OpKind::Fill, va, 0, 8, 1)])),
        ErrorCode::NoAs
    );
    // A CPU table the checker cannot walk (its PML4 entry points outside
    // guest RAM): a walk error, not a violation, and visible on the wire.
    put(
        &r.mem,
        CPU_PT + 8 * x86::index(va, 4),
        (1 << 40) | x86::PRESENT | x86::RW | x86::USER,
    );
    r.set_as();
    r.ok(&job(2, &[op(OpKind::Fill, va, 0, 8, 1)]));
    let s = r.stats();
    assert_eq!(
        (s.cpu_walk_errors, s.unchecked_accesses, s.violations),
        (1, 0, 0)
    );
    // The raw answer bytes carry them at the header's offsets.
    let resp = r.dev.handle_control(&vg::submit_3d(CTX, &stats()), BIG);
    let base = CTRL_HDR_SIZE
        + std::mem::offset_of!(vgpu_uapi::vgpu_svm_resp, stats)
        + std::mem::offset_of!(vgpu_uapi::vgpu_svm_stats, cpu_walk_errors);
    assert_eq!(&resp[base..base + 8], &1u64.to_le_bytes());
    let j = serde_json::to_value(r.dev.stats_doc()).unwrap();
    assert_eq!(j["svm"]["cpu_walk_errors"], 1);
    assert_eq!(j["svm"]["unchecked_accesses"], 0);
}

#[test]
fn bindings_map_gpu_va_to_cpu_va_for_the_checker() {
    let mut r = Rig::new(CheckerMode::Strict);
    let gpu_va = 0x1_0000_0000u64;
    let cpu_va = 0x7f12_0000_0000u64;
    let mut t = Tables::new(&r.mem);
    for i in 0..2 {
        t.gpu.map_4k(gpu_va + i * 4096, DATA + i * 4096, true);
        t.cpu.map_4k(cpu_va + i * 4096, DATA + i * 4096, true);
    }
    let _ = t;
    r.set_as();
    // Without the binding the checker looks at CPU VA == GPU VA: no page.
    r.ok(&job(1, &[op(OpKind::Read, 0, gpu_va, 8, 0)]));
    assert_eq!(r.stats().violations_no_page, 1);
    r.ok(&bind(gpu_va, cpu_va, 0x2000));
    assert_eq!(r.err(&bind(gpu_va + 0x1000, 0, 0x1000)), ErrorCode::Busy);
    r.ok(&job(2, &[op(OpKind::Copy, gpu_va, gpu_va + 4096, 4096, 0)]));
    let s = r.stats();
    assert_eq!(s.violations, 1);
    assert_eq!(s.accesses_checked, 3);
    assert_eq!(r.err(&unbind(gpu_va, 0x1000)), ErrorCode::Malformed);
    r.ok(&unbind(gpu_va, 0x2000));
    r.ok(&job(3, &[op(OpKind::Read, 0, gpu_va, 8, 0)]));
    assert_eq!(r.stats().violations, 2);
}

/// BIND_ARRAY / UNBIND_ARRAY (0.6): each entry checked as a BIND, overlaps
/// with bindings and among the entries refused, and a refused array leaves
/// nothing behind (the entry to blame in `result`).
#[test]
fn bind_array_is_all_or_nothing() {
    let mut r = Rig::new(CheckerMode::Strict);
    let gpu_va = 0x1_0000_0000u64;
    let cpu_va = 0x7f12_0000_0000u64;
    let mut t = Tables::new(&r.mem);
    for i in 0..4 {
        t.gpu.map_4k(gpu_va + i * 4096, DATA + i * 4096, true);
        t.cpu.map_4k(cpu_va + i * 4096, DATA + i * 4096, true);
    }
    let _ = t;
    r.set_as();
    let page = |i: u64| (gpu_va + i * 4096, cpu_va + i * 4096, 4096u64);
    // An overlap between entries 0 and 2: the later one is blamed, nothing bound.
    let bad = r.cmd(&bind_array(&[page(0), page(1), (gpu_va, cpu_va, 8192)]));
    assert_eq!((bad.status, bad.error, bad.result), (Status::Error, Some(ErrorCode::Busy), 2));
    // Nothing bound: the page reads through CPU VA == GPU VA (no page there).
    r.ok(&job(1, &[op(OpKind::Read, 0, gpu_va, 8, 0)]));
    assert_eq!(r.stats().violations_no_page, 1);
    // A misaligned entry in the middle: refused by the parser, at its index.
    let bad = r.cmd(&bind_array(&[page(0), (gpu_va + 4096, cpu_va + 1, 4096), page(2)]));
    assert_eq!((bad.error, bad.result), (Some(ErrorCode::Misaligned), 1));
    // Count 0, too many, truncated, nonzero padding.
    assert_eq!(r.err(&bind_array(&[])), ErrorCode::Malformed);
    let many: Vec<_> = (0..protocol::MAX_BIND_ENTRIES as u64 + 1).map(page).collect();
    assert_eq!(r.err(&bind_array(&many)), ErrorCode::TooBig);
    let mut short = bind_array(&[page(0), page(1)]);
    short.truncate(short.len() - 1);
    assert_eq!(r.err(&short), ErrorCode::Malformed);
    let mut pad = bind_array(&[page(0)]);
    pad[12] = 1;
    assert_eq!(r.err(&pad), ErrorCode::Malformed);
    // All four at once: the checker maps each through its binding.
    r.ok(&bind_array(&[page(3), page(0), page(2), page(1)]));
    r.ok(&job(2, &[op(OpKind::Read, 0, gpu_va, 4 * 4096, 0)]));
    let s = r.stats();
    assert_eq!(s.violations, 1, "{s:?}");
    // Overlapping an existing binding: nothing of the array is bound.
    let bad = r.cmd(&bind_array(&[page(8), (gpu_va + 3 * 4096, cpu_va, 4096)]));
    assert_eq!((bad.error, bad.result), (Some(ErrorCode::Busy), 1));
    r.ok(&bind(gpu_va + 8 * 4096, cpu_va, 4096)); // page 8 was not bound
    // UNBIND_ARRAY: a wrong size, or one named twice, unbinds nothing.
    let bad = r.cmd(&unbind_array(&[(gpu_va, 4096), (gpu_va + 4096, 8192)]));
    assert_eq!((bad.error, bad.result), (Some(ErrorCode::Malformed), 1));
    let bad = r.cmd(&unbind_array(&[(gpu_va, 4096), (gpu_va + 4096, 4096), (gpu_va, 4096)]));
    assert_eq!((bad.error, bad.result), (Some(ErrorCode::Malformed), 2));
    assert_eq!(r.err(&unbind_array(&[])), ErrorCode::Malformed);
    // Still bound: a new BIND there is refused.
    assert_eq!(r.err(&bind(gpu_va, cpu_va, 4096)), ErrorCode::Busy);
    r.ok(&unbind_array(&[(gpu_va + 4096, 4096), (gpu_va, 4096), (gpu_va + 2 * 4096, 4096)]));
    // Gone: each can be bound again; the one left is not.
    r.ok(&bind_array(&[page(0), page(1), page(2)]));
    assert_eq!(r.err(&bind(gpu_va + 3 * 4096, cpu_va, 4096)), ErrorCode::Busy);
}

/// A context's binding limit holds for BIND_ARRAY as a whole.
#[test]
fn bind_array_respects_the_binding_limit() {
    let mut r = Rig::with(EngineConfig {
        max_bindings: 3,
        ..EngineConfig::default()
    });
    r.set_as();
    let page = |i: u64| (0x1000_0000 + i * 4096, 0x2000_0000 + i * 4096, 4096u64);
    r.ok(&bind(page(9).0, page(9).1, 4096));
    assert_eq!(r.err(&bind_array(&[page(0), page(1), page(2)])), ErrorCode::TooBig);
    r.ok(&bind_array(&[page(0), page(1)]));
    assert_eq!(r.err(&bind(page(5).0, page(5).1, 4096)), ErrorCode::TooBig);
}

#[test]
fn invalidate_drops_tlb_entries_and_counts() {
    let mut r = Rig::new(CheckerMode::Off);
    let va = 0x5000_0000u64;
    let mut t = Tables::new(&r.mem);
    let pte = t.map_4k(va, DATA, true);
    let _ = t;
    r.write(DATA, b"old");
    r.write(DATA + 0x5000, b"new");
    r.set_as();
    assert_eq!(
        r.ok(&job(1, &[op(OpKind::Hash, 0, va, 3, 0)])).result,
        fnv::hash(b"old")
    );
    // The driver moves the page without telling: the TLB still says old.
    put(&r.mem, pte, (DATA + 0x5000) | VALID | WRITE);
    assert_eq!(
        r.ok(&job(2, &[op(OpKind::Hash, 0, va, 3, 0)])).result,
        fnv::hash(b"old")
    );
    // INVALIDATE of another range changes nothing; of the page, it does.
    r.ok(&invalidate(va + 0x1000, 0x1000));
    assert_eq!(
        r.ok(&job(3, &[op(OpKind::Hash, 0, va, 3, 0)])).result,
        fnv::hash(b"old")
    );
    r.ok(&invalidate(va, 0x1000));
    assert_eq!(
        r.ok(&job(4, &[op(OpKind::Hash, 0, va, 3, 0)])).result,
        fnv::hash(b"new")
    );
    // Cleared entry + INVALIDATE: a fault.
    put(&r.mem, pte, 0);
    r.ok(&invalidate(0, 1 << 47));
    assert_eq!(
        r.cmd(&job(5, &[op(OpKind::Hash, 0, va, 3, 0)])).status,
        Status::Fault
    );
    assert_eq!(r.stats().invalidations, 3);
}

#[test]
fn bad_inputs_are_errors() {
    let mut r = Rig::new(CheckerMode::Strict);
    // JOB before SET_AS.
    assert_eq!(
        r.err(&job(1, &[op(OpKind::Read, 0, 0, 1, 0)])),
        ErrorCode::NoAs
    );
    // Roots outside guest RAM.
    assert_eq!(r.err(&set_as(1 << 40, CPU_PT, 4)), ErrorCode::BadAddress);
    assert_eq!(r.err(&set_as(GPU_PT, MEM as u64, 4)), ErrorCode::BadAddress);
    assert_eq!(r.err(&set_as(GPU_PT, CPU_PT, 6)), ErrorCode::Malformed);
    // Truncated, unknown, reserved bits.
    assert_eq!(r.err(&[1, 0, 0]), ErrorCode::Malformed);
    assert_eq!(r.err(&[0x77, 0, 0, 0, 0, 0, 0, 0]), ErrorCode::UnknownCmd);
    assert_eq!(r.err(&invalidate(0x10, 0x1000)), ErrorCode::Misaligned);
    assert_eq!(
        r.err(&job(1, &[op(OpKind::Fill, 0, 0, 1 << 40, 0)])),
        ErrorCode::TooBig
    );
    // A page table pointing outside guest RAM; a cyclic one; garbage.
    r.set_as();
    let mut g = Builder::new(&r.mem, GPU_PT);
    let l2 = g.entry_addr(0x40_0000, 2);
    put(&r.mem, l2, (1 << 45) | VALID);
    assert_eq!(
        r.err(&job(2, &[op(OpKind::Read, 0, 0x40_0000, 8, 0)])),
        ErrorCode::BadAddress
    );
    put(&r.mem, GPU_PT + 8 * 5, GPU_PT | VALID); // root slot 5 -> root
    assert_eq!(
        r.err(&job(3, &[op(OpKind::Read, 0, 5 << 39, 8, 0)])),
        ErrorCode::BadPageTable
    );
    put(&r.mem, l2, 0xdead_0000_0000_0001);
    assert_eq!(
        r.err(&job(4, &[op(OpKind::Read, 0, 0x40_0000, 8, 0)])),
        ErrorCode::BadPageTable
    );
    // A leaf whose frame lies outside guest RAM.
    let mut g = Builder::at(&r.mem, GPU_PT, GPU_PT + 0x40_000);
    g.map_4k(0x9000_0000, 1 << 44, true);
    assert_eq!(
        r.err(&job(5, &[op(OpKind::Fill, 0x9000_0000, 0, 8, 0)])),
        ErrorCode::BadAddress
    );
    let s = r.stats();
    assert_eq!(s.errors, 12);
    assert_eq!(s.jobs, 0);
    // A response buffer too small for the answer: ERR_UNSPEC, not executed.
    let req = vg::submit_3d(CTX, &stats());
    let resp = r.dev.handle_control(&req, CTRL_HDR_SIZE + 10);
    assert_eq!(CtrlHdr::parse(&resp).unwrap().type_, ty::RESP_ERR_UNSPEC);
    // Unknown context.
    let resp = r.dev.handle_control(&vg::submit_3d(9, &nop()), BIG);
    assert_eq!(
        CtrlHdr::parse(&resp).unwrap().type_,
        ty::RESP_ERR_INVALID_CONTEXT_ID
    );
}

#[test]
fn too_many_live_jobs_is_busy_and_destroy_aborts() {
    let mut r = Rig::new(CheckerMode::Strict);
    r.set_as();
    // 64 faulted jobs (nothing is mapped), then BUSY.
    for id in 0..64 {
        assert_eq!(
            r.cmd(&job(id, &[op(OpKind::Read, 0, 0, 8, 0)])).status,
            Status::Fault
        );
    }
    assert_eq!(
        r.err(&job(64, &[op(OpKind::Read, 0, 0, 8, 0)])),
        ErrorCode::Busy
    );
    let ctx = r.dev.contexts().next().unwrap().clone();
    assert_eq!(ctx.live_jobs(), 64);
    let resp = r.dev.handle_control(&vg::ctx_destroy(CTX), BIG);
    assert_eq!(CtrlHdr::parse(&resp).unwrap().type_, ty::RESP_OK_NODATA);
    assert_eq!(ctx.live_jobs(), 0);
    assert_eq!(r.dev.counters().snapshot().jobs_aborted, 64);
    assert!(ctx.is_cancelled());
}

/// Makes [`failing_spawn`] fail (only the test below uses that spawner).
static SPAWN_FAILS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn failing_spawn(name: String, f: Box<dyn FnOnce() + Send>) -> std::io::Result<()> {
    if SPAWN_FAILS.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(std::io::Error::from_raw_os_error(libc::EAGAIN));
    }
    crate::context::spawn_thread(name, f)
}

/// A worker that cannot be started: JOB and RESUME are answered BUSY at
/// once (never run inline on the control thread, which holds the vring
/// lock the answer needs); a RESUMEd job stays faulted and can be resumed
/// once workers start again.
#[test]
fn worker_spawn_failure_is_busy_not_inline() {
    use std::sync::atomic::Ordering::SeqCst;
    let mut r = Rig::with(EngineConfig {
        spawn: failing_spawn,
        ..EngineConfig::default()
    });
    let va = 0x3000_0000u64;
    let mut t = Tables::new(&r.mem);
    t.map_4k(va, DATA, true);
    let _ = t;
    r.set_as();
    // A job that faults (second page unmapped), run while spawning works.
    let f = r.cmd(&job(1, &[op(OpKind::Fill, va, 0, 8192, 7)]));
    assert_eq!(f.status, Status::Fault);
    SPAWN_FAILS.store(true, SeqCst);
    // Let the idle worker exit, then nothing can run jobs.
    let ctx = r.dev.contexts().next().unwrap().clone();
    crate::context::tests_wait_worker_gone(&ctx);
    assert_eq!(
        r.err(&job(2, &[op(OpKind::Fill, va, 0, 8, 1)])),
        ErrorCode::Busy
    );
    assert_eq!(r.read(DATA, 8), vec![7; 8], "job 2 ran anyway");
    assert_eq!(r.err(&resume(1)), ErrorCode::Busy);
    assert_eq!(ctx.live_jobs(), 1, "job 1 stays faulted, job 2 is gone");
    SPAWN_FAILS.store(false, SeqCst);
    let mut t = Tables::again(&r.mem, 1);
    t.map_4k(va + 4096, DATA + 4096, true);
    let _ = t;
    assert_eq!(r.ok(&resume(1)).job_id, 1);
    assert_eq!(r.ok(&job(2, &[op(OpKind::Fill, va, 0, 8, 1)])).job_id, 2);
    assert_eq!(r.read(DATA, 8), vec![1; 8]);
}

/// A responder that hands the answer to a channel.
struct Chan(std::sync::mpsc::Sender<Vec<u8>>);

impl crate::context::Responder for Chan {
    fn respond(self: Box<Self>, bytes: &[u8]) {
        let _ = self.0.send(bytes.to_vec());
    }
}

/// Sends an SVM command on `ctx` without waiting: the answer now, or the
/// channel the deferred answer will come on.
fn send(
    dev: &mut Device,
    ctx: u32,
    cmd: &[u8],
) -> Result<SvmResp, std::sync::mpsc::Receiver<Vec<u8>>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let reply = dev.handle_control_with(&vg::submit_3d(ctx, cmd), BIG, &mut || {
        Box::new(Chan(tx.clone()))
    });
    for (c, r) in dev.take_pending() {
        c.complete(&r);
    }
    match reply {
        crate::device::Reply::Now(b) => Ok(SvmResp::decode(&b[CTRL_HDR_SIZE..]).unwrap()),
        crate::device::Reply::Later => Err(rx),
    }
}

fn deferred(rx: &std::sync::mpsc::Receiver<Vec<u8>>) -> SvmResp {
    let b = rx
        .recv_timeout(std::time::Duration::from_secs(120))
        .expect("no answer");
    SvmResp::decode(&b[CTRL_HDR_SIZE..]).unwrap()
}

/// The step budget: a JOB that needs more steps than the budget is
/// refused at once (64 ops of 4 GiB never start), and a job that keeps
/// faulting and being resumed fails once it has spent its budget.
#[test]
fn job_step_budget_bounds_a_job() {
    let mut r = Rig::new(CheckerMode::Strict);
    r.set_as();
    let huge: Vec<_> = (0..64u64)
        .map(|i| op(OpKind::Read, 0, i << 32, 1 << 32, 0))
        .collect();
    match send(&mut r.dev, CTX, &job(1, &huge)) {
        Ok(resp) => assert_eq!(resp.error, Some(ErrorCode::TooBig), "{resp:?}"),
        Err(_) => panic!("a 256 GiB job was accepted"),
    }
    assert_eq!(r.dev.contexts().next().unwrap().live_jobs(), 0);

    let mut r = Rig::with(EngineConfig {
        max_job_steps: 10,
        ..EngineConfig::default()
    });
    let va = 0x3000_0000u64;
    let mut t = Tables::new(&r.mem);
    for i in 0..4 {
        t.map_4k(va + i * 4096, DATA + i * 4096, true);
    }
    let _ = t;
    r.set_as();
    assert_eq!(
        r.err(&job(1, &[op(OpKind::Read, 0, va, 11 * 4096, 0)])),
        ErrorCode::TooBig
    );
    // Pages 0..3 done (4 steps), page 4 faults (5); each RESUME is one more.
    let f = r.cmd(&job(2, &[op(OpKind::Read, 0, va, 8 * 4096, 0)]));
    assert_eq!((f.status, f.fault.va), (Status::Fault, va + 4 * 4096));
    for _ in 0..5 {
        assert_eq!(r.cmd(&resume(2)).status, Status::Fault);
    }
    assert_eq!(r.err(&resume(2)), ErrorCode::TooBig);
    assert_eq!(r.err(&resume(2)), ErrorCode::UnknownJob, "the job is gone");
    assert_eq!(r.dev.counters().snapshot().jobs_failed, 1);
}

static LIVE_WORKERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static PEAK_WORKERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Counts the worker threads alive at once (only the test below uses it).
fn counting_spawn(name: String, f: Box<dyn FnOnce() + Send>) -> std::io::Result<()> {
    use std::sync::atomic::Ordering::SeqCst;
    crate::context::spawn_thread(
        name,
        Box::new(move || {
            let n = LIVE_WORKERS.fetch_add(1, SeqCst) + 1;
            PEAK_WORKERS.fetch_max(n, SeqCst);
            f();
            LIVE_WORKERS.fetch_sub(1, SeqCst);
        }),
    )
}

/// More contexts with jobs than workers: at most `workers` threads ever run
/// jobs, and every context's job still completes.
#[test]
fn worker_threads_are_bounded() {
    use std::sync::atomic::Ordering::SeqCst;
    let mut r = Rig::with(EngineConfig {
        workers: 2,
        spawn: counting_spawn,
        access_delay: std::time::Duration::from_micros(100),
        ..EngineConfig::default()
    });
    let va = 0x4000_0000u64;
    let mut t = Tables::new(&r.mem);
    t.map_2m(va, DATA);
    let _ = t;
    for id in 2..=4 {
        r.dev
            .handle_control(&vg::ctx_create(id, VGPU_SVM_CAPSET_ID, "w"), BIG);
    }
    let mut rxs = Vec::new();
    for id in 1..=4 {
        assert_eq!(
            send(&mut r.dev, id, &set_as(GPU_PT, CPU_PT, 4))
                .unwrap()
                .status,
            Status::Ok
        );
        rxs.push(
            send(
                &mut r.dev,
                id,
                &job(7, &[op(OpKind::Read, 0, va, 2 * MB, 0)]),
            )
            .unwrap_err(),
        );
    }
    for rx in &rxs {
        let a = deferred(rx);
        assert_eq!((a.status, a.job_id), (Status::Ok, 7));
    }
    assert!(
        PEAK_WORKERS.load(SeqCst) <= 2,
        "{} worker threads at once",
        PEAK_WORKERS.load(SeqCst)
    );
    assert_eq!(r.stats().violations, 0);
}

/// A rig with one worker and 1 ms per access, and 16 MiB mapped (2 MiB leaves) at the
/// returned GPU VA: a 16 MiB job on it takes 16 time slices.
fn slow_one_worker_rig() -> (Rig, u64) {
    let r = Rig::with(EngineConfig {
        workers: 1,
        access_delay: std::time::Duration::from_millis(1),
        ..EngineConfig::default()
    });
    let va = 0x4000_0000u64;
    let mut t = Tables::new(&r.mem);
    for i in 0..8 {
        t.map_2m(va + i * 2 * MB, DATA + i * 2 * MB);
    }
    (r, va)
}

/// One worker, a long job in context 1: a short job of context 2 still
/// runs (after at most one time slice of the long one), and INVALIDATE of
/// context 2 is answered meanwhile.
#[test]
fn a_long_job_does_not_starve_other_contexts() {
    let (mut r, va) = slow_one_worker_rig();
    r.dev
        .handle_control(&vg::ctx_create(2, VGPU_SVM_CAPSET_ID, "b"), BIG);
    for id in [1, 2] {
        assert_eq!(
            send(&mut r.dev, id, &set_as(GPU_PT, CPU_PT, 4))
                .unwrap()
                .status,
            Status::Ok
        );
    }
    // 4096 steps of at least 1 ms each: 16 time slices.
    let long = send(
        &mut r.dev,
        1,
        &job(1, &[op(OpKind::Read, 0, va, 16 * MB, 0)]),
    )
    .unwrap_err();
    let short = send(&mut r.dev, 2, &job(2, &[op(OpKind::Read, 0, va, 8, 0)])).unwrap_err();
    assert_eq!(deferred(&short).status, Status::Ok);
    assert!(long.try_recv().is_err(), "the long job finished first");
    let inv = match send(&mut r.dev, 2, &invalidate(0, 1 << 47)) {
        Ok(a) => a,
        Err(rx) => deferred(&rx),
    };
    assert_eq!(inv.status, Status::Ok);
    // End the long job.
    r.dev.handle_control(&vg::ctx_destroy(1), BIG);
    assert_eq!(deferred(&long).error, Some(ErrorCode::Aborted));
}

/// One worker, one context, a long job then a short one: the short job
/// ends first (after at most a slice of the long one; the jobs of one
/// context take turns by time slices, they are not run strictly in order).
#[test]
fn a_short_job_does_not_wait_for_a_long_job_of_its_context() {
    let (mut r, va) = slow_one_worker_rig();
    assert_eq!(
        send(&mut r.dev, 1, &set_as(GPU_PT, CPU_PT, 4))
            .unwrap()
            .status,
        Status::Ok
    );
    // 4096 steps of at least 1 ms each: 16 time slices.
    let long = send(
        &mut r.dev,
        1,
        &job(1, &[op(OpKind::Read, 0, va, 16 * MB, 0)]),
    )
    .unwrap_err();
    let short = send(&mut r.dev, 1, &job(2, &[op(OpKind::Read, 0, va, 8, 0)])).unwrap_err();
    let a = deferred(&short);
    assert_eq!((a.status, a.job_id), (Status::Ok, 2));
    assert!(long.try_recv().is_err(), "the long job finished first");
    r.dev.handle_control(&vg::ctx_destroy(1), BIG);
    assert_eq!(deferred(&long).error, Some(ErrorCode::Aborted));
    assert_eq!(stats_on(&mut r.dev, 0).violations, 0);
}

/// INVALIDATE of a context with an access in flight (a slow one: 300 ms)
/// does not hold up the control queue: it is answered later, from the
/// context's side, once that access has ended; meanwhile the other
/// context's commands (and this one's) are answered at once.
#[test]
fn a_waiting_invalidate_does_not_block_other_contexts() {
    let mut r = Rig::with(EngineConfig {
        access_delay: std::time::Duration::from_millis(300),
        ..EngineConfig::default()
    });
    let va = 0x4000_0000u64;
    let mut t = Tables::new(&r.mem);
    t.map_4k(va, DATA, true);
    t.map_4k(va + 4096, DATA + 4096, true);
    let _ = t;
    r.dev
        .handle_control(&vg::ctx_create(2, VGPU_SVM_CAPSET_ID, "b"), BIG);
    for id in [1, 2] {
        assert_eq!(
            send(&mut r.dev, id, &set_as(GPU_PT, CPU_PT, 4))
                .unwrap()
                .status,
            Status::Ok
        );
    }
    let ctx = r.dev.contexts().next().unwrap().clone();
    let jobs = send(
        &mut r.dev,
        1,
        &job(1, &[op(OpKind::Read, 0, va, 2 * 4096, 0)]),
    )
    .unwrap_err();
    // Wait until the job is inside its first access.
    let t0 = std::time::Instant::now();
    while r.dev.counters().snapshot().pages_accessed == 0 {
        assert!(t0.elapsed() < std::time::Duration::from_secs(60));
        std::thread::yield_now();
    }
    let inv = match send(&mut r.dev, 1, &invalidate(va, 4096)) {
        Err(rx) => rx,
        Ok(_) => {
            // Answered at once: only right if the access had ended, and
            // then the control thread may have waited for it. It must not
            // have: the first access is 300 ms long.
            panic!("INVALIDATE answered synchronously while an access was in flight")
        }
    };
    assert_eq!(ctx.barrier().deferred(), 1);
    // Other commands go on meanwhile.
    assert_eq!(send(&mut r.dev, 2, &nop()).unwrap().status, Status::Ok);
    assert_eq!(
        send(&mut r.dev, 2, &invalidate(0, 1 << 47)).unwrap().status,
        Status::Ok
    );
    assert_eq!(send(&mut r.dev, 1, &nop()).unwrap().status, Status::Ok);
    let a = deferred(&inv);
    assert_eq!(a.status, Status::Ok);
    assert_eq!(ctx.barrier().deferred(), 0);
    assert_eq!(deferred(&jobs).status, Status::Ok);
    // One INVALIDATE per context; two device-wide.
    assert_eq!(r.stats().invalidations, 1);
    assert_eq!(stats_on(&mut r.dev, 0).invalidations, 2);
}

#[test]
fn five_level_cpu_tables() {
    let mut r = Rig::new(CheckerMode::Strict);
    let va = 0x7f00_0000_0000u64;
    Builder::new(&r.mem, GPU_PT).map_4k(va, DATA, true);
    let mut cpu = CpuBuilder::new(&r.mem, Levels::Five, CPU_PT);
    cpu.map_4k(va, DATA, true);
    r.ok(&set_as(GPU_PT, CPU_PT, 5));
    r.ok(&job(1, &[op(OpKind::Fill, va, 0, 64, 3)]));
    let s = r.stats();
    assert_eq!((s.accesses_checked, s.violations), (1, 0));
}

/// The answer of `send`, waiting for it if it is deferred.
fn answer(r: Result<SvmResp, std::sync::mpsc::Receiver<Vec<u8>>>) -> SvmResp {
    match r {
        Ok(a) => a,
        Err(rx) => deferred(&rx),
    }
}

/// Waits (polling a counter, bounded by two minutes) until a job of the
/// device has accessed at least one page.
fn wait_for_first_access(dev: &Device) {
    let t0 = std::time::Instant::now();
    while dev.counters().snapshot().pages_accessed == 0 {
        assert!(t0.elapsed() < std::time::Duration::from_secs(120));
        std::thread::yield_now();
    }
}

/// ABORT of a job that is running (here: inside a 200 ms access) is
/// answered only once the job has stopped: the job's JOB request is
/// answered ERROR / ABORTED first, then the ABORT OK, and by then no
/// access of the job is in flight (it makes no other). The control queue
/// is not held up meanwhile.
#[test]
fn abort_of_a_running_job_answers_once_it_has_stopped() {
    let mut r = Rig::with(EngineConfig {
        access_delay: std::time::Duration::from_millis(200),
        ..EngineConfig::default()
    });
    let va = 0x4000_0000u64;
    let mut t = Tables::new(&r.mem);
    t.map_2m(va, DATA);
    let _ = t;
    r.set_as();
    let ctx = r.dev.contexts().next().unwrap().clone();
    // 512 accesses of 200 ms: it does not end by itself during the test.
    let jrx = send(
        &mut r.dev,
        CTX,
        &job(1, &[op(OpKind::Read, 0, va, 2 * MB, 0)]),
    )
    .unwrap_err();
    wait_for_first_access(&r.dev);
    let arx = match send(&mut r.dev, CTX, &abort(1)) {
        Err(rx) => rx,
        Ok(a) => panic!("ABORT of a running job answered at once: {a:?}"),
    };
    // Other commands go on while the ABORT waits.
    assert_eq!(send(&mut r.dev, CTX, &nop()).unwrap().status, Status::Ok);
    let a = deferred(&arx);
    assert_eq!(
        (a.status, a.error, a.job_id),
        (Status::Ok, None, 1),
        "{a:?}"
    );
    // The job's own answer came first (same worker, before the ABORT's).
    let b = jrx
        .try_recv()
        .expect("the JOB answer comes before the ABORT's");
    let j = SvmResp::decode(&b[CTRL_HDR_SIZE..]).unwrap();
    assert_eq!(
        (j.status, j.error, j.job_id),
        (Status::Error, Some(ErrorCode::Aborted), 1)
    );
    assert_eq!(ctx.barrier().in_flight(), 0, "an access still in flight");
    assert_eq!(ctx.live_jobs(), 0);
    let pages = r.dev.counters().snapshot().pages_accessed;
    assert!(pages < 512, "the job ran to the end");
    // Nothing of job 1 runs after the answer: the next job of the
    // context (they run in order) accesses exactly its own page.
    assert_eq!(r.ok(&job(2, &[op(OpKind::Read, 0, va, 8, 0)])).job_id, 2);
    assert_eq!(r.dev.counters().snapshot().pages_accessed, pages + 1);
    assert_eq!(r.err(&abort(1)), ErrorCode::UnknownJob, "a finished job");
    assert_eq!(r.err(&abort(99)), ErrorCode::UnknownJob, "an unknown job");
    let snap = r.dev.counters().snapshot();
    assert_eq!((snap.jobs_aborted, snap.wire.jobs), (1, 1));
    // UNKNOWN_JOB answers only.
    assert_eq!(snap.wire.errors, 2);
}

/// ABORT of a job queued behind another of its context: answered OK at
/// once, the job's JOB request ERROR / ABORTED at once, and the job never
/// runs. The running job can then be aborted too, and the context goes on.
#[test]
fn abort_of_a_queued_job_is_answered_at_once() {
    let mut r = Rig::with(EngineConfig {
        workers: 1,
        access_delay: std::time::Duration::from_millis(2),
        ..EngineConfig::default()
    });
    let va = 0x4000_0000u64;
    let mut t = Tables::new(&r.mem);
    for i in 0..8 {
        t.map_2m(va + i * 2 * MB, DATA + i * 2 * MB);
    }
    let _ = t;
    r.set_as();
    let long = send(
        &mut r.dev,
        CTX,
        &job(1, &[op(OpKind::Read, 0, va, 16 * MB, 0)]),
    )
    .unwrap_err();
    let queued = send(
        &mut r.dev,
        CTX,
        &job(2, &[op(OpKind::Fill, va, 0, 4096, 0x55)]),
    )
    .unwrap_err();
    wait_for_first_access(&r.dev);
    let a = send(&mut r.dev, CTX, &abort(2)).expect("ABORT of a queued job answered at once");
    assert_eq!((a.status, a.error, a.job_id), (Status::Ok, None, 2));
    let b = queued
        .try_recv()
        .expect("the queued job's answer is sent at once");
    let j = SvmResp::decode(&b[CTRL_HDR_SIZE..]).unwrap();
    assert_eq!(
        (j.status, j.error, j.job_id),
        (Status::Error, Some(ErrorCode::Aborted), 2)
    );
    assert_eq!(r.err(&abort(2)), ErrorCode::UnknownJob);
    // The running one (or between two time slices: answered at once then).
    let a = answer(send(&mut r.dev, CTX, &abort(1)));
    assert_eq!((a.status, a.error, a.job_id), (Status::Ok, None, 1));
    assert_eq!(deferred(&long).error, Some(ErrorCode::Aborted));
    assert_eq!(
        r.read(DATA, 4096),
        vec![0; 4096],
        "the aborted queued job ran"
    );
    let ctx = r.dev.contexts().next().unwrap().clone();
    assert_eq!(ctx.live_jobs(), 0);
    // The context still works, with the same job ids.
    assert_eq!(
        r.ok(&job(2, &[op(OpKind::Fill, va, 0, 4096, 0x55)])).job_id,
        2
    );
    assert_eq!(r.read(DATA, 4096), vec![0x55; 4096]);
    assert_eq!(r.dev.counters().snapshot().jobs_aborted, 2);
}

/// ABORT sent right behind its JOB races the job's run. Whatever wins,
/// the answers agree: a job that completed first makes the ABORT
/// UNKNOWN_JOB; a job that faulted first is aborted as a faulted job
/// (ERROR / ABORTED); otherwise the ABORT is OK and the job's answer
/// ABORTED. Every request is answered, no job is left.
#[test]
fn abort_racing_the_job_gets_consistent_answers() {
    let mut r = Rig::new(CheckerMode::Strict);
    let va = 0x4000_0000u64;
    let mut t = Tables::new(&r.mem);
    t.map_4k(va, DATA, true);
    let _ = t;
    r.set_as();
    let (mut done, mut faulted, mut aborted) = (0, 0, 0);
    for id in 0..300u64 {
        // Odd jobs run into an unmapped page.
        let len = if id % 2 == 1 { 2 * 4096 } else { 4096 };
        let jrx = send(
            &mut r.dev,
            CTX,
            &job(id, &[op(OpKind::Fill, va, 0, len, 1)]),
        )
        .unwrap_err();
        // Vary where the ABORT lands (a perturbation, not an assertion).
        std::thread::sleep(std::time::Duration::from_micros(id % 8 * 40));
        let a = answer(send(&mut r.dev, CTX, &abort(id)));
        let j = deferred(&jrx);
        assert_eq!((a.job_id, j.job_id), (id, id));
        match (a.status, a.error, j.status, j.error) {
            (Status::Error, Some(ErrorCode::UnknownJob), Status::Ok, None) if id % 2 == 0 => {
                done += 1
            }
            (Status::Error, Some(ErrorCode::Aborted), Status::Fault, None) if id % 2 == 1 => {
                faulted += 1
            }
            (Status::Ok, None, Status::Error, Some(ErrorCode::Aborted)) => aborted += 1,
            other => panic!("job {id}: ABORT / JOB answers {other:?}"),
        }
    }
    let ctx = r.dev.contexts().next().unwrap().clone();
    assert_eq!(ctx.live_jobs(), 0);
    assert_eq!(ctx.barrier().in_flight(), 0);
    let snap = r.dev.counters().snapshot();
    assert_eq!(snap.wire.jobs, done);
    assert_eq!(snap.jobs_aborted, faulted + aborted);
    eprintln!("abort race: {done} done first, {faulted} faulted first, {aborted} aborted");
}

/// STATS on context `ctx` (0: the device-wide counters).
fn stats_on(dev: &mut Device, ctx: u32) -> protocol::WireStats {
    let a = send(dev, ctx, &stats()).expect("STATS is answered at once");
    assert_eq!(a.status, Status::Ok);
    a.stats
}

/// STATS on a context answers that context's counters; on context 0, the
/// device-wide ones (the sum over every context, live or destroyed).
/// Context 0 carries nothing but STATS. A context made again under an old
/// id starts from zero. The stats file shows both levels.
#[test]
fn stats_are_per_context_and_device_wide_on_context_0() {
    let mut r = Rig::new(CheckerMode::Strict);
    let va = 0x4000_0000u64;
    let mut t = Tables::new(&r.mem);
    t.map_4k(va, DATA, true);
    t.map_4k(va + 4096, DATA + 4096, true);
    // A stale GPU entry: the CPU maps another frame there.
    t.gpu.map_4k(va + 0x10_0000, DATA + 0x2000, true);
    t.cpu.map_4k(va + 0x10_0000, DATA + 0x3000, true);
    let _ = t;
    r.dev
        .handle_control(&vg::ctx_create(2, VGPU_SVM_CAPSET_ID, "two"), BIG);
    for id in [1, 2] {
        assert_eq!(
            send(&mut r.dev, id, &set_as(GPU_PT, CPU_PT, 4))
                .unwrap()
                .status,
            Status::Ok
        );
    }
    // Context 1: one job over two pages.
    assert_eq!(
        answer(send(
            &mut r.dev,
            1,
            &job(1, &[op(OpKind::Read, 0, va, 8192, 0)])
        ))
        .status,
        Status::Ok
    );
    // Context 2: an INVALIDATE, a rejected command, a fault, a violation.
    assert_eq!(
        answer(send(&mut r.dev, 2, &invalidate(va, 4096))).status,
        Status::Ok
    );
    assert_eq!(
        send(&mut r.dev, 2, &invalidate(va + 1, 4096))
            .unwrap()
            .error,
        Some(ErrorCode::Misaligned)
    );
    let f = answer(send(
        &mut r.dev,
        2,
        &job(5, &[op(OpKind::Read, 0, 0x20_0000_0000, 8, 0)]),
    ));
    assert_eq!(f.status, Status::Fault);
    assert_eq!(
        answer(send(
            &mut r.dev,
            2,
            &job(6, &[op(OpKind::Read, 0, va + 0x10_0000, 8, 0)])
        ))
        .status,
        Status::Ok
    );
    let s1 = stats_on(&mut r.dev, 1);
    let s2 = stats_on(&mut r.dev, 2);
    let s0 = stats_on(&mut r.dev, 0);
    assert_eq!(
        (
            s1.jobs,
            s1.bytes,
            s1.accesses_checked,
            s1.faults,
            s1.invalidations,
            s1.errors
        ),
        (1, 8192, 2, 0, 0, 0)
    );
    assert_eq!(s1.violations, 0);
    assert_eq!(
        (
            s2.jobs,
            s2.bytes,
            s2.faults,
            s2.invalidations,
            s2.errors,
            s2.violations
        ),
        (1, 8, 1, 1, 1, 1)
    );
    assert_eq!((s2.violations_frame, s2.accesses_checked), (1, 1));
    // Device-wide: the sum, counter by counter.
    let sum: Vec<u64> = s1
        .to_array()
        .iter()
        .zip(s2.to_array())
        .map(|(a, b)| a + b)
        .collect();
    assert_eq!(s0.to_array().to_vec(), sum);
    assert!(s1.tlb_misses > 0 && s2.tlb_misses > 0);
    // The stats file: device-wide under "svm", each live context under
    // "svm_contexts".
    let j = serde_json::to_value(r.dev.stats_doc()).unwrap();
    assert_eq!(j["svm"]["jobs"], 2);
    assert_eq!(j["svm_contexts"]["1"]["jobs"], 1);
    assert_eq!(j["svm_contexts"]["2"]["violations"], 1);
    assert_eq!(j["svm_contexts"]["2"]["debug_name"], "two");
    // Only STATS travels on context 0.
    for cmd in [
        nop(),
        job(1, &[op(OpKind::Read, 0, va, 8, 0)]),
        vec![8, 0, 0],
    ] {
        let resp = r.dev.handle_control(&vg::submit_3d(0, &cmd), BIG);
        assert_eq!(
            (CtrlHdr::parse(&resp).unwrap().type_, resp.len()),
            (ty::RESP_ERR_INVALID_CONTEXT_ID, CTRL_HDR_SIZE)
        );
    }
    // No room for the answer: not executed, as on any context.
    let resp = r
        .dev
        .handle_control(&vg::submit_3d(0, &stats()), CTRL_HDR_SIZE);
    assert_eq!(CtrlHdr::parse(&resp).unwrap().type_, ty::RESP_ERR_UNSPEC);
    // Context 2 made again: counters from zero; the device's stay.
    r.dev.handle_control(&vg::ctx_destroy(2), BIG);
    r.dev
        .handle_control(&vg::ctx_create(2, VGPU_SVM_CAPSET_ID, "again"), BIG);
    assert_eq!(stats_on(&mut r.dev, 2), protocol::WireStats::default());
    let s0b = stats_on(&mut r.dev, 0);
    assert_eq!((s0b.jobs, s0b.violations, s0b.faults), (2, 1, 1));
    let j = serde_json::to_value(r.dev.stats_doc()).unwrap();
    assert_eq!(j["svm_contexts"]["2"]["jobs"], 0);
}

/// Page-table-like garbage: pseudo-random words, one in three with
/// VALID/PRESENT clear, the others with addresses mostly inside `size`.
pub(crate) fn garbage(size: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(size);
    for i in 0..(size as u64 / 8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let w = match i % 3 {
            0 => x & !1,
            1 => (x & (size as u64 - 1) & !0xfff) | (x & 0x1c7) | 1,
            _ => x | 1,
        };
        v.extend_from_slice(&w.to_le_bytes());
    }
    v
}

/// Guest memory that records every load the walkers make.
struct Recorder {
    mem: GuestMemoryMmap,
    size: u64,
    loads: std::cell::RefCell<Vec<(u64, bool)>>,
}

impl crate::mem::PhysMem for Recorder {
    fn load_u64(&self, addr: u64) -> Result<u64, crate::mem::MemError> {
        let r = self.mem.load_u64(addr);
        self.loads.borrow_mut().push((addr, r.is_ok()));
        r
    }

    fn cas_u64(
        &self,
        addr: u64,
        old: u64,
        new: u64,
    ) -> Result<Result<u64, u64>, crate::mem::MemError> {
        self.mem.cas_u64(addr, old, new)
    }
}

/// The TLB generation of protocol 0.5 (`crate::tlbgen`): a guest-RAM u64 the
/// device loads at every JOB and RESUME, dropping the context's TLB when it
/// changed.
const TLB_GEN: u64 = 0xf0_0000;

/// One page at `va` mapped (GPU and CPU) to `frame`, then moved to another
/// frame on both sides the way the driver's idle fast path does it: entries
/// changed, no INVALIDATE. With a new generation the next JOB sees the new
/// frame; with the same generation its TLB still holds the old translation
/// and uses it (the checker reports the stale frame): the flush is what makes
/// the fast path correct.
#[test]
fn new_tlb_generation_at_job_start_drops_the_tlb() {
    let mut r = Rig::new(CheckerMode::Strict);
    let mem = r.mem.clone();
    let va = 0x7100_0000_0000u64;
    let (a, b, c) = (DATA, DATA + 0x1000, DATA + 0x2000);
    for (f, seed) in [(a, 1), (b, 2), (c, 3)] {
        r.write(f, &rand_bytes(4096, seed));
    }
    let hash_of = |seed| fnv::hash(&rand_bytes(4096, seed));
    Tables::new(&mem).map_4k(va, a, true);
    put(&mem, TLB_GEN, 5);
    r.ok(&set_as_with_tlb_gen(GPU_PT, CPU_PT, 4, 0, TLB_GEN));
    let hash = |r: &mut Rig, id| r.ok(&job(id, &[op(OpKind::Hash, 0, va, 4096, 0)])).result;
    assert_eq!(hash(&mut r, 1), hash_of(1));
    // Cached now: the same generation keeps the entry (a TLB hit).
    let s0 = r.stats();
    assert_eq!(hash(&mut r, 2), hash_of(1));
    let s1 = r.stats();
    assert_eq!((s1.tlb_hits - s0.tlb_hits, s1.tlb_misses - s0.tlb_misses), (1, 0));
    // Moved to b, generation bumped: the JOB walks again and reads b.
    Tables::again(&mem, 1).map_4k(va, b, true);
    put(&mem, TLB_GEN, 6);
    assert_eq!(hash(&mut r, 3), hash_of(2));
    let s2 = r.stats();
    assert_eq!((s2.tlb_misses - s1.tlb_misses, s2.violations), (1, 0));
    // Moved to c without a new generation: the TLB keeps b (stale), the job
    // reads it and the checker says so.
    Tables::again(&mem, 2).map_4k(va, c, true);
    assert_eq!(hash(&mut r, 4), hash_of(2));
    let s3 = r.stats();
    assert_eq!((s3.violations, s3.violations_frame), (1, 1));
    // Any new value will do (the guest's, possibly hostile): c from now on.
    put(&mem, TLB_GEN, u64::MAX);
    assert_eq!(hash(&mut r, 5), hash_of(3));
    assert_eq!(r.stats().violations, 1);
}

/// RESUME syncs too: a job faults, the driver (its job stopped, so idle)
/// moves a page the job already translated and bumps the generation; the
/// resumed job's next access to that page walks again. Without the bump the
/// resumed job uses the stale translation (a violation).
#[test]
fn new_tlb_generation_at_resume_drops_the_tlb() {
    for bump in [true, false] {
        let mut r = Rig::new(CheckerMode::Strict);
        let mem = r.mem.clone();
        let va = 0x7200_0000_0000u64;
        let (a, b, c) = (DATA, DATA + 0x1000, DATA + 0x2000);
        for (f, seed) in [(a, 1), (b, 2), (c, 3)] {
            r.write(f, &rand_bytes(4096, seed));
        }
        let mut t = Tables::new(&mem);
        t.map_4k(va, a, true);
        // The second page: the CPU has it, the GPU not yet (a fault).
        t.cpu.map_4k(va + 0x1000, c, true);
        let _ = t;
        r.ok(&set_as_with_tlb_gen(GPU_PT, CPU_PT, 4, 0, TLB_GEN));
        let ops = [
            op(OpKind::Read, 0, va, 8, 0),
            op(OpKind::Read, 0, va + 0x1000, 8, 0),
            op(OpKind::Hash, 0, va, 4096, 0),
        ];
        let f = r.cmd(&job(1, &ops));
        assert_eq!((f.status, f.fault.va), (Status::Fault, va + 0x1000));
        // The fault is serviced; meanwhile the first page moves to b.
        let mut t = Tables::again(&mem, 1);
        t.gpu.map_4k(va + 0x1000, c, true);
        t.map_4k(va, b, true);
        let _ = t;
        if bump {
            put(&mem, TLB_GEN, 1);
        }
        let done = r.ok(&resume(1));
        let s = r.stats();
        if bump {
            assert_eq!(done.result, fnv::hash(&rand_bytes(4096, 2)));
            assert_eq!(s.violations, 0);
        } else {
            assert_eq!(done.result, fnv::hash(&rand_bytes(4096, 1)));
            assert_eq!((s.violations, s.violations_frame), (1, 1));
        }
    }
}

/// SET_AS in its three sizes (0.3: 32 bytes, 0.4: 40, 0.5: 48); the 48-byte
/// form's tlb_gen_gpa must be 8-byte aligned and inside guest RAM; 0 means
/// none (no sync: the TLB is only dropped by INVALIDATE).
#[test]
fn set_as_tlb_gen_forms_and_refusals() {
    let mut r = Rig::new(CheckerMode::Strict);
    r.ok(&set_as_v0_3(GPU_PT, CPU_PT, 4));
    r.ok(&set_as(GPU_PT, CPU_PT, 4));
    r.ok(&set_as_with_tlb_gen(GPU_PT, CPU_PT, 4, 0, 0));
    r.ok(&set_as_with_tlb_gen(GPU_PT, CPU_PT, 4, 0, TLB_GEN));
    r.ok(&set_as_with_tlb_gen(GPU_PT, CPU_PT, 4, 0, MEM as u64 - 8));
    for bad in [TLB_GEN + 1, TLB_GEN + 4, MEM as u64 - 1] {
        assert_eq!(
            r.err(&set_as_with_tlb_gen(GPU_PT, CPU_PT, 4, 0, bad)),
            ErrorCode::Misaligned,
            "{bad:#x}"
        );
    }
    for outside in [MEM as u64, 1 << 40, !7u64] {
        assert_eq!(
            r.err(&set_as_with_tlb_gen(GPU_PT, CPU_PT, 4, 0, outside)),
            ErrorCode::BadAddress,
            "{outside:#x}"
        );
    }
    // Without a generation (0), nothing but INVALIDATE drops the TLB.
    let mem = r.mem.clone();
    let va = 0x7300_0000_0000u64;
    r.write(DATA, &rand_bytes(4096, 1));
    r.write(DATA + 0x1000, &rand_bytes(4096, 2));
    Tables::new(&mem).map_4k(va, DATA, true);
    r.ok(&set_as_with_tlb_gen(GPU_PT, CPU_PT, 4, 0, 0));
    r.ok(&job(1, &[op(OpKind::Read, 0, va, 8, 0)]));
    Tables::again(&mem, 1).map_4k(va, DATA + 0x1000, true);
    put(&mem, TLB_GEN, 77);
    let stale = r.ok(&job(2, &[op(OpKind::Hash, 0, va, 4096, 0)])).result;
    assert_eq!(stale, fnv::hash(&rand_bytes(4096, 1)));
    assert_eq!(r.stats().violations, 1);
    r.ok(&invalidate(va, 0x1000));
    let now = r.ok(&job(3, &[op(OpKind::Hash, 0, va, 4096, 0)])).result;
    assert_eq!(now, fnv::hash(&rand_bytes(4096, 2)));
    assert_eq!(r.stats().violations, 1);
}


mod fuzz {
    use super::*;
    use crate::mem::PhysMem;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Both walkers over arbitrary memory, roots and VAs: no panic, at
        /// most one load per level, and a successful load only inside guest
        /// memory; a translation's frame is what the leaf said.
        #[test]
        fn walkers_over_garbage(seed in any::<u64>(), roots in proptest::collection::vec(any::<u64>(), 8),
                                vas in proptest::collection::vec(any::<u64>(), 16)) {
            let size = 1usize << 20;
            let mem = crate::mem::testmem::new(size);
            mem.write_slice(&garbage(size, seed), GuestAddress(0)).unwrap();
            let rec = Recorder { mem, size: size as u64, loads: Default::default() };
            for (i, &root) in roots.iter().enumerate() {
                // Half the roots inside memory, half anywhere.
                let root = if i % 2 == 0 { root % rec.size } else { root };
                for &va in &vas {
                    for va in [va, va & 0x0000_ffff_ffff_ffff, va & 0x0000_7fff_ffff_ffff] {
                        rec.loads.borrow_mut().clear();
                        let g = crate::mmu::walk(&rec, root, va);
                        let loads = rec.loads.borrow().clone();
                        prop_assert!(loads.len() <= 4);
                        for &(a, ok) in &loads {
                            prop_assert_eq!(ok, a % 8 == 0 && a + 8 <= rec.size);
                        }
                        if let Ok(t) = g {
                            prop_assert_eq!(t.pte, rec.mem.load_u64(t.pte_addr).unwrap());
                            prop_assert!(t.contains(va));
                        }
                        for levels in [Levels::Four, Levels::Five] {
                            rec.loads.borrow_mut().clear();
                            let c = crate::checker::x86::walk(&rec, root, levels, va);
                            let loads = rec.loads.borrow().clone();
                            prop_assert!(loads.len() <= levels.count() as usize);
                            for &(a, ok) in &loads {
                                prop_assert_eq!(ok, a % 8 == 0 && a + 8 <= rec.size);
                            }
                            if let Ok(t) = c {
                                prop_assert_eq!(t.phys(va) & !(t.size - 1), t.frame);
                            }
                        }
                    }
                }
            }
        }

        /// The MMU with its TLB and DIRTY swaps over garbage: no panic, and
        /// it only ever sets DIRTY in an entry it walked.
        #[test]
        fn mmu_translate_over_garbage(seed in any::<u64>(), root in 0u64..256,
                                      vas in proptest::collection::vec(any::<u64>(), 64)) {
            let size = 1usize << 20;
            let mem = crate::mem::testmem::new(size);
            mem.write_slice(&garbage(size, seed), GuestAddress(0)).unwrap();
            let before = garbage(size, seed);
            let mut mmu = crate::mmu::Mmu::new(root << 12, 16);
            for (i, &va) in vas.iter().enumerate() {
                let access = if i % 2 == 0 { crate::mmu::Access::Read } else { crate::mmu::Access::Write };
                if let Ok(t) = mmu.translate(&mem, va & 0x0000_ffff_ffff_ffff, access) {
                    if access == crate::mmu::Access::Write {
                        prop_assert!(t.dirty() && t.writable());
                    }
                }
            }
            // Every byte that changed is a DIRTY bit set in some entry.
            let mut after = vec![0u8; size];
            mem.read_slice(&mut after, GuestAddress(0)).unwrap();
            for i in (0..size).step_by(8) {
                let a = u64::from_le_bytes(before[i..i + 8].try_into().unwrap());
                let b = u64::from_le_bytes(after[i..i + 8].try_into().unwrap());
                prop_assert!(a == b || b == a | DIRTY);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        /// Arbitrary guest memory under the page tables, arbitrary roots,
        /// addresses and ops: every job ends (done, fault or error) and the
        /// device never panics.
        #[test]
        fn arbitrary_tables_and_jobs(seed in any::<u64>(), gpu_root in 0u64..1024, cpu_root in 0u64..1024,
                                     levels in 4u32..6, ops in proptest::collection::vec(
                                         (1u32..7, any::<u64>(), any::<u64>(), 0u64..20_000, any::<u64>()), 1..6)) {
            let size = 4usize << 20;
            let mem = crate::mem::testmem::new(size);
            mem.write_slice(&garbage(size, seed), GuestAddress(0)).unwrap();
            let mut dev = Device::new(DeviceConfig::default());
            dev.set_memory(GuestMemoryAtomic::new(mem.clone()));
            dev.handle_control(&vg::ctx_create(1, VGPU_SVM_CAPSET_ID, "f"), BIG);
            dev.handle_control(&vg::submit_3d(1, &set_as(gpu_root << 12, cpu_root << 12, levels)), BIG);
            let ops: Vec<_> = ops.into_iter().map(|(k, d, s, len, v)| {
                let va = |a: u64| a & 0x0000_7fff_ffff_f000 & !(0xff << 39) | (a & 0xfff);
                let mut o = op(OpKind::Copy, va(d), va(s), len, v);
                o.kind = [OpKind::Copy, OpKind::Fill, OpKind::Hash, OpKind::AtomicAdd,
                          OpKind::WritePattern, OpKind::Read][(k - 1) as usize];
                if o.kind == OpKind::AtomicAdd { o.dst &= !7; }
                o
            }).collect();
            let r = dev.handle_control(&vg::submit_3d(1, &job(1, &ops)), BIG);
            prop_assert_eq!(r.len(), CTRL_HDR_SIZE + protocol::RESP_SIZE);
            let resp = SvmResp::decode(&r[CTRL_HDR_SIZE..]).unwrap();
            if resp.status == Status::Fault {
                // Resume once and abort: still well-behaved.
                let r = dev.handle_control(&vg::submit_3d(1, &resume(1)), BIG);
                prop_assert_eq!(r.len(), CTRL_HDR_SIZE + protocol::RESP_SIZE);
                dev.handle_control(&vg::submit_3d(1, &abort(1)), BIG);
            }
        }
    }
}

/// A CPU entry that changes while the device uses the page is a
/// violation, found by the checker's walk after the data moved (the walk
/// before saw a clean page). Here the job itself changes it: its
/// destination is the CPU leaf table holding the destination's own entry,
/// and the source is that table with the entry pointing elsewhere.
#[test]
fn cpu_entry_changed_during_the_access_is_a_violation() {
    let mut r = Rig::new(CheckerMode::Strict);
    let (d, s) = (0x7000_0000u64, 0x7100_0000u64);
    let mut t = Tables::new(&r.mem);
    let pte = t.cpu.entry_addr(d, 1);
    let leaf = pte & !0xfff;
    t.map_4k(d, leaf, true);
    t.map_4k(s, DATA, false);
    let _ = t;
    let mut page = r.read(leaf, 4096);
    let entry = get(&r.mem, pte);
    let moved = (DATA + 0x10_0000) | (entry & 0xfff);
    page[(pte - leaf) as usize..][..8].copy_from_slice(&moved.to_le_bytes());
    r.write(DATA, &page);
    r.set_as();
    let before = r.stats();
    r.ok(&job(1, &[op(OpKind::Copy, d, s, 4096, 0)]));
    let after = r.stats();
    assert_eq!(get(&r.mem, pte), moved, "the job rewrote the entry");
    assert_eq!(after.accesses_checked - before.accesses_checked, 2);
    assert_eq!(
        (
            after.violations - before.violations,
            after.violations_frame - before.violations_frame
        ),
        (1, 1)
    );
}

/// A COPY whose destination faults in the middle of a run stops exactly
/// there: the steps before it are done, the fault names the destination
/// page and the progress, and RESUME finishes the job.
#[test]
fn fault_inside_a_run_stops_at_the_faulting_step() {
    let mut r = Rig::new(CheckerMode::Strict);
    let (src, dst) = (0x7000_0000u64, 0x7100_0000u64);
    let (fs, fd) = (DATA, DATA + 0x10_0000);
    let mut t = Tables::new(&r.mem);
    for i in 0..8 {
        t.map_4k(src + i * 4096, fs + i * 4096, false);
        t.cpu.map_4k(dst + i * 4096, fd + i * 4096, true);
        if i < 5 {
            t.gpu.map_4k(dst + i * 4096, fd + i * 4096, true);
        }
    }
    let _ = t;
    let data: Vec<u8> = (0..8 * 4096).map(|i| (i % 251) as u8).collect();
    r.write(fs, &data);
    r.set_as();
    let f = r.cmd(&job(1, &[op(OpKind::Copy, dst, src, 8 * 4096, 0)]));
    assert_eq!(f.status, Status::Fault);
    assert_eq!(
        (
            f.fault.va,
            f.fault.access,
            f.fault.op_index,
            f.fault.progress
        ),
        (dst + 5 * 4096, VGPU_SVM_ACCESS_WRITE, 0, 5 * 4096)
    );
    assert_eq!(r.read(fd, 5 * 4096), data[..5 * 4096]);
    assert_eq!(r.read(fd + 5 * 4096, 4096), vec![0; 4096]);
    let mut t = Tables::again(&r.mem, 1);
    for i in 5..8 {
        t.gpu.map_4k(dst + i * 4096, fd + i * 4096, true);
    }
    let _ = t;
    assert_eq!(r.ok(&resume(1)).job_id, 1);
    assert_eq!(r.read(fd, 8 * 4096), data);
    assert_eq!(r.stats().violations, 0);
}
