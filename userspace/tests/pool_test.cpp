// SPDX-License-Identifier: GPL-2.0
// The warm pool's socket protocol and bookkeeping (no KVM needed: no warm VMM runs).
#include "vmfork/vmm/pool.h"

#include <array>
#include <cerrno>
#include <cstdlib>
#include <fcntl.h>
#include <filesystem>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "temp_dir.h"
#include "thrown_errno.h"
#include "vmfork/vmm/launch_spec.h"
#include "vmfork/vmm/pool_socket.h"

namespace vmfork {
namespace {

namespace fs = std::filesystem;

std::array<UniqueFd, 2> seqpacket_pair() {
    std::array<int, 2> sv{};
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv.data()) < 0) {
        throw SystemError::from_errno("socketpair");
    }
    return {UniqueFd(sv[0]), UniqueFd(sv[1])};
}

TEST(PoolSocket, CarriesTextAndDescriptors) {
    auto [a, b] = seqpacket_pair();
    std::array<int, 2> p{};
    ASSERT_EQ(::pipe2(p.data(), O_CLOEXEC), 0);
    const UniqueFd r(p[0]);
    const UniqueFd w(p[1]);
    const std::vector<int> fds = {w.get(), r.get(), w.get()};
    ASSERT_TRUE(pool_socket::send(a.get(), "launch 0", fds));
    std::string why;
    auto m = pool_socket::receive(b.get(), why);
    ASSERT_TRUE(m.has_value()) << why;
    EXPECT_EQ(m->text, "launch 0");
    ASSERT_EQ(m->fds.size(), 3U);
    // The first descriptor received is the pipe's write end: a byte through it arrives.
    ASSERT_EQ(::write(m->fds[0].get(), "x", 1), 1);
    char c = 0;
    ASSERT_EQ(::read(r.get(), &c, 1), 1);
    EXPECT_EQ(c, 'x');
    EXPECT_NE(::fcntl(m->fds[1].get(), F_GETFD) & FD_CLOEXEC, 0) << "received close-on-exec";
}

TEST(PoolSocket, ManyDescriptorsAndTooMany) {
    auto [a, b] = seqpacket_pair();
    const std::vector<int> fds(pool_socket::max_fds, a.get());
    ASSERT_TRUE(pool_socket::send(a.get(), "launch 200", fds));
    std::string why;
    auto m = pool_socket::receive(b.get(), why);
    ASSERT_TRUE(m.has_value()) << why;
    EXPECT_EQ(m->fds.size(), pool_socket::max_fds);
    const std::vector<int> more(pool_socket::max_fds + 1, a.get());
    EXPECT_EQ(thrown_errno<SystemError>([&] { pool_socket::send(a.get(), "x", more); }), E2BIG);
}

TEST(PoolSocket, ClosedPeerAndEmptyConnection) {
    auto [a, b] = seqpacket_pair();
    b = UniqueFd();
    EXPECT_FALSE(pool_socket::send(a.get(), "exit", {})) << "a peer gone is false, not a throw";
    auto [c, d] = seqpacket_pair();
    c = UniqueFd();
    std::string why;
    EXPECT_FALSE(pool_socket::receive(d.get(), why).has_value());
    EXPECT_NE(why.find("without a message"), std::string::npos) << why;
}

TEST(PoolSocket, TooLongTextIsRefused) {
    auto [a, b] = seqpacket_pair();
    const std::string text(pool_socket::max_text + 10, 'a');
    // Sent raw: send() itself refuses it.
    ASSERT_GT(::send(a.get(), text.data(), text.size(), 0), 0);
    std::string why;
    EXPECT_FALSE(pool_socket::receive(b.get(), why).has_value());
    EXPECT_NE(why.find("too long"), std::string::npos) << why;
}

TEST(PoolSocket, ListenConnectAndGone) {
    const TempDir dir("vmfork-pool-test");
    const std::string path = pool_socket::warm_path(dir.path(), 2, 1234);
    EXPECT_EQ(path, (dir.path() / "warm-2-1234.sock").string());
    {
        const UniqueFd l = pool_socket::listen(path);
        const UniqueFd c = pool_socket::connect(path);
        EXPECT_TRUE(c.valid());
        const UniqueFd s(::accept4(l.get(), nullptr, nullptr, SOCK_CLOEXEC));
        ASSERT_TRUE(s.valid());
        ASSERT_TRUE(pool_socket::send(c.get(), "exit", {}));
        std::string why;
        auto m = pool_socket::receive(s.get(), why);
        ASSERT_TRUE(m.has_value()) << why;
        EXPECT_EQ(m->text, "exit");
    }
    EXPECT_FALSE(pool_socket::connect(path).valid()) << "nobody listens: invalid, no throw";
}

