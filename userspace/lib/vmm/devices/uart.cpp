// SPDX-License-Identifier: GPL-2.0
#include "vmfork/vmm/devices/uart.h"

#include <limits>
#include <stdexcept>
#include <utility>
#include <vector>

namespace vmfork {
namespace {

// Register offsets (DLL/DLM replace RBR/THR and IER while LCR.DLAB is set).
constexpr std::size_t reg_data = 0; // RBR (in), THR (out), DLL
constexpr std::size_t reg_ier = 1;  // DLM
constexpr std::size_t reg_iir = 2;  // IIR (in), FCR (out)
constexpr std::size_t reg_lcr = 3;
constexpr std::size_t reg_mcr = 4;
constexpr std::size_t reg_lsr = 5;
constexpr std::size_t reg_msr = 6;
constexpr std::size_t reg_scr = 7;

constexpr std::uint8_t ier_rx = 0x01;  // ERBFI: received data available
constexpr std::uint8_t ier_thr = 0x02; // ETBEI: THR empty
constexpr std::uint8_t ier_ls = 0x04;  // ELSI: receiver line status
constexpr std::uint8_t ier_ms = 0x08;  // EDSSI: modem status
constexpr std::uint8_t ier_mask = 0x0f;

constexpr std::uint8_t iir_none = 0x01;
constexpr std::uint8_t iir_ms = 0x00;
constexpr std::uint8_t iir_thr = 0x02;
constexpr std::uint8_t iir_rx = 0x04;
constexpr std::uint8_t iir_ls = 0x06;
constexpr std::uint8_t iir_fifo = 0xc0; // FIFOs enabled (a 16550A's working FIFO)

constexpr std::uint8_t fcr_enable = 0x01;
constexpr std::uint8_t fcr_clear_rx = 0x02;
constexpr std::uint8_t fcr_kept = 0xc9; // enable, DMA mode, RX trigger level

constexpr std::uint8_t lcr_dlab = 0x80;

constexpr std::uint8_t mcr_dtr = 0x01;
constexpr std::uint8_t mcr_rts = 0x02;
constexpr std::uint8_t mcr_out1 = 0x04;
constexpr std::uint8_t mcr_out2 = 0x08;
constexpr std::uint8_t mcr_loop = 0x10;
constexpr std::uint8_t mcr_mask = 0x1f;

constexpr std::uint8_t lsr_dr = 0x01;
constexpr std::uint8_t lsr_oe = 0x02;
constexpr std::uint8_t lsr_thre = 0x20;
constexpr std::uint8_t lsr_temt = 0x40;

constexpr std::uint8_t msr_dcts = 0x01;
constexpr std::uint8_t msr_ddsr = 0x02;
constexpr std::uint8_t msr_teri = 0x04;
constexpr std::uint8_t msr_ddcd = 0x08;
constexpr std::uint8_t msr_cts = 0x10;
constexpr std::uint8_t msr_dsr = 0x20;
constexpr std::uint8_t msr_ri = 0x40;
constexpr std::uint8_t msr_dcd = 0x80;
constexpr std::uint8_t msr_delta_mask = 0x0f;

// Outside loopback the other end is a connected, ready modem: carrier, DSR, CTS.
constexpr std::uint8_t msr_connected = msr_dcd | msr_dsr | msr_cts;

constexpr std::uint8_t state_version = 1;

std::string hex(std::uint8_t v) {
    static constexpr std::string_view digits = "0123456789abcdef";
    return std::string("0x") + digits[v >> 4] + digits[v & 0xf];
}

} // namespace

Uart16550::Uart16550(std::uint16_t base, IrqLine& irq, Output output, std::string section)
    : base_(base), irq_(irq), output_(std::move(output)), section_(std::move(section)) {}

void Uart16550::pio_in(std::uint16_t port, std::span<std::uint8_t> data, unsigned /*vcpu*/) {
    std::unique_lock lock(mutex_);
    // A wider access is a run of byte accesses to consecutive ports, as on ISA.
    for (std::size_t i = 0; i < data.size(); ++i) {
        const std::size_t offset = std::size_t{port} - base_ + i;
        data[i] = offset < len ? read_register(offset) : 0xff;
    }
    drive_irq(lock);
}

void Uart16550::pio_out(std::uint16_t port, std::span<const std::uint8_t> data, unsigned /*vcpu*/) {
    Effects effects;
    {
        std::unique_lock lock(mutex_);
        for (std::size_t i = 0; i < data.size(); ++i) {
            const std::size_t offset = std::size_t{port} - base_ + i;
            if (offset < len) {
                write_register(offset, data[i], effects);
            }
        }
        drive_irq(lock);
    }
    if (effects.tx_len > 0 && output_) {
        output_(std::span<const std::uint8_t>(effects.tx.data(), effects.tx_len));
    }
}

void Uart16550::receive(std::span<const std::uint8_t> bytes) {
    if (bytes.empty()) {
        return;
    }
    std::unique_lock lock(mutex_);
    r_.host.insert(r_.host.end(), bytes.begin(), bytes.end());
    refill();
    drive_irq(lock);
}

std::size_t Uart16550::input_pending() const {
    const std::scoped_lock lock(mutex_);
    return r_.rx.size() + r_.host.size();
}

std::uint8_t Uart16550::read_register(std::size_t offset) {
    const bool dlab = (r_.lcr & lcr_dlab) != 0;
    switch (offset) {
    case reg_data: {
        if (dlab) {
            return r_.dll;
        }
        if (r_.rx.empty()) {
            return 0;
        }
        const std::uint8_t byte = r_.rx.front();
        r_.rx.pop_front();
        refill();
        return byte;
    }
    case reg_ier:
        return dlab ? r_.dlm : r_.ier;
    case reg_iir: {
        const std::uint8_t id = interrupt_id();
        // Reading IIR acknowledges a THR empty interrupt, but only when it reports it.
        if (id == iir_thr) {
            r_.thr_pending = false;
        }
        return static_cast<std::uint8_t>(id | ((r_.fcr & fcr_enable) != 0 ? iir_fifo : 0));
    }
    case reg_lcr:
        return r_.lcr;
    case reg_mcr:
        return r_.mcr;
    case reg_lsr: {
        const std::uint8_t v = lsr();
        r_.overrun = false;
        return v;
    }
    case reg_msr: {
        const auto v = static_cast<std::uint8_t>(modem_lines() | r_.msr_delta);
        r_.msr_delta = 0;
        return v;
    }
    case reg_scr:
        return r_.scr;
    default:
        return 0xff;
    }
}

void Uart16550::write_register(std::size_t offset, std::uint8_t value, Effects& effects) {
    const bool dlab = (r_.lcr & lcr_dlab) != 0;
    switch (offset) {
    case reg_data:
        if (dlab) {
            r_.dll = value;
            break;
        }
        if ((r_.mcr & mcr_loop) != 0) {
            loop_back(value);
        } else if (effects.tx_len < effects.tx.size()) {
            effects.tx[effects.tx_len++] = value;
        }
        // Writing THR acknowledges its interrupt; the byte leaves at once, so THR is
        // empty again and the interrupt is pending again.
        r_.thr_pending = (r_.ier & ier_thr) != 0;
        break;
    case reg_ier: {
        if (dlab) {
            r_.dlm = value;
            break;
        }
        const auto ier = static_cast<std::uint8_t>(value & ier_mask);
        // Enabling ETBEI while THR is empty (it always is) makes the interrupt pending,
        // even if it was acknowledged before: Linux's THRE test toggles IER to see it.
        if (((r_.ier ^ ier) & ier_thr) != 0) {
            r_.thr_pending = (ier & ier_thr) != 0;
        }
        r_.ier = ier;
        break;
    }
    case reg_iir:
        write_fcr(value);
        break;
    case reg_lcr:
        r_.lcr = value;
        break;
    case reg_mcr:
        write_mcr(static_cast<std::uint8_t>(value & mcr_mask));
        break;
    case reg_scr:
        r_.scr = value;
        break;
    default: // LSR and MSR: read-only (factory test writes are ignored)
        break;
    }
}

void Uart16550::write_mcr(std::uint8_t value) {
    const std::uint8_t before = modem_lines();
    const bool was_loop = (r_.mcr & mcr_loop) != 0;
    r_.mcr = value;
    const std::uint8_t after = modem_lines();
    const auto changed = static_cast<std::uint8_t>(before ^ after);
    if ((changed & msr_cts) != 0) {
        r_.msr_delta |= msr_dcts;
    }
    if ((changed & msr_dsr) != 0) {
        r_.msr_delta |= msr_ddsr;
    }
    if ((changed & msr_dcd) != 0) {
        r_.msr_delta |= msr_ddcd;
    }
    if ((before & msr_ri) != 0 && (after & msr_ri) == 0) {
        r_.msr_delta |= msr_teri;
    }
    if (was_loop && (value & mcr_loop) == 0) {
        refill(); // host input waited while the receiver listened to the transmitter
    }
}

void Uart16550::write_fcr(std::uint8_t value) {
    // Turning the FIFOs on or off clears them, as does the clear bit.
    if (((value ^ r_.fcr) & fcr_enable) != 0 || (value & fcr_clear_rx) != 0) {
        r_.rx.clear();
        r_.overrun = false;
    }
    // Transmission is immediate: there is never anything to clear in the TX FIFO.
    r_.fcr = (value & fcr_enable) != 0 ? static_cast<std::uint8_t>(value & fcr_kept) : 0;
    refill();
}

void Uart16550::loop_back(std::uint8_t byte) {
    if (r_.rx.size() < rx_capacity()) {
        r_.rx.push_back(byte);
    } else {
        r_.overrun = true; // the guest sent more than it read: the byte is lost
    }
}

void Uart16550::refill() {
    if ((r_.mcr & mcr_loop) != 0) {
        return;
    }
    const std::size_t capacity = rx_capacity();
    while (r_.rx.size() < capacity && !r_.host.empty()) {
        r_.rx.push_back(r_.host.front());
        r_.host.pop_front();
    }
}

std::uint8_t Uart16550::interrupt_id() const {
    if ((r_.ier & ier_ls) != 0 && r_.overrun) {
        return iir_ls;
    }
    if ((r_.ier & ier_rx) != 0 && !r_.rx.empty()) {
        return iir_rx;
    }
    if ((r_.ier & ier_thr) != 0 && r_.thr_pending) {
        return iir_thr;
    }
    if ((r_.ier & ier_ms) != 0 && r_.msr_delta != 0) {
        return iir_ms;
    }
    return iir_none;
}

std::uint8_t Uart16550::lsr() const {
    std::uint8_t v = lsr_thre | lsr_temt;
    if (!r_.rx.empty()) {
        v |= lsr_dr;
    }
    if (r_.overrun) {
        v |= lsr_oe;
    }
    return v;
}

std::uint8_t Uart16550::modem_lines() const {
    if ((r_.mcr & mcr_loop) == 0) {
        return msr_connected;
    }
    // Loopback: the modem control outputs feed the modem status inputs.
    std::uint8_t v = 0;
    if ((r_.mcr & mcr_rts) != 0) {
        v |= msr_cts;
    }
    if ((r_.mcr & mcr_dtr) != 0) {
        v |= msr_dsr;
    }
    if ((r_.mcr & mcr_out1) != 0) {
        v |= msr_ri;
    }
    if ((r_.mcr & mcr_out2) != 0) {
        v |= msr_dcd;
    }
    return v;
}

std::size_t Uart16550::rx_capacity() const {
    return (r_.fcr & fcr_enable) != 0 ? fifo_size : 1;
}

bool Uart16550::irq_level() const {
    return interrupt_id() != iir_none && (r_.mcr & mcr_out2) != 0;
}

void Uart16550::drive_irq(std::unique_lock<std::mutex>& lock, bool force) {
    redrive_ = redrive_ || force;
    if (driving_) {
        return; // the driving thread sees this state when it retakes the lock
    }
    driving_ = true;
    try {
        while (redrive_ || driven_ != irq_level()) {
            const bool level = irq_level();
            redrive_ = false;
            lock.unlock();
            irq_.set_level(level);
            lock.lock();
            driven_ = level;
        }
    } catch (...) {
        if (!lock.owns_lock()) {
            lock.lock();
        }
        driving_ = false;
        throw;
    }
    driving_ = false;
}

void Uart16550::save(StateWriter& out) const {
    const std::scoped_lock lock(mutex_);
    if (r_.host.size() > std::numeric_limits<std::uint32_t>::max()) {
        throw std::length_error(section_ + ": " + std::to_string(r_.host.size()) +
                                " bytes of host input waiting, too many to save");
    }
    out.u8(state_version);
    out.u8(r_.ier);
    out.u8(r_.lcr);
    out.u8(r_.mcr);
    out.u8(r_.scr);
    out.u8(r_.dll);
    out.u8(r_.dlm);
    out.u8(r_.fcr);
    out.u8(r_.msr_delta);
    out.boolean(r_.overrun);
    out.boolean(r_.thr_pending);
    const std::vector<std::uint8_t> rx(r_.rx.begin(), r_.rx.end());
    out.bytes(rx);
    const std::vector<std::uint8_t> host(r_.host.begin(), r_.host.end());
    out.bytes(host);
}

Uart16550::Registers Uart16550::parse(StateReader& in) {
    Registers r;
    const std::uint8_t version = in.u8();
    if (version != state_version) {
        in.fail("unknown state version " + std::to_string(version));
    }
    r.ier = in.u8();
    r.lcr = in.u8();
    r.mcr = in.u8();
    r.scr = in.u8();
    r.dll = in.u8();
    r.dlm = in.u8();
    r.fcr = in.u8();
    r.msr_delta = in.u8();
    r.overrun = in.boolean();
    r.thr_pending = in.boolean();
    const std::vector<std::uint8_t> rx = in.bytes(fifo_size);
    const std::vector<std::uint8_t> host = in.bytes(std::numeric_limits<std::uint32_t>::max());
    in.finish();

    if ((r.ier & ~ier_mask) != 0) {
        in.fail("IER " + hex(r.ier) + " has reserved bits set");
    }
    if ((r.mcr & ~mcr_mask) != 0) {
        in.fail("MCR " + hex(r.mcr) + " has reserved bits set");
    }
    if ((r.fcr & ~fcr_kept) != 0 || (r.fcr != 0 && (r.fcr & fcr_enable) == 0)) {
        in.fail("FCR " + hex(r.fcr) + " is not a kept FIFO setting");
    }
    if ((r.msr_delta & ~msr_delta_mask) != 0) {
        in.fail("MSR deltas " + hex(r.msr_delta) + " has status bits set");
    }
    if (r.thr_pending && (r.ier & ier_thr) == 0) {
        in.fail("a THR empty interrupt pending with ETBEI clear");
    }
    const std::size_t capacity = (r.fcr & fcr_enable) != 0 ? fifo_size : 1;
    if (rx.size() > capacity) {
        in.fail(std::to_string(rx.size()) + " bytes in a receiver of " + std::to_string(capacity));
    }
    if (!host.empty() && (r.mcr & mcr_loop) == 0 && rx.size() < capacity) {
        in.fail("host input waiting while the receiver has room");
    }
    r.rx.assign(rx.begin(), rx.end());
    r.host.assign(host.begin(), host.end());
    return r;
}

void Uart16550::restore(StateReader& in) {
    Registers r = parse(in);
    std::unique_lock lock(mutex_);
    r_ = std::move(r);
    // The line outside may be anywhere (a new irqchip, another process): drive it even
    // if the level did not change here.
    drive_irq(lock, true);
}

} // namespace vmfork
