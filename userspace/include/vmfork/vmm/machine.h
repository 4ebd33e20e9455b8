// SPDX-License-Identifier: GPL-2.0
#pragma once

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "vmfork/kvm.h"
#include "vmfork/memory_object.h"
#include "vmfork/system_error.h"
#include "vmfork/vm_state.h"
#include "vmfork/vmm/clone_identity.h"
#include "vmfork/vmm/devices.h"
#include "vmfork/vmm/guest_profile.h"
#include "vmfork/vmm/machine_devices.h"
#include "vmfork/vmm/memory.h"
#include "vmfork/vmm/vcpu_runner.h"

namespace vmfork {

class BootLoader;
class Device;

// The VM-wide settings of a Machine; what its guest needs besides is its profile's.
struct MachineConfig {
    std::uint64_t mem_size = 32 << 20; // boot() only
    unsigned cpus = 1;                 // boot() only
    std::string serial_path;           // the console also goes to this file if set
    // Called once when the guest powers off or asks for a reset (the vCPUs are being
    // stopped), in the vCPU's thread.
    std::function<void()> on_power_off;
};

// One VM in this process: guest memory (a vmfork object, or plain memory for the
// benchmark's baselines), in-kernel irqchip and PIT, one VcpuRunner per vCPU, and the
// guest profile (guest_profile.h) with the devices of its kind of guest. The core knows
// no guest: every machine is made with a profile, which it owns. Holds a reference to
// kvm: keep it alive.
class Machine {
    struct Key {
        explicit Key() = default;
    };

public:
    // Boots a guest with loader on a new memory object of config.mem_size; the vCPUs
    // start running at once.
    static std::unique_ptr<Machine> boot(const Kvm& kvm, const Device& device,
                                         const MachineConfig& config,
                                         std::unique_ptr<GuestProfile> profile, BootLoader& loader);
    // The same on a memory object made by the caller (of config.mem_size bytes).
    static std::unique_ptr<Machine> boot(const Kvm& kvm, MemoryObject memory,
                                         const MachineConfig& config,
                                         std::unique_ptr<GuestProfile> profile, BootLoader& loader);
    // A clone: a new VM on memory (a fork child), state restored, identity written
    // before any vCPU runs; the vCPUs start running at once.
    // The profile must be of the kind of the state's VM. Of config, serial_path and
    // on_power_off apply.
    static std::unique_ptr<Machine> restore(const Kvm& kvm, MemoryObject memory,
                                            const VmState& state, const CloneIdentity& identity,
                                            std::unique_ptr<GuestProfile> profile,
                                            const MachineConfig& config = {});
    // The same on any guest RAM (plain memory: fork(), reset_to() and boot's identity
    // need a vmfork object and throw EINVAL without one).
    static std::unique_ptr<Machine> restore(const Kvm& kvm, GuestMemory memory,
                                            const VmState& state, const CloneIdentity& identity,
                                            std::unique_ptr<GuestProfile> profile,
                                            const MachineConfig& config = {});
    // A warm machine: the VM, irqchip, PIT and cpus vCPUs made ahead, no RAM, nothing
    // running; start_clone() turns it into a clone. Of config as for restore(). Without
    // a profile (null), the machine has no devices yet either: what kind of guest it
    // will run, and its console, come with start_clone().
    static std::unique_ptr<Machine> prepare(const Kvm& kvm, unsigned cpus,
                                            std::unique_ptr<GuestProfile> profile,
                                            const MachineConfig& config = {});
    // Only on a machine prepared with a profile, once: attach memory, restore state (of
    // as many vCPUs), write identity, run.
    void start_clone(GuestMemory memory, const VmState& state, const CloneIdentity& identity);
    // The same on a machine prepared without one: profile's devices are added, and
    // config's serial_path and on_power_off apply, before the state is loaded.
    void start_clone(GuestMemory memory, const VmState& state, const CloneIdentity& identity,
                     std::unique_ptr<GuestProfile> profile, const MachineConfig& config);

    // For boot(), restore() and prepare() only: Key is private.
    Machine(Key key, const Kvm& kvm, GuestMemory memory, unsigned cpus,
            std::unique_ptr<GuestProfile> profile, const MachineConfig& config);
    ~Machine();
    Machine(const Machine&) = delete;
    Machine& operator=(const Machine&) = delete;
    Machine(Machine&&) = delete;
    Machine& operator=(Machine&&) = delete;

