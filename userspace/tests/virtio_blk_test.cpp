// SPDX-License-Identifier: GPL-2.0
// virtio-blk as Linux's virtio_blk driver uses it, with this test as the driver: a
// split virtqueue in plain guest memory, requests (header, data, status) made
// available and kicked, a raw image file as the disk. Reads and writes reach the
// file; bad requests are I/O errors for the guest; a malformed chain sets
// DEVICE_NEEDS_RESET; pause() holds requests back; the saved state takes a second
// device (a clone's) on from where the first one was.
// linux/virtio_ring.h's legacy vring_init() is C, not C++.
#define VIRTIO_RING_NO_LEGACY
#include <gtest/gtest.h>

#include <array>
#include <chrono>
#include <cstring>
#include <fcntl.h>
#include <linux/virtio_blk.h>
#include <linux/virtio_ring.h>
#include <string>
#include <sys/mman.h>
#include <thread>
#include <unistd.h>
#include <vector>

#include "fake_irq_line.h"
#include "virtio_registers.h"
#include "vmfork/mapping.h"
#include "vmfork/system_error.h"
#include "vmfork/vmm/devices/virtio_blk.h"
#include "vmfork/vmm/memory.h"

namespace vmfork {
namespace {

constexpr std::uint64_t ram_size = 1 << 20;
constexpr std::uint16_t qsize = 16;
constexpr std::uint64_t desc_at = 0x1000, avail_at = 0x2000, used_at = 0x3000;
constexpr std::uint64_t data_at = 0x10000; // request buffers from here
constexpr std::uint64_t disk_sectors = 64;

GuestMemory plain_ram() {
    return GuestMemory(Mapping(ram_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0,
                               "test guest RAM"));
}

// A raw image in a temporary file, deleted at the end.
struct TempImage {
    std::string path;
    explicit TempImage(std::uint64_t bytes, mode_t mode = 0600) {
        char tmpl[] = "/tmp/vmfork-blk-test.XXXXXX";
        const int fd = ::mkstemp(tmpl);
        EXPECT_GE(fd, 0);
        path = tmpl;
        EXPECT_EQ(::ftruncate(fd, static_cast<off_t>(bytes)), 0);
        ::fchmod(fd, mode);
        ::close(fd);
    }
    ~TempImage() { ::unlink(path.c_str()); }
    TempImage(const TempImage&) = delete;
    TempImage& operator=(const TempImage&) = delete;
    [[nodiscard]] std::vector<std::uint8_t> read(std::uint64_t off, std::size_t n) const {
        std::vector<std::uint8_t> b(n);
        const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        EXPECT_EQ(::pread(fd, b.data(), n, static_cast<off_t>(off)), static_cast<ssize_t>(n));
        ::close(fd);
        return b;
    }
};

// The driver side: registers, the rings, requests.
class Driver : public testing::VirtioRegisters {
public:
    Driver(const GuestMemory& ram, VirtioMmio& dev) : VirtioRegisters(dev), ram_(ram) {}

    void start() {
        negotiate(features());
        wr(0x030, 0);
        wr(0x038, qsize);
        wr(0x080, desc_at);
        wr(0x090, avail_at);
        wr(0x0a0, used_at);
        wr(0x044, 1);
        wr(0x070, 15);
    }
    std::uint64_t config_u64(std::uint64_t off) {
        return rd(0x100 + off) | (std::uint64_t{rd(0x100 + off + 4)} << 32);
    }

