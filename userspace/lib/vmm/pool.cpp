// SPDX-License-Identifier: GPL-2.0
#include "vmfork/vmm/pool.h"

#include <algorithm>
#include <array>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <fstream>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "vmfork/memory_object.h"
#include "vmfork/system_error.h"
#include "vmfork/vmm/launch_spec.h"
#include "vmfork/vmm/pool_socket.h"

namespace vmfork {

namespace {

bool alive(pid_t pid) {
    return ::kill(pid, 0) == 0 || errno == EPERM;
}

// "PREFIX<a>-<b>SUFFIX" (b optional): the numbers, or nullopt.
std::optional<std::pair<unsigned, long>> parse_entry(const std::string& name,
                                                     const std::string& prefix,
                                                     const std::string& suffix, bool two) {
    if (name.size() <= prefix.size() + suffix.size() || name.rfind(prefix, 0) != 0 ||
        name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0) {
        return std::nullopt;
    }
    const std::string mid = name.substr(prefix.size(), name.size() - prefix.size() - suffix.size());
    try {
        std::size_t used = 0;
        const unsigned long a = std::stoul(mid, &used);
        if (!two) {
            return used == mid.size() && a > 0 && a <= VmState::max_vcpus
                       ? std::optional(std::pair<unsigned, long>(static_cast<unsigned>(a), 0))
                       : std::nullopt;
        }
        if (used >= mid.size() || mid[used] != '-') {
            return std::nullopt;
        }
        const std::string rest = mid.substr(used + 1);
        std::size_t used2 = 0;
        const long b = std::stol(rest, &used2);
        if (used2 != rest.size() || a == 0 || a > VmState::max_vcpus || b <= 0) {
            return std::nullopt;
        }
        return std::pair<unsigned, long>(static_cast<unsigned>(a), b);
    } catch (const std::exception&) {
        return std::nullopt;
    }
}

std::vector<std::string> entries(const std::string& dir) {
    std::vector<std::string> names;
    DIR* d = ::opendir(dir.c_str());
    if (d == nullptr) {
        if (errno == ENOENT) {
            return names;
        }
        throw SystemError::from_errno("cannot read the warm pool " + dir);
    }
    while (const dirent* e = ::readdir(d)) {
        names.emplace_back(e->d_name);
    }
    ::closedir(d);
    return names;
}

void ensure_dir(const std::string& path) {
    if (::mkdir(path.c_str(), 0700) < 0 && errno != EEXIST) {
        throw SystemError::from_errno("cannot create the warm pool " + path);
    }
}

// Serializes refills (and target changes with them) of one pool.
class PoolLock {
public:
    explicit PoolLock(const std::string& dir)
        : fd_(::open((dir + "/lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600)) {
        if (!fd_) {
            throw SystemError::from_errno("cannot open " + dir + "/lock");
        }
        while (::flock(fd_.get(), LOCK_EX) < 0) {
            if (errno != EINTR) {
                throw SystemError::from_errno("flock " + dir + "/lock");
            }
        }
    }

private:
    UniqueFd fd_; // closing it unlocks
};

} // namespace

WarmMachine WarmMachine::make(unsigned cpus) {
    WarmMachine w;
    w.kvm = std::make_unique<Kvm>(Kvm::open());
    w.machine = Machine::prepare(*w.kvm, cpus, nullptr);
    return w;
}

VmmPool::VmmPool(const std::string& runtime_dir)
    : runtime_dir_(runtime_dir), path_(runtime_dir + "/pool") {}

std::vector<VmmPool::Warm> VmmPool::warm() const {
    std::vector<Warm> v;
    for (const auto& name : entries(path_)) {
        const auto e = parse_entry(name, "warm-", ".sock", true);
        if (!e) {
            continue;
        }
        const auto pid = static_cast<pid_t>(e->second);
        if (!alive(pid)) {
            ::unlink((path_ + "/" + name).c_str()); // a warm VMM that died
            continue;
        }
        v.push_back({e->first, pid});
    }
    std::sort(v.begin(), v.end(), [](const Warm& a, const Warm& b) {
        return std::tie(a.cpus, a.pid) < std::tie(b.cpus, b.pid);
    });
    return v;
}

std::vector<std::pair<unsigned, unsigned>> VmmPool::targets() const {
    std::vector<std::pair<unsigned, unsigned>> v;
    for (const auto& name : entries(path_)) {
        if (const auto e = parse_entry(name, "size-", "", false)) {
            if (const unsigned t = target(e->first); t > 0) {
                v.emplace_back(e->first, t);
            }
        }
    }
    std::sort(v.begin(), v.end());
    return v;
}

unsigned VmmPool::target(unsigned cpus) const {
    std::ifstream in(path_ + "/size-" + std::to_string(cpus));
    unsigned n = 0;
    if (!(in >> n)) {
        return 0;
    }
    return std::min(n, max_size);
}

void VmmPool::set_target(unsigned cpus, unsigned size) const {
    if (cpus == 0 || cpus > VmState::max_vcpus) {
        throw SystemError(EINVAL, "a warm VMM has 1.." + std::to_string(VmState::max_vcpus) +
                                      " vCPUs, not " + std::to_string(cpus));
    }
    if (size > max_size) {
        throw SystemError(EINVAL, "the warm pool holds at most " + std::to_string(max_size) +
                                      " VMMs per vCPU count, not " + std::to_string(size));
    }
    ensure_dir(path_);
    const std::string file = path_ + "/size-" + std::to_string(cpus);
    if (size == 0) {
        if (::unlink(file.c_str()) < 0 && errno != ENOENT) {
            throw SystemError::from_errno("cannot remove " + file);
        }
        return;
    }
    const std::string tmp = file + ".tmp";
    {
        std::ofstream out(tmp, std::ios::trunc);
        out << size << "\n";
        if (!out.flush()) {
            throw SystemError(EIO, "cannot write " + tmp);
        }
    }
    if (::rename(tmp.c_str(), file.c_str()) < 0) {
        throw SystemError::from_errno("cannot rename " + tmp);
    }
}

UniqueFd VmmPool::claim(const Warm& w) const {
    const std::string from = pool_socket::warm_path(path_, w.cpus, w.pid);
    const std::string to = pool_socket::taken_path(path_, w.pid);
    if (::rename(from.c_str(), to.c_str()) < 0) {
        return {}; // another fork took it first
    }
    UniqueFd c = pool_socket::connect(to);
    if (!c) {
        ::unlink(to.c_str()); // it died since
    }
    return c;
}

std::optional<PendingVmm> VmmPool::take(unsigned cpus, const LaunchSpec& spec, int memory_fd,
                                        int state_fd, const std::string& log_path,
                                        std::span<const int> extra_fds) {
    if (extra_fds.size() > static_cast<std::size_t>(launch_fd::max_extra)) {
        return std::nullopt; // launch_vmm() says why
    }
    for (const Warm& w : warm()) {
        if (w.cpus != cpus) {
            continue;
        }
        UniqueFd c = claim(w);
        if (!c) {
            continue;
        }
        std::array<int, 2> p{};
        if (::pipe2(p.data(), O_CLOEXEC) < 0) {
            throw SystemError::from_errno("pipe2");
        }
        UniqueFd ready_r(p[0]);
        const UniqueFd ready_w(p[1]);
        const std::string text = spec.to_json().dump();
        const UniqueFd spec_fd = make_memfd("vmfork-spec", text.data(), text.size());
        const UniqueFd log(
            ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
        if (!log) {
            throw SystemError::from_errno("cannot create " + log_path);
        }
        std::vector<int> fds = {ready_w.get(), spec_fd.get(), log.get(), memory_fd, state_fd};
        fds.insert(fds.end(), extra_fds.begin(), extra_fds.end());
        if (!pool_socket::send(c.get(), "launch " + std::to_string(extra_fds.size()), fds)) {
            continue; // it died between the claim and now: the next one
        }
        // Its end of the ready pipe is the warm VMM's alone now: EOF if it dies.
        return PendingVmm(w.pid, std::move(ready_r), spec.name);
    }
    return std::nullopt;
}

std::vector<PendingVmm> VmmPool::refill(unsigned cpus) const {
    std::vector<PendingVmm> started;
    const unsigned want = target(cpus);
    if (want == 0) {
        return started;
    }
    ensure_dir(path_);
    const PoolLock lock(path_);
    // Waiting, and started but not listening yet (a starting-C-PID file each, which
    // the warm VMM removes once it listens).
    unsigned have = 0;
    const auto waiting = warm();
    for (const auto& w : waiting) {
        have += w.cpus == cpus ? 1 : 0;
    }
    for (const auto& name : entries(path_)) {
        const auto e = parse_entry(name, "starting-", "", true);
        if (!e) {
            continue;
        }
        const auto pid = static_cast<pid_t>(e->second);
        const bool listening = std::any_of(waiting.begin(), waiting.end(),
                                           [pid](const Warm& w) { return w.pid == pid; });
        if (!alive(pid) || listening) {
            ::unlink((path_ + "/" + name).c_str());
            continue;
        }
        have += e->first == cpus ? 1 : 0;
    }
    const std::string exe = vmm_exe();
    for (unsigned i = have; i < want; ++i) {
        LaunchSpec spec;
        spec.mode = LaunchSpec::Mode::Warm;
        spec.name = "warm";
        spec.runtime_dir = runtime_dir_;
        spec.cpus = cpus;
        spec.spawned_ns = monotonic_ns();
        started.push_back(launch_vmm(exe, spec, nullptr, -1, path_ + "/warm.log"));
        const std::string mark = path_ + "/starting-" + std::to_string(cpus) + "-" +
                                 std::to_string(started.back().pid());
        const UniqueFd f(::open(mark.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
        (void)f; // best effort: without it a concurrent refill may start one too many
    }
    return started;
}

unsigned VmmPool::shrink(std::optional<unsigned> cpus, unsigned keep) {
    unsigned told = 0;
    unsigned kept = 0;
    for (const Warm& w : warm()) {
        if (cpus && w.cpus != *cpus) {
            continue;
        }
        if (kept < keep) {
            ++kept;
            continue;
        }
        const UniqueFd c = claim(w);
        if (c && pool_socket::send(c.get(), "exit", {})) {
            ++told;
        }
    }
    return told;
}

} // namespace vmfork
