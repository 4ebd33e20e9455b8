// SPDX-License-Identifier: GPL-2.0
#pragma once

namespace vmfork {

// Owns a file descriptor and closes it on destruction. Move-only.
class UniqueFd {
public:
    UniqueFd() noexcept = default;
    explicit UniqueFd(int fd) noexcept : fd_(fd) {}
    ~UniqueFd() { reset(); }

    UniqueFd(const UniqueFd&) = delete;
    UniqueFd& operator=(const UniqueFd&) = delete;
    UniqueFd(UniqueFd&& other) noexcept : fd_(other.release()) {}
    UniqueFd& operator=(UniqueFd&& other) noexcept;

    [[nodiscard]] int get() const noexcept { return fd_; }
    [[nodiscard]] bool valid() const noexcept { return fd_ >= 0; }
    explicit operator bool() const noexcept { return valid(); }

    // Gives up ownership: the caller closes the returned fd.
    [[nodiscard]] int release() noexcept;
    // Closes the owned fd (if any) and takes ownership of fd.
    void reset(int fd = -1) noexcept;

private:
    int fd_ = -1;
};

} // namespace vmfork
