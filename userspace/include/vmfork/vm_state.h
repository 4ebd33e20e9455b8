// SPDX-License-Identifier: GPL-2.0
#pragma once

#include <cstdint>
#include <linux/kvm.h>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace vmfork {

class Kvm;
class Vm;
class Vcpu;

// Everything KVM keeps about one vCPU that a clone needs (design.md, "Userspace").
struct VcpuState {
    std::vector<kvm_cpuid_entry2> cpuid;
    kvm_mp_state mp_state{};
    kvm_regs regs{};
    kvm_sregs sregs{};
    kvm_fpu fpu{};                   // used when xsave is empty (no KVM_CAP_XSAVE)
    std::vector<std::uint8_t> xsave; // kvm_xsave, or the larger KVM_GET_XSAVE2 buffer
    bool has_xcrs = false;
    kvm_xcrs xcrs{};
    kvm_debugregs debugregs{};
    kvm_lapic_state lapic{};
    std::uint32_t tsc_khz = 0;
    std::vector<kvm_msr_entry> msrs; // includes MSR_IA32_TSC and the kvmclock MSRs
    kvm_vcpu_events events{};

    static constexpr std::uint32_t msr_ia32_tsc = 0x10;
    // The saved value of MSR index, if it was saved.
    [[nodiscard]] std::optional<std::uint64_t> msr(std::uint32_t index) const;
};

// One device's saved state (StatefulDevice::save()), by its section name.
struct DeviceSection {
    std::string name;
    std::vector<std::uint8_t> data;
    bool operator==(const DeviceSection&) const = default;
};

// A paused VM: vCPUs, in-kernel irqchip (PIC master, PIC slave, IOAPIC), PIT,
// kvmclock and one section per device of the VMM. Guest memory is not in here: it is
// the vmfork object.
struct VmState {
    static constexpr std::uint32_t format_version = 2;
    static constexpr std::uint32_t max_vcpus = 256;
    static constexpr std::size_t max_serialized_size = 64 << 20;

    std::uint64_t mem_size = 0;
    std::vector<VcpuState> vcpus;
    kvm_irqchip pic_master{};
    kvm_irqchip pic_slave{};
    kvm_irqchip ioapic{};
    kvm_pit_state2 pit{};
    kvm_clock_data clock{};
    std::vector<DeviceSection> devices;

    // A versioned binary format: magic, version, then length-prefixed records in a
    // fixed order. parse() throws std::invalid_argument on anything malformed
    // (truncated, oversized, unknown version, bad lengths, trailing bytes).
    [[nodiscard]] std::vector<std::uint8_t> serialize() const;
    static VmState parse(std::span<const std::uint8_t> data);
};

// Capture with the vCPUs stopped (not inside KVM_RUN). MSRs: saveable_msrs().
VcpuState capture_vcpu(const Kvm& kvm, const Vcpu& vcpu);
VmState capture_vm(const Kvm& kvm, const Vm& vm, const std::vector<const Vcpu*>& vcpus,
                   std::uint64_t mem_size);

// Restore onto fresh vCPUs of a VM that has its irqchip and PIT (order as Firecracker:
// cpuid, mp_state, regs, sregs, xsave, xcrs, debugregs, lapic, msrs, events).
void restore_vcpu(const Vcpu& vcpu, const VcpuState& state);
void restore_vm(const Vm& vm, const std::vector<const Vcpu*>& vcpus, const VmState& state);

} // namespace vmfork
