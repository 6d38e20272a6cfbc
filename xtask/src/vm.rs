//! Running one guest job in a VM: start the `vgpu-device` daemon, boot QEMU with a
//! `vhost-user-gpu-pci` device connected to it, wait for the guest to power off (or for
//! the timeout, or Ctrl-C), and clean up every child process on every path.
//!
//! Files in the run directory:
//! - `vgpu.sock`: the vhost-user socket (the daemon listens, QEMU connects);
//! - `device.log`: the daemon's stdout and stderr;
//! - `console.log`: the guest's serial console (ttyS0);
//! - `qemu.log`: QEMU's own stdout and stderr;
//! - `qemu.cmd`: the daemon and QEMU command lines, shell-quoted, for running by hand.
//!
//! The guest's `/init` (see `initramfs.rs`) prints `vgpu-guest-exit: <status>` once its
//! job is done and powers off; that status becomes [`VmOutcome::guest_status`].

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

/// How one VM run is set up.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// QEMU binary, normally `qemu-system-x86_64`.
    pub qemu: PathBuf,
    /// The guest kernel (bzImage).
    pub kernel: PathBuf,
    /// The initramfs (see `initramfs::build`).
    pub initrd: PathBuf,
    /// The `vgpu-device` daemon binary.
    pub device_bin: PathBuf,
    /// Extra arguments for the daemon, after `--socket-path <sock>`.
    pub device_args: Vec<String>,
    /// The guest job: `vgpu_job=<job>` on the kernel command line.
    pub job: String,
    /// Appended to the kernel command line.
    pub extra_cmdline: String,
    /// Where the socket and logs go, e.g. `target/vgpu/runs/<job>/`; created if missing.
    pub run_dir: PathBuf,
    /// Memory of each of the two NUMA nodes, MiB.
    pub mem_per_node_mib: u64,
    /// vCPUs, split between the two nodes (node 0 gets the odd one; with 1 vCPU node 1
    /// has memory only).
    pub cpus: u32,
    /// Wall-clock limit for the VM (from QEMU's start to its exit).
    pub timeout: Duration,
    /// What of the serial console goes to our stdout as it arrives (all of it is in
    /// `console.log`).
    pub echo: Echo,
    /// Obey the guest's requests to stop or kill the daemon (see [`crate::devfault`]).
    pub device_faults: bool,
}

impl VmConfig {
    /// A configuration with the defaults: `qemu-system-x86_64`, 2 nodes x 1024 MiB,
    /// 2 vCPUs, a 10 minute timeout, the console's progress lines echoed.
    pub fn new(
        kernel: PathBuf,
        initrd: PathBuf,
        device_bin: PathBuf,
        job: &str,
        run_dir: PathBuf,
    ) -> Self {
        VmConfig {
            qemu: PathBuf::from("qemu-system-x86_64"),
            kernel,
            initrd,
            device_bin,
            device_args: Vec::new(),
            job: job.to_owned(),
            extra_cmdline: String::new(),
            run_dir,
            mem_per_node_mib: 1024,
            cpus: 2,
            timeout: Duration::from_secs(600),
            echo: Echo::Progress,
            device_faults: false,
        }
    }
}

/// What happened in a run that completed (QEMU exited by itself).
#[derive(Debug, Clone)]
pub struct VmOutcome {
    /// The status printed by the guest's `/init` (`vgpu-guest-exit: <n>`); `None` if the
    /// guest never printed it (kernel panic, crash of /init, ...).
    pub guest_status: Option<i32>,
    pub console_log: PathBuf,
    pub device_log: PathBuf,
    #[allow(dead_code)]
    pub qemu_log: PathBuf,
    /// From QEMU's start to its exit.
    pub elapsed: Duration,
    /// The daemon's exit status: by itself (it exits 0 when QEMU disconnects) or after
    /// xtask's SIGTERM (exit status 0, or death by SIGTERM for a daemon without a handler).
    /// Anything else means it failed; a warning with its log's tail has been printed.
    #[allow(dead_code)]
    pub device_status: Option<ExitStatus>,
    /// What the host did to the daemon on the guest's request ([`VmConfig::device_faults`]).
    pub device_faults: Vec<crate::devfault::FaultEvent>,
}

/// Run `cfg.job` in a VM attached to a fresh `vgpu-device` daemon.
///
/// Errors if the daemon or QEMU cannot be started, if QEMU fails without the guest having
/// reported a status, or on timeout (QEMU is killed; the error carries the last console
/// lines). On SIGINT/SIGTERM/SIGHUP the children are stopped and the process exits with
/// status 130.
pub fn run(cfg: &VmConfig) -> Result<VmOutcome> {
    launch(cfg, true)
}

/// Console lines quoted in errors.
const TAIL_LINES: usize = 30;
/// How long the daemon gets to create its socket.
const SOCKET_WAIT: Duration = Duration::from_secs(10);
/// SIGTERM to SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(50);
const EXIT_MARKER: &str = "vgpu-guest-exit:";
const BOOT_MARKER: &str = "vgpu-guest: booted";

/// How much of the guest's console a run prints while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Echo {
    /// Every line, boot log included (`--verbose`).
    Everything,
    /// What a person follows ([`Progress::wants`]): the device handshake, the guest's
    /// `vgpu-guest:` steps, failed tests with their diagnostics, TAP totals. The cases come
    /// as a table at the end; the boot log stays in `console.log`.
    Progress,
    /// Nothing (a caller that prints its own summary).
    Nothing,
}

