//! Input generation: ioctl arguments from boundary values mixed with plausible ones
//! (addresses in the fuzzer's memory, handles it got, GPU VAs of its bindings), so that calls
//! get past the first EINVAL into the deep paths.
//!
//! Safety of the fuzzer itself: the device must never write memory the fuzzer lives in
//! (heap, stacks, its own buffers). Every write an op may make starts in *write-safe*
//! territory: below 64 KiB (never mapped), the fuzz zone `[ZONE_LO, ZONE_HI)` (only the arena
//! and GPU-only VAs, nothing else is ever mapped there), at or above 2^47 (not user memory),
//! or `[vvar]` (which the driver must refuse). A device write runs through pages in order
//! and stops at the first one that cannot be mirrored, so from those starts it never reaches
//! other memory. Userptr objects over ranges that are not entirely write-safe are created
//! READONLY; a binding starts and ends in write-safe territory. Unsafe write ops become
//! READs of the same range.

use super::oracle::{
    ioc, BindEntry, Ioctl, BIND_ARRAY_MAX, BIND_ARRAY_UNBIND, DRM_TYPE, IOC_READ, IOC_WRITE, MAX_HANDLES, MAX_OPS, MAX_OP_LEN,
};
use super::rng::Rng;

/// Page size.
pub const PAGE: u64 = 4096;
/// The GPU VA limit (2^48).
pub const VA_LIMIT: u64 = 1 << 48;
/// The end of x86-64 user space with 4-level paging (2^47).
pub const USER_TOP: u64 = 1 << 47;
/// Memory below this is never mapped in the fuzzer.
pub const LOW_SAFE: u64 = 0x10000;
/// The fuzz zone: nothing but the fuzzer's arena is ever mapped in `[ZONE_LO, ZONE_HI)`
/// (32..64 TiB; the program, its heap and its mmaps live near 85 and 128 TiB).
pub const ZONE_LO: u64 = 0x2000_0000_0000;
/// See [`ZONE_LO`].
pub const ZONE_HI: u64 = 0x4000_0000_0000;
/// The workers' scratch buffers (arguments, ops and handles arrays): below the zone, so no
/// device write from the zone ever reaches them.
pub const SCRATCH_BASE: u64 = 0x1f00_0000_0000;
/// Bytes of scratch address space per worker.
pub const SCRATCH_STRIDE: u64 = 1 << 20;
/// The arena: the memory ops point at, munmapped, mprotected, mremapped, madvised meanwhile.
pub const ARENA_BASE: u64 = ZONE_LO + (1 << 30);
/// GPU-only VAs for bindings (nothing mapped there).
pub const GPU_ZONE: u64 = 0x3000_0000_0000;
/// Size of the GPU-only VA range used for bindings.
pub const GPU_ZONE_LEN: u64 = 1 << 40;
/// A page of the zone that is never mapped.
pub const UNMAPPED: u64 = ZONE_LO + (1 << 29);

/// Boundary values for addresses, lengths and sizes.
pub const BOUNDARY: &[u64] = &[
    0,
    1,
    7,
    8,
    4095,
    4096,
    4097,
    8191,
    8192,
    (1 << 21) - 1,
    1 << 21,
    (1 << 21) + 1,
    u32::MAX as u64,
    1 << 32,
    (1 << 32) + 1,
    (1 << 32) + 4096,
    1 << 36,
    (1 << 36) + 4096,
    (1 << 47) - 4096,
    (1 << 47) - 8,
    (1 << 47) - 1,
    1 << 47,
    (1 << 48) - 4096,
    (1 << 48) - 8,
    (1 << 48) - 1,
    1 << 48,
    (1 << 48) + 4096,
    1 << 63,
    0xffff_8880_0000_0000,
    u64::MAX - 4095,
    u64::MAX - 8,
    u64::MAX - 7,
    u64::MAX,
];

/// One job operation (`struct drm_vgpu_svm_op`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Op {
    /// VGPU_SVM_OP_KIND_*.
    pub kind: u32,
    /// Must be 0.
    pub flags: u32,
    /// Destination GPU VA.
    pub dst: u64,
    /// Source GPU VA.
    pub src: u64,
    /// Bytes.
    pub len: u64,
    /// FILL byte, pattern seed, addend.
    pub value: u64,
}

/// Op kinds.
pub const COPY: u32 = 1;
/// See [`COPY`].
pub const FILL: u32 = 2;
/// See [`COPY`].
pub const HASH: u32 = 3;
/// See [`COPY`].
pub const ATOMIC_ADD: u32 = 4;
/// See [`COPY`].
pub const WRITE_PATTERN: u32 = 5;
/// See [`COPY`].
pub const READ: u32 = 6;

