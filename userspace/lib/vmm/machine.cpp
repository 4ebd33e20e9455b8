// SPDX-License-Identifier: GPL-2.0
#include "vmfork/vmm/machine.h"

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/ioctl.h>

#include "guest_abi.h"
#include "vmfork/device.h"
#include "vmfork/random.h"
#include "vmfork/system_error.h"
#include "vmfork/vmm/boot_loader.h"
#include "vmfork/vmm/devices/acpi_pm.h"
#include "vmfork/vmm/devices/acpi_tables.h"
#include "vmfork/vmm/devices/i8042.h"
#include "vmfork/vmm/devices/vhost_net.h"
#include "vmfork/vmm/devices/vhost_vsock.h"
#include "vmfork/vmm/devices/virtio_blk.h"
#include "vmfork/vmm/platform.h"

namespace vmfork {

namespace {

// Intel VMX needs these three pages below 4 GiB for real-mode emulation; harmless on
// AMD. Just under the BIOS area at the top of the 32-bit space, far above guest RAM.
constexpr std::uint64_t tss_addr = 0xfffbd000;
constexpr std::uint64_t identity_map_addr = 0xfffbc000;

UniqueFd open_serial(const std::string& path) {
    if (path.empty()) {
        return {};
    }
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
    if (!fd) {
        throw SystemError::from_errno("cannot open console file " + path);
    }
    return fd;
}

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

// The host's supported CPUID with this vCPU's APIC ID in leaves 1, 0xb and 0x1f and the
// hypervisor bit set.
std::vector<kvm_cpuid_entry2> cpuid_for(const Kvm& kvm, unsigned id) {
    auto entries = kvm.supported_cpuid();
    for (auto& e : entries) {
        if (e.function == 1) {
            e.ebx = (e.ebx & 0x00ffffffU) | (id << 24);
            // "Running under a hypervisor": without it Linux ignores the KVM leaves
            // (0x40000000) and so kvmclock, and finds no clock to calibrate its TSC.
            e.ecx |= 1U << 31;
        } else if (e.function == 0xb || e.function == 0x1f) {
            e.edx = id;
        }
    }
    return entries;
}

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

Machine::Machine(Key /*key*/, const Kvm& kvm, GuestMemory memory, unsigned cpus,
                 const MachineConfig& config)
    : kvm_(kvm), memory_(std::make_unique<GuestMemory>(std::move(memory))),
      serial_(std::make_unique<SerialPort>(open_serial(config.serial_path))),
      report_(std::make_unique<ReportPort>(*memory_, config.report_history, config.on_report)),
      platform_(config.platform), vm_(kvm.create_vm()), new_generations_(config.new_vm_generations),
      disk_dir_(config.disk_dir), on_power_off_(config.on_power_off) {
    if (cpus == 0 || cpus > VmState::max_vcpus) {
        throw SystemError(EINVAL, "a VM needs 1.." + std::to_string(VmState::max_vcpus) +
                                      " vCPUs, not " + std::to_string(cpus));
    }
    if (kvm.check_extension(KVM_CAP_IRQCHIP) <= 0 || kvm.check_extension(KVM_CAP_PIT2) <= 0) {
        throw SystemError(ENOTSUP, "this KVM has no in-kernel irqchip or PIT");
    }
    vm_.set_tss_addr(tss_addr);
    vm_.set_identity_map_addr(identity_map_addr);
    vm_.create_irqchip();
    vm_.create_pit2();
    if (memory_->size() != 0) {
        memory_->attach(vm_);
    }
    if (platform_ == Platform::Linux) {
        add_linux_devices(config);
    } else {
        bus_.add(SerialPort::base, SerialPort::len, serial_.get());
        bus_.add(ReportPort::base, ReportPort::len, report_.get());
    }
    for (unsigned i = 0; i < cpus; ++i) {
        vcpus_.push_back(std::make_unique<Vcpu>(vm_.create_vcpu(i)));
    }
}

void Machine::add_linux_devices(const MachineConfig& config) {
    auto com1_irq = std::make_unique<KvmIrqLine>(vm_, platform::com1_gsi);
    auto uart = std::make_unique<Uart16550>(
        platform::com1_port, *com1_irq,
        [this](std::span<const std::uint8_t> bytes) { serial_->append(bytes); });
    auto i8042 = std::make_unique<I8042>([this] { power_off(); });
    auto pm = std::make_unique<AcpiPm>([this] { power_off(); }, [this] { power_off(); });
    uart_ = uart.get();
    bus_.add(platform::com1_port, platform::com1_ports, uart.get());
    bus_.add(platform::i8042_data_port, 1, i8042.get());
    bus_.add(platform::i8042_command_port, 1, i8042.get());
    bus_.add(platform::acpi_pm_port, platform::acpi_pm_ports, pm.get());
    stateful_ = {uart.get(), i8042.get(), pm.get()};
    irq_lines_.push_back(std::move(com1_irq));
    pio_devices_.push_back(std::move(uart));
    pio_devices_.push_back(std::move(i8042));
    pio_devices_.push_back(std::move(pm));
    if (config.vsock && VhostVsock::available()) {
        auto irq = std::make_unique<KvmIrqLine>(vm_, platform::virtio_mmio_gsi(0));
        auto vsock = std::make_unique<VhostVsock>(*memory_, *irq);
        vsock_ = vsock.get();
        mmio_.add(platform::virtio_mmio_addr(0), platform::virtio_mmio_slot_size, vsock.get());
        stateful_.push_back(vsock.get());
        irq_lines_.push_back(std::move(irq));
        mmio_devices_.push_back(std::move(vsock));
    }
    // Disks from slot 1 on; slot 0 stays vsock's, with or without it, so that a disk's
    // slot (and its interrupt) does not depend on the host.
    constexpr std::size_t max_disks = platform::net_slot - 1;
    if (config.disks.size() > max_disks) {
        throw SystemError(EINVAL, "at most " + std::to_string(max_disks) + " disks, not " +
                                      std::to_string(config.disks.size()));
    }
    for (std::size_t i = 0; i < config.disks.size(); ++i) {
        const auto slot = static_cast<unsigned>(i + 1);
        auto irq = std::make_unique<KvmIrqLine>(vm_, platform::virtio_mmio_gsi(slot));
        auto blk = std::make_unique<VirtioBlk>(*memory_, *irq, config.disks[i],
                                               "virtio-blk-" + std::to_string(i),
                                               "vmfork-disk-" + std::to_string(i));
        disks_.push_back(blk.get());
        mmio_.add(platform::virtio_mmio_addr(slot), platform::virtio_mmio_slot_size, blk.get());
        stateful_.push_back(blk.get());
        irq_lines_.push_back(std::move(irq));
        mmio_devices_.push_back(std::move(blk));
    }
    if (!config.net.tap.empty()) {
        Tap tap(config.net.tap);
        if (config.net.host_address) {
            tap.set_address(*config.net.host_address);
        } else {
            tap.set_up();
        }
        auto irq = std::make_unique<KvmIrqLine>(vm_, platform::virtio_mmio_gsi(platform::net_slot));
        // A clone's device takes its parent's MAC from the state.
        auto net =
            std::make_unique<VhostNet>(*memory_, *irq, std::move(tap), VhostNet::random_mac());
        net_ = net.get();
        mmio_.add(platform::virtio_mmio_addr(platform::net_slot), platform::virtio_mmio_slot_size,
                  net.get());
        stateful_.push_back(net.get());
        irq_lines_.push_back(std::move(irq));
        mmio_devices_.push_back(std::move(net));
    }
}

namespace {

// A VM's vsock CID: from its memory object's id, which no other live VM of this
// host's vmfork has (0-2 are reserved; 3.. are guests').
std::uint64_t vsock_cid_for(const CloneIdentity& identity) {
    return 1000 + identity.id;
}

} // namespace

std::uint64_t Machine::vsock_cid() const {
    return vsock_ != nullptr ? vsock_->cid() : 0;
}

void Machine::power_off() {
    if (powered_off_.exchange(true)) {
        return;
    }
    for (auto& r : runners_) {
        r->request_exit();
    }
    if (on_power_off_) {
        on_power_off_();
    }
}

void Machine::console_input(std::span<const std::uint8_t> bytes) {
    if (uart_ == nullptr) {
        throw SystemError(ENOTSUP, "the built-in guest's console takes no input");
    }
    uart_->receive(bytes);
}

void Machine::load_state(const VmState& state, const CloneIdentity& identity) {
    if (vsock_ != nullptr) {
        vsock_->set_cid(vsock_cid_for(identity)); // a clone's own, before the restore
    }
    restore_vm(vm_, vcpu_ptrs(), state);
    restore_devices(state);
    set_identity(identity);
}

void Machine::restore_devices(const VmState& state) {
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

Machine::~Machine() {
    for (auto& r : runners_) {
        r->stop();
    }
}

std::unique_ptr<Machine> Machine::boot(const Kvm& kvm, const Device& device,
                                       const MachineConfig& config, BootLoader& loader) {
    return boot(kvm, device.create_memory(config.mem_size), config, loader);
}

std::unique_ptr<Machine> Machine::boot(const Kvm& kvm, MemoryObject memory,
                                       const MachineConfig& config, BootLoader& loader) {
    auto m =
        std::make_unique<Machine>(Key{}, kvm, GuestMemory(std::move(memory)), config.cpus, config);
    for (const auto& vcpu : m->vcpus_) {
        const auto cpuid = cpuid_for(kvm, vcpu->id());
        vcpu->set_cpuid(cpuid);
        if (m->platform_ == Platform::Linux && kvm.check_extension(KVM_CAP_XCRS) > 0) {
            kvm_xcrs xcrs = vcpu->get_xcrs();
            for (std::uint32_t i = 0; i < xcrs.nr_xcrs; ++i) {
                if (xcrs.xcrs[i].xcr == 0) {
                    xcrs.xcrs[i].value = linux_xcr0(cpuid);
                }
            }
            vcpu->set_xcrs(xcrs);
        }
    }
    if (m->platform_ == Platform::Linux) {
        const auto tables = build_acpi_tables({.vcpus = static_cast<std::uint32_t>(config.cpus)});
        std::memcpy(m->memory_->at(platform::acpi_base, tables.size()), tables.data(),
                    tables.size());
    }
    loader.load(*m->memory_, m->vcpu_ptrs());
    const CloneIdentity identity{0, m->memory_->object().id()};
    // The DSDT shows the virtio-mmio slots with a device (their _STA read this byte).
    std::uint8_t slots = m->vsock_ != nullptr ? 1 : 0;
    for (std::size_t i = 0; i < m->disks_.size(); ++i) {
        slots |= static_cast<std::uint8_t>(1U << (i + 1));
    }
    if (m->net_ != nullptr) {
        slots |= static_cast<std::uint8_t>(1U << platform::net_slot);
    }
    if (slots != 0) {
        m->memory_->write<std::uint8_t>(platform::platform_info_addr, slots);
    }
    if (m->vsock_ != nullptr) {
        m->vsock_->set_cid(vsock_cid_for(identity));
    }
    m->set_identity(identity);
    m->start(false);
    return m;
}

std::unique_ptr<Machine> Machine::restore(const Kvm& kvm, MemoryObject memory, const VmState& state,
                                          const CloneIdentity& identity,
                                          const MachineConfig& config) {
    if (state.mem_size != memory.size()) {
        throw SystemError(EINVAL, "the state is of a VM with " + std::to_string(state.mem_size) +
                                      " bytes of RAM, the memory object has " +
                                      std::to_string(memory.size()));
    }
    return restore(kvm, GuestMemory(std::move(memory)), state, identity, config);
}

std::unique_ptr<Machine> Machine::restore(const Kvm& kvm, GuestMemory memory, const VmState& state,
                                          const CloneIdentity& identity,
                                          const MachineConfig& config) {
    if (state.mem_size != memory.size()) {
        throw SystemError(EINVAL, "the state is of a VM with " + std::to_string(state.mem_size) +
                                      " bytes of RAM, the guest memory has " +
                                      std::to_string(memory.size()));
    }
    auto m = std::make_unique<Machine>(Key{}, kvm, std::move(memory),
                                       static_cast<unsigned>(state.vcpus.size()), config);
    m->load_state(state, identity);
    m->start(false);
    return m;
}

std::unique_ptr<Machine> Machine::prepare(const Kvm& kvm, unsigned cpus,
                                          const MachineConfig& config) {
    return std::make_unique<Machine>(Key{}, kvm, GuestMemory(), cpus, config);
}

void Machine::start_clone(GuestMemory memory, const VmState& state, const CloneIdentity& identity) {
    if (!runners_.empty() || memory_->size() != 0) {
        throw SystemError(EBUSY, "start_clone() on a machine that already has RAM");
    }
    if (state.vcpus.size() != vcpus_.size() || state.mem_size != memory.size()) {
        throw SystemError(EINVAL, "start_clone() with the state of a different VM");
    }
    // Moved into the same GuestMemory the report port refers to.
    *memory_ = std::move(memory);
    memory_->attach(vm_);
    load_state(state, identity);
    start(false);
}

void Machine::kick() const {
    for (const auto& vcpu : vcpus_) {
        kvm_msi msi{};
        msi.address_lo = 0xfee00000U | (vcpu->id() << 12); // physical destination: APIC ID
        msi.data = VMFORK_GUEST_TIMER_VECTOR;              // fixed delivery, edge
        if (::ioctl(vm_.fd(), KVM_SIGNAL_MSI, &msi) < 0) {
            throw SystemError::from_errno("KVM_SIGNAL_MSI");
        }
    }
}

void Machine::start(bool paused) {
    for (auto& vcpu : vcpus_) {
        runners_.push_back(std::make_unique<VcpuRunner>(*vcpu, bus_, mmio_));
    }
    for (auto& r : runners_) {
        r->start(paused);
    }
}

std::vector<const Vcpu*> Machine::vcpu_ptrs() const {
    std::vector<const Vcpu*> v;
    v.reserve(vcpus_.size());
    for (const auto& vcpu : vcpus_) {
        v.push_back(vcpu.get());
    }
    return v;
}

void Machine::pause() {
    for (auto& r : runners_) {
        if (!r->pause()) {
            throw SystemError(ETIMEDOUT, "a vCPU did not pause within 10 s");
        }
    }
    // No device writes guest memory (or a disk) while the VM is paused (and forked).
    if (vsock_ != nullptr) {
        vsock_->pause();
    }
    for (auto* d : disks_) {
        d->pause();
    }
    if (net_ != nullptr) {
        net_->pause();
    }
}

void Machine::resume() {
    if (vsock_ != nullptr) {
        vsock_->resume();
    }
    for (auto* d : disks_) {
        d->resume();
    }
    if (net_ != nullptr) {
        net_->resume();
    }
    for (auto& r : runners_) {
        r->resume();
    }
}

VmState Machine::capture() const {
    for (const auto& r : runners_) {
        if (r->state() == VcpuLifecycle::Running) {
            throw SystemError(EBUSY, "capture of a running VM: pause it first");
        }
    }
    VmState state = capture_vm(kvm_, vm_, vcpu_ptrs(), memory_->size());
    for (const StatefulDevice* d : stateful_) {
        StateWriter out;
        d->save(out);
        state.devices.push_back({std::string(d->section()), std::move(out).take()});
    }
    return state;
}

Machine::Fork Machine::fork(ForkMode mode) {
    pause();
    try {
        VmState state = capture();
        MemoryObject child = memory_->object().fork(mode);
        std::vector<DiskFork> disks = fork_disks();
        if (mode == ForkMode::Live) {
            resume();
        }
        return {std::move(child), std::move(state), std::move(disks)};
    } catch (...) {
        if (mode == ForkMode::Live) {
            resume();
        }
        throw;
    }
}

void Machine::reset_to(const VmState& state, const CloneIdentity& identity) {
    if (state.vcpus.size() != vcpus_.size() || state.mem_size != memory_->size()) {
        throw SystemError(EINVAL, "reset to the state of a different VM");
    }
    pause();
    try {
        memory_->object().reset();
    } catch (...) {
        resume(); // nothing changed
        throw;
    }
    for (auto* d : disks_) {
        if (auto* layered = dynamic_cast<LayeredDisk*>(d->disk().get()); layered != nullptr) {
            layered->reset();
        }
    }
    load_state(state, identity);
    resume();
}

std::vector<DiskFork> Machine::fork_disks() {
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
                base, std::vector<std::shared_ptr<DiskLayer>>{}, disk_dir_));
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

std::vector<DiskReport> Machine::disks() const {
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

void Machine::set_identity(const CloneIdentity& identity) {
    identity_ = identity;
    if (platform_ == Platform::Linux) {
        if (identity.generation == 0 || new_generations_) {
            new_vm_generation(identity.generation != 0);
        }
        return;
    }
    // id first, generation last: the guest takes a new generation as the signal.
    memory_->write(VMFORK_GUEST_IDENTITY + offsetof(vmfork_guest_identity, id), identity.id);
    __atomic_thread_fence(__ATOMIC_RELEASE);
    memory_->write(VMFORK_GUEST_IDENTITY + offsetof(vmfork_guest_identity, generation),
                   identity.generation);
}

void Machine::new_vm_generation(bool notify) {
    // A fresh random 128-bit VM generation ID for every boot, clone and reset: the
    // guest's vmgenid driver mixes it into the RNG and reseeds it ("crng reseeded due
    // to virtual machine fork"), so no two clones go on with the same random numbers.
    std::array<std::byte, platform::vmgenid_size> id{};
    random_bytes(id, "the VM generation ID");
    std::memcpy(memory_->at(platform::vmgenid_addr, id.size()), id.data(), id.size());
    if (notify) {
        // An edge on the Generic Event Device's GSI: its _EVT notifies VGEN (0x80).
        // Before the vCPUs run it waits in the IOAPIC/LAPIC state just restored.
        vm_.irq_line(platform::ged_gsi, true);
        vm_.irq_line(platform::ged_gsi, false);
    }
}

CloneIdentity Machine::identity() const {
    if (platform_ == Platform::Linux) {
        return identity_;
    }
    return {
        memory_->read<std::uint64_t>(VMFORK_GUEST_IDENTITY +
                                     offsetof(vmfork_guest_identity, generation)),
        memory_->read<std::uint64_t>(VMFORK_GUEST_IDENTITY + offsetof(vmfork_guest_identity, id))};
}

std::vector<VcpuLifecycle> Machine::vcpu_states() const {
    std::vector<VcpuLifecycle> v;
    for (const auto& r : runners_) {
        v.push_back(r->state());
    }
    return v;
}

std::vector<std::string> Machine::errors() const {
    std::vector<std::string> v;
    for (const auto& r : runners_) {
        if (auto e = r->error(); !e.empty()) {
            v.push_back(std::move(e));
        }
    }
    return v;
}

} // namespace vmfork
