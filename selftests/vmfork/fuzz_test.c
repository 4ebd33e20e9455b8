// SPDX-License-Identifier: GPL-2.0
/*
 * A fuzzer for the module's whole surface, as a test. Several threads (and
 * now and then a forked process) pick random operations on a shared set of
 * objects and mappings: create, fork, reset and stats ioctls with random and
 * boundary arguments, unknown ioctls and bad pointers, mmap, munmap, mremap,
 * mprotect and madvise, loads and stores, pread and pwrite (also from and
 * into the object's own mappings and bad addresses), fallocate, close, fd
 * passing over a socketpair, generic netlink requests including malformed
 * ones, and reads of debugfs. Where the uAPI fixes the answer (a reserved
 * field set, an unknown flag, a bad pointer, MAP_PRIVATE) the result is
 * checked; everything must keep the kernel silent (the VM's console is
 * scanned) and free every object and page at the end.
 *
 *   VMFORK_FUZZ_OPS      operations in all (default 300000; make fuzz runs 2000000)
 *   VMFORK_FUZZ_SEED     the seed (default: from the clock; always printed)
 *   VMFORK_FUZZ_THREADS  threads (default 4)
 *   VMFORK_FUZZ_SECS     stop early after this long (default 120; 0: never),
 *                        so that a slow kernel (KASAN, kmemleak) runs a
 *                        bounded prefix of the same operations
 *
 * Each thread's sequence of operations follows from the seed; how threads
 * interleave does not, so a seed reproduces the operations, not the timing.
 *
 * Mappings live in slots of an arena reserved PROT_NONE at start, and an
 * unmapped slot gets PROT_NONE again: a stray access to a slot another
 * thread just unmapped faults (and is caught) instead of hitting the heap.
 */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <ucontext.h>

#include "vmfork_nl.h"
#include "vmfork_test.h"

#define MAX_OBJS	24
#define SLOTS		32
#define SLOT_PAGES	64
#define SLOT_SIZE	PAGES(SLOT_PAGES)
#define MAX_OBJ_PAGES	SLOT_PAGES
#define MAX_THREADS	16

enum op {
	OP_CREATE, OP_FORK, OP_RESET, OP_STATS, OP_BAD_IOCTL, OP_DEV_IOCTL,
	OP_MMAP, OP_MUNMAP, OP_MREMAP, OP_MPROTECT, OP_MADVISE, OP_TOUCH,
	OP_RW, OP_FALLOCATE, OP_CLOSE, OP_PASS, OP_NETLINK, OP_DEBUGFS,
	OP_PFORK, NR_OPS
};

static const char *const op_names[NR_OPS] = {
	"create", "fork", "reset", "stats", "bad_ioctl", "dev_ioctl", "mmap",
	"munmap", "mremap", "mprotect", "madvise", "touch", "rw", "fallocate",
	"close", "pass_fd", "netlink", "debugfs", "process_fork",
};

/* Relative weights: cheap data-path operations dominate, process fork is rare. */
static const unsigned int op_weight[NR_OPS] = {
	[OP_CREATE] = 6, [OP_FORK] = 8, [OP_RESET] = 4, [OP_STATS] = 6,
	[OP_BAD_IOCTL] = 3, [OP_DEV_IOCTL] = 2, [OP_MMAP] = 8, [OP_MUNMAP] = 4,
	[OP_MREMAP] = 2, [OP_MPROTECT] = 3, [OP_MADVISE] = 5, [OP_TOUCH] = 20,
	[OP_RW] = 12, [OP_FALLOCATE] = 4, [OP_CLOSE] = 6, [OP_PASS] = 2,
	[OP_NETLINK] = 4, [OP_DEBUGFS] = 1, [OP_PFORK] = 0 /* see pick_op() */,
};

