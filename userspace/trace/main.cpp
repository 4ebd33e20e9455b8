// SPDX-License-Identifier: GPL-2.0
//
// vmfork-trace: live statistics of the vmfork module from its tracepoints, with
// libbpf (bpf/vmfork_trace.bpf.c, embedded as a bpftool skeleton): log2 histograms of
// fork latency (live and template forks apart) and reset latency, COW breaks per
// second per memory object, every -i SECS, as text or JSON, totals at the end.
//
// Why classic tracepoints with a fixed context layout and not tp_btf or CO-RE: both
// need BTF describing the module's trace events, and the kernels vmfork supports do
// not all have it (the debug kernel has no BTF at all, Debian's 6.1 builds modules
// without module BTF). A fixed layout loads everywhere; to stay correct the tool
// first compares that layout (bpf/vmfork_trace.h) with the module's tracefs format
// files and refuses to run on a mismatch (a module of another version).
//
// Exit status: 0 (Ctrl-C, SIGTERM or -c COUNT intervals done), 1 an error (with
// what to do), 2 bad arguments.
#include <CLI/CLI.hpp>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <fmt/format.h>
#include <poll.h>
#include <string>
#include <sys/signalfd.h>
#include <unistd.h>

#include "bpf_session.h"
#include "format_checker.h"
#include "report.h"
#include "trace_error.h"
#include "tracefs.h"
#include "vmfork/system_error.h"
#include "vmfork/unique_fd.h"

#ifndef VMFORK_VERSION
#define VMFORK_VERSION "unknown"
#endif

namespace {

using namespace vmfork::trace;
using Clock = std::chrono::steady_clock;

struct Options {
    unsigned interval_s = 1;
    unsigned count = 0;
    bool json = false;
    unsigned top = 10;
    std::string tracefs;
    bool verbose = false;
};

// SIGINT and SIGTERM as a readable fd: blocked for the process, read in the loop.
vmfork::UniqueFd stop_signals() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    if (sigprocmask(SIG_BLOCK, &set, nullptr) != 0) {
        throw vmfork::SystemError::from_errno("blocking SIGINT and SIGTERM");
    }
    vmfork::UniqueFd fd(signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK));
    if (!fd) {
        throw vmfork::SystemError::from_errno("signalfd");
    }
    return fd;
}

// Waits until deadline or a stop signal; true if a signal came.
bool wait_for_stop(const vmfork::UniqueFd& sigfd, Clock::time_point deadline) {
    for (;;) {
        const auto left =
            std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
        if (left <= 0) {
            return false;
        }
        pollfd p{sigfd.get(), POLLIN, 0};
        const int n = ::poll(&p, 1, static_cast<int>(left));
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            throw vmfork::SystemError::from_errno("poll");
        }
        if (n > 0) {
            signalfd_siginfo info{};
            if (::read(sigfd.get(), &info, sizeof(info)) < 0 && errno != EAGAIN) {
                throw vmfork::SystemError::from_errno("reading the signalfd");
            }
            return true;
        }
    }
}

double seconds_between(Clock::time_point a, Clock::time_point b) {
    return std::chrono::duration<double>(b - a).count();
}

int run(const Options& opt) {
    // Blocked before anything is attached, so a Ctrl-C at any point ends cleanly.
    const auto sigfd = stop_signals();

    BpfSession::require_privileges();
    const Tracefs tracefs = opt.tracefs.empty() ? Tracefs::find() : Tracefs(opt.tracefs);
    FormatChecker(tracefs).check("vmfork", FormatChecker::vmfork_events());

    const BpfSession session(opt.verbose);
    const auto reporter = opt.json ? Reporter::json(stdout) : Reporter::text(stdout, opt.top);

    const auto first = session.snapshot();
    auto last = first;
    reporter->started(opt.interval_s);

    const auto interval = std::chrono::seconds(opt.interval_s);
    unsigned intervals = 0;
    for (;;) {
        const bool stop = wait_for_stop(sigfd, last.at + interval);
        const auto now = session.snapshot();
        const double secs = seconds_between(last.at, now.at);
        if (!stop || secs >= 0.05) {
            reporter->interval(now.since(last), secs, stop);
            intervals++;
        }
        last = now;
        if (stop || (opt.count != 0 && intervals >= opt.count)) {
            break;
        }
    }
    reporter->summary(last.since(first), seconds_between(first.at, last.at), intervals);
    return 0;
}

int main_checked(int argc, char** argv) {
    CLI::App app{"vmfork-trace: fork latency, COW breaks per object and reset latency of the "
                 "vmfork module, from its tracepoints (libbpf). Needs root and the module "
                 "loaded."};
    app.set_version_flag("--version", std::string("vmfork-trace ") + VMFORK_VERSION);
    Options opt;
    app.add_option("-i,--interval", opt.interval_s, "print every SECS seconds")
        ->type_name("SECS")
        ->check(CLI::Range(1U, 86400U))
        ->capture_default_str();
    app.add_option("-c,--count", opt.count, "stop after COUNT intervals (0: until Ctrl-C)")
        ->type_name("COUNT")
        ->capture_default_str();
    app.add_flag("--json", opt.json,
                 "one JSON object per line: each interval, then the totals (\"summary\")");
    app.add_option("--top", opt.top, "objects listed per interval (text output)")
        ->check(CLI::Range(1U, 100000U))
        ->capture_default_str();
    app.add_option("--tracefs", opt.tracefs,
                   "tracefs directory to check the module's event formats in (default: the "
                   "mounted tracefs)")
        ->type_name("DIR");
    app.add_flag("-v,--verbose", opt.verbose, "print libbpf's messages");
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        const int rc = app.exit(e);
        return rc == 0 ? 0 : 2;
    }

    try {
        return run(opt);
    } catch (const TraceError& e) {
        fmt::print(stderr, "vmfork-trace: {}\nvmfork-trace: {}\n", e.what(), e.hint());
    } catch (const std::exception& e) {
        fmt::print(stderr, "vmfork-trace: {}\n", e.what());
    }
    return 1;
}

} // namespace

int main(int argc, char** argv) {
    try {
        return main_checked(argc, argv);
    } catch (...) {
        std::fputs("vmfork-trace: unexpected error\n", stderr);
        return 1;
    }
}
