// SPDX-License-Identifier: GPL-2.0
#pragma once

#include <cstdint>
#include <string_view>

namespace vmfork {

// Parses a byte count: decimal digits with an optional binary suffix K, M, G or T
// (case-insensitive, optionally followed by "B" or "iB"): "4096", "256M", "2GiB".
// Throws std::invalid_argument on anything else (empty, junk, a sign, spaces) and
// std::out_of_range when the value does not fit in 64 bits.
std::uint64_t parse_size(std::string_view text);

} // namespace vmfork
