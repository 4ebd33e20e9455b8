// SPDX-License-Identifier: GPL-2.0
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "vmfork/vmm/devices/virtio_mmio.h"
#include "vmfork/vmm/devices/virtqueue.h"
#include "vmfork/vmm/disk.h"

namespace vmfork {

// virtio-blk on the virtio-mmio transport: one request queue, served by one I/O
// thread of this device (never a vCPU thread) on a DiskImage. Reads, writes, flush
// (the guest sees a write-back cache and flushes it), GET_ID; a bad request or a
// host I/O error is an I/O error for the guest, never an error of the VMM; a
// malformed descriptor chain sets DEVICE_NEEDS_RESET.
//
// pause() returns when no request is in flight and the last completions are
// signalled: nothing this device does touches guest memory, the disk or the
// interrupt until resume(), so a VM_FORK in between sees them all at one instant.
// The saved state is where the device was in the available ring; requests the
// driver made available but the device had not taken yet are taken by the restored
// device (in a clone, on the clone's disk).
//
// Locking: VirtioMmio's mu_ guards the registers; io_mu_ guards the I/O thread's
// hand-over (queue_, the flags). Order mu_ then io_mu_; the I/O thread holds neither
// while it does I/O, and takes mu_ alone to raise the interrupt.
class VirtioBlk final : public VirtioMmio {
public:
    static constexpr std::uint32_t id = 2;
    static constexpr std::uint16_t max_queue_size = 256;

    // serial: what GET_ID returns (up to 20 bytes).
    VirtioBlk(const GuestMemory& memory, IrqLine& irq, std::shared_ptr<DiskImage> disk,
              std::string section, std::string serial);
    ~VirtioBlk() override;
    VirtioBlk(const VirtioBlk&) = delete;
    VirtioBlk& operator=(const VirtioBlk&) = delete;
    VirtioBlk(VirtioBlk&&) = delete;
    VirtioBlk& operator=(VirtioBlk&&) = delete;

    // Waits until no request is in flight and takes no new one until resume().
    void pause();
    void resume();
    [[nodiscard]] const std::shared_ptr<DiskImage>& disk() const { return disk_; }
    // Another view of the same disk (same size and mode), while paused: the fork
    // point, where a VM's raw image becomes the base of linked clones.
    void set_disk(std::shared_ptr<DiskImage> disk);
    // Requests completed, and those that failed (I/O error or unsupported), so far.
    [[nodiscard]] std::uint64_t requests() const { return requests_; }
    [[nodiscard]] std::uint64_t failed_requests() const { return failed_; }

protected:
    [[nodiscard]] std::uint32_t device_id() const override { return id; }
    [[nodiscard]] std::uint64_t device_features() const override;
    [[nodiscard]] unsigned queue_count() const override { return 1; }
    [[nodiscard]] std::uint16_t queue_max() const override { return max_queue_size; }
    void read_config(std::uint64_t offset, std::span<std::uint8_t> data) const override;
    void activate(std::uint64_t features, const std::vector<VirtQueueConfig>& queues) override;
    void notify(unsigned queue) override;
    void reset_device() override;
    void save_device(StateWriter& out) const override;
    void restore_device(StateReader& in) override;
    void restored(std::uint64_t features, const std::vector<VirtQueueConfig>& queues) override;

private:
    void io_thread();
    // Serves one chain; returns the bytes written into its buffers (data and status).
    std::uint32_t serve(const Virtqueue::Chain& chain);
    // io_mu_ held: waits until the I/O thread is idle.
    void wait_idle(std::unique_lock<std::mutex>& lock) const;

    const GuestMemory& memory_;
    std::shared_ptr<DiskImage> disk_; // replaced only while paused (the I/O thread idle)
    std::string serial_;

    mutable std::mutex io_mu_;
    mutable std::condition_variable io_cv_;
    Virtqueue queue_;               // the I/O thread's while busy_
    std::uint16_t saved_avail_ = 0; // restore_device() to restored()
    std::uint64_t generation_ = 0;  // bumped on reset: a late interrupt is dropped
    bool kicked_ = false;
    bool busy_ = false;
    bool irq_pending_ = false; // used buffers not yet signalled (pause() waits for it)
    bool stop_ = false;
    std::atomic<bool> paused_{false};
    std::atomic<std::uint64_t> requests_{0};
    std::atomic<std::uint64_t> failed_{0};
    std::thread thread_;
};

} // namespace vmfork
