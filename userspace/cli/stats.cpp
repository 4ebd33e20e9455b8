// SPDX-License-Identifier: GPL-2.0
// vmfork stats: memory sharing per VM and for the whole tree, from the module's
// generic netlink family (libnl-genl-3); names come from the VMs' control sockets.
#include <cerrno>
#include <chrono>
#include <ctime>
#include <fmt/chrono.h>
#include <fmt/format.h>
#include <map>
#include <optional>
#include <unistd.h>

#include <linux/vmfork.h>

#include "cli.h"
#include "stop_signals.h"
#include "vmfork/netlink_stats.h"
#include "vmfork/system_error.h"

namespace vmfork::cli {

namespace {

json object_json(const ObjectStats& s) {
    return {{"id", s.id},
            {"parent_id", s.parent_id},
            {"creator_pid", s.creator_pid},
            {"depth", s.depth},
            {"size", s.size},
            {"resident_pages", s.resident_pages},
            {"shared_pages", s.shared_pages},
            {"private_pages", s.private_pages},
            {"cow_breaks", s.cow_breaks},
            {"forks", s.forks},
            {"resets", s.resets},
            {"chain_length", s.chain_length},
            {"template", (s.flags & VMFORK_STATS_TEMPLATE) != 0}};
}

std::string percent(std::uint64_t part, std::uint64_t whole) {
    return whole == 0 ? "-"
                      : fmt::format("{:.1f}%",
                                    100.0 * static_cast<double>(part) / static_cast<double>(whole));
}

// One look at the module: the objects to show, the VMs that hold them, the totals.
struct Sample {
    std::chrono::steady_clock::time_point at;
    std::vector<ObjectStats> objects;
    std::map<std::uint64_t, json> vm_of;    // object id -> the VM's info
    std::optional<ModuleCounters> counters; // whole tree only
};

Sample take_sample(NetlinkStats& nl, const control::RuntimeDir& dir, const std::string& name,
                   std::chrono::seconds timeout) {
    static bool names_warned = false;
    Sample s;
    if (!name.empty()) {
        json info = call(dir, name, "info", json::object(), timeout);
        const auto id = info.at("memory").at("id").get<std::uint64_t>();
        auto obj = nl.get(id);
        if (!obj) {
            throw CliError(fmt::format("{}'s memory object {} is not visible over netlink: run "
                                       "as root or as the user who started the VM",
                                       name, id));
        }
        s.objects.push_back(*obj);
        s.vm_of.emplace(id, std::move(info));
    } else {
        // Names are a bonus: the kernel's figures stand without them (another user's
        // runtime directory, say).
        try {
            for (auto& info : all_info(dir)) {
                const auto id = info.at("memory").at("id").get<std::uint64_t>();
                s.vm_of.emplace(id, std::move(info));
            }
        } catch (const std::exception& e) {
            if (!names_warned) {
                fmt::print(stderr, "vmfork: VM names not shown: {}\n", e.what());
                names_warned = true;
            }
        }
        s.objects = nl.dump();
        s.counters = nl.counters();
    }
    s.at = std::chrono::steady_clock::now();
    return s;
}

// COW breaks per second of each object since prev, for objects in both samples.
std::map<std::uint64_t, double> cow_rates(const Sample& prev, const Sample& now) {
    std::map<std::uint64_t, double> rates;
    const double dt = std::chrono::duration<double>(now.at - prev.at).count();
    if (dt <= 0) {
        return rates;
    }
    std::map<std::uint64_t, std::uint64_t> before;
    for (const auto& o : prev.objects) {
        before.emplace(o.id, o.cow_breaks);
    }
    for (const auto& o : now.objects) {
        if (auto it = before.find(o.id); it != before.end() && o.cow_breaks >= it->second) {
            rates.emplace(o.id, static_cast<double>(o.cow_breaks - it->second) / dt);
        }
    }
    return rates;
}

std::string vm_name(const Sample& s, std::uint64_t id) {
    const auto it = s.vm_of.find(id);
    return it == s.vm_of.end() ? "-" : it->second.at("name").get<std::string>();
}

json totals(const Sample& s, const std::map<std::uint64_t, double>* rates) {
    std::uint64_t guest = 0, resident = 0, shared = 0, priv = 0, cow = 0;
    for (const auto& o : s.objects) {
        guest += o.size;
        resident += o.resident_pages;
        shared += o.shared_pages;
        priv += o.private_pages;
        cow += o.cow_breaks;
    }
    json t = {{"objects", s.objects.size()},
              {"vms", s.vm_of.size()},
              {"guest_bytes", guest},
              {"resident_bytes", resident * page_size},
              {"shared_bytes", shared * page_size},
              {"private_bytes", priv * page_size},
              {"cow_breaks", cow}};
    if (s.counters) {
        // Each page once, however many objects see it: what the tree really costs.
        t["module_bytes"] = s.counters->pages * page_size;
        t["module_objects"] = s.counters->objects;
        t["sharing_ratio"] = s.counters->pages == 0 ? 0.0
                                                    : static_cast<double>(resident) /
                                                          static_cast<double>(s.counters->pages);
    }
    if (rates != nullptr) {
        double sum = 0;
        for (const auto& [id, r] : *rates) {
            sum += r;
        }
        t["cow_per_s"] = sum;
    }
    return t;
}

json sample_json(const Sample& s, const std::map<std::uint64_t, double>* rates) {
    json vms = json::array();
    json objects = json::array();
    for (const auto& o : s.objects) {
        json m = object_json(o);
        if (rates != nullptr) {
            const auto it = rates->find(o.id);
            m["cow_per_s"] = it == rates->end() ? 0.0 : it->second;
        }
        const auto vm = s.vm_of.find(o.id);
        m["vm"] = vm == s.vm_of.end() ? json(nullptr) : vm->second.at("name");
        if (vm != s.vm_of.end()) {
            json info = vm->second;
            info["memory"] = m; // the kernel's figures, not the VMM's
            vms.push_back(std::move(info));
        }
        objects.push_back(std::move(m));
    }
    return {{"source", "netlink"},
            {"vms", std::move(vms)},
            {"objects", std::move(objects)},
            {"total", totals(s, rates)}};
}

void print_sample(const Sample& s, const std::map<std::uint64_t, double>* rates) {
    std::vector<std::vector<std::string>> rows = {
        {"NAME", "OBJECT", "PARENT", "DEPTH", "SIZE", "RESIDENT", "SHARED", "PRIVATE", "SHARED%",
         "COW", "FORKS", "RESETS", "DISK PRIVATE", "DISK SHARED"}};
    if (rates != nullptr) {
        rows[0].insert(rows[0].begin() + 10, "COW/s");
    }
    for (const auto& o : s.objects) {
        std::vector<std::string> row = {vm_name(s, o.id),
                                        std::to_string(o.id),
                                        o.parent_id == 0 ? "-" : std::to_string(o.parent_id),
                                        std::to_string(o.depth),
                                        human_bytes(static_cast<double>(o.size)),
                                        human_pages(static_cast<double>(o.resident_pages)),
                                        human_pages(static_cast<double>(o.shared_pages)),
                                        human_pages(static_cast<double>(o.private_pages)),
                                        percent(o.shared_pages, o.resident_pages),
                                        std::to_string(o.cow_breaks),
                                        std::to_string(o.forks),
                                        std::to_string(o.resets)};
        // The VM's disks (linked-clone views): blocks of its own, blocks in layers it
        // shares; "-" without a disk.
        const auto vm = s.vm_of.find(o.id);
        const json disks =
            vm == s.vm_of.end() ? json::array() : vm->second.value("disks", json::array());
        std::uint64_t own = 0;
        std::uint64_t shared = 0;
        for (const auto& d : disks) {
            own += d.value("private_blocks", std::uint64_t{0});
            shared += d.value("shared_blocks", std::uint64_t{0});
        }
        row.push_back(disks.empty() ? "-" : human_bytes(static_cast<double>(own) * 4096));
        row.push_back(disks.empty() ? "-" : human_bytes(static_cast<double>(shared) * 4096));
        if (rates != nullptr) {
            const auto it = rates->find(o.id);
            row.insert(row.begin() + 10,
                       it == rates->end() ? "-" : fmt::format("{:.0f}", it->second));
        }
        if ((o.flags & VMFORK_STATS_TEMPLATE) != 0) {
            row[0] += " (template)";
        }
        rows.push_back(std::move(row));
    }
    if (s.objects.empty()) {
        fmt::print("no memory objects (start a VM with `vmfork run`)\n");
        return;
    }
    print_table(rows);
    const json t = totals(s, rates);
    fmt::print("\n{} objects ({} VMs), {} of guest RAM; {} resident in their views, {} of it "
               "shared, {} private",
               t.at("objects").get<std::size_t>(), t.at("vms").get<std::size_t>(),
               human_bytes(t.at("guest_bytes").get<double>()),
               human_bytes(t.at("resident_bytes").get<double>()),
               percent(t.at("shared_bytes").get<std::uint64_t>(),
                       t.at("resident_bytes").get<std::uint64_t>()),
               human_bytes(t.at("private_bytes").get<double>()));
    if (t.contains("module_bytes")) {
        fmt::print("; the module holds {}: sharing ratio {:.1f}x",
                   human_bytes(t.at("module_bytes").get<double>()),
                   t.at("sharing_ratio").get<double>());
    }
    if (t.contains("cow_per_s")) {
        fmt::print("; {:.0f} COW breaks/s", t.at("cow_per_s").get<double>());
    }
    fmt::print("\n");
}

} // namespace

int cmd_stats(const Globals& g, const StatsOptions& o) {
    auto nl = open_netlink<NetlinkStats>();
    const auto dir = runtime_dir();
    if (o.watch_s == 0) {
        const Sample s = take_sample(nl, dir, o.name, g.timeout);
        if (o.json) {
            fmt::print("{}\n", sample_json(s, nullptr).dump(2));
        } else {
            print_sample(s, nullptr);
        }
        return 0;
    }

    const StopSignals stop;
    const bool tty = isatty(STDOUT_FILENO) != 0 && !o.json;
    Sample prev = take_sample(nl, dir, o.name, g.timeout);
    for (unsigned n = 0; o.count == 0 || n < o.count; ++n) {
        if (stop.wait(std::chrono::seconds(o.watch_s))) {
            break;
        }
        Sample now = take_sample(nl, dir, o.name, g.timeout);
        const auto rates = cow_rates(prev, now);
        if (o.json) {
            json j = sample_json(now, &rates);
            j["interval_s"] = std::chrono::duration<double>(now.at - prev.at).count();
            fmt::print("{}\n", j.dump());
        } else {
            if (tty) {
                fmt::print("\x1b[H\x1b[2J");
            }
            fmt::print("vmfork stats, every {}s, {:%H:%M:%S} (Ctrl-C stops)\n", o.watch_s,
                       fmt::localtime(std::time(nullptr)));
            print_sample(now, &rates);
            fmt::print("\n");
        }
        std::fflush(stdout);
        prev = std::move(now);
    }
    return 0;
}

} // namespace vmfork::cli
