// SPDX-License-Identifier: GPL-2.0
#include "vmfork/system_error.h"

#include <cerrno>
#include <gtest/gtest.h>
#include <string>

namespace vmfork {
namespace {

TEST(SystemError, CarriesErrnoAndContext) {
    const SystemError e(ENOENT, "open /nowhere");
    EXPECT_EQ(e.error(), ENOENT);
    EXPECT_EQ(e.code(), std::errc::no_such_file_or_directory);
    const std::string what = e.what();
    EXPECT_EQ(what.rfind("open /nowhere: ", 0), 0U) << what;
    EXPECT_NE(what.find("No such file"), std::string::npos) << what;
}

TEST(SystemError, FromErrno) {
    errno = EBADF;
    const SystemError e = SystemError::from_errno("close");
    EXPECT_EQ(e.error(), EBADF);
}

} // namespace
} // namespace vmfork

namespace vmfork {
namespace {

TEST(SystemErrorRelayed, DoesNotRepeatTheErrnoText) {
    const SystemError original(ENOENT, "cannot open x");
    const auto relayed = SystemError::relayed(ENOENT, original.what());
    EXPECT_EQ(relayed.error(), ENOENT);
    EXPECT_STREQ(relayed.what(), original.what());
    const auto plain = SystemError::relayed(EINVAL, "no VM named y");
    EXPECT_EQ(std::string(plain.what()), "no VM named y: Invalid argument");
}

} // namespace
} // namespace vmfork
