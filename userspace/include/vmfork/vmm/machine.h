// SPDX-License-Identifier: GPL-2.0
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "vmfork/kvm.h"
#include "vmfork/memory_object.h"
#include "vmfork/vm_state.h"
#include "vmfork/vmm/device_state.h"
#include "vmfork/vmm/devices.h"
#include "vmfork/vmm/devices/uart.h"
#include "vmfork/vmm/layered_disk.h"
#include "vmfork/vmm/memory.h"
#include "vmfork/vmm/report_verifier.h"
#include "vmfork/vmm/tap.h"
#include "vmfork/vmm/vcpu_runner.h"

namespace vmfork {

class VhostNet;
class VhostVsock;
class VirtioBlk;

class BootLoader;
class Device;

// Which machine a guest gets. Builtin: the freestanding test guest's (a write-only
// console at 0x3f8, the report port, the identity page). Linux: a PC as Linux's x86
// boot protocol and ACPI describe it: a 16550A COM1 on GSI 4 (receive too), an i8042
// for reboot, the ACPI PM device for poweroff, ACPI tables in the BIOS area.
enum class Platform { Builtin, Linux };

// A Linux VM's network: a virtio-net device (the guest's eth0, virtio-mmio slot 7) on a
// tap of the VMM's network namespace.
struct NetConfig {
    std::string tap;                        // a name, or a template ("vmf%d"); "": none
    std::optional<Ipv4Prefix> host_address; // given to the tap (the host's side), if set
};

struct MachineConfig {
    Platform platform = Platform::Builtin;
    std::uint64_t mem_size = 32 << 20; // boot() only
    unsigned cpus = 1;                 // boot() only
    std::string serial_path;           // the console also goes to this file if set
    std::size_t report_history = 0;    // reports kept (the latest); 0: all
    ReportPort::Listener on_report;    // called on each report, in the vCPU's thread
    // Called once when the guest powers off or asks for a reset (the vCPUs are being
    // stopped), in the vCPU's thread.
    std::function<void()> on_power_off;
    // The Linux platform: a virtio-vsock device (virtio-mmio slot 0, vhost-vsock) when
    // the host has /dev/vhost-vsock. The same for a VM and its clones.
    bool vsock = true;
    // The Linux platform: every clone and reset gets a new VM generation ID, which
    // makes its kernel reseed its RNG. Tests only (`vmfork fork --keep-generation`)
    // set false: the clone keeps the one in the state, as a VMM without VMGenID would.
    bool new_vm_generations = true;
    // The Linux platform: virtio-blk disks on virtio-mmio slots 1, 2, ... (the guest's
    // vda, vdb, ...), and where the layers of their linked clones go.
    std::vector<std::shared_ptr<DiskImage>> disks;
    std::string disk_dir = "/var/tmp";
    // The Linux platform: the network, if any (boot and restore).
    NetConfig net;
};

// A disk as clones get it at a fork: its base image and the frozen layers above it.
struct DiskFork {
    std::string path;
    bool read_only = false;
    std::vector<std::shared_ptr<DiskLayer>> layers; // bottom first
};

// What a VM's disk holds: its own blocks and those it shares with others.
struct DiskReport {
    std::string path;
    bool read_only = false;
    std::uint64_t layers = 0;         // frozen layers under the VM's own
    std::uint64_t private_blocks = 0; // 4 KiB blocks only this VM has
    std::uint64_t shared_blocks = 0;  // in frozen layers (other VMs may see them)
    std::uint64_t requests = 0;
    std::uint64_t failed_requests = 0;
};

// One VM in this process: guest memory (a vmfork object, or plain memory for the
// benchmark's baselines), in-kernel irqchip and PIT, the devices, one VcpuRunner per
// vCPU. Holds a reference to kvm: keep it alive.
class Machine {
    struct Key {
        explicit Key() = default;
    };

public:
    // Boots a guest with loader on a new memory object of config.mem_size; the vCPUs
    // start running at once.
    static std::unique_ptr<Machine> boot(const Kvm& kvm, const Device& device,
                                         const MachineConfig& config, BootLoader& loader);
    // The same on a memory object made by the caller (of config.mem_size bytes).
    static std::unique_ptr<Machine> boot(const Kvm& kvm, MemoryObject memory,
                                         const MachineConfig& config, BootLoader& loader);
    // A clone: a new VM on memory (a fork child), state restored, identity written
    // before any vCPU runs; the vCPUs start running at once.
    // Of config, platform, serial_path, report_history, on_report and on_power_off
    // apply.
    static std::unique_ptr<Machine> restore(const Kvm& kvm, MemoryObject memory,
                                            const VmState& state, const CloneIdentity& identity,
                                            const MachineConfig& config = {});
    // The same on any guest RAM (plain memory: fork(), reset_to() and boot's identity
    // need a vmfork object and throw EINVAL without one).
    static std::unique_ptr<Machine> restore(const Kvm& kvm, GuestMemory memory,
                                            const VmState& state, const CloneIdentity& identity,
                                            const MachineConfig& config = {});
    // A warm machine: the VM, irqchip, PIT and cpus vCPUs made ahead, no RAM, nothing
    // running; start_clone() turns it into a clone. Of config as for restore().
    static std::unique_ptr<Machine> prepare(const Kvm& kvm, unsigned cpus,
                                            const MachineConfig& config = {});
    // Only on a prepared machine, once: attach memory, restore state (of as many vCPUs),
    // write identity, run.
    void start_clone(GuestMemory memory, const VmState& state, const CloneIdentity& identity);

