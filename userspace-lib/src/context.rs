//! [`Context`]: the GPU context of one open file, its userptr objects
//! ([`UserptrBo`]), jobs and counters.

use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use vgpu_uapi::{
    drm_vgpu_svm_bind, drm_vgpu_svm_bind_array, drm_vgpu_svm_ctx_config, drm_vgpu_svm_stats, drm_vgpu_svm_submit,
    drm_vgpu_svm_userptr_create,
};

use crate::device::Device;
use crate::error::{Error, Result};
use crate::job::{Job, JobResult};
use crate::stats::Stats;
use crate::sys;

/// The page size the ABI's alignment rules refer to.
pub const PAGE_SIZE: u64 = 4096;

/// GPU VAs must lie below `1 << GPU_VA_BITS` (4-level GPU page tables).
pub const GPU_VA_BITS: u32 = 48;

/// Most entries of one `DRM_IOCTL_VGPU_SVM_BIND_ARRAY` ([`Context::bind_array`]).
pub const BIND_ARRAY_MAX: usize = vgpu_uapi::VGPU_SVM_BIND_ARRAY_MAX as usize;

/// A failed [`Context::bind_array`]: the error, and the entry it is due to
/// (the driver's `failed`), if one is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchError {
    /// The ioctl's error.
    pub error: Error,
    /// The index of the entry the error is due to, if one is.
    pub entry: Option<usize>,
}

impl From<BatchError> for Error {
    fn from(e: BatchError) -> Error {
        match e.entry {
            Some(i) => Error::with_detail(e.error.op(), e.error.errno(), format!("entry {i}")),
            None => e.error,
        }
    }
}

impl fmt::Display for BatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.entry {
            Some(i) => write!(f, "{} (entry {i})", self.error),
            None => write!(f, "{}", self.error),
        }
    }
}

/// The GPU context of one open file of the render node, bound to the address
/// space (mm) of the process that opened it.
///
/// Every [`Device::open`] / [`Device::open_default`] opens a new file, so every
/// `Context` is its own GPU context with its own GPU page table. A context is
/// configured once with [`Context::config`] (SVM or not) before its first job.
///
/// After `fork()` the child inherits the file but not the context: the driver
/// refuses the child's ioctls with `EPERM` (except GET_PARAM and STATS), and
/// this type's destructors do nothing in a process other than the opener (so
/// that a child that drops an inherited `Context` cannot close the parent's
/// objects). A child opens its own context.
///
/// ```no_run
/// use vgpu::{Context, Job, reference};
///
/// # fn main() -> vgpu::Result<()> {
/// let ctx = Context::open_default()?;
/// ctx.config(true)?; // SVM: GPU VA == CPU VA
///
/// // Page-aligned memory the device may write (only reached through raw
/// // pointers while jobs run).
/// let len = 2 * 4096;
/// let buf = unsafe {
///     libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE,
///                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
/// } as *mut u8;
/// let va = buf as u64;
///
/// let job = Job::new()
///     .write_pattern(va, 4096, 42)
///     .copy(va + 4096, va, 4096)
///     .hash(va + 4096, 4096);
/// // SAFETY: the job writes only the mapping above, which nothing borrows.
/// let done = unsafe { ctx.submit(&job)? };
/// assert_eq!(done.result, reference::fnv1a64(&reference::pattern(42, 4096)));
///
/// let stats = ctx.stats()?;
/// assert_eq!(stats.violations, 0);
/// # Ok(())
/// # }
/// ```
pub struct Context {
    dev: Device,
    owner: libc::pid_t,
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("path", &self.dev.path())
            .field("owner", &self.owner)
            .finish()
    }
}

impl Context {
    /// The context of an already open device file.
    pub fn new(dev: Device) -> Context {
        Context {
            dev,
            // SAFETY: getpid has no preconditions.
            owner: unsafe { libc::getpid() },
        }
    }

    /// Opens the first `vgpu_svm` render node (a new file, hence a new
    /// context). See [`Device::open_default`].
    pub fn open_default() -> Result<Context> {
        Device::open_default().map(Context::new)
    }

    /// Opens the render node at `path` (a new file, hence a new context).
    pub fn open(path: impl AsRef<Path>) -> Result<Context> {
        Device::open(path).map(Context::new)
    }

    /// The device file behind this context (for `version()`, `get_param()`).
    pub fn device(&self) -> &Device {
        &self.dev
    }

