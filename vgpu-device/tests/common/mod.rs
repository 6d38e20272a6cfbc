//! A test driver for the real `vgpu-device` daemon: a vhost-user frontend
//! (the `vhost` crate, as QEMU), guest memory in a memfd, a split control
//! virtqueue with many requests in flight (answered out of order), and
//! builders for GPU and x86-64 page tables in that memory. Shared by the
//! end-to-end tests and the benchmarks.
#![allow(dead_code)]

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use vgpu_device::layout::{gpu, x86};
use vgpu_device::protocol::SvmResp;
use vgpu_device::virtio_gpu::{build, ty, CtrlHdr, CTRL_HDR_SIZE};
use vgpu_uapi::VGPU_SVM_CAPSET_ID;
use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vm_memory::{Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

pub const QSIZE: u16 = 64;
const CTRL_Q: u64 = 0;
const CURSOR_Q: u64 = 0x4000;
/// Request/response slots: one page each, request at +0, answer at +0x800.
const SLOTS: u64 = 0x10_0000;
const NSLOTS: u16 = QSIZE / 2;
/// Page tables are allocated from here...
const TABLES: u64 = 0x20_0000;
/// ... up to here; data frames after.
const DATA: u64 = 0x100_0000;
pub const CTX: u32 = 1;
pub const MB: u64 = 1 << 20;

pub struct Daemon {
    pub child: Child,
    pub dir: PathBuf,
    pub sock: PathBuf,
    pub stats: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn wait_for(mut f: impl FnMut() -> bool, what: &str, secs: u64) {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

pub fn start_daemon(bin: &str, name: &str, extra: &[&str]) -> Daemon {
    let dir = std::env::temp_dir().join(format!("vgpu-device-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("vgd.sock");
    let stats = dir.join("stats.json");
    let child = Command::new(bin)
        .arg("--socket-path")
        .arg(&sock)
        .arg("--stats")
        .arg(&stats)
        .args(extra)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or("warn".into()),
        )
        .spawn()
        .unwrap();
    let d = Daemon {
        child,
        dir,
        sock: sock.clone(),
        stats,
    };
    wait_for(|| sock.exists(), "socket", 10);
    d
}

pub fn stats_json(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn memfd(size: usize) -> File {
    // SAFETY: memfd_create with a static NUL-terminated name; the fd is
    // checked and owned by the File.
    let fd = unsafe { libc::memfd_create(c"vgpu-test".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0);
    // SAFETY: fd is a fresh, owned file descriptor.
    let f = unsafe { File::from_raw_fd(fd) };
    f.set_len(size as u64).unwrap();
    f
}

/// A request in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ticket(u16);

/// The driver side of the control queue.
pub struct Ctrl {
    mem: GuestMemoryMmap,
    desc: u64,
    avail: u64,
    used: u64,
    free: Vec<u16>,
    avail_idx: u16,
    last_used: u16,
    done: HashMap<u16, u32>,
    pub kick: EventFd,
    pub call: EventFd,
}

impl Ctrl {
    fn new(mem: &GuestMemoryMmap, base: u64) -> Self {
        mem.write_slice(&vec![0u8; 0x4000], GuestAddress(base))
            .unwrap();
        Self {
            mem: mem.clone(),
            desc: base,
            avail: base + 16 * QSIZE as u64,
            used: base + 0x1000,
            free: (0..NSLOTS).rev().collect(),
            avail_idx: 0,
            last_used: 0,
            done: HashMap::new(),
            kick: EventFd::new(EFD_NONBLOCK).unwrap(),
            call: EventFd::new(EFD_NONBLOCK).unwrap(),
        }
    }

    fn write_desc(&self, idx: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let mut d = Vec::with_capacity(16);
        d.extend_from_slice(&addr.to_le_bytes());
        d.extend_from_slice(&len.to_le_bytes());
        d.extend_from_slice(&flags.to_le_bytes());
        d.extend_from_slice(&next.to_le_bytes());
        self.mem
            .write_slice(&d, GuestAddress(self.desc + 16 * idx as u64))
            .unwrap();
    }

    /// Queues a request of `req` bytes with `resp_len` writable bytes.
    pub fn submit(&mut self, req: &[u8], resp_len: u32) -> Ticket {
        let slot = self.free.pop().expect("no free request slot");
        let base = SLOTS + slot as u64 * 0x1000;
        assert!(req.len() <= 0x800 && resp_len <= 0x800);
        self.mem.write_slice(req, GuestAddress(base)).unwrap();
        self.mem
            .write_slice(&vec![0xeeu8; resp_len as usize], GuestAddress(base + 0x800))
            .unwrap();
        let head = slot * 2;
        self.write_desc(head, base, req.len() as u32, 1, head + 1);
        self.write_desc(head + 1, base + 0x800, resp_len, 2, 0);
        let a = self.avail + 4 + 2 * (self.avail_idx % QSIZE) as u64;
        self.mem.write_obj(head.to_le(), GuestAddress(a)).unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        // used_event: interrupt me on every used buffer.
        self.mem
            .write_obj(
                self.last_used.to_le(),
                GuestAddress(self.avail + 4 + 2 * QSIZE as u64),
            )
            .unwrap();
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        self.mem
            .write_obj(self.avail_idx.to_le(), GuestAddress(self.avail + 2))
            .unwrap();
        self.kick.write(1).unwrap();
        Ticket(head)
    }

    fn used_idx(&self) -> u16 {
        u16::from_le(self.mem.read_obj(GuestAddress(self.used + 2)).unwrap())
    }

    /// Harvests used elements; returns the order in which heads completed.
    pub fn poll(&mut self) -> Vec<Ticket> {
        let mut order = Vec::new();
        let idx = self.used_idx();
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        while self.last_used != idx {
            let a = self.used + 4 + 8 * (self.last_used % QSIZE) as u64;
            let id = u32::from_le(self.mem.read_obj(GuestAddress(a)).unwrap());
            let len = u32::from_le(self.mem.read_obj(GuestAddress(a + 4)).unwrap());
            self.done.insert(id as u16, len);
            order.push(Ticket(id as u16));
            self.last_used = self.last_used.wrapping_add(1);
        }
        order
    }

    pub fn is_done(&mut self, t: Ticket) -> bool {
        self.poll();
        self.done.contains_key(&t.0)
    }

    /// Waits for `t` (spinning), frees its slot, returns the answer bytes.
    pub fn wait(&mut self, t: Ticket, secs: u64) -> Vec<u8> {
        let start = Instant::now();
        let mut spins = 0u32;
        while !self.is_done(t) {
            assert!(
                start.elapsed() < Duration::from_secs(secs),
                "request {t:?} not answered"
            );
            spins += 1;
            if spins > 1000 {
                std::thread::sleep(Duration::from_micros(50));
            } else {
                std::hint::spin_loop();
            }
        }
        let len = self.done.remove(&t.0).unwrap();
        let slot = t.0 / 2;
        let mut v = vec![0; len as usize];
        self.mem
            .read_slice(&mut v, GuestAddress(SLOTS + slot as u64 * 0x1000 + 0x800))
            .unwrap();
        self.free.push(slot);
        v
    }
}

/// The daemon, a connected frontend, guest memory and a control queue.
pub struct Vm {
    pub daemon: Daemon,
    pub fe: Frontend,
    pub mem: GuestMemoryMmap,
    pub ctrl: Ctrl,
    _file: File,
    next_table: u64,
    next_data: u64,
    pub gpu_root: u64,
    pub cpu_root: u64,
}

impl Vm {
    /// Starts a daemon (`extra` arguments), connects with EVENT_IDX and
    /// INDIRECT_DESC, `mem_mb` MiB of guest memory, creates context CTX.
    pub fn new(bin: &str, name: &str, mem_mb: usize, extra: &[&str]) -> Self {
        Self::connect(start_daemon(bin, name, extra), mem_mb)
    }

    /// Disconnects (dropping the frontend and the guest memory) and
    /// connects again to the same daemon, like a restarted QEMU.
    pub fn reconnect(self, mem_mb: usize) -> Self {
        let Vm { daemon, fe, .. } = self;
        drop(fe);
        Self::connect(daemon, mem_mb)
    }

    /// Connects to a running daemon (see [`Vm::new`]).
    pub fn connect(daemon: Daemon, mem_mb: usize) -> Self {
        let mut fe = Frontend::connect(&daemon.sock, 2).unwrap();
        fe.set_owner().unwrap();
        fe.get_features().unwrap();
        fe.get_protocol_features().unwrap();
        fe.set_protocol_features(VhostUserProtocolFeatures::MQ | VhostUserProtocolFeatures::CONFIG)
            .unwrap();
        fe.set_features((1 << 32) | (1 << 40) | (1 << 30) | 1 | (1 << 29) | (1 << 28))
            .unwrap();
        let size = mem_mb << 20;
        let file = memfd(size);
        let mem = GuestMemoryMmap::<()>::from_ranges_with_files([(
            GuestAddress(0),
            size,
            Some(FileOffset::new(file.try_clone().unwrap(), 0)),
        )])
        .unwrap();
        let host = mem.get_host_address(GuestAddress(0)).unwrap() as u64;
        fe.set_mem_table(&[VhostUserMemoryRegionInfo {
            guest_phys_addr: 0,
            memory_size: size as u64,
            userspace_addr: host,
            mmap_offset: 0,
            mmap_handle: file.as_raw_fd(),
        }])
        .unwrap();
        let ctrl = Ctrl::new(&mem, CTRL_Q);
        let cursor = Ctrl::new(&mem, CURSOR_Q);
        for (i, q) in [(0usize, &ctrl), (1, &cursor)] {
            fe.set_vring_num(i, QSIZE).unwrap();
            fe.set_vring_addr(
                i,
                &VringConfigData {
                    queue_max_size: QSIZE,
                    queue_size: QSIZE,
                    flags: 0,
                    desc_table_addr: host + q.desc,
                    used_ring_addr: host + q.used,
                    avail_ring_addr: host + q.avail,
                    log_addr: None,
                },
            )
            .unwrap();
            fe.set_vring_base(i, 0).unwrap();
            fe.set_vring_call(i, &q.call).unwrap();
            fe.set_vring_kick(i, &q.kick).unwrap();
            fe.set_vring_enable(i, true).unwrap();
        }
        let mut vm = Self {
            daemon,
            fe,
            mem,
            ctrl,
            _file: file,
            next_table: TABLES,
            next_data: DATA,
            gpu_root: 0,
            cpu_root: 0,
        };
        let r = vm.raw(&build::ctx_create(CTX, VGPU_SVM_CAPSET_ID, "test"), 64);
        assert_eq!(CtrlHdr::parse(&r).unwrap().type_, ty::RESP_OK_NODATA);
        vm.gpu_root = vm.table();
        vm.cpu_root = vm.table();
        vm
    }

    /// One request, waited for.
    pub fn raw(&mut self, req: &[u8], resp_len: u32) -> Vec<u8> {
        let t = self.ctrl.submit(req, resp_len);
        self.ctrl.wait(t, 60)
    }

    /// Sends an SVM command on CTX without waiting.
    pub fn send(&mut self, cmd: &[u8]) -> Ticket {
        self.ctrl.submit(&build::submit_3d(CTX, cmd), 256)
    }

    /// Waits for an SVM answer.
    pub fn answer(&mut self, t: Ticket) -> SvmResp {
        let b = self.ctrl.wait(t, 120);
        let h = CtrlHdr::parse(&b).unwrap();
        assert_eq!(h.type_, ty::RESP_OK_NODATA);
        assert_eq!(b.len(), CTRL_HDR_SIZE + vgpu_device::protocol::RESP_SIZE);
        SvmResp::decode(&b[CTRL_HDR_SIZE..]).unwrap()
    }

    pub fn cmd(&mut self, cmd: &[u8]) -> SvmResp {
        let t = self.send(cmd);
        self.answer(t)
    }

    /// A zeroed page for a page table.
    pub fn table(&mut self) -> u64 {
        let t = self.next_table;
        self.next_table += 4096;
        assert!(self.next_table <= DATA, "out of page-table pages");
        self.mem.write_slice(&[0u8; 4096], GuestAddress(t)).unwrap();
        t
    }

    /// `n` bytes of data frames, `align` aligned.
    pub fn frames(&mut self, n: u64, align: u64) -> u64 {
        let f = (self.next_data + align - 1) & !(align - 1);
        self.next_data = f + n;
        assert!(
            self.next_data <= self.mem.last_addr().0 + 1,
            "out of guest memory"
        );
        f
    }

    fn get(&self, a: u64) -> u64 {
        u64::from_le(self.mem.read_obj(GuestAddress(a)).unwrap())
    }

    pub fn put(&self, a: u64, v: u64) {
        self.mem.write_obj(v.to_le(), GuestAddress(a)).unwrap();
    }

    /// Address of the GPU entry for `va` at `level`, allocating tables.
    pub fn gpu_entry(&mut self, va: u64, level: u32) -> u64 {
        let mut table = self.gpu_root;
        for l in ((level + 1)..=gpu::LEVELS).rev() {
            let a = table + gpu::index(va, l) * 8;
            let e = self.get(a);
            table = if e & gpu::VALID == 0 {
                let t = self.table();
                self.put(a, t | gpu::VALID);
                t
            } else {
                e & gpu::ADDR_MASK
            };
        }
        table + gpu::index(va, level) * 8
    }

    /// Address of the CPU (4-level) entry for `va` at `level`, allocating.
    pub fn cpu_entry(&mut self, va: u64, level: u32) -> u64 {
        let mut table = self.cpu_root;
        for l in ((level + 1)..=4).rev() {
            let a = table + x86::index(va, l) * 8;
            let e = self.get(a);
            table = if e & x86::PRESENT == 0 {
                let t = self.table();
                self.put(a, t | x86::PRESENT | x86::RW | x86::USER);
                t
            } else {
                e & x86::ADDR_MASK
            };
        }
        table + x86::index(va, level) * 8
    }

    pub fn gpu_4k(&mut self, va: u64, frame: u64, write: bool) -> u64 {
        let a = self.gpu_entry(va, 1);
        self.put(a, frame | gpu::VALID | if write { gpu::WRITE } else { 0 });
        a
    }

    pub fn gpu_2m(&mut self, va: u64, frame: u64, write: bool) -> u64 {
        let a = self.gpu_entry(va, 2);
        self.put(
            a,
            frame | gpu::VALID | gpu::LARGE | if write { gpu::WRITE } else { 0 },
        );
        a
    }

    pub fn cpu_4k(&mut self, va: u64, frame: u64, write: bool) -> u64 {
        let a = self.cpu_entry(va, 1);
        self.put(
            a,
            frame | x86::PRESENT | x86::USER | if write { x86::RW } else { 0 },
        );
        a
    }

    pub fn cpu_2m(&mut self, va: u64, frame: u64, write: bool) -> u64 {
        let a = self.cpu_entry(va, 2);
        self.put(
            a,
            frame | x86::PRESENT | x86::USER | x86::PS | if write { x86::RW } else { 0 },
        );
        a
    }

    /// Maps `[va, va + n)` to fresh frames for both the GPU and the CPU
    /// (2 MiB pages when `large`), writable. Returns the first frame.
    pub fn map(&mut self, va: u64, n: u64, large: bool) -> u64 {
        let page = if large { 2 * MB } else { 4096 };
        let f = self.frames(n, page);
        for off in (0..n).step_by(page as usize) {
            if large {
                self.gpu_2m(va + off, f + off, true);
                self.cpu_2m(va + off, f + off, true);
            } else {
                self.gpu_4k(va + off, f + off, true);
                self.cpu_4k(va + off, f + off, true);
            }
        }
        f
    }

    pub fn write(&self, pa: u64, b: &[u8]) {
        self.mem.write_slice(b, GuestAddress(pa)).unwrap();
    }

    pub fn read(&self, pa: u64, n: usize) -> Vec<u8> {
        let mut v = vec![0; n];
        self.mem.read_slice(&mut v, GuestAddress(pa)).unwrap();
        v
    }

    pub fn stats_file(&self) -> serde_json::Value {
        stats_json(&self.daemon.stats)
    }
}

pub fn rand_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(n);
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(n);
    v
}
