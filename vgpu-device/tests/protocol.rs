//! End to end through the real daemon and a real virtqueue: the VGPU_SVM
//! protocol with page tables built in memfd guest memory.

mod common;

use std::time::{Duration, Instant};

use common::*;
use vgpu_device::layout::gpu;
use vgpu_device::protocol::{build::*, fnv, pattern_byte, ErrorCode, OpKind, Status};
use vgpu_device::virtio_gpu::{build, ty, CtrlHdr};
use vgpu_uapi::VGPU_SVM_ACCESS_WRITE;
use vhost::VhostBackend;

const BIN: &str = env!("CARGO_BIN_EXE_vgpu-device");

fn vm(name: &str, mem_mb: usize, extra: &[&str]) -> Vm {
    let mut vm = Vm::new(BIN, name, mem_mb, extra);
    let (g, c) = (vm.gpu_root, vm.cpu_root);
    assert_eq!(vm.cmd(&set_as(g, c, 4)).status, Status::Ok);
    vm
}

#[test]
fn translation_4k_and_2m_with_zero_violations() {
    let mut vm = vm("xlate", 64, &[]);
    let a = 0x7f00_0000_0000u64;
    let b = 0x7f00_4000_0000u64;
    let fa = vm.map(a, 8 * MB, false);
    let fb = vm.map(b, 8 * MB, true);
    let data = rand_bytes(8 << 20, 3);
    vm.write(fa, &data);
    let r = vm.cmd(&job(
        1,
        &[
            op(OpKind::Copy, b + 1, a, 8 * MB - 1, 0),
            op(OpKind::Hash, 0, b, 8 * MB, 0),
        ],
    ));
    assert_eq!((r.status, r.job_id), (Status::Ok, 1));
    let mut expect = vec![0u8];
    expect.extend_from_slice(&data[..(8 << 20) - 1]);
    assert_eq!(r.result, fnv::hash(&expect));
    assert_eq!(vm.read(fb, 8 << 20), expect);
    let s = vm.cmd(&stats()).stats;
    assert_eq!(s.violations, 0);
    assert_eq!(s.jobs, 1);
    assert!(s.accesses_checked >= 3 * 2048);
    assert!(s.tlb_hits > s.tlb_misses);
    // The stats file catches up within its refresh interval.
    wait_for(
        || vm.stats_file()["svm"]["jobs"] == 1,
        "stats file with the job",
        10,
    );
    let j = vm.stats_file();
    assert_eq!(j["svm"]["violations"], 0);
    assert_eq!(j["checker"], "strict");
    assert!(j["svm"]["accesses_checked"].as_u64().unwrap() >= 3 * 2048);
}

#[test]
fn fault_then_resume_with_out_of_order_answers() {
    let mut vm = vm("fault", 32, &[]);
    let va = 0x1000_0000u64;
    let f = vm.map(va, 4 * 4096, false);
    // Page 2 unmapped for the GPU (still mapped for the CPU).
    let pte2 = vm.gpu_entry(va + 2 * 4096, 1);
    let saved = {
        let v = vm.read(pte2, 8);
        u64::from_le_bytes(v.try_into().unwrap())
    };
    vm.put(pte2, 0);
    let t_job = vm.send(&job(5, &[op(OpKind::WritePattern, va, 0, 4 * 4096, 11)]));
    let r = vm.answer(t_job);
    assert_eq!(r.status, Status::Fault);
    assert_eq!(
        (
            r.fault.va,
            r.fault.access,
            r.fault.op_index,
            r.fault.progress
        ),
        (va + 2 * 4096, VGPU_SVM_ACCESS_WRITE, 0, 2 * 4096)
    );
    // A second job that faults, and a RESUME left pending while fast
    // commands overtake it: NOP and STATS complete first.
    let va2 = 0x2000_0000u64;
    let t2 = vm.send(&job(6, &[op(OpKind::Fill, va2, 0, 8, 1)]));
    assert_eq!(vm.answer(t2).status, Status::Fault);
    vm.put(pte2, saved);
    let t_resume = vm.send(&resume(5));
    let t_nop = vm.send(&nop());
    let t_stats = vm.send(&stats());
    let nop_r = vm.answer(t_nop);
    assert_eq!(nop_r.status, Status::Ok);
    let st = vm.answer(t_stats);
    assert!(st.stats.faults >= 2);
    let done = vm.answer(t_resume);
    assert_eq!((done.status, done.job_id), (Status::Ok, 5));
    let pat: Vec<u8> = (0..4 * 4096).map(|i| pattern_byte(11, i)).collect();
    assert_eq!(vm.read(f, 4 * 4096), pat);
    // ABORT the other one.
    let a = vm.cmd(&abort(6));
    assert_eq!(
        (a.status, a.error),
        (Status::Error, Some(ErrorCode::Aborted))
    );
    assert_eq!(vm.cmd(&resume(6)).error, Some(ErrorCode::UnknownJob));
    assert_eq!(vm.cmd(&stats()).stats.violations, 0);
}

