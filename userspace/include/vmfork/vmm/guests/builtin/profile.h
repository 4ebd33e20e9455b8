// SPDX-License-Identifier: GPL-2.0
#pragma once

#include <cstddef>
#include <optional>
#include <span>
#include <utility>

#include "vmfork/vmm/guest_profile.h"
#include "vmfork/vmm/guests/builtin/identity_page.h"
#include "vmfork/vmm/guests/builtin/report_port.h"

namespace vmfork {

// The built-in guest's own configuration.
struct BuiltinConfig {
    std::size_t report_history = 0; // reports kept (the latest); 0: all
    ReportPort::Listener on_report; // called on each report, in the vCPU's thread
};

// The machine of the freestanding test guest (userspace/guest/, started by
// BuiltinGuestLoader): a write-only console at 0x3f8, the report port, the identity
// page. No device has state of its own: its VM state has no device section.
class BuiltinProfile final : public GuestProfile {
public:
    explicit BuiltinProfile(BuiltinConfig config = {}) : config_(std::move(config)) {}

    void add_devices(MachineDevices& devices) override;
    void apply_identity(const CloneIdentity& identity) override;
    [[nodiscard]] CloneIdentity identity() const override;
    void console_input(std::span<const std::uint8_t> bytes) override;

    // The guest's reports (only once the machine is made).
    [[nodiscard]] const ReportPort& reports() const noexcept { return *report_; }
    // Sends each vCPU the guest's timer vector as an MSI: a guest halted until its next
    // (paced) tick runs at once. The benchmark uses it so that a clone's first report
    // does not wait for up to a pace period.
    void kick() const;

private:
    BuiltinConfig config_;
    const MachineDevices* devices_ = nullptr; // the machine's, for kick()
    ReportPort* report_ = nullptr;            // the machine's
    std::optional<IdentityPage> identity_;
};

} // namespace vmfork
