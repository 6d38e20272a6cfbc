//! `vgpu-device`: the vgpu-svm virtual GPU daemon.
//!
//! Listens on a unix socket for QEMU's `vhost-user-gpu-pci`
//! (`-chardev socket,id=vgpu,path=SOCK -device vhost-user-gpu-pci,chardev=vgpu`),
//! serves one frontend (or, with `--reconnect`, one after another), and exits
//! 0 when the frontend disconnects or on SIGTERM/SIGINT.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use log::{error, info, warn, Level};
use vhost::vhost_user::{Error as VhostUserError, Listener};
use vhost_user_backend::VhostUserDaemon;
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};

use vgpu_device::backend::VgpuBackend;
use vgpu_device::context::{CheckerMode, EngineConfig};
use vgpu_device::device::{Device, DeviceConfig};
use vgpu_device::stats::{StatsFile, MIN_INTERVAL};

/// The vgpu-svm virtual GPU: a vhost-user virtio-gpu backend with the
/// VGPU_SVM context type.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// vhost-user unix socket to listen on (created; an old one is replaced).
    #[arg(long, short = 's')]
    socket_path: PathBuf,
    /// How many VGPU_SVM contexts the device holds at once.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    max_contexts: u32,
    /// Write the device counters as JSON to this file (on change and at exit).
    #[arg(long)]
    stats: Option<PathBuf>,
    /// After a frontend disconnects, wait for the next one instead of exiting.
    #[arg(long)]
    reconnect: bool,
    /// Coherence checker: `strict` walks the guest's CPU page table on every
    /// page a job touches; `off` skips it (to measure its cost).
    #[arg(long, value_enum, default_value_t = CheckerMode::Strict)]
    checker: CheckerMode,
    /// 4 KiB TLB entries per context (plus 1/16 as many 2 MiB entries).
    #[arg(long, default_value_t = 8192, value_parser = clap::value_parser!(u32).range(1..=1 << 20))]
    tlb_entries: u32,
    /// Cap of job worker threads, shared by all contexts (jobs of more
    /// contexts take turns, a time slice each).
    #[arg(long, default_value_t = vgpu_device::pool::DEFAULT_WORKERS as u32,
          value_parser = clap::value_parser!(u32).range(1..=vgpu_device::pool::MAX_WORKERS as i64))]
    workers: u32,
    /// Page-sized accesses a job may make over its life (RESUMEs included)
    /// before it fails with TOO_BIG.
    #[arg(long, default_value_t = vgpu_device::context::DEFAULT_MAX_JOB_STEPS,
          value_parser = clap::value_parser!(u64).range(1..))]
    job_step_budget: u64,
    /// Testing only: spend this many microseconds inside every device
    /// access (widens the races INVALIDATE must close).
    #[arg(long, default_value_t = 0, hide = true)]
    access_delay_us: u64,
}

fn init_logging() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format(|buf, rec| {
            let level = match rec.level() {
                Level::Info => String::new(),
                Level::Warn => "warning: ".to_string(),
                l => format!("{}: ", l.as_str().to_lowercase()),
            };
            if rec.target().starts_with("vgpu_device") {
                writeln!(buf, "vgpu-device: {level}{}", rec.args())
            } else {
                writeln!(buf, "vgpu-device: {level}[{}] {}", rec.target(), rec.args())
            }
        })
        .init();
}

/// Blocks SIGTERM and SIGINT in every thread and handles them in a
/// dedicated one: flush the stats, remove the socket, exit 0.
fn handle_signals(on_exit: impl Fn() + Send + 'static) -> std::io::Result<()> {
    // SAFETY: plain libc calls on a local, initialized sigset_t; this runs
    // before any other thread is spawned, so every thread inherits the mask.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            return Err(std::io::Error::from_raw_os_error(rc));
        }
        set
    };
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || loop {
            let mut sig: libc::c_int = 0;
            // SAFETY: `set` is a valid signal set and `sig` a valid out pointer.
            if unsafe { libc::sigwait(&set, &mut sig) } == 0 {
                let name = if sig == libc::SIGTERM {
                    "SIGTERM"
                } else {
                    "SIGINT"
                };
                info!("{name}, exiting");
                on_exit();
                std::process::exit(0);
            }
        })?;
    Ok(())
}

