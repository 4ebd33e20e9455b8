// SPDX-License-Identifier: GPL-2.0
#include "vmfork/vmm/devices.h"

#include <algorithm>
#include <unistd.h>

#include "vmfork/vmm/memory.h"

namespace vmfork {

void IoBus::add(std::uint16_t base, std::uint16_t len, PioDevice* device) {
    ranges_.push_back({base, len, device});
}

void IoBus::pio(std::uint16_t port, bool out, std::span<std::uint8_t> data, unsigned vcpu) {
    for (const Range& r : ranges_) {
        if (port >= r.base && port - r.base < r.len) {
            if (out) {
                r.device->pio_out(port, data, vcpu);
            } else {
                r.device->pio_in(port, data, vcpu);
            }
            return;
        }
    }
    ++unclaimed_;
    if (!out) {
        std::fill(data.begin(), data.end(), 0xff);
    }
}

void MmioBus::add(std::uint64_t base, std::uint64_t len, MmioDevice* device) {
    ranges_.push_back({base, len, device});
}

void MmioBus::access(std::uint64_t addr, bool write, std::span<std::uint8_t> data, unsigned vcpu) {
    for (const Range& r : ranges_) {
        if (addr >= r.base && addr - r.base < r.len) {
            if (write) {
                r.device->mmio_write(addr - r.base, data, vcpu);
            } else {
                r.device->mmio_read(addr - r.base, data, vcpu);
            }
            return;
        }
    }
    ++unclaimed_;
    if (!write) {
        std::fill(data.begin(), data.end(), 0xff);
    }
}

void SerialPort::pio_in(std::uint16_t port, std::span<std::uint8_t> data, unsigned /*vcpu*/) {
    constexpr std::uint8_t lsr_thre_temt = 0x60;
    std::fill(data.begin(), data.end(), 0);
    if (port == base + 5 && !data.empty()) {
        data[0] = lsr_thre_temt;
    }
}

void SerialPort::pio_out(std::uint16_t port, std::span<const std::uint8_t> data,
                         unsigned /*vcpu*/) {
    if (port != base || data.empty()) {
        return; // divisor, interrupt enable, line control...: nothing to emulate
    }
    append(data.first(1));
}

void SerialPort::append(std::span<const std::uint8_t> bytes) {
    const std::scoped_lock lock(mutex_);
    buffer_.append(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    if (out_) {
        // The console file is best effort: a full disk must not stop the guest.
        (void)!::write(out_.get(), bytes.data(), bytes.size());
    }
}

void SerialPort::set_output(UniqueFd out) {
    const std::scoped_lock lock(mutex_);
    out_ = std::move(out);
}

std::string SerialPort::output() const {
    const std::scoped_lock lock(mutex_);
    return buffer_;
}

} // namespace vmfork
