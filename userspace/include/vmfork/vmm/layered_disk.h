// SPDX-License-Identifier: GPL-2.0
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "vmfork/unique_fd.h"
#include "vmfork/vmm/disk.h"

namespace vmfork {

// One layer of a linked-clone disk: the 4 KiB blocks written in it, in a file of its
// own that is unlinked as soon as it is made. Only descriptors keep it (the VMM
// processes whose disks use it, inherited by clones), so the kernel frees its space
// when the last VM using it ends, whichever way it ends.
//
// File layout: block b at b * block; after the data (at map_offset()), once the layer
// is frozen, a header and the bitmap of the blocks present. A frozen layer never
// changes again; only its owner writes to a layer before that.
class DiskLayer {
public:
    static constexpr std::uint64_t block = 4096;

    // A new empty layer for a disk of size bytes, in directory dir.
    static std::shared_ptr<DiskLayer> create(const std::string& dir, std::uint64_t size);
    // A frozen layer from its descriptor: its map is read and checked (EINVAL).
    static std::shared_ptr<DiskLayer> open_frozen(UniqueFd fd, std::uint64_t size);

    [[nodiscard]] bool has(std::uint64_t b) const { return ((bits_[b / 64] >> (b % 64)) & 1) != 0; }
    [[nodiscard]] std::uint64_t blocks() const { return count_; }
    [[nodiscard]] bool frozen() const { return frozen_; }
    [[nodiscard]] int fd() const { return fd_.get(); }
    // Bytes [off, off + out.size()) of block b (present here).
    void read(std::uint64_t b, std::uint64_t off, std::span<std::byte> out) const;
    // Writes a whole block and marks it present (not frozen only).
    void write_block(std::uint64_t b, std::span<const std::byte> data);
    // Makes the layer immutable: writes its map after the data.
    void freeze();
    void sync() const;

private:
    DiskLayer(UniqueFd fd, std::uint64_t size);
    [[nodiscard]] std::uint64_t map_offset() const;

    UniqueFd fd_;
    std::uint64_t size_ = 0;
    std::vector<std::uint64_t> bits_;
    std::uint64_t count_ = 0;
    bool frozen_ = false;
};

// A linked-clone view of a disk: the base image (read-only) under frozen layers that
// other views share, and this view's own top layer, where its writes go (a partial
// block is first copied up from below). Reads take each block from the topmost layer
// that has it. Making a view, freezing it and starting a new one cost O(1) in the
// disk's size (the map of the frozen layer aside: 1 bit per 4 KiB).
class LayeredDisk final : public DiskImage {
public:
    LayeredDisk(std::shared_ptr<RawDisk> base, std::vector<std::shared_ptr<DiskLayer>> frozen,
                std::string dir);

    [[nodiscard]] std::uint64_t size() const override { return base_->size(); }
    [[nodiscard]] bool read_only() const override { return false; }
    void read(std::uint64_t offset, std::span<std::byte> out) override;
    void write(std::uint64_t offset, std::span<const std::byte> in) override;
    void flush() override;

    // The fork point: the top layer is frozen (if anything was written to it) and a
    // new empty one started; returns the frozen chain, which a clone's view takes.
    std::vector<std::shared_ptr<DiskLayer>> fork();
    // Back to the fork point this view was made at: its writes since are dropped.
    void reset();

    [[nodiscard]] const std::shared_ptr<RawDisk>& base() const { return base_; }
    [[nodiscard]] const std::vector<std::shared_ptr<DiskLayer>>& frozen() const { return frozen_; }
    [[nodiscard]] std::uint64_t private_blocks() const { return top_->blocks(); }
    [[nodiscard]] std::uint64_t shared_blocks() const;

private:
    // Reads part of block b as the layers below the top show it.
    void read_below(std::uint64_t b, std::uint64_t off, std::span<std::byte> out) const;

    std::shared_ptr<RawDisk> base_;
    std::vector<std::shared_ptr<DiskLayer>> frozen_; // bottom first
    std::size_t fork_depth_ = 0;                     // frozen_.size() when made
    std::shared_ptr<DiskLayer> top_;
    std::string dir_;
};

} // namespace vmfork
