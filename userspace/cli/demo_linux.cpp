// SPDX-License-Identifier: GPL-2.0
// vmfork demo --linux: boot the default Linux guest, start a workload in it that writes
// and checks its memory, fork N running clones, check in every clone (by the guest's
// own output) that the workload went on with its data intact and that the console
// answers, print what it cost, clean up.
#include <fcntl.h>
#include <fmt/format.h>
#include <regex>
#include <thread>
#include <unistd.h>

#include "cli.h"
#include "demo_util.h"
#include "vmfork/vmm/launcher.h"

namespace vmfork::cli {

namespace {

using std::chrono::milliseconds;
using std::chrono::steady_clock;

constexpr const char* parent_name = "linux";
// A line the shell prints only when it ran the command (its echo shows the expression).
constexpr const char* ping_command = "echo vmfork-ping-$((6*7))\n";
constexpr const char* ping_answer = "vmfork-ping-42";

std::string read_console(const control::RuntimeDir& dir, const std::string& name) {
    std::string out;
    UniqueFd fd(::open(dir.console_path(name).c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) {
        return out;
    }
    std::array<char, 65536> buf{};
    for (;;) {
        const ssize_t n = ::read(fd.get(), buf.data(), buf.size());
        if (n <= 0) {
            return out;
        }
        out.append(buf.data(), static_cast<std::size_t>(n));
    }
}

void type(const control::RuntimeDir& dir, const std::string& name, std::string_view text) {
    call(dir, name, "input", {{"data", control::to_hex(text)}}, milliseconds(10000));
}

// What a guest console must never show; "" if clean, else the offending line. Of the
// clocksource watchdog, the skew verdict (a clone whose TSC and kvmclock disagree), not
// the read-back delay a guest too slow to read two clocks in time reports (under TCG).
std::string kernel_complaint(const std::string& console) {
    static const std::regex bad(
        "BUG:|WARNING:|Oops|soft lockup|rcu.*stall|Kernel panic|hung_task|Call Trace|"
        "Marking clocksource .* as unstable");
    std::smatch m;
    if (!std::regex_search(console, m, bad)) {
        return {};
    }
    const auto at = static_cast<std::size_t>(m.position(0));
    const auto begin = console.rfind('\n', at);
    const auto end = console.find('\n', at);
    const auto from = begin == std::string::npos ? 0 : begin + 1;
    return console.substr(from, end == std::string::npos ? std::string::npos : end - from);
}

struct Rounds {
    std::uint64_t first = 0; // 0: none
    std::uint64_t last = 0;
    std::uint64_t ok = 0;
    std::string failed;     // the first FAILED line
    bool restarted = false; // the workload started over (it must go on instead)
};

Rounds rounds(const std::string& console) {
    static const std::regex line("vmfork-workload: round ([0-9]+) (ok|FAILED)[^\r\n]*");
    Rounds r;
    for (auto it = std::sregex_iterator(console.begin(), console.end(), line);
         it != std::sregex_iterator(); ++it) {
        const std::uint64_t n = std::stoull((*it)[1]);
        if (r.first == 0) {
            r.first = n;
        }
        r.last = std::max(r.last, n);
        if ((*it)[2] == "ok") {
            ++r.ok;
        } else if (r.failed.empty()) {
            r.failed = it->str();
        }
    }
    r.restarted = console.find("MiB filled") != std::string::npos;
    return r;
}

template <class Pred>
void wait_for(const std::string& what, std::chrono::seconds timeout, Pred pred) {
    const auto end = steady_clock::now() + timeout;
    while (!pred()) {
        if (steady_clock::now() > end) {
            throw CliError(what);
        }
        std::this_thread::sleep_for(milliseconds(50));
    }
}

} // namespace

int cmd_demo_linux(const Globals& g, const DemoLinuxOptions& o) {
    check_devices();
    const std::uint64_t mem = parse_mem_option(o.mem);
    if (o.workload_mib * (std::uint64_t{1} << 20) * 2 > mem) {
        throw CliError(fmt::format("--workload {} MiB needs a guest of at least {} MiB (--mem)",
                                   o.workload_mib, 2 * o.workload_mib));
    }
    const auto base = runtime_dir();
    const control::RuntimeDir dir(base.path() + "/demo-linux-" + std::to_string(::getpid()));
    dir.ensure();
    const long pages_before = module_pages();
    const DemoCleanup cleanup(dir, o.keep);
    fmt::print("vmfork demo --linux: {} with a {} guest, {} vCPU(s), a {} MiB workload, {} "
               "clones\n",
               o.kernel.empty() ? default_kernel() : o.kernel,
               human_bytes(static_cast<double>(mem)), o.cpus, o.workload_mib, o.clones);
    std::fflush(stdout);

    // 1. Boot to the shell.
    RunOptions run;
    run.name = parent_name;
    run.mem = o.mem;
    run.cpus = o.cpus;
    run.linux_guest = true;
    run.kernel = o.kernel;
    const auto t_boot = steady_clock::now();
    start_vm(dir, run, g.timeout);
    const std::string up = fmt::format("vmfork-guest: up, {} cpus", o.cpus);
    wait_for("the Linux guest did not boot to its shell in time: see its console with "
             "--keep and `vmfork console`",
             g.timeout,
             [&] { return read_console(dir, parent_name).find(up) != std::string::npos; });
    const double boot_s = std::chrono::duration<double>(steady_clock::now() - t_boot).count();
    fmt::print("booted to a shell in {:.1f} s\n", boot_s);
    std::fflush(stdout);

    // 2. The workload, until it has checked its memory twice.
    type(dir, parent_name, fmt::format("vmfork-workload {} {} &\n", o.workload_mib, o.period_ms));
    wait_for("the workload did not run two rounds in time", g.timeout, [&] {
        const Rounds r = rounds(read_console(dir, parent_name));
        if (!r.failed.empty()) {
            throw CliError("the workload failed in the parent: " + r.failed);
        }
        return r.ok >= 2;
    });
    const json before = call(dir, parent_name, "info", json::object(), milliseconds(10000));
    fmt::print("workload running: {} of guest RAM resident\n",
               human_pages(before.at("memory").at("resident_pages").get<double>()));
    std::fflush(stdout);

    // 3. Fork: one request, one pause of the parent, N VM_FORKs.
    const json r = call(dir, parent_name, "fork", {{"count", o.clones}}, g.timeout);
    const auto fork_round = rounds(read_console(dir, parent_name)).last;
    const auto request_ns = r.at("request_ns").get<std::uint64_t>();
    std::vector<std::string> names;
    std::vector<std::string> problems;
    std::vector<double> fork_us;
    std::vector<double> ready_us;
    for (const auto& c : r.at("clones")) {
        const auto name = c.at("name").get<std::string>();
        if (c.contains("error")) {
            problems.push_back(name + ": did not start: " + c.at("error").get<std::string>());
            continue;
        }
        fork_us.push_back(c.at("fork_us").get<double>());
        ready_us.push_back(static_cast<double>(c.at("spawned_ns").get<std::uint64_t>() +
                                               c.at("ready_us").get<std::uint64_t>() * 1000 -
                                               request_ns) /
                           1000);
        type(dir, name, ping_command);
        names.push_back(name);
    }
    fmt::print("forked {} clones (the parent paused {}); waiting for their consoles\n",
               names.size(), ms(r.at("pause_us").get<double>()));
    std::fflush(stdout);

    // 4. Every clone answers its console, then runs the workload on for two rounds.
    std::vector<double> answer_us(names.size(), -1);
    std::vector<Rounds> seen(names.size());
    std::vector<bool> done(names.size(), false);
    const auto deadline = steady_clock::now() + g.timeout;
    std::size_t left = names.size();
    while (left > 0 && steady_clock::now() < deadline) {
        for (std::size_t i = 0; i < names.size(); ++i) {
            if (done[i]) {
                continue;
            }
            const std::string console = read_console(dir, names[i]);
            if (answer_us[i] < 0 && console.find(ping_answer) != std::string::npos) {
                answer_us[i] = static_cast<double>(monotonic_ns() - request_ns) / 1000;
            }
            seen[i] = rounds(console);
            if (answer_us[i] >= 0 && (seen[i].ok >= 2 || !seen[i].failed.empty())) {
                done[i] = true;
                --left;
            }
        }
        std::this_thread::sleep_for(milliseconds(20));
    }

    // 5. Verify: by the guests' own output, and no kernel complaint on any console.
    unsigned verified = 0;
    std::vector<double> answered;
    for (std::size_t i = 0; i < names.size(); ++i) {
        const std::string console = read_console(dir, names[i]);
        std::string why;
        if (const auto bad = kernel_complaint(console); !bad.empty()) {
            why = "kernel: " + bad;
        } else if (answer_us[i] < 0) {
            why = "its console did not answer";
        } else if (!seen[i].failed.empty()) {
            why = seen[i].failed;
        } else if (seen[i].restarted) {
            why = "the workload started over instead of going on";
        } else if (seen[i].ok < 2) {
            why = fmt::format("the workload ran {} rounds in the clone, not 2", seen[i].ok);
        } else if (seen[i].first > fork_round + 1 || seen[i].first + 1 < fork_round) {
            why = fmt::format("the workload's rounds jumped: round {} at the fork, {} first in "
                              "the clone",
                              fork_round, seen[i].first);
        }
        if (!why.empty()) {
            // The evidence: the end of the clone's console (the demo's dir goes away).
            std::string tail = console.substr(console.size() > 1200 ? console.size() - 1200 : 0);
            for (std::size_t at = 0; (at = tail.find('\n', at)) != std::string::npos; at += 5) {
                tail.replace(at, 1, "\n    | ");
            }
            problems.push_back(
                fmt::format("{}: {}; its console ends:\n    | {}", names[i], why, tail));
            continue;
        }
        ++verified;
        answered.push_back(answer_us[i]);
    }
    const std::string parent_console = read_console(dir, parent_name);
    if (const auto bad = kernel_complaint(parent_console); !bad.empty()) {
        problems.push_back(std::string(parent_name) + " (the parent): kernel: " + bad);
    }
    if (const Rounds pr = rounds(parent_console); !pr.failed.empty()) {
        problems.push_back(std::string(parent_name) + " (the parent): " + pr.failed);
    }

    // 6. Memory, from the module: every VM's object, and what it holds in all.
    double clone_private = 0;
    double shared = 0;
    double resident = 0;
    for (const auto& name : names) {
        const json c = call(dir, name, "info", json::object(), milliseconds(10000));
        clone_private += c.at("memory").at("private_pages").get<double>();
        shared += c.at("memory").at("shared_pages").get<double>();
        resident += c.at("memory").at("resident_pages").get<double>();
    }
    const json parent = call(dir, parent_name, "info", json::object(), milliseconds(10000));
    const double parent_resident = parent.at("memory").at("resident_pages").get<double>();
    const long pages_now = module_pages();
    const auto n = static_cast<double>(o.clones);

    fmt::print("\n{:<46}  {:>10}  {:>10}  {:>10}\n", "", "median", "p90", "max");
    fmt::print("{:<46}  {}\n", "fork latency (VM_FORK ioctl, per clone)", row3(spread(fork_us)));
    fmt::print("{:<46}  {}\n", "clone VMM up, vCPUs running (from the request)",
               row3(spread(ready_us)));
    fmt::print("{:<46}  {}\n", "clone answers on its console (from the request)",
               row3(spread(answered)));
    fmt::print("\nboot to a shell: {:.1f} s; parent paused {} for {} clones\n", boot_s,
               ms(r.at("pause_us").get<double>()), o.clones);
    fmt::print("the {} clones: {} of their own memory vs {} for {} full copies of the parent's "
               "{} resident ({:.1f}x less)\n",
               o.clones, human_pages(clone_private), human_pages(n * parent_resident), o.clones,
               human_pages(parent_resident),
               clone_private > 0 ? n * parent_resident / clone_private : 0.0);
    if (pages_now >= 0 && pages_before >= 0) {
        const double held = static_cast<double>(pages_now - pages_before) * page_size;
        const double copies = (n + 1) * static_cast<double>(mem);
        fmt::print("all {} VMs: {} held by the module vs {} for {} full copies of {} "
                   "({:.1f}x less)\n",
                   o.clones + 1, human_bytes(held), human_bytes(copies), o.clones + 1,
                   human_bytes(static_cast<double>(mem)), held > 0 ? copies / held : 0.0);
    }
    fmt::print("page sharing: the clones share {:.1f}% of their resident pages\n",
               resident > 0 ? 100.0 * shared / resident : 0.0);
    fmt::print("verified: {}/{} clones answered their console and ran the workload on from "
               "round {} with its data intact (checked by the guest), no kernel complaint\n",
               verified, o.clones, fork_round);
    for (const auto& p : problems) {
        fmt::print("  FAILED {}\n", p);
    }
    std::fflush(stdout);
    if (!problems.empty() || verified != o.clones) {
        throw CliError(
            fmt::format("{} of {} clones failed verification", o.clones - verified, o.clones));
    }
    return 0;
}

} // namespace vmfork::cli
