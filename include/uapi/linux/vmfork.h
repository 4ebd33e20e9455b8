/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * vmfork: copy-on-write guest-memory objects for KVM.
 *
 * /dev/vmfork hands out memory objects. An object is guest RAM: mmap() it
 * MAP_SHARED and give the address to KVM_SET_USER_MEMORY_REGION. Pages read
 * as zero until written. VMFORK_VM_FORK on an object returns a child object
 * whose content is the parent's at the instant of the fork; afterwards no
 * write on one side is visible on the other. Pages are shared copy-on-write
 * in the kernel.
 *
 * Discard: fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE) on an
 * object, or madvise(MADV_REMOVE) on a writable mapping of it, frees the
 * object's pages in the range and makes the whole range read as zero, also
 * where the pages came from the parent (which keeps them); partial pages at
 * the ends are zeroed. A guest's balloon or free page reporting gives memory
 * back this way.
 *
 * Errors (besides the usual -EFAULT for a bad user pointer):
 *   -ENOTTY  unknown ioctl
 *   -EINVAL  unknown flags, non-zero reserved fields, bad size, an ioctl made
 *            on the wrong kind of fd (object ioctl on /dev/vmfork or the
 *            reverse), VMFORK_RESET of an object that is not a fork child,
 *            mmap() without MAP_SHARED or past the end of the object
 *   -EPERM   a write (pwrite, writable mmap, VMFORK_RESET, a discard) to a
 *            template
 *   -ENOSPC  pwrite at or past the end of the object
 *   -EOPNOTSUPP  fallocate() other than a discard (the size is fixed)
 *   -ENOMEM  out of memory, or a write over the memory cgroup limit
 * A store through a mapping that the object refuses (a template), or one
 * that needs a page over the memory cgroup limit, raises SIGBUS; KVM reports
 * such a guest write as -EFAULT from KVM_RUN. Pages are charged to the memory
 * cgroup of the task whose access allocates them.
 */
#ifndef _UAPI_LINUX_VMFORK_H
#define _UAPI_LINUX_VMFORK_H

#include <linux/ioctl.h>
#include <linux/types.h>

/* Returned by VMFORK_GET_API_VERSION; bumped on any incompatible change. */
#define VMFORK_API_VERSION	1

/* Page counts in this interface are in units of 4 KiB. */
#define VMFORK_PAGE_SIZE	4096ULL

#define VMFORK_IO		0xB9

/*
 * VMFORK_CREATE_MEM (on /dev/vmfork): create a memory object of @size bytes
 * (a multiple of 4 KiB, at most the module parameter max_mem_size). Returns
 * a new O_CLOEXEC, O_RDWR file descriptor; @id is set to the object's id.
 */
struct vmfork_create_mem {
	__u64 size;		/* in: bytes */
	__u64 flags;		/* in: must be 0 */
	__u64 id;		/* out: id of the new object */
	__u64 reserved[5];	/* must be 0 */
};

/*
 * VMFORK_VM_FORK (on an object): returns the fd of a new child object (O_CLOEXEC,
 * O_RDWR) whose content equals the parent's at the instant of the fork; @id is
 * set to the child's id. With VMFORK_FORK_TEMPLATE the parent is first frozen
 * for good as a read-only template; later forks of a template need not pass the
 * flag. A template's own writable mappings fault with SIGBUS from then on.
 *
 * Pages under I/O at the fork (pinned or referenced by O_DIRECT, io_uring,
 * vhost, process_vm_writev, ...) stay the parent's: the child gets a copy made
 * at the fork, and I/O still in flight lands in the parent only, as with
 * anonymous memory and fork(). A template keeps the content of the fork
 * instant; I/O still in flight into it ends in pages nobody sees. Long-term
 * pins (FOLL_LONGTERM: VFIO, RDMA) are treated the same at every fork where
 * the kernel grants them; 6.12's GUP refuses writable ones on these mappings
 * (-EFAULT), and io_uring fixed buffers are refused on both 6.1 (-EOPNOTSUPP,
 * file-backed memory) and 6.12.
 */
#define VMFORK_FORK_TEMPLATE	(1ULL << 0)
#define VMFORK_FORK_FLAGS	(VMFORK_FORK_TEMPLATE)

struct vmfork_fork {
	__u64 flags;		/* in: VMFORK_FORK_* */
	__u64 id;		/* out: id of the child */
	__u64 reserved[6];	/* must be 0 */
};

/*
 * VMFORK_GET_STATS (on an object). Pages are counted in 4 KiB units:
 *   resident_pages  pages holding data in this object's view (a page never
 *                   written reads as zero and is not resident)
 *   private_pages   resident pages this object owns alone (written since
 *                   its last fork, its own or one it made)
 *   shared_pages    resident - private: pages it reads from copy-on-write
 *                   layers frozen by a fork (shared with its relatives)
 *   cow_breaks      shared pages copied on a first write
 *   forks, resets   VMFORK_VM_FORK calls on this object, VMFORK_RESET calls
 *   depth           0 for an object made by VMFORK_CREATE_MEM, parent's + 1
 *   chain_length    frozen layers a lookup may walk (cost of a fault)
 */
#define VMFORK_STATS_TEMPLATE	(1ULL << 0)	/* frozen as a template */

