// SPDX-License-Identifier: GPL-2.0
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "vmfork_util.h"

int __vmfork_open(void)
{
	return open(VMFORK_DEV_PATH, O_RDWR | O_CLOEXEC);
}

int __vmfork_api_version(int fd)
{
	return ioctl(fd, VMFORK_GET_API_VERSION);
}

int __vmfork_create_args(int devfd, struct vmfork_create_mem *args)
{
	return ioctl(devfd, VMFORK_CREATE_MEM, args);
}

int __vmfork_create(int devfd, __u64 size, __u64 *id)
{
	struct vmfork_create_mem args = { .size = size };
	int fd;

	fd = __vmfork_create_args(devfd, &args);
	if (fd >= 0 && id)
		*id = args.id;
	return fd;
}

int __vmfork_fork_args(int fd, struct vmfork_fork *args)
{
	return ioctl(fd, VMFORK_VM_FORK, args);
}

int __vmfork_fork(int fd, __u64 flags, __u64 *id)
{
	struct vmfork_fork args = { .flags = flags };
	int child;

	child = __vmfork_fork_args(fd, &args);
	if (child >= 0 && id)
		*id = args.id;
	return child;
}

int __vmfork_reset(int fd, unsigned long flags)
{
	return ioctl(fd, VMFORK_RESET, flags);
}

int __vmfork_stats(int fd, struct vmfork_stats *st)
{
	memset(st, 0xa5, sizeof(*st));
	return ioctl(fd, VMFORK_GET_STATS, st);
}

void *__vmfork_mmap(int fd, size_t len, off_t off, int prot)
{
	return mmap(NULL, len, prot, MAP_SHARED, fd, off);
}

int vmfork_read_max_mem_size(__u64 *val)
{
	unsigned long long v;
	FILE *f;
	int n;

	f = fopen(VMFORK_MAX_MEM_PARAM, "r");
	if (!f)
		return -1;
	n = fscanf(f, "%llu", &v);
	fclose(f);
	if (n != 1) {
		errno = EINVAL;
		return -1;
	}
	*val = v;
	return 0;
}

bool vmfork_module_loaded(void)
{
	struct stat st;

	return stat("/sys/module/" VMFORK_MODULE_NAME, &st) == 0;
}

int __vmfork_unload(void)
{
	return syscall(SYS_delete_module, VMFORK_MODULE_NAME, O_NONBLOCK);
}

int __vmfork_load(const char *path)
{
	int fd, ret, err;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ret = syscall(SYS_finit_module, fd, "", 0);
	err = errno;
	close(fd);
	errno = err;
	return ret;
}

static void mount_debugfs_once(void)
{
	struct stat st;

	if (stat("/sys/kernel/debug/vmfork", &st) == 0)
		return;
	/* Harmless if already mounted (EBUSY) or not possible. */
	mount("debugfs", "/sys/kernel/debug", "debugfs", 0, NULL);
}

int vmfork_read_counters(struct vmfork_counters *c)
{
	char key[64];
	long val;
	FILE *f;

	mount_debugfs_once();
	f = fopen(VMFORK_COUNTERS_PATH, "r");
	if (!f) {
		errno = ENOENT;
		return -1;
	}
	c->objects = c->layers = c->pages = -1;
	while (fscanf(f, "%63s %ld", key, &val) == 2) {
		if (!strcmp(key, "objects"))
			c->objects = val;
		else if (!strcmp(key, "layers"))
			c->layers = val;
		else if (!strcmp(key, "pages"))
			c->pages = val;
	}
	fclose(f);
	return 0;
}

int vmfork_wait_counters_idle(struct vmfork_counters *c, int timeout_ms)
{
	__u64 end = now_ms() + timeout_ms;

	for (;;) {
		if (vmfork_read_counters(c))
			return -1;
		if ((c->objects == 0 && c->pages == 0) || now_ms() >= end)
			return 0;
		usleep(20 * 1000);
	}
}

ssize_t __peek64(int fd, __u64 page, unsigned int idx, __u64 *val)
{
	return pread(fd, val, sizeof(*val), page * PG + idx * sizeof(__u64));
}

ssize_t __poke64(int fd, __u64 page, unsigned int idx, __u64 val)
{
	return pwrite(fd, &val, sizeof(val), page * PG + idx * sizeof(__u64));
}

