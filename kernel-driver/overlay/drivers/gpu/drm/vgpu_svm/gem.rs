// SPDX-License-Identifier: GPL-2.0

//! Userptr GEM objects (amdgpu style, semantic B): an object names a range of the creating
//! process's address space, not pages. Each object has its own interval notifier over its
//! range; every submit that uses it revalidates what changed since it was last mirrored.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use kernel::{
    drm::{gem, DeviceContext},
    mm::MmWithUser,
    mmu_notifier::{IntervalNotifier, IntervalNotifierOps, Range, Seq},
    prelude::*,
    sync::{lock::Guard, lock::mutex::MutexBackend, Arc, Mutex, SetOnce},
};

use crate::{
    context::{Locked, Shared},
    driver::{VgpuDevice, VgpuDriver},
    mirror::{self, Placement},
    pagetable::PAGE,
};

/// The mirror of one userptr object: its notifier's data.
pub(crate) struct UserptrMirror {
    pub(crate) shared: Arc<Shared>,
    /// CPU VA of the range.
    pub(crate) cpu: u64,
    pub(crate) size: u64,
    pub(crate) readonly: bool,
    /// GPU VA it is bound at (0: not bound). Changed under the file's state lock.
    pub(crate) gpu_va: AtomicU64,
    /// The sequence the object was last mirrored with (valid when `mirrored`).
    last_seq: AtomicU64,
    mirrored: AtomicBool,
}

impl IntervalNotifierOps for UserptrMirror {
    type Locked = Locked;

    fn update_lock(&self) -> &Mutex<Locked> {
        &self.shared.update
    }

    fn invalidate(this: &IntervalNotifier<Self>, range: &Range<'_>, cur_seq: Seq) -> bool {
        let m = this.data();
        let gpu = m.gpu_va.load(Ordering::Acquire);
        let (cpu, size) = (m.cpu, m.size);
        let map = |s: u64, e: u64| {
            if gpu == 0 {
                return None;
            }
            let s = s.max(cpu);
            let e = e.min(cpu + size);
            (s < e).then(|| (gpu + (s - cpu), gpu + (e - cpu)))
        };
        let waits = !m.shared.svm.load(Ordering::Acquire);
        m.shared.invalidate(this, range, cur_seq, map, waits)
    }
}

/// A userptr object's notifier.
pub(crate) type UserptrNotifier = IntervalNotifier<UserptrMirror>;

/// Driver data of a GEM object.
#[pin_data]
pub(crate) struct VgpuObject {
    /// The mirror, set once right after the object is created (empty only until then).
    /// Lock-free to read: objects are used many at a time.
    pub(crate) notifier: SetOnce<Pin<KBox<UserptrNotifier>>>,
}

/// Arguments to create a userptr object.
pub(crate) struct UserptrArgs;

impl gem::DriverObject for VgpuObject {
    type Driver = VgpuDriver;
    type Args = UserptrArgs;

    fn new<Ctx: DeviceContext>(
        _dev: &VgpuDevice<Ctx>,
        _size: usize,
        _args: Self::Args,
    ) -> impl PinInit<Self, Error> {
        try_pin_init!(VgpuObject {
            notifier: SetOnce::default(),
        })
    }
}

/// A GEM object of this driver.
pub(crate) type Object = gem::Object<VgpuObject>;

/// Creates a userptr object over `[cpu, cpu + size)` of `mm` (the caller's).
pub(crate) fn create_userptr(
    dev: &VgpuDevice,
    mm: &MmWithUser,
    shared: Arc<Shared>,
    cpu: u64,
    size: u64,
    readonly: bool,
) -> Result<kernel::sync::aref::ARef<Object>> {
    if size == 0 || cpu % PAGE != 0 || size % PAGE != 0 || cpu.checked_add(size).is_none() {
        return Err(EINVAL);
    }
    let obj = Object::new(dev, size as usize, UserptrArgs)?;
    let n = KBox::pin_init(
        IntervalNotifier::insert(
            mm,
            cpu as usize,
            size as usize,
            UserptrMirror {
                shared,
                cpu,
                size,
                readonly,
                gpu_va: AtomicU64::new(0),
                last_seq: AtomicU64::new(0),
                mirrored: AtomicBool::new(false),
            },
        ),
        GFP_KERNEL,
    )?;
    if !obj.notifier.populate(n) {
        return Err(EBUSY);
    }
    Ok(obj)
}

/// A userptr object mirrored for a job, with the sequence it was mirrored at.
pub(crate) struct Validated<'a> {
    pub(crate) n: &'a UserptrNotifier,
    seq: Seq,
}

impl Validated<'_> {
    /// Whether the object was invalidated since it was mirrored (under the update lock).
    pub(crate) fn changed(&self, guard: &Guard<'_, Locked, MutexBackend>) -> bool {
        self.n.read_retry(guard, self.seq)
    }

    /// Whether GPU VA `va` lies in the object's binding.
    pub(crate) fn contains(&self, va: u64) -> bool {
        let m = self.n.data();
        let gpu = m.gpu_va.load(Ordering::Acquire);
        gpu != 0 && va >= gpu && va < gpu + m.size
    }
}

/// Makes sure `n`'s range is mirrored at its binding; re-mirrors only if it was invalidated
/// since the last time. Returns the sequence to check at commit.
pub(crate) fn validate<'a>(n: &'a UserptrNotifier, mm: &MmWithUser) -> Result<Validated<'a>> {
    let m = n.data();
    let gpu = m.gpu_va.load(Ordering::Acquire);
    if gpu == 0 {
        return Err(EINVAL);
    }
    if m.mirrored.load(Ordering::Acquire) {
        let seq = Seq::from_raw(m.last_seq.load(Ordering::Acquire));
        let guard = m.shared.update.lock();
        if !n.read_retry(&guard, seq) {
            return Ok(Validated { n, seq });
        }
    }
    let npages = (m.size / PAGE) as usize;
    let seq = mirror::populate(&m.shared, n, mm, Placement { cpu: m.cpu, gpu, writable: !m.readonly }, npages, !m.readonly)?.1;
    m.last_seq.store(seq.raw() as u64, Ordering::Release);
    m.mirrored.store(true, Ordering::Release);
    Ok(Validated { n, seq })
}

/// Services a device fault inside a userptr binding (a context that can fault): re-mirrors
/// the object. A write to a read-only object is refused.
pub(crate) fn service_fault(v: &Validated<'_>, mm: &MmWithUser, write: bool) -> Result {
    let m = v.n.data();
    if write && m.readonly {
        return Err(EPERM);
    }
    m.mirrored.store(false, Ordering::Release);
    validate(v.n, mm).map(|_| ())
}
