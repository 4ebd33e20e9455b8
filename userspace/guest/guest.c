// SPDX-License-Identifier: GPL-2.0
/*
 * The built-in guest: a freestanding 64-bit program, started by the host directly
 * in long mode on every vCPU (rdi = cpu index). vCPU 0 fills fill_percent of RAM
 * with data at boot; then every vCPU loops: read the clone identity, fold the step
 * into a checksum, write the work area, and every report_every steps fill its
 * report slot and OUT to the report port. State the host checks after a fork is
 * spread on purpose over memory (step, checksum, work area), registers (xmm15),
 * the LAPIC (LDR), a debug register (DR0), an MSR (LSTAR) and the TSC.
 */
#include "guest_abi.h"

#define MSR_LSTAR 0xc0000082U
#define APIC_BASE 0xfee00000ULL
#define APIC_LDR 0xd0
#define APIC_SVR 0xf0
#define APIC_LVTT 0x320
#define APIC_TMICT 0x380
#define APIC_TDCR 0x3e0
#define APIC_LVT_PERIODIC (1U << 17)
#define APIC_SPURIOUS_VECTOR 0xff

extern char guest_timer_isr[], guest_spurious_isr[], guest_fault_isr[];

struct idt_gate {
    uint16_t offset_lo;
    uint16_t selector;
    uint8_t ist;
    uint8_t type; /* 0x8e: present, DPL 0, 64-bit interrupt gate */
    uint16_t offset_mid;
    uint32_t offset_hi;
    uint32_t zero;
};

static inline void outb(uint16_t port, uint8_t v) {
    __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}

static inline void outl(uint16_t port, uint32_t v) {
    __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port) : "memory");
}

static inline uint64_t rdtsc(void) {
    uint32_t lo, hi;

    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((uint64_t)hi << 32) | lo;
}

static inline uint64_t rdmsr(uint32_t msr) {
    uint32_t lo, hi;

    __asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
    return ((uint64_t)hi << 32) | lo;
}

static inline void wrmsr(uint32_t msr, uint64_t v) {
    __asm__ volatile("wrmsr" : : "c"(msr), "a"((uint32_t)v), "d"((uint32_t)(v >> 32)));
}

static inline volatile uint32_t* apic_reg(uint32_t off) {
    return (volatile uint32_t*)(APIC_BASE + off);
}

static void puts_serial(const char* s) {
    while (*s)
        outb(VMFORK_GUEST_SERIAL_PORT, (uint8_t)*s++);
}

