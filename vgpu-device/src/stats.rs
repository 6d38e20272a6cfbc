//! The `--stats` file: the device counters as JSON, rewritten atomically
//! (write to a temporary file, then rename) when they change, at most
//! [`MIN_INTERVAL`] apart, by the daemon's stats thread
//! ([`StatsFile::refresh`], which holds the device lock only to serialize,
//! not for the file system), on device lifecycle events, and at exit
//! ([`StatsFile::flush`]). Never on the path of a queue's commands or a
//! job's accesses.
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

    /// [`StatsFile::write_if_changed`] for the stats thread: locks `device`
    /// only to serialize the counters, and writes the file after
    /// releasing it (lock order as everywhere: device, then `written`).
    pub fn refresh(&self, device: &Mutex<Device>) {
        let d = device.lock().unwrap_or_else(|p| p.into_inner());
        let mut w = self.written.lock().unwrap_or_else(|p| p.into_inner());
        let generation = d.generation();
        if !Self::due(&w, generation, true) {
            return;
        }
        let json = Self::serialize(&d);
        drop(d);
        self.store(&mut w, generation, json);
    }

    /// Do counters of `generation` need writing?
    fn due(w: &Written, generation: u64, rate_limited: bool) -> bool {
        w.generation != Some(generation)
            && !(rate_limited && w.at.is_some_and(|t| t.elapsed() < MIN_INTERVAL))
    }

    fn write_changed(&self, device: &Device, rate_limited: bool) {
        let mut w = self.written.lock().unwrap_or_else(|p| p.into_inner());
        let generation = device.generation();
        if Self::due(&w, generation, rate_limited) {
            self.store(&mut w, generation, Self::serialize(device));
        }
    }

    fn serialize(device: &Device) -> serde_json::Result<Vec<u8>> {
        let mut json = serde_json::to_vec_pretty(&device.stats_doc())?;
        json.push(b'\n');
        Ok(json)
    }

    /// Writes `json` (the counters of `generation`) and records it.
    fn store(&self, w: &mut Written, generation: u64, json: serde_json::Result<Vec<u8>>) {
        match json.map_err(io::Error::other).and_then(|j| self.write(&j)) {
            Ok(()) => {
                w.generation = Some(generation);
                w.at = Some(Instant::now());
            }
            Err(e) => warn!("cannot write stats to {}: {e}", self.path.display()),
        }
    }

    fn write(&self, json: &[u8]) -> io::Result<()> {
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(".tmp");
        fs::write(&tmp, json)?;
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
        // refresh (the stats thread's) behaves like write_if_changed.
        let d = Mutex::new(d);
        fs::remove_file(&path).unwrap();
        s.refresh(&d);
        assert!(!path.exists(), "unchanged");
        d.lock()
            .unwrap()
            .handle_control(&build::get_display_info(), 4096);
        s.refresh(&d);
        assert!(!path.exists(), "changed, but within MIN_INTERVAL");
        std::thread::sleep(MIN_INTERVAL);
        s.refresh(&d);
        let v: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        assert_eq!(v["commands"], 3);
        fs::remove_dir_all(&dir).unwrap();
    }
}
