// SPDX-License-Identifier: GPL-2.0
#include "vmfork/vmm/customizer.h"

#include <cerrno>
#include <ctime>
#include <span>

#include "vmfork/agent/client.h"
#include "vmfork/agent/vsock.h"
#include "vmfork/random.h"
#include "vmfork/system_error.h"

namespace vmfork {

namespace {

using Clock = std::chrono::steady_clock;

std::uint64_t ms_since(Clock::time_point t0) {
    return static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count());
}

std::string host_entropy() {
    std::string bytes(agent::min_entropy, '\0');
    random_bytes(std::as_writable_bytes(std::span(bytes)), "a clone's entropy");
    return bytes;
}

std::uint64_t realtime_ns() {
    timespec ts{};
    ::clock_gettime(CLOCK_REALTIME, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1000000000ULL +
           static_cast<std::uint64_t>(ts.tv_nsec);
}

} // namespace

// jthread: request_stop() and join(); the run checks the token between attempts.
Customizer::~Customizer() = default;

void Customizer::start(std::uint32_t cid, agent::Identity identity, std::chrono::seconds timeout,
                       Ready ready) {
    if (thread_.joinable()) {
        thread_.request_stop();
        thread_.join();
    }
    std::uint64_t run = 0;
    {
        const std::lock_guard lock(mu_);
        run = ++run_;
        status_ = {{"state", "pending"}};
    }
    thread_ = std::jthread([this, cid, identity = std::move(identity), timeout, run,
                            ready = std::move(ready)](std::stop_token stop) mutable {
        this->run(std::move(stop), cid, std::move(identity), timeout, run, ready);
    });
}

nlohmann::json Customizer::status() const {
    const std::lock_guard lock(mu_);
    return status_;
}

void Customizer::finish(std::uint64_t run, nlohmann::json status) {
    const std::lock_guard lock(mu_);
    if (run == run_) {
        status_ = std::move(status);
    }
}

void Customizer::run(std::stop_token stop, std::uint32_t cid, agent::Identity identity,
                     std::chrono::seconds timeout, std::uint64_t run, const Ready& ready) {
    const auto t0 = Clock::now();
    const auto deadline = t0 + timeout;
    const auto cancelled = [&stop] { return stop.stop_requested(); };
    if (ready) {
        // Bounded: a guest that never signals is asked anyway, as before.
        ready(std::min(deadline, t0 + agent::vsock_reset_wait), cancelled);
    }
    UniqueFd fd;
    try {
        fd = agent::connect_vsock(cid, agent::default_vsock_port, deadline,
                                  [&stop] { return stop.stop_requested(); });
    } catch (const SystemError& e) {
        if (e.error() != ECANCELED) {
            finish(run, {{"state", "no-agent"}, {"ms", ms_since(t0)}, {"error", e.what()}});
        }
        return;
    }
    try {
        identity.time_ns = realtime_ns();
        identity.entropy = host_entropy();
        const auto left =
            std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
        agent::AgentClient client(std::move(fd), std::max(left, std::chrono::milliseconds(1000)));
        const agent::IdentityReply reply = client.identity(identity);
        nlohmann::json status = reply.to_json();
        status["agent_ms"] = reply.ms;
        status["ms"] = ms_since(t0);
        status["state"] = reply.ok ? "done" : "failed";
        if (!reply.ok) {
            std::string failed;
            for (const auto& s : reply.steps) {
                if (!s.ok) {
                    failed += (failed.empty() ? "" : ", ") + s.step + ": " + s.detail;
                }
            }
            for (const auto& h : reply.hooks) {
                if (!h.ok) {
                    failed += (failed.empty() ? "hook " : ", hook ") + h.path +
                              (h.timed_out ? " timed out"
                                           : " exited " + std::to_string(h.status.shell_status()));
                }
            }
            status["error"] = failed;
        }
        finish(run, std::move(status));
    } catch (const std::exception& e) {
        finish(run, {{"state", "failed"}, {"ms", ms_since(t0)}, {"error", e.what()}});
    }
}

} // namespace vmfork
