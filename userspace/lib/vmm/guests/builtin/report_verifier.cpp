// SPDX-License-Identifier: GPL-2.0
#include "vmfork/vmm/guests/builtin/report_verifier.h"

#include <array>
#include <cinttypes>
#include <cstdio>

namespace vmfork {

namespace {

std::string format(const char* fmt, auto... args) {
    std::array<char, 256> buf{};
    std::snprintf(buf.data(), buf.size(), fmt, args...);
    return buf.data();
}

} // namespace

std::uint64_t ReportVerifier::advance(std::uint64_t checksum, std::uint64_t from,
                                      std::uint64_t to) {
    for (std::uint64_t k = from + 1; k <= to; ++k) {
        checksum = vmfork_guest_step(checksum, k);
    }
    return checksum;
}

ReportVerifier::ReportVerifier(unsigned cpus, CloneIdentity identity) : identity_(identity) {
    for (unsigned c = 0; c < cpus; ++c) {
        const GuestPosition p{0, vmfork_guest_seed(c), 0};
        cpus_.push_back({p, p, 0});
    }
}

ReportVerifier::ReportVerifier(const std::vector<GuestPosition>& parent,
                               const std::vector<vmfork_guest_slot>& at_fork,
                               const std::vector<std::uint64_t>& fork_tsc, CloneIdentity identity)
    : identity_(identity), clone_(true) {
    for (std::size_t c = 0; c < at_fork.size(); ++c) {
        GuestPosition p{at_fork[c].step, at_fork[c].checksum,
                        c < fork_tsc.size() ? fork_tsc[c] : 0};
        if (c >= parent.size()) {
            fail(format("cpu %zu: no parent position to check the fork against", c));
        } else if (p.step < parent[c].step || p.step - parent[c].step > max_gap) {
            fail(format("cpu %zu: fork-time RAM is at step %" PRIu64
                        ", the parent was checked at step %" PRIu64,
                        c, p.step, parent[c].step));
        } else {
            const std::uint64_t sum = advance(parent[c].checksum, parent[c].step, p.step);
            if (sum != p.checksum) {
                // The guest stores the checksum of step k just before k itself: a
                // fork between the two stores finds k - 1 with checksum(k).
                if (vmfork_guest_step(sum, p.step + 1) == p.checksum) {
                    ++p.step;
                } else {
                    fail(format("cpu %zu: fork-time RAM has checksum %#" PRIx64 " at step %" PRIu64
                                ", the parent's computation gives %#" PRIx64,
                                c, p.checksum, p.step, sum));
                }
            }
        }
        cpus_.push_back({p, p, 0});
    }
}

void ReportVerifier::fail(const std::string& what) {
    ++totals_.failures;
    if (totals_.errors.size() < max_errors) {
        totals_.errors.push_back(what);
    }
}

void ReportVerifier::check(const vmfork_guest_slot& r) {
    const std::scoped_lock lock(mutex_);
    ++totals_.reports;
    if (r.cpu >= cpus_.size()) {
        fail(format("report of cpu %" PRIu64 ", the VM has %zu vCPUs", r.cpu, cpus_.size()));
        return;
    }
    Cpu& cpu = cpus_[r.cpu];
    const std::uint64_t c = r.cpu;
    if (r.step < cpu.at.step || r.step - cpu.at.step > max_gap) {
        fail(format("cpu %" PRIu64 ": report at step %" PRIu64 " after step %" PRIu64, c, r.step,
                    cpu.at.step));
    } else if (const auto sum = advance(cpu.at.checksum, cpu.at.step, r.step); sum != r.checksum) {
        fail(format("cpu %" PRIu64 " step %" PRIu64 ": checksum %#" PRIx64 ", expected %#" PRIx64,
                    c, r.step, r.checksum, sum));
    }
    if (r.xmm != r.step * VMFORK_GUEST_XMM_INC) {
        fail(format("cpu %" PRIu64 " step %" PRIu64 ": xmm15 %#" PRIx64 " (xsave state lost)", c,
                    r.step, r.xmm));
    }
    if (r.apic_ldr != vmfork_guest_apic_ldr(c) || r.dr0 != vmfork_guest_dr0(c) ||
        r.lstar != vmfork_guest_lstar(c)) {
        fail(format("cpu %" PRIu64 " step %" PRIu64 ": LAPIC LDR %#" PRIx64 ", DR0 %#" PRIx64
                    ", LSTAR %#" PRIx64 " are not the values set at boot",
                    c, r.step, r.apic_ldr, r.dr0, r.lstar));
    }
    if (r.step > cpu.start.step + 1) { // the iteration began in this VM
        ++cpu.own;
        ++totals_.own;
        if (r.generation != identity_.generation || r.id != identity_.id) {
            fail(format("cpu %" PRIu64 " step %" PRIu64 ": identity generation %" PRIu64
                        " id %" PRIu64 ", this VM is generation %" PRIu64 " id %" PRIu64,
                        c, r.step, r.generation, r.id, identity_.generation, identity_.id));
        }
        if (clone_ && r.identity_changes == 0) {
            fail(format("cpu %" PRIu64 " step %" PRIu64 ": the guest did not see its new identity",
                        c, r.step));
        }
        if (r.tsc < cpu.at.tsc) {
            fail(format("cpu %" PRIu64 " step %" PRIu64 ": the TSC went back from %" PRIu64
                        " to %" PRIu64,
                        c, r.step, cpu.at.tsc, r.tsc));
        }
    }
    if (c == 0) {
        // Cumulative in the guest: each new wrong page is one failure.
        if (r.fill_errors > cpu.fill_errors) {
            fail(format("cpu 0 step %" PRIu64 ": the guest found %" PRIu64
                        " wrong pages of its filled RAM (of %" PRIu64
                        " checked), the first at %#" PRIx64,
                        r.step, r.fill_errors, r.fill_checked, r.fill_first_bad));
        }
        cpu.fill_errors = r.fill_errors;
        totals_.ram_checked = r.fill_checked;
    }
    // Resynchronise on the report even after a failure, so one fault is one error.
    cpu.at = {r.step, r.checksum, std::max(cpu.at.tsc, r.tsc)};
}

void ReportVerifier::rewind() {
    const std::scoped_lock lock(mutex_);
    for (auto& cpu : cpus_) {
        cpu.at = cpu.start;
        cpu.fill_errors = 0; // the guest's counters are back at their fork-time values
    }
}

ReportVerifier::Summary ReportVerifier::summary() const {
    const std::scoped_lock lock(mutex_);
    Summary s = totals_;
    for (const auto& cpu : cpus_) {
        s.positions.push_back(cpu.at);
        s.own_per_cpu.push_back(cpu.own);
    }
    return s;
}

} // namespace vmfork
