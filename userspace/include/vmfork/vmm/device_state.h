// SPDX-License-Identifier: GPL-2.0
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace vmfork {

// A device's saved state: little-endian fixed-size fields in an order the device
// defines, one section per device in the VM state. The device checks what it reads
// (ranges, sizes); StateReader checks that there is something to read.
class StateWriter {
public:
    void u8(std::uint8_t v) { put(v, 1); }
    void u16(std::uint16_t v) { put(v, 2); }
    void u32(std::uint32_t v) { put(v, 4); }
    void u64(std::uint64_t v) { put(v, 8); }
    void boolean(bool v) { u8(v ? 1 : 0); }
    // A u32 length, then the bytes.
    void bytes(std::span<const std::uint8_t> data);
    [[nodiscard]] const std::vector<std::uint8_t>& data() const noexcept { return data_; }
    [[nodiscard]] std::vector<std::uint8_t> take() && noexcept { return std::move(data_); }

private:
    void put(std::uint64_t v, unsigned size);
    std::vector<std::uint8_t> data_;
};

// Reads what a StateWriter wrote. Every error throws std::invalid_argument naming the
// section ("<what>: truncated at byte N", "<what>: N bytes left over", ...).
class StateReader {
public:
    StateReader(std::span<const std::uint8_t> data, std::string what)
        : data_(data), what_(std::move(what)) {}
    std::uint8_t u8() { return static_cast<std::uint8_t>(get(1)); }
    std::uint16_t u16() { return static_cast<std::uint16_t>(get(2)); }
    std::uint32_t u32() { return static_cast<std::uint32_t>(get(4)); }
    std::uint64_t u64() { return get(8); }
    // A byte that must be 0 or 1.
    bool boolean();
    // A length-prefixed byte string of at most max bytes.
    std::vector<std::uint8_t> bytes(std::size_t max);
    // Throws unless every byte was read.
    void finish() const;
    // Throws std::invalid_argument "<what>: <message>".
    [[noreturn]] void fail(std::string_view message) const;

private:
    void need(std::size_t size) const;
    std::uint64_t get(unsigned size);
    std::span<const std::uint8_t> data_;
    std::size_t pos_ = 0;
    std::string what_;
};

// Something in a VM whose state a clone must carry: it saves itself into a section of
// the VM state and restores from one (of the same device, maybe of another process).
// save() runs with the vCPUs paused; restore() before they first run.
class StatefulDevice {
public:
    StatefulDevice() = default;
    StatefulDevice(const StatefulDevice&) = delete;
    StatefulDevice& operator=(const StatefulDevice&) = delete;
    StatefulDevice(StatefulDevice&&) = delete;
    StatefulDevice& operator=(StatefulDevice&&) = delete;
    virtual ~StatefulDevice() = default;
    // The section name: unique in a machine, stable across versions.
    [[nodiscard]] virtual std::string_view section() const = 0;
    virtual void save(StateWriter& out) const = 0;
    // Throws std::invalid_argument on malformed state, leaving the device as it was.
    virtual void restore(StateReader& in) = 0;
};

// An interrupt line into the in-kernel irqchip (a GSI of the IOAPIC).
class IrqLine {
public:
    IrqLine() = default;
    IrqLine(const IrqLine&) = delete;
    IrqLine& operator=(const IrqLine&) = delete;
    IrqLine(IrqLine&&) = delete;
    IrqLine& operator=(IrqLine&&) = delete;
    virtual ~IrqLine() = default;
    virtual void set_level(bool high) = 0;
};

} // namespace vmfork
