// SPDX-License-Identifier: GPL-2.0
#include "vmfork/vmm/boot/linux_loader.h"

#include <array>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <stdexcept>
#include <sys/stat.h>
#include <unistd.h>

#include "vmfork/kvm.h"
#include "vmfork/system_error.h"
#include "vmfork/unique_fd.h"
#include "vmfork/vmm/boot/long_mode.h"
#include "vmfork/vmm/boot/pvh.h"
#include "vmfork/vmm/memory.h"
#include "vmfork/vmm/platform.h"

namespace vmfork {

namespace {

// Offsets in struct boot_params (arch/x86/include/uapi/asm/bootparam.h).
constexpr std::size_t bp_size = 4096;
constexpr std::size_t bp_acpi_rsdp_addr = 0x070;
constexpr std::size_t bp_e820_entries = 0x1e8;
constexpr std::size_t bp_hdr = 0x1f1;
constexpr std::size_t bp_e820_table = 0x2d0;
constexpr std::size_t bp_e820_max = 128;
// ... and in its setup header (file offsets, the same in boot_params).
constexpr std::size_t hdr_setup_sects = 0x1f1;
constexpr std::size_t hdr_boot_flag = 0x1fe;
constexpr std::size_t hdr_jump = 0x200;
constexpr std::size_t hdr_magic = 0x202;
constexpr std::size_t hdr_version = 0x206;
constexpr std::size_t hdr_type_of_loader = 0x210;
constexpr std::size_t hdr_loadflags = 0x211;
constexpr std::size_t hdr_ramdisk_image = 0x218;
constexpr std::size_t hdr_ramdisk_size = 0x21c;
constexpr std::size_t hdr_cmd_line_ptr = 0x228;
constexpr std::size_t hdr_initrd_addr_max = 0x22c;
constexpr std::size_t hdr_xloadflags = 0x236;
constexpr std::size_t hdr_cmdline_size = 0x238;
constexpr std::size_t hdr_init_size = 0x260;
constexpr std::uint16_t min_version = 0x20c; // xloadflags: the 64-bit entry
constexpr std::uint16_t xlf_kernel_64 = 1;
constexpr std::uint8_t loadflags_loaded_high = 1;
constexpr std::uint8_t loader_undefined = 0xff;
constexpr std::uint64_t entry_64_offset = 0x200;

constexpr std::uint16_t boot_cs = 0x10, boot_ds = 0x18; // the boot protocol's selectors
constexpr std::uint64_t page = 4096;
constexpr std::uint32_t pvh_cmdline_size = 2048; // COMMAND_LINE_SIZE on x86

template <typename T> T get(std::span<const std::uint8_t> b, std::size_t off) {
    T v{};
    std::memcpy(&v, b.data() + off, sizeof(T));
    return v;
}

template <typename T> void put(std::span<std::uint8_t> b, std::size_t off, T v) {
    std::memcpy(b.data() + off, &v, sizeof(T));
}

std::vector<std::uint8_t> read_file(const std::string& path, const char* what) {
    const UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    struct stat st {};
    if (!fd || ::fstat(fd.get(), &st) != 0) {
        throw SystemError::from_errno("cannot open the " + std::string(what) + " " + path);
    }
    if (!S_ISREG(st.st_mode)) {
        throw SystemError(EINVAL, "the " + std::string(what) + " " + path + " is not a file");
    }
    std::vector<std::uint8_t> data(static_cast<std::size_t>(st.st_size));
    std::size_t done = 0;
    while (done < data.size()) {
        const ssize_t n = ::read(fd.get(), data.data() + done, data.size() - done);
        if (n <= 0) {
            throw SystemError(n == 0 ? EIO : errno,
                              "cannot read the " + std::string(what) + " " + path);
        }
        done += static_cast<std::size_t>(n);
    }
    return data;
}

std::uint64_t align_down(std::uint64_t v, std::uint64_t a) {
    return v & ~(a - 1);
}

} // namespace

BzImage BzImage::parse(std::span<const std::uint8_t> file) {
    if (file.size() < 0x300 || get<std::uint16_t>(file, hdr_boot_flag) != 0xaa55 ||
        std::memcmp(file.data() + hdr_magic, "HdrS", 4) != 0) {
        throw std::invalid_argument("not a Linux bzImage (no \"HdrS\" setup header)");
    }
    BzImage img;
    img.version = get<std::uint16_t>(file, hdr_version);
    if (img.version < min_version) {
        throw std::invalid_argument("boot protocol " + std::to_string(img.version >> 8) + "." +
                                    std::to_string(img.version & 0xff) +
                                    " is too old: the 64-bit entry needs 2.12");
    }
    if ((get<std::uint16_t>(file, hdr_xloadflags) & xlf_kernel_64) == 0) {
        throw std::invalid_argument("the kernel has no 64-bit entry point (XLF_KERNEL_64)");
    }
    unsigned setup_sects = file[hdr_setup_sects];
    if (setup_sects == 0) {
        setup_sects = 4;
    }
    const std::size_t kernel_off = (setup_sects + 1) * 512ULL;
    const std::size_t hdr_end = hdr_jump + 2 + file[hdr_jump + 1];
    if (kernel_off >= file.size() || hdr_end > kernel_off || hdr_end > bp_e820_table) {
        throw std::invalid_argument("truncated bzImage (setup of " + std::to_string(setup_sects) +
                                    " sectors, file of " + std::to_string(file.size()) + " bytes)");
    }
    img.setup_header.assign(file.begin() + bp_hdr, file.begin() + static_cast<long>(hdr_end));
    img.kernel = file.subspan(kernel_off);
    img.initrd_addr_max = get<std::uint32_t>(file, hdr_initrd_addr_max);
    img.cmdline_size = get<std::uint32_t>(file, hdr_cmdline_size);
    img.init_size = get<std::uint32_t>(file, hdr_init_size);
    return img;
}

std::vector<E820Entry> e820_map(const GuestMemory& mem) {
    std::vector<E820Entry> map = {
        {0, platform::bios_reserved_start, 1},
        {platform::bios_reserved_start, platform::bios_reserved_end - platform::bios_reserved_start,
         2},
        {platform::bios_reserved_end, mem.low_size() - platform::bios_reserved_end, 1},
    };
    if (mem.high_size() != 0) {
        map.push_back({GuestMemory::high_ram_base, mem.high_size(), 1});
    }
    return map;
}

LinuxLoader::LinuxLoader(const std::string& kernel_path, const std::string& initrd_path,
                         std::string cmdline)
    : kernel_path_(kernel_path), kernel_file_(read_file(kernel_path, "kernel")),
      initrd_path_(initrd_path), cmdline_(std::move(cmdline)) {
    std::uint32_t cmdline_max = pvh_cmdline_size;
    try {
        if (PvhImage::is_elf(kernel_file_)) {
            pvh_ = PvhImage::parse(kernel_file_);
        } else {
            image_ = BzImage::parse(kernel_file_);
            cmdline_max = std::max<std::uint32_t>(image_.cmdline_size, 256);
        }
    } catch (const std::invalid_argument& e) {
        throw SystemError(ENOEXEC, kernel_path + ": " + e.what());
    }
    if (!initrd_path.empty()) {
        initrd_ = read_file(initrd_path, "initrd");
    }
    if (cmdline_.size() + 1 > cmdline_max) {
        throw SystemError(E2BIG, "the kernel command line is " + std::to_string(cmdline_.size()) +
                                     " bytes; this kernel takes at most " +
                                     std::to_string(cmdline_max - 1));
    }
}

void LinuxLoader::load_pvh(const GuestMemory& mem, const Vcpu& bsp) {
    const std::uint64_t initrd_room = (initrd_.size() + page - 1) & ~(page - 1);
    const std::uint64_t needs = pvh_->end + (16ULL << 20) + initrd_room;
    if (mem.low_size() < needs) {
        throw SystemError(EINVAL, "guest memory of " + std::to_string(mem.size() >> 20) +
                                      " MiB is too small for " + kernel_path_ +
                                      (initrd_.empty() ? "" : " and " + initrd_path_) +
                                      ": give it at least " + std::to_string((needs >> 20) + 1) +
                                      " MiB");
    }
    std::uint64_t initrd_addr = 0;
    if (!initrd_.empty()) {
        initrd_addr = align_down(mem.low_size() - initrd_.size(), page);
        std::memcpy(mem.at(initrd_addr, initrd_.size()), initrd_.data(), initrd_.size());
    }
    std::memset(mem.at(cmdline_addr, cmdline_.size() + 1), 0, cmdline_.size() + 1);
    std::memcpy(mem.at(cmdline_addr, cmdline_.size()), cmdline_.data(), cmdline_.size());
    pvh_start(mem, bsp, *pvh_, cmdline_addr, initrd_addr, initrd_.size());
}

void LinuxLoader::load(const GuestMemory& mem, const std::vector<const Vcpu*>& vcpus) {
    if (pvh_) {
        load_pvh(mem, *vcpus.at(0));
        return;
    }
    // The kernel decompresses itself to kernel_run_addr and needs init_size from there,
    // plus room for its page tables and early allocations above: 16 MiB more.
    const std::uint64_t kernel_needs = kernel_run_addr + image_.init_size + (16ULL << 20);
    const std::uint64_t initrd_room = (initrd_.size() + page - 1) & ~(page - 1);
    if (mem.low_size() < kernel_needs + initrd_room) {
        throw SystemError(
            EINVAL, "guest memory of " + std::to_string(mem.size() >> 20) +
                        " MiB is too small for " + kernel_path_ +
                        (initrd_.empty() ? "" : " and " + initrd_path_) + ": give it at least " +
                        std::to_string(((kernel_needs + initrd_room) >> 20) + 1) + " MiB");
    }
    if (kernel_addr + image_.kernel.size() > kernel_run_addr + image_.init_size) {
        throw SystemError(ENOEXEC, kernel_path_ + ": its compressed part does not fit below "
                                                  "its decompressed size (init_size)");
    }
    std::memcpy(mem.at(kernel_addr, image_.kernel.size()), image_.kernel.data(),
                image_.kernel.size());

    std::uint64_t initrd_addr = 0;
    if (!initrd_.empty()) {
        const std::uint64_t top =
            std::min<std::uint64_t>(mem.low_size(), std::uint64_t{image_.initrd_addr_max} + 1);
        initrd_addr = align_down(top - initrd_.size(), page);
        std::memcpy(mem.at(initrd_addr, initrd_.size()), initrd_.data(), initrd_.size());
    }
    std::memset(mem.at(cmdline_addr, cmdline_.size() + 1), 0, cmdline_.size() + 1);
    std::memcpy(mem.at(cmdline_addr, cmdline_.size()), cmdline_.data(), cmdline_.size());

    std::array<std::uint8_t, bp_size> bp{};
    std::memcpy(bp.data() + bp_hdr, image_.setup_header.data(), image_.setup_header.size());
    put<std::uint8_t>(bp, hdr_type_of_loader, loader_undefined);
    put<std::uint8_t>(bp, hdr_loadflags, bp[hdr_loadflags] | loadflags_loaded_high);
    put<std::uint32_t>(bp, hdr_cmd_line_ptr, cmdline_addr);
    put<std::uint32_t>(bp, hdr_ramdisk_image, static_cast<std::uint32_t>(initrd_addr));
    put<std::uint32_t>(bp, hdr_ramdisk_size, static_cast<std::uint32_t>(initrd_.size()));
    put<std::uint64_t>(bp, bp_acpi_rsdp_addr, platform::acpi_base);
    const auto e820 = e820_map(mem);
    static_assert(bp_e820_max >= 4);
    put<std::uint8_t>(bp, bp_e820_entries, static_cast<std::uint8_t>(e820.size()));
    for (std::size_t i = 0; i < e820.size(); ++i) {
        const std::size_t off = bp_e820_table + i * 20;
        put<std::uint64_t>(bp, off, e820[i].addr);
        put<std::uint64_t>(bp, off + 8, e820[i].size);
        put<std::uint32_t>(bp, off + 16, e820[i].type);
    }
    mem.write(boot_params_addr, bp);

    // GDT: null, null, the boot code segment (0x10), the boot data segment (0x18).
    const std::array<std::uint64_t, 4> gdt = {0, 0, long_mode::gdt_code64, long_mode::gdt_data};
    mem.write(gdt_addr, gdt);
    const std::uint64_t cr3 = long_mode::write_identity_map(mem, page_tables_addr);

    const Vcpu& bsp = *vcpus.at(0);
    kvm_sregs sregs = bsp.get_sregs();
    long_mode::enter(sregs, cr3, gdt_addr, sizeof(gdt) - 1, boot_cs, boot_ds);
    bsp.set_sregs(sregs);
    kvm_regs regs{};
    regs.rflags = 2;
    regs.rip = kernel_addr + entry_64_offset;
    regs.rsi = boot_params_addr;
    bsp.set_regs(regs);
}

} // namespace vmfork