struct fuzz {
	pthread_mutex_t mu;		/* protects @objs and @slot_used */
	int dev;
	int objs[MAX_OBJS];
	char *arena;
	bool slot_used[SLOTS];
	_Atomic size_t slot_len[SLOTS];	/* bytes mapped from a used slot's start */
	int sock[2];			/* fd passing, under @mu */
	__u64 ops_per_thread;
	__u64 deadline_ms;		/* 0: none */
	__u64 seed;
	atomic_ulong done[NR_OPS];
	atomic_ulong faults;		/* SIGSEGV/SIGBUS caught in a touch */
	atomic_ulong violations;
};

struct worker {
	struct fuzz *fz;
	int id;
	__u64 rng;
	struct nl *nl;
	bool child_process;
};

/* volatile: the stores around a touch must not be merged away. */
static __thread sigjmp_buf *volatile fault_jmp;

static void on_fault(int sig, siginfo_t *si, void *uc)
{
	char msg[128];
	int n;

	if (fault_jmp)
		siglongjmp(*fault_jmp, sig);
	/* A fault outside a touch is the fuzzer's own bug: say where. */
	n = snprintf(msg, sizeof(msg),
		     "# fuzz: signal %d at address %p, rip %#llx (on_fault%+lld)\n",
		     sig, si->si_addr,
		     (unsigned long long)((ucontext_t *)uc)->uc_mcontext.gregs[REG_RIP],
		     (long long)((ucontext_t *)uc)->uc_mcontext.gregs[REG_RIP] -
		     (long long)(uintptr_t)on_fault);
	if (write(2, msg, n) < 0)
		n = 0;
	signal(sig, SIG_DFL);
	raise(sig);
}

static __u64 rnd(struct worker *w)
{
	/* xorshift64*: small, and the same sequence for the same seed. */
	w->rng ^= w->rng >> 12;
	w->rng ^= w->rng << 25;
	w->rng ^= w->rng >> 27;
	return w->rng * 0x2545f4914f6cdd1dULL;
}

static __u64 below(struct worker *w, __u64 n)
{
	return n ? rnd(w) % n : 0;
}

static bool chance(struct worker *w, unsigned int percent)
{
	return below(w, 100) < percent;
}

#define violation(w, fmt, ...) do {					\
	atomic_fetch_add(&(w)->fz->violations, 1);			\
	fprintf(stderr, "# fuzz violation (thread %d): " fmt "\n",	\
		(w)->id, ##__VA_ARGS__);				\
} while (0)

/* A dup of a random object's fd (stable while the table changes), or -1. */
static int grab(struct worker *w)
{
	struct fuzz *fz = w->fz;
	int i = below(w, MAX_OBJS), fd = -1;

	pthread_mutex_lock(&fz->mu);
	if (fz->objs[i] >= 0)
		fd = fcntl(fz->objs[i], F_DUPFD_CLOEXEC, 0);
	pthread_mutex_unlock(&fz->mu);
	return fd;
}

/* Puts @fd in the table, closing whatever it replaces. */
static void adopt(struct worker *w, int fd)
{
	struct fuzz *fz = w->fz;
	int i = below(w, MAX_OBJS), old;

	pthread_mutex_lock(&fz->mu);
	old = fz->objs[i];
	fz->objs[i] = fd;
	pthread_mutex_unlock(&fz->mu);
	if (old >= 0)
		close(old);
}

static __u64 random_size(struct worker *w)
{
	static const __u64 odd[] = { 0, 1, PG - 1, PG + 1, 1ULL << 63,
				     ~0ULL, ~0ULL - PG + 1, 1ULL << 50 };

	if (chance(w, 10))
		return odd[below(w, ARRAY_SIZE(odd))];
	return PAGES(1 + below(w, MAX_OBJ_PAGES));
}

