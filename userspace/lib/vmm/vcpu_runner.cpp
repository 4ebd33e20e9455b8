// SPDX-License-Identifier: GPL-2.0
#include "vmfork/vmm/vcpu_runner.h"

#include <array>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <pthread.h>
#include <span>

#include "vmfork/kvm.h"
#include "vmfork/system_error.h"
#include "vmfork/vmm/devices.h"

namespace vmfork {

namespace {

constexpr int kick_signal = SIGUSR1;

void install_kick_handler() {
    static std::once_flag once;
    std::call_once(once, [] {
        struct sigaction sa {};
        sa.sa_handler = [](int) {}; // only to interrupt KVM_RUN: no SA_RESTART
        sigemptyset(&sa.sa_mask);
        if (::sigaction(kick_signal, &sa, nullptr) < 0) {
            throw SystemError::from_errno("sigaction(SIGUSR1) for the vCPU kick");
        }
    });
}

std::string hex(std::uint64_t v) {
    std::array<char, 24> buf{};
    std::snprintf(buf.data(), buf.size(), "%#llx", static_cast<unsigned long long>(v));
    return buf.data();
}

} // namespace

const char* to_string(VcpuLifecycle state) {
    switch (state) {
    case VcpuLifecycle::Created:
        return "created";
    case VcpuLifecycle::Running:
        return "running";
    case VcpuLifecycle::Paused:
        return "paused";
    case VcpuLifecycle::Exited:
        return "exited";
    }
    return "?";
}

VcpuRunner::VcpuRunner(Vcpu& vcpu, IoBus& bus, MmioBus& mmio)
    : vcpu_(vcpu), bus_(bus), mmio_(mmio) {
    install_kick_handler();
}

VcpuRunner::~VcpuRunner() {
    stop();
}

void VcpuRunner::start(bool paused) {
    {
        const std::scoped_lock lock(mutex_);
        requested_ = paused ? VcpuLifecycle::Paused : VcpuLifecycle::Running;
        vcpu_.run_area()->immediate_exit = paused ? 1 : 0;
    }
    thread_ = std::thread([this] { thread_main(); });
}

bool VcpuRunner::pause(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex_);
    if (state_ == VcpuLifecycle::Exited || !thread_.joinable()) {
        return true;
    }
    if (requested_ != VcpuLifecycle::Exited) {
        requested_ = VcpuLifecycle::Paused;
    }
    vcpu_.run_area()->immediate_exit = 1;
    ::pthread_kill(thread_.native_handle(), kick_signal);
    return cv_.wait_for(lock, timeout, [&] {
        return state_ == VcpuLifecycle::Paused || state_ == VcpuLifecycle::Exited;
    });
}

void VcpuRunner::resume() {
    {
        const std::scoped_lock lock(mutex_);
        if (state_ == VcpuLifecycle::Exited || requested_ == VcpuLifecycle::Exited) {
            return;
        }
        requested_ = VcpuLifecycle::Running;
        vcpu_.run_area()->immediate_exit = 0;
    }
    cv_.notify_all();
}

void VcpuRunner::request_exit() {
    {
        const std::scoped_lock lock(mutex_);
        requested_ = VcpuLifecycle::Exited;
        vcpu_.run_area()->immediate_exit = 1;
        if (thread_.joinable()) {
            ::pthread_kill(thread_.native_handle(), kick_signal);
        }
    }
    cv_.notify_all();
}

void VcpuRunner::stop() {
    if (!thread_.joinable()) {
        return;
    }
    request_exit();
    thread_.join();
}

VcpuLifecycle VcpuRunner::state() const {
    const std::scoped_lock lock(mutex_);
    return state_;
}

std::string VcpuRunner::error() const {
    const std::scoped_lock lock(mutex_);
    return error_;
}

void VcpuRunner::thread_main() {
    // Requests are looked at only when KVM_RUN returned -EINTR (pause() and stop() set
    // immediate_exit, so that is soon) or before the first run: never right after an
    // exit, whose instruction KVM completes only in the next KVM_RUN. A vCPU paused
    // between an OUT exit and its completion would be captured with RIP still on the
    // OUT, and its clone would do the OUT again.
    bool look = true;
    for (;;) {
        if (look) {
            std::unique_lock lock(mutex_);
            if (requested_ == VcpuLifecycle::Exited) {
                state_ = VcpuLifecycle::Exited;
                cv_.notify_all();
                return;
            }
            if (requested_ == VcpuLifecycle::Paused) {
                state_ = VcpuLifecycle::Paused;
                cv_.notify_all();
                cv_.wait(lock, [&] { return requested_ != VcpuLifecycle::Paused; });
                continue;
            }
            state_ = VcpuLifecycle::Running;
        }
        try {
            if (vcpu_.run() < 0) {
                look = true; // EINTR (kicked) or EAGAIN: look at the request
                continue;
            }
            look = !handle_exit();
        } catch (const std::exception& e) {
            const std::scoped_lock lock(mutex_);
            error_ = "vCPU " + std::to_string(vcpu_.id()) + ": " + e.what();
            // In the VM's log too, when it happens: ls shows it only while the VMM runs.
            std::fprintf(stderr, "vmfork-vmm: %s\n", error_.c_str());
            state_ = VcpuLifecycle::Exited;
            cv_.notify_all();
            return;
        }
    }
}

bool VcpuRunner::handle_exit() {
    kvm_run* run = vcpu_.run_area();
    switch (run->exit_reason) {
    case KVM_EXIT_IO: {
        auto* base = reinterpret_cast<std::uint8_t*>(run) + run->io.data_offset;
        for (std::uint32_t i = 0; i < run->io.count; ++i) {
            bus_.pio(run->io.port, run->io.direction == KVM_EXIT_IO_OUT,
                     std::span(base + static_cast<std::size_t>(i) * run->io.size, run->io.size),
                     vcpu_.id());
        }
        return true;
    }
    case KVM_EXIT_MMIO:
        mmio_.access(run->mmio.phys_addr, run->mmio.is_write != 0,
                     std::span(run->mmio.data, std::min<std::size_t>(run->mmio.len, 8)),
                     vcpu_.id());
        return true;
    case KVM_EXIT_SHUTDOWN:
        throw SystemError(EFAULT,
                          "guest shutdown (triple fault) at rip " + hex(vcpu_.get_regs().rip));
    case KVM_EXIT_FAIL_ENTRY:
        throw SystemError(EINVAL, "KVM_EXIT_FAIL_ENTRY, hardware reason " +
                                      hex(run->fail_entry.hardware_entry_failure_reason));
    case KVM_EXIT_INTERNAL_ERROR:
        throw SystemError(EIO, "KVM_EXIT_INTERNAL_ERROR, suberror " +
                                   std::to_string(run->internal.suberror) + " at rip " +
                                   hex(vcpu_.get_regs().rip));
    case KVM_EXIT_HLT:
    case KVM_EXIT_SYSTEM_EVENT: {
        const std::scoped_lock lock(mutex_);
        requested_ = VcpuLifecycle::Exited; // the guest is done: Exited, no error
        return false;
    }
    default:
        throw SystemError(EINVAL, "unhandled " + exit_reason_name(run->exit_reason));
    }
}

} // namespace vmfork