/// A job that is still running while other requests overtake it: NOP,
/// STATS and a job of another context complete first.
#[test]
fn out_of_order_completion_of_a_long_job() {
    let mut vm = vm("ooo", 160, &["--access-delay-us", "20"]);
    let a = 0x7e00_0000_0000u64;
    let b = 0x7e00_4000_0000u64;
    vm.map(a, 32 * MB, true);
    vm.map(b, 32 * MB, true);
    let t_job = vm.send(&job(1, &[op(OpKind::Copy, b, a, 32 * MB, 0)]));
    let t_nop = vm.send(&nop());
    let nop = vm.answer(t_nop);
    assert_eq!(nop.status, Status::Ok);
    assert!(
        !vm.ctrl.is_done(t_job),
        "the job finished before a NOP was answered"
    );
    assert_eq!(vm.answer(t_job).status, Status::Ok);
}

/// INVALIDATE racing a 64 MiB copy: it completes before the job, nothing
/// is written into the old frames after it completed, the job's later
/// accesses use the new mapping, and a cleared entry faults.
#[test]
fn invalidate_races_a_long_job() {
    let mut vm = vm("inval", 200, &["--access-delay-us", "10"]);
    let a = 0x7d00_0000_0000u64;
    let b = 0x7d00_8000_0000u64;
    let fa = vm.map(a, 64 * MB, true);
    let fb = vm.map(b, 64 * MB, true);
    vm.write(fa, &rand_bytes(64 << 20, 9));
    // A spare 2 MiB frame the last-but-one destination page moves to.
    let spare = vm.frames(2 * MB, 2 * MB);
    let moved = b + 60 * MB; // page 30 of 32 moves to `spare`
    let cleared = b + 63 * MB; // inside page 31, which is cleared
                               // op 0 writes everything (the TLB then holds all 2 MiB entries of the
                               // destination, DIRTY already set: no compare-and-swap will notice a
                               // changed entry, only INVALIDATE can), op 1 copies.
    let t_job = vm.send(&job(
        1,
        &[
            op(OpKind::Fill, b, 0, 64 * MB, 0),
            op(OpKind::Copy, b, a, 64 * MB, 0),
        ],
    ));
    // Wait until the copy has started (its first bytes landed).
    let first = vm.read(fa, 64);
    wait_for(|| vm.read(fb, 64) == first, "the copy to start", 60);
    // The driver moves page `moved` (CPU side too) and clears the last one.
    let e_moved = vm.gpu_entry(moved, 2);
    vm.put(e_moved, spare | gpu::VALID | gpu::WRITE | gpu::LARGE);
    vm.cpu_2m(moved, spare, true);
    let e_last = vm.gpu_entry(cleared, 2);
    vm.put(e_last, 0);
    let cpu_last = vm.cpu_entry(cleared, 2);
    vm.put(cpu_last, 0);
    let t0 = Instant::now();
    let t_inv = vm.send(&invalidate(b + 60 * MB, 4 * MB));
    let r = vm.answer(t_inv);
    let inv_time = t0.elapsed();
    assert_eq!(r.status, Status::Ok);
    assert!(!vm.ctrl.is_done(t_job), "INVALIDATE queued behind the job");
    assert!(
        inv_time < Duration::from_secs(2),
        "INVALIDATE took {inv_time:?}"
    );
    // From now on the old frames must not change.
    let old_moved = vm.read(fb + 60 * MB, 2 << 20);
    let old_last = vm.read(fb + 62 * MB, 2 << 20);
    let f = vm.answer(t_job);
    assert_eq!(f.status, Status::Fault, "{f:?}");
    assert_eq!(
        (f.fault.va, f.fault.op_index, f.fault.progress),
        (b + 64 * MB - 2 * MB, 1, 62 * MB)
    );
    assert_eq!(
        vm.read(fb + 60 * MB, 2 << 20),
        old_moved,
        "write after INVALIDATE"
    );
    assert_eq!(vm.read(fb + 62 * MB, 2 << 20), old_last);
    let src = vm.read(fa + 60 * MB, 2 << 20);
    assert_eq!(
        vm.read(spare, 2 << 20),
        src,
        "the job did not use the new mapping"
    );
    // Map the last page again and resume: the copy finishes there.
    let last = vm.frames(2 * MB, 2 * MB);
    vm.put(e_last, last | gpu::VALID | gpu::WRITE | gpu::LARGE);
    vm.cpu_2m(cleared, last, true);
    let done = vm.cmd(&resume(1));
    assert_eq!(done.status, Status::Ok);
    assert_eq!(vm.read(last, 2 << 20), vm.read(fa + 62 * MB, 2 << 20));
    let s = vm.cmd(&stats()).stats;
    assert_eq!(s.violations, 0, "{s:?}");
    assert_eq!(s.invalidations, 1);
}

