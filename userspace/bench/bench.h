// SPDX-License-Identifier: GPL-2.0
#pragma once

// `vmfork bench`: vmfork against the methods users would pick instead (issue #6).

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "cli.h"

namespace vmfork::cli {

struct BenchOptions {
    std::vector<std::string> sizes{"64M", "256M", "1G"};
    std::vector<std::string> strategies; // empty: all five
    unsigned repeat = 5;
    std::string out;       // --out DIR: samples.csv, results.json, PNG plots
    bool pool = false;     // also measure clones started on a warm pool
    unsigned clones = 100; // density and clones/s
    std::string density_size = "256M";
    std::vector<std::string> skip; // density, cow, reset
    unsigned pace_ms = 200;        // the guest's report period (idle between reports)
};

// Adds the `bench` subcommand to app, filling o.
CLI::App* add_bench_command(CLI::App& app, BenchOptions& o);
int cmd_bench(const Globals& g, const BenchOptions& o);

} // namespace vmfork::cli
