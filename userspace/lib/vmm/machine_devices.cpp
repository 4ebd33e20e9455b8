// SPDX-License-Identifier: GPL-2.0
#include "vmfork/vmm/machine_devices.h"

#include <cerrno>
#include <stdexcept>
#include <string>

#include "vmfork/kvm.h"
#include "vmfork/system_error.h"
#include "vmfork/vm_state.h"

namespace vmfork {

namespace {

// A GSI of the in-kernel IOAPIC, driven with KVM_IRQ_LINE.
class KvmIrqLine final : public IrqLine {
public:
    KvmIrqLine(const Vm& vm, std::uint32_t gsi) : vm_(vm), gsi_(gsi) {}
    void set_level(bool high) override { vm_.irq_line(gsi_, high); }

private:
    const Vm& vm_;
    std::uint32_t gsi_;
};

} // namespace

MachineDevices::MachineDevices(const Vm& vm, unsigned cpus, GuestMemory& memory,
                               SerialPort& console, std::function<void()> power_off)
    : vm_(vm), cpus_(cpus), memory_(memory), console_(console), power_off_(std::move(power_off)) {}

MachineDevices::~MachineDevices() = default;

IrqLine& MachineDevices::irq_line(std::uint32_t gsi) {
    irq_lines_.push_back(std::make_unique<KvmIrqLine>(vm_, gsi));
    return *irq_lines_.back();
}

void MachineDevices::save(VmState& state) const {
    for (const StatefulDevice* d : stateful_) {
        StateWriter out;
        d->save(out);
        state.devices.push_back({std::string(d->section()), std::move(out).take()});
    }
}

void MachineDevices::restore(const VmState& state) {
    if (state.devices.size() != stateful_.size()) {
        throw SystemError(EINVAL, "the state has " + std::to_string(state.devices.size()) +
                                      " device sections, this machine has " +
                                      std::to_string(stateful_.size()) + " devices");
    }
    // In order: every device checks its section before it changes (a clone that fails
    // here is discarded whole).
    for (std::size_t i = 0; i < stateful_.size(); ++i) {
        const DeviceSection& section = state.devices[i];
        if (section.name != stateful_[i]->section()) {
            throw SystemError(EINVAL, "device section " + std::to_string(i) + " is \"" +
                                          section.name + "\", expected \"" +
                                          std::string(stateful_[i]->section()) + "\"");
        }
        StateReader in(section.data, "device section " + section.name);
        try {
            stateful_[i]->restore(in);
            in.finish();
        } catch (const std::invalid_argument& e) {
            throw SystemError(EINVAL, e.what());
        }
    }
}

} // namespace vmfork
