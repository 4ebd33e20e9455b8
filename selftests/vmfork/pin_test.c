// SPDX-License-Identifier: GPL-2.0
/*
 * Pages under I/O across a fork. An O_DIRECT read from an NBD device whose
 * server is this test lands in guest memory only when the test lets the
 * server answer: the pages are pinned by the block layer all along. A fork
 * taken in between must give the child the pages as they were at the fork,
 * and the parent the whole read, even where the parent stores to those pages
 * before the data arrives (a copy-on-write break in the parent would send the
 * rest of the read into the child's copy). A template fork must keep the
 * template as it was. io_uring fixed buffers (a long-term pin) are refused.
 */
#include <linux/io_uring.h>
#include <linux/nbd.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>

#include "vmfork_test.h"

#define OBJ_PAGES	32
#define IO_PAGES	16		/* the read in flight: 64 KiB */
#define IO_FIRST	8		/* ... into object pages 8..23 */
#define DISK_SIZE	(1 << 20)
#define IO_OFFSET	(512 << 10)	/* ... from this disk offset */
#define TAG_BEFORE	0xb0b0ULL	/* the object's pages before the read */
#define TAG_DISK	0xd15cULL	/* what the disk holds at IO_OFFSET */
#define TAG_PARENT	0x9a9aULL	/* a parent store while the read is in flight */

/* The NBD wire format (linux/nbd.h names the second field differently across versions). */
struct nbd_req {
	__be32 magic;
	__be32 type;
	__u8 handle[8];
	__be64 from;
	__be32 len;
} __attribute__((packed));

struct nbd_rep {
	__be32 magic;
	__be32 error;
	__u8 handle[8];
} __attribute__((packed));

/*
 * A one-connection NBD server on a socketpair: it answers every request at
 * once, except reads that touch [IO_OFFSET, IO_OFFSET + IO_PAGES pages),
 * which it holds until release() once all their bytes have been asked for.
 */
struct server {
	int sock;		/* our end */
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	size_t held_bytes;	/* requested in the held range */
	bool go;		/* release the held replies */
	struct nbd_req held[IO_PAGES];
	unsigned int nr_held;
	int error;		/* errno of a failed socket operation */
};

static __u8 disk[DISK_SIZE];

static int full_io(int fd, void *buf, size_t len, bool rd)
{
	size_t done = 0;
	ssize_t n;

	while (done < len) {
		n = rd ? read(fd, (char *)buf + done, len - done) :
			 write(fd, (char *)buf + done, len - done);
		if (n <= 0)
			return n ? -errno : -EPIPE;
		done += n;
	}
	return 0;
}

static int reply(struct server *s, const struct nbd_req *rq)
{
	__u32 type = be32toh(rq->type) & 0xffff, len = be32toh(rq->len);
	__u64 from = be64toh(rq->from);
	struct nbd_rep rp = { .magic = htobe32(NBD_REPLY_MAGIC) };
	int err;

	memcpy(rp.handle, rq->handle, sizeof(rp.handle));
	if (from > DISK_SIZE || len > DISK_SIZE - from)
		rp.error = htobe32(EINVAL);
	err = full_io(s->sock, &rp, sizeof(rp), false);
	if (!err && type == NBD_CMD_READ && !rp.error)
		err = full_io(s->sock, disk + from, len, false);
	return err;
}

