// SPDX-License-Identifier: GPL-2.0

//! Debug knobs that break the driver on purpose, to prove the device's checker fires.
//!
//! They live in debugfs (`/sys/kernel/debug/vgpu_svm/`) and can only be turned on when the
//! module was loaded with `unsafe_debug=1`; otherwise writing them fails with `EPERM`.
//!
//! - `skip_invalidate`: the notifier callback publishes the sequence but leaves the GPU
//!   entries in place, so the device keeps stale pages after COW, migration, ...
//! - `legacy_valid_flag`: mirror with the pre-2019 scheme instead of the sequence count: a
//!   per-context `valid` flag cleared at invalidate-range-start and set again at the end,
//!   checked under the lock. It misses invalidations that start and end between
//!   `hmm_range_fault` and taking the lock; `legacy_delay_us` widens that window.
//! - `mirror_secretmem`: mirror `memfd_secret(2)` memory like any other (the 7.2
//!   `hmm_range_fault` behaviour the driver guards against), so the device's direct-map
//!   check must flag every access to it.
//! - `fail_invalidate`: every device INVALIDATE fails as if the device had not answered: the
//!   driver must reset the device before it tells mm the invalidation is done.

use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use kernel::{debugfs::Dir, prelude::*, uaccess::UserSliceReader};

static UNSAFE_DEBUG: AtomicBool = AtomicBool::new(false);
static SKIP_INVALIDATE: AtomicBool = AtomicBool::new(false);
static LEGACY_VALID_FLAG: AtomicBool = AtomicBool::new(false);
static LEGACY_DELAY_US: AtomicU32 = AtomicU32::new(0);
static MIRROR_SECRETMEM: AtomicBool = AtomicBool::new(false);
static FAIL_INVALIDATE: AtomicBool = AtomicBool::new(false);

/// Called at module load with the `unsafe_debug` parameter.
pub(crate) fn set_unsafe_debug(on: bool) {
    UNSAFE_DEBUG.store(on, Ordering::Relaxed);
    if on {
        pr_warn!("vgpu_svm: unsafe_debug=1: debugfs knobs can break coherence on purpose\n");
    }
}

/// `skip_invalidate` is on.
pub(crate) fn skip_invalidate() -> bool {
    SKIP_INVALIDATE.load(Ordering::Relaxed)
}

/// `legacy_valid_flag` is on.
pub(crate) fn legacy_valid_flag() -> bool {
    LEGACY_VALID_FLAG.load(Ordering::Relaxed)
}

/// `mirror_secretmem` is on.
pub(crate) fn mirror_secretmem() -> bool {
    MIRROR_SECRETMEM.load(Ordering::Relaxed)
}

/// `fail_invalidate` is on.
pub(crate) fn fail_invalidate() -> bool {
    FAIL_INVALIDATE.load(Ordering::Relaxed)
}

/// The delay to inject between `hmm_range_fault` and taking the lock in legacy mode.
pub(crate) fn legacy_delay_us() -> u32 {
    LEGACY_DELAY_US.load(Ordering::Relaxed)
}

fn parse_u32(reader: &mut UserSliceReader) -> Result<u32> {
    if !UNSAFE_DEBUG.load(Ordering::Relaxed) {
        return Err(EPERM);
    }
    let mut buf = [0u8; 16];
    let n = reader.len().min(buf.len());
    reader.read_slice(&mut buf[..n])?;
    let s = core::str::from_utf8(&buf[..n]).map_err(|_| EINVAL)?.trim();
    s.parse().map_err(|_| EINVAL)
}

fn show_bool(flag: &&'static AtomicBool, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
    writeln!(f, "{}", u32::from(flag.load(Ordering::Relaxed)))
}

fn store_bool(flag: &&'static AtomicBool, r: &mut UserSliceReader) -> Result {
    let v = parse_u32(r)?;
    if v > 1 {
        return Err(EINVAL);
    }
    flag.store(v == 1, Ordering::Relaxed);
    pr_warn!("vgpu_svm: debug knob set to {v}\n");
    Ok(())
}

fn show_u32(v: &&'static AtomicU32, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
    writeln!(f, "{}", v.load(Ordering::Relaxed))
}

fn store_u32(v: &&'static AtomicU32, r: &mut UserSliceReader) -> Result {
    let n = parse_u32(r)?;
    if n > 1_000_000 {
        return Err(EINVAL);
    }
    v.store(n, Ordering::Relaxed);
    Ok(())
}

/// The debugfs directory and its knob files; removed when dropped.
#[pin_data]
pub(crate) struct Knobs {
    _dir: Dir,
    #[pin]
    _skip: kernel::debugfs::File<&'static AtomicBool>,
    #[pin]
    _legacy: kernel::debugfs::File<&'static AtomicBool>,
    #[pin]
    _delay: kernel::debugfs::File<&'static AtomicU32>,
    #[pin]
    _secretmem: kernel::debugfs::File<&'static AtomicBool>,
    #[pin]
    _fail_inval: kernel::debugfs::File<&'static AtomicBool>,
}

impl Knobs {
    /// The knob files in `dir` (the driver's debugfs directory).
    pub(crate) fn new(dir: Dir) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            _skip <- dir.read_write_callback_file(c"skip_invalidate", &SKIP_INVALIDATE, &show_bool, &store_bool),
            _legacy <- dir.read_write_callback_file(c"legacy_valid_flag", &LEGACY_VALID_FLAG, &show_bool, &store_bool),
            _delay <- dir.read_write_callback_file(c"legacy_delay_us", &LEGACY_DELAY_US, &show_u32, &store_u32),
            _secretmem <- dir.read_write_callback_file(c"mirror_secretmem", &MIRROR_SECRETMEM, &show_bool, &store_bool),
            _fail_inval <- dir.read_write_callback_file(c"fail_invalidate", &FAIL_INVALIDATE, &show_bool, &store_bool),
            _dir: dir,
        }? Error)
    }
}
