// SPDX-License-Identifier: GPL-2.0
#include "vmfork/bench/disk_figures.h"

#include <charconv>
#include <random>
#include <stdexcept>
#include <string>
#include <unordered_set>

namespace vmfork::bench {

ImageLayout::ImageLayout(std::uint64_t size, std::uint64_t data, std::uint64_t chunk)
    : size_(size), data_(data), chunk_(chunk) {
    if (chunk == 0 || chunk % block != 0 || size % block != 0 || data == 0 || data % chunk != 0 ||
        data > size) {
        throw std::invalid_argument("image layout: need chunk and size multiples of 4 KiB, "
                                    "data a multiple of chunk and no larger than size");
    }
}

std::uint64_t ImageLayout::stride() const {
    return size_ / chunks() / block * block;
}

std::vector<std::uint64_t> ImageLayout::write_offsets(std::size_t n, std::uint64_t seed,
                                                      bool in_data) const {
    const std::uint64_t room = in_data ? data_ / block : size_ / block;
    if (n > (in_data ? room : room - data_ / block)) {
        throw std::invalid_argument("more writes than blocks to write to");
    }
    std::mt19937_64 rng(seed);
    const std::uint64_t per_chunk = chunk_ / block;
    std::unordered_set<std::uint64_t> seen;
    std::vector<std::uint64_t> out;
    out.reserve(n);
    while (out.size() < n) {
        const std::uint64_t r = rng() % room; // block index in the data or the image
        const std::uint64_t off =
            in_data ? chunk_offset(r / per_chunk) + (r % per_chunk) * block : r * block;
        if (!in_data && off % stride() < chunk_ && off / stride() < chunks()) {
            continue; // in the data
        }
        if (seen.insert(off).second) {
            out.push_back(off);
        }
    }
    return out;
}

namespace {

std::uint64_t number(std::string_view s, std::string_view line) {
    std::uint64_t v = 0;
    const auto* end = s.data() + s.size();
    const auto [p, ec] = std::from_chars(s.data(), end, v);
    if (ec != std::errc() || p != end) {
        throw std::invalid_argument("thin-pool status: not a number in \"" + std::string(line) +
                                    "\"");
    }
    return v;
}

// "used/total"
void fraction(std::string_view s, std::string_view line, std::uint64_t& used,
              std::uint64_t& total) {
    const auto slash = s.find('/');
    if (slash == std::string_view::npos) {
        throw std::invalid_argument("thin-pool status: no used/total in \"" + std::string(line) +
                                    "\"");
    }
    used = number(s.substr(0, slash), line);
    total = number(s.substr(slash + 1), line);
}

std::vector<std::string_view> words(std::string_view s) {
    std::vector<std::string_view> out;
    std::size_t i = 0;
    while (i < s.size()) {
        const auto start = s.find_first_not_of(" \t\n", i);
        if (start == std::string_view::npos) {
            break;
        }
        auto end = s.find_first_of(" \t\n", start);
        if (end == std::string_view::npos) {
            end = s.size();
        }
        out.push_back(s.substr(start, end - start));
        i = end;
    }
    return out;
}

} // namespace

ThinPoolStatus ThinPoolStatus::parse(std::string_view line) {
    const auto w = words(line);
    if (w.size() < 6) {
        throw std::invalid_argument("thin-pool status: \"" + std::string(line) + "\"");
    }
    ThinPoolStatus s;
    s.transaction_id = number(w[0], line);
    fraction(w[1], line, s.used_metadata_blocks, s.total_metadata_blocks);
    fraction(w[2], line, s.used_data_blocks, s.total_data_blocks);
    if (s.used_metadata_blocks > s.total_metadata_blocks ||
        s.used_data_blocks > s.total_data_blocks) {
        throw std::invalid_argument("thin-pool status: more used than total in \"" +
                                    std::string(line) + "\"");
    }
    s.read_write = w[4] == "rw";
    return s;
}

} // namespace vmfork::bench
