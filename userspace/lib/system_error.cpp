// SPDX-License-Identifier: GPL-2.0
#include "vmfork/system_error.h"

#include <cerrno>

namespace vmfork {

SystemError::SystemError(int error, const std::string& context)
    : std::system_error(error, std::generic_category(), context) {}

SystemError SystemError::from_errno(const std::string& context) {
    return {errno, context};
}

SystemError SystemError::relayed(int error, const std::string& message) {
    const std::string suffix = ": " + std::generic_category().message(error);
    if (message.size() > suffix.size() &&
        message.compare(message.size() - suffix.size(), suffix.size(), suffix) == 0) {
        return {error, message.substr(0, message.size() - suffix.size())};
    }
    return {error, message};
}

} // namespace vmfork