    /// The process that opened the context.
    pub fn owner(&self) -> libc::pid_t {
        self.owner
    }

    /// Whether the calling process is the one that opened the context.
    pub fn is_owner(&self) -> bool {
        // SAFETY: getpid has no preconditions.
        unsafe { libc::getpid() == self.owner }
    }

    /// Configures the context (`DRM_IOCTL_VGPU_SVM_CTX_CONFIG`): with `svm`,
    /// GPU VA == CPU VA everywhere outside userptr bindings and device faults
    /// are serviced; without, jobs may only touch bound userptr objects.
    ///
    /// Only before the first job (`EBUSY` after).
    pub fn config(&self, svm: bool) -> Result<()> {
        self.config_flags(if svm { vgpu_uapi::VGPU_SVM_CTX_SVM } else { 0 })
    }

    /// [`Context::config`] with raw `VGPU_SVM_CTX_*` flags (unknown bits fail
    /// with `EINVAL`).
    pub fn config_flags(&self, flags: u32) -> Result<()> {
        let mut arg = drm_vgpu_svm_ctx_config { flags, pad: 0 };
        // SAFETY: the argument type of CTX_CONFIG; no pointers inside.
        unsafe {
            self.dev.ioctl(
                "DRM_IOCTL_VGPU_SVM_CTX_CONFIG",
                sys::DRM_IOCTL_VGPU_SVM_CTX_CONFIG,
                &mut arg,
            )?
        };
        Ok(())
    }

