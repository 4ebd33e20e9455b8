// SPDX-License-Identifier: GPL-2.0
#include "vmfork/vmm/devices/vhost_vsock.h"

// The uAPI's legacy vring_init() is not valid C++; only the ring layout is needed.
#define VIRTIO_RING_NO_LEGACY
#include <cerrno>
#include <cstring>
#include <linux/vhost.h>
#include <linux/virtio_config.h>
#include <linux/virtio_ring.h>
#include <linux/virtio_vsock.h>
#include <unistd.h>

#include "vmfork/system_error.h"
#include "vmfork/vmm/memory.h"

namespace vmfork {

namespace {

constexpr unsigned event_queue = 2;

} // namespace

VhostVsock::VhostVsock(const GuestMemory& memory, IrqLine& irq)
    : VirtioMmio(irq, "virtio-vsock"), memory_(memory) {}

VhostVsock::~VhostVsock() {
    const std::lock_guard lock(mu_);
    vhost_.reset();
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
    {
        const std::lock_guard lock(kick_mu_);
        reset_outstanding_ = true;
    }
    post_events();
}

void VhostVsock::start_vhost(std::uint64_t features, const std::vector<VirtQueueConfig>& queues) {
    vhost_.reset();
    if (queues.size() != 3 || cid_ < 3) {
        throw SystemError(EINVAL, "virtio-vsock: no CID or queues");
    }
    event_queue_ = queues[event_queue];
    const std::array<VhostBackend::Ring, 2> rings{{{queues[0], bases_[0]}, {queues[1], bases_[1]}}};
    auto vhost = std::make_unique<VhostBackend>(default_path, "modprobe vhost_vsock", memory_,
                                                features, 0, rings);
    const std::uint64_t cid = cid_;
    vhost->ioctl(VHOST_VSOCK_SET_GUEST_CID, &cid,
                 "VHOST_VSOCK_SET_GUEST_CID " + std::to_string(cid));
    const int one = 1;
    vhost->ioctl(VHOST_VSOCK_SET_RUNNING, &one, "VHOST_VSOCK_SET_RUNNING");
    vhost->start_interrupts(mu_, [this] { interrupt_locked(int_vring); });
    vhost_ = std::move(vhost);
    vhost_->kick_all(); // whatever the guest queued before the start (or the fork)
}

void VhostVsock::pause() {
    const std::lock_guard lock(mu_);
    if (!vhost_) {
        return;
    }
    const int zero = 0;
    vhost_->ioctl(VHOST_VSOCK_SET_RUNNING, &zero, "VHOST_VSOCK_SET_RUNNING 0");
    for (unsigned i = 0; i < 2; ++i) {
        bases_[i] = vhost_->ring_base(i);
    }
}

void VhostVsock::resume() {
    const std::lock_guard lock(mu_);
    if (!vhost_) {
        return;
    }
    const int one = 1;
    vhost_->ioctl(VHOST_VSOCK_SET_RUNNING, &one, "VHOST_VSOCK_SET_RUNNING");
}

void VhostVsock::notify(unsigned queue) {
    if (queue == event_queue) {
        {
            const std::lock_guard lock(kick_mu_);
            ++event_kicks_;
            if (pending_resets_ == 0 && event_kicks_ > kicks_at_post_) {
                reset_outstanding_ = false;
            }
        }
        kick_cv_.notify_all();
        post_events(); // new event buffers: a pending event may go out now
        return;
    }
    if (vhost_) {
        vhost_->kick(queue);
    }
}

void VhostVsock::post_events() {
    const VirtQueueConfig& q = event_queue_;
    if (!vhost_ || !q.ready || q.num == 0) {
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
    {
        const std::lock_guard lock(kick_mu_);
        if (posted) {
            kicks_at_post_ = event_kicks_;
            reset_outstanding_ = true;
        } else if (pending_resets_ > 0) {
            reset_outstanding_ = true; // no buffer yet: the guest takes it later
        }
    }
    if (posted) {
        interrupt_locked(int_vring);
    }
}

bool VhostVsock::wait_resets_taken(std::chrono::steady_clock::time_point deadline,
                                   const std::function<bool()>& cancelled) const {
    std::unique_lock lock(kick_mu_);
    while (reset_outstanding_) {
        if ((cancelled && cancelled()) || std::chrono::steady_clock::now() >= deadline) {
            return false;
        }
        kick_cv_.wait_until(lock, std::min(deadline, std::chrono::steady_clock::now() +
                                                         std::chrono::milliseconds(50)));
    }
    return true;
}

void VhostVsock::reset_device() {
    vhost_.reset();
    bases_ = {};
    event_queue_ = {};
    event_avail_ = 0;
    pending_resets_ = 0;
    {
        const std::lock_guard lock(kick_mu_);
        reset_outstanding_ = false;
    }
    kick_cv_.notify_all();
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