/// Size of one op in the ABI.
pub const OP_SIZE: usize = 40;

impl Op {
    /// The ABI bytes.
    pub fn bytes(&self) -> [u8; OP_SIZE] {
        let mut b = [0u8; OP_SIZE];
        b[0..4].copy_from_slice(&self.kind.to_le_bytes());
        b[4..8].copy_from_slice(&self.flags.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst.to_le_bytes());
        b[16..24].copy_from_slice(&self.src.to_le_bytes());
        b[24..32].copy_from_slice(&self.len.to_le_bytes());
        b[32..40].copy_from_slice(&self.value.to_le_bytes());
        b
    }
}

/// What backs an arena region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegionKind {
    /// Private anonymous, 2 MiB aligned, MADV_HUGEPAGE.
    Thp,
    /// Private anonymous.
    Small,
    /// MAP_SHARED of a memfd (shared with fork children).
    Shared,
    /// Private anonymous, PROT_READ.
    ReadOnly,
}

/// A region of the arena.
#[derive(Debug, Clone, Copy)]
pub struct Region {
    /// Start (page aligned).
    pub base: u64,
    /// Length.
    pub len: u64,
    /// Backing.
    pub kind: RegionKind,
}

/// The fuzzer's fixed address-space plan.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The arena's regions.
    pub regions: Vec<Region>,
    /// `[vvar]` (start, end), if the process has one.
    pub vvar: Option<(u64, u64)>,
}

impl Layout {
    /// The standard arena: a 4 MiB THP region, 512 KiB of small pages, 256 KiB shared,
    /// 64 KiB read-only.
    pub fn standard(vvar: Option<(u64, u64)>) -> Layout {
        let mib = 1u64 << 20;
        Layout {
            regions: vec![
                Region { base: ARENA_BASE, len: 4 * mib, kind: RegionKind::Thp },
                Region { base: ARENA_BASE + 8 * mib, len: mib / 2, kind: RegionKind::Small },
                Region { base: ARENA_BASE + 16 * mib, len: mib / 4, kind: RegionKind::Shared },
                Region { base: ARENA_BASE + 24 * mib, len: 64 * 1024, kind: RegionKind::ReadOnly },
            ],
            vvar,
        }
    }

    /// Whether a device write starting at `a` is harmless to the fuzzer (see the module doc).
    pub fn write_start_safe(&self, a: u64) -> bool {
        a < LOW_SAFE || (ZONE_LO..ZONE_HI).contains(&a) || a >= USER_TOP || self.in_vvar(a, 1)
    }

    /// Whether all of `[a, a + len)` is write-safe territory (a userptr object's range).
    pub fn range_write_safe(&self, a: u64, len: u64) -> bool {
        let end = a.saturating_add(len);
        end <= LOW_SAFE || (a >= ZONE_LO && end <= ZONE_HI) || a >= USER_TOP || self.in_vvar(a, len)
    }

    fn in_vvar(&self, a: u64, len: u64) -> bool {
        self.vvar.is_some_and(|(s, e)| a >= s && a.saturating_add(len) <= e)
    }

    /// A random region.
    pub fn region(&self, r: &mut Rng) -> Region {
        self.regions[r.below(self.regions.len() as u64) as usize]
    }

    /// A random page-aligned subrange `(start, len)` of a random region.
    pub fn subrange(&self, r: &mut Rng) -> (Region, u64, u64) {
        let reg = self.region(r);
        let pages = reg.len / PAGE;
        let first = r.below(pages);
        let n = match r.below(4) {
            0 => 1,
            1 => r.range(1, 16),
            2 => r.range(1, pages - first),
            _ => pages - first,
        }
        .min(pages - first);
        (reg, reg.base + first * PAGE, n * PAGE)
    }
}

/// A userptr object the fuzzer created (as far as it knows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handle {
    /// GEM handle.
    pub handle: u32,
    /// CPU range start.
    pub cpu: u64,
    /// Size.
    pub size: u64,
    /// READONLY.
    pub ro: bool,
}

/// A binding the fuzzer made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding {
    /// GPU VA.
    pub gpu_va: u64,
    /// Size.
    pub size: u64,
    /// The object's handle.
    pub handle: u32,
}

/// What the fuzzer believes about one open file (other threads and children change it
/// behind its back: only a source of plausible values, never an oracle).
#[derive(Debug, Clone, Default)]
pub struct Model {
    /// Objects.
    pub handles: Vec<Handle>,
    /// Bindings.
    pub bindings: Vec<Binding>,
}

