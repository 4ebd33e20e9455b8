// SPDX-License-Identifier: GPL-2.0
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "vmfork/unique_fd.h"

namespace vmfork {

// All of [off, off + len) of fd, retrying short transfers and EINTR. Throws SystemError
// with the errno, or EIO at the end of the file; what names the file in the message.
void pread_all(int fd, void* buf, std::size_t len, std::uint64_t off, const std::string& what);
void pwrite_all(int fd, const void* buf, std::size_t len, std::uint64_t off,
                const std::string& what);

// A disk as a guest sees it: a fixed number of bytes (a multiple of 512) to read,
// write and flush. Errors throw SystemError with the errno of the host's I/O; the
// device turns them into an I/O error for the guest.
class DiskImage {
public:
    static constexpr std::uint64_t sector = 512;

    DiskImage() = default;
    virtual ~DiskImage() = default;
    DiskImage(const DiskImage&) = delete;
    DiskImage& operator=(const DiskImage&) = delete;
    DiskImage(DiskImage&&) = delete;
    DiskImage& operator=(DiskImage&&) = delete;

    [[nodiscard]] virtual std::uint64_t size() const = 0;
    [[nodiscard]] virtual bool read_only() const = 0;
    virtual void read(std::uint64_t offset, std::span<std::byte> out) = 0;
    virtual void write(std::uint64_t offset, std::span<const std::byte> in) = 0;
    // What was written is on stable storage when this returns.
    virtual void flush() = 0;
};

// A raw image file (or block device), read and written in place. The image is locked
// (flock): exclusively while a VM writes to it, shared while VMs only read it (the
// base of linked clones), so no VM writes under another one.
class RawDisk final : public DiskImage {
public:
    // Throws SystemError: ENOENT, EACCES (with a read-write open of a read-only
    // file: "add ,ro"), EINVAL for a size that is 0 or not a multiple of 512, EBUSY
    // when another VM holds a conflicting lock.
    RawDisk(const std::string& path, bool read_only);
    // The same image, read-only from now on (the base of linked clones): takes the
    // lock of writable over, as a shared one.
    [[nodiscard]] std::shared_ptr<RawDisk> read_only_view() const;

    [[nodiscard]] std::uint64_t size() const override { return size_; }
    [[nodiscard]] bool read_only() const override { return read_only_; }
    [[nodiscard]] const std::string& path() const { return path_; }
    void read(std::uint64_t offset, std::span<std::byte> out) override;
    void write(std::uint64_t offset, std::span<const std::byte> in) override;
    void flush() override;

private:
    RawDisk() = default;

    std::string path_;
    UniqueFd fd_;
    std::uint64_t size_ = 0;
    bool read_only_ = false;
};

} // namespace vmfork
