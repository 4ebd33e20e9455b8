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
    for (const Vcpu* vcpu : vcpus) {
        s.vcpus.push_back(capture_vcpu(kvm, *vcpu));
    }
    // The clock and the TSCs last, read together: the saved TSC is the guest's TSC at
    // the instant of the saved kvmclock. Reading them milliseconds apart (as slow as
    // ioctls are under nested TCG) put that gap between a clone's kvmclock and its TSC,
    // and every clone's clocksource watchdog marked the TSC unstable.
    s.clock = vm.get_clock();
    for (std::size_t i = 0; i < vcpus.size(); ++i) {
        const auto offset =
            (s.clock.flags & KVM_CLOCK_HOST_TSC) != 0 ? vcpus[i]->tsc_offset() : std::nullopt;
        // Exact with the host TSC KVM_GET_CLOCK read with the clock (no TSC scaling:
        // our VMs run at the host's TSC rate); else the closest read there is.
        const std::uint64_t tsc =
            offset ? s.clock.host_tsc + *offset : vcpus[i]->get_msrs({msr_ia32_tsc})[0].data;
        for (kvm_msr_entry& m : s.vcpus[i].msrs) {
            if (m.index == msr_ia32_tsc) {
                m.data = tsc;
            }
        }
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
    vcpu.set_msrs(s.msrs); // the TSC again in restore_vm(), with the clock
    vcpu.set_vcpu_events(s.events);
}

namespace {

// kvmclock back to the saved value, then each TSC to its saved value plus the time the
// clock has run since it was set, so that the two keep the relation they had.
void restore_clock(const Vm& vm, const std::vector<const Vcpu*>& vcpus, const VmState& s) {
    vm.set_clock(s.clock);
    const kvm_clock_data now = vm.get_clock();
    const std::uint64_t ran_ns = now.clock > s.clock.clock ? now.clock - s.clock.clock : 0;
    for (std::size_t i = 0; i < vcpus.size(); ++i) {
        const VcpuState& v = s.vcpus[i];
        const auto saved = v.msr(msr_ia32_tsc);
        if (!saved) {
            continue;
        }
        const auto ran = static_cast<std::uint64_t>(static_cast<unsigned __int128>(ran_ns) *
                                                    v.tsc_khz / 1000000);
        const std::uint64_t tsc = *saved + ran;
        const auto offset =
            (now.flags & KVM_CLOCK_HOST_TSC) != 0 ? vcpus[i]->tsc_offset() : std::nullopt;
        if (offset) {
            vcpus[i]->set_tsc_offset(tsc - now.host_tsc);
        } else {
            (void)vcpus[i]->set_guest_tsc(tsc); // the MSR write may have been ignored
        }
    }
}

} // namespace

void restore_vm(const Vm& vm, const std::vector<const Vcpu*>& vcpus, const VmState& s) {
    if (vcpus.size() != s.vcpus.size()) {
        throw SystemError(EINVAL, "restore: the state has " + std::to_string(s.vcpus.size()) +
                                      " vCPUs, the VM " + std::to_string(vcpus.size()));
    }
    vm.set_irqchip(s.pic_master);
    vm.set_irqchip(s.pic_slave);
    vm.set_irqchip(s.ioapic);
    vm.set_pit2(s.pit);
    for (std::size_t i = 0; i < vcpus.size(); ++i) {
        restore_vcpu(*vcpus[i], s.vcpus[i]);
    }
    restore_clock(vm, vcpus, s);
}

} // namespace vmfork
