// SPDX-License-Identifier: GPL-2.0
#include "vmfork/vmm/devices/vhost_vsock.h"

// The uAPI's legacy vring_init() is not valid C++; only the ring layout is needed.
#define VIRTIO_RING_NO_LEGACY
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <linux/vhost.h>
#include <linux/virtio_config.h>
#include <linux/virtio_ring.h>
#include <linux/virtio_vsock.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "vmfork/system_error.h"
#include "vmfork/vmm/memory.h"

namespace vmfork {

namespace {

constexpr unsigned event_queue = 2;

void vhost_ioctl(int fd, unsigned long request, const void* arg, const char* what) {
    // NOLINTNEXTLINE(cppcoreguidelines-pro-type-vararg): the ioctl ABI
    if (::ioctl(fd, request, arg) < 0) {
        throw SystemError::from_errno(what);
    }
}

UniqueFd new_eventfd() {
    UniqueFd fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!fd) {
        throw SystemError::from_errno("eventfd for vhost-vsock");
    }
    return fd;
}

} // namespace

VhostVsock::VhostVsock(const GuestMemory& memory, IrqLine& irq)
    : VirtioMmio(irq, "virtio-vsock"), memory_(memory) {}

VhostVsock::~VhostVsock() {
    const std::lock_guard lock(mu_);
    stop_vhost();
}

bool VhostVsock::available() {
    return ::access(default_path, R_OK | W_OK) == 0;
}

void VhostVsock::set_cid(std::uint64_t cid) {
    const std::lock_guard lock(mu_);
    cid_ = cid;
}

std::uint64_t VhostVsock::cid() const {
    const std::lock_guard lock(mu_);
    return cid_;
}

std::uint64_t VhostVsock::resets_posted() const {
    const std::lock_guard lock(mu_);
    return resets_posted_;
}

std::uint64_t VhostVsock::device_features() const {
    // What our event queue handling and vhost both do: no event index (this process
    // does not maintain avail_event for its queue), no seqpacket.
    return feature_version_1 | (1ULL << VIRTIO_RING_F_INDIRECT_DESC);
}

void VhostVsock::read_config(std::uint64_t offset, std::span<std::uint8_t> data) const {
    // struct virtio_vsock_config: le64 guest_cid.
    for (std::size_t i = 0; i < data.size(); ++i) {
        const std::uint64_t at = offset + i;
        data[i] = at < 8 ? static_cast<std::uint8_t>(cid_ >> (8 * at)) : 0;
    }
}

void VhostVsock::activate(std::uint64_t features, const std::vector<VirtQueueConfig>& queues) {
    bases_ = {};
    event_avail_ = 0;
    start_vhost(features, queues);
}

void VhostVsock::restored(std::uint64_t features, const std::vector<VirtQueueConfig>& queues) {
    start_vhost(features, queues);
    // The clone's connections are the parent's: the guest must drop them all.
    ++pending_resets_;
    post_events();
}

