//! `cargo bench -p vgpu-device`: the daemon's costs, measured through a
//! real vhost-user connection and virtqueue (not timed tests: figures only).
//!
//! - copy bandwidth of a COPY job through the GPU page table versus a plain
//!   memcpy of the same bytes, in three cases: 32 MiB in 4 KiB pages (more
//!   pages than the TLB holds: every page misses), 8 MiB in 4 KiB pages (a
//!   TLB-sized working set: after the first job every page hits), and 32
//!   MiB in 2 MiB pages;
//! - the coherence checker: the same jobs on a daemon with `--checker
//!   strict` and one with `off`, both running, their jobs alternated (and
//!   the first of each pair alternated too), so that machine noise hits
//!   both alike;
//! - INVALIDATE (2 MiB, with a full TLB) round trip versus NOP
//!   round trip, in alternating batches, each call timed: the median; and
//!   INVALIDATE of a 2 MiB range whose 512 entries are all cached (refilled
//!   by a job before each) versus the NOP sent right after it.
//!
//! Every figure has [`REPS`] repetitions (at least 7), the value and its
//! baseline interleaved: strict and off jobs alternated (the first of each
//! pair alternated too), and a memcpy of the same size after each pair; the
//! round trips in [`BATCHES`] alternating batches, one repetition per
//! batch (its median). Besides the human-readable lines, each figure is one
//! `vgpu-bench: {json}` line with `reps` and `baseline_reps`, the format of
//! the guest bench, which `cargo xtask bench` reads. `VGPU_DEVICE_BIN`
//! runs another build of the daemon under the same bench (to compare two
//! builds on a noisy machine, run them in turn, several times).
//!
//! Runs in a few seconds (release build).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::*;
use vgpu_device::protocol::{build::*, OpKind, Status};

const BIN: &str = env!("CARGO_BIN_EXE_vgpu-device");
const COPY: u64 = 32 * MB;
/// The TLB-resident case: 2 x 2048 pages, half the default 8192 entries.
const SMALL_COPY: u64 = 8 * MB;
const REPS: usize = 25;
const _: () = assert!(REPS >= 7);
const BATCHES: usize = 30;
const PER_BATCH: usize = 100;
/// INVALIDATEs of a range whose entries are all cached.
const POPULATED: usize = 200;

/// The daemon to measure: `VGPU_DEVICE_BIN` (to compare two builds with
/// the same bench), else the one built with the bench.
fn daemon_bin() -> String {
    std::env::var("VGPU_DEVICE_BIN").unwrap_or_else(|_| BIN.to_owned())
}

/// A COPY job's source and destination.
#[derive(Clone, Copy)]
struct Case {
    name: &'static str,
    src: u64,
    dst: u64,
    len: u64,
}

const CASES: [Case; 3] = [
    Case {
        name: "4k",
        src: 0x7f00_0000_0000,
        dst: 0x7f00_4000_0000,
        len: COPY,
    },
    Case {
        name: "4k-tlb",
        src: 0x7f00_8000_0000,
        dst: 0x7f00_c000_0000,
        len: SMALL_COPY,
    },
    Case {
        name: "2m",
        src: 0x7f01_0000_0000,
        dst: 0x7f01_4000_0000,
        len: COPY,
    },
];

/// A daemon with every case mapped (GPU and CPU page tables alike), and
/// the guest frames of each case's source and destination.
fn setup(name: &str, checker: &str) -> (Vm, Vec<(u64, u64)>) {
    let mut vm = Vm::new(&daemon_bin(), name, 256, &["--checker", checker]);
    let (g, c) = (vm.gpu_root, vm.cpu_root);
    assert_eq!(vm.cmd(&set_as(g, c, 4)).status, Status::Ok);
    let mut frames = Vec::new();
    for (i, case) in CASES.iter().enumerate() {
        let large = case.name == "2m";
        let fa = vm.map(case.src, case.len, large);
        let fb = vm.map(case.dst, case.len, large);
        vm.write(fa, &rand_bytes(case.len as usize, 1 + i as u64));
        frames.push((fa, fb));
    }
    (vm, frames)
}

