// SPDX-License-Identifier: GPL-2.0
#pragma once

#include <cstdint>
#include <vector>

#include "vmfork/netlink_socket.h"

namespace vmfork {

// One message of the module's "events" multicast group (see linux/vmfork.h).
struct ModuleEvent {
    enum class Kind : std::uint8_t { fork, reset, release };
    Kind kind = Kind::fork;
    std::uint64_t id = 0;             // the object (fork: the parent)
    std::uint64_t child_id = 0;       // fork
    std::uint32_t pid = 0;            // fork: the forking task (initial pid namespace)
    std::uint64_t flags = 0;          // fork: VMFORK_FORK_*
    std::uint64_t resident_pages = 0; // fork: the parent's; release: the object's
    std::uint64_t private_pages = 0;  // release
    std::uint64_t dropped_pages = 0;  // reset
    std::uint64_t duration_ns = 0;    // fork, reset
};

// A libnl-genl-3 socket joined to the "vmfork" family's "events" group. Joining needs
// CAP_SYS_ADMIN (EPERM otherwise); ENOENT when the module is not loaded. The kernel
// drops events a reader leaves queued past the socket buffer: overruns() counts
// those occasions.
class NetlinkEvents {
public:
    NetlinkEvents();
    ~NetlinkEvents();
    NetlinkEvents(const NetlinkEvents&) = delete;
    NetlinkEvents& operator=(const NetlinkEvents&) = delete;
    NetlinkEvents(NetlinkEvents&&) noexcept;
    NetlinkEvents& operator=(NetlinkEvents&&) noexcept;

    // The socket, to poll for POLLIN.
    [[nodiscard]] int fd() const;
    // Every event already queued, oldest first; empty when none (never blocks).
    [[nodiscard]] std::vector<ModuleEvent> drain();
    // How many times the kernel reported lost events (ENOBUFS) so far.
    [[nodiscard]] std::uint64_t overruns() const { return overruns_; }

private:
    NlSock sock_;
    int family_ = 0;
    std::uint64_t overruns_ = 0;
};

} // namespace vmfork
