// SPDX-License-Identifier: GPL-2.0
#pragma once

#include <string>
#include <sys/types.h>
#include <vector>

#include "vmfork/unique_fd.h"

namespace vmfork::control {

// Where VMM processes keep their files: $VMFORK_RUNTIME_DIR, else default_path_for()
// the effective user: /run/vmfork for root, $XDG_RUNTIME_DIR/vmfork for anyone else.
// Per VM name: NAME.sock (control socket), NAME.lock (held with flock by the VMM for
// its whole life: the kernel drops it when the process dies, even by SIGKILL, so a
// leftover NAME.sock is known stale), NAME.console (the serial output).
class RuntimeDir {
public:
    static constexpr const char* env_var = "VMFORK_RUNTIME_DIR";
    static constexpr const char* root_path = "/run/vmfork";

    // The directory when $VMFORK_RUNTIME_DIR is unset or empty, for a process of
    // effective uid euid given $XDG_RUNTIME_DIR (null if unset): root_path for root;
    // for other users xdg_runtime_dir + "/vmfork" (pam_systemd's /run/user/UID, private
    // to the user) if it is an absolute path, else /tmp/vmfork-UID (no login session,
    // e.g. su or a cron job), which ensure() refuses if another user made it first.
    static std::string default_path_for(uid_t euid, const char* xdg_runtime_dir);

    // From the environment (or path if given); does not create it.
    explicit RuntimeDir(std::string path = {});
    // Creates the directory (mode 0700, parents as needed); throws SystemError. The
    // directory itself must belong to the effective user (any owner for root) and not
    // be writable by other users (EPERM): a VM's socket there takes its commands.
    void ensure() const;

    // 1..64 chars of [A-Za-z0-9._-], not starting with '.' or '-'.
    static bool valid_name(const std::string& name);
    // Throws SystemError(EINVAL) naming the rule when !valid_name(name).
    static void check_name(const std::string& name);

    [[nodiscard]] const std::string& path() const noexcept { return path_; }
    [[nodiscard]] std::string socket_path(const std::string& name) const;
    [[nodiscard]] std::string lock_path(const std::string& name) const;
    [[nodiscard]] std::string console_path(const std::string& name) const;

    // Names with a NAME.lock held by a live process, sorted. Removes the files of
    // names whose lock is free (a VMM that died without cleaning up).
    [[nodiscard]] std::vector<std::string> live_names() const;
    // True if a live VMM holds name's lock.
    [[nodiscard]] bool in_use(const std::string& name) const;

private:
    std::string path_;
};

// Holds NAME.lock for a VMM's lifetime. acquire() throws SystemError(EEXIST, "a VM
// named X is already running") if another process holds it; on success it removes a
// stale NAME.sock so the caller can bind. The destructor removes NAME.sock and
// NAME.lock (the console file stays until the name is reused or cleaned).
class NameLock {
public:
    static NameLock acquire(const RuntimeDir& dir, const std::string& name);
    ~NameLock();
    NameLock(NameLock&& other) noexcept;
    NameLock& operator=(NameLock&&) = delete;
    NameLock(const NameLock&) = delete;
    NameLock& operator=(const NameLock&) = delete;

    [[nodiscard]] const std::string& name() const noexcept { return name_; }

private:
    NameLock(RuntimeDir dir, std::string name, UniqueFd fd);
    RuntimeDir dir_;
    std::string name_;
    UniqueFd fd_;
};

} // namespace vmfork::control
