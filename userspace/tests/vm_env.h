// SPDX-License-Identifier: GPL-2.0
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

// In a SetUp(): skips the test where /dev/kvm or /dev/vmfork cannot be used (the VM
// tests run inside the test VM; on the host they only skip).
#define VMFORK_REQUIRE_KVM_AND_VMFORK()                                                            \
    do {                                                                                           \
        if (::access("/dev/kvm", R_OK | W_OK) != 0) {                                              \
            GTEST_SKIP() << "no usable /dev/kvm";                                                  \
        }                                                                                          \
        if (::access("/dev/vmfork", R_OK | W_OK) != 0) {                                           \
            GTEST_SKIP() << "no /dev/vmfork: insmod kmod/vmfork.ko";                               \
        }                                                                                          \
    } while (0)
