// SPDX-License-Identifier: GPL-2.0
// `vmfork pool`: the warm VMMs that clones start in (vmm/pool.h).
#include <fmt/core.h>

#include "cli.h"
#include "vmfork/vmm/pool.h"

namespace vmfork::cli {

namespace {

int show(const VmmPool& pool, bool json_out) {
    const auto warm = pool.warm();
    auto targets = pool.targets();
    // A vCPU count with warm VMMs but no target (being drained, or left by a resize).
    for (const auto& w : warm) {
        if (std::none_of(targets.begin(), targets.end(),
                         [&w](const auto& t) { return t.first == w.cpus; })) {
            targets.emplace_back(w.cpus, 0);
        }
    }
    std::sort(targets.begin(), targets.end());
    json out = json::array();
    std::vector<std::vector<std::string>> rows = {{"VCPUS", "SIZE", "WARM", "PIDS"}};
    for (const auto& [cpus, size] : targets) {
        json pids = json::array();
        std::string pid_text;
        for (const auto& w : warm) {
            if (w.cpus == cpus) {
                pids.push_back(w.pid);
                pid_text += (pid_text.empty() ? "" : " ") + std::to_string(w.pid);
            }
        }
        out.push_back({{"cpus", cpus}, {"size", size}, {"warm", pids.size()}, {"pids", pids}});
        rows.push_back({std::to_string(cpus), std::to_string(size), std::to_string(pids.size()),
                        pid_text.empty() ? "-" : pid_text});
    }
    if (json_out) {
        fmt::print("{}\n", out.dump(2));
        return 0;
    }
    if (targets.empty()) {
        fmt::print("no warm pool: clones start as new processes (make one with `vmfork pool "
                   "resize N`)\n");
        return 0;
    }
    print_table(rows);
    return 0;
}

// Waits for warm VMMs just started; the number that came up. Their errors go to stderr.
unsigned wait_started(std::vector<PendingVmm>& started, std::chrono::seconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    unsigned up = 0;
    for (auto& p : started) {
        try {
            p.wait(deadline);
            ++up;
        } catch (const SystemError& e) {
            fmt::print(stderr, "vmfork: warm VMM {} did not start: {}\n", p.pid(), e.what());
        }
    }
    return up;
}

} // namespace

int cmd_pool(const Globals& g, const PoolOptions& o) {
    const auto dir = runtime_dir();
    VmmPool pool(dir.path());
    if (o.action == PoolOptions::Action::Show) {
        return show(pool, o.json);
    }
    if (o.action == PoolOptions::Action::Drain) {
        unsigned told = 0;
        for (const auto& [cpus, size] : pool.targets()) {
            if (!o.cpus || *o.cpus == cpus) {
                pool.set_target(cpus, 0);
            }
        }
        told = pool.shrink(o.cpus);
        fmt::print("pool: {} warm VMM{} stopped\n", told, told == 1 ? "" : "s");
        return 0;
    }
    const unsigned cpus = o.cpus.value_or(1);
    check_devices();
    dir.ensure();
    try {
        pool.set_target(cpus, o.size);
    } catch (const SystemError& e) {
        throw CliError(e.what());
    }
    const unsigned stopped = pool.shrink(cpus, o.size);
    auto started = pool.refill(cpus);
    const unsigned up = wait_started(started, g.timeout);
    unsigned warm = 0;
    for (const auto& w : pool.warm()) {
        warm += w.cpus == cpus ? 1 : 0;
    }
    fmt::print("pool: {} warm VMM{} with {} vCPU{} (started {}, stopped {})\n", warm,
               warm == 1 ? "" : "s", cpus, cpus == 1 ? "" : "s", up, stopped);
    return up == started.size() ? 0 : 1;
}

} // namespace vmfork::cli