static void op_create(struct worker *w)
{
	struct vmfork_create_mem a = { .size = random_size(w) };
	bool bad_args = false;
	int fd;

	if (chance(w, 5)) {
		a.flags = 1ULL << below(w, 64);
		bad_args = true;
	}
	if (chance(w, 5)) {
		a.reserved[below(w, 5)] = rnd(w) | 1;
		bad_args = true;
	}
	fd = __vmfork_create_args(w->fz->dev, &a);
	if (fd >= 0) {
		if (bad_args || a.size % PG || !a.size ||
		    a.size > PAGES(1ULL << 40))
			violation(w, "create of size %#llx flags %#llx succeeded",
				  (unsigned long long)a.size,
				  (unsigned long long)a.flags);
		adopt(w, fd);
	} else if (bad_args && errno != EINVAL) {
		violation(w, "create with reserved bits: errno %d, not EINVAL", errno);
	} else if (errno != EINVAL && errno != ENOMEM) {
		violation(w, "create: unexpected errno %d", errno);
	}
}

static void op_fork(struct worker *w)
{
	struct vmfork_fork a = {};
	bool bad_args = false;
	int fd = grab(w), child;

	if (fd < 0)
		return;
	if (chance(w, 15))
		a.flags = VMFORK_FORK_TEMPLATE;
	if (chance(w, 5)) {
		a.flags |= 2ULL << below(w, 63);
		bad_args = true;
	}
	if (chance(w, 5)) {
		a.reserved[below(w, 6)] = rnd(w) | 1;
		bad_args = true;
	}
	child = __vmfork_fork_args(fd, &a);
	if (child >= 0) {
		if (bad_args)
			violation(w, "fork with flags %#llx succeeded",
				  (unsigned long long)a.flags);
		adopt(w, child);
	} else if (bad_args ? errno != EINVAL :
		   errno != ENOMEM && errno != EMFILE) {
		violation(w, "fork: unexpected errno %d", errno);
	}
	close(fd);
}

static void op_reset(struct worker *w)
{
	unsigned long flags = chance(w, 10) ? rnd(w) | 1 : 0;
	int fd = grab(w);

	if (fd < 0)
		return;
	if (__vmfork_reset(fd, flags) && flags && errno != EINVAL)
		violation(w, "reset with flags: errno %d, not EINVAL", errno);
	close(fd);
}

static void op_stats(struct worker *w)
{
	struct vmfork_stats st;
	int fd = grab(w);

	if (fd < 0)
		return;
	if (chance(w, 5)) {
		if (ioctl(fd, VMFORK_GET_STATS, (void *)16) != -1 || errno != EFAULT)
			violation(w, "GET_STATS to a bad pointer: not EFAULT");
	} else if (__vmfork_stats(fd, &st)) {
		violation(w, "GET_STATS: errno %d", errno);
	} else if (st.resident_pages != st.shared_pages + st.private_pages ||
		   st.resident_pages > st.size / PG || !st.id ||
		   st.size % PG || (st.parent_id && !st.depth)) {
		violation(w, "stats of object %llu do not add up",
			  (unsigned long long)st.id);
	}
	close(fd);
}

static void op_bad_ioctl(struct worker *w)
{
	unsigned long cmd = rnd(w) & 0xffffffff;
	int fd = grab(w);

	if (fd < 0)
		return;
	if (chance(w, 50))
		cmd = _IOC(below(w, 4), VMFORK_IO, 5 + below(w, 64),
			   below(w, 128));
	if (chance(w, 30)) {
		struct vmfork_fork a = {};

		if (ioctl(fd, VMFORK_VM_FORK, chance(w, 50) ? NULL : (void *)8) != -1 ||
		    errno != EFAULT)
			violation(w, "VM_FORK from a bad pointer: not EFAULT");
		(void)a;
	} else if (ioctl(fd, cmd, rnd(w)) != -1) {
		violation(w, "unknown ioctl %#lx succeeded", cmd);
	}
	close(fd);
}

static void op_dev_ioctl(struct worker *w)
{
	int fd = w->fz->dev;

	switch (below(w, 3)) {
	case 0:
		if (ioctl(fd, VMFORK_CREATE_MEM, (void *)(rnd(w) & 0xfff)) != -1 ||
		    errno != EFAULT)
			violation(w, "CREATE_MEM from a bad pointer: not EFAULT");
		break;
	case 1:
		if (ioctl(fd, _IO(VMFORK_IO, 0x40 + below(w, 64)), 0) != -1 ||
		    errno != ENOTTY)
			violation(w, "unknown /dev/vmfork ioctl: not ENOTTY");
		break;
	default:
		if (__vmfork_api_version(fd) < 1)
			violation(w, "GET_API_VERSION failed");
	}
}