/// Most objects the model keeps per file (then GEM_CLOSE is favoured).
pub const MODEL_HANDLES: usize = 32;

impl Model {
    /// Records a created object (dropping the oldest record beyond the cap).
    pub fn add_handle(&mut self, h: Handle) {
        if self.handles.len() >= 2 * MODEL_HANDLES {
            self.handles.remove(0);
        }
        self.handles.push(h);
    }

    /// Forgets a closed handle.
    pub fn close(&mut self, handle: u32) {
        self.handles.retain(|h| h.handle != handle);
    }

    /// Records a binding.
    pub fn bind(&mut self, b: Binding) {
        if self.bindings.len() >= 4 * MODEL_HANDLES {
            self.bindings.remove(0);
        }
        self.bindings.push(b);
    }

    /// Forgets the binding at `gpu_va`.
    pub fn unbind(&mut self, gpu_va: u64) {
        self.bindings.retain(|b| b.gpu_va != gpu_va);
    }

    /// The object of a handle.
    pub fn handle(&self, handle: u32) -> Option<Handle> {
        self.handles.iter().copied().find(|h| h.handle == handle)
    }
}

/// A pad/flags word: zero mostly, else some bits.
pub fn pad(r: &mut Rng) -> u32 {
    match r.below(100) {
        0..=91 => 0,
        92..=95 => 1 << r.below(32),
        _ => r.next_u32() | 1,
    }
}

/// A boundary value.
pub fn boundary(r: &mut Rng) -> u64 {
    r.pick(BOUNDARY)
}

/// A small offset around a page boundary: 0 mostly, else ±1..8 or random within the page.
fn jitter(r: &mut Rng) -> i64 {
    match r.below(10) {
        0..=6 => 0,
        7 => r.range(1, 8) as i64,
        8 => -(r.range(1, 8) as i64),
        _ => r.below(PAGE) as i64,
    }
}

/// An address inside the arena (or just around it).
pub fn arena_addr(r: &mut Rng, l: &Layout) -> u64 {
    let reg = l.region(r);
    let page = match r.below(10) {
        0 => reg.len / PAGE, // the first page past the region
        _ => r.below(reg.len / PAGE),
    };
    (reg.base + page * PAGE).wrapping_add_signed(jitter(r))
}

/// An address for an op's dst/src.
pub fn op_addr(r: &mut Rng, l: &Layout, m: &Model) -> u64 {
    match r.below(100) {
        0..=39 => arena_addr(r, l),
        40..=59 if !m.bindings.is_empty() => {
            let b = r.pick(&m.bindings);
            let off = match r.below(5) {
                0 => 0,
                1 => b.size.saturating_sub(8),
                2 => b.size,
                _ => r.below(b.size.max(1)) & !7,
            };
            b.gpu_va.wrapping_add(off)
        }
        40..=64 => GPU_ZONE + r.below(GPU_ZONE_LEN / PAGE) * PAGE,
        65..=79 => boundary(r),
        80..=84 => match l.vvar {
            Some((s, e)) => s + r.below((e - s).max(1)),
            None => boundary(r),
        },
        85..=89 => UNMAPPED.wrapping_add_signed(jitter(r)),
        90..=94 => r.below(VA_LIMIT),
        _ => r.next_u64(),
    }
}

/// A length for an op.
pub fn op_len(r: &mut Rng) -> u64 {
    match r.below(100) {
        0..=39 => r.range(1, 256),
        40..=64 => (r.range(1, 16) * PAGE).wrapping_add_signed(r.range(0, 2) as i64 - 1),
        65..=76 => r.range(1, 4 << 20),
        77..=88 => boundary(r),
        89..=94 => r.range(MAX_OP_LEN - 1, MAX_OP_LEN + 1),
        _ => r.next_u64() >> r.below(64),
    }
}

/// A random op (not yet made safe: see [`sanitize_op`]).
pub fn op(r: &mut Rng, l: &Layout, m: &Model) -> Op {
    let kind = match r.below(100) {
        0..=95 => r.range(1, 6) as u32,
        96 => 0,
        97 => 7,
        _ => r.next_u32(),
    };
    let mut o = Op { kind, flags: if r.one_in(40) { 1 << r.below(32) } else { 0 }, dst: op_addr(r, l, m), src: op_addr(r, l, m), len: op_len(r), value: r.next_u64() };
    if kind == ATOMIC_ADD && r.pct(80) {
        o.dst &= !7;
    }
    if r.one_in(8) {
        o.src = o.dst; // overlapping COPY, HASH of what was just written
    }
    o
}

