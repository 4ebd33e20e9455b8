// SPDX-License-Identifier: GPL-2.0
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "vmfork/vmm/boot/pvh.h"
#include "vmfork/vmm/boot_loader.h"

namespace vmfork {

// What a Linux bzImage says about itself in its setup header (x86 boot protocol,
// Documentation/arch/x86/boot.rst), checked for what the 64-bit entry needs.
struct BzImage {
    std::vector<std::uint8_t> setup_header; // boot_params bytes 0x1f1 .. end of header
    std::span<const std::uint8_t> kernel;   // the protected-mode part, loaded at 1 MiB
    std::uint16_t version = 0;
    std::uint32_t initrd_addr_max = 0;
    std::uint32_t cmdline_size = 0;
    std::uint32_t init_size = 0; // bytes the kernel needs from its load address on
    // Throws std::invalid_argument naming what is wrong (not a bzImage, too old for
    // the 64-bit entry, truncated).
    static BzImage parse(std::span<const std::uint8_t> file);
};

// The e820 memory map a Linux guest gets: RAM below the BIOS area, the reserved BIOS
// area (ACPI tables, the generation page), RAM above 1 MiB up to the MMIO hole and
// RAM above 4 GiB.
struct E820Entry {
    std::uint64_t addr;
    std::uint64_t size;
    std::uint32_t type; // 1 RAM, 2 reserved
};
std::vector<E820Entry> e820_map(const GuestMemory& mem);

// Boots Linux: a bzImage through the 64-bit boot protocol (the protected-mode kernel
// at 1 MiB, boot_params with setup header, command line, initrd, e820 and
// acpi_rsdp_addr, an identity map, vCPU 0 at the 64-bit entry), or an ELF vmlinux
// through PVH (pvh.h). The other vCPUs wait for INIT/SIPI as on hardware (Linux starts
// them from the ACPI MADT). The caller has written the ACPI tables at
// platform::acpi_base.
class LinuxLoader : public BootLoader {
public:
    // Reads the files now: a missing or unreadable file is an error here, with its name.
    LinuxLoader(const std::string& kernel_path, const std::string& initrd_path,
                std::string cmdline);
    void load(const GuestMemory& memory, const std::vector<const Vcpu*>& vcpus) override;

    // Guest-physical layout of what the loader writes (all below 1 MiB).
    static constexpr std::uint64_t gdt_addr = 0x500;
    static constexpr std::uint64_t boot_params_addr = 0x7000;
    static constexpr std::uint64_t page_tables_addr = 0x9000; // 6 pages
    static constexpr std::uint64_t cmdline_addr = 0x20000;
    static constexpr std::uint64_t kernel_addr = 0x100000;
    // Where a relocatable 64-bit kernel decompresses itself (LOAD_PHYSICAL_ADDR).
    static constexpr std::uint64_t kernel_run_addr = 0x1000000;

private:
    void load_pvh(const GuestMemory& memory, const Vcpu& bsp);

    std::string kernel_path_;
    std::vector<std::uint8_t> kernel_file_;
    BzImage image_;               // a bzImage, or
    std::optional<PvhImage> pvh_; // an ELF vmlinux
    std::string initrd_path_;
    std::vector<std::uint8_t> initrd_;
    std::string cmdline_;
};

} // namespace vmfork
