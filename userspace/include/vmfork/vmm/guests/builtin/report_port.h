// SPDX-License-Identifier: GPL-2.0
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <span>
#include <vector>

#include "guest_abi.h"
#include "vmfork/vmm/devices.h"

namespace vmfork {

class GuestMemory;

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
