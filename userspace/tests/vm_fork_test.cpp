// SPDX-License-Identifier: GPL-2.0
// The VMM end to end, in-process: boot the built-in guest on vmfork memory, fork it,
// run the clone as a new KVM VM and check it continued exactly where the parent was.
// Needs /dev/kvm and /dev/vmfork: skipped without them (run inside the test VM by
// scripts/check.sh). What each test proves about restored vCPU state is named in it.
#include <algorithm>
#include <chrono>
#include <functional>
#include <gtest/gtest.h>
#include <optional>
#include <string>
#include <unistd.h>

#include "guest_abi.h"
#include "thrown_errno.h"
#include "vm_env.h"
#include "vmfork/device.h"
#include "vmfork/kvm.h"
#include "vmfork/vm_state.h"
#include "vmfork/vmm/guests/builtin/loader.h"
#include "vmfork/vmm/guests/builtin/profile.h"
#include "vmfork/vmm/guests/builtin/report_verifier.h"
#include "vmfork/vmm/guests/linux/profile.h"
#include "vmfork/vmm/machine.h"

namespace vmfork {
namespace {

using namespace std::chrono_literals;

constexpr std::uint64_t mem_size = 16 << 20;
constexpr std::uint64_t fill_percent = 50;
constexpr std::uint64_t report_every = 20000;
constexpr auto timeout = 120s; // nested KVM under TCG is slow

std::uint64_t checksum_at(std::uint64_t cpu, std::uint64_t step) {
    return ReportVerifier::advance(vmfork_guest_seed(cpu), 0, step);
}

// Every value a report carries is a function of (cpu, step) or set at boot.
void expect_consistent(const vmfork_guest_slot& r, const std::string& who) {
    SCOPED_TRACE(who + " cpu " + std::to_string(r.cpu) + " step " + std::to_string(r.step));
    EXPECT_EQ(r.checksum, checksum_at(r.cpu, r.step)) << "checksum (guest RAM + registers)";
    EXPECT_EQ(r.xmm, r.step * VMFORK_GUEST_XMM_INC) << "xmm15 (xsave/fpu state)";
    EXPECT_EQ(r.apic_ldr, vmfork_guest_apic_ldr(r.cpu)) << "LAPIC LDR (LAPIC state)";
    EXPECT_EQ(r.dr0, vmfork_guest_dr0(r.cpu)) << "DR0 (debugregs)";
    EXPECT_EQ(r.lstar, vmfork_guest_lstar(r.cpu)) << "MSR_LSTAR (MSRs)";
}

// The paused VM's memory: each vCPU's slot and its last work words match its step.
void expect_memory_consistent(const Machine& m, const std::string& who) {
    for (unsigned cpu = 0; cpu < m.cpus(); ++cpu) {
        const auto slot = m.memory().read<vmfork_guest_slot>(VMFORK_GUEST_SLOTS +
                                                             cpu * sizeof(vmfork_guest_slot));
        SCOPED_TRACE(who + " cpu " + std::to_string(cpu) + " at step " + std::to_string(slot.step));
        std::uint64_t sum = vmfork_guest_seed(cpu);
        const std::uint64_t first =
            slot.step > VMFORK_GUEST_WORK_WORDS ? slot.step - VMFORK_GUEST_WORK_WORDS + 1 : 1;
        std::uint64_t bad = 0;
        for (std::uint64_t k = 1; k <= slot.step; ++k) {
            sum = vmfork_guest_step(sum, k);
            if (k >= first) {
                const std::uint64_t gpa = VMFORK_GUEST_WORK + cpu * VMFORK_GUEST_WORK_SIZE +
                                          (k % VMFORK_GUEST_WORK_WORDS) * 8;
                bad += m.memory().read<std::uint64_t>(gpa) != vmfork_guest_work_value(sum, k);
            }
        }
        // The guest stores the checksum of step k just before k: paused between the
        // two stores, RAM holds k - 1 and checksum(k).
        EXPECT_TRUE(slot.checksum == sum || slot.checksum == vmfork_guest_step(sum, slot.step + 1))
            << "the checksum in RAM must be that of its step";
        EXPECT_EQ(bad, 0U) << "work words that are not those of this VM's own steps";
    }
}

std::size_t reports_of(const std::vector<GuestReport>& reports, std::uint64_t cpu) {
    std::size_t n = 0;
    for (const auto& r : reports) {
        n += r.slot.cpu == cpu;
    }
    return n;
}

// A report whose loop iteration began in the clone. The iteration that was running at
// the fork began in the parent: it read the parent's identity, and its rdtsc may
// predate the fork. RAM at the fork holds step k - 1 or k for that iteration k, so
// every report past step + 1 is wholly the clone's.
// The built-in guest's reports to the machine.
const ReportPort& reports_of(const Machine& m) {
    return m.profile<BuiltinProfile>().reports();
}

bool began_in_clone(const vmfork_guest_slot& r, std::uint64_t fork_step) {
    return r.step > fork_step + 1;
}

bool each_cpu_reported(const Machine& m, std::size_t n, std::size_t skip = 0) {
    return reports_of(m).wait_for(
        [&](const std::vector<GuestReport>& reports) {
            const std::vector<GuestReport> after(
                reports.begin() + static_cast<std::ptrdiff_t>(std::min(skip, reports.size())),
                reports.end());
            for (unsigned cpu = 0; cpu < m.cpus(); ++cpu) {
                if (reports_of(after, cpu) < n) {
                    return false;
                }
            }
            return true;
        },
        std::chrono::duration_cast<std::chrono::milliseconds>(timeout));
}

std::string describe(const Machine& m) {
    std::string s = "console: " + m.serial().output();
    for (const auto& e : m.errors()) {
        s += "\nerror: " + e;
    }
    for (auto st : m.vcpu_states()) {
        s += std::string("\nvCPU state: ") + to_string(st);
    }
    return s;
}

class VmFork : public ::testing::Test {
protected:
    void SetUp() override {
        VMFORK_REQUIRE_KVM_AND_VMFORK();
        kvm_.emplace(Kvm::open());
        dev_.emplace(Device::open());
    }

