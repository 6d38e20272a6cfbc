//! The device model: virtio-gpu command dispatch and the VGPU_SVM context
//! table, independent of vhost-user.
//!
//! The transport (`backend.rs`) gathers a request's readable bytes and the
//! capacity of its writable buffers, calls [`Device::handle_control_with`]
//! or [`Device::handle_cursor`], and writes back the bytes it gets, or, for a
//! VGPU_SVM JOB/RESUME, lets the job's worker answer later through a
//! [`Responder`]. Everything here works on plain byte buffers, so it is
//! unit-tested without a guest ([`Device::handle_control`] waits for
//! deferred answers).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use log::{debug, info};
use serde::Serialize;
use vgpu_uapi::{
    vgpu_svm_capset, VGPU_SVM_CAPSET_ID, VGPU_SVM_CAPSET_MAGIC, VGPU_SVM_CAPSET_VERSION,
    VGPU_SVM_FEATURE_CHECKER, VGPU_SVM_PROTOCOL_VERSION,
};

use crate::context::{Answer, CheckerMode, Completion, Context, EngineConfig, GuestMem, Responder};
use crate::counters::{ContextSnapshot, SvmCounters, SvmSnapshot};
use crate::pool::Pool;
use crate::protocol::{self, ErrorCode, Status, SvmResp, RESP_SIZE};
use crate::virtio_gpu::{
    parse_request, ty, type_name, Command, CtrlHdr, DisplayOne, ParseError, Response,
    CONTEXT_INIT_CAPSET_ID_MASK, CTRL_HDR_SIZE, MAX_SCANOUTS,
};

/// Size of the VGPU_SVM capset body (`struct vgpu_svm_capset`).
pub const CAPSET_SIZE: usize = std::mem::size_of::<vgpu_svm_capset>();
/// GPU virtual address bits: 4-level GPU page tables of 512 entries, 4 KiB pages.
pub const GPU_VA_BITS: u32 = 48;
/// Number of capsets the device exposes (config space `num_capsets`).
pub const NUM_CAPSETS: u32 = 1;

/// Device parameters fixed at start.
#[derive(Clone, Copy, Debug)]
pub struct DeviceConfig {
    /// How many VGPU_SVM contexts can exist at once.
    pub max_contexts: u32,
    /// Job engine and checker parameters.
    pub engine: EngineConfig,
}

impl Default for DeviceConfig {
    fn default() -> Self {
        Self {
            max_contexts: 16,
            engine: EngineConfig::default(),
        }
    }
}

/// How a control request was answered.
pub enum Reply {
    /// The response bytes (empty: no room for one; nothing was executed).
    Now(Vec<u8>),
    /// A JOB/RESUME: the responder will be called by the job's worker.
    Later,
}

/// Everything the `--stats` file shows.
#[derive(Serialize)]
pub struct StatsDoc<'a> {
    #[serde(flatten)]
    pub device: &'a Stats,
    pub checker: CheckerMode,
    /// Guest-triggered warnings not logged (rate limit, `ratelimit.rs`).
    pub warnings_suppressed: u64,
    /// The VGPU_SVM counters (`struct vgpu_svm_stats` names) and extras,
    /// device-wide (all contexts ever made).
    pub svm: SvmSnapshot,
    /// The live contexts' own counters (what STATS on each answers), by
    /// context id.
    pub svm_contexts: BTreeMap<u32, ContextSnapshot>,
}

/// Errors seen, by kind. Each is also logged.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct ErrorCounters {
    /// The type field is not a virtio-gpu command.
    pub unknown_command: u64,
    /// A request shorter than its command's layout.
    pub truncated_request: u64,
    /// A virtio-gpu command this device does not implement (2D, blobs, ...).
    pub unsupported_command: u64,
    /// Bad capset index/id/version, wrong context type, ...
    pub invalid_parameter: u64,
    /// Unknown, duplicate or zero context id.
    pub invalid_context: u64,
    /// Context table full.
    pub out_of_memory: u64,
    /// A descriptor chain without a (large enough) writable buffer for the
    /// response header: the command was not executed.
    pub no_response_buffer: u64,
    /// The response did not fit the writable buffers: ERR_UNSPEC was sent.
    pub response_too_small: u64,
    /// A descriptor pointing outside guest memory.
    pub bad_guest_address: u64,
    /// A readable descriptor after a writable one, or a request too large.
    pub malformed_chain: u64,
    /// Errors of the virtqueue itself (bad ring indexes, ...).
    pub queue_error: u64,
}

impl ErrorCounters {
    pub fn total(&self) -> u64 {
        self.unknown_command
            + self.truncated_request
            + self.unsupported_command
            + self.invalid_parameter
            + self.invalid_context
            + self.out_of_memory
            + self.no_response_buffer
            + self.response_too_small
            + self.bad_guest_address
            + self.malformed_chain
            + self.queue_error
    }
}

/// The device's counters, written as JSON to the `--stats` file.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Stats {
    /// Control-queue requests handled (including failed ones).
    pub commands: u64,
    /// Cursor-queue requests consumed.
    pub cursor_commands: u64,
    /// Requests by command name.
    pub by_command: BTreeMap<&'static str, u64>,
    /// Requests that carried VIRTIO_GPU_FLAG_FENCE.
    pub fenced: u64,
    pub errors: ErrorCounters,
    pub contexts_active: u64,
    pub contexts_created: u64,
    pub contexts_destroyed: u64,
    pub submits: u64,
    /// vhost-user frontends that connected.
    pub connections: u64,
    /// Virtio features acked by the frontend last (hex).
    pub acked_features: String,
}

