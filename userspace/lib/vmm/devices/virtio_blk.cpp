// SPDX-License-Identifier: GPL-2.0
// linux/virtio_ring.h's legacy vring_init() is C, not C++.
#define VIRTIO_RING_NO_LEGACY
#include "vmfork/vmm/devices/virtio_blk.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <linux/virtio_blk.h>
#include <linux/virtio_ring.h>
#include <vector>

#include "vmfork/system_error.h"
#include "vmfork/vmm/memory.h"

namespace vmfork {

namespace {

constexpr std::uint64_t header_size = sizeof(virtio_blk_outhdr);
constexpr std::uint32_t id_bytes = VIRTIO_BLK_ID_BYTES;

// The readable or the writable bytes of a chain, as one stream over guest memory.
class Stream {
public:
    Stream(const GuestMemory& memory, const Virtqueue::Chain& chain, bool device_writes) {
        for (const auto& b : chain.buffers) {
            if (b.device_writes == device_writes && b.len != 0) {
                parts_.emplace_back(memory.at(b.gpa, b.len), b.len);
                size_ += b.len;
            }
        }
    }
    [[nodiscard]] std::uint64_t size() const { return size_; }
    // Calls fn(span) for each piece of [offset, offset + len), in order.
    template <typename Fn> void each(std::uint64_t offset, std::uint64_t len, Fn&& fn) const {
        for (const auto& p : parts_) {
            if (len == 0) {
                return;
            }
            if (offset >= p.size()) {
                offset -= p.size();
                continue;
            }
            const std::uint64_t n = std::min<std::uint64_t>(p.size() - offset, len);
            fn(p.subspan(offset, n));
            offset = 0;
            len -= n;
        }
    }
    void copy_out(std::uint64_t offset, void* dst, std::uint64_t len) const {
        auto* d = static_cast<std::byte*>(dst);
        each(offset, len, [&](std::span<std::byte> s) {
            std::memcpy(d, s.data(), s.size());
            d += s.size();
        });
    }
    void copy_in(std::uint64_t offset, const void* src, std::uint64_t len) const {
        const auto* p = static_cast<const std::byte*>(src);
        each(offset, len, [&](std::span<std::byte> s) {
            std::memcpy(s.data(), p, s.size());
            p += s.size();
        });
    }

private:
    std::vector<std::span<std::byte>> parts_;
    std::uint64_t size_ = 0;
};

} // namespace

VirtioBlk::VirtioBlk(const GuestMemory& memory, IrqLine& irq, std::shared_ptr<DiskImage> disk,
                     std::string section, std::string serial)
    : VirtioMmio(irq, std::move(section)), memory_(memory), disk_(std::move(disk)),
      serial_(std::move(serial)) {
    thread_ = std::thread([this] { io_thread(); });
}

VirtioBlk::~VirtioBlk() {
    {
        const std::lock_guard lock(io_mu_);
        stop_ = true;
    }
    io_cv_.notify_all();
    thread_.join();
}

std::uint64_t VirtioBlk::device_features() const {
    std::uint64_t f = feature_version_1 | (1ULL << VIRTIO_BLK_F_SEG_MAX) |
                      (1ULL << VIRTIO_BLK_F_BLK_SIZE) | (1ULL << VIRTIO_BLK_F_FLUSH);
    if (disk_->read_only()) {
        f |= 1ULL << VIRTIO_BLK_F_RO;
    }
    return f;
}

void VirtioBlk::read_config(std::uint64_t offset, std::span<std::uint8_t> data) const {
    virtio_blk_config c{};
    c.capacity = disk_->size() / DiskImage::sector;
    c.seg_max = max_queue_size - 2; // the header and the status take two descriptors
    c.blk_size = DiskImage::sector;
    std::fill(data.begin(), data.end(), 0);
    if (offset < sizeof(c)) {
        std::memcpy(data.data(), reinterpret_cast<const std::uint8_t*>(&c) + offset,
                    std::min<std::uint64_t>(data.size(), sizeof(c) - offset));
    }
}

void VirtioBlk::wait_idle(std::unique_lock<std::mutex>& lock) const {
    io_cv_.wait(lock, [this] { return !busy_; });
}

void VirtioBlk::activate(std::uint64_t /*features*/, const std::vector<VirtQueueConfig>& queues) {
    Virtqueue q(memory_, queues.at(0), 0); // throws VirtqueueError: the device fails
    std::unique_lock lock(io_mu_);
    wait_idle(lock);
    queue_ = q;
    kicked_ = true; // requests made available before DRIVER_OK
    io_cv_.notify_all();
}

void VirtioBlk::notify(unsigned /*queue*/) {
    {
        const std::lock_guard lock(io_mu_);
        kicked_ = true;
    }
    io_cv_.notify_all();
}

void VirtioBlk::reset_device() {
    std::unique_lock lock(io_mu_);
    wait_idle(lock);
    queue_ = {};
    saved_avail_ = 0;
    kicked_ = false;
    ++generation_;
}

void VirtioBlk::pause() {
    paused_ = true;
    std::unique_lock lock(io_mu_);
    // And the interrupt of the last requests raised: the transport's state and the
    // irqchip that a capture saves have it, in the parent and in every clone.
    io_cv_.wait(lock, [this] { return !busy_ && !irq_pending_; });
}

void VirtioBlk::resume() {
    {
        const std::lock_guard lock(io_mu_);
        paused_ = false;
        kicked_ = true; // what arrived meanwhile
    }
    io_cv_.notify_all();
}

void VirtioBlk::set_disk(std::shared_ptr<DiskImage> disk) {
    if (disk->size() != disk_->size() || disk->read_only() != disk_->read_only()) {
        throw SystemError(EINVAL, "another disk, not a view of this one");
    }
    std::unique_lock lock(io_mu_);
    if (!paused_) {
        throw SystemError(EBUSY, "the disk of a running virtio-blk device");
    }
    wait_idle(lock);
    disk_ = std::move(disk);
}

void VirtioBlk::save_device(StateWriter& out) const {
    // Called with the VM paused: the I/O thread is idle, queue_ is stable.
    std::unique_lock lock(io_mu_);
    wait_idle(lock);
    out.u16(queue_.next_avail());
}

void VirtioBlk::restore_device(StateReader& in) {
    saved_avail_ = in.u16();
}

void VirtioBlk::restored(std::uint64_t /*features*/, const std::vector<VirtQueueConfig>& queues) {
    Virtqueue q(memory_, queues.at(0), saved_avail_);
    std::unique_lock lock(io_mu_);
    wait_idle(lock);
    queue_ = q;
    kicked_ = true;
    io_cv_.notify_all();
}

void VirtioBlk::io_thread() {
    std::unique_lock lock(io_mu_);
    for (;;) {
        io_cv_.wait(lock, [this] { return stop_ || (kicked_ && !paused_ && queue_.ready()); });
        if (stop_) {
            return;
        }
        kicked_ = false;
        busy_ = true;
        const std::uint64_t generation = generation_;
        lock.unlock();
        bool used = false;
        std::string broken;
        try {
            while (!paused_) {
                auto chain = queue_.pop();
                if (!chain) {
                    break;
                }
                queue_.push(chain->head, serve(*chain));
                used = true;
            }
        } catch (const VirtqueueError& e) {
            broken = e.what();
        }
        lock.lock();
        busy_ = false;
        if (!broken.empty()) {
            queue_ = {}; // no more requests until the driver resets the device
        }
        const bool signal = used || !broken.empty();
        irq_pending_ = signal;
        io_cv_.notify_all();
        if (signal) {
            // Not under io_mu_ (mu_ comes first): a reset, which holds mu_ and waits for
            // !busy_ only, may come in between; it drops the interrupt.
            lock.unlock();
            {
                const std::lock_guard reg(mu_);
                if (generation == generation_) {
                    if (!broken.empty()) {
                        needs_reset_locked("virtio-blk: " + broken);
                    }
                    if (used) {
                        interrupt_locked(int_vring);
                    }
                }
            }
            lock.lock();
            irq_pending_ = false;
            io_cv_.notify_all();
        }
    }
}

std::uint32_t VirtioBlk::serve(const Virtqueue::Chain& chain) {
    const Stream in(memory_, chain, false);
    const Stream out(memory_, chain, true);
    if (out.size() == 0) {
        throw VirtqueueError("a request without a status byte");
    }
    const std::uint64_t status_at = out.size() - 1;
    auto finish = [&](std::uint8_t status, std::uint32_t data) {
        out.copy_in(status_at, &status, 1);
        requests_.fetch_add(1, std::memory_order_relaxed);
        if (status != VIRTIO_BLK_S_OK) {
            failed_.fetch_add(1, std::memory_order_relaxed);
        }
        return data + 1;
    };
    if (in.size() < header_size) {
        return finish(VIRTIO_BLK_S_IOERR, 0);
    }
    virtio_blk_outhdr h{};
    in.copy_out(0, &h, header_size);
    const std::uint64_t offset = h.sector * DiskImage::sector;
    auto in_range = [&](std::uint64_t len) {
        return len % DiskImage::sector == 0 && h.sector <= disk_->size() / DiskImage::sector &&
               len <= disk_->size() - offset;
    };
    try {
        switch (h.type) {
        case VIRTIO_BLK_T_IN: {
            const std::uint64_t len = status_at;
            if (!in_range(len)) {
                return finish(VIRTIO_BLK_S_IOERR, 0);
            }
            std::uint64_t at = offset;
            out.each(0, len, [&](std::span<std::byte> s) {
                disk_->read(at, s);
                at += s.size();
            });
            return finish(VIRTIO_BLK_S_OK, static_cast<std::uint32_t>(len));
        }
        case VIRTIO_BLK_T_OUT: {
            const std::uint64_t len = in.size() - header_size;
            if (disk_->read_only() || !in_range(len)) {
                return finish(VIRTIO_BLK_S_IOERR, 0);
            }
            std::uint64_t at = offset;
            in.each(header_size, len, [&](std::span<std::byte> s) {
                disk_->write(at, s);
                at += s.size();
            });
            return finish(VIRTIO_BLK_S_OK, 0);
        }
        case VIRTIO_BLK_T_FLUSH:
            disk_->flush();
            return finish(VIRTIO_BLK_S_OK, 0);
        case VIRTIO_BLK_T_GET_ID: {
            std::array<char, id_bytes> id{};
            std::memcpy(id.data(), serial_.data(), std::min<std::size_t>(serial_.size(), id_bytes));
            const auto n = static_cast<std::uint32_t>(std::min<std::uint64_t>(status_at, id_bytes));
            out.copy_in(0, id.data(), n);
            return finish(VIRTIO_BLK_S_OK, n);
        }
        default:
            return finish(VIRTIO_BLK_S_UNSUPP, 0);
        }
    } catch (const SystemError&) {
        // The host's I/O failed: the guest sees an I/O error and goes on.
        return finish(VIRTIO_BLK_S_IOERR, 0);
    }
}

} // namespace vmfork
