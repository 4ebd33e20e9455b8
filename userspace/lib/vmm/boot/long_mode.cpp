// SPDX-License-Identifier: GPL-2.0
#include "vmfork/vmm/boot/long_mode.h"

#include "vmfork/vmm/memory.h"

namespace vmfork::long_mode {

namespace {
constexpr std::uint64_t pte_present = 1, pte_write = 2, pte_large = 0x80;
constexpr std::uint64_t page = 4096;
} // namespace

kvm_segment flat_segment(std::uint16_t selector, std::uint8_t type, bool code) {
    kvm_segment s{};
    s.base = 0;
    s.limit = 0xffffffff;
    s.selector = selector;
    s.type = type;
    s.present = 1;
    s.dpl = 0;
    s.db = code ? 0 : 1;
    s.s = 1;
    s.l = code ? 1 : 0;
    s.g = 1;
    return s;
}

std::uint64_t write_identity_map(const GuestMemory& mem, std::uint64_t pml4) {
    const std::uint64_t pdpt = pml4 + page, pd0 = pml4 + 2 * page;
    mem.write<std::uint64_t>(pml4, pdpt | pte_present | pte_write);
    for (std::uint64_t i = 0; i < 4; ++i) {
        const std::uint64_t pd = pd0 + i * page;
        mem.write<std::uint64_t>(pdpt + i * 8, pd | pte_present | pte_write);
        for (std::uint64_t j = 0; j < 512; ++j) {
            const std::uint64_t addr = ((i * 512) + j) << 21;
            mem.write<std::uint64_t>(pd + j * 8, addr | pte_present | pte_write | pte_large);
        }
    }
    return pml4;
}

void enter(kvm_sregs& sregs, std::uint64_t cr3, std::uint64_t gdt_base, std::uint16_t gdt_limit,
           std::uint16_t code_sel, std::uint16_t data_sel) {
    sregs.cs = flat_segment(code_sel, 11, true);
    sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = flat_segment(data_sel, 3, false);
    sregs.gdt.base = gdt_base;
    sregs.gdt.limit = gdt_limit;
    sregs.idt.base = 0;
    sregs.idt.limit = 0;
    sregs.cr0 = cr0_pe | cr0_mp | cr0_et | cr0_ne | cr0_wp | cr0_pg;
    sregs.cr3 = cr3;
    sregs.cr4 = cr4_pae;
    sregs.efer = efer_lme | efer_lma;
}

} // namespace vmfork::long_mode
