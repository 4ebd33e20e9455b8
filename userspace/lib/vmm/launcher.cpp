// SPDX-License-Identifier: GPL-2.0
#include "vmfork/vmm/launcher.h"

#include <array>
#include <cerrno>
#include <csignal>
#include <ctime>
#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/mman.h>
#include <unistd.h>

#include "vmfork/memory_object.h"
#include "vmfork/system_error.h"
#include "vmfork/vmm/launch_spec.h"

extern char** environ;

namespace vmfork {

std::uint64_t monotonic_ns() {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1000000000ULL +
           static_cast<std::uint64_t>(ts.tv_nsec);
}

std::string vmm_exe() {
    const std::string self = self_exe();
    return self.substr(0, self.rfind('/') + 1) + "vmfork-vmm";
}

std::string self_exe() {
    std::array<char, 4096> buf{};
    const ssize_t n = ::readlink("/proc/self/exe", buf.data(), buf.size() - 1);
    if (n < 0) {
        throw SystemError::from_errno("readlink /proc/self/exe");
    }
    return {buf.data(), static_cast<std::size_t>(n)};
}

UniqueFd make_memfd(const std::string& name, const void* data, std::size_t size) {
    UniqueFd fd(::memfd_create(name.c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING));
    if (!fd) {
        throw SystemError::from_errno("memfd_create " + name);
    }
    const auto* p = static_cast<const char*>(data);
    std::size_t done = 0;
    while (done < size) {
        const ssize_t n = ::write(fd.get(), p + done, size - done);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            throw SystemError::from_errno("write " + name);
        }
        done += static_cast<std::size_t>(n);
    }
    if (::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL) <
        0) {
        throw SystemError::from_errno("seal " + name);
    }
    return fd;
}

namespace {

// Above every fd the file actions target, so no dup2 overwrites a later source.
UniqueFd high_dup(int fd) {
    UniqueFd d(::fcntl(fd, F_DUPFD_CLOEXEC, launch_fd::first_extra + launch_fd::max_extra));
    if (!d) {
        throw SystemError::from_errno("fcntl F_DUPFD_CLOEXEC");
    }
    return d;
}

class SpawnActions {
public:
    SpawnActions() {
        if (int e = ::posix_spawn_file_actions_init(&actions_); e != 0) {
            throw SystemError(e, "posix_spawn_file_actions_init");
        }
    }
    ~SpawnActions() { ::posix_spawn_file_actions_destroy(&actions_); }
    SpawnActions(const SpawnActions&) = delete;
    SpawnActions& operator=(const SpawnActions&) = delete;
    SpawnActions(SpawnActions&&) = delete;
    SpawnActions& operator=(SpawnActions&&) = delete;

    void dup2(int from, int to) {
        if (int e = ::posix_spawn_file_actions_adddup2(&actions_, from, to); e != 0) {
            throw SystemError(e, "posix_spawn_file_actions_adddup2");
        }
    }
    void open(int fd, const std::string& path, int flags, mode_t mode) {
        if (int e = ::posix_spawn_file_actions_addopen(&actions_, fd, path.c_str(), flags, mode);
            e != 0) {
            throw SystemError(e, "posix_spawn_file_actions_addopen " + path);
        }
    }
    [[nodiscard]] const posix_spawn_file_actions_t* get() const { return &actions_; }

private:
    posix_spawn_file_actions_t actions_{};
};

class SpawnAttr {
public:
    SpawnAttr() {
        if (int e = ::posix_spawnattr_init(&attr_); e != 0) {
            throw SystemError(e, "posix_spawnattr_init");
        }
        sigset_t none;
        sigset_t defaults;
        sigemptyset(&none);
        sigemptyset(&defaults);
        for (int sig : {SIGCHLD, SIGPIPE, SIGINT, SIGTERM, SIGHUP, SIGUSR1}) {
            sigaddset(&defaults, sig);
        }
        ::posix_spawnattr_setsigmask(&attr_, &none);
        ::posix_spawnattr_setsigdefault(&attr_, &defaults);
        ::posix_spawnattr_setflags(&attr_, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK |
                                               POSIX_SPAWN_SETSIGDEF);
    }
    ~SpawnAttr() { ::posix_spawnattr_destroy(&attr_); }
    SpawnAttr(const SpawnAttr&) = delete;
    SpawnAttr& operator=(const SpawnAttr&) = delete;
    SpawnAttr(SpawnAttr&&) = delete;
    SpawnAttr& operator=(SpawnAttr&&) = delete;
    [[nodiscard]] const posix_spawnattr_t* get() const { return &attr_; }

private:
    posix_spawnattr_t attr_{};
};

} // namespace

