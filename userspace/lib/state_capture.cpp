// SPDX-License-Identifier: GPL-2.0
// Capture and restore of VmState with the standard KVM ioctls.
#include <cerrno>

#include "vmfork/kvm.h"
#include "vmfork/system_error.h"
#include "vmfork/vm_state.h"

namespace vmfork {

namespace {
constexpr std::uint32_t msr_ia32_tsc = 0x10;
} // namespace

VcpuState capture_vcpu(const Kvm& kvm, const Vcpu& vcpu) {
    VcpuState s;
    s.cpuid = vcpu.get_cpuid();
    // mp_state first: KVM_GET_MP_STATE may process a pending INIT/SIPI and so
    // change the registers read after it.
    s.mp_state = vcpu.get_mp_state();
    s.regs = vcpu.get_regs();
    s.sregs = vcpu.get_sregs();
    s.fpu = vcpu.get_fpu();
    s.xsave = vcpu.get_xsave();
    if (kvm.check_extension(KVM_CAP_XCRS) > 0) {
        s.xcrs = vcpu.get_xcrs();
        s.has_xcrs = true;
    }
    s.debugregs = vcpu.get_debugregs();
    s.lapic = vcpu.get_lapic();
    s.tsc_khz = vcpu.get_tsc_khz();
    s.msrs = vcpu.get_msrs(saveable_msrs(kvm, vcpu));
    s.events = vcpu.get_vcpu_events();
    return s;
}

VmState capture_vm(const Kvm& kvm, const Vm& vm, const std::vector<const Vcpu*>& vcpus,
                   std::uint64_t mem_size) {
    VmState s;
    s.mem_size = mem_size;
    s.pic_master = vm.get_irqchip(KVM_IRQCHIP_PIC_MASTER);
    s.pic_slave = vm.get_irqchip(KVM_IRQCHIP_PIC_SLAVE);
    s.ioapic = vm.get_irqchip(KVM_IRQCHIP_IOAPIC);
    s.pit = vm.get_pit2();
    s.clock = vm.get_clock();
    for (const Vcpu* vcpu : vcpus) {
        s.vcpus.push_back(capture_vcpu(kvm, *vcpu));
    }
    return s;
}

void restore_vcpu(const Vcpu& vcpu, const VcpuState& s) {
    vcpu.set_cpuid(s.cpuid);
    if (s.tsc_khz != 0 && s.tsc_khz != vcpu.get_tsc_khz()) {
        vcpu.set_tsc_khz(s.tsc_khz);
    }
    vcpu.set_mp_state(s.mp_state);
    vcpu.set_regs(s.regs);
    vcpu.set_sregs(s.sregs);
    if (s.xsave.empty()) {
        vcpu.set_fpu(s.fpu);
    } else {
        vcpu.set_xsave(s.xsave);
    }
    if (s.has_xcrs) {
        vcpu.set_xcrs(s.xcrs);
    }
    vcpu.set_debugregs(s.debugregs);
    vcpu.set_lapic(s.lapic);
    vcpu.set_msrs(s.msrs);
    for (const kvm_msr_entry& m : s.msrs) {
        if (m.index == msr_ia32_tsc) {
            (void)vcpu.set_guest_tsc(m.data); // the MSR write may have been ignored
        }
    }
    vcpu.set_vcpu_events(s.events);
}

void restore_vm(const Vm& vm, const std::vector<const Vcpu*>& vcpus, const VmState& s) {
    if (vcpus.size() != s.vcpus.size()) {
        throw SystemError(EINVAL, "restore: the state has " + std::to_string(s.vcpus.size()) +
                                      " vCPUs, the VM " + std::to_string(vcpus.size()));
    }
    vm.set_irqchip(s.pic_master);
    vm.set_irqchip(s.pic_slave);
    vm.set_irqchip(s.ioapic);
    vm.set_pit2(s.pit);
    vm.set_clock(s.clock);
    for (std::size_t i = 0; i < vcpus.size(); ++i) {
        restore_vcpu(*vcpus[i], s.vcpus[i]);
    }
}

} // namespace vmfork
