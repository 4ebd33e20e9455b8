// SPDX-License-Identifier: GPL-2.0
/*
 * Layers of pages. A layer is mutable while it is an object's top layer (under
 * that object's lock) and immutable once frozen, except that a frozen layer
 * whose only reference is its owner's top layer may take that top layer's
 * pages (vmfork_layer_merge()): nobody else can see it.
 */
#include <linux/gfp.h>
#include <linux/highmem.h>
#include <linux/mm.h>
#include <linux/sched.h>
#include <linux/slab.h>

#include "internal.h"

atomic_long_t vmfork_nr_layers = ATOMIC_LONG_INIT(0);
atomic_long_t vmfork_nr_pages = ATOMIC_LONG_INIT(0);

/*
 * Guest pages are charged to the memory cgroup of the task whose access
 * allocates them. Out of memory, or over the cgroup's limit, the allocation
 * fails (no OOM kill on our behalf) and so does that access: -ENOMEM for a
 * write(), SIGBUS for a store, -EFAULT from KVM_RUN for a guest store.
 */
struct page *vmfork_page_alloc(void)
{
	struct page *page = alloc_page(VMFORK_GFP | __GFP_HIGHMEM | __GFP_HARDWALL);

	if (page)
		atomic_long_inc(&vmfork_nr_pages);
	return page;
}

void vmfork_page_put(struct page *page)
{
	atomic_long_dec(&vmfork_nr_pages);
	put_page(page);
}

struct vmfork_layer *vmfork_layer_alloc(void)
{
	struct vmfork_layer *l = kzalloc(sizeof(*l), GFP_KERNEL_ACCOUNT);

	if (!l)
		return NULL;
	refcount_set(&l->ref, 1);
	xa_init(&l->pages);
	atomic_long_inc(&vmfork_nr_layers);
	return l;
}

struct vmfork_layer *vmfork_layer_get(struct vmfork_layer *l)
{
	if (l)
		refcount_inc(&l->ref);
	return l;
}

/* Drops every page of @l; @l must be unreachable by lookups or under its owner's lock. */
void vmfork_layer_clear(struct vmfork_layer *l)
{
	unsigned long idx;
	struct page *page;

	xa_for_each(&l->pages, idx, page) {
		if (VMFORK_DEFECT(double_free) && !idx)
			put_page(page);
		vmfork_page_put(page);
		if (!(idx % 512))
			cond_resched();
	}
	xa_destroy(&l->pages);
	l->nr_pages = 0;
	l->nr_new = 0;
}

/*
 * Releases a reference. The last one frees the layer and releases its parent:
 * a loop, not recursion, since chains may be long.
 */
void vmfork_layer_put(struct vmfork_layer *l)
{
	while (l && refcount_dec_and_test(&l->ref)) {
		struct vmfork_layer *parent = l->parent;

		vmfork_layer_clear(l);
		kfree(l);
		atomic_long_dec(&vmfork_nr_layers);
		l = parent;
	}
}

/* The page at @pgoff in @l or the nearest layer below that has one, or NULL. */
struct page *vmfork_layer_lookup(struct vmfork_layer *l, pgoff_t pgoff)
{
	for (; l; l = l->parent) {
		struct page *page = xa_load(&l->pages, pgoff);

		if (page)
			return page;
	}
	return NULL;
}

/* Number of pgoffs that have data in @l or a layer below it. */
unsigned long vmfork_layer_visible(struct vmfork_layer *l)
{
	if (l->frozen)
		return l->nr_visible;
	return (l->parent ? l->parent->nr_visible : 0) + l->nr_new;
}

void vmfork_layer_freeze(struct vmfork_layer *l)
{
	l->nr_visible = vmfork_layer_visible(l);
	l->chain_len = (l->parent ? l->parent->chain_len : 0) + 1;
	l->frozen = true;
}

/*
 * Stores @page (a reference passed in) at @pgoff of the unfrozen layer @l,
 * which has no page there yet. @is_new: no layer below has @pgoff either.
 */
int vmfork_layer_insert(struct vmfork_layer *l, pgoff_t pgoff,
			struct page *page, bool is_new)
{
	int err;

	WARN_ON_ONCE(l->frozen);
	err = xa_err(xa_store(&l->pages, pgoff, page, VMFORK_GFP));
	if (err)
		return err;
	l->nr_pages++;
	if (is_new)
		l->nr_new++;
	return 0;
}

