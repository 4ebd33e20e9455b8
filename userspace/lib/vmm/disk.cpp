// SPDX-License-Identifier: GPL-2.0
#include "vmfork/vmm/disk.h"

#include <cerrno>
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vmfork/system_error.h"

namespace vmfork {

void pread_all(int fd, void* buf, std::size_t len, std::uint64_t off, const std::string& what) {
    auto* p = static_cast<std::byte*>(buf);
    while (len > 0) {
        const ssize_t n = ::pread(fd, p, len, static_cast<off_t>(off));
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            throw SystemError::from_errno("read of " + what);
        }
        if (n == 0) {
            throw SystemError(EIO, "read of " + what + ": end of file (did it shrink?)");
        }
        p += n;
        off += static_cast<std::uint64_t>(n);
        len -= static_cast<std::size_t>(n);
    }
}

void pwrite_all(int fd, const void* buf, std::size_t len, std::uint64_t off,
                const std::string& what) {
    const auto* p = static_cast<const std::byte*>(buf);
    while (len > 0) {
        const ssize_t n = ::pwrite(fd, p, len, static_cast<off_t>(off));
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            throw SystemError(n < 0 ? errno : EIO, "write of " + what);
        }
        p += n;
        off += static_cast<std::uint64_t>(n);
        len -= static_cast<std::size_t>(n);
    }
}

RawDisk::RawDisk(const std::string& path, bool read_only) : path_(path), read_only_(read_only) {
    fd_ = UniqueFd(::open(path.c_str(), (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC));
    if (!fd_) {
        const int err = errno;
        if (!read_only && (err == EACCES || err == EROFS)) {
            throw SystemError(err, "disk " + path +
                                       " cannot be opened for writing (add ,ro to "
                                       "give it to the guest read-only)");
        }
        throw SystemError(err, "disk " + path);
    }
    struct stat st {};
    if (::fstat(fd_.get(), &st) != 0) {
        throw SystemError::from_errno("fstat of disk " + path);
    }
    if (S_ISBLK(st.st_mode)) {
        if (::ioctl(fd_.get(), BLKGETSIZE64, &size_) != 0) {
            throw SystemError::from_errno("BLKGETSIZE64 of disk " + path);
        }
    } else if (S_ISREG(st.st_mode)) {
        size_ = static_cast<std::uint64_t>(st.st_size);
    } else {
        throw SystemError(EINVAL, "disk " + path + " is neither a file nor a block device");
    }
    if (size_ == 0 || size_ % sector != 0) {
        throw SystemError(EINVAL, "disk " + path + " has " + std::to_string(size_) +
                                      " bytes: a raw image is a non-zero multiple of 512");
    }
    if (::flock(fd_.get(), (read_only ? LOCK_SH : LOCK_EX) | LOCK_NB) != 0) {
        if (errno == EWOULDBLOCK) {
            throw SystemError(
                EBUSY, "disk " + path + " is in use by another VM" +
                           (read_only ? " that writes to it" : " (add ,ro to share it read-only)"));
        }
        throw SystemError::from_errno("flock of disk " + path);
    }
}

std::shared_ptr<RawDisk> RawDisk::read_only_view() const {
    std::shared_ptr<RawDisk> d(new RawDisk());
    d->path_ = path_;
    d->fd_ = UniqueFd(::fcntl(fd_.get(), F_DUPFD_CLOEXEC, 0)); // the same lock
    if (!d->fd_) {
        throw SystemError::from_errno("dup of disk " + path_);
    }
    d->size_ = size_;
    d->read_only_ = true;
    if (::flock(d->fd_.get(), LOCK_SH | LOCK_NB) != 0) {
        throw SystemError::from_errno("flock of disk " + path_);
    }
    return d;
}

void RawDisk::read(std::uint64_t offset, std::span<std::byte> out) {
    pread_all(fd_.get(), out.data(), out.size(), offset, "disk " + path_);
}

void RawDisk::write(std::uint64_t offset, std::span<const std::byte> in) {
    if (read_only_) {
        throw SystemError(EROFS, "disk " + path_ + " is read-only");
    }
    pwrite_all(fd_.get(), in.data(), in.size(), offset, "disk " + path_);
}

void RawDisk::flush() {
    if (!read_only_ && ::fdatasync(fd_.get()) != 0) {
        throw SystemError::from_errno("fdatasync of disk " + path_);
    }
}

} // namespace vmfork