/// An op that passes validation (a known kind, flags 0, in range) over the fuzzer's memory
/// or its bindings, so that the job reaches the device (and its faults, the mirror, the
/// checker); the memory may still be gone or protected by then.
pub fn plausible_op(r: &mut Rng, l: &Layout, m: &Model) -> Op {
    let at = |r: &mut Rng| -> u64 {
        match (m.bindings.is_empty(), r.below(10)) {
            (false, 0..=3) => {
                let b = r.pick(&m.bindings);
                b.gpu_va + (r.below(b.size.max(1)) & !7)
            }
            _ => arena_addr(r, l) & !7,
        }
    };
    let kind = r.range(1, 6) as u32;
    let len = match r.below(10) {
        0..=5 => r.range(1, 512),
        6..=8 => r.range(1, 16) * PAGE,
        _ => r.range(1, 64 * 1024),
    };
    let (dst, src) = (at(r), at(r));
    Op { kind, flags: 0, dst, src, len, value: r.next_u64() }
}

/// Makes an op harmless to the fuzzer: a write that would start outside write-safe
/// territory becomes a READ of the same range.
pub fn sanitize_op(l: &Layout, o: &mut Op) {
    if let Some((dst, _)) = super::oracle::op_write_range(o) {
        if !l.write_start_safe(dst) {
            o.kind = READ;
            o.src = dst;
        }
    }
}

/// nr_ops: small mostly, sometimes up to 64, rarely out of range.
pub fn nr_ops(r: &mut Rng) -> u32 {
    match r.below(100) {
        0..=34 => 1,
        35..=64 => r.range(2, 4) as u32,
        65..=86 => r.range(5, 16) as u32,
        87..=96 => r.range(17, MAX_OPS as u64) as u32,
        97 => 0,
        98 => MAX_OPS + 1,
        _ => r.next_u32(),
    }
}

/// A handle value: a known one mostly, else small, zero or any.
pub fn handle(r: &mut Rng, m: &Model) -> u32 {
    match r.below(100) {
        0..=69 if !m.handles.is_empty() => r.pick(&m.handles).handle,
        0..=79 => r.range(1, 64) as u32,
        80..=89 => 0,
        _ => r.next_u32(),
    }
}

/// The handles array of a SUBMIT: usually the bound objects its ops may use.
pub fn handles_array(r: &mut Rng, m: &Model) -> (Vec<u32>, u32) {
    let v: Vec<u32> = match r.below(100) {
        0..=44 => vec![],
        45..=84 => {
            let n = r.range(1, 4);
            (0..n)
                .map(|_| match m.bindings.is_empty() || r.one_in(5) {
                    true => handle(r, m),
                    false => r.pick(&m.bindings).handle,
                })
                .collect()
        }
        85..=94 => {
            let n = r.range(5, MAX_HANDLES as u64);
            let base = handle(r, m);
            (0..n).map(|_| if r.one_in(3) { handle(r, m) } else { base }).collect()
        }
        _ => (0..MAX_HANDLES + 1).map(|_| handle(r, m)).collect(),
    };
    let n = v.len() as u32;
    let nr = match r.below(100) {
        0..=96 => n,
        97 => n.saturating_add(1),
        98 => MAX_HANDLES + 1,
        _ => r.next_u32(),
    };
    (v, nr)
}

/// USERPTR_CREATE's (userptr, size, flags), already made safe (READONLY unless the whole
/// range is write-safe).
pub fn userptr_args(r: &mut Rng, l: &Layout) -> (u64, u64, u32) {
    let addr = match r.below(100) {
        0..=69 => arena_addr(r, l),
        70..=79 => boundary(r),
        80..=84 => l.vvar.map_or(0, |(s, _)| s),
        85..=89 => GPU_ZONE + r.below(1 << 20) * PAGE,
        _ => r.next_u64() >> r.below(64),
    };
    let size = match r.below(100) {
        0..=54 => r.range(1, 16) * PAGE,
        55..=74 => r.range(1, 1024) * PAGE,
        75..=84 => r.range(1, 16) * PAGE + r.range(1, PAGE - 1),
        85..=94 => boundary(r),
        _ => r.next_u64() >> r.below(64),
    };
    let mut flags = match r.below(100) {
        0..=69 => 0,
        70..=94 => 1,
        _ => pad(r) | r.below(2) as u32,
    };
    if !l.range_write_safe(addr, size) {
        flags |= 1;
    }
    (addr, size, flags)
}

