// SPDX-License-Identifier: GPL-2.0
#pragma once

#include <chrono>
#include <span>
#include <string>
#include <sys/types.h>

#include "vmfork/unique_fd.h"

namespace vmfork {

class MemoryObject;
struct LaunchSpec;

// What a VMM process is started with: its LaunchSpec (launch_spec.h) as JSON; a clone
// also gets its memory object and its serialized VmState.
//
// Descriptors of a VMM process: 3 ready pipe, 4 spec (memfd, JSON), 5 memory object
// and 6 state (memfd) for a clone, then from 7 on the extra ones the spec names (a
// clone's disk layers). It writes "ok\n" or "error <errno> <text>\n" on 3 once it
// serves its control socket (or failed), then closes it.
namespace launch_fd {
constexpr int ready = 3;
constexpr int spec = 4;
constexpr int memory = 5;
constexpr int state = 6;
constexpr int first_extra = 7;
constexpr int max_extra = 200;
} // namespace launch_fd

// A VMM process started and not yet known to be ready.
class PendingVmm {
public:
    PendingVmm(pid_t pid, UniqueFd ready, std::string name)
        : pid_(pid), ready_(std::move(ready)), name_(std::move(name)) {}
    // Waits for the ready line. Throws SystemError with the VMM's errno and text (or
    // ETIMEDOUT, or EIO when it died without a word: see its log).
    void wait(std::chrono::steady_clock::time_point deadline);
    [[nodiscard]] pid_t pid() const noexcept { return pid_; }
    [[nodiscard]] const std::string& name() const noexcept { return name_; }

private:
    pid_t pid_;
    UniqueFd ready_;
    std::string name_;
};

// The VMM's side of the ready pipe, what PendingVmm::wait() reads: "ok", or the error
// with its errno. Best effort: the launcher may be gone.
void report_ready(int fd);
void report_ready_error(int fd, int err, const std::string& what);

// A memfd holding bytes (sealed against writes), for passing to a VMM.
UniqueFd make_memfd(const std::string& name, const void* data, std::size_t size);

// Starts exe as a VMM process in its own session, stdin from /dev/null, stdout and
// stderr to log_path. memory/state_fd only for a clone (else nullptr/-1); extra_fds
// become its descriptors first_extra, first_extra + 1, ...
PendingVmm launch_vmm(const std::string& exe, const LaunchSpec& spec, const MemoryObject* memory,
                      int state_fd, const std::string& log_path,
                      std::span<const int> extra_fds = {});

// The path of the running executable.
std::string self_exe();
// The VMM binary: vmfork-vmm next to the running executable (vmfork, or a VMM that
// starts clones).
std::string vmm_exe();

// CLOCK_MONOTONIC in ns: comparable between processes.
std::uint64_t monotonic_ns();

} // namespace vmfork
