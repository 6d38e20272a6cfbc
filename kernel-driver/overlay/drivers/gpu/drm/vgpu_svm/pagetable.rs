// SPDX-License-Identifier: GPL-2.0

//! The GPU page table, in guest memory, in the format of `vgpu_svm_protocol.h`: 4 levels of
//! 512 64-bit entries, 4 KiB leaves at level 1 and 2 MiB leaves (LARGE) at level 2.
//!
//! The tree only grows: tables are allocated by [`PageTable::grow`] outside the update lock
//! (it may sleep and reclaim) and freed with the page table. Leaf entries are written and
//! cleared only under the update lock ([`UpdateToken`]); the device reads them with atomic
//! 64-bit loads and sets DIRTY with a compare-and-swap, so the driver clears with an atomic
//! exchange and marks the page dirty when the old entry had DIRTY.

use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use kernel::{bindings, hmm, page::Page, prelude::*, sync::Mutex, uapi};

const ENTRIES: usize = uapi::VGPU_SVM_PT_ENTRIES as usize;
const VALID: u64 = uapi::VGPU_SVM_PTE_VALID as u64;
const WRITE: u64 = uapi::VGPU_SVM_PTE_WRITE as u64;
const DIRTY: u64 = uapi::VGPU_SVM_PTE_DIRTY as u64;
const LARGE: u64 = uapi::VGPU_SVM_PTE_LARGE as u64;
const ADDR: u64 = uapi::VGPU_SVM_PTE_ADDR_MASK as u64;

pub(crate) const PAGE: u64 = 4096;
pub(crate) const LARGE_PAGE: u64 = 2 << 20;
/// GPU virtual addresses are 48 bits.
pub(crate) const VA_LIMIT: u64 = 1 << 48;

fn index(va: u64, level: u32) -> usize {
    ((va >> (12 + 9 * (level - 1))) as usize) & (ENTRIES - 1)
}

/// Proof that the caller holds the context's update lock (see `context.rs`); leaf entries
/// are only written and cleared with one. Made only by [`crate::context::Shared::token`],
/// which checks that the guard is of that context's lock (not just any `Mutex<Locked>`).
pub(crate) struct UpdateToken<'a>(core::marker::PhantomData<&'a ()>);

impl<'a> UpdateToken<'a> {
    /// A token for as long as `guard` is held. Callers: [`crate::context::Shared::token`] only.
    pub(super) fn checked(
        lock: &kernel::sync::Mutex<crate::context::Locked>,
        guard: &'a kernel::sync::lock::Guard<'_, crate::context::Locked, kernel::sync::lock::mutex::MutexBackend>,
    ) -> Option<Self> {
        core::ptr::eq(guard.lock_ref(), lock).then(|| Self(core::marker::PhantomData))
    }
}

/// One table: a zeroed guest page, and (above level 1) the Rust tree of its children.
///
/// # Invariants
///
/// `entries` is the kernel mapping of `page`, 512 entries; `phys` its physical address. Each
/// non-null `children[i]` came from `KBox::into_raw` and is owned by this table.
struct Table {
    page: Page,
    entries: *const AtomicU64,
    phys: u64,
    children: KVec<AtomicPtr<Table>>,
}

impl Table {
    fn new(level: u32) -> Result<KBox<Self>> {
        let page = Page::alloc_page(GFP_KERNEL | __GFP_ZERO)?;
        // SAFETY: `page` is a valid, owned page; on x86-64 it is in the direct map.
        let (phys, va) = unsafe {
            (bindings::page_to_phys(page.as_ptr()), bindings::page_address(page.as_ptr()))
        };
        let mut children = KVec::new();
        if level > 1 {
            children.reserve(ENTRIES, GFP_KERNEL)?;
            for _ in 0..ENTRIES {
                children.push(AtomicPtr::new(core::ptr::null_mut()), GFP_KERNEL)?;
            }
        }
        Ok(KBox::new(Self { page, entries: va.cast(), phys, children }, GFP_KERNEL)?)
    }

    fn entry(&self, i: usize) -> &AtomicU64 {
        // SAFETY: `entries` maps the table's page (type invariant); `i < 512`; the page lives
        // as long as `self` and is only accessed atomically.
        unsafe { &*self.entries.add(i & (ENTRIES - 1)) }
    }

    fn child(&self, i: usize) -> Option<&Table> {
        let p = self.children.get(i)?.load(Ordering::Acquire);
        // SAFETY: Non-null children are owned by `self` (type invariant) and never freed
        // before it.
        (!p.is_null()).then(|| unsafe { &*p })
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        for c in self.children.iter() {
            let p = c.swap(core::ptr::null_mut(), Ordering::AcqRel);
            if !p.is_null() {
                // SAFETY: `p` came from `KBox::into_raw` (type invariant).
                drop(unsafe { KBox::from_raw(p) });
            }
        }
        let _ = &self.page; // freed by `Page`'s drop
    }
}

// SAFETY: The raw pointers point into memory owned by the table; accesses are atomic.
unsafe impl Send for Table {}
// SAFETY: As above.
unsafe impl Sync for Table {}

