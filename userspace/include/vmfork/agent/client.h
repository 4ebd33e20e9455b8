// SPDX-License-Identifier: GPL-2.0
#pragma once

// The host side of the agent protocol (see protocol.h) on a connected stream socket:
// AF_VSOCK to a guest, AF_UNIX in tests. One request per connection, as the agent
// serves it: hello() may come first, then one exec() or identity().

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "vmfork/agent/protocol.h"
#include "vmfork/system_error.h"
#include "vmfork/unique_fd.h"

namespace vmfork::agent {

// An Error reply of the agent: errno and text as the agent sent them (ENOENT for a
// command that does not exist). Errors of the connection itself are plain SystemErrors
// (ECONNRESET, ETIMEDOUT, EPROTO).
class AgentError : public SystemError {
public:
    AgentError(int error, const std::string& message)
        : SystemError(SystemError::relayed(error, message)) {}
};

struct HelloReply {
    std::string agent;   // "vmfork-agent"
    std::string version; // the agent's release
    unsigned protocol = 0;
};

struct ExecOptions {
    int stdin_fd = -1; // read to its end and sent as the command's stdin; -1: /dev/null
    int stdout_fd = 1; // the command's stdout is written here as it arrives
    int stderr_fd = 2;
    std::map<std::string, std::string> env;
    std::optional<std::string> cwd;
    // The whole run, from request to Exit; nullopt: the client's timeout.
    std::optional<std::chrono::milliseconds> timeout;
};

class AgentClient {
public:
    // timeout bounds each request (hello, identity) and is exec()'s default.
    AgentClient(UniqueFd fd, std::chrono::milliseconds timeout);

    // Checks that an agent answers and which. Throws SystemError/AgentError.
    HelloReply hello();

    // Runs argv in the guest, streaming its output to the given fds, and returns how it
    // ended. A command that cannot be run throws AgentError (ENOENT: no such command); a
    // timeout throws SystemError(ETIMEDOUT) and closes the connection, which makes the
    // agent kill the command.
    ExitStatus exec(const std::vector<std::string>& argv, const ExecOptions& options = {});

    // Applies a clone's identity; the reply reports each step and hook.
    IdentityReply identity(const Identity& identity);

private:
    void start_request(const char* what);
    [[nodiscard]] Clock::time_point deadline(std::chrono::milliseconds timeout) const;
    [[noreturn]] void fail(const char* what, const ProtocolError& e);
    Message expect(const Message& reply, MessageType type, const char* what);

    UniqueFd fd_;
    std::chrono::milliseconds timeout_;
    bool greeted_ = false;
    bool used_ = false; // an exec() or identity() was sent: the agent closes after it
};

} // namespace vmfork::agent
