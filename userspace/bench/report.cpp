// SPDX-License-Identifier: GPL-2.0
// The tables, targets and files of `vmfork bench` (report.h).
#include "report.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <limits>
#include <map>
#include <tuple>

#include "cli.h"
#include "vmfork/system_error.h"

namespace vmfork::bench {

using nlohmann::json;

namespace {

// --- output ---------------------------------------------------------------------------

struct Table {
    std::vector<std::vector<std::string>> rows;
    void print() const { cli::print_table(rows, cli::Align::Numbers); }
};

std::string cell_us(const Summary& s) {
    if (s.n == 0) {
        return "-";
    }
    if (s.max == 0) {
        return "0";
    }
    return fmt::format("{} [{}..{}]", bench::format_us(s.median), bench::format_us(s.min),
                       bench::format_us(s.max));
}

double median_of(const std::vector<Sample>& samples, std::string_view figure, Strategy s,
                 std::string_view mode, std::uint64_t size, std::uint64_t x = 0) {
    const auto v = bench::select(samples, figure, name_of(s), mode, size, x);
    return v.empty() ? std::numeric_limits<double>::quiet_NaN() : bench::summarize(v).median;
}

std::string ratio_cell(double v, double base) {
    if (!std::isfinite(v) || !std::isfinite(base) || base <= 0) {
        return "-";
    }
    return fmt::format("{:.2f}x", v / base);
}

std::string gnuplot_script(const std::string& dir, const std::vector<Strategy>& strategies,
                           bool pool, bool density) {
    std::string g = "set terminal pngcairo size 900,560 noenhanced\nset key top left\n"
                    "set grid\nset logscale y\nset xlabel 'guest RAM (MiB)'\nset logscale x 2\n";
    auto plot = [&](const std::string& file, const std::string& title, const std::string& fig) {
        g += fmt::format("set output '{}/{}'\nset title '{}'\nset ylabel 'ms'\nplot ", dir, file,
                         title);
        bool first = true;
        for (auto s : strategies) {
            for (const std::string mode : {"cold", "pool"}) {
                if (mode == "pool" && (!pool || !poolable(s))) {
                    continue;
                }
                g += fmt::format("{}'{}/{}-{}-{}.dat' using 1:2 with linespoints title '{} ({})'",
                                 first ? "" : ", ", dir, fig, name_of(s), mode, name_of(s), mode);
                first = false;
            }
        }
        g += "\n";
    };
    plot("fork_time.png", "clone call time (median) against guest size", "fork_us");
    plot("time_to_running.png", "time to a running, verified clone (median)", "running_us");
    if (density) {
        g += fmt::format("set output '{}/memory.png'\nset title 'memory of the parent + N idle "
                         "clones'\nunset logscale x\nset logscale y\nset xlabel 'clones'\n"
                         "set ylabel 'MiB'\nplot ",
                         dir);
        bool first = true;
        for (auto s : strategies) {
            g += fmt::format("{}'{}/mem-{}.dat' using 1:2 with linespoints title '{}'",
                             first ? "" : ", ", dir, name_of(s), name_of(s));
            first = false;
        }
        g += "\n";
    }
    return g;
}

void write_file(const std::filesystem::path& p, const std::string& text) {
    std::ofstream f(p);
    f << text;
    if (!f) {
        throw SystemError(EIO, "cannot write " + p.string());
    }
}

} // namespace

bool Run::skipped(const std::string& what) const {
    return std::find(o.skip.begin(), o.skip.end(), what) != o.skip.end();
}

bool Run::has_figure(const std::string& what) const {
    return !skipped(what) && std::find(sizes.begin(), sizes.end(), density_size) != sizes.end();
}

void print_tables(const Run& run) {
    const auto& o = run.o;
    const auto& sizes = run.sizes;
    const auto& samples = run.samples;
    const auto& strategies = run.strategies;
    const auto density_size = run.density_size;
    auto& notes = run.notes;
    fmt::print("\nvmfork bench: built-in guest, 1 vCPU, all RAM filled, idle ({} ms pace); "
               "{} repeats; median [min..max]; ratio: median / vmfork-template's\n",
               o.pace_ms, o.repeat);
    for (const auto size : sizes) {
        fmt::print("\n== guest RAM {} ==\n", bench::format_bytes(static_cast<double>(size)));
        Table t;
        t.rows.push_back({"strategy", "mode", "clone call", "parent pause", "time to running clone",
                          "vs vmfork-template"});
        for (const std::string mode : {"cold", "pool"}) {
            const double base =
                median_of(samples, "running_us", Strategy::VmforkTemplate, mode, size);
            for (auto s : strategies) {
                if (mode == "pool" && (!o.pool || !poolable(s))) {
                    continue;
                }
                auto sum = [&](const char* fig) {
                    return bench::summarize(bench::select(samples, fig, name_of(s), mode, size));
                };
                t.rows.push_back({name_of(s), mode, cell_us(sum("fork_us")),
                                  cell_us(sum("pause_us")), cell_us(sum("running_us")),
                                  ratio_cell(sum("running_us").median, base)});
            }
        }
        t.print();
    }
    if (std::find(strategies.begin(), strategies.end(), Strategy::VmforkLive) != strategies.end()) {
        fmt::print("\n== the parent's first live fork, all its RAM written since boot ==\n");
        Table t;
        t.rows.push_back({"guest RAM", "parent pause", "VMFORK_VM_FORK", "later live forks' pause",
                          "process fork pause"});
        for (const auto size : sizes) {
            auto med = [&](const char* fig, Strategy s, const char* mode) {
                return bench::format_us(median_of(samples, fig, s, mode, size));
            };
            t.rows.push_back({bench::format_bytes(static_cast<double>(size)),
                              med("first_live_pause_us", Strategy::VmforkLive, "cold"),
                              med("first_live_fork_us", Strategy::VmforkLive, "cold"),
                              med("pause_us", Strategy::VmforkLive, "cold"),
                              med("pause_us", Strategy::ProcessFork, "cold")});
        }
        t.print();
    }

    if (run.has_figure("density")) {
        fmt::print("\n== {} clones of the {} guest (cold; memory: /proc/meminfo, parent + "
                   "clones) ==\n",
                   o.clones, bench::format_bytes(static_cast<double>(density_size)));
        Table t;
        t.rows.push_back({"strategy", "clones", "clones/s", "parent + clones", "vs one guest"});
        for (auto s : strategies) {
            const auto n = median_of(samples, "clones", s, "cold", density_size);
            const auto nn = static_cast<std::uint64_t>(std::isfinite(n) ? n : 0);
            t.rows.push_back({name_of(s), fmt::format("{}", nn),
                              fmt::format("{:.1f}", median_of(samples, "clones_per_s", s, "cold",
                                                              density_size, nn)),
                              bench::format_bytes(median_of(samples, "mem_total_bytes", s, "cold",
                                                            density_size, nn)),
                              fmt::format("{:.2f}x", median_of(samples, "mem_vs_one_guest", s,
                                                               "cold", density_size, nn))});
        }
        t.print();
        for (const auto& n : notes) {
            fmt::print("  note: {}\n", n);
        }
    }
    const std::uint64_t cow_pages = std::min<std::uint64_t>(4096, density_size / page / 8);
    if (run.has_figure("cow")) {
        fmt::print("\n== first touch of a clone page, host side, per page ({} pages) ==\n",
                   cow_pages);
        Table t;
        t.rows.push_back({"strategy", "first write", "vs kernel anon COW", "first read"});
        const double anon = median_of(samples, "first_write_ns", Strategy::ProcessFork, "",
                                      density_size, cow_pages);
        for (auto s : {Strategy::VmforkTemplate, Strategy::ProcessFork, Strategy::Snapshot,
                       Strategy::FullCopy}) {
            const double w = median_of(samples, "first_write_ns", s, "", density_size, cow_pages);
            const double r = median_of(samples, "first_read_ns", s, "", density_size, cow_pages);
            t.rows.push_back({name_of(s) + (s == Strategy::ProcessFork ? " (kernel anon COW)" : ""),
                              bench::format_us(w / 1000), ratio_cell(w, anon),
                              bench::format_us(r / 1000)});
        }
        t.print();
        fmt::print("\n== first touch of a clone page, guest side (the guest's TSC, through KVM), "
                   "per page ==\n");
        Table g;
        g.rows.push_back(
            {"strategy", "first write", "vs process fork", "first read", "vs process fork"});
        const double gw = median_of(samples, "guest_first_write_ns", Strategy::ProcessFork, "",
                                    density_size, cow_pages);
        const double gr = median_of(samples, "guest_first_read_ns", Strategy::ProcessFork, "",
                                    density_size, cow_pages);
        for (auto s : {Strategy::VmforkTemplate, Strategy::ProcessFork}) {
            const double w =
                median_of(samples, "guest_first_write_ns", s, "", density_size, cow_pages);
            const double r =
                median_of(samples, "guest_first_read_ns", s, "", density_size, cow_pages);
            g.rows.push_back({name_of(s), bench::format_us(w / 1000), ratio_cell(w, gw),
                              bench::format_us(r / 1000), ratio_cell(r, gr)});
        }
        g.print();
    }
    const double new_clone =
        median_of(samples, "running_us", Strategy::VmforkTemplate, "cold", density_size);
    if (run.has_figure("reset")) {
        fmt::print("\n== reset of a running vmfork clone to its fork point ({} guest) ==\n",
                   bench::format_bytes(static_cast<double>(density_size)));
        Table t;
        t.rows.push_back({"pages dirtied", "VMFORK_RESET", "VM reset (pause..resume)",
                          "reset to verified report", "new clone / VM reset"});
        for (const auto k : {1ULL, 10ULL, 100ULL, 1000ULL, 10000ULL}) {
            auto sum = [&](const char* fig) {
                return bench::summarize(
                    bench::select(samples, fig, "vmfork-template", "", density_size, k));
            };
            if (sum("reset_us").n == 0) {
                continue;
            }
            t.rows.push_back({fmt::format("{}", k), cell_us(sum("reset_ioctl_us")),
                              cell_us(sum("reset_us")), cell_us(sum("reset_running_us")),
                              ratio_cell(new_clone, sum("reset_us").median)});
        }
        t.print();
    }
}

std::vector<Target> print_targets(const Run& run) {
    const auto& o = run.o;
    const auto& sizes = run.sizes;
    const auto& samples = run.samples;
    const auto density_size = run.density_size;
    const double nan = std::numeric_limits<double>::quiet_NaN();
    std::vector<bench::Target> targets;
    const std::uint64_t big = *std::max_element(sizes.begin(), sizes.end());
    const std::uint64_t small = *std::min_element(sizes.begin(), sizes.end());
    auto med = [&](const char* fig, Strategy s, const char* mode, std::uint64_t size,
                   std::uint64_t x = 0) { return median_of(samples, fig, s, mode, size, x); };
    targets.push_back(
        {fmt::format("template fork({}) / fork({})", bench::format_bytes(static_cast<double>(big)),
                     bench::format_bytes(static_cast<double>(small))),
         big == small ? nan
                      : med("fork_us", Strategy::VmforkTemplate, "cold", big) /
                            med("fork_us", Strategy::VmforkTemplate, "cold", small),
         1.5, true});
    targets.push_back({fmt::format("snapshot write pause / live-fork pause at {}",
                                   bench::format_bytes(static_cast<double>(big))),
                       med("pause_us", Strategy::Snapshot, "cold", big) /
                           med("pause_us", Strategy::VmforkLive, "cold", big),
                       20, false});
    auto fastest_baseline = [&](const char* mode) {
        double best = nan;
        for (auto s : {Strategy::ProcessFork, Strategy::Snapshot, Strategy::FullCopy}) {
            const char* m = poolable(s) ? mode : "cold";
            const double v = med("running_us", s, m, big);
            if (std::isfinite(v) && (!std::isfinite(best) || v < best)) {
                best = v;
            }
        }
        return best;
    };
    const double tmpl_cold = med("running_us", Strategy::VmforkTemplate, "cold", big);
    const double tmpl_pool = med("running_us", Strategy::VmforkTemplate, "pool", big);
    targets.push_back({fmt::format("fastest baseline (cold) / vmfork-template (cold), time to "
                                   "running clone at {}",
                                   bench::format_bytes(static_cast<double>(big))),
                       fastest_baseline("cold") / tmpl_cold, 5, false});
    if (o.pool) {
        targets.push_back({"  same, vmfork-template pooled vs baselines cold",
                           fastest_baseline("cold") / tmpl_pool, 5, false});
        targets.push_back({"  same, both pooled where a pool applies",
                           fastest_baseline("pool") / tmpl_pool, 5, false});
    }
    for (auto s : {Strategy::VmforkTemplate, Strategy::VmforkLive}) {
        const double n = med("clones", s, "cold", density_size);
        targets.push_back(
            {fmt::format("{}: memory of parent + {} idle clones / one guest ({})", name_of(s),
                         std::isfinite(n) ? static_cast<std::uint64_t>(n) : 0,
                         bench::format_bytes(static_cast<double>(density_size))),
             std::isfinite(n)
                 ? med("mem_vs_one_guest", s, "cold", density_size, static_cast<std::uint64_t>(n))
                 : nan,
             1.1, true});
    }
    const double new_clone =
        median_of(samples, "running_us", Strategy::VmforkTemplate, "cold", density_size);
    const double new_clone_pool =
        median_of(samples, "running_us", Strategy::VmforkTemplate, "pool", density_size);
    const double reset100 =
        median_of(samples, "reset_us", Strategy::VmforkTemplate, "", density_size, 100);
    targets.push_back({"new clone (template, cold) / reset with 100 pages dirty",
                       new_clone / reset100, 10, false});
    if (o.pool) {
        targets.push_back({"  same, new clone pooled", new_clone_pool / reset100, 10, false});
    }
    fmt::print("\n== targets of issue #6 (ratios of this run) ==\n");
    Table tt;
    tt.rows.push_back({"target", "ratio", "goal", "verdict"});
    for (const auto& t : targets) {
        tt.rows.push_back({t.what, t.measured() ? fmt::format("{:.2f}", t.value) : "-",
                           fmt::format("{} {}", t.at_most ? "<=" : ">=", t.limit), t.verdict()});
    }
    tt.print();
    fmt::print("\n{} samples, every clone verified; wall time {:.0f} s\n", samples.size(),
               run.wall_s);
    std::fflush(stdout);

    return targets;
}

void write_results(const Run& run, const std::vector<Target>& targets) {
    const auto& o = run.o;
    const auto& sizes = run.sizes;
    const auto& samples = run.samples;
    const auto& strategies = run.strategies;
    const auto density_size = run.density_size;
    const auto& notes = run.notes;
    const double wall_s = run.wall_s;
    const bool have_density = run.has_figure("density");
    if (!o.out.empty()) {
        const std::filesystem::path dir(o.out);
        std::filesystem::create_directories(dir);
        write_file(dir / "samples.csv", bench::samples_csv(samples));
        json j;
        j["config"] = {{"sizes", sizes},     {"repeat", o.repeat},           {"pool", o.pool},
                       {"clones", o.clones}, {"density_size", density_size}, {"pace_ms", o.pace_ms},
                       {"wall_s", wall_s}};
        j["samples"] = json::array();
        for (const auto& s : samples) {
            j["samples"].push_back(bench::sample_json(s));
        }
        // Summaries of every (figure, strategy, mode, size, x).
        std::map<std::tuple<std::string, std::string, std::string, std::uint64_t, std::uint64_t>,
                 std::vector<double>>
            groups;
        for (const auto& s : samples) {
            groups[{s.figure, s.strategy, s.mode, s.size, s.x}].push_back(s.value);
        }
        j["summaries"] = json::array();
        for (const auto& [k, v] : groups) {
            json e = bench::summary_json(bench::summarize(v));
            e["figure"] = std::get<0>(k);
            e["strategy"] = std::get<1>(k);
            e["mode"] = std::get<2>(k);
            e["size_bytes"] = std::get<3>(k);
            e["x"] = std::get<4>(k);
            j["summaries"].push_back(e);
        }
        j["targets"] = json::array();
        for (const auto& t : targets) {
            j["targets"].push_back({{"what", t.what},
                                    {"value", t.measured() ? json(t.value) : json(nullptr)},
                                    {"goal", t.limit},
                                    {"at_most", t.at_most},
                                    {"verdict", t.verdict()}});
        }
        j["notes"] = notes;
        write_file(dir / "results.json", j.dump(2) + "\n");
        // Plot data and the gnuplot script.
        for (auto s : strategies) {
            for (const std::string mode : {"cold", "pool"}) {
                for (const std::string fig : {"fork_us", "running_us"}) {
                    std::string dat = "# MiB median_ms\n";
                    for (const auto size : sizes) {
                        const double m = median_of(samples, fig, s, mode, size);
                        if (std::isfinite(m)) {
                            dat += fmt::format("{} {}\n", size >> 20, std::max(m, 0.1) / 1000);
                        }
                    }
                    write_file(dir / fmt::format("{}-{}-{}.dat", fig, name_of(s), mode), dat);
                }
            }
            std::string dat = "# clones MiB\n";
            for (const auto& smp : samples) {
                if (smp.figure == "mem_bytes" && smp.strategy == name_of(s)) {
                    dat += fmt::format("{} {}\n", smp.x, smp.value / (1 << 20));
                }
            }
            write_file(dir / fmt::format("mem-{}.dat", name_of(s)), dat);
        }
        write_file(dir / "plots.gp",
                   gnuplot_script(dir.string(), strategies, o.pool, have_density));
        const std::string cmd = "gnuplot '" + (dir / "plots.gp").string() + "' 2>&1";
        if (std::system(cmd.c_str()) != 0) { // NOLINT(cert-env33-c): a fixed command
            fmt::print(stderr, "vmfork bench: gnuplot failed: no PNG plots (data in {})\n",
                       dir.string());
        }
        fmt::print("results in {}: samples.csv, results.json, *.png\n", dir.string());
    }
}

} // namespace vmfork::bench
