//! The `--stats` file: the device counters as JSON, rewritten atomically
//! (write to a temporary file, then rename) whenever they change, and at exit.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use log::warn;

use crate::device::Device;

pub struct StatsFile {
    path: PathBuf,
    /// Generation of the device counters last written.
    written: Mutex<Option<u64>>,
}

impl StatsFile {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            written: Mutex::new(None),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the counters if they changed since the last write.
    pub fn write_if_changed(&self, device: &Device) {
        let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        if *written == Some(device.generation()) {
            return;
        }
        match self.write(device) {
            Ok(()) => *written = Some(device.generation()),
            Err(e) => warn!("cannot write stats to {}: {e}", self.path.display()),
        }
    }

    fn write(&self, device: &Device) -> io::Result<()> {
        let mut json = serde_json::to_vec_pretty(device.stats()).map_err(io::Error::other)?;
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
        d.handle_control(&build::get_display_info(), 4096);
        fs::remove_file(&path).unwrap();
        s.write_if_changed(&d);
        let v: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        assert_eq!(v["commands"], 1);
        // Unchanged: not rewritten.
        fs::remove_file(&path).unwrap();
        s.write_if_changed(&d);
        assert!(!path.exists());
        fs::remove_dir_all(&dir).unwrap();
    }
}
