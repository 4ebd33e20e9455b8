// SPDX-License-Identifier: GPL-2.0
// vmfork run, fork, ls, reset, kill, console.
#include <array>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <termios.h>
#include <thread>
#include <unistd.h>

#include "cli.h"
#include "vmfork/system_error.h"
#include "vmfork/vmm/vmm_service.h"

namespace vmfork::cli {

namespace {

std::uint64_t page_bytes(const json& info, const char* key) {
    return info.at("memory").at(key).get<std::uint64_t>() * page_size;
}

std::string shared_percent(const json& info) {
    const auto& m = info.at("memory");
    const auto resident = m.at("resident_pages").get<double>();
    if (resident == 0) {
        return "-";
    }
    return fmt::format("{:.1f}%", 100.0 * m.at("shared_pages").get<double>() / resident);
}

std::string dash(const std::string& s) {
    return s.empty() ? "-" : s;
}

} // namespace

int cmd_run(const Globals& g, const RunOptions& o) {
    if (!o.foreground) {
        const auto dir = runtime_dir();
        const json vm = start_vm(dir, o, g.timeout);
        const std::string name = vm.at("name").get<std::string>();
        fmt::print("{}: running (pid {}); console: vmfork console {}{}; fork: vmfork fork {}\n",
                   name, vm.at("pid").get<int>(), o.linux_guest ? "-i " : "", name, name);
        return 0;
    }
    return vmm_foreground(boot_spec(runtime_dir(), o), [&](const VmmService& s) {
        fmt::print("{}: running in the foreground (pid {}); Ctrl-C stops it\n", s.name(),
                   ::getpid());
        std::fflush(stdout);
    });
}

namespace {

// Waits until the customization of each started clone in r["clones"] is over, or its
// VM stopped (a vCPU's error: nothing will answer); adds "customize" (the VMM's
// report) to each. False if any did not end "done".
bool wait_ready(const Globals& g, const control::RuntimeDir& dir, json& r) {
    bool all_ok = true;
    const auto deadline = std::chrono::steady_clock::now() + g.timeout;
    for (auto& c : r.at("clones")) {
        if (c.contains("error")) {
            continue;
        }
        const auto name = c.at("name").get<std::string>();
        json st;
        for (;;) {
            const json info = call(dir, name, "info", json::object(), g.timeout);
            st = info.value("customize", json());
            const auto state = st.value("state", std::string("none"));
            if (state != "pending") {
                break;
            }
            if (const auto why = stopped_vm(info)) {
                st["error"] = "the VM is " + *why;
                break;
            }
            if (std::chrono::steady_clock::now() >= deadline) {
                st["error"] = "still pending after --timeout";
                break;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
        if (st.value("state", std::string()) != "done") {
            all_ok = false;
        }
        c["customize"] = st;
    }
    return all_ok;
}

} // namespace

int cmd_fork(const Globals& g, const ForkOptions& o) {
    const auto dir = runtime_dir();
    json args = {{"count", o.count}, {"template", o.make_template}};
    if (o.no_customize) {
        args["customize"] = false;
    }
    if (o.keep_generation) {
        args["new_vm_generation"] = false;
    }
    if (!o.name_prefix.empty()) {
        args["name_prefix"] = o.name_prefix;
    }
    json r = call(dir, o.name, "fork", args, g.timeout);
    const bool ready = !o.wait_ready || wait_ready(g, dir, r);
    if (o.json) {
        fmt::print("{}\n", r.dump(2));
        return r.at("all_ok").get<bool>() && ready ? 0 : 1;
    }
    int status = ready ? 0 : 1;
    for (const auto& c : r.at("clones")) {
        if (c.contains("error")) {
            fmt::print(stderr, "vmfork: clone {} failed: {}\n", c.at("name").get<std::string>(),
                       c.at("error").get<std::string>());
            status = 1;
            continue;
        }
        fmt::print("{}  pid {}  VM_FORK {}  running after {}{}\n", c.at("name").get<std::string>(),
                   c.at("pid").get<int>(), ms(c.at("fork_us").get<double>()),
                   ms(c.at("ready_us").get<double>()), c.value("warm", false) ? " (warm VMM)" : "");
        if (c.contains("customize")) {
            const json& st = c.at("customize");
            const auto state = st.value("state", std::string("none"));
            if (state == "done") {
                fmt::print("{}  customized after {} ms (agent {} ms)\n",
                           c.at("name").get<std::string>(), st.value("ms", 0),
                           st.value("agent_ms", 0));
            } else {
                fmt::print(stderr, "vmfork: clone {} not customized ({}): {}\n",
                           c.at("name").get<std::string>(), state,
                           state == "none" ? std::string("it has no agent channel (a Linux "
                                                         "guest with vsock has one)")
                                           : st.value("error", std::string()));
            }
        }
    }
    if (const json pool = r.value("pool", json::object()); pool.value("target", 0U) > 0) {
        const auto taken = pool.value("taken", 0U);
        const auto clones = r.at("clones").size();
        if (taken < clones) {
            fmt::print(stderr,
                       "vmfork: note: the warm pool had {} VMM{} left for {} clone{}: the others "
                       "started as new processes (`vmfork pool resize` keeps more)\n",
                       taken, taken == 1 ? "" : "s", clones, clones == 1 ? "" : "s");
        }
    }
    if (r.at("template").get<bool>()) {
        fmt::print("{} is a template: frozen for good, fork it as often as you like\n", o.name);
    } else {
        fmt::print("{} paused for {}\n", o.name, ms(r.at("pause_us").get<double>()));
    }
    return status;
}

namespace {

// Customization of a Linux VM: yes, ... (pending), FAILED, no-agent; "-" for none.
std::string ready_column(const json& v) {
    const auto state = v.value("customize", json::object()).value("state", std::string("none"));
    if (state == "done") {
        return "yes";
    }
    if (state == "pending") {
        return "...";
    }
    if (state == "failed") {
        return "FAILED";
    }
    return state == "none" ? "-" : state;
}

} // namespace

int cmd_ls(const Globals& /*g*/, bool json_out) {
    const auto vms = all_info(runtime_dir());
    if (json_out) {
        fmt::print("{}\n", json(vms).dump(2));
        return 0;
    }
    std::vector<std::vector<std::string>> rows = {
        {"NAME", "PID", "GUEST", "PARENT", "GEN", "STATE", "READY", "MEMORY", "PRIVATE", "SHARED"}};
    for (const auto& v : vms) {
        rows.push_back(
            {v.at("name").get<std::string>(), std::to_string(v.at("pid").get<int>()),
             v.value("guest", std::string("builtin")), dash(v.at("parent").get<std::string>()),
             std::to_string(v.at("generation").get<std::uint64_t>()),
             v.at("state").get<std::string>(), ready_column(v),
             human_bytes(v.at("mem_size").get<double>()),
             human_bytes(static_cast<double>(page_bytes(v, "private_pages"))), shared_percent(v)});
    }
    if (vms.empty()) {
        fmt::print("no VMs (start one with `vmfork run`)\n");
        return 0;
    }
    print_table(rows);
    return 0;
}

int cmd_reset(const Globals& g, const std::string& name) {
    const json r = call(runtime_dir(), name, "reset", json::object(), g.timeout);
    fmt::print("{}: back at its fork point in {} ({} pages dropped)\n", name,
               ms(r.at("reset_us").get<double>()), r.at("dropped_pages").get<std::uint64_t>());
    return 0;
}

int cmd_kill(const Globals& g, const std::vector<std::string>& names, bool all) {
    const auto dir = runtime_dir();
    std::vector<std::string> targets = names;
    if (all) {
        if (!names.empty()) {
            throw CliError("give VM names or --all, not both");
        }
        targets = dir.live_names();
    } else if (names.empty()) {
        throw CliError("which VM? give one or more names, or --all (see `vmfork ls`)");
    }
    int status = 0;
    for (const auto& name : targets) {
        try {
            kill_vm(dir, name, std::chrono::duration_cast<std::chrono::milliseconds>(g.timeout));
            fmt::print("{}: killed\n", name);
        } catch (const CliError& e) {
            fmt::print(stderr, "vmfork: {}\n", e.what());
            status = 1;
        }
    }
    return status;
}

namespace {

// The terminal in raw mode for as long as this lives (console -i on a terminal).
class RawTerminal {
public:
    explicit RawTerminal(int fd) : fd_(fd) {
        if (::tcgetattr(fd_, &saved_) < 0) {
            throw SystemError::from_errno("tcgetattr");
        }
        termios raw = saved_;
        ::cfmakeraw(&raw);
        if (::tcsetattr(fd_, TCSANOW, &raw) < 0) {
            throw SystemError::from_errno("tcsetattr");
        }
    }
    ~RawTerminal() { ::tcsetattr(fd_, TCSANOW, &saved_); }
    RawTerminal(const RawTerminal&) = delete;
    RawTerminal& operator=(const RawTerminal&) = delete;
    RawTerminal(RawTerminal&&) = delete;
    RawTerminal& operator=(RawTerminal&&) = delete;

private:
    int fd_;
    termios saved_{};
};

constexpr char detach_key = 0x1d; // Ctrl-]
constexpr std::size_t input_chunk = 4096;

// Copies what the console file has beyond fd's offset to stdout.
void drain(int fd) {
    std::array<char, 4096> buf{};
    for (;;) {
        const ssize_t n = ::read(fd, buf.data(), buf.size());
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return;
        }
        (void)!::write(STDOUT_FILENO, buf.data(), static_cast<std::size_t>(n));
    }
}

void send_input(const control::RuntimeDir& dir, const std::string& name, std::string_view bytes,
                std::chrono::milliseconds timeout) {
    while (!bytes.empty()) {
        const auto part = bytes.substr(0, input_chunk);
        call(dir, name, "input", {{"data", control::to_hex(part)}}, timeout);
        bytes.remove_prefix(part.size());
    }
}

int console_interactive(const Globals& g, const control::RuntimeDir& dir, const std::string& name,
                        int console_fd) {
    const auto timeout = std::chrono::duration_cast<std::chrono::milliseconds>(g.timeout);
    const json info = call(dir, name, "info", json::object(), timeout);
    if (info.value("guest", std::string()) != "linux") {
        throw CliError(name + " runs the built-in guest: its console takes no input (only a "
                              "Linux guest's does)");
    }
    std::array<char, input_chunk> buf{};
    if (::isatty(STDIN_FILENO) == 0) {
        // Scripted: send stdin as it comes, return at EOF.
        for (;;) {
            const ssize_t n = ::read(STDIN_FILENO, buf.data(), buf.size());
            if (n < 0 && errno == EINTR) {
                continue;
            }
            if (n < 0) {
                throw CliError(std::string("read stdin: ") + std::strerror(errno));
            }
            if (n == 0) {
                return 0;
            }
            send_input(dir, name, {buf.data(), static_cast<std::size_t>(n)}, timeout);
        }
    }
    ::lseek(console_fd, 0, SEEK_END);
    fmt::print(stderr, "vmfork: attached to {}'s console; Ctrl-] detaches\r\n", name);
    const RawTerminal raw(STDIN_FILENO);
    for (;;) {
        drain(console_fd);
        if (!dir.in_use(name)) {
            fmt::print(stderr, "\r\nvmfork: {} stopped\r\n", name);
            return 0;
        }
        pollfd p{STDIN_FILENO, POLLIN, 0};
        const int r = ::poll(&p, 1, 50);
        if (r <= 0) {
            continue;
        }
        const ssize_t n = ::read(STDIN_FILENO, buf.data(), buf.size());
        if (n <= 0) {
            return 0;
        }
        std::string_view in(buf.data(), static_cast<std::size_t>(n));
        const auto stop = in.find(detach_key);
        send_input(dir, name, in.substr(0, stop), timeout);
        if (stop != std::string_view::npos) {
            drain(console_fd);
            fmt::print(stderr, "\r\nvmfork: detached from {}\r\n", name);
            return 0;
        }
    }
}

} // namespace

int cmd_console(const Globals& g, const ConsoleOptions& o) {
    const auto dir = runtime_dir();
    const std::string& name = o.name;
    if (!control::RuntimeDir::valid_name(name)) {
        throw CliError("'" + name + "' is not a VM name: see `vmfork ls`");
    }
    const std::string path = dir.console_path(name);
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) {
        throw CliError("no console of a VM named " + name + " (" + path + "): see `vmfork ls`");
    }
    if (o.interactive) {
        return console_interactive(g, dir, name, fd.get());
    }
    for (;;) {
        drain(fd.get());
        if (!o.follow || !dir.in_use(name)) {
            break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    drain(fd.get());
    return 0;
}

} // namespace vmfork::cli
