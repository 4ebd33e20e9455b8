// SPDX-License-Identifier: GPL-2.0
#pragma once

// What `vmfork bench` prints and writes from the samples of one run.

#include <cstdint>
#include <string>
#include <vector>

#include "harness.h"

namespace vmfork::bench {

// One run: its options and what it measured.
struct Run {
    const cli::BenchOptions& o;
    std::vector<std::uint64_t> sizes{};
    std::uint64_t density_size = 0;
    std::vector<Strategy> strategies{};
    std::vector<Sample> samples{};
    std::vector<std::string> notes{};
    double wall_s = 0;

    [[nodiscard]] bool skipped(const std::string& what) const;
    // A figure measured at the density size (density, cow, reset) that was not skipped.
    [[nodiscard]] bool has_figure(const std::string& what) const;
};

// The tables of clone times, density, first touch and reset.
void print_tables(const Run& run);
// The targets of issue #6 as ratios of this run, printed.
std::vector<Target> print_targets(const Run& run);
// samples.csv, results.json, the plot data, plots.gp and the PNGs (gnuplot) in o.out.
void write_results(const Run& run, const std::vector<Target>& targets);

} // namespace vmfork::bench
