// SPDX-License-Identifier: GPL-2.0
#include "vmfork/parse_size.h"

#include <limits>
#include <stdexcept>
#include <string>

namespace vmfork {

namespace {

[[noreturn]] void bad_size(std::string_view text, const char* why) {
    throw std::invalid_argument("invalid size '" + std::string(text) + "': " + why);
}

unsigned shift_of(char suffix) {
    switch (suffix) {
    case 'k':
    case 'K':
        return 10;
    case 'm':
    case 'M':
        return 20;
    case 'g':
    case 'G':
        return 30;
    case 't':
    case 'T':
        return 40;
    default:
        return 0;
    }
}

} // namespace

std::uint64_t parse_size(std::string_view text) {
    constexpr std::uint64_t max = std::numeric_limits<std::uint64_t>::max();
    std::uint64_t value = 0;
    std::size_t i = 0;

    for (; i < text.size() && text[i] >= '0' && text[i] <= '9'; ++i) {
        const auto digit = static_cast<std::uint64_t>(text[i] - '0');
        if (value > (max - digit) / 10) {
            throw std::out_of_range("size '" + std::string(text) + "' is too large");
        }
        value = value * 10 + digit;
    }
    if (i == 0) {
        bad_size(text, "expected a number, optionally followed by K, M, G or T");
    }

    std::string_view rest = text.substr(i);
    unsigned shift = 0;
    if (!rest.empty()) {
        shift = shift_of(rest.front());
        if (shift == 0) {
            bad_size(text, "unknown suffix (use K, M, G or T)");
        }
        rest.remove_prefix(1);
        if (rest != "" && rest != "B" && rest != "iB") {
            bad_size(text, "junk after the suffix");
        }
    }
    if (shift > 0 && value > (max >> shift)) {
        throw std::out_of_range("size '" + std::string(text) + "' is too large");
    }
    return value << shift;
}

} // namespace vmfork
