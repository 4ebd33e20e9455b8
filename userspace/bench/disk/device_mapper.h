// SPDX-License-Identifier: GPL-2.0
#pragma once

// Device-mapper through its ioctls on /dev/mapper/control (linux/dm-ioctl.h), the
// interface dmsetup and libdevmapper use, in-process: the bench times the kernel's
// work, not the start of a dmsetup process per step (containerd's devmapper
// snapshotter runs dmsetup). Needs CAP_SYS_ADMIN.

#include <cstdint>
#include <string>
#include <sys/types.h>

#include "vmfork/unique_fd.h"

namespace vmfork::diskbench {

class DmControl {
public:
    DmControl();

    // DM_DEV_CREATE + DM_TABLE_LOAD of one target + resume; returns the device number.
    dev_t create(const std::string& name, std::uint64_t sectors, const std::string& type,
                 const std::string& params) const;
    void suspend(const std::string& name) const;
    void resume(const std::string& name) const;
    // DM_TARGET_MSG to sector 0 (a thin pool's create_thin, create_snap, ...).
    void message(const std::string& name, const std::string& msg) const;
    // The status line of the device's (only) target.
    [[nodiscard]] std::string status(const std::string& name) const;
    // DM_DEV_REMOVE, retried a while when something (udev's probe) holds it: EBUSY.
    void remove(const std::string& name) const;

private:
    UniqueFd fd_;
};

// A device-mapper device with one target, removed when destroyed. A block special
// file for it is made at node (device-mapper's /dev/mapper nodes are udev's or
// libdevmapper's to make).
class DmDevice {
public:
    DmDevice(const DmControl& dm, std::string name, std::uint64_t sectors, const std::string& type,
             const std::string& params, std::string node);
    ~DmDevice();
    DmDevice(const DmDevice&) = delete;
    DmDevice& operator=(const DmDevice&) = delete;
    DmDevice(DmDevice&&) = delete;
    DmDevice& operator=(DmDevice&&) = delete;

    [[nodiscard]] const std::string& name() const { return name_; }
    [[nodiscard]] const std::string& node() const { return node_; }
    // "major:minor", as tables name devices.
    [[nodiscard]] std::string dev() const;

private:
    const DmControl& dm_;
    std::string name_;
    std::string node_;
    dev_t dev_ = 0;
};

} // namespace vmfork::diskbench