/// The filter behind [`Echo::Progress`], one console line at a time.
#[derive(Debug, Default)]
pub struct Progress {
    booted: bool,
    /// Inside the diagnostics of a failed test (the `#` lines after `not ok`).
    in_failure: bool,
}

impl Progress {
    /// Whether `line` (without its newline) is shown.
    pub fn wants(&mut self, line: &str) -> bool {
        let l = line.trim_end_matches('\r');
        if !self.booted {
            self.booted = l.contains(BOOT_MARKER);
            return self.booted;
        }
        if l.starts_with("not ok ") {
            self.in_failure = true;
            return true;
        }
        if l.starts_with('#') && self.in_failure {
            return true;
        }
        self.in_failure = false;
        l.starts_with("vgpu-guest:")
            || l.contains("capset")
            || l.starts_with("Bail out!")
            // TAP/KTAP totals: `# 23 passed, 0 failed`, kselftest's `# Totals: pass:..`.
            || (l.starts_with("# ") && (l.contains(" passed, ") || l.contains("Totals:")))
            // Kernel reports the job scripts fail on.
            || ["BUG:", "WARNING:", "Oops", "KASAN", "lockdep", "INFO: task", "Kernel panic"].iter().any(|k| l.contains(k))
    }
}

/// [`run`], with the daemon optional (`with_device == false`: no daemon, no vhost-user
/// device; for testing the VM plumbing alone).
pub(crate) fn launch(cfg: &VmConfig, with_device: bool) -> Result<VmOutcome> {
    validate(cfg)?;
    std::fs::create_dir_all(&cfg.run_dir)
        .with_context(|| format!("creating run directory {}", cfg.run_dir.display()))?;
    let run_dir = cfg
        .run_dir
        .canonicalize()
        .with_context(|| format!("resolving {}", cfg.run_dir.display()))?;
    let sock = run_dir.join("vgpu.sock");
    let console_log = run_dir.join("console.log");
    let device_log = run_dir.join("device.log");
    let qemu_log = run_dir.join("qemu.log");
    let cmd_file = run_dir.join("qemu.cmd");
    // sun_path is 108 bytes including the NUL.
    if sock.as_os_str().len() >= 108 {
        bail!(
            "socket path {} is too long for a unix socket (max 107 bytes); use a shorter run directory",
            sock.display()
        );
    }
    for f in [&sock, &console_log, &device_log, &qemu_log, &cmd_file] {
        match std::fs::remove_file(f) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing stale {}", f.display())),
        }
    }
    for f in [&cfg.kernel, &cfg.initrd] {
        if !f.is_file() {
            bail!("{} does not exist", f.display());
        }
    }

    let _signals = SignalGuard::install()?;
    let mut kids = Children::default();
    let mut cmd_text = String::new();

    // The daemon.
    if with_device {
        let mut cmd = Command::new(&cfg.device_bin);
        cmd.arg("--socket-path").arg(&sock).args(&cfg.device_args);
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        cmd_text.push_str(&format!("# vgpu-device\n{}\n", shell_line(&cmd)));
        let log = File::create(&device_log)
            .with_context(|| format!("creating {}", device_log.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        isolate(&mut cmd);
        eprintln!(
            "xtask: starting vgpu-device (log: {})",
            device_log.display()
        );
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", cfg.device_bin.display()))?;
        kids.device = Some(Proc::new("vgpu-device", child));
        let start = Instant::now();
        loop {
            check_interrupt(&mut kids);
            if listening(&sock) {
                break;
            }
            if let Some(st) = kids.device.as_mut().unwrap().poll() {
                bail!(
                    "vgpu-device exited ({}) before creating {}; last lines of {}:\n{}",
                    describe(st),
                    sock.display(),
                    device_log.display(),
                    tail_lines(&device_log, TAIL_LINES)
                );
            }
            if start.elapsed() > SOCKET_WAIT {
                bail!(
                    "vgpu-device did not create {} within {} s; last lines of {}:\n{}",
                    sock.display(),
                    SOCKET_WAIT.as_secs(),
                    device_log.display(),
                    tail_lines(&device_log, TAIL_LINES)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    // QEMU.
    let kvm = use_kvm();
    let mut cmd = Command::new(&cfg.qemu);
    cmd.args(qemu_args(
        cfg,
        with_device.then_some(sock.as_path()),
        &console_log,
        kvm,
    ));
    cmd_text.push_str(&format!("# QEMU\n{}\n", shell_line(&cmd)));
    std::fs::write(&cmd_file, cmd_text)
        .with_context(|| format!("writing {}", cmd_file.display()))?;
    let log =
        File::create(&qemu_log).with_context(|| format!("creating {}", qemu_log.display()))?;
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    isolate(&mut cmd);
    eprintln!(
        "xtask: booting VM ({}, 2 nodes x {} MiB, {} vCPU{}), job {}, console: {}",
        if kvm { "kvm" } else { "tcg" },
        cfg.mem_per_node_mib,
        cfg.cpus,
        if cfg.cpus == 1 { "" } else { "s" },
        cfg.job,
        console_log.display()
    );
    let start = Instant::now();
    let child = cmd
        .spawn()
        .with_context(|| format!("starting QEMU ({})", cfg.qemu.display()))?;
    kids.qemu = Some(Proc::new("QEMU", child));

    let mut console = ConsoleTail::new(console_log.clone(), cfg.echo);
    // When the daemon went away by itself. It does so right after QEMU disconnects, i.e.
    // while QEMU shuts down; only a daemon gone for a while before QEMU is news.
    let mut device_gone: Option<(Instant, bool)> = None;
    let mut faults = crate::devfault::Controller::default();
    let qemu_status = loop {
        check_interrupt(&mut kids);
        let lines = console.poll(start);
        if cfg.device_faults {
            if let Some(d) = kids.device.as_mut().filter(|d| d.status.is_none()) {
                let pid = d.child.id() as libc::pid_t;
                faults.on_console(&lines, start.elapsed(), pid);
                faults.tick(start.elapsed(), pid);
            }
        }
        match (&mut device_gone, kids.device.as_mut()) {
            (None, Some(d)) => {
                if let Some(st) = d.poll() {
                    device_gone = Some((Instant::now(), false));
                    if faults.killed() {
                        // Our doing, on the guest's request: not news.
                        device_gone = Some((Instant::now(), true));
                    } else if !normal_exit(st) {
                        eprintln!(
                            "xtask: warning: vgpu-device exited while the VM runs ({})",
                            describe(st)
                        );
                        device_gone = Some((Instant::now(), true));
                    }
                }
            }
            (Some((t, warned @ false)), Some(d)) if t.elapsed() > Duration::from_secs(1) => {
                eprintln!(
                    "xtask: warning: vgpu-device exited while the VM runs ({})",
                    d.status.map(describe).unwrap_or_default()
                );
                *warned = true;
            }
            _ => {}
        }
        if let Some(st) = kids.qemu.as_mut().unwrap().poll() {
            break st;
        }
        if start.elapsed() > cfg.timeout {
            kids.stop_qemu();
            console.poll(start);
            console.finish();
            kids.stop_all();
            let mut msg = format!(
                "VM timed out after {} s (job {}); QEMU was killed. Last {} console lines ({}):\n{}",
                cfg.timeout.as_secs_f64(),
                cfg.job,
                TAIL_LINES,
                console_log.display(),
                tail_lines(&console_log, TAIL_LINES)
            );
            if with_device {
                if console.bytes_seen == 0 {
                    msg.push_str(
                        "\nThe guest printed nothing: QEMU waits at startup until the vhost-user \
                         backend answers on the socket; is vgpu-device serving it?",
                    );
                }
                msg.push_str(&format!(
                    "\nLast lines of {}:\n{}",
                    device_log.display(),
                    tail_lines(&device_log, 10)
                ));
            }
            bail!(msg);
        }
        std::thread::sleep(POLL);
    };
    let elapsed = start.elapsed();
    console.poll(start);
    console.finish();
    kids.stop_all();

    let guest_status = parse_exit_status(&console_log)?;
    let booted = console
        .booted_at
        .map(|t| format!(" (guest up after {:.1} s)", t.as_secs_f64()))
        .unwrap_or_default();
    eprintln!(
        "xtask: VM exited after {:.1} s{booted}, guest status {}",
        elapsed.as_secs_f64(),
        guest_status.map_or("none".to_owned(), |s| s.to_string())
    );
    if guest_status.is_none() {
        if !qemu_status.success() {
            bail!(
                "QEMU failed ({}) and the guest reported no status; {}:\n{}\nlast console lines:\n{}",
                describe(qemu_status),
                qemu_log.display(),
                tail_lines(&qemu_log, TAIL_LINES),
                tail_lines(&console_log, TAIL_LINES)
            );
        }
        eprintln!(
            "xtask: the guest reported no exit status (kernel panic?); last console lines:\n{}",
            tail_lines(&console_log, TAIL_LINES)
        );
    } else if !qemu_status.success() {
        eprintln!(
            "xtask: warning: QEMU exited with {} (see {})",
            describe(qemu_status),
            qemu_log.display()
        );
    }
    let device_status = kids.device.as_ref().and_then(|d| d.status);
    if let Some(st) = device_status.filter(|s| !normal_exit(*s) && !faults.killed()) {
        eprintln!(
            "xtask: warning: vgpu-device failed ({}); last lines of {}:\n{}",
            describe(st),
            device_log.display(),
            tail_lines(&device_log, TAIL_LINES)
        );
    }
    Ok(VmOutcome {
        guest_status,
        console_log,
        device_log,
        qemu_log,
        elapsed,
        device_status,
        device_faults: faults.events,
    })
}

/// Whether a unix socket is bound at `path` and listening. Connecting to find out would
/// use up the daemon's one frontend connection, so this looks at /proc/net/unix (a
/// listening socket has __SO_ACCEPTCON, 0x10000, in Flags); without it, the file's
/// existence (plus a moment for listen()) has to do.
fn listening(path: &Path) -> bool {
    match std::fs::read("/proc/net/unix") {
        Ok(table) => listening_in(&table, path),
        Err(_) => {
            let exists = path.exists();
            if exists {
                std::thread::sleep(Duration::from_millis(200));
            }
            exists
        }
    }
}

fn listening_in(table: &[u8], path: &Path) -> bool {
    let want = path.as_os_str().as_bytes();
    table.split(|&b| b == b'\n').skip(1).any(|line| {
        // "Num: RefCount Protocol Flags Type St Inode Path", the inode space-padded.
        let mut rest = line;
        let mut fields = Vec::with_capacity(7);
        for _ in 0..7 {
            let start = rest.iter().position(|&b| b != b' ').unwrap_or(rest.len());
            rest = &rest[start..];
            let end = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
            fields.push(&rest[..end]);
            rest = &rest[end..];
        }
        let flags = std::str::from_utf8(fields[3])
            .ok()
            .and_then(|f| u32::from_str_radix(f, 16).ok());
        flags.is_some_and(|f| f & 0x10000 != 0) && rest.strip_prefix(b" ") == Some(want)
    })
}

fn validate(cfg: &VmConfig) -> Result<()> {
    if cfg.job.is_empty()
        || !cfg
            .job
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        bail!(
            "invalid job name {:?} (use letters, digits, '-', '_', '.')",
            cfg.job
        );
    }
    if cfg.cpus == 0 {
        bail!("cpus must be at least 1");
    }
    if cfg.mem_per_node_mib < 64 {
        bail!(
            "mem_per_node_mib must be at least 64 (got {})",
            cfg.mem_per_node_mib
        );
    }
    if cfg.extra_cmdline.contains('\n') {
        bail!("the extra kernel command line contains a newline");
    }
    Ok(())
}

/// KVM only when asked for (`VGPU_KVM=1`) and `/dev/kvm` opens read-write: on the
/// project's machines KVM is a nested PVM that cannot run this guest.
fn use_kvm() -> bool {
    if std::env::var("VGPU_KVM").as_deref() != Ok("1") {
        return false;
    }
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(_) => true,
        Err(e) => {
            eprintln!("xtask: VGPU_KVM=1 but /dev/kvm cannot be opened ({e}); using tcg");
            false
        }
    }
}

/// QEMU option values are comma-separated lists; a literal comma is doubled.
fn qemu_escape(p: &Path) -> OsString {
    let bytes = p.as_os_str().as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    for &b in bytes {
        out.push(b);
        if b == b',' {
            out.push(b',');
        }
    }
    OsString::from(OsStr::from_bytes(&out))
}

fn opt(prefix: &str, path: &Path) -> OsString {
    let mut s = OsString::from(prefix);
    s.push(qemu_escape(path));
    s
}

/// The CPU list of each of the two nodes: node 0 gets ceil(cpus/2), node 1 the rest
/// (None: a memory-only node).
fn node_cpus(cpus: u32) -> [Option<String>; 2] {
    let n0 = cpus.div_ceil(2);
    let range = |a: u32, b: u32| {
        if a == b {
            a.to_string()
        } else {
            format!("{a}-{b}")
        }
    };
    [
        (n0 > 0).then(|| range(0, n0 - 1)),
        (cpus > n0).then(|| range(n0, cpus - 1)),
    ]
}

/// The kernel command line.
fn cmdline(cfg: &VmConfig) -> String {
    // movablecore: a ZONE_MOVABLE on which user memory lands and whose memory blocks can be
    // offlined (the coherence case memory_offline migrates mirrored pages that way).
    let mut s = format!(
        "console=ttyS0 panic=-1 movablecore=512M vgpu_job={}",
        cfg.job
    );
    let extra = cfg.extra_cmdline.trim();
    if !extra.is_empty() {
        s.push(' ');
        s.push_str(extra);
    }
    s
}

/// QEMU's arguments (without the binary).
fn qemu_args(cfg: &VmConfig, sock: Option<&Path>, console: &Path, kvm: bool) -> Vec<OsString> {
    let mut a: Vec<OsString> = Vec::new();
    let mut push = |s: &str| a.push(s.into());
    if kvm {
        for s in ["-accel", "kvm", "-cpu", "host"] {
            push(s);
        }
    } else {
        for s in ["-accel", "tcg", "-cpu", "max"] {
            push(s);
        }
    }
    for s in [
        "-machine",
        "q35",
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-vga",
        "none",
    ] {
        push(s);
    }
    for s in ["-monitor", "none", "-no-reboot"] {
        push(s);
    }
    push("-smp");
    push(&cfg.cpus.to_string());
    push("-m");
    push(&format!("{}M", 2 * cfg.mem_per_node_mib));
    for (n, cpus) in node_cpus(cfg.cpus).iter().enumerate() {
        push("-object");
        push(&format!(
            "memory-backend-memfd,id=m{n},size={}M,share=on",
            cfg.mem_per_node_mib
        ));
        push("-numa");
        match cpus {
            Some(c) => push(&format!("node,nodeid={n},memdev=m{n},cpus={c}")),
            None => push(&format!("node,nodeid={n},memdev=m{n}")),
        }
    }
    a.push("-chardev".into());
    a.push(opt("file,id=con0,path=", console));
    a.push("-serial".into());
    a.push("chardev:con0".into());
    if let Some(sock) = sock {
        a.push("-chardev".into());
        a.push(opt("socket,id=vgpu,path=", sock));
        a.push("-device".into());
        a.push("vhost-user-gpu-pci,chardev=vgpu".into());
    }
    a.push("-kernel".into());
    a.push(cfg.kernel.clone().into());
    a.push("-initrd".into());
    a.push(cfg.initrd.clone().into());
    a.push("-append".into());
    a.push(cmdline(cfg).into());
    a
}

/// A command as a shell line (for `qemu.cmd`).
fn shell_line(cmd: &Command) -> String {
    fn quote(s: &OsStr) -> String {
        let s = s.to_string_lossy();
        if !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b))
        {
            s.into_owned()
        } else {
            format!("'{}'", s.replace('\'', r"'\''"))
        }
    }
    let mut parts = Vec::new();
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            parts.push(format!("{}={}", k.to_string_lossy(), quote(v)));
        }
    }
    parts.push(quote(cmd.get_program()));
    parts.extend(cmd.get_args().map(quote));
    parts.join(" ")
}

