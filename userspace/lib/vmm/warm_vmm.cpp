// SPDX-License-Identifier: GPL-2.0
// A warm VMM of the pool (pool.h): made ahead, it waits for the launch of a clone.
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <string>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vmfork/system_error.h"
#include "vmfork/vmm/launch_spec.h"
#include "vmfork/vmm/launcher.h"
#include "vmfork/vmm/pool.h"
#include "vmfork/vmm/pool_socket.h"
#include "vmfork/vmm/vmm_service.h"

namespace vmfork {

namespace {

// "launch N" with N disk layers: N, or -1.
long launch_layers(const std::string& text) {
    if (text.rfind("launch ", 0) != 0) {
        return -1;
    }
    try {
        std::size_t used = 0;
        const long n = std::stol(text.substr(7), &used);
        return used == text.size() - 7 && n >= 0 && n <= launch_fd::max_extra ? n : -1;
    } catch (const std::exception&) {
        return -1;
    }
}

} // namespace

int warm_vmm_main(const LaunchSpec& spec, int ready) {
    // Until it serves a clone, a stop signal ends it as it would any process.
    ::signal(SIGTERM, SIG_DFL);
    ::signal(SIGINT, SIG_DFL);
    const std::string pool = spec.runtime_dir + "/pool";
    const pid_t self = ::getpid();
    const std::string path = pool_socket::warm_path(pool, spec.cpus, self);
    const std::string taken = pool_socket::taken_path(pool, self);
    const std::string starting =
        pool + "/starting-" + std::to_string(spec.cpus) + "-" + std::to_string(self);
    std::unique_ptr<WarmMachine> warm;
    UniqueFd listener;
    try {
        warm = std::make_unique<WarmMachine>(WarmMachine::make(spec.cpus));
        listener = pool_socket::listen(path);
    } catch (const SystemError& e) {
        ::unlink(starting.c_str());
        report_ready_error(ready, e.error(), e.what());
        std::fprintf(stderr, "vmfork: warm VMM %d: %s\n", self, e.what());
        return 1;
    }
    ::unlink(starting.c_str());
    report_ready(ready);
    ::close(ready);
    std::fprintf(stderr, "vmfork: warm VMM %d with %u vCPUs waiting\n", self, spec.cpus);
    std::fflush(stderr);
    for (;;) {
        const UniqueFd c(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
        if (!c) {
            if (errno == EINTR || errno == ECONNABORTED) {
                continue;
            }
            std::fprintf(stderr, "vmfork: warm VMM %d: accept: %s\n", self, std::strerror(errno));
            ::unlink(path.c_str());
            ::unlink(taken.c_str());
            return 1;
        }
        std::string why;
        auto msg = pool_socket::receive(c.get(), why);
        if (!msg) {
            std::fprintf(stderr, "vmfork: warm VMM %d: ignored %s\n", self, why.c_str());
            continue;
        }
        if (msg->text == "exit" && msg->fds.empty()) {
            ::unlink(path.c_str());
            ::unlink(taken.c_str());
            std::fprintf(stderr, "vmfork: warm VMM %d: drained\n", self);
            return 0;
        }
        const long layers = launch_layers(msg->text);
        if (layers < 0 || msg->fds.size() != 5 + static_cast<std::size_t>(layers)) {
            std::fprintf(
                stderr,
                "vmfork: warm VMM %d: ignored a malformed message (%zu bytes, %zu descriptors)\n",
                self, msg->text.size(), msg->fds.size());
            continue;
        }
        // Taken: no other fork finds it now.
        ::unlink(path.c_str());
        ::unlink(taken.c_str());
        listener = UniqueFd();
        auto& fds = msg->fds;
        // The clone's log from here on.
        if (::dup2(fds[2].get(), STDOUT_FILENO) < 0 || ::dup2(fds[2].get(), STDERR_FILENO) < 0) {
            const int err = errno;
            report_ready_error(fds[0].get(), err, "dup2 the clone's log");
            return 1;
        }
        std::vector<int> extra;
        for (std::size_t i = 5; i < fds.size(); ++i) {
            extra.push_back(fds[i].release());
        }
        const int r = fds[0].release();
        const int s = fds[1].release();
        const int mem = fds[3].release();
        const int st = fds[4].release();
        return vmm_serve(r, s, mem, st, std::span<const int>(extra), std::move(warm));
    }
}

} // namespace vmfork
