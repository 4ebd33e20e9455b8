// SPDX-License-Identifier: GPL-2.0
#include "vmfork/unique_fd.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <type_traits>
#include <unistd.h>
#include <utility>

namespace vmfork {
namespace {

bool is_open(int fd) {
    return ::fcntl(fd, F_GETFD) >= 0;
}

int open_null() {
    const int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    EXPECT_GE(fd, 0) << "cannot open /dev/null";
    return fd;
}

TEST(UniqueFd, DefaultIsInvalid) {
    UniqueFd fd;
    EXPECT_FALSE(fd.valid());
    EXPECT_FALSE(fd);
    EXPECT_EQ(fd.get(), -1);
}

TEST(UniqueFd, ClosesOnDestruction) {
    int raw = open_null();
    {
        UniqueFd fd(raw);
        EXPECT_TRUE(fd);
        EXPECT_EQ(fd.get(), raw);
    }
    EXPECT_FALSE(is_open(raw)) << "the destructor must close the fd";
}

TEST(UniqueFd, IsMoveOnly) {
    static_assert(!std::is_copy_constructible_v<UniqueFd>);
    static_assert(!std::is_copy_assignable_v<UniqueFd>);
    static_assert(std::is_nothrow_move_constructible_v<UniqueFd>);
    static_assert(std::is_nothrow_move_assignable_v<UniqueFd>);
}

TEST(UniqueFd, MoveConstructTransfersOwnership) {
    int raw = open_null();
    UniqueFd a(raw);
    UniqueFd b(std::move(a));
    EXPECT_FALSE(a.valid()); // NOLINT(bugprone-use-after-move): the moved-from state is defined
    EXPECT_EQ(b.get(), raw);
    EXPECT_TRUE(is_open(raw));
}

TEST(UniqueFd, MoveAssignClosesTheOldFd) {
    int first = open_null();
    int second = open_null();
    UniqueFd a(first);
    UniqueFd b(second);
    a = std::move(b);
    EXPECT_FALSE(is_open(first)) << "move assignment must close the fd it replaces";
    EXPECT_EQ(a.get(), second);
    EXPECT_TRUE(is_open(second));
}

TEST(UniqueFd, SelfMoveAssignKeepsTheFd) {
    int raw = open_null();
    UniqueFd a(raw);
    UniqueFd& alias = a;
    a = std::move(alias);
    EXPECT_EQ(a.get(), raw);
    EXPECT_TRUE(is_open(raw));
}

TEST(UniqueFd, ReleaseGivesUpOwnership) {
    int raw = open_null();
    {
        UniqueFd fd(raw);
        EXPECT_EQ(fd.release(), raw);
        EXPECT_FALSE(fd);
    }
    EXPECT_TRUE(is_open(raw)) << "a released fd must stay open";
    ::close(raw);
}

TEST(UniqueFd, ResetClosesAndAdopts) {
    int first = open_null();
    int second = open_null();
    UniqueFd fd(first);
    fd.reset(second);
    EXPECT_FALSE(is_open(first));
    EXPECT_EQ(fd.get(), second);
    fd.reset();
    EXPECT_FALSE(is_open(second));
    EXPECT_FALSE(fd);
}

} // namespace
} // namespace vmfork
