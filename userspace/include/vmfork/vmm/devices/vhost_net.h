// SPDX-License-Identifier: GPL-2.0
#pragma once

#include <array>
#include <cstdint>
#include <memory>

#include "vmfork/vmm/devices/vhost.h"
#include "vmfork/vmm/devices/virtio_mmio.h"
#include "vmfork/vmm/tap.h"

namespace vmfork {

// virtio-net on the virtio-mmio transport, backed by the host kernel's vhost-net
// (/dev/vhost-net) on a tap: the host kernel moves frames between the rx and tx queues
// (0, 1) and the tap; this process only passes notifies on and raises the interrupt.
// Offered: a MAC address (VIRTIO_NET_F_MAC), nothing else (no offloads, no control
// queue, no mergeable rx buffers): the link is always up.
//
// Across a fork: pause() takes the tap away from vhost (no frame is written into guest
// memory while the vCPUs are paused and the memory is forked) and saves where vhost
// was in each ring. A clone's device starts from those positions on its own tap; the
// MAC is part of the saved state, so a clone keeps the one its driver read.
//
// Locking: VirtioMmio's mutex guards everything here too, as in VhostVsock.
class VhostNet final : public VirtioMmio {
public:
    static constexpr std::uint32_t id = 1;
    static constexpr std::uint16_t max_queue_size = 256;
    static constexpr const char* default_path = "/dev/vhost-net";
    using Mac = std::array<std::uint8_t, 6>;

    VhostNet(const GuestMemory& memory, IrqLine& irq, Tap tap, const Mac& mac);
    ~VhostNet() override;
    VhostNet(const VhostNet&) = delete;
    VhostNet& operator=(const VhostNet&) = delete;
    VhostNet(VhostNet&&) = delete;
    VhostNet& operator=(VhostNet&&) = delete;

    // A random, locally administered unicast MAC address.
    static Mac random_mac();
    static std::string mac_string(const Mac& mac);

    [[nodiscard]] const Tap& tap() const { return tap_; }
    [[nodiscard]] Mac mac() const;
    void pause();
    void resume();

protected:
    [[nodiscard]] std::uint32_t device_id() const override { return id; }
    [[nodiscard]] std::uint64_t device_features() const override;
    [[nodiscard]] unsigned queue_count() const override { return 2; }
    [[nodiscard]] std::uint16_t queue_max() const override { return max_queue_size; }
    void read_config(std::uint64_t offset, std::span<std::uint8_t> data) const override;
    void activate(std::uint64_t features, const std::vector<VirtQueueConfig>& queues) override;
    void notify(unsigned queue) override;
    void reset_device() override;
    void save_device(StateWriter& out) const override;
    void restore_device(StateReader& in) override;
    void restored(std::uint64_t features, const std::vector<VirtQueueConfig>& queues) override;

private:
    // Opens vhost from bases_ on the tap and starts it (mu_ held).
    void start_vhost(std::uint64_t features, const std::vector<VirtQueueConfig>& queues);
    // Gives vhost the tap (fd) or takes it away (-1) in both rings (mu_ held).
    void set_backend(int fd);

    const GuestMemory& memory_;
    Tap tap_;
    Mac mac_;
    std::unique_ptr<VhostBackend> vhost_;  // while the driver has the device running
    std::array<std::uint16_t, 2> bases_{}; // next avail index of rx and tx
};

} // namespace vmfork
