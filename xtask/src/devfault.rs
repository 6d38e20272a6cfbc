//! Device fault injection on the guest's request: the `faultinj` job stops (SIGSTOP) and
//! kills (SIGKILL) the `vgpu-device` daemon while the guest drives it, to show that the
//! driver survives a device that stalls or dies.
//!
//! The guest asks on its console, one request per line:
//! - `vgpu-host-request: stop-device <ms>`: SIGSTOP the daemon now, SIGCONT it `<ms>` later
//!   (at most [`MAX_STOP`]);
//! - `vgpu-host-request: kill-device`: SIGKILL the daemon (it stays dead).
//!
//! Only a run whose [`crate::vm::VmConfig::device_faults`] is set obeys; every action is
//! recorded as a [`FaultEvent`] for `fault-injection.json`. Anything else on such a line is
//! ignored with a warning (the console is the guest's, so it is input, not a command).

use std::time::Duration;

/// The console prefix of a request.
pub const REQUEST: &str = "vgpu-host-request:";
/// The longest stop a guest may ask for.
pub const MAX_STOP: Duration = Duration::from_secs(60);

/// A request read from the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    Stop(Duration),
    Kill,
}

/// Parses one console line; `None` for lines that are not requests, `Err` for malformed
/// requests (the reason).
pub fn parse(line: &str) -> Option<Result<Request, String>> {
    // The serial console may carry a carriage return or kernel messages before the prefix.
    let at = line.find(REQUEST)?;
    let rest = line[at + REQUEST.len()..].trim();
    let mut words = rest.split_whitespace();
    Some(match (words.next(), words.next(), words.next()) {
        (Some("stop-device"), Some(ms), None) => match ms.parse::<u64>() {
            Ok(ms) if ms > 0 && Duration::from_millis(ms) <= MAX_STOP => Ok(Request::Stop(Duration::from_millis(ms))),
            _ => Err(format!("stop-device needs 1..={} ms, got {ms:?}", MAX_STOP.as_millis())),
        },
        (Some("kill-device"), None, None) => Ok(Request::Kill),
        _ => Err(format!("unknown request {rest:?}")),
    })
}

/// What the host did, with the time since QEMU started.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FaultEvent {
    /// `stopped`, `continued` or `killed`.
    pub action: &'static str,
    pub at_ms: u64,
}

/// The controller of one run: pending SIGCONT and the events so far.
#[derive(Debug, Default)]
pub struct Controller {
    /// When (since QEMU started) the stopped daemon gets SIGCONT.
    resume_at: Option<Duration>,
    killed: bool,
    pub events: Vec<FaultEvent>,
}

impl Controller {
    /// Handles the complete console lines in `chunk`, at time `now`, by signalling `pid`.
    pub fn on_console(&mut self, chunk: &[u8], now: Duration, pid: libc::pid_t) {
        for line in String::from_utf8_lossy(chunk).lines() {
            match parse(line) {
                None => {}
                Some(Err(why)) => eprintln!("xtask: ignoring the guest's malformed request: {why}"),
                Some(Ok(req)) => self.apply(req, now, pid),
            }
        }
    }

    fn apply(&mut self, req: Request, now: Duration, pid: libc::pid_t) {
        if self.killed {
            eprintln!("xtask: the guest asked for {req:?}, but the daemon is already dead");
            return;
        }
        match req {
            Request::Stop(d) => {
                if self.resume_at.is_none() {
                    signal(pid, libc::SIGSTOP);
                    self.record("stopped", now);
                    eprintln!("xtask: vgpu-device stopped (SIGSTOP) for {} ms at {:.1} s, as the guest asked", d.as_millis(), now.as_secs_f64());
                }
                self.resume_at = Some(now + d);
            }
            Request::Kill => {
                signal(pid, libc::SIGKILL);
                self.killed = true;
                self.resume_at = None;
                self.record("killed", now);
                eprintln!("xtask: vgpu-device killed (SIGKILL) at {:.1} s, as the guest asked", now.as_secs_f64());
            }
        }
    }

    /// Resumes a stopped daemon once its time is up.
    pub fn tick(&mut self, now: Duration, pid: libc::pid_t) {
        if self.resume_at.is_some_and(|t| now >= t) {
            self.resume_at = None;
            signal(pid, libc::SIGCONT);
            self.record("continued", now);
            eprintln!("xtask: vgpu-device continued (SIGCONT) at {:.1} s", now.as_secs_f64());
        }
    }

    /// Whether the daemon's death is our doing (not a failure to warn about).
    pub fn killed(&self) -> bool {
        self.killed
    }

    fn record(&mut self, action: &'static str, now: Duration) {
        self.events.push(FaultEvent { action, at_ms: now.as_millis() as u64 });
    }
}

fn signal(pid: libc::pid_t, sig: libc::c_int) {
    // SAFETY: plain syscall; `pid` is our unreaped child, so it names no other process.
    unsafe {
        libc::kill(pid, sig);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_requests() {
        assert_eq!(parse("vgpu-host-request: stop-device 12000"), Some(Ok(Request::Stop(Duration::from_millis(12000)))));
        assert_eq!(parse("\r[  3.1] x vgpu-host-request:   kill-device \r"), Some(Ok(Request::Kill)));
        assert_eq!(parse("ok 1 - something"), None);
        for bad in ["stop-device", "stop-device 0", "stop-device 60001", "stop-device x", "kill-device now", "reboot"] {
            assert!(matches!(parse(&format!("{REQUEST} {bad}")), Some(Err(_))), "{bad}");
        }
    }

    /// A real child process: stopped, continued when its time is up, killed.
    #[test]
    fn signals_a_child() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id() as libc::pid_t;
        let state = || {
            let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
            s.rsplit(')').next().unwrap().split_whitespace().next().unwrap().to_owned()
        };
        let wait_state = |want: &str| {
            for _ in 0..200 {
                if state() == want {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            false
        };
        let mut c = Controller::default();
        let t = Duration::from_secs(1);
        c.on_console(b"boot\nvgpu-host-request: stop-device 500\n", t, pid);
        assert!(wait_state("T"), "not stopped: {}", state());
        c.tick(t + Duration::from_millis(499), pid);
        assert_eq!(state(), "T");
        c.tick(t + Duration::from_millis(500), pid);
        assert!(wait_state("S"), "not continued: {}", state());
        c.on_console(b"vgpu-host-request: kill-device\n", t * 2, pid);
        let st = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(st.signal(), Some(libc::SIGKILL));
        assert!(c.killed());
        let acts: Vec<_> = c.events.iter().map(|e| (e.action, e.at_ms)).collect();
        assert_eq!(acts, [("stopped", 1000), ("continued", 1500), ("killed", 2000)]);
    }
}