    // Throws if a vCPU does not stop within the timeout.
    void pause();
    void resume();
    // Only while paused.
    [[nodiscard]] VmState capture() const;

    struct Fork {
        MemoryObject memory;
        VmState state;
    };
    // Pause, capture, VMFORK_VM_FORK, then resume (Live) or stay paused (Template: the
    // parent's memory is read-only from now on).
    Fork fork(ForkMode mode = ForkMode::Live);

    // A clone back to its fork point: pause, drop every page written since the fork
    // (VMFORK_RESET) and what the profile's devices wrote since (GuestProfile::reset),
    // load state (the one it was restored from), write identity, resume. Throws if the
    // memory object is not a fork child (the VM runs on as it was); a failure after the
    // reset leaves it paused.
    void reset_to(const VmState& state, const CloneIdentity& identity);

    // The identity as the guest sees it.
    [[nodiscard]] CloneIdentity identity() const { return profile_->identity(); }

    // The guest profile the machine was made with.
    [[nodiscard]] GuestProfile& profile() noexcept { return *profile_; }
    [[nodiscard]] const GuestProfile& profile() const noexcept { return *profile_; }
    // The same as the profile it is (BuiltinProfile, LinuxProfile); throws EINVAL if it
    // is another.
    template <typename P> [[nodiscard]] P& profile() { return profile_as<P>(*profile_); }
    template <typename P> [[nodiscard]] const P& profile() const {
        return profile_as<const P>(*profile_);
    }

    [[nodiscard]] const GuestMemory& memory() const noexcept { return *memory_; }
    [[nodiscard]] GuestMemory& memory() noexcept { return *memory_; }
    [[nodiscard]] const SerialPort& serial() const noexcept { return *serial_; }
    // Console input (GuestProfile::console_input); throws ENOTSUP if the guest's
    // console takes none.
    void console_input(std::span<const std::uint8_t> bytes) { profile_->console_input(bytes); }
    // The guest powered off or asked for a reset (policy: the machine stops).
    [[nodiscard]] bool powered_off() const noexcept { return powered_off_.load(); }
    [[nodiscard]] std::uint64_t unclaimed_mmio() const noexcept {
        return devices_.mmio_bus().unclaimed();
    }
    [[nodiscard]] unsigned cpus() const noexcept { return static_cast<unsigned>(vcpus_.size()); }
    [[nodiscard]] std::vector<VcpuLifecycle> vcpu_states() const;
    // Errors of vCPUs that stopped on one, "vCPU N: ..." each.
    [[nodiscard]] std::vector<std::string> errors() const;

private:
    // start_clone()'s preconditions on the machine, the child memory and the state:
    // EBUSY when it has RAM already, EINVAL for another VM's state.
    void check_clone_target(const GuestMemory& memory, const VmState& state) const;
    template <typename P, typename G> static P& profile_as(G& profile) {
        auto* p = dynamic_cast<P*>(&profile);
        if (p == nullptr) {
            throw SystemError(EINVAL, "the machine runs another kind of guest");
        }
        return *p;
    }
    void start(bool paused);
    // vCPUs, irqchip, clock and devices from state, then identity: what a clone, a
    // warm machine and a reset all do before their vCPUs run again.
    void load_state(const VmState& state, const CloneIdentity& identity);
    // From a device, in a vCPU's thread: every vCPU ends.
    void power_off();
    [[nodiscard]] std::vector<const Vcpu*> vcpu_ptrs() const;

    const Kvm& kvm_;
    std::unique_ptr<GuestMemory> memory_;
    std::unique_ptr<SerialPort> serial_;
    Vm vm_;
    MachineDevices devices_;
    std::unique_ptr<GuestProfile> profile_; // its devices are in devices_
    std::function<void()> on_power_off_;
    std::atomic<bool> powered_off_{false};
    std::vector<std::unique_ptr<Vcpu>> vcpus_;
    std::vector<std::unique_ptr<VcpuRunner>> runners_; // destroyed first: threads stop
};

} // namespace vmfork
