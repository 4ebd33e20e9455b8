// SPDX-License-Identifier: GPL-2.0
#include "vmfork/mapping.h"

#include <sys/mman.h>
#include <utility>

#include "vmfork/system_error.h"

namespace vmfork {

Mapping::Mapping(std::size_t size, int prot, int flags, int fd, off_t offset,
                 const std::string& what) {
    void* addr = ::mmap(nullptr, size, prot, flags, fd, offset);
    if (addr == MAP_FAILED) {
        throw SystemError::from_errno("mmap of " + what);
    }
    addr_ = addr;
    size_ = size;
}

Mapping::Mapping(Mapping&& other) noexcept
    : addr_(std::exchange(other.addr_, nullptr)), size_(std::exchange(other.size_, 0)) {}

Mapping& Mapping::operator=(Mapping&& other) noexcept {
    if (this != &other) {
        reset();
        addr_ = std::exchange(other.addr_, nullptr);
        size_ = std::exchange(other.size_, 0);
    }
    return *this;
}

void Mapping::reset() noexcept {
    if (addr_ != nullptr) {
        ::munmap(addr_, size_);
        addr_ = nullptr;
        size_ = 0;
    }
}

} // namespace vmfork
