// SPDX-License-Identifier: GPL-2.0
/*
 * Memory objects: guest RAM that forks copy-on-write.
 *
 * Each object is a file on a private pseudo filesystem with an inode of its
 * own, so unmap_mapping_pages() on that inode's mapping zaps exactly this
 * object's user mappings and, through the MMU notifiers, KVM's stage-2 entries
 * for them. KVM reaches the pages by GUP on the VMM's MAP_SHARED mapping.
 *
 * Mapping rules. The module installs every PTE itself, read-only, with
 * vm_insert_page() under mem->lock (->fault returns VM_FAULT_NOPAGE). A page
 * becomes writable only through ->page_mkwrite, which returns it locked when
 * it is the object's private page; core mm then upgrades the PTE only if it
 * is unchanged (pte_same() under the PTE lock). So every writable PTE maps a
 * page of the object's top layer, and a fork makes the parent's private
 * pages read-only by zapping them: an upgrade racing with the zap fails its
 * pte_same() check, one that wins is zapped.
 *
 * Lock order: mmap_lock (fault path) -> mem->lock -> page lock, i_mmap_rwsem
 * -> PTE lock. mem->lock is never held across a user copy: a user buffer may
 * be a mapping of this very object. A fault holds mem->lock for one chain
 * lookup, at most one page allocation and 4 KiB copy, a one-page zap and a
 * PTE insert; a fork for a zap of the parent's private pages.
 */
#include <linux/anon_inodes.h>
#include <linux/cred.h>
#include <linux/debugfs.h>
#include <linux/falloc.h>
#include <linux/file.h>
#include <linux/fs.h>
#include <linux/highmem.h>
#include <linux/ktime.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/mount.h>
#include <linux/pagemap.h>
#include <linux/pseudo_fs.h>
#include <linux/sched/signal.h>
#include <linux/seq_file.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/uio.h>
#include <linux/vmfork.h>

#include "compat.h"
#include "internal.h"
#include "trace.h"

#define VMFORK_FS_MAGIC	0x766d666b	/* "vmfk" */

struct vmfork_mem {
	/*
	 * Protects @top, @fork_base, @template and the counters. Faults, reads,
	 * writes, fork and reset of this object serialise on it.
	 */
	struct mutex lock;
	/*
	 * @stats is what VMFORK_GET_STATS, netlink and debugfs report: written
	 * under @lock after each change, read without it (the fault path's
	 * lock), so monitoring never contends with a VM's faults.
	 */
	seqcount_mutex_t stats_seq;
	struct vmfork_stats stats;
	struct vmfork_layer *top;	/* own layer; frozen for a template */
	struct vmfork_layer *fork_base;	/* layer below @top at fork: reset target */
	bool template;

	u64 id;
	u64 parent_id;
	u64 depth;
	pid_t creator;			/* tgid of the creating task */
	kuid_t owner;			/* its effective uid: see netlink.c */
	loff_t size;
	pgoff_t npages;
	u64 cow_breaks;
	u64 forks;
	u64 resets;
	bool published;			/* announced: listed, and a RELEASE event owed */

	struct inode *inode;
	struct rcu_head rcu;		/* walkers may still read @stats: see below */
};

atomic_long_t vmfork_nr_objects = ATOMIC_LONG_INIT(0);
/*
 * Every object by id. An id is reserved when its object is allocated (so that
 * publishing cannot fail after a fork has changed the parent), points at the
 * object once it is published, and is erased at release. Walkers look up
 * under rcu_read_lock() and read only fields that never change and @stats:
 * objects are freed after a grace period. No object lock is taken under the
 * xarray's, nor the other way round.
 */
static DEFINE_XARRAY(vmfork_objects);

static atomic64_t vmfork_next_id = ATOMIC64_INIT(0);
static struct vfsmount *vmfork_mnt;

static const struct file_operations vmfork_mem_fops;

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

/* Recomputes @mem->stats (see the uAPI header) after a change of @mem. */
static void vmfork_mem_update_stats(struct vmfork_mem *mem)
{
	struct vmfork_stats *st = &mem->stats;
	struct vmfork_layer *top = mem->top;

	lockdep_assert_held(&mem->lock);
	write_seqcount_begin(&mem->stats_seq);
	memset(st, 0, sizeof(*st));
	st->id = mem->id;
	st->parent_id = mem->parent_id;
	st->depth = mem->depth;
	st->size = mem->size;
	st->resident_pages = vmfork_layer_visible(top);
	if (mem->template) {
		st->flags |= VMFORK_STATS_TEMPLATE;
		st->chain_length = top->chain_len;
	} else {
		st->private_pages = top->nr_pages;
		st->chain_length = top->parent ? top->parent->chain_len : 0;
	}
	st->shared_pages = st->resident_pages - st->private_pages;
	st->cow_breaks = mem->cow_breaks;
	st->forks = mem->forks;
	st->resets = mem->resets;
	write_seqcount_end(&mem->stats_seq);
}

