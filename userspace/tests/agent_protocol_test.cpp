// SPDX-License-Identifier: GPL-2.0
#include "vmfork/agent/protocol.h"

#include <array>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <gtest/gtest.h>
#include <string>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

#include "thrown_errno.h"
#include "vmfork/unique_fd.h"

namespace vmfork::agent {
namespace {

using Bytes = std::vector<std::uint8_t>;
using namespace std::chrono_literals;

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

// A header of type announcing length bytes, followed by payload.
Bytes frame(MessageType type, const std::string& payload, std::uint32_t length) {
    Bytes bytes = encode(Message::bytes(MessageType::Stdout, ""));
    bytes[6] = static_cast<std::uint8_t>(type);
    put_le32(bytes, 8, length);
    bytes.insert(bytes.end(), payload.begin(), payload.end());
    return bytes;
}

Bytes frame(MessageType type, const std::string& payload) {
    return frame(type, payload, static_cast<std::uint32_t>(payload.size()));
}

std::string all_bytes() {
    std::string b;
    for (int i = 0; i < 256; ++i) {
        b += static_cast<char>(i);
    }
    return b;
}

Message round_trip(const Message& message) {
    Decoder decoder;
    decoder.feed(encode(message));
    std::optional<Message> decoded = decoder.next();
    EXPECT_TRUE(decoded.has_value());
    EXPECT_EQ(decoder.pending(), 0U);
    return decoded.value_or(Message{});
}

Identity sample_identity() {
    Identity identity;
    identity.name = "clone-1";
    identity.generation = 3;
    identity.parent = "template";
    identity.id = "5f0c-id";
    identity.time_ns = 1'700'000'000'123'456'789U;
    identity.entropy = all_bytes().substr(100, 40);
    return identity;
}

TEST(AgentProtocol, EncodeWritesTheDocumentedHeader) {
    const Bytes bytes = encode(Message::control(MessageType::Exit, Json{{"code", 3}}));
    const std::string payload = R"({"code":3})";
    ASSERT_EQ(bytes.size(), header_size + payload.size());
    const Bytes header(bytes.begin(), bytes.begin() + header_size);
    const Bytes expected{'V', 'M', 'F', 'A', 1, 0, 7, 0, 10, 0, 0, 0, 0, 0, 0, 0};
    EXPECT_EQ(header, expected);
    EXPECT_EQ(std::string(bytes.begin() + header_size, bytes.end()), payload);
}

TEST(AgentProtocol, ControlMessagesRoundTrip) {
    for (const MessageType type :
         {MessageType::Hello, MessageType::HelloReply, MessageType::Exec, MessageType::Exit,
          MessageType::Error, MessageType::Identity, MessageType::IdentityReply}) {
        const Json body{{"type", type_name(type)}, {"text", "h\u00e9llo"}, {"n", {1, 2}}};
        const Message message = round_trip(Message::control(type, body));
        EXPECT_EQ(message.type, type);
        EXPECT_EQ(message.body, body);
        EXPECT_TRUE(message.data.empty());
    }
}

TEST(AgentProtocol, DataMessagesCarryAnyBytes) {
    const std::string binary = all_bytes() + std::string("\0\0{", 3);
    for (const MessageType type : {MessageType::Stdin, MessageType::Stdout, MessageType::Stderr}) {
        EXPECT_TRUE(is_data(type));
        const Message message = round_trip(Message::bytes(type, binary));
        EXPECT_EQ(message.type, type);
        EXPECT_EQ(message.data, binary);
        EXPECT_EQ(round_trip(Message::bytes(type, "")).data, ""); // Stdin's end of file
    }
    const std::string full(max_payload, '\xff');
    EXPECT_EQ(round_trip(Message::bytes(MessageType::Stdout, full)).data, full);
    EXPECT_EQ(thrown_errno<ProtocolError>(
                  [&] { encode(Message::bytes(MessageType::Stdout, full + "x")); }),
              EMSGSIZE);
}

TEST(AgentProtocol, ManyFramesByteByByteAndInBulk) {
    Bytes stream;
    std::string expected;
    for (int i = 0; i < 200; i++) {
        const std::string chunk(static_cast<std::size_t>(i * 37 % 1000), static_cast<char>(i));
        expected += chunk;
        const Bytes bytes = encode(Message::bytes(MessageType::Stdout, chunk));
        stream.insert(stream.end(), bytes.begin(), bytes.end());
    }
    const Bytes exit = encode(Message::control(MessageType::Exit, Json{{"code", 0}}));
    stream.insert(stream.end(), exit.begin(), exit.end());
    // In pieces of every size from 1 byte up: the decoder's buffer compaction must keep
    // the stream intact.
    for (const std::size_t piece :
         {std::size_t{1}, std::size_t{7}, std::size_t{4096}, stream.size()}) {
        Decoder decoder;
        std::string data;
        bool exited = false;
        for (std::size_t at = 0; at < stream.size(); at += piece) {
            decoder.feed(std::span(stream).subspan(at, std::min(piece, stream.size() - at)));
            while (std::optional<Message> message = decoder.next()) {
                ASSERT_FALSE(exited) << "a message after Exit";
                if (message->type == MessageType::Exit) {
                    exited = true;
                } else {
                    data += message->data;
                }
            }
        }
        EXPECT_TRUE(exited) << "piece " << piece;
        EXPECT_EQ(data, expected) << "piece " << piece;
        EXPECT_EQ(decoder.pending(), 0U);
    }
}

TEST(AgentProtocol, RejectsBadMagic) {
    Bytes bytes = frame(MessageType::Hello, "{}");
    bytes[3] = 'K'; // the control protocol's "VMFK"
    EXPECT_EQ(decode_errno(bytes), EPROTO);
}

TEST(AgentProtocol, RejectsBadVersion) {
    Bytes bytes = frame(MessageType::Hello, "{}");
    bytes[4] = 2;
    EXPECT_EQ(decode_errno(bytes), EPROTO);
    bytes[4] = 0;
    EXPECT_EQ(decode_errno(bytes), EPROTO);
}

TEST(AgentProtocol, RejectsUnknownType) {
    for (const std::uint8_t type : {0, 11, 255}) {
        EXPECT_EQ(decode_errno(frame(static_cast<MessageType>(type), "{}")), EPROTO)
            << "type " << int{type};
    }
    EXPECT_EQ(decode_errno(frame(MessageType::IdentityReply, "{}")), -1);
}

TEST(AgentProtocol, RejectsNonZeroReserved) {
    Bytes bytes = frame(MessageType::Hello, "{}");
    bytes[12] = 1;
    EXPECT_EQ(decode_errno(bytes), EPROTO);
}

TEST(AgentProtocol, RejectsOversizedLengthFromTheHeaderAlone) {
    EXPECT_EQ(decode_errno(frame(MessageType::Stdin, "", max_payload + 1)), EMSGSIZE);
    EXPECT_EQ(decode_errno(frame(MessageType::Exec, "", 0xffffffffU)), EMSGSIZE);
    Decoder decoder;
    decoder.feed(frame(MessageType::Stdin, "", max_payload));
    EXPECT_FALSE(decoder.next().has_value());
}

TEST(AgentProtocol, ControlPayloadsMustBeJsonObjects) {
    for (const char* payload :
         {"", "not json", "[1]", "42", "{\"a\":", "{} {}", "{\"a\":\"\xff\"}"}) {
        EXPECT_EQ(decode_errno(frame(MessageType::Exec, payload)), EPROTO) << payload;
    }
    const std::string deep = "{\"a\":" + std::string(1000, '[') + std::string(1000, ']') + "}";
    EXPECT_EQ(decode_errno(frame(MessageType::Identity, deep)), EPROTO);
    // The same bytes as data are fine.
    EXPECT_EQ(decode_errno(frame(MessageType::Stdin, "not json")), -1);
}

TEST(AgentProtocol, TruncatedStreamIsConnectionReset) {
    const Bytes bytes = encode(Message::control(MessageType::Hello, Json{{"version", 1}}));
    for (const std::size_t cut : {std::size_t{0}, header_size / 2, header_size + 3}) {
        std::array<int, 2> fds{-1, -1};
        ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds.data()), 0);
        const UniqueFd reader(fds[0]);
        UniqueFd writer(fds[1]);
        ASSERT_EQ(::write(writer.get(), bytes.data(), cut), static_cast<ssize_t>(cut));
        writer.reset();
        EXPECT_EQ(
            thrown_errno<ProtocolError>([&] { receive_message(reader.get(), Clock::now() + 1s); }),
            ECONNRESET)
            << "after " << cut << " bytes";
    }
}

