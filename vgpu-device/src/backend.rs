//! The vhost-user glue: a `VhostUserBackend` for QEMU's `vhost-user-gpu-pci`.
//!
//! This file only moves bytes between virtqueues and [`Device`]; device
//! behaviour lives in `device.rs`. QEMU 10.0 quirks handled here:
//! - `set_gpu_socket` must succeed (QEMU sends VHOST_USER_GPU_SET_SOCKET at
//!   DRIVER_OK and drops the connection if it is refused). We keep the socket
//!   and never send on it: there is no scanout.
//! - QEMU forwards the guest's acked features verbatim in SET_FEATURES, and
//!   the crate rejects bits we did not offer: so we offer every transport bit
//!   a Linux guest may ack on this device (VERSION_1, INDIRECT_DESC,
//!   EVENT_IDX, RING_RESET).
//! - QEMU derives the guest-visible VIRGL/EDID bits from ours: we offer VIRGL
//!   (CTX_CREATE/SUBMIT_3D are implemented) and EDID (an empty one; without it
//!   QEMU prints "EDID requested but the backend doesn't support it").
//! - `exit_event` is implemented, or dropping the daemon after a disconnect
//!   deadlocks on the worker thread.
//!
//! Deferred answers (VGPU_SVM JOB/RESUME) complete out of order from the
//! job workers through a [`ChainResponder`]: it writes the answer into the
//! chain's writable buffers and, under the vring lock, adds the used element
//! and asks the queue whether the driver wants an interrupt (EVENT_IDX
//! `used_event` suppression is evaluated under the same lock as every other
//! `add_used`, so the queue's bookkeeping stays exact). A [`Gate`] generation
//! makes answers of a queue that was reset or stopped vanish instead of
//! landing in the next incarnation of the ring.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use log::{debug, info, warn};
use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost::vhost_user::GpuBackend;
use vhost_user_backend::{VhostUserBackend, VringRwLock, VringT};
use virtio_bindings::virtio_config::{VIRTIO_F_RING_RESET, VIRTIO_F_VERSION_1};
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use virtio_queue::desc::split::Descriptor;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{
    Bytes, GuestAddress, GuestAddressSpace, GuestMemory, GuestMemoryAtomic, GuestMemoryBackend,
    GuestMemoryMmap, GuestMemoryRegion, Permissions,
};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier,
};

use crate::context::Responder;
use crate::device::{ChainError, Device, Reply, NUM_CAPSETS};
use crate::stats::StatsFile;
use crate::virtio_gpu::{Config, F_CONTEXT_INIT, F_EDID, F_VIRGL};

/// Queue indexes of virtio-gpu.
pub const CONTROL_QUEUE: u16 = 0;
pub const CURSOR_QUEUE: u16 = 1;
pub const NUM_QUEUES: usize = 2;
/// Largest queue the device accepts (QEMU uses 256/64 for control, 16 for cursor).
pub const MAX_QUEUE_SIZE: usize = 1024;
/// Largest request the device reads from one descriptor chain.
pub const MAX_REQUEST_SIZE: usize = 1 << 20;

/// Virtio features the device offers.
pub const VIRTIO_FEATURES: u64 = (1 << VIRTIO_F_VERSION_1)
    | (1 << VIRTIO_RING_F_INDIRECT_DESC)
    | (1 << VIRTIO_RING_F_EVENT_IDX)
    | (1u64 << VIRTIO_F_RING_RESET)
    | (1 << F_VIRGL)
    | (1 << F_EDID)
    | (1 << F_CONTEXT_INIT)
    | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();

/// Names of the feature bits, for the handshake log.
pub fn feature_names(features: u64) -> String {
    const NAMES: &[(u32, &str)] = &[
        (F_VIRGL, "VIRGL"),
        (F_EDID, "EDID"),
        (F_CONTEXT_INIT, "CONTEXT_INIT"),
        (VIRTIO_RING_F_INDIRECT_DESC, "INDIRECT_DESC"),
        (VIRTIO_RING_F_EVENT_IDX, "EVENT_IDX"),
        (30, "PROTOCOL_FEATURES"),
        (VIRTIO_F_VERSION_1, "VERSION_1"),
        (VIRTIO_F_RING_RESET, "RING_RESET"),
    ];
    let mut out: Vec<String> = Vec::new();
    let mut rest = features;
    for &(bit, name) in NAMES {
        if features & (1u64 << bit) != 0 {
            out.push(name.to_string());
            rest &= !(1u64 << bit);
        }
    }
    if rest != 0 {
        out.push(format!("other:{rest:#x}"));
    }
    out.join(" ")
}

