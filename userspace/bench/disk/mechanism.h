// SPDX-License-Identifier: GPL-2.0
#pragma once

// A way to give clones a copy-on-write view of one disk image: VMM layers
// (LayeredDisk), reflink copies (FICLONE on XFS) and dm-thin snapshots. The bench
// drives each through the same steps on the same image.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "vmfork/bench/disk_figures.h"

namespace vmfork::diskbench {

using bench::ImageLayout;

// Heap memory aligned to 4 KiB, as O_DIRECT wants.
class AlignedBuffer {
public:
    explicit AlignedBuffer(std::size_t size);
    [[nodiscard]] std::span<std::byte> span() { return {data_.get(), size_}; }
    [[nodiscard]] std::span<const std::byte> span() const { return {data_.get(), size_}; }

private:
    struct Free {
        void operator()(std::byte* p) const;
    };
    std::unique_ptr<std::byte, Free> data_;
    std::size_t size_;
};

// The content of chunk i of every image: pseudo-random bytes, each block stamped with
// its chunk and block number (nothing two blocks share that a filesystem could fold).
void fill_chunk(std::span<std::byte> out, std::uint64_t chunk_index);
// Writes the layout's chunks to fd (a file or block device, possibly O_DIRECT) and
// syncs it.
void write_image(int fd, const ImageLayout& layout, const std::string& what);
// A clone's first writes on its own file or device: block at each offset, then
// fdatasync (what names the clone in errors).
void write_synced(int fd, std::span<const std::uint64_t> offsets, std::span<const std::byte> block,
                  const std::string& what);

class Mechanism {
public:
    Mechanism() = default;
    virtual ~Mechanism() = default;
    Mechanism(const Mechanism&) = delete;
    Mechanism& operator=(const Mechanism&) = delete;
    Mechanism(Mechanism&&) = delete;
    Mechanism& operator=(Mechanism&&) = delete;

    // "layers", "reflink", "dm-thin".
    [[nodiscard]] virtual std::string name() const = 0;
    // What it needs from the host (privilege, filesystem, modules).
    [[nodiscard]] virtual std::string needs() const = 0;
    // Whether the clones' writes go through O_DIRECT.
    [[nodiscard]] virtual bool direct_io() const = 0;

    // Makes the image: sparse, the layout's data written and synced.
    virtual void prepare() = 0;
    // Untimed work a clone's parent does before a clone (see LayersMechanism).
    virtual void before_clone() {}
    // Makes one more clone, ready for I/O (timed).
    virtual void clone() = 0;
    // Writes block at each offset of clone i, then flushes it (timed).
    virtual void write(std::size_t clone, std::span<const std::uint64_t> offsets,
                       std::span<const std::byte> block) = 0;
    // Reads out.size() bytes at off as clone i sees them (checks, untimed).
    virtual void read(std::size_t clone, std::uint64_t off, std::span<std::byte> out) = 0;
    // Bytes of storage in use now (the filesystem's or the pool's).
    [[nodiscard]] virtual std::uint64_t used_bytes() const = 0;
};

// Each mechanism on its own storage, made under dir (a scratch directory, tmpfs or
// /var/tmp): an XFS on a loop device for layers and reflinks, loop devices under a
// thin pool for dm-thin.
std::unique_ptr<Mechanism> make_layers(const std::string& dir, const ImageLayout& layout);
// direct: the clones' files or devices are opened with O_DIRECT (else buffered, as
// LayeredDisk's layers are; a flush is an fdatasync either way).
std::unique_ptr<Mechanism> make_reflink(const std::string& dir, const ImageLayout& layout,
                                        bool direct);
std::unique_ptr<Mechanism> make_thin(const std::string& dir, const ImageLayout& layout,
                                     std::uint64_t thin_block, bool direct);

} // namespace vmfork::diskbench
