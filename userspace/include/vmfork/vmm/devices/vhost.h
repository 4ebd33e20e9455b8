// SPDX-License-Identifier: GPL-2.0
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "vmfork/unique_fd.h"
#include "vmfork/vmm/devices/virtio_mmio.h"

namespace vmfork {

// One open vhost device of the host kernel (/dev/vhost-vsock, /dev/vhost-net), which
// moves the buffers of some of a virtio device's queues between guest memory and the
// host: owned by this process, given guest RAM as this process maps it and the rings
// (their vhost index is their position in `rings`), with a kick and a call eventfd per
// ring. What is special to the device (a CID, a tap as backend, starting it) is the
// device's own ioctl().
//
// start_interrupts() starts one thread that reads the call eventfds and runs on_used
// with the device's mutex held. The destructor stops it: call it with that mutex held
// too; the thread never blocks on the mutex while it may be told to stop.
class VhostBackend {
public:
    // A ring that vhost serves, and its next available index (0, or a saved one).
    struct Ring {
        VirtQueueConfig config;
        std::uint16_t base = 0;
    };

    // Opens path and configures it; features: what the driver acked, of which vhost
    // gets those it offers, minus `withheld`. A failure names path and what to do
    // (hint: "modprobe vhost_net", say).
    VhostBackend(const char* path, const char* hint, const GuestMemory& memory,
                 std::uint64_t features, std::uint64_t withheld, std::span<const Ring> rings);
    ~VhostBackend();
    VhostBackend(const VhostBackend&) = delete;
    VhostBackend& operator=(const VhostBackend&) = delete;
    VhostBackend(VhostBackend&&) = delete;
    VhostBackend& operator=(VhostBackend&&) = delete;

    // An ioctl on the vhost fd; a failure throws with errno and `what`.
    void ioctl(unsigned long request, const void* arg, const std::string& what) const;
    // The next available index vhost would use in ring i (VHOST_GET_VRING_BASE).
    [[nodiscard]] std::uint16_t ring_base(unsigned i) const;
    // A notify of ring i, passed on to vhost.
    void kick(unsigned i) const;
    // Every ring: what was queued before vhost started (or before a fork) gets looked at.
    void kick_all() const;
    void start_interrupts(std::mutex& mu, std::function<void()> on_used);

private:
    void interrupt_thread(std::mutex& mu, const std::function<void()>& on_used);

    UniqueFd fd_;
    std::vector<UniqueFd> kick_;
    std::vector<UniqueFd> call_;
    UniqueFd stop_;
    std::thread thread_;
};

} // namespace vmfork
