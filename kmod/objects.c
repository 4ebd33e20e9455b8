// SPDX-License-Identifier: GPL-2.0
/*
 * The registry of memory objects, for netlink and debugfs. Every object by
 * id in an xarray. An id is reserved when its object is allocated (so that
 * publishing cannot fail after a fork has changed the parent), points at the
 * object once it is published, and is erased at release. Walkers look up
 * under rcu_read_lock() and read only fields that never change and the
 * stats snapshot: objects are freed after a grace period. No object lock is
 * taken under the xarray's, nor the other way round.
 */
#include <linux/rcupdate.h>
#include <linux/seq_file.h>
#include <linux/xarray.h>

#include "compat.h"
#include "internal.h"

static DEFINE_XARRAY(vmfork_objects);

int vmfork_objects_reserve(u64 id)
{
	return xa_reserve(&vmfork_objects, id, VMFORK_GFP);
}

/* Unlists @id, published or only reserved. */
void vmfork_objects_erase(u64 id)
{
	xa_erase(&vmfork_objects, id);
}

/* Lists @mem for walkers; a RELEASE event is owed from now on. */
void vmfork_mem_publish(struct vmfork_mem *mem)
{
	mem->published = true;
	/* Into the slot reserved at allocation: no memory needed, cannot fail. */
	xa_store(&vmfork_objects, mem->id, mem, GFP_NOWAIT);
}

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
