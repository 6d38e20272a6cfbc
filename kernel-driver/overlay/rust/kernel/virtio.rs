// SPDX-License-Identifier: GPL-2.0

//! Abstractions for virtio drivers (added by the vgpu-svm overlay).
//!
//! C headers: [`include/linux/virtio.h`](srctree/include/linux/virtio.h),
//! [`include/linux/virtio_config.h`](srctree/include/linux/virtio_config.h).
//!
//! A driver implements [`Driver`] and registers with [`module_virtio_driver!`]. In `probe` it
//! asks for its virtqueues with [`Device::find_vqs`], then calls [`Device::ready`].
//!
//! The queues are shared, revocable objects: the abstraction keeps its own reference to every
//! [`Virtqueue`] it hands out, and on unbind, after [`Driver::unbind`] has run, it shuts each
//! queue down (waiting for the request in flight, if any), resets the device and deletes the
//! queues. From then on every operation on a queue fails with [`ENODEV`], so a DRM device (or any
//! other object) that outlives the binding can hold a queue safely.

use crate::{
    bindings, device,
    device_id::RawDeviceId,
    driver,
    error::{from_result, to_result},
    prelude::*,
    sync::Arc,
    time::msecs_to_jiffies,
    types::Opaque,
    ThisModule,
};
use core::{marker::PhantomData, mem::offset_of, ptr::NonNull};

/// An adapter for the registration of virtio drivers.
pub struct Adapter<T: Driver>(T);

// SAFETY:
// - `bindings::virtio_driver` is a C type declared as `repr(C)`.
// - `T::Data` is the type of the driver's device private data.
// - `struct virtio_driver` embeds a `struct device_driver`.
// - `DEVICE_DRIVER_OFFSET` is the correct byte offset to the embedded `struct device_driver`.
unsafe impl<T: Driver> driver::DriverLayout for Adapter<T> {
    type DriverType = bindings::virtio_driver;
    type DriverData<'bound> = T::Data<'bound>;
    const DEVICE_DRIVER_OFFSET: usize = offset_of!(bindings::virtio_driver, driver);
}

// SAFETY: A call to `unregister` for a given instance of `DriverType` is guaranteed to be valid if
// a preceding call to `register` has been successful.
unsafe impl<T: Driver + 'static> driver::RegistrationOps for Adapter<T> {
    unsafe fn register(
        vdrv: &Opaque<Self::DriverType>,
        name: &'static CStr,
        module: &'static ThisModule,
    ) -> Result {
        let features = T::FEATURES;
        // SAFETY: It's safe to set the fields of `struct virtio_driver` on initialization; the
        // id table and the feature table are `'static`.
        unsafe {
            (*vdrv.get()).driver.name = name.as_char_ptr();
            (*vdrv.get()).id_table = T::ID_TABLE.as_ptr();
            (*vdrv.get()).feature_table = features.as_ptr();
            (*vdrv.get()).feature_table_size = features.len() as u32;
            (*vdrv.get()).probe = Some(Self::probe_callback);
            (*vdrv.get()).remove = Some(Self::remove_callback);
        }

        // SAFETY: `vdrv` is guaranteed to be a valid `DriverType`.
        to_result(unsafe { bindings::__register_virtio_driver(vdrv.get(), module.0) })
    }

    unsafe fn unregister(vdrv: &Opaque<Self::DriverType>) {
        // SAFETY: `vdrv` is guaranteed to be a valid, registered `DriverType`.
        unsafe { bindings::unregister_virtio_driver(vdrv.get()) }
    }
}