/// Put the child in its own process group (so that the terminal's Ctrl-C reaches only
/// xtask, which then stops the children in order) and have the kernel kill it if xtask
/// dies without cleaning up.
fn isolate(cmd: &mut Command) {
    cmd.process_group(0);
    // SAFETY: only async-signal-safe calls (prctl, getppid, kill) between fork and exec.
    unsafe {
        let parent = libc::getpid();
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            // The parent died before prctl took effect.
            if libc::getppid() != parent {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
            Ok(())
        });
    }
}

/// How the daemon should end: exit status 0, or killed by (our) SIGTERM.
fn normal_exit(st: ExitStatus) -> bool {
    st.success() || st.signal() == Some(libc::SIGTERM)
}

fn describe(st: ExitStatus) -> String {
    match (st.code(), st.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => st.to_string(),
    }
}

/// A child that xtask started, leader of its own process group.
struct Proc {
    name: &'static str,
    child: Child,
    status: Option<ExitStatus>,
}

impl Proc {
    fn new(name: &'static str, child: Child) -> Self {
        Proc {
            name,
            child,
            status: None,
        }
    }

    /// Reap without blocking.
    fn poll(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            match self.child.try_wait() {
                Ok(st) => self.status = st,
                Err(e) => {
                    eprintln!("xtask: waiting for {}: {e}", self.name);
                }
            }
        }
        self.status
    }

    fn signal_group(&self, sig: libc::c_int) {
        // The group id is the child's pid (process_group(0)); it is still ours because
        // the child has not been reaped yet.
        let pgid = self.child.id() as libc::pid_t;
        // SAFETY: plain syscall.
        unsafe {
            libc::kill(-pgid, sig);
        }
    }

    /// SIGTERM to the group, SIGKILL after `grace`, reap.
    fn stop(&mut self, grace: Duration) -> ExitStatus {
        if let Some(st) = self.poll() {
            return st;
        }
        self.signal_group(libc::SIGTERM);
        let start = Instant::now();
        while start.elapsed() < grace {
            if let Some(st) = self.poll() {
                return st;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "xtask: {} ignored SIGTERM for {} s, killing it",
            self.name,
            grace.as_secs()
        );
        self.signal_group(libc::SIGKILL);
        match self.child.wait() {
            Ok(st) => {
                self.status = Some(st);
                st
            }
            Err(e) => {
                eprintln!("xtask: waiting for {}: {e}", self.name);
                ExitStatus::from_raw(libc::SIGKILL)
            }
        }
    }
}

