//! [`Stats`]: the device's and the driver's counters (`DRM_IOCTL_VGPU_SVM_STATS`),
//! and [`MmuEvent`], the kernel's `enum mmu_notifier_event`.

use std::fmt;

use vgpu_uapi::drm_vgpu_svm_stats;

/// Why the kernel invalidated a range: `enum mmu_notifier_event` of
/// `include/linux/mmu_notifier.h` (Linux 7.2), in the kernel's order. The
/// driver counts its notifier callbacks per event in [`Stats::events`], indexed
/// by this value.
///
/// ```
/// use vgpu::MmuEvent;
/// assert_eq!(MmuEvent::Unmap as usize, 0);
/// assert_eq!(MmuEvent::Migrate.name(), "migrate");
/// assert_eq!(MmuEvent::from_index(4), Some(MmuEvent::SoftDirty));
/// ```
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MmuEvent {
    /// `MMU_NOTIFY_UNMAP`: munmap, or mremap moving the range.
    Unmap = 0,
    /// `MMU_NOTIFY_CLEAR`: page table entries cleared (madvise, page
    /// replacement: COW of the zero page, KSM, THP collapse, reclaim, ...).
    Clear = 1,
    /// `MMU_NOTIFY_PROTECTION_VMA`: mprotect.
    ProtectionVma = 2,
    /// `MMU_NOTIFY_PROTECTION_PAGE`: write-protection of pages (fork COW,
    /// writeback's page_mkclean, ...).
    ProtectionPage = 3,
    /// `MMU_NOTIFY_SOFT_DIRTY`: `/proc/PID/clear_refs` soft-dirty clear.
    SoftDirty = 4,
    /// `MMU_NOTIFY_RELEASE`: the mm is going away (exit, OOM reaper).
    Release = 5,
    /// `MMU_NOTIFY_MIGRATE`: migrate_vma (device-private migration).
    Migrate = 6,
    /// `MMU_NOTIFY_EXCLUSIVE`: conversion to device-exclusive entries.
    Exclusive = 7,
}

impl MmuEvent {
    /// Every event, in the kernel's order (`ALL[i] as usize == i`).
    pub const ALL: [MmuEvent; 8] = [
        MmuEvent::Unmap,
        MmuEvent::Clear,
        MmuEvent::ProtectionVma,
        MmuEvent::ProtectionPage,
        MmuEvent::SoftDirty,
        MmuEvent::Release,
        MmuEvent::Migrate,
        MmuEvent::Exclusive,
    ];

    /// The event with kernel value `index`, if this crate knows it.
    pub fn from_index(index: usize) -> Option<MmuEvent> {
        Self::ALL.get(index).copied()
    }

    /// The index into [`Stats::events`] (the kernel's value).
    pub const fn index(self) -> usize {
        self as usize
    }

    /// A short lowercase name: `unmap`, `clear`, `protection_vma`,
    /// `protection_page`, `soft_dirty`, `release`, `migrate`, `exclusive`.
    pub const fn name(self) -> &'static str {
        match self {
            MmuEvent::Unmap => "unmap",
            MmuEvent::Clear => "clear",
            MmuEvent::ProtectionVma => "protection_vma",
            MmuEvent::ProtectionPage => "protection_page",
            MmuEvent::SoftDirty => "soft_dirty",
            MmuEvent::Release => "release",
            MmuEvent::Migrate => "migrate",
            MmuEvent::Exclusive => "exclusive",
        }
    }

    /// The kernel's name (`MMU_NOTIFY_UNMAP`, ...).
    pub const fn kernel_name(self) -> &'static str {
        match self {
            MmuEvent::Unmap => "MMU_NOTIFY_UNMAP",
            MmuEvent::Clear => "MMU_NOTIFY_CLEAR",
            MmuEvent::ProtectionVma => "MMU_NOTIFY_PROTECTION_VMA",
            MmuEvent::ProtectionPage => "MMU_NOTIFY_PROTECTION_PAGE",
            MmuEvent::SoftDirty => "MMU_NOTIFY_SOFT_DIRTY",
            MmuEvent::Release => "MMU_NOTIFY_RELEASE",
            MmuEvent::Migrate => "MMU_NOTIFY_MIGRATE",
            MmuEvent::Exclusive => "MMU_NOTIFY_EXCLUSIVE",
        }
    }
}

