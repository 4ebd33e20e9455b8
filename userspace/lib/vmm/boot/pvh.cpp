// SPDX-License-Identifier: GPL-2.0
#include "vmfork/vmm/boot/pvh.h"

#include <array>
#include <cstring>
#include <stdexcept>
#include <string>

#include "vmfork/kvm.h"
#include "vmfork/vmm/boot/linux_loader.h"
#include "vmfork/vmm/boot/long_mode.h"
#include "vmfork/vmm/memory.h"
#include "vmfork/vmm/platform.h"

namespace vmfork {

namespace {

// ELF64 (include/uapi/linux/elf.h), read field by field from the file.
constexpr std::size_t ehdr_size = 64, phdr_size = 56;
constexpr std::uint16_t em_x86_64 = 62;
constexpr std::uint32_t pt_load = 1, pt_note = 4;
// xen/include/public/elfnote.h
constexpr std::uint32_t xen_elfnote_phys32_entry = 18;

// xen/include/public/arch-x86/hvm/start_info.h: struct hvm_start_info (version 1),
// struct hvm_modlist_entry, struct hvm_memmap_table_entry.
constexpr std::uint32_t hvm_start_magic = 0x336ec578;
constexpr std::uint64_t start_info_addr = 0x6000;
constexpr std::uint64_t modlist_addr = 0x6100;
constexpr std::uint64_t memmap_addr = 0x6200;
// The 32-bit boot GDT: null, flat code (0x8), flat data (0x10), the TSS (0x18).
constexpr std::uint64_t pvh_gdt_addr = 0x5000;
constexpr std::uint16_t pvh_cs = 0x8, pvh_ds = 0x10, pvh_tr = 0x18;

template <typename T> T get(std::span<const std::uint8_t> b, std::size_t off) {
    if (off + sizeof(T) > b.size()) {
        throw std::invalid_argument("truncated ELF file");
    }
    T v{};
    std::memcpy(&v, b.data() + off, sizeof(T));
    return v;
}

template <typename T> void put(std::vector<std::uint8_t>& b, std::size_t off, T v) {
    std::memcpy(b.data() + off, &v, sizeof(T));
}

// The PHYS32 entry in the notes of one PT_NOTE segment, or 0.
std::uint32_t find_entry(std::span<const std::uint8_t> notes) {
    std::size_t off = 0;
    while (off + 12 <= notes.size()) {
        const auto namesz = get<std::uint32_t>(notes, off);
        const auto descsz = get<std::uint32_t>(notes, off + 4);
        const auto type = get<std::uint32_t>(notes, off + 8);
        const std::size_t name_off = off + 12;
        const std::size_t desc_off = name_off + ((namesz + 3ULL) & ~3ULL);
        const std::size_t next = desc_off + ((descsz + 3ULL) & ~3ULL);
        if (next > notes.size()) {
            throw std::invalid_argument("truncated ELF note");
        }
        if (namesz == 4 && std::memcmp(notes.data() + name_off, "Xen", 4) == 0 &&
            type == xen_elfnote_phys32_entry) {
            if (descsz == 8) {
                return static_cast<std::uint32_t>(get<std::uint64_t>(notes, desc_off));
            }
            if (descsz == 4) {
                return get<std::uint32_t>(notes, desc_off);
            }
            throw std::invalid_argument("malformed PVH entry note");
        }
        off = next;
    }
    return 0;
}

kvm_segment segment32(std::uint16_t selector, std::uint8_t type, bool system) {
    kvm_segment s{};
    s.limit = system ? 0x67 : 0xffffffff;
    s.selector = selector;
    s.type = type;
    s.present = 1;
    s.db = system ? 0 : 1;
    s.s = system ? 0 : 1;
    s.g = system ? 0 : 1;
    return s;
}

} // namespace

bool PvhImage::is_elf(std::span<const std::uint8_t> file) {
    return file.size() >= 4 && std::memcmp(file.data(),
                                           "\x7f"
                                           "ELF",
                                           4) == 0;
}

PvhImage PvhImage::parse(std::span<const std::uint8_t> file) {
    if (!is_elf(file) || file.size() < ehdr_size) {
        throw std::invalid_argument("not an ELF file");
    }
    if (file[4] != 2 || file[5] != 1 || get<std::uint16_t>(file, 18) != em_x86_64) {
        throw std::invalid_argument("not a 64-bit little-endian x86-64 ELF file");
    }
    const auto phoff = get<std::uint64_t>(file, 32);
    const auto phentsize = get<std::uint16_t>(file, 54);
    const auto phnum = get<std::uint16_t>(file, 56);
    if (phentsize != phdr_size || phoff + std::uint64_t{phnum} * phdr_size > file.size()) {
        throw std::invalid_argument("malformed ELF program headers");
    }
    PvhImage img;
    for (unsigned i = 0; i < phnum; ++i) {
        const std::size_t ph = phoff + i * phdr_size;
        const auto type = get<std::uint32_t>(file, ph);
        const auto offset = get<std::uint64_t>(file, ph + 8);
        const auto paddr = get<std::uint64_t>(file, ph + 24);
        const auto filesz = get<std::uint64_t>(file, ph + 32);
        const auto memsz = get<std::uint64_t>(file, ph + 40);
        if (type != pt_load && type != pt_note) {
            continue;
        }
        if (offset > file.size() || filesz > file.size() - offset || filesz > memsz) {
            throw std::invalid_argument("ELF segment " + std::to_string(i) +
                                        " lies outside the file");
        }
        const auto bytes = file.subspan(offset, filesz);
        if (type == pt_note) {
            if (const auto e = find_entry(bytes); e != 0) {
                img.entry = e;
            }
            continue;
        }
        img.segments.push_back({paddr, bytes, memsz});
        img.end = std::max(img.end, paddr + memsz);
    }
    if (img.entry == 0) {
        throw std::invalid_argument("an ELF file without a PVH entry note "
                                    "(XEN_ELFNOTE_PHYS32_ENTRY): not a vmlinux built with "
                                    "CONFIG_PVH");
    }
    if (img.segments.empty()) {
        throw std::invalid_argument("an ELF file without loadable segments");
    }
    return img;
}

void pvh_start(const GuestMemory& mem, const Vcpu& bsp, const PvhImage& image,
               std::uint64_t cmdline_addr, std::uint64_t initrd_addr, std::uint64_t initrd_size) {
    for (const auto& s : image.segments) {
        std::byte* dst = mem.at(s.paddr, s.memsz);
        std::memcpy(dst, s.data.data(), s.data.size());
        std::memset(dst + s.data.size(), 0, s.memsz - s.data.size());
    }

    const auto e820 = e820_map(mem);
    std::vector<std::uint8_t> memmap(e820.size() * 24);
    for (std::size_t i = 0; i < e820.size(); ++i) {
        put<std::uint64_t>(memmap, i * 24, e820[i].addr);
        put<std::uint64_t>(memmap, i * 24 + 8, e820[i].size);
        put<std::uint32_t>(memmap, i * 24 + 16, e820[i].type);
    }
    std::memcpy(mem.at(memmap_addr, memmap.size()), memmap.data(), memmap.size());

    std::vector<std::uint8_t> modlist(32);
    put<std::uint64_t>(modlist, 0, initrd_addr);
    put<std::uint64_t>(modlist, 8, initrd_size);
    std::memcpy(mem.at(modlist_addr, modlist.size()), modlist.data(), modlist.size());

    std::vector<std::uint8_t> info(56);
    put<std::uint32_t>(info, 0, hvm_start_magic);
    put<std::uint32_t>(info, 4, 1); // version
    put<std::uint32_t>(info, 12, initrd_size != 0 ? 1 : 0);
    put<std::uint64_t>(info, 16, modlist_addr);
    put<std::uint64_t>(info, 24, cmdline_addr);
    put<std::uint64_t>(info, 32, platform::acpi_base); // rsdp_paddr
    put<std::uint64_t>(info, 40, memmap_addr);
    put<std::uint32_t>(info, 48, static_cast<std::uint32_t>(e820.size()));
    std::memcpy(mem.at(start_info_addr, info.size()), info.data(), info.size());

    // A GDT matching the segment registers: Linux loads its own at once.
    const std::array<std::uint64_t, 4> gdt = {0, 0x00cf9b000000ffffULL, 0x00cf93000000ffffULL,
                                              0x00008b0000000067ULL};
    std::memcpy(mem.at(pvh_gdt_addr, sizeof(gdt)), gdt.data(), sizeof(gdt));

    kvm_sregs sregs = bsp.get_sregs();
    sregs.cs = segment32(pvh_cs, 11, false);
    sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = segment32(pvh_ds, 3, false);
    sregs.tr = segment32(pvh_tr, 11, true);
    sregs.gdt.base = pvh_gdt_addr;
    sregs.gdt.limit = sizeof(gdt) - 1;
    sregs.cr0 = long_mode::cr0_pe | long_mode::cr0_et;
    sregs.cr4 = 0;
    sregs.efer = 0;
    bsp.set_sregs(sregs);
    kvm_regs regs{};
    regs.rflags = 2;
    regs.rip = image.entry;
    regs.rbx = start_info_addr;
    bsp.set_regs(regs);
}

} // namespace vmfork
