// SPDX-License-Identifier: GPL-2.0
// I8042 as Linux's i8042 driver and `reboot=k` use it: probe, command byte, reset
// pulse, save/restore.
#include "vmfork/vmm/devices/i8042.h"

#include <gtest/gtest.h>
#include <stdexcept>
#include <vector>

namespace vmfork {
namespace {

constexpr std::uint8_t status_obf = 0x01, status_ibf = 0x02, status_sys = 0x04,
                       status_keylock = 0x10, status_aux = 0x20;
constexpr std::uint8_t idle = status_sys | status_keylock;

class Controller {
public:
    Controller()
        : i8042_([this] {
              ++resets_;
              // The callback runs without the device lock: it may touch the device.
              status_at_reset_ = status();
          }) {}

    std::uint8_t status() { return in(I8042::command_port); }
    std::uint8_t data() { return in(I8042::data_port); }
    void command(std::uint8_t cmd) { out(I8042::command_port, cmd); }
    void write(std::uint8_t v) { out(I8042::data_port, v); }

    // Linux's i8042_command(): a command, its parameter bytes, then its answers,
    // each after waiting on the status register (here: checking it).
    std::vector<std::uint8_t> run(std::uint8_t cmd, const std::vector<std::uint8_t>& params,
                                  std::size_t answers) {
        EXPECT_EQ(status() & status_ibf, 0);
        command(cmd);
        for (const std::uint8_t p : params) {
            EXPECT_EQ(status() & status_ibf, 0);
            write(p);
        }
        std::vector<std::uint8_t> got;
        for (std::size_t i = 0; i < answers; ++i) {
            EXPECT_NE(status() & status_obf, 0) << "answer " << i << " of command " << +cmd;
            got.push_back(data());
        }
        EXPECT_EQ(status() & status_obf, 0) << "no more answers to command " << +cmd;
        return got;
    }

    std::vector<std::uint8_t> save() const {
        StateWriter w;
        i8042_.save(w);
        return std::move(w).take();
    }
    void restore(std::span<const std::uint8_t> state) {
        StateReader r(state, "i8042");
        i8042_.restore(r);
    }
    [[nodiscard]] unsigned resets() const { return resets_; }
    [[nodiscard]] std::uint8_t status_at_reset() const { return status_at_reset_; }
    I8042& device() { return i8042_; }

private:
    std::uint8_t in(std::uint16_t port) {
        std::uint8_t v = 0;
        i8042_.pio_in(port, {&v, 1}, 0);
        return v;
    }
    void out(std::uint16_t port, std::uint8_t v) { i8042_.pio_out(port, {&v, 1}, 0); }

