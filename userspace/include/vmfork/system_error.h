// SPDX-License-Identifier: GPL-2.0
#pragma once

#include <string>
#include <system_error>

namespace vmfork {

// A failed system call: errno plus what we were doing. what() reads
// "<context>: <strerror(errno)>".
class SystemError : public std::system_error {
public:
    SystemError(int error, const std::string& context);

    // Builds the error from the current errno.
    static SystemError from_errno(const std::string& context);
    // An error that crossed a process boundary as (errno, what()): rebuilt so that
    // what() is message, not message plus a second ": <strerror>".
    static SystemError relayed(int error, const std::string& message);

    [[nodiscard]] int error() const noexcept { return code().value(); }
};

} // namespace vmfork
