// SPDX-License-Identifier: GPL-2.0
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "vmfork/agent/protocol.h"

namespace vmfork {

// Customization of a Linux VM without a reboot (VMware's guest customization): in the
// background, connects to the VM's agent over vsock (waiting for it to answer), sends
// the VM's identity (name as hostname, generation, parent, id, the host's time, fresh
// host entropy) and keeps the agent's report of each step and hook.
//
// start() begins a run (a new VM, a clone, a reset clone); a run still going is
// cancelled first. The destructor cancels and joins. Thread-safe.
class Customizer {
public:
    Customizer() = default;
    ~Customizer();
    Customizer(const Customizer&) = delete;
    Customizer& operator=(const Customizer&) = delete;
    Customizer(Customizer&&) = delete;
    Customizer& operator=(Customizer&&) = delete;

    // identity.time_ns and identity.entropy are filled in when it is sent. ready, if
    // given, is waited for before the first connect (up to its deadline; it polls the
    // cancel callback it gets): a clone's guest that has not taken its new CID yet
    // drops the request.
    using Ready =
        std::function<void(std::chrono::steady_clock::time_point, const std::function<bool()>&)>;
    void start(std::uint32_t cid, agent::Identity identity, std::chrono::seconds timeout,
               Ready ready = {});

    // {"state": "pending" | "done" | "failed" | "no-agent" | "none", "ms": time from
    // start() to the reply, "error": why it failed, "steps"/"hooks": the agent's report}.
    // "failed": a step or hook failed, or the agent broke off; "no-agent": nothing
    // answered on vsock within the timeout.
    [[nodiscard]] nlohmann::json status() const;

private:
    void run(std::stop_token stop, std::uint32_t cid, agent::Identity identity,
             std::chrono::seconds timeout, std::uint64_t run, const Ready& ready);
    void finish(std::uint64_t run, nlohmann::json status);

    mutable std::mutex mu_;
    nlohmann::json status_ = {{"state", "none"}};
    std::uint64_t run_ = 0; // the run status_ belongs to
    std::jthread thread_;
};

} // namespace vmfork
