// SPDX-License-Identifier: GPL-2.0
/*
 * Module lifetime: vmfork.ko cannot be unloaded while any object (fd or
 * mapping) lives (delete_module() fails, in use), unloads once everything is gone with no object or page
 * left behind, and loads again from $VMFORK_KO so later tests still work.
 * This binary unloads the module: run it on its own or last.
 */
#include "vmfork_test.h"

static bool wait_for_dev(int timeout_ms)
{
	__u64 end = now_ms() + timeout_ms;

	while (access(VMFORK_DEV_PATH, R_OK | W_OK)) {
		if (now_ms() > end)
			return false;
		usleep(10 * 1000);
	}
	return true;
}

/* Loads the module again if a test left it unloaded. */
static void reload_if_needed(void)
{
	const char *ko = getenv("VMFORK_KO");

	if (ko && !vmfork_module_loaded())
		__vmfork_load(ko);
}

FIXTURE(unload) {
	const char *ko;
};

FIXTURE_SETUP(unload)
{
	int dev;

	self->ko = getenv("VMFORK_KO");
	if (!self->ko)
		SETUP_SKIP("VMFORK_KO is not set: nothing to reload the module from");
	if (!vmfork_module_loaded())
		ASSERT_EQ(0, __vmfork_load(self->ko));
	ASSERT_TRUE(wait_for_dev(5000)) {
		TH_LOG(VMFORK_DEV_PATH " must exist while the module is loaded");
	}
	dev = __vmfork_open();
	ASSERT_LE(0, dev);
	close(dev);
}

FIXTURE_TEARDOWN(unload)
{
	reload_if_needed();
}

static void expect_unload_busy(META, const char *why)
{
	int ret = __vmfork_unload();

	if (ret == 0)
		reload_if_needed();
	ASSERT_EQ(-1, ret) {
		TH_LOG("the module must not unload while %s", why);
	}
	/*
	 * A module whose refcount is held: delete_module(O_NONBLOCK) answers
	 * EWOULDBLOCK (kernel/module/main.c: try_stop_module()), which rmmod
	 * reports as "in use"; EBUSY is for a module still coming or going.
	 */
	ASSERT_EQ(EWOULDBLOCK, errno) {
		TH_LOG("unloading while %s must fail with EWOULDBLOCK (in use), not %s",
		       why, strerror(errno));
	}
}

static void unload_and_reload(META, const char *ko)
{
	struct vmfork_counters c;
	int dev, obj, ret = -1;
	unsigned int i;

	/* Object release may lag the last close a little: bounded retries. */
	for (i = 0; i < 100; i++) {
		ret = __vmfork_unload();
		if (ret == 0 || errno != EWOULDBLOCK)
			break;
		usleep(20 * 1000);
	}
	ASSERT_EQ(0, ret) {
		TH_LOG("the module must unload once every object is gone: %s",
		       strerror(errno));
	}
	ASSERT_FALSE(vmfork_module_loaded());
	ASSERT_EQ(0, __vmfork_load(ko)) {
		TH_LOG("reloading %s must work: %s", ko, strerror(errno));
	}
	ASSERT_TRUE(wait_for_dev(5000)) {
		TH_LOG(VMFORK_DEV_PATH " must come back after a reload");
	}
	dev = __vmfork_open();
	ASSERT_LE(0, dev) {
		TH_LOG("the reloaded module must open: %s", strerror(errno));
	}
	obj = vmfork_create(_metadata, dev, PG, NULL);
	poke64(_metadata, obj, 0, 0, 42);
	ASSERT_EQ(42ULL, peek64(_metadata, obj, 0, 0));
	close(obj);
	close(dev);
	if (!vmfork_read_counters(&c)) {
		ASSERT_EQ(0, vmfork_wait_counters_idle(&c, 3000));
		EXPECT_EQ(0L, c.objects);
		EXPECT_EQ(0L, c.pages);
	}
}

TEST_F(unload, busy_while_objects_live)
{
	struct vmfork_counters c;
	bool have_counters;
	int dev, obj, child;
	void *map;

	dev = __vmfork_open();
	ASSERT_LE(0, dev);
	obj = vmfork_create(_metadata, dev, PAGES(4), NULL);
	close(dev);
	expect_unload_busy(_metadata, "an object fd is open");

	map = vmfork_mmap(_metadata, obj, PAGES(4), 0, PROT_READ | PROT_WRITE);
	*(volatile __u64 *)map = 7;
	child = vmfork_fork(_metadata, obj, 0, NULL);
	close(obj);
	expect_unload_busy(_metadata, "a child and a mapping live");

	have_counters = !vmfork_read_counters(&c);
	if (have_counters) {
		EXPECT_EQ(2L, c.objects) {
			TH_LOG("two objects live, the counters say %ld", c.objects);
		}
		EXPECT_LE(1L, c.pages);
	}

	close(child);
	expect_unload_busy(_metadata, "a mapping lives (its fd is closed)");
	EXPECT_EQ(7ULL, *(volatile __u64 *)map) {
		TH_LOG("a mapping must keep its object alive after close()");
	}
	munmap(map, PAGES(4));

	if (have_counters) {
		ASSERT_EQ(0, vmfork_wait_counters_idle(&c, 3000));
		EXPECT_EQ(0L, c.objects) {
			TH_LOG("no object may remain after the last close and munmap");
		}
		EXPECT_EQ(0L, c.pages) {
			TH_LOG("no page may remain after the last close and munmap");
		}
	}
	unload_and_reload(_metadata, self->ko);
}

TEST_F(unload, busy_while_dev_open)
{
	int dev = __vmfork_open();

	ASSERT_LE(0, dev);
	expect_unload_busy(_metadata, "/dev/vmfork is open");
	close(dev);
	unload_and_reload(_metadata, self->ko);
}

TEST_F(unload, busy_while_kvm_memslot)
{
	struct kvm_vm vm;
	int dev, obj;
	void *map;

	if (!kvm_available())
		SKIP(return, "no usable " KVM_DEV_PATH);
	dev = __vmfork_open();
	ASSERT_LE(0, dev);
	obj = vmfork_create(_metadata, dev, PAGES(16), NULL);
	close(dev);
	map = vmfork_mmap(_metadata, obj, PAGES(16), 0, PROT_READ | PROT_WRITE);
	close(obj);
	/* A guest that stores to 0x2000 and halts: KVM maps object pages. */
	memcpy((char *)map + 0x1000,
	       (const __u8[]){ G_MOV_MEM_EAX(0x2000), G_HLT }, 5);
	kvm_vm_setup(_metadata, &vm, map, PAGES(16), 0x1000);
	{
		struct kvm_outcome o;

		ASSERT_EQ(0, kvm_run_to_hlt(&vm, &o)) {
			TH_LOG("the guest must run to HLT (exit %u, %s)",
			       o.exit_reason, strerror(o.err));
		}
	}
	expect_unload_busy(_metadata, "a KVM memslot maps an object");
	kvm_vm_free(&vm);
	expect_unload_busy(_metadata, "the mapping behind a freed memslot lives");
	munmap(map, PAGES(16));
	unload_and_reload(_metadata, self->ko);
}

VMFORK_LEAK_CHECK_TEST()

TEST_HARNESS_MAIN