    unsigned resets_ = 0;
    std::uint8_t status_at_reset_ = 0;
    I8042 i8042_;
};

TEST(I8042, LinuxProbeSequence) {
    Controller c;
    EXPECT_EQ(c.device().section(), "i8042");
    // i8042_controller_check(): nothing to flush (a status of 0xff would mean no chip).
    EXPECT_EQ(c.status(), idle);

    // i8042_controller_selftest().
    EXPECT_EQ(c.run(0xaa, {}, 1), std::vector<std::uint8_t>{0x55});

    // i8042_controller_init(): read the CTR twice (stable), disable the keyboard and
    // its interrupt, write it back, flush.
    const std::vector<std::uint8_t> ctr = c.run(0x20, {}, 1);
    EXPECT_EQ(c.run(0x20, {}, 1), ctr);
    EXPECT_NE(ctr[0] & 0x04, 0) << "system flag";
    const auto disabled = static_cast<std::uint8_t>((ctr[0] | 0x10) & ~0x01);
    c.run(0x60, {disabled}, 0);
    EXPECT_EQ(c.run(0x20, {}, 1), std::vector<std::uint8_t>{disabled});

    // i8042_enable_kbd_port() and the keyboard interface test.
    const auto enabled = static_cast<std::uint8_t>((disabled & ~0x10) | 0x01);
    c.run(0x60, {enabled}, 0);
    EXPECT_EQ(c.run(0x20, {}, 1), std::vector<std::uint8_t>{enabled});
    EXPECT_EQ(c.run(0xab, {}, 1), std::vector<std::uint8_t>{0x00});

    // Interface enable/disable commands change the CTR.
    c.run(0xad, {}, 0);
    EXPECT_EQ(c.run(0x20, {}, 1)[0] & 0x10, 0x10);
    c.run(0xae, {}, 0);
    EXPECT_EQ(c.run(0x20, {}, 1)[0] & 0x10, 0);
    c.run(0xa8, {}, 0);
    EXPECT_EQ(c.run(0x20, {}, 1)[0] & 0x20, 0);
    c.run(0xa7, {}, 0);
    EXPECT_EQ(c.run(0x20, {}, 1)[0] & 0x20, 0x20);

    // Loop commands answer on their side; bytes to the keyboard get no answer.
    EXPECT_EQ(c.run(0xd2, {0xa5}, 1), std::vector<std::uint8_t>{0xa5});
    c.command(0xd3);
    c.write(0x5a);
    EXPECT_EQ(c.status(), idle | status_obf | status_aux);
    EXPECT_EQ(c.data(), 0x5a);
    EXPECT_EQ(c.status(), idle);
    c.write(0xf2);          // keyboard identify
    c.run(0xd4, {0xff}, 0); // mouse reset
    EXPECT_EQ(c.status(), idle);
    EXPECT_EQ(c.data(), 0x5a) << "an empty output buffer reads its last byte again";

    EXPECT_EQ(c.resets(), 0U);
}

TEST(I8042, ResetPulse) {
    Controller c;
    // reboot=k: wait for the input buffer, then command 0xfe.
    for (int i = 0; i < 3; ++i) {
        EXPECT_EQ(c.status() & status_ibf, 0);
        c.command(0xfe);
    }
    EXPECT_EQ(c.resets(), 3U);
    EXPECT_EQ(c.status_at_reset(), idle);
    c.command(0xff); // pulses no line
    c.command(0xf1); // pulses lines 1-3, not reset
    EXPECT_EQ(c.resets(), 3U);

    // Output port writes: bit 0 is the reset line, active low.
    EXPECT_EQ(c.run(0xd0, {}, 1)[0] & 0x03, 0x03);
    c.run(0xd1, {0x03}, 0);
    EXPECT_EQ(c.resets(), 3U);
    c.run(0xd1, {0x02}, 0);
    EXPECT_EQ(c.resets(), 4U);

    // A command cancels one still waiting for its data byte.
    c.command(0xd1);
    c.command(0x20);
    EXPECT_NE(c.data(), 0x00);
    c.write(0x00);
    EXPECT_EQ(c.resets(), 4U);
}

TEST(I8042, SaveRestoreRoundTrip) {
    Controller a;
    a.run(0x60, {0x47}, 0);
    a.command(0xaa);
    a.command(0xd3);
    a.write(0x12);
    a.command(0x60); // waiting for its data byte
    const std::vector<std::uint8_t> state = a.save();

    Controller b;
    b.restore(state);
    EXPECT_EQ(b.save(), state);
    for (Controller* c : {&a, &b}) {
        EXPECT_EQ(c->status(), idle | status_obf);
        EXPECT_EQ(c->data(), 0x55);
        EXPECT_EQ(c->status(), idle | status_obf | status_aux);
        EXPECT_EQ(c->data(), 0x12);
        c->write(0x61);
        EXPECT_EQ(c->run(0x20, {}, 1), std::vector<std::uint8_t>{0x61});
    }
}

TEST(I8042, BadStateIsRejectedAndChangesNothing) {
    Controller a;
    a.command(0xaa);
    a.command(0xd1);
    const std::vector<std::uint8_t> state = a.save();

    Controller b;
    b.run(0x60, {0x01}, 0);
    b.command(0xab);
    const std::vector<std::uint8_t> before = b.save();
    const auto rejected = [&](const std::vector<std::uint8_t>& s, const char* why) {
        EXPECT_THROW(b.restore(s), std::invalid_argument) << why;
        EXPECT_EQ(b.save(), before) << why << ": the device must be unchanged";
    };
    for (std::size_t n = 0; n < state.size(); ++n) {
        rejected({state.begin(), state.begin() + static_cast<std::ptrdiff_t>(n)}, "truncated");
    }
    auto longer = state;
    longer.push_back(0);
    rejected(longer, "a byte left over");

    // Layout: version, 32 bytes of RAM, output port, pending command, last byte,
    // output count, then (byte, aux flag) pairs.
    const auto with = [&](std::size_t at, std::uint8_t v) {
        auto s = state;
        s[at] = v;
        return s;
    };
    rejected(with(0, 9), "unknown version");
    rejected(with(34, 0xaa), "a pending command that takes no data");
    rejected(with(36, 17), "an output buffer of 17 bytes");
    rejected(with(38, 2), "an aux flag of 2");
    EXPECT_EQ(b.data(), 0x00);
    EXPECT_EQ(b.resets(), 0U);
}

} // namespace
} // namespace vmfork