static char *slot_addr(struct fuzz *fz, int s)
{
	return fz->arena + (size_t)s * SLOT_SIZE;
}

/* Gives slot @s (length @len from its start) back to the arena, PROT_NONE. */
static void slot_clear(struct fuzz *fz, int s, size_t off, size_t len)
{
	if (mmap(slot_addr(fz, s) + off, len, PROT_NONE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE,
		 -1, 0) == MAP_FAILED)
		abort();	/* the arena must stay whole */
}

/* Takes a free slot (-1: none) or, with @used, a used one. */
static int slot_take(struct worker *w, bool used)
{
	struct fuzz *fz = w->fz;
	int s = below(w, SLOTS), i;

	pthread_mutex_lock(&fz->mu);
	for (i = 0; i < SLOTS; i++, s = (s + 1) % SLOTS) {
		if (fz->slot_used[s] == used) {
			fz->slot_used[s] = !used;
			pthread_mutex_unlock(&fz->mu);
			return s;
		}
	}
	pthread_mutex_unlock(&fz->mu);
	return -1;
}

/* Mostly a slot with a mapping (it may go away at any time), else any. */
static int slot_pick(struct worker *w)
{
	struct fuzz *fz = w->fz;
	int s = below(w, SLOTS), i;

	if (chance(w, 10))
		return s;
	pthread_mutex_lock(&fz->mu);
	for (i = 0; i < SLOTS && !fz->slot_used[s]; i++)
		s = (s + 1) % SLOTS;
	pthread_mutex_unlock(&fz->mu);
	return s;
}

static void slot_put(struct fuzz *fz, int s, bool used)
{
	pthread_mutex_lock(&fz->mu);
	fz->slot_used[s] = used;
	pthread_mutex_unlock(&fz->mu);
}

static void op_mmap(struct worker *w)
{
	struct fuzz *fz = w->fz;
	struct vmfork_stats st;
	__u64 off, len;
	int fd, s, prot, flags = MAP_SHARED | MAP_FIXED;
	void *p;

	fd = grab(w);
	if (fd < 0)
		return;
	s = slot_take(w, false);
	if (s < 0 || __vmfork_stats(fd, &st))
		goto out;
	off = below(w, st.size / PG + 1) * PG;
	len = PAGES(1 + below(w, SLOT_PAGES));
	/* Mostly read|write; else none, read or write only. */
	prot = chance(w, 70) ? PROT_READ | PROT_WRITE : (int)below(w, 3);
	if (chance(w, 5))
		flags = MAP_PRIVATE | MAP_FIXED;
	p = mmap(slot_addr(fz, s), len, prot, flags, fd, off);
	if (p == MAP_FAILED) {
		if (flags & MAP_PRIVATE ? errno != EINVAL :
		    off + len <= st.size && errno != EPERM && errno != ENOMEM)
			violation(w, "mmap of %llu bytes at %llu of %llu: errno %d",
				  (unsigned long long)len,
				  (unsigned long long)off,
				  (unsigned long long)st.size, errno);
		slot_clear(fz, s, 0, SLOT_SIZE);	/* MAP_FIXED may have unmapped */
		slot_put(fz, s, false);
	} else {
		if ((flags & MAP_PRIVATE) || off + len > st.size)
			violation(w, "mmap beyond the object or private: succeeded");
		atomic_store(&fz->slot_len[s], len);
		s = -1;		/* stays used */
	}
out:
	if (s >= 0)
		slot_put(fz, s, false);
	close(fd);
}

