// SPDX-License-Identifier: GPL-2.0
// VmState's binary format: round trip, and every kind of bad input is an error.
#include "vmfork/vm_state.h"

#include "vmfork/kvm.h"
#include <cstring>
#include <gtest/gtest.h>
#include <random>
#include <stdexcept>

#include "vmfork/kvm.h"

namespace vmfork {
namespace {

VmState sample(unsigned nvcpus = 2) {
    VmState s;
    s.mem_size = 32 << 20;
    s.pic_master.chip_id = KVM_IRQCHIP_PIC_MASTER;
    s.pic_master.chip.pic.irq_base = 0x20;
    s.pic_slave.chip_id = KVM_IRQCHIP_PIC_SLAVE;
    s.pic_slave.chip.pic.irq_base = 0x28;
    s.ioapic.chip_id = KVM_IRQCHIP_IOAPIC;
    s.ioapic.chip.ioapic.base_address = 0xfec00000;
    s.pit.channels[0].count = 0x1234;
    s.clock.clock = 123456789;
    for (unsigned i = 0; i < nvcpus; ++i) {
        VcpuState v;
        kvm_cpuid_entry2 e{};
        e.function = 1;
        e.ebx = i << 24;
        v.cpuid = {e, e};
        v.mp_state.mp_state = KVM_MP_STATE_RUNNABLE;
        v.regs.rip = 0x100000 + i;
        v.regs.rsp = 0x14000;
        v.sregs.cr0 = 0x80050033;
        v.sregs.efer = 0x500;
        v.fpu.fcw = 0x37f;
        v.xsave.assign(kvm_c_abi::xsave_size, static_cast<std::uint8_t>(i + 7));
        v.has_xcrs = i % 2 == 0;
        if (v.has_xcrs) {
            v.xcrs.nr_xcrs = 1;
            v.xcrs.xcrs[0].value = 3;
        }
        v.debugregs.db[0] = 0x1000 + i;
        v.lapic.regs[0x20] = static_cast<char>(i);
        v.tsc_khz = 2000000;
        v.msrs = {{0x10, 0, 99}, {0xc0000082, 0, 0xffffffff81000000ULL}};
        v.events.exception.nr = 14;
        s.vcpus.push_back(v);
    }
    return s;
}

TEST(VmState, RoundTripKeepsEveryField) {
    const VmState s = sample();
    const auto bytes = s.serialize();
    const VmState t = VmState::parse(bytes);
    EXPECT_EQ(t.mem_size, s.mem_size);
    EXPECT_EQ(0, std::memcmp(&t.pic_master, &s.pic_master, sizeof(kvm_irqchip)));
    EXPECT_EQ(0, std::memcmp(&t.pic_slave, &s.pic_slave, sizeof(kvm_irqchip)));
    EXPECT_EQ(0, std::memcmp(&t.ioapic, &s.ioapic, sizeof(kvm_irqchip)));
    EXPECT_EQ(0, std::memcmp(&t.pit, &s.pit, sizeof(kvm_pit_state2)));
    EXPECT_EQ(t.clock.clock, s.clock.clock);
    ASSERT_EQ(t.vcpus.size(), s.vcpus.size());
    for (std::size_t i = 0; i < s.vcpus.size(); ++i) {
        const VcpuState& a = s.vcpus[i];
        const VcpuState& b = t.vcpus[i];
        ASSERT_EQ(a.cpuid.size(), b.cpuid.size());
        EXPECT_EQ(0, std::memcmp(a.cpuid.data(), b.cpuid.data(),
                                 a.cpuid.size() * sizeof(kvm_cpuid_entry2)));
        EXPECT_EQ(a.mp_state.mp_state, b.mp_state.mp_state);
        EXPECT_EQ(0, std::memcmp(&a.regs, &b.regs, sizeof(kvm_regs)));
        EXPECT_EQ(0, std::memcmp(&a.sregs, &b.sregs, sizeof(kvm_sregs)));
        EXPECT_EQ(0, std::memcmp(&a.fpu, &b.fpu, sizeof(kvm_fpu)));
        EXPECT_EQ(a.xsave, b.xsave);
        EXPECT_EQ(a.has_xcrs, b.has_xcrs);
        EXPECT_EQ(0, std::memcmp(&a.xcrs, &b.xcrs, sizeof(kvm_xcrs)));
        EXPECT_EQ(0, std::memcmp(&a.debugregs, &b.debugregs, sizeof(kvm_debugregs)));
        EXPECT_EQ(0, std::memcmp(&a.lapic, &b.lapic, sizeof(kvm_lapic_state)));
        EXPECT_EQ(a.tsc_khz, b.tsc_khz);
        ASSERT_EQ(a.msrs.size(), b.msrs.size());
        for (std::size_t j = 0; j < a.msrs.size(); ++j) {
            EXPECT_EQ(a.msrs[j].index, b.msrs[j].index);
            EXPECT_EQ(a.msrs[j].data, b.msrs[j].data);
        }
        EXPECT_EQ(0, std::memcmp(&a.events, &b.events, sizeof(kvm_vcpu_events)));
    }
    EXPECT_EQ(t.serialize(), bytes) << "serialize(parse(x)) must be x";
}

TEST(VmState, EveryTruncationIsAnError) {
    const auto bytes = sample().serialize();
    for (std::size_t n = 0; n < bytes.size(); ++n) {
        EXPECT_THROW((void)VmState::parse(std::span(bytes.data(), n)), std::invalid_argument)
            << "a state cut to " << n << " of " << bytes.size() << " bytes must be rejected";
    }
}

TEST(VmState, TrailingBytesAreAnError) {
    auto bytes = sample().serialize();
    bytes.push_back(0);
    EXPECT_THROW((void)VmState::parse(bytes), std::invalid_argument);
}

TEST(VmState, BadMagicAndVersionAreErrors) {
    auto bytes = sample().serialize();
    bytes[0] = 'X';
    EXPECT_THROW((void)VmState::parse(bytes), std::invalid_argument);
    bytes = sample().serialize();
    bytes[8] = 1; // version 1: before device sections
    try {
        (void)VmState::parse(bytes);
        FAIL() << "version 1 must be rejected";
    } catch (const std::invalid_argument& e) {
        EXPECT_NE(std::string(e.what()).find("version"), std::string::npos) << e.what();
    }
}

TEST(VmState, DeviceSectionsRoundTrip) {
    VmState s = sample();
    s.devices = {{"uart0", {1, 2, 3}}, {"i8042", {}}, {"acpi-pm", {0}}};
    const auto bytes = s.serialize();
    const VmState back = VmState::parse(bytes);
    EXPECT_EQ(s.devices, back.devices);
    EXPECT_EQ(bytes, back.serialize());
}

TEST(VmState, BadDeviceSectionsAreErrors) {
    VmState s = sample();
    s.devices = {{"", {1}}};
    EXPECT_THROW((void)VmState::parse(s.serialize()), std::invalid_argument) << "empty name";
    s.devices = {{std::string(65, 'x'), {1}}};
    EXPECT_THROW((void)VmState::parse(s.serialize()), std::invalid_argument) << "long name";
    s.devices = {{"uart0", {1, 2, 3}}};
    auto bytes = s.serialize();
    bytes.resize(bytes.size() - 2);
    EXPECT_THROW((void)VmState::parse(bytes), std::invalid_argument) << "truncated section";
}

TEST(VmState, VcpuCountOutOfRangeIsAnError) {
    for (std::uint32_t n : {0U, VmState::max_vcpus + 1, 0xffffffffU}) {
        auto bytes = sample().serialize();
        std::memcpy(&bytes[12], &n, sizeof(n));
        EXPECT_THROW((void)VmState::parse(bytes), std::invalid_argument) << n << " vCPUs";
    }
}

TEST(VmState, OversizedRecordLengthIsAnError) {
    auto bytes = sample().serialize();
    // The first record (PIC master) starts at 24: tag, then length.
    const std::uint32_t huge = 0xfffffff0U;
    std::memcpy(&bytes[28], &huge, sizeof(huge));
    EXPECT_THROW((void)VmState::parse(bytes), std::invalid_argument);
    const std::uint32_t off_by_one = sizeof(kvm_irqchip) + 1;
    std::memcpy(&bytes[28], &off_by_one, sizeof(off_by_one));
    EXPECT_THROW((void)VmState::parse(bytes), std::invalid_argument);
}

TEST(VmState, WrongTagIsAnError) {
    auto bytes = sample().serialize();
    const std::uint32_t tag = 99;
    std::memcpy(&bytes[24], &tag, sizeof(tag));
    EXPECT_THROW((void)VmState::parse(bytes), std::invalid_argument);
}

TEST(VmState, WrongIrqchipIdIsAnError) {
    VmState s = sample();
    s.pic_slave.chip_id = KVM_IRQCHIP_IOAPIC;
    EXPECT_THROW((void)VmState::parse(s.serialize()), std::invalid_argument);
}

TEST(VmState, TooManyXcrsIsAnError) {
    VmState s = sample(1);
    s.vcpus[0].has_xcrs = true;
    s.vcpus[0].xcrs.nr_xcrs = KVM_MAX_XCRS + 1;
    EXPECT_THROW((void)VmState::parse(s.serialize()), std::invalid_argument);
}

TEST(VmState, GarbageNeverCrashes) {
    std::mt19937_64 rng(42);
    const auto good = sample().serialize();
    for (int i = 0; i < 2000; ++i) {
        // Random bytes, and the good state with a few random bytes flipped.
        std::vector<std::uint8_t> bytes;
        if (i % 2 == 0) {
            bytes.resize(rng() % 4096);
            for (auto& b : bytes) {
                b = static_cast<std::uint8_t>(rng());
            }
        } else {
            bytes = good;
            for (int j = 0; j < 4; ++j) {
                bytes[rng() % bytes.size()] ^= static_cast<std::uint8_t>(1U << (rng() % 8));
            }
        }
        try {
            const VmState s = VmState::parse(bytes);
            EXPECT_EQ(s.serialize().size(), bytes.size()) << "a parsed state must re-serialize";
        } catch (const std::invalid_argument&) {
            // expected for most inputs
        }
    }
}

TEST(VmState, HugeInputIsRejectedUpFront) {
    std::vector<std::uint8_t> bytes(VmState::max_serialized_size + 1);
    EXPECT_THROW((void)VmState::parse(bytes), std::invalid_argument);
}

} // namespace
} // namespace vmfork
