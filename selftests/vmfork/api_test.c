// SPDX-License-Identifier: GPL-2.0
/*
 * The vmfork interface contract: every ioctl on every kind of fd, argument
 * checking with the documented errno, and the object's file operations
 * (mmap, pread/pwrite, lseek).
 */
#include <limits.h>
#include <stdio.h>

#include "vmfork_test.h"

#define OBJ_PAGES	4

/* Never mapped: the kernel must answer EFAULT. */
static void *volatile bad_ptr = (void *)8;

FIXTURE(api) {
	int dev;
	int obj;
	__u64 id;
};

FIXTURE_SETUP(api)
{
	self->obj = -1;
	VMFORK_OPEN_OR_SKIP(self->dev);
	self->obj = vmfork_create(_metadata, self->dev, PAGES(OBJ_PAGES),
				  &self->id);
}

FIXTURE_TEARDOWN(api)
{
	if (self->obj >= 0)
		close(self->obj);
	if (self->dev >= 0)
		close(self->dev);
}

/* Expects ret == -1 with errno @err. */
#define EXPECT_ERRNO(err, ret, what)					\
	do {								\
		long __r = (long)(ret);					\
		int __e = errno;					\
		EXPECT_EQ(-1L, __r) {					\
			TH_LOG("%s must fail", what);			\
		}							\
		if (__r == -1) {					\
			EXPECT_EQ(err, __e) {				\
				TH_LOG("%s must fail with %s, not %s", what, \
				       strerror(err), strerror(__e));	\
			}						\
		}							\
	} while (0)

TEST_F(api, api_version)
{
	EXPECT_EQ(VMFORK_API_VERSION, __vmfork_api_version(self->dev)) {
		TH_LOG("/dev/vmfork must report the header's API version");
	}
	EXPECT_EQ(VMFORK_API_VERSION, __vmfork_api_version(self->obj)) {
		TH_LOG("an object fd must report the header's API version");
	}
}

TEST_F(api, dev_ioctls)
{
	struct vmfork_stats st;
	struct vmfork_fork f;

	memset(&f, 0, sizeof(f));
	EXPECT_ERRNO(EINVAL, ioctl(self->dev, VMFORK_VM_FORK, &f),
		     "VMFORK_VM_FORK on /dev/vmfork");
	EXPECT_ERRNO(EINVAL, ioctl(self->dev, VMFORK_RESET, 0),
		     "VMFORK_RESET on /dev/vmfork");
	EXPECT_ERRNO(EINVAL, ioctl(self->dev, VMFORK_GET_STATS, &st),
		     "VMFORK_GET_STATS on /dev/vmfork");
	EXPECT_ERRNO(ENOTTY, ioctl(self->dev, _IO(VMFORK_IO, 0x7f)),
		     "an unknown vmfork ioctl number on /dev/vmfork");
	EXPECT_ERRNO(ENOTTY, ioctl(self->dev, _IOR('X', 0x01, int), &st),
		     "a foreign ioctl on /dev/vmfork");
	EXPECT_ERRNO(EFAULT, ioctl(self->dev, VMFORK_CREATE_MEM, bad_ptr),
		     "VMFORK_CREATE_MEM with a bad pointer");
}

