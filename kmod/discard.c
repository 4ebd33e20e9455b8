// SPDX-License-Identifier: GPL-2.0
/*
 * Discard: fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE), and so
 * madvise(MADV_REMOVE), on a memory object. The locking rules are those of
 * mem.c.
 */
#include <linux/fs.h>
#include <linux/falloc.h>
#include <linux/highmem.h>
#include <linux/mm.h>
#include <linux/sched.h>

#include "compat.h"
#include "internal.h"

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
	page = vmfork_mem_private_page(mem, pgoff, NULL);
	if (IS_ERR(page))
		return PTR_ERR(page);
	memzero_page(page, off, len);
	return 0;
}

/*
 * Discards pgoffs [@start, @end): private pages are freed, and a hole goes
 * where a frozen layer below has data, so the whole range reads as zero and
 * costs no page. Mappings are zapped first, under mem->lock, so that no PTE
 * or stage-2 entry still maps a page when it is freed and none can map it
 * again. Returns 0, or -ENOMEM, -EINTR or -EPERM (a fork made @mem a
 * template) with a prefix of the range discarded.
 */
/* Whole pages discarded per hold of mem->lock: faults wait at most this long. */
#define VMFORK_DISCARD_BATCH	512

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
long vmfork_mem_fallocate(struct file *file, int mode, loff_t offset,
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
