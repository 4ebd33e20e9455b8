// SPDX-License-Identifier: GPL-2.0
#include "vmfork/kvm.h"

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <memory>
#include <mutex>
#include <sys/ioctl.h>
#include <sys/mman.h>

#include "vmfork/device_access.h"
#include "vmfork/ioctl.h"
#include "vmfork/system_error.h"

namespace vmfork {

namespace {

// A kvm_msrs / kvm_cpuid2 / kvm_msr_list header of HeaderSize bytes (the C size, see
// kvm_c_abi) followed by n entries, in one zeroed, aligned buffer.
template <typename Header, typename Entry, std::size_t HeaderSize> class FlexBuffer {
public:
    explicit FlexBuffer(std::size_t n)
        : storage_((HeaderSize + n * sizeof(Entry) + 7) / sizeof(std::uint64_t)) {}
    Header* header() noexcept { return reinterpret_cast<Header*>(storage_.data()); }
    Entry* entries() noexcept {
        return reinterpret_cast<Entry*>(reinterpret_cast<char*>(storage_.data()) + HeaderSize);
    }

private:
    std::vector<std::uint64_t> storage_;
};

} // namespace

// --- Kvm -------------------------------------------------------------------------------

Kvm Kvm::open(const std::string& path) {
    UniqueFd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC));
    if (!fd) {
        const int err = errno;
        if (err == ENOENT) {
            throw SystemError(err, path + " not found: load kvm_intel or kvm_amd "
                                          "(`modprobe kvm_intel` / `modprobe kvm_amd`)");
        }
        if (err == EACCES) {
            throw SystemError(err, permission_denied_message(path));
        }
        throw SystemError(err, "cannot open " + path);
    }
    const int version = xioctl(fd.get(), KVM_GET_API_VERSION, 0, "KVM_GET_API_VERSION");
    if (version != KVM_API_VERSION) {
        throw SystemError(EINVAL, path + " speaks KVM API " + std::to_string(version));
    }
    return Kvm(std::move(fd));
}

int Kvm::check_extension(long cap) const {
    return xioctl(fd(), KVM_CHECK_EXTENSION, cap, "KVM_CHECK_EXTENSION");
}

std::size_t Kvm::vcpu_mmap_size() const {
    return static_cast<std::size_t>(
        xioctl(fd(), KVM_GET_VCPU_MMAP_SIZE, 0, "KVM_GET_VCPU_MMAP_SIZE"));
}

std::vector<std::uint32_t> Kvm::msr_index_list() const {
    kvm_msr_list probe{};
    // The first call fails with E2BIG and says how many there are.
    if (::ioctl(fd(), kvm_c_abi::get_msr_index_list, &probe) < 0 && errno != E2BIG) {
        throw SystemError::from_errno("KVM_GET_MSR_INDEX_LIST");
    }
    FlexBuffer<kvm_msr_list, std::uint32_t, kvm_c_abi::msr_list_header> buf(probe.nmsrs);
    buf.header()->nmsrs = probe.nmsrs;
    xioctl(fd(), kvm_c_abi::get_msr_index_list, buf.header(), "KVM_GET_MSR_INDEX_LIST");
    return {buf.entries(), buf.entries() + buf.header()->nmsrs};
}

std::vector<kvm_cpuid_entry2> Kvm::supported_cpuid() const {
    for (std::size_t n = 64;; n *= 2) {
        FlexBuffer<kvm_cpuid2, kvm_cpuid_entry2, kvm_c_abi::cpuid2_header> buf(n);
        buf.header()->nent = static_cast<std::uint32_t>(n);
        if (::ioctl(fd(), kvm_c_abi::get_supported_cpuid, buf.header()) == 0) {
            return {buf.entries(), buf.entries() + buf.header()->nent};
        }
        if (errno != E2BIG || n > 4096) {
            throw SystemError::from_errno("KVM_GET_SUPPORTED_CPUID");
        }
    }
}

Vm Kvm::create_vm() const {
    UniqueFd vm(xioctl(fd(), KVM_CREATE_VM, 0UL, "KVM_CREATE_VM"));
    std::size_t xsave = 0;
    if (check_extension(KVM_CAP_XSAVE) > 0) {
        xsave = std::max<std::size_t>(kvm_c_abi::xsave_size,
                                      static_cast<std::size_t>(check_extension(KVM_CAP_XSAVE2)));
    }
    return {std::move(vm), vcpu_mmap_size(), xsave};
}

// --- Vm --------------------------------------------------------------------------------

Vcpu Vm::create_vcpu(unsigned id) const {
    UniqueFd fd(
        xioctl(fd_.get(), KVM_CREATE_VCPU, static_cast<unsigned long>(id), "KVM_CREATE_VCPU"));
    Mapping run(run_size_, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0,
                "kvm_run of vCPU " + std::to_string(id));
    return {id, std::move(fd), std::move(run), xsave_size_};
}