impl<T: Driver + 'static> Adapter<T> {
    extern "C" fn probe_callback(vdev: *mut bindings::virtio_device) -> c_int {
        // SAFETY: The virtio core only ever calls the probe callback with a valid pointer to a
        // `struct virtio_device`.
        //
        // INVARIANT: `vdev` is valid for the duration of `probe_callback()`.
        let vdev = unsafe { &*vdev.cast::<Device<device::CoreInternal<'_>>>() };

        from_result(|| {
            let index = DeviceId::find(T::ID_TABLE.as_ptr(), &vdev.id()).ok_or(ENODEV)?;
            let info = T::ID_TABLE.info(index);

            let data = T::probe(vdev, info);
            let ret = vdev.as_ref().set_drvdata(data);
            if ret.is_err() {
                // Probe failed after (perhaps) creating queues: take them down again.
                vdev.teardown_queues();
            }
            ret?;
            Ok(0)
        })
    }

    extern "C" fn remove_callback(vdev: *mut bindings::virtio_device) {
        // SAFETY: The virtio core only ever calls the remove callback with a valid pointer to a
        // `struct virtio_device`.
        //
        // INVARIANT: `vdev` is valid for the duration of `remove_callback()`.
        let vdev = unsafe { &*vdev.cast::<Device<device::CoreInternal<'_>>>() };

        // SAFETY: `remove_callback` is only ever called after a successful call to
        // `probe_callback`, hence it's guaranteed that `Device::set_drvdata()` has been called
        // and stored a `Pin<KBox<T::Data<'_>>>`.
        let data = unsafe { vdev.as_ref().drvdata_borrow::<T::Data<'_>>() };

        T::unbind(vdev, data);
        vdev.teardown_queues();
    }
}

/// Declares a kernel module that exposes a single virtio driver.
///
/// # Examples
///
/// ```ignore
/// kernel::module_virtio_driver! {
///     type: MyDriver,
///     name: "my_virtio",
///     authors: ["Me"],
///     description: "My virtio driver",
///     license: "GPL v2",
/// }
/// ```
#[macro_export]
macro_rules! module_virtio_driver {
    ($($f:tt)*) => {
        $crate::module_driver!(<T>, $crate::virtio::Adapter<T>, { $($f)* });
    };
}

/// Abstraction for `bindings::virtio_device_id`.
#[repr(transparent)]
#[derive(Clone, Copy)]
pub struct DeviceId(bindings::virtio_device_id);

impl DeviceId {
    /// Matches any vendor (`VIRTIO_DEV_ANY_ID`).
    pub const ANY_VENDOR: u32 = bindings::VIRTIO_DEV_ANY_ID;

    /// An id matching virtio device type `device` from any vendor.
    pub const fn new(device: u32) -> Self {
        Self(bindings::virtio_device_id {
            device,
            vendor: Self::ANY_VENDOR,
        })
    }

    /// The index of the first entry of a zero-terminated id table that matches `dev`, with the
    /// core's rule (`virtio_id_match()`).
    fn find(table: *const bindings::virtio_device_id, dev: &bindings::virtio_device_id) -> Option<usize> {
        let mut i = 0;
        loop {
            // SAFETY: `table` is an `IdArray`'s raw ids, terminated by a zeroed sentinel; we
            // stop at the sentinel (device 0 is not a valid virtio device type).
            let entry = unsafe { &*table.add(i) };
            if entry.device == 0 {
                return None;
            }
            if (entry.device == bindings::VIRTIO_DEV_ANY_ID || entry.device == dev.device)
                && (entry.vendor == bindings::VIRTIO_DEV_ANY_ID || entry.vendor == dev.vendor)
            {
                return Some(i);
            }
            i += 1;
        }
    }
}

// SAFETY: `DeviceId` is a `#[repr(transparent)]` wrapper of `virtio_device_id` and does not add
// additional invariants, so it's safe to transmute to `RawType`.
unsafe impl RawDeviceId for DeviceId {
    type RawType = bindings::virtio_device_id;
}

/// IdTable type for virtio drivers.
pub type IdTable<T> = &'static dyn kernel::device_id::IdTable<DeviceId, T>;

/// Creates a virtio `IdTable` with its alias for modpost.
///
/// `struct virtio_device_id` has no `driver_data`, so the table is built without an index; the
/// adapter finds the matching entry itself.
#[macro_export]
macro_rules! virtio_device_table {
    ($table_name:ident, $module_table_name:ident, $id_info_type: ty, $table_data: expr) => {
        const $table_name: $crate::device_id::IdArray<
            $crate::virtio::DeviceId,
            $id_info_type,
            { $table_data.len() },
        > = $crate::device_id::IdArray::new_without_index($table_data);

        $crate::module_device_table!("virtio", $module_table_name, $table_name);
    };
}

/// The virtio driver trait.
pub trait Driver {
    /// The type holding information about each device id supported by the driver.
    type IdInfo: 'static;

    /// The type of the driver's bus device private data.
    type Data<'bound>: Send + 'bound;

    /// The table of device ids supported by the driver.
    const ID_TABLE: IdTable<Self::IdInfo>;

    /// The device feature bits the driver understands (`feature_table`); the core adds the
    /// transport features (`VIRTIO_F_VERSION_1`, `VIRTIO_F_RING_RESET`, ...) itself.
    const FEATURES: &'static [u32];

    /// Called when a virtio device matches the driver. The device's features are negotiated;
    /// the driver sets up its queues with [`Device::find_vqs`] and calls [`Device::ready`].
    fn probe<'bound>(
        dev: &'bound Device<device::Core<'_>>,
        id_info: &'bound Self::IdInfo,
    ) -> impl PinInit<Self::Data<'bound>, Error> + 'bound;

    /// Called when the device is unbound, before the abstraction shuts the queues down and
    /// resets the device. Optional.
    fn unbind<'bound>(dev: &'bound Device<device::Core<'_>>, this: Pin<&Self::Data<'bound>>) {
        let _ = (dev, this);
    }
}

/// The virtio device representation.
///
/// # Invariants
///
/// A [`Device`] instance represents a valid `struct virtio_device` created by the C portion of
/// the kernel. While a driver of this abstraction is bound, `priv` is either null or owns a
/// `KBox<KVec<Arc<Virtqueue>>>` created by [`Device::find_vqs`].
#[repr(transparent)]
pub struct Device<Ctx: device::DeviceContext = device::Normal>(
    Opaque<bindings::virtio_device>,
    PhantomData<Ctx>,
);

impl<Ctx: device::DeviceContext> Device<Ctx> {
    fn as_raw(&self) -> *mut bindings::virtio_device {
        self.0.get()
    }

    /// The device's id (type and vendor).
    fn id(&self) -> bindings::virtio_device_id {
        // SAFETY: By the type invariant `self.as_raw()` is a valid `struct virtio_device`; `id`
        // is set before the device is registered and never changes.
        unsafe { (*self.as_raw()).id }
    }

    /// The virtio device type (e.g. 16 for a GPU).
    pub fn device_type(&self) -> u32 {
        self.id().device
    }

