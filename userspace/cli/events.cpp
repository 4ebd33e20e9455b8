// SPDX-License-Identifier: GPL-2.0
// vmfork events: the module's fork, reset and release events as they happen, from the
// "events" multicast group of its generic netlink family (libnl-genl-3).
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <fmt/chrono.h>
#include <fmt/format.h>
#include <poll.h>

#include <linux/vmfork.h>

#include "cli.h"
#include "stop_signals.h"
#include "vmfork/netlink_events.h"
#include "vmfork/system_error.h"

namespace vmfork::cli {

namespace {

const char* kind_name(ModuleEvent::Kind k) {
    switch (k) {
    case ModuleEvent::Kind::fork:
        return "fork";
    case ModuleEvent::Kind::reset:
        return "reset";
    case ModuleEvent::Kind::release:
        return "release";
    }
    return "?";
}

// "12:34:56.789", local time.
std::string clock_now() {
    const auto now = std::chrono::system_clock::now();
    const auto ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()) % 1000;
    return fmt::format("{:%H:%M:%S}.{:03}",
                       fmt::localtime(std::chrono::system_clock::to_time_t(now)), ms.count());
}

json event_json(const ModuleEvent& e) {
    json j = {{"time", clock_now()}, {"event", kind_name(e.kind)}, {"id", e.id}};
    switch (e.kind) {
    case ModuleEvent::Kind::fork:
        j["child_id"] = e.child_id;
        j["pid"] = e.pid;
        j["template"] = (e.flags & VMFORK_FORK_TEMPLATE) != 0;
        j["resident_pages"] = e.resident_pages;
        j["duration_ns"] = e.duration_ns;
        break;
    case ModuleEvent::Kind::reset:
        j["dropped_pages"] = e.dropped_pages;
        j["duration_ns"] = e.duration_ns;
        break;
    case ModuleEvent::Kind::release:
        j["resident_pages"] = e.resident_pages;
        j["private_pages"] = e.private_pages;
        break;
    }
    return j;
}

std::string micros(std::uint64_t ns) {
    return fmt::format("{:.0f} us", static_cast<double>(ns) / 1000.0);
}

void print_event(const ModuleEvent& e) {
    std::string what;
    switch (e.kind) {
    case ModuleEvent::Kind::fork:
        what =
            fmt::format("{} -> {}  {} fork by pid {}, parent resident {}, {}", e.id, e.child_id,
                        (e.flags & VMFORK_FORK_TEMPLATE) != 0 ? "template" : "live", e.pid,
                        human_pages(static_cast<double>(e.resident_pages)), micros(e.duration_ns));
        break;
    case ModuleEvent::Kind::reset:
        what =
            fmt::format("{}  dropped {} pages ({}), {}", e.id, e.dropped_pages,
                        human_pages(static_cast<double>(e.dropped_pages)), micros(e.duration_ns));
        break;
    case ModuleEvent::Kind::release:
        what = fmt::format("{}  resident {}, private {} (its own pages, now freed)", e.id,
                           human_pages(static_cast<double>(e.resident_pages)),
                           human_pages(static_cast<double>(e.private_pages)));
        break;
    }
    fmt::print("{}  {:<7}  {}\n", clock_now(), kind_name(e.kind), what);
}

} // namespace

int cmd_events(const EventsOptions& o) {
    auto nl = open_netlink<NetlinkEvents>();
    StopSignals stop;
    std::array<pollfd, 2> fds{{{nl.fd(), POLLIN, 0}, {stop.fd(), POLLIN, 0}}};
    fmt::print(stderr, "vmfork: listening for fork, reset and release events{}; Ctrl-C stops\n",
               o.count != 0 ? fmt::format(" (until {})", o.count) : "");
    if (!o.json) {
        fmt::print("{:<12}  {:<7}  {}\n", "TIME", "EVENT", "OBJECT");
    }
    std::fflush(stdout);
    std::uint64_t shown = 0;
    std::uint64_t overruns = 0;
    while (o.count == 0 || shown < o.count) {
        if (poll(fds.data(), fds.size(), -1) < 0) {
            if (errno == EINTR) {
                continue;
            }
            throw SystemError::from_errno("poll on the netlink socket");
        }
        if (fds[1].revents != 0) {
            break;
        }
        for (const auto& e : nl.drain()) {
            if (o.json) {
                fmt::print("{}\n", event_json(e).dump());
            } else {
                print_event(e);
            }
            if (++shown == o.count) {
                break;
            }
        }
        std::fflush(stdout);
        if (nl.overruns() != overruns) {
            overruns = nl.overruns();
            fmt::print(stderr,
                       "vmfork: events were lost: the kernel dropped messages this reader had "
                       "no room for ({} time{} so far)\n",
                       overruns, overruns == 1 ? "" : "s");
        }
    }
    return 0;
}

} // namespace vmfork::cli