static void *serve(void *arg)
{
	struct server *s = arg;
	struct nbd_req rq;
	__u32 type, len;
	__u64 from;
	int err = 0;

	while (!err) {
		err = full_io(s->sock, &rq, sizeof(rq), true);
		if (err)
			break;
		type = be32toh(rq.type) & 0xffff;
		from = be64toh(rq.from);
		len = be32toh(rq.len);
		if (be32toh(rq.magic) != NBD_REQUEST_MAGIC) {
			err = -EPROTO;
			break;
		}
		if (type == NBD_CMD_DISC)
			break;
		if (type == NBD_CMD_WRITE) {
			/* Nothing writes here; take the payload and drop it. */
			static __u8 sink[DISK_SIZE];

			err = len <= DISK_SIZE ? full_io(s->sock, sink, len, true) : -EPROTO;
			if (!err)
				err = reply(s, &rq);
			continue;
		}
		pthread_mutex_lock(&s->lock);
		if (type == NBD_CMD_READ && !s->go &&
		    from < IO_OFFSET + IO_PAGES * PG && from + len > IO_OFFSET &&
		    s->nr_held < IO_PAGES) {
			s->held[s->nr_held++] = rq;
			s->held_bytes += len;
			pthread_cond_broadcast(&s->cond);
			pthread_mutex_unlock(&s->lock);
			continue;
		}
		pthread_mutex_unlock(&s->lock);
		err = reply(s, &rq);
	}
	pthread_mutex_lock(&s->lock);
	s->error = err;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

/* Waits until the whole held range was requested; false after @ms or a server error. */
static bool wait_held(struct server *s, int ms)
{
	__u64 end = now_ms() + ms;
	bool ok;

	pthread_mutex_lock(&s->lock);
	while (s->held_bytes < IO_PAGES * PG && !s->error && now_ms() < end) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 20 * 1000 * 1000;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&s->cond, &s->lock, &ts);
	}
	ok = s->held_bytes >= IO_PAGES * PG;
	pthread_mutex_unlock(&s->lock);
	return ok;
}

static int release(struct server *s)
{
	unsigned int i;
	int err = 0;

	pthread_mutex_lock(&s->lock);
	s->go = true;
	for (i = 0; i < s->nr_held && !err; i++)
		err = reply(s, &s->held[i]);
	pthread_mutex_unlock(&s->lock);
	return err;
}

struct reader {
	pthread_t thread;
	int fd;
	void *buf;
	ssize_t ret;
	int err;
	volatile bool done;
};

static void *do_read(void *arg)
{
	struct reader *r = arg;

	r->ret = pread(r->fd, r->buf, IO_PAGES * PG, IO_OFFSET);
	r->err = errno;
	r->done = true;
	return NULL;
}

static void *do_it(void *arg)
{
	ioctl(*(int *)arg, NBD_DO_IT);
	return NULL;
}

FIXTURE(pin) {
	int dev, obj, nbd, kernel_sock;
	char nbd_path[32];
	__u8 *map;
	struct server srv;
	pthread_t do_it;
	bool running;
};

/* A free /dev/nbdN (loading the driver if needed), or -1. */
static int open_free_nbd(char *path, size_t size)
{
	char pid_path[64];
	int i, fd;

	if (access("/dev/nbd0", F_OK))
		if (system("modprobe nbd nbds_max=4 >/dev/null 2>&1")) {
			/* built in, or not there at all: checked below */
		}
	for (i = 0; i < 4; i++) {
		snprintf(path, size, "/dev/nbd%d", i);
		snprintf(pid_path, sizeof(pid_path), "/sys/block/nbd%d/pid", i);
		if (!access(pid_path, F_OK))
			continue;	/* in use */
		fd = open(path, O_RDWR);
		if (fd >= 0)
			return fd;
	}
	return -1;
}

/* Whether /sys/block/<nbd>/size shows the disk, polled for up to @ms. */
static bool nbd_started(const char *dev_path, int ms)
{
	__u64 end = now_ms() + ms;
	char path[64];
	long sectors;
	FILE *f;

	snprintf(path, sizeof(path), "/sys/block/%s/size", strrchr(dev_path, '/') + 1);
	do {
		sectors = 0;
		f = fopen(path, "r");
		if (f) {
			if (fscanf(f, "%ld", &sectors) != 1)
				sectors = 0;
			fclose(f);
		}
		if (sectors * 512 == DISK_SIZE)
			return true;
		usleep(10 * 1000);
	} while (now_ms() < end);
	return false;
}

