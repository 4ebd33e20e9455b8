// SPDX-License-Identifier: GPL-2.0
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "vmfork/netlink_socket.h"

namespace vmfork {

// One memory object as the module's generic netlink family reports it: the figures
// of VMFORK_GET_STATS (see linux/vmfork.h) plus the creator's pid.
struct ObjectStats {
    std::uint64_t id = 0;
    std::uint64_t parent_id = 0;
    std::uint32_t creator_pid = 0;
    std::uint64_t depth = 0;
    std::uint64_t size = 0; // bytes
    std::uint64_t resident_pages = 0;
    std::uint64_t shared_pages = 0;
    std::uint64_t private_pages = 0;
    std::uint64_t cow_breaks = 0;
    std::uint64_t forks = 0;
    std::uint64_t resets = 0;
    std::uint64_t flags = 0; // VMFORK_STATS_*
    std::uint64_t chain_length = 0;
};

// What the module holds in all (VMFORK_CMD_GET_COUNTERS).
struct ModuleCounters {
    std::uint64_t objects = 0;
    std::uint64_t layers = 0;
    std::uint64_t pages = 0; // 4 KiB pages, each counted once
};

// A libnl-genl-3 socket on the "vmfork" generic netlink family. The kernel shows a
// caller without CAP_SYS_ADMIN only the objects of its own effective uid. Errors throw
// SystemError with an errno (ENOENT: the family is not registered, i.e. the module is
// not loaded) and a message that says what to do.
class NetlinkStats {
public:
    NetlinkStats();
    ~NetlinkStats();
    NetlinkStats(const NetlinkStats&) = delete;
    NetlinkStats& operator=(const NetlinkStats&) = delete;
    NetlinkStats(NetlinkStats&&) noexcept;
    NetlinkStats& operator=(NetlinkStats&&) noexcept;

    // Every object the caller may see (GET_STATS dump), in the module's list order.
    [[nodiscard]] std::vector<ObjectStats> dump();
    // One object; nullopt when there is none the caller may see.
    [[nodiscard]] std::optional<ObjectStats> get(std::uint64_t id);
    [[nodiscard]] ModuleCounters counters();

private:
    NlSock sock_;
    int family_ = 0;
};

} // namespace vmfork
