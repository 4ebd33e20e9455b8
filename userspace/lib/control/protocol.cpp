// SPDX-License-Identifier: GPL-2.0
#include "vmfork/control/protocol.h"

#include <algorithm>
#include <array>
#include <cerrno>

#include "vmfork/control/runtime_dir.h"
#include "vmfork/wire.h"

namespace vmfork::control {

namespace {

// Deeper JSON is refused: nlohmann copies and serialises values recursively, and a
// 64 KiB payload of '[' would otherwise nest 65536 levels deep.
constexpr int max_depth = 64;
constexpr std::size_t max_op_length = 32;
// Longest user-supplied text quoted in an error message.
constexpr std::size_t max_quoted = 64;

bool known_type(std::uint16_t type) {
    return type == static_cast<std::uint16_t>(MessageType::Request) ||
           type == static_cast<std::uint16_t>(MessageType::Reply);
}

static_assert(header_size == wire::header_size);

[[noreturn]] void fail(int err, const std::string& what) {
    throw ProtocolError(err, what);
}

const wire::Format format{magic, version, max_payload, known_type, "control", fail};

Message decode_payload(std::uint16_t type, std::span<const std::uint8_t> payload) {
    return {static_cast<MessageType>(type),
            wire::parse_object(format, payload, max_depth, "message payload")};
}

// s for an error message: at most max_quoted bytes, cut on a UTF-8 character boundary.
std::string shown(const std::string& s) {
    if (s.size() <= max_quoted) {
        return "'" + s + "'";
    }
    std::size_t cut = max_quoted;
    while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xc0U) == 0x80U) {
        cut--;
    }
    return "'" + s.substr(0, cut) + "...'";
}

bool valid_op(const std::string& op) {
    return !op.empty() && op.size() <= max_op_length &&
           std::all_of(op.begin(), op.end(),
                       [](char c) { return (c >= 'a' && c <= 'z') || c == '_'; });
}

} // namespace

std::vector<std::uint8_t> encode(const Message& message) {
    if (!known_type(static_cast<std::uint16_t>(message.type))) {
        throw ProtocolError(EPROTO, "unknown message type " +
                                        std::to_string(static_cast<unsigned>(message.type)));
    }
    if (!message.body.is_object()) {
        throw ProtocolError(EPROTO, std::string("message body is a JSON ") +
                                        message.body.type_name() + ", not an object");
    }
    std::string payload;
    try {
        payload = message.body.dump(-1, ' ', false, Json::error_handler_t::strict);
    } catch (const Json::exception& e) {
        throw ProtocolError(EPROTO, std::string("cannot encode the message: ") + e.what());
    }
    return wire::encode(format, static_cast<std::uint16_t>(message.type), payload);
}

void Decoder::feed(std::span<const std::uint8_t> bytes) {
    buffer_.insert(buffer_.end(), bytes.begin(), bytes.end());
}

std::optional<Message> Decoder::next() {
    if (buffer_.size() < header_size) {
        return std::nullopt;
    }
    const wire::Header header = wire::parse_header(format, std::span(buffer_).first<header_size>());
    const std::size_t total = header_size + header.length;
    if (buffer_.size() < total) {
        return std::nullopt;
    }
    Message message =
        decode_payload(header.type, std::span(buffer_).subspan(header_size, header.length));
    buffer_.erase(buffer_.begin(), buffer_.begin() + static_cast<std::ptrdiff_t>(total));
    return message;
}

void send_message(int fd, const Message& message, Clock::time_point deadline) {
    wire::send_all(format, fd, encode(message), deadline);
}

Message receive_message(int fd, Clock::time_point deadline) {
    const auto [header, payload] = wire::receive(format, fd, deadline);
    return decode_payload(header.type, payload);
}

Json ok_reply(Json result) {
    if (result.is_null()) {
        result = Json::object();
    }
    if (!result.is_object()) {
        throw std::invalid_argument(std::string("a reply result must be a JSON object, not ") +
                                    result.type_name());
    }
    result["ok"] = true;
    return result;
}

Json error_reply(int err, const std::string& what) {
    // what may quote bytes from the peer (a JSON parse error does): replace invalid UTF-8
    // with U+FFFD so that the reply can always be encoded.
    const std::string text =
        Json::parse(Json(what).dump(-1, ' ', false, Json::error_handler_t::replace))
            .get<std::string>();
    return Json{{"ok", false}, {"errno", err}, {"error", text}};
}