/// Which virtqueue a chain came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueKind {
    Control,
    Cursor,
}

/// The device-writable buffers of a chain.
pub type Writable = Vec<(GuestAddress, usize)>;

/// Makes the responder of a deferred answer from the chain's writable buffers.
pub type DeferFn<'a> = dyn FnMut(Writable) -> Box<dyn Responder> + 'a;

/// Scatters `resp` over `writable`; returns the bytes written.
pub fn scatter<M: GuestMemory + ?Sized>(
    mem: &M,
    writable: &[(GuestAddress, usize)],
    resp: &[u8],
) -> Result<usize, usize> {
    let mut written = 0usize;
    for &(addr, len) in writable {
        if written == resp.len() {
            break;
        }
        let n = len.min(resp.len() - written);
        if mem.write_slice(&resp[written..written + n], addr).is_err() {
            return Err(written);
        }
        written += n;
    }
    Ok(written)
}

/// Handles one descriptor chain: gathers the device-readable bytes, hands
/// them to the device, scatters the response over the device-writable
/// buffers. Returns the number of bytes written (the used length), or None
/// when the answer is deferred (`defer` made its responder). Never panics on
/// guest-controlled input.
pub fn process_chain<M, I>(
    mem: &M,
    chain: I,
    device: &mut Device,
    kind: QueueKind,
    defer: &mut DeferFn<'_>,
) -> Option<u32>
where
    M: GuestMemory + ?Sized,
    I: IntoIterator<Item = Descriptor>,
{
    let mut req: Vec<u8> = Vec::new();
    let mut writable: Vec<(GuestAddress, usize)> = Vec::new();
    let mut err: Option<ChainError> = None;
    for desc in chain {
        let len = desc.len() as usize;
        if len == 0 {
            continue;
        }
        if desc.is_write_only() {
            if mem.check_range(desc.addr(), len, Permissions::Write) {
                writable.push((desc.addr(), len));
            } else {
                err.get_or_insert(ChainError::BadGuestAddress);
            }
            continue;
        }
        if !writable.is_empty() || req.len() + len > MAX_REQUEST_SIZE {
            err.get_or_insert(ChainError::Malformed);
            continue;
        }
        let start = req.len();
        req.resize(start + len, 0);
        if mem.read_slice(&mut req[start..], desc.addr()).is_err() {
            req.truncate(start);
            err.get_or_insert(ChainError::BadGuestAddress);
        }
    }
    let capacity: usize = writable.iter().map(|&(_, l)| l).sum();
    let resp = match (kind, err) {
        (QueueKind::Control, None) => {
            let mut make = || defer(writable.clone());
            match device.handle_control_with(&req, capacity, &mut make) {
                Reply::Now(b) => b,
                Reply::Later => return None,
            }
        }
        (QueueKind::Control, Some(e)) => device.chain_error(e, &req, capacity),
        (QueueKind::Cursor, None) => {
            device.handle_cursor(&req);
            Vec::new()
        }
        (QueueKind::Cursor, Some(e)) => {
            device.note_chain_error(e);
            Vec::new()
        }
    };
    let written = scatter(mem, &writable, &resp).unwrap_or_else(|w| {
        device.note_chain_error(ChainError::BadGuestAddress);
        w
    });
    Some(written as u32)
}

/// Processes every available chain of `queue`. Returns how many were used
/// now (deferred ones are used later by their responders). `defer` gets the
/// chain's head index and writable buffers.
pub fn process_queue<M>(
    queue: &mut Queue,
    mem: &M,
    device: &mut Device,
    kind: QueueKind,
    defer: &mut dyn FnMut(u16, Writable) -> Box<dyn Responder>,
) -> usize
where
    M: GuestMemory,
{
    let chains: Vec<_> = match queue.iter(mem) {
        Ok(it) => it.collect(),
        Err(e) => {
            crate::guest_warn!("queue", "{kind:?} queue: {e}");
            device.note_queue_error();
            return 0;
        }
    };
    let mut used = 0;
    for chain in chains {
        let head = chain.head_index();
        let mut make = |w: Writable| defer(head, w);
        let Some(len) = process_chain(mem, chain, device, kind, &mut make) else {
            continue;
        };
        used += 1;
        if let Err(e) = queue.add_used(mem, head, len) {
            crate::guest_warn!("queue", "{kind:?} queue: add_used({head}): {e}");
            device.note_queue_error();
        }
    }
    used
}

