// SPDX-License-Identifier: GPL-2.0
#pragma once

#include <optional>
#include <span>
#include <string>
#include <sys/types.h>
#include <vector>

#include "vmfork/unique_fd.h"

// The socket between a fork and a warm VMM of the pool (pool.h): SOCK_SEQPACKET, one
// message per connection, a short text and descriptors (SCM_RIGHTS). "launch N" carries
// the ready pipe, the spec, the log, the memory object, the state and N disk layers, in
// that order; "exit" none.
namespace vmfork::pool_socket {

// At most this many descriptors in one message (5 + launch_fd::max_extra, under the
// kernel's SCM_MAX_FD of 253).
inline constexpr std::size_t max_fds = 205;
inline constexpr std::size_t max_text = 64;

std::string warm_path(const std::string& pool, unsigned cpus, pid_t pid);
std::string taken_path(const std::string& pool, pid_t pid);

// Bound and listening at path (mode 0600); throws SystemError.
UniqueFd listen(const std::string& path);
// Connected to path; invalid if nobody listens there any more.
UniqueFd connect(const std::string& path);
// false if the peer is gone (EPIPE, ECONNRESET); throws SystemError otherwise.
bool send(int sock, const std::string& text, std::span<const int> fds);

struct Message {
    std::string text;
    std::vector<UniqueFd> fds;
};
// One message from a connection of the same user (or root); nullopt with the reason
// in why if it is none (a peer of another user, no data, too many descriptors).
std::optional<Message> receive(int sock, std::string& why);

} // namespace vmfork::pool_socket
