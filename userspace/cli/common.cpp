// SPDX-License-Identifier: GPL-2.0
#include <algorithm>
#include <array>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fmt/format.h>
#include <fstream>
#include <memory>
#include <sstream>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <thread>
#include <unistd.h>

#include "cli.h"
#include "vmfork/device_access.h"
#include "vmfork/netlink_stats.h"
#include "vmfork/parse_size.h"
#include "vmfork/system_error.h"
#include "vmfork/vmm/launcher.h"

namespace vmfork::cli {

control::RuntimeDir runtime_dir() {
    return control::RuntimeDir();
}

void throw_module_not_loaded() {
    throw CliError("the vmfork module is not loaded (no generic netlink family \"vmfork\"): "
                   "load it with `sudo modprobe vmfork` (package vmfork-dkms, or after "
                   "`make install`) or `insmod kmod/vmfork.ko` from a build tree");
}

void check_devices() {
    if (::access("/dev/kvm", F_OK) != 0) {
        throw CliError("/dev/kvm not found: this machine has no KVM (enable virtualization in "
                       "the firmware, or load kvm_intel / kvm_amd)");
    }
    if (::access("/dev/kvm", R_OK | W_OK) != 0) {
        throw CliError(permission_denied_message("/dev/kvm"));
    }
    if (::access("/dev/vmfork", F_OK) != 0) {
        throw CliError("/dev/vmfork not found: load the module with `sudo modprobe vmfork` "
                       "(package vmfork-dkms, or `make install`) or `insmod kmod/vmfork.ko` "
                       "from a build tree");
    }
    if (::access("/dev/vmfork", R_OK | W_OK) != 0) {
        throw CliError(permission_denied_message("/dev/vmfork"));
    }
}

control::Client connect(const control::RuntimeDir& dir, const std::string& name) {
    if (!control::RuntimeDir::valid_name(name)) {
        throw CliError("'" + name + "' is not a VM name: see `vmfork ls`");
    }
    if (!dir.in_use(name)) {
        throw CliError("no VM named " + name + ": see `vmfork ls`");
    }
    try {
        return control::Client::connect(dir.socket_path(name));
    } catch (const SystemError& e) {
        throw CliError("VM " + name + " does not answer (" + e.what() +
                       "): it may be starting or stopping; see its log " + dir.path() + "/" + name +
                       ".log");
    }
}

json call(const control::RuntimeDir& dir, const std::string& name, const std::string& op,
          const json& args, std::chrono::milliseconds timeout) {
    auto client = connect(dir, name);
    // Name the VM unless the VMM's message already does.
    auto named = [&](const std::string& what) {
        return what.find(name) == std::string::npos ? name + ": " + what : what;
    };
    try {
        return client.call(op, args, timeout);
    } catch (const SystemError& e) {
        throw CliError(named(e.what()));
    } catch (const control::ProtocolError& e) {
        throw CliError(named(e.what()));
    }
}

std::optional<std::string> stopped_vm(const json& info) {
    auto why = info.value("state", std::string());
    if (why != "error" && why != "stopped") {
        return std::nullopt;
    }
    for (const auto& e : info.value("vcpu_errors", json::array())) {
        why += "; " + e.get<std::string>();
    }
    return why;
}

std::string default_kernel() {
    utsname u{};
    if (::uname(&u) < 0) {
        throw SystemError::from_errno("uname");
    }
    return std::string("/boot/vmlinuz-") + u.release;
}

std::string default_initramfs() {
    const std::string exe = self_exe();
    return exe.substr(0, exe.rfind('/')) + "/../share/vmfork/linux-initramfs.cpio.gz";
}

namespace {

// A boot file the user named (or the default): readable, a regular file.
void check_boot_file(const std::string& path, const char* what, const char* option) {
    struct stat st {};
    if (::stat(path.c_str(), &st) < 0) {
        const int e = errno;
        throw CliError(fmt::format("{} {}: {}{}", what, path, std::strerror(e),
                                   e == ENOENT ? fmt::format(" (give another with {})", option)
                                               : std::string()));
    }
    if (!S_ISREG(st.st_mode)) {
        throw CliError(fmt::format("{} {} is not a regular file", what, path));
    }
    if (::access(path.c_str(), R_OK) != 0) {
        throw CliError(fmt::format("{} {}: permission denied", what, path));
    }
}

} // namespace

std::uint64_t parse_mem_option(const std::string& text) {
    try {
        return parse_size(text);
    } catch (const std::exception& e) {
        throw CliError("--mem " + text + ": " + e.what());
    }
}

// --disk PATH[,ro]: the path made absolute (the VMM and its clones open it).
DiskSpec parse_disk_option(const std::string& text) {
    DiskSpec d;
    std::string path = text;
    if (path.ends_with(",ro")) {
        d.read_only = true;
        path.resize(path.size() - 3);
    } else if (path.ends_with(",rw")) {
        path.resize(path.size() - 3);
    }
    if (path.empty()) {
        throw CliError("--disk " + text + ": no path (--disk PATH[,ro])");
    }
    std::unique_ptr<char, decltype(&std::free)> real(::realpath(path.c_str(), nullptr), &std::free);
    if (!real) {
        throw CliError("--disk " + path + ": " + std::strerror(errno));
    }
    d.path = real.get();
    return d;
}

// --net tap[,NAME] | none, --net-address ADDR/PREFIX.
NetConfig parse_net_options(const std::string& mode, const std::string& address) {
    NetConfig net;
    if (mode == "tap") {
        net.tap = "vmf%d"; // the kernel picks the first free vmfN
    } else if (mode.starts_with("tap,")) {
        net.tap = mode.substr(4);
        if (!Tap::valid_name(net.tap)) {
            throw CliError("--net " + mode + ": '" + net.tap +
                           "' is not an interface name (1 to 15 characters, no '/' or space)");
        }
    } else if (mode != "none") {
        throw CliError("--net " + mode + ": unknown mode: use --net tap[,NAME] or --net none");
    }
    if (!address.empty()) {
        if (net.tap.empty()) {
            throw CliError("--net-address is the tap's address: give --net tap[,NAME] too");
        }
        try {
            net.host_address = Ipv4Prefix::parse(address);
        } catch (const SystemError& e) {
            throw CliError("--net-address " + address + ": " + e.what());
        }
    }
    return net;
}

LaunchSpec boot_spec(const control::RuntimeDir& dir, const RunOptions& o) {
    check_devices();
    dir.ensure();
    std::string name = o.name;
    if (name.empty()) {
        for (unsigned n = 1;; ++n) {
            name = "vm" + std::to_string(n);
            if (!dir.in_use(name)) {
                break;
            }
        }
    }
    if (!control::RuntimeDir::valid_name(name)) {
        throw CliError("'" + name +
                       "' is not a valid VM name: use 1-64 of A-Z a-z 0-9 . _ -, "
                       "not starting with . or -");
    }
    if (dir.in_use(name)) {
        throw CliError("a VM named " + name +
                       " is already running: pick another --name or "
                       "`vmfork kill " +
                       name + "`");
    }
    const std::uint64_t mem = parse_mem_option(o.mem);
    LaunchSpec spec;
    spec.mode = LaunchSpec::Mode::Boot;
    spec.name = name;
    spec.runtime_dir = dir.path();
    spec.mem_size = mem;
    spec.cpus = o.cpus;
    if (o.linux_guest) {
        spec.platform = Platform::Linux;
        spec.linux_guest.kernel = o.kernel.empty() ? default_kernel() : o.kernel;
        check_boot_file(spec.linux_guest.kernel, "kernel", "--kernel");
        if (!o.no_initrd) {
            spec.linux_guest.initrd = o.initrd.empty() ? default_initramfs() : o.initrd;
            check_boot_file(spec.linux_guest.initrd, "initrd", "--initrd");
        }
        spec.linux_guest.cmdline = default_linux_cmdline;
        if (!o.append.empty()) {
            spec.linux_guest.cmdline += " " + o.append;
        }
        for (const auto& d : o.disks) {
            spec.disks.push_back(parse_disk_option(d));
        }
        spec.net = parse_net_options(o.net, o.net_address);
        const char* disk_dir = std::getenv("VMFORK_DISK_DIR");
        spec.disk_dir = disk_dir != nullptr && *disk_dir != '\0' ? disk_dir : "/var/tmp";
    } else {
        spec.builtin = {o.fill, o.report_every, o.pace_ms * 1000ULL};
    }
    spec.spawned_ns = monotonic_ns();
    return spec;
}

json start_vm(const control::RuntimeDir& dir, const RunOptions& o, std::chrono::seconds timeout) {
    const LaunchSpec spec = boot_spec(dir, o);
    const std::string& name = spec.name;
    auto pending = launch_vmm(vmm_exe(), spec, nullptr, -1, dir.path() + "/" + name + ".log");
    try {
        pending.wait(std::chrono::steady_clock::now() + timeout);
    } catch (const SystemError& e) {
        throw CliError("VM " + name + " did not start: " + e.what());
    }
    return {{"name", name}, {"pid", pending.pid()}};
}

void kill_vm(const control::RuntimeDir& dir, const std::string& name,
             std::chrono::milliseconds timeout) {
    const json info = call(dir, name, "info", json::object(), timeout);
    const pid_t pid = info.at("pid").get<pid_t>();
    try {
        call(dir, name, "kill", json::object(), timeout);
    } catch (const CliError&) {
        // It may have exited before replying: the lock says whether it is gone.
    }
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (dir.in_use(name)) {
        if (std::chrono::steady_clock::now() > deadline) {
            ::kill(pid, SIGKILL);
            break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    // Gone (or killed): live_names() removes what a killed process left.
    for (int i = 0; i < 250 && dir.in_use(name); ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    (void)dir.live_names();
}

std::vector<json> all_info(const control::RuntimeDir& dir) {
    std::vector<json> out;
    for (const auto& name : dir.live_names()) {
        try {
            out.push_back(call(dir, name, "info", json::object(), std::chrono::seconds(10)));
        } catch (const CliError&) {
            // Started or stopped while we looked.
        }
    }
    return out;
}

long module_pages() {
    try {
        return static_cast<long>(NetlinkStats().counters().pages);
    } catch (const SystemError&) {
        return -1;
    }
}

std::string human_bytes(double bytes) {
    const std::array<const char*, 5> units = {"B", "KiB", "MiB", "GiB", "TiB"};
    std::size_t u = 0;
    while (bytes >= 1024 && u < 4) {
        bytes /= 1024;
        ++u;
    }
    return u == 0 ? fmt::format("{:.0f} B", bytes) : fmt::format("{:.1f} {}", bytes, units[u]);
}

std::string human_pages(double pages) {
    return human_bytes(pages * page_size);
}

std::string ms(double us) {
    return us < 1000 ? fmt::format("{:.3f} ms", us / 1000) : fmt::format("{:.1f} ms", us / 1000);
}

void print_table(const std::vector<std::vector<std::string>>& rows, Align align) {
    std::vector<std::size_t> width;
    for (const auto& r : rows) {
        width.resize(std::max(width.size(), r.size()));
        for (std::size_t i = 0; i < r.size(); ++i) {
            width[i] = std::max(width[i], r[i].size());
        }
    }
    for (const auto& r : rows) {
        std::string line;
        for (std::size_t i = 0; i < r.size(); ++i) {
            if (align == Align::Numbers) {
                line += i == 0 ? fmt::format("{:<{}}", r[i], width[i])
                               : fmt::format("  {:>{}}", r[i], width[i]);
                continue;
            }
            line += r[i];
            if (i + 1 < r.size()) {
                line += std::string(width[i] - r[i].size() + 2, ' ');
            }
        }
        fmt::print("{}\n", line);
    }
}

} // namespace vmfork::cli