/// Answers of a queue incarnation: a responder of an older generation
/// (the queue was reset or stopped since) drops its answer.
#[derive(Debug, Default)]
pub struct Gate {
    generation: Mutex<u64>,
}

impl Gate {
    /// Invalidates every responder made so far.
    pub fn bump(&self) {
        *self.generation.lock().unwrap_or_else(|p| p.into_inner()) += 1;
    }

    pub fn generation(&self) -> u64 {
        *self.generation.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Completes one deferred control-queue chain from a job worker.
pub struct ChainResponder {
    pub head: u16,
    pub writable: Writable,
    pub mem: GuestMem,
    pub vring: VringRwLock<GuestMem>,
    pub gate: Arc<Gate>,
    pub generation: u64,
    pub event_idx: bool,
}

impl Responder for ChainResponder {
    fn respond(self: Box<Self>, bytes: &[u8]) {
        // Held across the whole completion: a reset waits for it, and a
        // completion after a reset sees the new generation.
        let gen = self
            .gate
            .generation
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if *gen != self.generation {
            debug!(
                "answer for chain {} dropped: the queue was reset",
                self.head
            );
            return;
        }
        let mem = self.mem.memory();
        let len = scatter(&*mem, &self.writable, bytes).unwrap_or_else(|w| {
            crate::guest_warn!(
                "queue",
                "chain {}: answer buffers outside guest memory",
                self.head
            );
            w
        });
        let notify = {
            let mut state = self.vring.get_mut();
            let queue = state.get_queue_mut();
            if let Err(e) = queue.add_used(&*mem, self.head, len as u32) {
                crate::guest_warn!("queue", "control queue: add_used({}): {e}", self.head);
                return;
            }
            !self.event_idx || queue.needs_notification(&*mem).unwrap_or(true)
        };
        if notify {
            if let Err(e) = self.vring.signal_used_queue() {
                warn!("control queue: cannot signal: {e}");
            }
        }
        drop(gen);
    }
}

type GuestMem = GuestMemoryAtomic<GuestMemoryMmap>;

/// The vhost-user backend of vgpu-device.
pub struct VgpuBackend {
    device: Arc<Mutex<Device>>,
    gate: Arc<Gate>,
    mem: RwLock<Option<GuestMem>>,
    event_idx: AtomicBool,
    gpu_socket: Mutex<Option<GpuBackend>>,
    stats: Option<Arc<StatsFile>>,
    logged_offer: AtomicBool,
    logged_protocol: AtomicBool,
    logged_config: AtomicBool,
}

impl VgpuBackend {
    pub fn new(device: Arc<Mutex<Device>>, stats: Option<Arc<StatsFile>>) -> Self {
        Self {
            device,
            gate: Arc::new(Gate::default()),
            mem: RwLock::new(None),
            event_idx: AtomicBool::new(false),
            gpu_socket: Mutex::new(None),
            stats,
            logged_offer: AtomicBool::new(false),
            logged_protocol: AtomicBool::new(false),
            logged_config: AtomicBool::new(false),
        }
    }

    fn lock_device(&self) -> std::sync::MutexGuard<'_, Device> {
        // A panic elsewhere must not take the device down with it.
        self.device.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes the stats file if the counters changed.
    pub fn flush_stats(&self) {
        if let Some(s) = &self.stats {
            s.write_if_changed(&self.lock_device());
        }
    }

    fn process_vring(&self, vring: &VringRwLock<GuestMem>, kind: QueueKind) -> io::Result<()> {
        let Some(atomic_mem) = self.mem.read().unwrap_or_else(|p| p.into_inner()).clone() else {
            warn!("{kind:?} queue kicked before the memory table arrived");
            return Ok(());
        };
        let mem = atomic_mem.memory();
        let event_idx = self.event_idx.load(Ordering::Relaxed);
        let generation = self.gate.generation();
        let mut defer = |head: u16, writable: Writable| -> Box<dyn Responder> {
            Box::new(ChainResponder {
                head,
                writable,
                mem: atomic_mem.clone(),
                vring: vring.clone(),
                gate: self.gate.clone(),
                generation,
                event_idx,
            })
        };
        loop {
            if event_idx {
                vring.disable_notification().map_err(io::Error::other)?;
            }
            let (n, notify) = {
                let mut state = vring.get_mut();
                let queue = state.get_queue_mut();
                let n = process_queue(queue, &*mem, &mut self.lock_device(), kind, &mut defer);
                let notify =
                    n > 0 && (!event_idx || queue.needs_notification(&*mem).unwrap_or(true));
                (n, notify)
            };
            if notify {
                vring.signal_used_queue()?;
            }
            // Answers of jobs ended by this batch (CTX_DESTROY), now that the
            // vring is unlocked.
            let pending = self.lock_device().take_pending();
            for (c, r) in pending {
                c.complete(&r);
            }
            debug!("{kind:?} queue: {n} chain(s)");
            if !event_idx || !vring.enable_notification().map_err(io::Error::other)? {
                break;
            }
        }
        Ok(())
    }
}

impl VhostUserBackend for VgpuBackend {
    type Bitmap = ();
    type Vring = VringRwLock<GuestMem>;

    fn num_queues(&self) -> usize {
        NUM_QUEUES
    }

    fn max_queue_size(&self) -> usize {
        MAX_QUEUE_SIZE
    }

    fn features(&self) -> u64 {
        if !self.logged_offer.swap(true, Ordering::Relaxed) {
            info!(
                "offering features {VIRTIO_FEATURES:#x}: {}",
                feature_names(VIRTIO_FEATURES)
            );
        }
        VIRTIO_FEATURES
    }

    fn acked_features(&self, features: u64) {
        info!("features acked {features:#x}: {}", feature_names(features));
        self.lock_device().note_acked_features(features);
        self.flush_stats();
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        let f = VhostUserProtocolFeatures::MQ
            | VhostUserProtocolFeatures::CONFIG
            | VhostUserProtocolFeatures::REPLY_ACK;
        if !self.logged_protocol.swap(true, Ordering::Relaxed) {
            info!(
                "offering protocol features {:#x}: MQ CONFIG REPLY_ACK",
                f.bits()
            );
        }
        f
    }

    fn reset_device(&self) {
        info!("device reset by the frontend");
        self.gate.bump();
        self.lock_device().reset();
        self.flush_stats();
    }

    fn stop_vring(&self, queue_index: u32) -> io::Result<()> {
        if queue_index == u32::from(CONTROL_QUEUE) {
            // QEMU stops the queues when the guest resets the device (it sends
            // RESET_DEVICE only with that protocol feature, which we do not offer),
            // and a reset device has no state: end every job (nobody will read their
            // answers; drop any answer still on its way) and drop every context, so
            // that the driver probing it next starts afresh. (QEMU also stops the
            // queues when the VM is paused; vhost-user-gpu cannot be migrated, and a
            // driver sees a paused-and-resumed device as reset. That is the price of
            // never keeping guest-memory pointers of a driver that may be gone.)
            self.gate.bump();
            self.lock_device().reset();
            self.flush_stats();
            debug!("control queue stopped: device reset");
        }
        Ok(())
    }

    fn set_event_idx(&self, enabled: bool) {
        self.event_idx.store(enabled, Ordering::Relaxed);
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        let cfg = Config {
            num_capsets: NUM_CAPSETS,
            ..Default::default()
        }
        .to_bytes();
        if !self.logged_config.swap(true, Ordering::Relaxed) {
            info!("config read: num_capsets {NUM_CAPSETS}, num_scanouts 0");
        }
        let start = (offset as usize).min(cfg.len());
        let end = start.saturating_add(size as usize).min(cfg.len());
        let mut out = cfg[start..end].to_vec();
        // The frontend asked for `size` bytes: pad rather than come up short.
        out.resize(size as usize, 0);
        out
    }

    fn set_config(&self, offset: u32, buf: &[u8]) -> io::Result<()> {
        // events_clear: there are no display events to clear.
        debug!("config write at {offset}: {} bytes (ignored)", buf.len());
        Ok(())
    }

    fn update_memory(&self, mem: GuestMem) -> io::Result<()> {
        {
            let m = mem.memory();
            let total: u64 = m.iter().map(|r| r.len()).sum();
            info!(
                "guest memory: {} region(s), {} MiB",
                m.num_regions(),
                total >> 20
            );
        }
        self.lock_device().set_memory(mem.clone());
        *self.mem.write().unwrap_or_else(|p| p.into_inner()) = Some(mem);
        Ok(())
    }

    fn set_gpu_socket(&self, gpu_backend: GpuBackend) -> io::Result<()> {
        info!("GPU socket received (driver ready); no scanout, kept unused");
        *self.gpu_socket.lock().unwrap_or_else(|p| p.into_inner()) = Some(gpu_backend);
        Ok(())
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        match new_event_consumer_and_notifier(EventFlag::NONBLOCK) {
            Ok(pair) => Some(pair),
            Err(e) => {
                warn!("cannot create the worker exit event: {e}");
                None
            }
        }
    }

    fn handle_event(
        &self,
        device_event: u16,
        evset: EventSet,
        vrings: &[Self::Vring],
        _thread_id: usize,
    ) -> io::Result<()> {
        if evset != EventSet::IN {
            warn!("unexpected event set {evset:?} on event {device_event}");
            return Ok(());
        }
        let (vring, kind) = match device_event {
            CONTROL_QUEUE => (&vrings[0], QueueKind::Control),
            CURSOR_QUEUE => (&vrings[1], QueueKind::Cursor),
            other => {
                warn!("unknown device event {other}");
                return Ok(());
            }
        };
        // The stats file is not written here, on the queue's path: the
        // daemon's stats thread refreshes it (at most MIN_INTERVAL late).
        self.process_vring(vring, kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::DeviceConfig;
    use crate::virtio_gpu::{build, ty, CtrlHdr, FLAG_FENCE};
    use vgpu_uapi::VGPU_SVM_CAPSET_ID;
    use virtio_bindings::virtio_ring::{
        VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE,
    };
    use virtio_queue::desc::RawDescriptor;
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::GuestMemoryMmap;

    const REQ: u64 = 0x10_0000;
    const RESP: u64 = 0x20_0000;
    const MEM_SIZE: usize = 0x40_0000;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap()
    }

    fn rd(addr: u64, len: usize) -> RawDescriptor {
        RawDescriptor::from(Descriptor::new(addr, len as u32, 0, 0))
    }

    fn wr(addr: u64, len: usize) -> RawDescriptor {
        RawDescriptor::from(Descriptor::new(
            addr,
            len as u32,
            VRING_DESC_F_WRITE as u16,
            0,
        ))
    }

    fn read(m: &GuestMemoryMmap, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        m.read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
    }

    fn dev() -> Device {
        Device::new(DeviceConfig {
            max_contexts: 2,
            ..Default::default()
        })
    }

    fn no_defer(_: Writable) -> Box<dyn Responder> {
        unreachable!("no deferred answers here")
    }

    #[test]
    fn capset_query_through_a_chain() {
        let m = mem();
        let q = MockSplitQueue::new(&m, 16);
        let req = build::fenced(build::get_capset(VGPU_SVM_CAPSET_ID, 1), 77, None);
        m.write_slice(&req, GuestAddress(REQ)).unwrap();
        // Request split over two readable descriptors, response over two writable ones.
        let chain = q
            .build_desc_chain(&[
                rd(REQ, 10),
                rd(REQ + 10, req.len() - 10),
                wr(RESP, 30),
                wr(RESP + 0x1000, 100),
            ])
            .unwrap();
        let mut d = dev();
        let used = process_chain(&m, chain, &mut d, QueueKind::Control, &mut no_defer).unwrap();
        assert_eq!(used, 24 + 56);
        let mut resp = read(&m, RESP, 30);
        resp.extend(read(&m, RESP + 0x1000, 50));
        let h = CtrlHdr::parse(&resp).unwrap();
        assert_eq!(
            (h.type_, h.flags, h.fence_id),
            (ty::RESP_OK_CAPSET, FLAG_FENCE, 77)
        );
        assert_eq!(&resp[24..28], b"VSVM");
    }

    #[test]
    fn missing_response_buffer_is_not_executed() {
        let m = mem();
        let q = MockSplitQueue::new(&m, 16);
        let req = build::ctx_create(1, VGPU_SVM_CAPSET_ID, "x");
        m.write_slice(&req, GuestAddress(REQ)).unwrap();
        let chain = q.build_desc_chain(&[rd(REQ, req.len())]).unwrap();
        let mut d = dev();
        assert_eq!(
            process_chain(&m, chain, &mut d, QueueKind::Control, &mut no_defer).unwrap(),
            0
        );
        assert_eq!(d.stats().contexts_active, 0);
        assert_eq!(d.stats().errors.no_response_buffer, 1);
    }

    #[test]
    fn request_outside_guest_memory() {
        let m = mem();
        let q = MockSplitQueue::new(&m, 16);
        let chain = q
            .build_desc_chain(&[rd(MEM_SIZE as u64 - 8, 24), wr(RESP, 64)])
            .unwrap();
        let mut d = dev();
        assert_eq!(
            process_chain(&m, chain, &mut d, QueueKind::Control, &mut no_defer).unwrap(),
            24
        );
        assert_eq!(
            CtrlHdr::parse(&read(&m, RESP, 24)).unwrap().type_,
            ty::RESP_ERR_UNSPEC
        );
        assert_eq!(d.stats().errors.bad_guest_address, 1);
        // A response buffer outside guest memory: nothing is written.
        let req = build::get_display_info();
        m.write_slice(&req, GuestAddress(REQ)).unwrap();
        let chain = q
            .build_desc_chain(&[rd(REQ, 24), wr(u64::MAX - 100, 64)])
            .unwrap();
        assert_eq!(
            process_chain(&m, chain, &mut d, QueueKind::Control, &mut no_defer).unwrap(),
            0
        );
        assert_eq!(d.stats().errors.bad_guest_address, 2);
    }

    #[test]
    fn readable_after_writable_is_malformed() {
        let m = mem();
        let q = MockSplitQueue::new(&m, 16);
        let req = build::get_display_info();
        m.write_slice(&req, GuestAddress(REQ)).unwrap();
        let chain = q.build_desc_chain(&[wr(RESP, 64), rd(REQ, 24)]).unwrap();
        let mut d = dev();
        assert_eq!(
            process_chain(&m, chain, &mut d, QueueKind::Control, &mut no_defer).unwrap(),
            24
        );
        assert_eq!(
            CtrlHdr::parse(&read(&m, RESP, 24)).unwrap().type_,
            ty::RESP_ERR_UNSPEC
        );
        assert_eq!(d.stats().errors.malformed_chain, 1);
    }

    #[test]
    fn whole_queue_with_used_ring_and_indirect_chain() {
        let m = mem();
        let q = MockSplitQueue::new(&m, 16);
        let mut queue: Queue = q.create_queue().unwrap();
        // Chain 1 (descriptors 0,1): CTX_CREATE. Chain 2 (2,3): SUBMIT_3D.
        let c = build::ctx_create(4, VGPU_SVM_CAPSET_ID, "q");
        let s = build::submit_3d(4, &[9u8; 40]);
        m.write_slice(&c, GuestAddress(REQ)).unwrap();
        m.write_slice(&s, GuestAddress(REQ + 0x1000)).unwrap();
        let next = VRING_DESC_F_NEXT as u16;
        let w = VRING_DESC_F_WRITE as u16;
        let descs = [
            RawDescriptor::from(Descriptor::new(REQ, c.len() as u32, next, 1)),
            RawDescriptor::from(Descriptor::new(RESP, 24, w, 0)),
            RawDescriptor::from(Descriptor::new(REQ + 0x1000, s.len() as u32, next, 3)),
            RawDescriptor::from(Descriptor::new(RESP + 0x100, 200, w, 0)),
        ];
        q.add_desc_chains(&descs, 0).unwrap();
        // Chain 3: an indirect table at 0x30_0000 holding GET_DISPLAY_INFO.
        let table = 0x30_0000u64;
        let gdi = build::get_display_info();
        m.write_slice(&gdi, GuestAddress(REQ + 0x2000)).unwrap();
        m.write_obj(
            RawDescriptor::from(Descriptor::new(REQ + 0x2000, 24, next, 1)),
            GuestAddress(table),
        )
        .unwrap();
        m.write_obj(
            RawDescriptor::from(Descriptor::new(RESP + 0x1000, 408, w, 0)),
            GuestAddress(table + 16),
        )
        .unwrap();
        q.add_desc_chains(
            &[RawDescriptor::from(Descriptor::new(
                table,
                32,
                VRING_DESC_F_INDIRECT as u16,
                0,
            ))],
            4,
        )
        .unwrap();

        let mut d = dev();
        assert_eq!(
            process_queue(
                &mut queue,
                &m,
                &mut d,
                QueueKind::Control,
                &mut |_, _| unreachable!()
            ),
            3
        );
        assert_eq!(q.used().idx().load(), 3);
        let used: Vec<_> = (0..3)
            .map(|i| q.used().ring().ref_at(i).unwrap().load())
            .map(|e| (e.id(), e.len()))
            .collect();
        assert_eq!(used, vec![(0, 24), (2, 200), (4, 408)]);
        for (addr, t) in [
            (RESP, ty::RESP_OK_NODATA),
            (RESP + 0x100, ty::RESP_OK_NODATA),
            (RESP + 0x1000, ty::RESP_OK_DISPLAY_INFO),
        ] {
            assert_eq!(CtrlHdr::parse(&read(&m, addr, 24)).unwrap().type_, t);
        }
        assert_eq!(d.stats().submits, 1);
        // Nothing more to do.
        assert_eq!(
            process_queue(
                &mut queue,
                &m,
                &mut d,
                QueueKind::Control,
                &mut |_, _| unreachable!()
            ),
            0
        );
    }

    #[test]
    fn cursor_chains_are_returned() {
        let m = mem();
        let q = MockSplitQueue::new(&m, 16);
        let mut queue: Queue = q.create_queue().unwrap();
        let mc = build::move_cursor();
        m.write_slice(&mc, GuestAddress(REQ)).unwrap();
        q.add_desc_chains(&[rd(REQ, mc.len()), rd(REQ, 3)], 0)
            .unwrap();
        let mut d = dev();
        assert_eq!(
            process_queue(
                &mut queue,
                &m,
                &mut d,
                QueueKind::Cursor,
                &mut |_, _| unreachable!()
            ),
            2
        );
        assert_eq!(q.used().idx().load(), 2);
        assert_eq!(d.stats().cursor_commands, 2);
        assert_eq!(d.stats().errors.truncated_request, 1);
    }

    /// QEMU stops the control queue when the guest resets the device (it never sends
    /// RESET_DEVICE: the protocol feature is not offered). A reset device has no contexts:
    /// a driver that probes it again starts from context id 1 (seen in the fault-injection
    /// job: after a reset and a reload, every CTX_CREATE failed with INVALID_CONTEXT_ID).
    #[test]
    fn stopping_the_control_queue_drops_every_context() {
        use crate::virtio_gpu::{build, ty, CtrlHdr};
        let d = Arc::new(Mutex::new(dev()));
        let b = VgpuBackend::new(d.clone(), None);
        let create = |id| {
            let r = d.lock().unwrap().handle_control(&build::ctx_create(id, vgpu_uapi::VGPU_SVM_CAPSET_ID, "t"), 4096);
            CtrlHdr::parse(&r).unwrap().type_
        };
        assert_eq!(create(1), ty::RESP_OK_NODATA);
        assert_eq!(create(2), ty::RESP_OK_NODATA);
        b.stop_vring(u32::from(CURSOR_QUEUE)).unwrap();
        assert_eq!(d.lock().unwrap().contexts().count(), 2, "the cursor queue is not the device");
        b.stop_vring(u32::from(CONTROL_QUEUE)).unwrap();
        assert_eq!(d.lock().unwrap().contexts().count(), 0);
        assert_eq!(create(1), ty::RESP_OK_NODATA, "a re-probed driver starts again at id 1");
    }

    #[test]
    fn config_space() {
        let b = VgpuBackend::new(Arc::new(Mutex::new(dev())), None);
        let c = b.get_config(0, 16);
        assert_eq!(&c[12..16], &1u32.to_le_bytes());
        assert_eq!(b.get_config(12, 4), 1u32.to_le_bytes().to_vec());
        assert_eq!(b.get_config(100, 4), vec![0; 4]);
        assert_eq!(b.get_config(u32::MAX, 256), vec![0; 256]);
    }

    #[test]
    fn features_offered() {
        assert_ne!(VIRTIO_FEATURES & (1 << 40), 0, "RING_RESET");
        assert_ne!(VIRTIO_FEATURES & (1 << 32), 0, "VERSION_1");
        assert_ne!(VIRTIO_FEATURES & (1 << 30), 0, "PROTOCOL_FEATURES");
        assert_eq!(
            feature_names((1 << 40) | (1 << 0) | (1 << 50)),
            format!("VIRGL RING_RESET other:{:#x}", 1u64 << 50)
        );
    }
}
