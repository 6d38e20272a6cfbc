//! The `--stats` file: the device counters as JSON, rewritten atomically
//! (write to a temporary file, then rename) when they change, at most
//! [`MIN_INTERVAL`] apart (the daemon also refreshes it periodically, so a
//! skipped change is written soon after), and at exit ([`StatsFile::flush`]).
//!
//! Layout: the virtio-gpu command counters at the top level (`commands`,
//! `by_command`, `errors` by kind, contexts, ...), `checker` (`strict` or
//! `off`), and `svm`: the VGPU_SVM counters under the names of `struct
//! vgpu_svm_stats` (`accesses_checked`, `violations`, `violations_no_page`,
//! `violations_frame`, `violations_write`, `faults`, `invalidations`,
//! `tlb_hits`, `tlb_misses`, `jobs`, `bytes`, `errors`, `cpu_walk_errors`,
//! `unchecked_accesses`, `violations_no_direct_map`) plus `jobs_aborted`, `jobs_failed`, `pages_accessed`,
//! `commands` by SVM command, and `violations_recent` (the last 64, in full),
//! all device-wide; `svm_contexts`: each live context's own counters (what
//! STATS on that context answers) by context id.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use log::warn;

use crate::device::Device;

/// Minimum time between two rewrites on change.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Default)]
struct Written {
    /// Generation of the device counters last written.
    generation: Option<u64>,
    at: Option<Instant>,
}

pub struct StatsFile {
    path: PathBuf,
    written: Mutex<Written>,
}

impl StatsFile {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            written: Mutex::new(Written::default()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the counters if they changed since the last write and the
    /// last write is at least [`MIN_INTERVAL`] old.
    pub fn write_if_changed(&self, device: &Device) {
        self.write_changed(device, true);
    }

    /// Writes the counters now if they changed (at exit).
    pub fn flush(&self, device: &Device) {
        self.write_changed(device, false);
    }

    fn write_changed(&self, device: &Device, rate_limited: bool) {
        let mut w = self.written.lock().unwrap_or_else(|p| p.into_inner());
        let generation = device.generation();
        if w.generation == Some(generation) {
            return;
        }
        if rate_limited && w.at.is_some_and(|t| t.elapsed() < MIN_INTERVAL) {
            return;
        }
        match self.write(device) {
            Ok(()) => {
                w.generation = Some(generation);
                w.at = Some(Instant::now());
            }
            Err(e) => warn!("cannot write stats to {}: {e}", self.path.display()),
        }
    }

    fn write(&self, device: &Device) -> io::Result<()> {
        let mut json = serde_json::to_vec_pretty(&device.stats_doc()).map_err(io::Error::other)?;
        json.push(b'\n');
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(".tmp");
        fs::write(&tmp, &json)?;
        fs::rename(&tmp, &self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::DeviceConfig;
    use crate::virtio_gpu::build;

    #[test]
    fn written_on_change_only() {
        let dir = std::env::temp_dir().join(format!("vgpu-device-stats-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("stats.json");
        let s = StatsFile::new(&path);
        let mut d = Device::new(DeviceConfig::default());
        s.write_if_changed(&d);
        let v: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        assert_eq!(v["commands"], 0);
        assert_eq!(v["checker"], "strict");
        assert_eq!(v["svm"]["accesses_checked"], 0);
        assert_eq!(v["svm"]["violations_write"], 0);
        assert_eq!(v["svm"]["violations_no_direct_map"], 0);
        assert!(v["svm"]["violations_recent"].as_array().unwrap().is_empty());
        d.handle_control(&build::get_display_info(), 4096);
        fs::remove_file(&path).unwrap();
        // Changed, but written less than MIN_INTERVAL ago: not yet.
        s.write_if_changed(&d);
        assert!(!path.exists());
        std::thread::sleep(MIN_INTERVAL);
        s.write_if_changed(&d);
        let v: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        assert_eq!(v["commands"], 1);
        // Unchanged: not rewritten, even by flush.
        fs::remove_file(&path).unwrap();
        std::thread::sleep(MIN_INTERVAL);
        s.write_if_changed(&d);
        s.flush(&d);
        assert!(!path.exists());
        // flush ignores the interval.
        d.handle_control(&build::get_display_info(), 4096);
        s.flush(&d);
        assert!(path.exists());
        fs::remove_dir_all(&dir).unwrap();
    }
}
