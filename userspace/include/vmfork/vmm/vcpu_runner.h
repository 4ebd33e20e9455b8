// SPDX-License-Identifier: GPL-2.0
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>

namespace vmfork {

class IoBus;
class MmioBus;
class Vcpu;

// vCPU lifecycle: Created -> Running <-> Paused -> Exited. Exited is final (the guest
// stopped, stop() was called, or an error: see error()).
enum class VcpuLifecycle { Created, Running, Paused, Exited };
const char* to_string(VcpuLifecycle state);

// One thread running KVM_RUN for one vCPU. The loop is one switch over exit reasons;
// an exit it does not know ends the vCPU with an error naming the reason. pause()
// sets kvm_run->immediate_exit and kicks the thread with a signal, so a vCPU is
// only ever paused between two KVM_RUNs with its last exit completed: its state can
// be read and written safely.
class VcpuRunner {
public:
    VcpuRunner(Vcpu& vcpu, IoBus& bus, MmioBus& mmio);
    ~VcpuRunner();
    VcpuRunner(const VcpuRunner&) = delete;
    VcpuRunner& operator=(const VcpuRunner&) = delete;
    VcpuRunner(VcpuRunner&&) = delete;
    VcpuRunner& operator=(VcpuRunner&&) = delete;

    void start(bool paused = false);
    // Returns false if the vCPU did not reach Paused (or Exited) within timeout.
    bool pause(std::chrono::milliseconds timeout = std::chrono::seconds(10));
    void resume();
    void stop();
    // Asks the vCPU to end without waiting for it: safe from any thread, the vCPU's
    // own included (a device that powers the machine off).
    void request_exit();

    [[nodiscard]] VcpuLifecycle state() const;
    [[nodiscard]] std::string error() const;

private:
    void thread_main();
    // False when the vCPU must not run again (the guest stopped).
    bool handle_exit();

    Vcpu& vcpu_;
    IoBus& bus_;
    MmioBus& mmio_;
    mutable std::mutex mutex_;
    std::condition_variable cv_;
    VcpuLifecycle state_ = VcpuLifecycle::Created;
    VcpuLifecycle requested_ = VcpuLifecycle::Running;
    std::string error_;
    std::thread thread_;
};

} // namespace vmfork
