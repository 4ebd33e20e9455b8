// SPDX-License-Identifier: GPL-2.0
// The virtio-mmio transport as Linux's virtio_mmio driver uses it (virtio 1.1, 4.2.2):
// identification, feature negotiation, queue setup, DRIVER_OK, interrupts, reset, and
// the saved state (what a clone restores), on a fake device.
#include <gtest/gtest.h>

#include <array>
#include <cstring>
#include <stdexcept>

#include "fake_irq_line.h"
#include "virtio_registers.h"
#include "vmfork/vmm/devices/virtio_mmio.h"

namespace vmfork {
namespace {

class FakeVirtio final : public VirtioMmio {
public:
    explicit FakeVirtio(IrqLine& irq) : VirtioMmio(irq, "fake-virtio") {}

    std::vector<VirtQueueConfig> activated;
    std::uint64_t activated_features = 0;
    std::vector<VirtQueueConfig> restored_queues;
    std::vector<unsigned> notified;
    unsigned resets = 0;
    bool fail_activation = false;
    std::uint32_t device_word = 0; // device state beyond the transport's

protected:
    [[nodiscard]] std::uint32_t device_id() const override { return 42; }
    [[nodiscard]] std::uint64_t device_features() const override { return feature_version_1 | 0x5; }
    [[nodiscard]] unsigned queue_count() const override { return 2; }
    [[nodiscard]] std::uint16_t queue_max() const override { return 64; }
    void read_config(std::uint64_t offset, std::span<std::uint8_t> data) const override {
        for (std::size_t i = 0; i < data.size(); ++i) {
            data[i] = static_cast<std::uint8_t>(0xa0 + offset + i);
        }
    }
    void activate(std::uint64_t features, const std::vector<VirtQueueConfig>& queues) override {
        if (fail_activation) {
            throw std::runtime_error("no backend");
        }
        activated_features = features;
        activated = queues;
    }
    void notify(unsigned queue) override { notified.push_back(queue); }
    void reset_device() override { ++resets; }
    void save_device(StateWriter& out) const override { out.u32(device_word); }
    void restore_device(StateReader& in) override { device_word = in.u32(); }
    void restored(std::uint64_t /*features*/, const std::vector<VirtQueueConfig>& queues) override {
        restored_queues = queues;
    }
};

class VirtioMmioTest : public ::testing::Test {
protected:
    std::uint32_t rd(std::uint64_t off) { return regs.rd(off); }
    void wr(std::uint64_t off, std::uint32_t v) { regs.wr(off, v); }
    // What Linux's driver does up to DRIVER_OK, with queue q at 0x1000 * (q + 1).
    void handshake(std::uint64_t features) {
        regs.negotiate(features);
        for (std::uint32_t q = 0; q < 2; ++q) {
            wr(0x030, q);
            wr(0x038, 16);
            wr(0x080, 0x1000 * (q + 1));
            wr(0x090, 0x1000 * (q + 1) + 0x100);
            wr(0x0a0, 0x1000 * (q + 1) + 0x200);
            wr(0x044, 1);
        }
        wr(0x070, 15); // DRIVER_OK
    }

