// SPDX-License-Identifier: GPL-2.0
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <map>

#include "histogram.h"
#include "vmfork_trace.h"

namespace vmfork::trace {

// Everything the BPF maps hold at one instant, summed over the CPUs, since the tool
// started; since() turns two of them into one interval's worth.
struct Snapshot {
    std::chrono::steady_clock::time_point at{};
    vmfork_trace_counters counters{};
    std::array<Log2Histogram, VMFORK_TRACE_NR_HISTS> hists{};
    // Object id -> COW breaks.
    std::map<std::uint64_t, std::uint64_t> cow_by_object;

    [[nodiscard]] std::uint64_t forks() const noexcept {
        return counters.forks_live + counters.forks_template;
    }
    [[nodiscard]] const Log2Histogram& hist(vmfork_trace_hist_id id) const {
        return hists.at(static_cast<std::size_t>(id));
    }

    // This minus earlier: the events in between (objects without new breaks are left
    // out of cow_by_object).
    [[nodiscard]] Snapshot since(const Snapshot& earlier) const;
};

} // namespace vmfork::trace
