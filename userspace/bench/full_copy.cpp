// SPDX-License-Identifier: GPL-2.0
// full-copy: new anonymous memory and a memcpy of all the parent's RAM.
#include <cstring>

#include "harness.h"

namespace vmfork::bench {

Trial Bench::clone_full_copy(SizeCtx& c, std::optional<Running> pooled) {
    auto& p = *c.parent.machine;
    Trial t;
    const auto t0 = Clock::now();
    p.pause();
    Source src;
    Mapping ram;
    try {
        src = capture_source(c.parent, 1);
        ram = anon_mapping(c.size, "a full copy", true);
        std::memcpy(ram.data(), p.memory().at(0, c.size), c.size);
        t.fork_us = us_between(t0, Clock::now());
    } catch (...) {
        p.resume();
        throw;
    }
    p.resume();
    t.pause_us = us_between(t0, Clock::now());
    t.vm = launch(kvm_, GuestMemory(std::move(ram)), src, plain_identity(1), std::move(pooled));
    t.running_us = us_between(t0, wait_running(t.vm, "a full-copy clone"));
    return t;
}

} // namespace vmfork::bench
