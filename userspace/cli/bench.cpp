// SPDX-License-Identifier: GPL-2.0
// vmfork bench: clone the same warmed built-in guest with vmfork (live and template)
// and with the methods users would pick instead (process fork(), snapshot-restore,
// full copy), verify every clone, and report medians, spreads and ratios in one run.
//
// Everything runs in this process (process-fork clones in fork()ed children of it):
// a clone is a new KVM VM on the clone's RAM, restored from the parent's captured
// state, kicked (Machine::kick, so that no strategy waits for the guest's next timer
// tick) and counted once its first report begun in the clone is verified.
#include "bench.h"

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <poll.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

#include "guest_abi.h"
#include "vmfork/bench/stats.h"
#include "vmfork/device.h"
#include "vmfork/kvm.h"
#include "vmfork/parse_size.h"
#include "vmfork/system_error.h"
#include "vmfork/vmm/boot_loader.h"
#include "vmfork/vmm/machine.h"

namespace vmfork::cli {

namespace {

using bench::Meminfo;
using bench::Sample;
using bench::Summary;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr std::uint64_t page = 4096;
constexpr std::uint64_t report_every = 1000;
constexpr auto clone_timeout = 300s;            // nested KVM under TCG is slow
constexpr std::uint64_t reserve = 768ULL << 20; // MemAvailable kept free while cloning

enum class Strategy { VmforkLive, VmforkTemplate, ProcessFork, Snapshot, FullCopy };
constexpr std::array all_strategies = {Strategy::VmforkLive, Strategy::VmforkTemplate,
                                       Strategy::ProcessFork, Strategy::Snapshot,
                                       Strategy::FullCopy};

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

// process fork(): the child must create its VM after the fork (KVM binds a VM to the
// mm of its creator), so there is nothing to make ahead.
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

// Checks a VM's reports as they arrive and notes when the first report begun in the
// VM (after arm() or rewind()) was verified.
class Watch {
public:
    void arm(std::unique_ptr<ReportVerifier> verifier) {
        const std::scoped_lock lock(mutex_);
        verifier_ = std::move(verifier);
        first_.reset();
        base_ = 0;
    }
    void on_report(const GuestReport& r) {
        const std::scoped_lock lock(mutex_);
        if (!verifier_) {
            return;
        }
        verifier_->check(r.slot);
        const auto s = verifier_->summary();
        if (s.failures == 0 && !first_ && s.own > base_) {
            first_ = r.when;
        }
    }
    // After a reset of the VM to its fork point.
    void rewind() {
        const std::scoped_lock lock(mutex_);
        verifier_->rewind();
        base_ = verifier_->summary().own;
        first_.reset();
    }
    [[nodiscard]] std::optional<Clock::time_point> first() const {
        const std::scoped_lock lock(mutex_);
        return first_;
    }
    [[nodiscard]] ReportVerifier::Summary summary() const {
        const std::scoped_lock lock(mutex_);
        return verifier_ ? verifier_->summary() : ReportVerifier::Summary{};
    }

private:
    mutable std::mutex mutex_;
    std::unique_ptr<ReportVerifier> verifier_;
    std::optional<Clock::time_point> first_;
    std::uint64_t base_ = 0;
};

// A VM of this process and its watch (destroyed after the machine, whose vCPU
// threads call it).
struct Running {
    std::unique_ptr<Watch> watch = std::make_unique<Watch>();
    std::unique_ptr<Machine> machine;
};

MachineConfig config_for(Watch& w) {
    MachineConfig c;
    c.report_history = 4;
    c.on_report = [&w](const GuestReport& r) { w.on_report(r); };
    return c;
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
    const bool ok = r.machine->reports().wait_for(
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

// What clones restore from: the parent's state and checked positions at the fork.
struct Source {
    VmState state;
    std::vector<GuestPosition> positions;
    std::vector<std::uint64_t> tsc;
    std::uint64_t generation = 1; // of the clones
};

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

std::unique_ptr<ReportVerifier> verifier_for(const Source& src, const GuestMemory& mem,
                                             const CloneIdentity& id) {
    std::vector<vmfork_guest_slot> slots;
    for (std::size_t i = 0; i < src.state.vcpus.size(); ++i) {
        slots.push_back(
            mem.read<vmfork_guest_slot>(VMFORK_GUEST_SLOTS + i * sizeof(vmfork_guest_slot)));
    }
    return std::make_unique<ReportVerifier>(src.positions, slots, src.tsc, id);
}

// A clone on mem: on the prepared machine pooled if given, else a new one.
Running launch(const Kvm& kvm, GuestMemory mem, const Source& src, const CloneIdentity& id,
               std::optional<Running> pooled) {
    Running r = pooled ? std::move(*pooled) : Running{};
    r.watch->arm(verifier_for(src, mem, id));
    if (r.machine) {
        r.machine->start_clone(std::move(mem), src.state, id);
    } else {
        r.machine = Machine::restore(kvm, std::move(mem), src.state, id, config_for(*r.watch));
    }
    r.machine->kick();
    return r;
}

Running prepare(const Kvm& kvm) {
    Running r;
    r.machine = Machine::prepare(kvm, 1, config_for(*r.watch));
    return r;
}

// A fork()ed child process, killed and reaped on destruction.
class ChildProcess {
public:
    ChildProcess() = default;
    explicit ChildProcess(pid_t pid) : pid_(pid) {}
    ~ChildProcess() { reset(); }
    ChildProcess(const ChildProcess&) = delete;
    ChildProcess& operator=(const ChildProcess&) = delete;
    ChildProcess(ChildProcess&& o) noexcept : pid_(std::exchange(o.pid_, -1)) {}
    ChildProcess& operator=(ChildProcess&& o) noexcept {
        if (this != &o) {
            reset();
            pid_ = std::exchange(o.pid_, -1);
        }
        return *this;
    }
    void reset() noexcept {
        if (pid_ > 0) {
            ::kill(pid_, SIGKILL);
            while (::waitpid(pid_, nullptr, 0) < 0 && errno == EINTR) {
            }
            pid_ = -1;
        }
    }

private:
    pid_t pid_ = -1;
};

// One clone made by a strategy, alive until destroyed.
struct Trial {
    double fork_us = 0;    // the strategy's own call (VM_FORK, fork(), mmap, copy)
    double pause_us = 0;   // how long the parent stopped
    double running_us = 0; // to the clone's first verified report
    Running vm;            // in this process
    ChildProcess process;  // or the process-fork child
};

// The process-fork child's answer on its pipe.
struct ForkAnswer {
    int ok = 0;
    std::int64_t first_ns = 0;
    std::array<char, 240> error = {};
};

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

// A snapshot of the parent: its RAM in a memfd, its state.
struct Snapshot {
    UniqueFd memfd;
    Source src;
    double pause_us = 0;
};

// Per guest size: the parent and what the strategies clone from.
struct SizeCtx {
    std::uint64_t size = 0;
    Running parent;                   // vmfork object, booted, running, idle
    std::optional<MemoryObject> tmpl; // a frozen template of the parent
    Source tmpl_src;
    Running anon;               // a copy of the parent on anonymous memory
    double one_guest_bytes = 0; // memory the booted, warmed parent took
};

class Bench {
public:
    Bench(const Kvm& kvm, const Device& dev, const BenchOptions& o, std::vector<Sample>& samples)
        : kvm_(kvm), dev_(dev), o_(o), samples_(samples) {}

    void boot(SizeCtx& c);
    void make_template(SizeCtx& c);
    void make_anon_parent(SizeCtx& c);
    Trial clone_one(Strategy s, SizeCtx& c, std::optional<Running> pooled);
    Snapshot snapshot(SizeCtx& c);
    Trial clone_snapshot(const Snapshot& snap, std::optional<Running> pooled, std::uint64_t size);
    void density(Strategy s, SizeCtx& c, std::vector<std::string>& notes);
    void cow(SizeCtx& c);
    void reset(SizeCtx& c);

    void add(const std::string& figure, Strategy s, const std::string& mode, std::uint64_t size,
             std::uint64_t x, unsigned repeat, double v) {
        samples_.push_back({figure, name_of(s), mode, size, x, repeat, v});
    }
    void add(const std::string& figure, const std::string& s, const std::string& mode,
             std::uint64_t size, std::uint64_t x, unsigned repeat, double v) {
        samples_.push_back({figure, s, mode, size, x, repeat, v});
    }

private:
    CloneIdentity plain_identity(std::uint64_t generation) {
        return {generation, next_plain_id_++};
    }
    Trial clone_process(SizeCtx& c);

    const Kvm& kvm_;
    const Device& dev_;
    const BenchOptions& o_;
    std::vector<Sample>& samples_;
    std::uint64_t next_plain_id_ = 1ULL << 40; // ids of clones on plain memory
};

void Bench::boot(SizeCtx& c) {
    const auto used0 = Meminfo::read().used();
    MemoryObject ram = dev_.create_memory(c.size);
    const CloneIdentity id{0, ram.id()};
    c.parent.watch->arm(std::make_unique<ReportVerifier>(1, id));
    BuiltinGuestLoader loader(100, report_every, std::uint64_t{o_.pace_ms} * 1000);
    MachineConfig config = config_for(*c.parent.watch);
    config.mem_size = c.size;
    const auto t0 = Clock::now();
    c.parent.machine = Machine::boot(kvm_, std::move(ram), config, loader);
    const bool ok = c.parent.machine->reports().wait_for(
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
    p.pause();
    try {
        c.tmpl_src = capture_source(c.parent, 1);
        c.tmpl.emplace(p.memory().object().fork(ForkMode::Live));
    } catch (...) {
        p.resume();
        throw;
    }
    p.resume();
    // Freeze it: every later fork of it is O(1). The child of this fork is not used.
    (void)c.tmpl->fork(ForkMode::Template);
}

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

Trial Bench::clone_process(SizeCtx& c) {
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
            Running r = launch(kvm_, GuestMemory::borrow(a.memory().at(0, c.size), c.size), src, id,
                               std::nullopt);
            ans.first_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                               wait_running(r, "the process-fork clone").time_since_epoch())
                               .count();
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
    return t;
}

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

Trial Bench::clone_one(Strategy s, SizeCtx& c, std::optional<Running> pooled) {
    auto& p = *c.parent.machine;
    Trial t;
    switch (s) {
    case Strategy::VmforkLive: {
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
    case Strategy::VmforkTemplate: {
        const auto t0 = Clock::now();
        MemoryObject child = c.tmpl->fork(ForkMode::Live);
        t.fork_us = us_between(t0, Clock::now());
        t.pause_us = 0; // the template was frozen once, before
        const CloneIdentity id{1, child.id()};
        t.vm = launch(kvm_, GuestMemory(std::move(child)), c.tmpl_src, id, std::move(pooled));
        t.running_us = us_between(t0, wait_running(t.vm, "a vmfork-template clone"));
        return t;
    }
    case Strategy::ProcessFork:
        return clone_process(c);
    case Strategy::Snapshot: {
        // A new snapshot each time: its write is the parent's pause.
        const Snapshot snap = snapshot(c);
        return clone_snapshot(snap, std::move(pooled), c.size);
    }
    case Strategy::FullCopy: {
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
    }
    throw SystemError(EINVAL, "unknown strategy");
}

std::uint64_t mem_available() {
    return Meminfo::read().bytes("MemAvailable");
}

void settle() {
    // Let freed memory and RCU-deferred frees land before a meminfo reading.
    std::this_thread::sleep_for(1500ms);
}

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
            vm.machine->kick();
            const auto first = wait_running(vm, "a reset clone");
            add("reset_us", Strategy::VmforkTemplate, "", c.size, k, r, us_between(t0, t1));
            add("reset_running_us", Strategy::VmforkTemplate, "", c.size, k, r,
                us_between(t0, first));
        }
    }
    progress("reset against pages dirtied measured");
}

// --- output ---------------------------------------------------------------------------

struct Table {
    std::vector<std::vector<std::string>> rows;
    void print() const { print_table(rows, Align::Numbers); }
};

std::string cell_us(const Summary& s) {
    if (s.n == 0) {
        return "-";
    }
    if (s.max == 0) {
        return "0";
    }
    return fmt::format("{} [{}..{}]", bench::format_us(s.median), bench::format_us(s.min),
                       bench::format_us(s.max));
}

double median_of(const std::vector<Sample>& samples, std::string_view figure, Strategy s,
                 std::string_view mode, std::uint64_t size, std::uint64_t x = 0) {
    const auto v = bench::select(samples, figure, name_of(s), mode, size, x);
    return v.empty() ? std::numeric_limits<double>::quiet_NaN() : bench::summarize(v).median;
}

std::string ratio_cell(double v, double base) {
    if (!std::isfinite(v) || !std::isfinite(base) || base <= 0) {
        return "-";
    }
    return fmt::format("{:.2f}x", v / base);
}

std::string gnuplot_script(const std::string& dir, const std::vector<Strategy>& strategies,
                           bool pool, bool density) {
    std::string g = "set terminal pngcairo size 900,560 noenhanced\nset key top left\n"
                    "set grid\nset logscale y\nset xlabel 'guest RAM (MiB)'\nset logscale x 2\n";
    auto plot = [&](const std::string& file, const std::string& title, const std::string& fig) {
        g += fmt::format("set output '{}/{}'\nset title '{}'\nset ylabel 'ms'\nplot ", dir, file,
                         title);
        bool first = true;
        for (auto s : strategies) {
            for (const std::string mode : {"cold", "pool"}) {
                if (mode == "pool" && (!pool || !poolable(s))) {
                    continue;
                }
                g += fmt::format("{}'{}/{}-{}-{}.dat' using 1:2 with linespoints title '{} ({})'",
                                 first ? "" : ", ", dir, fig, name_of(s), mode, name_of(s), mode);
                first = false;
            }
        }
        g += "\n";
    };
    plot("fork_time.png", "clone call time (median) against guest size", "fork_us");
    plot("time_to_running.png", "time to a running, verified clone (median)", "running_us");
    if (density) {
        g += fmt::format("set output '{}/memory.png'\nset title 'memory of the parent + N idle "
                         "clones'\nunset logscale x\nset logscale y\nset xlabel 'clones'\n"
                         "set ylabel 'MiB'\nplot ",
                         dir);
        bool first = true;
        for (auto s : strategies) {
            g += fmt::format("{}'{}/mem-{}.dat' using 1:2 with linespoints title '{}'",
                             first ? "" : ", ", dir, name_of(s), name_of(s));
            first = false;
        }
        g += "\n";
    }
    return g;
}

void write_file(const std::filesystem::path& p, const std::string& text) {
    std::ofstream f(p);
    f << text;
    if (!f) {
        throw SystemError(EIO, "cannot write " + p.string());
    }
}

} // namespace

CLI::App* add_bench_command(CLI::App& app, BenchOptions& o) {
    auto* cmd = app.add_subcommand(
        "bench", "clone one warmed guest with vmfork and the baselines (process fork(), "
                 "snapshot-restore, full copy); verify every clone; print medians and ratios");
    cmd->add_option("--sizes", o.sizes, "guest RAM sizes")->delimiter(',')->capture_default_str();
    cmd->add_option("--strategies", o.strategies,
                    "vmfork-live,vmfork-template,process-fork,snapshot-restore,full-copy "
                    "(default: all)")
        ->delimiter(',');
    cmd->add_option("--repeat", o.repeat, "samples per figure")
        ->check(CLI::Range(1, 1000))
        ->capture_default_str();
    cmd->add_option("--out", o.out, "write samples.csv, results.json and PNG plots here");
    cmd->add_flag("--pool", o.pool, "also clone onto KVM VMs + vCPUs made ahead (a warm pool)");
    cmd->add_option("--clones", o.clones, "clones for clones/s and memory")
        ->check(CLI::Range(1, 1000))
        ->capture_default_str();
    cmd->add_option("--density-size", o.density_size,
                    "guest size for clones/s, memory, COW and reset figures")
        ->capture_default_str();
    cmd->add_option("--skip", o.skip, "leave out: density, cow, reset")->delimiter(',');
    cmd->add_option("--pace", o.pace_ms, "ms the guest idles between reports")
        ->check(CLI::Range(1, 1000))
        ->capture_default_str();
    return cmd;
}

int cmd_bench(const Globals& /*g*/, const BenchOptions& o) {
    check_devices();
    std::vector<std::uint64_t> sizes;
    for (const auto& s : o.sizes) {
        try {
            sizes.push_back(parse_size(s));
        } catch (const std::exception& e) {
            throw CliError("--sizes " + s + ": " + e.what());
        }
    }
    std::uint64_t density_size = 0;
    try {
        density_size = parse_size(o.density_size);
    } catch (const std::exception& e) {
        throw CliError("--density-size " + o.density_size + ": " + e.what());
    }
    std::vector<Strategy> strategies;
    for (const auto& n : o.strategies) {
        const auto it = std::find_if(all_strategies.begin(), all_strategies.end(),
                                     [&](Strategy s) { return name_of(s) == n; });
        if (it == all_strategies.end()) {
            throw CliError("unknown strategy " + n);
        }
        strategies.push_back(*it);
    }
    if (strategies.empty()) {
        strategies.assign(all_strategies.begin(), all_strategies.end());
    }
    auto skipped = [&](const std::string& what) {
        return std::find(o.skip.begin(), o.skip.end(), what) != o.skip.end();
    };
    auto has = [&](Strategy s) {
        return std::find(strategies.begin(), strategies.end(), s) != strategies.end();
    };
    const bool need_template =
        has(Strategy::VmforkTemplate) || !skipped("cow") || !skipped("reset");

    const Kvm kvm = Kvm::open();
    const Device dev = Device::open();
    std::vector<Sample> samples;
    std::vector<std::string> notes;
    Bench b(kvm, dev, o, samples);
    const auto t_start = Clock::now();
    progress(fmt::format("sizes {}, {} repeats, strategies {}{}", fmt::join(o.sizes, ","), o.repeat,
                         strategies.size(), o.pool ? ", cold and pooled" : ", cold"));

    for (const auto size : sizes) {
        SizeCtx c;
        c.size = size;
        b.boot(c);
        if (need_template) {
            b.make_template(c);
        }
        if (has(Strategy::ProcessFork)) {
            b.make_anon_parent(c);
        }
        for (unsigned r = 0; r < o.repeat; ++r) {
            for (auto s : strategies) {
                for (const std::string mode : {"cold", "pool"}) {
                    if (mode == "pool" && (!o.pool || !poolable(s))) {
                        continue;
                    }
                    std::optional<Running> pooled;
                    if (mode == "pool") {
                        pooled.emplace(prepare(kvm));
                    }
                    const Trial t = b.clone_one(s, c, std::move(pooled));
                    b.add("fork_us", s, mode, size, 0, r, t.fork_us);
                    b.add("pause_us", s, mode, size, 0, r, t.pause_us);
                    b.add("running_us", s, mode, size, 0, r, t.running_us);
                }
            }
            progress(fmt::format("{}: repeat {}/{} done (every clone verified)",
                                 bench::format_bytes(static_cast<double>(size)), r + 1, o.repeat));
        }
        if (size == density_size) {
            if (!skipped("density")) {
                for (auto s : strategies) {
                    b.density(s, c, notes);
                }
            }
            if (!skipped("cow")) {
                b.cow(c);
            }
            if (!skipped("reset")) {
                b.reset(c);
            }
        }
    }
    const double wall_s = us_between(t_start, Clock::now()) / 1e6;

    // --- the tables ---
    fmt::print("\nvmfork bench: built-in guest, 1 vCPU, all RAM filled, idle ({} ms pace); "
               "{} repeats; median [min..max]; ratio: median / vmfork-template's\n",
               o.pace_ms, o.repeat);
    for (const auto size : sizes) {
        fmt::print("\n== guest RAM {} ==\n", bench::format_bytes(static_cast<double>(size)));
        Table t;
        t.rows.push_back({"strategy", "mode", "clone call", "parent pause", "time to running clone",
                          "vs vmfork-template"});
        for (const std::string mode : {"cold", "pool"}) {
            const double base =
                median_of(samples, "running_us", Strategy::VmforkTemplate, mode, size);
            for (auto s : strategies) {
                if (mode == "pool" && (!o.pool || !poolable(s))) {
                    continue;
                }
                auto sum = [&](const char* fig) {
                    return bench::summarize(bench::select(samples, fig, name_of(s), mode, size));
                };
                t.rows.push_back({name_of(s), mode, cell_us(sum("fork_us")),
                                  cell_us(sum("pause_us")), cell_us(sum("running_us")),
                                  ratio_cell(sum("running_us").median, base)});
            }
        }
        t.print();
    }

    const bool have_density =
        !skipped("density") && std::find(sizes.begin(), sizes.end(), density_size) != sizes.end();
    if (have_density) {
        fmt::print("\n== {} clones of the {} guest (cold; memory: /proc/meminfo, parent + "
                   "clones) ==\n",
                   o.clones, bench::format_bytes(static_cast<double>(density_size)));
        Table t;
        t.rows.push_back({"strategy", "clones", "clones/s", "parent + clones", "vs one guest"});
        for (auto s : strategies) {
            const auto n = median_of(samples, "clones", s, "cold", density_size);
            const auto nn = static_cast<std::uint64_t>(std::isfinite(n) ? n : 0);
            t.rows.push_back({name_of(s), fmt::format("{}", nn),
                              fmt::format("{:.1f}", median_of(samples, "clones_per_s", s, "cold",
                                                              density_size, nn)),
                              bench::format_bytes(median_of(samples, "mem_total_bytes", s, "cold",
                                                            density_size, nn)),
                              fmt::format("{:.2f}x", median_of(samples, "mem_vs_one_guest", s,
                                                               "cold", density_size, nn))});
        }
        t.print();
        for (const auto& n : notes) {
            fmt::print("  note: {}\n", n);
        }
    }
    const bool have_cow =
        !skipped("cow") && std::find(sizes.begin(), sizes.end(), density_size) != sizes.end();
    std::uint64_t cow_pages = std::min<std::uint64_t>(4096, density_size / page / 8);
    if (have_cow) {
        fmt::print("\n== first touch of a clone page, host side, per page ({} pages) ==\n",
                   cow_pages);
        Table t;
        t.rows.push_back({"strategy", "first write", "vs kernel anon COW", "first read"});
        const double anon = median_of(samples, "first_write_ns", Strategy::ProcessFork, "",
                                      density_size, cow_pages);
        for (auto s : {Strategy::VmforkTemplate, Strategy::ProcessFork, Strategy::Snapshot,
                       Strategy::FullCopy}) {
            const double w = median_of(samples, "first_write_ns", s, "", density_size, cow_pages);
            const double r = median_of(samples, "first_read_ns", s, "", density_size, cow_pages);
            t.rows.push_back({name_of(s) + (s == Strategy::ProcessFork ? " (kernel anon COW)" : ""),
                              bench::format_us(w / 1000), ratio_cell(w, anon),
                              bench::format_us(r / 1000)});
        }
        t.print();
    }
    const bool have_reset =
        !skipped("reset") && std::find(sizes.begin(), sizes.end(), density_size) != sizes.end();
    const double new_clone =
        median_of(samples, "running_us", Strategy::VmforkTemplate, "cold", density_size);
    const double new_clone_pool =
        median_of(samples, "running_us", Strategy::VmforkTemplate, "pool", density_size);
    if (have_reset) {
        fmt::print("\n== reset of a running vmfork clone to its fork point ({} guest) ==\n",
                   bench::format_bytes(static_cast<double>(density_size)));
        Table t;
        t.rows.push_back({"pages dirtied", "VMFORK_RESET", "VM reset (pause..resume)",
                          "reset to verified report", "new clone / VM reset"});
        for (const auto k : {1ULL, 10ULL, 100ULL, 1000ULL, 10000ULL}) {
            auto sum = [&](const char* fig) {
                return bench::summarize(
                    bench::select(samples, fig, "vmfork-template", "", density_size, k));
            };
            if (sum("reset_us").n == 0) {
                continue;
            }
            t.rows.push_back({fmt::format("{}", k), cell_us(sum("reset_ioctl_us")),
                              cell_us(sum("reset_us")), cell_us(sum("reset_running_us")),
                              ratio_cell(new_clone, sum("reset_us").median)});
        }
        t.print();
    }

    // --- targets (ratios of this run) ---
    const double nan = std::numeric_limits<double>::quiet_NaN();
    std::vector<bench::Target> targets;
    const std::uint64_t big = *std::max_element(sizes.begin(), sizes.end());
    const std::uint64_t small = *std::min_element(sizes.begin(), sizes.end());
    auto med = [&](const char* fig, Strategy s, const char* mode, std::uint64_t size,
                   std::uint64_t x = 0) { return median_of(samples, fig, s, mode, size, x); };
    targets.push_back(
        {fmt::format("template fork({}) / fork({})", bench::format_bytes(static_cast<double>(big)),
                     bench::format_bytes(static_cast<double>(small))),
         big == small ? nan
                      : med("fork_us", Strategy::VmforkTemplate, "cold", big) /
                            med("fork_us", Strategy::VmforkTemplate, "cold", small),
         1.5, true});
    targets.push_back({fmt::format("snapshot write pause / live-fork pause at {}",
                                   bench::format_bytes(static_cast<double>(big))),
                       med("pause_us", Strategy::Snapshot, "cold", big) /
                           med("pause_us", Strategy::VmforkLive, "cold", big),
                       20, false});
    auto fastest_baseline = [&](const char* mode) {
        double best = nan;
        for (auto s : {Strategy::ProcessFork, Strategy::Snapshot, Strategy::FullCopy}) {
            const char* m = poolable(s) ? mode : "cold";
            const double v = med("running_us", s, m, big);
            if (std::isfinite(v) && (!std::isfinite(best) || v < best)) {
                best = v;
            }
        }
        return best;
    };
    const double tmpl_cold = med("running_us", Strategy::VmforkTemplate, "cold", big);
    const double tmpl_pool = med("running_us", Strategy::VmforkTemplate, "pool", big);
    targets.push_back({fmt::format("fastest baseline (cold) / vmfork-template (cold), time to "
                                   "running clone at {}",
                                   bench::format_bytes(static_cast<double>(big))),
                       fastest_baseline("cold") / tmpl_cold, 5, false});
    if (o.pool) {
        targets.push_back({"  same, vmfork-template pooled vs baselines cold",
                           fastest_baseline("cold") / tmpl_pool, 5, false});
        targets.push_back({"  same, both pooled where a pool applies",
                           fastest_baseline("pool") / tmpl_pool, 5, false});
    }
    for (auto s : {Strategy::VmforkTemplate, Strategy::VmforkLive}) {
        const double n = med("clones", s, "cold", density_size);
        targets.push_back(
            {fmt::format("{}: memory of parent + {} idle clones / one guest ({})", name_of(s),
                         std::isfinite(n) ? static_cast<std::uint64_t>(n) : 0,
                         bench::format_bytes(static_cast<double>(density_size))),
             std::isfinite(n)
                 ? med("mem_vs_one_guest", s, "cold", density_size, static_cast<std::uint64_t>(n))
                 : nan,
             1.1, true});
    }
    const double reset100 =
        median_of(samples, "reset_us", Strategy::VmforkTemplate, "", density_size, 100);
    targets.push_back({"new clone (template, cold) / reset with 100 pages dirty",
                       new_clone / reset100, 10, false});
    if (o.pool) {
        targets.push_back({"  same, new clone pooled", new_clone_pool / reset100, 10, false});
    }
    fmt::print("\n== targets of issue #6 (ratios of this run) ==\n");
    Table tt;
    tt.rows.push_back({"target", "ratio", "goal", "verdict"});
    for (const auto& t : targets) {
        tt.rows.push_back({t.what, t.measured() ? fmt::format("{:.2f}", t.value) : "-",
                           fmt::format("{} {}", t.at_most ? "<=" : ">=", t.limit), t.verdict()});
    }
    tt.print();
    fmt::print("\n{} samples, every clone verified; wall time {:.0f} s\n", samples.size(), wall_s);
    std::fflush(stdout);

    // --- files ---
    if (!o.out.empty()) {
        const std::filesystem::path dir(o.out);
        std::filesystem::create_directories(dir);
        write_file(dir / "samples.csv", bench::samples_csv(samples));
        json j;
        j["config"] = {{"sizes", sizes},     {"repeat", o.repeat},           {"pool", o.pool},
                       {"clones", o.clones}, {"density_size", density_size}, {"pace_ms", o.pace_ms},
                       {"wall_s", wall_s}};
        j["samples"] = json::array();
        for (const auto& s : samples) {
            j["samples"].push_back(bench::sample_json(s));
        }
        // Summaries of every (figure, strategy, mode, size, x).
        std::map<std::tuple<std::string, std::string, std::string, std::uint64_t, std::uint64_t>,
                 std::vector<double>>
            groups;
        for (const auto& s : samples) {
            groups[{s.figure, s.strategy, s.mode, s.size, s.x}].push_back(s.value);
        }
        j["summaries"] = json::array();
        for (const auto& [k, v] : groups) {
            json e = bench::summary_json(bench::summarize(v));
            e["figure"] = std::get<0>(k);
            e["strategy"] = std::get<1>(k);
            e["mode"] = std::get<2>(k);
            e["size_bytes"] = std::get<3>(k);
            e["x"] = std::get<4>(k);
            j["summaries"].push_back(e);
        }
        j["targets"] = json::array();
        for (const auto& t : targets) {
            j["targets"].push_back({{"what", t.what},
                                    {"value", t.measured() ? json(t.value) : json(nullptr)},
                                    {"goal", t.limit},
                                    {"at_most", t.at_most},
                                    {"verdict", t.verdict()}});
        }
        j["notes"] = notes;
        write_file(dir / "results.json", j.dump(2) + "\n");
        // Plot data and the gnuplot script.
        for (auto s : strategies) {
            for (const std::string mode : {"cold", "pool"}) {
                for (const std::string fig : {"fork_us", "running_us"}) {
                    std::string dat = "# MiB median_ms\n";
                    for (const auto size : sizes) {
                        const double m = median_of(samples, fig, s, mode, size);
                        if (std::isfinite(m)) {
                            dat += fmt::format("{} {}\n", size >> 20, std::max(m, 0.1) / 1000);
                        }
                    }
                    write_file(dir / fmt::format("{}-{}-{}.dat", fig, name_of(s), mode), dat);
                }
            }
            std::string dat = "# clones MiB\n";
            for (const auto& smp : samples) {
                if (smp.figure == "mem_bytes" && smp.strategy == name_of(s)) {
                    dat += fmt::format("{} {}\n", smp.x, smp.value / (1 << 20));
                }
            }
            write_file(dir / fmt::format("mem-{}.dat", name_of(s)), dat);
        }
        write_file(dir / "plots.gp",
                   gnuplot_script(dir.string(), strategies, o.pool, have_density));
        const std::string cmd = "gnuplot '" + (dir / "plots.gp").string() + "' 2>&1";
        if (std::system(cmd.c_str()) != 0) { // NOLINT(cert-env33-c): a fixed command
            fmt::print(stderr, "vmfork bench: gnuplot failed: no PNG plots (data in {})\n",
                       dir.string());
        }
        fmt::print("results in {}: samples.csv, results.json, *.png\n", dir.string());
    }
    return 0;
}

} // namespace vmfork::cli