/// Counts what a [`PageTable::clear`] did.
#[derive(Default, Clone, Copy)]
pub(crate) struct Cleared {
    /// Valid leaf entries cleared.
    pub(crate) entries: u64,
    /// Of those, entries the device had written through (their pages were marked dirty).
    pub(crate) dirty: u64,
    /// A 2 MiB leaf was among them (the device must drop its whole translation).
    pub(crate) large: bool,
    /// 4 KiB pages covered by the cleared entries.
    pub(crate) pages: u64,
}

/// A context's GPU page table.
pub(crate) struct PageTable {
    root: KBox<Table>,
    /// Serializes growth (allocation), never taken by the invalidation path.
    grow_lock: Pin<KBox<Mutex<()>>>,
}

impl PageTable {
    pub(crate) fn new() -> Result<Self> {
        Ok(Self {
            root: Table::new(4)?,
            grow_lock: KBox::pin_init(kernel::new_mutex!(()), GFP_KERNEL)?,
        })
    }

    /// Physical address of the root table, for the device.
    pub(crate) fn root_phys(&self) -> u64 {
        self.root.phys
    }

    /// Allocates the tables needed to map `[start, end)` with 4 KiB leaves. Outside the update
    /// lock: it allocates with `GFP_KERNEL`.
    pub(crate) fn grow(&self, start: u64, end: u64) -> Result {
        if start >= end || end > VA_LIMIT {
            return Err(EINVAL);
        }
        let _g = self.grow_lock.lock();
        let mut va = start & !(LARGE_PAGE - 1);
        while va < end {
            let mut t: &Table = &self.root;
            for level in (2..=4).rev() {
                let i = index(va, level);
                let next = match t.child(i) {
                    Some(c) => c,
                    None => {
                        let c = KBox::into_raw(Table::new(level - 1)?);
                        t.children[i].store(c, Ordering::Release);
                        // SAFETY: just stored, owned by `t`.
                        let c = unsafe { &*c };
                        // Levels 4 and 3 point to their children for good; a level-2 entry is
                        // linked when 4 KiB leaves are committed under it (it may be a LARGE
                        // leaf instead).
                        if level > 2 {
                            t.entry(i).store(c.phys | VALID, Ordering::Release);
                        }
                        c
                    }
                };
                t = next;
            }
            va += LARGE_PAGE;
        }
        Ok(())
    }

    /// The level-2 table covering `va`, if grown.
    fn l2(&self, va: u64) -> Option<&Table> {
        self.root.child(index(va, 4))?.child(index(va, 3))
    }

    /// Maps the 4 KiB page at `va` to `phys`. Fails with `ENOMEM` if [`Self::grow`] did not
    /// prepare the tables. Returns `true` if this replaced a live 2 MiB leaf: its page was
    /// marked dirty if the device wrote through it, but the device may still cache the
    /// translation, so the caller must INVALIDATE the 2 MiB block before dropping the lock.
    #[must_use = "a replaced 2 MiB leaf must be flushed from the device"]
    pub(crate) fn map_4k(&self, _t: &UpdateToken<'_>, va: u64, phys: u64, writable: bool) -> Result<bool> {
        let l2 = self.l2(va).ok_or(ENOMEM)?;
        let i2 = index(va, 2);
        let l1 = l2.child(i2).ok_or(ENOMEM)?;
        // Link the level-1 table (replacing a LARGE leaf: its 4 KiB entries, if any, are as
        // current as it was, since invalidation clears both). The exchange hands us the old
        // leaf with the DIRTY bit the device may have set since.
        let old2 = l2.entry(i2).swap(l1.phys | VALID, Ordering::AcqRel);
        let replaced_large = old2 & VALID != 0 && old2 & LARGE != 0;
        Self::retire(old2, true);
        let pte = (phys & ADDR) | VALID | if writable { WRITE } else { 0 };
        let old = l1.entry(index(va, 1)).swap(pte, Ordering::AcqRel);
        Self::retire(old, false);
        Ok(replaced_large)
    }

    /// Maps the 2 MiB page at `va` (aligned) to `phys` (aligned) with one LARGE leaf.
    pub(crate) fn map_2m(&self, _t: &UpdateToken<'_>, va: u64, phys: u64, writable: bool) -> Result {
        if va % LARGE_PAGE != 0 || phys % LARGE_PAGE != 0 {
            return Err(EINVAL);
        }
        let l2 = self.l2(va).ok_or(ENOMEM)?;
        let pte = (phys & ADDR) | VALID | LARGE | if writable { WRITE } else { 0 };
        let old = l2.entry(index(va, 2)).swap(pte, Ordering::AcqRel);
        Self::retire(old, true);
        Ok(())
    }

    /// An entry was replaced: if it was a leaf the device wrote through, mark its page dirty.
    fn retire(old: u64, level2: bool) {
        let is_leaf = if level2 { old & LARGE != 0 } else { true };
        if old & VALID != 0 && is_leaf && old & DIRTY != 0 {
            // SAFETY: The entry was current (leaves are only written under the update lock
            // with a valid sequence and cleared by invalidation before the CPU changes the
            // page), so the page is still mapped by the CPU.
            unsafe { hmm::pfn_set_dirty(((old & ADDR) >> 12) as c_ulong) };
        }
    }

