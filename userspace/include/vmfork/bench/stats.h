// SPDX-License-Identifier: GPL-2.0
#pragma once

// The pure parts of `vmfork bench`: statistics over repeats, /proc/meminfo, the
// samples as CSV and JSON, the targets of issue #6 as PASS/MISS.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace vmfork::bench {

// Median and spread of a figure over its repeats. Percentiles interpolate linearly
// between the closest ranks (numpy's default); an empty input gives n == 0.
struct Summary {
    std::size_t n = 0;
    double min = 0;
    double p10 = 0;
    double median = 0;
    double p90 = 0;
    double max = 0;
};
[[nodiscard]] Summary summarize(std::vector<double> values);
// The q-quantile (0..1) of sorted values (not empty).
[[nodiscard]] double quantile(const std::vector<double>& sorted, double q);

// /proc/meminfo: values in bytes by field name ("MemTotal", ...).
class Meminfo {
public:
    // Parses the text of /proc/meminfo; throws std::invalid_argument on a malformed line.
    static Meminfo parse(std::string_view text);
    // Reads /proc/meminfo; throws SystemError.
    static Meminfo read(const std::string& path = "/proc/meminfo");

    // Throws std::out_of_range naming a missing field.
    [[nodiscard]] std::uint64_t bytes(const std::string& field) const;
    [[nodiscard]] std::optional<std::uint64_t> find(const std::string& field) const;
    // Memory in use that reclaim cannot free without swap: MemTotal - MemFree - Buffers
    // - (Cached - Shmem) - SReclaimable. Shmem (memfd, tmpfs) counts as used.
    [[nodiscard]] std::uint64_t used() const;

private:
    std::map<std::string, std::uint64_t, std::less<>> bytes_;
};

// One measured value. strategy: "vmfork-live", ...; mode: "cold" or "pool" (or ""
// where it does not apply); size: guest RAM in bytes; x: a figure's own variable
// (pages dirtied, clone count; 0 if none); repeat: 0-based.
struct Sample {
    std::string figure; // "fork_us", "pause_us", "running_us", ...
    std::string strategy;
    std::string mode;
    std::uint64_t size = 0;
    std::uint64_t x = 0;
    unsigned repeat = 0;
    double value = 0;
};

// RFC 4180 field: quoted when it holds a comma, quote or line break.
[[nodiscard]] std::string csv_field(std::string_view s);
// Header line and one line per sample.
[[nodiscard]] std::string samples_csv(const std::vector<Sample>& samples);
[[nodiscard]] nlohmann::json sample_json(const Sample& s);
[[nodiscard]] nlohmann::json summary_json(const Summary& s);

// The values of samples matching figure, strategy, mode, size and x.
[[nodiscard]] std::vector<double> select(const std::vector<Sample>& samples,
                                         std::string_view figure, std::string_view strategy,
                                         std::string_view mode, std::uint64_t size,
                                         std::uint64_t x = 0);

// A target of the issue: value compared with limit, lower or higher being better.
struct Target {
    std::string what;
    double value = 0; // NaN: not measured
    double limit = 0;
    bool at_most = true; // PASS when value <= limit (else when value >= limit)
    [[nodiscard]] bool measured() const;
    [[nodiscard]] bool pass() const;
    // "PASS", "MISS" or "n/a".
    [[nodiscard]] std::string verdict() const;
};

// "1.2 us", "3.4 ms", "5.6 s" from microseconds (3 significant digits).
[[nodiscard]] std::string format_us(double us);
// "12.3 MiB" from bytes.
[[nodiscard]] std::string format_bytes(double bytes);

} // namespace vmfork::bench