TEST_F(api, create_mem_args)
{
	struct vmfork_create_mem args;
	__u64 max = 0;
	unsigned int i;
	int fd;

	ASSERT_EQ(0, vmfork_read_max_mem_size(&max)) {
		TH_LOG("the module must expose " VMFORK_MAX_MEM_PARAM ": %s",
		       strerror(errno));
	}
	ASSERT_EQ(0ULL, max % PG) {
		TH_LOG("max_mem_size must be page aligned (it is %llu)",
		       (unsigned long long)max);
	}

	EXPECT_ERRNO(EINVAL, __vmfork_create(self->dev, 0, NULL),
		     "creating a 0-byte object");
	EXPECT_ERRNO(EINVAL, __vmfork_create(self->dev, 1, NULL),
		     "creating a 1-byte object");
	EXPECT_ERRNO(EINVAL, __vmfork_create(self->dev, PG - 1, NULL),
		     "creating an object of 4095 bytes");
	EXPECT_ERRNO(EINVAL, __vmfork_create(self->dev, PG + 1, NULL),
		     "creating an object of 4097 bytes");
	EXPECT_ERRNO(EINVAL, __vmfork_create(self->dev, max + PG, NULL),
		     "creating an object one page over max_mem_size");
	EXPECT_ERRNO(EINVAL, __vmfork_create(self->dev, ~0ULL & ~(PG - 1), NULL),
		     "creating an object of 2^64 - 4096 bytes");

	/* Exactly max_mem_size is allowed: nothing is allocated up front. */
	fd = __vmfork_create(self->dev, max, NULL);
	EXPECT_LE(0, fd) {
		TH_LOG("an object of exactly max_mem_size (%llu) must be allowed: %s",
		       (unsigned long long)max, strerror(errno));
	}
	if (fd >= 0)
		close(fd);

	memset(&args, 0, sizeof(args));
	args.size = PG;
	args.flags = 1;
	EXPECT_ERRNO(EINVAL, __vmfork_create_args(self->dev, &args),
		     "VMFORK_CREATE_MEM with flags 1");
	args.flags = 1ULL << 63;
	EXPECT_ERRNO(EINVAL, __vmfork_create_args(self->dev, &args),
		     "VMFORK_CREATE_MEM with flags bit 63");
	for (i = 0; i < ARRAY_SIZE(args.reserved); i++) {
		char what[80];

		memset(&args, 0, sizeof(args));
		args.size = PG;
		args.reserved[i] = 1;
		snprintf(what, sizeof(what),
			 "VMFORK_CREATE_MEM with reserved[%u] nonzero", i);
		EXPECT_ERRNO(EINVAL, __vmfork_create_args(self->dev, &args), what);
	}

	/* A nonzero input id is just overwritten (it is an out field). */
	memset(&args, 0, sizeof(args));
	args.size = PG;
	args.id = 12345;
	fd = __vmfork_create_args(self->dev, &args);
	EXPECT_LE(0, fd) {
		TH_LOG("the out field id must not be checked on input: %s",
		       strerror(errno));
	}
	if (fd >= 0)
		close(fd);
}

TEST_F(api, create_mem_result)
{
	__u64 ids[8];
	struct vmfork_stats st;
	int fds[8], flags, mode;
	unsigned int i, j;

	for (i = 0; i < ARRAY_SIZE(fds); i++) {
		fds[i] = vmfork_create(_metadata, self->dev, PAGES(i + 1), &ids[i]);
		flags = fcntl(fds[i], F_GETFD);
		EXPECT_TRUE(flags >= 0 && (flags & FD_CLOEXEC)) {
			TH_LOG("a new object fd must be O_CLOEXEC");
		}
		mode = fcntl(fds[i], F_GETFL);
		EXPECT_EQ(O_RDWR, mode & O_ACCMODE) {
			TH_LOG("a new object fd must be O_RDWR");
		}
		ASSERT_NE(self->id, ids[i]) {
			TH_LOG("object ids must be unique");
		}
		for (j = 0; j < i; j++) {
			ASSERT_NE(ids[j], ids[i]) {
				TH_LOG("object ids must be unique (%u and %u share %llu)",
				       j, i, (unsigned long long)ids[i]);
			}
		}
		vmfork_stats(_metadata, fds[i], &st);
		EXPECT_STAT(&st, id, ids[i], "new object");
		EXPECT_STAT(&st, parent_id, 0, "new object");
		EXPECT_STAT(&st, depth, 0, "new object");
		EXPECT_STAT(&st, size, PAGES(i + 1), "new object");
		EXPECT_STAT(&st, resident_pages, 0, "new object");
		EXPECT_STAT(&st, shared_pages, 0, "new object");
		EXPECT_STAT(&st, private_pages, 0, "new object");
		EXPECT_STAT(&st, cow_breaks, 0, "new object");
		EXPECT_STAT(&st, forks, 0, "new object");
		EXPECT_STAT(&st, resets, 0, "new object");
		EXPECT_STAT(&st, flags, 0, "new object");
		for (j = 0; j < ARRAY_SIZE(st.reserved); j++) {
			EXPECT_STAT(&st, reserved[j], 0,
				    "stats must not leak kernel memory");
		}
	}
	for (i = 0; i < ARRAY_SIZE(fds); i++)
		close(fds[i]);
}

