// SPDX-License-Identifier: GPL-2.0
#pragma once

#include <memory>
#include <optional>
#include <span>
#include <string>
#include <sys/types.h>
#include <vector>

#include "vmfork/kvm.h"
#include "vmfork/vmm/launcher.h"
#include "vmfork/vmm/machine.h"

namespace vmfork {

struct LaunchSpec;

// What a warm VMM made ahead: its KVM VM with irqchip, PIT and vCPUs, no RAM, no guest
// (Machine::prepare without a profile). The Kvm it was made with lives as long.
struct WarmMachine {
    std::unique_ptr<Kvm> kvm;
    std::unique_ptr<Machine> machine;

    // Opens /dev/kvm and prepares a machine of cpus vCPUs.
    static WarmMachine make(unsigned cpus);
};

// The warm pool of a runtime dir: VMM processes started ahead (LaunchSpec::Mode::Warm),
// each with a WarmMachine of some number of vCPUs, waiting on a socket in DIR/pool/ for
// the launch of a clone. A fork takes one per clone instead of starting a process and
// making its VM: the clone's launch (its spec, memory object, state and disk layers,
// the same descriptors launch_vmm() passes) goes over the socket with SCM_RIGHTS, and
// the warm VMM then serves as that clone. The pool keeps no daemon: the VMM that
// forked starts replacements (refill()) once its clones run, up to the target size
// `vmfork pool resize` sets per vCPU count.
//
// In DIR/pool/: size-C holds the target for C vCPUs; warm-C-PID.sock is a waiting VMM.
// Taking one renames its socket to taken-PID.sock first, so two forks never hand a
// launch to the same VMM.
class VmmPool {
public:
    static constexpr unsigned max_size = 64; // per vCPU count

    explicit VmmPool(const std::string& runtime_dir);

    struct Warm {
        unsigned cpus;
        pid_t pid;
    };
    // The warm VMMs waiting, sorted; removes sockets whose process is gone.
    [[nodiscard]] std::vector<Warm> warm() const;
    // vCPU count -> target size, for every count with a target above 0.
    [[nodiscard]] std::vector<std::pair<unsigned, unsigned>> targets() const;
    [[nodiscard]] unsigned target(unsigned cpus) const;
    // Throws SystemError(EINVAL) above max_size or for 0 vCPUs.
    void set_target(unsigned cpus, unsigned size) const;

    // Hands a clone's launch (as launch_vmm() takes it: memory_fd is its memory
    // object's) to a warm VMM of cpus vCPUs. nullopt when none is waiting (or every one
    // waiting is gone).
    std::optional<PendingVmm> take(unsigned cpus, const LaunchSpec& spec, int memory_fd,
                                   int state_fd, const std::string& log_path,
                                   std::span<const int> extra_fds);
    // Starts warm VMMs of cpus vCPUs until target(cpus) wait (taken ones no longer
    // count); the caller may wait for them or drop them.
    [[nodiscard]] std::vector<PendingVmm> refill(unsigned cpus) const;
    // Tells the warm VMMs of cpus vCPUs (every one: nullopt) above keep to exit;
    // returns how many were told.
    unsigned shrink(std::optional<unsigned> cpus, unsigned keep = 0);

    [[nodiscard]] const std::string& path() const noexcept { return path_; }

private:
    // Claims warm VMM w (the rename) and connects to it; invalid if it is gone.
    [[nodiscard]] UniqueFd claim(const Warm& w) const;
    std::string runtime_dir_;
    std::string path_;
};

// The vmfork-vmm of a Warm spec: prepares its machine, reports ready on ready_fd,
// waits for a launch on its pool socket and serves as that clone (vmm_main.cpp's
// serve()), or exits when told. Returns the exit status.
int warm_vmm_main(const LaunchSpec& spec, int ready_fd);

} // namespace vmfork
