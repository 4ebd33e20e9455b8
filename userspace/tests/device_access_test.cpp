// SPDX-License-Identifier: GPL-2.0
#include "vmfork/device_access.h"

#include <array>
#include <cstdlib>
#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <string>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "vmfork/unique_fd.h"

namespace vmfork {
namespace {

bool contains(const std::string& text, const std::string& part) {
    return text.find(part) != std::string::npos;
}

DeviceAccess kvm_node() {
    DeviceAccess a;
    a.path = "/dev/vmfork";
    a.gid = 108;
    a.mode = S_IFCHR | 0660;
    a.group = "kvm";
    a.user = "alice";
    return a;
}

TEST(DeviceAccess, OutsideTheGroupSaysHowToJoin) {
    const std::string m = permission_denied_message(kvm_node());
    EXPECT_EQ(m, "permission denied opening /dev/vmfork: add yourself to group kvm "
                 "(sudo adduser alice kvm) and log in again");
}

TEST(DeviceAccess, UnknownUserNameFallsBackToUserVariable) {
    DeviceAccess a = kvm_node();
    a.user.clear();
    EXPECT_TRUE(contains(permission_denied_message(a), "(sudo adduser $USER kvm)"));
}

TEST(DeviceAccess, JoinedButNotLoggedInAgain) {
    DeviceAccess a = kvm_node();
    a.in_group_db = true;
    const std::string m = permission_denied_message(a);
    EXPECT_TRUE(contains(m, "you are in group kvm but this login session is not yet")) << m;
    EXPECT_TRUE(contains(m, "newgrp kvm")) << m;
    EXPECT_FALSE(contains(m, "adduser")) << m;
}

TEST(DeviceAccess, NodeNotHandedToAGroupNamesTheUdevRule) {
    DeviceAccess a = kvm_node();
    a.gid = 0;
    a.group = "root";
    a.mode = S_IFCHR | 0600;
    const std::string m = permission_denied_message(a);
    EXPECT_TRUE(contains(m, "(group root, mode 0600)")) << m;
    EXPECT_TRUE(contains(m, "udev rule is not in effect")) << m;
    EXPECT_FALSE(contains(m, "adduser")) << m;
    // A group without read-write access does not help either.
    a = kvm_node();
    a.mode = S_IFCHR | 0640;
    EXPECT_TRUE(contains(permission_denied_message(a), "udev rule is not in effect"));
}

TEST(DeviceAccess, GroupWithoutName) {
    DeviceAccess a = kvm_node();
    a.group.clear();
    EXPECT_TRUE(contains(permission_denied_message(a), "add yourself to group 108"));
}

// The real lookup: a file of group daemon (gid 1 on Debian) mode 0660 as seen by an
// unprivileged user (nobody, not in group daemon): the message must name the user and
// the group.
TEST(DeviceAccess, RealLookupForAnUnprivilegedUser) {
    if (::geteuid() != 0) {
        GTEST_SKIP() << "needs root to act as another user";
    }
    const group* daemon_group = ::getgrgid(1); // NOLINT(concurrency-mt-unsafe)
    if (daemon_group == nullptr || std::string(daemon_group->gr_name) != "daemon") {
        GTEST_SKIP() << "no group daemon with gid 1";
    }
    std::string dir = "/tmp/vmfork-access-test.XXXXXX";
    ASSERT_NE(::mkdtemp(dir.data()), nullptr);
    ASSERT_EQ(::chmod(dir.c_str(), 0755), 0);
    const std::string node = dir + "/node";
    {
        const UniqueFd fd(::open(node.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0660));
        ASSERT_TRUE(fd);
    }
    ASSERT_EQ(::chown(node.c_str(), 0, 1), 0);
    ASSERT_EQ(::chmod(node.c_str(), 0660), 0);
    std::array<int, 2> p{-1, -1};
    ASSERT_EQ(::pipe(p.data()), 0);
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        ::close(p[0]);
        constexpr gid_t nobody = 65534;
        if (::setgroups(0, nullptr) != 0 || ::setgid(nobody) != 0 || ::setuid(nobody) != 0) {
            ::_exit(3);
        }
        const std::string m = permission_denied_message(node);
        static_cast<void>(::write(p[1], m.data(), m.size()));
        ::_exit(0);
    }
    ::close(p[1]);
    std::string m;
    std::array<char, 512> buf{};
    ssize_t n = 0;
    while ((n = ::read(p[0], buf.data(), buf.size())) > 0) {
        m.append(buf.data(), static_cast<std::size_t>(n));
    }
    ::close(p[0]);
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    ::unlink(node.c_str());
    ::rmdir(dir.c_str());
    EXPECT_EQ(m,
              "permission denied opening " + node +
                  ": add yourself to group daemon (sudo adduser nobody daemon) and log in again");
}

} // namespace
} // namespace vmfork
