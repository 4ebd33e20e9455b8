// SPDX-License-Identifier: GPL-2.0
#include "vmfork/vmm/vmm_service.h"

#include <algorithm>
#include <csignal>
#include <exception>
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vmfork/memory_object.h"
#include "vmfork/system_error.h"
#include "vmfork/vmm/boot/linux_loader.h"
#include "vmfork/vmm/devices/vhost_net.h"
#include "vmfork/vmm/guests/builtin/loader.h"
#include "vmfork/vmm/launcher.h"

namespace vmfork {

using control::Outcome;
using control::Request;
using control::RequestError;
using nlohmann::json;

namespace {

constexpr std::size_t report_history = 64;
constexpr std::uint64_t max_clones_per_request = 256;
constexpr auto clone_start_timeout = std::chrono::seconds(60);
constexpr std::size_t max_input = 4096; // console bytes per input request
// How long a Linux VM's agent has to answer and apply the VM's identity (a fresh boot
// takes 13-20 s under nested TCG before its agent starts).
constexpr auto customize_timeout = std::chrono::seconds(120);
// Connections served at once: a fork waiting for its clones holds one.
constexpr unsigned server_workers = 8;

std::uint64_t us_since(std::uint64_t start_ns) {
    return (monotonic_ns() - start_ns) / 1000;
}

// The report slots in an object's RAM, read through the fd (no mapping needed).
std::vector<vmfork_guest_slot> read_slots(const MemoryObject& memory, std::size_t cpus) {
    std::vector<vmfork_guest_slot> slots(cpus);
    const auto len = static_cast<ssize_t>(cpus * sizeof(vmfork_guest_slot));
    if (::pread(memory.fd(), slots.data(), static_cast<std::size_t>(len), VMFORK_GUEST_SLOTS) !=
        len) {
        throw SystemError::from_errno("read the fork-time report slots");
    }
    return slots;
}

// A boot's disks are its raw images; a clone's are linked-clone views on the frozen
// layers it inherited (launch_fd), which it owns from here on.
std::vector<std::shared_ptr<DiskImage>> open_disks(const LaunchSpec& spec, const std::string& dir) {
    std::vector<std::shared_ptr<DiskImage>> disks;
    for (const auto& d : spec.disks) {
        std::vector<UniqueFd> fds;
        for (const int fd : d.layer_fds) {
            fds.emplace_back(fd);
        }
        if (spec.mode == LaunchSpec::Mode::Boot || d.read_only) {
            disks.push_back(std::make_shared<RawDisk>(d.path, d.read_only));
            continue;
        }
        auto base = std::make_shared<RawDisk>(d.path, true);
        std::vector<std::shared_ptr<DiskLayer>> layers;
        layers.reserve(fds.size());
        for (auto& fd : fds) {
            layers.push_back(DiskLayer::open_frozen(std::move(fd), base->size()));
        }
        disks.push_back(std::make_shared<LayeredDisk>(base, std::move(layers), dir));
    }
    return disks;
}

json disks_json(const std::vector<DiskReport>& disks) {
    json a = json::array();
    for (const auto& d : disks) {
        a.push_back({{"path", d.path},
                     {"read_only", d.read_only},
                     {"layers", d.layers},
                     {"private_blocks", d.private_blocks},
                     {"shared_blocks", d.shared_blocks},
                     {"requests", d.requests},
                     {"failed_requests", d.failed_requests}});
    }
    return a;
}

json net_json(const LinuxProfile* linux_guest) {
    const VhostNet* n = linux_guest != nullptr ? linux_guest->net() : nullptr;
    if (n == nullptr) {
        return nullptr;
    }
    const auto address = n->tap().address();
    return {{"tap", n->tap().name()},
            {"mac", VhostNet::mac_string(n->mac())},
            {"host_address", address ? address->str() : ""},
            {"netns", "/proc/" + std::to_string(::getpid()) + "/ns/net"}};
}

LinuxConfig linux_config(const LaunchSpec& spec, const std::string& disk_dir) {
    LinuxConfig c;
    c.disk_dir = disk_dir;
    c.disks = open_disks(spec, disk_dir);
    c.net = spec.net;
    if (spec.mode == LaunchSpec::Mode::Clone) {
        c.new_vm_generations = spec.new_vm_generation;
    }
    return c;
}

// The built-in guest's reports, each checked by verifier as it arrives.
BuiltinConfig builtin_config(ReportVerifier& verifier) {
    BuiltinConfig c;
    c.report_history = report_history;
    c.on_report = [&verifier](const GuestReport& r) { verifier.check(r.slot); };
    return c;
}

UniqueFd truncate_file(const std::string& path) {
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (!fd) {
        throw SystemError::from_errno("cannot create " + path);
    }
    return fd;
}

} // namespace

VmmService::VmmService(const LaunchSpec& spec, std::optional<MemoryObject> memory,
                       std::optional<VmState> state, std::unique_ptr<WarmMachine> warm)
    : dir_(spec.runtime_dir), name_(spec.name),
      spawned_ns_(spec.spawned_ns != 0 ? spec.spawned_ns : monotonic_ns()),
      started_ns_(monotonic_ns()), platform_(spec.platform),
      kvm_(warm ? std::move(warm->kvm) : std::make_unique<Kvm>(Kvm::open())) {
    if (warm && spec.mode != LaunchSpec::Mode::Clone) {
        throw SystemError(EINVAL, "a warm VMM only becomes a clone");
    }
    control::RuntimeDir::check_name(name_);
    dir_.ensure();
    lock_ = std::make_unique<control::NameLock>(control::NameLock::acquire(dir_, name_));
    truncate_file(dir_.console_path(name_));

    disk_dir_ = spec.disk_dir.empty() ? "/var/tmp" : spec.disk_dir;
    std::unique_ptr<LinuxProfile> linux_guest;
    if (platform_ == Platform::Linux) {
        linux_guest = std::make_unique<LinuxProfile>(linux_config(spec, disk_dir_));
        linux_ = linux_guest.get();
    }
    MachineConfig config;
    config.serial_path = dir_.console_path(name_);
    // From a vCPU's thread: the guest powered off or asked for a reset; the VMM exits.
    config.on_power_off = [this] { stop(); };
    if (spec.mode == LaunchSpec::Mode::Boot) {
        device_.emplace(Device::open());
        config.mem_size = spec.mem_size;
        config.cpus = spec.cpus;
        if (linux_guest) {
            LinuxLoader loader(spec.linux_guest.kernel, spec.linux_guest.initrd,
                               spec.linux_guest.cmdline);
            MemoryObject ram = device_->create_memory(config.mem_size);
            identity_ = {0, ram.id()};
            machine_ = Machine::boot(*kvm_, std::move(ram), config, std::move(linux_guest), loader);
            customize();
            return;
        }
        fill_ = spec.builtin.fill;
        BuiltinGuestLoader loader(fill_, spec.builtin.report_every, spec.builtin.pace_us);
        MemoryObject ram = device_->create_memory(config.mem_size);
        identity_ = {0, ram.id()};
        verifier_ = std::make_unique<ReportVerifier>(config.cpus, identity_);
        auto builtin = std::make_unique<BuiltinProfile>(builtin_config(*verifier_));
        builtin_ = builtin.get();
        machine_ = Machine::boot(*kvm_, std::move(ram), config, std::move(builtin), loader);
        return;
    }
    if (!memory || !state) {
        throw SystemError(EINVAL, "a clone needs its memory object and state");
    }
    parent_ = spec.parent;
    fill_ = spec.fill;
    customize_ = spec.customize;
    identity_ = {spec.generation, memory->id()};
    std::unique_ptr<GuestProfile> profile = std::move(linux_guest);
    if (platform_ == Platform::Builtin) {
        std::vector<std::uint64_t> tsc;
        for (const auto& v : state->vcpus) {
            tsc.push_back(v.msr(VcpuState::msr_ia32_tsc).value_or(0));
        }
        verifier_ = std::make_unique<ReportVerifier>(
            spec.parent_positions, read_slots(*memory, state->vcpus.size()), tsc, identity_);
        auto builtin = std::make_unique<BuiltinProfile>(builtin_config(*verifier_));
        builtin_ = builtin.get();
        profile = std::move(builtin);
    }
    fork_state_ = std::move(state);
    if (warm) {
        if (warm->machine->cpus() != fork_state_->vcpus.size()) {
            throw SystemError(EINVAL, "a warm VMM with " + std::to_string(warm->machine->cpus()) +
                                          " vCPUs was handed a clone of " +
                                          std::to_string(fork_state_->vcpus.size()));
        }
        machine_ = std::move(warm->machine);
        machine_->start_clone(GuestMemory(std::move(*memory)), *fork_state_, identity_,
                              std::move(profile), config);
    } else {
        machine_ = Machine::restore(*kvm_, std::move(*memory), *fork_state_, identity_,
                                    std::move(profile), config);
    }
    customize();
}

VmmService::~VmmService() = default;

void VmmService::customize() {
    const std::uint64_t cid = linux_ != nullptr ? linux_->vsock_cid() : 0;
    if (cid == 0 || !customize_) {
        return;
    }
    agent::Identity id;
    id.name = name_;
    id.generation = identity_.generation;
    id.parent = parent_;
    id.id = std::to_string(identity_.id);
    // A clone's guest must take its vsock reset (and new CID) first: a request before
    // that is dropped, and costs a whole connect attempt (docs/benchmarks.md).
    const LinuxProfile* guest = linux_;
    customizer_.start(static_cast<std::uint32_t>(cid), std::move(id), customize_timeout,
                      [guest](std::chrono::steady_clock::time_point deadline,
                              const std::function<bool()>& cancelled) {
                          (void)guest->wait_vsock_reset_taken(deadline, cancelled);
                      });
}

void VmmService::listen() {
    control::Dispatcher d;
    d.add("info", [this](const Request& r) { return info(r); });
    d.add("fork", [this](const Request& r) { return fork(r); });
    d.add("reset", [this](const Request& r) { return reset(r); });
    d.add("pause", [this](const Request& r) { return pause(r); });
    d.add("resume", [this](const Request& r) { return resume(r); });
    d.add("input", [this](const Request& r) { return input(r); });
    d.add("kill", [](const Request& r) {
        r.check_only({});
        return Outcome{control::ok_reply(), true};
    });
    server_ = std::make_unique<control::Server>(dir_.socket_path(name_), std::move(d), 0600,
                                                std::chrono::seconds(10), server_workers);
    server_ptr_.store(server_.get());
}

void VmmService::run() {
    // A guest that powered off before the server was published stopped nothing.
    if (machine_->powered_off()) {
        return;
    }
    server_->run();
}

void VmmService::stop() noexcept {
    if (control::Server* s = server_ptr_.load()) {
        s->stop();
    }
}

std::string VmmService::state_name() const {
    if (template_state_) {
        return "template";
    }
    if (!machine_->errors().empty()) {
        return "error";
    }
    const auto states = machine_->vcpu_states();
    if (std::all_of(states.begin(), states.end(),
                    [](VcpuLifecycle s) { return s == VcpuLifecycle::Exited; })) {
        return "stopped";
    }
    return paused_ ? "paused" : "running";
}

json VmmService::describe() const {
    const auto st = machine_->memory().object().stats();
    json reports = nullptr; // the built-in guest's, checked by the verifier
    if (verifier_) {
        const auto sum = verifier_->summary();
        json steps = json::array();
        json own = json::array();
        for (std::size_t i = 0; i < sum.positions.size(); ++i) {
            steps.push_back(sum.positions[i].step);
            own.push_back(sum.own_per_cpu[i]);
        }
        reports = {{"checked", sum.reports},
                   {"own", sum.own},
                   {"own_per_cpu", own},
                   {"failures", sum.failures},
                   {"errors", sum.errors},
                   {"steps", steps},
                   {"ram_checked_pages", sum.ram_checked}};
    }
    const auto first =
        builtin_ != nullptr ? builtin_->reports().first() : std::optional<GuestReport>{};
    std::uint64_t first_report_ns = 0;
    if (first) {
        // steady_clock is CLOCK_MONOTONIC on Linux: comparable between processes.
        first_report_ns = static_cast<std::uint64_t>(
            std::chrono::duration_cast<std::chrono::nanoseconds>(first->when.time_since_epoch())
                .count());
    }
    return {
        {"name", name_},
        {"pid", ::getpid()},
        {"parent", parent_},
        {"generation", identity_.generation},
        {"id", identity_.id},
        {"state", state_name()},
        {"cpus", machine_->cpus()},
        {"mem_size", machine_->memory().size()},
        {"fill", fill_},
        {"spawned_ns", spawned_ns_},
        {"started_ns", started_ns_},
        {"first_report_ns", first_report_ns},
        {"uptime_ms", us_since(started_ns_) / 1000},
        {"guest", platform_ == Platform::Linux ? "linux" : "builtin"},
        {"vsock_cid", linux_ != nullptr ? linux_->vsock_cid() : 0},
        {"vsock_reset_pending", linux_ != nullptr && linux_->vsock_reset_pending()},
        {"customize", customize_ ? customizer_.status() : json{{"state", "off"}}},
        {"reports", reports},
        {"vcpu_errors", machine_->errors()},
        {"disks", disks_json(linux_ != nullptr ? linux_->disks() : std::vector<DiskReport>{})},
        {"net", net_json(linux_)},
        {"memory",
         {{"id", st.id},
          {"parent_id", st.parent_id},
          {"depth", st.depth},
          {"size", st.size},
          {"resident_pages", st.resident_pages},
          {"shared_pages", st.shared_pages},
          {"private_pages", st.private_pages},
          {"cow_breaks", st.cow_breaks},
          {"forks", st.forks},
          {"resets", st.resets},
          {"chain_length", st.chain_length},
          {"template", (st.flags & VMFORK_STATS_TEMPLATE) != 0}}},
        {"console", dir_.console_path(name_)},
    };
}

Outcome VmmService::info(const Request& req) {
    req.check_only({});
    const std::lock_guard lock(mu_);
    return {control::ok_reply(describe())};
}

std::string VmmService::clone_name(const std::string& prefix,
                                   const std::vector<std::string>& taken) const {
    for (unsigned n = 1; n < 100000; ++n) {
        std::string name = prefix + std::to_string(n);
        if (!control::RuntimeDir::valid_name(name)) {
            throw RequestError(EINVAL,
                               "clone names '" + prefix +
                                   "N' are not valid VM names: use a shorter --name-prefix");
        }
        if (std::find(taken.begin(), taken.end(), name) == taken.end() &&
            starting_.count(name) == 0 && !dir_.in_use(name)) {
            return name;
        }
    }
    throw RequestError(EEXIST, "no free clone name with prefix '" + prefix + "'");
}

Outcome VmmService::fork(const Request& req) {
    req.check_only({"count", "template", "name_prefix", "customize", "new_vm_generation"});
    const auto count = req.u64("count", 1, 1, max_clones_per_request);
    const bool make_template = req.boolean("template", false);
    const bool customize = req.boolean("customize", true);
    const bool new_vm_generation = req.boolean("new_vm_generation", true);
    const std::string prefix = req.name("name_prefix", name_ + "-");
    // Held until the clones are started; not while they come up, so that info (ls,
    // stats) and other requests are answered meanwhile.
    std::unique_lock lock(mu_);
    if (const std::string state = state_name(); state == "error" || state == "stopped") {
        throw RequestError(EIO, "VM " + name_ + " is " + state + ": it cannot be forked");
    }

    // Pause, capture, VM_FORK count times, resume: the parent stops for this long only.
    const std::uint64_t t0 = monotonic_ns();
    std::uint64_t pause_us = 0;
    std::vector<MemoryObject> children;
    std::vector<std::uint64_t> fork_us;
    VmState state;
    std::vector<GuestPosition> positions;
    std::vector<DiskFork> disks;
    if (template_state_) {
        state = *template_state_;
        positions = template_positions_;
        for (std::uint64_t i = 0; i < count; ++i) {
            const std::uint64_t f = monotonic_ns();
            children.push_back(machine_->memory().object().fork(ForkMode::Live));
            fork_us.push_back(us_since(f));
        }
        disks = fork_disks(); // frozen with the template: the same chains
    } else {
        const bool was_paused = paused_;
        machine_->pause();
        try {
            state = machine_->capture();
            if (verifier_) {
                positions = verifier_->summary().positions;
            }
            for (std::uint64_t i = 0; i < count; ++i) {
                const std::uint64_t f = monotonic_ns();
                children.push_back(machine_->memory().object().fork(
                    i == 0 && make_template ? ForkMode::Template : ForkMode::Live));
                fork_us.push_back(us_since(f));
            }
            // The disks of the same instant (the VM paused, no request in flight).
            disks = fork_disks();
        } catch (...) {
            if (!was_paused) {
                machine_->resume();
            }
            throw;
        }
        if (make_template) {
            template_state_ = state;
            template_positions_ = positions;
        } else if (!was_paused) {
            machine_->resume();
        }
        pause_us = us_since(t0);
    }

    // A clone's network: a tap of the same name and host address as this VM's, in a
    // network namespace of its own (docs/networks.md).
    std::optional<NetConfig> net;
    if (const VhostNet* n = linux_ != nullptr ? linux_->net() : nullptr; n != nullptr) {
        net = NetConfig{n->tap().name(), n->tap().address()};
    }

    // Start the clones, each a VMM process of its own: a warm one of the pool if one
    // waits, else a new one.
    const auto cpus = static_cast<unsigned>(state.vcpus.size());
    VmmPool pool(dir_.path());
    const unsigned pool_target = pool.target(cpus);
    const auto blob = state.serialize();
    const UniqueFd state_fd = make_memfd("vmfork-state", blob.data(), blob.size());
    const std::string exe = vmm_exe();
    std::vector<std::string> names;
    std::vector<PendingVmm> pending;
    std::vector<std::uint64_t> spawned;
    std::vector<bool> warm; // from the pool
    json clones = json::array();
    for (std::uint64_t i = 0; i < count; ++i) {
        const std::string name = clone_name(prefix, names);
        names.push_back(name);
        const std::uint64_t now = monotonic_ns();
        LaunchSpec spec;
        spec.mode = LaunchSpec::Mode::Clone;
        spec.name = name;
        spec.runtime_dir = dir_.path();
        spec.spawned_ns = now;
        spec.platform = platform_;
        spec.parent = name_;
        spec.generation = identity_.generation + 1;
        spec.fill = fill_;
        spec.parent_positions = positions;
        spec.customize = customize;
        spec.new_vm_generation = new_vm_generation;
        spec.disk_dir = disk_dir_;
        std::vector<int> layer_fds;
        for (const auto& d : disks) {
            DiskSpec ds{d.path, d.read_only, {}};
            for (const auto& layer : d.layers) {
                ds.layer_fds.push_back(launch_fd::first_extra + static_cast<int>(layer_fds.size()));
                layer_fds.push_back(layer->fd());
            }
            spec.disks.push_back(std::move(ds));
        }
        if (net) {
            spec.net = *net;
            spec.own_netns = true; // the scheme of docs/networks.md
        }
        const std::string log = dir_.path() + "/" + name + ".log";
        std::optional<PendingVmm> p;
        if (pool_target > 0) {
            p = pool.take(cpus, spec, children[i].fd(), state_fd.get(), log, layer_fds);
        }
        warm.push_back(p.has_value());
        pending.push_back(p ? std::move(*p)
                            : launch_vmm(exe, spec, &children[i], state_fd.get(), log, layer_fds));
        spawned.push_back(now);
    }
    children.clear(); // the clones hold their own descriptors now
    starting_.insert(names.begin(), names.end());
    lock.unlock();
    const auto deadline = std::chrono::steady_clock::now() + clone_start_timeout;
    bool all_ok = true;
    for (std::size_t i = 0; i < pending.size(); ++i) {
        json c = {{"name", pending[i].name()},
                  {"pid", pending[i].pid()},
                  {"fork_us", fork_us[i]},
                  {"spawned_ns", spawned[i]},
                  {"warm", static_cast<bool>(warm[i])}};
        try {
            pending[i].wait(deadline);
            c["ready_us"] = us_since(spawned[i]);
        } catch (const SystemError& e) {
            c["errno"] = e.error();
            c["error"] = e.what();
            all_ok = false;
        }
        clones.push_back(std::move(c));
    }
    json pool_reply = {{"target", pool_target},
                       {"taken", std::count(warm.begin(), warm.end(), true)}};
    lock.lock();
    if (pool_target > 0) {
        // The clones run: warm VMMs in place of the ones taken, after the reply (starting
        // processes would delay it by 10-20 ms in the test VM). A failure goes to this
        // VMM's log; `vmfork pool` shows what waits.
        refill_pool(cpus);
        pool_reply["refilling"] = true;
    }
    for (const auto& n : names) {
        starting_.erase(n);
    }
    return {control::ok_reply({{"clones", clones},
                               {"pause_us", pause_us},
                               {"request_ns", t0},
                               {"template", template_state_.has_value()},
                               {"pool", pool_reply},
                               {"all_ok", all_ok}})};
}

void VmmService::refill_pool(unsigned cpus) {
    if (refill_.joinable()) {
        refill_.join(); // the last fork's: it only starts processes
    }
    refill_ = std::jthread([dir = dir_.path(), cpus, name = name_] {
        try {
            (void)VmmPool(dir).refill(cpus);
        } catch (const std::exception& e) {
            std::fprintf(stderr, "vmfork-vmm: %s: the warm pool was not refilled: %s\n",
                         name.c_str(), e.what());
        }
    });
}

std::vector<DiskFork> VmmService::fork_disks() {
    return linux_ != nullptr ? linux_->fork_disks() : std::vector<DiskFork>{};
}

Outcome VmmService::reset(const Request& req) {
    req.check_only({});
    const std::lock_guard lock(mu_);
    if (!fork_state_) {
        throw RequestError(EINVAL, "VM " + name_ +
                                       " is not a clone: only a clone can go back to its fork "
                                       "point");
    }
    if (template_state_) {
        throw RequestError(EPERM, "VM " + name_ + " is a template: it cannot be reset");
    }
    const auto before = machine_->memory().object().stats();
    const std::uint64_t t0 = monotonic_ns();
    machine_->reset_to(*fork_state_, identity_);
    if (verifier_) {
        verifier_->rewind();
    }
    customize(); // the fork point had the parent's identity
    const std::uint64_t took = us_since(t0);
    paused_ = false;
    return {control::ok_reply({{"reset_us", took}, {"dropped_pages", before.private_pages}})};
}

Outcome VmmService::input(const Request& req) {
    req.check_only({"data"});
    const std::lock_guard lock(mu_);
    if (platform_ != Platform::Linux) {
        throw RequestError(ENOTSUP, "VM " + name_ +
                                        " runs the built-in guest: its console "
                                        "takes no input");
    }
    const std::string data = req.hex_bytes("data", max_input);
    machine_->console_input(
        std::span(reinterpret_cast<const std::uint8_t*>(data.data()), data.size()));
    return {control::ok_reply({{"bytes", data.size()}})};
}

Outcome VmmService::pause(const Request& req) {
    req.check_only({});
    const std::lock_guard lock(mu_);
    machine_->pause();
    paused_ = true;
    return {control::ok_reply()};
}

Outcome VmmService::resume(const Request& req) {
    req.check_only({});
    const std::lock_guard lock(mu_);
    if (template_state_) {
        throw RequestError(EPERM, "VM " + name_ + " is a template: it never runs again (fork it)");
    }
    machine_->resume();
    paused_ = false;
    return {control::ok_reply()};
}

} // namespace vmfork