TEST(AgentProtocol, ReceiveTimesOut) {
    std::array<int, 2> fds{-1, -1};
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds.data()), 0);
    const UniqueFd a(fds[0]);
    const UniqueFd b(fds[1]);
    EXPECT_EQ(thrown_errno<ProtocolError>([&] { receive_message(a.get(), Clock::now() + 100ms); }),
              ETIMEDOUT);
}

TEST(AgentBodies, ExecRequestRoundTripAndChecks) {
    ExecRequest request;
    request.argv = {"sh", "-c", "echo $X"};
    request.env = {{"X", "1"}};
    request.with_stdin = true;
    request.cwd = "/tmp";
    const ExecRequest back = ExecRequest::from_json(request.to_json());
    EXPECT_EQ(back.argv, request.argv);
    EXPECT_EQ(back.env, request.env);
    EXPECT_TRUE(back.with_stdin);
    EXPECT_EQ(back.cwd, request.cwd);
    const ExecRequest bare = ExecRequest::from_json(Json{{"argv", {"true"}}});
    EXPECT_FALSE(bare.with_stdin);
    EXPECT_FALSE(bare.cwd.has_value());

    for (const Json& bad :
         {Json::object(), Json{{"argv", Json::array()}}, Json{{"argv", "ls"}}, Json{{"argv", {1}}},
          Json{{"argv", {""}}}, Json{{"argv", {std::string("a\0b", 3)}}},
          Json{{"argv", {"ls"}}, {"env", {{"A=B", "x"}}}},
          Json{{"argv", {"ls"}}, {"env", {{"A", 1}}}}, Json{{"argv", {"ls"}}, {"stdin", 1}},
          Json{{"argv", {"ls"}}, {"cwd", ""}}, Json{{"argv", {"ls"}}, {"extra", true}}}) {
        EXPECT_EQ(thrown_errno<ProtocolError>([&] { ExecRequest::from_json(bad); }), EINVAL)
            << bad.dump();
    }
}

