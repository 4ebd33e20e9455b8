/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The contract between the built-in guest (guest.c, freestanding C) and the host
 * (BuiltinGuestLoader, ReportPort): guest-physical layout, the boot-info page, the
 * clone-identity page, the per-vCPU report slots and the checksum every step folds
 * in. Plain C so both sides include it.
 */
#ifndef VMFORK_GUEST_ABI_H
#define VMFORK_GUEST_ABI_H

#include <stdint.h>

/* Guest-physical layout (all below 2 MiB except the work and fill areas). */
#define VMFORK_GUEST_GDT 0x1000ULL
#define VMFORK_GUEST_PML4 0x2000ULL
#define VMFORK_GUEST_PDPT 0x3000ULL
#define VMFORK_GUEST_PD 0x4000ULL /* 4 pages: 4 GiB identity-mapped with 2 MiB pages */
#define VMFORK_GUEST_BOOT_INFO 0x8000ULL
#define VMFORK_GUEST_IDENTITY 0x9000ULL
#define VMFORK_GUEST_SLOTS 0xa000ULL /* struct vmfork_guest_slot[VMFORK_GUEST_MAX_CPUS] */
#define VMFORK_GUEST_IDT 0xb000ULL   /* 256 gates, built by the guest */
#define VMFORK_GUEST_STACKS 0x10000ULL
#define VMFORK_GUEST_STACK_SIZE 0x4000ULL
#define VMFORK_GUEST_MAX_CPUS 16
#define VMFORK_GUEST_ENTRY 0x100000ULL /* the flat binary is loaded here */
#define VMFORK_GUEST_CODE_MAX 0x100000ULL
#define VMFORK_GUEST_WORK 0x200000ULL /* per vCPU: VMFORK_GUEST_WORK_SIZE bytes */
#define VMFORK_GUEST_WORK_SIZE 0x10000ULL
#define VMFORK_GUEST_WORK_WORDS (VMFORK_GUEST_WORK_SIZE / 8)
#define VMFORK_GUEST_MIN_MEM 0x400000ULL

/* I/O ports. */
#define VMFORK_GUEST_SERIAL_PORT 0x3f8
#define VMFORK_GUEST_REPORT_PORT 0x500 /* OUT (32-bit): cpu index; its slot is filled */

#define VMFORK_GUEST_BOOT_MAGIC 0x746f6f626b666d76ULL /* "vmfkboot" */

struct vmfork_guest_boot_info {
    uint64_t magic;
    uint64_t mem_size;     /* bytes of guest RAM at gpa 0 */
    uint64_t fill_percent; /* share of RAM the guest fills with data at boot */
    uint64_t ncpus;
    uint64_t report_every; /* steps between two reports */
    uint64_t pace_us;      /* 0: spin; else halt after each report until the next
                            * LAPIC timer tick, every pace_us (an idle guest) */
};

#define VMFORK_GUEST_MAX_PACE_US 1000000ULL
#define VMFORK_GUEST_TIMER_VECTOR 0x40

/*
 * Written by the host before a VM (or a clone) runs; generation 0 = the original.
 * probe_pages (the benchmark only, 0 otherwise): when vCPU 0 sees a new generation,
 * before anything else, it first reads probe_pages pages of the filled RAM and then
 * fills as many others anew, and reports the TSC ticks each took (slot probe_*):
 * the cost of a first touch of a clone's page from inside the guest.
 */
struct vmfork_guest_identity {
    volatile uint64_t generation;
    volatile uint64_t id;
    volatile uint64_t probe_pages;
};

/*
 * One per vCPU. The guest fills it and then does OUT cpu to the report port; the
 * host reads it while the vCPU waits in that exit. step and checksum also live here
 * between reports (the guest's working copy), so the host can verify memory.
 */
struct vmfork_guest_slot {
    uint64_t cpu;
    uint64_t step;       /* steps done */
    uint64_t checksum;   /* vmfork_guest_checksum() folded over steps 1..step */
    uint64_t xmm;        /* step * VMFORK_GUEST_XMM_INC, kept only in xmm15 */
    uint64_t tsc;        /* rdtsc at the report */
    uint64_t apic_ldr;   /* LAPIC logical destination register, set at boot */
    uint64_t dr0;        /* debug register 0, set at boot */
    uint64_t lstar;      /* MSR_LSTAR, set at boot */
    uint64_t generation; /* identity as the guest read it */
    uint64_t id;
    uint64_t identity_changes; /* times the guest saw the generation change */
    uint64_t filled_pages;     /* pages filled at boot */
    /*
     * vCPU 0 only: the guest's own check of its filled RAM (vmfork_guest_fill_*).
     * Every report it rewrites VMFORK_GUEST_FILL_WRITES pages and verifies
     * VMFORK_GUEST_FILL_CHECKS, round-robin over the whole fill area.
     */
    uint64_t fill_checked;   /* pages verified since boot */
    uint64_t fill_errors;    /* of those, wrong (content, or a tag this VM cannot have) */
    uint64_t fill_first_bad; /* guest-physical address of the first wrong page, or 0 */
    uint64_t fill_writes;    /* pages rewritten since boot (the tag counter) */
    /*
     * vCPU 0 only: the last first-touch probe (vmfork_guest_identity.probe_pages),
     * made at the start of generation probe_generation: probe_pages pages read, then
     * as many others written, and the TSC ticks each loop took.
     */
    uint64_t probe_generation;
    uint64_t probe_pages;
    uint64_t probe_read_ticks;
    uint64_t probe_write_ticks;
};

#define VMFORK_GUEST_FILL_WRITES 4
#define VMFORK_GUEST_FILL_CHECKS 64

/*
 * A filled page: word 0 is its tag, (writer << 32) | counter, where writer is the low
 * 32 bits of the identity id of the VM that wrote it and counter the value of the
 * write counter then (0: the boot fill); word i is vmfork_guest_fill_word(). A page is
 * right in a VM if its words match its tag and the tag is one this VM can see: its
 * own (after its fork, if it is a clone), or one written before its fork. A page that a
 * sibling or the parent wrote after the fork (a copy-on-write leak) fails.
 */
static inline uint64_t vmfork_guest_fill_word(uint64_t tag, uint64_t gpa, uint64_t i) {
    return tag ^ gpa ^ (i << 48) ^ 0x5a5a5a5a5a5a5a5aULL;
}

#define VMFORK_GUEST_XMM_INC 0x0101010101010101ULL

static inline uint64_t vmfork_guest_seed(uint64_t cpu) {
    return 0x9e3779b97f4a7c15ULL * (cpu + 1);
}

/* checksum(k) = step(checksum(k - 1), k), checksum(0) = seed(cpu). */
static inline uint64_t vmfork_guest_step(uint64_t sum, uint64_t k) {
    sum ^= k + (sum >> 29);
    return sum * 0x100000001b3ULL + 0x5851f42d4c957f2dULL;
}

/* The value written at step k to work word k % VMFORK_GUEST_WORK_WORDS. */
static inline uint64_t vmfork_guest_work_value(uint64_t sum, uint64_t k) {
    return sum ^ (k << 32);
}

static inline uint64_t vmfork_guest_apic_ldr(uint64_t cpu) {
    return (uint64_t)(1U << (cpu % 8)) << 24;
}

static inline uint64_t vmfork_guest_dr0(uint64_t cpu) {
    return 0x1000ULL + cpu * 8;
}

static inline uint64_t vmfork_guest_lstar(uint64_t cpu) {
    return 0xffffffff81000000ULL + cpu * 0x1000;
}

#endif /* VMFORK_GUEST_ABI_H */
