/* SPDX-License-Identifier: GPL-2.0 */
/*
 * A minimal KVM harness: one VM, one vCPU in 16-bit real mode, guest memory
 * taken from a vmfork object mapping. Guest code is hand-assembled bytes
 * (the G_* macros below) that the host writes into guest memory.
 */
#ifndef SELFTEST_VMFORK_KVM_UTIL_H
#define SELFTEST_VMFORK_KVM_UTIL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

#include <linux/kvm.h>

#define KVM_DEV_PATH		"/dev/kvm"
#define GUEST_IO_PORT		0x10

/* 16-bit real mode encodings; a is a 16-bit offset from DS. */
#define G_LO(a)			((a) & 0xff)
#define G_HI(a)			(((a) >> 8) & 0xff)
#define G_MOV_EAX_MEM(a)	0x66, 0xa1, G_LO(a), G_HI(a)	/* mov eax, [a] */
#define G_MOV_MEM_EAX(a)	0x66, 0xa3, G_LO(a), G_HI(a)	/* mov [a], eax */
#define G_MOV_EAX_IMM(v)	0x66, 0xb8, (v) & 0xff, ((v) >> 8) & 0xff, \
				((v) >> 16) & 0xff, ((v) >> 24) & 0xff /* mov eax, v */
#define G_INC_MEM32(a)		0x66, 0xff, 0x06, G_LO(a), G_HI(a) /* inc dword [a] */
#define G_OUT_EAX(p)		0x66, 0xe7, (p)			/* out p, eax */
#define G_JMP_REL8(d)		0xeb, ((d) & 0xff)		/* jmp short */
#define G_HLT			0xf4

struct kvm_vm {
	int kvm_fd;
	int vm_fd;
	int vcpu_fd;
	struct kvm_run *run;
	size_t run_size;
};

/* The outcome of one KVM_RUN loop until HLT. */
#define KVM_MAX_OUTS		16
struct kvm_outcome {
	int ret;		/* last KVM_RUN result */
	int err;		/* errno of a failing KVM_RUN */
	__u32 exit_reason;	/* last exit reason */
	unsigned int nr_outs;
	__u32 outs[KVM_MAX_OUTS];	/* values written to GUEST_IO_PORT */
};

bool kvm_available(void);
/* Each returns 0 or -1 with errno set; vm is zeroed first / on free. */
int __kvm_vm_create(struct kvm_vm *vm);
int __kvm_set_mem(struct kvm_vm *vm, __u32 slot, __u64 gpa, __u64 size,
		  void *hva);
int __kvm_vcpu_create(struct kvm_vm *vm);
/* CS base 0 selector 0, data segments at @ds_base, RIP @rip, RFLAGS 2. */
int __kvm_vcpu_real_mode(struct kvm_vm *vm, __u64 rip, __u64 ds_base);
int __kvm_vcpu_set_rip(struct kvm_vm *vm, __u64 rip);
void kvm_vm_free(struct kvm_vm *vm);
/*
 * The vCPU's statistic @name (KVM_GET_STATS_FD, e.g. "pf_taken": stage-2
 * faults KVM handled, a retried one counted again). Returns 0, or -1 with
 * errno set (ENOENT: no such statistic).
 */
int kvm_vcpu_stat(struct kvm_vm *vm, const char *name, __u64 *value);

/*
 * Runs the vCPU until HLT, an error or an unexpected exit; collects the
 * values the guest writes to GUEST_IO_PORT. Returns 0 on HLT, -1 otherwise
 * (details in @o).
 */
int kvm_run_to_hlt(struct kvm_vm *vm, struct kvm_outcome *o);

/*
 * A vCPU running in its own thread until stopped. The thread loops on
 * KVM_RUN; kvm_runner_stop() sets immediate_exit and kicks it with SIGUSR1
 * (a no-op handler installed without SA_RESTART, so KVM_RUN returns EINTR).
 */
struct kvm_runner {
	struct kvm_vm *vm;
	pthread_t thread;
	volatile int stop;
	volatile int started;
	volatile int failed;	/* KVM_RUN error other than EINTR, or bad exit */
	volatile int err;
	volatile __u32 exit_reason;
};

int kvm_runner_start(struct kvm_runner *r, struct kvm_vm *vm);
/* Returns 0 when the thread was joined within @timeout_ms, else -1. */
int kvm_runner_stop(struct kvm_runner *r, int timeout_ms);

#endif /* SELFTEST_VMFORK_KVM_UTIL_H */