TEST(VmmPool, TargetsAreBoundedAndPersist) {
    const TempDir dir("vmfork-pool-test");
    VmmPool pool(dir.path());
    EXPECT_TRUE(pool.targets().empty());
    EXPECT_EQ(pool.target(1), 0U);
    pool.set_target(1, 4);
    pool.set_target(4, 2);
    EXPECT_EQ(VmmPool(dir.path()).target(1), 4U);
    const std::vector<std::pair<unsigned, unsigned>> want = {{1, 4}, {4, 2}};
    EXPECT_EQ(pool.targets(), want);
    pool.set_target(4, 0);
    EXPECT_EQ(pool.target(4), 0U);
    EXPECT_FALSE(fs::exists(dir.path() / "pool/size-4"));
    EXPECT_EQ(thrown_errno<SystemError>([&] { pool.set_target(1, VmmPool::max_size + 1); }),
              EINVAL);
    EXPECT_EQ(thrown_errno<SystemError>([&] { pool.set_target(0, 1); }), EINVAL);
    EXPECT_EQ(pool.target(1), 4U) << "a refused resize changes nothing";
}

TEST(VmmPool, ListsLiveWarmVmmsAndDropsDeadOnes) {
    const TempDir dir("vmfork-pool-test");
    VmmPool pool(dir.path());
    fs::create_directory(pool.path());
    // A process that is gone: a child reaped.
    const pid_t dead = ::fork();
    ASSERT_GE(dead, 0);
    if (dead == 0) {
        ::_exit(0);
    }
    ASSERT_EQ(::waitpid(dead, nullptr, 0), dead);
    const UniqueFd live = pool_socket::listen(pool_socket::warm_path(pool.path(), 2, ::getpid()));
    const UniqueFd gone = pool_socket::listen(pool_socket::warm_path(pool.path(), 1, dead));
    for (const char* junk : {"/warm-x-1.sock", "/warm-0-5.sock", "/warm-1-.sock", "/size-z"}) {
        const UniqueFd f(
            ::open((pool.path() + junk).c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600));
    }
    const auto warm = pool.warm();
    ASSERT_EQ(warm.size(), 1U);
    EXPECT_EQ(warm[0].cpus, 2U);
    EXPECT_EQ(warm[0].pid, ::getpid());
    EXPECT_FALSE(fs::exists(pool_socket::warm_path(pool.path(), 1, dead)))
        << "the socket of a warm VMM that died is removed";
    EXPECT_TRUE(pool.targets().empty());
}

TEST(VmmPool, TakeHandsTheLaunchToAWarmVmmOnce) {
    const TempDir dir("vmfork-pool-test");
    VmmPool pool(dir.path());
    fs::create_directory(pool.path());
    // This process plays the warm VMM of 1 vCPU.
    const UniqueFd l = pool_socket::listen(pool_socket::warm_path(pool.path(), 1, ::getpid()));
    LaunchSpec spec;
    spec.mode = LaunchSpec::Mode::Clone;
    spec.name = "c1";
    spec.runtime_dir = dir.path();
    // The memory object, state and layers are only passed on: any descriptor stands in.
    const UniqueFd mem(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    const std::vector<int> layers = {mem.get(), mem.get()};
    EXPECT_FALSE(pool.take(2, spec, mem.get(), mem.get(), (dir.path() / "c1.log").string(), layers))
        << "no warm VMM of 2 vCPUs";
    auto p = pool.take(1, spec, mem.get(), mem.get(), (dir.path() / "c1.log").string(), layers);
    ASSERT_TRUE(p.has_value());
    EXPECT_EQ(p->pid(), ::getpid());
    EXPECT_FALSE(fs::exists(pool_socket::warm_path(pool.path(), 1, ::getpid())))
        << "taken: no other fork finds it";
    EXPECT_TRUE(pool.warm().empty());
    const UniqueFd s(::accept4(l.get(), nullptr, nullptr, SOCK_CLOEXEC));
    std::string why;
    auto m = pool_socket::receive(s.get(), why);
    ASSERT_TRUE(m.has_value()) << why;
    EXPECT_EQ(m->text, "launch 2");
    ASSERT_EQ(m->fds.size(), 7U) << "ready, spec, log, memory, state and 2 layers";
    // Its ready line reaches the fork's PendingVmm.
    ASSERT_EQ(::write(m->fds[0].get(), "ok\n", 3), 3);
    p->wait(std::chrono::steady_clock::now() + std::chrono::seconds(5));
    // The spec it got is the clone's.
    std::string text(4096, '\0');
    const ssize_t n = ::pread(m->fds[1].get(), text.data(), text.size(), 0);
    ASSERT_GT(n, 0);
    text.resize(static_cast<std::size_t>(n));
    EXPECT_EQ(LaunchSpec::from_json(nlohmann::json::parse(text)).name, "c1");
    EXPECT_TRUE(fs::exists((dir.path() / "c1.log").string()));
}

TEST(VmmPool, WarmSpecRoundTrip) {
    LaunchSpec s;
    s.mode = LaunchSpec::Mode::Warm;
    s.name = "warm";
    s.runtime_dir = "/run/vmfork";
    s.cpus = 4;
    const auto t = LaunchSpec::from_json(nlohmann::json::parse(s.to_json().dump()));
    EXPECT_EQ(t.mode, LaunchSpec::Mode::Warm);
    EXPECT_EQ(t.cpus, 4U);
    EXPECT_EQ(t.runtime_dir, "/run/vmfork");
}

} // namespace
} // namespace vmfork
