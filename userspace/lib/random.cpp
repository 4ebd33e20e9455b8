// SPDX-License-Identifier: GPL-2.0
#include "vmfork/random.h"

#include <cerrno>
#include <string>
#include <sys/random.h>

#include "vmfork/system_error.h"

namespace vmfork {

void random_bytes(std::span<std::byte> out, const char* what) {
    std::size_t done = 0;
    while (done < out.size()) {
        const ssize_t n = ::getrandom(out.data() + done, out.size() - done, 0);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            throw SystemError::from_errno(std::string("getrandom for ") + what);
        }
        done += static_cast<std::size_t>(n);
    }
}

} // namespace vmfork
