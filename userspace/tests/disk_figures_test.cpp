// SPDX-License-Identifier: GPL-2.0
// The pure parts of vmfork-disk-bench: the image layout, the clones' write offsets
// and the thin pool's status line.
#include <gtest/gtest.h>
#include <set>
#include <stdexcept>

#include "vmfork/bench/disk_figures.h"

namespace vmfork::bench {
namespace {

constexpr std::uint64_t KiB = 1024;
constexpr std::uint64_t MiB = 1024 * KiB;
constexpr std::uint64_t GiB = 1024 * MiB;

TEST(ImageLayout, SpreadsChunksAtEvenStrides) {
    const ImageLayout l(GiB, 64 * MiB, 64 * KiB);
    EXPECT_EQ(l.chunks(), 1024U);
    EXPECT_EQ(l.stride(), MiB);
    EXPECT_EQ(l.chunk_offset(0), 0U);
    EXPECT_EQ(l.chunk_offset(1023), 1023 * MiB);
    EXPECT_LE(l.chunk_offset(l.chunks() - 1) + l.chunk(), l.size());
}

TEST(ImageLayout, StrideIsWholeBlocksWhenSizeDoesNotDivide) {
    const ImageLayout l(3 * MiB, 192 * KiB, 64 * KiB); // 3 chunks in 3 MiB + change
    EXPECT_EQ(l.stride() % ImageLayout::block, 0U);
    const ImageLayout odd(10 * MiB + 4 * KiB, 3 * 64 * KiB, 64 * KiB);
    EXPECT_EQ(odd.stride() % ImageLayout::block, 0U);
    EXPECT_LE(odd.chunk_offset(2) + odd.chunk(), odd.size());
}

TEST(ImageLayout, RejectsImpossibleLayouts) {
    EXPECT_THROW(ImageLayout(GiB, 64 * MiB, 1000), std::invalid_argument);            // not 4 KiB
    EXPECT_THROW(ImageLayout(GiB, 64 * MiB + 4096, 64 * KiB), std::invalid_argument); // chunks
    EXPECT_THROW(ImageLayout(MiB, 2 * MiB, 64 * KiB), std::invalid_argument);         // data > size
    EXPECT_THROW(ImageLayout(GiB, 0, 64 * KiB), std::invalid_argument);
    EXPECT_THROW(ImageLayout(GiB + 1, 64 * MiB, 64 * KiB), std::invalid_argument);
}

bool in_data(const ImageLayout& l, std::uint64_t off) {
    return off / l.stride() < l.chunks() && off % l.stride() < l.chunk();
}

TEST(ImageLayout, WritesIntoDataHitOnlyTheChunks) {
    const ImageLayout l(GiB, 64 * MiB, 64 * KiB);
    const auto offs = l.write_offsets(256, 3, true);
    ASSERT_EQ(offs.size(), 256U);
    EXPECT_EQ(std::set<std::uint64_t>(offs.begin(), offs.end()).size(), 256U);
    for (const auto off : offs) {
        EXPECT_EQ(off % ImageLayout::block, 0U);
        EXPECT_TRUE(in_data(l, off)) << off;
    }
}

TEST(ImageLayout, WritesIntoHolesMissTheChunks) {
    const ImageLayout l(GiB, 64 * MiB, 64 * KiB);
    for (const auto off : l.write_offsets(256, 3, false)) {
        EXPECT_EQ(off % ImageLayout::block, 0U);
        EXPECT_LT(off, l.size());
        EXPECT_FALSE(in_data(l, off)) << off;
    }
}

TEST(ImageLayout, OffsetsDependOnTheSeedOnly) {
    const ImageLayout a(GiB, 64 * MiB, 64 * KiB);
    const ImageLayout b(GiB, 64 * MiB, 64 * KiB);
    EXPECT_EQ(a.write_offsets(64, 7, true), b.write_offsets(64, 7, true));
    EXPECT_NE(a.write_offsets(64, 7, true), a.write_offsets(64, 8, true));
}

TEST(ImageLayout, EveryBlockCanBeWrittenOnceButNoMore) {
    const ImageLayout l(MiB, 128 * KiB, 64 * KiB); // 32 data blocks, 224 hole blocks
    EXPECT_EQ(l.write_offsets(32, 1, true).size(), 32U);
    EXPECT_THROW((void)l.write_offsets(33, 1, true), std::invalid_argument);
    EXPECT_EQ(l.write_offsets(224, 1, false).size(), 224U);
    EXPECT_THROW((void)l.write_offsets(225, 1, false), std::invalid_argument);
}

TEST(ThinPoolStatus, ParsesTheKernelsLine) {
    const auto s = ThinPoolStatus::parse(
        "3 203/16384 1280/16384 - rw discard_passdown queue_if_no_space - 1024");
    EXPECT_EQ(s.transaction_id, 3U);
    EXPECT_EQ(s.used_metadata_blocks, 203U);
    EXPECT_EQ(s.total_metadata_blocks, 16384U);
    EXPECT_EQ(s.used_data_blocks, 1280U);
    EXPECT_EQ(s.total_data_blocks, 16384U);
    EXPECT_TRUE(s.read_write);
}

TEST(ThinPoolStatus, ReadOnlyAndOutOfSpaceAreNotReadWrite) {
    EXPECT_FALSE(ThinPoolStatus::parse("0 1/2 3/4 7 ro discard_passdown").read_write);
    EXPECT_FALSE(
        ThinPoolStatus::parse("0 1/2 4/4 - out_of_data_space discard_passdown").read_write);
}

TEST(ThinPoolStatus, RejectsFailAndGarbage) {
    EXPECT_THROW((void)ThinPoolStatus::parse("Fail"), std::invalid_argument);
    EXPECT_THROW((void)ThinPoolStatus::parse("Error"), std::invalid_argument);
    EXPECT_THROW((void)ThinPoolStatus::parse(""), std::invalid_argument);
    EXPECT_THROW((void)ThinPoolStatus::parse("x 1/2 3/4 - rw d"), std::invalid_argument);
    EXPECT_THROW((void)ThinPoolStatus::parse("0 12 3/4 - rw d"), std::invalid_argument);
    EXPECT_THROW((void)ThinPoolStatus::parse("0 1/2 3/x - rw d"), std::invalid_argument);
    EXPECT_THROW((void)ThinPoolStatus::parse("0 3/2 3/4 - rw d"), std::invalid_argument);
}

} // namespace
} // namespace vmfork::bench