/// Times of `n` copies of `len` bytes from guest frame `src` to `dst`, 4
/// KiB at a time, by memcpy in this process's mapping of guest memory
/// (the memory the device copies, in the device's page-sized steps).
fn guest_memcpy_times(vm: &Vm, src: u64, dst: u64, len: u64, n: usize) -> Vec<Duration> {
    use vm_memory::{GuestAddress, GuestMemoryBackend};
    let s = vm.mem.get_host_address(GuestAddress(src)).unwrap() as *const u8;
    let d = vm.mem.get_host_address(GuestAddress(dst)).unwrap();
    assert!(vm.mem.check_range(GuestAddress(src), len as usize));
    assert!(vm.mem.check_range(GuestAddress(dst), len as usize));
    (0..n)
        .map(|_| {
            let t = Instant::now();
            for off in (0..len as usize).step_by(4096) {
                // SAFETY: both ranges lie in the one region of guest memory
                // (checked above), which stays mapped while `vm` lives; the
                // daemon runs no job on them now; they do not overlap.
                unsafe {
                    std::ptr::copy_nonoverlapping(s.add(off), d.add(off), 4096);
                }
            }
            t.elapsed()
        })
        .collect()
}

/// CPU time of all the daemon's threads so far (`schedstat`: time on a
/// CPU, in ns), and time they waited for one: to tell the device's own cost
/// from the machine's noise (another job's VM preempting it).
fn daemon_cpu(vm: &Vm) -> (Duration, Duration) {
    let dir = format!("/proc/{}/task", vm.daemon.child.id());
    let (mut run, mut wait) = (0u64, 0u64);
    for t in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let s = std::fs::read_to_string(t.path().join("schedstat")).unwrap_or_default();
        let mut f = s.split_whitespace().map(|x| x.parse::<u64>().unwrap_or(0));
        run += f.next().unwrap_or(0);
        wait += f.next().unwrap_or(0);
    }
    (Duration::from_nanos(run), Duration::from_nanos(wait))
}

/// One COPY job: wall time, daemon CPU time, daemon run-queue wait.
#[derive(Clone, Copy, Default)]
struct Timed {
    wall: Duration,
    cpu: Duration,
    waited: Duration,
}

fn copy_job(vm: &mut Vm, id: u64, c: Case) -> Timed {
    let (r0, w0) = daemon_cpu(vm);
    let t = Instant::now();
    let r = vm.cmd(&job(id, &[op(OpKind::Copy, c.dst, c.src, c.len, 0)]));
    let wall = t.elapsed();
    let (r1, w1) = daemon_cpu(vm);
    assert_eq!(r.status, Status::Ok);
    Timed {
        wall,
        cpu: r1.saturating_sub(r0),
        waited: w1.saturating_sub(w0),
    }
}

fn walls(v: &[Timed]) -> Vec<Duration> {
    v.iter().map(|t| t.wall).collect()
}

fn cpus(v: &[Timed]) -> Vec<Duration> {
    v.iter().map(|t| t.cpu).collect()
}

fn min(v: &[Duration]) -> Duration {
    v.iter().copied().min().unwrap_or_default()
}

fn median(v: &[Duration]) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn gbps(len: u64, d: Duration) -> f64 {
    len as f64 / d.as_secs_f64() / 1e9
}

/// Strict and off times of `c`, jobs alternated, and a memcpy of the same
/// size after each pair; one warm-up job each (faults the daemon's mapping
/// in, fills the TLB).
fn copy_pair(strict: &mut Vm, off: &mut Vm, c: Case) -> (Vec<Timed>, Vec<Timed>, Vec<Duration>) {
    copy_job(strict, 0, c);
    copy_job(off, 0, c);
    let src = rand_bytes(c.len as usize, 2);
    let mut dst = vec![0u8; c.len as usize];
    dst.copy_from_slice(&src); // fault the pages in
    let (mut s, mut o, mut m) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..REPS {
        let id = 1 + i as u64;
        if i % 2 == 0 {
            s.push(copy_job(strict, id, c));
            o.push(copy_job(off, id, c));
        } else {
            o.push(copy_job(off, id, c));
            s.push(copy_job(strict, id, c));
        }
        let t = Instant::now();
        dst.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&mut dst);
        m.push(t.elapsed());
    }
    (s, o, m)
}