static void op_munmap(struct worker *w)
{
	int s = slot_take(w, true);

	if (s < 0)
		return;
	if (chance(w, 50)) {
		slot_clear(w->fz, s, 0, SLOT_SIZE);
		slot_put(w->fz, s, false);
	} else {
		/* Part of it: the rest stays mapped. */
		size_t off = PAGES(below(w, SLOT_PAGES));

		slot_clear(w->fz, s, off, SLOT_SIZE - off);
		if (atomic_load(&w->fz->slot_len[s]) > off)
			atomic_store(&w->fz->slot_len[s], off);
		slot_put(w->fz, s, true);
	}
}

static void op_mremap(struct worker *w)
{
	struct fuzz *fz = w->fz;
	int s = slot_take(w, true), t;
	size_t len = PAGES(1 + below(w, SLOT_PAGES));
	void *p;

	if (s < 0)
		return;
	if (chance(w, 50)) {
		/* Shrink (or fail on a slot whose start is unmapped). */
		if (mremap(slot_addr(fz, s), len, PG, 0) != MAP_FAILED) {
			slot_clear(fz, s, PG, SLOT_SIZE - PG);
			atomic_store(&fz->slot_len[s], PG);
		}
		slot_put(fz, s, true);
		return;
	}
	t = slot_take(w, false);
	if (t < 0) {
		slot_put(fz, s, true);
		return;
	}
	p = mremap(slot_addr(fz, s), len, len, MREMAP_MAYMOVE | MREMAP_FIXED,
		   slot_addr(fz, t));
	if (p != MAP_FAILED) {
		slot_clear(fz, s, 0, SLOT_SIZE);
		atomic_store(&fz->slot_len[t], len);
		slot_put(fz, s, false);
		slot_put(fz, t, true);
	} else {
		slot_clear(fz, t, 0, SLOT_SIZE);
		slot_put(fz, t, false);
		slot_put(fz, s, true);
	}
}

/*
 * A random range of @max_pages at most inside the arena (ranges may span
 * slots, never leave the arena: beyond it lie the heap and thread stacks).
 */
static char *arena_range(struct worker *w, unsigned int max_pages, size_t *len)
{
	__u64 first = below(w, SLOTS * SLOT_PAGES);
	__u64 n = 1 + below(w, max_pages);

	if (first + n > SLOTS * SLOT_PAGES)
		n = SLOTS * SLOT_PAGES - first;
	*len = PAGES(n);
	return w->fz->arena + PAGES(first);
}

static void op_mprotect(struct worker *w)
{
	size_t len;
	char *p = arena_range(w, 4, &len);

	mprotect(p, len, (int)below(w, 4));
}

static void op_madvise(struct worker *w)
{
	static const int advice[] = {
		MADV_DONTNEED, MADV_REMOVE, MADV_WILLNEED, MADV_COLD,
		MADV_PAGEOUT, MADV_NORMAL, MADV_RANDOM, MADV_SEQUENTIAL,
		MADV_DONTFORK, MADV_DOFORK, MADV_DONTDUMP,
		22 /* MADV_POPULATE_READ */, 23 /* MADV_POPULATE_WRITE */,
	};
	size_t len;
	char *p = arena_range(w, 8, &len);

	madvise(p, len, advice[below(w, ARRAY_SIZE(advice))]);
}

static void op_touch(struct worker *w)
{
	int s = slot_pick(w);
	size_t len = atomic_load(&w->fz->slot_len[s]);
	/* Mostly inside what was mapped there last (it may be gone by now). */
	__u64 page = chance(w, 90) && len ? below(w, len / PG) :
		     below(w, SLOT_PAGES);
	volatile __u64 *p = (volatile __u64 *)(slot_addr(w->fz, s) + PAGES(page));
	unsigned int n = 1 + below(w, 64), i;
	sigjmp_buf jb;

	if (sigsetjmp(jb, 1)) {
		fault_jmp = NULL;
		atomic_fetch_add(&w->fz->faults, 1);
		return;
	}
	fault_jmp = &jb;
	for (i = 0; i < n; i++) {
		unsigned int word = below(w, PG / 8);

		if (chance(w, 50))
			p[word] = rnd(w);
		else
			(void)p[word];
	}
	fault_jmp = NULL;
}

