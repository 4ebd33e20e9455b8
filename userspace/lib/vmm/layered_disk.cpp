// SPDX-License-Identifier: GPL-2.0
#include "vmfork/vmm/layered_disk.h"

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <unistd.h>

#include "vmfork/system_error.h"

namespace vmfork {

namespace {

constexpr std::array<char, 8> magic = {'V', 'M', 'F', 'K', 'L', 'A', 'Y', '1'};

struct MapHeader {
    std::array<char, 8> magic;
    std::uint64_t size;
    std::uint64_t block;
    std::uint64_t count;
};

std::uint64_t blocks_of(std::uint64_t size) {
    return (size + DiskLayer::block - 1) / DiskLayer::block;
}

} // namespace

DiskLayer::DiskLayer(UniqueFd fd, std::uint64_t size)
    : fd_(std::move(fd)), size_(size), bits_((blocks_of(size) + 63) / 64, 0) {}

std::uint64_t DiskLayer::map_offset() const {
    return blocks_of(size_) * block;
}

std::shared_ptr<DiskLayer> DiskLayer::create(const std::string& dir, std::uint64_t size) {
    std::string path = dir + "/vmfork-disk-layer.XXXXXX";
    UniqueFd fd(::mkostemp(path.data(), O_CLOEXEC));
    if (!fd) {
        throw SystemError::from_errno("cannot create a disk layer in " + dir +
                                      " (set VMFORK_DISK_DIR to a writable directory)");
    }
    ::unlink(path.c_str()); // descriptors keep it: freed with the last VM that uses it
    return std::shared_ptr<DiskLayer>(new DiskLayer(std::move(fd), size));
}

std::shared_ptr<DiskLayer> DiskLayer::open_frozen(UniqueFd fd, std::uint64_t size) {
    std::shared_ptr<DiskLayer> l(new DiskLayer(std::move(fd), size));
    MapHeader h{};
    pread_all(l->fd(), &h, sizeof(h), l->map_offset(), "a disk layer's map");
    if (h.magic != magic || h.size != size || h.block != block) {
        throw SystemError(EINVAL, "a disk layer that is not a frozen layer of this disk");
    }
    pread_all(l->fd(), l->bits_.data(), l->bits_.size() * sizeof(std::uint64_t),
              l->map_offset() + sizeof(h), "a disk layer's map");
    std::uint64_t count = 0;
    for (const auto w : l->bits_) {
        count += static_cast<std::uint64_t>(__builtin_popcountll(w));
    }
    if (count != h.count) {
        throw SystemError(EINVAL, "a disk layer whose map does not add up");
    }
    l->count_ = count;
    l->frozen_ = true;
    return l;
}

void DiskLayer::read(std::uint64_t b, std::uint64_t off, std::span<std::byte> out) const {
    pread_all(fd_.get(), out.data(), out.size(), b * block + off, "a disk layer");
}

void DiskLayer::write_block(std::uint64_t b, std::span<const std::byte> data) {
    if (frozen_) {
        throw SystemError(EROFS, "a frozen disk layer");
    }
    pwrite_all(fd_.get(), data.data(), data.size(), b * block, "a disk layer");
    if (!has(b)) {
        bits_[b / 64] |= 1ULL << (b % 64);
        ++count_;
    }
}

void DiskLayer::freeze() {
    if (frozen_) {
        return;
    }
    const MapHeader h{magic, size_, block, count_};
    pwrite_all(fd_.get(), &h, sizeof(h), map_offset(), "a disk layer's map");
    pwrite_all(fd_.get(), bits_.data(), bits_.size() * sizeof(std::uint64_t),
               map_offset() + sizeof(h), "a disk layer's map");
    frozen_ = true;
}

void DiskLayer::sync() const {
    if (::fdatasync(fd_.get()) != 0) {
        throw SystemError::from_errno("fdatasync of a disk layer");
    }
}

LayeredDisk::LayeredDisk(std::shared_ptr<RawDisk> base,
                         std::vector<std::shared_ptr<DiskLayer>> frozen, std::string dir)
    : base_(std::move(base)), frozen_(std::move(frozen)), fork_depth_(frozen_.size()),
      top_(DiskLayer::create(dir, base_->size())), dir_(std::move(dir)) {}

void LayeredDisk::read_below(std::uint64_t b, std::uint64_t off, std::span<std::byte> out) const {
    // Topmost first. NOLINTNEXTLINE(modernize-loop-convert): in reverse.
    for (auto it = frozen_.rbegin(); it != frozen_.rend(); ++it) {
        if ((*it)->has(b)) {
            (*it)->read(b, off, out);
            return;
        }
    }
    base_->read(b * DiskLayer::block + off, out);
}

void LayeredDisk::read(std::uint64_t offset, std::span<std::byte> out) {
    while (!out.empty()) {
        const std::uint64_t b = offset / DiskLayer::block;
        const std::uint64_t off = offset % DiskLayer::block;
        const std::size_t n = std::min<std::uint64_t>(out.size(), DiskLayer::block - off);
        if (top_->has(b)) {
            top_->read(b, off, out.first(n));
        } else {
            read_below(b, off, out.first(n));
        }
        offset += n;
        out = out.subspan(n);
    }
}

void LayeredDisk::write(std::uint64_t offset, std::span<const std::byte> in) {
    std::array<std::byte, DiskLayer::block> buf{};
    while (!in.empty()) {
        const std::uint64_t b = offset / DiskLayer::block;
        const std::uint64_t off = offset % DiskLayer::block;
        // The last block of a disk whose size is not a multiple of the block.
        const std::uint64_t len =
            std::min<std::uint64_t>(DiskLayer::block, size() - b * DiskLayer::block);
        const std::size_t n = std::min<std::uint64_t>(in.size(), len - off);
        if (off != 0 || n != len) {
            // Copy-up: the rest of the block as this view sees it.
            if (top_->has(b)) {
                top_->read(b, 0, std::span(buf).first(len));
            } else {
                read_below(b, 0, std::span(buf).first(len));
            }
        }
        std::memcpy(buf.data() + off, in.data(), n);
        top_->write_block(b, std::span(buf).first(len));
        offset += n;
        in = in.subspan(n);
    }
}

void LayeredDisk::flush() {
    top_->sync();
}

std::vector<std::shared_ptr<DiskLayer>> LayeredDisk::fork() {
    if (top_->blocks() != 0) {
        top_->freeze();
        frozen_.push_back(top_);
        top_ = DiskLayer::create(dir_, size());
    }
    // An empty top is not frozen: a view that wrote nothing since its last fork adds
    // no layer, so chains grow only with generations that wrote.
    return frozen_;
}

void LayeredDisk::reset() {
    // Layers this view froze since (its own forks) stay with the clones that use them.
    frozen_.resize(fork_depth_);
    top_ = DiskLayer::create(dir_, size());
}

std::uint64_t LayeredDisk::shared_blocks() const {
    std::uint64_t n = 0;
    for (const auto& l : frozen_) {
        n += l->blocks();
    }
    return n;
}

} // namespace vmfork
