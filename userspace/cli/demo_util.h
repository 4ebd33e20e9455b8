// SPDX-License-Identifier: GPL-2.0
#pragma once

// What both demos (the built-in guest's and the Linux guest's) use.

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fmt/format.h>
#include <vector>

#include "cli.h"

namespace vmfork::cli {

struct Spread {
    double median = 0;
    double p90 = 0;
    double max = 0;
};

inline Spread spread(std::vector<double> v) {
    if (v.empty()) {
        return {};
    }
    std::sort(v.begin(), v.end());
    auto at = [&](double q) {
        const auto i = static_cast<std::size_t>(std::ceil(q * static_cast<double>(v.size()))) - 1;
        return v[std::min(i, v.size() - 1)];
    };
    return {at(0.5), at(0.9), v.back()};
}

// Median, p90 and max as table cells: microseconds in, milliseconds out.
inline std::string row3(const Spread& s) {
    return fmt::format("{:>10}  {:>10}  {:>10}", ms(s.median), ms(s.p90), ms(s.max));
}

// Stops every VM of the demo's private runtime dir and removes the dir, however the
// demo ends.
class DemoCleanup {
public:
    explicit DemoCleanup(control::RuntimeDir dir, bool keep) : dir_(std::move(dir)), keep_(keep) {}
    ~DemoCleanup() {
        if (keep_) {
            return;
        }
        try {
            for (const auto& name : dir_.live_names()) {
                kill_vm(dir_, name, std::chrono::seconds(20));
            }
            std::error_code ec;
            std::filesystem::remove_all(dir_.path(), ec);
        } catch (const std::exception& e) {
            fmt::print(stderr, "vmfork demo: cleanup: {}\n", e.what());
        }
    }
    DemoCleanup(const DemoCleanup&) = delete;
    DemoCleanup& operator=(const DemoCleanup&) = delete;
    DemoCleanup(DemoCleanup&&) = delete;
    DemoCleanup& operator=(DemoCleanup&&) = delete;

private:
    control::RuntimeDir dir_;
    bool keep_;
};

} // namespace vmfork::cli