TEST_F(api, object_ioctls)
{
	struct vmfork_create_mem cm;
	struct vmfork_fork f;
	unsigned int i;
	__u64 cid = 0;
	int child, flags;

	memset(&cm, 0, sizeof(cm));
	cm.size = PG;
	EXPECT_ERRNO(EINVAL, __vmfork_create_args(self->obj, &cm),
		     "VMFORK_CREATE_MEM on an object fd");
	EXPECT_ERRNO(ENOTTY, ioctl(self->obj, _IO(VMFORK_IO, 0x7f)),
		     "an unknown vmfork ioctl number on an object");
	EXPECT_ERRNO(ENOTTY, ioctl(self->obj, _IOR('X', 0x01, int), &flags),
		     "a foreign ioctl on an object");

	memset(&f, 0, sizeof(f));
	f.flags = 1ULL << 1;
	EXPECT_ERRNO(EINVAL, __vmfork_fork_args(self->obj, &f),
		     "VMFORK_VM_FORK with an unknown flag");
	f.flags = ~VMFORK_FORK_FLAGS;
	EXPECT_ERRNO(EINVAL, __vmfork_fork_args(self->obj, &f),
		     "VMFORK_VM_FORK with every unknown flag");
	for (i = 0; i < ARRAY_SIZE(f.reserved); i++) {
		char what[80];

		memset(&f, 0, sizeof(f));
		f.reserved[i] = 1;
		snprintf(what, sizeof(what),
			 "VMFORK_VM_FORK with reserved[%u] nonzero", i);
		EXPECT_ERRNO(EINVAL, __vmfork_fork_args(self->obj, &f), what);
	}
	EXPECT_ERRNO(EFAULT, ioctl(self->obj, VMFORK_VM_FORK, bad_ptr),
		     "VMFORK_VM_FORK with a bad pointer");
	EXPECT_ERRNO(EFAULT, ioctl(self->obj, VMFORK_GET_STATS, bad_ptr),
		     "VMFORK_GET_STATS with a bad pointer");
	EXPECT_ERRNO(EINVAL, __vmfork_reset(self->obj, 0),
		     "VMFORK_RESET of an object that is no fork child");

	/* None of the rejected forks may have counted or made a template. */
	{
		struct vmfork_stats st;

		vmfork_stats(_metadata, self->obj, &st);
		EXPECT_STAT(&st, forks, 0, "after rejected forks");
		EXPECT_STAT(&st, flags, 0, "after rejected forks");
	}

	child = vmfork_fork(_metadata, self->obj, 0, &cid);
	flags = fcntl(child, F_GETFD);
	EXPECT_TRUE(flags >= 0 && (flags & FD_CLOEXEC)) {
		TH_LOG("a fork child fd must be O_CLOEXEC");
	}
	EXPECT_EQ(O_RDWR, fcntl(child, F_GETFL) & O_ACCMODE) {
		TH_LOG("a fork child fd must be O_RDWR");
	}
	EXPECT_NE(self->id, cid) {
		TH_LOG("a child's id must differ from its parent's");
	}
	EXPECT_EQ(VMFORK_API_VERSION, __vmfork_api_version(child)) {
		TH_LOG("a child fd must report the API version");
	}
	EXPECT_ERRNO(EINVAL, __vmfork_reset(child, 1),
		     "VMFORK_RESET with flags 1");
	EXPECT_ERRNO(EINVAL, __vmfork_reset(child, ~0UL),
		     "VMFORK_RESET with every flag");
	EXPECT_EQ(0, __vmfork_reset(child, 0)) {
		TH_LOG("VMFORK_RESET(0) of a fork child must work: %s",
		       strerror(errno));
	}
	close(child);
}

