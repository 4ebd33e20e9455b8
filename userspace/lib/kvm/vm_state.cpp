// SPDX-License-Identifier: GPL-2.0
// VmState's binary format (all little-endian, as the host):
//
//   "VMFKSTAT" u32 version u32 vcpu_count u64 mem_size
//   record*    u32 tag u32 length payload[length]
//
// Records come in a fixed order: the VM records (PIC master, PIC slave, IOAPIC, PIT,
// clock), then for each vCPU CPUID .. EVENTS. A fixed-size record must have exactly
// its struct's size; an array record a whole number of entries, within a limit.
#include "vmfork/vm_state.h"

#include "vmfork/kvm.h"

#include <array>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>

namespace vmfork {

std::optional<std::uint64_t> VcpuState::msr(std::uint32_t index) const {
    for (const auto& m : msrs) {
        if (m.index == index) {
            return m.data;
        }
    }
    return std::nullopt;
}

namespace {

constexpr std::array<char, 8> magic = {'V', 'M', 'F', 'K', 'S', 'T', 'A', 'T'};
constexpr std::uint32_t max_record = 1 << 20;
constexpr std::size_t max_cpuid_entries = 1024;
constexpr std::size_t max_msrs = 4096;

enum Tag : std::uint32_t {
    PicMaster = 1,
    PicSlave,
    Ioapic,
    Pit,
    Clock,
    Cpuid = 16,
    MpState,
    Regs,
    Sregs,
    Fpu,
    Xsave,
    Xcrs,
    Debugregs,
    Lapic,
    TscKhz,
    Msrs,
    Events,
    DeviceName = 64,
    DeviceData,
};

constexpr std::size_t max_devices = 64;
constexpr std::size_t max_device_name = 64;

[[noreturn]] void bad(const std::string& why) {
    throw std::invalid_argument("invalid VM state: " + why);
}

class Writer {
public:
    void raw(const void* p, std::size_t n) {
        const auto* b = static_cast<const std::uint8_t*>(p);
        out_.insert(out_.end(), b, b + n);
    }
    template <typename T> void value(const T& v) {
        static_assert(std::is_trivially_copyable_v<T>);
        raw(&v, sizeof(v));
    }
    void record(Tag tag, const void* p, std::size_t n) {
        value(static_cast<std::uint32_t>(tag));
        value(static_cast<std::uint32_t>(n));
        raw(p, n);
    }
    template <typename T> void record(Tag tag, const T& v) { record(tag, &v, sizeof(v)); }
    template <typename T> void array(Tag tag, const std::vector<T>& v) {
        record(tag, v.data(), v.size() * sizeof(T));
    }
    std::vector<std::uint8_t> take() { return std::move(out_); }

private:
    std::vector<std::uint8_t> out_;
};

class Reader {
public:
    explicit Reader(std::span<const std::uint8_t> in) : in_(in) {}