#[test]
fn violations_through_the_daemon() {
    let mut vm = vm("viol", 32, &[]);
    let va = 0x6000_0000_0000u64;
    let f = vm.frames(4 * 4096, 4096);
    // No CPU page; a different CPU frame; a read-only CPU entry.
    vm.gpu_4k(va, f, true);
    vm.gpu_4k(va + 0x1000, f + 0x1000, true);
    vm.cpu_4k(va + 0x1000, f + 0x3000, true);
    vm.gpu_4k(va + 0x2000, f + 0x2000, true);
    vm.cpu_4k(va + 0x2000, f + 0x2000, false);
    let r = vm.cmd(&job(
        1,
        &[
            op(OpKind::Read, 0, va, 8, 0),
            op(OpKind::Read, 0, va + 0x1000, 8, 0),
            op(OpKind::Fill, va + 0x2000, 0, 8, 0),
        ],
    ));
    assert_eq!(r.status, Status::Ok);
    let s = vm.cmd(&stats()).stats;
    assert_eq!(
        (
            s.violations,
            s.violations_no_page,
            s.violations_frame,
            s.violations_write
        ),
        (3, 1, 1, 1)
    );
    wait_for(
        || vm.stats_file()["svm"]["violations"] == 3,
        "violations in the stats file",
        10,
    );
    let j = vm.stats_file();
    let recent = j["svm"]["violations_recent"].as_array().unwrap();
    assert_eq!(recent.len(), 3);
    assert_eq!(recent[2]["gpu_va"], va + 0x2000);
    assert_eq!(recent[2]["job"], 1);
}

#[test]
fn checker_off_skips_the_cpu_walk() {
    let mut vm = vm("off", 32, &["--checker", "off"]);
    let va = 0x6000_0000_0000u64;
    let f = vm.frames(4096, 4096);
    vm.gpu_4k(va, f, true); // no CPU page: would be a violation
    assert_eq!(
        vm.cmd(&job(1, &[op(OpKind::Fill, va, 0, 64, 1)])).status,
        Status::Ok
    );
    let s = vm.cmd(&stats()).stats;
    assert_eq!((s.accesses_checked, s.violations), (0, 0));
    assert_eq!(s.unchecked_accesses, 1);
    wait_for(
        || vm.stats_file()["svm"]["unchecked_accesses"] == 1,
        "unchecked accesses in the stats file",
        10,
    );
}

