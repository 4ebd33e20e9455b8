// SPDX-License-Identifier: GPL-2.0
#pragma once

#include <memory>

struct nl_sock;

namespace vmfork {

// Owns a libnl socket (nl_socket_free on destruction), without pulling libnl's
// headers into the public ones.
struct NlSockDeleter {
    void operator()(nl_sock* s) const noexcept;
};
using NlSock = std::unique_ptr<nl_sock, NlSockDeleter>;

} // namespace vmfork
