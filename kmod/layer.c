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
	struct vmfork_layer *l = kzalloc(sizeof(*l), VMFORK_GFP);

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
	unsigned long idx, n = 0;
	struct page *page;

	xa_for_each(&l->pages, idx, page) {
		if (!(++n % 512))
			cond_resched();
		if (vmfork_is_hole(page))
			continue;
		if (VMFORK_DEFECT(double_free) && !idx)
			put_page(page);
		vmfork_page_put(page);
	}
	xa_destroy(&l->pages);
	l->nr_pages = 0;
	l->nr_holes = 0;
	l->nr_gain = 0;
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

/*
 * The page at @pgoff in @l or the nearest layer below that has an entry
 * there, or NULL (no entry, or a hole).
 */
struct page *vmfork_layer_lookup(struct vmfork_layer *l, pgoff_t pgoff)
{
	for (; l; l = l->parent) {
		void *entry = xa_load(&l->pages, pgoff);

		if (entry)
			return vmfork_is_hole(entry) ? NULL : entry;
	}
	return NULL;
}

/* Number of pgoffs that have data in @l or a layer below it. */
unsigned long vmfork_layer_visible(struct vmfork_layer *l)
{
	if (l->frozen)
		return l->nr_visible;
	return (l->parent ? l->parent->nr_visible : 0) + l->nr_gain;
}

/*
 * What @entry (a page, a hole or none) at a pgoff adds to the number of
 * pgoffs with data, over layers below that have data there (@below) or not.
 */
static long vmfork_entry_gain(const void *entry, bool below)
{
	bool data = entry ? !vmfork_is_hole(entry) : below;

	return (long)data - (long)below;
}

/* Counts @entry in (@sign 1) or out of (-1) @l's pages and holes. */
static void vmfork_layer_count(struct vmfork_layer *l, const void *entry,
			       long sign)
{
	if (!entry)
		return;
	if (vmfork_is_hole(entry))
		l->nr_holes += sign;
	else
		l->nr_pages += sign;
}

void vmfork_layer_freeze(struct vmfork_layer *l)
{
	l->nr_visible = vmfork_layer_visible(l);
	l->chain_len = (l->parent ? l->parent->chain_len : 0) + 1;
	l->frozen = true;
}

/*
 * Sets the entry at @pgoff of the unfrozen layer @l to @entry: a page (whose
 * reference @l takes over), VMFORK_HOLE, or NULL to remove it. @below: a
 * layer below has data at @pgoff. The entry replaced goes to *@old, a page
 * with its reference for the caller to drop once no mapping can reach it.
 * Only an entry at an empty pgoff can fail, with -ENOMEM.
 */
int vmfork_layer_store(struct vmfork_layer *l, pgoff_t pgoff, void *entry,
		       bool below, void **old)
{
	void *prev;

	WARN_ON_ONCE(l->frozen);
	if (entry)
		prev = xa_store(&l->pages, pgoff, entry, VMFORK_GFP);
	else
		prev = xa_erase(&l->pages, pgoff);
	if (xa_is_err(prev))
		return xa_err(prev);
	vmfork_layer_count(l, prev, -1);
	vmfork_layer_count(l, entry, 1);
	l->nr_gain += vmfork_entry_gain(entry, below) -
		      vmfork_entry_gain(prev, below);
	*old = prev;
	return 0;
}

/*
 * Moves the entries (pages and holes) of @src into @dst. Where both have
 * one, @src's wins (@src_wins, and a page of @dst's is freed) or stays in
 * @src. With @gain, adds how many more pgoffs @dst shows data at. Out of
 * memory it stops early with -ENOMEM: every entry is still in one of the two
 * layers, so a chain holding both shows what it showed before.
 */
static int vmfork_layer_move(struct vmfork_layer *dst, struct vmfork_layer *src,
			     bool src_wins, long *gain)
{
	unsigned long idx, n = 0;
	void *entry, *old;
	bool below;

	xa_for_each(&src->pages, idx, entry) {
		if (!src_wins && xa_load(&dst->pages, idx))
			continue;
		below = gain && vmfork_layer_lookup(dst->parent, idx);
		old = xa_store(&dst->pages, idx, entry, VMFORK_GFP);
		if (xa_is_err(old))
			return xa_err(old);
		if (gain)
			*gain += vmfork_entry_gain(entry, below) -
				 vmfork_entry_gain(old, below);
		xa_erase(&src->pages, idx);
		vmfork_layer_count(src, entry, -1);
		vmfork_layer_count(dst, old, -1);
		vmfork_layer_count(dst, entry, 1);
		if (old && !vmfork_is_hole(old))
			vmfork_page_put(old);
		if (!(++n % 512))
			cond_resched();
	}
	return 0;
}

/*
 * Moves the pages of @top into @below, its parent, which only @top
 * references: the chain stays as long as it was instead of growing by one,
 * and pages that @top replaces are freed. Costs O(entries in @top times the
 * chain below, for the gain count).
 */
void vmfork_layer_merge(struct vmfork_layer *below, struct vmfork_layer *top)
{
	long gain = 0;

	WARN_ON_ONCE(top->parent != below || refcount_read(&below->ref) != 1);
	/* Out of memory the rest stays in @top, still correct. */
	vmfork_layer_move(below, top, true, &gain);
	/* @top shows what it showed: what @below gained, @top no longer adds. */
	below->nr_gain += gain;
	below->nr_visible += gain;
	top->nr_gain -= gain;
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
	if (upper->nr_pages + upper->nr_holes <=
	    lower->nr_pages + lower->nr_holes) {
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
	keep->nr_gain = (long)visible -
			(long)(keep->parent ? keep->parent->nr_visible : 0);
	return keep;
}

/*
 * Number of pgoffs where @l or a layer below it down to @base (excluded) has
 * a page: the pages a return to @base drops. O(those layers' entries times
 * their number).
 */
unsigned long vmfork_layer_written(struct vmfork_layer *l,
				   struct vmfork_layer *base)
{
	unsigned long idx, n = 0, seen = 0;
	struct vmfork_layer *k, *m;
	void *entry;

	if (l->parent == base)
		return l->nr_pages;
	for (k = l; k && k != base; k = k->parent) {
		xa_for_each(&k->pages, idx, entry) {
			/* Counted once, in the highest layer with an entry there. */
			for (m = l; m != k && !xa_load(&m->pages, idx); m = m->parent)
				;
			if (m == k && !vmfork_is_hole(entry))
				n++;
			if (!(++seen % 512))
				cond_resched();
		}
	}
	return n;
}