void VhostVsock::start_vhost(std::uint64_t features, const std::vector<VirtQueueConfig>& queues) {
    stop_vhost();
    if (queues.size() != 3 || cid_ < 3) {
        throw SystemError(EINVAL, "virtio-vsock: no CID or queues");
    }
    event_queue_ = queues[event_queue];
    UniqueFd vhost(::open(default_path, O_RDWR | O_CLOEXEC));
    if (!vhost) {
        throw SystemError::from_errno(std::string("open ") + default_path +
                                      " (modprobe vhost_vsock)");
    }
    vhost_ioctl(vhost.get(), VHOST_SET_OWNER, nullptr, "VHOST_SET_OWNER");
    std::uint64_t offered = 0;
    vhost_ioctl(vhost.get(), VHOST_GET_FEATURES, &offered, "VHOST_GET_FEATURES");
    const std::uint64_t acked = features & offered;
    vhost_ioctl(vhost.get(), VHOST_SET_FEATURES, &acked, "VHOST_SET_FEATURES");

    // Guest RAM as this process maps it: low RAM, and RAM above 4 GiB if any.
    alignas(vhost_memory)
        std::array<std::uint8_t, sizeof(vhost_memory) + 2 * sizeof(vhost_memory_region)>
            table{};
    auto* mem = reinterpret_cast<vhost_memory*>(table.data());
    auto add = [&](std::uint64_t gpa, std::uint64_t size) {
        vhost_memory_region& r = mem->regions[mem->nregions++];
        r.guest_phys_addr = gpa;
        r.memory_size = size;
        r.userspace_addr = reinterpret_cast<std::uint64_t>(memory_.at(gpa, size));
    };
    add(0, memory_.low_size());
    if (memory_.high_size() != 0) {
        add(GuestMemory::high_ram_base, memory_.high_size());
    }
    vhost_ioctl(vhost.get(), VHOST_SET_MEM_TABLE, mem, "VHOST_SET_MEM_TABLE");

    std::array<UniqueFd, 2> kick;
    std::array<UniqueFd, 2> call;
    for (unsigned i = 0; i < 2; ++i) {
        const VirtQueueConfig& q = queues[i];
        if (!q.ready || q.num == 0) {
            throw SystemError(EINVAL, "virtio-vsock: queue " + std::to_string(i) + " not ready");
        }
        vhost_vring_state num{.index = i, .num = q.num};
        vhost_ioctl(vhost.get(), VHOST_SET_VRING_NUM, &num, "VHOST_SET_VRING_NUM");
        vhost_vring_state base{.index = i, .num = bases_[i]};
        vhost_ioctl(vhost.get(), VHOST_SET_VRING_BASE, &base, "VHOST_SET_VRING_BASE");
        const std::uint64_t desc_size = 16ULL * q.num;
        const std::uint64_t avail_size = 6 + 2ULL * q.num;
        const std::uint64_t used_size = 6 + 8ULL * q.num;
        vhost_vring_addr addr{};
        addr.index = i;
        addr.desc_user_addr = reinterpret_cast<std::uint64_t>(memory_.at(q.desc, desc_size));
        addr.avail_user_addr = reinterpret_cast<std::uint64_t>(memory_.at(q.driver, avail_size));
        addr.used_user_addr = reinterpret_cast<std::uint64_t>(memory_.at(q.device, used_size));
        vhost_ioctl(vhost.get(), VHOST_SET_VRING_ADDR, &addr, "VHOST_SET_VRING_ADDR");
        kick[i] = new_eventfd();
        call[i] = new_eventfd();
        vhost_vring_file kf{.index = i, .fd = kick[i].get()};
        vhost_ioctl(vhost.get(), VHOST_SET_VRING_KICK, &kf, "VHOST_SET_VRING_KICK");
        vhost_vring_file cf{.index = i, .fd = call[i].get()};
        vhost_ioctl(vhost.get(), VHOST_SET_VRING_CALL, &cf, "VHOST_SET_VRING_CALL");
    }
    const std::uint64_t cid = cid_;
    vhost_ioctl(vhost.get(), VHOST_VSOCK_SET_GUEST_CID, &cid,
                ("VHOST_VSOCK_SET_GUEST_CID " + std::to_string(cid)).c_str());
    const int one = 1;
    vhost_ioctl(vhost.get(), VHOST_VSOCK_SET_RUNNING, &one, "VHOST_VSOCK_SET_RUNNING");

    vhost_ = std::move(vhost);
    kick_ = std::move(kick);
    call_ = std::move(call);
    stop_ = new_eventfd();
    running_ = true;
    thread_ = std::thread([this, fd = stop_.get()] { interrupt_thread(fd); });
    // Whatever the guest queued before the start (or before the fork) gets looked at.
    for (const auto& k : kick_) {
        const std::uint64_t v = 1;
        (void)::write(k.get(), &v, sizeof(v));
    }
}

void VhostVsock::stop_vhost() {
    if (thread_.joinable()) {
        const std::uint64_t v = 1;
        (void)::write(stop_.get(), &v, sizeof(v));
        thread_.join(); // it gives up mu_ when told to stop (interrupt_thread)
    }
    vhost_.reset();
    kick_ = {};
    call_ = {};
    stop_.reset();
    running_ = false;
}

void VhostVsock::interrupt_thread(int stop_fd) {
    std::array<pollfd, 3> fds{
        {{call_[0].get(), POLLIN, 0}, {call_[1].get(), POLLIN, 0}, {stop_fd, POLLIN, 0}}};
    for (;;) {
        if (::poll(fds.data(), fds.size(), -1) < 0) {
            if (errno == EINTR) {
                continue;
            }
            return;
        }
        if ((fds[2].revents & POLLIN) != 0) {
            return;
        }
        bool used = false;
        for (unsigned i = 0; i < 2; ++i) {
            std::uint64_t v = 0;
            if ((fds[i].revents & POLLIN) != 0 && ::read(fds[i].fd, &v, sizeof(v)) > 0) {
                used = true;
            }
        }
        if (!used) {
            continue;
        }
        // stop_vhost() joins this thread with mu_ held: never block on it.
        while (!mu_.try_lock()) {
            pollfd stop{stop_fd, POLLIN, 0};
            if (::poll(&stop, 1, 1) > 0) {
                return;
            }
        }
        interrupt_locked(int_vring);
        mu_.unlock();
    }
}

