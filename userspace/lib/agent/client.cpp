// SPDX-License-Identifier: GPL-2.0
#include "vmfork/agent/client.h"

#include <array>
#include <cerrno>
#include <climits>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

namespace vmfork::agent {

namespace {

// Stdin read ahead of what the agent has taken: beyond this the client stops reading
// the caller's stdin until the socket drains.
constexpr std::size_t send_limit = std::size_t{256} << 10U;

int poll_timeout(Clock::time_point deadline) {
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now());
    return static_cast<int>(std::clamp<std::chrono::milliseconds::rep>(left.count(), 0, INT_MAX));
}

// Writes all of bytes to a caller's fd, which may be non-blocking.
void write_all(int fd, std::string_view bytes, Clock::time_point deadline, const char* what) {
    while (!bytes.empty()) {
        const ssize_t n = ::write(fd, bytes.data(), bytes.size());
        if (n > 0) {
            bytes.remove_prefix(static_cast<std::size_t>(n));
            continue;
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            pollfd pfd{fd, POLLOUT, 0};
            if (::poll(&pfd, 1, poll_timeout(deadline)) == 0) {
                throw SystemError(ETIMEDOUT, std::string("writing the command's ") + what);
            }
            continue;
        }
        throw SystemError::from_errno(std::string("writing the command's ") + what);
    }
}

[[noreturn]] void throw_agent_error(const Json& body) {
    const Json* err = body.contains("errno") ? &body["errno"] : nullptr;
    const Json* text = body.contains("error") ? &body["error"] : nullptr;
    const int value = err != nullptr && err->is_number_integer() && err->get<int>() > 0
                          ? err->get<int>()
                          : EPROTO;
    throw AgentError(value, "vmfork-agent: " + (text != nullptr && text->is_string()
                                                    ? text->get<std::string>()
                                                    : std::string("error without a text")));
}

} // namespace

AgentClient::AgentClient(UniqueFd fd, std::chrono::milliseconds timeout)
    : fd_(std::move(fd)), timeout_(timeout) {}

Clock::time_point AgentClient::deadline(std::chrono::milliseconds timeout) const {
    const auto now = Clock::now();
    // A timeout of milliseconds::max() means none; now + max would overflow.
    if (timeout >=
        std::chrono::duration_cast<std::chrono::milliseconds>(Clock::time_point::max() - now)) {
        return Clock::time_point::max();
    }
    return now + timeout;
}

void AgentClient::start_request(const char* what) {
    if (!fd_) {
        throw SystemError(ENOTCONN, std::string("agent ") + what);
    }
    if (used_) {
        throw SystemError(EALREADY, std::string("agent ") + what +
                                        ": the connection served its request already");
    }
}

void AgentClient::fail(const char* what, const ProtocolError& e) {
    fd_.reset(); // the stream is out of step or gone: nothing more can be said on it
    throw SystemError(e.err(), std::string("agent ") + what + ": " + e.what());
}

Message AgentClient::expect(const Message& reply, MessageType type, const char* what) {
    if (reply.type == MessageType::Error) {
        fd_.reset();
        throw_agent_error(reply.body);
    }
    if (reply.type != type) {
        fd_.reset();
        throw SystemError(EPROTO, std::string("agent ") + what + ": expected " + type_name(type) +
                                      ", got " + type_name(reply.type));
    }
    return reply;
}

HelloReply AgentClient::hello() {
    start_request("hello");
    if (greeted_) {
        throw SystemError(EALREADY, "agent hello: already said on this connection");
    }
    Message reply;
    try {
        const auto end = deadline(timeout_);
        send_message(fd_.get(), Message::control(MessageType::Hello, Json{{"version", version}}),
                     end);
        reply = receive_message(fd_.get(), end);
    } catch (const ProtocolError& e) {
        fail("hello", e);
    }
    greeted_ = true;
    const Json& body = expect(reply, MessageType::HelloReply, "hello").body;
    HelloReply hello;
    hello.agent = body.value("agent", std::string());
    hello.version = body.value("version", std::string());
    const auto protocol = body.find("protocol");
    if (protocol == body.end() || !protocol->is_number_unsigned()) {
        fd_.reset();
        throw SystemError(EPROTO, "agent hello: the reply has no protocol version");
    }
    hello.protocol = protocol->get<unsigned>();
    return hello;
}

IdentityReply AgentClient::identity(const Identity& identity) {
    start_request("identity");
    used_ = true;
    Message reply;
    try {
        const Json body = identity.to_json();
        static_cast<void>(Identity::from_json(body)); // EINVAL here, not from the agent
        const auto end = deadline(timeout_);
        send_message(fd_.get(), Message::control(MessageType::Identity, body), end);
        reply = receive_message(fd_.get(), end);
    } catch (const ProtocolError& e) {
        fail("identity", e);
    }
    try {
        return IdentityReply::from_json(expect(reply, MessageType::IdentityReply, "identity").body);
    } catch (const ProtocolError& e) {
        fail("identity", e);
    }
}