void Vm::set_user_memory_region(std::uint32_t slot, std::uint64_t gpa, std::uint64_t size,
                                void* host) const {
    kvm_userspace_memory_region region{};
    region.slot = slot;
    region.guest_phys_addr = gpa;
    region.memory_size = size;
    region.userspace_addr = reinterpret_cast<std::uint64_t>(host);
    xioctl(fd(), KVM_SET_USER_MEMORY_REGION, &region, "KVM_SET_USER_MEMORY_REGION");
}

void Vm::set_tss_addr(std::uint64_t addr) const {
    xioctl(fd(), KVM_SET_TSS_ADDR, static_cast<unsigned long>(addr), "KVM_SET_TSS_ADDR");
}

void Vm::set_identity_map_addr(std::uint64_t addr) const {
    xioctl(fd(), KVM_SET_IDENTITY_MAP_ADDR, &addr, "KVM_SET_IDENTITY_MAP_ADDR");
}

void Vm::create_irqchip() const {
    xioctl(fd(), KVM_CREATE_IRQCHIP, 0, "KVM_CREATE_IRQCHIP");
}

void Vm::create_pit2() const {
    kvm_pit_config config{};
    xioctl(fd(), KVM_CREATE_PIT2, &config, "KVM_CREATE_PIT2");
}

void Vm::irq_line(std::uint32_t gsi, bool level) const {
    kvm_irq_level irq{};
    irq.irq = gsi;
    irq.level = level ? 1 : 0;
    xioctl(fd(), KVM_IRQ_LINE, &irq, "KVM_IRQ_LINE");
}

void Vm::signal_msi(std::uint32_t apic_id, std::uint8_t vector) const {
    kvm_msi msi{};
    msi.address_lo = 0xfee00000U | (apic_id << 12); // physical destination: APIC ID
    msi.data = vector;                              // fixed delivery, edge
    xioctl(fd(), KVM_SIGNAL_MSI, &msi, "KVM_SIGNAL_MSI");
}

kvm_irqchip Vm::get_irqchip(std::uint32_t chip_id) const {
    kvm_irqchip chip{};
    chip.chip_id = chip_id;
    xioctl(fd(), KVM_GET_IRQCHIP, &chip, "KVM_GET_IRQCHIP");
    return chip;
}

void Vm::set_irqchip(const kvm_irqchip& chip) const {
    kvm_irqchip copy = chip;
    xioctl(fd(), KVM_SET_IRQCHIP, &copy, "KVM_SET_IRQCHIP");
}

kvm_pit_state2 Vm::get_pit2() const {
    kvm_pit_state2 pit{};
    xioctl(fd(), KVM_GET_PIT2, &pit, "KVM_GET_PIT2");
    return pit;
}

void Vm::set_pit2(const kvm_pit_state2& pit) const {
    kvm_pit_state2 copy = pit;
    xioctl(fd(), KVM_SET_PIT2, &copy, "KVM_SET_PIT2");
}

kvm_clock_data Vm::get_clock() const {
    kvm_clock_data clock{};
    xioctl(fd(), KVM_GET_CLOCK, &clock, "KVM_GET_CLOCK");
    return clock;
}

void Vm::set_clock(const kvm_clock_data& clock) const {
    // Only the clock value: the other fields (flags, realtime, host_tsc) are outputs.
    kvm_clock_data copy{};
    copy.clock = clock.clock;
    xioctl(fd(), KVM_SET_CLOCK, &copy, "KVM_SET_CLOCK");
}

// --- Vcpu ------------------------------------------------------------------------------

int Vcpu::run() const {
    if (::ioctl(fd(), KVM_RUN, 0) < 0) {
        const int err = errno;
        if (err == EINTR || err == EAGAIN) {
            return -err;
        }
        throw SystemError(err, "KVM_RUN on vCPU " + std::to_string(id_));
    }
    return 0;
}

void Vcpu::set_cpuid(const std::vector<kvm_cpuid_entry2>& entries) const {
    FlexBuffer<kvm_cpuid2, kvm_cpuid_entry2, kvm_c_abi::cpuid2_header> buf(entries.size());
    buf.header()->nent = static_cast<std::uint32_t>(entries.size());
    std::copy(entries.begin(), entries.end(), buf.entries());
    xioctl(fd(), kvm_c_abi::set_cpuid2, buf.header(), "KVM_SET_CPUID2");
}

std::vector<kvm_cpuid_entry2> Vcpu::get_cpuid() const {
    for (std::size_t n = 64;; n *= 2) {
        FlexBuffer<kvm_cpuid2, kvm_cpuid_entry2, kvm_c_abi::cpuid2_header> buf(n);
        buf.header()->nent = static_cast<std::uint32_t>(n);
        if (::ioctl(fd(), kvm_c_abi::get_cpuid2, buf.header()) == 0) {
            return {buf.entries(), buf.entries() + buf.header()->nent};
        }
        if (errno != E2BIG || n > 4096) {
            throw SystemError::from_errno("KVM_GET_CPUID2");
        }
    }
}