/// Transport-level failures of a descriptor chain, reported by the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChainError {
    /// A descriptor's buffer is outside guest memory.
    BadGuestAddress,
    /// A device-readable descriptor follows a device-writable one, or the
    /// request is larger than the device accepts.
    Malformed,
}

/// The virtual GPU.
#[derive(Default)]
pub struct Device {
    cfg: DeviceConfig,
    contexts: BTreeMap<u32, Arc<Context>>,
    stats: Stats,
    /// Bumped on every change of `stats`.
    generation: u64,
    counters: Arc<SvmCounters>,
    /// Job workers shared by all contexts (made on first use).
    pool: Option<Arc<Pool>>,
    mem: Option<GuestMem>,
    /// Completions produced while handling a command (jobs aborted by
    /// CTX_DESTROY), to be run by the caller outside the virtqueue lock.
    pending: Vec<(Completion, SvmResp)>,
    /// VIRTIO_GPU_F_CONTEXT_INIT was acked: CTX_CREATE's `context_init` names
    /// the context type. Without it the field is not defined (QEMU 10.0's
    /// vhost-user-gpu never offers the bit to the guest) and every context
    /// is of the device's only type, VGPU_SVM.
    context_init: bool,
}

/// A responder that hands the bytes to a channel (the synchronous
/// [`Device::handle_control`]).
struct ChannelResponder(mpsc::Sender<Vec<u8>>);

impl Responder for ChannelResponder {
    fn respond(self: Box<Self>, bytes: &[u8]) {
        let _ = self.0.send(bytes.to_vec());
    }
}

/// How long [`Device::handle_control`] waits for a deferred answer.
const SYNC_WAIT: Duration = Duration::from_secs(120);

/// The VGPU_SVM capset body for `max_contexts` contexts (56 bytes, LE).
pub fn capset_body(max_contexts: u32) -> Vec<u8> {
    let mut b = Vec::with_capacity(CAPSET_SIZE);
    b.extend_from_slice(&VGPU_SVM_CAPSET_MAGIC.to_le_bytes());
    b.extend_from_slice(&VGPU_SVM_PROTOCOL_VERSION.to_le_bytes());
    b.extend_from_slice(&max_contexts.to_le_bytes());
    b.extend_from_slice(&GPU_VA_BITS.to_le_bytes());
    b.extend_from_slice(&u64::from(VGPU_SVM_FEATURE_CHECKER).to_le_bytes());
    b.extend_from_slice(&[0u8; 32]);
    debug_assert_eq!(b.len(), CAPSET_SIZE);
    b
}

impl Device {
    pub fn new(cfg: DeviceConfig) -> Self {
        Self {
            cfg,
            ..Default::default()
        }
    }

    pub fn config(&self) -> DeviceConfig {
        self.cfg
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Changes whenever the counters (device or SVM) change.
    pub fn generation(&self) -> u64 {
        self.generation.wrapping_add(self.counters.generation())
    }

    pub fn contexts(&self) -> impl Iterator<Item = &Arc<Context>> {
        self.contexts.values()
    }

    /// The VGPU_SVM counters (shared with the job workers).
    pub fn counters(&self) -> &Arc<SvmCounters> {
        &self.counters
    }

    /// What the stats file shows.
    pub fn stats_doc(&self) -> StatsDoc<'_> {
        StatsDoc {
            device: &self.stats,
            checker: self.cfg.engine.checker,
            warnings_suppressed: crate::ratelimit::total_suppressed(),
            svm: self.counters.snapshot(),
            svm_contexts: self
                .contexts
                .iter()
                .map(|(&id, c)| (id, c.counters().context_snapshot(&c.debug_name)))
                .collect(),
        }
    }

    /// The guest memory jobs access (from the transport's memory table).
    pub fn set_memory(&mut self, mem: GuestMem) {
        self.mem = Some(mem);
    }

    /// Completions to run outside the virtqueue lock (see `pending`).
    pub fn take_pending(&mut self) -> Vec<(Completion, SvmResp)> {
        std::mem::take(&mut self.pending)
    }

    /// Ends every job of every context (their answers are dropped: the
    /// transport stopped the queue); contexts stay.
    pub fn abort_all_jobs(&mut self) {
        let mut dropped = Vec::new();
        for c in self.contexts.values() {
            c.abort_jobs(&mut dropped);
        }
        if !dropped.is_empty() {
            info!("queue stopped: {} queued job(s) dropped", dropped.len());
        }
        self.bump();
    }

    fn bump(&mut self) {
        self.generation = self.generation.wrapping_add(1);
    }

    /// Device reset (virtio reset or a new frontend): all contexts go away.
    pub fn reset(&mut self) {
        if !self.contexts.is_empty() {
            info!("reset, dropping {} context(s)", self.contexts.len());
        }
        self.stats.contexts_destroyed += self.contexts.len() as u64;
        // Answers of aborted jobs are dropped: the queue is being reset.
        let mut dropped = Vec::new();
        for c in self.contexts.values() {
            c.destroy(&mut dropped);
        }
        self.pending.clear();
        self.contexts.clear();
        self.stats.contexts_active = 0;
        self.bump();
    }

