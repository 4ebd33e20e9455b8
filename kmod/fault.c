// SPDX-License-Identifier: GPL-2.0
/*
 * Page faults on a memory object's mappings (see mem.c for the mapping
 * rules), and the zero page that holes map.
 */
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/pagemap.h>

#include "compat.h"
#include "internal.h"

/*
 * Holes map a zero page of the module's, read-only, through vm_insert_page():
 * a reference and a mapcount per PTE. (The kernel's shared zero page as a
 * special PTE would take neither, but 6.12 refuses it in a writable
 * MAP_SHARED mapping.) So that no count can wrap, the page in use is replaced
 * by a new one once it has zero_page_max_maps references; the PTEs of the old
 * one keep it alive until they are gone. Its count is then bounded by that
 * limit plus the faults in flight.
 */
static struct page *vmfork_zero_page;	/* one reference is the module's */
static DEFINE_SPINLOCK(vmfork_zero_lock);	/* protects the pointer */
static unsigned long vmfork_zero_page_max_maps = 1UL << 30;
module_param_named(zero_page_max_maps, vmfork_zero_page_max_maps, ulong, 0644);
MODULE_PARM_DESC(zero_page_max_maps, "References after which holes get a new zero page (default 2^30)");

/* The zero page to map now, with a reference for the caller. */
static struct page *vmfork_zero_get(void)
{
	struct page *zero, *fresh = NULL, *old = NULL;
	bool full;

	spin_lock(&vmfork_zero_lock);
	full = page_count(vmfork_zero_page) > READ_ONCE(vmfork_zero_page_max_maps);
	spin_unlock(&vmfork_zero_lock);
	/* Without memory the old page serves on: the limit is far below the wrap. */
	if (unlikely(full))
		fresh = alloc_page(GFP_KERNEL | __GFP_ZERO);

	spin_lock(&vmfork_zero_lock);
	if (fresh && page_count(vmfork_zero_page) > READ_ONCE(vmfork_zero_page_max_maps)) {
		old = vmfork_zero_page;
		vmfork_zero_page = fresh;
		fresh = NULL;
	}
	zero = vmfork_zero_page;
	get_page(zero);
	spin_unlock(&vmfork_zero_lock);
	if (old)
		put_page(old);	/* the module's reference */
	if (fresh)
		__free_page(fresh);
	return zero;
}

int vmfork_zero_init(void)
{
	vmfork_zero_page = alloc_page(GFP_KERNEL | __GFP_ZERO);
	return vmfork_zero_page ? 0 : -ENOMEM;
}

void vmfork_zero_exit(void)
{
	put_page(vmfork_zero_page);
}

/*
 * Whether @vma is the only mapping of @mem. Every PTE of @mem's pages is
 * installed by vmfork_fault() under mem->lock, which the caller holds, so
 * then no PTE but @vma's can map @mem's page at any pgoff now.
 */
static bool vmfork_mem_sole_vma(struct vmfork_mem *mem,
				struct vm_area_struct *vma)
{
	struct address_space *mapping = mem->inode->i_mapping;
	struct rb_node *root;
	bool sole;

	lockdep_assert_held(&mem->lock);
	i_mmap_lock_read(mapping);
	root = mapping->i_mmap.rb_root.rb_node;
	sole = root && !root->rb_left && !root->rb_right &&
	       rb_entry(root, struct vm_area_struct, shared.rb) == vma;
	i_mmap_unlock_read(mapping);
	return sole;
}

/*
 * A store that cannot have a private page (a template, or no memory: not
 * VM_FAULT_OOM, which without an OOM kill in progress would retry the fault
 * for ever) fails with SIGBUS, as the uAPI documents.
 */
#define VMFORK_FAULT_ERROR	VM_FAULT_SIGBUS

/*
 * A write fault here (->fault: the faulting PTE was empty) that replaces a
 * page of a VMA mapped nowhere else does not zap that page at once: zapping
 * a pgoff fires the MMU notifier even where nothing maps it, which makes KVM
 * drop the range and retry the very stage-2 fault that led here. Only a PTE
 * that another fault installed since this one began can map the old page;
 * that PTE makes vm_insert_page() fail with -EBUSY, and then the zap is made.
 */
static vm_fault_t vmfork_fault(struct vm_fault *vmf)
{
	struct vmfork_mem *mem = vmf->vma->vm_file->private_data;
	struct page *page, *zero = NULL;
	bool zap_owed = false;
	vm_fault_t ret;
	int err;

	if (vmf->pgoff >= mem->npages)
		return VM_FAULT_SIGBUS;

	/* A task that is being killed does not wait for a long fork. */
	if (mutex_lock_killable(&mem->lock))
		return VM_FAULT_SIGBUS;
	if (vmf->flags & FAULT_FLAG_WRITE) {
		page = vmfork_mem_private_page(mem, vmf->pgoff,
					       vmfork_mem_sole_vma(mem, vmf->vma) ?
					       &zap_owed : NULL);
		if (IS_ERR(page)) {
			ret = VMFORK_FAULT_ERROR;
			goto out;
		}
	} else {
		page = vmfork_layer_lookup(mem->top, vmf->pgoff);
		if (!page) {
			zero = vmfork_zero_get();
			page = zero;
		}
	}
	/* Read-only (write-notify): the first store goes to ->page_mkwrite. */
	err = vm_insert_page(vmf->vma, vmf->address & PAGE_MASK, page);
	if (err && zap_owed)
		vmfork_mem_zap(mem, vmf->pgoff, 1);
	if (err && err != -EBUSY)	/* -EBUSY: another fault mapped it */
		ret = vmf_error(err);
	else
		ret = VM_FAULT_NOPAGE;
out:
	mutex_unlock(&mem->lock);
	if (zero)
		put_page(zero);
	return ret;
}

static vm_fault_t vmfork_page_mkwrite(struct vm_fault *vmf)
{
	struct vmfork_mem *mem = vmf->vma->vm_file->private_data;
	struct page *page;
	vm_fault_t ret;

	if (mutex_lock_killable(&mem->lock))
		return VM_FAULT_SIGBUS;
	page = vmfork_mem_private_page(mem, vmf->pgoff, NULL);
	if (IS_ERR(page)) {
		ret = VMFORK_FAULT_ERROR;
	} else if (page == vmf->page) {
		/* Locked under mem->lock: see vmfork_mem_wait_writers(). */
		lock_page(page);
		ret = VM_FAULT_LOCKED;
	} else {
		/*
		 * The PTE maps a shared page, a zero page or a page a fork or
		 * reset replaced: the retry maps the private page.
		 */
		vmfork_mem_zap(mem, vmf->pgoff, 1);
		ret = VM_FAULT_NOPAGE;
	}
	mutex_unlock(&mem->lock);
	return ret;
}

const struct vm_operations_struct vmfork_vm_ops = {
	.fault		= vmfork_fault,
	.page_mkwrite	= vmfork_page_mkwrite,
};
