// SPDX-License-Identifier: GPL-2.0
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "vmfork/vmm/boot_loader.h"

namespace vmfork {

class GuestMemory;
class Vcpu;

// The built-in guest (userspace/guest/), started directly in 64-bit mode: the host
// builds identity-mapped page tables (2 MiB pages, 4 GiB), a GDT and the boot-info
// page, and sets CR0/CR3/CR4/EFER and the segments through KVM_SET_SREGS.
class BuiltinGuestLoader : public BootLoader {
public:
    // pace_us: 0 = the guest spins; else it halts after each report until its next
    // LAPIC timer tick (period pace_us, at most VMFORK_GUEST_MAX_PACE_US): an idle guest.
    BuiltinGuestLoader(std::uint64_t fill_percent, std::uint64_t report_every,
                       std::uint64_t pace_us = 0)
        : fill_percent_(fill_percent), report_every_(report_every), pace_us_(pace_us) {}
    void load(const GuestMemory& memory, const std::vector<const Vcpu*>& vcpus) override;

    // The embedded flat binary.
    static std::span<const std::uint8_t> image();

private:
    std::uint64_t fill_percent_;
    std::uint64_t report_every_;
    std::uint64_t pace_us_;
};

} // namespace vmfork