/// The children of one run; dropping it stops them (QEMU first, then the daemon).
#[derive(Default)]
struct Children {
    qemu: Option<Proc>,
    device: Option<Proc>,
}

impl Children {
    fn stop_qemu(&mut self) {
        if let Some(p) = self.qemu.as_mut() {
            p.stop(STOP_GRACE);
        }
    }

    fn stop_all(&mut self) {
        self.stop_qemu();
        if let Some(p) = self.device.as_mut() {
            p.stop(STOP_GRACE);
        }
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// The signal that interrupted us (0: none).
static INTERRUPTED: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    INTERRUPTED.store(sig, Ordering::SeqCst);
}

const SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// Installed handlers (refcounted: runs may overlap in tests) and the previous actions.
static SIGNAL_STATE: Mutex<(usize, Vec<libc::sigaction>)> = Mutex::new((0, Vec::new()));

/// While alive, SIGINT/SIGTERM/SIGHUP set [`INTERRUPTED`] instead of killing xtask
/// (signals that were ignored stay ignored); dropping it restores the previous handlers.
struct SignalGuard;

impl SignalGuard {
    fn install() -> Result<SignalGuard> {
        let mut st = SIGNAL_STATE.lock().unwrap_or_else(|e| e.into_inner());
        if st.0 == 0 {
            INTERRUPTED.store(0, Ordering::SeqCst);
            let mut old_actions = Vec::new();
            for sig in SIGNALS {
                // SAFETY: a zeroed sigaction is valid; the handler only stores an atomic.
                unsafe {
                    let mut act: libc::sigaction = std::mem::zeroed();
                    act.sa_sigaction =
                        on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
                    act.sa_flags = libc::SA_RESTART;
                    libc::sigemptyset(&mut act.sa_mask);
                    let mut old: libc::sigaction = std::mem::zeroed();
                    // A signal that was ignored when we started (nohup, `cmd &` in a
                    // script) stays ignored.
                    if libc::sigaction(sig, std::ptr::null(), &mut old) == 0
                        && old.sa_sigaction == libc::SIG_IGN
                    {
                        old_actions.push(old);
                        continue;
                    }
                    if libc::sigaction(sig, &act, &mut old) != 0 {
                        let e = std::io::Error::last_os_error();
                        for (s, o) in SIGNALS.iter().zip(&old_actions) {
                            libc::sigaction(*s, o, std::ptr::null_mut());
                        }
                        return Err(anyhow!("installing a handler for signal {sig}: {e}"));
                    }
                    old_actions.push(old);
                }
            }
            st.1 = old_actions;
        }
        st.0 += 1;
        Ok(SignalGuard)
    }
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        let mut st = SIGNAL_STATE.lock().unwrap_or_else(|e| e.into_inner());
        st.0 -= 1;
        if st.0 == 0 {
            for (sig, old) in SIGNALS.iter().zip(&st.1) {
                // SAFETY: restoring the action saved by install().
                unsafe {
                    libc::sigaction(*sig, old, std::ptr::null_mut());
                }
            }
            st.1.clear();
        }
    }
}