#define VMFORK_GET_SET(type, name, get_req, set_req)                                               \
    type Vcpu::get_##name() const {                                                                \
        type v{};                                                                                  \
        xioctl(fd(), get_req, &v, #get_req);                                                       \
        return v;                                                                                  \
    }                                                                                              \
    void Vcpu::set_##name(const type& v) const {                                                   \
        type copy = v;                                                                             \
        xioctl(fd(), set_req, &copy, #set_req);                                                    \
    }

VMFORK_GET_SET(kvm_regs, regs, KVM_GET_REGS, KVM_SET_REGS)
VMFORK_GET_SET(kvm_sregs, sregs, KVM_GET_SREGS, KVM_SET_SREGS)
VMFORK_GET_SET(kvm_fpu, fpu, KVM_GET_FPU, KVM_SET_FPU)
VMFORK_GET_SET(kvm_xcrs, xcrs, KVM_GET_XCRS, KVM_SET_XCRS)
VMFORK_GET_SET(kvm_lapic_state, lapic, KVM_GET_LAPIC, KVM_SET_LAPIC)
VMFORK_GET_SET(kvm_vcpu_events, vcpu_events, KVM_GET_VCPU_EVENTS, KVM_SET_VCPU_EVENTS)
VMFORK_GET_SET(kvm_mp_state, mp_state, KVM_GET_MP_STATE, KVM_SET_MP_STATE)
VMFORK_GET_SET(kvm_debugregs, debugregs, KVM_GET_DEBUGREGS, KVM_SET_DEBUGREGS)
#undef VMFORK_GET_SET

std::vector<std::uint8_t> Vcpu::get_xsave() const {
    if (xsave_size_ == 0) {
        return {};
    }
    std::vector<std::uint8_t> buf(xsave_size_);
    if (xsave_size_ > kvm_c_abi::xsave_size) {
        xioctl(fd(), kvm_c_abi::get_xsave2, buf.data(), "KVM_GET_XSAVE2");
    } else {
        xioctl(fd(), kvm_c_abi::get_xsave, buf.data(), "KVM_GET_XSAVE");
    }
    return buf;
}

void Vcpu::set_xsave(const std::vector<std::uint8_t>& xsave) const {
    if (xsave.size() < kvm_c_abi::xsave_size || xsave.size() != xsave_size_) {
        throw SystemError(EINVAL, "KVM_SET_XSAVE: " + std::to_string(xsave.size()) +
                                      " bytes of state, this host's KVM uses " +
                                      std::to_string(xsave_size_));
    }
    std::vector<std::uint8_t> copy = xsave;
    xioctl(fd(), kvm_c_abi::set_xsave, copy.data(), "KVM_SET_XSAVE");
}

std::uint32_t Vcpu::get_tsc_khz() const {
    return static_cast<std::uint32_t>(xioctl(fd(), KVM_GET_TSC_KHZ, 0, "KVM_GET_TSC_KHZ"));
}

void Vcpu::set_tsc_khz(std::uint32_t khz) const {
    xioctl(fd(), KVM_SET_TSC_KHZ, static_cast<unsigned long>(khz), "KVM_SET_TSC_KHZ");
}

std::size_t Vcpu::try_get_msrs(std::vector<kvm_msr_entry>& entries) const {
    FlexBuffer<kvm_msrs, kvm_msr_entry, kvm_c_abi::msrs_header> buf(entries.size());
    buf.header()->nmsrs = static_cast<std::uint32_t>(entries.size());
    std::copy(entries.begin(), entries.end(), buf.entries());
    const int n = xioctl(fd(), kvm_c_abi::get_msrs, buf.header(), "KVM_GET_MSRS");
    std::copy(buf.entries(), buf.entries() + entries.size(), entries.begin());
    return static_cast<std::size_t>(n);
}

std::vector<kvm_msr_entry> Vcpu::get_msrs(const std::vector<std::uint32_t>& indices) const {
    std::vector<kvm_msr_entry> entries(indices.size());
    for (std::size_t i = 0; i < indices.size(); ++i) {
        entries[i].index = indices[i];
    }
    const std::size_t n = try_get_msrs(entries);
    if (n != entries.size()) {
        std::array<char, 16> hex{};
        std::snprintf(hex.data(), hex.size(), "%#x", entries[n].index);
        throw SystemError(EINVAL, std::string("KVM_GET_MSRS: MSR ") + hex.data() + " not readable");
    }
    return entries;
}