/* A consistent copy of @mem->stats, without @mem->lock (RCU or a file reference). */
static void vmfork_mem_read_stats(struct vmfork_mem *mem, struct vmfork_stats *st)
{
	unsigned int seq;

	do {
		seq = read_seqcount_begin(&mem->stats_seq);
		*st = mem->stats;
	} while (read_seqcount_retry(&mem->stats_seq, seq));
}

static struct vmfork_mem *vmfork_mem_alloc(loff_t size)
{
	struct vmfork_mem *mem = kzalloc(sizeof(*mem), VMFORK_GFP);

	if (!mem)
		return NULL;
	mem->top = vmfork_layer_alloc();
	if (!mem->top) {
		kfree(mem);
		return NULL;
	}
	mutex_init(&mem->lock);
	seqcount_mutex_init(&mem->stats_seq, &mem->lock);
	mem->id = atomic64_inc_return(&vmfork_next_id);
	if (xa_reserve(&vmfork_objects, mem->id, VMFORK_GFP)) {
		vmfork_layer_put(mem->top);
		kfree(mem);
		return NULL;
	}
	mem->creator = task_tgid_nr(current);
	mem->owner = current_euid();
	mem->size = size;
	mem->npages = size >> PAGE_SHIFT;
	atomic_long_inc(&vmfork_nr_objects);
	mutex_lock(&mem->lock);
	vmfork_mem_update_stats(mem);
	mutex_unlock(&mem->lock);
	return mem;
}

/* Frees @mem, which nobody can find any more; walkers may still read it. */
static void vmfork_mem_free(struct vmfork_mem *mem)
{
	xa_erase(&vmfork_objects, mem->id);
	vmfork_layer_put(mem->top);
	vmfork_layer_put(mem->fork_base);
	mutex_destroy(&mem->lock);
	if (!VMFORK_DEFECT(leak))
		kfree_rcu(mem, rcu);
	atomic_long_dec(&vmfork_nr_objects);
}

/* Makes every mapping of @mem fault again at pgoffs [@start, @start + @nr). */
static void vmfork_mem_zap(struct vmfork_mem *mem, pgoff_t start, pgoff_t nr)
{
	unmap_mapping_pages(mem->inode->i_mapping, start, nr, false);
}

/*
 * Zaps the mappings of @mem's private pages: the only pages a writable PTE
 * can map. Runs of neighbouring pages go in one call. Pages the parent only
 * read keep their mappings (and KVM its stage-2 entries): a live fork costs
 * O(pages written since the last fork), and nothing else faults again.
 */
static void vmfork_mem_zap_private(struct vmfork_mem *mem)
{
	struct vmfork_layer *top = mem->top;
	pgoff_t start = 0, end = 0;
	unsigned long idx;
	struct page *page;

	lockdep_assert_held(&mem->lock);
	if (!mapping_mapped(mem->inode->i_mapping) || !top->nr_pages)
		return;
	xa_for_each(&top->pages, idx, page) {
		if (idx == end) {
			end++;
			continue;
		}
		if (end > start)
			vmfork_mem_zap(mem, start, end - start);
		start = idx;
		end = idx + 1;
		cond_resched();
	}
	if (end > start)
		vmfork_mem_zap(mem, start, end - start);
}

/*
 * ->page_mkwrite hands a private page out locked and core mm unlocks it once
 * the PTE is writable. Waiting for each page lock after the zap means no
 * fault that started before the fork can still make one of these pages
 * writable after it, even where the PTE was zapped and mapped again.
 */
static void vmfork_mem_wait_writers(struct vmfork_mem *mem)
{
	unsigned long idx, n = 0;
	struct page *page;

	lockdep_assert_held(&mem->lock);
	xa_for_each(&mem->top->pages, idx, page) {
		if (!(++n % 512))
			cond_resched();
		if (vmfork_is_hole(page))
			continue;
		/*
		 * Only ->page_mkwrite locks these pages, under mem->lock: one
		 * seen unlocked now has finished its fault.
		 */
		if (PageLocked(page)) {
			lock_page(page);
			unlock_page(page);
		}
	}
}

/*
 * Returns @mem's private page at @pgoff: its own, or a new one copied from
 * the nearest frozen layer (a COW break) or zeroed where no layer has one.
 * Mappings of the page it replaces are zapped so that they fault in the new one.
 */
static struct page *vmfork_mem_private_page(struct vmfork_mem *mem, pgoff_t pgoff)
{
	struct vmfork_layer *top = mem->top;
	struct page *page, *below, *old;
	void *entry, *prev;
	int err;

	lockdep_assert_held(&mem->lock);
	if (mem->template)
		return ERR_PTR(-EPERM);
	entry = xa_load(&top->pages, pgoff);
	if (entry && !vmfork_is_hole(entry))
		return entry;