    // For boot() and restore() only: Key is private.
    Machine(Key key, const Kvm& kvm, GuestMemory memory, unsigned cpus,
            const MachineConfig& config);
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
        std::vector<DiskFork> disks;
    };
    // Pause, capture, VMFORK_VM_FORK, then resume (Live) or stay paused (Template: the
    // parent's memory is read-only from now on).
    Fork fork(ForkMode mode = ForkMode::Live);

    // The disks at the fork instant (only while paused, after capture()): each
    // writable disk's view is frozen and the VM goes on on a new one (the first time,
    // its raw image becomes the read-only base); what the clones' views start from.
    std::vector<DiskFork> fork_disks();
    [[nodiscard]] std::vector<DiskReport> disks() const;

    // A clone back to its fork point: pause, drop every page written since the fork
    // (VMFORK_RESET) and every disk block, load state (the one it was restored from),
    // write identity, resume. Throws if the memory object is not a fork child (the VM runs on as it
    // was); a failure after the reset leaves it paused.
    void reset_to(const VmState& state, const CloneIdentity& identity);

    // Sends each vCPU the built-in guest's timer vector as an MSI: a guest halted
    // until its next (paced) tick runs at once. The benchmark uses it so that a clone's
    // first report does not wait for up to a pace period.
    void kick() const;

    void set_identity(const CloneIdentity& identity);
    [[nodiscard]] CloneIdentity identity() const;

    [[nodiscard]] const GuestMemory& memory() const noexcept { return *memory_; }
    [[nodiscard]] GuestMemory& memory() noexcept { return *memory_; }
    [[nodiscard]] const ReportPort& reports() const noexcept { return *report_; }
    [[nodiscard]] const SerialPort& serial() const noexcept { return *serial_; }
    // Console input (the Linux platform's UART); throws ENOTSUP on the built-in one.
    void console_input(std::span<const std::uint8_t> bytes);
    // The guest powered off or asked for a reset (policy: the machine stops).
    [[nodiscard]] bool powered_off() const noexcept { return powered_off_.load(); }
    [[nodiscard]] Platform platform() const noexcept { return platform_; }
    [[nodiscard]] std::uint64_t unclaimed_mmio() const noexcept { return mmio_.unclaimed(); }
    [[nodiscard]] unsigned cpus() const noexcept { return static_cast<unsigned>(vcpus_.size()); }
    [[nodiscard]] std::vector<VcpuLifecycle> vcpu_states() const;
    // The guest's vsock CID, 0 without a vsock device.
    [[nodiscard]] std::uint64_t vsock_cid() const;
    // The vsock device, or nullptr.
    [[nodiscard]] const VhostVsock* vsock() const noexcept { return vsock_; }
    // The network device, or nullptr.
    [[nodiscard]] const VhostNet* net() const noexcept { return net_; }
    // Errors of vCPUs that stopped on one, "vCPU N: ..." each.
    [[nodiscard]] std::vector<std::string> errors() const;

private:
    void start(bool paused);
    void add_linux_devices(const MachineConfig& config);
    // vCPUs, irqchip, clock and devices from state, then identity: what a clone, a
    // warm machine and a reset all do before their vCPUs run again.
    void load_state(const VmState& state, const CloneIdentity& identity);
    void restore_devices(const VmState& state);
    // The Linux platform: a new VM generation ID, and (notify) the ACPI event that makes
    // the guest read it.
    void new_vm_generation(bool notify);
    // From a device, in a vCPU's thread: every vCPU ends.
    void power_off();
    [[nodiscard]] std::vector<const Vcpu*> vcpu_ptrs() const;

    const Kvm& kvm_;
    std::unique_ptr<GuestMemory> memory_;
    std::unique_ptr<SerialPort> serial_;
    std::unique_ptr<ReportPort> report_;
    Platform platform_;
    IoBus bus_;
    MmioBus mmio_;
    Vm vm_;
    std::vector<std::unique_ptr<IrqLine>> irq_lines_;
    std::vector<std::unique_ptr<PioDevice>> pio_devices_;
    std::vector<StatefulDevice*> stateful_; // in pio_devices_, saved in this order
    std::vector<std::unique_ptr<MmioDevice>> mmio_devices_;
    Uart16550* uart_ = nullptr;     // the Linux platform's COM1
    VhostVsock* vsock_ = nullptr;   // in mmio_devices_, if the VM has vsock
    std::vector<VirtioBlk*> disks_; // in mmio_devices_, slots 1, 2, ...
    VhostNet* net_ = nullptr;       // in mmio_devices_, slot 7, if the VM has a network
    CloneIdentity identity_{};      // the Linux platform's (no identity page yet)
    bool new_generations_ = true;   // MachineConfig::new_vm_generations
    std::string disk_dir_;          // MachineConfig::disk_dir
    std::function<void()> on_power_off_;
    std::atomic<bool> powered_off_{false};
    std::vector<std::unique_ptr<Vcpu>> vcpus_;
    std::vector<std::unique_ptr<VcpuRunner>> runners_; // destroyed first: threads stop
};

} // namespace vmfork
