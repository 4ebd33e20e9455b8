/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Raw helpers for the vmfork selftests. Every __vmfork_*() returns the
 * result of the underlying system call unchanged (-1 with errno set on
 * failure); the asserting variants live in vmfork_test.h.
 */
#ifndef SELFTEST_VMFORK_UTIL_H
#define SELFTEST_VMFORK_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <linux/vmfork.h>

#define VMFORK_DEV_PATH		"/dev/vmfork"
#define VMFORK_MODULE_NAME	"vmfork"
#define VMFORK_MAX_MEM_PARAM	"/sys/module/vmfork/parameters/max_mem_size"
#define VMFORK_COUNTERS_PATH	"/sys/kernel/debug/vmfork/counters"

#define PG			4096UL
#define PAGES(n)		((__u64)(n) * PG)

int __vmfork_open(void);
int __vmfork_api_version(int fd);
int __vmfork_create(int devfd, __u64 size, __u64 *id);
int __vmfork_create_args(int devfd, struct vmfork_create_mem *args);
int __vmfork_fork(int fd, __u64 flags, __u64 *id);
int __vmfork_fork_args(int fd, struct vmfork_fork *args);
int __vmfork_reset(int fd, unsigned long flags);
int __vmfork_stats(int fd, struct vmfork_stats *st);
void *__vmfork_mmap(int fd, size_t len, off_t off, int prot);

/* Reads the module parameter max_mem_size; 0 on success. */
int vmfork_read_max_mem_size(__u64 *val);

/* True if the module shows up in /sys/module. */
bool vmfork_module_loaded(void);
/* delete_module(2) / finit_module(2) without glibc wrappers. */
int __vmfork_unload(void);
int __vmfork_load(const char *path);

struct vmfork_counters {
	long objects;
	long layers;
	long pages;
};

/*
 * Reads the module's debugfs counters (mounting debugfs if needed).
 * Returns 0, or -1 with errno ENOENT when the module has no such file.
 */
int vmfork_read_counters(struct vmfork_counters *c);
/*
 * Polls the counters until objects and pages are 0 (objects may be freed
 * shortly after the last close), at most @timeout_ms. Returns as
 * vmfork_read_counters(); @c holds the last reading.
 */
int vmfork_wait_counters_idle(struct vmfork_counters *c, int timeout_ms);

/* Word @idx (8 bytes) of page @page through pread/pwrite. */
/* Writes @val to the sysfs/procfs/debugfs file @path: 0, or -1 with errno. */
int write_str(const char *path, const char *val);

ssize_t __peek64(int fd, __u64 page, unsigned int idx, __u64 *val);
ssize_t __poke64(int fd, __u64 page, unsigned int idx, __u64 val);

/*
 * A self-checking page pattern: a header (magic, sequence number, page
 * index, checksum) and a body derived from (seq, index). A torn page fails
 * the check.
 */
#define PATTERN_MAGIC		0x766d666f726b2121ULL	/* "vmfork!!" */

void pattern_fill(void *page, __u64 seq, __u64 index);
/* 1: all zero (never written), 0: valid (*seq, *index set), -1: torn. */
int pattern_check(const void *page, __u64 *seq, __u64 *index);

/* Fills @page with a simple value derived from @tag (one word per slot). */
void page_fill(void *page, __u64 tag);
/* True if @page is exactly page_fill(@tag). */
bool page_is(const void *page, __u64 tag);
bool page_is_zero(const void *page);

/* Monotonic clock in milliseconds. */
__u64 now_ms(void);

/*
 * The /proc/self/pagemap entry of each page of [@addr, @addr + @n pages):
 * bit 63 present, bits 0-54 the PFN (root only; 0 for others). 0 or -1.
 */
#define PAGEMAP_PRESENT		(1ULL << 63)
#define PAGEMAP_PFN_MASK	((1ULL << 55) - 1)
int pagemap_entries(const void *addr, __u64 n, __u64 *ent);

/* Sends @fd over the unix socket @sock (one byte, SCM_RIGHTS): 0, or -1. */
int send_fd(int sock, int fd, int flags);
/*
 * Receives one message from @sock: the fd it carries (close-on-exec), or -1
 * with errno set; ENODATA for the end (EOF, or a message without an fd).
 */
int recv_fd(int sock, int flags);

#endif /* SELFTEST_VMFORK_UTIL_H */
