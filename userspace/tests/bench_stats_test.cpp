// SPDX-License-Identifier: GPL-2.0
// The pure logic of `vmfork bench`: statistics, /proc/meminfo, CSV/JSON, targets.
#include <cmath>
#include <gtest/gtest.h>
#include <limits>

#include "vmfork/bench/stats.h"

namespace vmfork::bench {
namespace {

TEST(BenchStats, SummarizeInterpolatesPercentiles) {
    const Summary s = summarize({5, 1, 4, 2, 3});
    EXPECT_EQ(s.n, 5U);
    EXPECT_DOUBLE_EQ(s.min, 1);
    EXPECT_DOUBLE_EQ(s.max, 5);
    EXPECT_DOUBLE_EQ(s.median, 3);
    EXPECT_DOUBLE_EQ(s.p10, 1.4);
    EXPECT_DOUBLE_EQ(s.p90, 4.6);
}

TEST(BenchStats, MedianOfAnEvenCountIsTheMean) {
    EXPECT_DOUBLE_EQ(summarize({4, 1, 3, 2}).median, 2.5);
}

TEST(BenchStats, OneAndNoValues) {
    const Summary one = summarize({7});
    EXPECT_EQ(one.n, 1U);
    EXPECT_DOUBLE_EQ(one.p10, 7);
    EXPECT_DOUBLE_EQ(one.p90, 7);
    EXPECT_EQ(summarize({}).n, 0U);
}

constexpr const char* meminfo_text = "MemTotal:        8135676 kB\n"
                                     "MemFree:         6000000 kB\n"
                                     "MemAvailable:    7000000 kB\n"
                                     "Buffers:            1000 kB\n"
                                     "Cached:           500000 kB\n"
                                     "Shmem:            200000 kB\n"
                                     "SReclaimable:      20000 kB\n"
                                     "HugePages_Total:       0\n";

TEST(BenchStats, MeminfoParsesKibAndPlainCounts) {
    const Meminfo m = Meminfo::parse(meminfo_text);
    EXPECT_EQ(m.bytes("MemTotal"), 8135676ULL * 1024);
    EXPECT_EQ(m.bytes("HugePages_Total"), 0U);
    EXPECT_FALSE(m.find("Nope").has_value());
    EXPECT_THROW((void)m.bytes("Nope"), std::out_of_range);
}

TEST(BenchStats, MeminfoUsedCountsShmemButNotReclaimableCache) {
    const Meminfo m = Meminfo::parse(meminfo_text);
    // total - free - buffers - (cached - shmem) - sreclaimable
    const std::uint64_t kib = 8135676 - 6000000 - 1000 - (500000 - 200000) - 20000;
    EXPECT_EQ(m.used(), kib * 1024);
}

TEST(BenchStats, MeminfoRejectsGarbage) {
    EXPECT_THROW((void)Meminfo::parse("no colon here\n"), std::invalid_argument);
    EXPECT_THROW((void)Meminfo::parse("MemTotal: lots kB\n"), std::invalid_argument);
    EXPECT_THROW((void)Meminfo::parse("MemTotal: 5 MB\n"), std::invalid_argument);
}

TEST(BenchStats, CsvQuotesOnlyWhenNeeded) {
    EXPECT_EQ(csv_field("plain"), "plain");
    EXPECT_EQ(csv_field("a,b"), "\"a,b\"");
    EXPECT_EQ(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    const std::vector<Sample> samples = {{"fork_us", "vmfork-live", "cold", 64 << 20, 0, 2, 1.5}};
    EXPECT_EQ(samples_csv(samples), "figure,strategy,mode,size_bytes,x,repeat,value\n"
                                    "fork_us,vmfork-live,cold,67108864,0,2,1.5\n");
}

TEST(BenchStats, JsonAndSelect) {
    const std::vector<Sample> samples = {
        {"running_us", "full-copy", "cold", 1024, 0, 0, 10},
        {"running_us", "full-copy", "cold", 1024, 0, 1, 30},
        {"running_us", "full-copy", "pool", 1024, 0, 0, 5},
        {"reset_us", "vmfork-template", "", 1024, 100, 0, 2},
    };
    EXPECT_EQ(select(samples, "running_us", "full-copy", "cold", 1024),
              (std::vector<double>{10, 30}));
    EXPECT_EQ(select(samples, "reset_us", "vmfork-template", "", 1024, 100),
              (std::vector<double>{2}));
    EXPECT_TRUE(select(samples, "running_us", "full-copy", "cold", 2048).empty());
    const auto j = sample_json(samples[2]);
    EXPECT_EQ(j.at("mode"), "pool");
    EXPECT_EQ(j.at("size_bytes"), 1024);
    EXPECT_DOUBLE_EQ(summary_json(summarize({1, 3})).at("median").get<double>(), 2);
}

TEST(BenchStats, TargetVerdicts) {
    EXPECT_EQ((Target{"ratio", 1.2, 1.5, true}).verdict(), "PASS");
    EXPECT_EQ((Target{"ratio", 1.6, 1.5, true}).verdict(), "MISS");
    EXPECT_EQ((Target{"speedup", 25, 20, false}).verdict(), "PASS");
    EXPECT_EQ((Target{"speedup", 2, 20, false}).verdict(), "MISS");
    EXPECT_EQ((Target{"x", std::numeric_limits<double>::quiet_NaN(), 1, true}).verdict(), "n/a");
}

TEST(BenchStats, Formatting) {
    EXPECT_EQ(format_us(0.5), "500 ns");
    EXPECT_EQ(format_us(12.34), "12.3 us");
    EXPECT_EQ(format_us(1500), "1.50 ms");
    EXPECT_EQ(format_us(2.5e6), "2.50 s");
    EXPECT_EQ(format_bytes(256.0 * 1024 * 1024), "256 MiB");
    EXPECT_EQ(format_us(std::numeric_limits<double>::quiet_NaN()), "-");
}

} // namespace
} // namespace vmfork::bench
