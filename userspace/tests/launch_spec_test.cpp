// SPDX-License-Identifier: GPL-2.0
#include "vmfork/vmm/launch_spec.h"

#include <cerrno>
#include <gtest/gtest.h>

#include "thrown_errno.h"

namespace vmfork {
namespace {

using nlohmann::json;

TEST(LaunchSpec, LinuxBootRoundTrip) {
    LaunchSpec s;
    s.name = "lx";
    s.runtime_dir = "/run/vmfork";
    s.spawned_ns = 42;
    s.platform = Platform::Linux;
    s.mem_size = 256 << 20;
    s.cpus = 2;
    s.linux_guest = {"/boot/vmlinuz", "/tmp/initrd", "console=ttyS0"};
    const LaunchSpec t = LaunchSpec::from_json(json::parse(s.to_json().dump()));
    EXPECT_EQ(t.mode, LaunchSpec::Mode::Boot);
    EXPECT_EQ(t.platform, Platform::Linux);
    EXPECT_EQ(t.name, "lx");
    EXPECT_EQ(t.runtime_dir, "/run/vmfork");
    EXPECT_EQ(t.spawned_ns, 42U);
    EXPECT_EQ(t.mem_size, 256U << 20);
    EXPECT_EQ(t.cpus, 2U);
    EXPECT_EQ(t.linux_guest.kernel, "/boot/vmlinuz");
    EXPECT_EQ(t.linux_guest.initrd, "/tmp/initrd");
    EXPECT_EQ(t.linux_guest.cmdline, "console=ttyS0");
}

TEST(LaunchSpec, BuiltinCloneRoundTrip) {
    LaunchSpec s;
    s.mode = LaunchSpec::Mode::Clone;
    s.name = "vm1-1";
    s.runtime_dir = "/tmp/x";
    s.parent = "vm1";
    s.generation = 3;
    s.fill = 50;
    s.parent_positions = {{1, 2, 3}, {4, 5, 6}};
    const LaunchSpec t = LaunchSpec::from_json(s.to_json());
    EXPECT_EQ(t.mode, LaunchSpec::Mode::Clone);
    EXPECT_EQ(t.platform, Platform::Builtin);
    EXPECT_EQ(t.parent, "vm1");
    EXPECT_EQ(t.generation, 3U);
    EXPECT_EQ(t.fill, 50U);
    ASSERT_EQ(t.parent_positions.size(), 2U);
    EXPECT_EQ(t.parent_positions[1].step, 4U);
    EXPECT_EQ(t.parent_positions[1].checksum, 5U);
    EXPECT_EQ(t.parent_positions[1].tsc, 6U);
    EXPECT_TRUE(t.customize);
    EXPECT_TRUE(t.new_vm_generation);
}

TEST(LaunchSpec, CloneOptionsRoundTripAndDefaultOn) {
    LaunchSpec s;
    s.mode = LaunchSpec::Mode::Clone;
    s.name = "lx-1";
    s.runtime_dir = "/tmp/x";
    s.platform = Platform::Linux;
    s.parent = "lx";
    s.generation = 1;
    s.customize = false;
    s.new_vm_generation = false;
    json j = s.to_json();
    const LaunchSpec t = LaunchSpec::from_json(j);
    EXPECT_FALSE(t.customize);
    EXPECT_FALSE(t.new_vm_generation);
    // A spec from an older vmfork, without the fields: both on.
    j.erase("customize");
    j.erase("new_vm_generation");
    const LaunchSpec u = LaunchSpec::from_json(j);
    EXPECT_TRUE(u.customize);
    EXPECT_TRUE(u.new_vm_generation);
    j["customize"] = "no";
    EXPECT_EQ(thrown_errno<SystemError>([&] { (void)LaunchSpec::from_json(j); }), EINVAL);
}

TEST(LaunchSpec, DisksRoundTripAndBadOnesAreEinval) {
    LaunchSpec s;
    s.mode = LaunchSpec::Mode::Clone;
    s.name = "lx-1";
    s.runtime_dir = "/tmp/x";
    s.platform = Platform::Linux;
    s.parent = "lx";
    s.generation = 1;
    s.disk_dir = "/var/tmp";
    s.disks = {{"/img/a.raw", false, {7, 8}}, {"/img/b.raw", true, {}}};
    json j = s.to_json();
    const LaunchSpec t = LaunchSpec::from_json(j);
    ASSERT_EQ(t.disks.size(), 2U);
    EXPECT_EQ(t.disks[0].path, "/img/a.raw");
    EXPECT_EQ(t.disks[0].layer_fds, (std::vector<int>{7, 8}));
    EXPECT_TRUE(t.disks[1].read_only);
    EXPECT_EQ(t.disk_dir, "/var/tmp");
    auto broken = [&](const std::function<void(json&)>& edit) {
        json k = j;
        edit(k);
        return thrown_errno<SystemError>([&] { (void)LaunchSpec::from_json(k); });
    };
    EXPECT_EQ(broken([](json& k) { k["disks"][0]["layer_fds"] = json::array({3}); }), EINVAL);
    EXPECT_EQ(broken([](json& k) { k["disks"][1]["layer_fds"] = json::array({9}); }), EINVAL);
    EXPECT_EQ(broken([](json& k) { k["disks"][0]["path"] = ""; }), EINVAL);
    EXPECT_EQ(broken([](json& k) { k["disks"] = "a.raw"; }), EINVAL);
    EXPECT_EQ(broken([](json& k) { k["platform"] = "builtin"; }), EINVAL);
}

TEST(LaunchSpec, NetRoundTripsAndBadOnesAreEinval) {
    LaunchSpec s;
    s.mode = LaunchSpec::Mode::Clone;
    s.name = "nx-1";
    s.runtime_dir = "/tmp/x";
    s.platform = Platform::Linux;
    s.parent = "nx";
    s.net = {"vmf-t0", Ipv4Prefix::parse("172.30.0.1/24")};
    s.own_netns = true;
    json j = s.to_json();
    const LaunchSpec t = LaunchSpec::from_json(j);
    EXPECT_EQ(t.net.tap, "vmf-t0");
    EXPECT_EQ(t.net.host_address, Ipv4Prefix::parse("172.30.0.1/24"));
    EXPECT_TRUE(t.own_netns);
    s.net = {};
    s.own_netns = false;
    EXPECT_EQ(LaunchSpec::from_json(s.to_json()).net.tap, ""); // none
    auto broken = [&](const std::function<void(json&)>& edit) {
        json k = j;
        edit(k);
        return thrown_errno<SystemError>([&] { (void)LaunchSpec::from_json(k); });
    };
    EXPECT_EQ(broken([](json& k) { k["net"]["host_address"] = "172.30.0.1"; }), EINVAL);
    EXPECT_EQ(broken([](json& k) { k["net"]["tap"] = ""; }), EINVAL); // a namespace, no tap
    EXPECT_EQ(broken([](json& k) { k["net"] = "vmf-t0"; }), EINVAL);
    EXPECT_EQ(broken([](json& k) { k["platform"] = "builtin"; }), EINVAL);
}

TEST(LaunchSpec, MalformedSpecsAreEinval) {
    LaunchSpec s;
    s.name = "a";
    s.runtime_dir = "/tmp";
    s.mem_size = 1 << 20;
    const json good = s.to_json();
    auto broken = [&](const std::function<void(json&)>& edit) {
        json j = good;
        edit(j);
        return thrown_errno<SystemError>([&] { (void)LaunchSpec::from_json(j); });
    };
    EXPECT_EQ(broken([](json&) {}), -1);
    EXPECT_EQ(broken([](json& j) { j.erase("mem_size"); }), EINVAL);
    EXPECT_EQ(broken([](json& j) { j["mode"] = "resume"; }), EINVAL);
    EXPECT_EQ(broken([](json& j) { j["platform"] = "windows"; }), EINVAL);
    EXPECT_EQ(broken([](json& j) { j["cpus"] = "two"; }), EINVAL);
    EXPECT_EQ(broken([](json& j) { j["platform"] = "linux"; }), EINVAL); // no kernel
    EXPECT_EQ(broken([](json& j) { j = json::array(); }), EINVAL);
    EXPECT_EQ(broken([](json& j) {
                  j["mode"] = "clone";
                  j["parent"] = "p";
                  j["generation"] = 1;
                  j["parent_positions"] = json::array({json::array({1, 2})});
              }),
              EINVAL);
}

} // namespace
} // namespace vmfork