/// Strict (the default): SET_AS without a CPU page table is refused, and
/// CPU walk errors are counted in STATS and in device-stats.json.
#[test]
fn strict_checker_refuses_cpu_root_0_and_exports_walk_errors() {
    let mut vm = Vm::new(BIN, "strict", 32, &[]);
    let g = vm.gpu_root;
    let r = vm.cmd(&set_as(g, 0, 4));
    assert_eq!(
        (r.status, r.error),
        (Status::Error, Some(ErrorCode::Malformed))
    );
    let c = vm.cpu_root;
    assert_eq!(vm.cmd(&set_as(g, c, 4)).status, Status::Ok);
    let va = 0x6000_0000_0000u64;
    let f = vm.frames(4096, 4096);
    vm.gpu_4k(va, f, true);
    // The CPU's PML4 entry for `va` points outside guest RAM.
    let e = vm.cpu_root + 8 * vgpu_device::layout::x86::index(va, 4);
    vm.put(e, (1 << 40) | vgpu_device::layout::x86::PRESENT);
    assert_eq!(
        vm.cmd(&job(1, &[op(OpKind::Fill, va, 0, 64, 1)])).status,
        Status::Ok
    );
    let s = vm.cmd(&stats()).stats;
    assert_eq!((s.cpu_walk_errors, s.unchecked_accesses), (1, 0));
    wait_for(
        || vm.stats_file()["svm"]["cpu_walk_errors"] == 1,
        "walk errors in the stats file",
        10,
    );
}

#[test]
fn bad_inputs_through_the_queue() {
    let mut vm = vm("bad", 32, &[]);
    // Truncated SUBMIT_3D, unknown context, too-small answer buffer.
    let mut sub = build::submit_3d(CTX, &nop());
    sub.truncate(30);
    let r = vm.raw(&sub, 256);
    assert_eq!(CtrlHdr::parse(&r).unwrap().type_, ty::RESP_ERR_UNSPEC);
    let r = vm.raw(&build::submit_3d(77, &nop()), 256);
    assert_eq!(
        CtrlHdr::parse(&r).unwrap().type_,
        ty::RESP_ERR_INVALID_CONTEXT_ID
    );
    let r = vm.raw(
        &build::submit_3d(CTX, &job(1, &[op(OpKind::Read, 0, 0, 8, 0)])),
        100,
    );
    assert_eq!(CtrlHdr::parse(&r).unwrap().type_, ty::RESP_ERR_UNSPEC);
    // Protocol errors.
    for (cmd, code) in [
        (vec![9u8, 0, 0], ErrorCode::Malformed),
        (vec![42, 0, 0, 0, 0, 0, 0, 0], ErrorCode::UnknownCmd),
        (set_as(1 << 44, 0, 4), ErrorCode::BadAddress),
        (invalidate(0x123, 0x1000), ErrorCode::Misaligned),
        (
            job(1, &[op(OpKind::Fill, 0, 0, 1 << 33, 0)]),
            ErrorCode::TooBig,
        ),
        (
            job(1, &[op(OpKind::AtomicAdd, 4, 0, 8, 0)]),
            ErrorCode::Misaligned,
        ),
        (resume(99), ErrorCode::UnknownJob),
        (abort(99), ErrorCode::UnknownJob),
    ] {
        let r = vm.cmd(&cmd);
        assert_eq!((r.status, r.error), (Status::Error, Some(code)), "{cmd:?}");
    }
    // A GPU table pointing outside guest RAM.
    let e = vm.gpu_entry(0x40_0000, 2);
    vm.put(e, (1 << 46) | gpu::VALID);
    let r = vm.cmd(&job(2, &[op(OpKind::Read, 0, 0x40_0000, 8, 0)]));
    assert_eq!(r.error, Some(ErrorCode::BadAddress));
    let s = vm.cmd(&stats()).stats;
    assert_eq!(s.errors, 9);
    // The daemon is still fine.
    assert_eq!(vm.cmd(&nop()).status, Status::Ok);
}