static void op_rw(struct worker *w)
{
	static __thread char buf[3 * PG];
	size_t len = 1 + below(w, sizeof(buf));
	off_t off = chance(w, 10) ? (off_t)(rnd(w) >> 1) :
		    (off_t)below(w, PAGES(MAX_OBJ_PAGES + 2));
	char *b = buf;
	ssize_t n;
	int fd = grab(w);

	if (fd < 0)
		return;
	if (chance(w, 20))	/* into or from a mapping, maybe of this object */
		b = slot_addr(w->fz, slot_pick(w)) +
		    PAGES(below(w, SLOT_PAGES - 3));
	else if (chance(w, 3))
		b = (char *)8;
	n = chance(w, 50) ? pread(fd, b, len, off) : pwrite(fd, b, len, off);
	if (b == (char *)8 && n > 0)
		violation(w, "I/O through address 8 transferred %zd bytes", n);
	close(fd);
}

static void op_fallocate(struct worker *w)
{
	static const int modes[] = {
		FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0,
		FALLOC_FL_KEEP_SIZE, FALLOC_FL_ZERO_RANGE, FALLOC_FL_PUNCH_HOLE,
	};
	int mode = chance(w, 80) ? modes[0] : modes[below(w, ARRAY_SIZE(modes))];
	off_t off = below(w, PAGES(MAX_OBJ_PAGES + 1));
	off_t len = 1 + below(w, PAGES(16));
	int fd = grab(w);

	if (fd < 0)
		return;
	if (chance(w, 50)) {	/* whole pages, the usual case */
		off &= ~(off_t)(PG - 1);
		len = (len + PG - 1) & ~(off_t)(PG - 1);
	}
	if (fallocate(fd, mode, off, len) == 0 && mode != modes[0])
		violation(w, "fallocate mode %#x succeeded", mode);
	close(fd);
}

static void op_close(struct worker *w)
{
	adopt(w, -1);
}

/* Sends a random object over the socketpair and takes it back as a new fd. */
static void op_pass(struct worker *w)
{
	struct fuzz *fz = w->fz;
	int fd = grab(w), got = -1;

	if (fd < 0)
		return;
	pthread_mutex_lock(&fz->mu);
	if (!send_fd(fz->sock[0], fd, 0))
		got = recv_fd(fz->sock[1], 0);
	pthread_mutex_unlock(&fz->mu);
	close(fd);
	if (got < 0) {
		violation(w, "fd passing failed");
		return;
	}
	if (__vmfork_api_version(got) < 1)
		violation(w, "a passed object does not answer");
	adopt(w, got);
}

static void op_netlink(struct worker *w)
{
	struct vmfork_msg msgs[4];
	struct nl_req r;
	int err, count;

	if (!w->nl)
		return;
	switch (below(w, 5)) {
	case 0:	/* a dump */
		req_init(&r, w->nl->family, VMFORK_CMD_GET_STATS, NLM_F_DUMP);
		if (chance(w, 30))
			req_put_u64(&r, VMFORK_A_ID, below(w, 64));
		break;
	case 1:	/* one object, maybe none */
		req_init(&r, w->nl->family, VMFORK_CMD_GET_STATS, 0);
		req_put_u64(&r, VMFORK_A_ID, below(w, 64));
		break;
	case 2:
		req_init(&r, w->nl->family, VMFORK_CMD_GET_COUNTERS, 0);
		break;
	default: {	/* malformed: random command, attributes and lengths */
		__u8 junk[64];
		unsigned int i, n = below(w, 4);

		for (i = 0; i < sizeof(junk); i++)
			junk[i] = (__u8)rnd(w);
		req_init(&r, w->nl->family, (__u8)below(w, 16),
			 chance(w, 50) ? NLM_F_DUMP : 0);
		for (i = 0; i < n; i++)
			req_put(&r, (__u16)below(w, 20), junk, below(w, 24),
				chance(w, 20) ? (__u16)below(w, 64) : 0);
		/* Cut into the attributes, never below the headers (no ack then). */
		if (n && chance(w, 20))
			r.nlh.nlmsg_len -= below(w, 8);
	}
	}
	err = nl_call(w->nl, &r, msgs, ARRAY_SIZE(msgs), &count, NULL, 0);
	if (err == -EAGAIN)
		violation(w, "no netlink answer within the timeout");
}

