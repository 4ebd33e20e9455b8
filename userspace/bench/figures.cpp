// SPDX-License-Identifier: GPL-2.0
// The figures beside clone times: memory and clones/s of many idle clones, the cost
// of a first touch of a clone's page, and reset against pages dirtied.
#include <algorithm>
#include <array>
#include <cstring>
#include <fmt/format.h>
#include <sys/mman.h>
#include <unistd.h>

#include "harness.h"
#include "vmfork/system_error.h"

namespace vmfork::bench {

void Bench::density(Strategy s, SizeCtx& c, std::vector<std::string>& notes) {
    const std::string name = name_of(s);
    settle();
    const double used0 = static_cast<double>(Meminfo::read().used());
    std::vector<Trial> kept;
    std::optional<Snapshot> snap;
    const auto t0 = Clock::now();
    if (s == Strategy::Snapshot) {
        snap.emplace(snapshot(c));
    }
    std::string stopped;
    const std::array checkpoints = {1U, 10U, 25U, 50U, 75U, 100U, 150U, 200U};
    for (unsigned i = 0; i < o_.clones; ++i) {
        const std::uint64_t need = reserve + (s == Strategy::FullCopy ? c.size : 16ULL << 20);
        if (mem_available() < need) {
            stopped = fmt::format("{}: {} clones fit (MemAvailable below {} for the next)", name, i,
                                  bench::format_bytes(static_cast<double>(need)));
            break;
        }
        kept.push_back(snap ? clone_snapshot(*snap, std::nullopt, c.size)
                            : clone_one(s, c, std::nullopt));
        const unsigned n = i + 1;
        if (std::find(checkpoints.begin(), checkpoints.end(), n) != checkpoints.end()) {
            add("mem_bytes", s, "cold", c.size, n, 0,
                c.one_guest_bytes + static_cast<double>(Meminfo::read().used()) - used0);
        }
        if (n % 25 == 0) {
            progress(fmt::format("{} density: {} clones running", name, n));
        }
    }
    const double secs = us_between(t0, Clock::now()) / 1e6;
    const auto n = static_cast<unsigned>(kept.size());
    settle();
    const double total = c.one_guest_bytes + static_cast<double>(Meminfo::read().used()) - used0;
    add("clones", s, "cold", c.size, 0, 0, n);
    add("clones_per_s", s, "cold", c.size, n, 0, n / secs);
    add("mem_total_bytes", s, "cold", c.size, n, 0, total);
    add("mem_vs_one_guest", s, "cold", c.size, n, 0, total / c.one_guest_bytes);
    if (!stopped.empty()) {
        notes.push_back(stopped);
    }
    progress(fmt::format("{} density: {} clones in {:.1f} s, parent + clones use {}", name, n, secs,
                         bench::format_bytes(total)));
    kept.clear();
}

void Bench::cow(SizeCtx& c) {
    const std::uint64_t n = std::min<std::uint64_t>(4096, c.size / page / 8);
    const std::uint64_t rd_off = c.size / 4;
    const std::uint64_t wr_off = c.size / 2;
    for (unsigned r = 0; r < o_.repeat; ++r) {
        {
            // vmfork: a fresh child of the template, every page shared.
            const GuestMemory g(c.tmpl->fork(ForkMode::Live));
            add("first_read_ns", Strategy::VmforkTemplate, "", c.size, n, r,
                touch_ns(g.at(rd_off, n * page), n, false));
            add("first_write_ns", Strategy::VmforkTemplate, "", c.size, n, r,
                touch_ns(g.at(wr_off, n * page), n, true));
        }
        {
            // The kernel's anonymous COW (what a process-fork clone pays): touched 4 KiB
            // pages, fork() a child that holds them, write in the parent.
            const Mapping m = anon_mapping(2 * n * page, "anonymous COW pages", false);
            (void)::madvise(m.get(), m.size(), MADV_NOHUGEPAGE);
            std::memset(m.data(), 0x5a, m.size());
            const pid_t pid = ::fork();
            if (pid < 0) {
                throw SystemError::from_errno("fork");
            }
            if (pid == 0) {
                for (;;) {
                    ::pause();
                }
            }
            const ChildProcess child(pid);
            add("first_read_ns", Strategy::ProcessFork, "", c.size, n, r,
                touch_ns(m.data(), n, false));
            add("first_write_ns", Strategy::ProcessFork, "", c.size, n, r,
                touch_ns(m.data() + n * page, n, true));
        }
        {
            // snapshot-restore: a MAP_PRIVATE mapping of a memfd holding the RAM.
            const UniqueFd fd(::memfd_create("vmfork-bench-cow", MFD_CLOEXEC));
            if (!fd || ::ftruncate(fd.get(), static_cast<off_t>(2 * n * page)) != 0) {
                throw SystemError::from_errno("memfd for the COW figures");
            }
            {
                const Mapping w(2 * n * page, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0,
                                "memfd (fill)");
                std::memset(w.data(), 0x5a, w.size());
            }
            const Mapping m(2 * n * page, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd.get(), 0,
                            "memfd (MAP_PRIVATE)");
            add("first_read_ns", Strategy::Snapshot, "", c.size, n, r,
                touch_ns(m.data(), n, false));
            add("first_write_ns", Strategy::Snapshot, "", c.size, n, r,
                touch_ns(m.data() + n * page, n, true));
        }
        {
            // full copy: every page is already private and mapped (paid for up front).
            const Mapping m = anon_mapping(2 * n * page, "full-copy pages", true);
            std::memset(m.data(), 0x5a, m.size());
            add("first_read_ns", Strategy::FullCopy, "", c.size, n, r,
                touch_ns(m.data(), n, false));
            add("first_write_ns", Strategy::FullCopy, "", c.size, n, r,
                touch_ns(m.data() + n * page, n, true));
        }
    }
    // The same from inside the guest, through KVM: the first touches the built-in guest
    // times at the start of a clone (TSC), on vmfork's shared pages and on a process
    // fork's anonymous COW pages.
    for (unsigned r = 0; r < o_.repeat; ++r) {
        GuestMemory g(c.tmpl->fork(ForkMode::Live));
        request_probe(g, n);
        const CloneIdentity id{c.tmpl_src.generation, g.object().id()};
        const Running vm = launch(kvm_, std::move(g), c.tmpl_src, id, std::nullopt);
        (void)wait_running(vm, "a probed vmfork-template clone");
        const TouchProbe p =
            read_probe(vm.machine->memory(), id.generation, c.tmpl_src.state.vcpus.at(0).tsc_khz);
        add("guest_first_read_ns", Strategy::VmforkTemplate, "", c.size, n, r, p.read_ns);
        add("guest_first_write_ns", Strategy::VmforkTemplate, "", c.size, n, r, p.write_ns);
        if (!c.anon.machine) {
            continue; // no process-fork parent (--strategies left it out)
        }
        const Trial t = clone_process(c, n);
        add("guest_first_read_ns", Strategy::ProcessFork, "", c.size, n, r, t.probe.read_ns);
        add("guest_first_write_ns", Strategy::ProcessFork, "", c.size, n, r, t.probe.write_ns);
    }
    progress(fmt::format("COW and first-read cost measured ({} pages per sample)", n));
}

void Bench::reset(SizeCtx& c) {
    const std::array counts = {1ULL, 10ULL, 100ULL, 1000ULL, 10000ULL};
    // A running clone of the template, reset to its fork point again and again.
    GuestMemory ram(c.tmpl->fork(ForkMode::Live));
    const CloneIdentity id{1, ram.object().id()};
    Running vm = launch(kvm_, std::move(ram), c.tmpl_src, id, std::nullopt);
    (void)wait_running(vm, "the clone to reset");
    const std::uint64_t off = c.size / 4;
    for (const auto k : counts) {
        if (off + k * page > c.size) {
            continue;
        }
        for (unsigned r = 0; r < o_.repeat; ++r) {
            {
                // The ioctl alone, on a child object that is not running.
                const GuestMemory g(c.tmpl->fork(ForkMode::Live));
                (void)touch_ns(g.at(off, k * page), k, true);
                const auto t0 = Clock::now();
                const_cast<MemoryObject&>(g.object()).reset();
                add("reset_ioctl_us", Strategy::VmforkTemplate, "", c.size, k, r,
                    us_between(t0, Clock::now()));
            }
            // The whole VM: pause, VMFORK_RESET, load the fork-time state, resume, and
            // run to the first verified report after it.
            (void)touch_ns(vm.machine->memory().at(off, k * page), k, true);
            const auto t0 = Clock::now();
            vm.machine->pause();
            vm.watch->rewind();
            vm.machine->reset_to(c.tmpl_src.state, id);
            const auto t1 = Clock::now();
            vm.guest().kick();
            const auto first = wait_running(vm, "a reset clone");
            add("reset_us", Strategy::VmforkTemplate, "", c.size, k, r, us_between(t0, t1));
            add("reset_running_us", Strategy::VmforkTemplate, "", c.size, k, r,
                us_between(t0, first));
        }
    }
    progress("reset against pages dirtied measured");
}

} // namespace vmfork::bench