#[test]
fn ctx_destroy_aborts_a_running_job() {
    let mut vm = vm("destroy", 96, &["--access-delay-us", "50"]);
    let a = 0x7c00_0000_0000u64;
    vm.map(a, 16 * MB, true);
    let t_job = vm.send(&job(1, &[op(OpKind::Read, 0, a, 16 * MB, 0)]));
    std::thread::sleep(Duration::from_millis(50));
    let r = vm.raw(&build::ctx_destroy(CTX), 64);
    assert_eq!(CtrlHdr::parse(&r).unwrap().type_, ty::RESP_OK_NODATA);
    let r = vm.answer(t_job);
    assert_eq!(
        (r.status, r.error),
        (Status::Error, Some(ErrorCode::Aborted))
    );
}

/// With --reconnect, a frontend that goes away (here with a job running)
/// is followed by the next one on the same socket, with all state reset:
/// no context survives (context 1 can be created again), the new guest
/// memory is used, and the counters go on.
#[test]
fn reconnect_serves_the_next_frontend_with_state_reset() {
    let mut vm = vm("reconnect", 64, &["--reconnect", "--access-delay-us", "50"]);
    let a = 0x7c00_0000_0000u64;
    vm.map(a, 16 * MB, true);
    let _running = vm.send(&job(1, &[op(OpKind::Read, 0, a, 16 * MB, 0)]));
    wait_for(
        || vm.cmd(&stats()).stats.tlb_misses > 0,
        "the job to start",
        60,
    );
    for round in 0..2 {
        vm = vm.reconnect(32);
        // Context 1 was created again by connect(): the old one is gone.
        let (g, c) = (vm.gpu_root, vm.cpu_root);
        assert_eq!(vm.cmd(&set_as(g, c, 4)).status, Status::Ok);
        let va = 0x1000_0000u64;
        let f = vm.map(va, 4096, false);
        let r = vm.cmd(&job(1, &[op(OpKind::Fill, va, 0, 4096, 0x5a)]));
        assert_eq!(r.status, Status::Ok, "round {round}: {r:?}");
        assert_eq!(vm.read(f, 4096), vec![0x5a; 4096]);
        wait_for(
            || vm.stats_file()["connections"] == 2 + round,
            "the connection count",
            10,
        );
        assert_eq!(vm.stats_file()["contexts_active"], 1);
    }
    assert!(
        vm.daemon.child.try_wait().unwrap().is_none(),
        "daemon exited"
    );
}

/// A virtio reset stops the rings with GET_VRING_BASE, and the reset is a
/// guarantee for the driver only if no job touches guest memory once the
/// daemon has answered it (DESIGN.md, "When the device is slow or gone").
/// A FILL whose every access lasts 200 ms (its write lands at the end of
/// the access) is stopped in the middle of one: what it has written when
/// GET_VRING_BASE returns is all it ever writes (checked again once the
/// daemon counts the job as aborted, i.e. its worker has let it go).
#[test]
fn get_vring_base_stops_every_job_access_before_it_is_answered() {
    let mut vm = vm("vringbase", 64, &["--access-delay-us", "200000"]);
    let a = 0x7c00_0000_0000u64;
    let f = vm.map(a, 2 * MB, true);
    let _job = vm.send(&job(1, &[op(OpKind::Fill, a, 0, 2 * MB, 0xab)]));
    // The first page is written: the job is inside its second access.
    wait_for(|| vm.read(f, 1) == [0xab], "the fill to start", 60);
    vm.fe.get_vring_base(0).unwrap();
    let filled = |vm: &Vm| vm.read(f, 2 << 20).iter().filter(|&&b| b == 0xab).count();
    let at_stop = filled(&vm);
    assert!(at_stop < 2 << 20, "the job was not stopped");
    wait_for(
        || vm.stats_file()["svm"]["jobs_aborted"] == 1,
        "the job to end",
        60,
    );
    assert_eq!(
        filled(&vm),
        at_stop,
        "a job wrote guest memory after GET_VRING_BASE was answered"
    );
}
