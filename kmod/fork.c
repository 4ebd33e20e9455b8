// SPDX-License-Identifier: GPL-2.0
/*
 * VMFORK_VM_FORK and VMFORK_RESET. A fork freezes the parent's top layer
 * (after making sure no writable mapping of its pages is left, and keeping
 * pages under I/O the parent's), joins layers only the parent still reaches,
 * and gives the child a new empty top layer over the frozen one. The locking
 * rules are those of mem.c.
 */
#include <linux/file.h>
#include <linux/fs.h>
#include <linux/highmem.h>
#include <linux/ktime.h>
#include <linux/mm.h>
#include <linux/pagemap.h>
#include <linux/sched.h>
#include <linux/uaccess.h>

#include "compat.h"
#include "internal.h"
#include "trace.h"

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

long vmfork_mem_fork(struct vmfork_mem *parent, void __user *uarg)
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

long vmfork_mem_reset(struct vmfork_mem *mem, unsigned long flags)
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