    std::unique_ptr<Machine> boot(unsigned cpus) {
        BuiltinGuestLoader loader(fill_percent, report_every);
        MachineConfig config;
        config.mem_size = mem_size;
        config.cpus = cpus;
        return Machine::boot(*kvm_, *dev_, config, std::make_unique<BuiltinProfile>(), loader);
    }

    std::optional<Kvm> kvm_;
    std::optional<Device> dev_;
};

// Proves: the loader's long-mode setup (sregs, page tables, GDT), the run loop, the
// serial and report ports, and the guest's own arithmetic the other tests rely on.
TEST_F(VmFork, BuiltinGuestBootsAndReports) {
    auto vm = boot(1);
    ASSERT_TRUE(each_cpu_reported(*vm, 3)) << describe(*vm);
    const auto reports = reports_of(*vm).reports();
    std::uint64_t last_step = 0;
    std::uint64_t last_tsc = 0;
    for (const auto& r : reports) {
        expect_consistent(r.slot, "booted VM");
        EXPECT_EQ(r.slot.generation, 0U);
        EXPECT_EQ(r.slot.id, vm->memory().object().id());
        EXPECT_GT(r.slot.step, last_step);
        EXPECT_GT(r.slot.tsc, last_tsc);
        last_step = r.slot.step;
        last_tsc = r.slot.tsc;
    }
    EXPECT_GT(reports.front().slot.filled_pages, 0U) << "the guest must fill RAM at boot";
    EXPECT_NE(vm->serial().output().find("vmfork guest: 1 cpus"), std::string::npos)
        << describe(*vm);
    const auto stats = vm->memory().object().stats();
    EXPECT_GE(stats.resident_pages, reports.front().slot.filled_pages);
    vm->pause();
    expect_memory_consistent(*vm, "booted VM");
    EXPECT_TRUE(vm->errors().empty()) << describe(*vm);
}

// Checks the clone's reports of vCPU cpu against the fork-time RAM: the clone continued
// from the fork (not from boot, not from later), its arithmetic and every state item
// the guest reports are right, and reports begun in the clone carry its identity.
void expect_clone_continues(const std::vector<GuestReport>& reports, std::uint64_t cpu,
                            const vmfork_guest_slot& at_fork, std::uint64_t fork_tsc,
                            const CloneIdentity& identity) {
    SCOPED_TRACE("clone cpu " + std::to_string(cpu) + ", step at the fork " +
                 std::to_string(at_fork.step));
    bool first = true;
    std::size_t own = 0;
    for (const auto& r : reports) {
        if (r.slot.cpu != cpu) {
            continue;
        }
        expect_consistent(r.slot, "clone");
        if (first) {
            EXPECT_GE(r.slot.step, at_fork.step) << "the clone must not go back before the fork";
            EXPECT_LE(r.slot.step, at_fork.step + report_every)
                << "the clone must continue from the fork, not skip ahead or restart";
            first = false;
        }
        if (!began_in_clone(r.slot, at_fork.step)) {
            continue;
        }
        ++own;
        EXPECT_EQ(r.slot.generation, identity.generation) << "the clone must see its generation";
        EXPECT_EQ(r.slot.id, identity.id) << "the clone must see its own id";
        EXPECT_GE(r.slot.identity_changes, 1U) << "the clone must notice the new generation";
        EXPECT_GE(r.slot.tsc, fork_tsc) << "the TSC must not go back in a clone";
    }
    EXPECT_GE(own, 1U) << "no report of this vCPU was begun in the clone";
}

// Proves: regs (rip, rsp and the loop's registers), sregs (long mode), xsave (xmm15),
// LAPIC (LDR), debugregs (DR0), MSRs (LSTAR), TSC (monotonic across the fork) and
// guest RAM via the fork child; identity page; isolation in both directions.
TEST_F(VmFork, CloneContinuesWhereTheParentStoppedAndIsIsolated) {
    auto parent = boot(1);
    ASSERT_TRUE(each_cpu_reported(*parent, 2)) << describe(*parent);

    auto fork = parent->fork();
    const auto at_fork = reports_of(*parent).reports().size();
    // The child object holds the fork-time RAM: the parent's step at the fork.
    GuestMemory child_view(MemoryObject::adopt(UniqueFd(::dup(fork.memory.fd()))));
    const auto fork_slot = child_view.read<vmfork_guest_slot>(VMFORK_GUEST_SLOTS);
    // Between reports only step and checksum are kept up to date in the slot.
    EXPECT_TRUE(fork_slot.checksum == checksum_at(0, fork_slot.step) ||
                fork_slot.checksum == checksum_at(0, fork_slot.step + 1))
        << "fork-time RAM (the checksum is stored just before its step)";
    const auto saved_tsc = fork.state.vcpus[0].msr(VcpuState::msr_ia32_tsc);
    ASSERT_TRUE(saved_tsc.has_value()) << "MSR_IA32_TSC must be among the saved MSRs";
    const std::uint64_t fork_tsc = *saved_tsc;
    EXPECT_NE(fork_tsc, 0U) << "the saved MSR_IA32_TSC of a VM that ran must not be 0 (0 with "
                               "a running guest TSC: KVM loaded before the TSC calibration "
                               "was refined; scripts/vm-run.sh waits for it)";

    const CloneIdentity identity{1, fork.memory.id()};
    auto clone =
        Machine::restore(*kvm_, std::move(fork.memory), VmState::parse(fork.state.serialize()),
                         identity, std::make_unique<BuiltinProfile>());
    ASSERT_TRUE(each_cpu_reported(*clone, 3)) << describe(*clone);
    ASSERT_TRUE(each_cpu_reported(*parent, 2, at_fork)) << describe(*parent);
    expect_clone_continues(reports_of(*clone).reports(), 0, fork_slot, fork_tsc, identity);

    const auto preports = reports_of(*parent).reports();
    for (std::size_t i = at_fork; i < preports.size(); ++i) {
        expect_consistent(preports[i].slot, "parent after the fork");
        EXPECT_EQ(preports[i].slot.generation, 0U);
        EXPECT_EQ(preports[i].slot.id, parent->memory().object().id());
        EXPECT_EQ(preports[i].slot.identity_changes, 0U);
    }

    parent->pause();
    clone->pause();
    expect_memory_consistent(*parent, "parent");
    expect_memory_consistent(*clone, "clone");
    const auto pstep = parent->memory().read<std::uint64_t>(VMFORK_GUEST_SLOTS +
                                                            offsetof(vmfork_guest_slot, step));
    const auto cstep =
        clone->memory().read<std::uint64_t>(VMFORK_GUEST_SLOTS + offsetof(vmfork_guest_slot, step));
    EXPECT_NE(pstep, cstep) << "parent and clone ran apart, their RAM must differ";
    const auto stats = clone->memory().object().stats();
    EXPECT_GT(stats.shared_pages, 0U) << "the clone must share the filled pages";
    EXPECT_GT(stats.cow_breaks, 0U) << "the clone's writes must break COW";
    EXPECT_TRUE(parent->errors().empty()) << describe(*parent);
    EXPECT_TRUE(clone->errors().empty()) << describe(*clone);
}

// The latest report of cpu 0 that satisfies pred, within the timeout.
std::optional<vmfork_guest_slot>
cpu0_report(const Machine& m, const std::function<bool(const vmfork_guest_slot&)>& pred) {
    std::optional<vmfork_guest_slot> found;
    reports_of(m).wait_for(
        [&](const std::vector<GuestReport>& reports) {
            for (auto it = reports.rbegin(); it != reports.rend(); ++it) {
                if (it->slot.cpu == 0) {
                    if (pred(it->slot)) {
                        found = it->slot;
                    }
                    break;
                }
            }
            return found.has_value();
        },
        std::chrono::duration_cast<std::chrono::milliseconds>(timeout));
    return found;
}

// Proves: the guest's own check of its filled RAM (guest_abi.h) passes in the parent
// and in a clean clone over the whole fill area, and fails in a clone whose RAM holds
// pages another VM wrote after the fork (what a copy-on-write leak looks like): a
// leak anywhere in the filled RAM is caught by the guest, not only in its report slot.
TEST_F(VmFork, GuestChecksItsFilledRamInEveryClone) {
    auto parent = boot(1);
    ASSERT_TRUE(each_cpu_reported(*parent, 2)) << describe(*parent);
    auto clean = parent->fork();
    auto leaky = parent->fork();
    const std::uint64_t pages = reports_of(*parent).reports().front().slot.filled_pages;
    ASSERT_GT(pages, 256U);
    // Pages as the parent writes them after the fork: its id, a counter past the fork.
    const std::uint64_t start = VMFORK_GUEST_WORK + VMFORK_GUEST_WORK_SIZE;
    const std::uint64_t tag =
        ((parent->memory().object().id() & 0xffffffffULL) << 32) | 0xfffffff0U;
    GuestMemory leaky_view(MemoryObject::adopt(UniqueFd(::dup(leaky.memory.fd()))));
    std::vector<std::uint64_t> bad_pages;
    for (std::uint64_t n = 17; n < pages; n += pages / 8) { // spread: the guest rewrites some
        const std::uint64_t gpa = start + n * 4096;
        leaky_view.write(gpa, tag);
        for (std::uint64_t i = 1; i < 512; ++i) {
            leaky_view.write(gpa + i * 8, vmfork_guest_fill_word(tag, gpa, i));
        }
        bad_pages.push_back(gpa);
    }
    const auto restore = [&](Machine::Fork& f, std::uint64_t gen) {
        const CloneIdentity id{gen, f.memory.id()};
        return Machine::restore(*kvm_, std::move(f.memory), f.state, id,
                                std::make_unique<BuiltinProfile>());
    };
    auto clean_clone = restore(clean, 1);
    auto leaky_clone = restore(leaky, 1);
    // Two full passes over the fill area in each.
    const auto passes = [&](const Machine& m) {
        const auto first = cpu0_report(m, [](const vmfork_guest_slot&) { return true; });
        const std::uint64_t from = first ? first->fill_checked : 0;
        return cpu0_report(
            m, [&](const vmfork_guest_slot& r) { return r.fill_checked >= from + 2 * pages; });
    };
    const auto c = passes(*clean_clone);
    ASSERT_TRUE(c.has_value()) << describe(*clean_clone);
    EXPECT_EQ(c->fill_errors, 0U) << "first wrong page at " << c->fill_first_bad;
    const auto l = passes(*leaky_clone);
    ASSERT_TRUE(l.has_value()) << describe(*leaky_clone);
    EXPECT_GE(l->fill_errors, 1U) << "pages the parent wrote after the fork must be caught";
    EXPECT_NE(std::find(bad_pages.begin(), bad_pages.end(), l->fill_first_bad), bad_pages.end())
        << "first wrong page at " << l->fill_first_bad;
    const auto p = passes(*parent);
    ASSERT_TRUE(p.has_value()) << describe(*parent);
    EXPECT_EQ(p->fill_errors, 0U) << "first wrong page at " << p->fill_first_bad;
}

// Proves: mp_state (the application processors are RUNNABLE in the clone, not waiting
// for INIT/SIPI) and per-vCPU state for 4 vCPUs (regs, xmm15, LAPIC LDR, DR0, LSTAR,
// TSC): every vCPU keeps running in the clone from its own fork-time step.
TEST_F(VmFork, FourVcpusAllKeepRunningInTheClone) {
    auto parent = boot(4);
    ASSERT_TRUE(each_cpu_reported(*parent, 1)) << describe(*parent);
    auto fork = parent->fork();
    std::vector<vmfork_guest_slot> at_fork;
    {
        const GuestMemory child_view(MemoryObject::adopt(UniqueFd(::dup(fork.memory.fd()))));
        for (unsigned cpu = 0; cpu < 4; ++cpu) {
            at_fork.push_back(child_view.read<vmfork_guest_slot>(VMFORK_GUEST_SLOTS +
                                                                 cpu * sizeof(vmfork_guest_slot)));
        }
    }
    const CloneIdentity identity{1, fork.memory.id()};
    auto clone = Machine::restore(*kvm_, std::move(fork.memory), fork.state, identity,
                                  std::make_unique<BuiltinProfile>());
    ASSERT_TRUE(each_cpu_reported(*clone, 3)) << describe(*clone);
    const auto creports = reports_of(*clone).reports();
    for (unsigned cpu = 0; cpu < 4; ++cpu) {
        EXPECT_EQ(fork.state.vcpus[cpu].mp_state.mp_state, KVM_MP_STATE_RUNNABLE);
        expect_clone_continues(creports, cpu, at_fork[cpu],
                               fork.state.vcpus[cpu].msr(VcpuState::msr_ia32_tsc).value_or(0),
                               identity);
    }
    clone->pause();
    expect_memory_consistent(*clone, "4-vCPU clone");
    EXPECT_TRUE(clone->errors().empty()) << describe(*clone);
}

// Proves the restore is exact for what the guest cannot show us: capture, restore into
// a new VM, capture again before it runs: regs, sregs, debugregs, mp_state, events,
// MSRs (but the TSC and kvmclock, which move), irqchip (PIC, IOAPIC), PIT modes, clock.
TEST_F(VmFork, RestoreThenCaptureGivesTheSameState) {
    auto parent = boot(2);
    ASSERT_TRUE(each_cpu_reported(*parent, 1)) << describe(*parent);
    parent->pause();
    const VmState a = parent->capture();
    ASSERT_EQ(a.vcpus.size(), 2U);
    EXPECT_FALSE(a.vcpus[0].msrs.empty());
    auto child = parent->memory().object().fork();
    // Restore with the clone paused: start it, pause it at once, then capture.
    auto clone = Machine::restore(*kvm_, std::move(child), VmState::parse(a.serialize()), {1, 1},
                                  std::make_unique<BuiltinProfile>());
    clone->pause();
    const VmState b = clone->capture();
    ASSERT_EQ(b.vcpus.size(), a.vcpus.size());
    EXPECT_EQ(0, std::memcmp(&a.pic_master, &b.pic_master, sizeof(kvm_irqchip))) << "PIC master";
    EXPECT_EQ(0, std::memcmp(&a.pic_slave, &b.pic_slave, sizeof(kvm_irqchip))) << "PIC slave";
    EXPECT_EQ(0, std::memcmp(&a.ioapic, &b.ioapic, sizeof(kvm_irqchip))) << "IOAPIC";
    for (int ch = 0; ch < 3; ++ch) {
        EXPECT_EQ(a.pit.channels[ch].mode, b.pit.channels[ch].mode) << "PIT channel " << ch;
        EXPECT_EQ(a.pit.channels[ch].count, b.pit.channels[ch].count) << "PIT channel " << ch;
    }
    EXPECT_GE(b.clock.clock, a.clock.clock) << "kvmclock must not go back";
    for (std::size_t i = 0; i < a.vcpus.size(); ++i) {
        SCOPED_TRACE("vCPU " + std::to_string(i));
        const VcpuState& x = a.vcpus[i];
        const VcpuState& y = b.vcpus[i];
        // The clone ran a little before the pause: rip and the loop registers moved.
        EXPECT_EQ(x.sregs.cr0, y.sregs.cr0);
        EXPECT_EQ(x.sregs.cr3, y.sregs.cr3);
        EXPECT_EQ(x.sregs.cr4, y.sregs.cr4);
        EXPECT_EQ(x.sregs.efer, y.sregs.efer);
        EXPECT_EQ(x.sregs.apic_base, y.sregs.apic_base);
        EXPECT_EQ(0, std::memcmp(&x.sregs.cs, &y.sregs.cs, sizeof(kvm_segment)));
        EXPECT_EQ(x.sregs.gdt.base, y.sregs.gdt.base);
        EXPECT_EQ(x.mp_state.mp_state, y.mp_state.mp_state);
        EXPECT_EQ(x.debugregs.db[0], y.debugregs.db[0]);
        EXPECT_EQ(x.debugregs.dr7, y.debugregs.dr7);
        EXPECT_EQ(x.has_xcrs, y.has_xcrs);
        if (x.has_xcrs) {
            EXPECT_EQ(x.xcrs.xcrs[0].value, y.xcrs.xcrs[0].value) << "XCR0";
        }
        EXPECT_EQ(x.tsc_khz, y.tsc_khz);
        EXPECT_EQ(0, std::memcmp(&x.lapic.regs[0x20], &y.lapic.regs[0x20], 4)) << "LAPIC ID";
        EXPECT_EQ(0, std::memcmp(&x.lapic.regs[0xd0], &y.lapic.regs[0xd0], 4)) << "LAPIC LDR";
        EXPECT_EQ(0, std::memcmp(&x.lapic.regs[0xf0], &y.lapic.regs[0xf0], 4)) << "LAPIC SVR";
        EXPECT_EQ(x.events.exception.injected, y.events.exception.injected);
        EXPECT_EQ(x.events.nmi.masked, y.events.nmi.masked);
        ASSERT_EQ(x.msrs.size(), y.msrs.size());
        for (std::size_t j = 0; j < x.msrs.size(); ++j) {
            const std::uint32_t idx = x.msrs[j].index;
            EXPECT_EQ(idx, y.msrs[j].index);
            // TSC, TSC_ADJUST, Hyper-V VP_RUNTIME and TIME_REF_COUNT move with time.
            const bool moves = idx == 0x10 || idx == 0x3b || idx == 0x40000010 || idx == 0x40000020;
            if (idx == 0x10) {
                EXPECT_GE(y.msrs[j].data, x.msrs[j].data) << "the TSC must not go back";
            } else if (!moves) {
                EXPECT_EQ(x.msrs[j].data, y.msrs[j].data) << "MSR " << std::hex << idx;
            }
        }
    }
}

// Proves a clone is made only with the profile of its state's guest: the built-in
// guest's state has no device section, a Linux machine saves three or more, so a Linux
// profile cannot take it (EINVAL, before any vCPU runs); and a machine's profile is
// only handed out as what it is.
TEST_F(VmFork, CloneNeedsTheProfileOfItsGuest) {
    auto parent = boot(1);
    ASSERT_TRUE(each_cpu_reported(*parent, 1)) << describe(*parent);
    EXPECT_EQ(thrown_errno<SystemError>([&] { (void)parent->profile<LinuxProfile>(); }), EINVAL);
    auto fork = parent->fork();
    EXPECT_TRUE(fork.state.devices.empty()) << "the built-in guest's devices have no state";
    LinuxConfig no_vsock;
    no_vsock.vsock = false;
    EXPECT_EQ(thrown_errno<SystemError>([&] {
                  (void)Machine::restore(*kvm_, std::move(fork.memory), fork.state, {1, 1},
                                         std::make_unique<LinuxProfile>(std::move(no_vsock)));
              }),
              EINVAL);
    EXPECT_EQ(parent->identity().generation, 0U) << "the parent's identity page is untouched";
}

} // namespace
} // namespace vmfork