void Vcpu::set_msrs(const std::vector<kvm_msr_entry>& entries) const {
    FlexBuffer<kvm_msrs, kvm_msr_entry, kvm_c_abi::msrs_header> buf(entries.size());
    buf.header()->nmsrs = static_cast<std::uint32_t>(entries.size());
    std::copy(entries.begin(), entries.end(), buf.entries());
    const auto n =
        static_cast<std::size_t>(xioctl(fd(), kvm_c_abi::set_msrs, buf.header(), "KVM_SET_MSRS"));
    if (n != entries.size()) {
        std::array<char, 96> msg{};
        std::snprintf(msg.data(), msg.size(), "KVM_SET_MSRS: MSR %#x = %#llx refused",
                      entries[n].index, static_cast<unsigned long long>(entries[n].data));
        throw SystemError(EINVAL, msg.data());
    }
}

namespace {

kvm_device_attr tsc_offset_attr(std::uint64_t* value) {
    kvm_device_attr attr{};
    attr.group = KVM_VCPU_TSC_CTRL;
    attr.attr = KVM_VCPU_TSC_OFFSET;
    attr.addr = reinterpret_cast<std::uint64_t>(value);
    return attr;
}

} // namespace

std::optional<std::uint64_t> Vcpu::tsc_offset() const {
    std::uint64_t offset = 0;
    kvm_device_attr attr = tsc_offset_attr(&offset);
    if (::ioctl(fd(), KVM_HAS_DEVICE_ATTR, &attr) < 0) {
        return std::nullopt;
    }
    xioctl(fd(), KVM_GET_DEVICE_ATTR, &attr, "KVM_GET_DEVICE_ATTR(KVM_VCPU_TSC_OFFSET)");
    return offset;
}

void Vcpu::set_tsc_offset(std::uint64_t offset) const {
    kvm_device_attr attr = tsc_offset_attr(&offset);
    xioctl(fd(), KVM_SET_DEVICE_ATTR, &attr, "KVM_SET_DEVICE_ATTR(KVM_VCPU_TSC_OFFSET)");
}

bool Vcpu::set_guest_tsc(std::uint64_t tsc) const {
    constexpr std::uint32_t msr_ia32_tsc = 0x10;
    const auto offset = tsc_offset();
    if (!offset) {
        return false;
    }
    const std::uint64_t now = get_msrs({msr_ia32_tsc})[0].data;
    set_tsc_offset(*offset + (tsc - now)); // modulo 2^64, as the hardware adds it
    return true;
}

const std::vector<std::uint32_t>& saveable_msrs(const Kvm& kvm, const Vcpu& probe_vcpu) {
    static std::once_flag once;
    static std::vector<std::uint32_t> list;
    std::call_once(once, [&] {
        for (std::uint32_t index : kvm.msr_index_list()) {
            std::vector<kvm_msr_entry> one(1);
            one[0].index = index;
            if (probe_vcpu.try_get_msrs(one) == 1) {
                list.push_back(index);
            }
        }
    });
    return list;
}

std::string exit_reason_name(std::uint32_t reason) {
    switch (reason) {
#define NAME(r)                                                                                    \
    case r:                                                                                        \
        return #r;
        NAME(KVM_EXIT_UNKNOWN)
        NAME(KVM_EXIT_EXCEPTION)
        NAME(KVM_EXIT_IO)
        NAME(KVM_EXIT_HYPERCALL)
        NAME(KVM_EXIT_DEBUG)
        NAME(KVM_EXIT_HLT)
        NAME(KVM_EXIT_MMIO)
        NAME(KVM_EXIT_IRQ_WINDOW_OPEN)
        NAME(KVM_EXIT_SHUTDOWN)
        NAME(KVM_EXIT_FAIL_ENTRY)
        NAME(KVM_EXIT_INTR)
        NAME(KVM_EXIT_SET_TPR)
        NAME(KVM_EXIT_TPR_ACCESS)
        NAME(KVM_EXIT_NMI)
        NAME(KVM_EXIT_INTERNAL_ERROR)
        NAME(KVM_EXIT_OSI)
        NAME(KVM_EXIT_PAPR_HCALL)
        NAME(KVM_EXIT_WATCHDOG)
        NAME(KVM_EXIT_EPR)
        NAME(KVM_EXIT_SYSTEM_EVENT)
        NAME(KVM_EXIT_IOAPIC_EOI)
        NAME(KVM_EXIT_HYPERV)
        NAME(KVM_EXIT_X86_RDMSR)
        NAME(KVM_EXIT_X86_WRMSR)
        NAME(KVM_EXIT_DIRTY_RING_FULL)
        NAME(KVM_EXIT_AP_RESET_HOLD)
        NAME(KVM_EXIT_X86_BUS_LOCK)
#undef NAME
    default:
        return "unknown exit reason " + std::to_string(reason);
    }
}

} // namespace vmfork