/// A GPU VA for BIND of an object of `size` bytes, made safe: a binding starts and ends in
/// write-safe territory (a job writing past its end continues at identity VAs in SVM mode).
pub fn bind_gpu_va(r: &mut Rng, l: &Layout, m: &Model, size: u64) -> u64 {
    let va = match r.below(100) {
        0..=49 => GPU_ZONE + r.below(GPU_ZONE_LEN / PAGE) * PAGE,
        50..=64 => arena_addr(r, l) & !(PAGE - 1),
        65..=74 if !m.bindings.is_empty() => {
            let b = r.pick(&m.bindings);
            match r.below(3) {
                0 => b.gpu_va,
                1 => b.gpu_va.wrapping_add(b.size),
                _ => b.gpu_va.wrapping_sub(size),
            }
        }
        65..=69 => VA_LIMIT.wrapping_sub(size),
        70..=89 => boundary(r),
        90..=94 => VA_LIMIT - PAGE * r.range(0, 4),
        _ => r.next_u64() >> r.below(64),
    };
    let va = if r.one_in(12) { va.wrapping_add_signed(jitter(r)) } else { va };
    safe_bind_va(r, l, va, size)
}

/// `va` if a binding of `size` bytes there starts and ends in write-safe territory, else a
/// GPU VA where it does (see [`bind_gpu_va`]).
pub fn safe_bind_va(r: &mut Rng, l: &Layout, va: u64, size: u64) -> u64 {
    let safe = |va: u64| l.write_start_safe(va) && l.write_start_safe(va.saturating_add(size));
    if safe(va) {
        return va;
    }
    let va = GPU_ZONE + r.below(GPU_ZONE_LEN / PAGE) * PAGE;
    if safe(va) {
        return va;
    }
    // Too big for the zone: GPU VAs above user space (no CPU memory there).
    USER_TOP + r.below((VA_LIMIT - USER_TOP) / PAGE) * PAGE
}

/// How many entries a BIND_ARRAY carries (those written; the count field may say
/// otherwise): a few mostly, sometimes many, rarely the limit.
pub fn bind_array_len(r: &mut Rng) -> usize {
    (match r.below(100) {
        0..=44 => r.range(1, 4),
        45..=79 => r.range(5, 16),
        80..=95 => r.range(17, 256),
        96..=98 => r.range(257, BIND_ARRAY_MAX as u64 - 1),
        _ => BIND_ARRAY_MAX as u64,
    }) as usize
}

/// BIND_ARRAY's count for `n` written entries: `n` mostly; else 0, the limit, just past
/// it, one more or one fewer than written, or anything.
pub fn bind_array_count(r: &mut Rng, n: usize) -> u32 {
    let n = n as u32;
    match r.below(100) {
        0..=92 => n,
        93 => 0,
        94 | 95 => BIND_ARRAY_MAX + 1,
        96 => BIND_ARRAY_MAX,
        97 => n + 1,
        98 => n.saturating_sub(1),
        _ => r.next_u32(),
    }
}

/// BIND_ARRAY's flags: bind or unbind mostly, rarely unknown bits.
pub fn bind_array_flags(r: &mut Rng) -> u32 {
    match r.below(100) {
        0..=59 => 0,
        60..=94 => BIND_ARRAY_UNBIND,
        _ => (1 << r.range(1, 31)) | r.below(2) as u32,
    }
}

fn shuffle<T>(r: &mut Rng, v: &mut [T]) {
    for i in (1..v.len()).rev() {
        let j = r.below(i as u64 + 1) as usize;
        v.swap(i, j);
    }
}

