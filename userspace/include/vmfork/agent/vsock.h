// SPDX-License-Identifier: GPL-2.0
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>

#include "vmfork/unique_fd.h"

namespace vmfork::agent {

// The longest a host connects later to let a new clone's guest take its vsock
// transport reset and new CID first (a request sent before that is dropped); a guest
// that never signals it is asked anyway. The customizer and `vmfork exec` wait this.
constexpr auto vsock_reset_wait = std::chrono::seconds(5);

// A blocking stream socket connected to a guest's agent at cid:port (AF_VSOCK; the
// host kernel's vhost-vsock carries it). A refused or reset connection, or a guest
// whose transport is not up yet (an agent not listening yet, a booting guest, a clone
// resetting its transport) is retried every 100 ms until
// deadline or until cancelled() says stop. Throws SystemError with the last errno
// (ETIMEDOUT if no attempt ended before the deadline, ECANCELED if cancelled). A
// connect the kernel times out (2 s) is retried too: a clone just restored may be slow.
UniqueFd connect_vsock(std::uint32_t cid, std::uint32_t port,
                       std::chrono::steady_clock::time_point deadline,
                       const std::function<bool()>& cancelled = {});

} // namespace vmfork::agent
