// SPDX-License-Identifier: GPL-2.0
#include "vmfork/vmm/devices/i8042.h"

#include <utility>

namespace vmfork {
namespace {

constexpr std::uint8_t status_obf = 0x01;      // output buffer full
constexpr std::uint8_t status_sys = 0x04;      // system flag (POST passed)
constexpr std::uint8_t status_unlocked = 0x10; // keyboard not inhibited by the keylock
constexpr std::uint8_t status_aux_obf = 0x20;  // the byte waiting is from the AUX port

constexpr std::uint8_t ctr_kbd_int = 0x01;
constexpr std::uint8_t ctr_sys = 0x04;
constexpr std::uint8_t ctr_kbd_disable = 0x10;
constexpr std::uint8_t ctr_aux_disable = 0x20;
constexpr std::uint8_t ctr_xlate = 0x40;

constexpr std::uint8_t out_reset = 0x01; // active low: 0 resets the CPU
constexpr std::uint8_t out_a20 = 0x02;

constexpr std::uint8_t cmd_read_ram = 0x20;  // 0x20-0x3f: read RAM byte n (0: CTR)
constexpr std::uint8_t cmd_write_ram = 0x60; // 0x60-0x7f: write RAM byte n
constexpr std::uint8_t cmd_ram_mask = 0x1f;
constexpr std::uint8_t cmd_aux_disable = 0xa7;
constexpr std::uint8_t cmd_aux_enable = 0xa8;
constexpr std::uint8_t cmd_aux_test = 0xa9;
constexpr std::uint8_t cmd_self_test = 0xaa;
constexpr std::uint8_t cmd_kbd_test = 0xab;
constexpr std::uint8_t cmd_kbd_disable = 0xad;
constexpr std::uint8_t cmd_kbd_enable = 0xae;
constexpr std::uint8_t cmd_read_input = 0xc0;
constexpr std::uint8_t cmd_read_output = 0xd0;
constexpr std::uint8_t cmd_write_output = 0xd1;
constexpr std::uint8_t cmd_kbd_loop = 0xd2;
constexpr std::uint8_t cmd_aux_loop = 0xd3;
constexpr std::uint8_t cmd_aux_send = 0xd4;
constexpr std::uint8_t cmd_read_test = 0xe0;
constexpr std::uint8_t cmd_pulse = 0xf0; // 0xf0-0xff: pulse the output lines whose bit is 0

constexpr std::uint8_t self_test_ok = 0x55;
constexpr std::uint8_t interface_ok = 0x00;
constexpr std::uint8_t input_port = 0x80; // keyboard not inhibited

constexpr std::uint8_t state_version = 1;

bool takes_data(std::uint8_t cmd) {
    return (cmd & ~cmd_ram_mask) == cmd_write_ram || cmd == cmd_write_output ||
           cmd == cmd_kbd_loop || cmd == cmd_aux_loop || cmd == cmd_aux_send;
}

} // namespace

I8042::I8042(std::function<void()> on_reset, std::string section)
    : on_reset_(std::move(on_reset)), section_(std::move(section)), r_(initial()) {}

I8042::Registers I8042::initial() {
    Registers r;
    // As firmware leaves it: translated keyboard with its interrupt on, AUX off, POST
    // passed.
    r.ram[0] = ctr_xlate | ctr_aux_disable | ctr_sys | ctr_kbd_int;
    r.output_port = out_reset | out_a20;
    return r;
}

void I8042::pio_in(std::uint16_t port, std::span<std::uint8_t> data, unsigned /*vcpu*/) {
    const std::scoped_lock lock(mutex_);
    for (std::uint8_t& byte : data) {
        byte = port == data_port ? read_data() : port == command_port ? status() : 0xff;
    }
}

void I8042::pio_out(std::uint16_t port, std::span<const std::uint8_t> data, unsigned /*vcpu*/) {
    unsigned resets = 0;
    {
        const std::scoped_lock lock(mutex_);
        for (const std::uint8_t byte : data) {
            const bool reset = port == command_port ? command(byte)
                               : port == data_port  ? this->data(byte)
                                                    : false;
            resets += reset ? 1 : 0;
        }
    }
    for (unsigned i = 0; i < resets && on_reset_; ++i) {
        on_reset_();
    }
}

std::uint8_t I8042::status() const {
    std::uint8_t v = status_unlocked;
    if ((r_.ram[0] & ctr_sys) != 0) {
        v |= status_sys;
    }
    if (!r_.output.empty()) {
        v |= status_obf;
        if (r_.output.front().aux) {
            v |= status_aux_obf;
        }
    }
    return v;
}

std::uint8_t I8042::read_data() {
    if (!r_.output.empty()) {
        r_.last = r_.output.front().value;
        r_.output.pop_front();
    }
    return r_.last;
}

void I8042::answer(std::uint8_t value, bool aux) {
    if (r_.output.size() < output_max) {
        r_.output.push_back({value, aux});
    }
}

bool I8042::command(std::uint8_t cmd) {
    r_.pending = 0; // a new command cancels one still waiting for its data
    if (takes_data(cmd)) {
        r_.pending = cmd;
        return false;
    }
    if ((cmd & ~cmd_ram_mask) == cmd_read_ram) {
        answer(r_.ram[cmd & cmd_ram_mask]);
        return false;
    }
    if (cmd >= cmd_pulse) {
        return (cmd & out_reset) == 0;
    }
    switch (cmd) {
    case cmd_aux_disable:
        r_.ram[0] |= ctr_aux_disable;
        break;
    case cmd_aux_enable:
        r_.ram[0] &= static_cast<std::uint8_t>(~ctr_aux_disable);
        break;
    case cmd_aux_test:
    case cmd_kbd_test:
        answer(interface_ok);
        break;
    case cmd_self_test:
        r_.ram[0] |= ctr_sys;
        answer(self_test_ok);
        break;
    case cmd_kbd_disable:
        r_.ram[0] |= ctr_kbd_disable;
        break;
    case cmd_kbd_enable:
        r_.ram[0] &= static_cast<std::uint8_t>(~ctr_kbd_disable);
        break;
    case cmd_read_input:
        answer(input_port);
        break;
    case cmd_read_output:
        answer(r_.output_port);
        break;
    case cmd_read_test:
        answer(0);
        break;
    default: // vendor commands, A20 on/off: nothing to do
        break;
    }
    return false;
}

bool I8042::data(std::uint8_t value) {
    const std::uint8_t cmd = r_.pending;
    r_.pending = 0;
    if ((cmd & ~cmd_ram_mask) == cmd_write_ram) {
        r_.ram[cmd & cmd_ram_mask] = value;
        return false;
    }
    switch (cmd) {
    case cmd_write_output:
        r_.output_port = value;
        return (value & out_reset) == 0;
    case cmd_kbd_loop:
        answer(value);
        break;
    case cmd_aux_loop:
        answer(value, true);
        break;
    default: // to the keyboard (or, after 0xd4, the mouse): nobody is there
        break;
    }
    return false;
}

void I8042::save(StateWriter& out) const {
    const std::scoped_lock lock(mutex_);
    out.u8(state_version);
    for (const std::uint8_t byte : r_.ram) {
        out.u8(byte);
    }
    out.u8(r_.output_port);
    out.u8(r_.pending);
    out.u8(r_.last);
    out.u8(static_cast<std::uint8_t>(r_.output.size()));
    for (const Byte& b : r_.output) {
        out.u8(b.value);
        out.boolean(b.aux);
    }
}

I8042::Registers I8042::parse(StateReader& in) {
    Registers r;
    const std::uint8_t version = in.u8();
    if (version != state_version) {
        in.fail("unknown state version " + std::to_string(version));
    }
    for (std::uint8_t& byte : r.ram) {
        byte = in.u8();
    }
    r.output_port = in.u8();
    r.pending = in.u8();
    if (r.pending != 0 && !takes_data(r.pending)) {
        in.fail("command " + std::to_string(r.pending) + " takes no data byte");
    }
    r.last = in.u8();
    const std::uint8_t count = in.u8();
    if (count > output_max) {
        in.fail(std::to_string(count) + " bytes in an output buffer of " +
                std::to_string(output_max));
    }
    for (unsigned i = 0; i < count; ++i) {
        Byte b;
        b.value = in.u8();
        b.aux = in.boolean();
        r.output.push_back(b);
    }
    in.finish();
    return r;
}

void I8042::restore(StateReader& in) {
    Registers r = parse(in);
    const std::scoped_lock lock(mutex_);
    r_ = std::move(r);
}

} // namespace vmfork
