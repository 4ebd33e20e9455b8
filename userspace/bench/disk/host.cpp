// SPDX-License-Identifier: GPL-2.0
#include "host.h"

#include <cerrno>
#include <fcntl.h>
#include <filesystem>
#include <linux/loop.h>
#include <spawn.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>

#include "vmfork/system_error.h"

extern char** environ;

namespace vmfork::diskbench {

namespace {

int spawn_and_wait(const std::vector<std::string>& argv) {
    std::vector<char*> args;
    args.reserve(argv.size() + 1);
    for (const auto& a : argv) {
        args.push_back(
            const_cast<char*>(a.c_str())); // NOLINT(cppcoreguidelines-pro-type-const-cast)
    }
    args.push_back(nullptr);
    pid_t pid = 0;
    const int err = ::posix_spawnp(&pid, args[0], nullptr, nullptr, args.data(), environ);
    if (err != 0) {
        throw SystemError(err, "cannot run " + argv[0]);
    }
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) {
            throw SystemError::from_errno("waitpid for " + argv[0]);
        }
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

} // namespace

void run(const std::vector<std::string>& argv) {
    const int rc = spawn_and_wait(argv);
    if (rc != 0) {
        throw SystemError(ECHILD, fmt::format("{} exited with status {}", argv[0], rc));
    }
}

void modprobe(const std::string& name) {
    (void)spawn_and_wait({"modprobe", "-q", name});
}

ScratchDir::ScratchDir(const std::string& parent) {
    std::string tmpl = parent + "/vmfork-disk-bench.XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) {
        throw SystemError::from_errno("mkdtemp in " + parent);
    }
    path_ = tmpl;
}

ScratchDir::~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
}

UniqueFd make_sparse_file(const std::string& path, std::uint64_t size) {
    UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (!fd) {
        throw SystemError::from_errno("create " + path);
    }
    if (::ftruncate(fd.get(), static_cast<off_t>(size)) != 0) {
        throw SystemError::from_errno("ftruncate " + path);
    }
    return fd;
}

LoopDevice::LoopDevice(const std::string& file) {
    const UniqueFd backing(::open(file.c_str(), O_RDWR | O_CLOEXEC));
    if (!backing) {
        throw SystemError::from_errno("open " + file);
    }
    const UniqueFd control(::open("/dev/loop-control", O_RDWR | O_CLOEXEC));
    if (!control) {
        throw SystemError::from_errno("open /dev/loop-control (modprobe loop)");
    }
    // Another process may take the free device first: then ask again.
    for (int attempt = 0;; ++attempt) {
        const int n = ::ioctl(control.get(), LOOP_CTL_GET_FREE);
        if (n < 0) {
            throw SystemError::from_errno("LOOP_CTL_GET_FREE");
        }
        path_ = fmt::format("/dev/loop{}", n);
        fd_.reset(::open(path_.c_str(), O_RDWR | O_CLOEXEC));
        if (!fd_) {
            throw SystemError::from_errno("open " + path_);
        }
        loop_config cfg{};
        cfg.fd = static_cast<__u32>(backing.get());
        cfg.info.lo_flags = LO_FLAGS_AUTOCLEAR;
        if (::ioctl(fd_.get(), LOOP_CONFIGURE, &cfg) == 0) {
            return;
        }
        if (errno != EBUSY || attempt == 10) {
            throw SystemError::from_errno("LOOP_CONFIGURE " + path_ + " over " + file);
        }
        fd_.reset();
    }
}

LoopDevice::~LoopDevice() {
    // Autoclear detaches it when the last user closes it; this makes it immediate
    // unless a user (a mount, a dm table) still holds it, which then releases it.
    (void)::ioctl(fd_.get(), LOOP_CLR_FD, 0);
}

std::string LoopDevice::dev() const {
    struct stat st {};
    if (::fstat(fd_.get(), &st) != 0) {
        throw SystemError::from_errno("fstat " + path_);
    }
    return fmt::format("{}:{}", major(st.st_rdev), minor(st.st_rdev));
}

Mount::Mount(const std::string& source, const std::string& target, const std::string& type)
    : target_(target) {
    if (::mkdir(target.c_str(), 0700) != 0 && errno != EEXIST) {
        throw SystemError::from_errno("mkdir " + target);
    }
    if (::mount(source.c_str(), target.c_str(), type.c_str(), 0, nullptr) != 0) {
        const int err = errno;
        ::rmdir(target.c_str());
        throw SystemError(err, "mount " + source + " (" + type + ") on " + target);
    }
}

Mount::~Mount() {
    if (::umount2(target_.c_str(), 0) != 0) {
        (void)::umount2(target_.c_str(), MNT_DETACH);
    }
    ::rmdir(target_.c_str());
}

std::uint64_t Mount::used_bytes() const {
    struct statfs s {};
    if (::statfs(target_.c_str(), &s) != 0) {
        throw SystemError::from_errno("statfs " + target_);
    }
    return static_cast<std::uint64_t>(s.f_blocks - s.f_bfree) *
           static_cast<std::uint64_t>(s.f_bsize);
}

namespace {

const std::string& formatted(const LoopDevice& loop) {
    run({"mkfs.xfs", "-q", "-f", "-m", "reflink=1", loop.path()});
    return loop.path();
}

} // namespace

XfsOnLoop::XfsOnLoop(const std::string& dir, std::uint64_t size)
    : backing_(make_sparse_file(dir + "/xfs.img", size)), loop_(dir + "/xfs.img"),
      mount_(formatted(loop_), dir + "/mnt", "xfs") {}

} // namespace vmfork::diskbench
