// SPDX-License-Identifier: GPL-2.0
#include "vmfork/control/runtime_dir.h"

#include <array>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <fcntl.h>
#include <filesystem>
#include <functional>
#include <gtest/gtest.h>
#include <optional>
#include <string>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

#include "thrown_errno.h"
#include "vmfork/system_error.h"

namespace vmfork::control {
namespace {

using Names = std::vector<std::string>;

bool exists(const std::string& path) {
    struct stat st {};
    return ::lstat(path.c_str(), &st) == 0;
}

void touch(const std::string& path) {
    const UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
    ASSERT_TRUE(fd) << path;
}

// Sets an environment variable for a scope, restoring the old value after.
class ScopedEnv {
public:
    ScopedEnv(const char* name, const char* value) : name_(name) {
        const char* old = std::getenv(name); // NOLINT(concurrency-mt-unsafe)
        if (old != nullptr) {
            old_ = old;
        }
        set(value);
    }
    ~ScopedEnv() { set(old_ ? old_->c_str() : nullptr); }
    ScopedEnv(const ScopedEnv&) = delete;
    ScopedEnv& operator=(const ScopedEnv&) = delete;
    ScopedEnv(ScopedEnv&&) = delete;
    ScopedEnv& operator=(ScopedEnv&&) = delete;

private:
    void set(const char* value) {
        if (value != nullptr) {
            ::setenv(name_, value, 1); // NOLINT(concurrency-mt-unsafe)
        } else {
            ::unsetenv(name_); // NOLINT(concurrency-mt-unsafe)
        }
    }
    const char* name_;
    std::optional<std::string> old_;
};

class RuntimeDirTest : public ::testing::Test {
protected:
    void SetUp() override {
        std::string templ = "/tmp/vmfork-runtime-test.XXXXXX";
        ASSERT_NE(::mkdtemp(templ.data()), nullptr);
        root_ = templ;
        dir_ = RuntimeDir(root_);
    }

    void TearDown() override {
        std::error_code ec;
        std::filesystem::remove_all(root_, ec);
        EXPECT_FALSE(ec) << ec.message();
    }

