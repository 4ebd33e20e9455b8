// SPDX-License-Identifier: GPL-2.0
/*
 * Who may use vmfork and who pays for it: /dev/vmfork is closed to users
 * outside its mode, and guest pages are charged to the memory cgroup of the
 * task whose access allocates them; over the limit that access fails
 * (ENOMEM for pwrite, SIGBUS for a store), never the host.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <grp.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>

#include "vmfork_test.h"

#define CG_ROOT		"/sys/fs/cgroup"
#define CG_LIMIT	(8ULL << 20)
#define OBJ_SIZE	(64ULL << 20)
#define MIB		(1ULL << 20)

TEST(device_mode)
{
	struct stat st;
	int fd;

	if (stat(VMFORK_DEV_PATH, &st) && errno == ENOENT && !getenv("VMFORK_KO"))
		SKIP(return, "vmfork module not loaded");
	ASSERT_EQ(0, stat(VMFORK_DEV_PATH, &st)) {
		TH_LOG("stat of " VMFORK_DEV_PATH " must work: %s", strerror(errno));
	}
	ASSERT_TRUE(S_ISCHR(st.st_mode));
	EXPECT_EQ(0660U, st.st_mode & 07777) {
		TH_LOG(VMFORK_DEV_PATH " must be mode 0660 like /dev/kvm, is %o",
		       st.st_mode & 07777);
	}

	/* A user who is neither owner nor in the group gets no object. */
	pid_t pid = fork();

	ASSERT_LE(0, pid);
	if (pid == 0) {
		if (setgroups(0, NULL) || setresgid(65534, 65534, 65534) ||
		    setresuid(65534, 65534, 65534))
			_exit(10);
		fd = open(VMFORK_DEV_PATH, O_RDWR);
		_exit(fd < 0 && errno == EACCES ? 0 : 11);
	}
	int status;

	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	ASSERT_TRUE(WIFEXITED(status));
	EXPECT_EQ(0, WEXITSTATUS(status)) {
		TH_LOG("user nobody must get EACCES opening " VMFORK_DEV_PATH
		       " (child status %d: 10 = could not drop privileges)",
		       WEXITSTATUS(status));
	}
}

static long long read_ll(const char *path)
{
	char buf[64] = "";
	int fd = open(path, O_RDONLY);
	ssize_t n;

	if (fd < 0)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	return n > 0 ? atoll(buf) : -1;
}

static sigjmp_buf bus_jmp;

static void on_sigbus(int sig)
{
	siglongjmp(bus_jmp, 1);
}

/*
 * In a child process inside the cgroup: writes that fit are charged, writes
 * past the limit fail cleanly. Exit codes name the step that went wrong.
 */
/*
 * Maps @obj so that the mapping ends on a page-table (2 MiB) boundary: its last
 * pages then share one page table, which memcg_child() makes before the limit.
 * At a page-granular address a table boundary can fall between them, and the
 * read after the limit then needs a new, charged page table: the memcg OOM
 * killer took the child once that way.
 */
