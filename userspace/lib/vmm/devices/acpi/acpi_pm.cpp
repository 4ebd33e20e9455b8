// SPDX-License-Identifier: GPL-2.0
#include "vmfork/vmm/devices/acpi_pm.h"

#include <algorithm>
#include <string>

namespace vmfork {

void AcpiPm::pio_in(std::uint16_t port, std::span<std::uint8_t> data, unsigned /*vcpu*/) {
    const std::scoped_lock lock(mutex_);
    for (std::size_t i = 0; i < data.size(); ++i) {
        const unsigned p = port + i;
        if (p == platform::acpi_sleep_status_port) {
            data[i] = sleep_status_;
        } else if (p >= base && p < base + len) {
            data[i] = 0; // the control and reset registers are write-only
        } else {
            data[i] = 0xff; // past the device: nothing there
        }
    }
}

void AcpiPm::pio_out(std::uint16_t port, std::span<const std::uint8_t> data, unsigned /*vcpu*/) {
    Action action = Action::none;
    {
        const std::scoped_lock lock(mutex_);
        for (std::size_t i = 0; i < data.size(); ++i) {
            action =
                std::max(action, write_register(static_cast<std::uint16_t>(port + i), data[i]));
        }
    }
    if (action == Action::reset && on_reset_) {
        on_reset_();
    } else if (action == Action::poweroff && on_poweroff_) {
        on_poweroff_();
    }
}

AcpiPm::Action AcpiPm::write_register(std::uint16_t port, std::uint8_t value) {
    switch (port) {
    case platform::acpi_sleep_control_port:
        if (!(value & slp_en)) {
            return Action::none;
        }
        if ((value & slp_typ_mask) >> slp_typ_shift == platform::acpi_s5_sleep_type) {
            return Action::poweroff;
        }
        sleep_status_ |= wak_sts; // a sleep we do not offer: wake up at once
        return Action::none;
    case platform::acpi_sleep_status_port:
        sleep_status_ &= static_cast<std::uint8_t>(~(value & wak_sts));
        return Action::none;
    case platform::acpi_reset_port:
        return value == platform::acpi_reset_value ? Action::reset : Action::none;
    default:
        return Action::none;
    }
}

void AcpiPm::save(StateWriter& out) const {
    const std::scoped_lock lock(mutex_);
    out.u8(sleep_status_);
}

void AcpiPm::restore(StateReader& in) {
    const std::uint8_t status = in.u8();
    in.finish();
    if (status & ~wak_sts) {
        in.fail("sleep status " + std::to_string(status) + " has reserved bits set");
    }
    const std::scoped_lock lock(mutex_);
    sleep_status_ = status;
}

} // namespace vmfork