    /// A read-write userptr object over `buf` (which must be page-aligned and
    /// a whole number of pages, or the driver answers `EINVAL`).
    ///
    /// The object follows the *address range*, not the pages or the borrow:
    /// after this call the buffer may be used, unmapped or replaced at will,
    /// and every submit that uses the object maps whatever the range holds at
    /// that moment (semantic B). The borrow only documents intent.
    pub fn userptr(&self, buf: &mut [u8]) -> Result<UserptrBo<'_>> {
        self.userptr_raw(buf.as_mut_ptr(), buf.len(), false)
    }

    /// A read-only userptr object over `buf` (the device may only read it).
    pub fn userptr_readonly(&self, buf: &[u8]) -> Result<UserptrBo<'_>> {
        self.userptr_raw(buf.as_ptr(), buf.len(), true)
    }

    /// A userptr object over `len` bytes at `ptr`, read-only or read-write
    /// (`DRM_IOCTL_VGPU_SVM_USERPTR_CREATE`). Nothing is dereferenced here;
    /// the range need not even be mapped yet.
    pub fn userptr_raw(&self, ptr: *const u8, len: usize, readonly: bool) -> Result<UserptrBo<'_>> {
        let handle = self.userptr_create_handle(ptr as u64, len as u64, readonly)?;
        Ok(UserptrBo {
            ctx: self,
            handle,
            addr: ptr as u64,
            size: len as u64,
            readonly,
            bindings: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
        })
    }

    /// USERPTR_CREATE returning the bare GEM handle (closed by
    /// [`Context::gem_close`] or with the file).
    pub(crate) fn userptr_create_handle(
        &self,
        addr: u64,
        size: u64,
        readonly: bool,
    ) -> Result<u32> {
        let mut arg = drm_vgpu_svm_userptr_create {
            userptr: addr,
            size,
            flags: if readonly {
                vgpu_uapi::VGPU_SVM_USERPTR_READONLY
            } else {
                0
            },
            handle: 0,
        };
        // SAFETY: the argument type of USERPTR_CREATE; `userptr` is a user
        // address the kernel validates, never dereferenced by us.
        unsafe {
            self.dev.ioctl(
                "DRM_IOCTL_VGPU_SVM_USERPTR_CREATE",
                sys::DRM_IOCTL_VGPU_SVM_USERPTR_CREATE,
                &mut arg,
            )?
        };
        Ok(arg.handle)
    }

    /// Gives the object `handle` a global name (`DRM_IOCTL_GEM_FLINK`), by which another
    /// file of the device can open it ([`Context::gem_open`]). Only on the primary node
    /// (`/dev/dri/cardN`, see [`Device::primary_node`]); a render node refuses with `EACCES`.
    /// The driver does not let another context use the object: BIND and SUBMIT of a
    /// foreign object fail with `EINVAL`.
    pub fn gem_flink(&self, handle: u32) -> Result<u32> {
        let mut arg = sys::drm_gem_flink { handle, name: 0 };
        // SAFETY: the argument type of GEM_FLINK; no pointers inside.
        unsafe {
            self.dev
                .ioctl("DRM_IOCTL_GEM_FLINK", sys::DRM_IOCTL_GEM_FLINK, &mut arg)?
        };
        Ok(arg.name)
    }

    /// Opens the object of global name `name` in this file (`DRM_IOCTL_GEM_OPEN`): its
    /// handle here and its size. Closed with the file.
    pub fn gem_open(&self, name: u32) -> Result<(u32, u64)> {
        let mut arg = sys::drm_gem_open { name, handle: 0, size: 0 };
        // SAFETY: the argument type of GEM_OPEN; no pointers inside.
        unsafe {
            self.dev
                .ioctl("DRM_IOCTL_GEM_OPEN", sys::DRM_IOCTL_GEM_OPEN, &mut arg)?
        };
        Ok((arg.handle, arg.size))
    }

    /// Closes a GEM handle (`DRM_IOCTL_GEM_CLOSE`).
    pub(crate) fn gem_close(&self, handle: u32) -> Result<()> {
        let mut arg = sys::drm_gem_close { handle, pad: 0 };
        // SAFETY: the argument type of GEM_CLOSE; no pointers inside.
        unsafe {
            self.dev
                .ioctl("DRM_IOCTL_GEM_CLOSE", sys::DRM_IOCTL_GEM_CLOSE, &mut arg)?
        };
        Ok(())
    }

    /// Maps `bo` at `gpu_va` (`DRM_IOCTL_VGPU_SVM_BIND`). `gpu_va` must be
    /// page aligned and the range below 2^48 (`EINVAL`) and free (`EBUSY`).
    /// The binding is undone by [`Context::unbind`] or when `bo` is dropped.
    pub fn bind(&self, bo: &UserptrBo<'_>, gpu_va: u64) -> Result<()> {
        self.bind_handle(bo.handle, gpu_va)?;
        bo.bindings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(gpu_va);
        Ok(())
    }

    /// BIND of a raw handle (for the C API and negative tests).
    pub fn bind_handle(&self, handle: u32, gpu_va: u64) -> Result<()> {
        let mut arg = drm_vgpu_svm_bind {
            handle,
            pad: 0,
            gpu_va,
        };
        // SAFETY: the argument type of BIND; no pointers inside.
        unsafe {
            self.dev.ioctl(
                "DRM_IOCTL_VGPU_SVM_BIND",
                sys::DRM_IOCTL_VGPU_SVM_BIND,
                &mut arg,
            )?
        };
        Ok(())
    }

    /// Removes the binding at `gpu_va` (`DRM_IOCTL_VGPU_SVM_UNBIND`; `ENOENT`
    /// if there is none).
    pub fn unbind(&self, gpu_va: u64) -> Result<()> {
        let mut arg = drm_vgpu_svm_bind {
            handle: 0,
            pad: 0,
            gpu_va,
        };
        // SAFETY: the argument type of UNBIND; no pointers inside.
        unsafe {
            self.dev.ioctl(
                "DRM_IOCTL_VGPU_SVM_UNBIND",
                sys::DRM_IOCTL_VGPU_SVM_UNBIND,
                &mut arg,
            )?
        };
        Ok(())
    }

    /// One `DRM_IOCTL_VGPU_SVM_BIND_ARRAY`: binds (or, with `unbind`, unbinds)
    /// every entry or none. Each entry is `(handle, gpu_va)` as for BIND (the
    /// handle is ignored for an unbind). At most [`BIND_ARRAY_MAX`] entries
    /// (`EINVAL` beyond, and for none). Does not record the bindings in any
    /// [`UserptrBo`]: see [`Context::bind_many`] for that.
    pub fn bind_array(&self, entries: &[(u32, u64)], unbind: bool) -> std::result::Result<(), BatchError> {
        let raw: Vec<drm_vgpu_svm_bind> = entries
            .iter()
            .map(|&(handle, gpu_va)| drm_vgpu_svm_bind { handle, pad: 0, gpu_va })
            .collect();
        let mut arg = drm_vgpu_svm_bind_array {
            binds: raw.as_ptr() as u64,
            count: u32::try_from(raw.len()).unwrap_or(u32::MAX),
            flags: if unbind { vgpu_uapi::VGPU_SVM_BIND_ARRAY_UNBIND } else { 0 },
            failed: 0,
            pad: 0,
        };
        self.bind_array_raw(&mut arg)
    }

    /// `DRM_IOCTL_VGPU_SVM_BIND_ARRAY` with the argument as given (for negative
    /// tests: any count, flags, pad or pointer; the driver only reads through
    /// `binds`, so a bad pointer is `EFAULT`, never unsafe). Not retried on
    /// `EINTR` (a fatal signal while the device was being told).
    pub fn bind_array_raw(&self, arg: &mut drm_vgpu_svm_bind_array) -> std::result::Result<(), BatchError> {
        // SAFETY: the argument type of BIND_ARRAY; its pointer is only read by the kernel.
        let r = unsafe {
            self.dev.ioctl_once(
                "DRM_IOCTL_VGPU_SVM_BIND_ARRAY",
                sys::DRM_IOCTL_VGPU_SVM_BIND_ARRAY,
                arg,
            )
        };
        r.map(|_| ()).map_err(|error| BatchError {
            error,
            entry: (arg.failed != vgpu_uapi::VGPU_SVM_BIND_ARRAY_NO_ENTRY).then_some(arg.failed as usize),
        })
    }

    /// Binds each `(bo, gpu_va)`, in [`BIND_ARRAY_MAX`]-entry BIND_ARRAY calls,
    /// all or nothing: if a call fails, what the earlier ones bound is unbound
    /// again, and the error names the entry (of `binds`) it is due to. The
    /// bindings are recorded in their objects (undone on drop, as
    /// [`Context::bind`]'s).
    pub fn bind_many(&self, binds: &[(&UserptrBo<'_>, u64)]) -> Result<()> {
        self.own_all(binds)?;
        let entries: Vec<(u32, u64)> = binds.iter().map(|(bo, va)| (bo.handle, *va)).collect();
        for (k, chunk) in entries.chunks(BIND_ARRAY_MAX).enumerate() {
            if let Err(mut e) = self.bind_array(chunk, false) {
                for done in entries[..k * BIND_ARRAY_MAX].chunks(BIND_ARRAY_MAX) {
                    let _ = self.bind_array(done, true);
                }
                e.entry = e.entry.map(|i| i + k * BIND_ARRAY_MAX);
                return Err(e.into());
            }
        }
        for (bo, va) in binds {
            bo.bindings.lock().unwrap_or_else(|e| e.into_inner()).push(*va);
        }
        Ok(())
    }

    /// Unbinds each `(bo, gpu_va)` (bindings made through these objects), in
    /// [`BIND_ARRAY_MAX`]-entry calls, each all or nothing; what the calls
    /// before a failed one unbound stays unbound (and is no longer recorded in
    /// its object).
    pub fn unbind_many(&self, binds: &[(&UserptrBo<'_>, u64)]) -> Result<()> {
        self.own_all(binds)?;
        for (k, chunk) in binds.chunks(BIND_ARRAY_MAX).enumerate() {
            let entries: Vec<(u32, u64)> = chunk.iter().map(|(bo, va)| (bo.handle, *va)).collect();
            if let Err(mut e) = self.bind_array(&entries, true) {
                e.entry = e.entry.map(|i| i + k * BIND_ARRAY_MAX);
                return Err(e.into());
            }
            for (bo, va) in chunk {
                bo.bindings.lock().unwrap_or_else(|e| e.into_inner()).retain(|v| v != va);
            }
        }
        Ok(())
    }

    /// Closes many objects at once: one [`Context::unbind_many`] of all their
    /// bindings, then GEM_CLOSE of each (much faster than dropping them one by
    /// one, which unbinds each alone). Reports the first error; every object
    /// is closed anyway (a binding that could not be removed stays until the
    /// file is closed).
    pub fn close_many(&self, bos: Vec<UserptrBo<'_>>) -> Result<()> {
        if !self.is_owner() {
            return Ok(()); // a fork child: the parent's handles (as drop)
        }
        let mut first = Ok(());
        {
            let binds: Vec<(&UserptrBo<'_>, u64)> =
                bos.iter().flat_map(|bo| bo.bindings().into_iter().map(move |va| (bo, va))).collect();
            if !binds.is_empty() {
                first = self.unbind_many(&binds);
            }
        }
        for bo in bos {
            let r = bo.close();
            first = first.and(r);
        }
        first
    }

    /// Every object is this context's (another context's handle numbers mean
    /// other objects here: `EINVAL`).
    fn own_all(&self, binds: &[(&UserptrBo<'_>, u64)]) -> Result<()> {
        if binds.iter().all(|(bo, _)| std::ptr::eq(bo.ctx, self)) {
            Ok(())
        } else {
            Err(Error::with_detail("DRM_IOCTL_VGPU_SVM_BIND_ARRAY", libc::EINVAL, "an object of another context"))
        }
    }

    /// Runs `job` and waits for it (`DRM_IOCTL_VGPU_SVM_SUBMIT`).
    ///
    /// Errors carry the driver's errno: `EFAULT` (an op touched memory that
    /// could not be mirrored: unmapped, VM_IO/PFNMAP, or neither SVM nor a
    /// binding), `EPERM` (a write to read-only memory or a READONLY object),
    /// `EINVAL` (bad ops), `EIO` (the device failed the job), `EINTR`
    /// (interrupted: the job was aborted; it is *not* retried, since some ops
    /// may have run).
    ///
    /// # Safety
    ///
    /// The device writes process memory behind the compiler's back, like DMA.
    /// Every byte a writing op (COPY, FILL, ATOMIC_ADD, WRITE_PATTERN) may
    /// touch must be memory that no live Rust reference points to for the
    /// duration of the call (memory reached only through raw pointers, such as
    /// a private `mmap`, is fine), and whose every byte pattern is a valid
    /// value of whatever type lives there. Jobs that only read
    /// ([`Context::submit_readonly`]) have no such requirement.
    pub unsafe fn submit(&self, job: &Job) -> Result<JobResult> {
        let ops = job.raw_ops();
        let handles = job.handles();
        let mut arg = drm_vgpu_svm_submit {
            ops: ops.as_ptr() as u64,
            nr_ops: ops.len() as u32,
            flags: job.submit_flags(),
            handles: if handles.is_empty() {
                0
            } else {
                handles.as_ptr() as u64
            },
            nr_handles: handles.len() as u32,
            pad: 0,
            result: 0,
            faults: 0,
        };
        // SAFETY: the argument type of SUBMIT; `ops` and `handles` point to
        // live arrays of exactly nr_ops / nr_handles elements that outlive the
        // call. What the job writes is the caller's promise.
        unsafe {
            self.dev.ioctl_once(
                "DRM_IOCTL_VGPU_SVM_SUBMIT",
                sys::DRM_IOCTL_VGPU_SVM_SUBMIT,
                &mut arg,
            )?
        };
        Ok(JobResult {
            result: arg.result,
            faults: arg.faults,
        })
    }

    /// [`Context::submit`] for jobs that do not write memory (HASH, READ):
    /// safe, since the device only reads. A job with a writing op fails with
    /// `EINVAL` without reaching the driver.
    pub fn submit_readonly(&self, job: &Job) -> Result<JobResult> {
        if job.writes() {
            return Err(Error::with_detail(
                "submit_readonly",
                libc::EINVAL,
                "the job has an op that writes memory",
            ));
        }
        // SAFETY: no op writes memory.
        unsafe { self.submit(job) }
    }

    /// Reads the device's and this context's counters
    /// (`DRM_IOCTL_VGPU_SVM_STATS`). Allowed from any process holding the file.
    pub fn stats(&self) -> Result<Stats> {
        let mut arg = drm_vgpu_svm_stats::default();
        // SAFETY: the argument type of STATS; no pointers inside.
        unsafe {
            self.dev.ioctl(
                "DRM_IOCTL_VGPU_SVM_STATS",
                sys::DRM_IOCTL_VGPU_SVM_STATS,
                &mut arg,
            )?
        };
        Ok(Stats::from(&arg))
    }
}

/// A userptr GEM object: a user address range the device can use through a
/// binding ([`Context::bind`]). Closed (unbinding what this value bound first)
/// on drop.
///
/// ```no_run
/// use vgpu::{Context, Job};
///
/// # fn main() -> vgpu::Result<()> {
/// let ctx = Context::open_default()?;
/// ctx.config(false)?; // no SVM: jobs only see bound objects
/// let len = 4096usize;
/// let p = unsafe {
///     libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE,
///                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
/// } as *mut u8;
/// let bo = ctx.userptr_raw(p, len, false)?;
/// let gpu_va = 0x1000_0000_0000;
/// bo.bind(gpu_va)?;
/// let job = Job::new().fill(gpu_va, len as u64, 0x5a).uses(&bo);
/// // SAFETY: the job writes only the private mapping above.
/// unsafe { ctx.submit(&job)? };
/// assert_eq!(unsafe { *p.add(100) }, 0x5a); // the CPU sees the device's write
/// # Ok(())
/// # }
/// ```
pub struct UserptrBo<'c> {
    ctx: &'c Context,
    handle: u32,
    addr: u64,
    size: u64,
    readonly: bool,
    bindings: Mutex<Vec<u64>>,
    closed: AtomicBool,
}

impl fmt::Debug for UserptrBo<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserptrBo")
            .field("handle", &self.handle)
            .field("addr", &format_args!("{:#x}", self.addr))
            .field("size", &self.size)
            .field("readonly", &self.readonly)
            .field("bindings", &self.bindings())
            .finish()
    }
}

impl<'c> UserptrBo<'c> {
    /// The GEM handle.
    pub fn handle(&self) -> u32 {
        self.handle
    }

    /// Start of the user range.
    pub fn addr(&self) -> u64 {
        self.addr
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether the device may only read it.
    pub fn readonly(&self) -> bool {
        self.readonly
    }

    /// The context the object belongs to.
    pub fn context(&self) -> &'c Context {
        self.ctx
    }

    /// GPU VAs this object is bound at (through this value).
    pub fn bindings(&self) -> Vec<u64> {
        self.bindings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// [`Context::bind`] of this object.
    pub fn bind(&self, gpu_va: u64) -> Result<()> {
        self.ctx.bind(self, gpu_va)
    }

    /// [`Context::unbind`] of one of this object's bindings.
    pub fn unbind(&self, gpu_va: u64) -> Result<()> {
        self.ctx.unbind(gpu_va)?;
        self.bindings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|&va| va != gpu_va);
        Ok(())
    }

    /// Unbinds and closes now, reporting the first error (drop ignores them).
    pub fn close(self) -> Result<()> {
        self.release() // drop then finds it closed
    }

    fn release(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) || !self.ctx.is_owner() {
            return Ok(()); // done already, or a fork child (the parent's handle)
        }
        let mut first = Ok(());
        let bound = std::mem::take(&mut *self.bindings.lock().unwrap_or_else(|e| e.into_inner()));
        for va in bound {
            if let Err(e) = self.ctx.unbind(va) {
                first = first.and(Err(e));
            }
        }
        first.and(self.ctx.gem_close(self.handle))
    }
}

impl Drop for UserptrBo<'_> {
    fn drop(&mut self) {
        let _ = self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn submit_readonly_refuses_writing_jobs_locally() {
        // /dev/null is not a DRM device, but the refusal happens before any
        // ioctl is issued.
        let ctx = Context::new(Device::open("/dev/null").unwrap());
        let e = ctx.submit_readonly(&Job::new().fill(0, 1, 0)).unwrap_err();
        assert!(e.is(libc::EINVAL));
        assert_eq!(e.op(), "submit_readonly");
        assert!(ctx.is_owner());
    }

    #[test]
    fn context_and_objects_are_thread_safe() {
        fn sync_send<T: Sync + Send>() {}
        sync_send::<Context>();
        sync_send::<UserptrBo<'static>>();
    }

    #[test]
    fn ioctls_on_a_non_drm_file_fail_with_enotty() {
        let ctx = Context::new(Device::open("/dev/null").unwrap());
        assert!(ctx.config(true).unwrap_err().is(libc::ENOTTY));
        assert!(ctx.stats().unwrap_err().is(libc::ENOTTY));
        let e = ctx.userptr_raw(std::ptr::null(), 4096, false).unwrap_err();
        assert!(e.is(libc::ENOTTY));
        assert_eq!(e.op(), "DRM_IOCTL_VGPU_SVM_USERPTR_CREATE");
        // SAFETY: the ioctl fails before anything runs.
        let e = unsafe { ctx.submit(&Job::new().read(0, 1)) }.unwrap_err();
        assert!(e.is(libc::ENOTTY));
    }
}
