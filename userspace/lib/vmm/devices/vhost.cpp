// SPDX-License-Identifier: GPL-2.0
#include "vmfork/vmm/devices/vhost.h"

// The uAPI's legacy vring_init() is not valid C++; only the ring layout is needed.
#define VIRTIO_RING_NO_LEGACY
#include <array>
#include <cerrno>
#include <fcntl.h>
#include <linux/vhost.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "vmfork/ioctl.h"
#include "vmfork/system_error.h"
#include "vmfork/vmm/memory.h"

namespace vmfork {

namespace {

UniqueFd new_eventfd() {
    UniqueFd fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!fd) {
        throw SystemError::from_errno("eventfd for vhost");
    }
    return fd;
}

void signal_eventfd(const UniqueFd& fd) {
    const std::uint64_t v = 1;
    (void)::write(fd.get(), &v, sizeof(v)); // a full counter is signalled already
}

} // namespace

VhostBackend::VhostBackend(const char* path, const char* hint, const GuestMemory& memory,
                           std::uint64_t features, std::uint64_t withheld,
                           std::span<const Ring> rings) {
    fd_ = UniqueFd(::open(path, O_RDWR | O_CLOEXEC));
    if (!fd_) {
        throw SystemError::from_errno(std::string("open ") + path + " (" + hint + ")");
    }
    ioctl(VHOST_SET_OWNER, nullptr, "VHOST_SET_OWNER");
    std::uint64_t offered = 0;
    ioctl(VHOST_GET_FEATURES, &offered, "VHOST_GET_FEATURES");
    const std::uint64_t acked = features & offered & ~withheld;
    ioctl(VHOST_SET_FEATURES, &acked, "VHOST_SET_FEATURES");

    // Guest RAM as this process maps it: low RAM, and RAM above 4 GiB if any.
    alignas(vhost_memory)
        std::array<std::uint8_t, sizeof(vhost_memory) + 2 * sizeof(vhost_memory_region)>
            table{};
    auto* mem = reinterpret_cast<vhost_memory*>(table.data());
    auto add = [&](std::uint64_t gpa, std::uint64_t size) {
        vhost_memory_region& r = mem->regions[mem->nregions++];
        r.guest_phys_addr = gpa;
        r.memory_size = size;
        r.userspace_addr = reinterpret_cast<std::uint64_t>(memory.at(gpa, size));
    };
    add(0, memory.low_size());
    if (memory.high_size() != 0) {
        add(GuestMemory::high_ram_base, memory.high_size());
    }
    ioctl(VHOST_SET_MEM_TABLE, mem, "VHOST_SET_MEM_TABLE");

    for (unsigned i = 0; i < rings.size(); ++i) {
        const VirtQueueConfig& q = rings[i].config;
        if (!q.ready || q.num == 0) {
            throw SystemError(EINVAL,
                              std::string(path) + ": queue " + std::to_string(i) + " not ready");
        }
        vhost_vring_state num{.index = i, .num = q.num};
        ioctl(VHOST_SET_VRING_NUM, &num, "VHOST_SET_VRING_NUM");
        vhost_vring_state base{.index = i, .num = rings[i].base};
        ioctl(VHOST_SET_VRING_BASE, &base, "VHOST_SET_VRING_BASE");
        const std::uint64_t desc_size = 16ULL * q.num;
        const std::uint64_t avail_size = 6 + 2ULL * q.num;
        const std::uint64_t used_size = 6 + 8ULL * q.num;
        vhost_vring_addr addr{};
        addr.index = i;
        addr.desc_user_addr = reinterpret_cast<std::uint64_t>(memory.at(q.desc, desc_size));
        addr.avail_user_addr = reinterpret_cast<std::uint64_t>(memory.at(q.driver, avail_size));
        addr.used_user_addr = reinterpret_cast<std::uint64_t>(memory.at(q.device, used_size));
        ioctl(VHOST_SET_VRING_ADDR, &addr, "VHOST_SET_VRING_ADDR");
        kick_.push_back(new_eventfd());
        call_.push_back(new_eventfd());
        vhost_vring_file kf{.index = i, .fd = kick_.back().get()};
        ioctl(VHOST_SET_VRING_KICK, &kf, "VHOST_SET_VRING_KICK");
        vhost_vring_file cf{.index = i, .fd = call_.back().get()};
        ioctl(VHOST_SET_VRING_CALL, &cf, "VHOST_SET_VRING_CALL");
    }
}

VhostBackend::~VhostBackend() {
    if (thread_.joinable()) {
        signal_eventfd(stop_);
        thread_.join(); // it gives up the device's mutex when told to stop
    }
}

void VhostBackend::ioctl(unsigned long request, const void* arg, const std::string& what) const {
    xioctl(fd_.get(), request, arg, what);
}

std::uint16_t VhostBackend::ring_base(unsigned i) const {
    vhost_vring_state s{.index = i, .num = 0};
    ioctl(VHOST_GET_VRING_BASE, &s, "VHOST_GET_VRING_BASE");
    return static_cast<std::uint16_t>(s.num);
}

void VhostBackend::kick(unsigned i) const {
    if (i < kick_.size()) {
        signal_eventfd(kick_[i]);
    }
}

void VhostBackend::kick_all() const {
    for (const auto& k : kick_) {
        signal_eventfd(k);
    }
}

void VhostBackend::start_interrupts(std::mutex& mu, std::function<void()> on_used) {
    stop_ = new_eventfd();
    thread_ = std::thread([this, &mu, fn = std::move(on_used)] { interrupt_thread(mu, fn); });
}

void VhostBackend::interrupt_thread(std::mutex& mu, const std::function<void()>& on_used) {
    std::vector<pollfd> fds;
    for (const auto& c : call_) {
        fds.push_back({c.get(), POLLIN, 0});
    }
    fds.push_back({stop_.get(), POLLIN, 0});
    for (;;) {
        if (::poll(fds.data(), fds.size(), -1) < 0) {
            if (errno == EINTR) {
                continue;
            }
            return;
        }
        if ((fds.back().revents & POLLIN) != 0) {
            return;
        }
        bool used = false;
        for (std::size_t i = 0; i + 1 < fds.size(); ++i) {
            std::uint64_t v = 0;
            if ((fds[i].revents & POLLIN) != 0 && ::read(fds[i].fd, &v, sizeof(v)) > 0) {
                used = true;
            }
        }
        if (!used) {
            continue;
        }
        // The destructor joins this thread with mu held: never block on it.
        while (!mu.try_lock()) {
            pollfd stop{stop_.get(), POLLIN, 0};
            if (::poll(&stop, 1, 1) > 0) {
                return;
            }
        }
        on_used();
        mu.unlock();
    }
}

} // namespace vmfork
