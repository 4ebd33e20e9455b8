// SPDX-License-Identifier: GPL-2.0
#include "vmfork/memory_object.h"

#include <sys/ioctl.h>
#include <utility>

#include "vmfork/device.h"
#include "vmfork/system_error.h"

namespace vmfork {

MemoryObject::MemoryObject(UniqueFd fd, std::uint64_t id, std::uint64_t size) noexcept
    : fd_(std::move(fd)), id_(id), size_(size) {}

MemoryObject MemoryObject::create(std::uint64_t size, const std::string& device_path) {
    return Device::open(device_path).create_memory(size);
}

MemoryObject MemoryObject::adopt(UniqueFd fd) {
    vmfork_stats st{};
    if (::ioctl(fd.get(), VMFORK_GET_STATS, &st) < 0) {
        throw SystemError::from_errno("VMFORK_GET_STATS (is the fd a vmfork object?)");
    }
    return {std::move(fd), st.id, st.size};
}

MemoryObject MemoryObject::fork(ForkMode mode) {
    vmfork_fork req{};
    req.flags = mode == ForkMode::Template ? VMFORK_FORK_TEMPLATE : 0;
    const int child = ::ioctl(fd(), VMFORK_VM_FORK, &req);
    if (child < 0) {
        throw SystemError::from_errno("VMFORK_VM_FORK of object " + std::to_string(id_));
    }
    return {UniqueFd(child), req.id, size_};
}

void MemoryObject::reset() {
    if (::ioctl(fd(), VMFORK_RESET, 0UL) < 0) {
        throw SystemError::from_errno("VMFORK_RESET of object " + std::to_string(id_));
    }
}

vmfork_stats MemoryObject::stats() const {
    vmfork_stats st{};
    if (::ioctl(fd(), VMFORK_GET_STATS, &st) < 0) {
        throw SystemError::from_errno("VMFORK_GET_STATS of object " + std::to_string(id_));
    }
    return st;
}

int MemoryObject::api_version() const {
    const int version = ::ioctl(fd(), VMFORK_GET_API_VERSION);
    if (version < 0) {
        throw SystemError::from_errno("VMFORK_GET_API_VERSION");
    }
    return version;
}

} // namespace vmfork
