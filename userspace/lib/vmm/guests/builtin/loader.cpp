// SPDX-License-Identifier: GPL-2.0
#include <array>
#include <cerrno>
#include <cstring>
#include <string>

#include "guest_abi.h"
#include "vmfork/kvm.h"
#include "vmfork/system_error.h"
#include "vmfork/vmm/boot/long_mode.h"
#include "vmfork/vmm/guests/builtin/loader.h"
#include "vmfork/vmm/memory.h"

// From builtin_guest_blob.S (.incbin of the guest's flat binary).
extern "C" const std::uint8_t vmfork_builtin_guest_start[];
extern "C" const std::uint8_t vmfork_builtin_guest_end[];

namespace vmfork {

namespace {

constexpr std::uint16_t sel_code = 0x08, sel_data = 0x10, sel_tss = 0x18;

} // namespace

std::span<const std::uint8_t> BuiltinGuestLoader::image() {
    return {vmfork_builtin_guest_start, vmfork_builtin_guest_end};
}

void BuiltinGuestLoader::load(const GuestMemory& mem, const std::vector<const Vcpu*>& vcpus) {
    if (mem.size() < VMFORK_GUEST_MIN_MEM + vcpus.size() * VMFORK_GUEST_WORK_SIZE) {
        throw SystemError(EINVAL, "the built-in guest needs at least " +
                                      std::to_string(VMFORK_GUEST_MIN_MEM >> 20) + " MiB of RAM");
    }
    if (mem.high_size() != 0) {
        throw SystemError(EINVAL, "the built-in guest addresses RAM below the MMIO hole only: "
                                  "give it at most " +
                                      std::to_string(GuestMemory::low_ram_max >> 20) + " MiB");
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
    const std::array<std::uint64_t, 5> gdt = {0, long_mode::gdt_code64, long_mode::gdt_data,
                                              0x00008b0000000067ULL, 0};
    mem.write(VMFORK_GUEST_GDT, gdt);
    // PML4, PDPT and the PDs follow each other (guest_abi.h).
    static_assert(VMFORK_GUEST_PDPT == VMFORK_GUEST_PML4 + 0x1000 &&
                  VMFORK_GUEST_PD == VMFORK_GUEST_PML4 + 0x2000);
    const std::uint64_t cr3 = long_mode::write_identity_map(mem, VMFORK_GUEST_PML4);

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
        long_mode::enter(sregs, cr3, VMFORK_GUEST_GDT, sizeof(gdt) - 1, sel_code, sel_data);
        sregs.tr = long_mode::flat_segment(sel_tss, 11, false);
        sregs.tr.s = 0;
        sregs.tr.limit = 0x67;
        sregs.tr.g = 0;
        sregs.tr.db = 0;
        sregs.cr4 |= long_mode::cr4_osfxsr | long_mode::cr4_osxmmexcpt;
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