/// `n` BIND_ARRAY entries, each with the size the fuzzer believes its object has (a guess
/// for a handle it does not know). Binds: distinct known objects laid out back to back (or
/// with gaps) in the GPU zone, or entries drawn one by one as for BIND; unbinds: the starts
/// of known bindings, or GPU VAs as for UNBIND. Then, in some arrays, hostile entries: an
/// object or a gpu_va named again, a range overlapping an earlier entry's, a misaligned,
/// zero, wrapping or boundary gpu_va, one ending past 2^48, an unknown handle, a nonzero
/// pad. A bind's gpu_va stays write-safe (as BIND's).
pub fn bind_array_entries(r: &mut Rng, l: &Layout, m: &Model, n: usize, unbind: bool) -> Vec<(BindEntry, u64)> {
    let guess = |r: &mut Rng, h: u32| m.handle(h).map_or_else(|| r.range(1, 16) * PAGE, |o| o.size);
    let mut v: Vec<(BindEntry, u64)> = Vec::with_capacity(n);
    if unbind {
        let mut known: Vec<Binding> = m.bindings.clone();
        shuffle(r, &mut known);
        let from_model = r.pct(70);
        for i in 0..n {
            let gpu_va = match known.get(i) {
                Some(b) if from_model => b.gpu_va,
                _ => unbind_gpu_va(r, l, m),
            };
            let handle = if r.pct(80) { 0 } else { r.next_u32() };
            v.push((BindEntry { handle, pad: 0, gpu_va }, 0));
        }
    } else if r.pct(50) {
        // A plausible batch: distinct objects, back to back or with gaps, in the zone.
        let mut hs: Vec<Handle> = m.handles.clone();
        shuffle(r, &mut hs);
        let gaps = r.pct(40);
        let mut va = GPU_ZONE + r.below(GPU_ZONE_LEN / PAGE / 2) * PAGE;
        for i in 0..n {
            let (handle, size) = match hs.get(i) {
                Some(h) => (h.handle, h.size),
                None => {
                    let h = handle(r, m);
                    (h, guess(r, h))
                }
            };
            let at = safe_bind_va(r, l, va, size);
            v.push((BindEntry { handle, pad: 0, gpu_va: at }, size));
            va = at.saturating_add(size).saturating_add(if gaps { r.below(4) * PAGE } else { 0 });
        }
    } else {
        for _ in 0..n {
            let h = handle(r, m);
            let size = guess(r, h);
            v.push((BindEntry { handle: h, pad: 0, gpu_va: bind_gpu_va(r, l, m, size) }, size));
        }
    }
    // Hostile entries: none in half the arrays, else each entry with some probability.
    let odds = match r.below(4) {
        0 | 1 => 0,
        2 => (n as u64).max(2),
        _ => 4,
    };
    for i in 0..n {
        if odds == 0 || !r.one_in(odds) {
            continue;
        }
        let earlier = if i > 0 { Some(v[r.below(i as u64) as usize]) } else { None };
        let (e, size) = &mut v[i];
        match r.below(9) {
            0 => {
                if let Some((p, psize)) = earlier {
                    e.handle = p.handle; // the same object twice
                    *size = psize;
                }
            }
            1 => {
                if let Some((p, psize)) = earlier {
                    // The same gpu_va, or inside the earlier range.
                    e.gpu_va = p.gpu_va.wrapping_add(r.below((psize / PAGE).max(1)) * PAGE);
                }
            }
            2 => e.gpu_va = e.gpu_va.wrapping_add(r.range(1, PAGE - 1)),
            // Zero, or a range that wraps past 2^64.
            3 => e.gpu_va = r.pick(&[0, u64::MAX - PAGE + 1, 0u64.wrapping_sub(*size & !(PAGE - 1))]),
            4 => e.gpu_va = VA_LIMIT - PAGE * r.range(0, 2),
            5 => {
                let choices = [0, u32::MAX, r.next_u32(), r.range(1, 64) as u32 + 1000];
                e.handle = r.pick(&choices);
            }
            6 => e.pad = pad(r) | 1 << r.below(32),
            7 => e.gpu_va = boundary(r),
            _ => e.gpu_va = e.gpu_va.wrapping_add_signed(jitter(r)),
        }
        if !unbind {
            e.gpu_va = safe_bind_va(r, l, e.gpu_va, *size);
        }
    }
    v
}

/// A GPU VA for UNBIND: a known binding mostly.
pub fn unbind_gpu_va(r: &mut Rng, l: &Layout, m: &Model) -> u64 {
    match r.below(100) {
        0..=64 if !m.bindings.is_empty() => r.pick(&m.bindings).gpu_va,
        0..=74 => GPU_ZONE + r.below(GPU_ZONE_LEN / PAGE) * PAGE,
        75..=89 => boundary(r),
        _ => arena_addr(r, l),
    }
}

/// GET_PARAM's param.
pub fn param(r: &mut Rng) -> u32 {
    match r.below(100) {
        0..=79 => r.range(1, 5) as u32,
        80..=84 => 0,
        85..=89 => 6,
        90..=94 => u32::MAX,
        _ => r.next_u32(),
    }
}

/// CTX_CONFIG's flags.
pub fn ctx_flags(r: &mut Rng) -> u32 {
    match r.below(100) {
        0..=59 => 1,
        60..=84 => 0,
        85..=94 => 1 << r.below(32),
        _ => r.next_u32(),
    }
}

/// A pointer class for an ioctl argument or an array.
pub fn ptr_class(r: &mut Rng) -> super::oracle::Ptr {
    use super::oracle::Ptr::*;
    r.weighted(&[
        (Valid, 820),
        (Misaligned, 30),
        (Null, 30),
        (Unmapped, 20),
        (ReadOnly, 40),
        (VmIo, 15),
        (Arena, 15),
        (Kernel, 10),
        (NonCanonical, 10),
        (Straddle, 10),
    ])
}

