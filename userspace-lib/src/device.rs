//! [`Device`]: an open vgpu_svm render node.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::path::{Path, PathBuf};

use vgpu_uapi::drm_vgpu_svm_get_param;

use crate::error::{Error, Result};
use crate::sys;

/// The DRM driver name the kernel reports for a vgpu_svm device.
pub const DRIVER_NAME: &str = "vgpu_svm";

/// Where [`Device::open_default`] looks for render nodes.
pub const DRI_DIR: &str = "/dev/dri";

/// The render node minors DRM hands out (`renderD128` ..= `renderD191`).
pub const RENDER_MINORS: std::ops::RangeInclusive<u32> = 128..=191;

/// A parameter readable with [`Device::get_param`] (`VGPU_SVM_PARAM_*`).
#[repr(u32)]
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Param {
    /// The device's protocol version (major << 16 | minor), read from its
    /// capset at probe. See [`ProtocolVersion`].
    ProtocolVersion = vgpu_uapi::VGPU_SVM_PARAM_PROTOCOL_VERSION,
    /// The capset id the device answered with (`VGPU_SVM_CAPSET_ID`).
    CapsetId = vgpu_uapi::VGPU_SVM_PARAM_CAPSET_ID,
    /// How many contexts the device can hold at once.
    MaxContexts = vgpu_uapi::VGPU_SVM_PARAM_MAX_CONTEXTS,
    /// GPU virtual address bits.
    VaBits = vgpu_uapi::VGPU_SVM_PARAM_VA_BITS,
    /// The device's feature bits (`VGPU_SVM_FEATURE_*`).
    Features = vgpu_uapi::VGPU_SVM_PARAM_FEATURES,
}

impl Param {
    /// Every parameter, in ABI order.
    pub const ALL: [Param; 5] = [
        Param::ProtocolVersion,
        Param::CapsetId,
        Param::MaxContexts,
        Param::VaBits,
        Param::Features,
    ];

    /// The `VGPU_SVM_PARAM_*` value.
    pub const fn raw(self) -> u32 {
        self as u32
    }

    /// The parameter with `VGPU_SVM_PARAM_*` value `raw`, if known.
    pub fn from_raw(raw: u32) -> Option<Param> {
        Self::ALL.into_iter().find(|p| p.raw() == raw)
    }
}

/// A protocol version as carried by [`Param::ProtocolVersion`]: major in the
/// high 16 bits, minor in the low 16 bits.
///
/// ```
/// use vgpu::ProtocolVersion;
/// let v = ProtocolVersion::from_raw(0x0002_0003);
/// assert_eq!((v.major, v.minor), (2, 3));
/// assert_eq!(v.to_string(), "2.3");
/// assert_eq!(ProtocolVersion::CURRENT.raw(), vgpu_uapi::VGPU_SVM_PROTOCOL_VERSION);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProtocolVersion {
    /// Incompatible changes; a driver refuses a device whose major differs.
    pub major: u16,
    /// Compatible additions.
    pub minor: u16,
}

impl ProtocolVersion {
    /// The version this crate was built against (`VGPU_SVM_PROTOCOL_VERSION`).
    pub const CURRENT: ProtocolVersion =
        ProtocolVersion::from_raw(vgpu_uapi::VGPU_SVM_PROTOCOL_VERSION);

    /// Splits a raw `major << 16 | minor` value.
    pub const fn from_raw(raw: u32) -> Self {
        Self {
            major: (raw >> 16) as u16,
            minor: raw as u16,
        }
    }

    /// The raw `major << 16 | minor` value.
    pub const fn raw(self) -> u32 {
        ((self.major as u32) << 16) | self.minor as u32
    }
}

impl fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// What `DRM_IOCTL_VERSION` reports about the driver behind a DRM node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DrmVersion {
    /// Driver major version.
    pub major: i32,
    /// Driver minor version.
    pub minor: i32,
    /// Driver patch level.
    pub patchlevel: i32,
    /// Driver name (`"vgpu_svm"` for this driver).
    pub name: String,
    /// Driver date (may be empty or a placeholder on recent kernels).
    pub date: String,
    /// Driver description.
    pub desc: String,
}

