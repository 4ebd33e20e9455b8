// SPDX-License-Identifier: GPL-2.0
#include <array>
#include <cerrno>
#include <cstring>
#include <string>

#include "guest_abi.h"
#include "vmfork/kvm.h"
#include "vmfork/system_error.h"
#include "vmfork/vmm/boot_loader.h"
#include "vmfork/vmm/memory.h"

// From builtin_guest_blob.S (.incbin of the guest's flat binary).
extern "C" const std::uint8_t vmfork_builtin_guest_start[];
extern "C" const std::uint8_t vmfork_builtin_guest_end[];

namespace vmfork {

namespace {

constexpr std::uint64_t cr0_pe = 1ULL << 0, cr0_mp = 1ULL << 1, cr0_et = 1ULL << 4,
                        cr0_ne = 1ULL << 5, cr0_wp = 1ULL << 16, cr0_pg = 1ULL << 31;
constexpr std::uint64_t cr4_pae = 1ULL << 5, cr4_osfxsr = 1ULL << 9, cr4_osxmmexcpt = 1ULL << 10;
constexpr std::uint64_t efer_lme = 1ULL << 8, efer_lma = 1ULL << 10;
constexpr std::uint64_t pte_present = 1, pte_write = 2, pte_large = 0x80;

constexpr std::uint16_t sel_code = 0x08, sel_data = 0x10, sel_tss = 0x18;

kvm_segment segment(std::uint16_t selector, std::uint8_t type, bool code) {
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

} // namespace

std::span<const std::uint8_t> BuiltinGuestLoader::image() {
    return {vmfork_builtin_guest_start, vmfork_builtin_guest_end};
}

void BuiltinGuestLoader::load(const GuestMemory& mem, const std::vector<const Vcpu*>& vcpus) {
    if (mem.size() < VMFORK_GUEST_MIN_MEM + vcpus.size() * VMFORK_GUEST_WORK_SIZE) {
        throw SystemError(EINVAL, "the built-in guest needs at least " +
                                      std::to_string(VMFORK_GUEST_MIN_MEM >> 20) + " MiB of RAM");
    }
    if (vcpus.empty() || vcpus.size() > VMFORK_GUEST_MAX_CPUS) {
        throw SystemError(EINVAL, "the built-in guest runs on 1.." +
                                      std::to_string(VMFORK_GUEST_MAX_CPUS) + " vCPUs");
    }
    if (pace_us_ > VMFORK_GUEST_MAX_PACE_US) {
        throw SystemError(EINVAL, "the guest's report pace must be at most " +
                                      std::to_string(VMFORK_GUEST_MAX_PACE_US) + " us");
    }
    if (report_every_ == 0) {
        throw SystemError(EINVAL, "the guest must report every 1 or more steps");
    }
    if (fill_percent_ > 100) {
        throw SystemError(EINVAL, "fill percent must be 0..100");
    }
    const auto img = image();
    if (img.size() > VMFORK_GUEST_CODE_MAX) {
        throw SystemError(EFBIG, "the built-in guest image is too large");
    }
    std::memcpy(mem.at(VMFORK_GUEST_ENTRY, img.size()), img.data(), img.size());

    // GDT: null, 64-bit code, data, 64-bit TSS (two slots).
    const std::array<std::uint64_t, 5> gdt = {0, 0x00af9b000000ffffULL, 0x00cf93000000ffffULL,
                                              0x00008b0000000067ULL, 0};
    mem.write(VMFORK_GUEST_GDT, gdt);

    // Page tables: PML4[0] -> PDPT; PDPT[0..3] -> 4 PDs of 2 MiB pages: 4 GiB 1:1.
    mem.write<std::uint64_t>(VMFORK_GUEST_PML4, VMFORK_GUEST_PDPT | pte_present | pte_write);
    for (std::uint64_t i = 0; i < 4; ++i) {
        const std::uint64_t pd = VMFORK_GUEST_PD + i * 4096;
        mem.write<std::uint64_t>(VMFORK_GUEST_PDPT + i * 8, pd | pte_present | pte_write);
        for (std::uint64_t j = 0; j < 512; ++j) {
            const std::uint64_t addr = ((i * 512) + j) << 21;
            mem.write<std::uint64_t>(pd + j * 8, addr | pte_present | pte_write | pte_large);
        }
    }

    vmfork_guest_boot_info info{};
    info.magic = VMFORK_GUEST_BOOT_MAGIC;
    info.mem_size = mem.size();
    info.fill_percent = fill_percent_;
    info.ncpus = vcpus.size();
    info.report_every = report_every_;
    info.pace_us = pace_us_;
    mem.write(VMFORK_GUEST_BOOT_INFO, info);

    for (const Vcpu* vcpu : vcpus) {
        kvm_sregs sregs = vcpu->get_sregs();
        sregs.cs = segment(sel_code, 11, true);
        sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = segment(sel_data, 3, false);
        sregs.tr = segment(sel_tss, 11, false);
        sregs.tr.s = 0;
        sregs.tr.limit = 0x67;
        sregs.tr.g = 0;
        sregs.tr.db = 0;
        sregs.gdt.base = VMFORK_GUEST_GDT;
        sregs.gdt.limit = sizeof(gdt) - 1;
        sregs.idt.base = 0;
        sregs.idt.limit = 0;
        sregs.cr0 = cr0_pe | cr0_mp | cr0_et | cr0_ne | cr0_wp | cr0_pg;
        sregs.cr3 = VMFORK_GUEST_PML4;
        sregs.cr4 = cr4_pae | cr4_osfxsr | cr4_osxmmexcpt;
        sregs.efer = efer_lme | efer_lma;
        vcpu->set_sregs(sregs);

        kvm_regs regs{};
        regs.rflags = 2;
        regs.rip = VMFORK_GUEST_ENTRY;
        regs.rsp = VMFORK_GUEST_STACKS + (vcpu->id() + 1) * VMFORK_GUEST_STACK_SIZE;
        regs.rdi = vcpu->id();
        vcpu->set_regs(regs);

        // Application processors wait for INIT/SIPI by default: start them directly.
        kvm_mp_state mp{};
        mp.mp_state = KVM_MP_STATE_RUNNABLE;
        vcpu->set_mp_state(mp);
    }
}

} // namespace vmfork