FIXTURE_SETUP(pin)
{
	int sv[2];
	__u64 i;

	self->obj = self->nbd = self->kernel_sock = self->srv.sock = -1;
	VMFORK_OPEN_OR_SKIP(self->dev);
	self->nbd = open_free_nbd(self->nbd_path, sizeof(self->nbd_path));
	if (self->nbd < 0)
		SETUP_SKIP("no NBD device (CONFIG_BLK_DEV_NBD): the test's I/O source");
	for (i = 0; i < DISK_SIZE / PG; i++)
		page_fill(disk + i * PG, i * PG >= IO_OFFSET ? TAG_DISK + i : i);

	ASSERT_EQ(0, socketpair(AF_UNIX, SOCK_STREAM, 0, sv));
	self->kernel_sock = sv[0];
	self->srv.sock = sv[1];
	pthread_mutex_init(&self->srv.lock, NULL);
	pthread_cond_init(&self->srv.cond, NULL);
	ASSERT_EQ(0, pthread_create(&self->srv.thread, NULL, serve, &self->srv));
	ASSERT_EQ(0, ioctl(self->nbd, NBD_SET_BLKSIZE, 4096UL)) {
		TH_LOG("NBD_SET_BLKSIZE: %s", strerror(errno));
	}
	ASSERT_EQ(0, ioctl(self->nbd, NBD_SET_SIZE_BLOCKS, DISK_SIZE / 4096UL));
	ASSERT_EQ(0, ioctl(self->nbd, NBD_SET_SOCK, (unsigned long)self->kernel_sock)) {
		TH_LOG("NBD_SET_SOCK on %s: %s", self->nbd_path, strerror(errno));
	}
	ASSERT_EQ(0, pthread_create(&self->do_it, NULL, do_it, &self->nbd));
	self->running = true;
	/* The size applies once NBD_DO_IT has started the device: until then reads see EOF. */
	ASSERT_TRUE(nbd_started(self->nbd_path, 10000)) {
		TH_LOG("%s must come up with its %d bytes within 10 s", self->nbd_path, DISK_SIZE);
	}

	self->obj = vmfork_create(_metadata, self->dev, PAGES(OBJ_PAGES), NULL);
	self->map = vmfork_mmap(_metadata, self->obj, PAGES(OBJ_PAGES), 0,
				PROT_READ | PROT_WRITE);
	/* The read's target pages hold data already: the parent's private pages. */
	for (i = 0; i < OBJ_PAGES; i++)
		page_fill(self->map + i * PG, TAG_BEFORE + i);
}

FIXTURE_TEARDOWN(pin)
{
	if (self->running) {
		/* The server leaves on NBD_CMD_DISC; its end's shutdown ends NBD_DO_IT. */
		ioctl(self->nbd, NBD_DISCONNECT);
		pthread_join(self->srv.thread, NULL);
		shutdown(self->srv.sock, SHUT_RDWR);
		pthread_join(self->do_it, NULL);
		ioctl(self->nbd, NBD_CLEAR_SOCK);
	}
	if (self->map)
		munmap(self->map, PAGES(OBJ_PAGES));
	if (self->obj >= 0)
		close(self->obj);
	if (self->nbd >= 0)
		close(self->nbd);
	if (self->kernel_sock >= 0)
		close(self->kernel_sock);
	if (self->srv.sock >= 0)
		close(self->srv.sock);
	if (self->dev >= 0)
		close(self->dev);
}

/*
 * Starts an O_DIRECT read of IO_PAGES pages of the disk into the object's
 * pages IO_FIRST.., and returns once the server holds all of it: from then on
 * the pages are pinned and the data not yet there.
 */
static void start_read(META, FIXTURE_DATA(pin) *self, struct reader *r)
{
	r->fd = open(self->nbd_path, O_RDONLY | O_DIRECT);
	ASSERT_LE(0, r->fd) TH_LOG("open %s O_DIRECT: %s", self->nbd_path, strerror(errno));
	r->buf = self->map + IO_FIRST * PG;
	ASSERT_EQ(0, pthread_create(&r->thread, NULL, do_read, r));
	ASSERT_TRUE(wait_held(&self->srv, 20000)) {
		TH_LOG("the O_DIRECT read must reach the NBD server (held %zu bytes, server error %d, read %s: %zd, %s)",
		       self->srv.held_bytes, self->srv.error,
		       r->done ? "done" : "pending", r->ret, strerror(r->err));
	}
}

static void finish_read(META, FIXTURE_DATA(pin) *self, struct reader *r)
{
	ASSERT_EQ(0, release(&self->srv)) TH_LOG("the server must send the held data");
	pthread_join(r->thread, NULL);
	close(r->fd);
	ASSERT_EQ((ssize_t)(IO_PAGES * PG), r->ret) {
		TH_LOG("the O_DIRECT read must complete: %s", strerror(r->err));
	}
}

/* Page @p of the object as @fd sees it through pread, against page_fill(@tag). */
static void expect(META, int fd, __u64 p, __u64 tag, const char *who)
{
	expect_page(_metadata, fd, p, tag, who);
}

