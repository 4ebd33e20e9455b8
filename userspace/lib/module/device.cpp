// SPDX-License-Identifier: GPL-2.0
#include "vmfork/device.h"

#include <cerrno>
#include <fcntl.h>
#include <stdexcept>
#include <sys/ioctl.h>

#include "vmfork/device_access.h"
#include "vmfork/system_error.h"

namespace vmfork {

Device Device::open(const std::string& path) {
    UniqueFd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC));
    if (!fd) {
        const int err = errno;
        switch (err) {
        case ENOENT:
            throw SystemError(
                err, path + " not found: load the module with `modprobe vmfork` (installed, "
                            "e.g. package vmfork-dkms) or `insmod kmod/vmfork.ko` "
                            "(build tree)");
        case EACCES:
            throw SystemError(err, permission_denied_message(path));
        default:
            throw SystemError(err, "cannot open " + path);
        }
    }
    Device dev(std::move(fd));
    const int version = ::ioctl(dev.fd(), VMFORK_GET_API_VERSION);
    if (version < 0) {
        throw SystemError::from_errno(path + " is not a vmfork device (VMFORK_GET_API_VERSION)");
    }
    if (version != VMFORK_API_VERSION) {
        throw std::runtime_error(path + " speaks vmfork API " + std::to_string(version) +
                                 ", this build needs " + std::to_string(VMFORK_API_VERSION) +
                                 ": load the matching kmod/vmfork.ko or rebuild userspace");
    }
    return dev;
}

int Device::api_version() const {
    const int version = ::ioctl(fd(), VMFORK_GET_API_VERSION);
    if (version < 0) {
        throw SystemError::from_errno("VMFORK_GET_API_VERSION");
    }
    return version;
}

MemoryObject Device::create_memory(std::uint64_t size) const {
    vmfork_create_mem req{};
    req.size = size;
    const int obj = ::ioctl(fd(), VMFORK_CREATE_MEM, &req);
    if (obj < 0) {
        throw SystemError::from_errno("VMFORK_CREATE_MEM of " + std::to_string(size) + " bytes");
    }
    return {UniqueFd(obj), req.id, size};
}

} // namespace vmfork