TEST(AgentBodies, ExitStatus) {
    const ExitStatus code = ExitStatus::from_json(Json{{"code", 3}});
    EXPECT_EQ(code.code, 3);
    EXPECT_FALSE(code.signal.has_value());
    EXPECT_EQ(code.shell_status(), 3);
    const ExitStatus signal = ExitStatus::from_json(Json{{"signal", 9}});
    EXPECT_EQ(signal.signal, 9);
    EXPECT_EQ(signal.shell_status(), 137);
    EXPECT_EQ(ExitStatus::from_json(signal.to_json()).signal, 9);
    EXPECT_EQ(ExitStatus::from_json(code.to_json()).code, 3);
    for (const Json& bad : {Json::object(), Json{{"code", 1}, {"signal", 2}}, Json{{"code", 256}},
                            Json{{"code", -1}}, Json{{"signal", 0}}, Json{{"code", "0"}}}) {
        EXPECT_EQ(thrown_errno<ProtocolError>([&] { ExitStatus::from_json(bad); }), EINVAL)
            << bad.dump();
    }
    // From waitpid(): a real exit and a real signal.
    for (const int expected : {0, 3}) {
        const pid_t pid = ::fork();
        ASSERT_GE(pid, 0);
        if (pid == 0) {
            ::_exit(expected);
        }
        int status = 0;
        ASSERT_EQ(::waitpid(pid, &status, 0), pid);
        EXPECT_EQ(ExitStatus::from_wait_status(status).code, expected);
    }
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        ::raise(SIGKILL);
        ::_exit(0);
    }
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    EXPECT_EQ(ExitStatus::from_wait_status(status).shell_status(), 137);
}

