// SPDX-License-Identifier: GPL-2.0
#pragma once

#include <cstdint>
#include <linux/kvm.h>
#include <optional>
#include <string>
#include <vector>

#include "vmfork/mapping.h"
#include "vmfork/unique_fd.h"

namespace vmfork {

// <linux/kvm.h> declares its flexible arrays with __DECLARE_FLEX_ARRAY, an empty struct
// plus an array: in C++ the empty struct takes a byte, so sizeof(kvm_cpuid2) is 12, not
// 8, the entries move, and every ioctl number built from those sizes is wrong (EINVAL).
// These are the C sizes and the ioctl numbers made from them.
namespace kvm_c_abi {
inline constexpr std::size_t cpuid2_header = 8;   // nent, padding
inline constexpr std::size_t msrs_header = 8;     // nmsrs, pad
inline constexpr std::size_t msr_list_header = 4; // nmsrs
inline constexpr std::size_t xsave_size = 4096;   // struct kvm_xsave without extra[]
inline constexpr unsigned long get_msr_index_list = _IOC(_IOC_READ | _IOC_WRITE, KVMIO, 0x02, 4);
inline constexpr unsigned long get_supported_cpuid = _IOC(_IOC_READ | _IOC_WRITE, KVMIO, 0x05, 8);
inline constexpr unsigned long get_msrs = _IOC(_IOC_READ | _IOC_WRITE, KVMIO, 0x88, 8);
inline constexpr unsigned long set_msrs = _IOC(_IOC_WRITE, KVMIO, 0x89, 8);
inline constexpr unsigned long set_cpuid2 = _IOC(_IOC_WRITE, KVMIO, 0x90, 8);
inline constexpr unsigned long get_cpuid2 = _IOC(_IOC_READ | _IOC_WRITE, KVMIO, 0x91, 8);
inline constexpr unsigned long get_xsave = _IOC(_IOC_READ, KVMIO, 0xa4, 4096);
inline constexpr unsigned long set_xsave = _IOC(_IOC_WRITE, KVMIO, 0xa5, 4096);
inline constexpr unsigned long get_xsave2 = _IOC(_IOC_READ, KVMIO, 0xcf, 4096);
} // namespace kvm_c_abi

class Vcpu;
class Vm;

// The KVM system fd (/dev/kvm): capabilities, the MSR list, supported CPUID, new VMs.
// Every ioctl error throws SystemError naming the ioctl.
class Kvm {
public:
    static constexpr const char* default_path = "/dev/kvm";

    // Throws SystemError with a hint when /dev/kvm is missing or not accessible.
    static Kvm open(const std::string& path = default_path);

    [[nodiscard]] int check_extension(long cap) const;
    [[nodiscard]] std::size_t vcpu_mmap_size() const;
    // KVM_GET_MSR_INDEX_LIST: every MSR KVM may save, before probing.
    [[nodiscard]] std::vector<std::uint32_t> msr_index_list() const;
    [[nodiscard]] std::vector<kvm_cpuid_entry2> supported_cpuid() const;
    [[nodiscard]] Vm create_vm() const;
    [[nodiscard]] int fd() const noexcept { return fd_.get(); }

private:
    explicit Kvm(UniqueFd fd) noexcept : fd_(std::move(fd)) {}
    UniqueFd fd_;
};

// One KVM VM (bound to this process): memslots, in-kernel irqchip and PIT, kvmclock.
class Vm {
public:
    [[nodiscard]] Vcpu create_vcpu(unsigned id) const;

    void set_user_memory_region(std::uint32_t slot, std::uint64_t gpa, std::uint64_t size,
                                void* host) const;
    void set_tss_addr(std::uint64_t addr) const;
    void set_identity_map_addr(std::uint64_t addr) const;
    void create_irqchip() const;
    void create_pit2() const;
    // KVM_IRQ_LINE: the level of a GSI of the in-kernel irqchip.
    void irq_line(std::uint32_t gsi, bool level) const;
    // KVM_SIGNAL_MSI: vector, fixed delivery, edge, to the LAPIC whose ID is apic_id.
    void signal_msi(std::uint32_t apic_id, std::uint8_t vector) const;

    [[nodiscard]] kvm_irqchip get_irqchip(std::uint32_t chip_id) const;
    void set_irqchip(const kvm_irqchip& chip) const;
    [[nodiscard]] kvm_pit_state2 get_pit2() const;
    void set_pit2(const kvm_pit_state2& pit) const;
    [[nodiscard]] kvm_clock_data get_clock() const;
    void set_clock(const kvm_clock_data& clock) const;