PendingVmm launch_vmm(const std::string& exe, const LaunchSpec& spec, const MemoryObject* memory,
                      int state_fd, const std::string& log_path, std::span<const int> extra_fds) {
    if (extra_fds.size() > static_cast<std::size_t>(launch_fd::max_extra)) {
        throw SystemError(EMFILE, "a VMM takes at most " + std::to_string(launch_fd::max_extra) +
                                      " disk layers (a chain this deep: fork a VM that has "
                                      "written less)");
    }
    std::array<int, 2> pipe_fds{};
    if (::pipe2(pipe_fds.data(), O_CLOEXEC) < 0) {
        throw SystemError::from_errno("pipe2");
    }
    UniqueFd ready_r(pipe_fds[0]);
    UniqueFd ready_w(pipe_fds[1]);
    const std::string text = spec.to_json().dump();
    UniqueFd spec_fd = make_memfd("vmfork-spec", text.data(), text.size());

    std::vector<UniqueFd> keep; // high copies, closed here after the spawn
    SpawnActions actions;
    actions.open(0, "/dev/null", O_RDONLY, 0);
    // A warm VMM's log is the pool's, shared by all of them.
    actions.open(1, log_path,
                 O_WRONLY | O_CREAT | (spec.mode == LaunchSpec::Mode::Warm ? O_APPEND : O_TRUNC),
                 0600);
    actions.dup2(1, 2);
    keep.push_back(high_dup(ready_w.get()));
    actions.dup2(keep.back().get(), launch_fd::ready);
    keep.push_back(high_dup(spec_fd.get()));
    actions.dup2(keep.back().get(), launch_fd::spec);
    if (memory) {
        keep.push_back(high_dup(memory->fd()));
        actions.dup2(keep.back().get(), launch_fd::memory);
        keep.push_back(high_dup(state_fd));
        actions.dup2(keep.back().get(), launch_fd::state);
    }
    for (std::size_t i = 0; i < extra_fds.size(); ++i) {
        keep.push_back(high_dup(extra_fds[i]));
        actions.dup2(keep.back().get(), launch_fd::first_extra + static_cast<int>(i));
    }
    const SpawnAttr attr;
    const std::string& name = spec.name;
    std::string argv0 = "vmfork-vmm";
    std::string argv1 = name; // shows in ps
    std::array<char*, 3> argv = {argv0.data(), argv1.data(), nullptr};
    pid_t pid = -1;
    if (int e = ::posix_spawn(&pid, exe.c_str(), actions.get(), attr.get(), argv.data(), environ);
        e != 0) {
        throw SystemError(e, "cannot start the VMM process " + exe);
    }
    return {pid, std::move(ready_r), name};
}

namespace {

void write_line(int fd, const std::string& line) {
    if (fd >= 0) {
        (void)!::write(fd, line.data(), line.size());
    }
}

} // namespace

void report_ready(int fd) {
    write_line(fd, "ok\n");
}

void report_ready_error(int fd, int err, const std::string& what) {
    write_line(fd, "error " + std::to_string(err) + " " + what + "\n");
}

void PendingVmm::wait(std::chrono::steady_clock::time_point deadline) {
    std::string line;
    std::array<char, 512> buf{};
    for (;;) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) {
            throw SystemError(ETIMEDOUT, "VM " + name_ + " (pid " + std::to_string(pid_) +
                                             ") did not start in time");
        }
        pollfd p{ready_.get(), POLLIN, 0};
        const int r = ::poll(&p, 1, static_cast<int>(left.count()));
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0) {
            throw SystemError::from_errno("poll");
        }
        if (r == 0) {
            continue;
        }
        const ssize_t n = ::read(ready_.get(), buf.data(), buf.size());
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            throw SystemError::from_errno("read the VMM's ready pipe");
        }
        if (n == 0) {
            break;
        }
        line.append(buf.data(), static_cast<std::size_t>(n));
        if (line.find('\n') != std::string::npos) {
            break;
        }
    }
    line = line.substr(0, line.find('\n'));
    if (line == "ok") {
        return;
    }
    if (line.rfind("error ", 0) == 0) {
        const std::string rest = line.substr(6);
        const auto sp = rest.find(' ');
        int err = EIO;
        try {
            err = std::stoi(rest.substr(0, sp));
        } catch (const std::exception&) {
            err = EIO;
        }
        throw SystemError::relayed(err, sp == std::string::npos ? rest : rest.substr(sp + 1));
    }
    throw SystemError(EIO, "VM " + name_ + " (pid " + std::to_string(pid_) +
                               ") exited before it was ready: see its log");
}

} // namespace vmfork
