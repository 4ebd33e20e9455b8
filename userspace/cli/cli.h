// SPDX-License-Identifier: GPL-2.0
#pragma once

// The `vmfork` command line: one function per command, errors as CliError.

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <optional>

#include "vmfork/control/runtime_dir.h"
#include "vmfork/control/server.h"
#include "vmfork/system_error.h"
#include "vmfork/vmm/launch_spec.h"

namespace vmfork::cli {

using nlohmann::json;

// A failure to show the user as "vmfork: <what>" and exit with status 1.
class CliError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

struct RunOptions {
    std::string name;
    std::string mem = "256M";
    unsigned cpus = 1;
    unsigned fill = 50;
    unsigned pace_ms = 20;
    std::uint64_t report_every = 10000;
    bool foreground = false;
    // A Linux guest (--linux, or --kernel given): the built-in guest's options above
    // (fill, pace, report_every) do not apply.
    bool linux_guest = false;
    std::string kernel; // default: /boot/vmlinuz-$(uname -r)
    std::string initrd; // default: the build's initramfs (default_initramfs())
    std::string append; // added to default_linux_cmdline
    bool no_initrd = false;
    std::vector<std::string> disks; // PATH[,ro], the guest's vda, vdb, ...
    std::string net = "none";       // tap[,NAME] or none
    std::string net_address;        // the tap's (host side) ADDR/PREFIX
};

// What every Linux guest's command line starts with: the console on the 16550A, reboot
// through the i8042 (the VMM stops the VM), no mouse port.
inline constexpr const char* default_linux_cmdline =
    "console=ttyS0 reboot=k panic=-1 i8042.noaux i8042.nomux i8042.dumbkbd";
// /boot/vmlinuz-<running kernel's release>.
std::string default_kernel();
// The initramfs the build makes (busybox, vmfork-workload, a shell on ttyS0), found at
// ../share/vmfork/linux-initramfs.cpio.gz from the vmfork binary.
std::string default_initramfs();

struct ForkOptions {
    std::string name;
    unsigned count = 1;
    bool make_template = false;
    std::string name_prefix;
    bool json = false;
    bool wait_ready = false; // until each clone's agent applied its identity
    bool no_customize = false;
    bool keep_generation = false; // tests only: the clones keep the VM generation ID
};

struct StatsOptions {
    std::string name; // empty: every object
    bool json = false;
    unsigned watch_s = 0; // 0: once
    unsigned count = 0;   // with watch_s: samples to print, 0: until Ctrl-C
};

struct EventsOptions {
    bool json = false;
    std::uint64_t count = 0; // events to print, 0: until Ctrl-C
};

struct DemoOptions {
    std::string mem = "256M";
    unsigned clones = 32;
    unsigned fill = 90;
    unsigned cpus = 1;
    bool keep = false;
};

struct DemoLinuxOptions {
    std::string mem = "256M";
    unsigned clones = 16;
    unsigned cpus = 1;
    unsigned workload_mib = 64;
    unsigned period_ms = 1000;
    std::string kernel; // default: default_kernel()
    bool keep = false;
};

// Global options.
struct Globals {
    std::chrono::seconds timeout{120};
};

int cmd_run(const Globals& g, const RunOptions& o);
int cmd_fork(const Globals& g, const ForkOptions& o);
int cmd_ls(const Globals& g, bool json_out);
int cmd_stats(const Globals& g, const StatsOptions& o);
int cmd_events(const EventsOptions& o);
int cmd_reset(const Globals& g, const std::string& name);
int cmd_kill(const Globals& g, const std::vector<std::string>& names, bool all);
struct ConsoleOptions {
    std::string name;
    bool follow = false;
    bool interactive = false;
};

int cmd_console(const Globals& g, const ConsoleOptions& o);

struct PoolOptions {
    enum class Action { Show, Resize, Drain };
    Action action = Action::Show;
    unsigned size = 0;            // Resize
    std::optional<unsigned> cpus; // Resize (default 1), Drain (default: every count)
    bool json = false;            // Show
};

// The warm pool (vmm/pool.h): show it, resize it (starting or stopping warm VMMs and
// waiting for them), or drain it.
int cmd_pool(const Globals& g, const PoolOptions& o);

struct ExecOptions {
    std::string name;
    std::vector<std::string> argv;
    bool interactive = false; // stdin goes to the command
    unsigned timeout_s = 0;   // 0: the command may run for as long as it takes
};

// Returns the command's status as a shell does (128 + N for signal N; 127: not found).
int cmd_exec(const Globals& g, const ExecOptions& o);
// A connection to the agent of VM name (exec.cpp); retries refused connections for
// up to timeout. Throws CliError saying why there is none.
UniqueFd connect_agent(const Globals& g, const std::string& name, std::chrono::seconds timeout);
int cmd_demo(const Globals& g, const DemoOptions& o);
int cmd_demo_linux(const Globals& g, const DemoLinuxOptions& o);

// --- shared by the commands (common.cpp) ---

control::RuntimeDir runtime_dir();
// Throws CliError with what to do when /dev/kvm or /dev/vmfork is missing or unusable.
void check_devices();
// Throws the CliError for a missing generic netlink family: the module is not loaded.
[[noreturn]] void throw_module_not_loaded();

// A client of the module's generic netlink family (NetlinkStats, NetlinkEvents); the
// family missing (ENOENT) becomes the CliError that says to load the module.
template <class Client> Client open_netlink() {
    try {
        return Client{};
    } catch (const SystemError& e) {
        if (e.error() == ENOENT) {
            throw_module_not_loaded();
        }
        throw;
    }
}
// Connects to a running VM; CliError "no VM named X: see `vmfork ls`" if there is none.
control::Client connect(const control::RuntimeDir& dir, const std::string& name);
// One request to a VM, errors as CliError naming the VM.
json call(const control::RuntimeDir& dir, const std::string& name, const std::string& op,
          const json& args, std::chrono::milliseconds timeout);
// For a VM's "info" reply: "error; vCPU 0: ..." (its state and vCPU errors) if nothing
// runs in it any more (state error or stopped), else nothing.
std::optional<std::string> stopped_vm(const json& info);
// The launch spec of a booted VM for o: checks the devices, the name (default: the
// first free vm1, vm2, ...), --mem and a Linux guest's files; CliError says what to fix.
LaunchSpec boot_spec(const control::RuntimeDir& dir, const RunOptions& o);
// A --mem value in bytes; CliError naming the option if it does not parse.
std::uint64_t parse_mem_option(const std::string& text);
// Starts a VM process (as `run` does, in the background) and waits until it serves.
json start_vm(const control::RuntimeDir& dir, const RunOptions& o, std::chrono::seconds timeout);
// Asks name to exit and waits until its process is gone (SIGKILL after timeout).
void kill_vm(const control::RuntimeDir& dir, const std::string& name,
             std::chrono::milliseconds timeout);
// Info of every live VM (those that do not answer are skipped).
std::vector<json> all_info(const control::RuntimeDir& dir);
// Pages the module holds in all (netlink GET_COUNTERS), or -1 if unreadable.
long module_pages();

// The module's page size: every page count it reports is in these.
inline constexpr std::uint64_t page_size = 4096;

std::string human_bytes(double bytes);
std::string human_pages(double pages); // human_bytes(pages * page_size)
std::string ms(double us);             // "12.3 ms" from microseconds
// Prints rows as columns (the first row is the header): all left-aligned, or (Numbers)
// the first left-aligned and the others right-aligned.
enum class Align { Left, Numbers };
void print_table(const std::vector<std::vector<std::string>>& rows, Align align = Align::Left);

} // namespace vmfork::cli
