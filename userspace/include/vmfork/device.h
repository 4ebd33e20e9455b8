// SPDX-License-Identifier: GPL-2.0
#pragma once

#include <cstdint>
#include <string>
#include <utility>

#include "vmfork/memory_object.h"
#include "vmfork/unique_fd.h"

namespace vmfork {

// An open /dev/vmfork, checked to speak VMFORK_API_VERSION. Makes memory objects.
class Device {
public:
    static constexpr const char* default_path = "/dev/vmfork";

    // Throws SystemError with a hint of what to do when the device is missing, not
    // accessible or not a vmfork device, and std::runtime_error on an API mismatch.
    static Device open(const std::string& path = default_path);

    [[nodiscard]] int api_version() const;
    [[nodiscard]] MemoryObject create_memory(std::uint64_t size) const;
    [[nodiscard]] int fd() const noexcept { return fd_.get(); }

private:
    explicit Device(UniqueFd fd) noexcept : fd_(std::move(fd)) {}

    UniqueFd fd_;
};

} // namespace vmfork