TEST_F(api, mmap_rules)
{
	size_t size = PAGES(OBJ_PAGES);
	volatile __u64 *p;
	void *q, *r;

	q = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, self->obj, 0);
	EXPECT_EQ(MAP_FAILED, q) {
		TH_LOG("mmap(MAP_PRIVATE) of an object must fail");
	}
	if (q == MAP_FAILED) {
		EXPECT_EQ(EINVAL, errno) {
				TH_LOG("mmap(MAP_PRIVATE) must fail with EINVAL, not %s",
				       strerror(errno));
		}
	}

	q = __vmfork_mmap(self->obj, size + PG, 0, PROT_READ);
	EXPECT_EQ(MAP_FAILED, q) {
		TH_LOG("a mapping one page longer than the object must fail");
	}
	if (q == MAP_FAILED) {
		EXPECT_EQ(EINVAL, errno) {
				TH_LOG("mmap past the end must fail with EINVAL, not %s",
				       strerror(errno));
		}
	}

	q = __vmfork_mmap(self->obj, 2 * PG, size - PG, PROT_READ);
	EXPECT_EQ(MAP_FAILED, q) {
		TH_LOG("a mapping starting inside but crossing the end must fail");
	}
	if (q == MAP_FAILED) {
		EXPECT_EQ(EINVAL, errno) {
				TH_LOG("mmap crossing the end must fail with EINVAL, not %s",
				       strerror(errno));
		}
	}

	q = __vmfork_mmap(self->obj, PG, size, PROT_READ);
	EXPECT_EQ(MAP_FAILED, q) {
		TH_LOG("a mapping starting at the end must fail");
	}

	/* The last page alone is fine, and sees pwrite data. */
	poke64(_metadata, self->obj, OBJ_PAGES - 1, 5, 0xfeedULL);
	q = vmfork_mmap(_metadata, self->obj, PG, size - PG, PROT_READ | PROT_WRITE);
	p = q;
	EXPECT_EQ(0xfeedULL, p[5]) {
		TH_LOG("a mapping at an offset must show that offset's data");
	}
	p[6] = 0xbeefULL;
	EXPECT_EQ(0xbeefULL, peek64(_metadata, self->obj, OBJ_PAGES - 1, 6)) {
		TH_LOG("a store through an offset mapping must reach that offset");
	}

	/* Growing the mapping past the object must fail. */
	r = mremap(q, PG, 2 * PG, MREMAP_MAYMOVE);
	EXPECT_EQ(MAP_FAILED, r) {
		TH_LOG("growing a mapping past the end of the object must fail");
	}
	if (r != MAP_FAILED)
		q = r;
	munmap(q, r != MAP_FAILED ? 2 * PG : PG);

	/* A full mapping works and reads zeros, then data. */
	q = vmfork_mmap(_metadata, self->obj, size, 0, PROT_READ | PROT_WRITE);
	p = q;
	EXPECT_TRUE(page_is_zero(q)) {
		TH_LOG("a never-written page must read as zero through mmap");
	}
	p[0] = 1;
	EXPECT_EQ(1ULL, peek64(_metadata, self->obj, 0, 0)) {
		TH_LOG("a store through mmap must be visible to pread");
	}
	munmap(q, size);
}

