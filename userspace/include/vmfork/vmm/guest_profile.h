// SPDX-License-Identifier: GPL-2.0
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "vmfork/kvm.h"
#include "vmfork/vmm/clone_identity.h"

namespace vmfork {

class GuestMemory;
class MachineDevices;

// What one kind of guest needs of a Machine beyond the VM the core makes (RAM, the
// in-kernel irqchip and PIT, vCPUs with the host's CPUID, the console's output): its
// devices, what a boot sets up for it, and how a clone's identity reaches it. One
// profile object per machine, owned by it (guests/builtin/profile.h,
// guests/linux/profile.h); it holds the configuration of its kind of guest.
//
// The machine calls it in this order: add_devices() once as it is made; a boot then
// setup_vcpu() per vCPU, setup_memory(), the loader, assign_identity(),
// apply_identity(); a clone (and a reset, after reset()) assign_identity(), the saved
// vCPU and device state, apply_identity(). Then the vCPUs run; pause() and resume()
// go around every pause of them.
class GuestProfile {
public:
    GuestProfile() = default;
    GuestProfile(const GuestProfile&) = delete;
    GuestProfile& operator=(const GuestProfile&) = delete;
    GuestProfile(GuestProfile&&) = delete;
    GuestProfile& operator=(GuestProfile&&) = delete;
    virtual ~GuestProfile() = default;

    // Its devices onto the machine's buses and interrupt lines, the stateful ones in
    // the order of their sections in the VM state. RAM may not be there yet (a
    // prepared machine): a device keeps devices.memory(), which gets it later.
    virtual void add_devices(MachineDevices& devices) = 0;
    // A boot: vCPU state the loader does not set, after the vCPU's CPUID (cpuid).
    virtual void setup_vcpu(const Kvm& /*kvm*/, const Vcpu& /*vcpu*/,
                            const std::vector<kvm_cpuid_entry2>& /*cpuid*/) {}
    // A boot: what the platform puts in RAM before the loader (firmware tables).
    virtual void setup_memory(GuestMemory& /*memory*/, unsigned /*cpus*/) {}
    // Device settings that follow from the identity, before the devices start or load
    // their state.
    virtual void assign_identity(const CloneIdentity& /*identity*/) {}
    // Shows the identity to the guest, after its state is in place and before any
    // vCPU runs again.
    virtual void apply_identity(const CloneIdentity& identity) = 0;
    // The identity as the guest sees it.
    [[nodiscard]] virtual CloneIdentity identity() const = 0;
    // After the vCPUs paused: no device writes guest RAM (or a disk) until resume(),
    // which comes before they run again.
    virtual void pause() {}
    virtual void resume() {}
    // A reset dropped every page written since the fork: devices drop what they wrote
    // since then elsewhere too (while paused, before the state is loaded again).
    virtual void reset() {}
    // Bytes typed on the guest's console; throws ENOTSUP if it takes no input.
    virtual void console_input(std::span<const std::uint8_t> bytes);
};

} // namespace vmfork
