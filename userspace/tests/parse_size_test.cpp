// SPDX-License-Identifier: GPL-2.0
#include "vmfork/parse_size.h"

#include <gtest/gtest.h>
#include <stdexcept>

namespace vmfork {
namespace {

TEST(ParseSize, PlainBytes) {
    EXPECT_EQ(parse_size("0"), 0U);
    EXPECT_EQ(parse_size("4096"), 4096U);
    EXPECT_EQ(parse_size("18446744073709551615"), UINT64_MAX);
}

TEST(ParseSize, BinarySuffixes) {
    EXPECT_EQ(parse_size("4K"), 4096U);
    EXPECT_EQ(parse_size("4k"), 4096U);
    EXPECT_EQ(parse_size("256M"), 256ULL << 20);
    EXPECT_EQ(parse_size("2G"), 2ULL << 30);
    EXPECT_EQ(parse_size("1T"), 1ULL << 40);
    EXPECT_EQ(parse_size("2GB"), 2ULL << 30);
    EXPECT_EQ(parse_size("2GiB"), 2ULL << 30);
}

TEST(ParseSize, RejectsJunk) {
    for (const char* junk :
         {"", "M", "-1", "+1", " 1", "1 ", "1X", "1MM", "1Mb", "0x10", "1.5G", "12abc"}) {
        EXPECT_THROW(parse_size(junk), std::invalid_argument) << "input: '" << junk << "'";
    }
}

TEST(ParseSize, RejectsOverflow) {
    EXPECT_THROW(parse_size("18446744073709551616"), std::out_of_range);
    EXPECT_THROW(parse_size("99999999999999999999999"), std::out_of_range);
    EXPECT_THROW(parse_size("16777216T"), std::out_of_range);
    EXPECT_EQ(parse_size("16777215T"), 16777215ULL << 40);
}

TEST(ParseSize, ErrorNamesTheInput) {
    try {
        (void)parse_size("12abc");
        FAIL() << "parse_size(\"12abc\") must throw";
    } catch (const std::invalid_argument& e) {
        EXPECT_NE(std::string(e.what()).find("12abc"), std::string::npos) << e.what();
    }
}

} // namespace
} // namespace vmfork
