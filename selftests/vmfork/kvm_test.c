// SPDX-License-Identifier: GPL-2.0
/*
 * vmfork objects as KVM guest memory: guest writes are isolated across a
 * fork in both directions, a child VM on the child object sees the
 * fork-time memory, one object can back several memslots, a fork of a
 * running vCPU's memory captures a consistent instant, and a reset child
 * keeps its memslot.
 *
 * Guest layout (real mode, DS = 0 unless noted):
 *   0x1000  copy:   eax = [0x4000]; [0x2000] = eax; eax = [0x3000];
 *                   out 0x10, eax; hlt
 *   0x1100  report: eax = [0x2000]; out 0x10, eax; hlt
 *   0x1200  spin:   inc dword [0x2000]; jmp 0x1200
 *   0x1300  touch:  eax = 0x7007; [0x5000], [0x6000], ... [0xc000] = eax; hlt
 */
#include "vmfork_test.h"

#define GUEST_PAGES	16
#define GUEST_SIZE	PAGES(GUEST_PAGES)
#define RIP_COPY	0x1000
#define RIP_REPORT	0x1100
#define RIP_SPIN	0x1200
#define A_DST		0x2000
#define A_REPORT	0x3000
#define A_SRC		0x4000
#define RIP_TOUCH	0x1300
#define A_TOUCH		0x5000	/* TOUCH_PAGES pages from here */
#define TOUCH_PAGES	8

static const __u8 code_copy[] = {
	G_MOV_EAX_MEM(A_SRC), G_MOV_MEM_EAX(A_DST), G_MOV_EAX_MEM(A_REPORT),
	G_OUT_EAX(GUEST_IO_PORT), G_HLT,
};
static const __u8 code_report[] = {
	G_MOV_EAX_MEM(A_DST), G_OUT_EAX(GUEST_IO_PORT), G_HLT,
};
static const __u8 code_spin[] = {
	G_INC_MEM32(A_DST), G_JMP_REL8(-7),
};

/* Plain stores: a read-modify-write is a read fault first under QEMU's TCG. */
#define TOUCH_VALUE	0x7007
static const __u8 code_touch[] = {
	G_MOV_EAX_IMM(TOUCH_VALUE),
	G_MOV_MEM_EAX(A_TOUCH + 0x0000), G_MOV_MEM_EAX(A_TOUCH + 0x1000),
	G_MOV_MEM_EAX(A_TOUCH + 0x2000), G_MOV_MEM_EAX(A_TOUCH + 0x3000),
	G_MOV_MEM_EAX(A_TOUCH + 0x4000), G_MOV_MEM_EAX(A_TOUCH + 0x5000),
	G_MOV_MEM_EAX(A_TOUCH + 0x6000), G_MOV_MEM_EAX(A_TOUCH + 0x7000),
	G_HLT,
};

static void put_code(void *mem)
{
	memcpy((char *)mem + RIP_COPY, code_copy, sizeof(code_copy));
	memcpy((char *)mem + RIP_REPORT, code_report, sizeof(code_report));
	memcpy((char *)mem + RIP_SPIN, code_spin, sizeof(code_spin));
	memcpy((char *)mem + RIP_TOUCH, code_touch, sizeof(code_touch));
}

static inline __u32 *u32at(void *mem, __u64 off)
{
	return (__u32 *)((char *)mem + off);
}

static inline __u32 rd32(void *mem, __u64 off)
{
	return *(volatile __u32 *)u32at(mem, off);
}

static inline void wr32(void *mem, __u64 off, __u32 v)
{
	*(volatile __u32 *)u32at(mem, off) = v;
}

static __u32 pread32(META, int fd, __u64 off)
{
	__u32 v = 0;

	ASSERT_EQ((ssize_t)sizeof(v), pread(fd, &v, sizeof(v), off));
	return v;
}

FIXTURE(kvm) {
	int dev;
	int parent;
	int child;
	void *pmem;
	void *cmem;
	struct kvm_vm pvm;
	struct kvm_vm cvm;
};

FIXTURE_SETUP(kvm)
{
	self->parent = self->child = -1;
	self->pvm.kvm_fd = self->pvm.vm_fd = self->pvm.vcpu_fd = -1;
	self->cvm.kvm_fd = self->cvm.vm_fd = self->cvm.vcpu_fd = -1;
	VMFORK_OPEN_OR_SKIP(self->dev);
	if (!kvm_available())
		SETUP_SKIP("no usable " KVM_DEV_PATH);
	self->parent = vmfork_create(_metadata, self->dev, GUEST_SIZE, NULL);
	self->pmem = vmfork_mmap(_metadata, self->parent, GUEST_SIZE, 0,
				 PROT_READ | PROT_WRITE);
	put_code(self->pmem);
}

