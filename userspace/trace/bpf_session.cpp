// SPDX-License-Identifier: GPL-2.0
#include "bpf_session.h"

#include <array>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <deque>
#include <fmt/format.h>
#include <fstream>
#include <string>
#include <vector>

#include "trace_error.h"
#include "vmfork/system_error.h"
#include "vmfork_trace.skel.h"

namespace vmfork::trace {

namespace {

// libbpf's messages: the last few are kept for an error report; with -v all of
// them go to stderr as they come.
class LibbpfLog {
public:
    static void install(bool verbose) {
        verbose_ = verbose;
        libbpf_set_print(&LibbpfLog::print);
    }
    static bool has_verifier_log() {
        for (const auto& l : lines_) {
            if (l.find("END PROG LOAD LOG") != std::string::npos) {
                return true;
            }
        }
        return false;
    }
    static std::string tail() {
        std::string out;
        for (const auto& l : lines_) {
            out += "\n  " + l;
        }
        return out;
    }

private:
    static int print(libbpf_print_level level, const char* format, va_list args) {
        va_list copy;
        va_copy(copy, args);
        const int n = std::vsnprintf(nullptr, 0, format, copy);
        va_end(copy);
        if (n <= 0) {
            return n;
        }
        std::string text(static_cast<std::size_t>(n) + 1, '\0');
        std::vsnprintf(text.data(), text.size(), format, args);
        text.resize(static_cast<std::size_t>(n));
        if (verbose_) {
            std::fputs(("libbpf: " + text).c_str(), stderr);
        }
        if (level == LIBBPF_DEBUG) {
            return n;
        }
        // A verifier log comes as one message of many lines: keep its end.
        std::size_t pos = 0;
        while (pos < text.size()) {
            auto end = text.find('\n', pos);
            if (end == std::string::npos) {
                end = text.size();
            }
            if (end > pos) {
                lines_.push_back(text.substr(pos, end - pos));
                if (lines_.size() > kKeep) {
                    lines_.pop_front();
                }
            }
            pos = end + 1;
        }
        return n;
    }