impl fmt::Display for DrmVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}.{}.{}",
            self.name, self.major, self.minor, self.patchlevel
        )?;
        if !self.desc.is_empty() {
            write!(f, " ({})", self.desc)?;
        }
        Ok(())
    }
}

/// An open vgpu_svm DRM render node.
///
/// Each open file is its own GPU context, bound to the address space of the
/// process that opened it. Closing happens on drop.
///
/// ```no_run
/// use vgpu::{Device, Param};
///
/// # fn main() -> vgpu::Result<()> {
/// let dev = Device::open_default()?;          // first vgpu_svm render node
/// println!("{} at {}", dev.version()?, dev.path().display());
/// let va_bits = dev.get_param(Param::VaBits)?;
/// match dev.get_param(Param::MaxContexts) {
///     Ok(n) => println!("{n} contexts, {va_bits}-bit VA"),
///     Err(e) if e.is(libc::EINVAL) => println!("old driver"),
///     Err(e) => return Err(e),
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Device {
    file: File,
    path: PathBuf,
}

impl Device {
    /// Opens the DRM node at `path` read-write (close-on-exec).
    ///
    /// Does not check which driver is behind it; see [`Device::version`].
    pub fn open(path: impl AsRef<Path>) -> Result<Device> {
        let path = path.as_ref();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| {
                let errno = Error::from_io("open", &e).errno();
                Error::with_detail("open", errno, path.display().to_string())
            })?;
        Ok(Device {
            file,
            path: path.to_owned(),
        })
    }

    /// Opens the first render node (`/dev/dri/renderD128` ..= `renderD191`)
    /// whose driver is `vgpu_svm`.
    ///
    /// Fails with `ENODEV` if there is none; the error's message lists what
    /// the scan found instead.
    pub fn open_default() -> Result<Device> {
        Self::open_first_in(Path::new(DRI_DIR))
    }

    /// [`Device::open_default`] over an arbitrary directory (for tests).
    pub(crate) fn open_first_in(dir: &Path) -> Result<Device> {
        let mut found = Vec::new();
        for minor in RENDER_MINORS {
            let node = format!("renderD{minor}");
            let path = dir.join(&node);
            let dev = match Device::open(&path) {
                Ok(dev) => dev,
                Err(e) if e.is(libc::ENOENT) => continue,
                Err(e) => {
                    found.push(format!(
                        "{node}: open: {}",
                        std::io::Error::from_raw_os_error(e.errno())
                    ));
                    continue;
                }
            };
            match dev.version() {
                Ok(v) if v.name == DRIVER_NAME => return Ok(dev),
                Ok(v) => found.push(format!("{node}: driver {:?}", v.name)),
                Err(e) => found.push(format!("{node}: {e}")),
            }
        }
        let found = if found.is_empty() {
            "no render nodes".to_owned()
        } else {
            found.join("; ")
        };
        Err(Error::with_detail(
            "open_default",
            libc::ENODEV,
            format!(
                "no {DRIVER_NAME} render node found in {} (found: {found})",
                dir.display()
            ),
        ))
    }

    /// The primary node (`/dev/dri/cardN`) of the DRM device this node belongs to, from
    /// sysfs (`/sys/class/drm/<node>/device/drm/card*`). `ENOENT` if there is none.
    pub fn primary_node(&self) -> Result<PathBuf> {
        let node = self.path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let dir = Path::new("/sys/class/drm").join(node).join("device/drm");
        let entries = std::fs::read_dir(&dir)
            .map_err(|e| Error::with_detail("primary_node", Error::from_io("read_dir", &e).errno(), dir.display().to_string()))?;
        let mut cards: Vec<String> = entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.strip_prefix("card").is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit())))
            .collect();
        cards.sort();
        match cards.first() {
            Some(c) => Ok(Path::new(DRI_DIR).join(c)),
            None => Err(Error::with_detail("primary_node", libc::ENOENT, format!("no card* in {}", dir.display()))),
        }
    }

    /// The path this device was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queries the driver's name, version, date and description
    /// (`DRM_IOCTL_VERSION`).
    pub fn version(&self) -> Result<DrmVersion> {
        const OP: &str = "DRM_IOCTL_VERSION";
        // First call: all lengths zero, the kernel fills in the real lengths.
        let mut v = sys::drm_version::default();
        // SAFETY: `v` is a valid drm_version with null buffers of length 0.
        unsafe { self.ioctl(OP, sys::DRM_IOCTL_VERSION, &mut v)? };

        let mut name = vec![0u8; v.name_len];
        let mut date = vec![0u8; v.date_len];
        let mut desc = vec![0u8; v.desc_len];
        let mut v2 = sys::drm_version {
            name_len: name.len(),
            name: name.as_mut_ptr().cast(),
            date_len: date.len(),
            date: date.as_mut_ptr().cast(),
            desc_len: desc.len(),
            desc: desc.as_mut_ptr().cast(),
            ..Default::default()
        };
        // SAFETY: every pointer refers to a live buffer of exactly the length
        // passed with it; the kernel writes at most that many bytes.
        unsafe { self.ioctl(OP, sys::DRM_IOCTL_VERSION, &mut v2)? };

        // On return each length is the string's full length, which may differ
        // from our buffer only if it changed between the calls: keep what fits.
        let text = |mut buf: Vec<u8>, len: usize| {
            buf.truncate(len);
            if let Some(nul) = buf.iter().position(|&b| b == 0) {
                buf.truncate(nul);
            }
            String::from_utf8_lossy(&buf).into_owned()
        };
        Ok(DrmVersion {
            major: v2.version_major,
            minor: v2.version_minor,
            patchlevel: v2.version_patchlevel,
            name: text(name, v2.name_len),
            date: text(date, v2.date_len),
            desc: text(desc, v2.desc_len),
        })
    }

    /// Reads one parameter (`DRM_IOCTL_VGPU_SVM_GET_PARAM`).
    ///
    /// A parameter the driver does not know fails with `EINVAL`.
    pub fn get_param(&self, param: Param) -> Result<u64> {
        let mut arg = drm_vgpu_svm_get_param {
            param: param.raw(),
            ..Default::default()
        };
        self.get_param_raw(&mut arg)?;
        Ok(arg.value)
    }

    /// `DRM_IOCTL_VGPU_SVM_GET_PARAM` with a caller-built argument, so tests
    /// can send what [`Device::get_param`] never would (unknown params,
    /// nonzero padding). Not part of the supported API.
    #[doc(hidden)]
    pub fn get_param_raw(&self, arg: &mut drm_vgpu_svm_get_param) -> Result<()> {
        // SAFETY: `arg` is a valid, exclusively borrowed drm_vgpu_svm_get_param,
        // which is the argument type this ioctl number encodes.
        unsafe {
            self.ioctl(
                "DRM_IOCTL_VGPU_SVM_GET_PARAM",
                sys::DRM_IOCTL_VGPU_SVM_GET_PARAM,
                arg,
            )?
        };
        Ok(())
    }

    /// Issues ioctl `request` on this device with argument `arg`; `-1` becomes
    /// an [`Error`] named `op` carrying the exact errno. Retries on `EINTR`.
    ///
    /// # Safety
    /// `request` must be an ioctl whose argument is a `T`, and every pointer
    /// inside `*arg` must be valid for what the kernel does with it.
    pub(crate) unsafe fn ioctl<T>(
        &self,
        op: &'static str,
        request: u32,
        arg: *mut T,
    ) -> Result<libc::c_int> {
        loop {
            // SAFETY: forwarded to the caller.
            let ret = unsafe { libc::ioctl(self.file.as_raw_fd(), request as sys::Request, arg) };
            if ret != -1 {
                return Ok(ret);
            }
            let err = Error::last_os_error(op);
            if !err.is(libc::EINTR) {
                return Err(err);
            }
        }
    }
}

