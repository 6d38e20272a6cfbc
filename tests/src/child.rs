//! Fork children that run a closure and report back over pipes: step by step
//! synchronization with the parent, an error message on failure, and no
//! destructors run in the child (it leaves with `_exit`), so it never closes
//! or unmaps anything of the parent's.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::time::{Duration, Instant};

/// Default time a parent waits for a child's signal or exit.
pub const CHILD_TIMEOUT: Duration = Duration::from_secs(120);

const SIGNAL: u8 = b'.';
const OK: u8 = b'K';
const ERR: u8 = b'E';

fn pipe() -> io::Result<(File, File)> {
    let mut fds = [0; 2];
    // SAFETY: fds has room for two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors are fresh and owned here.
    Ok(unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) })
}

/// Waits until `f` is readable or `timeout` passes.
fn readable(f: &File, timeout: Duration) -> io::Result<bool> {
    let mut p = libc::pollfd {
        fd: f.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    loop {
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut p, 1, ms) };
        if r >= 0 {
            return Ok(r > 0);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

fn read_byte(f: &mut File, timeout: Duration) -> Result<Option<u8>, String> {
    if !readable(f, timeout).map_err(|e| format!("poll: {e}"))? {
        return Err(format!("timed out after {timeout:?}"));
    }
    let mut b = [0u8; 1];
    match f.read(&mut b) {
        Ok(0) => Ok(None),
        Ok(_) => Ok(Some(b[0])),
        Err(e) => Err(format!("read: {e}")),
    }
}

/// The child's end: signal the parent, wait for it.
pub struct ChildSide {
    up: File,
    down: File,
}

impl ChildSide {
    /// Tells the parent "reached this point" ([`Child::wait_signal`]).
    pub fn signal(&mut self) {
        let _ = self.up.write_all(&[SIGNAL]);
    }

    /// Waits for the parent's [`Child::go`].
    pub fn wait(&mut self) -> Result<(), String> {
        match read_byte(&mut self.down, CHILD_TIMEOUT)? {
            Some(_) => Ok(()),
            None => Err("the parent went away".into()),
        }
    }
}

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Exited with this status.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
}

/// The parent's handle on a forked child.
#[derive(Debug)]
pub struct Child {
    pid: libc::pid_t,
    up: File,
    down: File,
    reaped: bool,
}

/// Forks; the child runs `f` and leaves with `_exit` (0 if `f` returned Ok,
/// 1 with the message sent to the parent otherwise, 2 on panic).
///
/// The child should do no more than the test needs: in a multi-threaded
/// parent only async-signal-safe work is strictly allowed, and in practice
/// glibc's malloc is fork-safe, which this suite relies on.
pub fn fork_child<F>(f: F) -> io::Result<Child>
where
    F: FnOnce(&mut ChildSide) -> Result<(), String>,
{
    let (up_r, up_w) = pipe()?;
    let (down_r, down_w) = pipe()?;
    // SAFETY: fork; the child only runs `f` and then _exit()s.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        drop(up_r);
        drop(down_w);
        let mut side = ChildSide {
            up: up_w,
            down: down_r,
        };
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut side)));
        let code = match r {
            Ok(Ok(())) => {
                let _ = side.up.write_all(&[OK]);
                0
            }
            Ok(Err(msg)) => {
                let mut m = vec![ERR];
                m.extend_from_slice(msg.as_bytes());
                let _ = side.up.write_all(&m);
                1
            }
            Err(_) => {
                let _ = side.up.write_all(b"Echild panicked");
                2
            }
        };
        // SAFETY: leave without running the parent's destructors.
        unsafe { libc::_exit(code) }
    }
    drop(up_w);
    drop(down_r);
    Ok(Child {
        pid,
        up: up_r,
        down: down_w,
        reaped: false,
    })
}

impl Child {
    /// The child's pid.
    pub fn pid(&self) -> libc::pid_t {
        self.pid
    }

    /// Waits for the child's [`ChildSide::signal`]. If the child failed or
    /// exited instead, returns its message.
    pub fn wait_signal(&mut self) -> Result<(), String> {
        match read_byte(&mut self.up, CHILD_TIMEOUT).map_err(|e| format!("child: {e}"))? {
            Some(SIGNAL) => Ok(()),
            Some(ERR) => Err(format!("child failed: {}", self.rest())),
            Some(OK) => Err("child finished without signalling".into()),
            Some(b) => Err(format!("child sent {b:#x}")),
            None => Err("child exited without signalling".into()),
        }
    }

