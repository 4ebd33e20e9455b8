// SPDX-License-Identifier: GPL-2.0
#include "vmfork/system_error.h"

#include <cerrno>

namespace vmfork {

SystemError::SystemError(int error, const std::string& context)
    : std::system_error(error, std::generic_category(), context) {}

SystemError SystemError::from_errno(const std::string& context) {
    return {errno, context};
}

} // namespace vmfork
