// SPDX-License-Identifier: GPL-2.0
#include "vmfork/control/protocol.h"

#include <array>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <fcntl.h>
#include <functional>
#include <gtest/gtest.h>
#include <string>
#include <sys/socket.h>
#include <unistd.h>
#include <vector>

#include "thrown_errno.h"
#include "vmfork/unique_fd.h"

namespace vmfork::control {
namespace {

using Bytes = std::vector<std::uint8_t>;
using namespace std::chrono_literals;

std::string request_error_text(const std::function<void()>& f) {
    try {
        f();
    } catch (const RequestError& e) {
        return e.what();
    }
    return "(no RequestError)";
}

// The errno of decoding bytes in one feed.
int decode_errno(const Bytes& bytes) {
    return thrown_errno<ProtocolError>([&] {
        Decoder decoder;
        decoder.feed(bytes);
        static_cast<void>(decoder.next());
    });
}

void put_le32(Bytes& bytes, std::size_t at, std::uint32_t v) {
    for (unsigned i = 0; i < 4; i++) {
        bytes.at(at + i) = static_cast<std::uint8_t>(v >> (8U * i));
    }
}

// A header announcing length bytes, followed by payload.
Bytes frame(const std::string& payload, std::uint32_t length,
            MessageType type = MessageType::Request) {
    Bytes bytes = encode(Message{type, Json::object()});
    bytes.resize(header_size);
    put_le32(bytes, 8, length);
    bytes.insert(bytes.end(), payload.begin(), payload.end());
    return bytes;
}

Bytes frame(const std::string& payload) {
    return frame(payload, static_cast<std::uint32_t>(payload.size()));
}

struct SocketPair {
    UniqueFd a;
    UniqueFd b;
};

SocketPair socket_pair() {
    std::array<int, 2> fds{-1, -1};
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds.data()), 0);
    return {UniqueFd(fds[0]), UniqueFd(fds[1])};
}

