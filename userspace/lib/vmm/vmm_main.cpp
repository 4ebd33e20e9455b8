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
#include "vmfork/vmm/launch_spec.h"
#include "vmfork/vmm/launcher.h"
#include "vmfork/vmm/pool.h"
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

int vmm_serve(int ready, int spec_fd, int memory_fd, int state_fd,
              std::optional<std::span<const int>> extra_fds, std::unique_ptr<WarmMachine> warm) {
    try {
        install_signals();
        auto spec = LaunchSpec::from_json(nlohmann::json::parse(read_all(spec_fd, 1 << 20)));
        ::close(spec_fd);
        if (spec.mode == LaunchSpec::Mode::Warm) {
            if (warm) {
                throw SystemError(EINVAL, "a warm VMM was handed another warm VMM's spec");
            }
            return warm_vmm_main(spec, ready);
        }
        if (extra_fds) {
            // The descriptors came over a socket: the spec's numbers are launch_fd's.
            for (auto& d : spec.disks) {
                for (int& fd : d.layer_fds) {
                    const auto i = static_cast<std::size_t>(fd - launch_fd::first_extra);
                    if (fd < launch_fd::first_extra || i >= extra_fds->size()) {
                        throw SystemError(EINVAL, "the launch names disk layer descriptor " +
                                                      std::to_string(fd) + ", not passed");
                    }
                    fd = (*extra_fds)[i];
                }
            }
        }
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
            memory.emplace(MemoryObject::adopt(UniqueFd(memory_fd)));
            const std::string blob = read_all(state_fd, VmState::max_serialized_size);
            state.emplace(VmState::parse(
                std::span(reinterpret_cast<const std::uint8_t*>(blob.data()), blob.size())));
            ::close(state_fd);
        }
        VmmService service(spec, std::move(memory), std::move(state), std::move(warm));
        service.listen();
        running_service.store(&service);
        report_ready(ready);
        ::close(ready);
        std::fprintf(stderr, "vmfork: VM %s serving\n", service.name().c_str());
        service.run();
        running_service.store(nullptr);
        std::fprintf(stderr, "vmfork: VM %s stopped\n", service.name().c_str());
        return 0;
    } catch (const SystemError& e) {
        running_service.store(nullptr);
        report_ready_error(ready, e.error(), e.what());
        std::fprintf(stderr, "vmfork: %s\n", e.what());
    } catch (const std::exception& e) {
        running_service.store(nullptr);
        report_ready_error(ready, EIO, e.what());
        std::fprintf(stderr, "vmfork: %s\n", e.what());
    }
    return 1;
}

int vmm_main() {
    return vmm_serve(launch_fd::ready, launch_fd::spec, launch_fd::memory, launch_fd::state,
                     std::nullopt, nullptr);
}

int vmm_foreground(const LaunchSpec& spec, const std::function<void(const VmmService&)>& on_ready) {
    install_signals();
    VmmService service(spec, std::nullopt, std::nullopt, nullptr);
    service.listen();
    running_service.store(&service);
    on_ready(service);
    service.run();
    running_service.store(nullptr);
    return 0;
}

} // namespace vmfork
