//! The crate's error type: an operation name plus the exact errno.

use std::fmt;

/// A failed operation on a vgpu_svm device.
///
/// Carries the name of the operation (`"open"`, `"DRM_IOCTL_VERSION"`,
/// `"DRM_IOCTL_VGPU_SVM_GET_PARAM"`, ...) and the errno exactly as the kernel
/// returned it, so that callers (and the test suite) can match on it:
///
/// ```
/// let err = vgpu::Error::new("DRM_IOCTL_VGPU_SVM_GET_PARAM", libc::EINVAL);
/// assert!(err.is(libc::EINVAL));
/// assert_eq!(err.errno(), libc::EINVAL);
/// assert_eq!(
///     err.to_string(),
///     "DRM_IOCTL_VGPU_SVM_GET_PARAM: Invalid argument (os error 22)"
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    op: &'static str,
    errno: i32,
    /// Extra context for the message (a path, what a scan found), if any.
    detail: Option<String>,
}

impl Error {
    /// An error for operation `op` that failed with `errno`.
    pub fn new(op: &'static str, errno: i32) -> Self {
        Self {
            op,
            errno,
            detail: None,
        }
    }

    /// Like [`Error::new`], with extra context shown in the message.
    pub fn with_detail(op: &'static str, errno: i32, detail: impl Into<String>) -> Self {
        Self {
            op,
            errno,
            detail: Some(detail.into()),
        }
    }

    /// The error of the last failed libc call (`errno` of this thread).
    pub(crate) fn last_os_error(op: &'static str) -> Self {
        Self::from_io(op, &std::io::Error::last_os_error())
    }

    /// Converts an `std::io::Error`; one without an OS code becomes `EIO`.
    pub(crate) fn from_io(op: &'static str, e: &std::io::Error) -> Self {
        Self::new(op, e.raw_os_error().unwrap_or(libc::EIO))
    }

    /// The operation that failed.
    pub fn op(&self) -> &'static str {
        self.op
    }

    /// The errno, exactly as the kernel (or libc) reported it.
    pub fn errno(&self) -> i32 {
        self.errno
    }

    /// Extra context (a path, the result of a device scan), if any.
    pub fn detail(&self) -> Option<&str> {
        self.detail.as_deref()
    }

    /// Whether this error carries `errno` (e.g. `err.is(libc::EFAULT)`).
    pub fn is(&self, errno: i32) -> bool {
        self.errno == errno
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.op)?;
        if let Some(detail) = &self.detail {
            write!(f, ": {detail}")?;
        }
        // std's formatting of an OS error is strerror_r's text plus the number.
        write!(f, ": {}", std::io::Error::from_raw_os_error(self.errno))
    }
}

impl std::error::Error for Error {}

/// Keeps the error kind and wraps the [`Error`] itself (reach it with
/// `get_ref()` and `downcast_ref`); `raw_os_error()` of the result is `None`.
impl From<Error> for std::io::Error {
    fn from(e: Error) -> Self {
        std::io::Error::new(std::io::Error::from_raw_os_error(e.errno).kind(), e)
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_has_op_strerror_and_number() {
        let e = Error::new("DRM_IOCTL_VGPU_SVM_GET_PARAM", libc::EFAULT);
        assert_eq!(
            e.to_string(),
            "DRM_IOCTL_VGPU_SVM_GET_PARAM: Bad address (os error 14)"
        );
        assert_eq!(e.op(), "DRM_IOCTL_VGPU_SVM_GET_PARAM");
        assert_eq!(e.detail(), None);
    }

    #[test]
    fn display_with_detail() {
        let e = Error::with_detail("open", libc::EACCES, "/dev/dri/renderD128");
        assert_eq!(
            e.to_string(),
            "open: /dev/dri/renderD128: Permission denied (os error 13)"
        );
        assert_eq!(e.detail(), Some("/dev/dri/renderD128"));
    }

    #[test]
    fn errno_is_preserved_exactly() {
        for errno in [
            libc::EINVAL,
            libc::EFAULT,
            libc::EPERM,
            libc::ENOTTY,
            libc::ENODEV,
            4095,
        ] {
            let e = Error::new("x", errno);
            assert_eq!(e.errno(), errno);
            assert!(e.is(errno));
            assert!(!e.is(errno + 1));
        }
    }

    #[test]
    fn from_io_keeps_os_code_and_maps_others_to_eio() {
        let io = std::io::Error::from_raw_os_error(libc::EBUSY);
        assert_eq!(Error::from_io("x", &io).errno(), libc::EBUSY);
        let io = std::io::Error::other("no code");
        assert_eq!(Error::from_io("x", &io).errno(), libc::EIO);
    }

    #[test]
    fn into_io_error_keeps_kind_and_source() {
        let io: std::io::Error = Error::new("open", libc::ENOENT).into();
        assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
        let inner = io
            .get_ref()
            .and_then(|e| e.downcast_ref::<Error>())
            .unwrap();
        assert!(inner.is(libc::ENOENT));
    }

    #[test]
    fn is_a_std_error() {
        fn takes(_: &dyn std::error::Error) {}
        takes(&Error::new("x", libc::EIO));
    }
}
