// SPDX-License-Identifier: GPL-2.0
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace vmfork {

class GuestMemory;
class Vcpu;

// An ELF vmlinux that Linux's PVH entry can start (arch/x86/platform/pvh/): its
// loadable segments at their physical addresses and the 32-bit entry point of its
// XEN_ELFNOTE_PHYS32_ENTRY note.
struct PvhImage {
    struct Segment {
        std::uint64_t paddr = 0;
        std::span<const std::uint8_t> data; // the file's bytes (filesz)
        std::uint64_t memsz = 0;
    };
    std::vector<Segment> segments;
    std::uint32_t entry = 0;
    std::uint64_t end = 0; // highest paddr + memsz

    [[nodiscard]] static bool is_elf(std::span<const std::uint8_t> file);
    // Throws std::invalid_argument naming what is wrong (not x86-64 ELF, truncated,
    // no PVH entry note).
    static PvhImage parse(std::span<const std::uint8_t> file);
};

// Writes the PVH start info (struct hvm_start_info, version 1: command line, initrd as
// the first module, the e820 map, the RSDP) below 1 MiB and puts vCPU 0 in 32-bit
// protected mode at the entry with EBX pointing at it, as the PVH boot ABI says.
void pvh_start(const GuestMemory& mem, const Vcpu& bsp, const PvhImage& image,
               std::uint64_t cmdline_addr, std::uint64_t initrd_addr, std::uint64_t initrd_size);

} // namespace vmfork