/// One `vgpu-bench: {json}` figure line (the guest bench's format): the
/// value's repetitions and, interleaved with them, the baseline's.
fn figure(name: &str, unit: &str, reps: &[f64], baseline: Option<(&str, &[f64])>, what: &str) {
    let med = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let (bn, bv, br, ratio) = match baseline {
        Some((n, b)) => {
            assert_eq!(b.len(), reps.len(), "{name}: unpaired repetitions");
            let r: Vec<f64> = reps.iter().zip(b).map(|(x, y)| x / y).collect();
            (
                serde_json::json!(n),
                serde_json::json!(med(b)),
                serde_json::json!(b),
                serde_json::json!(med(&r)),
            )
        }
        None => (
            serde_json::Value::Null,
            serde_json::Value::Null,
            serde_json::Value::Null,
            serde_json::Value::Null,
        ),
    };
    let mut j = serde_json::json!({
        "name": name,
        "value": med(reps),
        "unit": unit,
        "baseline_name": bn,
        "baseline_value": bv,
        "ratio": ratio,
        "params": {"what": what, "reps": reps.len()},
        "reps": reps,
    });
    if !br.is_null() {
        j["baseline_reps"] = br;
    }
    println!("vgpu-bench: {j}");
}

fn ms_of(v: &[Duration]) -> Vec<f64> {
    v.iter().map(|d| ms(*d)).collect()
}

fn gbps_of(len: u64, v: &[Duration]) -> Vec<f64> {
    v.iter().map(|d| gbps(len, *d)).collect()
}

/// min / median / max of `v` in ms, for the human-readable lines.
fn spread_ms(v: &[Duration]) -> String {
    let mut s = v.to_vec();
    s.sort();
    format!(
        "{:.2} / {:.2} / {:.2} ms",
        ms(s[0]),
        ms(s[s.len() / 2]),
        ms(s[s.len() - 1])
    )
}