TEST(AgentBodies, IdentityRoundTripAndChecks) {
    const Identity identity = sample_identity();
    const Json body = identity.to_json();
    EXPECT_EQ(body["entropy"], to_hex(identity.entropy));
    const Identity back = Identity::from_json(body);
    EXPECT_EQ(back.name, identity.name);
    EXPECT_EQ(back.generation, identity.generation);
    EXPECT_EQ(back.parent, identity.parent);
    EXPECT_EQ(back.id, identity.id);
    EXPECT_EQ(back.time_ns, identity.time_ns);
    EXPECT_EQ(back.entropy, identity.entropy);

    auto with = [&](const char* key, const Json& value) {
        Json changed = body;
        changed[key] = value;
        return changed;
    };
    for (const Json& bad :
         {with("name", ""), with("name", "a/b"), with("name", "-x"),
          with("name", std::string(65, 'a')), with("generation", -1), with("generation", "1"),
          with("parent", "../x"), with("entropy", to_hex(std::string(31, 'x'))),
          with("entropy", to_hex(std::string(65, 'x'))), with("entropy", "zz"),
          with("entropy", "abc"), with("time_ns", 1.5), with("extra", 1)}) {
        EXPECT_EQ(thrown_errno<ProtocolError>([&] { Identity::from_json(bad); }), EINVAL)
            << bad.dump();
    }
    Json missing = body;
    missing.erase("id");
    EXPECT_EQ(thrown_errno<ProtocolError>([&] { Identity::from_json(missing); }), EINVAL);
}

TEST(AgentBodies, IdentityReplyRoundTrip) {
    IdentityReply reply;
    reply.ok = false;
    reply.ms = 12;
    reply.steps = {StepReport{"hostname", true, false, 0, "set"},
                   StepReport{"clock", true, true, 0, "--no-clock"},
                   StepReport{"entropy", false, false, EPERM, "ioctl: denied"}};
    HookReport hook;
    hook.path = "/etc/vmfork/clone.d/10-x";
    hook.status.signal = 9;
    hook.timed_out = true;
    hook.output = "partial";
    reply.hooks = {hook};
    const IdentityReply back = IdentityReply::from_json(reply.to_json());
    EXPECT_FALSE(back.ok);
    EXPECT_EQ(back.ms, 12U);
    ASSERT_EQ(back.steps.size(), 3U);
    ASSERT_NE(back.find("entropy"), nullptr);
    EXPECT_EQ(back.find("entropy")->err, EPERM);
    EXPECT_EQ(back.find("entropy")->detail, "ioctl: denied");
    EXPECT_FALSE(back.find("entropy")->ok);
    EXPECT_TRUE(back.find("clock")->skipped);
    EXPECT_EQ(back.find("nothing"), nullptr);
    ASSERT_EQ(back.hooks.size(), 1U);
    EXPECT_EQ(back.hooks[0].path, hook.path);
    EXPECT_EQ(back.hooks[0].status.signal, 9);
    EXPECT_TRUE(back.hooks[0].timed_out);
    EXPECT_FALSE(back.hooks[0].ok);
    EXPECT_EQ(back.hooks[0].output, "partial");
}

TEST(AgentBodies, ErrorBodyIsAlwaysEncodable) {
    const Json body = error_body(EPROTO, "got '\xff'");
    EXPECT_EQ(body["errno"], EPROTO);
    EXPECT_EQ(body["error"], "got '\xef\xbf\xbd'");
    EXPECT_NO_THROW(static_cast<void>(encode(Message::control(MessageType::Error, body))));
}

} // namespace
} // namespace vmfork::agent
