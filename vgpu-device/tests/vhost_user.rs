//! End to end: the real `vgpu-device` binary driven by a vhost-user frontend
//! written with the `vhost` crate (what QEMU does), over shared memfd guest
//! memory, with virtqueues laid out by virtio-queue's mock driver.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use vgpu_device::virtio_gpu::{build, ty, CtrlHdr, FLAG_FENCE};
use vgpu_uapi::VGPU_SVM_CAPSET_ID;
use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vm_memory::{Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

const MEM_SIZE: usize = 4 << 20;
const QSIZE: u16 = 16;
const CURSOR_Q: u64 = 0x8000;
const REQ: u64 = 0x10_0000;
const RESP: u64 = 0x20_0000;

struct Daemon {
    child: Child,
    dir: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start_daemon(name: &str) -> (Daemon, PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("vgpu-device-e2e-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("vgd.sock");
    let stats = dir.join("stats.json");
    let child = Command::new(env!("CARGO_BIN_EXE_vgpu-device"))
        .arg("--socket-path")
        .arg(&sock)
        .arg("--stats")
        .arg(&stats)
        .arg("--max-contexts")
        .arg("2")
        .spawn()
        .unwrap();
    let d = Daemon { child, dir };
    wait_for(|| sock.exists(), "socket");
    (d, sock, stats)
}

fn wait_for(mut f: impl FnMut() -> bool, what: &str) {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn memfd(size: usize) -> File {
    // SAFETY: memfd_create with a static NUL-terminated name; the fd is
    // checked and owned by the File.
    let fd = unsafe { libc::memfd_create(c"vgpu-e2e".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0);
    let f = unsafe { File::from_raw_fd(fd) };
    f.set_len(size as u64).unwrap();
    f
}

/// A driver-side split virtqueue in guest memory, laid out as the virtio
/// spec says (virtio-queue's MockSplitQueue overlaps its avail and used
/// rings, which breaks as soon as EVENT_IDX fields are used).
struct DriverQueue<'a> {
    mem: &'a GuestMemoryMmap,
    desc: u64,
    avail: u64,
    used: u64,
    next_desc: u16,
    avail_idx: u16,
}

impl<'a> DriverQueue<'a> {
    fn new(mem: &'a GuestMemoryMmap, base: u64) -> Self {
        let desc = base;
        let avail = desc + 16 * QSIZE as u64;
        let used = (avail + 6 + 2 * QSIZE as u64 + 3) & !3;
        // Zero the rings (flags, idx, used_event / avail_event included).
        mem.write_slice(&vec![0u8; 0x1000], GuestAddress(base))
            .unwrap();
        Self {
            mem,
            desc,
            avail,
            used,
            next_desc: 0,
            avail_idx: 0,
        }
    }

    /// Adds a chain of (addr, len, device-writable) buffers.
    fn add(&mut self, bufs: &[(u64, u32, bool)]) {
        let head = self.next_desc;
        for (i, &(addr, len, write)) in bufs.iter().enumerate() {
            let idx = self.next_desc;
            self.next_desc += 1;
            let last = i + 1 == bufs.len();
            let flags: u16 = if last { 0 } else { 1 } | if write { 2 } else { 0 };
            let mut d = Vec::with_capacity(16);
            d.extend_from_slice(&addr.to_le_bytes());
            d.extend_from_slice(&len.to_le_bytes());
            d.extend_from_slice(&flags.to_le_bytes());
            d.extend_from_slice(&(idx + 1).to_le_bytes());
            self.mem
                .write_slice(&d, GuestAddress(self.desc + 16 * idx as u64))
                .unwrap();
        }
        let slot = self.avail + 4 + 2 * (self.avail_idx % QSIZE) as u64;
        self.mem
            .write_obj(head.to_le(), GuestAddress(slot))
            .unwrap();
        self.avail_idx += 1;
        // used_event (EVENT_IDX): interrupt me when the next buffer is used.
        let used_event = self.used_idx();
        self.mem
            .write_obj(
                used_event.to_le(),
                GuestAddress(self.avail + 4 + 2 * QSIZE as u64),
            )
            .unwrap();
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        self.mem
            .write_obj(self.avail_idx.to_le(), GuestAddress(self.avail + 2))
            .unwrap();
    }

    fn used_idx(&self) -> u16 {
        u16::from_le(self.mem.read_obj(GuestAddress(self.used + 2)).unwrap())
    }

    /// (id, len) of used element `i`.
    fn used_elem(&self, i: u16) -> (u32, u32) {
        let a = self.used + 4 + 8 * (i % QSIZE) as u64;
        let id: u32 = self.mem.read_obj(GuestAddress(a)).unwrap();
        let len: u32 = self.mem.read_obj(GuestAddress(a + 4)).unwrap();
        (u32::from_le(id), u32::from_le(len))
    }
}

struct Vq {
    call: EventFd,
    kick: EventFd,
}

fn setup_queue(fe: &Frontend, idx: usize, q: &DriverQueue<'_>, host: u64) -> Vq {
    let call = EventFd::new(EFD_NONBLOCK).unwrap();
    let kick = EventFd::new(EFD_NONBLOCK).unwrap();
    fe.set_vring_num(idx, QSIZE).unwrap();
    fe.set_vring_addr(
        idx,
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
    fe.set_vring_base(idx, 0).unwrap();
    fe.set_vring_call(idx, &call).unwrap();
    fe.set_vring_kick(idx, &kick).unwrap();
    Vq { call, kick }
}

fn wait_call(vq: &Vq) {
    wait_for(|| vq.call.read().is_ok(), "used-buffer notification");
}

fn read(m: &GuestMemoryMmap, addr: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0; len];
    m.read_slice(&mut v, GuestAddress(addr)).unwrap();
    v
}

fn stats_json(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

#[test]
fn handshake_capsets_contexts_and_disconnect() {
    run_main("main", 0);
}

#[test]
fn same_with_event_idx_and_indirect_desc() {
    run_main("eventidx", (1 << 29) | (1 << 28));
}

fn run_main(name: &str, extra_features: u64) {
    let (mut daemon, sock, stats) = start_daemon(name);
    let mut fe = Frontend::connect(&sock, 2).unwrap();
    fe.set_owner().unwrap();
    let features = fe.get_features().unwrap();
    assert_ne!(features & (1 << 40), 0, "RING_RESET must be offered");
    let pf = fe.get_protocol_features().unwrap();
    assert!(pf.contains(VhostUserProtocolFeatures::MQ | VhostUserProtocolFeatures::CONFIG));
    fe.set_protocol_features(VhostUserProtocolFeatures::MQ | VhostUserProtocolFeatures::CONFIG)
        .unwrap();
    assert_eq!(fe.get_queue_num().unwrap(), 2);
    // VERSION_1 | RING_RESET | PROTOCOL_FEATURES | VIRGL, as QEMU passes them.
    fe.set_features((1 << 32) | (1 << 40) | (1 << 30) | 1 | extra_features)
        .unwrap();
    let (_, cfg) = fe
        .get_config(
            0,
            16,
            vhost::vhost_user::message::VhostUserConfigFlags::WRITABLE,
            &[0; 16],
        )
        .unwrap();
    assert_eq!(&cfg[12..16], &1u32.to_le_bytes(), "num_capsets");

    let file = memfd(MEM_SIZE);
    let mem = GuestMemoryMmap::<()>::from_ranges_with_files([(
        GuestAddress(0),
        MEM_SIZE,
        Some(FileOffset::new(file.try_clone().unwrap(), 0)),
    )])
    .unwrap();
    let host = mem.get_host_address(GuestAddress(0)).unwrap() as u64;
    fe.set_mem_table(&[VhostUserMemoryRegionInfo {
        guest_phys_addr: 0,
        memory_size: MEM_SIZE as u64,
        userspace_addr: host,
        mmap_offset: 0,
        mmap_handle: file.as_raw_fd(),
    }])
    .unwrap();

    let mut ctrl = DriverQueue::new(&mem, 0);
    let mut cursor = DriverQueue::new(&mem, CURSOR_Q);
    let cvq = setup_queue(&fe, 0, &ctrl, host);
    let kvq = setup_queue(&fe, 1, &cursor, host);
    fe.set_vring_enable(0, true).unwrap();
    fe.set_vring_enable(1, true).unwrap();

    // Control queue: GET_CAPSET_INFO, GET_CAPSET (fenced), CTX_CREATE, SUBMIT_3D.
    let reqs = [
        build::get_capset_info(0),
        build::fenced(build::get_capset(VGPU_SVM_CAPSET_ID, 1), 99, None),
        build::ctx_create(1, VGPU_SVM_CAPSET_ID, "e2e"),
        build::submit_3d(1, &[0u8; 16]),
    ];
    for (i, r) in reqs.iter().enumerate() {
        let a = REQ + i as u64 * 0x1000;
        mem.write_slice(r, GuestAddress(a)).unwrap();
        ctrl.add(&[
            (a, r.len() as u32, false),
            (RESP + i as u64 * 0x1000, 256, true),
        ]);
    }
    cvq.kick.write(1).unwrap();
    wait_call(&cvq);
    wait_for(|| ctrl.used_idx() == 4, "4 used control buffers");
    let used: Vec<_> = (0..4).map(|i| ctrl.used_elem(i)).collect();
    assert_eq!(used, [(0, 40), (2, 80), (4, 24), (6, 24 + 176)]);
    let types: Vec<u32> = (0..4)
        .map(|i| {
            CtrlHdr::parse(&read(&mem, RESP + i * 0x1000, 24))
                .unwrap()
                .type_
        })
        .collect();
    assert_eq!(
        types,
        [
            ty::RESP_OK_CAPSET_INFO,
            ty::RESP_OK_CAPSET,
            ty::RESP_OK_NODATA,
            ty::RESP_OK_NODATA
        ]
    );
    let h = CtrlHdr::parse(&read(&mem, RESP + 0x1000, 24)).unwrap();
    assert_eq!((h.flags, h.fence_id), (FLAG_FENCE, 99));
    assert_eq!(&read(&mem, RESP + 0x1000 + 24, 4), b"VSVM");

    // A second batch after the first completed (exercises EVENT_IDX re-arming).
    let r = build::ctx_destroy(1);
    mem.write_slice(&r, GuestAddress(REQ + 0x5000)).unwrap();
    ctrl.add(&[
        (REQ + 0x5000, r.len() as u32, false),
        (RESP + 0x5000, 64, true),
    ]);
    cvq.kick.write(1).unwrap();
    wait_call(&cvq);
    wait_for(|| ctrl.used_idx() == 5, "5th used control buffer");
    assert_eq!(
        CtrlHdr::parse(&read(&mem, RESP + 0x5000, 24))
            .unwrap()
            .type_,
        ty::RESP_OK_NODATA
    );

    // Cursor queue: consumed and returned.
    let mc = build::move_cursor();
    mem.write_slice(&mc, GuestAddress(REQ + 0x8000)).unwrap();
    cursor.add(&[(REQ + 0x8000, mc.len() as u32, false)]);
    kvq.kick.write(1).unwrap();
    wait_call(&kvq);
    assert_eq!(cursor.used_idx(), 1);

    // The stats file is refreshed at most every 100 ms.
    wait_for(
        || stats_json(&stats)["cursor_commands"] == 1,
        "stats file refresh",
    );
    let s = stats_json(&stats);
    assert_eq!(s["commands"], 5);
    assert_eq!(s["contexts_created"], 1);
    assert_eq!(s["cursor_commands"], 1);

    // Disconnect: the daemon exits 0 and writes its final stats.
    drop(fe);
    let t = Instant::now();
    let status = loop {
        if let Some(st) = daemon.child.try_wait().unwrap() {
            break st;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "daemon did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success());
    let s = stats_json(&stats);
    assert_eq!(s["contexts_active"], 0);
    assert_eq!(s["connections"], 1);
}

#[test]
fn sigterm_exits_cleanly() {
    let (mut daemon, sock, stats) = start_daemon("sigterm");
    // SAFETY: signalling our own child by pid.
    unsafe { libc::kill(daemon.child.id() as i32, libc::SIGTERM) };
    let t = Instant::now();
    let status = loop {
        if let Some(st) = daemon.child.try_wait().unwrap() {
            break st;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "daemon did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success());
    assert!(!sock.exists());
    assert!(stats.exists());
}