void VhostVsock::pause() {
    const std::lock_guard lock(mu_);
    if (!running_) {
        return;
    }
    const int zero = 0;
    vhost_ioctl(vhost_.get(), VHOST_VSOCK_SET_RUNNING, &zero, "VHOST_VSOCK_SET_RUNNING 0");
    for (unsigned i = 0; i < 2; ++i) {
        vhost_vring_state s{.index = i, .num = 0};
        vhost_ioctl(vhost_.get(), VHOST_GET_VRING_BASE, &s, "VHOST_GET_VRING_BASE");
        bases_[i] = static_cast<std::uint16_t>(s.num);
    }
}

void VhostVsock::resume() {
    const std::lock_guard lock(mu_);
    if (!running_) {
        return;
    }
    const int one = 1;
    vhost_ioctl(vhost_.get(), VHOST_VSOCK_SET_RUNNING, &one, "VHOST_VSOCK_SET_RUNNING");
}

void VhostVsock::notify(unsigned queue) {
    if (queue == event_queue) {
        post_events(); // new event buffers: a pending event may go out now
        return;
    }
    if (queue < kick_.size() && kick_[queue]) {
        const std::uint64_t v = 1;
        (void)::write(kick_[queue].get(), &v, sizeof(v));
    }
}

void VhostVsock::post_events() {
    const VirtQueueConfig& q = event_queue_;
    if (!running_ || !q.ready || q.num == 0) {
        return;
    }
    bool posted = false;
    try {
        auto* avail_idx = reinterpret_cast<std::uint16_t*>(memory_.at(q.driver + 2, 2));
        auto* used_idx = reinterpret_cast<std::uint16_t*>(memory_.at(q.device + 2, 2));
        while (pending_resets_ > 0 &&
               __atomic_load_n(avail_idx, __ATOMIC_ACQUIRE) != event_avail_) {
            const auto head =
                memory_.read<std::uint16_t>(q.driver + 4 + 2ULL * (event_avail_ % q.num));
            ++event_avail_;
            if (head >= q.num) {
                continue; // a bad descriptor index: skipped, as a device may
            }
            const auto d = memory_.read<vring_desc>(q.desc + 16ULL * head);
            std::uint32_t written = 0;
            if ((d.flags & VRING_DESC_F_WRITE) != 0 && d.len >= sizeof(virtio_vsock_event)) {
                virtio_vsock_event ev{};
                ev.id = VIRTIO_VSOCK_EVENT_TRANSPORT_RESET;
                memory_.write(d.addr, ev);
                written = sizeof(ev);
                --pending_resets_;
                ++resets_posted_;
            }
            const std::uint16_t used = *used_idx;
            vring_used_elem elem{.id = head, .len = written};
            memory_.write(q.device + 4 + 8ULL * (used % q.num), elem);
            __atomic_store_n(used_idx, static_cast<std::uint16_t>(used + 1), __ATOMIC_RELEASE);
            posted = true;
        }
    } catch (const std::out_of_range&) {
        // Rings outside RAM: the driver's error; nothing is posted.
    }
    if (posted) {
        interrupt_locked(int_vring);
    }
}

void VhostVsock::reset_device() {
    stop_vhost();
    bases_ = {};
    event_queue_ = {};
    event_avail_ = 0;
    pending_resets_ = 0;
}

void VhostVsock::save_device(StateWriter& out) const {
    out.u16(bases_[0]);
    out.u16(bases_[1]);
    out.u16(event_avail_);
    out.u32(pending_resets_);
}

void VhostVsock::restore_device(StateReader& in) {
    bases_[0] = in.u16();
    bases_[1] = in.u16();
    event_avail_ = in.u16();
    pending_resets_ = in.u32();
    if (pending_resets_ > 1024) {
        in.fail("pending events " + std::to_string(pending_resets_));
    }
}

} // namespace vmfork