/// The request number of a call of `ioctl`: the header's mostly; sometimes another size,
/// other direction bits or another type byte.
pub fn request(r: &mut Rng, ioctl: Ioctl) -> u32 {
    let (dir, size) = (ioctl.dir(), ioctl.size());
    match r.below(100) {
        0..=93 => ioctl.request(),
        94..=97 => {
            let s = match r.below(8) {
                0 => 0,
                1 => 1,
                2 => size.saturating_sub(1),
                3 => size + 1,
                4 => size + 8,
                5 => r.pick(&[128, 129, 4096]),
                6 => 16383,
                _ => r.below(512) as usize,
            };
            ioc(dir, DRM_TYPE, ioctl.nr(), s)
        }
        98 => ioc(r.below(4) as u32, DRM_TYPE, ioctl.nr(), size),
        _ => {
            let ty = loop {
                let t = r.next_u32() as u8;
                if t != DRM_TYPE {
                    break t;
                }
            };
            ioc(dir, ty, ioctl.nr(), size)
        }
    }
}

/// An unknown driver ioctl: a number past the driver's table, any size and direction.
pub fn unknown_request(r: &mut Rng) -> u32 {
    ioc(r.below(4) as u32, DRM_TYPE, r.range(0x48, 0x9f) as u8, r.below(300) as usize)
}

/// Little-endian struct builder.
#[derive(Default)]
pub struct Bytes(pub Vec<u8>);

impl Bytes {
    /// Appends a u32.
    pub fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Appends a u64.
    pub fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
}

/// Pads `arg` to the request's size (random bytes past the struct: the driver must ignore
/// what it does not define).
pub fn fit(r: &mut Rng, mut arg: Vec<u8>, req: u32) -> Vec<u8> {
    let want = super::oracle::ioc_size(req);
    if arg.len() < want {
        let mut tail = vec![0u8; want - arg.len()];
        if r.pct(50) {
            r.fill(&mut tail);
        }
        arg.extend_from_slice(&tail);
    }
    arg
}

