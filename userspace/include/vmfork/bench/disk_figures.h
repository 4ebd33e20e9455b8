// SPDX-License-Identifier: GPL-2.0
#pragma once

// The pure parts of vmfork-disk-bench (linked-clone disks, issue #14): the layout of
// the test image, the offsets of the clones' writes and the status line of a
// device-mapper thin pool.

#include <cstdint>
#include <string_view>
#include <vector>

namespace vmfork::bench {

// The same data in every image: data bytes in chunks of chunk bytes, spread at even
// strides over an image of size bytes (chunk i at i * stride()), so that files and
// thin volumes hold as many extents or mappings as chunks.
class ImageLayout {
public:
    static constexpr std::uint64_t block = 4096;

    // Throws std::invalid_argument unless chunk and size are multiples of block, chunk
    // divides data and data <= size.
    ImageLayout(std::uint64_t size, std::uint64_t data, std::uint64_t chunk);

    [[nodiscard]] std::uint64_t size() const { return size_; }
    [[nodiscard]] std::uint64_t data() const { return data_; }
    [[nodiscard]] std::uint64_t chunk() const { return chunk_; }
    [[nodiscard]] std::uint64_t chunks() const { return data_ / chunk_; }
    // The distance between chunk starts: size / chunks(), rounded down to a block.
    [[nodiscard]] std::uint64_t stride() const;
    [[nodiscard]] std::uint64_t chunk_offset(std::uint64_t i) const { return i * stride(); }

    // Offsets of n block-sized writes, the same for a given seed whatever the
    // mechanism: in the image's data (shared with the origin: copy-on-write breaks)
    // when in_data, else in its holes (never written: allocation, no copy). Distinct
    // within one call; throws std::invalid_argument when there are not n such blocks.
    [[nodiscard]] std::vector<std::uint64_t> write_offsets(std::size_t n, std::uint64_t seed,
                                                           bool in_data) const;

private:
    std::uint64_t size_;
    std::uint64_t data_;
    std::uint64_t chunk_;
};

// The status of a dm-thin pool (Documentation/admin-guide/device-mapper/thin-provisioning.rst):
// "<transaction id> <used meta>/<total meta> <used data>/<total data> <held root>
// ro|rw|out_of_data_space ...", in blocks (metadata: 4 KiB; data: the pool's block).
struct ThinPoolStatus {
    std::uint64_t transaction_id = 0;
    std::uint64_t used_metadata_blocks = 0;
    std::uint64_t total_metadata_blocks = 0;
    std::uint64_t used_data_blocks = 0;
    std::uint64_t total_data_blocks = 0;
    bool read_write = false; // "rw" (not "ro" nor out_of_data_space)

    // Throws std::invalid_argument for a malformed line or "Fail"/"Error".
    static ThinPoolStatus parse(std::string_view line);
};

} // namespace vmfork::bench
