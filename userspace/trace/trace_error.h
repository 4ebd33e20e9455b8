// SPDX-License-Identifier: GPL-2.0
#pragma once

#include <stdexcept>
#include <string>

namespace vmfork::trace {

// An error the user can act on: what went wrong (with errno, if one is involved) and
// what to do about it. main() prints both and exits 1.
class TraceError : public std::runtime_error {
public:
    TraceError(const std::string& what, std::string hint, int error = 0)
        : std::runtime_error(what), hint_(std::move(hint)), error_(error) {}

    [[nodiscard]] const std::string& hint() const noexcept { return hint_; }
    // The errno behind it, 0 if none.
    [[nodiscard]] int error() const noexcept { return error_; }

private:
    std::string hint_;
    int error_;
};

} // namespace vmfork::trace
