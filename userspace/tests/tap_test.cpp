// SPDX-License-Identifier: GPL-2.0
// The tap of a VM's network: made in a network namespace of the test's own (root only),
// its address, a tap in use, bad names, and the error without CAP_NET_ADMIN.
#include <array>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/capability.h>
#include <net/if.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fake_irq_line.h"
#include "thrown_errno.h"
#include "virtio_registers.h"
#include "vmfork/mapping.h"
#include "vmfork/unique_fd.h"
#include "vmfork/vmm/devices/vhost_net.h"
#include "vmfork/vmm/memory.h"
#include "vmfork/vmm/tap.h"

namespace vmfork {
namespace {

TEST(Ipv4Prefix, ParsesAndPrints) {
    const auto p = Ipv4Prefix::parse("172.30.0.1/24");
    EXPECT_EQ(p.address, 0xac1e0001U);
    EXPECT_EQ(p.prefix, 24U);
    EXPECT_EQ(p.str(), "172.30.0.1/24");
    for (const char* bad : {"172.30.0.1", "172.30.0/24", "172.30.0.1/0", "172.30.0.1/31",
                            "172.30.0.1/24x", "172.30.0.1/", "/24", "::1/64", ""}) {
        EXPECT_EQ(thrown_errno<SystemError>([&] { (void)Ipv4Prefix::parse(bad); }), EINVAL) << bad;
    }
}

// Runs the test in a network namespace of its own and goes back to the test runner's.
class TapTest : public ::testing::Test {
protected:
    void SetUp() override {
        if (::geteuid() != 0 || ::access("/dev/net/tun", R_OK | W_OK) != 0) {
            GTEST_SKIP() << "needs root and /dev/net/tun";
        }
        home_ = UniqueFd(::open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC));
        ASSERT_TRUE(home_);
        ASSERT_EQ(::unshare(CLONE_NEWNET), 0) << std::strerror(errno);
    }
    void TearDown() override {
        if (home_) {
            EXPECT_EQ(::setns(home_.get(), CLONE_NEWNET), 0);
        }
    }

private:
    UniqueFd home_;
};

TEST_F(TapTest, MadeNamedAddressedAndGoneWithItsFd) {
    {
        const Tap tap("vmf%d");
        EXPECT_EQ(tap.name(), "vmf0"); // the first free one, in a fresh namespace
        EXPECT_EQ(tap.address(), std::nullopt);
        tap.set_address(Ipv4Prefix::parse("172.30.0.1/24"));
        EXPECT_EQ(tap.address(), Ipv4Prefix::parse("172.30.0.1/24"));
        EXPECT_NE(::if_nametoindex("vmf0"), 0U);
        const Tap second("vmf%d");
        EXPECT_EQ(second.name(), "vmf1");
        // One VM per tap: a second open of a tap in use says so.
        EXPECT_EQ(thrown_errno<SystemError>([] { const Tap again("vmf0"); }), EBUSY);
    }
    EXPECT_EQ(::if_nametoindex("vmf0"), 0U) << "the tap outlived its last fd";
}

TEST_F(TapTest, BadNamesAreRefused) {
    for (const char* bad : {"", "a/b", "a b", "sixteen-chars-xx"}) {
        EXPECT_EQ(thrown_errno<SystemError>([&] { const Tap t(bad); }), EINVAL) << bad;
    }
}

TEST_F(TapTest, WithoutCapNetAdminTheErrorSaysSo) {
    // In a child (capabilities are per process): CAP_NET_ADMIN out of the effective set.
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
        std::array<__user_cap_data_struct, 2> data{};
        if (::syscall(SYS_capget, &hdr, data.data()) != 0) {
            ::_exit(10);
        }
        data[0].effective &= ~(1U << CAP_NET_ADMIN);
        if (::syscall(SYS_capset, &hdr, data.data()) != 0) {
            ::_exit(11);
        }
        try {
            const Tap tap("vmf%d");
        } catch (const SystemError& e) {
            const std::string what = e.what();
            ::_exit(e.error() == EPERM && what.find("CAP_NET_ADMIN") != std::string::npos ? 0 : 12);
        }
        ::_exit(13);
    }
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 0) << "10/11: capget/capset failed; 12: another error; "
                                         "13: no error";
}

VhostNet::Mac config_mac(VirtioMmio& dev) {
    VhostNet::Mac mac{};
    for (std::size_t i = 0; i < mac.size(); ++i) {
        std::array<std::uint8_t, 1> b{};
        dev.mmio_read(0x100 + i, b, 0);
        mac[i] = b[0];
    }
    return mac;
}

// The device's face to the driver (no vhost needed until the driver starts it): a
// network device with a MAC and nothing else offered; the MAC is in the saved state, so
// that a clone shows its parent's, which its driver read at boot.
TEST_F(TapTest, VirtioNetShowsItsMacAndAClonesIsItsParents) {
    GuestMemory ram(Mapping(1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0,
                            "test guest RAM"));
    testing::FakeIrqLine irq;
    const VhostNet::Mac mac = VhostNet::random_mac();
    EXPECT_EQ(mac[0] & 0x03, 0x02) << "unicast, locally administered";
    VhostNet dev(ram, irq, Tap("vmf%d"), mac);
    testing::VirtioRegisters regs(dev);
    EXPECT_EQ(regs.rd(0x000), VirtioMmio::magic);
    EXPECT_EQ(regs.rd(0x008), 1U); // VIRTIO_ID_NET
    EXPECT_EQ(regs.features(), VirtioMmio::feature_version_1 | (1ULL << 5) | (1ULL << 28))
        << "VERSION_1, MAC and INDIRECT_DESC: no offload, no control queue";
    EXPECT_EQ(config_mac(dev), mac);
    EXPECT_EQ(VhostNet::mac_string({0x02, 0xab, 0, 1, 0x10, 0xff}), "02:ab:00:01:10:ff");
    StateWriter out;
    dev.save(out);

    testing::FakeIrqLine clone_irq;
    VhostNet clone(ram, clone_irq, Tap("vmf%d"), VhostNet::random_mac());
    StateReader in(out.data(), "virtio-net");
    clone.restore(in);
    in.finish();
    EXPECT_EQ(config_mac(clone), mac);
    EXPECT_EQ(clone.mac(), mac);
}

} // namespace
} // namespace vmfork