static volatile char *map_end_aligned(int obj)
{
	const uintptr_t table_span = 2 * MIB;
	uintptr_t end;
	char *area;

	area = mmap(NULL, OBJ_SIZE + table_span, PROT_NONE,
		    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (area == MAP_FAILED)
		return MAP_FAILED;
	end = ((uintptr_t)area + OBJ_SIZE + table_span) & ~(table_span - 1);
	return mmap((void *)(end - OBJ_SIZE), OBJ_SIZE, PROT_READ | PROT_WRITE,
		    MAP_SHARED | MAP_FIXED, obj, 0);
}

static int memcg_child(const char *cg, int obj)
{
	static char buf[MIB];
	long long before, after;
	char path[256], pid[32];
	volatile char *map;
	__u64 off;

	/*
	 * Fault in this program (text, data, stack) before joining: once the
	 * cgroup is full, any other charged allocation (a page-cache page, a
	 * VMA, a page table) would be the memcg OOM killer's business, not
	 * vmfork's. Everything needed after the limit is set up before it.
	 */
	memset(buf, 0x5a, sizeof(buf));
	if (mlockall(MCL_CURRENT))
		return 28;
	snprintf(path, sizeof(path), "%s/cgroup.procs", cg);
	snprintf(pid, sizeof(pid), "%d", getpid());
	if (write_str(path, pid))
		return 20;
	snprintf(path, sizeof(path), "%s/memory.current", cg);

	map = map_end_aligned(obj);
	if (map == MAP_FAILED)
		return 25;
	/* maps the zero page: the table of the last pages is made */
	if (map[OBJ_SIZE - 8192] != 0)
		return 27;
	signal(SIGBUS, on_sigbus);

	/* 4 MiB fit and are charged here, although another task made the object. */
	before = read_ll(path);
	for (off = 0; off < 4 * MIB; off += MIB)
		if (pwrite(obj, buf, MIB, off) != (ssize_t)MIB)
			return 21;
	after = read_ll(path);
	if (before < 0 || after - before < (long long)(4 * MIB))
		return 22;

	/* Writing the whole object must stop at the limit with ENOMEM. */
	for (; off < OBJ_SIZE; off += MIB) {
		ssize_t n = pwrite(obj, buf, MIB, off);

		if (n < 0 && errno == ENOMEM)
			break;
		if (n < (ssize_t)MIB) {
			/* a short write first, then ENOMEM */
			if (n >= 0 && pwrite(obj, buf, MIB, off + n) < 0 &&
			    errno == ENOMEM)
				break;
			return 23;
		}
	}
	if (off >= OBJ_SIZE)
		return 24;	/* 64 MiB written under an 8 MiB limit */

	/* A store to a fresh page through the mapping raises SIGBUS. */
	if (sigsetjmp(bus_jmp, 1) == 0) {
		map[OBJ_SIZE - 4096] = 1;
		return 26;	/* the store went through */
	}
	/* Reading is free: the zero page needs no charge. */
	if (map[OBJ_SIZE - 12288] != 0)
		return 27;
	return 0;
}

TEST(memcg_charge_and_limit)
{
	char cg[128], path[256];
	int dev, obj, status;
	struct vmfork_stats st;
	pid_t pid;

	dev = __vmfork_open();
	if (dev < 0 && !getenv("VMFORK_KO"))
		SKIP(return, "vmfork module not loaded");
	ASSERT_LE(0, dev);
	if (access(CG_ROOT "/cgroup.subtree_control", W_OK))
		SKIP(return, "no writable cgroup2 hierarchy at " CG_ROOT);
	if (write_str(CG_ROOT "/cgroup.subtree_control", "+memory"))
		SKIP(return, "the memory controller cannot be enabled: %s",
		     strerror(errno));

	snprintf(cg, sizeof(cg), CG_ROOT "/vmfork-test-%d", getpid());
	ASSERT_EQ(0, mkdir(cg, 0755)) {
		TH_LOG("mkdir %s: %s", cg, strerror(errno));
	}
	snprintf(path, sizeof(path), "%s/memory.max", cg);
	ASSERT_EQ(0, write_str(path, "8388608"));
	snprintf(path, sizeof(path), "%s/memory.swap.max", cg);
	write_str(path, "0");

	obj = vmfork_create(_metadata, dev, OBJ_SIZE, NULL);
	pid = fork();
	ASSERT_LE(0, pid);
	if (pid == 0)
		_exit(memcg_child(cg, obj));
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) {
		TH_LOG("memcg child failed: status %#x (20 join, 21 small write, 22 not charged, 23 bad short write, 24 limit not enforced, 25 mmap, 26 store over limit went through, 27 read, 28 mlockall)",
		       status);
	}

	/* The object holds what fitted; the limit held. */
	vmfork_stats(_metadata, obj, &st);
	EXPECT_LE(4 * MIB / PG, st.resident_pages);
	EXPECT_GE(CG_LIMIT / PG, st.resident_pages) {
		TH_LOG("%llu pages resident under an 8 MiB limit",
		       (unsigned long long)st.resident_pages);
	}
	/* The host (this task, outside the cgroup) can still write. */
	poke64(_metadata, obj, OBJ_SIZE / PG - 1, 0, 42);
	EXPECT_EQ(42ULL, peek64(_metadata, obj, OBJ_SIZE / PG - 1, 0));

	close(obj);
	close(dev);
	EXPECT_EQ(0, rmdir(cg)) {
		TH_LOG("rmdir %s: %s", cg, strerror(errno));
	}
}

VMFORK_LEAK_CHECK_TEST()

TEST_HARNESS_MAIN
