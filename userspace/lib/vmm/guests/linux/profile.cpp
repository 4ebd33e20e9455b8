// SPDX-License-Identifier: GPL-2.0
#include "vmfork/vmm/guests/linux/profile.h"

#include <array>
#include <cerrno>
#include <cstring>
#include <string>

#include "vmfork/random.h"
#include "vmfork/system_error.h"
#include "vmfork/vmm/devices/acpi_pm.h"
#include "vmfork/vmm/devices/acpi_tables.h"
#include "vmfork/vmm/devices/i8042.h"
#include "vmfork/vmm/devices/uart.h"
#include "vmfork/vmm/devices/vhost_net.h"
#include "vmfork/vmm/devices/vhost_vsock.h"
#include "vmfork/vmm/devices/virtio_blk.h"
#include "vmfork/vmm/machine_devices.h"
#include "vmfork/vmm/memory.h"
#include "vmfork/vmm/platform.h"

namespace vmfork {

namespace {

// XCR0 for a Linux guest's first instruction: every user XSAVE component its CPUID
// offers (x87, SSE, AVX, AVX-512, PKRU), the set Linux enables itself early in boot.
// Under nested KVM on QEMU's TCG, where the tests run, the guest's XSETBV does not reach
// KVM, so KVM's XCR0 (and the XSAVE size it reports in CPUID 0xD) would stay x87 and
// Debian's kernels warn "XSAVE consistency problem". Starting with the final XCR0 keeps
// KVM right there and changes nothing where XSETBV exits as it should.
std::uint64_t linux_xcr0(const std::vector<kvm_cpuid_entry2>& entries) {
    constexpr std::uint64_t user_features = 0x2e7; // x87 SSE AVX opmask ZMM_Hi256 Hi16_ZMM PKRU
    for (const auto& e : entries) {
        if (e.function == 0xd && e.index == 0) {
            return (e.eax & user_features) | 0x3;
        }
    }
    return 0x1;
}

// A VM's vsock CID: from its memory object's id, which no other live VM of this
// host's vmfork has (0-2 are reserved; 3.. are guests').
std::uint64_t vsock_cid_for(const CloneIdentity& identity) {
    return 1000 + identity.id;
}

} // namespace

LinuxProfile::LinuxProfile(LinuxConfig config) : config_(std::move(config)) {}

LinuxProfile::~LinuxProfile() = default;

void LinuxProfile::add_devices(MachineDevices& devices) {
    memory_ = &devices.memory();
    ged_ = &devices.irq_line(platform::ged_gsi);
    SerialPort& console = devices.console();
    uart_ = &devices.add_pio(
        platform::com1_port, platform::com1_ports,
        std::make_unique<Uart16550>(
            platform::com1_port, devices.irq_line(platform::com1_gsi),
            [&console](std::span<const std::uint8_t> bytes) { console.append(bytes); }));
    auto& i8042 =
        devices.add_pio(platform::i8042_data_port, 1, std::make_unique<I8042>(devices.power_off()));
    devices.map_pio(platform::i8042_command_port, 1, i8042);
    auto& pm = devices.add_pio(platform::acpi_pm_port, platform::acpi_pm_ports,
                               std::make_unique<AcpiPm>(devices.power_off(), devices.power_off()));
    devices.add_stateful(*uart_);
    devices.add_stateful(i8042);
    devices.add_stateful(pm);
    if (config_.vsock && VhostVsock::available()) {
        vsock_ = &devices.add_mmio(
            platform::virtio_mmio_addr(0), platform::virtio_mmio_slot_size,
            std::make_unique<VhostVsock>(*memory_, devices.irq_line(platform::virtio_mmio_gsi(0))));
        devices.add_stateful(*vsock_);
    }
    // Disks from slot 1 on; slot 0 stays vsock's, with or without it, so that a disk's
    // slot (and its interrupt) does not depend on the host.
    constexpr std::size_t max_disks = platform::net_slot - 1;
    if (config_.disks.size() > max_disks) {
        throw SystemError(EINVAL, "at most " + std::to_string(max_disks) + " disks, not " +
                                      std::to_string(config_.disks.size()));
    }
    for (std::size_t i = 0; i < config_.disks.size(); ++i) {
        const auto slot = static_cast<unsigned>(i + 1);
        auto& blk = devices.add_mmio(
            platform::virtio_mmio_addr(slot), platform::virtio_mmio_slot_size,
            std::make_unique<VirtioBlk>(*memory_, devices.irq_line(platform::virtio_mmio_gsi(slot)),
                                        config_.disks[i], "virtio-blk-" + std::to_string(i),
                                        "vmfork-disk-" + std::to_string(i)));
        disks_.push_back(&blk);
        devices.add_stateful(blk);
    }
    config_.disks.clear(); // the devices hold them (and may replace them: fork_disks())
    if (!config_.net.tap.empty()) {
        Tap tap(config_.net.tap);
        if (config_.net.host_address) {
            tap.set_address(*config_.net.host_address);
        } else {
            tap.set_up();
        }
        // A clone's device takes its parent's MAC from the state.
        net_ = &devices.add_mmio(
            platform::virtio_mmio_addr(platform::net_slot), platform::virtio_mmio_slot_size,
            std::make_unique<VhostNet>(
                *memory_, devices.irq_line(platform::virtio_mmio_gsi(platform::net_slot)),
                std::move(tap), VhostNet::random_mac()));
        devices.add_stateful(*net_);
    }
}

void LinuxProfile::setup_vcpu(const Kvm& kvm, const Vcpu& vcpu,
                              const std::vector<kvm_cpuid_entry2>& cpuid) {
    if (kvm.check_extension(KVM_CAP_XCRS) <= 0) {
        return;
    }
    kvm_xcrs xcrs = vcpu.get_xcrs();
    for (std::uint32_t i = 0; i < xcrs.nr_xcrs; ++i) {
        if (xcrs.xcrs[i].xcr == 0) {
            xcrs.xcrs[i].value = linux_xcr0(cpuid);
        }
    }
    vcpu.set_xcrs(xcrs);
}

void LinuxProfile::setup_memory(GuestMemory& memory, unsigned cpus) {
    const auto tables = build_acpi_tables({.vcpus = static_cast<std::uint32_t>(cpus)});
    std::memcpy(memory.at(platform::acpi_base, tables.size()), tables.data(), tables.size());
    // The DSDT shows the virtio-mmio slots with a device (their _STA read this byte).
    std::uint8_t slots = vsock_ != nullptr ? 1 : 0;
    for (std::size_t i = 0; i < disks_.size(); ++i) {
        slots |= static_cast<std::uint8_t>(1U << (i + 1));
    }
    if (net_ != nullptr) {
        slots |= static_cast<std::uint8_t>(1U << platform::net_slot);
    }
    if (slots != 0) {
        memory.write<std::uint8_t>(platform::platform_info_addr, slots);
    }
}

void LinuxProfile::assign_identity(const CloneIdentity& identity) {
    if (vsock_ != nullptr) {
        vsock_->set_cid(vsock_cid_for(identity)); // a clone's own, before the restore
    }
}

void LinuxProfile::apply_identity(const CloneIdentity& identity) {
    identity_ = identity;
    if (identity.generation == 0 || config_.new_vm_generations) {
        new_vm_generation(identity.generation != 0);
    }
}

void LinuxProfile::new_vm_generation(bool notify) {
    // A fresh random 128-bit VM generation ID for every boot, clone and reset: the
    // guest's vmgenid driver mixes it into the RNG and reseeds it ("crng reseeded due
    // to virtual machine fork"), so no two clones go on with the same random numbers.
    std::array<std::byte, platform::vmgenid_size> id{};
    random_bytes(id, "the VM generation ID");
    std::memcpy(memory_->at(platform::vmgenid_addr, id.size()), id.data(), id.size());
    if (notify) {
        // An edge on the Generic Event Device's GSI: its _EVT notifies VGEN (0x80).
        // Before the vCPUs run it waits in the IOAPIC/LAPIC state just restored.
        ged_->set_level(true);
        ged_->set_level(false);
    }
}

bool LinuxProfile::wait_vsock_reset_taken(std::chrono::steady_clock::time_point deadline,
                                          const std::function<bool()>& cancelled) const {
    return vsock_ == nullptr || vsock_->wait_resets_taken(deadline, cancelled);
}

std::uint64_t LinuxProfile::vsock_cid() const {
    return vsock_ != nullptr ? vsock_->cid() : 0;
}

void LinuxProfile::console_input(std::span<const std::uint8_t> bytes) {
    uart_->receive(bytes);
}

void LinuxProfile::pause() {
    for_each_virtio([](auto& d) { d.pause(); });
}

void LinuxProfile::resume() {
    for_each_virtio([](auto& d) { d.resume(); });
}

void LinuxProfile::reset() {
    for (auto* d : disks_) {
        if (auto* layered = dynamic_cast<LayeredDisk*>(d->disk().get()); layered != nullptr) {
            layered->reset();
        }
    }
}

std::vector<DiskFork> LinuxProfile::fork_disks() {
    std::vector<DiskFork> forks;
    for (auto* d : disks_) {
        const std::shared_ptr<DiskImage> disk = d->disk(); // alive past set_disk()
        if (auto* raw = dynamic_cast<RawDisk*>(disk.get()); raw != nullptr) {
            if (raw->read_only()) {
                forks.push_back({raw->path(), true, {}});
                continue;
            }
            // The first fork: the image, as written so far, is the base of every view
            // from now on, this VM's included.
            auto base = raw->read_only_view();
            d->set_disk(std::make_shared<LayeredDisk>(
                base, std::vector<std::shared_ptr<DiskLayer>>{}, config_.disk_dir));
            forks.push_back({raw->path(), false, {}});
            continue;
        }
        auto* layered = dynamic_cast<LayeredDisk*>(disk.get());
        if (layered == nullptr) {
            throw SystemError(EINVAL, "a disk that cannot be forked");
        }
        forks.push_back({layered->base()->path(), false, layered->fork()});
    }
    return forks;
}

std::vector<DiskReport> LinuxProfile::disks() const {
    std::vector<DiskReport> out;
    for (const auto* d : disks_) {
        DiskReport r;
        const auto& disk = d->disk();
        r.read_only = disk->read_only();
        if (const auto* layered = dynamic_cast<const LayeredDisk*>(disk.get());
            layered != nullptr) {
            r.path = layered->base()->path();
            r.layers = layered->frozen().size();
            r.private_blocks = layered->private_blocks();
            r.shared_blocks = layered->shared_blocks();
        } else if (const auto* raw = dynamic_cast<const RawDisk*>(disk.get()); raw != nullptr) {
            r.path = raw->path();
        }
        r.requests = d->requests();
        r.failed_requests = d->failed_requests();
        out.push_back(std::move(r));
    }
    return out;
}

} // namespace vmfork