    /// Whether feature bit `fbit` was negotiated.
    pub fn has_feature(&self, fbit: u32) -> bool {
        // SAFETY: By the type invariant `self.as_raw()` is a valid `struct virtio_device`.
        unsafe { bindings::virtio_has_feature(self.as_raw(), fbit) }
    }

    /// Reads `buf.len()` bytes of the device configuration space at `offset`.
    ///
    /// Fails with [`EINVAL`] if the transport cannot read configuration space.
    pub fn config_read(&self, offset: u32, buf: &mut [u8]) -> Result {
        let len = u32::try_from(buf.len())?;
        // SAFETY: By the type invariant `self.as_raw()` is a valid `struct virtio_device` whose
        // `config` ops are set by its transport.
        let get = unsafe { (*(*self.as_raw()).config).get }.ok_or(EINVAL)?;
        // SAFETY: `get` reads `len` bytes into `buf`, which is valid for `len` bytes of writes.
        unsafe { get(self.as_raw(), offset, buf.as_mut_ptr().cast(), len) };
        Ok(())
    }
}

impl Device<device::Core<'_>> {
    /// Asks the transport for the device's virtqueues, one per entry of `names`; the queues
    /// are returned in the same order. May be called once per binding.
    pub fn find_vqs(&self, names: &[&'static CStr]) -> Result<KVec<Arc<Virtqueue>>> {
        const MAX_VQS: usize = 8;
        let n = names.len();
        if n == 0 || n > MAX_VQS {
            return Err(EINVAL);
        }
        // SAFETY: By the type invariant `self.as_raw()` is valid; `priv` is ours while bound.
        if !unsafe { (*self.as_raw()).priv_ }.is_null() {
            return Err(EBUSY);
        }

        // Allocate the Rust side first, so nothing can fail after the transport made queues.
        let ctl = DeviceCtl::new(self.as_raw())?;
        let mut queues = KVec::with_capacity(n, GFP_KERNEL)?;
        for (index, name) in names.iter().enumerate() {
            queues.push(Virtqueue::new(index as u32, name, ctl.clone())?, GFP_KERNEL)?;
        }
        let mut keep: KVec<Arc<Virtqueue>> = KVec::with_capacity(n, GFP_KERNEL)?;
        for q in queues.iter() {
            keep.push(q.clone(), GFP_KERNEL)?;
        }
        let keep = KBox::new(keep, GFP_KERNEL)?;

        let mut infos = [bindings::virtqueue_info {
            name: core::ptr::null(),
            callback: None,
            ctx: false,
        }; MAX_VQS];
        for (info, name) in infos.iter_mut().zip(names) {
            info.name = name.as_char_ptr();
            info.callback = Some(Virtqueue::callback);
        }
        let mut raw: [*mut bindings::virtqueue; MAX_VQS] = [core::ptr::null_mut(); MAX_VQS];

        // SAFETY: `self.as_raw()` is valid; `raw` and `infos` hold at least `n` entries.
        to_result(unsafe {
            bindings::virtio_find_vqs(
                self.as_raw(),
                n as u32,
                raw.as_mut_ptr(),
                infos.as_mut_ptr(),
                core::ptr::null_mut(),
            )
        })?;

        for (q, vq) in queues.iter().zip(raw.iter()) {
            let vq = NonNull::new(*vq).ok_or(EINVAL)?;
            q.attach(vq);
        }
        // INVARIANT: `priv` now owns the abstraction's references to the queues, released by
        // `teardown_queues()` on unbind.
        // SAFETY: `self.as_raw()` is valid and `priv` is ours while bound.
        unsafe { (*self.as_raw()).priv_ = KBox::into_raw(keep).cast() };
        Ok(queues)
    }

    /// Tells the device the driver is ready (`DRIVER_OK`). Queues may be used from then on.
    pub fn ready(&self) {
        // SAFETY: `self.as_raw()` is a valid, probing `struct virtio_device`.
        unsafe { bindings::virtio_device_ready(self.as_raw()) };
    }
}

impl<'a> Device<device::CoreInternal<'a>> {
    /// Shuts every queue down, resets the device and deletes its queues. Idempotent.
    fn teardown_queues(&self) {
        // SAFETY: By the type invariant `self.as_raw()` is valid and `priv` is ours.
        let keep = unsafe { (*self.as_raw()).priv_ };
        if keep.is_null() {
            return;
        }
        // SAFETY: `priv` was set from `KBox::into_raw` in `find_vqs` (type invariant).
        let keep = unsafe { KBox::from_raw(keep.cast::<KVec<Arc<Virtqueue>>>()) };
        // No [`Virtqueue::reset_device`] from now on (one running finishes first).
        let ctl = keep.first().map(|q| q.ctl.clone());
        let _ctl_guard = ctl.as_ref().map(|c| {
            let mut g = c.vdev.lock();
            *g = None;
            g
        });
        // Order: stop new requests, reset the device (it stops using every buffer, and for a
        // vhost-user device every access to guest memory), and only then tell the waiters
        // that their requests failed. A waiter told earlier (an mmu notifier's invalidation)
        // would report "done" while the device could still use the pages.
        // SAFETY: `self.as_raw()` is bound and its queues are `keep`; we hold the mutex.
        unsafe { stop_and_reset(self.as_raw(), &keep) };
        // SAFETY: As above; the device is reset, so its queues can go.
        unsafe {
            if let Some(del_vqs) = (*(*self.as_raw()).config).del_vqs {
                del_vqs(self.as_raw());
            }
            (*self.as_raw()).priv_ = core::ptr::null_mut();
        }
        for q in keep.iter() {
            q.release_after_reset();
        }
        drop(keep);
    }
}