    /// Calls `f` with every leaf slot that may map part of `[start, end)`: the level-2 entry
    /// of each 2 MiB block overlapping it (`large == true`; only LARGE entries are leaves
    /// there) and the level-1 entries in the range (linked or not: both may hold entries). `f`
    /// returns `false` to stop. Allocates nothing.
    fn for_each_leaf(&self, start: u64, end: u64, mut f: impl FnMut(&AtomicU64, bool) -> bool) {
        let end = end.min(VA_LIMIT);
        let mut va = start & !(PAGE - 1);
        while va < end {
            let Some(l2) = self.l2(va) else {
                // Nothing grown under this 1 GiB region.
                va = (va | ((1 << 30) - 1)) + 1;
                continue;
            };
            let i2 = index(va, 2);
            let block = va & !(LARGE_PAGE - 1);
            let e2 = l2.entry(i2);
            if e2.load(Ordering::Acquire) & LARGE != 0 && !f(e2, true) {
                return;
            }
            let stop = end.min(block + LARGE_PAGE);
            if let Some(l1) = l2.child(i2) {
                while va < stop {
                    if !f(l1.entry(index(va, 1)), false) {
                        return;
                    }
                    va += PAGE;
                }
            }
            va = stop;
        }
    }

    /// Whether any leaf entry in `[start, end)` is valid (a read-only walk).
    pub(crate) fn any_valid(&self, start: u64, end: u64) -> bool {
        let mut any = false;
        self.for_each_leaf(start, end, |e, _| {
            any = e.load(Ordering::Acquire) & VALID != 0;
            !any
        });
        any
    }

    /// Clears every leaf entry in `[start, end)`, marking pages the device wrote dirty.
    /// A 2 MiB leaf overlapping the range is dropped whole. Allocates nothing; called from
    /// the notifier callback.
    pub(crate) fn clear(&self, _t: &UpdateToken<'_>, start: u64, end: u64) -> Cleared {
        let mut out = Cleared::default();
        self.for_each_leaf(start, end, |e, large| {
            let old = e.swap(0, Ordering::AcqRel);
            if old & VALID != 0 {
                out.entries += 1;
                out.dirty += u64::from(old & DIRTY != 0);
                out.large |= large;
                out.pages += if large { LARGE_PAGE / PAGE } else { 1 };
                Self::retire(old, large);
            }
            true
        });
        out
    }

    /// Writes up to `max` runs of valid GPU mappings (`start-end rw|ro 4K|2M`), for debugfs.
    /// A racy read-only walk.
    pub(crate) fn describe_ranges(&self, out: &mut dyn core::fmt::Write, max: usize) -> core::fmt::Result {
        let mut runs = 0usize;
        let mut cur: Option<(u64, u64, bool, bool)> = None; // start, end, writable, large
        let mut flush = |r: Option<(u64, u64, bool, bool)>, out: &mut dyn core::fmt::Write| -> core::fmt::Result {
            if let Some((s, e, w, l)) = r {
                if runs < max {
                    writeln!(out, "  {s:#014x}-{e:#014x} {} {}", if w { "rw" } else { "ro" }, if l { "2M" } else { "4K" })?;
                }
                runs += 1;
            }
            Ok(())
        };
        for (i4, t3) in (0..ENTRIES).filter_map(|i| self.root.child(i).map(|c| (i, c))) {
            for (i3, t2) in (0..ENTRIES).filter_map(|i| t3.child(i).map(|c| (i, c))) {
                for i2 in 0..ENTRIES {
                    let base = ((i4 as u64) << 39) | ((i3 as u64) << 30) | ((i2 as u64) << 21);
                    let e2 = t2.entry(i2).load(Ordering::Relaxed);
                    let mut visit = |va: u64, e: u64, size: u64, large: bool, out: &mut dyn core::fmt::Write| -> core::fmt::Result {
                        if e & VALID == 0 {
                            return Ok(());
                        }
                        let w = e & WRITE != 0;
                        match cur {
                            Some((s, end, cw, cl)) if end == va && cw == w && cl == large => cur = Some((s, va + size, w, large)),
                            _ => {
                                flush(cur.take(), out)?;
                                cur = Some((va, va + size, w, large));
                            }
                        }
                        Ok(())
                    };
                    if e2 & VALID != 0 && e2 & LARGE != 0 {
                        visit(base, e2, LARGE_PAGE, true, out)?;
                    } else if let Some(l1) = t2.child(i2) {
                        for i1 in 0..ENTRIES {
                            visit(base | ((i1 as u64) << 12), l1.entry(i1).load(Ordering::Relaxed), PAGE, false, out)?;
                        }
                    }
                }
            }
        }
        flush(cur.take(), out)?;
        if runs > max {
            writeln!(out, "  ... {} more", runs - max)?;
        }
        Ok(())
    }
}
