// SPDX-License-Identifier: GPL-2.0
#pragma once

// The machinery of `vmfork bench` (see command.cpp): clones of one warmed built-in
// guest by each strategy, all in this process (process-fork clones in fork()ed
// children of it). A clone is a new KVM VM on the clone's RAM, restored from the
// parent's captured state, kicked (BuiltinProfile::kick, so that no strategy waits for the
// guest's next timer tick) and counted once its first report begun in the clone is
// verified.

#include <array>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <sys/types.h>
#include <sys/wait.h>
#include <utility>
#include <vector>

#include "bench.h"
#include "vmfork/bench/stats.h"
#include "vmfork/device.h"
#include "vmfork/kvm.h"
#include "vmfork/mapping.h"
#include "vmfork/memory_object.h"
#include "vmfork/unique_fd.h"
#include "vmfork/vmm/guests/builtin/profile.h"
#include "vmfork/vmm/guests/builtin/report_verifier.h"
#include "vmfork/vmm/machine.h"

namespace vmfork::bench {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

inline constexpr std::uint64_t page = 4096;
inline constexpr std::uint64_t report_every = 1000;
inline constexpr auto clone_timeout = 300s;            // nested KVM under TCG is slow
inline constexpr std::uint64_t reserve = 768ULL << 20; // MemAvailable kept free while cloning

// One file each: vmfork_clones.cpp, process_fork.cpp, snapshot_restore.cpp,
// full_copy.cpp.
enum class Strategy { VmforkLive, VmforkTemplate, ProcessFork, Snapshot, FullCopy };
inline constexpr std::array all_strategies = {Strategy::VmforkLive, Strategy::VmforkTemplate,
                                              Strategy::ProcessFork, Strategy::Snapshot,
                                              Strategy::FullCopy};

std::string name_of(Strategy s);
// process fork(): the child must create its VM after the fork (KVM binds a VM to the
// mm of its creator), so there is nothing to make ahead.
bool poolable(Strategy s);

double us_between(Clock::time_point a, Clock::time_point b);
void progress(const std::string& what);

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

    // The built-in guest's profile of the machine: its reports, kick().
    [[nodiscard]] const BuiltinProfile& guest() const { return machine->profile<BuiltinProfile>(); }
};

// The built-in guest's profile for a machine that w watches (its last reports kept).
std::unique_ptr<BuiltinProfile> profile_for(Watch& w);
// The verifier's first error and the vCPUs' errors, for a failure message.
std::string describe(const Running& r);
// Waits until r's first report begun in the VM is verified; returns when it arrived.
Clock::time_point wait_running(const Running& r, const std::string& who);

// What clones restore from: the parent's state and checked positions at the fork.
struct Source {
    VmState state;
    std::vector<GuestPosition> positions;
    std::vector<std::uint64_t> tsc;
    std::uint64_t generation = 1; // of the clones
};

Source capture_source(const Running& parent, std::uint64_t generation);
// A clone on mem: on the prepared machine pooled if given, else a new one.
Running launch(const Kvm& kvm, GuestMemory mem, const Source& src, const CloneIdentity& id,
               std::optional<Running> pooled);
// A machine of the warm pool: KVM VM and vCPU made ahead, no memory.
Running prepare(const Kvm& kvm);

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

// What the built-in guest measured of first touches of its pages, from inside, at the
// start of a clone (vmfork_guest_identity.probe_pages): per page, in nanoseconds.
struct TouchProbe {
    std::uint64_t pages = 0;
    double read_ns = 0;
    double write_ns = 0;
};

// Asks the guest on mem for the probe of pages pages at its next generation (before
// the clone runs: the host's write to its identity page).
void request_probe(const GuestMemory& mem, std::uint64_t pages);
// The probe the guest on mem made at the start of generation, its TSC at tsc_khz;
// throws EPROTO if it made none.
TouchProbe read_probe(const GuestMemory& mem, std::uint64_t generation, std::uint32_t tsc_khz);

// One clone made by a strategy, alive until destroyed.
struct Trial {
    double fork_us = 0;    // the strategy's own call (VM_FORK, fork(), mmap, copy)
    double pause_us = 0;   // how long the parent stopped
    double running_us = 0; // to the clone's first verified report
    Running vm;            // in this process
    ChildProcess process;  // or the process-fork child
    TouchProbe probe;      // when asked for (process fork: read in the child)
};

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

Mapping anon_mapping(std::uint64_t size, const std::string& what, bool dontfork);
void write_all(int fd, const std::byte* p, std::uint64_t len, const std::string& what);
// Host-side first touches of n pages from base, per page (ns).
double touch_ns(std::byte* base, std::uint64_t n, bool write);
std::uint64_t mem_available();
// Lets freed memory and RCU-deferred frees land before a meminfo reading.
void settle();

// The figures of one run, into samples.
class Bench {
public:
    Bench(const Kvm& kvm, const Device& dev, const cli::BenchOptions& o,
          std::vector<Sample>& samples)
        : kvm_(kvm), dev_(dev), o_(o), samples_(samples) {}

    // vmfork_clones.cpp
    void boot(SizeCtx& c);
    void make_template(SizeCtx& c);
    // process_fork.cpp
    void make_anon_parent(SizeCtx& c);
    // snapshot_restore.cpp
    Snapshot snapshot(SizeCtx& c);
    Trial clone_snapshot(const Snapshot& snap, std::optional<Running> pooled, std::uint64_t size);
    // One clone by strategy s (harness.cpp).
    Trial clone_one(Strategy s, SizeCtx& c, std::optional<Running> pooled);
    // figures.cpp
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
    Trial clone_vmfork_live(SizeCtx& c, std::optional<Running> pooled);
    Trial clone_vmfork_template(SizeCtx& c, std::optional<Running> pooled);
    // probe_pages: the clone's guest measures its first touches (Trial::probe).
    Trial clone_process(SizeCtx& c, std::uint64_t probe_pages = 0);
    Trial clone_full_copy(SizeCtx& c, std::optional<Running> pooled);

    const Kvm& kvm_;
    const Device& dev_;
    const cli::BenchOptions& o_;
    std::vector<Sample>& samples_;
    // Ids of clones on plain memory. The guest tags the pages it writes with the low
    // 32 bits of its id (guest_abi.h), so those bits must never equal a vmfork
    // object's id (small and sequential): bit 31 is set in them. Without it the
    // process-fork parent of the 1 GiB round of a 64M,1G run had its parent's low
    // bits, and the guest rightly took every page its parent wrote before the copy
    // for one written by itself before its fork: 64 wrong pages on its first check.
    std::uint64_t next_plain_id_ = (1ULL << 40) | (1ULL << 31);
};

} // namespace vmfork::bench