// SAFETY: `virtio::Device` is a transparent wrapper of `struct virtio_device`.
// The offset is guaranteed to point to a valid device field inside `virtio::Device`.
unsafe impl<Ctx: device::DeviceContext> device::AsBusDevice<Ctx> for Device<Ctx> {
    const OFFSET: usize = offset_of!(bindings::virtio_device, dev);
}

// SAFETY: `Device` is a transparent wrapper of a type that doesn't depend on `Device`'s generic
// argument.
kernel::impl_device_context_deref!(unsafe { Device });
kernel::impl_device_context_into_aref!(Device);

// SAFETY: Instances of `Device` are always reference-counted.
unsafe impl crate::sync::aref::AlwaysRefCounted for Device {
    fn inc_ref(&self) {
        // SAFETY: The existence of a shared reference guarantees that the refcount is non-zero.
        unsafe { bindings::get_device(self.as_ref().as_raw()) };
    }

    unsafe fn dec_ref(obj: NonNull<Self>) {
        // CAST: `Self` a transparent wrapper of `bindings::virtio_device`.
        let vdev: *mut bindings::virtio_device = obj.cast().as_ptr();
        // SAFETY: By the type invariant of `Self`, `vdev` is a valid `struct virtio_device`.
        let dev = unsafe { core::ptr::addr_of_mut!((*vdev).dev) };
        // SAFETY: The safety requirements guarantee that the refcount is non-zero.
        unsafe { bindings::put_device(dev) }
    }
}

impl<Ctx: device::DeviceContext> AsRef<device::Device<Ctx>> for Device<Ctx> {
    fn as_ref(&self) -> &device::Device<Ctx> {
        // SAFETY: By the type invariant of `Self`, `self.as_raw()` is a valid
        // `struct virtio_device`.
        let dev = unsafe { core::ptr::addr_of_mut!((*self.as_raw()).dev) };
        // SAFETY: `dev` points to a valid `struct device`.
        unsafe { device::Device::from_raw(dev) }
    }
}

// SAFETY: A `Device` is always reference-counted and can be released from any thread.
unsafe impl Send for Device {}

// SAFETY: All methods of `Device<Normal>` are thread safe.
unsafe impl Sync for Device {}

// SAFETY: `Bound` is a zero-sized type-state marker that does not affect thread safety.
unsafe impl Sync for Device<device::Bound> {}

/// The bound device as its queues see it: lets a queue user reset the device (the one way
/// to make a device that stopped answering stop using memory), serialized with unbind.
///
/// # Invariants
///
/// While `vdev` is `Some`, it points to the bound `struct virtio_device` whose `priv` holds
/// the queue list made by `find_vqs`; unbind (`teardown_queues`) sets it to `None` under the
/// mutex before it deletes the queues.
#[pin_data]
struct DeviceCtl {
    #[pin]
    vdev: crate::sync::Mutex<Option<RawVdev>>,
}

/// A `struct virtio_device` pointer, owned by [`DeviceCtl`]'s invariant.
#[derive(Clone, Copy)]
struct RawVdev(NonNull<bindings::virtio_device>);

// SAFETY: Only used under `DeviceCtl`'s mutex, while the device is bound.
unsafe impl Send for RawVdev {}

impl DeviceCtl {
    fn new(vdev: *mut bindings::virtio_device) -> Result<Arc<Self>> {
        Arc::pin_init(
            pin_init!(Self { vdev <- crate::new_mutex!(NonNull::new(vdev).map(RawVdev)) }),
            GFP_KERNEL,
        )
    }
}

/// Stops the queues of `keep`, resets the device, then fails the requests in flight. The
/// order matters: waiters (an invalidation) must not hear "failed" while the device may still
/// use their buffers or the memory they protect.
///
/// # Safety
///
/// `vdev` is a bound device whose queues are `keep` and not deleted yet; the caller holds
/// [`DeviceCtl`]'s mutex (or the device has none yet).
unsafe fn stop_and_reset(vdev: *mut bindings::virtio_device, keep: &[Arc<Virtqueue>]) {
    for q in keep {
        q.shut_down();
    }
    // SAFETY: `vdev` is valid (function contract); no queue is in use any more.
    unsafe { bindings::virtio_reset_device(vdev) };
    for q in keep {
        q.fail_in_flight();
    }
}

/// How a sender waits for the device's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Only the timeout ends the wait (notifier callbacks, teardown: they must not give up
    /// because the task is dying).
    Uninterruptible,
    /// A fatal signal ends it too, with [`EINTR`] (ioctls: SIGKILL must end them promptly).
    Killable,
}

/// How long [`Virtqueue::exchange`] waits for the device before giving up.
pub const EXCHANGE_TIMEOUT_MS: u32 = 10_000;

/// Requests a queue can have in flight at once (the device's queues are at least this long).
const SLOTS: usize = 128;

/// Of [`SLOTS`], how many only [`Exchange::new_reserved`] requests may use, so that
/// invalidations always find room however many ordinary requests are stuck on the device
/// (one per context of the device suffices; the device has at most 16 by default).
pub const RESERVED_SLOTS: usize = 32;

