// SPDX-License-Identifier: GPL-2.0
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>

#include <array>
#include <cstdint>
#include <memory>
#include <string>

#include "vmfork/vmm/devices/vhost.h"
#include "vmfork/vmm/devices/virtio_mmio.h"

namespace vmfork {

// virtio-vsock on the virtio-mmio transport, backed by the host kernel's vhost-vsock
// (/dev/vhost-vsock): the host kernel moves the packets of the rx and tx queues (0, 1)
// between guest memory and host AF_VSOCK sockets; this process owns only the event
// queue (2) and the interrupt. Each VM has its own CID.
//
// Across a fork: pause() stops vhost (no write into guest memory is in flight while
// the vCPUs are paused and the memory is forked) and saves where it was in each ring;
// a clone's restore() starts its own vhost with its own CID from those ring positions
// and posts VIRTIO_VSOCK_EVENT_TRANSPORT_RESET on the event queue, so the guest drops
// every connection of the parent's (none is answered twice) and rereads its CID.
//
// Queue notifies reach this process as MMIO writes and are passed on to vhost's kick
// eventfds; vhost's call eventfds are read by one thread that raises the interrupt.
//
// Locking: VirtioMmio's mutex guards everything here too; vhost's interrupt thread
// takes it (VhostBackend) and gives it up when stopped.
class VhostVsock final : public VirtioMmio {
public:
    static constexpr std::uint32_t id = 19;
    static constexpr std::uint16_t max_queue_size = 256;
    static constexpr const char* default_path = "/dev/vhost-vsock";

    VhostVsock(const GuestMemory& memory, IrqLine& irq);
    ~VhostVsock() override;
    VhostVsock(const VhostVsock&) = delete;
    VhostVsock& operator=(const VhostVsock&) = delete;
    VhostVsock(VhostVsock&&) = delete;
    VhostVsock& operator=(VhostVsock&&) = delete;

    // Whether this host can back the device (the vhost_vsock module loaded, access).
    static bool available();

    // The CID the guest gets (from the next activation or restore on).
    void set_cid(std::uint64_t cid);
    [[nodiscard]] std::uint64_t cid() const;
    // Stops vhost and records its ring positions (with the vCPUs paused); resume()
    // starts it again.
    void pause();
    void resume();
    // VIRTIO_VSOCK_EVENT_TRANSPORT_RESET events posted so far (for tests and stats).
    [[nodiscard]] std::uint64_t resets_posted() const;
    // Waits until the guest has taken the transport resets posted so far, or deadline,
    // or cancelled() (polled): a clone's guest drops a connection request that comes
    // before its driver took the reset and the new CID, and the host then waits out
    // its connect attempt. Linux's driver refills and kicks the event queue once it
    // handled an event: a kick after the last reset posted is the sign. True if taken.
    bool wait_resets_taken(std::chrono::steady_clock::time_point deadline,
                           const std::function<bool()>& cancelled) const;

protected:
    [[nodiscard]] std::uint32_t device_id() const override { return id; }
    [[nodiscard]] std::uint64_t device_features() const override;
    [[nodiscard]] unsigned queue_count() const override { return 3; }
    [[nodiscard]] std::uint16_t queue_max() const override { return max_queue_size; }
    void read_config(std::uint64_t offset, std::span<std::uint8_t> data) const override;
    void activate(std::uint64_t features, const std::vector<VirtQueueConfig>& queues) override;
    void notify(unsigned queue) override;
    void reset_device() override;
    void save_device(StateWriter& out) const override;
    void restore_device(StateReader& in) override;
    void restored(std::uint64_t features, const std::vector<VirtQueueConfig>& queues) override;

private:
    // Opens and configures vhost from bases_ and starts it (mu_ held).
    void start_vhost(std::uint64_t features, const std::vector<VirtQueueConfig>& queues);
    // Writes pending events into the guest's event buffers (mu_ held).
    void post_events();

    const GuestMemory& memory_;
    std::uint64_t cid_ = 0;
    std::unique_ptr<VhostBackend> vhost_;  // while the driver has the device running
    std::array<std::uint16_t, 2> bases_{}; // next avail index of rx and tx
    VirtQueueConfig event_queue_;
    std::uint16_t event_avail_ = 0; // next avail index of the event queue
    unsigned pending_resets_ = 0;
    std::uint64_t resets_posted_ = 0;
    // Event-queue kicks, and their count when the last reset was posted (kick_mu_).
    mutable std::mutex kick_mu_;
    mutable std::condition_variable kick_cv_;
    std::uint64_t event_kicks_ = 0;
    std::uint64_t kicks_at_post_ = 0;
    bool reset_outstanding_ = false; // posted or pending, not taken yet
};

} // namespace vmfork
