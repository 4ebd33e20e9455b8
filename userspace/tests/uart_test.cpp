// SPDX-License-Identifier: GPL-2.0
// Uart16550 as Linux's 8250 driver uses it: autoconfig, transmit, receive with
// interrupts, THRE semantics, loopback, save/restore, and host input from another
// thread.
#include "vmfork/vmm/devices/uart.h"

#include <array>
#include <gtest/gtest.h>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

#include "fake_irq_line.h"

namespace vmfork {
namespace {

using testing::FakeIrqLine;

constexpr std::uint16_t base = Uart16550::com1;

// Register offsets and bits, spelled as in Linux's serial_reg.h.
constexpr unsigned rx = 0, tx = 0, dll = 0, dlm = 1, ier = 1, iir = 2, fcr = 2, lcr = 3, mcr = 4,
                   lsr = 5, msr = 6, scr = 7;
constexpr std::uint8_t ier_rdi = 0x01, ier_thri = 0x02, ier_rlsi = 0x04, ier_msi = 0x08;
constexpr std::uint8_t iir_no_int = 0x01, iir_msi = 0x00, iir_thri = 0x02, iir_rdi = 0x04,
                       iir_rlsi = 0x06, iir_fifo = 0xc0;
constexpr std::uint8_t lsr_dr = 0x01, lsr_oe = 0x02, lsr_thre = 0x20, lsr_temt = 0x40;
constexpr std::uint8_t mcr_dtr = 0x01, mcr_rts = 0x02, mcr_out2 = 0x08, mcr_loop = 0x10;
constexpr std::uint8_t lcr_dlab = 0x80, lcr_8n1 = 0x03;
constexpr std::uint8_t fcr_enable = 0x01, fcr_clear_rx = 0x02, fcr_clear_tx = 0x04;

class Uart {
public:
    explicit Uart(FakeIrqLine& irq)
        : uart_(base, irq, [this](std::span<const std::uint8_t> bytes) {
              const std::scoped_lock lock(mutex_);
              sent_.insert(sent_.end(), bytes.begin(), bytes.end());
          }) {}