impl fmt::Display for MmuEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Number of per-event counters the ABI carries (`events[16]`).
pub const EVENT_SLOTS: usize = 16;

macro_rules! stats_struct {
    ($( $(#[$doc:meta])* $field:ident ),* $(,)?) => {
        /// The counters `DRM_IOCTL_VGPU_SVM_STATS` returns: the device's
        /// (global to the device, all contexts) and the driver's for this
        /// context, plus the driver's notifier callbacks per [`MmuEvent`].
        ///
        /// Counters only grow; take a snapshot before and after something and
        /// look at [`Stats::delta_since`].
        ///
        /// ```
        /// use vgpu::{MmuEvent, Stats};
        /// let before = Stats::default();
        /// let mut after = Stats::default();
        /// after.accesses_checked = 10;
        /// after.events[MmuEvent::Unmap.index()] = 2;
        /// let d = after.delta_since(&before);
        /// assert_eq!((d.accesses_checked, d.violations), (10, 0));
        /// assert_eq!(d.event(MmuEvent::Unmap), 2);
        /// ```
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
        pub struct Stats {
            $( $(#[$doc])* pub $field: u64, )*
            /// Notifier callbacks by `enum mmu_notifier_event` value (see
            /// [`Stats::event`]); slots past [`MmuEvent::Exclusive`] are for
            /// events newer kernels may add.
            pub events: [u64; EVENT_SLOTS],
        }

        impl Stats {
            /// The scalar counters as (name, value), in ABI order.
            pub fn counters(&self) -> Vec<(&'static str, u64)> {
                vec![ $( (stringify!($field), self.$field), )* ]
            }

            /// `self - earlier`, counter by counter (wrapping, so a counter
            /// that was reset does not panic).
            pub fn delta_since(&self, earlier: &Stats) -> Stats {
                let mut events = [0u64; EVENT_SLOTS];
                for (i, e) in events.iter_mut().enumerate() {
                    *e = self.events[i].wrapping_sub(earlier.events[i]);
                }
                Stats {
                    $( $field: self.$field.wrapping_sub(earlier.$field), )*
                    events,
                }
            }

            /// Counter by counter sum (wrapping): to add up several contexts'
            /// driver counters.
            pub fn sum(&self, other: &Stats) -> Stats {
                let mut events = [0u64; EVENT_SLOTS];
                for (i, e) in events.iter_mut().enumerate() {
                    *e = self.events[i].wrapping_add(other.events[i]);
                }
                Stats {
                    $( $field: self.$field.wrapping_add(other.$field), )*
                    events,
                }
            }
        }

        impl From<&drm_vgpu_svm_stats> for Stats {
            fn from(s: &drm_vgpu_svm_stats) -> Stats {
                Stats { $( $field: s.$field, )* events: s.events }
            }
        }

        impl From<&Stats> for drm_vgpu_svm_stats {
            fn from(s: &Stats) -> drm_vgpu_svm_stats {
                drm_vgpu_svm_stats { $( $field: s.$field, )* events: s.events }
            }
        }
    };
}

stats_struct! {
    /// Device: pages checked against the CPU page table.
    accesses_checked,
    /// Device: coherence violations of all kinds.
    violations,
    /// Device: violations with no CPU page behind the GPU entry.
    violations_no_page,
    /// Device: violations where the CPU maps a different frame.
    violations_frame,
    /// Device: writes through a CPU entry that is not writable.
    violations_write,
    /// Device: faults raised.
    device_faults,
    /// Device: INVALIDATE commands done.
    device_invalidations,
    /// Device: TLB hits.
    tlb_hits,
    /// Device: TLB misses.
    tlb_misses,
    /// Device: jobs completed.
    jobs,
    /// Device: bytes moved by jobs.
    bytes,
    /// Device: commands answered with an error.
    device_errors,
    /// Driver (this context): device faults handled by the populate loop.
    faults_serviced,
    /// Driver (this context): populate/validate restarts.
    retries,
    /// Driver (this context): notifier callbacks that cleared GPU entries.
    invalidations,
    /// Driver (this context): GPU PTEs written (4 KiB units).
    pages_mapped,
    /// Device, this file's own context (for every reader): pages checked.
    ctx_accesses_checked,
    /// Device, this file's own context: coherence violations.
    ctx_violations,
    /// Device, this file's own context: faults raised.
    ctx_device_faults,
    /// Device, this file's own context: jobs completed.
    ctx_jobs,
}

impl Stats {
    /// The driver's notifier callbacks for `event`.
    pub fn event(&self, event: MmuEvent) -> u64 {
        self.events[event.index()]
    }

    /// Every non-zero event slot as (name, count); known events by
    /// [`MmuEvent::name`], others as `event<N>`.
    pub fn event_counts(&self) -> Vec<(String, u64)> {
        self.events
            .iter()
            .enumerate()
            .filter(|(_, &n)| n != 0)
            .map(|(i, &n)| {
                let name = MmuEvent::from_index(i)
                    .map(|e| e.name().to_owned())
                    .unwrap_or_else(|| format!("event{i}"));
                (name, n)
            })
            .collect()
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (name, v) in self.counters() {
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            write!(f, "{name}={v}")?;
        }
        for (name, v) in self.event_counts() {
            write!(f, " ev.{name}={v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_order_is_the_kernels() {
        for (i, e) in MmuEvent::ALL.iter().enumerate() {
            assert_eq!(e.index(), i);
            assert_eq!(MmuEvent::from_index(i), Some(*e));
        }
        assert_eq!(MmuEvent::from_index(8), None);
    }

    /// When the guest kernel tree is around, check the order against the
    /// kernel's own header (the enum has no explicit values past UNMAP).
    #[test]
    fn event_order_matches_kernel_header_if_present() {
        let tree = std::env::var("VGPU_KERNEL_TREE").unwrap_or_else(|_| {
            format!(
                "{}/.cache/vgpu-svm/kernel/linux-7.2.13-default",
                std::env::var("HOME").unwrap_or_default()
            )
        });
        let Ok(h) = std::fs::read_to_string(format!("{tree}/include/linux/mmu_notifier.h")) else {
            return; // no tree on this machine
        };
        let start = h.find("enum mmu_notifier_event {").expect("enum in header");
        let body = &h[start..start + h[start..].find("};").unwrap()];
        let names: Vec<&str> = body
            .lines()
            .skip(1)
            .filter_map(|l| l.trim().split([',', ' ', '=']).next())
            .filter(|n| n.starts_with("MMU_NOTIFY_"))
            .collect();
        let ours: Vec<&str> = MmuEvent::ALL.iter().map(|e| e.kernel_name()).collect();
        assert_eq!(names, ours);
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<_> = MmuEvent::ALL.iter().map(|e| e.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), MmuEvent::ALL.len());
    }

    #[test]
    fn conversions_keep_every_field() {
        let mut raw = drm_vgpu_svm_stats {
            accesses_checked: 1,
            violations: 2,
            pages_mapped: 16,
            ..Default::default()
        };
        raw.events[5] = 7;
        raw.events[15] = 9;
        let s = Stats::from(&raw);
        assert_eq!(
            (s.accesses_checked, s.violations, s.pages_mapped),
            (1, 2, 16)
        );
        assert_eq!(s.event(MmuEvent::Release), 7);
        let back = drm_vgpu_svm_stats::from(&s);
        assert_eq!(Stats::from(&back), s);
        assert_eq!(s.counters().len(), 20);
        assert_eq!(
            s.event_counts(),
            vec![("release".to_string(), 7), ("event15".to_string(), 9)]
        );
    }

    #[test]
    fn delta_and_sum() {
        let mut a = Stats::default();
        let mut b = Stats::default();
        a.jobs = 5;
        a.events[1] = 3;
        b.jobs = 8;
        b.events[1] = 10;
        let d = b.delta_since(&a);
        assert_eq!((d.jobs, d.event(MmuEvent::Clear)), (3, 7));
        assert_eq!(d.sum(&a), b);
        // Wrapping rather than panicking on a reset counter.
        assert_eq!(a.delta_since(&b).jobs, 3u64.wrapping_neg());
    }

    #[test]
    fn display_lists_counters_and_nonzero_events() {
        let mut s = Stats {
            violations: 1,
            ..Default::default()
        };
        s.events[0] = 4;
        let text = s.to_string();
        assert!(
            text.starts_with("accesses_checked=0 violations=1 "),
            "{text}"
        );
        assert!(text.ends_with(" ev.unmap=4"), "{text}");
    }
}
