// SPDX-License-Identifier: GPL-2.0
// linux/virtio_ring.h's legacy vring_init() is C, not C++.
#define VIRTIO_RING_NO_LEGACY
#include "vmfork/vmm/devices/virtqueue.h"

#include <linux/virtio_ring.h>
#include <string>

#include "vmfork/vmm/memory.h"

namespace vmfork {

namespace {

constexpr std::uint64_t desc_size = sizeof(vring_desc);
constexpr std::uint64_t used_elem_size = sizeof(vring_used_elem);

} // namespace

Virtqueue::Virtqueue(const GuestMemory& memory, const VirtQueueConfig& config,
                     std::uint16_t next_avail)
    : memory_(&memory), config_(config), next_avail_(next_avail) {
    if (config.num == 0 || (config.num & (config.num - 1)) != 0) {
        throw VirtqueueError("queue size " + std::to_string(config.num) + " is not a power of 2");
    }
    try {
        (void)memory.at(config.desc, desc_size * config.num);
        (void)memory.at(config.driver, 6 + 2ULL * config.num);
        (void)memory.at(config.device, 6 + used_elem_size * config.num);
    } catch (const std::out_of_range& e) {
        throw VirtqueueError(std::string("a ring outside guest RAM: ") + e.what());
    }
}

std::optional<Virtqueue::Chain> Virtqueue::pop() {
    if (memory_ == nullptr) {
        return std::nullopt;
    }
    const auto* avail_idx =
        reinterpret_cast<const std::uint16_t*>(memory_->at(config_.driver + 2, 2));
    // Acquire: the ring entry and the descriptors were written before the index.
    if (__atomic_load_n(avail_idx, __ATOMIC_ACQUIRE) == next_avail_) {
        return std::nullopt;
    }
    Chain chain;
    chain.head =
        memory_->read<std::uint16_t>(config_.driver + 4 + 2ULL * (next_avail_ % config_.num));
    ++next_avail_;
    std::uint16_t i = chain.head;
    for (unsigned n = 0;; ++n) {
        if (i >= config_.num) {
            throw VirtqueueError("descriptor index " + std::to_string(i) + " of " +
                                 std::to_string(config_.num));
        }
        if (n == config_.num) {
            throw VirtqueueError("a descriptor chain loops");
        }
        const auto d = memory_->read<vring_desc>(config_.desc + desc_size * i);
        if ((d.flags & VRING_DESC_F_INDIRECT) != 0) {
            throw VirtqueueError("an indirect descriptor (not offered)");
        }
        const bool writes = (d.flags & VRING_DESC_F_WRITE) != 0;
        if (!writes && !chain.buffers.empty() && chain.buffers.back().device_writes) {
            throw VirtqueueError("a readable buffer after a writable one");
        }
        try {
            (void)memory_->at(d.addr, d.len);
        } catch (const std::out_of_range& e) {
            throw VirtqueueError(std::string("a buffer outside guest RAM: ") + e.what());
        }
        chain.buffers.push_back({d.addr, d.len, writes});
        if ((d.flags & VRING_DESC_F_NEXT) == 0) {
            return chain;
        }
        i = d.next;
    }
}

void Virtqueue::push(std::uint16_t head, std::uint32_t len) {
    auto* used_idx = reinterpret_cast<std::uint16_t*>(memory_->at(config_.device + 2, 2));
    const std::uint16_t used = *used_idx;
    const vring_used_elem elem{.id = head, .len = len};
    memory_->write(config_.device + 4 + used_elem_size * (used % config_.num), elem);
    // Release: the element (and the data written into the buffers) before the index.
    __atomic_store_n(used_idx, static_cast<std::uint16_t>(used + 1), __ATOMIC_RELEASE);
}

} // namespace vmfork
