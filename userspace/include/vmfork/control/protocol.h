// SPDX-License-Identifier: GPL-2.0
#pragma once

// The control protocol between `vmfork` and a VMM process, over the VM's unix stream
// socket: length-prefixed messages, each a fixed 16-byte header and a JSON object.
//
//   header: u32 magic "VMFK" | u16 version | u16 type | u32 payload length | u32 zero
//   payload: UTF-8 JSON object, at most max_payload bytes
//
// A request is {"op": "<name>", "args": {...}} (args optional); a reply is
// {"ok": true, ...result} or {"ok": false, "errno": N, "error": "text"}. Anything
// malformed gets an error reply (when the peer can still read one) and never a crash.

#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace vmfork::control {

using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr std::uint32_t magic = 0x4b464d56; // "VMFK" in memory order
constexpr std::uint16_t version = 1;
constexpr std::size_t header_size = 16;
constexpr std::size_t max_payload = std::size_t{64} * 1024;

enum class MessageType : std::uint16_t { Request = 1, Reply = 2 };

struct Message {
    MessageType type = MessageType::Request;
    Json body = Json::object();
};

// A protocol violation (bad magic, version, type, length, JSON, shape) or a transport
// failure (peer closed mid-message, timeout). err is an errno value: EPROTO for a
// malformed message, EMSGSIZE for an oversized one, ECONNRESET for a truncated one,
// ETIMEDOUT for a deadline that passed.
class ProtocolError : public std::runtime_error {
public:
    ProtocolError(int err, const std::string& what) : std::runtime_error(what), err_(err) {}
    [[nodiscard]] int err() const noexcept { return err_; }

private:
    int err_;
};

// Header + payload. Throws ProtocolError(EMSGSIZE) above max_payload, EPROTO for a
// body that is not a JSON object.
std::vector<std::uint8_t> encode(const Message& message);

// Incremental decoder for a byte stream: feed() what arrived, next() returns each
// complete message in order. A malformed header or payload throws ProtocolError; the
// stream cannot be resynchronised after that (close the connection).
class Decoder {
public:
    void feed(std::span<const std::uint8_t> bytes);
    std::optional<Message> next();
    // Bytes of a message begun but not complete (0 at a message boundary).
    [[nodiscard]] std::size_t pending() const noexcept { return buffer_.size(); }

private:
    std::vector<std::uint8_t> buffer_;
};

// Blocking message I/O on a connected stream socket, bounded by deadline.
void send_message(int fd, const Message& message, Clock::time_point deadline);
// Throws ProtocolError: ECONNRESET if the peer closed before a whole message (EOF at a
// message boundary also throws ECONNRESET), ETIMEDOUT, EPROTO/EMSGSIZE if malformed.
Message receive_message(int fd, Clock::time_point deadline);

// An error a request handler reports: becomes {"ok": false, "errno": err, "error": what}.
class RequestError : public std::runtime_error {
public:
    RequestError(int err, const std::string& what) : std::runtime_error(what), err_(err) {}
    [[nodiscard]] int err() const noexcept { return err_; }

private:
    int err_;
};

Json ok_reply(Json result = Json::object());
Json error_reply(int err, const std::string& what);

// A validated request: op is a non-empty string of [a-z_], args an object (empty if
// absent); any other top-level key is an error. Throws RequestError(EINVAL).
struct Request {
    std::string op;
    Json args = Json::object();

    static Request parse(const Json& body);

    // Typed, range-checked arguments; RequestError(EINVAL) names the argument and
    // what was expected. Unknown arguments are rejected by check_only().
    [[nodiscard]] std::uint64_t u64(const std::string& key, std::uint64_t fallback,
                                    std::uint64_t min, std::uint64_t max) const;
    [[nodiscard]] bool boolean(const std::string& key, bool fallback) const;
    // A string matching the VM name rules (see RuntimeDir::valid_name) or fallback.
    [[nodiscard]] std::string name(const std::string& key, const std::string& fallback) const;
    // Required: 1..max bytes given as a string of hex digit pairs (any bytes, where a
    // JSON string would have to be UTF-8).
    [[nodiscard]] std::string hex_bytes(const std::string& key, std::size_t max) const;
    void check_only(std::initializer_list<const char*> keys) const;
};

// Bytes as the lower-case hex digit pairs hex_bytes() reads.
std::string to_hex(std::string_view bytes);

} // namespace vmfork::control