    testing::FakeIrqLine irq;
    FakeVirtio dev{irq};
    testing::VirtioRegisters regs{dev};
};

TEST_F(VirtioMmioTest, IdentifiesItselfAsAVersion2Device) {
    EXPECT_EQ(rd(0x000), 0x74726976U);
    EXPECT_EQ(rd(0x004), 2U);
    EXPECT_EQ(rd(0x008), 42U);
    EXPECT_EQ(rd(0x00c), VirtioMmio::vendor);
    wr(0x014, 0);
    EXPECT_EQ(rd(0x010), 0x5U);
    wr(0x014, 1);
    EXPECT_EQ(rd(0x010), 1U); // VIRTIO_F_VERSION_1 is bit 32
    wr(0x014, 2);
    EXPECT_EQ(rd(0x010), 0U);
    // Config space: any width, from 0x100.
    std::array<std::uint8_t, 2> b{};
    dev.mmio_read(0x102, b, 0);
    EXPECT_EQ(b[0], 0xa2);
    EXPECT_EQ(b[1], 0xa3);
}

TEST_F(VirtioMmioTest, DriverOkActivatesWithTheNegotiatedFeaturesAndQueues) {
    handshake(VirtioMmio::feature_version_1 | 0x1 | 0x100); // 0x100 is not offered
    ASSERT_TRUE(dev.driver_ok());
    EXPECT_EQ(dev.activated_features, VirtioMmio::feature_version_1 | 0x1);
    ASSERT_EQ(dev.activated.size(), 2U);
    EXPECT_EQ(dev.activated[1].num, 16);
    EXPECT_TRUE(dev.activated[1].ready);
    EXPECT_EQ(dev.activated[1].desc, 0x2000U);
    EXPECT_EQ(dev.activated[1].driver, 0x2100U);
    EXPECT_EQ(dev.activated[1].device, 0x2200U);
    // A live queue cannot be changed; notifies reach the device.
    wr(0x030, 1);
    wr(0x038, 32);
    wr(0x080, 0x9000);
    wr(0x050, 1);
    wr(0x050, 7); // no such queue: ignored
    EXPECT_EQ(dev.notified, std::vector<unsigned>{1});
    EXPECT_EQ(rd(0x044), 1U);
}

TEST_F(VirtioMmioTest, BadQueueSizesAndOddAccessesAreIgnored) {
    wr(0x030, 0);
    EXPECT_EQ(rd(0x034), 64U);
    wr(0x038, 24);  // not a power of 2
    wr(0x038, 128); // above the maximum
    wr(0x030, 5);
    EXPECT_EQ(rd(0x034), 0U); // no queue 5
    std::array<std::uint8_t, 2> half{0xff, 0xff};
    dev.mmio_write(0x070, half, 0); // registers take 32-bit accesses only
    EXPECT_EQ(rd(0x070), 0U);
    dev.mmio_read(0x000, half, 0);
    EXPECT_EQ(half[0], 0);
    handshake(VirtioMmio::feature_version_1);
    ASSERT_TRUE(dev.driver_ok());
    EXPECT_EQ(dev.activated[0].num, 16); // the handshake's, not 24 or 128
}

TEST_F(VirtioMmioTest, AFailedActivationMarksTheDeviceFailed) {
    dev.fail_activation = true;
    handshake(VirtioMmio::feature_version_1);
    EXPECT_FALSE(dev.driver_ok());
    EXPECT_NE(rd(0x070) & VirtioMmio::status_failed, 0U);
    EXPECT_EQ(dev.error(), "no backend");
}

TEST_F(VirtioMmioTest, InterruptStatusDrivesTheLevelLineUntilAcked) {
    handshake(VirtioMmio::feature_version_1);
    dev.interrupt(VirtioMmio::int_vring);
    EXPECT_TRUE(irq.high());
    EXPECT_EQ(rd(0x060), 1U);
    dev.interrupt(VirtioMmio::int_config);
    EXPECT_EQ(rd(0x060), 3U);
    wr(0x064, 1);
    EXPECT_TRUE(irq.high()); // config still pending
    wr(0x064, 2);
    EXPECT_FALSE(irq.high());
    EXPECT_EQ(rd(0x060), 0U);
}

TEST_F(VirtioMmioTest, StatusZeroResetsEverything) {
    handshake(VirtioMmio::feature_version_1);
    dev.interrupt(VirtioMmio::int_vring);
    const unsigned resets = dev.resets;
    wr(0x070, 0);
    EXPECT_EQ(dev.resets, resets + 1);
    EXPECT_EQ(rd(0x070), 0U);
    EXPECT_EQ(rd(0x060), 0U);
    EXPECT_FALSE(irq.high());
    wr(0x030, 0);
    EXPECT_EQ(rd(0x044), 0U);
}

TEST_F(VirtioMmioTest, SavedStateRestoresIntoAnotherDevice) {
    handshake(VirtioMmio::feature_version_1 | 0x4);
    dev.device_word = 0xdeadbeef;
    dev.interrupt(VirtioMmio::int_vring);
    StateWriter out;
    dev.save(out);

    testing::FakeIrqLine irq2;
    FakeVirtio clone(irq2);
    StateReader in(out.data(), "fake");
    clone.restore(in);
    in.finish();
    EXPECT_TRUE(clone.driver_ok());
    EXPECT_EQ(clone.device_word, 0xdeadbeefU);
    ASSERT_EQ(clone.restored_queues.size(), 2U);
    EXPECT_EQ(clone.restored_queues[0].desc, 0x1000U);
    // The same state saved again: byte for byte.
    StateWriter again;
    clone.save(again);
    EXPECT_EQ(again.data(), out.data());
}

TEST_F(VirtioMmioTest, TruncatedOrForeignStateIsAClearError) {
    handshake(VirtioMmio::feature_version_1);
    StateWriter out;
    dev.save(out);
    const auto& full = out.data();
    for (std::size_t len : {std::size_t{0}, std::size_t{5}, full.size() - 1}) {
        testing::FakeIrqLine irq2;
        FakeVirtio clone(irq2);
        StateReader in(std::span(full.data(), len), "fake");
        EXPECT_THROW(clone.restore(in), std::invalid_argument) << len << " bytes";
    }
    // Features the device does not offer (bit 8 set in the saved driver features).
    auto bad = full;
    bad[1 + 4 + 4 + 1] |= 0x01;
    testing::FakeIrqLine irq3;
    FakeVirtio clone(irq3);
    StateReader in(bad, "fake");
    EXPECT_THROW(clone.restore(in), std::invalid_argument);
}

} // namespace
} // namespace vmfork
