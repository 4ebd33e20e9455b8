// SPDX-License-Identifier: GPL-2.0
// The machinery shared by every strategy of `vmfork bench` (harness.h).
#include "harness.h"

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <fmt/format.h>
#include <sys/mman.h>
#include <thread>
#include <unistd.h>

#include "guest_abi.h"
#include "vmfork/system_error.h"

namespace vmfork::bench {

std::string name_of(Strategy s) {
    switch (s) {
    case Strategy::VmforkLive:
        return "vmfork-live";
    case Strategy::VmforkTemplate:
        return "vmfork-template";
    case Strategy::ProcessFork:
        return "process-fork";
    case Strategy::Snapshot:
        return "snapshot-restore";
    case Strategy::FullCopy:
        return "full-copy";
    }
    return "?";
}

bool poolable(Strategy s) {
    return s != Strategy::ProcessFork;
}

double us_between(Clock::time_point a, Clock::time_point b) {
    return std::chrono::duration<double, std::micro>(b - a).count();
}

void progress(const std::string& what) {
    static const auto start = Clock::now();
    fmt::print(stderr, "bench [{:7.1f} s] {}\n", us_between(start, Clock::now()) / 1e6, what);
    std::fflush(stderr);
}

std::unique_ptr<BuiltinProfile> profile_for(Watch& w) {
    BuiltinConfig c;
    c.report_history = 4;
    c.on_report = [&w](const GuestReport& r) { w.on_report(r); };
    return std::make_unique<BuiltinProfile>(std::move(c));
}

std::string describe(const Running& r) {
    std::string s;
    const auto sum = r.watch->summary();
    if (!sum.errors.empty()) {
        s += " verification: " + sum.errors.front();
    }
    for (const auto& e : r.machine->errors()) {
        s += " vCPU: " + e;
    }
    return s;
}

// Waits until r's first report begun in the VM is verified; returns when it arrived.
Clock::time_point wait_running(const Running& r, const std::string& who) {
    const bool ok = r.guest().reports().wait_for(
        [&](const std::vector<GuestReport>& /*reports*/) {
            return r.watch->first().has_value() || r.watch->summary().failures != 0;
        },
        std::chrono::duration_cast<std::chrono::milliseconds>(clone_timeout));
    if (r.watch->summary().failures != 0) {
        throw SystemError(EPROTO, who + " failed verification:" + describe(r));
    }
    if (!ok) {
        throw SystemError(ETIMEDOUT, who + " did not report within " +
                                         std::to_string(clone_timeout.count()) +
                                         " s:" + describe(r));
    }
    return *r.watch->first();
}

Source capture_source(const Running& parent, std::uint64_t generation) {
    Source s;
    s.state = parent.machine->capture();
    s.positions = parent.watch->summary().positions;
    for (const auto& v : s.state.vcpus) {
        s.tsc.push_back(v.msr(VcpuState::msr_ia32_tsc).value_or(0));
    }
    s.generation = generation;
    return s;
}

namespace {

std::unique_ptr<ReportVerifier> verifier_for(const Source& src, const GuestMemory& mem,
                                             const CloneIdentity& id) {
    std::vector<vmfork_guest_slot> slots;
    for (std::size_t i = 0; i < src.state.vcpus.size(); ++i) {
        slots.push_back(
            mem.read<vmfork_guest_slot>(VMFORK_GUEST_SLOTS + i * sizeof(vmfork_guest_slot)));
    }
    return std::make_unique<ReportVerifier>(src.positions, slots, src.tsc, id);
}

} // namespace

// A clone on mem: on the prepared machine pooled if given, else a new one.
Running launch(const Kvm& kvm, GuestMemory mem, const Source& src, const CloneIdentity& id,
               std::optional<Running> pooled) {
    Running r = pooled ? std::move(*pooled) : Running{};
    r.watch->arm(verifier_for(src, mem, id));
    if (r.machine) {
        r.machine->start_clone(std::move(mem), src.state, id);
    } else {
        r.machine = Machine::restore(kvm, std::move(mem), src.state, id, profile_for(*r.watch));
    }
    r.guest().kick();
    return r;
}

Running prepare(const Kvm& kvm) {
    Running r;
    r.machine = Machine::prepare(kvm, 1, profile_for(*r.watch));
    return r;
}

void request_probe(const GuestMemory& mem, std::uint64_t pages) {
    mem.write(VMFORK_GUEST_IDENTITY + offsetof(vmfork_guest_identity, probe_pages), pages);
}

TouchProbe read_probe(const GuestMemory& mem, std::uint64_t generation, std::uint32_t tsc_khz) {
    const auto slot = mem.read<vmfork_guest_slot>(VMFORK_GUEST_SLOTS);
    if (slot.probe_generation != generation || slot.probe_pages == 0 || tsc_khz == 0) {
        throw SystemError(EPROTO, fmt::format("the guest made no first-touch probe at generation "
                                              "{} (its last: generation {}, {} pages; TSC {} kHz)",
                                              generation, slot.probe_generation, slot.probe_pages,
                                              tsc_khz));
    }
    const double ns_per_tick = 1e6 / tsc_khz;
    const auto pages = static_cast<double>(slot.probe_pages);
    return {slot.probe_pages, static_cast<double>(slot.probe_read_ticks) * ns_per_tick / pages,
            static_cast<double>(slot.probe_write_ticks) * ns_per_tick / pages};
}

Mapping anon_mapping(std::uint64_t size, const std::string& what, bool dontfork) {
    Mapping m(size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0,
              what);
    if (dontfork && ::madvise(m.get(), size, MADV_DONTFORK) != 0) {
        throw SystemError::from_errno("madvise(MADV_DONTFORK) of " + what);
    }
    return m;
}

void write_all(int fd, const std::byte* p, std::uint64_t len, const std::string& what) {
    while (len > 0) {
        const ssize_t n = ::write(fd, p, std::min<std::uint64_t>(len, 1ULL << 30));
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            throw SystemError::from_errno("write of " + what);
        }
        p += n;
        len -= static_cast<std::uint64_t>(n);
    }
}

// Host-side first touches of n pages of a clone's RAM, per page.
double touch_ns(std::byte* base, std::uint64_t n, bool write) {
    volatile std::uint8_t sink = 0;
    const auto t0 = Clock::now();
    for (std::uint64_t i = 0; i < n; ++i) {
        auto* p = reinterpret_cast<volatile std::uint8_t*>(base + i * page);
        if (write) {
            *p = static_cast<std::uint8_t>(i);
        } else {
            sink = sink + *p;
        }
    }
    return us_between(t0, Clock::now()) * 1000 / static_cast<double>(n);
}

std::uint64_t mem_available() {
    return Meminfo::read().bytes("MemAvailable");
}

void settle() {
    // Let freed memory and RCU-deferred frees land before a meminfo reading.
    std::this_thread::sleep_for(1500ms);
}

Trial Bench::clone_one(Strategy s, SizeCtx& c, std::optional<Running> pooled) {
    switch (s) {
    case Strategy::VmforkLive:
        return clone_vmfork_live(c, std::move(pooled));
    case Strategy::VmforkTemplate:
        return clone_vmfork_template(c, std::move(pooled));
    case Strategy::ProcessFork:
        return clone_process(c);
    case Strategy::Snapshot: {
        // A new snapshot each time: its write is the parent's pause.
        const Snapshot snap = snapshot(c);
        return clone_snapshot(snap, std::move(pooled), c.size);
    }
    case Strategy::FullCopy:
        return clone_full_copy(c, std::move(pooled));
    }
    throw SystemError(EINVAL, "unknown strategy");
}

} // namespace vmfork::bench