/// [`Exchange`] states.
const X_IDLE: u32 = 0;
const X_IN_FLIGHT: u32 = 1;
const X_DONE: u32 = 2;
const X_ABANDONED: u32 = 3;
const X_DEAD: u32 = 4;
/// The sender is writing the request bytes ([`Exchange::fill`]).
const X_FILLING: u32 = 5;

/// A request/response buffer pair for a [`Virtqueue`], reusable and allocated up front, so
/// that sending it allocates nothing (as needed on memory-reclaim paths such as mmu notifier
/// callbacks).
///
/// The request bytes are written with [`Exchange::fill`] while the exchange is idle; the
/// device's answer is read with [`Exchange::with_response`] after [`Virtqueue::send`] returned.
///
/// # Invariants
///
/// `state` is one of the `X_*` values. The request is written by the driver only in
/// `X_FILLING` (through `fill`) and the buffers by the device only in `X_IN_FLIGHT`; the queue holds a
/// reference while the device may use them. `done` is an initialized completion.
#[pin_data]
pub struct Exchange {
    #[pin]
    done: Opaque<bindings::completion>,
    state: core::sync::atomic::AtomicU32,
    /// May use the reserved slots (see [`Exchange::new_reserved`]).
    reserved: bool,
    /// Bytes the device wrote in the last answer.
    len: core::sync::atomic::AtomicU32,
    request: core::cell::UnsafeCell<KVec<u8>>,
    response: core::cell::UnsafeCell<KVec<u8>>,
}

// SAFETY: The buffers are accessed according to `state` (type invariant), with the
// completion and atomics ordering the handovers.
unsafe impl Send for Exchange {}
// SAFETY: As above.
unsafe impl Sync for Exchange {}

impl Exchange {
    /// An idle exchange with a zeroed request of `request_len` bytes and room for a
    /// `response_len`-byte answer.
    pub fn new(request_len: usize, response_len: usize) -> Result<Arc<Self>> {
        Self::with_class(request_len, response_len, false)
    }

    /// [`Exchange::new`] for a request that must never wait behind ordinary traffic (an mmu
    /// notifier's invalidation): it may use the [`RESERVED_SLOTS`] that ordinary requests,
    /// which can stay queued for long (a job the device is slow to finish, or one whose sender
    /// gave up), may not take.
    pub fn new_reserved(request_len: usize, response_len: usize) -> Result<Arc<Self>> {
        Self::with_class(request_len, response_len, true)
    }

    fn with_class(request_len: usize, response_len: usize, reserved: bool) -> Result<Arc<Self>> {
        if request_len == 0 || response_len == 0 {
            return Err(EINVAL);
        }
        let mut request = KVec::new();
        request.resize(request_len, 0, GFP_KERNEL)?;
        let mut response = KVec::new();
        response.resize(response_len, 0, GFP_KERNEL)?;
        Arc::pin_init(
            pin_init!(Self {
                done <- Opaque::ffi_init(|slot: *mut bindings::completion| {
                    // SAFETY: `slot` is a valid pointer to an uninitialized `struct completion`.
                    unsafe { bindings::init_completion(slot) };
                }),
                state: core::sync::atomic::AtomicU32::new(X_IDLE),
                reserved,
                len: core::sync::atomic::AtomicU32::new(0),
                request: core::cell::UnsafeCell::new(request),
                response: core::cell::UnsafeCell::new(response),
            }),
            GFP_KERNEL,
        )
    }

    /// Writes the request bytes. Fails with [`EBUSY`] unless the exchange is idle.
    pub fn fill(&self, f: impl FnOnce(&mut [u8])) -> Result {
        use core::sync::atomic::Ordering;
        // Claim the request buffer (IDLE -> FILLING): a concurrent `fill` or `send` of the same
        // exchange, or one still owned by the device, gets `EBUSY` instead of racing.
        if self
            .state
            .compare_exchange(X_IDLE, X_FILLING, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(EBUSY);
        }
        // SAFETY: We own the buffers in FILLING: the queue and the device only touch them in
        // IN_FLIGHT, and every other claim fails (type invariant).
        f(unsafe { &mut *self.request.get() });
        self.state.store(X_IDLE, Ordering::Release);
        Ok(())
    }

    /// Calls `f` with the device's last answer (empty unless the last send succeeded). The
    /// buffers are claimed for the call (IDLE -> FILLING), so a concurrent `fill` or `send` of
    /// the same exchange gets [`EBUSY`] instead of overwriting what `f` reads; fails with
    /// [`EBUSY`] itself unless the exchange is idle.
    pub fn with_response<R>(&self, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
        use core::sync::atomic::Ordering;
        if self
            .state
            .compare_exchange(X_IDLE, X_FILLING, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(EBUSY);
        }
        // SAFETY: We own the buffers in FILLING: the queue and the device only touch them in
        // IN_FLIGHT, and every other claim fails (type invariant).
        let r: &KVec<u8> = unsafe { &*self.response.get() };
        let len = (self.len.load(Ordering::Relaxed) as usize).min(r.len());
        let out = f(&r[..len]);
        self.state.store(X_IDLE, Ordering::Release);
        Ok(out)
    }

    /// Called by the queue (under its lock) when the device returned the buffers.
    fn returned(&self, len: u32) {
        use core::sync::atomic::Ordering;
        self.len.store(len, Ordering::Relaxed);
        if self
            .state
            .compare_exchange(X_IN_FLIGHT, X_DONE, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            // SAFETY: `done` is an initialized completion; `complete()` is IRQ safe.
            unsafe { bindings::complete(self.done.get()) };
        } else {
            // The sender gave up waiting: the exchange is free again.
            self.state.store(X_IDLE, Ordering::Release);
        }
    }
}

