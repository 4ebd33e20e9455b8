// SPDX-License-Identifier: GPL-2.0
#pragma once

#include <cstdint>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "vmfork/unique_fd.h"

namespace vmfork {

// A device on the x86 I/O port bus. data is the access (1, 2 or 4 bytes).
class PioDevice {
public:
    PioDevice() = default;
    PioDevice(const PioDevice&) = delete;
    PioDevice& operator=(const PioDevice&) = delete;
    PioDevice(PioDevice&&) = delete;
    PioDevice& operator=(PioDevice&&) = delete;
    virtual ~PioDevice() = default;
    virtual void pio_in(std::uint16_t port, std::span<std::uint8_t> data, unsigned vcpu) = 0;
    virtual void pio_out(std::uint16_t port, std::span<const std::uint8_t> data, unsigned vcpu) = 0;
};

// Port ranges to devices. Accesses to no device read all-ones and are counted, as on
// a PC with nothing at the port.
class IoBus {
public:
    void add(std::uint16_t base, std::uint16_t len, PioDevice* device);
    void pio(std::uint16_t port, bool out, std::span<std::uint8_t> data, unsigned vcpu);
    [[nodiscard]] std::uint64_t unclaimed() const noexcept { return unclaimed_; }

private:
    struct Range {
        std::uint16_t base;
        std::uint16_t len;
        PioDevice* device; // owned by the Machine, outlives the bus
    };
    std::vector<Range> ranges_;
    std::uint64_t unclaimed_ = 0;
};

// A device on the MMIO bus: offset is from the start of its range; data is the access.
class MmioDevice {
public:
    MmioDevice() = default;
    MmioDevice(const MmioDevice&) = delete;
    MmioDevice& operator=(const MmioDevice&) = delete;
    MmioDevice(MmioDevice&&) = delete;
    MmioDevice& operator=(MmioDevice&&) = delete;
    virtual ~MmioDevice() = default;
    virtual void mmio_read(std::uint64_t offset, std::span<std::uint8_t> data, unsigned vcpu) = 0;
    virtual void mmio_write(std::uint64_t offset, std::span<const std::uint8_t> data,
                            unsigned vcpu) = 0;
};

// Guest-physical ranges outside RAM to devices. Like the PIO bus: an access to no
// device reads all-ones, a write is dropped, and both are counted (a Linux guest probes).
class MmioBus {
public:
    void add(std::uint64_t base, std::uint64_t len, MmioDevice* device);
    void access(std::uint64_t addr, bool write, std::span<std::uint8_t> data, unsigned vcpu);
    [[nodiscard]] std::uint64_t unclaimed() const noexcept { return unclaimed_; }

private:
    struct Range {
        std::uint64_t base;
        std::uint64_t len;
        MmioDevice* device; // owned by the Machine, outlives the bus
    };
    std::vector<Range> ranges_;
    std::uint64_t unclaimed_ = 0;
};

// A minimal 16550 at 0x3f8: transmitted bytes go to a buffer (and a file if given);
// the line status register always says "transmitter empty".
class SerialPort : public PioDevice {
public:
    static constexpr std::uint16_t base = 0x3f8; // COM1
    static constexpr std::uint16_t len = 8;

    explicit SerialPort(UniqueFd out = {}) : out_(std::move(out)) {}
    void pio_in(std::uint16_t port, std::span<std::uint8_t> data, unsigned vcpu) override;
    void pio_out(std::uint16_t port, std::span<const std::uint8_t> data, unsigned vcpu) override;
    [[nodiscard]] std::string output() const;
    // Console output from elsewhere (a Linux guest's 16550A): the same buffer and file.
    void append(std::span<const std::uint8_t> bytes);
    // The file the output goes to from now on (a warm machine learns it when it
    // becomes a clone).
    void set_output(UniqueFd out);

private:
    mutable std::mutex mutex_;
    std::string buffer_;
    UniqueFd out_;
};

} // namespace vmfork
