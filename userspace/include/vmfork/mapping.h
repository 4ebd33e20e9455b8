// SPDX-License-Identifier: GPL-2.0
#pragma once

#include <cstddef>
#include <string>
#include <sys/types.h>

namespace vmfork {

// One mmap() region, unmapped on destruction. Move-only.
class Mapping {
public:
    Mapping() noexcept = default;
    // mmap(nullptr, size, prot, flags, fd, offset); throws SystemError naming what.
    Mapping(std::size_t size, int prot, int flags, int fd, off_t offset, const std::string& what);
    ~Mapping() { reset(); }

    Mapping(const Mapping&) = delete;
    Mapping& operator=(const Mapping&) = delete;
    Mapping(Mapping&& other) noexcept;
    Mapping& operator=(Mapping&& other) noexcept;

    [[nodiscard]] void* get() const noexcept { return addr_; }
    [[nodiscard]] std::byte* data() const noexcept { return static_cast<std::byte*>(addr_); }
    [[nodiscard]] std::size_t size() const noexcept { return size_; }
    void reset() noexcept;

private:
    void* addr_ = nullptr;
    std::size_t size_ = 0;
};

} // namespace vmfork