/// On a signal: stop the children and exit with status 130.
fn check_interrupt(kids: &mut Children) {
    let sig = INTERRUPTED.load(Ordering::SeqCst);
    if sig != 0 {
        eprintln!("\nxtask: interrupted (signal {sig}), stopping QEMU and vgpu-device");
        kids.stop_all();
        std::process::exit(130);
    }
}

/// Follows the console log as QEMU writes it: echoes complete lines (if asked) and
/// notes when the guest's `/init` started.
struct ConsoleTail {
    path: PathBuf,
    file: Option<File>,
    partial: Vec<u8>,
    echo: Echo,
    progress: Progress,
    booted_at: Option<Duration>,
    bytes_seen: u64,
}

impl ConsoleTail {
    fn new(path: PathBuf, echo: Echo) -> Self {
        ConsoleTail {
            path,
            file: None,
            partial: Vec::new(),
            echo,
            progress: Progress::default(),
            booted_at: None,
            bytes_seen: 0,
        }
    }

    /// Reads what QEMU wrote since the last call; returns the new complete lines.
    fn poll(&mut self, start: Instant) -> Vec<u8> {
        if self.file.is_none() {
            self.file = File::open(&self.path).ok();
        }
        let Some(f) = self.file.as_mut() else { return Vec::new() };
        let mut buf = Vec::new();
        if f.read_to_end(&mut buf).is_err() || buf.is_empty() {
            return Vec::new();
        }
        self.bytes_seen += buf.len() as u64;
        self.partial.extend_from_slice(&buf);
        let Some(last_nl) = self.partial.iter().rposition(|&b| b == b'\n') else {
            return Vec::new();
        };
        let complete: Vec<u8> = self.partial.drain(..=last_nl).collect();
        if self.booted_at.is_none() && contains(&complete, BOOT_MARKER.as_bytes()) {
            self.booted_at = Some(start.elapsed());
        }
        match self.echo {
            Echo::Everything => {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(&complete);
                let _ = out.flush();
            }
            Echo::Progress => {
                let mut out = std::io::stdout().lock();
                for line in complete.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                    let text = String::from_utf8_lossy(line);
                    if self.progress.wants(&text) {
                        let _ = writeln!(out, "{}", text.trim_end_matches('\r'));
                    }
                }
                let _ = out.flush();
            }
            Echo::Nothing => {}
        }
        complete
    }

    /// Echo what is left (a last line without a newline).
    fn finish(&mut self) {
        if self.echo == Echo::Everything && !self.partial.is_empty() {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(&self.partial);
            let _ = out.write_all(b"\n");
            let _ = out.flush();
        }
        self.partial.clear();
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The status in the last `vgpu-guest-exit: <n>` line of the console log.
fn parse_exit_status(console: &Path) -> Result<Option<i32>> {
    let data = match std::fs::read(console) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", console.display())),
    };
    Ok(parse_exit_status_in(&String::from_utf8_lossy(&data)))
}

