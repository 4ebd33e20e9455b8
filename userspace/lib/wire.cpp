// SPDX-License-Identifier: GPL-2.0
#include "vmfork/wire.h"

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <exception>
#include <poll.h>
#include <sys/socket.h>
#include <system_error>

namespace vmfork::wire {

namespace {

[[noreturn]] void raise(const Format& f, int err, const std::string& what) {
    f.fail(err, what);
    std::terminate(); // a Fail that returns breaks its contract
}

void put_le16(std::uint8_t* p, std::uint16_t v) {
    p[0] = static_cast<std::uint8_t>(v);
    p[1] = static_cast<std::uint8_t>(v >> 8U);
}

void put_le32(std::uint8_t* p, std::uint32_t v) {
    for (unsigned i = 0; i < 4; i++) {
        p[i] = static_cast<std::uint8_t>(v >> (8U * i));
    }
}

std::uint16_t get_le16(const std::uint8_t* p) {
    return static_cast<std::uint16_t>(p[0] | (p[1] << 8U));
}

std::uint32_t get_le32(const std::uint8_t* p) {
    std::uint32_t v = 0;
    for (unsigned i = 0; i < 4; i++) {
        v |= static_cast<std::uint32_t>(p[i]) << (8U * i);
    }
    return v;
}

std::string errno_text(int err) {
    return std::generic_category().message(err);
}

void check_length(const Format& f, std::size_t length) {
    if (length > f.max_payload) {
        raise(f, EMSGSIZE,
              "message payload of " + std::to_string(length) +
                  " bytes is larger than the maximum of " + std::to_string(f.max_payload));
    }
}

// Waits until fd is ready for events or the deadline passes (ETIMEDOUT).
void wait_for(const Format& f, int fd, short events, Clock::time_point deadline, const char* what) {
    for (;;) {
        const auto now = Clock::now();
        if (deadline <= now) {
            raise(f, ETIMEDOUT, std::string("timed out ") + what);
        }
        const auto remaining = std::chrono::ceil<std::chrono::milliseconds>(deadline - now);
        const auto timeout =
            static_cast<int>(std::min<std::chrono::milliseconds::rep>(remaining.count(), INT_MAX));
        pollfd pfd{fd, events, 0};
        const int ready = ::poll(&pfd, 1, timeout);
        if (ready < 0) {
            if (errno == EINTR) {
                continue;
            }
            const int err = errno;
            raise(f, err, std::string("poll failed ") + what + ": " + errno_text(err));
        }
        if (ready > 0) {
            return; // readable, writable, or an error/hangup the next I/O call reports
        }
    }
}

} // namespace

std::vector<std::uint8_t> encode(const Format& f, std::uint16_t type, std::string_view payload) {
    check_length(f, payload.size());
    std::vector<std::uint8_t> bytes(header_size + payload.size());
    put_le32(bytes.data(), f.magic);
    put_le16(bytes.data() + 4, f.version);
    put_le16(bytes.data() + 6, type);
    put_le32(bytes.data() + 8, static_cast<std::uint32_t>(payload.size()));
    put_le32(bytes.data() + 12, 0);
    std::memcpy(bytes.data() + header_size, payload.data(), payload.size());
    return bytes;
}

Header parse_header(const Format& f, std::span<const std::uint8_t, header_size> bytes) {
    const std::uint8_t* p = bytes.data();
    if (get_le32(p) != f.magic) {
        raise(f, EPROTO,
              std::string("bad message magic (not a vmfork ") + f.connection + " connection?)");
    }
    const std::uint16_t ver = get_le16(p + 4);
    if (ver != f.version) {
        raise(f, EPROTO,
              std::string("unsupported ") + f.connection + " protocol version " +
                  std::to_string(ver) + " (expected " + std::to_string(f.version) + ")");
    }
    const std::uint16_t type = get_le16(p + 6);
    if (!f.known_type(type)) {
        raise(f, EPROTO, "unknown message type " + std::to_string(type));
    }
    if (get_le32(p + 12) != 0) {
        raise(f, EPROTO, "reserved header field is not zero");
    }
    const std::uint32_t length = get_le32(p + 8);
    check_length(f, length);
    return {type, length};
}

nlohmann::json parse_object(const Format& f, std::span<const std::uint8_t> payload, int max_depth,
                            const std::string& what) {
    const nlohmann::json::parser_callback_t limit_depth =
        [&](int depth, nlohmann::json::parse_event_t /*event*/, nlohmann::json& /*parsed*/) {
            if (depth > max_depth) {
                raise(f, EPROTO,
                      what + " nests deeper than " + std::to_string(max_depth) + " levels");
            }
            return true;
        };
    nlohmann::json body;
    try {
        body = nlohmann::json::parse(payload.begin(), payload.end(), limit_depth);
    } catch (const nlohmann::json::exception& e) {
        raise(f, EPROTO, what + " is not valid JSON: " + e.what());
    }
    if (!body.is_object()) {
        raise(f, EPROTO, what + " is a JSON " + std::string(body.type_name()) + ", not an object");
    }
    return body;
}

void send_all(const Format& f, int fd, std::span<const std::uint8_t> bytes,
              Clock::time_point deadline) {
    std::size_t done = 0;
    while (done < bytes.size()) {
        const ssize_t n =
            ::send(fd, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n >= 0) {
            done += static_cast<std::size_t>(n);
            continue;
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            wait_for(f, fd, POLLOUT, deadline, "sending a message");
            continue;
        }
        const int err = errno;
        raise(f, err, "cannot send a message: " + errno_text(err));
    }
}

void receive_all(const Format& f, int fd, std::span<std::uint8_t> bytes, Clock::time_point deadline,
                 bool at_boundary) {
    std::size_t done = 0;
    while (done < bytes.size()) {
        const ssize_t n = ::recv(fd, bytes.data() + done, bytes.size() - done, MSG_DONTWAIT);
        if (n > 0) {
            done += static_cast<std::size_t>(n);
            continue;
        }
        if (n == 0) {
            raise(f, ECONNRESET,
                  at_boundary && done == 0 ? "connection closed by the peer"
                                           : "connection closed in the middle of a message");
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            wait_for(f, fd, POLLIN, deadline, "waiting for a message");
            continue;
        }
        const int err = errno;
        raise(f, err, "cannot receive a message: " + errno_text(err));
    }
}

std::pair<Header, std::vector<std::uint8_t>> receive(const Format& f, int fd,
                                                     Clock::time_point deadline) {
    std::array<std::uint8_t, header_size> header_bytes{};
    receive_all(f, fd, header_bytes, deadline, true);
    // Checked before reading on: an oversized length is refused without its payload.
    const Header header = parse_header(f, header_bytes);
    std::vector<std::uint8_t> payload(header.length);
    receive_all(f, fd, payload, deadline, false);
    return {header, std::move(payload)};
}

} // namespace vmfork::wire
