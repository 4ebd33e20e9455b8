// SPDX-License-Identifier: GPL-2.0
#include "vmfork/vmm/guests/builtin/report_port.h"

#include <algorithm>

#include "vmfork/vmm/memory.h"

namespace vmfork {

void ReportPort::pio_in(std::uint16_t /*port*/, std::span<std::uint8_t> data, unsigned /*vcpu*/) {
    std::fill(data.begin(), data.end(), 0);
}

void ReportPort::pio_out(std::uint16_t port, std::span<const std::uint8_t> data,
                         unsigned /*vcpu*/) {
    if (port != base || data.size() != 4) {
        return;
    }
    std::uint32_t cpu = 0;
    std::copy(data.begin(), data.end(), reinterpret_cast<std::uint8_t*>(&cpu));
    if (cpu >= VMFORK_GUEST_MAX_CPUS) {
        return;
    }
    GuestReport report{
        memory_.read<vmfork_guest_slot>(VMFORK_GUEST_SLOTS + cpu * sizeof(vmfork_guest_slot)),
        std::chrono::steady_clock::now()};
    if (listener_) {
        listener_(report);
    }
    {
        const std::scoped_lock lock(mutex_);
        if (!first_) {
            first_ = report;
        }
        ++count_;
        if (history_ != 0 && reports_.size() == history_) {
            reports_.erase(reports_.begin()); // never more than history_
        }
        reports_.push_back(report);
    }
    cv_.notify_all();
}

std::uint64_t ReportPort::count() const {
    const std::scoped_lock lock(mutex_);
    return count_;
}

std::optional<GuestReport> ReportPort::first() const {
    const std::scoped_lock lock(mutex_);
    return first_;
}

std::vector<GuestReport> ReportPort::reports() const {
    const std::scoped_lock lock(mutex_);
    return reports_;
}

bool ReportPort::wait_for(const std::function<bool(const std::vector<GuestReport>&)>& pred,
                          std::chrono::milliseconds timeout) const {
    std::unique_lock lock(mutex_);
    return cv_.wait_for(lock, timeout, [&] { return pred(reports_); });
}

} // namespace vmfork