    /// The frontend went away: reset, and drop its guest memory (the
    /// mapping of the old guest's RAM) until the next one sends its table.
    pub fn disconnect(&mut self) {
        self.reset();
        self.mem = None;
    }

    pub fn note_connection(&mut self) {
        self.stats.connections += 1;
        self.bump();
    }

    pub fn note_acked_features(&mut self, features: u64) {
        self.context_init = features & (1u64 << crate::virtio_gpu::F_CONTEXT_INIT) != 0;
        self.stats.acked_features = format!("{features:#x}");
        self.bump();
    }

    /// Counts a virtqueue-level error (reported by the transport).
    pub fn note_queue_error(&mut self) {
        self.stats.errors.queue_error += 1;
        self.bump();
    }

    /// Counts a descriptor chain the transport could not use.
    pub fn note_chain_error(&mut self, err: ChainError) {
        match err {
            ChainError::BadGuestAddress => self.stats.errors.bad_guest_address += 1,
            ChainError::Malformed => self.stats.errors.malformed_chain += 1,
        }
        self.bump();
    }

    /// Counts a chain that had no room for even a response header.
    pub fn note_no_response_buffer(&mut self) {
        self.stats.errors.no_response_buffer += 1;
        self.bump();
    }

    /// A control-queue chain that the transport could not read. Returns the
    /// ERR_UNSPEC response to write (headed by whatever request header could
    /// be read), or nothing when there is no room for one.
    pub fn chain_error(
        &mut self,
        err: ChainError,
        req_prefix: &[u8],
        resp_capacity: usize,
    ) -> Vec<u8> {
        self.stats.commands += 1;
        self.note_chain_error(err);
        crate::guest_warn!("request", "control request rejected: {err:?}");
        if resp_capacity < CTRL_HDR_SIZE {
            self.note_no_response_buffer();
            return Vec::new();
        }
        let hdr = CtrlHdr::parse(req_prefix).unwrap_or_default();
        Response::Err(ty::RESP_ERR_UNSPEC).encode(&hdr)
    }

    /// Handles one control-queue request and waits for its answer, deferred
    /// or not (for tests and tools: a JOB blocks until it completes or
    /// faults). Returns the response bytes (empty if there is no room for a
    /// response: the command is then not executed).
    pub fn handle_control(&mut self, req: &[u8], resp_capacity: usize) -> Vec<u8> {
        let (tx, rx) = mpsc::channel();
        let reply = self.handle_control_with(req, resp_capacity, &mut || {
            Box::new(ChannelResponder(tx.clone()))
        });
        for (c, r) in self.take_pending() {
            c.complete(&r);
        }
        match reply {
            Reply::Now(b) => b,
            Reply::Later => rx.recv_timeout(SYNC_WAIT).unwrap_or_default(),
        }
    }

    /// Handles one control-queue request. `resp_capacity` is the total size
    /// of the chain's writable buffers; `defer` makes the responder of a
    /// deferred answer (called only for an accepted JOB/RESUME). After
    /// releasing the queue, the caller runs [`Device::take_pending`].
    pub fn handle_control_with(
        &mut self,
        req: &[u8],
        resp_capacity: usize,
        defer: &mut dyn FnMut() -> Box<dyn Responder>,
    ) -> Reply {
        self.stats.commands += 1;
        self.bump();
        if resp_capacity < CTRL_HDR_SIZE {
            crate::guest_warn!("request", 
                "control request without a response buffer ({resp_capacity} writable bytes), dropped"
            );
            self.note_no_response_buffer();
            return Reply::Now(Vec::new());
        }
        let (hdr, resp) = match parse_request(req) {
            Ok(r) => {
                *self
                    .stats
                    .by_command
                    .entry(type_name(r.hdr.type_))
                    .or_default() += 1;
                if r.hdr.is_fenced() {
                    self.stats.fenced += 1;
                }
                let resp = match r.cmd {
                    Command::Submit3d { cmds } => {
                        match self.submit_3d(&r.hdr, cmds, resp_capacity, defer) {
                            Some(resp) => resp,
                            None => return Reply::Later,
                        }
                    }
                    cmd => self.execute(&r.hdr, cmd),
                };
                (r.hdr, resp)
            }
            Err(e) => (e.hdr().unwrap_or_default(), self.parse_error(e)),
        };
        let mut out = resp.encode(&hdr);
        if out.len() > resp_capacity {
            crate::guest_warn!(
                "request",
                "{} response of {} bytes does not fit {} writable bytes",
                type_name(hdr.type_),
                out.len(),
                resp_capacity
            );
            self.stats.errors.response_too_small += 1;
            out = Response::Err(ty::RESP_ERR_UNSPEC).encode(&hdr);
        }
        Reply::Now(out)
    }