    std::string root_;
    RuntimeDir dir_{"/nonexistent"};
};

TEST(RuntimeDirName, ValidNames) {
    for (const char* name : {"a", "vm1", "VM-1", "my_vm.test", "0", "a..b", "a-", "a."}) {
        EXPECT_TRUE(RuntimeDir::valid_name(name)) << name;
        EXPECT_NO_THROW(RuntimeDir::check_name(name)) << name;
    }
    EXPECT_TRUE(RuntimeDir::valid_name(std::string(64, 'a')));
}

TEST(RuntimeDirName, InvalidNames) {
    for (const std::string& name :
         {std::string(), std::string(65, 'a'), std::string("a/b"), std::string("/"),
          std::string(".."), std::string("."), std::string(".hidden"), std::string("-rf"),
          std::string("a b"), std::string(" a"), std::string("a\n"), std::string("caf\xc3\xa9"),
          std::string("a\0b", 3), std::string("a:b"), std::string("a*")}) {
        EXPECT_FALSE(RuntimeDir::valid_name(name)) << name;
        EXPECT_EQ(thrown_errno<SystemError>([&] { RuntimeDir::check_name(name); }), EINVAL) << name;
    }
}

TEST(RuntimeDirPath, EnvironmentIsHonoured) {
    {
        const ScopedEnv env(RuntimeDir::env_var, "/tmp/somewhere-else");
        EXPECT_EQ(RuntimeDir().path(), "/tmp/somewhere-else");
        EXPECT_EQ(RuntimeDir("/explicit").path(), "/explicit");
    }
    // Unset or empty: the default for this process's user.
    const ScopedEnv xdg("XDG_RUNTIME_DIR", "/run/user/4242");
    const std::string expected = ::geteuid() == 0 ? "/run/vmfork" : "/run/user/4242/vmfork";
    {
        const ScopedEnv env(RuntimeDir::env_var, nullptr);
        EXPECT_EQ(RuntimeDir().path(), expected);
    }
    {
        const ScopedEnv env(RuntimeDir::env_var, "");
        EXPECT_EQ(RuntimeDir().path(), expected);
    }
}

TEST(RuntimeDirPath, RootKeepsRunVmfork) {
    EXPECT_EQ(RuntimeDir::default_path_for(0, nullptr), "/run/vmfork");
    EXPECT_EQ(RuntimeDir::default_path_for(0, "/run/user/0"), "/run/vmfork");
    EXPECT_EQ(RuntimeDir::root_path, std::string("/run/vmfork"));
}

TEST(RuntimeDirPath, UsersGetTheirXdgRuntimeDir) {
    EXPECT_EQ(RuntimeDir::default_path_for(1000, "/run/user/1000"), "/run/user/1000/vmfork");
    EXPECT_EQ(RuntimeDir::default_path_for(1000, "/run/user/1000/"), "/run/user/1000/vmfork");
    EXPECT_EQ(RuntimeDir::default_path_for(1000, "/"), "/vmfork");
    // No login session (su, cron) or an invalid (relative) value: a per-uid directory.
    EXPECT_EQ(RuntimeDir::default_path_for(1000, nullptr), "/tmp/vmfork-1000");
    EXPECT_EQ(RuntimeDir::default_path_for(1000, ""), "/tmp/vmfork-1000");
    EXPECT_EQ(RuntimeDir::default_path_for(65534, "run/user/65534"), "/tmp/vmfork-65534");
}

TEST(RuntimeDirPath, FilePaths) {
    const RuntimeDir dir("/run/x");
    EXPECT_EQ(dir.socket_path("vm"), "/run/x/vm.sock");
    EXPECT_EQ(dir.lock_path("vm"), "/run/x/vm.lock");
    EXPECT_EQ(dir.console_path("vm"), "/run/x/vm.console");
}

TEST_F(RuntimeDirTest, EnsureCreatesNestedDirectories) {
    const RuntimeDir nested(root_ + "/a/b//c/");
    EXPECT_FALSE(exists(root_ + "/a"));
    nested.ensure();
    for (const char* sub : {"/a", "/a/b", "/a/b/c"}) {
        struct stat st {};
        ASSERT_EQ(::stat((root_ + sub).c_str(), &st), 0) << sub;
        EXPECT_TRUE(S_ISDIR(st.st_mode));
        EXPECT_EQ(st.st_mode & 0077, 0U) << sub << ": created directories are private";
    }
    nested.ensure(); // idempotent
    EXPECT_TRUE(RuntimeDir(root_ + "/a/b/c").live_names().empty());
}

TEST_F(RuntimeDirTest, EnsureFailsOnAFile) {
    touch(root_ + "/file");
    EXPECT_EQ(thrown_errno<SystemError>([&] { RuntimeDir(root_ + "/file/sub").ensure(); }),
              ENOTDIR);
    EXPECT_EQ(thrown_errno<SystemError>([&] { RuntimeDir(root_ + "/file").ensure(); }), ENOTDIR);
}

TEST_F(RuntimeDirTest, EnsureRefusesADirectoryOthersCanWrite) {
    const std::string open_dir = root_ + "/open";
    ASSERT_EQ(::mkdir(open_dir.c_str(), 0700), 0);
    ASSERT_EQ(::chmod(open_dir.c_str(), 01777), 0); // like /tmp
    EXPECT_EQ(thrown_errno<SystemError>([&] { RuntimeDir(open_dir).ensure(); }), EPERM);
    ASSERT_EQ(::chmod(open_dir.c_str(), 0755), 0);
    EXPECT_NO_THROW(RuntimeDir(open_dir).ensure());
}

// What keeps a user from taking over another user's fallback /tmp/vmfork-UID: a
// directory someone else made is refused. Needs two users: run as root, checked in a
// child that drops to an unprivileged uid.
TEST_F(RuntimeDirTest, EnsureRefusesAnotherUsersDirectory) {
    if (::geteuid() != 0) {
        GTEST_SKIP() << "needs root to act as two users";
    }
    constexpr uid_t other_uid = 65534; // nobody
    const std::string theirs = root_ + "/theirs";
    ASSERT_EQ(::mkdir(theirs.c_str(), 0700), 0);
    ASSERT_EQ(::chmod(root_.c_str(), 0755), 0); // the child must reach it
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        // Child: no gtest assertions. Exit codes: 0 = refused with EPERM, 1 = accepted,
        // 2 = other error, 3 = setuid failed.
        if (::setgid(other_uid) != 0 || ::setuid(other_uid) != 0) {
            ::_exit(3);
        }
        try {
            RuntimeDir(theirs).ensure();
            ::_exit(1);
        } catch (const SystemError& e) {
            ::_exit(e.error() == EPERM ? 0 : 2);
        } catch (...) {
            ::_exit(2);
        }
    }
    int wstatus = 0;
    ASSERT_EQ(::waitpid(pid, &wstatus, 0), pid);
    ASSERT_TRUE(WIFEXITED(wstatus));
    EXPECT_EQ(WEXITSTATUS(wstatus), 0) << "a directory root made must be refused to uid 65534";
    // Root may use any user's directory.
    EXPECT_NO_THROW(RuntimeDir(theirs).ensure());
}

TEST_F(RuntimeDirTest, MissingDirectoryHasNoLiveNames) {
    EXPECT_TRUE(RuntimeDir(root_ + "/missing").live_names().empty());
    EXPECT_FALSE(RuntimeDir(root_ + "/missing").in_use("vm"));
}

TEST_F(RuntimeDirTest, NameLockIsExclusive) {
    {
        const NameLock first = NameLock::acquire(dir_, "vm");
        EXPECT_EQ(first.name(), "vm");
        EXPECT_TRUE(exists(dir_.lock_path("vm")));
        EXPECT_TRUE(dir_.in_use("vm"));
        try {
            static_cast<void>(NameLock::acquire(dir_, "vm"));
            FAIL() << "acquired twice";
        } catch (const SystemError& e) {
            EXPECT_EQ(e.error(), EEXIST);
            EXPECT_NE(std::string(e.what()).find("a VM named vm is already running"),
                      std::string::npos)
                << e.what();
        }
        // The failed attempt must not have removed the holder's files.
        EXPECT_TRUE(exists(dir_.lock_path("vm")));
        EXPECT_TRUE(dir_.in_use("vm"));
        // Another name is independent.
        const NameLock other = NameLock::acquire(dir_, "other");
        EXPECT_TRUE(dir_.in_use("other"));
    }
    EXPECT_FALSE(dir_.in_use("vm"));
    EXPECT_FALSE(exists(dir_.lock_path("vm")));
    const NameLock again = NameLock::acquire(dir_, "vm");
    EXPECT_TRUE(dir_.in_use("vm"));
}

TEST_F(RuntimeDirTest, AcquireRejectsBadNames) {
    EXPECT_EQ(
        thrown_errno<SystemError>([&] { static_cast<void>(NameLock::acquire(dir_, "../x")); }),
        EINVAL);
    EXPECT_FALSE(exists(root_ + "/../x.lock"));
}

TEST_F(RuntimeDirTest, AcquireRemovesAStaleSocket) {
    touch(dir_.socket_path("vm"));
    touch(dir_.console_path("vm"));
    {
        const NameLock lock = NameLock::acquire(dir_, "vm");
        EXPECT_FALSE(exists(dir_.socket_path("vm")));
        touch(dir_.socket_path("vm")); // what the VMM's server would bind
        struct stat st {};
        ASSERT_EQ(::stat(dir_.lock_path("vm").c_str(), &st), 0);
        EXPECT_EQ(st.st_mode & 07777, 0600U);
    }
    // The destructor removes the socket and the lock, not the console.
    EXPECT_FALSE(exists(dir_.socket_path("vm")));
    EXPECT_FALSE(exists(dir_.lock_path("vm")));
    EXPECT_TRUE(exists(dir_.console_path("vm")));
}

TEST_F(RuntimeDirTest, MovedNameLockKeepsTheLock) {
    std::optional<NameLock> moved;
    {
        NameLock lock = NameLock::acquire(dir_, "vm");
        moved.emplace(std::move(lock));
    } // the moved-from lock must not remove anything
    EXPECT_TRUE(exists(dir_.lock_path("vm")));
    EXPECT_TRUE(dir_.in_use("vm"));
    EXPECT_EQ(moved->name(), "vm");
    moved.reset();
    EXPECT_FALSE(dir_.in_use("vm"));
}

TEST_F(RuntimeDirTest, LiveNamesListsHeldAndCleansStale) {
    const NameLock b = NameLock::acquire(dir_, "b-vm");
    const NameLock a = NameLock::acquire(dir_, "a-vm");
    { const NameLock released = NameLock::acquire(dir_, "released"); }
    // A VMM that died: lock and socket left behind, nobody holds the lock.
    touch(dir_.lock_path("stale"));
    touch(dir_.socket_path("stale"));
    touch(dir_.console_path("stale"));
    touch(root_ + "/unrelated.txt");
    touch(root_ + "/.lock");

    EXPECT_TRUE(dir_.in_use("a-vm"));
    EXPECT_FALSE(dir_.in_use("stale"));
    EXPECT_FALSE(dir_.in_use("released"));
    EXPECT_FALSE(dir_.in_use("../etc"));
    EXPECT_TRUE(exists(dir_.lock_path("stale"))) << "in_use() only looks";

    EXPECT_EQ(dir_.live_names(), Names({"a-vm", "b-vm"}));
    EXPECT_FALSE(exists(dir_.lock_path("stale")));
    EXPECT_FALSE(exists(dir_.socket_path("stale")));
    EXPECT_TRUE(exists(dir_.console_path("stale")));
    EXPECT_TRUE(exists(root_ + "/unrelated.txt"));
    // The held names keep their files.
    EXPECT_TRUE(exists(dir_.lock_path("a-vm")));
    EXPECT_TRUE(dir_.in_use("a-vm"));
    EXPECT_EQ(dir_.live_names(), Names({"a-vm", "b-vm"}));
}

TEST_F(RuntimeDirTest, LockHeldByAnotherProcess) {
    std::array<int, 2> pipe_fds{-1, -1};
    ASSERT_EQ(::pipe2(pipe_fds.data(), O_CLOEXEC), 0);
    UniqueFd read_end(pipe_fds[0]);
    UniqueFd write_end(pipe_fds[1]);
    touch(dir_.socket_path("child")); // stale, from an earlier VMM

    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        // Child: take the lock, report, wait to be killed. No gtest assertions here.
        char status = 'y';
        try {
            const NameLock lock = NameLock::acquire(dir_, "child");
            // As if it bound its socket.
            static_cast<void>(
                ::open(dir_.socket_path("child").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
            static_cast<void>(::write(write_end.get(), &status, 1));
            for (;;) {
                ::pause();
            }
        } catch (...) {
            status = 'n';
            static_cast<void>(::write(write_end.get(), &status, 1));
        }
        ::_exit(1);
    }
    write_end.reset();
    char status = 0;
    ASSERT_EQ(::read(read_end.get(), &status, 1), 1);
    ASSERT_EQ(status, 'y');

    EXPECT_TRUE(dir_.in_use("child"));
    EXPECT_EQ(dir_.live_names(), Names({"child"}));
    EXPECT_EQ(
        thrown_errno<SystemError>([&] { static_cast<void>(NameLock::acquire(dir_, "child")); }),
        EEXIST);
    EXPECT_TRUE(exists(dir_.socket_path("child")));

    ASSERT_EQ(::kill(pid, SIGKILL), 0);
    int wstatus = 0;
    ASSERT_EQ(::waitpid(pid, &wstatus, 0), pid);
    EXPECT_TRUE(WIFSIGNALED(wstatus));

    // The kernel released the lock with the process; the files are left behind.
    EXPECT_TRUE(exists(dir_.lock_path("child")));
    EXPECT_TRUE(exists(dir_.socket_path("child")));
    EXPECT_FALSE(dir_.in_use("child"));
    EXPECT_TRUE(dir_.live_names().empty());
    EXPECT_FALSE(exists(dir_.lock_path("child")));
    EXPECT_FALSE(exists(dir_.socket_path("child")));
    // And the name can be taken again.
    const NameLock lock = NameLock::acquire(dir_, "child");
    EXPECT_TRUE(dir_.in_use("child"));
}

} // namespace
} // namespace vmfork::control
