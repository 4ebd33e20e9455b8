// SPDX-License-Identifier: GPL-2.0
#pragma once

#include <cstdint>
#include <string>

#include <linux/vmfork.h>

#include "vmfork/unique_fd.h"

namespace vmfork {

enum class ForkMode {
    Live,     // the parent keeps running and writing
    Template, // the parent is frozen for good as a read-only template
};

// One vmfork memory object (guest RAM): owns its fd. mmap() it MAP_SHARED and hand
// the address to KVM_SET_USER_MEMORY_REGION. Errors throw SystemError.
class MemoryObject {
public:
    // Opens /dev/vmfork (or device_path), checks the API version and creates an
    // object of size bytes (a multiple of 4 KiB).
    static MemoryObject create(std::uint64_t size, const std::string& device_path = "/dev/vmfork");

    // Wraps an object fd, e.g. one received over a socket.
    static MemoryObject adopt(UniqueFd fd);

    // A child object with this object's content at the instant of the fork.
    [[nodiscard]] MemoryObject fork(ForkMode mode = ForkMode::Live);
    // Drops every write since this child's fork (fails on an object not forked).
    void reset();
    [[nodiscard]] vmfork_stats stats() const;
    [[nodiscard]] int api_version() const;

    [[nodiscard]] std::uint64_t id() const noexcept { return id_; }
    [[nodiscard]] std::uint64_t size() const noexcept { return size_; }
    [[nodiscard]] int fd() const noexcept { return fd_.get(); }

private:
    MemoryObject(UniqueFd fd, std::uint64_t id, std::uint64_t size) noexcept;
    friend class Device;

    UniqueFd fd_;
    std::uint64_t id_;
    std::uint64_t size_;
};

} // namespace vmfork