Request Request::parse(const Json& body) {
    if (!body.is_object()) {
        throw RequestError(EINVAL, "a request must be a JSON object");
    }
    for (const auto& [key, value] : body.items()) {
        if (key != "op" && key != "args") {
            throw RequestError(EINVAL, "unknown field " + shown(key) + " in request");
        }
    }
    const auto op = body.find("op");
    if (op == body.end()) {
        throw RequestError(EINVAL, "missing field 'op' in request");
    }
    if (!op->is_string()) {
        throw RequestError(EINVAL, "field 'op' must be a string");
    }
    Request request;
    request.op = op->get<std::string>();
    if (!valid_op(request.op)) {
        throw RequestError(EINVAL, "bad op " + shown(request.op) + ": expected 1.." +
                                       std::to_string(max_op_length) + " characters of [a-z_]");
    }
    const auto args = body.find("args");
    if (args != body.end()) {
        if (!args->is_object()) {
            throw RequestError(EINVAL, "field 'args' must be an object");
        }
        request.args = *args;
    }
    return request;
}

std::uint64_t Request::u64(const std::string& key, std::uint64_t fallback, std::uint64_t min,
                           std::uint64_t max) const {
    const auto it = args.find(key);
    if (it == args.end()) {
        return fallback;
    }
    // A value parsed from the wire is number_unsigned when non-negative; a Json built in
    // code from an int is number_integer, accepted when it is not negative.
    const bool non_negative =
        it->is_number_unsigned() || (it->is_number_integer() && it->get<std::int64_t>() >= 0);
    if (!non_negative || it->get<std::uint64_t>() < min || it->get<std::uint64_t>() > max) {
        throw RequestError(EINVAL, "argument " + shown(key) + " must be an integer in " +
                                       std::to_string(min) + ".." + std::to_string(max));
    }
    return it->get<std::uint64_t>();
}

bool Request::boolean(const std::string& key, bool fallback) const {
    const auto it = args.find(key);
    if (it == args.end()) {
        return fallback;
    }
    if (!it->is_boolean()) {
        throw RequestError(EINVAL, "argument " + shown(key) + " must be true or false");
    }
    return it->get<bool>();
}

std::string Request::name(const std::string& key, const std::string& fallback) const {
    const auto it = args.find(key);
    if (it == args.end()) {
        return fallback;
    }
    if (!it->is_string() || !RuntimeDir::valid_name(it->get<std::string>())) {
        throw RequestError(EINVAL, "argument " + shown(key) +
                                       " must be a VM name: 1..64 characters of [A-Za-z0-9._-], "
                                       "not starting with '.' or '-'");
    }
    return it->get<std::string>();
}

std::string Request::hex_bytes(const std::string& key, std::size_t max) const {
    const auto it = args.find(key);
    if (it == args.end()) {
        throw RequestError(EINVAL, "argument " + shown(key) + " is required");
    }
    const std::string* text = it->get_ptr<const std::string*>();
    if (text == nullptr || text->empty() || text->size() % 2 != 0 || text->size() / 2 > max) {
        throw RequestError(EINVAL, "argument " + shown(key) + " must be 1.." + std::to_string(max) +
                                       " bytes as a string of hex digit pairs");
    }
    auto nibble = [&](char c) -> unsigned {
        if (c >= '0' && c <= '9') {
            return static_cast<unsigned>(c - '0');
        }
        if (c >= 'a' && c <= 'f') {
            return static_cast<unsigned>(c - 'a' + 10);
        }
        if (c >= 'A' && c <= 'F') {
            return static_cast<unsigned>(c - 'A' + 10);
        }
        throw RequestError(EINVAL, "argument " + shown(key) + " has a non-hex character");
    };
    std::string out(text->size() / 2, '\0');
    for (std::size_t i = 0; i < out.size(); ++i) {
        out[i] = static_cast<char>((nibble((*text)[2 * i]) << 4) | nibble((*text)[2 * i + 1]));
    }
    return out;
}

std::string to_hex(std::string_view bytes) {
    constexpr std::string_view digits = "0123456789abcdef";
    std::string out;
    out.reserve(bytes.size() * 2);
    for (const char c : bytes) {
        const auto b = static_cast<unsigned char>(c);
        out += digits[b >> 4];
        out += digits[b & 0xf];
    }
    return out;
}

void Request::check_only(std::initializer_list<const char*> keys) const {
    for (const auto& [key, value] : args.items()) {
        const bool known =
            std::any_of(keys.begin(), keys.end(), [&key = key](const char* k) { return key == k; });
        if (!known) {
            throw RequestError(EINVAL, "unknown argument " + shown(key) + " for " + shown(op));
        }
    }
}

} // namespace vmfork::control
