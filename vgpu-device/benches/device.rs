//! `cargo bench -p vgpu-device`: the daemon's costs, measured through a
//! real vhost-user connection and virtqueue (not timed tests: figures only).
//!
//! - copy bandwidth of a COPY job through the GPU page table (4 KiB pages)
//!   versus a plain memcpy of the same bytes;
//! - the coherence checker: the same job with `--checker strict` vs `off`;
//! - INVALIDATE round trip versus NOP round trip.
//!
//! Runs in well under a minute (release build).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::*;
use vgpu_device::protocol::{build::*, OpKind, Status};

const BIN: &str = env!("CARGO_BIN_EXE_vgpu-device");
const COPY: u64 = 32 * MB;
const REPS: usize = 5;
const ROUND_TRIPS: usize = 3000;

fn setup(name: &str, checker: &str) -> (Vm, u64, u64) {
    let mut vm = Vm::new(BIN, name, 128, &["--checker", checker]);
    let (g, c) = (vm.gpu_root, vm.cpu_root);
    assert_eq!(vm.cmd(&set_as(g, c, 4)).status, Status::Ok);
    let a = 0x7f00_0000_0000u64;
    let b = 0x7f00_4000_0000u64;
    let fa = vm.map(a, COPY, false);
    vm.map(b, COPY, false);
    vm.write(fa, &rand_bytes(COPY as usize, 1));
    (vm, a, b)
}

/// Best time of REPS COPY jobs of COPY bytes.
fn copy_job(vm: &mut Vm, a: u64, b: u64) -> Duration {
    let mut best = Duration::MAX;
    for i in 0..REPS {
        let t = Instant::now();
        let r = vm.cmd(&job(i as u64, &[op(OpKind::Copy, b, a, COPY, 0)]));
        let d = t.elapsed();
        assert_eq!(r.status, Status::Ok);
        best = best.min(d);
    }
    best
}

fn memcpy_best() -> Duration {
    let src = rand_bytes(COPY as usize, 2);
    let mut dst = vec![0u8; COPY as usize];
    let mut best = Duration::MAX;
    for _ in 0..REPS {
        let t = Instant::now();
        dst.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&mut dst);
        best = best.min(t.elapsed());
    }
    best
}

fn gbps(d: Duration) -> f64 {
    COPY as f64 / d.as_secs_f64() / 1e9
}

fn round_trip(vm: &mut Vm, cmd: &[u8]) -> Duration {
    for _ in 0..200 {
        vm.cmd(cmd);
    }
    let t = Instant::now();
    for _ in 0..ROUND_TRIPS {
        assert_eq!(vm.cmd(cmd).status, Status::Ok);
    }
    t.elapsed() / ROUND_TRIPS as u32
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` would too: any
    // other filter argument is ignored.
    let t0 = Instant::now();
    let (mut strict, a, b) = setup("bench-strict", "strict");
    let t_strict = copy_job(&mut strict, a, b);
    let (mut off, a2, b2) = setup("bench-off", "off");
    let t_off = copy_job(&mut off, a2, b2);
    let t_memcpy = memcpy_best();
    println!(
        "copy of {} MiB (4 KiB GPU pages), best of {REPS}:",
        COPY >> 20
    );
    println!(
        "  memcpy                      {:8.2} ms  {:6.2} GB/s",
        t_memcpy.as_secs_f64() * 1e3,
        gbps(t_memcpy)
    );
    println!(
        "  GPU page table, checker off {:8.2} ms  {:6.2} GB/s  ({:.2}x memcpy time)",
        t_off.as_secs_f64() * 1e3,
        gbps(t_off),
        t_off.as_secs_f64() / t_memcpy.as_secs_f64()
    );
    println!(
        "  GPU page table, strict      {:8.2} ms  {:6.2} GB/s  ({:.2}x memcpy time)",
        t_strict.as_secs_f64() * 1e3,
        gbps(t_strict),
        t_strict.as_secs_f64() / t_memcpy.as_secs_f64()
    );
    println!(
        "checker strict / off: {:.2}x the job time",
        t_strict.as_secs_f64() / t_off.as_secs_f64()
    );

    let r_nop = round_trip(&mut off, &nop());
    let r_inv = round_trip(&mut off, &invalidate(a2, 2 * MB));
    println!("round trips through the control queue, mean of {ROUND_TRIPS}:");
    println!("  NOP        {:8.1} us", r_nop.as_secs_f64() * 1e6);
    println!(
        "  INVALIDATE {:8.1} us  ({:.2}x NOP)",
        r_inv.as_secs_f64() * 1e6,
        r_inv.as_secs_f64() / r_nop.as_secs_f64()
    );
    println!("(bench took {:.1} s)", t0.elapsed().as_secs_f64());
}
