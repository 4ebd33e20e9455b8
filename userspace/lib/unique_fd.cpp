// SPDX-License-Identifier: GPL-2.0
#include "vmfork/unique_fd.h"

#include <unistd.h>

namespace vmfork {

UniqueFd& UniqueFd::operator=(UniqueFd&& other) noexcept {
    if (this != &other) {
        reset(other.release());
    }
    return *this;
}

int UniqueFd::release() noexcept {
    const int fd = fd_;
    fd_ = -1;
    return fd;
}

void UniqueFd::reset(int fd) noexcept {
    if (fd_ >= 0 && fd_ != fd) {
        // close() may fail with EINTR, but the fd is gone either way on Linux.
        ::close(fd_);
    }
    fd_ = fd;
}

} // namespace vmfork
