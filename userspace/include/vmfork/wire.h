// SPDX-License-Identifier: GPL-2.0
#pragma once

// The framing that vmfork's two protocols share (the control protocol between the CLI
// and a VMM, the agent protocol between a VMM and vmfork-agent), each with its own
// magic, version and message types:
//
//   header: u32 magic | u16 version | u16 type | u32 payload length | u32 zero
//   payload: at most max_payload bytes
//
// all little-endian; and stream I/O on a non-blocking-capable socket, bounded by a
// deadline. A protocol reports failures with its own error type: each function here
// takes a Fail, which throws it (and never returns).

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace vmfork::wire {

using Clock = std::chrono::steady_clock;
// Throws the protocol's error (errno, message); must not return.
using Fail = void (*)(int err, const std::string& what);

inline constexpr std::size_t header_size = 16;

struct Format {
    std::uint32_t magic;
    std::uint16_t version;
    std::size_t max_payload;
    bool (*known_type)(std::uint16_t type);
    const char* connection; // for "not a vmfork <connection> connection?"
    Fail fail;
};

struct Header {
    std::uint16_t type;
    std::uint32_t length;
};

// Header and payload; EMSGSIZE above the format's max_payload.
std::vector<std::uint8_t> encode(const Format& f, std::uint16_t type, std::string_view payload);
// EPROTO for a bad magic, version, type or reserved field, EMSGSIZE for a length above
// max_payload.
Header parse_header(const Format& f, std::span<const std::uint8_t, header_size> bytes);
// A JSON object (EPROTO otherwise, or deeper than max_depth levels); what names the
// payload in messages ("message payload").
nlohmann::json parse_object(const Format& f, std::span<const std::uint8_t> payload, int max_depth,
                            const std::string& what);

void send_all(const Format& f, int fd, std::span<const std::uint8_t> bytes,
              Clock::time_point deadline);
// Reads exactly bytes.size() bytes: ECONNRESET when the peer closes, ETIMEDOUT at the
// deadline. at_boundary: nothing of this message was read yet (a close there is clean).
void receive_all(const Format& f, int fd, std::span<std::uint8_t> bytes, Clock::time_point deadline,
                 bool at_boundary);
// One message off the stream: its header (checked before the payload is read) and
// payload.
std::pair<Header, std::vector<std::uint8_t>> receive(const Format& f, int fd,
                                                     Clock::time_point deadline);

} // namespace vmfork::wire