    std::span<const std::uint8_t> take(std::size_t n, const char* what) {
        if (n > in_.size() - pos_) {
            bad(std::string("truncated in ") + what);
        }
        auto s = in_.subspan(pos_, n);
        pos_ += n;
        return s;
    }
    template <typename T> T value(const char* what) {
        T v;
        std::memcpy(&v, take(sizeof(T), what).data(), sizeof(T));
        return v;
    }
    std::span<const std::uint8_t> record(Tag tag, const char* what) {
        const auto t = value<std::uint32_t>(what);
        const auto len = value<std::uint32_t>(what);
        if (t != tag) {
            bad(std::string("expected the ") + what + " record (tag " + std::to_string(tag) +
                "), found tag " + std::to_string(t));
        }
        if (len > max_record) {
            bad(std::string(what) + " record of " + std::to_string(len) + " bytes is too large");
        }
        return take(len, what);
    }
    template <typename T> void fixed(Tag tag, T& out, const char* what) {
        const auto payload = record(tag, what);
        if (payload.size() != sizeof(T)) {
            bad(std::string(what) + " record has " + std::to_string(payload.size()) +
                " bytes, expected " + std::to_string(sizeof(T)));
        }
        std::memcpy(&out, payload.data(), sizeof(T));
    }
    template <typename T>
    void array(Tag tag, std::vector<T>& out, std::size_t max, const char* what) {
        const auto payload = record(tag, what);
        if (payload.size() % sizeof(T) != 0 || payload.size() / sizeof(T) > max) {
            bad(std::string(what) + " record has a bad length " + std::to_string(payload.size()));
        }
        out.resize(payload.size() / sizeof(T));
        if (!out.empty()) {
            std::memcpy(out.data(), payload.data(), payload.size());
        }
    }
    [[nodiscard]] bool done() const noexcept { return pos_ == in_.size(); }

private:
    std::span<const std::uint8_t> in_;
    std::size_t pos_ = 0;
};

void check_irqchip(const kvm_irqchip& chip, std::uint32_t id, const char* what) {
    if (chip.chip_id != id) {
        bad(std::string(what) + " record has chip id " + std::to_string(chip.chip_id));
    }
}

} // namespace

std::vector<std::uint8_t> VmState::serialize() const {
    Writer w;
    w.raw(magic.data(), magic.size());
    w.value(format_version);
    w.value(static_cast<std::uint32_t>(vcpus.size()));
    w.value(mem_size);
    w.record(PicMaster, pic_master);
    w.record(PicSlave, pic_slave);
    w.record(Ioapic, ioapic);
    w.record(Pit, pit);
    w.record(Clock, clock);
    for (const VcpuState& v : vcpus) {
        w.array(Cpuid, v.cpuid);
        w.record(MpState, v.mp_state);
        w.record(Regs, v.regs);
        w.record(Sregs, v.sregs);
        w.record(Fpu, v.fpu);
        w.array(Xsave, v.xsave);
        if (v.has_xcrs) {
            w.record(Xcrs, v.xcrs);
        } else {
            w.record(Xcrs, nullptr, 0);
        }
        w.record(Debugregs, v.debugregs);
        w.record(Lapic, v.lapic);
        w.record(TscKhz, v.tsc_khz);
        w.array(Msrs, v.msrs);
        w.record(Events, v.events);
    }
    w.value(static_cast<std::uint32_t>(devices.size()));
    for (const DeviceSection& d : devices) {
        w.record(DeviceName, d.name.data(), d.name.size());
        w.array(DeviceData, d.data);
    }
    return w.take();
}

VmState VmState::parse(std::span<const std::uint8_t> data) {
    if (data.size() > max_serialized_size) {
        bad(std::to_string(data.size()) + " bytes is more than any valid state");
    }
    Reader r(data);
    if (std::memcmp(r.take(magic.size(), "header").data(), magic.data(), magic.size()) != 0) {
        bad("not a vmfork VM state (bad magic)");
    }
    const auto version = r.value<std::uint32_t>("header");
    if (version != format_version) {
        bad("format version " + std::to_string(version) + ", this build reads " +
            std::to_string(format_version));
    }
    const auto nvcpus = r.value<std::uint32_t>("header");
    if (nvcpus == 0 || nvcpus > max_vcpus) {
        bad(std::to_string(nvcpus) + " vCPUs (1.." + std::to_string(max_vcpus) + ")");
    }
    VmState s;
    s.mem_size = r.value<std::uint64_t>("header");
    r.fixed(PicMaster, s.pic_master, "PIC master");
    check_irqchip(s.pic_master, KVM_IRQCHIP_PIC_MASTER, "PIC master");
    r.fixed(PicSlave, s.pic_slave, "PIC slave");
    check_irqchip(s.pic_slave, KVM_IRQCHIP_PIC_SLAVE, "PIC slave");
    r.fixed(Ioapic, s.ioapic, "IOAPIC");
    check_irqchip(s.ioapic, KVM_IRQCHIP_IOAPIC, "IOAPIC");
    r.fixed(Pit, s.pit, "PIT");
    r.fixed(Clock, s.clock, "clock");
    s.vcpus.resize(nvcpus);
    for (VcpuState& v : s.vcpus) {
        r.array(Cpuid, v.cpuid, max_cpuid_entries, "CPUID");
        r.fixed(MpState, v.mp_state, "mp_state");
        r.fixed(Regs, v.regs, "regs");
        r.fixed(Sregs, v.sregs, "sregs");
        r.fixed(Fpu, v.fpu, "fpu");
        r.array(Xsave, v.xsave, max_record, "xsave");
        if (!v.xsave.empty() && v.xsave.size() < kvm_c_abi::xsave_size) {
            bad("xsave record shorter than struct kvm_xsave");
        }
        const auto xcrs = r.record(Xcrs, "xcrs");
        if (!xcrs.empty()) {
            if (xcrs.size() != sizeof(kvm_xcrs)) {
                bad("xcrs record has a bad length " + std::to_string(xcrs.size()));
            }
            std::memcpy(&v.xcrs, xcrs.data(), sizeof(kvm_xcrs));
            if (v.xcrs.nr_xcrs > KVM_MAX_XCRS) {
                bad("xcrs record with " + std::to_string(v.xcrs.nr_xcrs) + " registers");
            }
            v.has_xcrs = true;
        }
        r.fixed(Debugregs, v.debugregs, "debugregs");
        r.fixed(Lapic, v.lapic, "LAPIC");
        r.fixed(TscKhz, v.tsc_khz, "TSC kHz");
        r.array(Msrs, v.msrs, max_msrs, "MSRs");
        r.fixed(Events, v.events, "vcpu events");
    }
    const auto ndevices = r.value<std::uint32_t>("device count");
    if (ndevices > max_devices) {
        bad(std::to_string(ndevices) + " device sections (at most " + std::to_string(max_devices) +
            ")");
    }
    s.devices.resize(ndevices);
    for (DeviceSection& d : s.devices) {
        const auto name = r.record(DeviceName, "device name");
        if (name.empty() || name.size() > max_device_name) {
            bad("a device name of " + std::to_string(name.size()) + " bytes");
        }
        d.name.assign(name.begin(), name.end());
        r.array(DeviceData, d.data, max_record, "device state");
    }
    if (!r.done()) {
        bad("trailing bytes after the last record");
    }
    return s;
}

} // namespace vmfork