/// The queue's state, protected by [`Virtqueue::lock`].
struct VqState {
    /// The transport's queue; `None` before `find_vqs` attached it and after shutdown.
    vq: Option<NonNull<bindings::virtqueue>>,
    /// Requests in flight; the token given to the transport is the slot index + 1.
    slots: KVec<Option<Arc<Exchange>>>,
}

/// A virtqueue used in request/response style, with many requests in flight that the device
/// may answer in any order.
///
/// Every transport operation on the queue (add, get, kick preparation) happens under an
/// interrupt-safe spinlock, both from process context (submission) and from the used-buffer
/// callback (interrupt context), which completes each request as the device returns it.
///
/// # Invariants
///
/// `lock` is an initialized spinlock protecting `state`. While `state.vq` is `Some`, it is a
/// live queue of a bound device, and the abstraction keeps this `Virtqueue` alive (an [`Arc`]
/// in the device's `priv`, at the queue's index) until the queue is deleted.
#[pin_data]
pub struct Virtqueue {
    #[pin]
    lock: Opaque<bindings::spinlock_t>,
    state: core::cell::UnsafeCell<VqState>,
    index: u32,
    name: &'static CStr,
    /// The device, for [`Self::reset_device`].
    ctl: Arc<DeviceCtl>,
}

// SAFETY: `state` is only accessed under `lock` (interrupts off), which serializes all users.
unsafe impl Send for Virtqueue {}
// SAFETY: As above.
unsafe impl Sync for Virtqueue {}

/// Holds [`Virtqueue::lock`] with interrupts disabled; gives access to the state.
struct VqGuard<'a> {
    q: &'a Virtqueue,
    flags: c_ulong,
}

impl VqGuard<'_> {
    fn state(&mut self) -> &mut VqState {
        // SAFETY: We hold the lock (type invariant of `Virtqueue`), so access is exclusive.
        unsafe { &mut *self.q.state.get() }
    }
}

impl Drop for VqGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: We hold the lock, taken with these flags by `Virtqueue::lock()`.
        unsafe { bindings::spin_unlock_irqrestore(self.q.lock.get(), self.flags) };
    }
}

impl Virtqueue {
    fn new(index: u32, name: &'static CStr, ctl: Arc<DeviceCtl>) -> Result<Arc<Self>> {
        let mut slots = KVec::with_capacity(SLOTS, GFP_KERNEL)?;
        for _ in 0..SLOTS {
            slots.push(None, GFP_KERNEL)?;
        }
        Arc::pin_init(
            pin_init!(Self {
                lock <- Opaque::ffi_init(|slot: *mut bindings::spinlock_t| {
                    // SAFETY: `slot` is valid for writing an uninitialized spinlock; the name
                    // and class key are static.
                    unsafe {
                        bindings::__spin_lock_init(
                            slot,
                            c"virtio_vq".as_char_ptr(),
                            crate::static_lock_class!().as_ptr(),
                        )
                    };
                }),
                state: core::cell::UnsafeCell::new(VqState { vq: None, slots }),
                index,
                name,
                ctl,
            }),
            GFP_KERNEL,
        )
    }

