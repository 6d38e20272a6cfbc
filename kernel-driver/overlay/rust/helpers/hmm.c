// SPDX-License-Identifier: GPL-2.0
// Added by the vgpu-svm overlay: wrappers for the static inline parts of the interval
// notifier and HMM APIs, and the address helpers a device page table needs.

#include <linux/hmm.h>
#include <linux/io.h>
#include <linux/mm.h>
#include <linux/mmu_notifier.h>
#include <linux/secretmem.h>
#include <linux/sched/signal.h>
#include <asm/pgtable.h>

__rust_helper bool rust_helper_mmu_interval_read_retry(struct mmu_interval_notifier *sub,
						       unsigned long seq)
{
	return mmu_interval_read_retry(sub, seq);
}

__rust_helper bool rust_helper_mmu_interval_check_retry(struct mmu_interval_notifier *sub,
							unsigned long seq)
{
	return mmu_interval_check_retry(sub, seq);
}

__rust_helper void rust_helper_mmu_interval_set_seq(struct mmu_interval_notifier *sub,
						    unsigned long cur_seq)
{
	mmu_interval_set_seq(sub, cur_seq);
}

__rust_helper bool rust_helper_mmu_notifier_range_blockable(const struct mmu_notifier_range *range)
{
	return mmu_notifier_range_blockable(range);
}

__rust_helper struct page *rust_helper_hmm_pfn_to_page(unsigned long hmm_pfn)
{
	return hmm_pfn_to_page(hmm_pfn);
}

__rust_helper phys_addr_t rust_helper_hmm_pfn_to_phys(unsigned long hmm_pfn)
{
	return hmm_pfn_to_phys(hmm_pfn);
}

__rust_helper unsigned int rust_helper_hmm_pfn_to_map_order(unsigned long hmm_pfn)
{
	return hmm_pfn_to_map_order(hmm_pfn);
}

__rust_helper phys_addr_t rust_helper_page_to_phys(struct page *page)
{
	return page_to_phys(page);
}

__rust_helper phys_addr_t rust_helper_virt_to_phys(volatile void *address)
{
	return virt_to_phys(address);
}

__rust_helper bool rust_helper_pgtable_l5_enabled(void)
{
	return pgtable_l5_enabled();
}

__rust_helper void *rust_helper_page_address(const struct page *page)
{
	return page_address(page);
}

/*
 * memfd_secret(2) memory is removed from the kernel's direct map and must not be reached by
 * any device; GUP refuses it, hmm_range_fault() in 7.2 does not check, so mirror drivers
 * must. vma_is_secretmem() is not exported: this built-in wrapper is.
 */
__rust_helper bool rust_helper_vma_is_secretmem(struct vm_area_struct *vma)
{
	return vma_is_secretmem(vma);
}

/* Retry loops of mirror drivers end when the task is being killed. */
__rust_helper bool rust_helper_fatal_signal_pending(struct task_struct *p)
{
	return fatal_signal_pending(p);
}