    std::uint8_t in(unsigned offset) {
        std::uint8_t v = 0;
        uart_.pio_in(static_cast<std::uint16_t>(base + offset), {&v, 1}, 0);
        return v;
    }
    void out(unsigned offset, std::uint8_t v) {
        uart_.pio_out(static_cast<std::uint16_t>(base + offset), {&v, 1}, 0);
    }
    void receive(std::string_view s) {
        uart_.receive({reinterpret_cast<const std::uint8_t*>(s.data()), s.size()});
    }
    // What the guest reads while LSR says data is ready.
    std::string drain() {
        std::string got;
        while ((in(lsr)&lsr_dr) != 0) {
            got.push_back(static_cast<char>(in(rx)));
        }
        return got;
    }
    std::vector<std::uint8_t> save() const {
        StateWriter w;
        uart_.save(w);
        return std::move(w).take();
    }
    void restore(std::span<const std::uint8_t> state) {
        StateReader r(state, "uart0");
        uart_.restore(r);
    }
    std::string sent() const {
        const std::scoped_lock lock(mutex_);
        return {sent_.begin(), sent_.end()};
    }
    Uart16550& device() { return uart_; }

private:
    mutable std::mutex mutex_;
    std::vector<std::uint8_t> sent_;
    Uart16550 uart_;
};

// The driver's setup after autoconfig: 8N1, FIFOs on and clear, OUT2, receive interrupt.
void open_port(Uart& u, std::uint8_t interrupts = ier_rdi) {
    u.out(lcr, lcr_8n1);
    u.out(fcr, fcr_enable | fcr_clear_rx | fcr_clear_tx);
    u.out(mcr, mcr_dtr | mcr_rts | mcr_out2);
    u.out(ier, interrupts);
}

TEST(Uart16550, LinuxAutoconfigFindsA16550A) {
    FakeIrqLine irq;
    Uart u(irq);
    EXPECT_EQ(u.device().section(), "uart0");

    // Existence test on IER: 0 and 0x0f read back, bit 6 (XScale UUE) does not stick.
    u.out(ier, 0);
    EXPECT_EQ(u.in(ier), 0);
    u.out(ier, 0x0f);
    EXPECT_EQ(u.in(ier), 0x0f);
    u.out(ier, 0x4f);
    EXPECT_EQ(u.in(ier), 0x0f) << "IER bits 4-7 must not be writable";
    u.out(ier, 0);

    // Scratch register.
    for (const std::uint8_t v : {0xa5, 0x5a, 0x00, 0xff}) {
        u.out(scr, v);
        EXPECT_EQ(u.in(scr), v);
    }

    // Loopback: with MCR = LOOP | OUT2 | RTS, MSR shows DCD | CTS.
    u.out(mcr, mcr_loop | 0x0a);
    EXPECT_EQ(u.in(msr)&0xf0, 0x90);
    u.out(mcr, mcr_loop | 0x0f);
    EXPECT_EQ(u.in(msr)&0xf0, 0xf0);
    u.out(mcr, 0);
    EXPECT_EQ(u.in(msr)&0xf0, 0xb0) << "outside loopback: DCD, DSR, CTS of a ready modem";

    // FIFO detection: IIR bits 6-7 are 3 with the FIFOs on, 0 with them off, in every
    // LCR setting (Linux writes FCR with DLAB set too); no 64-byte FIFO (bit 5).
    u.out(fcr, 0xe7);
    EXPECT_EQ(u.in(iir) >> 6, 3);
    EXPECT_EQ(u.in(iir)&0x20, 0);
    u.out(fcr, 0);
    EXPECT_EQ(u.in(iir) >> 6, 0);
    u.out(lcr, lcr_dlab);
    u.out(fcr, fcr_enable | 0x20);
    EXPECT_EQ(u.in(iir), iir_fifo | iir_no_int) << "an EFR read must not be 0 (no ST16C650)";
    u.out(fcr, 0);

    // Divisor latch: DLL/DLM under DLAB, round trip, and gone again without it.
    u.out(dll, 0x01);
    u.out(dlm, 0x02);
    EXPECT_EQ(u.in(dll), 0x01);
    EXPECT_EQ(u.in(dlm), 0x02);
    EXPECT_EQ(u.in(lcr), lcr_dlab);
    u.out(lcr, lcr_8n1);
    EXPECT_EQ(u.in(lcr), lcr_8n1);
    EXPECT_EQ(u.in(ier), 0) << "IER, not DLM, without DLAB";
    EXPECT_EQ(u.in(rx), 0) << "RBR, not DLL, without DLAB";
    u.out(tx, 'x');
    u.out(lcr, lcr_dlab);
    EXPECT_EQ(u.in(dll), 0x01) << "a THR write must not change DLL";
    EXPECT_EQ(u.sent(), "x");

    // Nothing pending, transmitter empty, line low throughout.
    EXPECT_EQ(u.in(lsr), lsr_thre | lsr_temt);
    EXPECT_FALSE(irq.high());
}

TEST(Uart16550, TransmitGoesToTheCallback) {
    FakeIrqLine irq;
    Uart u(irq);
    open_port(u);
    for (const char c : std::string("hello\n")) {
        EXPECT_NE(u.in(lsr)&lsr_thre, 0);
        u.out(tx, static_cast<std::uint8_t>(c));
    }
    EXPECT_EQ(u.sent(), "hello\n");
    EXPECT_EQ(u.in(lsr), lsr_thre | lsr_temt);
    EXPECT_EQ(u.drain(), "") << "outside loopback nothing comes back";

    u.out(lcr, lcr_dlab | lcr_8n1);
    u.out(tx, 0x0c);
    EXPECT_EQ(u.sent(), "hello\n") << "a divisor write is not a byte sent";
}

TEST(Uart16550, WiderAccessIsByteAccessesToConsecutivePorts) {
    FakeIrqLine irq;
    Uart u(irq);
    const std::array<std::uint8_t, 2> regs = {0x03, 0x0b}; // LCR, MCR
    u.device().pio_out(static_cast<std::uint16_t>(base + lcr), regs, 0);
    EXPECT_EQ(u.in(lcr), 0x03);
    EXPECT_EQ(u.in(mcr), 0x0b);
    std::array<std::uint8_t, 4> got{};
    u.device().pio_in(static_cast<std::uint16_t>(base + msr), got,
                      0); // MSR, SCR, then two ports past the UART
    EXPECT_EQ(got[2], 0xff);
    EXPECT_EQ(got[3], 0xff);
}

TEST(Uart16550, ReceiveRaisesTheIrqOnlyWithErbfiAndOut2) {
    FakeIrqLine irq;
    Uart u(irq);
    u.out(fcr, fcr_enable);

    u.receive("a");
    EXPECT_EQ(u.in(lsr)&lsr_dr, lsr_dr);
    EXPECT_EQ(u.in(iir), iir_fifo | iir_no_int) << "no interrupt with IER clear";
    EXPECT_FALSE(irq.high());

    u.out(ier, ier_rdi);
    EXPECT_EQ(u.in(iir), iir_fifo | iir_rdi);
    EXPECT_FALSE(irq.high()) << "OUT2 gates the interrupt line";

    u.out(mcr, mcr_out2);
    EXPECT_TRUE(irq.high());
    u.out(ier, 0);
    EXPECT_FALSE(irq.high());
    u.out(ier, ier_rdi);
    EXPECT_TRUE(irq.high());

    EXPECT_EQ(u.in(rx), 'a');
    EXPECT_FALSE(irq.high()) << "reading the last byte lowers the line";
    EXPECT_EQ(u.in(lsr)&lsr_dr, 0);
    EXPECT_EQ(u.in(iir), iir_fifo | iir_no_int);
    EXPECT_EQ(irq.levels(), (std::vector<bool>{true, false, true, false}))
        << "the line is driven on changes only";
}

TEST(Uart16550, ThreInterruptAsLinuxExpectsIt) {
    FakeIrqLine irq;
    Uart u(irq);
    u.out(mcr, mcr_out2);
    EXPECT_EQ(u.in(iir), iir_no_int);

    // Setting ETBEI with THR empty makes the interrupt pending.
    u.out(ier, ier_thri);
    EXPECT_TRUE(irq.high());
    // Reading IIR when THRE is the reported source acknowledges it.
    EXPECT_EQ(u.in(iir), iir_thri);
    EXPECT_FALSE(irq.high());
    EXPECT_EQ(u.in(iir), iir_no_int);

    // Writing THR acknowledges it too; the byte leaves at once and THR is empty
    // again, so it is pending again.
    u.out(tx, 'z');
    EXPECT_TRUE(irq.high());
    EXPECT_EQ(u.in(iir), iir_thri);

    // Linux's startup test: toggling ETBEI re-asserts an acknowledged THRE interrupt
    // (else it sets UART_BUG_THRE).
    u.out(ier, 0);
    u.out(ier, ier_thri);
    EXPECT_EQ(u.in(iir), iir_thri);
    u.out(ier, 0);
    u.out(ier, ier_thri);
    EXPECT_EQ(u.in(iir), iir_thri);

    // Writing IER with ETBEI unchanged does not re-assert it.
    u.out(ier, ier_thri | ier_rdi);
    EXPECT_EQ(u.in(iir), iir_no_int);
    EXPECT_FALSE(irq.high());

    // Disabling ETBEI drops a pending THRE interrupt.
    u.out(ier, 0);
    u.out(ier, ier_thri);
    u.out(ier, 0);
    EXPECT_FALSE(irq.high());
    EXPECT_EQ(u.in(iir), iir_no_int);
}

TEST(Uart16550, InterruptPriorities) {
    FakeIrqLine irq;
    Uart u(irq);
    u.out(fcr, fcr_enable);
    u.out(mcr, mcr_loop | mcr_out2);
    u.in(msr); // clear the deltas of entering loopback
    u.out(ier, ier_rdi | ier_thri | ier_rlsi | ier_msi);
    EXPECT_EQ(u.in(iir), iir_fifo | iir_thri);

    // 17 bytes into the 16-byte FIFO in loopback: an overrun.
    for (int i = 0; i < 17; ++i) {
        u.out(tx, static_cast<std::uint8_t>('A' + i));
    }
    u.out(mcr, mcr_loop | mcr_out2 | mcr_rts); // a modem status change (CTS)
    EXPECT_EQ(u.in(iir), iir_fifo | iir_rlsi) << "line status first";
    EXPECT_TRUE(irq.high());
    EXPECT_EQ(u.in(lsr), lsr_oe | lsr_dr | lsr_thre | lsr_temt);
    EXPECT_EQ(u.in(lsr)&lsr_oe, 0) << "reading LSR clears OE";

    EXPECT_EQ(u.in(iir), iir_fifo | iir_rdi) << "then received data";
    // Reading IIR while RX data is reported does not acknowledge THRE.
    EXPECT_EQ(u.drain(), "ABCDEFGHIJKLMNOP");
    EXPECT_EQ(u.in(iir), iir_fifo | iir_thri) << "then THR empty";
    EXPECT_EQ(u.in(iir), iir_fifo | iir_msi) << "then modem status";
    EXPECT_EQ(u.in(msr)&0x0f, 0x01) << "delta CTS";
    EXPECT_EQ(u.in(iir), iir_fifo | iir_no_int);
    EXPECT_FALSE(irq.high());
}

TEST(Uart16550, LoopbackKeepsHostInputWaiting) {
    FakeIrqLine irq;
    Uart u(irq);
    open_port(u);
    u.out(mcr, mcr_loop | mcr_out2);
    u.receive("host");
    EXPECT_EQ(u.drain(), "") << "in loopback the receiver hears only the transmitter";
    u.out(tx, 'l');
    u.out(tx, 'b');
    EXPECT_TRUE(irq.high());
    EXPECT_EQ(u.drain(), "lb");
    EXPECT_EQ(u.sent(), "") << "looped back bytes do not leave";
    EXPECT_EQ(u.device().input_pending(), 4U);

    u.out(mcr, mcr_dtr | mcr_rts | mcr_out2);
    EXPECT_TRUE(irq.high());
    EXPECT_EQ(u.drain(), "host");
    EXPECT_FALSE(irq.high());
}

TEST(Uart16550, HostInputBeyondTheFifoArrivesInOrder) {
    for (const bool fifo : {true, false}) {
        FakeIrqLine irq;
        Uart u(irq);
        open_port(u);
        if (!fifo) {
            u.out(fcr, 0);
        }
        std::string input;
        for (int i = 0; i < 1000; ++i) {
            input.push_back(static_cast<char>('a' + i % 26));
        }
        u.receive(input.substr(0, 300));
        u.receive(input.substr(300));
        EXPECT_EQ(u.device().input_pending(), input.size());
        EXPECT_TRUE(irq.high());
        EXPECT_EQ(u.drain(), input) << (fifo ? "with FIFOs" : "without FIFOs");
        EXPECT_FALSE(irq.high());
        EXPECT_EQ(u.device().input_pending(), 0U);
    }
}

TEST(Uart16550, FifoClearDropsOnlyWhatIsInTheFifo) {
    FakeIrqLine irq;
    Uart u(irq);
    open_port(u);
    u.receive("0123456789abcdefXYZ");
    u.out(fcr, fcr_enable | fcr_clear_rx);
    EXPECT_EQ(u.drain(), "XYZ") << "the guest cleared 16 bytes; the host queue refills";
    u.receive("after");
    u.out(fcr, 0); // FIFOs off: cleared, one byte of receiver
    EXPECT_EQ(u.drain(), "");
}

std::vector<std::uint8_t> busy_state(Uart& u) {
    open_port(u, ier_rdi | ier_thri | ier_msi);
    u.out(lcr, lcr_dlab | lcr_8n1);
    u.out(dll, 0x01);
    u.out(dlm, 0x00);
    u.out(lcr, lcr_8n1);
    u.out(scr, 0x42);
    std::string input;
    for (int i = 0; i < 40; ++i) {
        input.push_back(static_cast<char>('0' + i));
    }
    u.receive(input);
    u.in(rx);
    u.in(iir); // reports RX data: THRE stays pending
    return u.save();
}

TEST(Uart16550, SaveRestoreRoundTrip) {
    FakeIrqLine irq;
    Uart u(irq);
    const std::vector<std::uint8_t> state = busy_state(u);
    ASSERT_TRUE(irq.high());

    FakeIrqLine irq2;
    Uart v(irq2);
    v.restore(state);
    EXPECT_EQ(v.save(), state);
    EXPECT_EQ(irq2.levels(), std::vector<bool>{true}) << "restore drives the line";

    // The same again, with the line already at that level: driven anyway.
    v.restore(state);
    EXPECT_EQ(irq2.levels(), (std::vector<bool>{true, true}));

    // Both behave the same from here.
    for (Uart* w : {&u, &v}) {
        EXPECT_EQ(w->in(scr), 0x42);
        w->out(lcr, lcr_dlab | lcr_8n1);
        EXPECT_EQ(w->in(dll), 0x01);
        w->out(lcr, lcr_8n1);
        EXPECT_EQ(w->in(iir), iir_fifo | iir_rdi);
        std::string expected;
        for (int i = 1; i < 40; ++i) {
            expected.push_back(static_cast<char>('0' + i));
        }
        EXPECT_EQ(w->drain(), expected);
        EXPECT_EQ(w->in(iir), iir_fifo | iir_thri);
        EXPECT_EQ(w->in(iir), iir_fifo | iir_no_int);
    }
    EXPECT_FALSE(irq.high());
    EXPECT_FALSE(irq2.high());
}

void expect_rejected(Uart& u, const std::vector<std::uint8_t>& state, const char* why) {
    const std::vector<std::uint8_t> before = u.save();
    EXPECT_THROW(u.restore(state), std::invalid_argument) << why;
    EXPECT_EQ(u.save(), before) << why << ": the device must be unchanged";
}

TEST(Uart16550, BadStateIsRejectedAndChangesNothing) {
    FakeIrqLine irq;
    Uart good(irq);
    const std::vector<std::uint8_t> state = busy_state(good);

    FakeIrqLine irq2;
    Uart u(irq2);
    u.receive("keep");
    u.out(scr, 0x77);

    for (std::size_t n = 0; n < state.size(); ++n) {
        expect_rejected(u, {state.begin(), state.begin() + static_cast<std::ptrdiff_t>(n)},
                        "truncated");
    }
    auto longer = state;
    longer.push_back(0);
    expect_rejected(u, longer, "a byte left over");

    // Layout: version, IER, LCR, MCR, SCR, DLL, DLM, FCR, MSR deltas, OE, THRE pending,
    // then the FIFO and host queue as u32 length + bytes.
    const auto with = [&](std::size_t at, std::uint8_t v) {
        auto s = state;
        s[at] = v;
        return s;
    };
    expect_rejected(u, with(0, 2), "unknown version");
    expect_rejected(u, with(1, 0x10), "IER reserved bits");
    expect_rejected(u, with(3, 0x20), "MCR reserved bits");
    expect_rejected(u, with(7, 0x02), "FCR clear bit kept");
    expect_rejected(u, with(7, 0xc0), "FCR trigger level without FIFO");
    expect_rejected(u, with(8, 0x10), "MSR status bits as deltas");
    expect_rejected(u, with(9, 2), "OE not a flag");
    expect_rejected(u, with(1, ier_rdi), "THRE pending with ETBEI clear");
    expect_rejected(u, with(11, 17), "a FIFO of 17 bytes");
    expect_rejected(u, with(7, 0), "16 bytes in a receiver without FIFO");

    // A queue waiting behind a FIFO with room.
    StateWriter w;
    for (const std::uint8_t b : {1, 0, 0, 0, 0, 0x0c, 0, 1, 0, 0, 0}) {
        w.u8(b);
    }
    w.bytes(std::vector<std::uint8_t>{'a'});
    w.bytes(std::vector<std::uint8_t>{'b'});
    expect_rejected(u, w.data(), "host input behind a FIFO with room");

    EXPECT_EQ(u.in(scr), 0x77);
    EXPECT_EQ(u.drain(), "keep");
    EXPECT_TRUE(irq2.levels().empty());
}

TEST(Uart16550, HostInputFromAnotherThread) {
    FakeIrqLine irq;
    Uart u(irq);
    open_port(u);
    std::string input;
    for (int i = 0; i < 20000; ++i) {
        input.push_back(static_cast<char>(i * 7 % 251));
    }
    std::thread feeder([&] {
        for (std::size_t at = 0; at < input.size(); at += 37) {
            u.receive(std::string_view(input).substr(at, 37));
            if (at % 1000 == 0) {
                std::this_thread::yield();
            }
        }
    });
    std::string got;
    while (got.size() < input.size()) {
        const std::uint8_t status = u.in(lsr);
        if ((status & lsr_dr) != 0) {
            got.push_back(static_cast<char>(u.in(rx)));
        } else {
            u.in(iir);
        }
    }
    feeder.join();
    EXPECT_EQ(got, input);
    EXPECT_FALSE(irq.high()) << "the line ends at the level of the last state";
    const std::vector<bool> levels = irq.levels();
    for (std::size_t i = 1; i < levels.size(); ++i) {
        ASSERT_NE(levels[i], levels[i - 1]) << "the line only gets changes, in order";
    }
}

} // namespace
} // namespace vmfork