fn parse_exit_status_in(text: &str) -> Option<i32> {
    text.lines().rev().find_map(|line| {
        let rest = &line[line.find(EXIT_MARKER)? + EXIT_MARKER.len()..];
        let digits: String = rest
            .trim_start()
            .chars()
            .enumerate()
            .take_while(|&(i, c)| c.is_ascii_digit() || (i == 0 && c == '-'))
            .map(|(_, c)| c)
            .collect();
        digits.parse().ok()
    })
}

/// The last `n` lines of a (possibly large) text file, for error messages.
fn tail_lines(path: &Path, n: usize) -> String {
    const MAX: u64 = 64 * 1024;
    let Ok(mut f) = File::open(path) else {
        return format!("({} does not exist)", path.display());
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(MAX)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(n)..].join("\n");
    if tail.trim().is_empty() {
        format!("({} is empty)", path.display())
    } else {
        tail
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_hides_the_boot_log_and_passing_detail() {
        let console = "\
[    0.000000] Linux version 7.2.13\r
Run /init as init process\r
vgpu-guest: booted 7.2.13\r
vgpu_svm virtio0: VGPU_SVM capset 0x53: protocol 0.4, 16 contexts\r
[drm] Initialized vgpu_svm 0.1.0 for virtio0 on minor 0\r
vgpu-guest: running vgpu-coherence\r
ok 1 fork_cow [svm]\r
#   12 checks; device: 4096 accesses checked\r
vgpu-case: {\"scenario\":\"fork_cow\"}\r
not ok 2 munmap [svm]\r
#   FAILED: the device saw a stale page\r
vgpu-case: {\"scenario\":\"munmap\"}\r
#   a note after the JSON is not the failure's\r
# 1 passed, 1 failed\r
[   12.3] BUG: kernel NULL pointer dereference\r
";
        let mut p = Progress::default();
        let shown: Vec<&str> = console.lines().filter(|l| p.wants(l)).map(|l| l.trim_end_matches('\r')).collect();
        assert_eq!(
            shown,
            [
                "vgpu-guest: booted 7.2.13",
                "vgpu_svm virtio0: VGPU_SVM capset 0x53: protocol 0.4, 16 contexts",
                "vgpu-guest: running vgpu-coherence",
                "not ok 2 munmap [svm]",
                "#   FAILED: the device saw a stale page",
                "# 1 passed, 1 failed",
                "[   12.3] BUG: kernel NULL pointer dereference",
            ]
        );
    }


    fn cfg(dir: &Path) -> VmConfig {
        let mut c = VmConfig::new(
            dir.join("bzImage"),
            dir.join("initrd.gz"),
            dir.join("device"),
            "hello",
            dir.join("run"),
        );
        c.echo = Echo::Nothing;
        c
    }

    fn strs(a: &[OsString]) -> Vec<String> {
        a.iter().map(|s| s.to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn numa_layout() {
        assert_eq!(node_cpus(1), [Some("0".into()), None]);
        assert_eq!(node_cpus(2), [Some("0".into()), Some("1".into())]);
        assert_eq!(node_cpus(3), [Some("0-1".into()), Some("2".into())]);
        assert_eq!(node_cpus(4), [Some("0-1".into()), Some("2-3".into())]);
    }

    #[test]
    fn qemu_command_line() {
        let dir = Path::new("/r,x");
        let mut c = cfg(dir);
        c.extra_cmdline = " loglevel=4 ".into();
        let a = strs(&qemu_args(
            &c,
            Some(&dir.join("vgpu.sock")),
            &dir.join("console.log"),
            false,
        ));
        let s = a.join(" ");
        assert!(s.starts_with("-accel tcg -cpu max "), "{s}");
        assert!(s.contains(" -m 2048M "), "{s}");
        assert!(s.contains(" -smp 2 "), "{s}");
        assert!(s.contains("-object memory-backend-memfd,id=m0,size=1024M,share=on -numa node,nodeid=0,memdev=m0,cpus=0 "), "{s}");
        assert!(s.contains("-object memory-backend-memfd,id=m1,size=1024M,share=on -numa node,nodeid=1,memdev=m1,cpus=1 "), "{s}");
        assert!(s.contains("-chardev socket,id=vgpu,path=/r,,x/vgpu.sock -device vhost-user-gpu-pci,chardev=vgpu"), "{s}");
        assert!(
            s.contains("-chardev file,id=con0,path=/r,,x/console.log -serial chardev:con0"),
            "{s}"
        );
        assert!(s.contains("-no-reboot"));
        assert_eq!(
            a.last().unwrap(),
            "console=ttyS0 panic=-1 movablecore=512M vgpu_job=hello loglevel=4"
        );
        assert!(strs(&qemu_args(&c, None, Path::new("/c"), true))
            .join(" ")
            .starts_with("-accel kvm -cpu host "));
        assert!(!strs(&qemu_args(&c, None, Path::new("/c"), false))
            .join(" ")
            .contains("vhost-user"));
        c.cpus = 1;
        let s = strs(&qemu_args(&c, None, Path::new("/c"), false)).join(" ");
        assert!(s.contains("-numa node,nodeid=1,memdev=m1 "), "{s}");
    }

    #[test]
    fn exit_status_parsing() {
        assert_eq!(
            parse_exit_status_in("a\nvgpu-guest-exit: 3\r\n[ 1.0] reboot: Power down\n"),
            Some(3)
        );
        assert_eq!(parse_exit_status_in("vgpu-guest-exit: 0"), Some(0));
        assert_eq!(
            parse_exit_status_in("[  2.1] foo vgpu-guest-exit: 127\n"),
            Some(127)
        );
        assert_eq!(
            parse_exit_status_in("vgpu-guest-exit: 1\nvgpu-guest-exit: 2\n"),
            Some(2)
        );
        assert_eq!(
            parse_exit_status_in("vgpu-guest: booted\nKernel panic\n"),
            None
        );
        assert_eq!(parse_exit_status_in("vgpu-guest-exit: \n"), None);
    }

    #[test]
    fn rejects_bad_config() {
        let mut c = cfg(Path::new("/tmp"));
        c.job = "a b".into();
        assert!(validate(&c).is_err());
        c.job = "".into();
        assert!(validate(&c).is_err());
        c.job = "svm-fork_1".into();
        assert!(validate(&c).is_ok());
        c.cpus = 0;
        assert!(validate(&c).is_err());
    }

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("xtask-vm-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("bzImage"), b"k").unwrap();
        std::fs::write(d.join("initrd.gz"), b"i").unwrap();
        d
    }

    fn script(path: &Path, body: &str) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(path, format!("#!/bin/sh\n{body}")).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn alive(pid_file: &Path) -> bool {
        let pid: i32 = std::fs::read_to_string(pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // SAFETY: plain syscall; signal 0 only checks existence.
        unsafe { libc::kill(pid, 0) == 0 }
    }

    /// A fake QEMU: writes the console file named in its arguments.
    const FAKE_QEMU: &str = r#"echo $$ > "$(dirname "$0")/qemu.pid"
for a in "$@"; do case "$a" in file,id=con0,path=*) con="${a#file,id=con0,path=}";; esac; done
echo "vgpu-guest: booted fake" > "$con"
"#;

    #[test]
    fn fake_vm_status_and_cleanup() {
        let dir = scratch("status");
        let mut c = cfg(&dir);
        c.qemu = dir.join("qemu");
        script(&c.qemu, &format!("{FAKE_QEMU}printf 'hi\\nvgpu-guest-exit: 3\\n' >> \"$con\"\necho qemu-stderr >&2\n"));
        let out = launch(&c, false).unwrap();
        assert_eq!(out.guest_status, Some(3));
        assert!(out.console_log.starts_with(dir.canonicalize().unwrap()));
        assert_eq!(
            std::fs::read_to_string(&out.qemu_log).unwrap(),
            "qemu-stderr\n"
        );
        assert!(std::fs::read_to_string(dir.join("run/qemu.cmd"))
            .unwrap()
            .contains("vgpu_job=hello"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn fake_vm_timeout_kills() {
        let dir = scratch("timeout");
        let mut c = cfg(&dir);
        c.qemu = dir.join("qemu");
        c.timeout = Duration::from_secs(1);
        script(
            &c.qemu,
            &format!("{FAKE_QEMU}echo line-before-hang >> \"$con\"\nexec sleep 1000\n"),
        );
        let e = launch(&c, false).unwrap_err().to_string();
        assert!(e.contains("timed out"), "{e}");
        assert!(e.contains("line-before-hang"), "{e}");
        assert!(!alive(&dir.join("qemu.pid")));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn fake_vm_qemu_failure() {
        let dir = scratch("qfail");
        let mut c = cfg(&dir);
        c.qemu = dir.join("qemu");
        script(&c.qemu, "echo 'qemu: bad option' >&2\nexit 1\n");
        let e = launch(&c, false).unwrap_err().to_string();
        assert!(e.contains("bad option"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A fake daemon (python3 binds the unix socket) and a fake QEMU that checks it.
    #[test]
    fn fake_device_lifecycle() {
        if Command::new("/usr/bin/python3").arg("-V").output().is_err() {
            eprintln!("no /usr/bin/python3; skipped");
            return;
        }
        let dir = scratch("device");
        let mut c = cfg(&dir);
        c.qemu = dir.join("qemu");
        c.device_bin = dir.join("device");
        c.device_args = vec!["--stats".into(), "x y".into()];
        script(
            &c.device_bin,
            r#"echo $$ > "$(dirname "$0")/device.pid"; echo "args: $*"; echo "log=$RUST_LOG"
exec /usr/bin/python3 -c '
import socket, sys, time
s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen()
print("listening", flush=True); time.sleep(1000)' "$2"
"#,
        );
        script(
            &c.qemu,
            &format!("{FAKE_QEMU}test -S \"$(dirname \"$0\")/run/vgpu.sock\" && echo 'vgpu-guest-exit: 0' >> \"$con\"\n"),
        );
        let out = launch(&c, true).unwrap();
        assert_eq!(out.guest_status, Some(0));
        assert!(normal_exit(out.device_status.unwrap()));
        assert!(!alive(&dir.join("device.pid")));
        let log = std::fs::read_to_string(&out.device_log).unwrap();
        assert!(log.contains("/run/vgpu.sock --stats x y"), "{log}");
        assert!(log.contains("listening"), "{log}");

        // A daemon that ignores SIGTERM is killed after the grace period.
        let body = std::fs::read_to_string(&c.device_bin).unwrap().replacen(
            "exec ",
            "trap '' TERM; exec ",
            1,
        );
        std::fs::write(&c.device_bin, body).unwrap();
        let t = Instant::now();
        assert_eq!(launch(&c, true).unwrap().guest_status, Some(0));
        assert!(t.elapsed() >= STOP_GRACE);
        assert!(!alive(&dir.join("device.pid")));

        // A daemon that dies at once: the error quotes its log.
        script(&c.device_bin, "echo 'device: cannot start' >&2\nexit 2\n");
        let e = launch(&c, true).unwrap_err().to_string();
        assert!(
            e.contains("exit status 2") && e.contains("device: cannot start"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn proc_net_unix() {
        let table = b"Num       RefCount Protocol Flags    Type St Inode Path
000000003e446c98: 00000003 00000000 00000000 0001 03  1072
00000000b470cda4: 00000002 00000000 00010000 0001 01 101139 /run/a b/vgpu.sock
00000000b470cda5: 00000002 00000000 00000000 0001 01 101140 /run/c.sock
";
        assert!(listening_in(table, Path::new("/run/a b/vgpu.sock")));
        assert!(
            !listening_in(table, Path::new("/run/c.sock")),
            "bound, not listening"
        );
        assert!(!listening_in(table, Path::new("/run/a")));
        // A live listener on this machine.
        let dir = scratch("unix");
        let p = dir.join("s.sock");
        assert!(!listening(&p));
        let _l = std::os::unix::net::UnixListener::bind(&p).unwrap();
        assert!(listening(&p));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tail() {
        let dir = scratch("tail");
        let p = dir.join("f");
        let text: String = (0..100).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&p, text).unwrap();
        let t = tail_lines(&p, 3);
        assert_eq!(t, "line 97\nline 98\nline 99");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
