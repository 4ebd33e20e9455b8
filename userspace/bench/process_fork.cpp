// SPDX-License-Identifier: GPL-2.0
// process-fork (HyperFork): the bench process fork()s and the child makes a new KVM
// VM and vCPU on the inherited copy-on-write anonymous RAM of a parent that runs on
// anonymous memory in this process.
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include "harness.h"
#include "vmfork/system_error.h"

namespace vmfork::bench {

namespace {

// The process-fork child's answer on its pipe.
struct ForkAnswer {
    int ok = 0;
    std::int64_t first_ns = 0;
    TouchProbe probe;
    std::array<char, 240> error = {};
};

} // namespace

void Bench::make_anon_parent(SizeCtx& c) {
    auto& p = *c.parent.machine;
    Mapping ram = anon_mapping(c.size, "the process-fork parent's RAM", false);
    Source src;
    p.pause();
    try {
        src = capture_source(c.parent, 1);
        std::memcpy(ram.data(), p.memory().at(0, c.size), c.size);
    } catch (...) {
        p.resume();
        throw;
    }
    p.resume();
    c.anon = launch(kvm_, GuestMemory(std::move(ram)), src, plain_identity(1), std::nullopt);
    (void)wait_running(c.anon, "the process-fork parent");
}

Trial Bench::clone_process(SizeCtx& c, std::uint64_t probe_pages) {
    Trial t;
    auto& a = *c.anon.machine;
    std::array<int, 2> fds{};
    if (::pipe2(fds.data(), O_CLOEXEC) != 0) {
        throw SystemError::from_errno("pipe2");
    }
    UniqueFd rd(fds[0]);
    UniqueFd wr(fds[1]);
    const auto t0 = Clock::now();
    a.pause();
    Source src;
    pid_t pid = -1;
    Clock::time_point f0;
    Clock::time_point f1;
    try {
        src = capture_source(c.anon, 2);
        f0 = Clock::now();
        pid = ::fork();
        if (pid < 0) {
            throw SystemError::from_errno("fork");
        }
    } catch (...) {
        a.resume();
        throw;
    }
    if (pid == 0) {
        // The child: only this thread exists. A new VM on the inherited copy-on-write
        // RAM; answer on the pipe, then stay idle until killed.
        ForkAnswer ans;
        try {
            const CloneIdentity id{2, next_plain_id_ + 1000000};
            GuestMemory ram = GuestMemory::borrow(a.memory().at(0, c.size), c.size);
            if (probe_pages != 0) {
                request_probe(ram, probe_pages);
            }
            Running r = launch(kvm_, std::move(ram), src, id, std::nullopt);
            ans.first_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                               wait_running(r, "the process-fork clone").time_since_epoch())
                               .count();
            if (probe_pages != 0) {
                ans.probe =
                    read_probe(r.machine->memory(), id.generation, src.state.vcpus.at(0).tsc_khz);
            }
            ans.ok = 1;
            if (::write(wr.get(), &ans, sizeof(ans)) < 0) {
                ::_exit(1); // the parent sees EOF and reports the clone as failed
            }
            for (;;) {
                ::pause();
            }
        } catch (const std::exception& e) {
            std::snprintf(ans.error.data(), ans.error.size(), "%s", e.what());
        } catch (...) {
            std::snprintf(ans.error.data(), ans.error.size(), "unknown error");
        }
        if (::write(wr.get(), &ans, sizeof(ans)) < 0) {
            // Nothing more to tell: the parent sees EOF.
        }
        ::_exit(1);
    }
    f1 = Clock::now();
    t.process = ChildProcess(pid);
    a.resume();
    const auto tp = Clock::now();
    ++next_plain_id_;
    wr.reset();
    pollfd pfd{rd.get(), POLLIN, 0};
    const int n = ::poll(&pfd, 1, static_cast<int>(clone_timeout.count() * 1000));
    ForkAnswer ans;
    if (n <= 0 || ::read(rd.get(), &ans, sizeof(ans)) != static_cast<ssize_t>(sizeof(ans))) {
        throw SystemError(n == 0 ? ETIMEDOUT : EIO, "the process-fork clone did not answer");
    }
    if (ans.ok == 0) {
        throw SystemError(EPROTO, std::string("process-fork clone: ") + ans.error.data());
    }
    t.fork_us = us_between(f0, f1);
    t.pause_us = us_between(t0, tp);
    t.running_us = us_between(t0, Clock::time_point(std::chrono::nanoseconds(ans.first_ns)));
    t.probe = ans.probe;
    return t;
}

} // namespace vmfork::bench