    /// SUBMIT_3D on a VGPU_SVM context: one protocol command. Returns the
    /// response, or None when the answer is deferred (JOB, RESUME).
    fn submit_3d(
        &mut self,
        hdr: &CtrlHdr,
        cmds: &[u8],
        resp_capacity: usize,
        defer: &mut dyn FnMut() -> Box<dyn Responder>,
    ) -> Option<Response> {
        let id = hdr.ctx_id;
        if id == 0 && matches!(protocol::parse(cmds), Ok(protocol::SvmCommand::Stats)) {
            // Context 0 is no context: it carries STATS only (the
            // device-wide counters); anything else is an unknown context.
            self.stats.submits += 1;
            if let Some(err) = self.svm_answer_room(id, resp_capacity) {
                return Some(err);
            }
            self.counters
                .count_command(vgpu_uapi::vgpu_svm_cmd_type_VGPU_SVM_CMD_STATS);
            let resp = SvmResp {
                stats: self.counters.wire(),
                ..SvmResp::ok()
            };
            return Some(Response::OkNoDataWith(resp.encode().to_vec()));
        }
        let Some(ctx) = self.contexts.get(&id).cloned() else {
            return Some(self.invalid_context(format_args!("SUBMIT_3D to unknown ctx {id}")));
        };
        ctx.submits.fetch_add(1, Ordering::Relaxed);
        self.stats.submits += 1;
        if let Some(err) = self.svm_answer_room(id, resp_capacity) {
            return Some(err);
        }
        // Counted for the context (and so for the device).
        let c = ctx.counters_arc();
        let ty_field = cmds
            .get(0..4)
            .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        c.count_command(ty_field);
        let resp = match protocol::parse(cmds) {
            Err(rej) => {
                crate::guest_warn!(
                    "request",
                    "ctx {id}: {} rejected: {rej}",
                    protocol::cmd_name(ty_field)
                );
                SvmResp {
                    result: rej.entry.map_or(0, u64::from),
                    ..SvmResp::error(rej.code, 0)
                }
            }
            Ok(cmd) => {
                let name = cmd.name();
                let hdr = *hdr;
                let mut make = || Completion {
                    hdr,
                    responder: defer(),
                };
                match ctx.execute(cmd, self.mem.as_ref(), &mut make, &mut self.pending) {
                    Answer::Later => {
                        self.bump();
                        return None;
                    }
                    Answer::Now(r) => {
                        if r.status == Status::Error {
                            debug!("ctx {id}: {name} -> {:?}", r.error);
                        }
                        r
                    }
                }
            }
        };
        if resp.status == Status::Error && resp.error != Some(ErrorCode::Aborted) {
            c.inc(|s| &s.errors);
        }
        Some(Response::OkNoDataWith(resp.encode().to_vec()))
    }

    /// ERR_UNSPEC when the chain has no room for a VGPU_SVM answer (the
    /// command is then not executed).
    fn svm_answer_room(&mut self, id: u32, resp_capacity: usize) -> Option<Response> {
        if resp_capacity < CTRL_HDR_SIZE + RESP_SIZE {
            crate::guest_warn!("request",
                "SUBMIT_3D ctx {id}: {resp_capacity} writable bytes, the answer needs {}: not executed",
                CTRL_HDR_SIZE + RESP_SIZE
            );
            self.stats.errors.response_too_small += 1;
            return Some(Response::Err(ty::RESP_ERR_UNSPEC));
        }
        None
    }

    /// Handles one cursor-queue request: there is no cursor, so it is only
    /// counted (cursor requests have no response).
    pub fn handle_cursor(&mut self, req: &[u8]) {
        self.stats.cursor_commands += 1;
        match parse_request(req) {
            Ok(r) if matches!(r.cmd, Command::UpdateCursor | Command::MoveCursor) => {
                *self
                    .stats
                    .by_command
                    .entry(type_name(r.hdr.type_))
                    .or_default() += 1;
            }
            Ok(r) => {
                crate::guest_warn!(
                    "request",
                    "{} on the cursor queue, ignored",
                    type_name(r.hdr.type_)
                );
                self.stats.errors.invalid_parameter += 1;
            }
            Err(e) => {
                crate::guest_warn!("request", "cursor queue: {e}");
                self.count_parse_error(&e);
            }
        }
        self.bump();
    }

    fn count_parse_error(&mut self, e: &ParseError) {
        match e {
            ParseError::Truncated { .. } => self.stats.errors.truncated_request += 1,
            ParseError::UnknownCommand(_) => self.stats.errors.unknown_command += 1,
        }
    }

    fn parse_error(&mut self, e: ParseError) -> Response {
        crate::guest_warn!("request", "{e}");
        self.count_parse_error(&e);
        Response::Err(ty::RESP_ERR_UNSPEC)
    }

    fn invalid_parameter(&mut self, what: std::fmt::Arguments<'_>) -> Response {
        crate::guest_warn!("request", "{what} -> ERR_INVALID_PARAMETER");
        self.stats.errors.invalid_parameter += 1;
        Response::Err(ty::RESP_ERR_INVALID_PARAMETER)
    }

    fn invalid_context(&mut self, what: std::fmt::Arguments<'_>) -> Response {
        crate::guest_warn!("request", "{what} -> ERR_INVALID_CONTEXT_ID");
        self.stats.errors.invalid_context += 1;
        Response::Err(ty::RESP_ERR_INVALID_CONTEXT_ID)
    }