static void op_debugfs(struct worker *w)
{
	char buf[4096];
	int fd = open("/sys/kernel/debug/vmfork/objects", O_RDONLY);

	(void)w;
	if (fd < 0)
		return;
	while (read(fd, buf, sizeof(buf)) > 0)
		;
	close(fd);
}

static void run_op(struct worker *w, enum op op);

/*
 * A process fork: the child inherits every fd (not the mappings: guest RAM
 * is VM_DONTCOPY), runs a few operations on them and exits with the number
 * of violations it saw; the parent waits. The table's lock is held across
 * fork() so that the child does not inherit it taken by another thread.
 */
static void op_pfork(struct worker *w)
{
	struct fuzz *fz = w->fz;
	struct worker cw = *w;
	unsigned long before;
	pid_t pid;
	int i, status;

	pthread_mutex_lock(&fz->mu);
	pid = fork();
	pthread_mutex_unlock(&fz->mu);
	if (pid < 0)
		return;
	if (!pid) {
		/* Refill the holes left by the mappings that were not copied. */
		for (i = 0; i < SLOTS; i++)
			slot_clear(fz, i, 0, SLOT_SIZE);
		cw.nl = NULL;
		cw.child_process = true;
		before = atomic_load(&fz->violations);
		for (i = 0; i < 32; i++) {
			enum op op = below(&cw, NR_OPS);

			if (op != OP_PFORK && op != OP_PASS)
				run_op(&cw, op);
		}
		_exit(atomic_load(&fz->violations) != before);
	}
	if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
	    WEXITSTATUS(status))
		violation(w, "a forked process ended with status %#x", status);
}

static void run_op(struct worker *w, enum op op)
{
	static void (*const fn[NR_OPS])(struct worker *) = {
		[OP_CREATE] = op_create, [OP_FORK] = op_fork,
		[OP_RESET] = op_reset, [OP_STATS] = op_stats,
		[OP_BAD_IOCTL] = op_bad_ioctl, [OP_DEV_IOCTL] = op_dev_ioctl,
		[OP_MMAP] = op_mmap, [OP_MUNMAP] = op_munmap,
		[OP_MREMAP] = op_mremap, [OP_MPROTECT] = op_mprotect,
		[OP_MADVISE] = op_madvise, [OP_TOUCH] = op_touch,
		[OP_RW] = op_rw, [OP_FALLOCATE] = op_fallocate,
		[OP_CLOSE] = op_close, [OP_PASS] = op_pass,
		[OP_NETLINK] = op_netlink, [OP_DEBUGFS] = op_debugfs,
		[OP_PFORK] = op_pfork,
	};

	fn[op](w);
	if (!w->child_process)
		atomic_fetch_add(&w->fz->done[op], 1);
}

static enum op pick_op(struct worker *w)
{
	unsigned int total = 0, r, i;

	if (!below(w, 2000))
		return OP_PFORK;
	for (i = 0; i < NR_OPS; i++)
		total += op_weight[i];
	r = below(w, total);
	for (i = 0; i < NR_OPS; i++) {
		if (r < op_weight[i])
			return i;
		r -= op_weight[i];
	}
	return OP_STATS;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	__u64 i;

	w->nl = nl_new(5);
	for (i = 0; i < w->fz->ops_per_thread; i++) {
		if (!(i % 256) && w->fz->deadline_ms &&
		    now_ms() > w->fz->deadline_ms)
			break;
		run_op(w, pick_op(w));
	}
	nl_free(w->nl);
	return NULL;
}

static __u64 env_u64(const char *name, __u64 def)
{
	const char *v = getenv(name);

	return v && *v ? strtoull(v, NULL, 0) : def;
}

FIXTURE(fuzz) {
	struct fuzz fz;
};

