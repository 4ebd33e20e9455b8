// SPDX-License-Identifier: GPL-2.0
// The two mechanisms on a filesystem: VMM layers (the real LayeredDisk, as the VMM
// forks it) and reflink copies (FICLONE), each on an XFS of its own made with
// reflink=1 on a loop device.
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <fmt/format.h>

#include "host.h"
#include "mechanism.h"
#include "vmfork/system_error.h"
#include "vmfork/vmm/layered_disk.h"

namespace vmfork::diskbench {

namespace {

// Room for the image, its clones' writes and XFS's own metadata; sparse.
std::uint64_t fs_size(const ImageLayout& layout) {
    return layout.size() * 2;
}

UniqueFd open_checked(const std::string& path, int flags) {
    UniqueFd fd(::open(path.c_str(), flags | O_CLOEXEC, 0600));
    if (!fd) {
        throw SystemError::from_errno("open " + path);
    }
    return fd;
}

// A clone's fork, as the VMM does it (LinuxProfile::fork_disks, then open_disks in the
// clone's process): the parent's view freezes its top layer and starts a new one;
// the clone opens the base read-only, each frozen layer from its descriptor (here a
// dup of the parent's; the VMM passes it to the clone's process) and starts its own
// top layer.
class LayersMechanism final : public Mechanism {
public:
    LayersMechanism(const std::string& dir, const ImageLayout& layout)
        : layout_(layout), xfs_(dir, fs_size(layout)), image_(xfs_.mount().path() + "/image.raw") {}

    [[nodiscard]] std::string name() const override { return "layers"; }
    [[nodiscard]] std::string needs() const override {
        return "nothing: any filesystem, no privilege";
    }
    [[nodiscard]] bool direct_io() const override { return false; }

    void prepare() override {
        const UniqueFd fd = make_sparse_file(image_, layout_.size());
        write_image(fd.get(), layout_, image_);
        base_ = std::make_shared<RawDisk>(image_, true);
    }

    // A parent that wrote since its last fork (one block; it ran in between): its fork
    // freezes a layer, so the map (1 bit per 4 KiB of disk) is written and the clone
    // reads it back. The dearer case; a parent that wrote nothing adds no layer.
    void before_clone() override {
        parent_ = std::make_unique<LayeredDisk>(base_, std::vector<std::shared_ptr<DiskLayer>>{},
                                                xfs_.mount().path());
        AlignedBuffer b(ImageLayout::block);
        fill_chunk(b.span(), layout_.chunks() + clones_.size());
        parent_->write(layout_.chunk_offset(0), b.span());
    }

    void clone() override {
        const auto chain = parent_->fork();
        auto base = std::make_shared<RawDisk>(image_, true);
        std::vector<std::shared_ptr<DiskLayer>> layers;
        layers.reserve(chain.size());
        for (const auto& l : chain) {
            UniqueFd fd(::fcntl(l->fd(), F_DUPFD_CLOEXEC, 0));
            if (!fd) {
                throw SystemError::from_errno("dup a disk layer");
            }
            layers.push_back(DiskLayer::open_frozen(std::move(fd), base->size()));
        }
        clones_.push_back(
            std::make_unique<LayeredDisk>(base, std::move(layers), xfs_.mount().path()));
    }

    void write(std::size_t clone, std::span<const std::uint64_t> offsets,
               std::span<const std::byte> block) override {
        auto& d = *clones_.at(clone);
        for (const auto off : offsets) {
            d.write(off, block);
        }
        d.flush();
    }

    void read(std::size_t clone, std::uint64_t off, std::span<std::byte> out) override {
        clones_.at(clone)->read(off, out);
    }

    [[nodiscard]] std::uint64_t used_bytes() const override { return xfs_.mount().used_bytes(); }

private:
    ImageLayout layout_;
    XfsOnLoop xfs_;
    std::string image_;
    std::shared_ptr<RawDisk> base_;
    std::unique_ptr<LayeredDisk> parent_;
    std::vector<std::unique_ptr<LayeredDisk>> clones_;
};

// A clone is a new file sharing the image's extents (ioctl FICLONE), opened as a VMM
// would use it (O_DIRECT unless the bench runs --buffered).
class ReflinkMechanism final : public Mechanism {
public:
    ReflinkMechanism(const std::string& dir, const ImageLayout& layout, bool direct)
        : layout_(layout), direct_(direct), xfs_(dir, fs_size(layout)),
          image_(xfs_.mount().path() + "/image.raw") {}

    [[nodiscard]] std::string name() const override { return "reflink"; }
    [[nodiscard]] std::string needs() const override {
        return "a reflink filesystem (XFS reflink=1, btrfs) under the images; no privilege";
    }
    [[nodiscard]] bool direct_io() const override { return direct_; }

    void prepare() override {
        image_fd_ = make_sparse_file(image_, layout_.size());
        write_image(image_fd_.get(), layout_, image_);
    }

    void clone() override {
        const std::string path =
            fmt::format("{}/clone-{}.raw", xfs_.mount().path(), clones_.size());
        UniqueFd fd = open_checked(path, O_RDWR | O_CREAT | O_EXCL | (direct_ ? O_DIRECT : 0));
        if (::ioctl(fd.get(), FICLONE, image_fd_.get()) != 0) {
            throw SystemError::from_errno("ioctl FICLONE " + image_ + " to " + path);
        }
        clones_.push_back(std::move(fd));
    }

    void write(std::size_t clone, std::span<const std::uint64_t> offsets,
               std::span<const std::byte> block) override {
        write_synced(clones_.at(clone).get(), offsets, block, "a reflink clone");
    }

    void read(std::size_t clone, std::uint64_t off, std::span<std::byte> out) override {
        pread_all(clones_.at(clone).get(), out.data(), out.size(), off, "a reflink clone");
    }

    [[nodiscard]] std::uint64_t used_bytes() const override { return xfs_.mount().used_bytes(); }

private:
    ImageLayout layout_;
    bool direct_;
    XfsOnLoop xfs_;
    std::string image_;
    UniqueFd image_fd_;
    std::vector<UniqueFd> clones_;
};

} // namespace

std::unique_ptr<Mechanism> make_layers(const std::string& dir, const ImageLayout& layout) {
    return std::make_unique<LayersMechanism>(dir, layout);
}

std::unique_ptr<Mechanism> make_reflink(const std::string& dir, const ImageLayout& layout,
                                        bool direct) {
    return std::make_unique<ReflinkMechanism>(dir, layout, direct);
}

} // namespace vmfork::diskbench
