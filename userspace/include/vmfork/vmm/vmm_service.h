// SPDX-License-Identifier: GPL-2.0
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "vmfork/control/runtime_dir.h"
#include "vmfork/control/server.h"
#include "vmfork/device.h"
#include "vmfork/kvm.h"
#include "vmfork/vm_state.h"
#include "vmfork/vmm/customizer.h"
#include "vmfork/vmm/guests/builtin/profile.h"
#include "vmfork/vmm/guests/builtin/report_verifier.h"
#include "vmfork/vmm/guests/linux/profile.h"
#include "vmfork/vmm/launch_spec.h"
#include "vmfork/vmm/machine.h"
#include "vmfork/vmm/pool.h"

namespace vmfork {

// One VM as a process: the Machine (the built-in guest with its report verifier, or a
// Linux guest) and the control requests of `vmfork` (info, fork, reset, pause, resume,
// input, kill) on NAME.sock in the runtime dir. Built from a launch spec; run() serves
// until a kill request, stop(), or the guest powering off.
class VmmService {
public:
    // Boots or restores the VM the spec describes (clone: memory and state are the
    // fork child and its VmState; warm, if given, the machine made ahead it runs on).
    // Throws on any failure, before anything runs.
    VmmService(const LaunchSpec& spec, std::optional<MemoryObject> memory,
               std::optional<VmState> state, std::unique_ptr<WarmMachine> warm);
    ~VmmService();
    VmmService(const VmmService&) = delete;
    VmmService& operator=(const VmmService&) = delete;
    VmmService(VmmService&&) = delete;
    VmmService& operator=(VmmService&&) = delete;

    // Binds the control socket (after this, `vmfork` can reach the VM).
    void listen();
    void run();
    // Async-signal-safe.
    void stop() noexcept;

    [[nodiscard]] const std::string& name() const noexcept { return name_; }

private:
    control::Outcome info(const control::Request& req);
    control::Outcome fork(const control::Request& req);
    control::Outcome reset(const control::Request& req);
    control::Outcome pause(const control::Request& req);
    control::Outcome resume(const control::Request& req);
    control::Outcome input(const control::Request& req);
    [[nodiscard]] nlohmann::json describe() const;
    // A Linux VM with vsock: its identity through its agent, in the background.
    void customize();
    [[nodiscard]] std::string state_name() const;
    // A Linux VM's disks at the fork instant (LinuxProfile::fork_disks); none otherwise.
    std::vector<DiskFork> fork_disks();
    // Starts warm VMMs of cpus vCPUs up to the pool's target, in a thread of its own
    // (the previous one joined first). Caller holds mu_.
    void refill_pool(unsigned cpus);
    [[nodiscard]] std::string clone_name(const std::string& prefix,
                                         const std::vector<std::string>& taken) const;

    // Guards the VM and everything below that requests change: the control server runs
    // requests in parallel (a fork waits for its clones without it).
    mutable std::mutex mu_;
    std::set<std::string> starting_; // clone names of forks still waiting for their clones
    control::RuntimeDir dir_;
    std::string name_;
    std::string parent_;
    bool customize_ = true; // LaunchSpec::customize
    std::string disk_dir_;  // where this VM's and its clones' disk layers go
    std::uint64_t spawned_ns_ = 0;
    std::uint64_t started_ns_ = 0;
    Platform platform_;
    std::unique_ptr<control::NameLock> lock_;
    std::unique_ptr<Kvm> kvm_;     // a warm VMM's is the one its machine was made with
    std::optional<Device> device_; // a booted VM only
    std::unique_ptr<ReportVerifier> verifier_;
    std::unique_ptr<Machine> machine_;
    BuiltinProfile* builtin_ = nullptr; // machine_'s profile, if it runs the built-in guest
    LinuxProfile* linux_ = nullptr;     // machine_'s profile, if it runs Linux
    CloneIdentity identity_;
    std::optional<VmState> fork_state_;     // a clone's: what reset goes back to
    std::optional<VmState> template_state_; // once this VM is a template
    std::vector<GuestPosition> template_positions_;
    bool paused_ = false;
    std::uint64_t fill_ = 0;
    Customizer customizer_; // after machine_: its thread ends first
    std::unique_ptr<control::Server> server_;
    std::jthread refill_; // refill_pool()'s; joined before the rest goes
    std::atomic<control::Server*> server_ptr_{nullptr}; // for stop() from any thread
};

// The vmfork-vmm entry point: vmm_serve() on the descriptors of launcher.h.
int vmm_main();
// Reads the spec (and a clone's memory and state) from these descriptors and closes
// them, builds the VmmService, reports ready (or the error) on ready, serves; a Warm
// spec goes to warm_vmm_main() instead. extra_fds: where the launch's extra
// descriptors are when they are not at launch_fd::first_extra on (a warm VMM's came
// over a socket). Returns the exit status.
int vmm_serve(int ready, int spec_fd, int memory_fd, int state_fd,
              std::optional<std::span<const int>> extra_fds, std::unique_ptr<WarmMachine> warm);
// `vmfork run --foreground`: the same in the calling process, until SIGINT/SIGTERM or
// a kill request; on_ready is called once the VM serves.
int vmm_foreground(const LaunchSpec& spec, const std::function<void(const VmmService&)>& on_ready);

} // namespace vmfork
