// SPDX-License-Identifier: GPL-2.0
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <utility>
#include <vector>

#include "vmfork/vmm/device_state.h"
#include "vmfork/vmm/devices.h"

namespace vmfork {

class GuestMemory;
class Vm;
struct VmState;

// The devices of one Machine and what joins them to it: the PIO and MMIO buses the
// vCPUs dispatch to, interrupt lines into the in-kernel irqchip, and the devices whose
// state a clone carries, saved in the order they were added. A guest profile adds its
// devices here (GuestProfile::add_devices); the machine owns them all, and they live
// until the machine goes (after its vCPU threads stopped).
class MachineDevices {
public:
    // cpus: the machine's vCPUs (APIC IDs 0..cpus-1). power_off: what a device calls
    // when the guest powers off or asks for a reset.
    MachineDevices(const Vm& vm, unsigned cpus, GuestMemory& memory, SerialPort& console,
                   std::function<void()> power_off);
    MachineDevices(const MachineDevices&) = delete;
    MachineDevices& operator=(const MachineDevices&) = delete;
    MachineDevices(MachineDevices&&) = delete;
    MachineDevices& operator=(MachineDevices&&) = delete;
    ~MachineDevices();

    [[nodiscard]] const Vm& vm() const noexcept { return vm_; }
    [[nodiscard]] unsigned cpus() const noexcept { return cpus_; }
    // The guest's RAM (none yet on a prepared machine: it is moved in before the vCPUs
    // run, into this same object).
    [[nodiscard]] GuestMemory& memory() const noexcept { return memory_; }
    // The console's output (Machine::serial()): a profile's console device writes here,
    // or is this device.
    [[nodiscard]] SerialPort& console() const noexcept { return console_; }
    // For a device, from a vCPU's thread: every vCPU ends (the machine's policy).
    [[nodiscard]] const std::function<void()>& power_off() const noexcept { return power_off_; }

    // A GSI of the in-kernel IOAPIC, driven with KVM_IRQ_LINE; the machine owns it.
    IrqLine& irq_line(std::uint32_t gsi);
    // A device on [base, base + len) of a bus, owned by the machine from now on.
    template <typename D>
    D& add_pio(std::uint16_t base, std::uint16_t len, std::unique_ptr<D> device) {
        D& d = *device;
        pio_devices_.push_back(std::move(device));
        map_pio(base, len, d);
        return d;
    }
    template <typename D>
    D& add_mmio(std::uint64_t base, std::uint64_t len, std::unique_ptr<D> device) {
        D& d = *device;
        mmio_devices_.push_back(std::move(device));
        mmio_.add(base, len, &d);
        return d;
    }
    // One more port range for a device that lives as long as the machine (one added
    // above, or the console).
    void map_pio(std::uint16_t base, std::uint16_t len, PioDevice& device) {
        pio_.add(base, len, &device);
    }
    // A device whose state a clone carries: a section of the VM state, in this order.
    void add_stateful(StatefulDevice& device) { stateful_.push_back(&device); }

    [[nodiscard]] IoBus& pio_bus() noexcept { return pio_; }
    [[nodiscard]] MmioBus& mmio_bus() noexcept { return mmio_; }
    [[nodiscard]] const MmioBus& mmio_bus() const noexcept { return mmio_; }

    // One section per stateful device, appended to state.devices. Only while paused.
    void save(VmState& state) const;
    // Every stateful device from its section (names and order must match), before the
    // vCPUs run. Throws SystemError(EINVAL) on a section that does not fit.
    void restore(const VmState& state);

private:
    const Vm& vm_;
    unsigned cpus_;
    GuestMemory& memory_;
    SerialPort& console_;
    std::function<void()> power_off_;
    IoBus pio_;
    MmioBus mmio_;
    std::vector<std::unique_ptr<IrqLine>> irq_lines_;
    std::vector<std::unique_ptr<PioDevice>> pio_devices_;
    std::vector<std::unique_ptr<MmioDevice>> mmio_devices_;
    std::vector<StatefulDevice*> stateful_; // among the above, saved in this order
};

} // namespace vmfork
