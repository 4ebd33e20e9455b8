// SPDX-License-Identifier: GPL-2.0
#pragma once

#include <string>
#include <sys/ioctl.h>

#include "vmfork/system_error.h"

namespace vmfork {

// ioctl(fd, request, arg), its result; a failure throws SystemError with the errno and
// what ("KVM_RUN", "tap vmf0: SIOCSIFADDR 10.0.0.1/24").
template <typename T> int xioctl(int fd, unsigned long request, T arg, const std::string& what) {
    // NOLINTNEXTLINE(cppcoreguidelines-pro-type-vararg): the ioctl ABI
    const int r = ::ioctl(fd, request, arg);
    if (r < 0) {
        throw SystemError::from_errno(what);
    }
    return r;
}

} // namespace vmfork