fn remove_socket(path: &Path) {
    let _ = std::fs::remove_file(path);
}

fn run(args: Args) -> Result<(), String> {
    let device = Arc::new(Mutex::new(Device::new(DeviceConfig {
        max_contexts: args.max_contexts,
        engine: EngineConfig {
            checker: args.checker,
            tlb_capacity: args.tlb_entries as usize,
            access_delay: Duration::from_micros(args.access_delay_us),
            workers: args.workers as usize,
            max_job_steps: args.job_step_budget,
            ..EngineConfig::default()
        },
    })));
    info!(
        "checker {:?}, {} job worker(s), job step budget {}",
        args.checker, args.workers, args.job_step_budget
    );
    let stats = args.stats.as_ref().map(|p| Arc::new(StatsFile::new(p)));
    let flush = {
        let device = device.clone();
        let stats = stats.clone();
        move || {
            vgpu_device::ratelimit::flush();
            if let Some(s) = &stats {
                s.flush(&device.lock().unwrap_or_else(|p| p.into_inner()));
            }
        }
    };
    {
        let flush = flush.clone();
        let sock = args.socket_path.clone();
        handle_signals(move || {
            flush();
            remove_socket(&sock);
        })
        .map_err(|e| format!("cannot set up signal handling: {e}"))?;
    }
    // (After handle_signals: every thread must inherit its signal mask.)
    // Jobs change the counters from their worker threads: refresh the file
    // periodically (refresh is rate-limited and skips no-ops); the queues
    // never write it.
    if let Some(s) = stats.clone() {
        let device = device.clone();
        std::thread::Builder::new()
            .name("stats".into())
            .spawn(move || {
                for tick in 1u64.. {
                    std::thread::sleep(MIN_INTERVAL);
                    s.refresh(&device);
                    if tick % 100 == 0 {
                        // Counts of rate-limited guest warnings, every ~10 s.
                        vgpu_device::ratelimit::flush();
                    }
                }
            })
            .map_err(|e| format!("cannot start the stats thread: {e}"))?;
    }
    flush();

    let result = serve(&args, &device, &stats);
    flush();
    remove_socket(&args.socket_path);
    result
}

fn serve(
    args: &Args,
    device: &Arc<Mutex<Device>>,
    stats: &Option<Arc<StatsFile>>,
) -> Result<(), String> {
    let mut listener = Listener::new(&args.socket_path, true)
        .map_err(|e| format!("cannot listen on {}: {e}", args.socket_path.display()))?;
    info!(
        "listening on {} (max {} contexts)",
        args.socket_path.display(),
        args.max_contexts
    );
    loop {
        let backend = Arc::new(VgpuBackend::new(device.clone(), stats.clone()));
        let mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
        let mut daemon = VhostUserDaemon::new("vgpu-device".into(), backend.clone(), mem)
            .map_err(|e| format!("cannot create the vhost-user daemon: {e}"))?;
        daemon
            .start(&mut listener)
            .map_err(|e| format!("cannot accept a frontend: {e}"))?;
        info!("frontend connected");
        device
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .note_connection();
        backend.flush_stats();
        let r = daemon.wait();
        // Stop the vring worker threads (exit_event) before dropping the daemon.
        for h in daemon.get_epoll_handlers() {
            h.send_exit_event();
        }
        match r {
            Ok(())
            | Err(vhost_user_backend::Error::HandleRequest(
                VhostUserError::Disconnected | VhostUserError::PartialMessage,
            )) => info!("frontend disconnected"),
            Err(e) => warn!("frontend connection ended: {e}"),
        }
        {
            let mut d = device.lock().unwrap_or_else(|p| p.into_inner());
            d.disconnect();
        }
        vgpu_device::ratelimit::flush();
        backend.flush_stats();
        if !args.reconnect {
            return Ok(());
        }
        info!(
            "waiting for the next frontend on {}",
            args.socket_path.display()
        );
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}
