// SPDX-License-Identifier: GPL-2.0
#pragma once

#include <string>
#include <sys/types.h>

namespace vmfork {

// What a user who may not open a device node (/dev/kvm, /dev/vmfork: EACCES) should do,
// as one sentence that starts "permission denied opening PATH". Decided from the node's
// group and mode and the caller's groups: join the group (or log in again if already
// in it but not in this session), or make the udev rule take effect (the node is not
// the group's).
struct DeviceAccess {
    std::string path;
    gid_t gid = 0;            // the node's group
    mode_t mode = 0;          // the node's permission bits
    std::string group;        // its name ("" if unknown)
    std::string user;         // the caller's login name ("" if unknown)
    bool in_session = false;  // the process has the group (getgroups)
    bool in_group_db = false; // the group database lists the user in it
};

[[nodiscard]] std::string permission_denied_message(const DeviceAccess& access);

// The same for the caller, from stat(path) and its credentials.
[[nodiscard]] std::string permission_denied_message(const std::string& path);

} // namespace vmfork
