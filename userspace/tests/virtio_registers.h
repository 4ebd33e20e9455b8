// SPDX-License-Identifier: GPL-2.0
#pragma once

#include <array>
#include <cstdint>
#include <cstring>

#include "vmfork/vmm/devices/virtio_mmio.h"

namespace vmfork::testing {

// The driver's side of a virtio-mmio device's registers, for the device tests: 32-bit
// reads and writes, the feature words, and the handshake up to FEATURES_OK.
class VirtioRegisters {
public:
    explicit VirtioRegisters(VirtioMmio& dev) : dev_(dev) {}

    std::uint32_t rd(std::uint64_t off) {
        std::array<std::uint8_t, 4> b{};
        dev_.mmio_read(off, b, 0);
        std::uint32_t v = 0;
        std::memcpy(&v, b.data(), 4);
        return v;
    }
    void wr(std::uint64_t off, std::uint32_t v) {
        std::array<std::uint8_t, 4> b{};
        std::memcpy(b.data(), &v, 4);
        dev_.mmio_write(off, b, 0);
    }
    // What the device offers.
    std::uint64_t features() {
        wr(0x014, 0);
        const std::uint64_t lo = rd(0x010);
        wr(0x014, 1);
        return lo | (std::uint64_t{rd(0x010)} << 32);
    }
    // ACKNOWLEDGE, DRIVER, the driver's features, FEATURES_OK (as Linux's driver does).
    void negotiate(std::uint64_t features) {
        wr(0x070, 1);
        wr(0x070, 3);
        wr(0x024, 0);
        wr(0x020, static_cast<std::uint32_t>(features));
        wr(0x024, 1);
        wr(0x020, static_cast<std::uint32_t>(features >> 32));
        wr(0x070, 11);
    }

private:
    VirtioMmio& dev_;
};

} // namespace vmfork::testing