    fn rest(&mut self) -> String {
        let mut s = String::new();
        let _ = self.up.read_to_string(&mut s);
        s
    }

    /// Lets the child continue past its [`ChildSide::wait`].
    pub fn go(&mut self) {
        let _ = self.down.write_all(&[SIGNAL]);
    }

    /// Sends `sig`.
    pub fn kill(&self, sig: i32) {
        // SAFETY: our own child.
        unsafe { libc::kill(self.pid, sig) };
    }

    /// Waits for the child to end (up to `timeout`; then it is killed).
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<Exit, String> {
        let end = Instant::now() + timeout;
        loop {
            let mut status = 0;
            // SAFETY: our own child.
            let r = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
            if r == self.pid {
                self.reaped = true;
                return Ok(if libc::WIFSIGNALED(status) {
                    Exit::Signal(libc::WTERMSIG(status))
                } else {
                    Exit::Code(libc::WEXITSTATUS(status))
                });
            }
            if r < 0 {
                return Err(format!("waitpid: {}", io::Error::last_os_error()));
            }
            if Instant::now() >= end {
                self.kill(libc::SIGKILL);
                let _ = self.wait_exit(Duration::from_secs(10));
                return Err(format!("child did not exit within {timeout:?}; killed"));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Lets the child finish: Ok if it returned Ok, its message otherwise.
    pub fn join(mut self) -> Result<(), String> {
        let mut msg = Vec::new();
        let end = Instant::now() + CHILD_TIMEOUT;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match read_byte(&mut self.up, left) {
                Ok(Some(SIGNAL)) => continue, // a signal nobody waited for
                Ok(Some(b)) => {
                    msg.push(b);
                    let _ = self.up.read_to_end(&mut msg);
                    break;
                }
                Ok(None) => break,
                Err(e) => {
                    self.kill(libc::SIGKILL);
                    let _ = self.wait_exit(Duration::from_secs(10));
                    return Err(format!("child: {e}"));
                }
            }
        }
        let exit = self.wait_exit(CHILD_TIMEOUT)?;
        match (msg.first(), exit) {
            (Some(&OK), Exit::Code(0)) => Ok(()),
            (Some(&ERR), _) => Err(String::from_utf8_lossy(&msg[1..]).into_owned()),
            (_, e) => Err(format!("child ended with {e:?} and no report")),
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if !self.reaped {
            self.kill(libc::SIGKILL);
            let mut status = 0;
            // SAFETY: our own child.
            unsafe { libc::waitpid(self.pid, &mut status, 0) };
        }
    }
}

/// Forks a child that exits at once (`_exit(0)`) and reaps it: a fork that
/// write-protects every private page of the parent (COW), safe to call from
/// a multi-threaded process.
pub fn fork_and_exit() -> io::Result<()> {
    // SAFETY: the child calls only _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: async-signal-safe exit.
        unsafe { libc::_exit(0) }
    }
    let mut status = 0;
    // SAFETY: our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_go_and_join() {
        let mut c = fork_child(|side| {
            side.signal();
            side.wait()?;
            Ok(())
        })
        .unwrap();
        c.wait_signal().unwrap();
        c.go();
        c.join().unwrap();
    }

    #[test]
    fn child_error_is_reported() {
        let c = fork_child(|_| Err("it broke".into())).unwrap();
        assert_eq!(c.join().unwrap_err(), "it broke");
        let mut c = fork_child(|_| Err("early".into())).unwrap();
        assert_eq!(c.wait_signal().unwrap_err(), "child failed: early");
    }

    #[test]
    fn killed_child() {
        let mut c = fork_child(|side| {
            side.signal();
            std::thread::sleep(Duration::from_secs(30));
            Ok(())
        })
        .unwrap();
        c.wait_signal().unwrap();
        c.kill(libc::SIGKILL);
        assert_eq!(
            c.wait_exit(Duration::from_secs(10)).unwrap(),
            Exit::Signal(libc::SIGKILL)
        );
    }

    #[test]
    fn child_memory_is_a_copy() {
        let m = crate::mem::Mapping::anon(4096).unwrap();
        m.fill(0, 4096, 1);
        let c = fork_child(|_| {
            m.fill(0, 4096, 2);
            Ok(())
        })
        .unwrap();
        c.join().unwrap();
        assert_eq!(m.read(0, 1)[0], 1);
        fork_and_exit().unwrap();
    }
}