    [[nodiscard]] int fd() const noexcept { return fd_.get(); }

private:
    friend class Kvm;
    Vm(UniqueFd fd, std::size_t run_size, std::size_t xsave_size) noexcept
        : fd_(std::move(fd)), run_size_(run_size), xsave_size_(xsave_size) {}
    UniqueFd fd_;
    std::size_t run_size_;   // KVM_GET_VCPU_MMAP_SIZE
    std::size_t xsave_size_; // KVM_CAP_XSAVE2 (at least sizeof(kvm_xsave)), 0 without XSAVE
};

// One vCPU with its mmap'd kvm_run. State getters and setters are the standard
// KVM_GET_* / KVM_SET_* ioctls.
class Vcpu {
public:
    [[nodiscard]] unsigned id() const noexcept { return id_; }
    [[nodiscard]] int fd() const noexcept { return fd_.get(); }
    [[nodiscard]] kvm_run* run_area() const noexcept { return static_cast<kvm_run*>(run_.get()); }
    // KVM_RUN: returns 0, or -errno for EINTR/EAGAIN (the caller loops); throws on others.
    [[nodiscard]] int run() const;

    void set_cpuid(const std::vector<kvm_cpuid_entry2>& entries) const;
    [[nodiscard]] std::vector<kvm_cpuid_entry2> get_cpuid() const;
    [[nodiscard]] kvm_regs get_regs() const;
    void set_regs(const kvm_regs& regs) const;
    [[nodiscard]] kvm_sregs get_sregs() const;
    void set_sregs(const kvm_sregs& sregs) const;
    [[nodiscard]] kvm_fpu get_fpu() const;
    void set_fpu(const kvm_fpu& fpu) const;
    // KVM_GET_XSAVE2 when KVM_CAP_XSAVE2 says more than 4 KiB, else KVM_GET_XSAVE;
    // empty without KVM_CAP_XSAVE (then use get_fpu()).
    [[nodiscard]] std::vector<std::uint8_t> get_xsave() const;
    void set_xsave(const std::vector<std::uint8_t>& xsave) const;
    [[nodiscard]] kvm_xcrs get_xcrs() const;
    void set_xcrs(const kvm_xcrs& xcrs) const;
    [[nodiscard]] kvm_lapic_state get_lapic() const;
    void set_lapic(const kvm_lapic_state& lapic) const;
    [[nodiscard]] kvm_vcpu_events get_vcpu_events() const;
    void set_vcpu_events(const kvm_vcpu_events& events) const;
    [[nodiscard]] kvm_mp_state get_mp_state() const;
    void set_mp_state(const kvm_mp_state& mp) const;
    [[nodiscard]] kvm_debugregs get_debugregs() const;
    void set_debugregs(const kvm_debugregs& dregs) const;
    [[nodiscard]] std::uint32_t get_tsc_khz() const;
    void set_tsc_khz(std::uint32_t khz) const;
    // Sets the guest TSC to tsc now, through the KVM_VCPU_TSC_OFFSET attribute: a
    // host write of MSR_IA32_TSC within a second of the VM's last TSC write is taken
    // as an attempt to synchronise the vCPUs and ignored (kvm_synchronize_tsc()).
    // Returns false when the kernel lacks the attribute (before 5.16).
    [[nodiscard]] bool set_guest_tsc(std::uint64_t tsc) const;
    // The KVM_VCPU_TSC_OFFSET attribute (guest TSC = host TSC + offset without TSC
    // scaling); nullopt where KVM lacks it (before 5.16).
    [[nodiscard]] std::optional<std::uint64_t> tsc_offset() const;
    void set_tsc_offset(std::uint64_t offset) const;
    // KVM_GET_MSRS for indices: throws unless every one was read.
    [[nodiscard]] std::vector<kvm_msr_entry>
    get_msrs(const std::vector<std::uint32_t>& indices) const;
    // How many of the entries (from the first) KVM_GET_MSRS read: the probe.
    [[nodiscard]] std::size_t try_get_msrs(std::vector<kvm_msr_entry>& entries) const;
    // KVM_SET_MSRS: throws naming the first MSR KVM refused.
    void set_msrs(const std::vector<kvm_msr_entry>& entries) const;

private:
    friend class Vm;
    Vcpu(unsigned id, UniqueFd fd, Mapping run, std::size_t xsave_size) noexcept
        : id_(id), fd_(std::move(fd)), run_(std::move(run)), xsave_size_(xsave_size) {}
    unsigned id_;
    UniqueFd fd_;
    Mapping run_;
    std::size_t xsave_size_;
};

// The MSRs of KVM_GET_MSR_INDEX_LIST that KVM_GET_MSRS accepts on this vCPU, probed
// one by one on the first call and kept for the process (the list depends on the
// host and the CPUID, which every VM here shares).
const std::vector<std::uint32_t>& saveable_msrs(const Kvm& kvm, const Vcpu& probe_vcpu);

// "KVM_EXIT_IO" for 2; "unknown exit reason N" otherwise.
std::string exit_reason_name(std::uint32_t reason);

} // namespace vmfork