ExitStatus AgentClient::exec(const std::vector<std::string>& argv, const ExecOptions& options) {
    start_request("exec");
    used_ = true;
    const std::string what = "exec '" + (argv.empty() ? std::string() : argv[0]) + "'";
    const auto end = deadline(options.timeout.value_or(timeout_));
    ExecRequest request;
    request.argv = argv;
    request.env = options.env;
    request.with_stdin = options.stdin_fd >= 0;
    request.cwd = options.cwd;

    std::vector<std::uint8_t> out;
    std::size_t sent = 0;
    bool stdin_open = request.with_stdin;
    bool can_send = true;
    Decoder decoder;
    try {
        const Json body = request.to_json();
        static_cast<void>(ExecRequest::from_json(body));
        out = encode(Message::control(MessageType::Exec, body));
        std::array<std::uint8_t, 65536> buffer{};
        for (;;) {
            const bool read_stdin = stdin_open && can_send && out.size() - sent < send_limit;
            std::array<pollfd, 2> fds{
                {{fd_.get(),
                  static_cast<short>(POLLIN | (can_send && sent < out.size() ? POLLOUT : 0)), 0},
                 {read_stdin ? options.stdin_fd : -1, POLLIN, 0}}};
            const int ready = ::poll(fds.data(), fds.size(), poll_timeout(end));
            if (ready < 0) {
                if (errno == EINTR) {
                    continue;
                }
                throw SystemError::from_errno("agent " + what + ": poll");
            }
            if (ready == 0) {
                fd_.reset(); // the agent kills the command when the connection closes
                throw SystemError(ETIMEDOUT, "agent " + what + ": no exit before the timeout");
            }
            if ((fds[1].revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
                const ssize_t n = ::read(options.stdin_fd, buffer.data(), max_payload);
                if (n >= 0) {
                    // A zero-length Stdin is end of file.
                    const std::vector<std::uint8_t> frame = encode(Message::bytes(
                        MessageType::Stdin,
                        std::string_view(reinterpret_cast<const char*>(buffer.data()),
                                         static_cast<std::size_t>(n))));
                    out.insert(out.end(), frame.begin(), frame.end());
                    stdin_open = n > 0;
                } else if (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK) {
                    throw SystemError::from_errno("agent " + what + ": reading stdin");
                }
            }
            if (can_send && sent < out.size()) {
                const ssize_t n = ::send(fd_.get(), out.data() + sent, out.size() - sent,
                                         MSG_NOSIGNAL | MSG_DONTWAIT);
                if (n > 0) {
                    sent += static_cast<std::size_t>(n);
                    if (sent == out.size()) {
                        out.clear();
                        sent = 0;
                    }
                } else if (errno == EPIPE || errno == ECONNRESET) {
                    // The agent is done with its input (it has sent Exit or Error, or it
                    // is gone): read what it said.
                    can_send = false;
                } else if (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK) {
                    throw SystemError::from_errno("agent " + what + ": sending");
                }
            }
            if ((fds[0].revents & (POLLIN | POLLHUP | POLLERR)) == 0) {
                continue;
            }
            const ssize_t n = ::recv(fd_.get(), buffer.data(), buffer.size(), MSG_DONTWAIT);
            if (n == 0) {
                throw ProtocolError(ECONNRESET,
                                    decoder.pending() > 0
                                        ? "connection closed in the middle of a message"
                                        : "the agent closed the connection before an exit status");
            }
            if (n < 0) {
                if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) {
                    continue;
                }
                throw SystemError::from_errno("agent " + what + ": receiving");
            }
            decoder.feed(std::span(buffer.data(), static_cast<std::size_t>(n)));
            while (std::optional<Message> message = decoder.next()) {
                switch (message->type) {
                case MessageType::Stdout:
                    if (options.stdout_fd >= 0) {
                        write_all(options.stdout_fd, message->data, end, "stdout");
                    }
                    break;
                case MessageType::Stderr:
                    if (options.stderr_fd >= 0) {
                        write_all(options.stderr_fd, message->data, end, "stderr");
                    }
                    break;
                case MessageType::Exit:
                    return ExitStatus::from_json(message->body);
                case MessageType::Error:
                    fd_.reset();
                    throw_agent_error(message->body);
                default:
                    throw ProtocolError(EPROTO, std::string("unexpected ") +
                                                    type_name(message->type) + " message");
                }
            }
        }
    } catch (const ProtocolError& e) {
        fail(what.c_str(), e);
    }
}

} // namespace vmfork::agent