void write_all(int fd, const Bytes& bytes) {
    ASSERT_EQ(::write(fd, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
}

Clock::time_point in(std::chrono::milliseconds ms) {
    return Clock::now() + ms;
}

TEST(ControlProtocol, EncodeWritesTheDocumentedHeader) {
    const Bytes bytes = encode(Message{MessageType::Reply, Json{{"a", 1}}});
    const std::string payload = R"({"a":1})";
    ASSERT_EQ(bytes.size(), header_size + payload.size());
    const Bytes header(bytes.begin(), bytes.begin() + header_size);
    const Bytes expected{'V', 'M', 'F', 'K', 1, 0, 2, 0, 7, 0, 0, 0, 0, 0, 0, 0};
    EXPECT_EQ(header, expected);
    EXPECT_EQ(std::string(bytes.begin() + header_size, bytes.end()), payload);
}

TEST(ControlProtocol, RoundTrip) {
    const Json body{{"op", "fork"},
                    {"args", {{"count", 3}, {"name", "vm-1"}, {"text", "h\u00e9llo \u2603"}}}};
    Decoder decoder;
    decoder.feed(encode(Message{MessageType::Request, body}));
    const auto message = decoder.next();
    ASSERT_TRUE(message.has_value());
    EXPECT_EQ(message->type, MessageType::Request);
    EXPECT_EQ(message->body, body);
    EXPECT_EQ(decoder.pending(), 0U);
    EXPECT_FALSE(decoder.next().has_value());
}

TEST(ControlProtocol, TwoMessagesInOneFeed) {
    Bytes bytes = encode(Message{MessageType::Request, Json{{"n", 1}}});
    const Bytes second = encode(Message{MessageType::Reply, Json{{"n", 2}}});
    bytes.insert(bytes.end(), second.begin(), second.end());
    Decoder decoder;
    decoder.feed(bytes);
    const auto first = decoder.next();
    ASSERT_TRUE(first.has_value());
    EXPECT_EQ(first->type, MessageType::Request);
    EXPECT_EQ(first->body["n"], 1);
    EXPECT_EQ(decoder.pending(), second.size());
    const auto next = decoder.next();
    ASSERT_TRUE(next.has_value());
    EXPECT_EQ(next->type, MessageType::Reply);
    EXPECT_EQ(next->body["n"], 2);
    EXPECT_FALSE(decoder.next().has_value());
    EXPECT_EQ(decoder.pending(), 0U);
}

TEST(ControlProtocol, ByteByByte) {
    const Json body{{"op", "status"}, {"args", {{"verbose", true}}}};
    const Bytes bytes = encode(Message{MessageType::Request, body});
    Decoder decoder;
    for (std::size_t i = 0; i + 1 < bytes.size(); i++) {
        decoder.feed(std::span(bytes).subspan(i, 1));
        ASSERT_FALSE(decoder.next().has_value()) << "complete after " << i + 1 << " bytes";
        EXPECT_EQ(decoder.pending(), i + 1);
    }
    decoder.feed(std::span(bytes).last(1));
    const auto message = decoder.next();
    ASSERT_TRUE(message.has_value());
    EXPECT_EQ(message->body, body);
    EXPECT_EQ(decoder.pending(), 0U);
}

TEST(ControlProtocol, EmptyObjectRoundTrips) {
    Decoder decoder;
    decoder.feed(encode(Message{}));
    const auto message = decoder.next();
    ASSERT_TRUE(message.has_value());
    EXPECT_EQ(message->body, Json::object());
}

TEST(ControlProtocol, RejectsBadMagic) {
    Bytes bytes = frame("{}");
    bytes[0] = 'X';
    EXPECT_EQ(decode_errno(bytes), EPROTO);
}

TEST(ControlProtocol, RejectsBadVersion) {
    Bytes bytes = frame("{}");
    bytes[4] = 2;
    EXPECT_EQ(decode_errno(bytes), EPROTO);
    bytes[4] = 0;
    EXPECT_EQ(decode_errno(bytes), EPROTO);
}

TEST(ControlProtocol, RejectsUnknownType) {
    for (const std::uint8_t type : {0, 3, 255}) {
        Bytes bytes = frame("{}");
        bytes[6] = type;
        EXPECT_EQ(decode_errno(bytes), EPROTO) << "type " << int{type};
    }
}

TEST(ControlProtocol, RejectsNonZeroReserved) {
    Bytes bytes = frame("{}");
    bytes[15] = 1;
    EXPECT_EQ(decode_errno(bytes), EPROTO);
}

TEST(ControlProtocol, RejectsOversizedLengthFromTheHeaderAlone) {
    // Only the header: the decoder must not wait for the announced payload.
    EXPECT_EQ(decode_errno(frame("", max_payload + 1)), EMSGSIZE);
    EXPECT_EQ(decode_errno(frame("", 0xffffffffU)), EMSGSIZE);
    // The maximum itself is only incomplete.
    Decoder decoder;
    decoder.feed(frame("", max_payload));
    EXPECT_FALSE(decoder.next().has_value());
}

TEST(ControlProtocol, RejectsPayloadsThatAreNotJsonObjects) {
    EXPECT_EQ(decode_errno(frame("not json")), EPROTO);
    EXPECT_EQ(decode_errno(frame("{\"a\":")), EPROTO);
    EXPECT_EQ(decode_errno(frame("")), EPROTO);
    EXPECT_EQ(decode_errno(frame("[1,2]")), EPROTO);
    EXPECT_EQ(decode_errno(frame("42")), EPROTO);
    EXPECT_EQ(decode_errno(frame("\"text\"")), EPROTO);
    EXPECT_EQ(decode_errno(frame("null")), EPROTO);
    EXPECT_EQ(decode_errno(frame("{} {}")), EPROTO);
}

TEST(ControlProtocol, RejectsInvalidUtf8Payload) {
    EXPECT_EQ(decode_errno(frame("{\"a\":\"\xff\xfe\"}")), EPROTO);
    EXPECT_EQ(decode_errno(frame("{\"a\":\"\xc3\"}")), EPROTO);
}

TEST(ControlProtocol, RejectsDeepNesting) {
    const std::string deep = "{\"a\":" + std::string(10000, '[') + std::string(10000, ']') + "}";
    EXPECT_EQ(decode_errno(frame(deep)), EPROTO);
    const std::string fine = "{\"a\":" + std::string(20, '[') + std::string(20, ']') + "}";
    EXPECT_EQ(decode_errno(frame(fine)), -1);
}

TEST(ControlProtocol, EncodeRejectsBadBodies) {
    EXPECT_EQ(thrown_errno<ProtocolError>([] {
                  encode(Message{MessageType::Request, Json::array()});
              }),
              EPROTO);
    EXPECT_EQ(thrown_errno<ProtocolError>([] {
                  encode(Message{MessageType::Request, Json(5)});
              }),
              EPROTO);
    EXPECT_EQ(thrown_errno<ProtocolError>([] {
                  encode(Message{MessageType::Request, Json{{"s", std::string("\xff")}}});
              }),
              EPROTO);
    EXPECT_EQ(thrown_errno<ProtocolError>([] {
                  encode(Message{MessageType::Request, Json{{"s", std::string(max_payload, 'x')}}});
              }),
              EMSGSIZE);
    EXPECT_EQ(thrown_errno<ProtocolError>([] {
                  encode(Message{static_cast<MessageType>(7), Json::object()});
              }),
              EPROTO);
}

TEST(ControlProtocol, SendAndReceiveOnASocket) {
    const SocketPair sp = socket_pair();
    const Json big{{"data", std::string(max_payload - 20, 'z')}};
    send_message(sp.a.get(), Message{MessageType::Request, Json{{"op", "one"}}}, in(1s));
    send_message(sp.a.get(), Message{MessageType::Reply, big}, in(1s));
    const Message first = receive_message(sp.b.get(), in(1s));
    EXPECT_EQ(first.type, MessageType::Request);
    EXPECT_EQ(first.body["op"], "one");
    const Message second = receive_message(sp.b.get(), in(1s));
    EXPECT_EQ(second.type, MessageType::Reply);
    EXPECT_EQ(second.body, big);
}

TEST(ControlProtocol, ReceiveReadsOnlyOneMessage) {
    const SocketPair sp = socket_pair();
    Bytes bytes = encode(Message{MessageType::Request, Json{{"n", 1}}});
    const Bytes second = encode(Message{MessageType::Request, Json{{"n", 2}}});
    bytes.insert(bytes.end(), second.begin(), second.end());
    write_all(sp.a.get(), bytes);
    EXPECT_EQ(receive_message(sp.b.get(), in(1s)).body["n"], 1);
    EXPECT_EQ(receive_message(sp.b.get(), in(1s)).body["n"], 2);
}

TEST(ControlProtocol, TruncatedStreamIsConnectionReset) {
    const Bytes bytes = encode(Message{MessageType::Request, Json{{"op", "status"}}});
    for (const std::size_t half : {header_size / 2, header_size + 3}) {
        SocketPair sp = socket_pair();
        write_all(sp.a.get(), Bytes(bytes.begin(), bytes.begin() + static_cast<long>(half)));
        sp.a.reset();
        EXPECT_EQ(thrown_errno<ProtocolError>([&] { receive_message(sp.b.get(), in(1s)); }),
                  ECONNRESET)
            << "after " << half << " bytes";
    }
}

TEST(ControlProtocol, EofAtMessageBoundaryIsConnectionReset) {
    SocketPair sp = socket_pair();
    sp.a.reset();
    EXPECT_EQ(thrown_errno<ProtocolError>([&] { receive_message(sp.b.get(), in(1s)); }),
              ECONNRESET);
}

TEST(ControlProtocol, ReceiveRejectsOversizedHeaderWithoutPayload) {
    const SocketPair sp = socket_pair();
    write_all(sp.a.get(), frame("", max_payload + 1));
    // The payload never comes: the error must come from the header, not a timeout.
    EXPECT_EQ(thrown_errno<ProtocolError>([&] { receive_message(sp.b.get(), in(5s)); }), EMSGSIZE);
}

TEST(ControlProtocol, ReceiveRejectsGarbage) {
    const SocketPair sp = socket_pair();
    const std::string garbage = "GET / HTTP/1.1\r\n\r\n";
    write_all(sp.a.get(), Bytes(garbage.begin(), garbage.end()));
    EXPECT_EQ(thrown_errno<ProtocolError>([&] { receive_message(sp.b.get(), in(5s)); }), EPROTO);
}

TEST(ControlProtocol, ReceiveTimesOut) {
    const SocketPair sp = socket_pair();
    const auto start = Clock::now();
    EXPECT_EQ(thrown_errno<ProtocolError>([&] { receive_message(sp.b.get(), in(100ms)); }),
              ETIMEDOUT);
    const auto elapsed = Clock::now() - start;
    EXPECT_GE(elapsed, 95ms);
    EXPECT_LT(elapsed, 2s);
}

TEST(ControlProtocol, ReceiveTimesOutInTheMiddleOfAMessage) {
    const SocketPair sp = socket_pair();
    const Bytes bytes = encode(Message{MessageType::Request, Json{{"op", "status"}}});
    write_all(sp.a.get(), Bytes(bytes.begin(), bytes.begin() + header_size + 2));
    EXPECT_EQ(thrown_errno<ProtocolError>([&] { receive_message(sp.b.get(), in(100ms)); }),
              ETIMEDOUT);
}

TEST(ControlProtocol, SendToAClosedPeerFailsWithoutSigpipe) {
    SocketPair sp = socket_pair();
    sp.b.reset();
    // Without MSG_NOSIGNAL this kills the test binary with SIGPIPE.
    EXPECT_EQ(thrown_errno<ProtocolError>([&] { send_message(sp.a.get(), Message{}, in(1s)); }),
              EPIPE);
}

TEST(ControlProtocol, SendTimesOutWhenThePeerDoesNotRead) {
    const SocketPair sp = socket_pair();
    // Fill the socket buffer.
    const int flags = ::fcntl(sp.a.get(), F_GETFL);
    ASSERT_EQ(::fcntl(sp.a.get(), F_SETFL, flags | O_NONBLOCK), 0);
    const std::vector<char> chunk(4096, 'x');
    while (::send(sp.a.get(), chunk.data(), chunk.size(), MSG_NOSIGNAL) > 0) {
    }
    ASSERT_EQ(errno, EAGAIN);
    ASSERT_EQ(::fcntl(sp.a.get(), F_SETFL, flags), 0);
    EXPECT_EQ(thrown_errno<ProtocolError>([&] { send_message(sp.a.get(), Message{}, in(100ms)); }),
              ETIMEDOUT);
}

TEST(ControlRequest, ParsesOpAndArgs) {
    const Request r = Request::parse(Json{{"op", "fork_vm"}, {"args", {{"count", 2}}}});
    EXPECT_EQ(r.op, "fork_vm");
    EXPECT_EQ(r.args, Json({{"count", 2}}));
    const Request bare = Request::parse(Json{{"op", "status"}});
    EXPECT_EQ(bare.op, "status");
    EXPECT_EQ(bare.args, Json::object());
    EXPECT_EQ(Request::parse(Json{{"op", std::string(32, 'a')}}).op, std::string(32, 'a'));
}

TEST(ControlRequest, ParseErrors) {
    EXPECT_EQ(thrown_errno<RequestError>([] { Request::parse(Json::object()); }), EINVAL);
    EXPECT_EQ(thrown_errno<RequestError>([] { Request::parse(Json::array()); }), EINVAL);
    EXPECT_EQ(thrown_errno<RequestError>([] { Request::parse(Json{{"op", 5}}); }), EINVAL);
    EXPECT_EQ(thrown_errno<RequestError>([] { Request::parse(Json{{"op", nullptr}}); }), EINVAL);
    EXPECT_EQ(thrown_errno<RequestError>([] { Request::parse(Json{{"op", ""}}); }), EINVAL);
    EXPECT_EQ(thrown_errno<RequestError>([] { Request::parse(Json{{"op", "Fork"}}); }), EINVAL);
    EXPECT_EQ(thrown_errno<RequestError>([] { Request::parse(Json{{"op", "fork-vm"}}); }), EINVAL);
    EXPECT_EQ(thrown_errno<RequestError>([] { Request::parse(Json{{"op", "fork1"}}); }), EINVAL);
    EXPECT_EQ(thrown_errno<RequestError>([] { Request::parse(Json{{"op", "a b"}}); }), EINVAL);
    EXPECT_EQ(thrown_errno<RequestError>([] {
                  Request::parse(Json{{"op", std::string(33, 'a')}});
              }),
              EINVAL);
    EXPECT_EQ(thrown_errno<RequestError>([] {
                  Request::parse(Json{{"op", "status"}, {"args", 1}});
              }),
              EINVAL);
    EXPECT_EQ(thrown_errno<RequestError>([] {
                  Request::parse(Json{{"op", "status"}, {"args", {1, 2}}});
              }),
              EINVAL);
    EXPECT_EQ(request_error_text([] {
                  Request::parse(Json{{"op", "status"}, {"extra", 1}});
              }),
              "unknown field 'extra' in request");
}

TEST(ControlRequest, U64) {
    // As parsed from the wire (non-negative integers are number_unsigned there).
    const Request r =
        Request::parse(Json::parse(R"({"op":"x","args":{"count":5,"neg":-1,"float":5.0,"str":"5",
                        "zero":0,"big":18446744073709551615,"bool":true,"null":null}})"));
    EXPECT_EQ(r.u64("count", 1, 1, 64), 5U);
    EXPECT_EQ(r.u64("missing", 7, 1, 64), 7U);
    EXPECT_EQ(r.u64("zero", 1, 0, 1), 0U);
    EXPECT_EQ(r.u64("big", 0, 0, UINT64_MAX), UINT64_MAX);
    EXPECT_EQ(request_error_text([&] { static_cast<void>(r.u64("count", 1, 6, 64)); }),
              "argument 'count' must be an integer in 6..64");
    EXPECT_EQ(thrown_errno<RequestError>([&] { static_cast<void>(r.u64("count", 1, 1, 4)); }),
              EINVAL);
    for (const char* key : {"neg", "float", "str", "bool", "null", "big"}) {
        EXPECT_EQ(thrown_errno<RequestError>([&] { static_cast<void>(r.u64(key, 1, 0, 100)); }),
                  EINVAL)
            << key;
    }
    // Built in code: an int is number_integer.
    const Request code{"x", Json{{"n", 3}, {"m", -3}}};
    EXPECT_EQ(code.u64("n", 0, 0, 10), 3U);
    EXPECT_EQ(thrown_errno<RequestError>([&] { static_cast<void>(code.u64("m", 0, 0, 10)); }),
              EINVAL);
}

TEST(ControlRequest, Boolean) {
    const Request r{"x", Json{{"yes", true}, {"no", false}, {"one", 1}, {"str", "true"}}};
    EXPECT_TRUE(r.boolean("yes", false));
    EXPECT_FALSE(r.boolean("no", true));
    EXPECT_TRUE(r.boolean("missing", true));
    EXPECT_FALSE(r.boolean("missing", false));
    EXPECT_EQ(thrown_errno<RequestError>([&] { static_cast<void>(r.boolean("one", false)); }),
              EINVAL);
    EXPECT_EQ(thrown_errno<RequestError>([&] { static_cast<void>(r.boolean("str", false)); }),
              EINVAL);
}

TEST(ControlRequest, Name) {
    const Request r{"x", Json{{"good", "vm-1.test_2"},
                              {"slash", "a/b"},
                              {"dots", ".."},
                              {"dash", "-a"},
                              {"empty", ""},
                              {"long", std::string(65, 'a')},
                              {"number", 5}}};
    EXPECT_EQ(r.name("good", "fallback"), "vm-1.test_2");
    EXPECT_EQ(r.name("missing", "fallback"), "fallback");
    for (const char* key : {"slash", "dots", "dash", "empty", "long", "number"}) {
        EXPECT_EQ(thrown_errno<RequestError>([&] { static_cast<void>(r.name(key, "x")); }), EINVAL)
            << key;
    }
}

TEST(ControlRequest, HexBytes) {
    const std::string all = [] {
        std::string b;
        for (int i = 0; i < 256; ++i) {
            b += static_cast<char>(i);
        }
        return b;
    }();
    const Request r{"input", Json{{"all", to_hex(all)},
                                  {"upper", "0A0d"},
                                  {"odd", "abc"},
                                  {"bad", "zz"},
                                  {"empty", ""},
                                  {"number", 10},
                                  {"long", std::string(18, 'a')}}};
    EXPECT_EQ(to_hex("\n\x1d"), "0a1d");
    EXPECT_EQ(r.hex_bytes("all", 256), all); // every byte, not only UTF-8
    EXPECT_EQ(r.hex_bytes("upper", 8), "\n\r");
    EXPECT_EQ(r.hex_bytes("long", 9), std::string(9, '\xaa'));
    for (const char* key : {"odd", "bad", "empty", "number", "missing"}) {
        EXPECT_EQ(thrown_errno<RequestError>([&] { static_cast<void>(r.hex_bytes(key, 8)); }),
                  EINVAL)
            << key;
    }
    EXPECT_EQ(thrown_errno<RequestError>([&] { static_cast<void>(r.hex_bytes("long", 8)); }),
              EINVAL); // 9 bytes, above the limit
}

TEST(ControlRequest, CheckOnly) {
    const Request r{"fork", Json{{"count", 1}, {"name", "a"}}};
    EXPECT_NO_THROW(r.check_only({"count", "name"}));
    EXPECT_NO_THROW(r.check_only({"count", "name", "other"}));
    EXPECT_EQ(request_error_text([&] { r.check_only({"count"}); }),
              "unknown argument 'name' for 'fork'");
    EXPECT_EQ(thrown_errno<RequestError>([&] { r.check_only({}); }), EINVAL);
    const Request none{"status", Json::object()};
    EXPECT_NO_THROW(none.check_only({}));
}

TEST(ControlReply, OkAndErrorReplies) {
    EXPECT_EQ(ok_reply(), Json({{"ok", true}}));
    EXPECT_EQ(ok_reply(Json{{"pid", 42}}), Json({{"ok", true}, {"pid", 42}}));
    EXPECT_THROW(static_cast<void>(ok_reply(Json::array())), std::invalid_argument);
    EXPECT_EQ(error_reply(ENOENT, "no such VM"),
              Json({{"ok", false}, {"errno", ENOENT}, {"error", "no such VM"}}));
    // Invalid UTF-8 in the text (bytes quoted from a peer) must not make it unencodable.
    const Json bad = error_reply(EPROTO, "got '\xff'");
    EXPECT_EQ(bad["error"], "got '\xef\xbf\xbd'");
    EXPECT_NO_THROW(static_cast<void>(encode(Message{MessageType::Reply, bad})));
}

} // namespace
} // namespace vmfork::control