static void putu_serial(uint64_t v) {
    char buf[21];
    int i = 20;

    buf[i] = 0;
    do {
        buf[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    puts_serial(&buf[i]);
}

/*
 * xmm15 is the register-only accumulator. -mgeneral-regs-only keeps the compiler
 * off SSE, so no clobbers are needed (and none are allowed).
 */
static inline void xmm_zero(void) {
    __asm__ volatile("pxor %xmm15, %xmm15");
}

static inline void xmm_add(uint64_t v) {
    __asm__ volatile("movq %0, %%xmm14\n\tpaddq %%xmm14, %%xmm15" : : "r"(v));
}

static inline uint64_t xmm_read(void) {
    uint64_t v;

    __asm__ volatile("movq %%xmm15, %0" : "=r"(v));
    return v;
}

static void set_gate(volatile struct idt_gate* idt, int vec, const char* isr) {
    uint64_t a = (uint64_t)isr;

    idt[vec].offset_lo = (uint16_t)a;
    idt[vec].selector = 0x08; /* the loader's 64-bit code segment */
    idt[vec].ist = 0;
    idt[vec].type = 0x8e;
    idt[vec].offset_mid = (uint16_t)(a >> 16);
    idt[vec].offset_hi = (uint32_t)(a >> 32);
    idt[vec].zero = 0;
}

/*
 * Every vCPU writes the same IDT (so none depends on another having run) and loads
 * it; then, for a paced guest, masks the legacy PICs and starts its LAPIC timer in
 * periodic mode (KVM's APIC bus runs at 1 GHz: one count per nanosecond).
 */
static void setup_interrupts(uint64_t pace_us) {
    volatile struct idt_gate* idt = (volatile struct idt_gate*)VMFORK_GUEST_IDT;
    struct {
        uint16_t limit;
        uint64_t base;
    } __attribute__((packed)) idtr = {256 * sizeof(struct idt_gate) - 1, VMFORK_GUEST_IDT};

    for (int v = 0; v < 256; v++)
        set_gate(idt, v, v < 32 ? guest_fault_isr : guest_spurious_isr);
    set_gate(idt, VMFORK_GUEST_TIMER_VECTOR, guest_timer_isr);
    __asm__ volatile("lidt %0" : : "m"(idtr));
    if (!pace_us)
        return;
    if (pace_us > VMFORK_GUEST_MAX_PACE_US)
        pace_us = VMFORK_GUEST_MAX_PACE_US;
    outb(0x21, 0xff);
    outb(0xa1, 0xff);
    *apic_reg(APIC_SVR) = 0x100 | APIC_SPURIOUS_VECTOR;
    *apic_reg(APIC_TDCR) = 0xb; /* divide by 1 */
    *apic_reg(APIC_LVTT) = APIC_LVT_PERIODIC | VMFORK_GUEST_TIMER_VECTOR;
    *apic_reg(APIC_TMICT) = (uint32_t)(pace_us * 1000);
}

/* vCPU 0's view of the fill area; on its stack, so a clone inherits it. */
struct fill_state {
    uint64_t start;    /* first page */
    uint64_t pages;    /* filled pages */
    uint64_t me;       /* low 32 bits of this VM's id */
    uint64_t forked;   /* a clone: tags of others are valid up to fork_w */
    uint64_t fork_w;   /* the write counter at the fork */
    uint64_t write_at; /* next page to rewrite */
    uint64_t check_at; /* next page to verify */
};

static void fill_page(uint64_t gpa, uint64_t tag) {
    volatile uint64_t* p = (volatile uint64_t*)gpa;

    p[0] = tag;
    for (uint64_t i = 1; i < 512; i++)
        p[i] = vmfork_guest_fill_word(tag, gpa, i);
}

static int page_ok(const struct fill_state* f, uint64_t gpa) {
    const volatile uint64_t* p = (const volatile uint64_t*)gpa;
    uint64_t tag = p[0], writer = tag >> 32, counter = tag & 0xffffffffULL;

    if (writer == f->me ? f->forked && counter <= f->fork_w : !f->forked || counter > f->fork_w)
        return 0;
    for (uint64_t i = 1; i < 512; i++)
        if (p[i] != vmfork_guest_fill_word(tag, gpa, i))
            return 0;
    return 1;
}

static void fill_ram(const struct vmfork_guest_boot_info* bi, struct fill_state* f, uint64_t id) {
    uint64_t end = bi->mem_size / 100 * bi->fill_percent;

    f->start = VMFORK_GUEST_WORK + bi->ncpus * VMFORK_GUEST_WORK_SIZE;
    f->pages = end > f->start ? (end - f->start) / 4096 : 0;
    f->me = id & 0xffffffffULL;
    for (uint64_t n = 0; n < f->pages; n++)
        fill_page(f->start + n * 4096, f->me << 32);
}

/* At each report of vCPU 0: rewrite a few pages, verify a few more. */
static void fill_round(struct fill_state* f, volatile struct vmfork_guest_slot* slot) {
    if (!f->pages)
        return;
    for (int n = 0; n < VMFORK_GUEST_FILL_WRITES; n++) {
        /* The counter first: a fork in between leaves a tag from before it. */
        uint64_t w = ++slot->fill_writes;

        fill_page(f->start + f->write_at * 4096, (f->me << 32) | (w & 0xffffffffULL));
        f->write_at = (f->write_at + 1) % f->pages;
    }
    for (int n = 0; n < VMFORK_GUEST_FILL_CHECKS; n++) {
        uint64_t gpa = f->start + f->check_at * 4096;

        if (!page_ok(f, gpa)) {
            if (!slot->fill_errors++)
                slot->fill_first_bad = gpa;
        }
        slot->fill_checked++;
        f->check_at = (f->check_at + 1) % f->pages;
    }
}

/*
 * The benchmark's first-touch probe, in a new clone before it touches anything else:
 * n pages from a quarter into the filled RAM are read, then n pages from half-way are
 * written. Each write fills the page anew as this clone's (a tag it may have), so the
 * RAM check still holds; its first access is a plain store, since QEMU's TCG takes a
 * read-modify-write (a locked OR of 0, say) as a read fault and then a write fault.
 */
static void probe_first_touch(struct fill_state* f, volatile struct vmfork_guest_slot* slot,
                              uint64_t n, uint64_t gen) {
    uint64_t rd = f->start + f->pages / 4 * 4096, wr = f->start + f->pages / 2 * 4096;
    uint64_t t0, t1, t2;

    if (n > f->pages / 4)
        n = f->pages / 4;
    t0 = rdtsc();
    for (uint64_t i = 0; i < n; i++)
        (void)*(volatile uint64_t*)(rd + i * 4096);
    t1 = rdtsc();
    for (uint64_t i = 0; i < n; i++) {
        uint64_t w = ++slot->fill_writes;

        fill_page(wr + i * 4096, (f->me << 32) | (w & 0xffffffffULL));
    }
    t2 = rdtsc();
    slot->probe_pages = n;
    slot->probe_read_ticks = t1 - t0;
    slot->probe_write_ticks = t2 - t1;
    slot->probe_generation = gen;
}

void guest_main(uint64_t cpu) {
    const struct vmfork_guest_boot_info* bi =
        (const struct vmfork_guest_boot_info*)VMFORK_GUEST_BOOT_INFO;
    struct vmfork_guest_identity* ident = (struct vmfork_guest_identity*)VMFORK_GUEST_IDENTITY;
    volatile struct vmfork_guest_slot* slot =
        (volatile struct vmfork_guest_slot*)VMFORK_GUEST_SLOTS + cpu;
    volatile uint64_t* work =
        (volatile uint64_t*)(VMFORK_GUEST_WORK + cpu * VMFORK_GUEST_WORK_SIZE);
    uint64_t every = bi->report_every ? bi->report_every : 1;
    uint64_t gen, dr0 = vmfork_guest_dr0(cpu);
    struct fill_state fill = { 0 };

    setup_interrupts(bi->pace_us);
    *apic_reg(APIC_LDR) = (uint32_t)vmfork_guest_apic_ldr(cpu);
    __asm__ volatile("mov %0, %%dr0" : : "r"(dr0));
    wrmsr(MSR_LSTAR, vmfork_guest_lstar(cpu));
    xmm_zero();

    slot->cpu = cpu;
    slot->step = 0;
    slot->checksum = vmfork_guest_seed(cpu);
    slot->identity_changes = 0;
    slot->fill_checked = 0;
    slot->fill_errors = 0;
    slot->fill_first_bad = 0;
    slot->fill_writes = 0;
    slot->probe_generation = 0;
    slot->probe_pages = 0;
    if (cpu == 0)
        fill_ram(bi, &fill, ident->id);
    slot->filled_pages = fill.pages;
    gen = ident->generation;
    if (cpu == 0) {
        puts_serial("vmfork guest: ");
        putu_serial(bi->ncpus);
        puts_serial(" cpus, filled ");
        putu_serial(slot->filled_pages);
        puts_serial(" pages\n");
    }

    for (;;) {
        uint64_t k = slot->step + 1;
        uint64_t sum = vmfork_guest_step(slot->checksum, k);
        uint64_t g = ident->generation;

        if (g != gen) {
            gen = g;
            slot->identity_changes++;
            /* A clone (or a clone reset to its fork point): from here on it writes as
             * itself, and what others wrote is valid only from before the fork. */
            fill.me = ident->id & 0xffffffffULL;
            fill.forked = 1;
            fill.fork_w = slot->fill_writes & 0xffffffffULL;
            if (cpu == 0 && ident->probe_pages)
                probe_first_touch(&fill, slot, ident->probe_pages, g);
        }
        work[k % VMFORK_GUEST_WORK_WORDS] = vmfork_guest_work_value(sum, k);
        xmm_add(VMFORK_GUEST_XMM_INC);
        slot->checksum = sum;
        slot->step = k;
        if (k % every == 0) {
            uint64_t d;

            __asm__ volatile("mov %%dr0, %0" : "=r"(d));
            slot->xmm = xmm_read();
            slot->tsc = rdtsc();
            slot->apic_ldr = *apic_reg(APIC_LDR);
            slot->dr0 = d;
            slot->lstar = rdmsr(MSR_LSTAR);
            slot->generation = gen;
            slot->id = ident->id;
            if (cpu == 0)
                fill_round(&fill, slot);
            outl(VMFORK_GUEST_REPORT_PORT, (uint32_t)cpu);
            /* Idle until the next timer tick; sti's shadow makes sti; hlt atomic. */
            if (bi->pace_us)
                __asm__ volatile("sti; hlt; cli" : : : "memory");
        }
    }
}