TEST_F(api, read_write)
{
	size_t size = PAGES(OBJ_PAGES);
	unsigned char buf[PAGES(OBJ_PAGES)], chk[PAGES(OBJ_PAGES)];
	unsigned int i;
	ssize_t n;

	memset(buf, 0xff, sizeof(buf));
	n = pread(self->obj, buf, size, 0);
	EXPECT_EQ((ssize_t)size, n) {
		TH_LOG("pread of the whole object must return its size");
	}
	for (i = 0; i < size; i++) {
		ASSERT_EQ(0, buf[i]) {
			TH_LOG("never-written bytes must read as zero (byte %u)", i);
		}
	}

	/* Unaligned, page-crossing writes and reads. */
	for (i = 0; i < sizeof(buf); i++)
		buf[i] = (unsigned char)(i * 7 + 3);
	n = pwrite(self->obj, buf, 2 * PG + 100, PG - 50);
	EXPECT_EQ((ssize_t)(2 * PG + 100), n) {
		TH_LOG("a page-crossing pwrite must write everything: %s",
		       strerror(errno));
	}
	n = pread(self->obj, chk, 2 * PG + 100, PG - 50);
	EXPECT_EQ((ssize_t)(2 * PG + 100), n);
	EXPECT_EQ(0, memcmp(buf, chk, 2 * PG + 100)) {
		TH_LOG("a page-crossing pread must return what was written");
	}
	n = pread(self->obj, chk, 1, PG - 51);
	EXPECT_EQ(1, n);
	EXPECT_EQ(0, chk[0]) {
		TH_LOG("the byte before a pwrite must stay zero");
	}
	n = pread(self->obj, chk, 3, 7);
	EXPECT_EQ(3, n) {
		TH_LOG("a small pread must work");
	}

	/* End of object. */
	n = pread(self->obj, chk, 16, size);
	EXPECT_EQ(0, n) {
		TH_LOG("pread at the end must return 0");
	}
	n = pread(self->obj, chk, 16, size + 12345);
	EXPECT_EQ(0, n) {
		TH_LOG("pread after the end must return 0");
	}
	n = pread(self->obj, chk, 100, size - 10);
	EXPECT_EQ(10, n) {
		TH_LOG("pread crossing the end must return the bytes inside");
	}
	n = pwrite(self->obj, buf, 16, size);
	EXPECT_EQ(-1, n) {
		TH_LOG("pwrite at the end must fail");
	}
	if (n == -1) {
		EXPECT_EQ(ENOSPC, errno) {
				TH_LOG("pwrite at the end must fail with ENOSPC, not %s",
				       strerror(errno));
		}
	}
	n = pwrite(self->obj, buf, 16, size + PG);
	EXPECT_EQ(-1, n) {
		TH_LOG("pwrite after the end must fail");
	}
	if (n == -1) {
		EXPECT_EQ(ENOSPC, errno) {
				TH_LOG("pwrite after the end must fail with ENOSPC, not %s",
				       strerror(errno));
		}
	}
	n = pwrite(self->obj, buf, 100, size - 10);
	EXPECT_EQ(10, n) {
		TH_LOG("pwrite crossing the end must write the 10 bytes inside");
	}
	n = pread(self->obj, chk, 10, size - 10);
	EXPECT_EQ(10, n);
	EXPECT_EQ(0, memcmp(buf, chk, 10)) {
		TH_LOG("the part of a crossing pwrite inside must be stored");
	}
	EXPECT_ERRNO(EFAULT, pread(self->obj, bad_ptr, 16, 0),
		     "pread into a bad buffer");
	EXPECT_ERRNO(EFAULT, pwrite(self->obj, bad_ptr, 16, 0),
		     "pwrite from a bad buffer");
}

TEST_F(api, lseek_read_write)
{
	size_t size = PAGES(OBJ_PAGES);
	__u64 v = 0x1122334455667788ULL, w = 0;

	EXPECT_EQ((off_t)size, lseek(self->obj, 0, SEEK_END)) {
		TH_LOG("SEEK_END must be the object's size");
	}
	EXPECT_EQ((off_t)PG, lseek(self->obj, PG, SEEK_SET)) {
		TH_LOG("SEEK_SET must work");
	}
	EXPECT_EQ((ssize_t)sizeof(v), write(self->obj, &v, sizeof(v)));
	EXPECT_EQ((off_t)(PG + 8), lseek(self->obj, 0, SEEK_CUR)) {
		TH_LOG("write() must advance the file position");
	}
	EXPECT_EQ((off_t)PG, lseek(self->obj, -8, SEEK_CUR));
	EXPECT_EQ((ssize_t)sizeof(w), read(self->obj, &w, sizeof(w)));
	EXPECT_EQ(v, w) {
		TH_LOG("read() at the written position must return the data");
	}
	EXPECT_EQ((off_t)size, lseek(self->obj, 0, SEEK_END));
	EXPECT_EQ(0, read(self->obj, &w, sizeof(w))) {
		TH_LOG("read() at the end must return 0");
	}
}

TEST_F(api, fork_of_closed_object)
{
	__u64 cid;
	int fd, child;

	/* A closed object fd is just a bad fd. */
	fd = dup(self->obj);
	ASSERT_LE(0, fd);
	close(fd);
	child = __vmfork_fork(fd, 0, &cid);
	EXPECT_EQ(-1, child) {
		TH_LOG("fork of a closed object must fail");
	}
	EXPECT_EQ(EBADF, errno);
	/* A non-vmfork fd is not an object. */
	fd = open("/dev/null", O_RDWR);
	ASSERT_LE(0, fd);
	child = __vmfork_fork(fd, 0, &cid);
	EXPECT_EQ(-1, child) {
		TH_LOG("VMFORK_VM_FORK on /dev/null must fail");
	}
	close(fd);
}

VMFORK_LEAK_CHECK_TEST()

TEST_HARNESS_MAIN