    static constexpr std::size_t kKeep = 24;
    static inline bool verbose_ = false;
    static inline std::deque<std::string> lines_;
};

std::string errno_text(int err) {
    std::array<char, 256> buf{};
    libbpf_strerror(err, buf.data(), buf.size());
    return fmt::format("{} (errno {})", buf.data(), err);
}

// The hint for a failed load or attach, by errno.
std::string hint_for(int err, std::string_view step) {
    if (step == "load" && LibbpfLog::has_verifier_log()) {
        return "the kernel's verifier rejected a program (the end of its log is above): "
               "a vmfork-trace bug for this kernel; report it with the output of -v";
    }
    switch (err) {
    case EPERM:
    case EACCES:
        return "run vmfork-trace as root (or give it CAP_BPF and CAP_PERFMON); a lockdown "
               "kernel (integrity/confidentiality mode) refuses BPF tracing even to root";
    case ENOENT:
        return "a vmfork tracepoint is missing: load the module with insmod kmod/vmfork.ko";
    case EINVAL:
        if (step == "load") {
            return "the kernel rejected the programs; run with -v for libbpf's and the "
                   "verifier's log (kernel needs CONFIG_BPF_SYSCALL and CONFIG_BPF_EVENTS)";
        }
        break;
    default:
        break;
    }
    return "run with -v for libbpf's log; the kernel needs CONFIG_BPF_SYSCALL, "
           "CONFIG_BPF_EVENTS and CONFIG_PERF_EVENTS";
}

} // namespace

void BpfSession::SkeletonDeleter::operator()(vmfork_trace* skel) const noexcept {
    vmfork_trace__destroy(skel);
}

void BpfSession::require_privileges() {
    std::ifstream status("/proc/self/status");
    std::string line;
    unsigned long long caps = 0;
    bool found = false;
    while (std::getline(status, line)) {
        if (line.starts_with("CapEff:")) {
            caps = std::strtoull(line.c_str() + 7, nullptr, 16);
            found = true;
            break;
        }
    }
    if (!found) {
        return; // cannot tell: let the kernel decide (and report its EPERM)
    }
    constexpr unsigned kCapSysAdmin = 21, kCapPerfmon = 38, kCapBpf = 39;
    const auto has = [caps](unsigned cap) { return (caps >> cap) & 1ULL; };
    if (has(kCapSysAdmin) || (has(kCapBpf) && has(kCapPerfmon))) {
        return;
    }
    throw TraceError("not allowed to load BPF tracing programs: " + errno_text(EPERM) +
                         (has(kCapBpf) ? ", CAP_PERFMON is missing" : ", CAP_BPF is missing"),
                     "run vmfork-trace as root (sudo), or give it CAP_BPF and CAP_PERFMON "
                     "(setcap cap_bpf,cap_perfmon+ep build/bin/vmfork-trace)",
                     EPERM);
}

BpfSession::BpfSession(bool verbose) {
    LibbpfLog::install(verbose);
    const int ncpus = libbpf_num_possible_cpus();
    if (ncpus <= 0) {
        throw TraceError("cannot count the possible CPUs: " + errno_text(-ncpus),
                         "is /sys/devices/system/cpu/possible readable?", -ncpus);
    }
    ncpus_ = static_cast<unsigned>(ncpus);

    skel_.reset(vmfork_trace__open());
    if (!skel_) {
        const int err = errno;
        throw TraceError("opening the BPF object failed: " + errno_text(err) + LibbpfLog::tail(),
                         hint_for(err, "open"), err);
    }
    if (const int rc = vmfork_trace__load(skel_.get()); rc != 0) {
        const int err = -rc;
        throw TraceError("loading the BPF programs failed: " + errno_text(err) + LibbpfLog::tail(),
                         hint_for(err, "load"), err);
    }
    if (const int rc = vmfork_trace__attach(skel_.get()); rc != 0) {
        const int err = -rc;
        throw TraceError("attaching to the vmfork tracepoints failed: " + errno_text(err) +
                             LibbpfLog::tail(),
                         hint_for(err, "attach"), err);
    }
}

BpfSession::~BpfSession() = default;

Snapshot BpfSession::snapshot() const {
    Snapshot s;
    s.at = std::chrono::steady_clock::now();

    // Per-CPU arrays: one value per possible CPU (each a multiple of 8 bytes).
    {
        std::vector<vmfork_trace_counters> per_cpu(ncpus_);
        const std::uint32_t key = 0;
        if (bpf_map__lookup_elem(skel_->maps.counters, &key, sizeof(key), per_cpu.data(),
                                 per_cpu.size() * sizeof(per_cpu[0]), 0) != 0) {
            throw SystemError::from_errno("reading BPF map counters");
        }
        for (const auto& c : per_cpu) {
            s.counters.creates += c.creates;
            s.counters.forks_live += c.forks_live;
            s.counters.forks_template += c.forks_template;
            s.counters.cow_breaks += c.cow_breaks;
            s.counters.resets += c.resets;
            s.counters.reset_dropped_pages += c.reset_dropped_pages;
            s.counters.releases += c.releases;
            s.counters.cow_unattributed += c.cow_unattributed;
        }
    }
    {
        std::vector<vmfork_trace_hist> per_cpu(ncpus_);
        for (std::uint32_t key = 0; key < VMFORK_TRACE_NR_HISTS; key++) {
            if (bpf_map__lookup_elem(skel_->maps.hists, &key, sizeof(key), per_cpu.data(),
                                     per_cpu.size() * sizeof(per_cpu[0]), 0) != 0) {
                throw SystemError::from_errno(fmt::format("reading BPF map hists[{}]", key));
            }
            for (const auto& h : per_cpu) {
                s.hists.at(key).add(h);
            }
        }
    }
    {
        const int fd = bpf_map__fd(skel_->maps.cow_by_object);
        std::uint64_t key = 0, next = 0, value = 0;
        const std::uint64_t* prev = nullptr;
        while (bpf_map_get_next_key(fd, prev, &next) == 0) {
            if (bpf_map_lookup_elem(fd, &next, &value) == 0) {
                s.cow_by_object[next] = value;
            } else if (errno != ENOENT) { // ENOENT: deleted meanwhile
                throw SystemError::from_errno("reading BPF map cow_by_object");
            }
            key = next;
            prev = &key;
        }
        if (errno != ENOENT) {
            throw SystemError::from_errno("iterating BPF map cow_by_object");
        }
    }
    return s;
}

} // namespace vmfork::trace