    // One request: header, then data buffers (written by the device for reads),
    // then the status byte. Returns the head; the request is made available, not kicked.
    std::uint16_t post(std::uint32_t type, std::uint64_t sector, std::uint64_t data_len,
                       bool device_writes_data, const std::vector<std::uint8_t>& payload = {}) {
        const std::uint16_t head = next_desc_;
        virtio_blk_outhdr h{.type = type, .ioprio = 0, .sector = sector};
        const std::uint64_t hdr = alloc(sizeof(h));
        ram_.write(hdr, h);
        add_desc(hdr, sizeof(h), false, true);
        if (data_len != 0) {
            data_ = alloc(data_len);
            if (!payload.empty()) {
                std::memcpy(ram_.at(data_, payload.size()), payload.data(), payload.size());
            }
            add_desc(data_, static_cast<std::uint32_t>(data_len), device_writes_data, true);
        }
        status_ = alloc(1);
        ram_.write<std::uint8_t>(status_, 0xff);
        add_desc(status_, 1, true, false);
        make_available(head);
        return head;
    }
    void make_available(std::uint16_t head) {
        const auto idx = ram_.read<std::uint16_t>(avail_at + 2);
        ram_.write<std::uint16_t>(avail_at + 4 + 2 * (idx % qsize), head);
        ram_.write<std::uint16_t>(avail_at + 2, static_cast<std::uint16_t>(idx + 1));
    }
    void kick() { wr(0x050, 0); }
    [[nodiscard]] std::uint16_t used_idx() const { return ram_.read<std::uint16_t>(used_at + 2); }
    // Waits until n requests are used (bounded).
    bool wait_used(std::uint16_t n) {
        for (int i = 0; i < 2000; ++i) {
            if (used_idx() >= n) {
                return true;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        return false;
    }
    [[nodiscard]] std::uint8_t status() const { return ram_.read<std::uint8_t>(status_); }
    [[nodiscard]] vring_used_elem used(std::uint16_t i) const {
        return ram_.read<vring_used_elem>(used_at + 4 + 8 * (i % qsize));
    }
    [[nodiscard]] std::vector<std::uint8_t> data(std::size_t n) const {
        std::vector<std::uint8_t> b(n);
        std::memcpy(b.data(), ram_.at(data_, n), n);
        return b;
    }
    void add_desc(std::uint64_t addr, std::uint32_t len, bool writes, bool more) {
        vring_desc d{};
        d.addr = addr;
        d.len = len;
        d.flags = static_cast<std::uint16_t>((writes ? VRING_DESC_F_WRITE : 0) |
                                             (more ? VRING_DESC_F_NEXT : 0));
        d.next = static_cast<std::uint16_t>((next_desc_ + 1) % qsize);
        ram_.write(desc_at + 16 * next_desc_, d);
        next_desc_ = static_cast<std::uint16_t>((next_desc_ + 1) % qsize);
    }
    std::uint64_t alloc(std::uint64_t n) {
        const std::uint64_t at = next_buf_;
        next_buf_ += (n + 15) & ~15ULL;
        return at;
    }

private:
    const GuestMemory& ram_;
    std::uint16_t next_desc_ = 0;
    std::uint64_t next_buf_ = data_at;
    std::uint64_t data_ = 0;
    std::uint64_t status_ = 0;
};

std::vector<std::uint8_t> pattern(std::size_t n, std::uint8_t seed) {
    std::vector<std::uint8_t> b(n);
    for (std::size_t i = 0; i < n; ++i) {
        b[i] = static_cast<std::uint8_t>(seed + i * 7);
    }
    return b;
}

class VirtioBlkTest : public ::testing::Test {
protected:
    void make(bool read_only = false) {
        dev.reset();
        dev =
            std::make_unique<VirtioBlk>(ram, irq, std::make_unique<RawDisk>(image.path, read_only),
                                        "virtio-blk-0", "vmfork-disk-0");
        drv = std::make_unique<Driver>(ram, *dev);
    }
    void SetUp() override { make(); }

    GuestMemory ram = plain_ram();
    TempImage image{disk_sectors * 512};
    testing::FakeIrqLine irq;
    std::unique_ptr<VirtioBlk> dev;
    std::unique_ptr<Driver> drv;
};

TEST_F(VirtioBlkTest, OffersFlushAndReportsItsCapacity) {
    EXPECT_EQ(drv->rd(0x008), 2U);
    const std::uint64_t f = drv->features();
    EXPECT_NE(f & (1ULL << VIRTIO_BLK_F_FLUSH), 0U);
    EXPECT_EQ(f & (1ULL << VIRTIO_BLK_F_RO), 0U);
    EXPECT_NE(f & VirtioMmio::feature_version_1, 0U);
    EXPECT_EQ(drv->config_u64(0), disk_sectors);
    make(true);
    EXPECT_NE(drv->features() & (1ULL << VIRTIO_BLK_F_RO), 0U);
}

TEST_F(VirtioBlkTest, WritesReachTheImageAndReadsComeBack) {
    drv->start();
    const auto data = pattern(4 * 512, 3);
    drv->post(VIRTIO_BLK_T_OUT, 8, data.size(), false, data);
    drv->kick();
    ASSERT_TRUE(drv->wait_used(1));
    EXPECT_EQ(drv->status(), VIRTIO_BLK_S_OK);
    EXPECT_EQ(image.read(8 * 512, data.size()), data);
    EXPECT_TRUE(irq.high()); // the used buffer is signalled

    const std::uint16_t head = drv->post(VIRTIO_BLK_T_IN, 9, 512, true);
    drv->kick();
    ASSERT_TRUE(drv->wait_used(2));
    EXPECT_EQ(drv->status(), VIRTIO_BLK_S_OK);
    EXPECT_EQ(drv->data(512), std::vector<std::uint8_t>(data.begin() + 512, data.begin() + 1024));
    EXPECT_EQ(drv->used(1).id, head);
    EXPECT_EQ(drv->used(1).len, 513U); // data and status written

    drv->post(VIRTIO_BLK_T_FLUSH, 0, 0, false);
    drv->kick();
    ASSERT_TRUE(drv->wait_used(3));
    EXPECT_EQ(drv->status(), VIRTIO_BLK_S_OK);
    EXPECT_EQ(dev->requests(), 3U);
    EXPECT_EQ(dev->failed_requests(), 0U);
}

TEST_F(VirtioBlkTest, BadRequestsAreIoErrorsForTheGuest) {
    drv->start();
    drv->post(VIRTIO_BLK_T_IN, disk_sectors - 1, 1024, true); // past the end
    drv->kick();
    ASSERT_TRUE(drv->wait_used(1));
    EXPECT_EQ(drv->status(), VIRTIO_BLK_S_IOERR);
    drv->post(VIRTIO_BLK_T_IN, ~0ULL, 512, true); // a sector that overflows
    drv->kick();
    ASSERT_TRUE(drv->wait_used(2));
    EXPECT_EQ(drv->status(), VIRTIO_BLK_S_IOERR);
    drv->post(VIRTIO_BLK_T_OUT, 0, 100, false, pattern(100, 1)); // not whole sectors
    drv->kick();
    ASSERT_TRUE(drv->wait_used(3));
    EXPECT_EQ(drv->status(), VIRTIO_BLK_S_IOERR);
    drv->post(VIRTIO_BLK_T_DISCARD, 0, 16, false);
    drv->kick();
    ASSERT_TRUE(drv->wait_used(4));
    EXPECT_EQ(drv->status(), VIRTIO_BLK_S_UNSUPP);
    drv->post(VIRTIO_BLK_T_GET_ID, 0, VIRTIO_BLK_ID_BYTES, true);
    drv->kick();
    ASSERT_TRUE(drv->wait_used(5));
    EXPECT_EQ(drv->status(), VIRTIO_BLK_S_OK);
    const auto id = drv->data(VIRTIO_BLK_ID_BYTES);
    EXPECT_EQ(std::string(id.begin(), id.begin() + 13), "vmfork-disk-0");
    EXPECT_EQ(dev->failed_requests(), 4U);
    EXPECT_EQ(image.read(0, 512), std::vector<std::uint8_t>(512, 0)); // nothing written
}

TEST_F(VirtioBlkTest, AReadOnlyDiskRefusesWrites) {
    make(true);
    drv->start();
    drv->post(VIRTIO_BLK_T_OUT, 0, 512, false, pattern(512, 9));
    drv->kick();
    ASSERT_TRUE(drv->wait_used(1));
    EXPECT_EQ(drv->status(), VIRTIO_BLK_S_IOERR);
    EXPECT_EQ(image.read(0, 512), std::vector<std::uint8_t>(512, 0));
}

TEST_F(VirtioBlkTest, AMalformedChainNeedsAResetAndTheDeviceRecovers) {
    drv->start();
    // A chain that loops on itself.
    vring_desc d{};
    d.addr = data_at;
    d.len = 16;
    d.flags = VRING_DESC_F_NEXT;
    d.next = 0;
    ram.write(desc_at, d);
    drv->make_available(0);
    drv->kick();
    for (int i = 0; i < 2000 && (drv->rd(0x070) & VirtioMmio::status_needs_reset) == 0; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    EXPECT_NE(drv->rd(0x070) & VirtioMmio::status_needs_reset, 0U);
    EXPECT_NE(drv->rd(0x060) & VirtioMmio::int_config, 0U);
    EXPECT_NE(dev->error().find("loops"), std::string::npos) << dev->error();
    // The driver resets the device and starts again: it works.
    drv->wr(0x070, 0);
    std::memset(ram.at(avail_at, 0x3000), 0, 0x3000);
    drv = std::make_unique<Driver>(ram, *dev);
    drv->start();
    drv->post(VIRTIO_BLK_T_FLUSH, 0, 0, false);
    drv->kick();
    ASSERT_TRUE(drv->wait_used(1));
    EXPECT_EQ(drv->status(), VIRTIO_BLK_S_OK);
}

TEST_F(VirtioBlkTest, PauseHoldsRequestsAndTheSavedStateGoesOnInAnotherDevice) {
    drv->start();
    drv->post(VIRTIO_BLK_T_OUT, 0, 512, false, pattern(512, 1));
    drv->kick();
    ASSERT_TRUE(drv->wait_used(1));
    dev->pause();
    // Paused means signalled too: the interrupt is in the state a fork captures.
    EXPECT_TRUE(irq.high());
    EXPECT_NE(drv->rd(0x060) & VirtioMmio::int_vring, 0U);
    // Made available while paused (as if at the fork instant): not served here.
    drv->post(VIRTIO_BLK_T_OUT, 1, 512, false, pattern(512, 2));
    drv->kick();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    EXPECT_EQ(drv->used_idx(), 1);
    StateWriter out;
    dev->save(out);
    const auto blob = out.data();

    // "A clone": another device on another image, restored from the state, serves
    // the pending request on its own disk.
    TempImage clone_image{disk_sectors * 512};
    testing::FakeIrqLine clone_irq;
    VirtioBlk clone(ram, clone_irq, std::make_unique<RawDisk>(clone_image.path, false),
                    "virtio-blk-0", "vmfork-disk-0");
    StateReader in(blob, "virtio-blk-0");
    clone.restore(in);
    in.finish();
    Driver cdrv(ram, clone);
    ASSERT_TRUE(cdrv.wait_used(2));
    EXPECT_EQ(clone_image.read(512, 512), pattern(512, 2));
    EXPECT_EQ(image.read(512, 512), std::vector<std::uint8_t>(512, 0)); // not on the parent's
}

TEST_F(VirtioBlkTest, AnImageOneVmWritesIsNoOtherVmsToOpen) {
    dev.reset(); // the fixture's writable open
    auto errno_of = [](const std::string& path, bool ro) {
        try {
            RawDisk d(path, ro);
            return 0;
        } catch (const SystemError& e) {
            return e.error();
        }
    };
    {
        const RawDisk writer(image.path, false);
        EXPECT_EQ(errno_of(image.path, false), EBUSY);
        EXPECT_EQ(errno_of(image.path, true), EBUSY);
        // At a fork the writer becomes the read-only base: readers may join, no writer.
        const auto base = writer.read_only_view();
        EXPECT_TRUE(base->read_only());
    }
    const RawDisk reader(image.path, true);
    EXPECT_EQ(errno_of(image.path, true), 0);
    EXPECT_EQ(errno_of(image.path, false), EBUSY);
}

TEST_F(VirtioBlkTest, ARawImageMustBeWholeSectorsAndOpenable) {
    TempImage odd{1000};
    EXPECT_THROW(RawDisk(odd.path, false), SystemError);
    EXPECT_THROW(RawDisk("/nonexistent/disk.img", false), SystemError);
    TempImage ro{512, 0400};
    if (::geteuid() != 0) {
        try {
            RawDisk d(ro.path, false);
            FAIL() << "a read-only file opened read-write";
        } catch (const SystemError& e) {
            EXPECT_NE(std::string(e.what()).find(",ro"), std::string::npos) << e.what();
        }
    }
    RawDisk d(ro.path, true);
    EXPECT_EQ(d.size(), 512U);
}

} // namespace
} // namespace vmfork