struct vmfork_stats {
	__u64 id;
	__u64 parent_id;	/* 0 for an object made by VMFORK_CREATE_MEM */
	__u64 depth;
	__u64 size;		/* bytes */
	__u64 resident_pages;
	__u64 shared_pages;
	__u64 private_pages;
	__u64 cow_breaks;
	__u64 forks;
	__u64 resets;
	__u64 flags;		/* VMFORK_STATS_* */
	__u64 chain_length;
	__u64 reserved[4];
};

/* On /dev/vmfork or an object: returns VMFORK_API_VERSION. */
#define VMFORK_GET_API_VERSION	_IO(VMFORK_IO, 0x00)
#define VMFORK_CREATE_MEM	_IOWR(VMFORK_IO, 0x01, struct vmfork_create_mem)
#define VMFORK_VM_FORK		_IOWR(VMFORK_IO, 0x02, struct vmfork_fork)
/*
 * VMFORK_RESET (on a fork child; the argument is a flags word and must be 0):
 * drop every write since the child's fork; its content is the fork-time
 * content again. Mappings and KVM memslots stay valid.
 */
#define VMFORK_RESET		_IO(VMFORK_IO, 0x03)
#define VMFORK_GET_STATS	_IOR(VMFORK_IO, 0x04, struct vmfork_stats)

/*
 * Generic netlink family VMFORK_GENL_NAME (initial network namespace only).
 *
 * VMFORK_CMD_GET_STATS
 *   doit with VMFORK_A_ID: one message for that object, -ENOENT when there
 *   is none the caller may see, -EINVAL (with an extended ack) when the
 *   attribute is missing or zero. Dump: one message per object the caller
 *   may see; with VMFORK_A_ID, that object only. Each message carries
 *   VMFORK_A_ID, _PARENT_ID, _CREATOR_PID, _DEPTH, _SIZE, _RESIDENT_PAGES,
 *   _SHARED_PAGES, _PRIVATE_PAGES, _COW_BREAKS, _FORKS, _RESETS, _FLAGS
 *   (VMFORK_STATS_*) and _CHAIN_LENGTH, the figures of VMFORK_GET_STATS.
 * VMFORK_CMD_GET_COUNTERS
 *   doit, no attributes: what the module holds in all, VMFORK_A_OBJECTS,
 *   _LAYERS and _PAGES (4 KiB pages, each counted once however many
 *   objects share it).
 *
 * Who sees what: a caller with CAP_SYS_ADMIN sees every object; any other
 * caller sees the objects created by tasks of its own effective uid.
 * GET_COUNTERS names no object and is open to all.
 *
 * Multicast group VMFORK_GENL_MCGRP_EVENTS (binding needs CAP_SYS_ADMIN: it
 * announces the objects of every user), one message per event:
 *   VMFORK_CMD_EVENT_FORK     _ID (the parent), _CHILD_ID, _CREATOR_PID (the
 *                             forking task), _FLAGS (VMFORK_FORK_*;
 *                             _TEMPLATE for every fork of a template),
 *                             _RESIDENT_PAGES (the parent's), _DURATION_NS
 *   VMFORK_CMD_EVENT_RESET    _ID, _DROPPED_PAGES, _DURATION_NS
 *   VMFORK_CMD_EVENT_RELEASE  _ID, _RESIDENT_PAGES, _PRIVATE_PAGES
 * Only the kernel sends events: a request with an event command gets
 * -EOPNOTSUPP. Every u64 attribute is NLA_U64, aligned with VMFORK_A_PAD;
 * pids are u32, in the initial pid namespace.
 */
#define VMFORK_GENL_NAME		"vmfork"
#define VMFORK_GENL_VERSION		1
#define VMFORK_GENL_MCGRP_EVENTS	"events"

enum vmfork_genl_cmd {
	VMFORK_CMD_UNSPEC,
	VMFORK_CMD_GET_STATS,
	VMFORK_CMD_GET_COUNTERS,
	VMFORK_CMD_EVENT_FORK,
	VMFORK_CMD_EVENT_RESET,
	VMFORK_CMD_EVENT_RELEASE,

	__VMFORK_CMD_MAX,
	VMFORK_CMD_MAX = __VMFORK_CMD_MAX - 1
};

enum vmfork_genl_attr {
	VMFORK_A_UNSPEC,
	VMFORK_A_ID,			/* u64 */
	VMFORK_A_PAD,
	VMFORK_A_PARENT_ID,		/* u64 */
	VMFORK_A_CREATOR_PID,		/* u32 */
	VMFORK_A_DEPTH,			/* u64 */
	VMFORK_A_SIZE,			/* u64, bytes */
	VMFORK_A_RESIDENT_PAGES,	/* u64 */
	VMFORK_A_SHARED_PAGES,		/* u64 */
	VMFORK_A_PRIVATE_PAGES,		/* u64 */
	VMFORK_A_COW_BREAKS,		/* u64 */
	VMFORK_A_FORKS,			/* u64 */
	VMFORK_A_RESETS,		/* u64 */
	VMFORK_A_FLAGS,			/* u64 */
	VMFORK_A_CHAIN_LENGTH,		/* u64 */
	VMFORK_A_CHILD_ID,		/* u64 */
	VMFORK_A_DURATION_NS,		/* u64 */
	VMFORK_A_DROPPED_PAGES,		/* u64 */
	VMFORK_A_OBJECTS,		/* u64 */
	VMFORK_A_LAYERS,		/* u64 */
	VMFORK_A_PAGES,			/* u64 */

	__VMFORK_A_MAX,
	VMFORK_A_MAX = __VMFORK_A_MAX - 1
};

#endif /* _UAPI_LINUX_VMFORK_H */
