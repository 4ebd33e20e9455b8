// SPDX-License-Identifier: GPL-2.0
#include "vmfork/vmm/guest_profile.h"

#include <cerrno>

#include "vmfork/system_error.h"

namespace vmfork {

void GuestProfile::console_input(std::span<const std::uint8_t> /*bytes*/) {
    throw SystemError(ENOTSUP, "this guest's console takes no input");
}

} // namespace vmfork
