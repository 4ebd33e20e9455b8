// SPDX-License-Identifier: GPL-2.0
#pragma once

// The host resources vmfork-disk-bench sets up, each undone by its destructor: a
// scratch directory, sparse backing files, loop devices, a mounted filesystem.

#include <cstdint>
#include <string>
#include <vector>

#include "vmfork/unique_fd.h"

namespace vmfork::diskbench {

// Runs argv (searched in PATH) and waits; throws SystemError (ECHILD) naming the
// command when it cannot start or exits non-zero. Its output goes to our stderr.
void run(const std::vector<std::string>& argv);
// `modprobe -q name`; a failure is left to the first use of the module to report.
void modprobe(const std::string& name);

// A directory made by mkdtemp under parent, removed with all it holds.
class ScratchDir {
public:
    explicit ScratchDir(const std::string& parent);
    ~ScratchDir();
    ScratchDir(const ScratchDir&) = delete;
    ScratchDir& operator=(const ScratchDir&) = delete;
    ScratchDir(ScratchDir&&) = delete;
    ScratchDir& operator=(ScratchDir&&) = delete;

    [[nodiscard]] const std::string& path() const { return path_; }

private:
    std::string path_;
};

// A new sparse file of size bytes (a hole throughout), opened read-write.
UniqueFd make_sparse_file(const std::string& path, std::uint64_t size);

// A loop device over a file (LOOP_CONFIGURE, autoclear): detached when destroyed.
class LoopDevice {
public:
    explicit LoopDevice(const std::string& file);
    ~LoopDevice();
    LoopDevice(const LoopDevice&) = delete;
    LoopDevice& operator=(const LoopDevice&) = delete;
    LoopDevice(LoopDevice&&) = delete;
    LoopDevice& operator=(LoopDevice&&) = delete;

    [[nodiscard]] const std::string& path() const { return path_; }
    // "major:minor", as device-mapper tables name devices.
    [[nodiscard]] std::string dev() const;

private:
    UniqueFd fd_;
    std::string path_;
};

// A filesystem mounted at a directory (made here), unmounted and removed when
// destroyed.
class Mount {
public:
    Mount(const std::string& source, const std::string& target, const std::string& type);
    ~Mount();
    Mount(const Mount&) = delete;
    Mount& operator=(const Mount&) = delete;
    Mount(Mount&&) = delete;
    Mount& operator=(Mount&&) = delete;

    [[nodiscard]] const std::string& path() const { return target_; }
    // Bytes in use (statfs: blocks - free blocks).
    [[nodiscard]] std::uint64_t used_bytes() const;

private:
    std::string target_;
};

// An XFS with reflinks (mkfs.xfs -m reflink=1) on a loop device over a sparse file of
// size bytes, mounted at dir/mnt: where the layers and reflink mechanisms keep their
// images.
class XfsOnLoop {
public:
    XfsOnLoop(const std::string& dir, std::uint64_t size);

    [[nodiscard]] const Mount& mount() const { return mount_; }

private:
    UniqueFd backing_;
    LoopDevice loop_;
    Mount mount_;
};

} // namespace vmfork::diskbench
