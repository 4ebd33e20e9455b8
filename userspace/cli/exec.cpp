// SPDX-License-Identifier: GPL-2.0
// `vmfork exec NAME [--] CMD...`: a command in a Linux guest, through vmfork-agent on
// the guest's vsock (the VMM says the guest's CID; the host kernel's vhost-vsock
// carries the connection).
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <fmt/format.h>
#include <thread>
#include <unistd.h>

#include "cli.h"
#include "vmfork/agent/client.h"
#include "vmfork/agent/vsock.h"
#include "vmfork/system_error.h"

namespace vmfork::cli {

UniqueFd connect_agent(const Globals& g, const std::string& name, std::chrono::seconds timeout) {
    const auto dir = runtime_dir();
    if (!control::RuntimeDir::valid_name(name)) {
        throw CliError("'" + name + "' is not a VM name: see `vmfork ls`");
    }
    const auto call_timeout = std::chrono::duration_cast<std::chrono::milliseconds>(g.timeout);
    const json info = call(dir, name, "info", json::object(), call_timeout);
    if (info.value("guest", std::string()) != "linux") {
        throw CliError(name + " runs the built-in guest, which has no agent: `vmfork exec` needs "
                              "a Linux guest with vmfork-agent");
    }
    // A VM that nothing runs in would only let the connect time out.
    if (const auto why = stopped_vm(info)) {
        throw CliError(name + " is " + *why + ": nothing runs in it (`vmfork console " + name +
                       "` shows how it ended)");
    }
    if (info.value("state", std::string()) == "template") {
        throw CliError(name + " is a template (frozen): exec in one of its clones");
    }
    const auto cid = info.value("vsock_cid", std::uint64_t{0});
    if (cid == 0) {
        throw CliError(name + " has no vsock device (its host had no /dev/vhost-vsock when it "
                              "started: modprobe vhost_vsock, then start the VM again)");
    }
    // A clone that just started drops a connection request sent before its guest took
    // the vsock reset and new CID, and the request then costs a whole connect attempt:
    // wait for the VMM to see the guest take it (bounded; a guest that never does is
    // asked anyway). The agent may still be starting: connect_vsock() retries until
    // the timeout.
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    const auto ready_by =
        std::min(deadline, std::chrono::steady_clock::now() + agent::vsock_reset_wait);
    for (json i = info;
         i.value("vsock_reset_pending", false) && std::chrono::steady_clock::now() < ready_by;) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
        i = call(dir, name, "info", json::object(), call_timeout);
    }
    try {
        return agent::connect_vsock(static_cast<std::uint32_t>(cid), agent::default_vsock_port,
                                    deadline);
    } catch (const SystemError& e) {
        throw CliError(fmt::format("no agent answers in {} ({}) within {} s: the guest needs "
                                   "vmfork-agent running (the default Linux guest starts it)",
                                   name, e.what(), timeout.count()));
    }
}

int cmd_exec(const Globals& g, const ExecOptions& o) {
    if (o.argv.empty()) {
        throw CliError("give the command to run: vmfork exec NAME -- CMD [ARG...]");
    }
    const std::chrono::seconds connect_timeout =
        o.timeout_s != 0 ? std::chrono::seconds(o.timeout_s) : g.timeout;
    UniqueFd fd = connect_agent(g, o.name, connect_timeout);
    agent::AgentClient client(
        std::move(fd), std::chrono::duration_cast<std::chrono::milliseconds>(connect_timeout));
    agent::ExecOptions opts;
    opts.stdin_fd = o.interactive ? STDIN_FILENO : -1;
    opts.stdout_fd = STDOUT_FILENO;
    opts.stderr_fd = STDERR_FILENO;
    if (o.timeout_s != 0) {
        opts.timeout = std::chrono::seconds(o.timeout_s);
    } else {
        opts.timeout = std::chrono::hours(24 * 365); // no limit on the command itself
    }
    try {
        return client.exec(o.argv, opts).shell_status();
    } catch (const agent::AgentError& e) {
        fmt::print(stderr, "vmfork: {}: {}\n", o.name, e.what());
        // As a shell: 127 for a command not found, 126 for one that cannot run.
        return e.code().value() == ENOENT ? 127 : 126;
    } catch (const SystemError& e) {
        if (e.code().value() == ETIMEDOUT) {
            throw CliError(fmt::format("{}: the command did not end within --timeout {} s (it "
                                       "was killed)",
                                       o.name, o.timeout_s));
        }
        throw CliError(o.name + ": " + e.what());
    }
}

} // namespace vmfork::cli
