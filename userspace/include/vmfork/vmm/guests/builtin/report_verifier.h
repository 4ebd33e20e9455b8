// SPDX-License-Identifier: GPL-2.0
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "guest_abi.h"
#include "vmfork/vmm/clone_identity.h"

namespace vmfork {

// A point of one vCPU's computation the host has checked: after step, the checksum.
struct GuestPosition {
    std::uint64_t step = 0;
    std::uint64_t checksum = 0;
    std::uint64_t tsc = 0; // of the last report checked (0: none yet)
};

// Checks every report of the built-in guest as it arrives, so that a VM proves it
// runs correctly and a clone proves it continued exactly where its parent stopped:
// - each vCPU's checksum is recomputed from the last checked position (a clone starts
//   from its parent's, through the fork-time RAM), so no step was lost or replayed;
// - the values the guest keeps in registers, the LAPIC, a debug register and an MSR
//   match what that vCPU set at boot (xmm15 must be step * VMFORK_GUEST_XMM_INC);
// - reports begun in this VM carry its own generation and id, a clone's has seen the
//   generation change, and the TSC never goes back;
// - the guest's own check of its filled RAM (vCPU 0, guest_abi.h) found no wrong page:
//   one that lost its content or that another VM wrote after the fork.
// Thread-safe: vCPU threads call check(), the control thread summary().
class ReportVerifier {
public:
    static constexpr std::size_t max_errors = 8;
    // Further than this from the last checked step, a report is not recomputed.
    static constexpr std::uint64_t max_gap = 1ULL << 28;

    // A booted VM: every vCPU starts at step 0 with its seed.
    ReportVerifier(unsigned cpus, CloneIdentity identity);
    // A clone: parent holds the parent's checked positions at the fork, at_fork the
    // report slots in the child's RAM at the fork (checked against parent here),
    // fork_tsc each vCPU's saved MSR_IA32_TSC.
    ReportVerifier(const std::vector<GuestPosition>& parent,
                   const std::vector<vmfork_guest_slot>& at_fork,
                   const std::vector<std::uint64_t>& fork_tsc, CloneIdentity identity);

    void check(const vmfork_guest_slot& report);
    // Back to the fork-time positions (after a reset of a clone).
    void rewind();

    struct Summary {
        std::uint64_t reports = 0;       // checked
        std::uint64_t own = 0;           // of those, begun in this VM (identity checked)
        std::uint64_t failures = 0;      // reports with a wrong value
        std::vector<std::string> errors; // the first max_errors failures
        std::uint64_t ram_checked = 0;   // pages of filled RAM the guest verified (cpu 0)
        std::vector<GuestPosition> positions;
        std::vector<std::uint64_t> own_per_cpu;
    };
    [[nodiscard]] Summary summary() const;

    // checksum after step on cpu, from a known position (steps forward only).
    static std::uint64_t advance(std::uint64_t checksum, std::uint64_t from, std::uint64_t to);

private:
    struct Cpu {
        GuestPosition start; // the fork (or boot) position: reports past start + 1 are own
        GuestPosition at;
        std::uint64_t own = 0;
        std::uint64_t fill_errors = 0; // the guest's own RAM check (cpu 0), last seen
    };
    void fail(const std::string& what);

    mutable std::mutex mutex_;
    CloneIdentity identity_;
    bool clone_ = false;
    std::vector<Cpu> cpus_;
    Summary totals_;
};

} // namespace vmfork
