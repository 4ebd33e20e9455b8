// SPDX-License-Identifier: GPL-2.0
// snapshot-restore (Firecracker): the parent paused, its RAM written to a memfd; each
// clone maps it MAP_PRIVATE.
#include <sys/mman.h>
#include <unistd.h>

#include "harness.h"
#include "vmfork/system_error.h"

namespace vmfork::bench {

Snapshot Bench::snapshot(SizeCtx& c) {
    Snapshot snap;
    snap.memfd = UniqueFd(::memfd_create("vmfork-bench-snapshot", MFD_CLOEXEC));
    if (!snap.memfd) {
        throw SystemError::from_errno("memfd_create");
    }
    if (::ftruncate(snap.memfd.get(), static_cast<off_t>(c.size)) != 0) {
        throw SystemError::from_errno("ftruncate of the snapshot memfd");
    }
    auto& p = *c.parent.machine;
    const auto t0 = Clock::now();
    p.pause();
    try {
        snap.src = capture_source(c.parent, 1);
        write_all(snap.memfd.get(), p.memory().at(0, c.size), c.size, "the snapshot");
    } catch (...) {
        p.resume();
        throw;
    }
    p.resume();
    snap.pause_us = us_between(t0, Clock::now());
    return snap;
}

Trial Bench::clone_snapshot(const Snapshot& snap, std::optional<Running> pooled,
                            std::uint64_t size) {
    Trial t;
    const auto t0 = Clock::now();
    Mapping ram(size, PROT_READ | PROT_WRITE, MAP_PRIVATE, snap.memfd.get(), 0,
                "the snapshot (MAP_PRIVATE)");
    if (::madvise(ram.get(), size, MADV_DONTFORK) != 0) {
        throw SystemError::from_errno("madvise(MADV_DONTFORK) of a snapshot clone");
    }
    t.fork_us = us_between(t0, Clock::now());
    t.vm =
        launch(kvm_, GuestMemory(std::move(ram)), snap.src, plain_identity(1), std::move(pooled));
    t.running_us = us_between(t0, wait_running(t.vm, "a snapshot-restore clone"));
    t.pause_us = snap.pause_us;
    return t;
}

} // namespace vmfork::bench
