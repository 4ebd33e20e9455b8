// SPDX-License-Identifier: GPL-2.0
#include "vmfork/device_access.h"

#include <algorithm>
#include <array>
#include <cstdio>
#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

namespace vmfork {

namespace {

// getpwuid_r/getgrgid_r need a buffer; 16 KiB fits any sane entry.
constexpr std::size_t entry_buffer = 16384;
constexpr int max_groups = 1024;

std::string user_name(uid_t uid, gid_t* primary) {
    passwd pw{};
    passwd* found = nullptr;
    std::vector<char> buf(entry_buffer);
    if (::getpwuid_r(uid, &pw, buf.data(), buf.size(), &found) != 0 || found == nullptr) {
        return {};
    }
    *primary = pw.pw_gid;
    return pw.pw_name;
}

std::string group_name(gid_t gid) {
    group gr{};
    group* found = nullptr;
    std::vector<char> buf(entry_buffer);
    if (::getgrgid_r(gid, &gr, buf.data(), buf.size(), &found) != 0 || found == nullptr) {
        return {};
    }
    return gr.gr_name;
}

bool process_has_group(gid_t gid) {
    if (::getegid() == gid) {
        return true;
    }
    std::array<gid_t, max_groups> groups{};
    const int n = ::getgroups(static_cast<int>(groups.size()), groups.data());
    return n > 0 && std::find(groups.begin(), groups.begin() + n, gid) != groups.begin() + n;
}

bool user_in_group_db(const std::string& user, gid_t primary, gid_t gid) {
    std::array<gid_t, max_groups> groups{};
    int n = static_cast<int>(groups.size());
    if (::getgrouplist(user.c_str(), primary, groups.data(), &n) < 0) {
        return false;
    }
    return std::find(groups.begin(), groups.begin() + n, gid) != groups.begin() + n;
}

std::string octal_mode(mode_t mode) {
    std::array<char, 8> buf{};
    std::snprintf(buf.data(), buf.size(), "%04o", static_cast<unsigned>(mode & 07777));
    return buf.data();
}

} // namespace

std::string permission_denied_message(const DeviceAccess& a) {
    const std::string head = "permission denied opening " + a.path;
    const std::string group = a.group.empty() ? std::to_string(a.gid) : a.group;
    const bool group_rw = (a.mode & (S_IRGRP | S_IWGRP)) == (S_IRGRP | S_IWGRP);
    if (a.gid == 0 || !group_rw) {
        // Not handed to a group (no udev rule ran): joining a group would not help.
        return head + " (group " + group + ", mode " + octal_mode(a.mode) +
               "): its udev rule is not in effect, so only root may use it; install the rule "
               "(package vmfork-dkms, or `make install`), then `sudo udevadm trigger "
               "--name-match=" +
               a.path + "`";
    }
    if (a.in_session) {
        return head + " although this process is in group " + group + " (mode " +
               octal_mode(a.mode) + ")";
    }
    if (a.in_group_db) {
        return head + ": you are in group " + group +
               " but this login session is not yet: log in again (or start a shell in it with "
               "`newgrp " +
               group + "`)";
    }
    return head + ": add yourself to group " + group + " (sudo adduser " +
           (a.user.empty() ? std::string("$USER") : a.user) + " " + group + ") and log in again";
}

std::string permission_denied_message(const std::string& path) {
    DeviceAccess a;
    a.path = path;
    struct stat st {};
    if (::stat(path.c_str(), &st) < 0) {
        return "permission denied opening " + path;
    }
    a.gid = st.st_gid;
    a.mode = st.st_mode;
    a.group = group_name(st.st_gid);
    gid_t primary = ::getgid();
    a.user = user_name(::getuid(), &primary);
    a.in_session = process_has_group(st.st_gid);
    a.in_group_db = !a.user.empty() && user_in_group_db(a.user, primary, st.st_gid);
    return permission_denied_message(a);
}

} // namespace vmfork
