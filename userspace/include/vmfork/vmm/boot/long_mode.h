// SPDX-License-Identifier: GPL-2.0
#pragma once

#include <cstdint>
#include <linux/kvm.h>

namespace vmfork {

class GuestMemory;

// What both loaders need to start a vCPU directly in 64-bit mode: flat segments,
// identity-mapped page tables and the control registers.
namespace long_mode {

constexpr std::uint64_t cr0_pe = 1ULL << 0, cr0_mp = 1ULL << 1, cr0_et = 1ULL << 4,
                        cr0_ne = 1ULL << 5, cr0_wp = 1ULL << 16, cr0_pg = 1ULL << 31;
constexpr std::uint64_t cr4_pae = 1ULL << 5, cr4_osfxsr = 1ULL << 9, cr4_osxmmexcpt = 1ULL << 10;
constexpr std::uint64_t efer_lme = 1ULL << 8, efer_lma = 1ULL << 10;

// GDT descriptors of a flat 64-bit code and a flat data segment.
constexpr std::uint64_t gdt_code64 = 0x00af9b000000ffffULL;
constexpr std::uint64_t gdt_data = 0x00cf93000000ffffULL;

// A flat segment as KVM_SET_SREGS takes it: 64-bit code (type 11) or data (type 3).
kvm_segment flat_segment(std::uint16_t selector, std::uint8_t type, bool code);

// Page tables at pml4 (6 consecutive pages: PML4, PDPT, 4 PDs) mapping the low 4 GiB
// 1:1 with 2 MiB pages. Returns the value for CR3.
std::uint64_t write_identity_map(const GuestMemory& mem, std::uint64_t pml4);

// sregs for 64-bit mode on those page tables with the GDT at gdt_base: CS and the
// data segments from code_sel and data_sel, CR0 PE|PG (+ET, NE, MP, WP), CR4 PAE,
// EFER LME|LMA. The IDT is empty.
void enter(kvm_sregs& sregs, std::uint64_t cr3, std::uint64_t gdt_base, std::uint16_t gdt_limit,
           std::uint16_t code_sel, std::uint16_t data_sel);

} // namespace long_mode
} // namespace vmfork