FIXTURE_TEARDOWN(kvm)
{
	kvm_vm_free(&self->cvm);
	kvm_vm_free(&self->pvm);
	if (self->cmem)
		munmap(self->cmem, GUEST_SIZE);
	if (self->pmem)
		munmap(self->pmem, GUEST_SIZE);
	if (self->child >= 0)
		close(self->child);
	if (self->parent >= 0)
		close(self->parent);
	if (self->dev >= 0)
		close(self->dev);
}

TEST_F(kvm, guest_write_isolation)
{
	__u32 v;

	wr32(self->pmem, A_DST, 0x11111111);
	wr32(self->pmem, A_SRC, 0xaaaa0001);	/* P1 */
	wr32(self->pmem, A_REPORT, 0x33330001);
	kvm_vm_setup(_metadata, &self->pvm, self->pmem, GUEST_SIZE, RIP_COPY);

	/* Guest write before the fork. */
	v = kvm_run_report(_metadata, &self->pvm, RIP_COPY);
	EXPECT_EQ(0x33330001U, v) {
		TH_LOG("the guest must read what the host wrote");
	}
	EXPECT_EQ(0xaaaa0001U, rd32(self->pmem, A_DST)) {
		TH_LOG("the host must see the guest's store");
	}

	self->child = vmfork_fork(_metadata, self->parent, 0, NULL);

	/* Parent guest writes after the fork must not reach the child. */
	wr32(self->pmem, A_SRC, 0xaaaa0002);	/* P2 */
	wr32(self->pmem, A_REPORT, 0x33330002);
	v = kvm_run_report(_metadata, &self->pvm, RIP_COPY);
	EXPECT_EQ(0x33330002U, v) {
		TH_LOG("after a fork the parent guest must see the host's new store");
	}
	EXPECT_EQ(0xaaaa0002U, rd32(self->pmem, A_DST)) {
		TH_LOG("the parent guest's store after the fork must land in the parent");
	}
	EXPECT_EQ(0xaaaa0001U, pread32(_metadata, self->child, A_DST)) {
		TH_LOG("the parent guest's store after the fork must not reach the child");
	}

	/* A child VM on the child object reads the fork-time value. */
	self->cmem = vmfork_mmap(_metadata, self->child, GUEST_SIZE, 0,
				 PROT_READ | PROT_WRITE);
	EXPECT_EQ(0xaaaa0001U, rd32(self->cmem, A_DST));
	kvm_vm_setup(_metadata, &self->cvm, self->cmem, GUEST_SIZE, RIP_REPORT);
	v = kvm_run_report(_metadata, &self->cvm, RIP_REPORT);
	EXPECT_EQ(0xaaaa0001U, v) {
		TH_LOG("the child guest must read the fork-time value, got %#x", v);
	}

	/* Child guest writes must not reach the parent. */
	wr32(self->cmem, A_SRC, 0xcccc0001);
	v = kvm_run_report(_metadata, &self->cvm, RIP_COPY);
	EXPECT_EQ(0x33330001U, v) {
		TH_LOG("the child guest must see the fork-time value of [0x3000]");
	}
	EXPECT_EQ(0xcccc0001U, rd32(self->cmem, A_DST));
	EXPECT_EQ(0xaaaa0002U, rd32(self->pmem, A_DST)) {
		TH_LOG("the child guest's store must not reach the parent");
	}
	v = kvm_run_report(_metadata, &self->pvm, RIP_REPORT);
	EXPECT_EQ(0xaaaa0002U, v) {
		TH_LOG("the parent guest must still see its own value");
	}
	v = kvm_run_report(_metadata, &self->cvm, RIP_REPORT);
	EXPECT_EQ(0xcccc0001U, v) {
		TH_LOG("the child guest must see its own value");
	}
}

/*
 * One object, two memslots at different offsets: slot 0 = object pages
 * 0..15 at gpa 0 (code), slot 1 = object pages 16..31 at gpa 0x20000 (data,
 * DS base 0x20000).
 */
