// SPDX-License-Identifier: GPL-2.0
// MemoryObject without the module: the errors a user meets first. The ioctls
// themselves are covered by selftests/vmfork/ inside a VM.
#include "vmfork/memory_object.h"

#include <cerrno>
#include <gtest/gtest.h>
#include <string>

#include "vmfork/device.h"
#include "vmfork/system_error.h"

namespace vmfork {
namespace {

TEST(MemoryObject, MissingDeviceSaysHowToLoadTheModule) {
    try {
        (void)MemoryObject::create(4096, "/nonexistent/vmfork");
        FAIL() << "create() on a missing device must throw";
    } catch (const SystemError& e) {
        EXPECT_EQ(e.error(), ENOENT);
        EXPECT_NE(std::string(e.what()).find("insmod kmod/vmfork.ko"), std::string::npos)
            << e.what();
    }
}

TEST(MemoryObject, OtherDeviceIsRejected) {
    try {
        (void)Device::open("/dev/null");
        FAIL() << "/dev/null must not pass for a vmfork device";
    } catch (const SystemError& e) {
        EXPECT_EQ(e.error(), ENOTTY);
        EXPECT_NE(std::string(e.what()).find("not a vmfork device"), std::string::npos) << e.what();
    }
}

} // namespace
} // namespace vmfork
