// SPDX-License-Identifier: GPL-2.0
#include "vmfork/vmm/guests/builtin/profile.h"

#include <cerrno>

#include "guest_abi.h"
#include "vmfork/kvm.h"
#include "vmfork/system_error.h"
#include "vmfork/vmm/machine_devices.h"

namespace vmfork {

void BuiltinProfile::add_devices(MachineDevices& devices) {
    devices_ = &devices;
    devices.map_pio(SerialPort::base, SerialPort::len, devices.console());
    report_ = &devices.add_pio(
        ReportPort::base, ReportPort::len,
        std::make_unique<ReportPort>(devices.memory(), config_.report_history, config_.on_report));
    identity_.emplace(devices.memory());
}

void BuiltinProfile::apply_identity(const CloneIdentity& identity) {
    identity_->write(identity);
}

CloneIdentity BuiltinProfile::identity() const {
    return identity_->read();
}

void BuiltinProfile::console_input(std::span<const std::uint8_t> /*bytes*/) {
    throw SystemError(ENOTSUP, "the built-in guest's console takes no input");
}

void BuiltinProfile::kick() const {
    for (unsigned cpu = 0; cpu < devices_->cpus(); ++cpu) {
        devices_->vm().signal_msi(cpu, VMFORK_GUEST_TIMER_VECTOR);
    }
}

} // namespace vmfork