TEST_F(kvm, two_memslots_one_object)
{
	static const __u8 code[] = {
		G_MOV_EAX_MEM(A_DST), G_OUT_EAX(GUEST_IO_PORT),
		G_INC_MEM32(A_DST), G_HLT,
	};
	const __u64 size = 2 * GUEST_SIZE, data_gpa = 0x20000;
	struct kvm_outcome o;
	void *lo, *hi, *clo, *chi;
	int obj, child;

	obj = vmfork_create(_metadata, self->dev, size, NULL);
	lo = vmfork_mmap(_metadata, obj, GUEST_SIZE, 0, PROT_READ | PROT_WRITE);
	hi = vmfork_mmap(_metadata, obj, GUEST_SIZE, GUEST_SIZE,
			 PROT_READ | PROT_WRITE);
	memcpy((char *)lo + RIP_COPY, code, sizeof(code));
	wr32(hi, A_DST, 41);
	wr32(lo, A_DST, 0xdead);	/* the same offset in slot 0: a decoy */

	ASSERT_EQ(0, __kvm_vm_create(&self->pvm));
	ASSERT_EQ(0, __kvm_set_mem(&self->pvm, 0, 0, GUEST_SIZE, lo));
	ASSERT_EQ(0, __kvm_set_mem(&self->pvm, 1, data_gpa, GUEST_SIZE, hi)) {
		TH_LOG("a second memslot on another part of the object must work: %s",
		       strerror(errno));
	}
	ASSERT_EQ(0, __kvm_vcpu_create(&self->pvm));
	ASSERT_EQ(0, __kvm_vcpu_real_mode(&self->pvm, RIP_COPY, data_gpa));
	ASSERT_EQ(0, kvm_run_to_hlt(&self->pvm, &o)) {
		TH_LOG("the two-slot guest must run to HLT (exit %u, %s)",
		       o.exit_reason, strerror(o.err));
	}
	ASSERT_EQ(1U, o.nr_outs);
	EXPECT_EQ(41U, o.outs[0]) {
		TH_LOG("the guest must read slot 1 at the object's second half");
	}
	EXPECT_EQ(42U, pread32(_metadata, obj, GUEST_SIZE + A_DST)) {
		TH_LOG("the guest's store through slot 1 must land at object offset %#llx",
		       GUEST_SIZE + A_DST);
	}
	EXPECT_EQ(0xdeadU, rd32(lo, A_DST));

	child = vmfork_fork(_metadata, obj, 0, NULL);
	ASSERT_EQ(0, __kvm_vcpu_set_rip(&self->pvm, RIP_COPY));
	ASSERT_EQ(0, kvm_run_to_hlt(&self->pvm, &o));
	EXPECT_EQ(42U, o.outs[0]);
	EXPECT_EQ(43U, rd32(hi, A_DST));

	clo = vmfork_mmap(_metadata, child, GUEST_SIZE, 0, PROT_READ | PROT_WRITE);
	chi = vmfork_mmap(_metadata, child, GUEST_SIZE, GUEST_SIZE,
			  PROT_READ | PROT_WRITE);
	ASSERT_EQ(0, __kvm_vm_create(&self->cvm));
	ASSERT_EQ(0, __kvm_set_mem(&self->cvm, 0, 0, GUEST_SIZE, clo));
	ASSERT_EQ(0, __kvm_set_mem(&self->cvm, 1, data_gpa, GUEST_SIZE, chi));
	ASSERT_EQ(0, __kvm_vcpu_create(&self->cvm));
	ASSERT_EQ(0, __kvm_vcpu_real_mode(&self->cvm, RIP_COPY, data_gpa));
	ASSERT_EQ(0, kvm_run_to_hlt(&self->cvm, &o));
	EXPECT_EQ(42U, o.outs[0]) {
		TH_LOG("the child guest must read the fork-time value through slot 1");
	}
	EXPECT_EQ(43U, rd32(chi, A_DST));
	EXPECT_EQ(43U, rd32(hi, A_DST));
	ASSERT_EQ(0, __kvm_vcpu_set_rip(&self->cvm, RIP_COPY));
	ASSERT_EQ(0, kvm_run_to_hlt(&self->cvm, &o));
	EXPECT_EQ(44U, rd32(chi, A_DST));
	EXPECT_EQ(43U, rd32(hi, A_DST)) {
		TH_LOG("the child guest's store must not reach the parent");
	}

	kvm_vm_free(&self->cvm);
	kvm_vm_free(&self->pvm);
	munmap(clo, GUEST_SIZE);
	munmap(chi, GUEST_SIZE);
	munmap(lo, GUEST_SIZE);
	munmap(hi, GUEST_SIZE);
	close(child);
	close(obj);
}