    fn lock(&self) -> VqGuard<'_> {
        // SAFETY: `lock` is an initialized spinlock (type invariant).
        let flags = unsafe { bindings::spin_lock_irqsave(self.lock.get()) };
        VqGuard { q: self, flags }
    }

    /// Resets the device this queue belongs to: every queue of it stops (later requests fail
    /// with [`ENODEV`]), the device is reset, which stops its use of every buffer (and, for a
    /// vhost-user device, every access to guest memory: the backend is stopped before the
    /// reset completes), and only then do requests in flight fail with [`ENODEV`]. This is
    /// what a driver does when the device did not confirm something it must confirm (an
    /// invalidation): afterwards the device provably no longer uses the memory. Sleeps; may
    /// be called from reclaim (allocates nothing). Unbinding later still works (it resets
    /// again and deletes the queues); after unbind this does nothing (unbind reset it).
    pub fn reset_device(&self) {
        let g = self.ctl.vdev.lock();
        let Some(RawVdev(vdev)) = *g else {
            return;
        };
        // SAFETY: While `DeviceCtl::vdev` is `Some`, the device is bound and its `priv` holds
        // the live queue list (type invariant of `DeviceCtl`); we hold the mutex, so unbind
        // cannot delete them meanwhile.
        unsafe {
            let keep = (*vdev.as_ptr()).priv_.cast::<KVec<Arc<Virtqueue>>>();
            if keep.is_null() {
                return;
            }
            stop_and_reset(vdev.as_ptr(), &*keep);
        }
        drop(g);
    }

    /// The queue's index on the device.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The queue's name.
    pub fn name(&self) -> &'static CStr {
        self.name
    }

    fn attach(&self, vq: NonNull<bindings::virtqueue>) {
        // Note: `vq->priv` belongs to the transport (virtio-pci keeps its notify address
        // there); the callback finds us through the device's `priv` instead.
        self.lock().state().vq = Some(vq);
    }

    /// Marks the queue dead: nothing more is queued (new requests fail with `ENODEV`). Called
    /// by the abstraction right before it resets the device; requests in flight are failed
    /// after the reset ([`Self::fail_in_flight`]), and their buffers stay with the queue until
    /// [`Self::release_after_reset`]: the device may use them until the reset.
    fn shut_down(&self) {
        self.lock().state().vq = None;
    }

    /// After the device was reset: every request still in flight failed; wake its waiter
    /// (`ENODEV`). Its exchange stays dead: the device never answered it.
    fn fail_in_flight(&self) {
        let mut g = self.lock();
        let st = g.state();
        for x in st.slots.iter().flatten() {
            let prev = x.state.swap(X_DEAD, core::sync::atomic::Ordering::AcqRel);
            if prev == X_IN_FLIGHT {
                // SAFETY: `done` is an initialized completion.
                unsafe { bindings::complete(x.done.get()) };
            }
        }
    }

    /// Frees the buffers of requests that were in flight at shutdown, once the device is
    /// reset and cannot touch them any more.
    fn release_after_reset(&self) {
        let mut g = self.lock();
        for slot in g.state().slots.iter_mut() {
            // The device is reset: it no longer owns the buffers. The exchange keeps its
            // state (dead, or abandoned): making it idle here would let a waiter that wakes
            // late read a response the device never wrote as if it had.
            drop(slot.take());
        }
    }

    /// Used-buffer notification (interrupt context): complete every returned request.
    extern "C" fn callback(vq: *mut bindings::virtqueue) {
        // SAFETY: The core calls this with a live queue of a bound device of ours.
        let (vdev, index) = unsafe { ((*vq).vdev, (*vq).index as usize) };
        // SAFETY: `vdev` is valid while its queues exist. Its `priv` is null until
        // `find_vqs` stores the queue list, which stays alive until after the queues are
        // deleted (`teardown_queues`), and no callback runs after that. A volatile read: the
        // pointer is written once, in process context, before any buffer is queued.
        let keep = unsafe { core::ptr::read_volatile(&raw const (*vdev).priv_) }
            .cast::<KVec<Arc<Virtqueue>>>();
        if keep.is_null() {
            return;
        }
        // SAFETY: See above.
        let Some(this) = (unsafe { &*keep }).get(index) else {
            return;
        };
        let mut g = this.lock();
        let st = g.state();
        let Some(raw) = st.vq else {
            return;
        };
        loop {
            let mut len: u32 = 0;
            // SAFETY: `raw` is live and we hold the queue's lock.
            let token = unsafe { bindings::virtqueue_get_buf(raw.as_ptr(), &mut len) } as usize;
            if token == 0 {
                break;
            }
            if let Some(x) = st.slots.get_mut(token - 1).and_then(Option::take) {
                x.returned(len);
                // Dropping `x` may free an exchange whose sender gave up; kfree is IRQ safe.
            }
        }
    }

    /// Sends `request` to the device and waits for its answer, for which `response_len`
    /// bytes are offered; returns the bytes the device wrote. Allocates; see [`Self::send`]
    /// for the allocation-free variant.
    pub fn exchange(&self, request: &[u8], response_len: usize, timeout_ms: u32, wait: Wait) -> Result<KVec<u8>> {
        let x = Exchange::new(request.len(), response_len)?;
        x.fill(|buf| buf.copy_from_slice(request))?;
        self.start_as(&x, timeout_ms, wait)?;
        self.wait_as(&x, timeout_ms, wait)?;
        let mut out = KVec::new();
        x.with_response(|r| out.extend_from_slice(r, GFP_KERNEL))??;
        Ok(out)
    }

    /// Sends an idle [`Exchange`] and waits for the device's answer (then readable with
    /// [`Exchange::with_response`]). Never allocates with reclaim and may be called from any
    /// sleepable context, including memory reclaim: the buffers are the exchange's; the one
    /// allocation left is the ring's own when the device negotiated indirect descriptors
    /// (`virtqueue_add_sgs` takes an indirect table with `GFP_ATOMIC`, which neither sleeps
    /// nor reclaims, and falls back to direct descriptors when it fails).
    ///
    /// Many senders may wait at once; the device may answer in any order. If the device does
    /// not answer within `timeout_ms`, fails with [`ETIMEDOUT`]: the exchange stays with the
    /// queue (busy) until the device returns it. After unbind fails with [`ENODEV`].
    pub fn send(&self, x: &Arc<Exchange>, timeout_ms: u32) -> Result {
        self.start(x, timeout_ms)?;
        self.wait(x, timeout_ms)
    }

    /// Queues an idle [`Exchange`] for the device without waiting for the answer; collect it
    /// with [`Self::wait`]. `timeout_ms` bounds the wait for room in the queue. Allocates
    /// nothing with reclaim (see [`Self::send`] for the ring's `GFP_ATOMIC` indirect table)
    /// and does not sleep unless the queue is full.
    pub fn start(&self, x: &Arc<Exchange>, timeout_ms: u32) -> Result {
        self.start_as(x, timeout_ms, Wait::Uninterruptible)
    }

    /// [`Self::start`]; with [`Wait::Killable`] a fatal signal also ends the wait for room in
    /// the queue ([`EINTR`]).
    pub fn start_as(&self, x: &Arc<Exchange>, timeout_ms: u32, wait: Wait) -> Result {
        use core::sync::atomic::Ordering;
        if x.state.compare_exchange(X_IDLE, X_IN_FLIGHT, Ordering::AcqRel, Ordering::Acquire).is_err() {
            return Err(EBUSY);
        }
        // From here on, an error before the buffers reach the device must return `x` to idle.
        let fail = |e: Error| {
            x.state.store(X_IDLE, Ordering::Release);
            Err(e)
        };
        // SAFETY: In flight but not queued yet: only we touch the buffers.
        let (req, resp) = unsafe { (&*x.request.get(), &mut *x.response.get()) };
        let (Ok(req_len), Ok(resp_len)) = (u32::try_from(req.len()), u32::try_from(resp.len())) else {
            return fail(EINVAL);
        };
        // SAFETY: `done` is an initialized completion with no waiter; start from zero.
        unsafe { bindings::init_completion(x.done.get()) };

        // SAFETY: `scatterlist` is a C struct for which all-zeroes is a valid (empty) value.
        let mut sg_out: bindings::scatterlist = unsafe { core::mem::zeroed() };
        // SAFETY: As above.
        let mut sg_in: bindings::scatterlist = unsafe { core::mem::zeroed() };
        // SAFETY: Both buffers are kmalloc memory of the given lengths, owned by `x`, which the
        // queue keeps referenced until the device has returned them.
        unsafe {
            bindings::sg_init_one(&mut sg_out, req.as_ptr().cast(), req_len);
            bindings::sg_init_one(&mut sg_in, resp.as_mut_ptr().cast(), resp_len);
        }
        let mut sgs = [&raw mut sg_out, &raw mut sg_in];

        let mut tries = 0u32;
        loop {
            let mut g = self.lock();
            let st = g.state();
            let Some(raw) = st.vq else {
                drop(g);
                return fail(ENODEV);
            };
            let used = st.slots.iter().filter(|s| s.is_some()).count();
            let slot = if x.reserved || used < SLOTS - RESERVED_SLOTS {
                st.slots.iter().position(Option::is_none)
            } else {
                None
            };
            // SAFETY: `raw` is live (we hold the lock); `sgs` holds one readable and one
            // writable entry; the token (slot + 1) is non-null.
            let ret = match slot {
                None => -(bindings::ENOSPC as i32),
                Some(slot) => unsafe {
                    bindings::virtqueue_add_sgs(
                        raw.as_ptr(),
                        sgs.as_mut_ptr(),
                        1,
                        1,
                        (slot + 1) as *mut c_void,
                        GFP_ATOMIC.as_raw(),
                    )
                },
            };
            if ret == -(bindings::ENOSPC as i32) {
                drop(g);
                tries += 1;
                if tries > timeout_ms {
                    return fail(EBUSY);
                }
                // SAFETY: `get_current()` is the running task.
                if wait == Wait::Killable && unsafe { bindings::fatal_signal_pending(bindings::get_current()) } {
                    return fail(EINTR);
                }
                crate::time::delay::fsleep(crate::time::Delta::from_millis(1));
                continue;
            }
            if ret != 0 {
                drop(g);
                return fail(Error::from_errno(ret));
            }
            if let Some(slot) = slot {
                st.slots[slot] = Some(x.clone());
            }
            // Kick under the lock too: `shut_down` takes the lock before the queue can be
            // deleted, so the queue is live for the notification.
            // SAFETY: `raw` is live and we hold the lock.
            unsafe {
                if bindings::virtqueue_kick_prepare(raw.as_ptr()) {
                    bindings::virtqueue_notify(raw.as_ptr());
                }
            }
            break;
        }
        Ok(())
    }

    /// Waits for the answer to an exchange queued with [`Self::start`] (see [`Self::send`]),
    /// not interruptible (for paths that must not give up early, such as an mmu notifier's
    /// invalidation: only the timeout ends it).
    pub fn wait(&self, x: &Arc<Exchange>, timeout_ms: u32) -> Result {
        self.wait_as(x, timeout_ms, Wait::Uninterruptible)
    }

    /// [`Self::wait`], and with [`Wait::Killable`] also ended by a fatal signal ([`EINTR`]).
    /// Either way an unanswered exchange is abandoned: it stays with the queue (busy) until the
    /// device returns it, and the device may still be working on it.
    pub fn wait_as(&self, x: &Arc<Exchange>, timeout_ms: u32, wait: Wait) -> Result {
        use core::sync::atomic::Ordering;
        match x.state.load(Ordering::Acquire) {
            X_IN_FLIGHT | X_DONE | X_DEAD => {}
            _ => return Err(EINVAL),
        }
        let jiffies = msecs_to_jiffies(timeout_ms);
        let left: c_long = match wait {
            // SAFETY: `done` is an initialized completion; we sleep in process context.
            Wait::Uninterruptible => unsafe { bindings::wait_for_completion_timeout(x.done.get(), jiffies) as c_long },
            // SAFETY: As above.
            Wait::Killable => unsafe { bindings::wait_for_completion_killable_timeout(x.done.get(), jiffies) },
        };
        if left <= 0
            && x.state.compare_exchange(X_IN_FLIGHT, X_ABANDONED, Ordering::AcqRel, Ordering::Acquire).is_ok()
        {
            return Err(if left < 0 { EINTR } else { ETIMEDOUT });
        }
        match x.state.load(Ordering::Acquire) {
            X_DEAD => Err(ENODEV),
            _ => {
                // X_DONE: the answer is in; hand the buffers back to the sender.
                x.state.store(X_IDLE, Ordering::Release);
                Ok(())
            }
        }
    }
}