impl Device {
    /// Like [`Device::ioctl`] but without the `EINTR` retry: for ioctls that
    /// must not be repeated blindly (an interrupted SUBMIT aborted its job).
    ///
    /// # Safety
    /// As for [`Device::ioctl`].
    pub(crate) unsafe fn ioctl_once<T>(
        &self,
        op: &'static str,
        request: u32,
        arg: *mut T,
    ) -> Result<libc::c_int> {
        // SAFETY: forwarded to the caller.
        let ret = unsafe { libc::ioctl(self.file.as_raw_fd(), request as sys::Request, arg) };
        if ret == -1 {
            Err(Error::last_os_error(op))
        } else {
            Ok(ret)
        }
    }
}

impl AsFd for Device {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl AsRawFd for Device {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fresh empty directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            static N: AtomicUsize = AtomicUsize::new(0);
            let path = std::env::temp_dir().join(format!(
                "vgpu-test-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&path).unwrap();
            TempDir(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn open_default_empty_dir_is_enodev() {
        let dir = TempDir::new();
        let err = Device::open_first_in(&dir.0).unwrap_err();
        assert!(err.is(libc::ENODEV), "{err:?}");
        assert_eq!(err.op(), "open_default");
        let msg = err.to_string();
        assert!(msg.contains("no vgpu_svm render node found"), "{msg}");
        assert!(msg.contains("found: no render nodes"), "{msg}");
        assert!(msg.contains(&dir.0.display().to_string()), "{msg}");
    }

    #[test]
    fn open_default_lists_what_it_found() {
        // A regular file where a render node should be: it opens, but
        // DRM_IOCTL_VERSION on it fails with ENOTTY. Names outside the render
        // range are ignored.
        let dir = TempDir::new();
        std::fs::write(dir.0.join("renderD130"), b"").unwrap();
        std::fs::write(dir.0.join("renderD192"), b"").unwrap();
        std::fs::write(dir.0.join("card0"), b"").unwrap();
        let err = Device::open_first_in(&dir.0).unwrap_err();
        assert!(err.is(libc::ENODEV), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains("renderD130: DRM_IOCTL_VERSION: Inappropriate ioctl"),
            "{msg}"
        );
        assert!(!msg.contains("renderD192"), "{msg}");
        assert!(!msg.contains("card0"), "{msg}");
    }

    #[test]
    fn open_missing_path_keeps_errno_and_path() {
        let dir = TempDir::new();
        let path = dir.0.join("renderD128");
        let err = Device::open(&path).unwrap_err();
        assert!(err.is(libc::ENOENT));
        assert_eq!(err.op(), "open");
        assert_eq!(err.detail(), Some(path.display().to_string().as_str()));
    }

    #[test]
    fn ioctl_on_non_drm_file_reports_enotty() {
        let dir = TempDir::new();
        let path = dir.0.join("not-a-device");
        std::fs::write(&path, b"").unwrap();
        let dev = Device::open(&path).unwrap();
        assert_eq!(dev.path(), path);
        let err = dev.version().unwrap_err();
        assert_eq!((err.op(), err.errno()), ("DRM_IOCTL_VERSION", libc::ENOTTY));
        let err = dev.get_param(Param::VaBits).unwrap_err();
        assert_eq!(
            (err.op(), err.errno()),
            ("DRM_IOCTL_VGPU_SVM_GET_PARAM", libc::ENOTTY)
        );
    }

    #[test]
    fn params_mirror_the_header() {
        assert_eq!(Param::ProtocolVersion.raw(), 1);
        assert_eq!(Param::CapsetId.raw(), 2);
        assert_eq!(Param::MaxContexts.raw(), 3);
        assert_eq!(Param::VaBits.raw(), 4);
        assert_eq!(Param::Features.raw(), 5);
        for p in Param::ALL {
            assert_eq!(Param::from_raw(p.raw()), Some(p));
        }
        assert_eq!(Param::from_raw(0), None);
        assert_eq!(Param::from_raw(9999), None);
    }

    #[test]
    fn protocol_version_round_trips() {
        let v = ProtocolVersion::from_raw(0xabcd_1234);
        assert_eq!((v.major, v.minor), (0xabcd, 0x1234));
        assert_eq!(v.raw(), 0xabcd_1234);
        assert_eq!(
            ProtocolVersion::CURRENT.major as u32,
            vgpu_uapi::VGPU_SVM_PROTOCOL_MAJOR
        );
        assert_eq!(
            ProtocolVersion::CURRENT.minor as u32,
            vgpu_uapi::VGPU_SVM_PROTOCOL_MINOR
        );
    }

    #[test]
    fn drm_version_display() {
        let v = DrmVersion {
            major: 0,
            minor: 1,
            patchlevel: 2,
            name: "vgpu_svm".into(),
            date: String::new(),
            desc: "SVM".into(),
        };
        assert_eq!(v.to_string(), "vgpu_svm 0.1.2 (SVM)");
    }
}
