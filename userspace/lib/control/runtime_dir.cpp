// SPDX-License-Identifier: GPL-2.0
#include "vmfork/control/runtime_dir.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <dirent.h>
#include <fcntl.h>
#include <memory>
#include <sys/file.h>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>
#include <utility>

#include "vmfork/system_error.h"

namespace vmfork::control {

namespace {

constexpr std::size_t max_name_length = 64;
constexpr std::string_view lock_suffix = ".lock";
// NameLock::acquire retries when the lock file it locked was replaced (a stale cleaner
// removed it); this bounds that loop.
constexpr int max_replaced_retries = 100;
// A lock that is busy may be held for a moment only by live_names()/in_use() probing
// it: acquire() looks again a few times before it reports the name as taken.
constexpr int busy_retries = 5;
constexpr auto busy_retry_delay = std::chrono::milliseconds(1);

bool name_char(char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
}

// flock(LOCK_EX | LOCK_NB): true if taken, false if another open file holds it.
bool try_lock(int fd, const std::string& path) {
    for (;;) {
        if (::flock(fd, LOCK_EX | LOCK_NB) == 0) {
            return true;
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno == EWOULDBLOCK) {
            return false;
        }
        throw SystemError::from_errno("cannot lock " + path);
    }
}

// True if fd is still the file at path (it was not unlinked or replaced since it was
// opened).
bool still_at_path(int fd, const std::string& path) {
    struct stat by_fd {};
    struct stat by_path {};
    if (::fstat(fd, &by_fd) < 0) {
        throw SystemError::from_errno("cannot stat " + path);
    }
    if (::stat(path.c_str(), &by_path) < 0) {
        if (errno == ENOENT) {
            return false;
        }
        throw SystemError::from_errno("cannot stat " + path);
    }
    return by_fd.st_dev == by_path.st_dev && by_fd.st_ino == by_path.st_ino;
}

void unlink_if_present(const std::string& path) {
    if (::unlink(path.c_str()) < 0 && errno != ENOENT) {
        throw SystemError::from_errno("cannot remove " + path);
    }
}

enum class LockState { Missing, Held, Free };

// Probes path's lock without creating it. On Free, *fd holds the lock (still taken).
LockState probe(const std::string& path, UniqueFd* fd) {
    for (int attempt = 0; attempt < max_replaced_retries; attempt++) {
        UniqueFd lock(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
        if (!lock) {
            if (errno == ENOENT) {
                return LockState::Missing;
            }
            if (errno == EACCES || errno == ELOOP) {
                return LockState::Held; // not ours to judge or clean
            }
            throw SystemError::from_errno("cannot open " + path);
        }
        if (!try_lock(lock.get(), path)) {
            return LockState::Held;
        }
        if (still_at_path(lock.get(), path)) {
            if (fd != nullptr) {
                *fd = std::move(lock);
            }
            return LockState::Free;
        }
        // Replaced while we opened it: look at the new one.
    }
    return LockState::Held;
}

} // namespace

std::string RuntimeDir::default_path_for(uid_t euid, const char* xdg_runtime_dir) {
    if (euid == 0) {
        return root_path;
    }
    // The XDG Base Directory spec: a relative path in the variable is invalid.
    if (xdg_runtime_dir != nullptr && xdg_runtime_dir[0] == '/') {
        std::string path = xdg_runtime_dir;
        while (path.size() > 1 && path.back() == '/') {
            path.pop_back();
        }
        return path == "/" ? "/vmfork" : path + "/vmfork";
    }
    return "/tmp/vmfork-" + std::to_string(euid);
}

RuntimeDir::RuntimeDir(std::string path) : path_(std::move(path)) {
    if (path_.empty()) {
        const char* env = std::getenv(env_var); // NOLINT(concurrency-mt-unsafe)
        if (env != nullptr && *env != '\0') {
            path_ = env;
        } else {
            path_ =
                default_path_for(::geteuid(),
                                 std::getenv("XDG_RUNTIME_DIR")); // NOLINT(concurrency-mt-unsafe)
        }
    }
}

void RuntimeDir::ensure() const {
    if (path_.empty()) {
        throw SystemError(EINVAL, "empty runtime directory path");
    }
    // Each prefix ending before a '/' (skipping the root and repeated slashes), then
    // the whole path.
    std::size_t pos = 0;
    for (;;) {
        pos = path_.find('/', pos + 1);
        const std::string prefix = path_.substr(0, pos);
        if (!prefix.empty() && prefix.back() != '/') {
            if (::mkdir(prefix.c_str(), 0700) < 0) {
                if (errno != EEXIST) {
                    throw SystemError::from_errno("cannot create directory " + prefix);
                }
                struct stat st {};
                if (::stat(prefix.c_str(), &st) < 0) {
                    throw SystemError::from_errno("cannot stat " + prefix);
                }
                if (!S_ISDIR(st.st_mode)) {
                    throw SystemError(ENOTDIR, "cannot create directory " + prefix);
                }
            }
        }
        if (pos == std::string::npos) {
            break;
        }
    }
    // Whoever made the directory decides who can reach the sockets in it: a directory
    // another user made first (say /tmp/vmfork-UID) or one anyone can write to would
    // let them swap a VM's socket for their own.
    struct stat st {};
    if (::stat(path_.c_str(), &st) < 0) {
        throw SystemError::from_errno("cannot stat " + path_);
    }
    const uid_t euid = ::geteuid();
    if (euid != 0 && st.st_uid != euid) {
        throw SystemError(EPERM, "runtime directory " + path_ + " belongs to uid " +
                                     std::to_string(st.st_uid) + ", not to you (uid " +
                                     std::to_string(euid) +
                                     "): remove it or set VMFORK_RUNTIME_DIR");
    }
    if ((st.st_mode & S_IWOTH) != 0) {
        throw SystemError(EPERM, "runtime directory " + path_ +
                                     " is writable by every user: use a private one "
                                     "(VMFORK_RUNTIME_DIR)");
    }
}

bool RuntimeDir::valid_name(const std::string& name) {
    return !name.empty() && name.size() <= max_name_length && name.front() != '.' &&
           name.front() != '-' && std::all_of(name.begin(), name.end(), name_char);
}

void RuntimeDir::check_name(const std::string& name) {
    if (!valid_name(name)) {
        throw SystemError(EINVAL, "invalid VM name '" + name +
                                      "': use 1..64 characters of [A-Za-z0-9._-], not starting "
                                      "with '.' or '-'");
    }
}

std::string RuntimeDir::socket_path(const std::string& name) const {
    return path_ + "/" + name + ".sock";
}

std::string RuntimeDir::lock_path(const std::string& name) const {
    return path_ + "/" + name + std::string(lock_suffix);
}

std::string RuntimeDir::console_path(const std::string& name) const {
    return path_ + "/" + name + ".console";
}

std::vector<std::string> RuntimeDir::live_names() const {
    std::vector<std::string> candidates;
    {
        const std::unique_ptr<DIR, int (*)(DIR*)> dir(::opendir(path_.c_str()), ::closedir);
        if (!dir) {
            if (errno == ENOENT) {
                return {};
            }
            throw SystemError::from_errno("cannot open directory " + path_);
        }
        for (;;) {
            errno = 0;
            const dirent* entry = ::readdir(dir.get()); // NOLINT(concurrency-mt-unsafe)
            if (entry == nullptr) {
                if (errno != 0) {
                    throw SystemError::from_errno("cannot read directory " + path_);
                }
                break;
            }
            const std::string_view file(static_cast<const char*>(entry->d_name));
            if (file.size() > lock_suffix.size() && file.ends_with(lock_suffix)) {
                std::string name(file.substr(0, file.size() - lock_suffix.size()));
                if (valid_name(name)) {
                    candidates.push_back(std::move(name));
                }
            }
        }
    }
    std::vector<std::string> live;
    for (const std::string& name : candidates) {
        UniqueFd lock;
        switch (probe(lock_path(name), &lock)) {
        case LockState::Missing:
            break;
        case LockState::Held:
            live.push_back(name);
            break;
        case LockState::Free:
            // Stale: the VMM died. Remove its files while holding the lock, socket first
            // (once the lock file is gone a new VMM may create both again).
            unlink_if_present(socket_path(name));
            unlink_if_present(lock_path(name));
            break;
        }
    }
    std::sort(live.begin(), live.end());
    return live;
}

bool RuntimeDir::in_use(const std::string& name) const {
    if (!valid_name(name)) {
        return false;
    }
    return probe(lock_path(name), nullptr) == LockState::Held;
}

NameLock::NameLock(RuntimeDir dir, std::string name, UniqueFd fd)
    : dir_(std::move(dir)), name_(std::move(name)), fd_(std::move(fd)) {}

NameLock::NameLock(NameLock&& other) noexcept
    : dir_(std::move(other.dir_)), name_(std::move(other.name_)), fd_(std::move(other.fd_)) {}

NameLock NameLock::acquire(const RuntimeDir& dir, const std::string& name) {
    RuntimeDir::check_name(name);
    const std::string path = dir.lock_path(name);
    int busy = 0;
    for (int attempt = 0; attempt < max_replaced_retries; attempt++) {
        UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
        if (!fd) {
            throw SystemError::from_errno("cannot open lock file " + path);
        }
        const bool locked = try_lock(fd.get(), path);
        // Whether taken or not, the lock only counts if the file is still the one at
        // path: live_names() may have removed it as stale between our open and flock.
        if (!still_at_path(fd.get(), path)) {
            continue;
        }
        if (!locked) {
            if (++busy > busy_retries) {
                throw SystemError(EEXIST, "a VM named " + name + " is already running");
            }
            std::this_thread::sleep_for(busy_retry_delay);
            continue;
        }
        unlink_if_present(dir.socket_path(name));
        return {dir, name, std::move(fd)};
    }
    throw SystemError(EAGAIN, "cannot lock " + path + ": it keeps being replaced");
}

NameLock::~NameLock() {
    if (!fd_) {
        return; // moved from
    }
    // Both while still holding the lock, socket first (see live_names()).
    try {
        ::unlink(dir_.socket_path(name_).c_str());
        ::unlink(dir_.lock_path(name_).c_str());
    } catch (...) { // NOLINT(bugprone-empty-catch): best effort; out of memory only
    }
}

} // namespace vmfork::control
