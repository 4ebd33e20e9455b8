// SPDX-License-Identifier: GPL-2.0
#pragma once

#include <array>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "vmfork_trace.h"

namespace vmfork::trace {

// A log2 latency histogram in microseconds, as the BPF programs fill it
// (struct vmfork_trace_hist): slot 0 holds durations under 1 us, slot k >= 1 those in
// [2^(k-1), 2^k) us, the last slot everything longer.
class Log2Histogram {
public:
    static constexpr std::size_t kSlots = VMFORK_TRACE_SLOTS;

    // Adds one CPU's copy of a per-CPU histogram.
    void add(const vmfork_trace_hist& h) noexcept;
    // What was added since earlier (a snapshot of the same histogram); max_ns is not
    // a difference and stays this one's (the maximum since the start).
    [[nodiscard]] Log2Histogram since(const Log2Histogram& earlier) const noexcept;

    [[nodiscard]] std::uint64_t count() const noexcept { return count_; }
    [[nodiscard]] std::uint64_t sum_ns() const noexcept { return sum_ns_; }
    [[nodiscard]] std::uint64_t max_ns() const noexcept { return max_ns_; }
    [[nodiscard]] std::uint64_t slot(std::size_t i) const noexcept { return slots_.at(i); }
    // Sum of the slots (equals count() unless the maps were read mid-update).
    [[nodiscard]] std::uint64_t samples() const noexcept;

    // Bounds of slot i in us: [low, high); high is 0 for the open last slot.
    [[nodiscard]] static std::uint64_t slot_low_us(std::size_t i) noexcept;
    [[nodiscard]] static std::uint64_t slot_high_us(std::size_t i) noexcept;
    // Upper bound (us) of the slot that holds the p-th percentile (0 < p <= 100); 0
    // when empty.
    [[nodiscard]] std::uint64_t percentile_us(double p) const noexcept;

    // bpftrace-style lines: "[256, 512)   9 |@@@@@@@@@     |", one per slot from the
    // first to the last non-empty one; "" when empty.
    [[nodiscard]] std::string render(std::string_view indent = "") const;
    // {"count", "sum_ns", "mean_ns", ["max_ns",] "buckets": [{"low_us", "high_us",
    // "count"}...]} with the non-empty slots only (high_us null for the open slot).
    [[nodiscard]] nlohmann::json to_json(bool with_max) const;

private:
    std::array<std::uint64_t, kSlots> slots_{};
    std::uint64_t count_ = 0;
    std::uint64_t sum_ns_ = 0;
    std::uint64_t max_ns_ = 0;
};

} // namespace vmfork::trace
