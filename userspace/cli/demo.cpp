// SPDX-License-Identifier: GPL-2.0
// vmfork demo: boot the built-in guest, warm it, fork N running clones, verify every
// clone, print what it cost, clean up.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fmt/format.h>
#include <set>
#include <thread>
#include <unistd.h>

#include "cli.h"
#include "demo_util.h"
#include "vmfork/vmm/launcher.h"

namespace vmfork::cli {

namespace {

using std::chrono::milliseconds;
using std::chrono::steady_clock;

bool each_cpu_has(const json& info, std::uint64_t own) {
    for (const auto& n : info.at("reports").at("own_per_cpu")) {
        if (n.get<std::uint64_t>() < own) {
            return false;
        }
    }
    return true;
}

} // namespace

int cmd_demo(const Globals& g, const DemoOptions& o) {
    check_devices();
    const std::uint64_t mem = parse_mem_option(o.mem);
    if (o.clones < 1 || o.clones > 1000) {
        throw CliError("--clones must be 1..1000");
    }
    const auto base = runtime_dir();
    const control::RuntimeDir dir(base.path() + "/demo-" + std::to_string(::getpid()));
    dir.ensure();
    const long pages_before = module_pages();
    {
        const DemoCleanup cleanup(dir, o.keep);
        fmt::print("vmfork demo: a {} guest ({}% of it filled with data), {} clones\n",
                   human_bytes(static_cast<double>(mem)), o.fill, o.clones);
        std::fflush(stdout);

        // 1. Boot and warm the template guest.
        RunOptions run;
        run.name = "demo";
        run.mem = o.mem;
        run.cpus = o.cpus;
        run.fill = o.fill;
        const auto t_boot = steady_clock::now();
        start_vm(dir, run, g.timeout);
        json parent;
        for (;;) {
            parent = call(dir, "demo", "info", json::object(), milliseconds(10000));
            if (each_cpu_has(parent, 1)) {
                break;
            }
            if (steady_clock::now() - t_boot > g.timeout) {
                throw CliError("the demo guest did not warm up in time: see `vmfork console`");
            }
            std::this_thread::sleep_for(milliseconds(100));
        }
        const double boot_s = std::chrono::duration<double>(steady_clock::now() - t_boot).count();
        fmt::print("booted and warm in {:.1f} s: {} of guest RAM resident\n", boot_s,
                   human_pages(parent.at("memory").at("resident_pages").get<double>()));
        std::fflush(stdout);

        // 2. Fork the clones one request at a time: each is a live fork of the parent.
        std::vector<double> fork_us, pause_us, ready_us, running_us;
        std::vector<json> forks;
        const auto t_fork = steady_clock::now();
        for (unsigned i = 0; i < o.clones; ++i) {
            const json r = call(dir, "demo", "fork", {{"count", 1}}, g.timeout);
            const json& c = r.at("clones").at(0);
            if (c.contains("error")) {
                throw CliError("clone " + c.at("name").get<std::string>() +
                               " failed: " + c.at("error").get<std::string>());
            }
            fork_us.push_back(c.at("fork_us").get<double>());
            pause_us.push_back(r.at("pause_us").get<double>());
            ready_us.push_back(c.at("ready_us").get<double>());
            forks.push_back({{"name", c.at("name")}, {"request_ns", r.at("request_ns")}});
            if ((i + 1) % 8 == 0 || i + 1 == o.clones) {
                fmt::print("forked {}/{} clones\n", i + 1, o.clones);
                std::fflush(stdout);
            }
        }
        const double fork_s = std::chrono::duration<double>(steady_clock::now() - t_fork).count();

        // 3. Let every clone run its loop; each must report twice on every vCPU.
        std::vector<json> clones(forks.size());
        const auto t_run = steady_clock::now();
        std::size_t done = 0;
        while (done < forks.size()) {
            done = 0;
            for (std::size_t i = 0; i < forks.size(); ++i) {
                if (!clones[i].is_null() && each_cpu_has(clones[i], 2)) {
                    ++done;
                    continue;
                }
                clones[i] = call(dir, forks[i].at("name").get<std::string>(), "info",
                                 json::object(), milliseconds(10000));
            }
            if (done < forks.size()) {
                if (steady_clock::now() - t_run > g.timeout) {
                    break;
                }
                std::this_thread::sleep_for(milliseconds(100));
            }
        }

        // 4. Verify.
        std::set<std::uint64_t> ids;
        unsigned verified = 0;
        std::vector<std::string> problems;
        std::uint64_t cow = 0;
        double shared = 0;
        double resident = 0;
        for (std::size_t i = 0; i < clones.size(); ++i) {
            const json& c = clones[i];
            const std::string name = forks[i].at("name").get<std::string>();
            std::string why;
            if (c.is_null()) {
                why = "no answer";
            } else if (c.at("reports").at("failures").get<std::uint64_t>() != 0) {
                why = c.at("reports").at("errors").at(0).get<std::string>();
            } else if (!each_cpu_has(c, 2)) {
                why = "fewer than 2 reports begun in the clone on some vCPU";
            } else if (c.at("generation").get<std::uint64_t>() != 1 ||
                       c.at("parent").get<std::string>() != "demo") {
                why = "wrong lineage";
            } else if (!ids.insert(c.at("id").get<std::uint64_t>()).second ||
                       c.at("id") == parent.at("id")) {
                why = "identity not unique";
            } else if (!c.at("vcpu_errors").empty()) {
                why = c.at("vcpu_errors").at(0).get<std::string>();
            }
            if (!why.empty()) {
                problems.push_back(fmt::format("{}: {}", name, why));
                continue;
            }
            ++verified;
            const auto first = c.at("first_report_ns").get<double>();
            running_us.push_back((first - forks[i].at("request_ns").get<double>()) / 1000);
            cow += c.at("memory").at("cow_breaks").get<std::uint64_t>();
            shared += c.at("memory").at("shared_pages").get<double>();
            resident += c.at("memory").at("resident_pages").get<double>();
        }
        parent = call(dir, "demo", "info", json::object(), milliseconds(10000));
        if (parent.at("reports").at("failures").get<std::uint64_t>() != 0) {
            problems.push_back("demo (the parent): " +
                               parent.at("reports").at("errors").at(0).get<std::string>());
        }
        const long pages_now = module_pages();
        const double copies = static_cast<double>(o.clones + 1) * static_cast<double>(mem);

        // 5. The table.
        fmt::print("\n{:<44}  {:>10}  {:>10}  {:>10}\n", "", "median", "p90", "max");
        fmt::print("{:<44}  {}\n", "fork latency (VM_FORK ioctl)", row3(spread(fork_us)));
        fmt::print("{:<44}  {}\n", "parent pause (pause, capture, fork, resume)",
                   row3(spread(pause_us)));
        fmt::print("{:<44}  {}\n", "clone process up, vCPUs running", row3(spread(ready_us)));
        fmt::print("{:<44}  {}\n", "time to running clone (to its first report)",
                   row3(spread(running_us)));
        fmt::print("\n{} clones forked in {:.1f} s ({:.1f} clones/s)\n", o.clones, fork_s,
                   o.clones / fork_s);
        if (pages_now >= 0 && pages_before >= 0) {
            const double held = static_cast<double>(pages_now - pages_before) * page_size;
            fmt::print("memory of all {} VMs: {} held by the module, vs {} for {} full copies "
                       "({:.1f}x less)\n",
                       o.clones + 1, human_bytes(held), human_bytes(copies), o.clones + 1,
                       held > 0 ? copies / held : 0.0);
        } else {
            fmt::print("memory of all {} VMs: (the module's netlink counters could not be "
                       "read)\n",
                       o.clones + 1);
        }
        fmt::print("page sharing: the clones share {:.2f}% of their resident pages\n",
                   resident > 0 ? 100.0 * shared / resident : 0.0);
        fmt::print("COW breaks caused by the clones: {} ({:.1f} per clone)\n", cow,
                   verified ? static_cast<double>(cow) / verified : 0.0);
        fmt::print("verified: {}/{} clones continued the parent's computation exactly, each "
                   "with its own identity (generation 1, unique id)\n",
                   verified, o.clones);
        for (const auto& p : problems) {
            fmt::print("  FAILED {}\n", p);
        }
        std::fflush(stdout);
        if (!problems.empty() || verified != o.clones) {
            throw CliError(
                fmt::format("{} of {} clones failed verification", o.clones - verified, o.clones));
        }
    }
    if (!o.keep) {
        const long left = module_pages();
        fmt::print("cleaned up: every demo VM stopped, module memory back to {}\n",
                   left >= 0 ? human_pages(static_cast<double>(left)) : std::string("(unknown)"));
    }
    return 0;
}

} // namespace vmfork::cli
