// SPDX-License-Identifier: GPL-2.0
// vmfork bench: clone the same warmed built-in guest with vmfork (live and template)
// and with the methods users would pick instead (process fork(), snapshot-restore,
// full copy), verify every clone, and report medians, spreads and ratios in one run.
// The strategies and figures are in harness.h; the output in report.h.
#include "bench.h"

#include <algorithm>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "harness.h"
#include "report.h"
#include "vmfork/parse_size.h"

namespace vmfork::cli {

using bench::Clock;
using bench::Strategy;

CLI::App* add_bench_command(CLI::App& app, BenchOptions& o) {
    auto* cmd = app.add_subcommand(
        "bench", "clone one warmed guest with vmfork and the baselines (process fork(), "
                 "snapshot-restore, full copy); verify every clone; print medians and ratios");
    cmd->add_option("--sizes", o.sizes, "guest RAM sizes")->delimiter(',')->capture_default_str();
    cmd->add_option("--strategies", o.strategies,
                    "vmfork-live,vmfork-template,process-fork,snapshot-restore,full-copy "
                    "(default: all)")
        ->delimiter(',');
    cmd->add_option("--repeat", o.repeat, "samples per figure")
        ->check(CLI::Range(1, 1000))
        ->capture_default_str();
    cmd->add_option("--out", o.out, "write samples.csv, results.json and PNG plots here");
    cmd->add_flag("--pool", o.pool, "also clone onto KVM VMs + vCPUs made ahead (a warm pool)");
    cmd->add_option("--clones", o.clones, "clones for clones/s and memory")
        ->check(CLI::Range(1, 1000))
        ->capture_default_str();
    cmd->add_option("--density-size", o.density_size,
                    "guest size for clones/s, memory, COW and reset figures")
        ->capture_default_str();
    cmd->add_option("--skip", o.skip, "leave out: density, cow, reset")->delimiter(',');
    cmd->add_option("--pace", o.pace_ms, "ms the guest idles between reports")
        ->check(CLI::Range(1, 1000))
        ->capture_default_str();
    return cmd;
}

int cmd_bench(const Globals& /*g*/, const BenchOptions& o) {
    check_devices();
    bench::Run run{.o = o};
    for (const auto& s : o.sizes) {
        try {
            run.sizes.push_back(parse_size(s));
        } catch (const std::exception& e) {
            throw CliError("--sizes " + s + ": " + e.what());
        }
    }
    try {
        run.density_size = parse_size(o.density_size);
    } catch (const std::exception& e) {
        throw CliError("--density-size " + o.density_size + ": " + e.what());
    }
    auto& strategies = run.strategies;
    for (const auto& n : o.strategies) {
        const auto it = std::find_if(bench::all_strategies.begin(), bench::all_strategies.end(),
                                     [&](Strategy s) { return bench::name_of(s) == n; });
        if (it == bench::all_strategies.end()) {
            throw CliError("unknown strategy " + n);
        }
        strategies.push_back(*it);
    }
    if (strategies.empty()) {
        strategies.assign(bench::all_strategies.begin(), bench::all_strategies.end());
    }
    auto has = [&](Strategy s) {
        return std::find(strategies.begin(), strategies.end(), s) != strategies.end();
    };
    const bool need_template =
        has(Strategy::VmforkTemplate) || !run.skipped("cow") || !run.skipped("reset");

    const Kvm kvm = Kvm::open();
    const Device dev = Device::open();
    bench::Bench b(kvm, dev, o, run.samples);
    const auto t_start = Clock::now();
    bench::progress(fmt::format("sizes {}, {} repeats, strategies {}{}", fmt::join(o.sizes, ","),
                                o.repeat, strategies.size(),
                                o.pool ? ", cold and pooled" : ", cold"));

    for (const auto size : run.sizes) {
        bench::SizeCtx c;
        c.size = size;
        b.boot(c);
        if (need_template) {
            b.make_template(c);
        }
        if (has(Strategy::ProcessFork)) {
            b.make_anon_parent(c);
        }
        for (unsigned r = 0; r < o.repeat; ++r) {
            for (auto s : strategies) {
                for (const std::string mode : {"cold", "pool"}) {
                    if (mode == "pool" && (!o.pool || !bench::poolable(s))) {
                        continue;
                    }
                    std::optional<bench::Running> pooled;
                    if (mode == "pool") {
                        pooled.emplace(bench::prepare(kvm));
                    }
                    const bench::Trial t = b.clone_one(s, c, std::move(pooled));
                    b.add("fork_us", s, mode, size, 0, r, t.fork_us);
                    b.add("pause_us", s, mode, size, 0, r, t.pause_us);
                    b.add("running_us", s, mode, size, 0, r, t.running_us);
                }
            }
            bench::progress(fmt::format("{}: repeat {}/{} done (every clone verified)",
                                        bench::format_bytes(static_cast<double>(size)), r + 1,
                                        o.repeat));
        }
        if (size == run.density_size) {
            if (!run.skipped("density")) {
                for (auto s : strategies) {
                    b.density(s, c, run.notes);
                }
            }
            if (!run.skipped("cow")) {
                b.cow(c);
            }
            if (!run.skipped("reset")) {
                b.reset(c);
            }
        }
    }
    run.wall_s = bench::us_between(t_start, Clock::now()) / 1e6;
    bench::print_tables(run);
    const auto targets = bench::print_targets(run);
    if (!o.out.empty()) {
        bench::write_results(run, targets);
    }
    return 0;
}

} // namespace vmfork::cli
