// SPDX-License-Identifier: GPL-2.0
#include "device_mapper.h"

#include <cerrno>
#include <chrono>
#include <cstring>
#include <fcntl.h>
#include <linux/dm-ioctl.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <thread>
#include <unistd.h>
#include <vector>

#include <fmt/format.h>

#include "vmfork/system_error.h"

namespace vmfork::diskbench {

namespace {

constexpr std::size_t buffer_size = std::size_t{16} * 1024;
constexpr std::size_t align8(std::size_t n) {
    return (n + 7) & ~std::size_t{7};
}

// A dm_ioctl header naming a device, followed by room for its payload.
class Request {
public:
    explicit Request(const std::string& name) : buf_(buffer_size / 8, 0) {
        auto* h = header();
        h->version[0] = DM_VERSION_MAJOR;
        h->version[1] = 0;
        h->version[2] = 0;
        h->data_size = buffer_size;
        h->data_start = align8(sizeof(dm_ioctl));
        if (name.size() >= sizeof(h->name)) {
            throw SystemError(ENAMETOOLONG, "device-mapper name " + name);
        }
        std::memcpy(h->name, name.data(), name.size());
    }

    dm_ioctl* header() { return reinterpret_cast<dm_ioctl*>(buf_.data()); } // NOLINT
    char* payload() {
        return reinterpret_cast<char*>(buf_.data()) + header()->data_start;
    } // NOLINT
    [[nodiscard]] std::size_t room() const { return buffer_size - align8(sizeof(dm_ioctl)); }

    void call(int fd, unsigned long cmd, const std::string& what) {
        if (::ioctl(fd, cmd, buf_.data()) != 0) {
            throw SystemError::from_errno(
                fmt::format("device-mapper {} {}", what, static_cast<const char*>(header()->name)));
        }
    }

private:
    std::vector<std::uint64_t> buf_; // 8-byte aligned, as the kernel's structs want
};

} // namespace

DmControl::DmControl() : fd_(::open("/dev/mapper/control", O_RDWR | O_CLOEXEC)) {
    if (!fd_) {
        throw SystemError::from_errno("open /dev/mapper/control (needs root and dm_mod)");
    }
}

dev_t DmControl::create(const std::string& name, std::uint64_t sectors, const std::string& type,
                        const std::string& params) const {
    Request c(name);
    c.call(fd_.get(), DM_DEV_CREATE, "create");
    const auto dev = static_cast<dev_t>(c.header()->dev);
    try {
        Request t(name);
        t.header()->target_count = 1;
        auto* spec = reinterpret_cast<dm_target_spec*>(t.payload()); // NOLINT
        spec->sector_start = 0;
        spec->length = sectors;
        if (type.size() >= sizeof(spec->target_type) ||
            sizeof(dm_target_spec) + params.size() + 1 > t.room()) {
            throw SystemError(EINVAL, "device-mapper table for " + name);
        }
        std::memcpy(spec->target_type, type.data(), type.size());
        char* p = t.payload() + sizeof(dm_target_spec);
        std::memcpy(p, params.c_str(), params.size() + 1);
        spec->next = static_cast<__u32>(align8(sizeof(dm_target_spec) + params.size() + 1));
        t.call(fd_.get(), DM_TABLE_LOAD, "load table " + type + " " + params + " into");
        resume(name);
    } catch (...) {
        try {
            remove(name);
        } catch (const SystemError&) { // NOLINT(bugprone-empty-catch): the first error counts
        }
        throw;
    }
    return dev;
}

void DmControl::suspend(const std::string& name) const {
    Request r(name);
    r.header()->flags = DM_SUSPEND_FLAG;
    r.call(fd_.get(), DM_DEV_SUSPEND, "suspend");
}

void DmControl::resume(const std::string& name) const {
    Request r(name);
    r.call(fd_.get(), DM_DEV_SUSPEND, "resume");
}

void DmControl::message(const std::string& name, const std::string& msg) const {
    Request r(name);
    auto* m = reinterpret_cast<dm_target_msg*>(r.payload()); // NOLINT
    if (sizeof(dm_target_msg) + msg.size() + 1 > r.room()) {
        throw SystemError(EINVAL, "device-mapper message " + msg);
    }
    m->sector = 0;
    std::memcpy(r.payload() + sizeof(dm_target_msg), msg.c_str(), msg.size() + 1);
    r.call(fd_.get(), DM_TARGET_MSG, "message \"" + msg + "\" to");
}

std::string DmControl::status(const std::string& name) const {
    Request r(name);
    r.call(fd_.get(), DM_TABLE_STATUS, "status of");
    if ((r.header()->flags & DM_BUFFER_FULL_FLAG) != 0 || r.header()->target_count != 1) {
        throw SystemError(EOVERFLOW, "device-mapper status of " + name);
    }
    const char* p = r.payload() + sizeof(dm_target_spec);
    return {p, ::strnlen(p, r.room() - sizeof(dm_target_spec))};
}

void DmControl::remove(const std::string& name) const {
    for (int attempt = 0;; ++attempt) {
        Request r(name);
        if (::ioctl(fd_.get(), DM_DEV_REMOVE, r.header()) == 0) {
            return;
        }
        if (errno != EBUSY || attempt == 50) {
            throw SystemError::from_errno("device-mapper remove " + name);
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
}

DmDevice::DmDevice(const DmControl& dm, std::string name, std::uint64_t sectors,
                   const std::string& type, const std::string& params, std::string node)
    : dm_(dm), name_(std::move(name)), node_(std::move(node)) {
    dev_ = dm_.create(name_, sectors, type, params);
    if (::mknod(node_.c_str(), S_IFBLK | 0600, dev_) != 0) {
        const int err = errno;
        try {
            dm_.remove(name_);
        } catch (const SystemError&) { // NOLINT(bugprone-empty-catch): the first error counts
        }
        throw SystemError(err, "mknod " + node_);
    }
}

DmDevice::~DmDevice() {
    ::unlink(node_.c_str());
    try {
        dm_.remove(name_);
    } catch (const SystemError& e) {
        fmt::print(stderr, "vmfork-disk-bench: {}\n", e.what());
    }
}

std::string DmDevice::dev() const {
    return fmt::format("{}:{}", major(dev_), minor(dev_));
}

} // namespace vmfork::diskbench
