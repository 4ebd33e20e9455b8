// SPDX-License-Identifier: GPL-2.0
#pragma once

// vmfork-agent's parts: agent.cpp accepts connections and forks one process per
// connection, which reads the request and hands it to exec.cpp or identity.cpp. Each
// handler owns the connection until it has sent its last message.

#include <chrono>
#include <cstddef>
#include <string>
#include <sys/types.h>

#include "vmfork/agent/protocol.h"
#include "vmfork/unique_fd.h"

namespace vmfork::agent {

struct Options {
    std::string root = "/"; // prefix of /etc/machine-id and /etc/vmfork/clone.d
    bool set_clock = true;  // --no-clock: never step CLOCK_REALTIME (tests)
    std::chrono::milliseconds idle_timeout{30'000}; // waiting for a request
    std::chrono::milliseconds hook_timeout{30'000}; // each clone.d hook
    std::chrono::milliseconds send_timeout{30'000}; // a host that stops reading
};

// Runs request on conn: Stdout/Stderr frames, then Exit, or Error if it cannot start.
// Throws ProtocolError when the host breaks the protocol or goes away; the command's
// process group is killed then.
void run_exec(int conn, const ExecRequest& request, const Options& options);

// Resets every TCP connection that is not on loopback (SOCK_DESTROY): a clone's are its
// parent's (connections.cpp).
StepReport reset_connections();

// Applies identity (received at received, for the clock step) and returns the report.
IdentityReply apply_identity(const Identity& identity, Clock::time_point received,
                             const Options& options);

// A child in its own process group (a command, a hook): the group is killed and the
// child reaped unless it was reaped already, so that a host that goes away mid-run, or an
// error of ours, leaves nothing behind.
class Child {
public:
    explicit Child(pid_t pid) : pid_(pid) {}
    Child(const Child&) = delete;
    Child& operator=(const Child&) = delete;
    Child(Child&&) = delete;
    Child& operator=(Child&&) = delete;
    ~Child();

    [[nodiscard]] pid_t pid() const noexcept { return pid_; }
    [[nodiscard]] bool reaped() const noexcept { return reaped_; }
    [[nodiscard]] int status() const noexcept { return status_; }

    // Reaps the child if it has exited. Throws SystemError.
    bool try_reap();
    // Waits for the child to exit.
    void wait();
    // SIGKILL to the whole group (a hook past its timeout).
    void kill_group() const noexcept;

private:
    pid_t pid_;
    bool reaped_ = false;
    int status_ = 0;
};

// Both ends of a pipe, O_CLOEXEC. Throws SystemError.
struct Pipe {
    UniqueFd read;
    UniqueFd write;
};
Pipe make_pipe();

// The child side of a fork: default signal handling and an empty signal mask, as a
// program run by a shell expects (the agent ignores SIGPIPE, and exec keeps that).
void reset_signals_in_child();

// write(2) where a failure has nowhere left to be reported (a child about to exit, the
// log itself).
void write_or_ignore(int fd, const void* data, std::size_t len);

// Writes a line "vmfork-agent: <text>" to stderr (the journal under systemd).
void log(const std::string& text);

} // namespace vmfork::agent
