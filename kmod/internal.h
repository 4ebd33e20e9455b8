/* SPDX-License-Identifier: GPL-2.0 */
#ifndef VMFORK_INTERNAL_H
#define VMFORK_INTERNAL_H

#include <linux/atomic.h>
#include <linux/gfp.h>
#include <linux/kconfig.h>
#include <linux/list.h>
#include <linux/mutex.h>
#include <linux/refcount.h>
#include <linux/seqlock.h>
#include <linux/types.h>
#include <linux/uidgid.h>
#include <linux/vmfork.h>
#include <linux/xarray.h>

/*
 * Object model.
 *
 * A memory object (struct vmfork_mem, one per file and inode) sees its pages
 * through a chain of layers. The top layer is the object's own: it holds the
 * pages written since the object's last fork event, and only this object
 * reaches it. Every layer below is frozen: immutable, refcounted, and shared
 * by every object (and layer) forked from it. A lookup walks the chain from
 * the top and takes the first page it finds; a page no layer has reads as
 * zero. A fork freezes the parent's top layer and gives parent and child each
 * a new empty top layer over it: nothing is done per page of the object, only
 * per page the parent wrote since its last fork (its mappings are zapped).
 * Lookups cost O(chain length), which joins of layers keep short.
 *
 * A template is an object whose top layer itself is frozen: it never changes
 * again and every fork of it is O(1).
 *
 * A discarded range (fallocate(FALLOC_FL_PUNCH_HOLE), madvise(MADV_REMOVE))
 * leaves no page, and a hole entry where a layer below has data: the lookup
 * stops there and the pgoff reads as zero.
 */
struct vmfork_layer {
	refcount_t ref;
	struct vmfork_layer *parent;	/* the layer below, a reference held */
	struct xarray pages;		/* pgoff -> page (a reference each) or hole */
	unsigned long nr_pages;		/* pages in @pages */
	unsigned long nr_holes;		/* holes in @pages */
	long nr_gain;			/* pgoffs this layer shows data at, less those below */
	unsigned long nr_visible;	/* frozen: pgoffs with data here or below */
	unsigned int chain_len;		/* frozen: layers from here down */
	bool frozen;
};

/* The entry of a layer that hides the layers below at its pgoff. */
#define VMFORK_HOLE	xa_mk_value(0)

static inline bool vmfork_is_hole(const void *entry)
{
	return xa_is_value(entry);
}

/*
 * A deliberate bug of the test build (kmod/Kbuild, VMFORK_BUGS): 0, and
 * compiled out, in every other build.
 */
#define VMFORK_DEFECT(name)	IS_ENABLED(VMFORK_BUG_##name)

/* Guest memory allocations: charged to the memcg, failing rather than OOM-killing. */
#define VMFORK_GFP	(GFP_KERNEL_ACCOUNT | __GFP_RETRY_MAYFAIL | __GFP_NOWARN)

struct vmfork_layer *vmfork_layer_alloc(void);
struct vmfork_layer *vmfork_layer_get(struct vmfork_layer *l);
void vmfork_layer_put(struct vmfork_layer *l);
struct page *vmfork_layer_lookup(struct vmfork_layer *l, pgoff_t pgoff);
unsigned long vmfork_layer_visible(struct vmfork_layer *l);
void vmfork_layer_freeze(struct vmfork_layer *l);
void vmfork_layer_clear(struct vmfork_layer *l);
void vmfork_layer_merge(struct vmfork_layer *below, struct vmfork_layer *top);
struct vmfork_layer *vmfork_layer_join(struct vmfork_layer *upper);
unsigned long vmfork_layer_written(struct vmfork_layer *l,
				   struct vmfork_layer *base);
int vmfork_layer_store(struct vmfork_layer *l, pgoff_t pgoff, void *entry,
		       bool below, void **old);

struct page *vmfork_page_alloc(void);
void vmfork_page_put(struct page *page);

/*
 * A memory object: one per file and inode. mem.c has the object itself (the
 * fault path, read and write, the file), fork.c fork and reset, discard.c
 * fallocate, objects.c the registry that netlink and debugfs walk.
 */
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
	struct rcu_head rcu;		/* walkers may still read @stats: objects.c */
};

/* mem.c */
struct vmfork_mem *vmfork_mem_alloc(loff_t size);
int vmfork_mem_open(struct vmfork_mem *mem, struct file **filep);
void vmfork_mem_update_stats(struct vmfork_mem *mem);
void vmfork_mem_read_stats(struct vmfork_mem *mem, struct vmfork_stats *st);
void vmfork_mem_zap(struct vmfork_mem *mem, pgoff_t start, pgoff_t nr);
void vmfork_mem_zap_private(struct vmfork_mem *mem);
struct page *vmfork_mem_private_page(struct vmfork_mem *mem, pgoff_t pgoff,
				     bool *zap_owed);

/* fault.c */
extern const struct vm_operations_struct vmfork_vm_ops;
int vmfork_zero_init(void);
void vmfork_zero_exit(void);

/* fork.c */
long vmfork_mem_fork(struct vmfork_mem *parent, void __user *uarg);
long vmfork_mem_reset(struct vmfork_mem *mem, unsigned long flags);

/* discard.c */
long vmfork_mem_fallocate(struct file *file, int mode, loff_t offset,
			  loff_t len);

/* objects.c */
int vmfork_objects_reserve(u64 id);
void vmfork_objects_erase(u64 id);
void vmfork_mem_publish(struct vmfork_mem *mem);

/* Leak accounting, reported in debugfs and checked at module exit. */
extern atomic_long_t vmfork_nr_objects;
extern atomic_long_t vmfork_nr_layers;
extern atomic_long_t vmfork_nr_pages;

extern unsigned long vmfork_max_mem_size;

int vmfork_mem_init(void);
void vmfork_mem_exit(void);
long vmfork_mem_create(void __user *uarg);
struct seq_file;
void vmfork_mem_show_all(struct seq_file *m);

/* One object as the netlink family reports it. */
struct vmfork_obj_info {
	struct vmfork_stats st;
	pid_t creator;
	kuid_t owner;
};

/*
 * Which objects a walk visits: @id (0: any) and, unless @all, only those whose
 * owner is @uid. A walk takes no object's lock: it reads a snapshot of the
 * stats, so it never contends with any VM's fault path.
 */
struct vmfork_walk_filter {
	u64 id;
	bool all;
	kuid_t uid;
};

u64 vmfork_mem_walk(u64 from, const struct vmfork_walk_filter *filter,
		    bool (*visit)(const struct vmfork_obj_info *info, void *arg),
		    void *arg);

int vmfork_nl_init(void);
void vmfork_nl_exit(void);
void vmfork_nl_notify_fork(u64 parent_id, u64 child_id, u64 flags,
			   u64 resident_pages, u64 duration_ns);
void vmfork_nl_notify_reset(u64 id, u64 dropped_pages, u64 duration_ns);
void vmfork_nl_notify_release(u64 id, u64 resident_pages, u64 private_pages);

#endif /* VMFORK_INTERNAL_H */