/// Per-call round trips of `a` and `b`, in alternating batches.
fn round_trips(vm: &mut Vm, a: &[u8], b: &[u8]) -> (Vec<Duration>, Vec<Duration>) {
    for _ in 0..200 {
        vm.cmd(a);
        vm.cmd(b);
    }
    let (mut ta, mut tb) = (Vec::new(), Vec::new());
    for batch in 0..BATCHES {
        let b_first = batch % 2 == 1;
        for second in [false, true] {
            let (cmd, out) = if second == b_first {
                (a, &mut ta)
            } else {
                (b, &mut tb)
            };
            for _ in 0..PER_BATCH {
                let t = Instant::now();
                assert_eq!(vm.cmd(cmd).status, Status::Ok);
                out.push(t.elapsed());
            }
        }
    }
    (ta, tb)
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` would too: any
    // other filter argument is ignored.
    let t0 = Instant::now();
    let (mut strict, frames) = setup("bench-strict", "strict");
    let (mut off, _) = setup("bench-off", "off");
    println!("copy through the GPU page table, {REPS} reps each, strict and off jobs alternated, memcpy after each pair (min / median / max):");
    for c in CASES {
        eprintln!("device bench: case {} ({:.1} s)", c.name, t0.elapsed().as_secs_f64());
        let (st, ot, m) = copy_pair(&mut strict, &mut off, c);
        let (tag, what) = match c.name {
            "4k" => ("32m_4k", "32 MiB in 4 KiB pages (more pages than the TLB holds)"),
            "4k-tlb" => ("8m_4k_tlb", "8 MiB in 4 KiB pages, a TLB-sized working set (4096 of the 8192 entries: every translation hits after the warm-up)"),
            _ => ("32m_2m", "32 MiB in 2 MiB pages (GPU page table with 2 MiB leaves)"),
        };
        println!(
            "  case {:6} {what}\n    memcpy {}\n    checker off {}\n    strict {}\n    median run-queue wait of the daemon: off {:.2} ms, strict {:.2} ms",
            c.name,
            spread_ms(&m),
            spread_ms(&walls(&ot)),
            spread_ms(&walls(&st)),
            ms(median(&ot.iter().map(|t| t.waited).collect::<Vec<_>>())),
            ms(median(&st.iter().map(|t| t.waited).collect::<Vec<_>>())),
        );
        let chk = if c.name == "4k" {
            "host_checker_strict_vs_off".to_string()
        } else {
            format!("host_checker_strict_vs_off_{tag}")
        };
        figure(
            &chk,
            "ms",
            &ms_of(&walls(&st)),
            Some((&format!("host_checker_off_{tag}"), &ms_of(&walls(&ot)))),
            &format!("COPY job, {what}: daemon with --checker strict vs one with off, jobs alternated; wall time"),
        );
        figure(
            &format!("{chk}_cpu"),
            "ms",
            &ms_of(&cpus(&st)),
            Some((&format!("host_checker_off_cpu_{tag}"), &ms_of(&cpus(&ot)))),
            "the same jobs, daemon CPU time (all threads, schedstat): immune to another job preempting the daemon",
        );
        figure(
            &format!("host_copy_bandwidth_{tag}"),
            "GB/s",
            &gbps_of(c.len, &walls(&st)),
            Some((&format!("host_memcpy_bandwidth_{tag}"), &gbps_of(c.len, &m))),
            &format!("COPY job bandwidth, {what}, checker strict, vs a memcpy of the same size run right after each pair"),
        );
        figure(
            &format!("host_copy_bandwidth_{tag}_checker_off"),
            "GB/s",
            &gbps_of(c.len, &walls(&ot)),
            Some((&format!("host_memcpy_bandwidth_{tag}"), &gbps_of(c.len, &m))),
            "the same, checker off",
        );
    }
    let (fa, fb) = frames[0];
    let guest_memcpy = guest_memcpy_times(&strict, fa, fb, COPY, REPS);
    println!(
        "  memcpy in guest memory, 4 KiB at a time, 32 MiB: {}",
        spread_ms(&guest_memcpy)
    );

    // A full TLB (16384 pages through 8192 entries) for the INVALIDATEs.
    eprintln!("device bench: round trips ({:.1} s)", t0.elapsed().as_secs_f64());
    copy_job(&mut off, 100, CASES[0]);
    let (nop_t, inv_t) = round_trips(&mut off, &nop(), &invalidate(CASES[0].dst, 2 * MB));
    let n = BATCHES * PER_BATCH;
    // One repetition per pair of batches: each batch's median.
    let per_batch = |v: &[Duration]| -> Vec<f64> {
        v.chunks(PER_BATCH).map(|b| us(median(b))).collect()
    };
    let (nb, ib) = (per_batch(&nop_t), per_batch(&inv_t));
    println!("round trips through the control queue, {n} each in {BATCHES} alternating batches of {PER_BATCH}: median {:.1} us NOP, {:.1} us INVALIDATE ({:.2}x); min {:.1} / {:.1} us",
        us(median(&nop_t)), us(median(&inv_t)), median(&inv_t).as_secs_f64() / median(&nop_t).as_secs_f64(), us(min(&nop_t)), us(min(&inv_t)));
    figure(
        "host_invalidate_roundtrip",
        "us",
        &ib,
        Some(("host_nop_roundtrip", &nb)),
        &format!("control-queue round trip of INVALIDATE (2 MiB, full TLB) vs NOP; {BATCHES} alternating batches of {PER_BATCH}, one repetition = a batch's median"),
    );
    // The same INVALIDATE when its range's 512 entries are all cached: a
    // READ job (not timed) refills them before each.
    let c = CASES[0];
    let (mut inv_full, mut nop_after) = (Vec::new(), Vec::new());
    for i in 0..POPULATED {
        let r = off.cmd(&job(
            10_000 + i as u64,
            &[op(OpKind::Read, 0, c.dst, 2 * MB, 0)],
        ));
        assert_eq!(r.status, Status::Ok);
        for (cmd, out) in [
            (invalidate(c.dst, 2 * MB), &mut inv_full),
            (vgpu_device::protocol::build::nop(), &mut nop_after),
        ] {
            let t = Instant::now();
            assert_eq!(off.cmd(&cmd).status, Status::Ok);
            out.push(t.elapsed());
        }
    }
    let groups = POPULATED / 20;
    let per_group = |v: &[Duration]| -> Vec<f64> {
        v.chunks(POPULATED / groups).map(|b| us(median(b))).collect()
    };
    println!(
        "  INVALIDATE with its 512 entries cached {:8.1} us  ({:.2}x the NOP sent after it, {:.1} us), median of {POPULATED}",
        us(median(&inv_full)),
        median(&inv_full).as_secs_f64() / median(&nop_after).as_secs_f64(),
        us(median(&nop_after))
    );
    figure(
        "host_invalidate_roundtrip_populated",
        "us",
        &per_group(&inv_full),
        Some(("host_nop_roundtrip_after", &per_group(&nop_after))),
        &format!("INVALIDATE (2 MiB) whose 512 TLB entries are cached vs the NOP sent right after it; {groups} repetitions, each the median of 20 pairs"),
    );
    println!("(bench took {:.1} s)", t0.elapsed().as_secs_f64());
}
