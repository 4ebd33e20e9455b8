// SPDX-License-Identifier: GPL-2.0
#include "vmfork/vmm/device_state.h"

#include <stdexcept>

namespace vmfork {

void StateWriter::put(std::uint64_t v, unsigned size) {
    for (unsigned i = 0; i < size; ++i) {
        data_.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
    }
}

void StateWriter::bytes(std::span<const std::uint8_t> data) {
    u32(static_cast<std::uint32_t>(data.size()));
    data_.insert(data_.end(), data.begin(), data.end());
}

void StateReader::fail(std::string_view message) const {
    throw std::invalid_argument(what_ + ": " + std::string(message));
}

void StateReader::need(std::size_t size) const {
    if (data_.size() - pos_ < size) {
        fail("truncated at byte " + std::to_string(pos_) + " of " + std::to_string(data_.size()));
    }
}

std::uint64_t StateReader::get(unsigned size) {
    need(size);
    std::uint64_t v = 0;
    for (unsigned i = 0; i < size; ++i) {
        v |= static_cast<std::uint64_t>(data_[pos_ + i]) << (8 * i);
    }
    pos_ += size;
    return v;
}

bool StateReader::boolean() {
    const std::uint8_t v = u8();
    if (v > 1) {
        fail("a flag must be 0 or 1, not " + std::to_string(v));
    }
    return v == 1;
}

std::vector<std::uint8_t> StateReader::bytes(std::size_t max) {
    const std::uint32_t len = u32();
    if (len > max) {
        fail("a byte string of " + std::to_string(len) + " bytes (at most " + std::to_string(max) +
             ")");
    }
    need(len);
    std::vector<std::uint8_t> out(data_.begin() + static_cast<std::ptrdiff_t>(pos_),
                                  data_.begin() + static_cast<std::ptrdiff_t>(pos_ + len));
    pos_ += len;
    return out;
}

void StateReader::finish() const {
    if (pos_ != data_.size()) {
        fail(std::to_string(data_.size() - pos_) + " bytes left over");
    }
}

} // namespace vmfork
