// SPDX-License-Identifier: GPL-2.0
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "guest_abi.h"
#include "vmfork/unique_fd.h"

namespace vmfork {

class GuestMemory;

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
    static constexpr std::uint16_t base = VMFORK_GUEST_SERIAL_PORT;
    static constexpr std::uint16_t len = 8;

    explicit SerialPort(UniqueFd out = {}) : out_(std::move(out)) {}
    void pio_in(std::uint16_t port, std::span<std::uint8_t> data, unsigned vcpu) override;
    void pio_out(std::uint16_t port, std::span<const std::uint8_t> data, unsigned vcpu) override;
    [[nodiscard]] std::string output() const;
    // Console output from elsewhere (a Linux guest's 16550A): the same buffer and file.
    void append(std::span<const std::uint8_t> bytes);

private:
    mutable std::mutex mutex_;
    std::string buffer_;
    UniqueFd out_;
};

// One progress report of the built-in guest: its report slot, as read at the OUT.
struct GuestReport {
    vmfork_guest_slot slot{};
    std::chrono::steady_clock::time_point when;
};

// The report port: OUT cpu makes the host copy that vCPU's report slot.
class ReportPort : public PioDevice {
public:
    static constexpr std::uint16_t base = VMFORK_GUEST_REPORT_PORT;
    static constexpr std::uint16_t len = 4;

    using Listener = std::function<void(const GuestReport&)>;

    // Keeps the latest history reports (0: all); calls listener (if any) on each, in
    // the reporting vCPU's thread, before waiters are woken.
    explicit ReportPort(const GuestMemory& memory, std::size_t history = 0, Listener listener = {})
        : memory_(memory), history_(history), listener_(std::move(listener)) {}
    void pio_in(std::uint16_t port, std::span<std::uint8_t> data, unsigned vcpu) override;
    void pio_out(std::uint16_t port, std::span<const std::uint8_t> data, unsigned vcpu) override;

    [[nodiscard]] std::vector<GuestReport> reports() const;
    // Reports received since boot (the history may hold fewer).
    [[nodiscard]] std::uint64_t count() const;
    [[nodiscard]] std::optional<GuestReport> first() const;
    // Waits until pred(reports) holds; false on timeout.
    bool wait_for(const std::function<bool(const std::vector<GuestReport>&)>& pred,
                  std::chrono::milliseconds timeout) const;

private:
    const GuestMemory& memory_;
    std::size_t history_;
    Listener listener_;
    mutable std::mutex mutex_;
    mutable std::condition_variable cv_;
    std::vector<GuestReport> reports_;
    std::optional<GuestReport> first_;
    std::uint64_t count_ = 0;
};

} // namespace vmfork
