// SPDX-License-Identifier: GPL-2.0
#pragma once

#include <functional>
#include <type_traits>

#include "vmfork/system_error.h"

namespace vmfork {

// The errno carried by the E that f throws, or -1 if f throws none. E is SystemError
// (error()) or an error type with err(): control::ProtocolError, RequestError.
template <typename E> int thrown_errno(const std::function<void()>& f) {
    try {
        f();
    } catch (const E& e) {
        if constexpr (std::is_base_of_v<SystemError, E>) {
            return e.error();
        } else {
            return e.err();
        }
    }
    return -1;
}

} // namespace vmfork
