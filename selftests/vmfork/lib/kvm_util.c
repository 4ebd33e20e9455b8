// SPDX-License-Identifier: GPL-2.0
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "kvm_util.h"
#include "vmfork_util.h"

bool kvm_available(void)
{
	return access(KVM_DEV_PATH, R_OK | W_OK) == 0;
}

int __kvm_vm_create(struct kvm_vm *vm)
{
	int size;

	memset(vm, 0, sizeof(*vm));
	vm->vm_fd = vm->vcpu_fd = -1;
	vm->kvm_fd = open(KVM_DEV_PATH, O_RDWR | O_CLOEXEC);
	if (vm->kvm_fd < 0)
		return -1;
	vm->vm_fd = ioctl(vm->kvm_fd, KVM_CREATE_VM, 0);
	if (vm->vm_fd < 0)
		goto err;
	/* Needed by VMX without unrestricted guest, a no-op on SVM. */
	ioctl(vm->vm_fd, KVM_SET_TSS_ADDR, 0xfffbd000ul);
	size = ioctl(vm->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (size < 0)
		goto err;
	vm->run_size = size;
	return 0;
err:
	kvm_vm_free(vm);
	return -1;
}

int __kvm_set_mem(struct kvm_vm *vm, __u32 slot, __u64 gpa, __u64 size,
		  void *hva)
{
	struct kvm_userspace_memory_region region = {
		.slot = slot,
		.guest_phys_addr = gpa,
		.memory_size = size,
		.userspace_addr = (__u64)(unsigned long)hva,
	};

	return ioctl(vm->vm_fd, KVM_SET_USER_MEMORY_REGION, &region);
}

int __kvm_vcpu_create(struct kvm_vm *vm)
{
	void *run;

	vm->vcpu_fd = ioctl(vm->vm_fd, KVM_CREATE_VCPU, 0);
	if (vm->vcpu_fd < 0)
		return -1;
	run = mmap(NULL, vm->run_size, PROT_READ | PROT_WRITE, MAP_SHARED,
		   vm->vcpu_fd, 0);
	if (run == MAP_FAILED)
		return -1;
	vm->run = run;
	return 0;
}

static void set_data_seg(struct kvm_segment *s, __u64 base)
{
	s->base = base;
	s->selector = base >> 4;
}

int __kvm_vcpu_real_mode(struct kvm_vm *vm, __u64 rip, __u64 ds_base)
{
	struct kvm_sregs sregs;
	struct kvm_regs regs;

	if (ioctl(vm->vcpu_fd, KVM_GET_SREGS, &sregs))
		return -1;
	sregs.cs.base = 0;
	sregs.cs.selector = 0;
	set_data_seg(&sregs.ds, ds_base);
	set_data_seg(&sregs.es, ds_base);
	set_data_seg(&sregs.fs, ds_base);
	set_data_seg(&sregs.gs, ds_base);
	set_data_seg(&sregs.ss, ds_base);
	if (ioctl(vm->vcpu_fd, KVM_SET_SREGS, &sregs))
		return -1;
	memset(&regs, 0, sizeof(regs));
	regs.rip = rip;
	regs.rflags = 2;
	regs.rsp = 0xf000;
	return ioctl(vm->vcpu_fd, KVM_SET_REGS, &regs);
}

int __kvm_vcpu_set_rip(struct kvm_vm *vm, __u64 rip)
{
	struct kvm_regs regs;

	if (ioctl(vm->vcpu_fd, KVM_GET_REGS, &regs))
		return -1;
	regs.rip = rip;
	regs.rflags = 2;
	return ioctl(vm->vcpu_fd, KVM_SET_REGS, &regs);
}

void kvm_vm_free(struct kvm_vm *vm)
{
	if (vm->run)
		munmap(vm->run, vm->run_size);
	if (vm->vcpu_fd >= 0)
		close(vm->vcpu_fd);
	if (vm->vm_fd >= 0)
		close(vm->vm_fd);
	if (vm->kvm_fd >= 0)
		close(vm->kvm_fd);
	memset(vm, 0, sizeof(*vm));
	vm->kvm_fd = vm->vm_fd = vm->vcpu_fd = -1;
}

int kvm_vcpu_stat(struct kvm_vm *vm, const char *name, __u64 *value)
{
	struct kvm_stats_header h;
	struct kvm_stats_desc *d;
	size_t dsize;
	int fd, ret = -1;
	__u32 i;

	fd = ioctl(vm->vcpu_fd, KVM_GET_STATS_FD, NULL);
	if (fd < 0)
		return -1;
	if (pread(fd, &h, sizeof(h), 0) != sizeof(h))
		goto out;
	dsize = sizeof(*d) + h.name_size;
	d = malloc(dsize);
	if (!d)
		goto out;
	errno = ENOENT;
	for (i = 0; i < h.num_desc; i++) {
		if (pread(fd, d, dsize, h.desc_offset + i * dsize) != (ssize_t)dsize)
			break;
		if (strncmp(d->name, name, h.name_size))
			continue;
		if (pread(fd, value, sizeof(*value), h.data_offset + d->offset) ==
		    sizeof(*value))
			ret = 0;
		break;
	}
	free(d);
out:
	close(fd);
	return ret;
}

int kvm_run_to_hlt(struct kvm_vm *vm, struct kvm_outcome *o)
{
	struct kvm_run *run = vm->run;
	unsigned int i;

	memset(o, 0, sizeof(*o));
	/* Bounded: a correct guest program exits a handful of times. */
	for (i = 0; i < 1000; i++) {
		o->ret = ioctl(vm->vcpu_fd, KVM_RUN, 0);
		if (o->ret < 0) {
			o->err = errno;
			if (errno == EINTR)
				continue;
			return -1;
		}
		o->exit_reason = run->exit_reason;
		switch (run->exit_reason) {
		case KVM_EXIT_HLT:
			return 0;
		case KVM_EXIT_IO:
			if (run->io.direction != KVM_EXIT_IO_OUT ||
			    run->io.port != GUEST_IO_PORT || run->io.size != 4 ||
			    o->nr_outs >= KVM_MAX_OUTS)
				return -1;
			memcpy(&o->outs[o->nr_outs++],
			       (char *)run + run->io.data_offset, 4);
			break;
		default:
			return -1;
		}
	}
	return -1;
}

static void kick_handler(int sig)
{
	(void)sig;
}

static void *runner_thread(void *arg)
{
	struct kvm_runner *r = arg;
	struct kvm_run *run = r->vm->run;
	int ret;

	r->started = 1;
	while (!r->stop) {
		ret = ioctl(r->vm->vcpu_fd, KVM_RUN, 0);
		if (ret < 0 && errno == EINTR)
			continue;
		if (ret < 0) {
			r->err = errno;
			r->failed = 1;
			break;
		}
		/* A spinning guest only leaves for host reasons. */
		if (run->exit_reason != KVM_EXIT_INTR) {
			r->exit_reason = run->exit_reason;
			r->failed = 1;
			break;
		}
	}
	return NULL;
}

int kvm_runner_start(struct kvm_runner *r, struct kvm_vm *vm)
{
	struct sigaction sa;
	int err;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = kick_handler;	/* no SA_RESTART: KVM_RUN -> EINTR */
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGUSR1, &sa, NULL))
		return -1;
	r->vm = vm;
	r->stop = 0;
	r->started = 0;
	r->failed = 0;
	vm->run->immediate_exit = 0;
	err = pthread_create(&r->thread, NULL, runner_thread, r);
	if (err) {
		errno = err;
		return -1;
	}
	return 0;
}

int kvm_runner_stop(struct kvm_runner *r, int timeout_ms)
{
	__u64 end = now_ms() + timeout_ms;
	struct timespec ts;

	r->stop = 1;
	r->vm->run->immediate_exit = 1;
	for (;;) {
		pthread_kill(r->thread, SIGUSR1);
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 10 * 1000 * 1000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		if (!pthread_timedjoin_np(r->thread, NULL, &ts))
			break;
		if (now_ms() >= end)
			return -1;
	}
	r->vm->run->immediate_exit = 0;
	return 0;
}