/// Both direction bits (for tests).
pub const IOC_RW: u32 = IOC_READ | IOC_WRITE;

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Layout {
        Layout::standard(Some((0x7fff_f7fc_0000, 0x7fff_f7fc_4000)))
    }

    #[test]
    fn write_safety_rules() {
        let l = layout();
        assert!(l.write_start_safe(0x1000));
        assert!(!l.write_start_safe(0x40_0000), "the program of a non-PIE binary");
        assert!(l.write_start_safe(ARENA_BASE));
        assert!(!l.write_start_safe(SCRATCH_BASE), "the scratch buffers");
        assert!(!l.write_start_safe(0x7f12_3456_7000), "mmaps and stacks");
        assert!(l.write_start_safe(USER_TOP));
        assert!(l.write_start_safe(u64::MAX));
        assert!(l.write_start_safe(0x7fff_f7fc_1000), "[vvar] is a target");
        assert!(l.range_write_safe(ARENA_BASE, 1 << 36));
        assert!(!l.range_write_safe(0x1000, 1 << 36), "covers the low program and heap");
        assert!(!l.range_write_safe(ZONE_HI - 4096, 8192));
        assert!(l.range_write_safe(u64::MAX - 7, 100));
    }

    #[test]
    fn generated_writes_are_safe() {
        let l = layout();
        let mut m = Model::default();
        let mut r = Rng::new(1);
        for i in 0..200_000u64 {
            let (addr, size, flags) = userptr_args(&mut r, &l);
            assert!(flags & 1 == 1 || l.range_write_safe(addr, size), "writable userptr over {addr:#x}+{size:#x}");
            if i % 3 == 0 {
                let h = Handle { handle: (i % 50) as u32 + 1, cpu: addr, size, ro: flags & 1 == 1 };
                m.add_handle(h);
                let va = bind_gpu_va(&mut r, &l, &m, size);
                assert!(l.write_start_safe(va) && l.write_start_safe(va.saturating_add(size)));
                m.bind(Binding { gpu_va: va, size, handle: h.handle });
            }
            if i % 7 == 0 {
                let n = bind_array_len(&mut r).min(64);
                for (e, size) in bind_array_entries(&mut r, &l, &m, n, false) {
                    assert!(l.write_start_safe(e.gpu_va) && l.write_start_safe(e.gpu_va.saturating_add(size)), "{e:?} size {size:#x}");
                }
            }
            let mut o = op(&mut r, &l, &m);
            sanitize_op(&l, &mut o);
            if let Some((d, _)) = super::super::oracle::op_write_range(&o) {
                assert!(l.write_start_safe(d), "{o:?}");
            }
        }
        assert!(m.handles.len() <= 2 * MODEL_HANDLES && m.bindings.len() <= 4 * MODEL_HANDLES);
    }

    #[test]
    fn mixes_plausible_and_boundary_values() {
        let l = layout();
        let m = Model::default();
        let mut r = Rng::new(2);
        let (mut invalid, mut valid) = (0, 0);
        for _ in 0..10_000 {
            let o = op(&mut r, &l, &m);
            if super::super::oracle::op_invalid(&o) {
                invalid += 1;
            } else {
                valid += 1;
            }
        }
        // Enough of both: validation is exercised and jobs reach the device.
        assert!(valid > 2000 && invalid > 2000, "valid {valid} invalid {invalid}");
        let valid = (0..1000).filter(|_| !super::super::oracle::op_invalid(&plausible_op(&mut r, &l, &m))).count();
        assert!(valid > 990, "plausible ops pass validation: {valid}");
        let reqs: Vec<u32> = (0..1000).map(|_| request(&mut r, Ioctl::Submit)).collect();
        assert!(reqs.iter().filter(|&&q| q == Ioctl::Submit.request()).count() > 850);
        assert!(reqs.iter().any(|&q| q != Ioctl::Submit.request()));
        let u = unknown_request(&mut r);
        assert!((0x48..=0x9f).contains(&(u & 0xff)));
        assert_eq!(Op { kind: 1, flags: 2, dst: 3, src: 4, len: 5, value: 6 }.bytes()[8], 3);
        assert_eq!(fit(&mut r, vec![1, 2], ioc(IOC_RW, b'd', 0x40, 16)).len(), 16);
    }

    #[test]
    fn bind_arrays_mix_plausible_and_hostile_entries() {
        use super::super::oracle::{bind_array_doomed, BIND_ARRAY_MAX};
        let l = layout();
        let mut m = Model::default();
        let mut r = Rng::new(4);
        for h in 1..=20u32 {
            m.add_handle(Handle { handle: h, cpu: ARENA_BASE, size: PAGE * (h as u64 % 4 + 1), ro: true });
        }
        for h in 1..=10u32 {
            m.bind(Binding { gpu_va: GPU_ZONE + h as u64 * (1 << 20), size: PAGE, handle: h });
        }
        let (mut doomed, mut clean, mut unbind_doomed, mut unbind_clean) = (0, 0, 0, 0);
        let (mut lens, mut at_limit, mut counts_off) = (0usize, 0, 0);
        for _ in 0..4000 {
            let n = bind_array_len(&mut r);
            assert!((1..=BIND_ARRAY_MAX as usize).contains(&n));
            lens += n;
            at_limit += (n == BIND_ARRAY_MAX as usize) as u32;
            counts_off += (bind_array_count(&mut r, n) != n as u32) as u32;
            let n = n.min(32);
            let e: Vec<_> = bind_array_entries(&mut r, &l, &m, n, false).into_iter().map(|(e, _)| e).collect();
            match bind_array_doomed(&e, false) {
                Some(_) => doomed += 1,
                None => clean += 1,
            }
            let e: Vec<_> = bind_array_entries(&mut r, &l, &m, n, true).into_iter().map(|(e, _)| e).collect();
            match bind_array_doomed(&e, true) {
                Some(_) => unbind_doomed += 1,
                None => unbind_clean += 1,
            }
        }
        // Both kinds often: the checks are exercised and calls reach the device.
        assert!(doomed > 800 && clean > 800, "bind: doomed {doomed} clean {clean}");
        assert!(unbind_doomed > 400 && unbind_clean > 800, "unbind: doomed {unbind_doomed} clean {unbind_clean}");
        assert!(at_limit > 10 && counts_off > 100 && lens / 4000 < 400, "limit {at_limit} off {counts_off} mean {}", lens / 4000);
        // A plausible batch binds distinct known objects back to back.
        let mut r = Rng::new(9);
        let ok = (0..200)
            .filter(|_| {
                let e = bind_array_entries(&mut r, &l, &m, 8, false);
                e.windows(2).all(|w| w[0].0.gpu_va.saturating_add(w[0].1) <= w[1].0.gpu_va) && bind_array_doomed(&e.iter().map(|x| x.0).collect::<Vec<_>>(), false).is_none()
            })
            .count();
        assert!(ok > 40, "{ok}");
    }

    #[test]
    fn subranges_stay_inside_their_region() {
        let l = layout();
        let mut r = Rng::new(3);
        for _ in 0..10_000 {
            let (reg, s, n) = l.subrange(&mut r);
            assert!(n >= PAGE && s >= reg.base && s + n <= reg.base + reg.len);
        }
    }
}