	page = vmfork_page_alloc();
	if (!page)
		return ERR_PTR(-ENOMEM);
	below = vmfork_layer_lookup(top->parent, pgoff);
	old = entry ? NULL : below;	/* a hole of ours hides @below */
	if (old)
		copy_highpage(page, old);
	else
		clear_highpage(page);
	err = vmfork_layer_store(top, pgoff, page, below, &prev);
	if (err) {
		vmfork_page_put(page);
		return ERR_PTR(err);
	}
	if (old) {
		mem->cow_breaks++;
		trace_vmfork_cow(mem->id, pgoff);
	}
	vmfork_mem_update_stats(mem);
	vmfork_mem_zap(mem, pgoff, 1);
	return page;
}

/*
 * A store that cannot have a private page (a template, or no memory: not
 * VM_FAULT_OOM, which without an OOM kill in progress would retry the fault
 * for ever) fails with SIGBUS, as the uAPI documents.
 */
#define VMFORK_FAULT_ERROR	VM_FAULT_SIGBUS

static vm_fault_t vmfork_fault(struct vm_fault *vmf)
{
	struct vmfork_mem *mem = vmf->vma->vm_file->private_data;
	struct page *page, *zero = NULL;
	vm_fault_t ret;
	int err;

	if (vmf->pgoff >= mem->npages)
		return VM_FAULT_SIGBUS;

	/* A task that is being killed does not wait for a long fork. */
	if (mutex_lock_killable(&mem->lock))
		return VM_FAULT_SIGBUS;
	if (vmf->flags & FAULT_FLAG_WRITE) {
		page = vmfork_mem_private_page(mem, vmf->pgoff);
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
	page = vmfork_mem_private_page(mem, vmf->pgoff);
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

static const struct vm_operations_struct vmfork_vm_ops = {
	.fault		= vmfork_fault,
	.page_mkwrite	= vmfork_page_mkwrite,
};

static int vmfork_mem_mmap(struct file *file, struct vm_area_struct *vma)
{
	struct vmfork_mem *mem = file->private_data;

	if (!(vma->vm_flags & VM_SHARED))
		return -EINVAL;
	if (vma->vm_pgoff >= mem->npages ||
	    vma_pages(vma) > mem->npages - vma->vm_pgoff)
		return -EINVAL;
	/* A template never changes again: refuse write access for good. */
	if (READ_ONCE(mem->template)) {
		if (vma->vm_flags & VM_WRITE)
			return -EPERM;
		vmfork_vm_flags_clear(vma, VM_MAYWRITE);
	}
	/*
	 * VM_DONTCOPY: a process fork() must not share guest RAM behind the
	 * object's back. VM_MIXEDMAP: we insert pages with vm_insert_page().
	 */
	vmfork_vm_flags_set(vma, VM_DONTCOPY | VM_DONTEXPAND | VM_MIXEDMAP);
	vma->vm_ops = &vmfork_vm_ops;
	return 0;
}

static ssize_t vmfork_mem_read_iter(struct kiocb *iocb, struct iov_iter *to)
{
	struct vmfork_mem *mem = iocb->ki_filp->private_data;
	loff_t pos = iocb->ki_pos;
	ssize_t done = 0;

	while (iov_iter_count(to) && pos < mem->size) {
		size_t off = offset_in_page(pos), n;
		size_t len = min3(PAGE_SIZE - off, iov_iter_count(to),
				  (size_t)(mem->size - pos));
		struct page *page;

		if (mutex_lock_killable(&mem->lock)) {
			if (!done)
				done = -EINTR;
			break;
		}
		page = vmfork_layer_lookup(mem->top, pos >> PAGE_SHIFT);
		if (page)
			get_page(page);
		mutex_unlock(&mem->lock);

		if (page) {
			n = copy_page_to_iter(page, off, len, to);
			put_page(page);
		} else {
			n = iov_iter_zero(len, to);
		}
		done += n;
		pos += n;
		if (n < len) {
			if (!done)
				done = -EFAULT;
			break;
		}
		if (fatal_signal_pending(current))
			break;
		cond_resched();
	}
	if (done > 0)
		iocb->ki_pos = pos;
	return done;
}

static ssize_t vmfork_mem_write_iter(struct kiocb *iocb, struct iov_iter *from)
{
	struct vmfork_mem *mem = iocb->ki_filp->private_data;
	loff_t pos = iocb->ki_pos;
	struct page *bounce;
	ssize_t done = 0;
	int err = 0;

	if (!iov_iter_count(from))
		return 0;
	if (READ_ONCE(mem->template))
		return -EPERM;
	if (pos >= mem->size)
		return -ENOSPC;
	bounce = alloc_page(GFP_KERNEL);
	if (!bounce)
		return -ENOMEM;

	while (iov_iter_count(from) && pos < mem->size) {
		size_t off = offset_in_page(pos), n;
		size_t len = min3(PAGE_SIZE - off, iov_iter_count(from),
				  (size_t)(mem->size - pos));
		struct page *page;

		/* Copy in first: the user buffer may fault on this object. */
		n = copy_page_from_iter(bounce, off, len, from);
		if (!n) {
			err = -EFAULT;
			break;
		}
		if (mutex_lock_killable(&mem->lock)) {
			err = -EINTR;
			break;
		}
		page = vmfork_mem_private_page(mem, pos >> PAGE_SHIFT);
		if (!IS_ERR(page))
			memcpy_page(page, off, bounce, off, n);
		mutex_unlock(&mem->lock);
		if (IS_ERR(page)) {
			err = PTR_ERR(page);
			break;
		}
		done += n;
		pos += n;
		if (n < len || fatal_signal_pending(current))
			break;
		cond_resched();
	}
	__free_page(bounce);
	if (!done)
		return err;
	iocb->ki_pos = pos;
	return done;
}

/*
 * Zeroes bytes [@off, @off + @len) of page @pgoff, within one page. A pgoff
 * that reads as zero already gets no page.
 */
static int vmfork_mem_zero_partial(struct vmfork_mem *mem, pgoff_t pgoff,
				   size_t off, size_t len)
{
	struct page *page;

	lockdep_assert_held(&mem->lock);
	if (!vmfork_layer_lookup(mem->top, pgoff))
		return 0;
	page = vmfork_mem_private_page(mem, pgoff);
	if (IS_ERR(page))
		return PTR_ERR(page);
	memzero_page(page, off, len);
	return 0;
}

/* Whole pages discarded per hold of mem->lock: faults wait at most this long. */
#define VMFORK_DISCARD_BATCH	512

/*
 * Discards pgoffs [@start, @end): private pages are freed, and a hole goes
 * where a frozen layer below has data, so the whole range reads as zero and
 * costs no page. Mappings are zapped first, under mem->lock, so that no PTE
 * or stage-2 entry still maps a page when it is freed and none can map it
 * again. Returns 0, or -ENOMEM, -EINTR or -EPERM (a fork made @mem a
 * template) with a prefix of the range discarded.
 */
static int vmfork_mem_discard(struct vmfork_mem *mem, pgoff_t start, pgoff_t end)
{
	struct vmfork_layer *top;
	pgoff_t pgoff, stop;
	void *entry, *old;
	bool below;
	int err = 0;

	for (pgoff = start; pgoff < end && !err; pgoff = stop) {
		stop = min_t(pgoff_t, end, pgoff + VMFORK_DISCARD_BATCH);
		if (mutex_lock_killable(&mem->lock))
			return -EINTR;
		/* A fork may have made @mem a template since the caller looked. */
		if (mem->template) {
			mutex_unlock(&mem->lock);
			return -EPERM;
		}
		top = mem->top;
		vmfork_mem_zap(mem, pgoff, stop - pgoff);
		for (; pgoff < stop; pgoff++) {
			below = vmfork_layer_lookup(top->parent, pgoff);
			entry = xa_load(&top->pages, pgoff);
			if (entry == (below ? VMFORK_HOLE : NULL))
				continue;
			err = vmfork_layer_store(top, pgoff,
						 below ? VMFORK_HOLE : NULL,
						 below, &old);
			if (err)
				break;
			if (old && !vmfork_is_hole(old))
				vmfork_page_put(old);
		}
		vmfork_mem_update_stats(mem);
		mutex_unlock(&mem->lock);
		cond_resched();
	}
	return err;
}

/*
 * fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE), which
 * madvise(MADV_REMOVE) calls too: the range reads as zero afterwards and
 * whole pages in it cost no memory (a guest's balloon or free page
 * reporting gives RAM back this way). Partial pages at its ends are zeroed.
 * Other modes: -EOPNOTSUPP; the size of an object never changes.
 */
static long vmfork_mem_fallocate(struct file *file, int mode, loff_t offset,
				 loff_t len)
{
	struct vmfork_mem *mem = file->private_data;
	loff_t end = min_t(loff_t, offset + len, mem->size);
	pgoff_t first = DIV_ROUND_UP(offset, PAGE_SIZE), last = end >> PAGE_SHIFT;
	int err = 0;

	if (mode != (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE))
		return -EOPNOTSUPP;
	if (READ_ONCE(mem->template))
		return -EPERM;
	if (offset >= end)
		return 0;

	if (first > last) {
		/* Within one page. */
		if (mutex_lock_killable(&mem->lock))
			return -EINTR;
		err = vmfork_mem_zero_partial(mem, last, offset_in_page(offset),
					      end - offset);
		mutex_unlock(&mem->lock);
		return err;
	}
	if (mutex_lock_killable(&mem->lock))
		return -EINTR;
	if (offset_in_page(offset))
		err = vmfork_mem_zero_partial(mem, first - 1,
					      offset_in_page(offset),
					      PAGE_SIZE - offset_in_page(offset));
	if (!err && offset_in_page(end))
		err = vmfork_mem_zero_partial(mem, last, 0, offset_in_page(end));
	mutex_unlock(&mem->lock);
	if (err)
		return err;
	return vmfork_mem_discard(mem, first, last);
}

static loff_t vmfork_mem_llseek(struct file *file, loff_t offset, int whence)
{
	struct vmfork_mem *mem = file->private_data;

	return fixed_size_llseek(file, offset, whence, mem->size);
}

/*
 * Whether something beyond @mem's layer and page tables holds @page: a GUP
 * pin or reference taken for I/O (O_DIRECT, io_uring, vhost,
 * process_vm_writev) that may still write to it. Core mm's fork() asks the
 * same of anonymous pages (folio_maybe_dma_pinned()); plain references count
 * too, since O_DIRECT on 6.1 takes them without FOLL_PIN. A false positive
 * (a pread() copying the page out right now) only costs a copy.
 */
static bool vmfork_page_maybe_pinned(struct page *page)
{
	return page_count(page) > 1 + vmfork_page_mapcount(page);
}

/*
 * Keeps the pages of @mem's top layer that may be under I/O out of the layer
 * a fork freezes: each moves to @spare, the parent's next top layer, and the
 * layer being frozen gets a copy made now. I/O in flight across the fork then
 * lands in the parent only, and whole, as with anonymous memory and fork();
 * the child sees the page as it was at the fork. Returns the number of pages
 * moved, or -ENOMEM with @mem as it was.
 */
static long vmfork_mem_keep_pinned(struct vmfork_mem *mem,
				   struct vmfork_layer *spare)
{
	struct vmfork_layer *top = mem->top;
	struct page *page, *copy;
	unsigned long idx;
	long moved = 0;
	int err;

	lockdep_assert_held(&mem->lock);
	xa_for_each(&top->pages, idx, page) {
		if (vmfork_is_hole(page) || !vmfork_page_maybe_pinned(page))
			continue;
		copy = vmfork_page_alloc();
		if (!copy) {
			err = -ENOMEM;
			goto undo;
		}
		err = xa_err(xa_store(&spare->pages, idx, page, VMFORK_GFP));
		if (err) {
			vmfork_page_put(copy);
			goto undo;
		}
		copy_highpage(copy, page);
		/* Replaces a present entry: no allocation, cannot fail. */
		xa_store(&top->pages, idx, copy, GFP_NOWAIT);
		spare->nr_pages++;
		moved++;
	}
	return moved;

undo:
	xa_for_each(&spare->pages, idx, page) {
		vmfork_page_put(xa_store(&top->pages, idx, page, GFP_NOWAIT));
		xa_erase(&spare->pages, idx);
	}
	spare->nr_pages = 0;
	return err;
}

/*
 * Whether only @mem reaches @l, a frozen layer of its chain whose layer
 * above only @mem reaches too: @l's references are that layer's and, for
 * @mem's fork base, that one. Other objects can only drop references to such
 * a layer (a new one takes a fork of @mem, under mem->lock), so the answer
 * holds while mem->lock is held.
 */
static bool vmfork_mem_owns(struct vmfork_mem *mem, struct vmfork_layer *l)
{
	return refcount_read(&l->ref) == 1 + (l == mem->fork_base);
}

/*
 * Joins neighbouring frozen layers that only @mem reaches. Their other users
 * (a parent that forked @mem and closed, children that ended) are gone, so
 * nothing tells them apart: without this, "fork a child, close the parent"
 * repeated grows the chain, and every lookup, by a layer per generation.
 * What remains of that part of the chain is at most two layers: the fork
 * base (a reset returns to it, so nothing above may move into it) and one
 * above it. Costs O(pages of the smaller layer) per join.
 */
static void vmfork_mem_collapse(struct vmfork_mem *mem)
{
	struct vmfork_layer *above = mem->top, *l = above->parent, *lower, *keep;
	unsigned int n = 0, base;

	lockdep_assert_held(&mem->lock);
	while (l && vmfork_mem_owns(mem, l)) {
		lower = l->parent;
		/* @lower reached only through @l: not the fork base either. */
		if (lower && refcount_read(&lower->ref) == 1 &&
		    lower != mem->fork_base) {
			keep = vmfork_layer_join(l);
			if (keep) {
				above->parent = keep;
				if (mem->fork_base == l)
					mem->fork_base = keep;
				l = keep;
				continue;
			}
		}
		above = l;
		l = lower;
		n++;
	}
	/* The @n layers walked sit on @l, which keeps its length. */
	base = l ? l->chain_len : 0;
	for (l = mem->top->parent; n; l = l->parent, n--)
		l->chain_len = base + n;
}

/*
 * Freezes @mem's pages so that a child can share them and returns the frozen
 * layer the child starts on, with a reference for the caller (NULL when @mem
 * has never had data), or an ERR_PTR. @spare is an empty layer that becomes
 * @mem's new top if one is needed; it is set to NULL when used.
 */
static struct vmfork_layer *vmfork_mem_freeze(struct vmfork_mem *mem,
					      struct vmfork_layer **spare,
					      bool template)
{
	struct vmfork_layer *top = mem->top, *below;
	long pinned;

	lockdep_assert_held(&mem->lock);
	if (mem->template)
		return vmfork_layer_get(top);

	/* After this no writable PTE maps a page of @top, nor can again. */
	vmfork_mem_zap_private(mem);
	vmfork_mem_wait_writers(mem);
	pinned = vmfork_mem_keep_pinned(mem, *spare);
	if (pinned < 0)
		return ERR_PTR(pinned);
	vmfork_mem_collapse(mem);
	below = top->parent;

	if (template) {
		/* A template never changes: I/O in flight ends in pages nobody sees. */
		vmfork_layer_clear(*spare);
		vmfork_layer_freeze(top);
		WRITE_ONCE(mem->template, true);
		return vmfork_layer_get(top);
	}
	if (below && refcount_read(&below->ref) == 1) {
		/*
		 * Only @top holds @below (its other users are gone, and a
		 * fork_base would hold a reference): fold @top into it so that
		 * fork, run, kill loops do not grow the chain.
		 */
		vmfork_layer_merge(below, top);
	}
	if (!top->nr_pages && !top->nr_holes) {
		if (pinned) {
			/* @spare, holding the pinned pages, replaces @top. */
			(*spare)->parent = below;
			top->parent = NULL;
			vmfork_layer_put(top);
			mem->top = *spare;
			*spare = NULL;
		}
		return vmfork_layer_get(below);
	}
	vmfork_layer_freeze(top);
	(*spare)->parent = top;	/* takes over @mem's reference */
	mem->top = *spare;
	*spare = NULL;
	return vmfork_layer_get(top);
}

/*
 * Creates the file of @mem and reserves a descriptor for it; the caller
 * fd_install()s both. On failure @mem is freed.
 */
static int vmfork_mem_open(struct vmfork_mem *mem, struct file **filep)
{
	struct inode *inode;
	struct file *file;
	int fd, err;

	fd = get_unused_fd_flags(O_CLOEXEC);
	if (fd < 0) {
		err = fd;
		goto err_mem;
	}
	inode = alloc_anon_inode(vmfork_mnt->mnt_sb);
	if (IS_ERR(inode)) {
		err = PTR_ERR(inode);
		goto err_fd;
	}
	/* A regular file: vfs_fallocate(), and so MADV_REMOVE, require one. */
	inode->i_mode |= S_IFREG;
	inode->i_size = mem->size;
	inode->i_private = mem;
	mem->inode = inode;

	/* alloc_file_pseudo() takes no module reference, but fput() drops one. */
	__module_get(THIS_MODULE);
	file = alloc_file_pseudo(inode, vmfork_mnt, "vmfork-mem", O_RDWR,
				 &vmfork_mem_fops);
	if (IS_ERR(file)) {
		err = PTR_ERR(file);
		goto err_module;
	}
	file->f_mode |= FMODE_LSEEK | FMODE_PREAD | FMODE_PWRITE;
	file->f_flags |= O_LARGEFILE;
	file->private_data = mem;
	*filep = file;
	return fd;

err_module:
	module_put(THIS_MODULE);
	iput(inode);
err_fd:
	put_unused_fd(fd);
err_mem:
	vmfork_mem_free(mem);
	return err;
}

/* Lists @mem for walkers; a RELEASE event is owed from now on. */
static void vmfork_mem_publish(struct vmfork_mem *mem)
{
	mem->published = true;
	/* Into the slot reserved at allocation: no memory needed, cannot fail. */
	xa_store(&vmfork_objects, mem->id, mem, GFP_NOWAIT);
}

long vmfork_mem_create(void __user *uarg)
{
	struct vmfork_create_mem arg;
	struct vmfork_mem *mem;
	struct file *file;
	int fd;

	if (copy_from_user(&arg, uarg, sizeof(arg)))
		return -EFAULT;
	if (arg.flags || memchr_inv(arg.reserved, 0, sizeof(arg.reserved)))
		return -EINVAL;
	if (!arg.size || !PAGE_ALIGNED(arg.size) ||
	    arg.size > vmfork_max_mem_size || arg.size > MAX_LFS_FILESIZE)
		return -EINVAL;

	mem = vmfork_mem_alloc(arg.size);
	if (!mem)
		return -ENOMEM;
	fd = vmfork_mem_open(mem, &file);
	if (fd < 0)
		return fd;
	if (put_user(mem->id, &((struct vmfork_create_mem __user *)uarg)->id)) {
		fput(file);
		put_unused_fd(fd);
		return -EFAULT;
	}
	trace_vmfork_create(mem->id, mem->size);
	vmfork_mem_publish(mem);
	fd_install(fd, file);
	return fd;
}

static long vmfork_mem_fork(struct vmfork_mem *parent, void __user *uarg)
{
	struct vmfork_fork __user *uptr = uarg;
	struct vmfork_layer *spare, *base;
	struct vmfork_mem *child;
	struct vmfork_fork arg;
	u64 start, resident, duration, flags;
	struct file *file;
	int fd;

	if (copy_from_user(&arg, uarg, sizeof(arg)))
		return -EFAULT;
	if ((arg.flags & ~VMFORK_FORK_FLAGS) ||
	    memchr_inv(arg.reserved, 0, sizeof(arg.reserved)))
		return -EINVAL;

	/* Everything that can fail happens before the parent changes. */
	spare = vmfork_layer_alloc();
	if (!spare)
		return -ENOMEM;
	child = vmfork_mem_alloc(parent->size);
	if (!child) {
		fd = -ENOMEM;
		goto out;
	}
	fd = vmfork_mem_open(child, &file);
	if (fd < 0)
		goto out;
	if (put_user(child->id, &uptr->id)) {
		fput(file);
		put_unused_fd(fd);
		fd = -EFAULT;
		goto out;
	}

	start = ktime_get_ns();
	mutex_lock(&parent->lock);
	if (VMFORK_DEFECT(lock_inversion)) {
		/* the fault path takes these in the other order */
		mmap_write_lock(current->mm);
		mmap_write_unlock(current->mm);
	}
	base = vmfork_mem_freeze(parent, &spare,
				 arg.flags & VMFORK_FORK_TEMPLATE);
	if (IS_ERR(base)) {
		mutex_unlock(&parent->lock);
		fput(file);	/* @child was never published: no event */
		put_unused_fd(fd);
		fd = PTR_ERR(base);
		goto out;
	}
	/* @child is not published yet: nobody else can see it. */
	child->top->parent = base;
	child->fork_base = vmfork_layer_get(base);
	child->parent_id = parent->id;
	child->depth = parent->depth + 1;
	parent->forks++;
	vmfork_mem_update_stats(parent);
	resident = vmfork_layer_visible(parent->top);
	/* A fork of a template is a template fork, with the flag or without. */
	flags = arg.flags | (parent->template ? VMFORK_FORK_TEMPLATE : 0);
	mutex_unlock(&parent->lock);
	mutex_lock(&child->lock);
	vmfork_mem_update_stats(child);
	mutex_unlock(&child->lock);
	duration = ktime_get_ns() - start;
	trace_vmfork_fork(parent->id, child->id, resident, duration, flags);

	vmfork_mem_publish(child);
	vmfork_nl_notify_fork(parent->id, child->id, flags, resident, duration);
	fd_install(fd, file);
out:
	vmfork_layer_put(spare);
	return fd;
}

static long vmfork_mem_reset(struct vmfork_mem *mem, unsigned long flags)
{
	struct vmfork_layer *top, *fresh = NULL;
	unsigned long dropped = 0;
	u64 start = ktime_get_ns(), duration = 0;
	long ret = 0;

	if (flags)
		return -EINVAL;
	fresh = vmfork_layer_alloc();
	if (!fresh)
		return -ENOMEM;

	mutex_lock(&mem->lock);
	top = mem->top;
	if (!mem->parent_id) {
		ret = -EINVAL;
		goto out;
	}
	if (mem->template) {
		ret = -EPERM;
		goto out;
	}
	dropped = vmfork_layer_written(top, mem->fork_base);
	if (top->parent == mem->fork_base) {
		/* Only @top differs from the fork-time content: O(its pages). */
		vmfork_mem_zap_private(mem);
		vmfork_layer_clear(top);
	} else {
		/* @mem forked since: frozen layers above fork_base hold its writes too. */
		vmfork_mem_zap(mem, 0, mem->npages);
		fresh->parent = vmfork_layer_get(mem->fork_base);
		mem->top = fresh;
		fresh = top;	/* released below, after the lock */
	}
	mem->resets++;
	vmfork_mem_update_stats(mem);
	duration = ktime_get_ns() - start;
	trace_vmfork_reset(mem->id, dropped, duration);
out:
	mutex_unlock(&mem->lock);
	vmfork_layer_put(fresh);
	if (!ret)
		vmfork_nl_notify_reset(mem->id, dropped, duration);
	return ret;
}

static long vmfork_mem_ioctl(struct file *file, unsigned int cmd,
			     unsigned long arg)
{
	struct vmfork_mem *mem = file->private_data;
	struct vmfork_stats st;

	switch (cmd) {
	case VMFORK_GET_API_VERSION:
		return VMFORK_API_VERSION;
	case VMFORK_VM_FORK:
		return vmfork_mem_fork(mem, (void __user *)arg);
	case VMFORK_RESET:
		return vmfork_mem_reset(mem, arg);
	case VMFORK_GET_STATS:
		vmfork_mem_read_stats(mem, &st);
		return copy_to_user((void __user *)arg, &st, sizeof(st)) ?
		       -EFAULT : 0;
	case VMFORK_CREATE_MEM:
		return -EINVAL;	/* a /dev/vmfork ioctl */
	default:
		return -ENOTTY;
	}
}

static int vmfork_mem_release(struct inode *inode, struct file *file)
{
	struct vmfork_mem *mem = file->private_data;
	unsigned long resident, private;

	/* Unlisted first: no walker finds @mem from here on. */
	xa_erase(&vmfork_objects, mem->id);
	/* The last reference: nothing else can change @mem, no lock needed. */
	if (mem->published) {
		resident = vmfork_layer_visible(mem->top);
		private = mem->template ? 0 : mem->top->nr_pages;
		trace_vmfork_release(mem->id, resident, private);
		vmfork_nl_notify_release(mem->id, resident, private);
	}
	vmfork_mem_free(mem);
	return 0;
}

static const struct file_operations vmfork_mem_fops = {
	.owner		= THIS_MODULE,
	.release	= vmfork_mem_release,
	.mmap		= vmfork_mem_mmap,
	.read_iter	= vmfork_mem_read_iter,
	.write_iter	= vmfork_mem_write_iter,
	.llseek		= vmfork_mem_llseek,
	.fallocate	= vmfork_mem_fallocate,
	.unlocked_ioctl	= vmfork_mem_ioctl,
	.compat_ioctl	= compat_ptr_ioctl,
};

/*
 * Calls @visit for the published objects that pass @filter, in order of id
 * from @from, until it returns false. Returns the id to go on from: that of
 * the object @visit refused, or one past the last id visited. @visit runs
 * under rcu_read_lock() and must not sleep; it reads no object lock, only
 * fields that never change and a snapshot of the stats.
 */
u64 vmfork_mem_walk(u64 from, const struct vmfork_walk_filter *filter,
		    bool (*visit)(const struct vmfork_obj_info *info, void *arg),
		    void *arg)
{
	unsigned long idx, last = filter->id ? filter->id : ULONG_MAX;
	struct vmfork_obj_info info;
	struct vmfork_mem *mem;

	if (filter->id)
		from = max_t(u64, from, filter->id);
	if (from > last)
		return from;
	rcu_read_lock();
	xa_for_each_range(&vmfork_objects, idx, mem, from, last) {
		if (!filter->all && !uid_eq(mem->owner, filter->uid))
			continue;
		vmfork_mem_read_stats(mem, &info.st);
		info.creator = mem->creator;
		info.owner = mem->owner;
		if (!visit(&info, arg)) {
			rcu_read_unlock();
			return idx;
		}
		from = (u64)idx + 1;
	}
	rcu_read_unlock();
	return from;
}

/* debugfs "objects": one line per object, then the totals. */
struct vmfork_mem_show {
	struct seq_file *m;
	struct vmfork_stats sum;
};

static bool vmfork_mem_show_one(const struct vmfork_obj_info *info, void *arg)
{
	const struct vmfork_stats *st = &info->st;
	struct vmfork_mem_show *show = arg;

	seq_printf(show->m, "%8llu %8llu %5llu %8d %10llu %9llu %9llu %9llu %10llu %6llu %6llu %5llu %s\n",
		   st->id, st->parent_id, st->depth, info->creator,
		   st->size >> 10, st->resident_pages, st->shared_pages,
		   st->private_pages, st->cow_breaks, st->forks, st->resets,
		   st->chain_length,
		   (st->flags & VMFORK_STATS_TEMPLATE) ? "template" : "-");
	show->sum.resident_pages += st->resident_pages;
	show->sum.private_pages += st->private_pages;
	show->sum.cow_breaks += st->cow_breaks;
	show->sum.forks += st->forks;
	show->sum.resets += st->resets;
	return true;
}

void vmfork_mem_show_all(struct seq_file *m)
{
	struct vmfork_mem_show show = { .m = m };
	const struct vmfork_walk_filter all = { .all = true };
	const struct vmfork_stats *sum = &show.sum;

	seq_printf(m, "%8s %8s %5s %8s %10s %9s %9s %9s %10s %6s %6s %5s %s\n",
		   "id", "parent", "depth", "creator", "size_kib", "resident",
		   "shared", "private", "cow_breaks", "forks", "resets",
		   "chain", "flags");
	vmfork_mem_walk(0, &all, vmfork_mem_show_one, &show);
	seq_printf(m, "total: objects %ld layers %ld pages %ld (%lu KiB) views %llu private %llu cow_breaks %llu forks %llu resets %llu\n",
		   atomic_long_read(&vmfork_nr_objects),
		   atomic_long_read(&vmfork_nr_layers),
		   atomic_long_read(&vmfork_nr_pages),
		   atomic_long_read(&vmfork_nr_pages) * (PAGE_SIZE >> 10),
		   sum->resident_pages, sum->private_pages, sum->cow_breaks,
		   sum->forks, sum->resets);
}

static int vmfork_init_fs_context(struct fs_context *fc)
{
	return init_pseudo(fc, VMFORK_FS_MAGIC) ? 0 : -ENOMEM;
}

static struct file_system_type vmfork_fs_type = {
	.name		 = "vmfork",
	.init_fs_context = vmfork_init_fs_context,
	.kill_sb	 = kill_anon_super,
};

int vmfork_mem_init(void)
{
	vmfork_zero_page = alloc_page(GFP_KERNEL | __GFP_ZERO);
	if (!vmfork_zero_page)
		return -ENOMEM;
	vmfork_mnt = kern_mount(&vmfork_fs_type);
	if (IS_ERR(vmfork_mnt)) {
		put_page(vmfork_zero_page);
		return PTR_ERR(vmfork_mnt);
	}
	return 0;
}

void vmfork_mem_exit(void)
{
	kern_unmount(vmfork_mnt);
	put_page(vmfork_zero_page);
}
