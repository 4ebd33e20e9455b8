// SPDX-License-Identifier: GPL-2.0
// The vmfork strategies: a live fork of the running parent (pause, capture,
// VMFORK_VM_FORK, resume) and a fork of a frozen template (no pause at all).
#include <fmt/format.h>

#include "harness.h"
#include "vmfork/system_error.h"
#include "vmfork/vmm/guests/builtin/loader.h"

namespace vmfork::bench {

void Bench::boot(SizeCtx& c) {
    const auto used0 = Meminfo::read().used();
    MemoryObject ram = dev_.create_memory(c.size);
    const CloneIdentity id{0, ram.id()};
    c.parent.watch->arm(std::make_unique<ReportVerifier>(1, id));
    BuiltinGuestLoader loader(100, report_every, std::uint64_t{o_.pace_ms} * 1000);
    MachineConfig config;
    config.mem_size = c.size;
    const auto t0 = Clock::now();
    c.parent.machine =
        Machine::boot(kvm_, std::move(ram), config, profile_for(*c.parent.watch), loader);
    const bool ok = c.parent.guest().reports().wait_for(
        [&](const std::vector<GuestReport>& /*r*/) {
            const auto s = c.parent.watch->summary();
            return s.reports >= 2 || s.failures != 0;
        },
        std::chrono::duration_cast<std::chrono::milliseconds>(clone_timeout * 2));
    if (!ok || c.parent.watch->summary().failures != 0) {
        throw SystemError(ok ? EPROTO : ETIMEDOUT,
                          "the parent guest did not boot and report:" + describe(c.parent));
    }
    // A guest with all RAM written holds at least its RAM: the meminfo delta can read
    // low when the kernel reclaimed cache meanwhile.
    c.one_guest_bytes =
        std::max(static_cast<double>(Meminfo::read().used()) - static_cast<double>(used0),
                 static_cast<double>(c.size));
    progress(fmt::format("{}: parent booted, all RAM filled, in {:.1f} s",
                         bench::format_bytes(static_cast<double>(c.size)),
                         us_between(t0, Clock::now()) / 1e6));
}

void Bench::make_template(SizeCtx& c) {
    auto& p = *c.parent.machine;
    // The parent's first live fork, with all its RAM written since boot: every page is
    // write-protected and frozen now, where a later fork has only what the parent wrote
    // since the one before (the medians of the vmfork-live rows).
    const auto t0 = Clock::now();
    p.pause();
    try {
        c.tmpl_src = capture_source(c.parent, 1);
        const auto f0 = Clock::now();
        c.tmpl.emplace(p.memory().object().fork(ForkMode::Live));
        add("first_live_fork_us", Strategy::VmforkLive, "cold", c.size, 0, 0,
            us_between(f0, Clock::now()));
    } catch (...) {
        p.resume();
        throw;
    }
    p.resume();
    add("first_live_pause_us", Strategy::VmforkLive, "cold", c.size, 0, 0,
        us_between(t0, Clock::now()));
    // Freeze it: every later fork of it is O(1). The child of this fork is not used.
    (void)c.tmpl->fork(ForkMode::Template);
}

Trial Bench::clone_vmfork_live(SizeCtx& c, std::optional<Running> pooled) {
    auto& p = *c.parent.machine;
    Trial t;
    const auto t0 = Clock::now();
    p.pause();
    Source src;
    std::optional<MemoryObject> child;
    Clock::time_point f0;
    try {
        src = capture_source(c.parent, 1);
        f0 = Clock::now();
        child.emplace(p.memory().object().fork(ForkMode::Live));
        t.fork_us = us_between(f0, Clock::now());
    } catch (...) {
        p.resume();
        throw;
    }
    p.resume();
    t.pause_us = us_between(t0, Clock::now());
    const CloneIdentity id{1, child->id()};
    t.vm = launch(kvm_, GuestMemory(std::move(*child)), src, id, std::move(pooled));
    t.running_us = us_between(t0, wait_running(t.vm, "a vmfork-live clone"));
    return t;
}

Trial Bench::clone_vmfork_template(SizeCtx& c, std::optional<Running> pooled) {
    Trial t;
    const auto t0 = Clock::now();
    MemoryObject child = c.tmpl->fork(ForkMode::Live);
    t.fork_us = us_between(t0, Clock::now());
    t.pause_us = 0; // the template was frozen once, before
    const CloneIdentity id{1, child.id()};
    t.vm = launch(kvm_, GuestMemory(std::move(child)), c.tmpl_src, id, std::move(pooled));
    t.running_us = us_between(t0, wait_running(t.vm, "a vmfork-template clone"));
    return t;
}

} // namespace vmfork::bench
