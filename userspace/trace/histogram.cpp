// SPDX-License-Identifier: GPL-2.0
#include "histogram.h"

#include <algorithm>
#include <fmt/format.h>

namespace vmfork::trace {

void Log2Histogram::add(const vmfork_trace_hist& h) noexcept {
    for (std::size_t i = 0; i < kSlots; i++) {
        slots_[i] += h.slots[i];
    }
    count_ += h.count;
    sum_ns_ += h.sum_ns;
    max_ns_ = std::max<std::uint64_t>(max_ns_, h.max_ns);
}

Log2Histogram Log2Histogram::since(const Log2Histogram& earlier) const noexcept {
    Log2Histogram d = *this;
    for (std::size_t i = 0; i < kSlots; i++) {
        d.slots_[i] -= earlier.slots_[i];
    }
    d.count_ -= earlier.count_;
    d.sum_ns_ -= earlier.sum_ns_;
    return d;
}

std::uint64_t Log2Histogram::samples() const noexcept {
    std::uint64_t n = 0;
    for (const auto s : slots_) {
        n += s;
    }
    return n;
}

std::uint64_t Log2Histogram::slot_low_us(std::size_t i) noexcept {
    return i == 0 ? 0 : std::uint64_t{1} << (i - 1);
}

std::uint64_t Log2Histogram::slot_high_us(std::size_t i) noexcept {
    return i + 1 >= kSlots ? 0 : std::uint64_t{1} << i;
}

std::uint64_t Log2Histogram::percentile_us(double p) const noexcept {
    const auto total = samples();
    if (total == 0) {
        return 0;
    }
    const auto rank = static_cast<std::uint64_t>(static_cast<double>(total) * p / 100.0 + 0.999999);
    std::uint64_t seen = 0;
    for (std::size_t i = 0; i < kSlots; i++) {
        seen += slots_[i];
        if (seen >= std::max<std::uint64_t>(rank, 1)) {
            return i + 1 >= kSlots ? slot_low_us(i) : slot_high_us(i);
        }
    }
    return slot_low_us(kSlots - 1);
}

namespace {

std::string us_label(std::uint64_t us) {
    if (us >= 1000000 && us % 1000000 == 0) {
        return fmt::format("{}s", us / 1000000);
    }
    if (us >= (1U << 20) && us % (1U << 20) == 0) {
        return fmt::format("{}M", us >> 20);
    }
    if (us >= 1024 && us % 1024 == 0) {
        return fmt::format("{}K", us >> 10);
    }
    return fmt::format("{}", us);
}

} // namespace

std::string Log2Histogram::render(std::string_view indent) const {
    std::size_t first = kSlots, last = 0;
    std::uint64_t peak = 0;
    for (std::size_t i = 0; i < kSlots; i++) {
        if (slots_[i] != 0) {
            first = std::min(first, i);
            last = i;
            peak = std::max(peak, slots_[i]);
        }
    }
    if (first == kSlots) {
        return {};
    }
    constexpr std::uint64_t kWidth = 52;
    std::string out;
    for (std::size_t i = first; i <= last; i++) {
        std::string range;
        if (i == 0) {
            range = "[0, 1)";
        } else if (i + 1 >= kSlots) {
            range = fmt::format("[{}, ...)", us_label(slot_low_us(i)));
        } else {
            range = fmt::format("[{}, {})", us_label(slot_low_us(i)), us_label(slot_high_us(i)));
        }
        const auto bar = static_cast<std::size_t>(slots_[i] * kWidth / peak);
        out += fmt::format("{}{:<14} {:>8} |{:<52}|\n", indent, range, slots_[i],
                           std::string(bar, '@'));
    }
    return out;
}

nlohmann::json Log2Histogram::to_json(bool with_max) const {
    nlohmann::json j;
    j["count"] = count_;
    j["sum_ns"] = sum_ns_;
    j["mean_ns"] = count_ == 0 ? 0 : sum_ns_ / count_;
    if (with_max) {
        j["max_ns"] = max_ns_;
    }
    auto buckets = nlohmann::json::array();
    for (std::size_t i = 0; i < kSlots; i++) {
        if (slots_[i] == 0) {
            continue;
        }
        nlohmann::json b;
        b["low_us"] = slot_low_us(i);
        b["high_us"] = i + 1 >= kSlots ? nlohmann::json(nullptr) : nlohmann::json(slot_high_us(i));
        b["count"] = slots_[i];
        buckets.push_back(std::move(b));
    }
    j["buckets"] = std::move(buckets);
    return j;
}

} // namespace vmfork::trace
