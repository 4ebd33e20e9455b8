// SPDX-License-Identifier: GPL-2.0
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <span>
#include <string_view>
#include <utility>

#include "vmfork/vmm/device_state.h"
#include "vmfork/vmm/devices.h"
#include "vmfork/vmm/platform.h"

namespace vmfork {

// The FADT's hardware-reduced sleep and reset registers, one byte each:
//   base + 0  SLEEP_CONTROL_REG: SLP_EN (bit 5) with SLP_TYP (bits 2-4) = 5 powers off;
//             reads 0.
//   base + 1  SLEEP_STATUS_REG: WAK_STS (bit 7), write 1 to clear.
//   base + 2  RESET_REG: platform::acpi_reset_value resets; reads 0.
// A wider access is one byte per port. Linux powers off with SLP_TYP from the DSDT's
// _S5_, then polls WAK_STS: the VMM stops the vCPUs in on_poweroff. A sleep state the
// DSDT does not offer wakes at once (WAK_STS set), so a guest that tries one goes on.
//
// The callbacks run in the writing vCPU's thread, with no lock of this device held.
class AcpiPm : public PioDevice, public StatefulDevice {
public:
    static constexpr std::uint16_t base = platform::acpi_pm_port;
    static constexpr std::uint16_t len = platform::acpi_pm_ports;
    static constexpr std::uint8_t slp_en = 1 << 5;
    static constexpr unsigned slp_typ_shift = 2;
    static constexpr std::uint8_t slp_typ_mask = 0x7 << slp_typ_shift;
    static constexpr std::uint8_t wak_sts = 1 << 7;

    using Callback = std::function<void()>;

    AcpiPm(Callback on_poweroff, Callback on_reset)
        : on_poweroff_(std::move(on_poweroff)), on_reset_(std::move(on_reset)) {}

    void pio_in(std::uint16_t port, std::span<std::uint8_t> data, unsigned vcpu) override;
    void pio_out(std::uint16_t port, std::span<const std::uint8_t> data, unsigned vcpu) override;

    [[nodiscard]] std::string_view section() const override { return "acpi-pm"; }
    // One byte: the sleep status register.
    void save(StateWriter& out) const override;
    void restore(StateReader& in) override;

private:
    enum class Action { none, poweroff, reset };
    Action write_register(std::uint16_t port, std::uint8_t value);

    const Callback on_poweroff_;
    const Callback on_reset_;
    mutable std::mutex mutex_;
    std::uint8_t sleep_status_ = 0;
};

} // namespace vmfork
