// SPDX-License-Identifier: GPL-2.0
#include "mechanism.h"

#include <array>
#include <cstdlib>
#include <cstring>
#include <new>
#include <random>
#include <unistd.h>

#include "vmfork/system_error.h"
#include "vmfork/vmm/disk.h"

namespace vmfork::diskbench {

AlignedBuffer::AlignedBuffer(std::size_t size)
    : data_(static_cast<std::byte*>(std::aligned_alloc(ImageLayout::block, size))), size_(size) {
    if (!data_) {
        throw std::bad_alloc();
    }
    std::memset(data_.get(), 0, size);
}

void AlignedBuffer::Free::operator()(std::byte* p) const {
    std::free(p); // NOLINT(cppcoreguidelines-no-malloc): aligned_alloc's
}

void fill_chunk(std::span<std::byte> out, std::uint64_t chunk_index) {
    std::mt19937_64 rng(chunk_index + 1);
    for (std::size_t i = 0; i + 8 <= out.size(); i += 8) {
        const std::uint64_t v = rng();
        std::memcpy(out.data() + i, &v, 8);
    }
    for (std::size_t b = 0; b * ImageLayout::block < out.size(); ++b) {
        const std::array<std::uint64_t, 2> stamp{chunk_index, b};
        std::memcpy(out.data() + b * ImageLayout::block, stamp.data(), sizeof(stamp));
    }
}

void write_image(int fd, const ImageLayout& layout, const std::string& what) {
    AlignedBuffer buf(layout.chunk());
    for (std::uint64_t i = 0; i < layout.chunks(); ++i) {
        fill_chunk(buf.span(), i);
        pwrite_all(fd, buf.span().data(), buf.span().size(), layout.chunk_offset(i), what);
    }
    if (::fsync(fd) != 0) {
        throw SystemError::from_errno("fsync " + what);
    }
}

void write_synced(int fd, std::span<const std::uint64_t> offsets, std::span<const std::byte> block,
                  const std::string& what) {
    for (const auto off : offsets) {
        pwrite_all(fd, block.data(), block.size(), off, what);
    }
    if (::fdatasync(fd) != 0) {
        throw SystemError::from_errno("fdatasync of " + what);
    }
}

} // namespace vmfork::diskbench