FIXTURE_SETUP(fuzz)
{
	struct fuzz *fz = &self->fz;
	int i;

	memset(fz, 0, sizeof(*fz));
	VMFORK_OPEN_OR_SKIP(fz->dev);
	pthread_mutex_init(&fz->mu, NULL);
	for (i = 0; i < MAX_OBJS; i++)
		fz->objs[i] = -1;
	fz->arena = mmap(NULL, SLOTS * SLOT_SIZE, PROT_NONE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	ASSERT_NE(MAP_FAILED, fz->arena);
	ASSERT_EQ(0, socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, fz->sock));
}

FIXTURE_TEARDOWN(fuzz)
{
	struct fuzz *fz = &self->fz;
	int i;

	for (i = 0; i < MAX_OBJS; i++)
		if (fz->objs[i] >= 0)
			close(fz->objs[i]);
	if (fz->arena && fz->arena != MAP_FAILED)
		munmap(fz->arena, SLOTS * SLOT_SIZE);
	close(fz->sock[0]);
	close(fz->sock[1]);
	close(fz->dev);
}

TEST_F_TIMEOUT(fuzz, random_operations_from_threads_and_processes, 1800)
{
	struct fuzz *fz = &self->fz;
	struct worker w[MAX_THREADS];
	pthread_t tid[MAX_THREADS];
	struct sigaction sa = { .sa_sigaction = on_fault,
				.sa_flags = SA_NODEFER | SA_SIGINFO };
	__u64 ops = env_u64("VMFORK_FUZZ_OPS", 300000), total = 0;
	unsigned int threads = env_u64("VMFORK_FUZZ_THREADS", 4), i;
	__u64 secs = env_u64("VMFORK_FUZZ_SECS", 120);
	struct timespec t0, t1;

	fz->seed = env_u64("VMFORK_FUZZ_SEED", (__u64)time(NULL));
	ASSERT_GE(threads, 1U);
	ASSERT_LE(threads, (unsigned int)MAX_THREADS);
	fz->ops_per_thread = (ops + threads - 1) / threads;
	TH_LOG("seed %llu (VMFORK_FUZZ_SEED=%llu reproduces each thread's operations), %llu operations, %u threads",
	       (unsigned long long)fz->seed, (unsigned long long)fz->seed,
	       (unsigned long long)(fz->ops_per_thread * threads), threads);
	sigaction(SIGSEGV, &sa, NULL);
	sigaction(SIGBUS, &sa, NULL);

	fz->deadline_ms = secs ? now_ms() + secs * 1000 : 0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (i = 0; i < threads; i++) {
		w[i] = (struct worker){ .fz = fz, .id = i,
					.rng = fz->seed * 2654435761ULL + i + 1 };
		ASSERT_EQ(0, pthread_create(&tid[i], NULL, worker_main, &w[i]));
	}
	for (i = 0; i < threads; i++)
		pthread_join(tid[i], NULL);
	clock_gettime(CLOCK_MONOTONIC, &t1);

	for (i = 0; i < NR_OPS; i++) {
		total += atomic_load(&fz->done[i]);
		TH_LOG("%-13s %lu", op_names[i], atomic_load(&fz->done[i]));
	}
	TH_LOG("%llu operations in %.1f s, %lu faults caught, %lu violations",
	       (unsigned long long)total,
	       (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9,
	       atomic_load(&fz->faults), atomic_load(&fz->violations));
	if (total < fz->ops_per_thread * threads)
		TH_LOG("stopped after %llu s (VMFORK_FUZZ_SECS): %llu of %llu operations run",
		       (unsigned long long)secs, (unsigned long long)total,
		       (unsigned long long)(fz->ops_per_thread * threads));
	EXPECT_LT(0ULL, total);
	EXPECT_EQ(0UL, atomic_load(&fz->violations)) {
		TH_LOG("the uAPI's answers were broken: see the violations above (seed %llu)",
		       (unsigned long long)fz->seed);
	}
}

VMFORK_LEAK_CHECK_TEST()

TEST_HARNESS_MAIN
