// SPDX-License-Identifier: GPL-2.0
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "vmfork/vmm/guests/builtin/report_verifier.h"
#include "vmfork/vmm/guests/linux/profile.h"

namespace vmfork {

// Which kind of guest a VMM process runs: the guest profile its machine is made with
// (Builtin: guests/builtin/profile.h, the freestanding test guest; Linux:
// guests/linux/profile.h).
enum class Platform { Builtin, Linux };

// The built-in test guest's parameters (boot only).
struct BuiltinGuestSpec {
    std::uint64_t fill = 0; // percent of RAM filled at boot
    std::uint64_t report_every = 10000;
    std::uint64_t pace_us = 20000;
};

// A Linux guest's boot files (boot only).
struct LinuxGuestSpec {
    std::string kernel;
    std::string initrd; // empty: none
    std::string cmdline;
};

// A Linux VM's disk: the image and, for a clone, the descriptors (launch_fd) of the
// frozen layers of its linked-clone view, bottom first.
struct DiskSpec {
    std::string path;
    bool read_only = false;
    std::vector<int> layer_fds;
};

// What a VMM process is started with: one typed struct, written as JSON by the
// launcher (to_json) and read by the VMM (from_json), so the two cannot drift apart.
//
// Warm: a VMM of the warm pool (vmm/pool.h), made ahead with cpus vCPUs and no guest; it
// waits in runtime_dir's pool for the launch of a clone (then a Clone spec of its own).
struct LaunchSpec {
    enum class Mode { Boot, Clone, Warm };

    Mode mode = Mode::Boot;
    std::string name;
    std::string runtime_dir;
    std::uint64_t spawned_ns = 0; // CLOCK_MONOTONIC when the launcher started it
    Platform platform = Platform::Builtin;

    // Boot (cpus: Warm too).
    std::uint64_t mem_size = 0;
    unsigned cpus = 1;
    BuiltinGuestSpec builtin;
    LinuxGuestSpec linux_guest;
    std::vector<DiskSpec> disks; // the Linux platform's, boot and clone
    std::string disk_dir;        // where linked clones' layers go ("": /var/tmp)
    NetConfig net;               // the Linux platform's network, boot and clone
    // The VMM makes a network namespace of its own first, and the tap in it (a clone's:
    // the same tap name and host address as its parent's, in a namespace of its own).
    bool own_netns = false;

    // Clone.
    std::string parent;
    std::uint64_t generation = 0;
    std::uint64_t fill = 0;                      // the built-in guest's, for ls
    std::vector<GuestPosition> parent_positions; // the built-in guest's, per vCPU
    bool customize = true;                       // the agent applies the clone's identity (Linux)
    bool new_vm_generation = true; // false for tests only: LinuxConfig::new_vm_generations

    [[nodiscard]] nlohmann::json to_json() const;
    // Throws SystemError(EINVAL) naming the missing or malformed field.
    static LaunchSpec from_json(const nlohmann::json& j);
};

} // namespace vmfork