static bool wait_counter_above(void *mem, __u32 than, int timeout_ms)
{
	__u64 end = now_ms() + timeout_ms;

	while ((__s32)(rd32(mem, A_DST) - than) <= 0) {
		if (now_ms() > end)
			return false;
		usleep(1000);
	}
	return true;
}

TEST_F(kvm, fork_running_vcpu)
{
	struct kvm_runner runner;
	__u32 before, after, c, c2, p;
	int i;

	wr32(self->pmem, A_DST, 0);
	kvm_vm_setup(_metadata, &self->pvm, self->pmem, GUEST_SIZE, RIP_SPIN);
	ASSERT_EQ(0, kvm_runner_start(&runner, &self->pvm));
	ASSERT_TRUE(wait_counter_above(self->pmem, 1000, 10000)) {
		TH_LOG("the spinning guest must count (counter %u)",
		       rd32(self->pmem, A_DST));
	}

	for (i = 0; i < 3; i++) {
		before = rd32(self->pmem, A_DST);
		self->child = vmfork_fork(_metadata, self->parent, 0, NULL);
		after = rd32(self->pmem, A_DST);
		c = pread32(_metadata, self->child, A_DST);
		EXPECT_TRUE(before <= c && c <= after) {
			TH_LOG("fork %d: the child counter %u must lie between %u and %u",
			       i, c, before, after);
		}
		/* The parent keeps counting, the child copy does not. */
		EXPECT_TRUE(wait_counter_above(self->pmem, after + 1000, 10000)) {
			TH_LOG("fork %d: the parent guest must keep counting after a fork (%u)",
			       i, rd32(self->pmem, A_DST));
		}
		c2 = pread32(_metadata, self->child, A_DST);
		p = rd32(self->pmem, A_DST);
		EXPECT_EQ(c, c2) {
			TH_LOG("fork %d: the child's counter must stay at %u (now %u)",
			       i, c, c2);
		}
		EXPECT_LT(c, p);
		EXPECT_FALSE(runner.failed) {
			TH_LOG("the vCPU must keep running (KVM_RUN errno %d, exit %u)",
			       runner.err, runner.exit_reason);
		}
		close(self->child);
		self->child = -1;
	}
	ASSERT_EQ(0, kvm_runner_stop(&runner, 5000)) {
		TH_LOG("the vCPU thread must stop when kicked");
	}
	EXPECT_FALSE(runner.failed) {
		TH_LOG("KVM_RUN must not fail (errno %d, exit %u)", runner.err,
		       runner.exit_reason);
	}
}

TEST_F(kvm, reset_kvm_child)
{
	struct vmfork_stats st;
	__u32 v;

	wr32(self->pmem, A_DST, 0x5eed0001);
	self->child = vmfork_fork(_metadata, self->parent, 0, NULL);
	self->cmem = vmfork_mmap(_metadata, self->child, GUEST_SIZE, 0,
				 PROT_READ | PROT_WRITE);
	kvm_vm_setup(_metadata, &self->cvm, self->cmem, GUEST_SIZE, RIP_COPY);

	/* The child guest overwrites [0x2000]; then reset. */
	wr32(self->cmem, A_SRC, 0xc0ffee01);
	kvm_run_report(_metadata, &self->cvm, RIP_COPY);
	EXPECT_EQ(0xc0ffee01U, rd32(self->cmem, A_DST));
	EXPECT_EQ(0x5eed0001U, rd32(self->pmem, A_DST));

	vmfork_reset(_metadata, self->child);
	v = kvm_run_report(_metadata, &self->cvm, RIP_REPORT);
	EXPECT_EQ(0x5eed0001U, v) {
		TH_LOG("after a reset the child guest must read the fork-time value, got %#x",
		       v);
	}
	EXPECT_EQ(0x5eed0001U, rd32(self->cmem, A_DST));
	EXPECT_EQ(0U, rd32(self->cmem, A_SRC)) {
		TH_LOG("a reset must drop the host's stores too");
	}

	/* And the guest can write again after the reset. */
	wr32(self->cmem, A_SRC, 0xc0ffee02);
	kvm_run_report(_metadata, &self->cvm, RIP_COPY);
	v = kvm_run_report(_metadata, &self->cvm, RIP_REPORT);
	EXPECT_EQ(0xc0ffee02U, v) {
		TH_LOG("the child guest must write after a reset");
	}
	EXPECT_EQ(0x5eed0001U, rd32(self->pmem, A_DST));
	vmfork_stats(_metadata, self->child, &st);
	EXPECT_STAT(&st, resets, 1, "reset KVM child");
}