/*
 * Moves the pages of @src into @dst. Where both have a page, @src's wins
 * (@src_wins, and @dst's is freed) or stays in @src. @moved_new counts the
 * moved pages at pgoffs that neither @dst nor a layer below it had. Out of
 * memory it stops early with -ENOMEM: every page is still in one of the two
 * layers, so a chain holding both shows what it showed before.
 */
static int vmfork_layer_move(struct vmfork_layer *dst, struct vmfork_layer *src,
			     bool src_wins, unsigned long *moved_new)
{
	struct page *page, *old;
	unsigned long idx;

	xa_for_each(&src->pages, idx, page) {
		if (!src_wins && xa_load(&dst->pages, idx))
			continue;
		old = xa_store(&dst->pages, idx, page, VMFORK_GFP);
		if (xa_is_err(old))
			return xa_err(old);
		if (!old && moved_new && !vmfork_layer_lookup(dst->parent, idx))
			(*moved_new)++;
		xa_erase(&src->pages, idx);
		src->nr_pages--;
		if (old)
			vmfork_page_put(old);
		else
			dst->nr_pages++;
		if (!(idx % 512))
			cond_resched();
	}
	return 0;
}

/*
 * Moves the pages of @top into @below, its parent, which only @top
 * references: the chain stays as long as it was instead of growing by one,
 * and pages that @top replaces are freed. Costs O(pages in @top).
 */
void vmfork_layer_merge(struct vmfork_layer *below, struct vmfork_layer *top)
{
	unsigned long moved_new = 0;

	WARN_ON_ONCE(top->parent != below || refcount_read(&below->ref) != 1);
	/* Out of memory the rest stays in @top, still correct. */
	vmfork_layer_move(below, top, true, &moved_new);
	below->nr_new += moved_new;
	below->nr_visible += moved_new;
	top->nr_new -= moved_new;
}

/*
 * Joins the frozen layer @upper and its parent into one frozen layer that
 * shows what @upper showed, moving the pages of the smaller of the two:
 * O(min(pages in @upper, pages in its parent)). The parent must be reachable
 * only through @upper, and @upper only through references of one owner,
 * under that owner's lock (nobody else can look either up).
 *
 * Returns the layer that remains. It carries @upper's references: the caller
 * points each of them at it. Out of memory it returns NULL and both layers
 * stay as they were in content.
 */
struct vmfork_layer *vmfork_layer_join(struct vmfork_layer *upper)
{
	struct vmfork_layer *lower = upper->parent, *keep;
	unsigned long visible = upper->nr_visible;
	unsigned int len = upper->chain_len - 1;

	WARN_ON_ONCE(!upper->frozen || !lower || refcount_read(&lower->ref) != 1);
	if (upper->nr_pages <= lower->nr_pages) {
		/* @lower takes @upper's place and references. */
		if (vmfork_layer_move(lower, upper, true, NULL))
			return NULL;
		refcount_set(&lower->ref, refcount_read(&upper->ref));
		upper->parent = NULL;
		refcount_set(&upper->ref, 1);
		vmfork_layer_put(upper);
		keep = lower;
	} else {
		/* @upper takes @lower's pages that it does not shadow. */
		if (vmfork_layer_move(upper, lower, false, NULL))
			return NULL;
		upper->parent = lower->parent;
		lower->parent = NULL;
		vmfork_layer_put(lower);	/* with the pages @upper shadows */
		keep = upper;
	}
	keep->nr_visible = visible;
	keep->chain_len = len;
	keep->nr_new = visible - (keep->parent ? keep->parent->nr_visible : 0);
	return keep;
}

/*
 * Number of pgoffs that @l or a layer below it down to @base (excluded) has:
 * what a return to @base drops. O(those layers' pages times their number).
 */
unsigned long vmfork_layer_written(struct vmfork_layer *l,
				   struct vmfork_layer *base)
{
	struct vmfork_layer *k, *m;
	unsigned long idx, n = 0;
	struct page *page;

	if (l->parent == base)
		return l->nr_pages;
	for (k = l; k && k != base; k = k->parent) {
		xa_for_each(&k->pages, idx, page) {
			/* Counted once, in the highest layer that has it. */
			for (m = l; m != k && !xa_load(&m->pages, idx); m = m->parent)
				;
			if (m == k)
				n++;
			if (!(idx % 512))
				cond_resched();
		}
	}
	return n;
}
