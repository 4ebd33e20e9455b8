// SPDX-License-Identifier: GPL-2.0
#pragma once

#include <array>
#include <cstdint>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "vmfork/vmm/device_state.h"
#include "vmfork/vmm/devices.h"

namespace vmfork {

class GuestMemory;

// The guest-physical addresses and size of one split virtqueue, as the driver set them.
struct VirtQueueConfig {
    std::uint16_t num = 0;
    bool ready = false;
    std::uint64_t desc = 0;   // descriptor table
    std::uint64_t driver = 0; // available ring
    std::uint64_t device = 0; // used ring
};

// The virtio-mmio transport (virtio 1.1, section 4.2.2, version 2 registers only): the
// register block of one slot, the feature and status handshake, the queue
// configuration and the interrupt status, under one mutex. A device derives from it
// and says what it is (id, features, queues, config space) and what happens on
// DRIVER_OK, a queue notify and a reset.
//
// The interrupt line is level-triggered: high while InterruptStatus is not 0, as
// Linux's virtio_mmio driver expects (it reads the status, acks it, then runs the
// queues' callbacks).
class VirtioMmio : public MmioDevice, public StatefulDevice {
public:
    static constexpr std::uint32_t magic = 0x74726976;  // "virt"
    static constexpr std::uint32_t vendor = 0x4b464d56; // "VMFK"
    static constexpr std::uint8_t status_driver_ok = 4;
    static constexpr std::uint8_t status_needs_reset = 0x40;
    static constexpr std::uint8_t status_failed = 0x80;
    static constexpr std::uint32_t int_vring = 1;
    static constexpr std::uint32_t int_config = 2;
    static constexpr std::uint64_t feature_version_1 = 1ULL << 32;

    VirtioMmio(IrqLine& irq, std::string section) : irq_(irq), section_(std::move(section)) {}

    void mmio_read(std::uint64_t offset, std::span<std::uint8_t> data, unsigned vcpu) override;
    void mmio_write(std::uint64_t offset, std::span<const std::uint8_t> data,
                    unsigned vcpu) override;

    [[nodiscard]] std::string_view section() const override { return section_; }
    // The transport's registers, then the device's own state (save_device()).
    void save(StateWriter& out) const override;
    void restore(StateReader& in) override;

    // Raises InterruptStatus bits (int_vring, int_config) and the line.
    void interrupt(std::uint32_t bits);
    [[nodiscard]] bool driver_ok() const;
    // Why the device last failed to start (DEVICE_NEEDS... FAILED status), "" if never.
    [[nodiscard]] std::string error() const;

protected:
    [[nodiscard]] virtual std::uint32_t device_id() const = 0;
    [[nodiscard]] virtual std::uint64_t device_features() const = 0;
    [[nodiscard]] virtual unsigned queue_count() const = 0;
    [[nodiscard]] virtual std::uint16_t queue_max() const = 0;
    // Config space bytes at offset (0x100 on the bus); out of range reads 0.
    virtual void read_config(std::uint64_t offset, std::span<std::uint8_t> data) const = 0;
    // Called with the transport's mutex held (the device's own state shares it).
    virtual void activate(std::uint64_t features, const std::vector<VirtQueueConfig>& queues) = 0;
    virtual void notify(unsigned queue) = 0;
    virtual void reset_device() = 0;
    virtual void save_device(StateWriter& out) const = 0;
    virtual void restore_device(StateReader& in) = 0;
    // After restore(): queues and features as restored (the mutex held).
    virtual void restored(std::uint64_t features, const std::vector<VirtQueueConfig>& queues) = 0;

    // interrupt() for a caller that holds mu_.
    void interrupt_locked(std::uint32_t bits);
    // The driver broke the device's rules (a bad descriptor chain, say): DEVICE_NEEDS_RESET
    // and a configuration interrupt, as virtio 1.1, 2.1.2 says (mu_ held).
    void needs_reset_locked(const std::string& why);

    mutable std::mutex mu_;

private:
    void set_line();
    void write_reg(std::uint64_t offset, std::uint32_t v);
    [[nodiscard]] std::uint32_t read_reg(std::uint64_t offset) const;

    IrqLine& irq_;
    std::string section_;
    std::uint8_t status_ = 0;
    std::uint32_t device_features_sel_ = 0;
    std::uint32_t driver_features_sel_ = 0;
    std::uint64_t driver_features_ = 0;
    std::uint32_t queue_sel_ = 0;
    std::vector<VirtQueueConfig> queues_;
    std::uint32_t interrupt_status_ = 0;
    bool line_ = false;
    std::string error_;
};

} // namespace vmfork
