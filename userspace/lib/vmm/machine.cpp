// SPDX-License-Identifier: GPL-2.0
#include "vmfork/vmm/machine.h"

#include <cerrno>
#include <fcntl.h>

#include "vmfork/device.h"
#include "vmfork/system_error.h"
#include "vmfork/vmm/boot_loader.h"

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

} // namespace

Machine::Machine(Key /*key*/, const Kvm& kvm, GuestMemory memory, unsigned cpus,
                 std::unique_ptr<GuestProfile> profile, const MachineConfig& config)
    : kvm_(kvm), memory_(std::make_unique<GuestMemory>(std::move(memory))),
      serial_(std::make_unique<SerialPort>(open_serial(config.serial_path))), vm_(kvm.create_vm()),
      devices_(vm_, cpus, *memory_, *serial_, [this] { power_off(); }),
      profile_(std::move(profile)), on_power_off_(config.on_power_off) {
    // Only a warm machine (prepare()) is made without a profile, and with no RAM.
    if (!profile_ && memory_->size() != 0) {
        throw SystemError(EINVAL, "a machine needs a guest profile");
    }
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
    if (profile_) {
        profile_->add_devices(devices_);
    }
    for (unsigned i = 0; i < cpus; ++i) {
        vcpus_.push_back(std::make_unique<Vcpu>(vm_.create_vcpu(i)));
    }
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

void Machine::load_state(const VmState& state, const CloneIdentity& identity) {
    profile_->assign_identity(identity);
    restore_vm(vm_, vcpu_ptrs(), state);
    devices_.restore(state);
    profile_->apply_identity(identity);
}

Machine::~Machine() {
    for (auto& r : runners_) {
        r->stop();
    }
}

std::unique_ptr<Machine> Machine::boot(const Kvm& kvm, const Device& device,
                                       const MachineConfig& config,
                                       std::unique_ptr<GuestProfile> profile, BootLoader& loader) {
    return boot(kvm, device.create_memory(config.mem_size), config, std::move(profile), loader);
}

std::unique_ptr<Machine> Machine::boot(const Kvm& kvm, MemoryObject memory,
                                       const MachineConfig& config,
                                       std::unique_ptr<GuestProfile> profile, BootLoader& loader) {
    if (!profile) {
        throw SystemError(EINVAL, "a machine needs a guest profile");
    }
    auto m = std::make_unique<Machine>(Key{}, kvm, GuestMemory(std::move(memory)), config.cpus,
                                       std::move(profile), config);
    for (const auto& vcpu : m->vcpus_) {
        const auto cpuid = cpuid_for(kvm, vcpu->id());
        vcpu->set_cpuid(cpuid);
        m->profile_->setup_vcpu(kvm, *vcpu, cpuid);
    }
    m->profile_->setup_memory(*m->memory_, config.cpus);
    loader.load(*m->memory_, m->vcpu_ptrs());
    const CloneIdentity identity{0, m->memory_->object().id()};
    m->profile_->assign_identity(identity);
    m->profile_->apply_identity(identity);
    m->start(false);
    return m;
}

std::unique_ptr<Machine> Machine::restore(const Kvm& kvm, MemoryObject memory, const VmState& state,
                                          const CloneIdentity& identity,
                                          std::unique_ptr<GuestProfile> profile,
                                          const MachineConfig& config) {
    if (state.mem_size != memory.size()) {
        throw SystemError(EINVAL, "the state is of a VM with " + std::to_string(state.mem_size) +
                                      " bytes of RAM, the memory object has " +
                                      std::to_string(memory.size()));
    }
    return restore(kvm, GuestMemory(std::move(memory)), state, identity, std::move(profile),
                   config);
}

std::unique_ptr<Machine> Machine::restore(const Kvm& kvm, GuestMemory memory, const VmState& state,
                                          const CloneIdentity& identity,
                                          std::unique_ptr<GuestProfile> profile,
                                          const MachineConfig& config) {
    if (state.mem_size != memory.size()) {
        throw SystemError(EINVAL, "the state is of a VM with " + std::to_string(state.mem_size) +
                                      " bytes of RAM, the guest memory has " +
                                      std::to_string(memory.size()));
    }
    if (!profile) {
        throw SystemError(EINVAL, "a machine needs a guest profile");
    }
    auto m = std::make_unique<Machine>(Key{}, kvm, std::move(memory),
                                       static_cast<unsigned>(state.vcpus.size()),
                                       std::move(profile), config);
    m->load_state(state, identity);
    m->start(false);
    return m;
}

std::unique_ptr<Machine> Machine::prepare(const Kvm& kvm, unsigned cpus,
                                          std::unique_ptr<GuestProfile> profile,
                                          const MachineConfig& config) {
    return std::make_unique<Machine>(Key{}, kvm, GuestMemory(), cpus, std::move(profile), config);
}

void Machine::check_clone_target(const GuestMemory& memory, const VmState& state) const {
    if (!runners_.empty() || memory_->size() != 0) {
        throw SystemError(EBUSY, "start_clone() on a machine that already has RAM");
    }
    if (state.vcpus.size() != vcpus_.size() || state.mem_size != memory.size()) {
        throw SystemError(EINVAL, "start_clone() with the state of a different VM");
    }
}

void Machine::start_clone(GuestMemory memory, const VmState& state, const CloneIdentity& identity,
                          std::unique_ptr<GuestProfile> profile, const MachineConfig& config) {
    if (profile_ || !profile) {
        throw SystemError(EINVAL, "start_clone() with a profile is for a machine prepared "
                                  "without one");
    }
    check_clone_target(memory, state);
    serial_->set_output(open_serial(config.serial_path));
    on_power_off_ = config.on_power_off;
    *memory_ = std::move(memory);
    memory_->attach(vm_);
    // The devices see RAM from the start, as on a machine that restore() makes.
    profile_ = std::move(profile);
    profile_->add_devices(devices_);
    load_state(state, identity);
    start(false);
}

void Machine::start_clone(GuestMemory memory, const VmState& state, const CloneIdentity& identity) {
    if (!profile_) {
        throw SystemError(EINVAL, "start_clone() without a profile on a machine that has none");
    }
    check_clone_target(memory, state);
    // Moved into the same GuestMemory the profile's devices refer to.
    *memory_ = std::move(memory);
    memory_->attach(vm_);
    load_state(state, identity);
    start(false);
}

void Machine::start(bool paused) {
    for (auto& vcpu : vcpus_) {
        runners_.push_back(
            std::make_unique<VcpuRunner>(*vcpu, devices_.pio_bus(), devices_.mmio_bus()));
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
    if (profile_) {
        profile_->pause();
    }
}

void Machine::resume() {
    if (profile_) {
        profile_->resume();
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
    devices_.save(state);
    return state;
}

Machine::Fork Machine::fork(ForkMode mode) {
    pause();
    try {
        VmState state = capture();
        MemoryObject child = memory_->object().fork(mode);
        if (mode == ForkMode::Live) {
            resume();
        }
        return {std::move(child), std::move(state)};
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
    profile_->reset();
    load_state(state, identity);
    resume();
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