    fn execute(&mut self, hdr: &CtrlHdr, cmd: Command<'_>) -> Response {
        match cmd {
            Command::GetDisplayInfo => {
                debug!("GET_DISPLAY_INFO -> no scanouts");
                Response::OkDisplayInfo(Box::new([DisplayOne::default(); MAX_SCANOUTS]))
            }
            Command::GetCapsetInfo { capset_index } => {
                if capset_index >= NUM_CAPSETS {
                    return self
                        .invalid_parameter(format_args!("GET_CAPSET_INFO index {capset_index}"));
                }
                info!(
                    "GET_CAPSET_INFO {capset_index} -> VGPU_SVM (id {VGPU_SVM_CAPSET_ID:#x}) v{VGPU_SVM_CAPSET_VERSION}, {CAPSET_SIZE} bytes"
                );
                Response::OkCapsetInfo {
                    capset_id: VGPU_SVM_CAPSET_ID,
                    max_version: VGPU_SVM_CAPSET_VERSION,
                    max_size: CAPSET_SIZE as u32,
                }
            }
            Command::GetCapset {
                capset_id,
                capset_version,
            } => {
                if capset_id != VGPU_SVM_CAPSET_ID || capset_version != VGPU_SVM_CAPSET_VERSION {
                    return self.invalid_parameter(format_args!(
                        "GET_CAPSET id {capset_id:#x} v{capset_version}"
                    ));
                }
                info!(
                    "GET_CAPSET VGPU_SVM v{capset_version} -> protocol {}.{}, {} contexts, checker",
                    VGPU_SVM_PROTOCOL_VERSION >> 16,
                    VGPU_SVM_PROTOCOL_VERSION & 0xffff,
                    self.cfg.max_contexts
                );
                Response::OkCapset(capset_body(self.cfg.max_contexts))
            }
            Command::GetEdid { scanout } => {
                if scanout as usize >= MAX_SCANOUTS {
                    crate::guest_warn!(
                        "request",
                        "GET_EDID scanout {scanout} -> ERR_INVALID_SCANOUT_ID"
                    );
                    self.stats.errors.invalid_parameter += 1;
                    return Response::Err(ty::RESP_ERR_INVALID_SCANOUT_ID);
                }
                // No display: an empty EDID.
                debug!("GET_EDID {scanout} -> empty");
                Response::OkEdid {
                    size: 0,
                    edid: Vec::new(),
                }
            }
            Command::CtxCreate {
                context_init,
                debug_name,
            } => self.ctx_create(hdr.ctx_id, context_init, debug_name),
            Command::CtxDestroy => {
                let id = hdr.ctx_id;
                let Some(ctx) = self.contexts.remove(&id) else {
                    return self.invalid_context(format_args!("CTX_DESTROY of unknown ctx {id}"));
                };
                // Returns once no access of the context is in flight.
                ctx.destroy(&mut self.pending);
                self.stats.contexts_destroyed += 1;
                self.stats.contexts_active = self.contexts.len() as u64;
                info!("CTX_DESTROY ctx {id}");
                Response::OkNoData
            }
            Command::Submit3d { .. } => {
                unreachable!("SUBMIT_3D is handled by submit_3d")
            }
            Command::UpdateCursor | Command::MoveCursor => {
                // Cursor commands belong on the cursor queue.
                self.invalid_parameter(format_args!(
                    "{} on the control queue",
                    type_name(hdr.type_)
                ))
            }
            Command::Unsupported(t) => {
                crate::guest_warn!(
                    "request",
                    "unsupported command {} ({t:#x}) -> ERR_UNSPEC",
                    type_name(t)
                );
                self.stats.errors.unsupported_command += 1;
                Response::Err(ty::RESP_ERR_UNSPEC)
            }
        }
    }

