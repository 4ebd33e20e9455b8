// SPDX-License-Identifier: GPL-2.0
#include "vmfork/vmm/devices/virtio_mmio.h"

#include <cstring>

namespace vmfork {

namespace {

// Register offsets (virtio 1.1, 4.2.2).
enum : std::uint64_t {
    reg_magic = 0x000,
    reg_version = 0x004,
    reg_device_id = 0x008,
    reg_vendor_id = 0x00c,
    reg_device_features = 0x010,
    reg_device_features_sel = 0x014,
    reg_driver_features = 0x020,
    reg_driver_features_sel = 0x024,
    reg_queue_sel = 0x030,
    reg_queue_num_max = 0x034,
    reg_queue_num = 0x038,
    reg_queue_ready = 0x044,
    reg_queue_notify = 0x050,
    reg_interrupt_status = 0x060,
    reg_interrupt_ack = 0x064,
    reg_status = 0x070,
    reg_queue_desc_low = 0x080,
    reg_queue_desc_high = 0x084,
    reg_queue_driver_low = 0x090,
    reg_queue_driver_high = 0x094,
    reg_queue_device_low = 0x0a0,
    reg_queue_device_high = 0x0a4,
    reg_config_generation = 0x0fc,
    reg_config = 0x100,
};

void set_low(std::uint64_t& v, std::uint32_t low) {
    v = (v & ~0xffffffffULL) | low;
}
void set_high(std::uint64_t& v, std::uint32_t high) {
    v = (v & 0xffffffffULL) | (std::uint64_t{high} << 32);
}

} // namespace

void VirtioMmio::mmio_read(std::uint64_t offset, std::span<std::uint8_t> data, unsigned /*vcpu*/) {
    const std::lock_guard lock(mu_);
    if (offset >= reg_config) {
        read_config(offset - reg_config, data);
        return;
    }
    // The registers take 32-bit accesses only; anything else reads 0.
    std::uint32_t v = 0;
    if (data.size() == 4 && offset % 4 == 0) {
        v = read_reg(offset);
    }
    std::memcpy(data.data(), &v, std::min(data.size(), sizeof(v)));
}

std::uint32_t VirtioMmio::read_reg(std::uint64_t offset) const {
    const VirtQueueConfig* q = queue_sel_ < queues_.size() ? &queues_[queue_sel_] : nullptr;
    switch (offset) {
    case reg_magic:
        return magic;
    case reg_version:
        return 2;
    case reg_device_id:
        return device_id();
    case reg_vendor_id:
        return vendor;
    case reg_device_features:
        if (device_features_sel_ > 1) {
            return 0;
        }
        return static_cast<std::uint32_t>(device_features() >> (32 * device_features_sel_));
    case reg_queue_num_max:
        return q != nullptr ? queue_max() : 0;
    case reg_queue_ready:
        return q != nullptr && q->ready ? 1 : 0;
    case reg_interrupt_status:
        return interrupt_status_;
    case reg_status:
        return status_;
    default:
        // Including ConfigGeneration: the config space never changes under the driver.
        return 0;
    }
}

void VirtioMmio::mmio_write(std::uint64_t offset, std::span<const std::uint8_t> data,
                            unsigned /*vcpu*/) {
    if (offset >= reg_config || data.size() != 4 || offset % 4 != 0) {
        return; // the config space is read-only; registers take 32-bit writes only
    }
    std::uint32_t v = 0;
    std::memcpy(&v, data.data(), sizeof(v));
    const std::lock_guard lock(mu_);
    write_reg(offset, v);
}

void VirtioMmio::write_reg(std::uint64_t offset, std::uint32_t v) {
    if (queues_.size() != queue_count()) {
        queues_.assign(queue_count(), {});
    }
    VirtQueueConfig* q = queue_sel_ < queues_.size() ? &queues_[queue_sel_] : nullptr;
    // Queue setup only before DRIVER_OK (a driver may not change a live queue).
    const bool live = (status_ & status_driver_ok) != 0;
    switch (offset) {
    case reg_device_features_sel:
        device_features_sel_ = v;
        break;
    case reg_driver_features:
        if (driver_features_sel_ <= 1 && !live) {
            const std::uint64_t shift = 32ULL * driver_features_sel_;
            driver_features_ = (driver_features_ & ~(0xffffffffULL << shift)) |
                               ((std::uint64_t{v} << shift) & device_features());
        }
        break;
    case reg_driver_features_sel:
        driver_features_sel_ = v;
        break;
    case reg_queue_sel:
        queue_sel_ = v;
        break;
    case reg_queue_num:
        if (q != nullptr && !live && v <= queue_max() && (v & (v - 1)) == 0) {
            q->num = static_cast<std::uint16_t>(v);
        }
        break;
    case reg_queue_ready:
        if (q != nullptr && !live) {
            q->ready = (v & 1) != 0;
        }
        break;
    case reg_queue_notify:
        if (live && v < queues_.size()) {
            notify(v);
        }
        break;
    case reg_interrupt_ack:
        interrupt_status_ &= ~v;
        set_line();
        break;
    case reg_status:
        if (v == 0) {
            // Device reset: every register back to its initial value.
            reset_device();
            status_ = 0;
            driver_features_ = 0;
            device_features_sel_ = driver_features_sel_ = queue_sel_ = 0;
            queues_.assign(queue_count(), {});
            interrupt_status_ = 0;
            set_line();
        } else if ((v & status_driver_ok) != 0 && !live) {
            status_ = static_cast<std::uint8_t>(v);
            try {
                activate(driver_features_, queues_);
            } catch (const std::exception& e) {
                // The driver sees the device as broken, as the spec says it may.
                status_ |= status_failed;
                error_ = e.what();
            }
        } else {
            status_ = static_cast<std::uint8_t>(v);
        }
        break;
    case reg_queue_desc_low:
        if (q != nullptr && !live) {
            set_low(q->desc, v);
        }
        break;
    case reg_queue_desc_high:
        if (q != nullptr && !live) {
            set_high(q->desc, v);
        }
        break;
    case reg_queue_driver_low:
        if (q != nullptr && !live) {
            set_low(q->driver, v);
        }
        break;
    case reg_queue_driver_high:
        if (q != nullptr && !live) {
            set_high(q->driver, v);
        }
        break;
    case reg_queue_device_low:
        if (q != nullptr && !live) {
            set_low(q->device, v);
        }
        break;
    case reg_queue_device_high:
        if (q != nullptr && !live) {
            set_high(q->device, v);
        }
        break;
    default:
        break; // read-only or unknown: ignored
    }
}

void VirtioMmio::interrupt(std::uint32_t bits) {
    const std::lock_guard lock(mu_);
    interrupt_locked(bits);
}

void VirtioMmio::interrupt_locked(std::uint32_t bits) {
    interrupt_status_ |= bits;
    set_line();
}

void VirtioMmio::needs_reset_locked(const std::string& why) {
    if ((status_ & status_needs_reset) == 0) {
        status_ |= status_needs_reset;
        error_ = why;
        interrupt_locked(int_config);
    }
}

bool VirtioMmio::driver_ok() const {
    const std::lock_guard lock(mu_);
    return (status_ & status_driver_ok) != 0 && (status_ & status_failed) == 0;
}

std::string VirtioMmio::error() const {
    const std::lock_guard lock(mu_);
    return error_;
}

void VirtioMmio::set_line() {
    const bool high = interrupt_status_ != 0;
    if (high != line_) {
        line_ = high;
        irq_.set_level(high);
    }
}

void VirtioMmio::save(StateWriter& out) const {
    const std::lock_guard lock(mu_);
    out.u8(status_);
    out.u32(device_features_sel_);
    out.u32(driver_features_sel_);
    out.u64(driver_features_);
    out.u32(queue_sel_);
    out.u32(interrupt_status_);
    out.u32(static_cast<std::uint32_t>(queues_.size()));
    for (const auto& q : queues_) {
        out.u16(q.num);
        out.boolean(q.ready);
        out.u64(q.desc);
        out.u64(q.driver);
        out.u64(q.device);
    }
    save_device(out);
}

void VirtioMmio::restore(StateReader& in) {
    const std::uint8_t status = in.u8();
    const std::uint32_t device_sel = in.u32();
    const std::uint32_t driver_sel = in.u32();
    const std::uint64_t features = in.u64();
    const std::uint32_t queue_sel = in.u32();
    const std::uint32_t interrupt_status = in.u32();
    const std::uint32_t n = in.u32();
    if (n != 0 && n != queue_count()) {
        in.fail("the device has " + std::to_string(queue_count()) + " queues, the state " +
                std::to_string(n));
    }
    if ((features & ~device_features()) != 0) {
        in.fail("features the device does not offer");
    }
    std::vector<VirtQueueConfig> queues(n);
    for (auto& q : queues) {
        q.num = in.u16();
        q.ready = in.boolean();
        q.desc = in.u64();
        q.driver = in.u64();
        q.device = in.u64();
        if (q.num > queue_max() || (q.num & (q.num - 1)) != 0) {
            in.fail("queue size " + std::to_string(q.num));
        }
    }
    const std::lock_guard lock(mu_);
    reset_device();
    restore_device(in);
    status_ = status;
    device_features_sel_ = device_sel;
    driver_features_sel_ = driver_sel;
    driver_features_ = features;
    queue_sel_ = queue_sel;
    queues_ = std::move(queues);
    if (queues_.empty()) {
        queues_.assign(queue_count(), {});
    }
    interrupt_status_ = interrupt_status;
    // The line as the restored irqchip has it is what the status says.
    line_ = interrupt_status_ != 0;
    if ((status_ & status_driver_ok) != 0 && (status_ & status_failed) == 0) {
        try {
            restored(driver_features_, queues_);
        } catch (const std::exception& e) {
            status_ |= status_failed;
            error_ = e.what();
            throw;
        }
    }
}

} // namespace vmfork
