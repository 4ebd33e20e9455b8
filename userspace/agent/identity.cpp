// SPDX-License-Identifier: GPL-2.0
//
// Identity: what makes a fresh clone a machine of its own, applied without a reboot.
// Every step is reported, a failed one with its errno, and the steps after it still run:
// a clone whose clock could not be stepped should still get its own machine-id.
//
// Order: hostname; the RNG reseed from host entropy *before* anything random is drawn
// (the machine-id), since right after a clone the guest's RNG state is its parent's
// until the VMGenID notify has been handled; the machine-id; the clock; the parent's TCP
// connections reset; then the hooks, which may well need all of the above (a DHCP
// client sends the hostname).

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <fcntl.h>
#include <filesystem>
#include <linux/random.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <vector>

#include "agent.h"
#include "vmfork/system_error.h"

namespace vmfork::agent {

namespace {

// The dynamic POSIX clock of a /dev/ptp* fd (linux/posix-timers.h, not exported to
// userspace headers): the clock ID is the inverted fd shifted left, with CLOCKFD (3).
constexpr clockid_t fd_to_clockid(int fd) {
    return static_cast<clockid_t>((~static_cast<unsigned>(fd) << 3U) | 3U);
}

constexpr std::size_t machine_id_bytes = 16;
constexpr std::size_t max_hook_output = 4096;

using std::chrono::duration_cast;
using std::chrono::milliseconds;
using std::chrono::nanoseconds;

StepReport ok_step(const char* step, std::string detail) {
    return StepReport{step, true, false, 0, std::move(detail)};
}

StepReport skipped_step(const char* step, std::string detail) {
    return StepReport{step, true, true, 0, std::move(detail)};
}

StepReport failed_step(const char* step, int err, const std::string& what) {
    return StepReport{step, false, false, err, what + ": " + std::strerror(err)};
}

std::string under_root(const Options& options, const std::string& path) {
    std::string root = options.root;
    while (root.size() > 1 && root.back() == '/') {
        root.pop_back();
    }
    return root == "/" ? path : root + path;
}

// Text for a JSON string: invalid UTF-8 (a hook's binary output) replaced by U+FFFD.
std::string valid_utf8(const std::string& text) {
    return Json::parse(Json(text).dump(-1, ' ', false, Json::error_handler_t::replace))
        .get<std::string>();
}

StepReport set_hostname(const std::string& name) {
    if (::sethostname(name.data(), name.size()) != 0) {
        return failed_step("hostname", errno, "sethostname '" + name + "'");
    }
    return ok_step("hostname", "hostname set to '" + name + "'");
}

// RNDADDENTROPY credits the host's bytes as entropy (they come from the host's own
// CRNG), and RNDRESEEDCRNG makes the CRNG use them now, not at its next scheduled
// reseed. Both need CAP_SYS_ADMIN.
StepReport reseed(const std::string& entropy) {
    const UniqueFd random(::open("/dev/random", O_WRONLY | O_CLOEXEC));
    if (!random) {
        return failed_step("entropy", errno, "open /dev/random");
    }
    // struct rand_pool_info ends in a flexible array: int-aligned storage for both.
    std::vector<int> storage(
        (sizeof(rand_pool_info) + entropy.size() + sizeof(int) - 1) / sizeof(int) + 1);
    auto* info = reinterpret_cast<rand_pool_info*>(storage.data());
    info->entropy_count = static_cast<int>(entropy.size() * 8);
    info->buf_size = static_cast<int>(entropy.size());
    std::memcpy(static_cast<void*>(info->buf), entropy.data(), entropy.size());
    if (::ioctl(random.get(), RNDADDENTROPY, info) != 0) {
        return failed_step("entropy", errno, "ioctl RNDADDENTROPY");
    }
    if (::ioctl(random.get(), RNDRESEEDCRNG) != 0) {
        return failed_step("entropy", errno, "ioctl RNDRESEEDCRNG");
    }
    return ok_step("entropy", "added " + std::to_string(entropy.size()) +
                                  " bytes of host entropy and reseeded the CRNG");
}

// A new machine-id where the file exists (systemd's format: a random version 4 UUID as
// 32 lower-case hex digits and a newline). The guest's random bytes are XORed with the
// host's entropy, so that two clones differ even if the reseed failed.
StepReport new_machine_id(const Options& options, const std::string& entropy) {
    const std::string path = under_root(options, "/etc/machine-id");
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {
        if (errno == ENOENT) {
            return skipped_step("machine-id", "no " + path);
        }
        return failed_step("machine-id", errno, "stat " + path);
    }
    std::array<unsigned char, machine_id_bytes> id{};
    if (::getrandom(id.data(), id.size(), 0) != static_cast<ssize_t>(id.size())) {
        return failed_step("machine-id", errno, "getrandom");
    }
    for (std::size_t i = 0; i < id.size() && i < entropy.size(); i++) {
        id[i] ^= static_cast<unsigned char>(entropy[i]);
    }
    id[6] = static_cast<unsigned char>((id[6] & 0x0fU) | 0x40U); // version 4
    id[8] = static_cast<unsigned char>((id[8] & 0x3fU) | 0x80U); // variant 1
    const std::string text =
        to_hex(std::string_view(reinterpret_cast<const char*>(id.data()), id.size())) + "\n";
    // Rewritten in place, not renamed over: /etc/machine-id is often a bind mount.
    const UniqueFd fd(::open(path.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC | O_NOFOLLOW));
    if (!fd) {
        return failed_step("machine-id", errno, "open " + path);
    }
    const ssize_t n = ::write(fd.get(), text.data(), text.size());
    if (n != static_cast<ssize_t>(text.size())) {
        return failed_step("machine-id", n < 0 ? errno : EIO, "write " + path);
    }
    return ok_step("machine-id", "new machine-id " + text.substr(0, 2 * machine_id_bytes));
}

// The host's time from ptp_kvm when the guest has it (exact, whenever it is read), else
// the time_ns the host sent, moved on by the time since the message arrived.
StepReport step_clock(std::uint64_t host_ns, Clock::time_point received, const Options& options) {
    if (!options.set_clock) {
        return skipped_step("clock", "--no-clock");
    }
    timespec target{};
    std::string source;
    const UniqueFd ptp(::open("/dev/ptp0", O_RDONLY | O_CLOEXEC));
    if (ptp && ::clock_gettime(fd_to_clockid(ptp.get()), &target) == 0) {
        source = "/dev/ptp0";
    } else {
        const auto elapsed = duration_cast<nanoseconds>(Clock::now() - received).count();
        const std::uint64_t ns = host_ns + static_cast<std::uint64_t>(elapsed);
        target.tv_sec = static_cast<time_t>(ns / 1'000'000'000U);
        target.tv_nsec = static_cast<long>(ns % 1'000'000'000U);
        source = "the host's time";
    }
    timespec before{};
    ::clock_gettime(CLOCK_REALTIME, &before);
    if (::clock_settime(CLOCK_REALTIME, &target) != 0) {
        return failed_step("clock", errno, "clock_settime from " + source);
    }
    const auto step_ms = (static_cast<std::int64_t>(target.tv_sec - before.tv_sec) * 1'000'000'000 +
                          (target.tv_nsec - before.tv_nsec)) /
                         1'000'000;
    return ok_step("clock", "stepped by " + std::to_string(step_ms) + " ms from " + source);
}

// The executable regular files of dir, in lexical (byte) order.
std::vector<std::string> list_hooks(const std::string& dir, std::error_code& error) {
    std::vector<std::string> hooks;
    std::filesystem::directory_iterator it(dir, error);
    if (error) {
        return hooks;
    }
    for (const std::filesystem::directory_entry& entry : it) {
        const std::string path = entry.path().string();
        struct stat st {};
        if (::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
            (st.st_mode & (S_IXUSR | S_IXGRP | S_IXOTH)) != 0) {
            hooks.push_back(path);
        }
    }
    std::sort(hooks.begin(), hooks.end());
    return hooks;
}

[[noreturn]] void exec_hook(const std::string& path, const Identity& identity, int null_in,
                            int out) {
    ::setpgid(0, 0);
    reset_signals_in_child();
    if (::dup2(null_in, STDIN_FILENO) < 0 || ::dup2(out, STDOUT_FILENO) < 0 ||
        ::dup2(out, STDERR_FILENO) < 0 || ::chdir("/") != 0) {
        ::_exit(126);
    }
    ::setenv("VMFORK_NAME", identity.name.c_str(), 1);
    ::setenv("VMFORK_GENERATION", std::to_string(identity.generation).c_str(), 1);
    ::setenv("VMFORK_PARENT", identity.parent.c_str(), 1);
    ::setenv("VMFORK_ID", identity.id.c_str(), 1);
    ::execl(path.c_str(), path.c_str(), static_cast<char*>(nullptr));
    const std::string text = "cannot run " + path + ": " + std::strerror(errno) + "\n";
    write_or_ignore(STDERR_FILENO, text.data(), text.size());
    ::_exit(126);
}

HookReport run_hook(const std::string& path, const Identity& identity, const Options& options) {
    HookReport report;
    report.path = path;
    Pipe out = make_pipe();
    const UniqueFd null_in(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    if (!null_in) {
        throw SystemError::from_errno("open /dev/null");
    }
    const pid_t pid = ::fork();
    if (pid < 0) {
        throw SystemError::from_errno("fork for hook " + path);
    }
    if (pid == 0) {
        exec_hook(path, identity, null_in.get(), out.write.get());
    }
    Child child(pid);
    ::setpgid(pid, pid);
    out.write.reset();
    const UniqueFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
    const auto deadline = Clock::now() + options.hook_timeout;
    std::array<char, 4096> buffer{};
    // Until the hook exits (or its time is up) and, after that, while output is pending:
    // a background process it left behind may hold the pipe forever.
    while (!child.try_reap() || out.read) {
        const auto left = std::chrono::ceil<milliseconds>(deadline - Clock::now()).count();
        if (!child.reaped() && left <= 0) {
            child.kill_group();
            report.timed_out = true;
            child.wait();
            break;
        }
        std::array<pollfd, 2> fds{{{out.read ? out.read.get() : -1, POLLIN, 0},
                                   {child.reaped() ? -1 : pidfd.get(), POLLIN, 0}}};
        int timeout = child.reaped() ? 0 : static_cast<int>(std::min<long>(left, 1000));
        if (!child.reaped() && !pidfd) {
            timeout = std::min(timeout, 100);
        }
        const int ready = ::poll(fds.data(), fds.size(), timeout);
        if (ready < 0 && errno != EINTR) {
            throw SystemError::from_errno("poll");
        }
        if (ready == 0 && child.reaped()) {
            break; // exited, and nothing more to read now
        }
        if ((fds[0].revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
            const ssize_t n = ::read(out.read.get(), buffer.data(), buffer.size());
            if (n > 0) {
                const std::size_t keep =
                    std::min(static_cast<std::size_t>(n), max_hook_output - report.output.size());
                report.output.append(buffer.data(), keep);
            } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
                out.read.reset();
            }
        }
    }
    report.status = ExitStatus::from_wait_status(child.status());
    report.ok = !report.timed_out && report.status.code == 0;
    report.output = valid_utf8(report.output);
    return report;
}

} // namespace

IdentityReply apply_identity(const Identity& identity, Clock::time_point received,
                             const Options& options) {
    const auto start = Clock::now();
    IdentityReply reply;
    reply.steps.push_back(set_hostname(identity.name));
    reply.steps.push_back(reseed(identity.entropy));
    reply.steps.push_back(new_machine_id(options, identity.entropy));
    reply.steps.push_back(step_clock(identity.time_ns, received, options));
    reply.steps.push_back(reset_connections());

    const std::string dir = under_root(options, "/etc/vmfork/clone.d");
    std::error_code error;
    const std::vector<std::string> hooks = list_hooks(dir, error);
    if (error && error != std::errc::no_such_file_or_directory) {
        reply.steps.push_back(failed_step("hooks", error.value(), "list " + dir));
    }
    for (const std::string& hook : hooks) {
        reply.hooks.push_back(run_hook(hook, identity, options));
    }

    reply.ok = std::all_of(reply.steps.begin(), reply.steps.end(),
                           [](const StepReport& s) { return s.ok; }) &&
               std::all_of(reply.hooks.begin(), reply.hooks.end(),
                           [](const HookReport& h) { return h.ok; });
    reply.ms =
        static_cast<std::uint64_t>(duration_cast<milliseconds>(Clock::now() - start).count());
    return reply;
}

} // namespace vmfork::agent
