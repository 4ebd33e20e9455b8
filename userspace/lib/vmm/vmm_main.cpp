// SPDX-License-Identifier: GPL-2.0
// vmfork-vmm NAME: the VMM process of one VM (started by launch_vmm(), never by hand).
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <sched.h>
#include <string>
#include <sys/stat.h>
#include <unistd.h>

#include "vmfork/memory_object.h"
#include "vmfork/system_error.h"
#include "vmfork/vmm/launcher.h"
#include "vmfork/vmm/vmm_service.h"

namespace vmfork {

namespace {

std::atomic<VmmService*> running_service{nullptr};

void on_stop_signal(int /*sig*/) {
    if (VmmService* s = running_service.load()) {
        s->stop();
    }
}

std::string read_all(int fd, std::size_t max) {
    struct stat st {};
    if (::fstat(fd, &st) < 0) {
        throw SystemError::from_errno("fstat launch descriptor " + std::to_string(fd));
    }
    if (static_cast<std::size_t>(st.st_size) > max) {
        throw SystemError(EMSGSIZE, "launch descriptor " + std::to_string(fd) + " is too large");
    }
    std::string data(static_cast<std::size_t>(st.st_size), '\0');
    std::size_t done = 0;
    while (done < data.size()) {
        const ssize_t n =
            ::pread(fd, data.data() + done, data.size() - done, static_cast<off_t>(done));
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            throw SystemError::from_errno("read launch descriptor " + std::to_string(fd));
        }
        done += static_cast<std::size_t>(n);
    }
    return data;
}

void tell(int fd, const std::string& line) {
    if (fd >= 0) {
        (void)!::write(fd, line.data(), line.size());
    }
}

void install_signals() {
    struct sigaction sa {};
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    ::sigaction(SIGTERM, &sa, nullptr);
    ::sigaction(SIGINT, &sa, nullptr);
    ::signal(SIGPIPE, SIG_IGN);
    ::signal(SIGHUP, SIG_IGN);
    ::signal(SIGCHLD, SIG_IGN); // clones are reaped by the kernel
}

} // namespace

int vmm_main() {
    const int ready = launch_fd::ready;
    try {
        install_signals();
        const auto spec =
            LaunchSpec::from_json(nlohmann::json::parse(read_all(launch_fd::spec, 1 << 20)));
        if (spec.own_netns && ::unshare(CLONE_NEWNET) < 0) {
            // Before any thread: a namespace is per thread, and the VMM's threads (and
            // vhost's) inherit this one.
            throw SystemError::from_errno("a network namespace for " + spec.name +
                                          "'s tap (a clone of a VM with a "
                                          "network gets one of its own: that needs CAP_SYS_ADMIN)");
        }
        std::optional<MemoryObject> memory;
        std::optional<VmState> state;
        if (spec.mode == LaunchSpec::Mode::Clone) {
            memory.emplace(MemoryObject::adopt(UniqueFd(launch_fd::memory)));
            const std::string blob = read_all(launch_fd::state, VmState::max_serialized_size);
            state.emplace(VmState::parse(
                std::span(reinterpret_cast<const std::uint8_t*>(blob.data()), blob.size())));
            ::close(launch_fd::state);
        }
        ::close(launch_fd::spec);
        VmmService service(spec, std::move(memory), std::move(state));
        service.listen();
        running_service.store(&service);
        tell(ready, "ok\n");
        ::close(ready);
        std::fprintf(stderr, "vmfork: VM %s serving\n", service.name().c_str());
        service.run();
        running_service.store(nullptr);
        std::fprintf(stderr, "vmfork: VM %s stopped\n", service.name().c_str());
        return 0;
    } catch (const SystemError& e) {
        running_service.store(nullptr);
        tell(ready, "error " + std::to_string(e.error()) + " " + e.what() + "\n");
        std::fprintf(stderr, "vmfork: %s\n", e.what());
    } catch (const std::exception& e) {
        running_service.store(nullptr);
        tell(ready, "error " + std::to_string(EIO) + " " + e.what() + "\n");
        std::fprintf(stderr, "vmfork: %s\n", e.what());
    }
    return 1;
}

int vmm_foreground(const LaunchSpec& spec, const std::function<void(const VmmService&)>& on_ready) {
    install_signals();
    VmmService service(spec, std::nullopt, std::nullopt);
    service.listen();
    running_service.store(&service);
    on_ready(service);
    service.run();
    running_service.store(nullptr);
    return 0;
}

} // namespace vmfork