    fn ctx_create(&mut self, id: u32, context_init: u32, debug_name: &[u8]) -> Response {
        let capset = if self.context_init {
            context_init & CONTEXT_INIT_CAPSET_ID_MASK
        } else {
            VGPU_SVM_CAPSET_ID
        };
        if capset != VGPU_SVM_CAPSET_ID {
            return self.invalid_parameter(format_args!(
                "CTX_CREATE ctx {id} with context type {capset:#x} (not VGPU_SVM)"
            ));
        }
        if id == 0 {
            return self.invalid_context(format_args!("CTX_CREATE with ctx id 0"));
        }
        if self.contexts.contains_key(&id) {
            return self.invalid_context(format_args!("CTX_CREATE of existing ctx {id}"));
        }
        if self.contexts.len() >= self.cfg.max_contexts as usize {
            crate::guest_warn!(
                "request",
                "CTX_CREATE ctx {id}: all {} contexts in use -> ERR_OUT_OF_MEMORY",
                self.cfg.max_contexts
            );
            self.stats.errors.out_of_memory += 1;
            return Response::Err(ty::RESP_ERR_OUT_OF_MEMORY);
        }
        let name: String = String::from_utf8_lossy(debug_name)
            .trim_end_matches('\0')
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect();
        let e = self.cfg.engine;
        let pool = self
            .pool
            .get_or_insert_with(|| Pool::new(e.workers, e.spawn))
            .clone();
        self.contexts.insert(
            id,
            Arc::new(Context::new(
                id,
                name.clone(),
                self.cfg.engine,
                Arc::new(SvmCounters::child(self.counters.clone())),
                pool,
            )),
        );
        self.stats.contexts_created += 1;
        self.stats.contexts_active = self.contexts.len() as u64;
        info!(
            "CTX_CREATE ctx {id} \"{name}\" VGPU_SVM ({} of {})",
            self.contexts.len(),
            self.cfg.max_contexts
        );
        Response::OkNoData
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio_gpu::build::{self, *};
    use crate::virtio_gpu::{
        FLAG_FENCE, FLAG_INFO_RING_IDX, RESP_CAPSET_INFO_SIZE, RESP_DISPLAY_INFO_SIZE,
        RESP_EDID_SIZE,
    };

    const BIG: usize = 4096;

    fn dev() -> Device {
        Device::new(DeviceConfig {
            max_contexts: 4,
            ..Default::default()
        })
    }

    fn resp_type(resp: &[u8]) -> u32 {
        CtrlHdr::parse(resp).unwrap().type_
    }

    fn u32_at(b: &[u8], off: usize) -> u32 {
        u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
    }

    fn u64_at(b: &[u8], off: usize) -> u64 {
        u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
    }

    #[test]
    fn display_info_has_no_enabled_scanouts() {
        let mut d = dev();
        let r = d.handle_control(&get_display_info(), BIG);
        assert_eq!(resp_type(&r), ty::RESP_OK_DISPLAY_INFO);
        assert_eq!(r.len(), RESP_DISPLAY_INFO_SIZE);
        assert!(r[CTRL_HDR_SIZE..].iter().all(|&b| b == 0));
    }

    #[test]
    fn capset_info() {
        let mut d = dev();
        let r = d.handle_control(&get_capset_info(0), BIG);
        assert_eq!(resp_type(&r), ty::RESP_OK_CAPSET_INFO);
        assert_eq!(r.len(), RESP_CAPSET_INFO_SIZE);
        assert_eq!(u32_at(&r, 24), VGPU_SVM_CAPSET_ID);
        assert_eq!(u32_at(&r, 28), VGPU_SVM_CAPSET_VERSION);
        assert_eq!(u32_at(&r, 32), 56);
        for idx in [1, 2, u32::MAX] {
            let r = d.handle_control(&get_capset_info(idx), BIG);
            assert_eq!(resp_type(&r), ty::RESP_ERR_INVALID_PARAMETER);
        }
        assert_eq!(d.stats().errors.invalid_parameter, 3);
    }

    #[test]
    fn capset_body_matches_uapi() {
        let mut d = dev();
        let r = d.handle_control(&get_capset(VGPU_SVM_CAPSET_ID, 1), BIG);
        assert_eq!(resp_type(&r), ty::RESP_OK_CAPSET);
        assert_eq!(r.len(), CTRL_HDR_SIZE + 56);
        let b = &r[CTRL_HDR_SIZE..];
        assert_eq!(&b[0..4], b"VSVM");
        assert_eq!(u32_at(b, 4), VGPU_SVM_PROTOCOL_VERSION);
        assert_eq!(u32_at(b, 8), 4);
        assert_eq!(u32_at(b, 12), 48);
        assert_eq!(u64_at(b, 16), u64::from(VGPU_SVM_FEATURE_CHECKER));
        assert!(b[24..56].iter().all(|&x| x == 0));
    }

    #[test]
    fn capset_wrong_id_or_version() {
        let mut d = dev();
        for (id, v) in [
            (1, 1),
            (VGPU_SVM_CAPSET_ID, 0),
            (VGPU_SVM_CAPSET_ID, 2),
            (0, 0),
        ] {
            let r = d.handle_control(&get_capset(id, v), BIG);
            assert_eq!(resp_type(&r), ty::RESP_ERR_INVALID_PARAMETER, "{id} {v}");
            assert_eq!(r.len(), CTRL_HDR_SIZE);
        }
    }

    #[test]
    fn edid_is_empty() {
        let mut d = dev();
        let r = d.handle_control(&get_edid(0), BIG);
        assert_eq!(resp_type(&r), ty::RESP_OK_EDID);
        assert_eq!(r.len(), RESP_EDID_SIZE);
        assert_eq!(u32_at(&r, 24), 0);
        let r = d.handle_control(&get_edid(16), BIG);
        assert_eq!(resp_type(&r), ty::RESP_ERR_INVALID_SCANOUT_ID);
    }

    #[test]
    fn context_lifecycle() {
        let mut d = dev();
        let r = d.handle_control(&ctx_create(1, VGPU_SVM_CAPSET_ID, "t"), BIG);
        assert_eq!(resp_type(&r), ty::RESP_OK_NODATA);
        assert_eq!(r.len(), CTRL_HDR_SIZE);
        assert_eq!(d.stats().contexts_active, 1);
        assert_eq!(d.contexts().next().unwrap().debug_name, "t");
        // Duplicate.
        let r = d.handle_control(&ctx_create(1, VGPU_SVM_CAPSET_ID, "t"), BIG);
        assert_eq!(resp_type(&r), ty::RESP_ERR_INVALID_CONTEXT_ID);
        // Submit on known / unknown contexts.
        let r = d.handle_control(&submit_3d(1, &[0u8; 8]), BIG);
        assert_eq!(resp_type(&r), ty::RESP_OK_NODATA);
        let r = d.handle_control(&submit_3d(2, &[0u8; 8]), BIG);
        assert_eq!(resp_type(&r), ty::RESP_ERR_INVALID_CONTEXT_ID);
        assert_eq!(d.stats().submits, 1);
        // Destroy twice.
        let r = d.handle_control(&ctx_destroy(1), BIG);
        assert_eq!(resp_type(&r), ty::RESP_OK_NODATA);
        let r = d.handle_control(&ctx_destroy(1), BIG);
        assert_eq!(resp_type(&r), ty::RESP_ERR_INVALID_CONTEXT_ID);
        let r = d.handle_control(&submit_3d(1, &[]), BIG);
        assert_eq!(resp_type(&r), ty::RESP_ERR_INVALID_CONTEXT_ID);
        let s = d.stats();
        assert_eq!(
            (s.contexts_created, s.contexts_destroyed, s.contexts_active),
            (1, 1, 0)
        );
        assert_eq!(s.errors.invalid_context, 4);
    }

    #[test]
    fn without_context_init_every_context_is_vgpu_svm() {
        let mut d = dev();
        d.note_acked_features(0);
        // The field is not defined without the feature: whatever it holds.
        for (id, init) in [(1, 0), (2, 7), (3, VGPU_SVM_CAPSET_ID)] {
            let r = d.handle_control(&ctx_create(id, init, ""), BIG);
            assert_eq!(resp_type(&r), ty::RESP_OK_NODATA, "context_init {init}");
        }
    }

    #[test]
    fn context_type_must_be_vgpu_svm() {
        let mut d = dev();
        d.note_acked_features(1u64 << crate::virtio_gpu::F_CONTEXT_INIT);
        for init in [0, 1, 4, VGPU_SVM_CAPSET_ID + 1] {
            let r = d.handle_control(&ctx_create(1, init, ""), BIG);
            assert_eq!(resp_type(&r), ty::RESP_ERR_INVALID_PARAMETER);
        }
        // Upper bits of context_init do not select the type.
        let r = d.handle_control(&ctx_create(1, 0x300 | VGPU_SVM_CAPSET_ID, ""), BIG);
        assert_eq!(resp_type(&r), ty::RESP_OK_NODATA);
        let r = d.handle_control(&ctx_create(0, VGPU_SVM_CAPSET_ID, ""), BIG);
        assert_eq!(resp_type(&r), ty::RESP_ERR_INVALID_CONTEXT_ID);
    }

    #[test]
    fn context_table_full() {
        let mut d = dev();
        for id in 1..=4 {
            let r = d.handle_control(&ctx_create(id, VGPU_SVM_CAPSET_ID, ""), BIG);
            assert_eq!(resp_type(&r), ty::RESP_OK_NODATA);
        }
        let r = d.handle_control(&ctx_create(5, VGPU_SVM_CAPSET_ID, ""), BIG);
        assert_eq!(resp_type(&r), ty::RESP_ERR_OUT_OF_MEMORY);
        assert_eq!(d.stats().errors.out_of_memory, 1);
        d.handle_control(&ctx_destroy(2), BIG);
        let r = d.handle_control(&ctx_create(5, VGPU_SVM_CAPSET_ID, ""), BIG);
        assert_eq!(resp_type(&r), ty::RESP_OK_NODATA);
        d.reset();
        assert_eq!(d.stats().contexts_active, 0);
        assert_eq!(d.contexts().count(), 0);
    }

    #[test]
    fn fence_fields_are_copied_to_every_response() {
        let reqs = [
            get_display_info(),
            get_capset_info(0),
            get_capset_info(9),
            get_capset(VGPU_SVM_CAPSET_ID, 1),
            get_capset(1, 1),
            get_edid(0),
            ctx_create(3, VGPU_SVM_CAPSET_ID, "f"),
            submit_3d(3, &[1, 2, 3, 4]),
            submit_3d(99, &[]),
            ctx_destroy(3),
            build::hdr(ty::CMD_RESOURCE_CREATE_2D, 0, 0, 3, 0),
            build::hdr(0x7777, 0, 0, 3, 0),
        ];
        let mut d = dev();
        for (i, req) in reqs.into_iter().enumerate() {
            let fence = 1000 + i as u64;
            let mut req = fenced(req, fence, Some(5));
            // ctx_id of the request travels back, whatever the command.
            req[16..20].copy_from_slice(&3u32.to_le_bytes());
            let r = d.handle_control(&req, BIG);
            let h = CtrlHdr::parse(&r).unwrap();
            assert_eq!(h.flags, FLAG_FENCE | FLAG_INFO_RING_IDX, "req {i}");
            assert_eq!(h.fence_id, fence, "req {i}");
            assert_eq!(h.ctx_id, 3, "req {i}");
            assert_eq!(h.ring_idx, 5, "req {i}");
        }
        assert_eq!(d.stats().fenced, 12 - 1); // the unknown command is not parsed
                                              // Without the fence flag, no flags come back.
        let r = d.handle_control(&get_display_info(), BIG);
        assert_eq!(CtrlHdr::parse(&r).unwrap().flags, 0);
    }

    #[test]
    fn truncated_and_unknown_requests() {
        let mut d = dev();
        // Truncated header: ERR_UNSPEC with a zero header.
        let r = d.handle_control(&[1, 2, 3], BIG);
        assert_eq!(resp_type(&r), ty::RESP_ERR_UNSPEC);
        // Truncated payload keeps the request's fence.
        let full = fenced(get_capset(VGPU_SVM_CAPSET_ID, 1), 77, None);
        let r = d.handle_control(&full[..28], BIG);
        let h = CtrlHdr::parse(&r).unwrap();
        assert_eq!((h.type_, h.fence_id), (ty::RESP_ERR_UNSPEC, 77));
        let r = d.handle_control(&build::hdr(0x4242, 0, 0, 0, 0), BIG);
        assert_eq!(resp_type(&r), ty::RESP_ERR_UNSPEC);
        let r = d.handle_control(&build::hdr(ty::CMD_RESOURCE_CREATE_2D, 0, 0, 0, 0), BIG);
        assert_eq!(resp_type(&r), ty::RESP_ERR_UNSPEC);
        let r = d.handle_control(&move_cursor(), BIG);
        assert_eq!(resp_type(&r), ty::RESP_ERR_INVALID_PARAMETER);
        let e = &d.stats().errors;
        assert_eq!(e.truncated_request, 2);
        assert_eq!(e.unknown_command, 1);
        assert_eq!(e.unsupported_command, 1);
        assert_eq!(e.invalid_parameter, 1);
        assert_eq!(d.stats().commands, 5);
    }

    #[test]
    fn response_buffer_too_small() {
        let mut d = dev();
        // No room for a header: the command is not executed.
        let r = d.handle_control(&ctx_create(1, VGPU_SVM_CAPSET_ID, ""), 23);
        assert!(r.is_empty());
        assert_eq!(d.stats().contexts_active, 0);
        assert_eq!(d.stats().errors.no_response_buffer, 1);
        // Room for a header only: a GET_CAPSET gets ERR_UNSPEC.
        let r = d.handle_control(&fenced(get_capset(VGPU_SVM_CAPSET_ID, 1), 9, None), 24);
        let h = CtrlHdr::parse(&r).unwrap();
        assert_eq!((h.type_, h.fence_id, r.len()), (ty::RESP_ERR_UNSPEC, 9, 24));
        assert_eq!(d.stats().errors.response_too_small, 1);
    }

    #[test]
    fn chain_errors() {
        let mut d = dev();
        let req = fenced(get_display_info(), 5, None);
        let r = d.chain_error(ChainError::BadGuestAddress, &req, BIG);
        let h = CtrlHdr::parse(&r).unwrap();
        assert_eq!((h.type_, h.fence_id), (ty::RESP_ERR_UNSPEC, 5));
        let r = d.chain_error(ChainError::Malformed, &[], BIG);
        assert_eq!(resp_type(&r), ty::RESP_ERR_UNSPEC);
        assert!(d.chain_error(ChainError::Malformed, &[], 0).is_empty());
        let e = &d.stats().errors;
        assert_eq!(
            (e.bad_guest_address, e.malformed_chain, e.no_response_buffer),
            (1, 2, 1)
        );
    }

    #[test]
    fn cursor_queue_is_consumed() {
        let mut d = dev();
        d.handle_cursor(&move_cursor());
        d.handle_cursor(&[0u8; 3]);
        d.handle_cursor(&get_display_info());
        let s = d.stats();
        assert_eq!(s.cursor_commands, 3);
        assert_eq!(s.errors.truncated_request, 1);
        assert_eq!(s.errors.invalid_parameter, 1);
    }

    #[test]
    fn stats_serialize_and_generation_moves() {
        let mut d = dev();
        let g0 = d.generation();
        d.handle_control(&get_display_info(), BIG);
        assert_ne!(d.generation(), g0);
        let j = serde_json::to_value(d.stats()).unwrap();
        assert_eq!(j["commands"], 1);
        assert_eq!(j["by_command"]["GET_DISPLAY_INFO"], 1);
        assert_eq!(j["errors"]["unknown_command"], 0);
    }

    /// A guest flooding the device with malformed requests cannot flood
    /// the log: warnings are rate-limited, and the suppressed ones counted.
    #[test]
    fn guest_triggered_warnings_are_rate_limited() {
        let mut d = dev();
        d.handle_control(&ctx_create(1, VGPU_SVM_CAPSET_ID, "t"), BIG);
        let before = crate::ratelimit::total_suppressed();
        let t0 = std::time::Instant::now();
        let lines = crate::ratelimit::tests::capture_warnings(|| {
            for _ in 0..1000 {
                d.handle_control(&submit_3d(1, &[0x77, 0, 0, 0, 0, 0, 0, 0]), BIG);
                d.handle_control(&build::hdr(0x4242, 0, 0, 0, 0), BIG);
                d.handle_control(&get_capset_info(7), BIG);
            }
        });
        // A burst per kind, plus one per kind per second of the loop.
        let secs = t0.elapsed().as_secs() + 1;
        let bound = 2 * (u64::from(crate::ratelimit::BURST) + secs);
        assert!(
            lines.len() as u64 <= bound,
            "{} warnings for 3000 bad requests (bound {bound}): {:?}",
            lines.len(),
            &lines[..lines.len().min(5)]
        );
        assert!(crate::ratelimit::total_suppressed() - before >= 3000 - bound);
        let j = serde_json::to_value(d.stats_doc()).unwrap();
        assert!(j["warnings_suppressed"].as_u64().unwrap() >= 3000 - bound);
    }

    #[test]
    fn garbage_requests_never_panic() {
        let mut d = dev();
        let mut x: u64 = 12345;
        for i in 0..5000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let len = (x >> 33) as usize % 128;
            let mut v: Vec<u8> = (0..len).map(|j| (x >> (j % 60)) as u8).collect();
            if len >= 4 {
                let t = [0x100u32, 0x108, 0x109, 0x10a, 0x200, 0x201, 0x207][i % 7];
                v[0..4].copy_from_slice(&t.to_le_bytes());
            }
            let cap = (x >> 20) as usize % 2048;
            let r = d.handle_control(&v, cap);
            assert!(r.len() <= cap);
            d.handle_cursor(&v);
        }
        assert!(d.stats().contexts_active <= 4);
    }
}
