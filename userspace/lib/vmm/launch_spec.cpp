// SPDX-License-Identifier: GPL-2.0
#include "vmfork/vmm/launch_spec.h"

#include <cerrno>

#include "vmfork/system_error.h"
#include "vmfork/vmm/launcher.h"

namespace vmfork {

using nlohmann::json;

namespace {

const char* platform_name(Platform p) {
    return p == Platform::Linux ? "linux" : "builtin";
}

template <class T> T field(const json& j, const char* key) {
    try {
        return j.at(key).get<T>();
    } catch (const json::exception& e) {
        throw SystemError(EINVAL, std::string("launch spec field \"") + key + "\": " + e.what());
    }
}

template <class T> T field_or(const json& j, const char* key, T fallback) {
    return j.contains(key) ? field<T>(j, key) : fallback;
}

json disks_json(const std::vector<DiskSpec>& disks) {
    json a = json::array();
    for (const auto& d : disks) {
        a.push_back({{"path", d.path}, {"read_only", d.read_only}, {"layer_fds", d.layer_fds}});
    }
    return a;
}

std::vector<DiskSpec> disks_from(const json& j) {
    std::vector<DiskSpec> disks;
    if (!j.contains("disks")) {
        return disks;
    }
    const json& a = j.at("disks");
    if (!a.is_array()) {
        throw SystemError(EINVAL, "launch spec field \"disks\": not an array");
    }
    for (const auto& d : a) {
        if (!d.is_object()) {
            throw SystemError(EINVAL, "launch spec field \"disks\": not an array of objects");
        }
        DiskSpec s;
        s.path = field<std::string>(d, "path");
        s.read_only = field_or<bool>(d, "read_only", false);
        s.layer_fds = field_or<std::vector<int>>(d, "layer_fds", {});
        for (const int fd : s.layer_fds) {
            if (fd < launch_fd::first_extra ||
                fd >= launch_fd::first_extra + launch_fd::max_extra) {
                throw SystemError(EINVAL, "launch spec field \"layer_fds\": descriptor " +
                                              std::to_string(fd) + " is not an extra one");
            }
        }
        if (s.path.empty() || (s.read_only && !s.layer_fds.empty())) {
            throw SystemError(EINVAL, "launch spec field \"disks\": an empty path, or layers on "
                                      "a read-only disk");
        }
        disks.push_back(std::move(s));
    }
    return disks;
}

json net_json(const NetConfig& net, bool own_netns) {
    return {{"tap", net.tap},
            {"host_address", net.host_address ? net.host_address->str() : ""},
            {"own_netns", own_netns}};
}

void net_from(const json& j, LaunchSpec& s) {
    if (!j.contains("net")) {
        return;
    }
    const json& n = j.at("net");
    if (!n.is_object()) {
        throw SystemError(EINVAL, "launch spec field \"net\": not an object");
    }
    s.net.tap = field_or<std::string>(n, "tap", "");
    if (const auto a = field_or<std::string>(n, "host_address", ""); !a.empty()) {
        s.net.host_address = Ipv4Prefix::parse(a);
    }
    s.own_netns = field_or<bool>(n, "own_netns", false);
    if (s.net.tap.empty() && (s.net.host_address || s.own_netns)) {
        throw SystemError(EINVAL, "launch spec field \"net\": an address or namespace without "
                                  "a tap");
    }
}

} // namespace

json LaunchSpec::to_json() const {
    if (mode == Mode::Warm) {
        return {{"mode", "warm"},
                {"name", name},
                {"runtime_dir", runtime_dir},
                {"spawned_ns", spawned_ns},
                {"cpus", cpus}};
    }
    json j = {
        {"mode", mode == Mode::Boot ? "boot" : "clone"},
        {"name", name},
        {"runtime_dir", runtime_dir},
        {"spawned_ns", spawned_ns},
        {"platform", platform_name(platform)},
        {"disks", disks_json(disks)},
        {"disk_dir", disk_dir},
        {"net", net_json(net, own_netns)},
    };
    if (mode == Mode::Boot) {
        j["mem_size"] = mem_size;
        j["cpus"] = cpus;
        if (platform == Platform::Linux) {
            j["kernel"] = linux_guest.kernel;
            j["initrd"] = linux_guest.initrd;
            j["cmdline"] = linux_guest.cmdline;
        } else {
            j["fill"] = builtin.fill;
            j["report_every"] = builtin.report_every;
            j["pace_us"] = builtin.pace_us;
        }
        return j;
    }
    j["parent"] = parent;
    j["generation"] = generation;
    j["fill"] = fill;
    json positions = json::array();
    for (const auto& p : parent_positions) {
        positions.push_back({p.step, p.checksum, p.tsc});
    }
    j["parent_positions"] = std::move(positions);
    j["customize"] = customize;
    j["new_vm_generation"] = new_vm_generation;
    return j;
}

LaunchSpec LaunchSpec::from_json(const json& j) {
    if (!j.is_object()) {
        throw SystemError(EINVAL, "the launch spec is not a JSON object");
    }
    LaunchSpec s;
    const auto mode = field<std::string>(j, "mode");
    if (mode != "boot" && mode != "clone" && mode != "warm") {
        throw SystemError(EINVAL, "unknown VMM mode '" + mode + "'");
    }
    s.mode = mode == "boot" ? Mode::Boot : mode == "clone" ? Mode::Clone : Mode::Warm;
    s.name = field<std::string>(j, "name");
    s.runtime_dir = field<std::string>(j, "runtime_dir");
    s.spawned_ns = field_or<std::uint64_t>(j, "spawned_ns", 0);
    if (s.mode == Mode::Warm) {
        s.cpus = field<unsigned>(j, "cpus");
        return s;
    }
    const auto platform = field_or<std::string>(j, "platform", "builtin");
    if (platform != "builtin" && platform != "linux") {
        throw SystemError(EINVAL, "unknown platform '" + platform + "'");
    }
    s.platform = platform == "linux" ? Platform::Linux : Platform::Builtin;
    s.disks = disks_from(j);
    s.disk_dir = field_or<std::string>(j, "disk_dir", "");
    net_from(j, s);
    if ((!s.disks.empty() || !s.net.tap.empty()) && s.platform != Platform::Linux) {
        throw SystemError(EINVAL, "disks and networks are for Linux guests only");
    }
    if (s.mode == Mode::Boot) {
        s.mem_size = field<std::uint64_t>(j, "mem_size");
        s.cpus = field<unsigned>(j, "cpus");
        if (s.platform == Platform::Linux) {
            s.linux_guest.kernel = field<std::string>(j, "kernel");
            s.linux_guest.initrd = field_or<std::string>(j, "initrd", "");
            s.linux_guest.cmdline = field_or<std::string>(j, "cmdline", "");
        } else {
            s.builtin.fill = field<std::uint64_t>(j, "fill");
            s.builtin.report_every = field<std::uint64_t>(j, "report_every");
            s.builtin.pace_us = field<std::uint64_t>(j, "pace_us");
        }
        return s;
    }
    s.parent = field<std::string>(j, "parent");
    s.generation = field<std::uint64_t>(j, "generation");
    s.fill = field_or<std::uint64_t>(j, "fill", 0);
    s.customize = field_or<bool>(j, "customize", true);
    s.new_vm_generation = field_or<bool>(j, "new_vm_generation", true);
    for (const auto& p : field<json>(j, "parent_positions")) {
        if (!p.is_array() || p.size() != 3 || !p[0].is_number_unsigned() ||
            !p[1].is_number_unsigned() || !p[2].is_number_unsigned()) {
            throw SystemError(EINVAL, "launch spec field \"parent_positions\": not [step, "
                                      "checksum, tsc] triples");
        }
        s.parent_positions.push_back(
            {p[0].get<std::uint64_t>(), p[1].get<std::uint64_t>(), p[2].get<std::uint64_t>()});
    }
    return s;
}

} // namespace vmfork
