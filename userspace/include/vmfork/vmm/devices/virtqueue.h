// SPDX-License-Identifier: GPL-2.0
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <vector>

#include "vmfork/vmm/devices/virtio_mmio.h"

namespace vmfork {

class GuestMemory;

// A malformed descriptor chain or a ring outside guest RAM: the driver's error. The
// device stops using the queue (virtio 1.1, 2.1.2: DEVICE_NEEDS_RESET), never the VMM.
class VirtqueueError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// The device side of one split virtqueue (virtio 1.1, 2.6) in guest memory: takes
// the descriptor chains the driver made available, in order, and returns them used.
// No event index and no indirect descriptors (a device using this class offers
// neither). Not thread-safe: one user at a time.
class Virtqueue {
public:
    // One buffer of a chain: guest-physical, checked to lie in guest RAM.
    struct Buffer {
        std::uint64_t gpa = 0;
        std::uint32_t len = 0;
        bool device_writes = false; // VRING_DESC_F_WRITE
    };
    struct Chain {
        std::uint16_t head = 0;
        std::vector<Buffer> buffers; // readable ones first, then writable ones
    };

    Virtqueue() = default;
    // next_avail: where the device was in the available ring (0 at activation; the
    // saved value when a VM is restored).
    Virtqueue(const GuestMemory& memory, const VirtQueueConfig& config,
              std::uint16_t next_avail = 0);

    [[nodiscard]] bool ready() const { return memory_ != nullptr; }
    // The next chain the driver made available, nullopt if none. Throws
    // VirtqueueError on a malformed chain (loop, bad index, a readable buffer after a
    // writable one, memory outside RAM).
    std::optional<Chain> pop();
    // Returns chain head to the driver with len bytes written into its buffers.
    void push(std::uint16_t head, std::uint32_t len);
    [[nodiscard]] std::uint16_t next_avail() const { return next_avail_; }

private:
    const GuestMemory* memory_ = nullptr;
    VirtQueueConfig config_;
    std::uint16_t next_avail_ = 0;
};

} // namespace vmfork
