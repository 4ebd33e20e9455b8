// SPDX-License-Identifier: GPL-2.0
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <span>
#include <string>
#include <string_view>

#include "vmfork/vmm/device_state.h"
#include "vmfork/vmm/devices.h"

namespace vmfork {

// The PS/2 controller (8042) of a PC at ports 0x60 (data) and 0x64 (status/command),
// with no keyboard or mouse attached and no interrupt lines: enough for Linux's i8042
// driver to probe it (self test, command byte, interface tests) and for `reboot=k`,
// whose reset pulse (command 0xfe, or an output port write with bit 0 clear) calls
// on_reset. Bytes sent to the keyboard or the mouse get no answer, as when none is
// plugged in; boot Linux with i8042.noaux i8042.nomux i8042.dumbkbd so that it does
// not wait for them.
//
// The status register reads 0x14 when idle (system flag, keyboard not locked: Linux
// warns "Keylock active" without the latter), plus output-buffer-full (and the AUX bit)
// while command answers wait in the output buffer. The input buffer is never full.
class I8042 : public PioDevice, public StatefulDevice {
public:
    static constexpr std::uint16_t data_port = 0x60;
    static constexpr std::uint16_t command_port = 0x64;

    // on_reset runs in the vCPU's thread, without the device lock held, once for each
    // reset pulse (Linux sends up to ten); it should stop the VM.
    explicit I8042(std::function<void()> on_reset, std::string section = "i8042");

    void pio_in(std::uint16_t port, std::span<std::uint8_t> data, unsigned vcpu) override;
    void pio_out(std::uint16_t port, std::span<const std::uint8_t> data, unsigned vcpu) override;

    [[nodiscard]] std::string_view section() const override { return section_; }
    void save(StateWriter& out) const override;
    void restore(StateReader& in) override;

private:
    static constexpr std::size_t ram_size = 32;   // byte 0 is the command byte (CTR)
    static constexpr std::size_t output_max = 16; // answers waiting to be read

    struct Byte {
        std::uint8_t value = 0;
        bool aux = false; // from the AUX (mouse) side: status bit 5
    };

    // Everything save() writes.
    struct Registers {
        std::array<std::uint8_t, ram_size> ram{};
        std::uint8_t output_port = 0;
        std::uint8_t pending = 0; // a command waiting for its data byte (0: none)
        std::uint8_t last = 0;    // the data port reads this again when nothing waits
        std::deque<Byte> output;
    };

    [[nodiscard]] std::uint8_t status() const;
    std::uint8_t read_data();
    // Return true when the write pulsed the reset line.
    bool command(std::uint8_t cmd);
    bool data(std::uint8_t value);
    void answer(std::uint8_t value, bool aux = false);
    static Registers initial();
    static Registers parse(StateReader& in);

    const std::function<void()> on_reset_;
    const std::string section_;
    mutable std::mutex mutex_;
    Registers r_;
};

} // namespace vmfork