static __u64 disk_tag(__u64 p)
{
	return TAG_DISK + (IO_OFFSET / PG) + (p - IO_FIRST);
}

TEST_F_TIMEOUT(pin, read_in_flight_lands_in_the_parent_only, 60)
{
	struct reader r = { 0 };
	int child;
	__u64 p;

	start_read(_metadata, self, &r);
	child = vmfork_fork(_metadata, self->obj, 0, NULL);
	finish_read(_metadata, self, &r);

	for (p = 0; p < OBJ_PAGES; p++) {
		bool io = p >= IO_FIRST && p < IO_FIRST + IO_PAGES;

		expect(_metadata, child, p, TAG_BEFORE + p,
		       "the child: the pages as they were at the fork");
		expect(_metadata, self->obj, p, io ? disk_tag(p) : TAG_BEFORE + p,
		       "the parent: the whole read, after the fork");
		ASSERT_TRUE(page_is(self->map + p * PG, io ? disk_tag(p) : TAG_BEFORE + p)) {
			TH_LOG("the parent's mapping of page %llu disagrees with its pread",
			       (unsigned long long)p);
		}
	}
	close(child);
}

TEST_F_TIMEOUT(pin, parent_stores_during_the_read_lose_no_data, 60)
{
	struct reader r = { 0 };
	int child;
	__u64 p;

	start_read(_metadata, self, &r);
	child = vmfork_fork(_metadata, self->obj, 0, NULL);
	/* Stores to the pages under I/O: no copy-on-write may split them from the read. */
	for (p = IO_FIRST; p < IO_FIRST + IO_PAGES; p++)
		page_fill(self->map + p * PG, TAG_PARENT + p);
	finish_read(_metadata, self, &r);

	for (p = IO_FIRST; p < IO_FIRST + IO_PAGES; p++) {
		expect(_metadata, self->obj, p, disk_tag(p),
		       "the parent: the read, which came after its stores");
		expect(_metadata, child, p, TAG_BEFORE + p,
		       "the child: neither the parent's stores nor the read");
	}
	close(child);
}

TEST_F_TIMEOUT(pin, template_keeps_its_content, 60)
{
	struct reader r = { 0 };
	int child;
	__u64 p;

	start_read(_metadata, self, &r);
	child = vmfork_fork(_metadata, self->obj, VMFORK_FORK_TEMPLATE, NULL);
	finish_read(_metadata, self, &r);

	for (p = 0; p < OBJ_PAGES; p++) {
		expect(_metadata, self->obj, p, TAG_BEFORE + p,
		       "the template: frozen at the fork, the read ends elsewhere");
		expect(_metadata, child, p, TAG_BEFORE + p, "the template's child");
	}
	close(child);
}

/*
 * io_uring fixed buffers pin guest memory for good (FOLL_LONGTERM). Both
 * kernels refuse that on this mapping: 6.1's io_uring takes no file-backed
 * memory but shmem and hugetlbfs (-EOPNOTSUPP), 6.12's GUP no long-term
 * writable pin of a mapping that tracks writes with ->page_mkwrite (-EFAULT).
 */
TEST_F(pin, io_uring_fixed_buffers_are_refused)
{
	struct io_uring_params params = { 0 };
	struct iovec iov = { .iov_base = self->map, .iov_len = IO_PAGES * PG };
	int ring, ret;

	ring = syscall(__NR_io_uring_setup, 4, &params);
	if (ring < 0)
		SKIP(return, "no io_uring here: %s", strerror(errno));
	ret = syscall(__NR_io_uring_register, ring, IORING_REGISTER_BUFFERS, &iov, 1);
	EXPECT_EQ(-1, ret) {
		TH_LOG("registering vmfork memory as an io_uring fixed buffer must be refused");
	}
	EXPECT_TRUE(errno == EOPNOTSUPP || errno == EFAULT) {
		TH_LOG("refused with EOPNOTSUPP (6.1) or EFAULT (6.12), not %s", strerror(errno));
	}
	close(ring);
	/* The memory is as it was. */
	ASSERT_TRUE(page_is(self->map, TAG_BEFORE));
}

VMFORK_LEAK_CHECK_TEST()

TEST_HARNESS_MAIN
