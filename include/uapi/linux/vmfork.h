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
 * Errors (besides the usual -EFAULT for a bad user pointer):
 *   -ENOTTY  unknown ioctl
 *   -EINVAL  unknown flags, non-zero reserved fields, bad size, an ioctl made
 *            on the wrong kind of fd (object ioctl on /dev/vmfork or the
 *            reverse), VMFORK_RESET of an object that is not a fork child,
 *            mmap() without MAP_SHARED or past the end of the object
 *   -EPERM   a write (pwrite, writable mmap, VMFORK_RESET) to a template
 *   -ENOSPC  pwrite at or past the end of the object
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

#endif /* _UAPI_LINUX_VMFORK_H */