TEST_F(kvm, template_guest_write_faults)
{
	struct kvm_outcome o;
	__u32 v;
	int ret;

	wr32(self->pmem, A_DST, 0x7e000001);
	wr32(self->pmem, A_SRC, 0x7e000002);
	kvm_vm_setup(_metadata, &self->pvm, self->pmem, GUEST_SIZE, RIP_REPORT);
	v = kvm_run_report(_metadata, &self->pvm, RIP_REPORT);
	EXPECT_EQ(0x7e000001U, v);

	self->child = vmfork_fork(_metadata, self->parent, VMFORK_FORK_TEMPLATE,
				  NULL);
	/* Reads still work on a template's memslot ... */
	v = kvm_run_report(_metadata, &self->pvm, RIP_REPORT);
	EXPECT_EQ(0x7e000001U, v) {
		TH_LOG("a template guest must still read its memory");
	}
	/* ... a guest store is refused with EFAULT from KVM_RUN. */
	ASSERT_EQ(0, __kvm_vcpu_set_rip(&self->pvm, RIP_COPY));
	ret = kvm_run_to_hlt(&self->pvm, &o);
	EXPECT_EQ(-1, ret) {
		TH_LOG("a guest store to a template must not complete");
	}
	EXPECT_EQ(EFAULT, o.err) {
		TH_LOG("KVM_RUN must report a store to a template as EFAULT, got %s (exit %u)",
		       strerror(o.err), o.exit_reason);
	}
	EXPECT_EQ(0x7e000001U, pread32(_metadata, self->parent, A_DST)) {
		TH_LOG("a template must not change");
	}
	EXPECT_EQ(0x7e000001U, pread32(_metadata, self->child, A_DST));
}

/*
 * A child guest's first store to a page it shares takes one stage-2 fault:
 * the COW break for a mapping that nothing else maps must not fire the MMU
 * notifier, which would make KVM drop the fault it is handling and take it
 * again (two faults per page with the module before this was fixed).
 */
TEST_F(kvm, first_write_one_fault)
{
	__u64 before, after;
	struct kvm_outcome o;
	int i;

	for (i = 0; i < TOUCH_PAGES; i++)
		wr32(self->pmem, A_TOUCH + PAGES(i), 0x5100 + i);
	self->child = vmfork_fork(_metadata, self->parent, 0, NULL);
	self->cmem = vmfork_mmap(_metadata, self->child, GUEST_SIZE, 0,
				 PROT_READ | PROT_WRITE);
	kvm_vm_setup(_metadata, &self->cvm, self->cmem, GUEST_SIZE, RIP_TOUCH);
	if (kvm_vcpu_stat(&self->cvm, "pf_taken", &before))
		SKIP(return, "no vCPU statistic pf_taken: %s", strerror(errno));
	ASSERT_EQ(0, kvm_run_to_hlt(&self->cvm, &o)) {
		TH_LOG("the guest must run to HLT: KVM_RUN %d (%s), exit reason %u",
		       o.ret, strerror(o.err), o.exit_reason);
	}
	ASSERT_EQ(0, kvm_vcpu_stat(&self->cvm, "pf_taken", &after));
	for (i = 0; i < TOUCH_PAGES; i++) {
		EXPECT_EQ((__u32)TOUCH_VALUE, rd32(self->cmem, A_TOUCH + PAGES(i)));
		EXPECT_EQ(0x5100U + i, rd32(self->pmem, A_TOUCH + PAGES(i))) {
			TH_LOG("the child guest's store must not reach the parent");
		}
	}
	/* The code page's fault, one per page stored to, and some slack. */
	EXPECT_LE(after - before, 1ULL + TOUCH_PAGES + 3) {
		TH_LOG("%llu stage-2 faults for %d first stores: each was taken again",
		       (unsigned long long)(after - before), TOUCH_PAGES);
	}
	TH_LOG("%llu stage-2 faults for the code page and %d first stores",
	       (unsigned long long)(after - before), TOUCH_PAGES);
}

VMFORK_LEAK_CHECK_TEST()

TEST_HARNESS_MAIN