static inline __u64 mix64(__u64 x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ULL;
	x ^= x >> 33;
	return x;
}

#define PATTERN_WORDS	(PG / sizeof(__u64))
#define PATTERN_HDR	4	/* magic, seq, index, checksum */

void pattern_fill(void *page, __u64 seq, __u64 index)
{
	__u64 *w = page, sum = 0, x = mix64(seq * 0x9e3779b97f4a7c15ULL + index);
	unsigned int i;

	for (i = PATTERN_HDR; i < PATTERN_WORDS; i++) {
		x = mix64(x + i);
		w[i] = x;
		sum += x;
	}
	w[0] = PATTERN_MAGIC;
	w[1] = seq;
	w[2] = index;
	w[3] = sum ^ seq ^ index;
}

int pattern_check(const void *page, __u64 *seq, __u64 *index)
{
	const __u64 *w = page;
	__u64 sum = 0, x;
	unsigned int i;

	if (page_is_zero(page))
		return 1;
	if (w[0] != PATTERN_MAGIC)
		return -1;
	x = mix64(w[1] * 0x9e3779b97f4a7c15ULL + w[2]);
	for (i = PATTERN_HDR; i < PATTERN_WORDS; i++) {
		x = mix64(x + i);
		if (w[i] != x)
			return -1;
		sum += x;
	}
	if (w[3] != (sum ^ w[1] ^ w[2]))
		return -1;
	*seq = w[1];
	*index = w[2];
	return 0;
}

void page_fill(void *page, __u64 tag)
{
	__u64 *w = page;
	unsigned int i;

	for (i = 0; i < PATTERN_WORDS; i++)
		w[i] = tag ^ ((__u64)i << 48);
}

bool page_is(const void *page, __u64 tag)
{
	const __u64 *w = page;
	unsigned int i;

	for (i = 0; i < PATTERN_WORDS; i++)
		if (w[i] != (tag ^ ((__u64)i << 48)))
			return false;
	return true;
}

bool page_is_zero(const void *page)
{
	const __u64 *w = page;
	unsigned int i;

	for (i = 0; i < PATTERN_WORDS; i++)
		if (w[i])
			return false;
	return true;
}

__u64 now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (__u64)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int write_str(const char *path, const char *val)
{
	int fd = open(path, O_WRONLY);
	ssize_t n;

	if (fd < 0)
		return -1;
	n = write(fd, val, strlen(val));
	close(fd);
	return n == (ssize_t)strlen(val) ? 0 : -1;
}

int pagemap_entries(const void *addr, __u64 n, __u64 *ent)
{
	int fd = open("/proc/self/pagemap", O_RDONLY);
	off_t off = (unsigned long)addr / PG * 8;
	ssize_t len = n * 8;

	if (fd < 0)
		return -1;
	if (pread(fd, ent, len, off) != len) {
		close(fd);
		return -1;
	}
	close(fd);
	return 0;
}

int send_fd(int sock, int fd, int flags)
{
	char c = 0, cbuf[CMSG_SPACE(sizeof(int))] = { 0 };
	struct iovec iov = { .iov_base = &c, .iov_len = 1 };
	struct msghdr msg = {
		.msg_iov = &iov, .msg_iovlen = 1,
		.msg_control = cbuf, .msg_controllen = sizeof(cbuf),
	};
	struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);

	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &fd, sizeof(int));
	return sendmsg(sock, &msg, flags) == 1 ? 0 : -1;
}

int recv_fd(int sock, int flags)
{
	char c, cbuf[CMSG_SPACE(sizeof(int))];
	struct iovec iov = { .iov_base = &c, .iov_len = 1 };
	struct msghdr msg = {
		.msg_iov = &iov, .msg_iovlen = 1,
		.msg_control = cbuf, .msg_controllen = sizeof(cbuf),
	};
	struct cmsghdr *cm;
	ssize_t n = recvmsg(sock, &msg, flags | MSG_CMSG_CLOEXEC);
	int fd;

	if (n < 0)
		return -1;
	cm = CMSG_FIRSTHDR(&msg);
	if (n != 1 || !cm || cm->cmsg_type != SCM_RIGHTS) {
		errno = ENODATA;
		return -1;
	}
	memcpy(&fd, CMSG_DATA(cm), sizeof(int));
	return fd;
}
