// SPDX-License-Identifier: GPL-2.0
#pragma once

#include <chrono>
#include <functional>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "vmfork/vmm/guest_profile.h"
#include "vmfork/vmm/layered_disk.h"
#include "vmfork/vmm/tap.h"

namespace vmfork {

class IrqLine;
class Uart16550;
class VhostNet;
class VhostVsock;
class VirtioBlk;

// A Linux VM's network: a virtio-net device (the guest's eth0, virtio-mmio slot 7) on a
// tap of the VMM's network namespace.
struct NetConfig {
    std::string tap;                        // a name, or a template ("vmf%d"); "": none
    std::optional<Ipv4Prefix> host_address; // given to the tap (the host's side), if set
};

// A Linux guest's own configuration.
struct LinuxConfig {
    // A virtio-vsock device (virtio-mmio slot 0, vhost-vsock) when the host has
    // /dev/vhost-vsock. The same for a VM and its clones.
    bool vsock = true;
    // Every clone and reset gets a new VM generation ID, which makes its kernel reseed
    // its RNG. Tests only (`vmfork fork --keep-generation`) set false: the clone keeps
    // the one in the state, as a VMM without VMGenID would.
    bool new_vm_generations = true;
    // virtio-blk disks on virtio-mmio slots 1, 2, ... (the guest's vda, vdb, ...), and
    // where the layers of their linked clones go.
    std::vector<std::shared_ptr<DiskImage>> disks;
    std::string disk_dir = "/var/tmp";
    // The network, if any (boot and restore).
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

// A PC as Linux's x86 boot protocol and ACPI describe it (platform.h): a 16550A COM1
// on GSI 4 (receive too), an i8042 for reboot, the ACPI PM device for poweroff, ACPI
// tables in the BIOS area, VMGenID, and virtio-mmio devices: vsock, disks, network.
// A clone's identity is its VM generation ID and its vsock CID.
class LinuxProfile final : public GuestProfile {
public:
    explicit LinuxProfile(LinuxConfig config = {});
    ~LinuxProfile() override;
    LinuxProfile(const LinuxProfile&) = delete;
    LinuxProfile& operator=(const LinuxProfile&) = delete;
    LinuxProfile(LinuxProfile&&) = delete;
    LinuxProfile& operator=(LinuxProfile&&) = delete;

    void add_devices(MachineDevices& devices) override;
    void setup_vcpu(const Kvm& kvm, const Vcpu& vcpu,
                    const std::vector<kvm_cpuid_entry2>& cpuid) override;
    void setup_memory(GuestMemory& memory, unsigned cpus) override;
    void assign_identity(const CloneIdentity& identity) override;
    void apply_identity(const CloneIdentity& identity) override;
    [[nodiscard]] CloneIdentity identity() const override { return identity_; }
    void pause() override;
    void resume() override;
    void reset() override;
    void console_input(std::span<const std::uint8_t> bytes) override;

    // The disks at the fork instant (only while paused, after Machine::capture()): each
    // writable disk's view is frozen and the VM goes on on a new one (the first time,
    // its raw image becomes the read-only base); what the clones' views start from.
    std::vector<DiskFork> fork_disks();
    [[nodiscard]] std::vector<DiskReport> disks() const;
    // The guest's vsock CID, 0 without a vsock device.
    [[nodiscard]] std::uint64_t vsock_cid() const;
    // VhostVsock::wait_resets_taken(); true at once without vsock.
    bool wait_vsock_reset_taken(std::chrono::steady_clock::time_point deadline,
                                const std::function<bool()>& cancelled) const;
    // Whether a clone's guest has yet to take its vsock reset (a connection request
    // now would be dropped).
    [[nodiscard]] bool vsock_reset_pending() const {
        return !wait_vsock_reset_taken(std::chrono::steady_clock::now(), {});
    }
    // The vsock device, or nullptr.
    [[nodiscard]] const VhostVsock* vsock() const noexcept { return vsock_; }
    // The network device, or nullptr.
    [[nodiscard]] const VhostNet* net() const noexcept { return net_; }

private:
    // A new VM generation ID, and (notify) the ACPI event that makes the guest read it.
    void new_vm_generation(bool notify);

    LinuxConfig config_;
    GuestMemory* memory_ = nullptr; // the machine's
    IrqLine* ged_ = nullptr;        // the Generic Event Device's GSI
    Uart16550* uart_ = nullptr;     // COM1
    VhostVsock* vsock_ = nullptr;   // slot 0, if the VM has vsock
    std::vector<VirtioBlk*> disks_; // slots 1, 2, ...
    VhostNet* net_ = nullptr;       // slot 7, if the VM has a network

    // f(device) for each virtio device the VM has, in slot order.
    template <class F> void for_each_virtio(F&& f) {
        if (vsock_ != nullptr) {
            f(*vsock_);
        }
        for (auto* d : disks_) {
            f(*d);
        }
        if (net_ != nullptr) {
            f(*net_);
        }
    }
    CloneIdentity identity_{};
};

} // namespace vmfork
