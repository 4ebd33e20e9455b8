// SPDX-License-Identifier: GPL-2.0
// dm-thin: a thin pool on two loop devices (metadata, data), the image written into a
// thin volume (the origin), a clone a snapshot of it made as containerd's devmapper
// snapshotter makes one: suspend the origin, "create_snap ID ORIGIN" to the pool,
// resume the origin, then create the snapshot's thin device.
#include <fcntl.h>
#include <optional>
#include <unistd.h>

#include <fmt/format.h>

#include "device_mapper.h"
#include "host.h"
#include "mechanism.h"
#include "vmfork/system_error.h"
#include "vmfork/vmm/disk.h"

namespace vmfork::diskbench {

namespace {

constexpr std::uint64_t sector = 512;
constexpr std::uint64_t metadata_size = 64ULL << 20;
constexpr std::uint32_t origin_id = 0;

class ThinMechanism final : public Mechanism {
public:
    ThinMechanism(std::string dir, const ImageLayout& layout, std::uint64_t thin_block, bool direct)
        : layout_(layout), dir_(std::move(dir)), block_(thin_block), direct_(direct),
          prefix_(fmt::format("vmfork-bench-{}", ::getpid())) {
        if (block_ % (std::uint64_t{64} * 1024) != 0 || block_ > (1ULL << 30)) {
            throw SystemError(EINVAL, "thin-pool block size: a multiple of 64 KiB up to 1 GiB");
        }
    }

    [[nodiscard]] std::string name() const override { return "dm-thin"; }
    [[nodiscard]] std::string needs() const override {
        return "root (CAP_SYS_ADMIN for device-mapper), dm-thin-pool, a pool on block devices";
    }
    [[nodiscard]] bool direct_io() const override { return direct_; }

    void prepare() override {
        // The pool's data device has the image's size: room for the image's data and
        // the clones' copies.
        const std::uint64_t data_size = layout_.size();
        meta_file_ = make_sparse_file(dir_ + "/thin-meta.img", metadata_size);
        data_file_ = make_sparse_file(dir_ + "/thin-data.img", data_size);
        meta_loop_.emplace(dir_ + "/thin-meta.img");
        data_loop_.emplace(dir_ + "/thin-data.img");
        // A zeroed metadata device is formatted by the kernel. No features: blocks are
        // zeroed when first provisioned, as in containerd's example pool.
        const std::uint64_t data_blocks = data_size / block_;
        pool_.emplace(dm_, prefix_ + "-pool", data_size / sector, "thin-pool",
                      fmt::format("{} {} {} {}", meta_loop_->dev(), data_loop_->dev(),
                                  block_ / sector, data_blocks / 10),
                      dir_ + "/pool");
        dm_.message(pool_->name(), fmt::format("create_thin {}", origin_id));
        origin_.emplace(dm_, prefix_ + "-origin", layout_.size() / sector, "thin",
                        fmt::format("{} {}", pool_->dev(), origin_id), dir_ + "/origin");
        const UniqueFd fd = open_node(origin_->node());
        write_image(fd.get(), layout_, "the thin origin");
    }

    void clone() override {
        const auto id = static_cast<std::uint32_t>(snaps_.size() + 1);
        dm_.suspend(origin_->name());
        try {
            dm_.message(pool_->name(), fmt::format("create_snap {} {}", id, origin_id));
        } catch (...) {
            dm_.resume(origin_->name());
            throw;
        }
        dm_.resume(origin_->name());
        // The devices are in declaration order here and removed in reverse.
        snaps_.push_back(std::make_unique<DmDevice>(
            dm_, fmt::format("{}-snap{}", prefix_, id), layout_.size() / sector, "thin",
            fmt::format("{} {}", pool_->dev(), id), fmt::format("{}/snap{}", dir_, id)));
        snap_fds_.push_back(open_node(snaps_.back()->node()));
    }

    void write(std::size_t clone, std::span<const std::uint64_t> offsets,
               std::span<const std::byte> block) override {
        write_synced(snap_fds_.at(clone).get(), offsets, block, "a thin snapshot");
    }

    void read(std::size_t clone, std::uint64_t off, std::span<std::byte> out) override {
        pread_all(snap_fds_.at(clone).get(), out.data(), out.size(), off, "a thin snapshot");
    }

    [[nodiscard]] std::uint64_t used_bytes() const override {
        const auto s = bench::ThinPoolStatus::parse(dm_.status(pool_->name()));
        if (!s.read_write) {
            throw SystemError(EIO, "the thin pool is no longer read-write");
        }
        return s.used_data_blocks * block_;
    }

    ~ThinMechanism() override {
        snap_fds_.clear(); // closed before their devices go
        snaps_.clear();    // newest first does not matter: snapshots are independent
    }
    ThinMechanism(const ThinMechanism&) = delete;
    ThinMechanism& operator=(const ThinMechanism&) = delete;
    ThinMechanism(ThinMechanism&&) = delete;
    ThinMechanism& operator=(ThinMechanism&&) = delete;

private:
    [[nodiscard]] UniqueFd open_node(const std::string& node) const {
        UniqueFd fd(::open(node.c_str(), O_RDWR | O_CLOEXEC | (direct_ ? O_DIRECT : 0)));
        if (!fd) {
            throw SystemError::from_errno("open " + node);
        }
        return fd;
    }

    ImageLayout layout_;
    std::string dir_;
    std::uint64_t block_;
    bool direct_;
    std::string prefix_;
    DmControl dm_;
    // Made in this order, undone in reverse (members are destroyed bottom up).
    UniqueFd meta_file_;
    UniqueFd data_file_;
    std::optional<LoopDevice> meta_loop_;
    std::optional<LoopDevice> data_loop_;
    std::optional<DmDevice> pool_;
    std::optional<DmDevice> origin_;
    std::vector<std::unique_ptr<DmDevice>> snaps_;
    std::vector<UniqueFd> snap_fds_;
};

} // namespace

std::unique_ptr<Mechanism> make_thin(const std::string& dir, const ImageLayout& layout,
                                     std::uint64_t thin_block, bool direct) {
    return std::make_unique<ThinMechanism>(dir, layout, thin_block, direct);
}

} // namespace vmfork::diskbench
