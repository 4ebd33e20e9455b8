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

// A 16550A UART on 8 I/O ports, as Linux's 8250 driver expects it on a PC.
//
// The line is infinitely fast: a byte written to THR goes to the output callback (or,
// in loopback mode, to the receiver) at once, so THR and the transmitter are always
// empty. Host input goes to an unbounded queue and from there into the receiver (a
// 16-byte FIFO, one byte with FIFOs off) as the guest reads it: nothing the host sends
// is lost. In loopback mode the receiver takes only what the guest transmits; host
// input waits in the queue. Interrupts: line status (overrun, only possible in
// loopback) > received data > THR empty > modem status; the RX FIFO trigger level and
// the character timeout are not emulated (data interrupts at once). The interrupt line
// is high while an interrupt is pending and MCR.OUT2 is set, as on a PC.
//
// Locking: one mutex guards the registers and queues, so the vCPU threads (PIO) and a
// host thread (receive()) may call in concurrently. Neither callback is called with it
// held: the output callback runs in the writing vCPU's thread after the register
// update, and may call receive(). IrqLine::set_level is called by one thread at a time
// with the mutex dropped; a thread that changes the level while another is driving the
// line leaves the new level to it, so the line always ends at the level of the latest
// state and changes reach it in order.
class Uart16550 : public PioDevice, public StatefulDevice {
public:
    static constexpr std::uint16_t com1 = 0x3f8;
    static constexpr std::uint16_t len = 8;
    static constexpr std::size_t fifo_size = 16;

    using Output = std::function<void(std::span<const std::uint8_t>)>;

    // A UART at ports base..base+7 driving irq; transmitted bytes go to output (may be
    // empty: they are dropped). section names its saved state.
    Uart16550(std::uint16_t base, IrqLine& irq, Output output, std::string section = "uart0");

    void pio_in(std::uint16_t port, std::span<std::uint8_t> data, unsigned vcpu) override;
    void pio_out(std::uint16_t port, std::span<const std::uint8_t> data, unsigned vcpu) override;

    // Host input for the guest; never blocks on the guest, never drops bytes.
    void receive(std::span<const std::uint8_t> bytes);
    // Received bytes the guest has not read yet (receiver FIFO and host queue).
    [[nodiscard]] std::size_t input_pending() const;
    [[nodiscard]] std::uint16_t base() const noexcept { return base_; }

    [[nodiscard]] std::string_view section() const override { return section_; }
    void save(StateWriter& out) const override;
    // Also drives the interrupt line to the restored level.
    void restore(StateReader& in) override;

private:
    // Everything save() writes: copyable, so that restore() can build and check a new
    // one before it replaces the old.
    struct Registers {
        std::uint8_t ier = 0;
        std::uint8_t lcr = 0;
        std::uint8_t mcr = 0;
        std::uint8_t scr = 0;
        std::uint8_t dll = 0x0c; // 9600 baud
        std::uint8_t dlm = 0;
        std::uint8_t fcr = 0;          // FIFO enable, DMA mode, RX trigger (the bits kept)
        std::uint8_t msr_delta = 0;    // MSR bits 0-3, cleared by reading MSR
        bool overrun = false;          // LSR.OE, cleared by reading LSR
        bool thr_pending = false;      // a THR empty interrupt not yet acknowledged
        std::deque<std::uint8_t> rx;   // the receiver FIFO
        std::deque<std::uint8_t> host; // host input not yet in the FIFO
    };

    // What one register access left to do once the mutex is dropped.
    struct Effects {
        std::array<std::uint8_t, 4> tx{};
        std::size_t tx_len = 0;
    };

    std::uint8_t read_register(std::size_t offset);
    void write_register(std::size_t offset, std::uint8_t value, Effects& effects);
    void write_mcr(std::uint8_t value);
    void write_fcr(std::uint8_t value);
    void loop_back(std::uint8_t byte);
    void refill();
    [[nodiscard]] std::uint8_t interrupt_id() const;
    [[nodiscard]] std::uint8_t lsr() const;
    [[nodiscard]] std::uint8_t modem_lines() const;
    [[nodiscard]] std::size_t rx_capacity() const;
    [[nodiscard]] bool irq_level() const;
    // Called with lock held; brings the line to irq_level(), dropping lock around
    // IrqLine::set_level. Returns with lock held.
    void drive_irq(std::unique_lock<std::mutex>& lock, bool force = false);
    static Registers parse(StateReader& in);

    const std::uint16_t base_;
    IrqLine& irq_;
    const Output output_;
    const std::string section_;

    mutable std::mutex mutex_;
    Registers r_;
    bool driving_ = false; // a thread is in drive_irq's set_level loop
    bool driven_ = false;  // the level last given to set_level
    bool redrive_ = false; // drive again even if the level is the same (after restore)
};

} // namespace vmfork
