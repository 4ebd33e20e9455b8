// SPDX-License-Identifier: GPL-2.0
//
// vmfork-agent: the guest side of `vmfork exec` and of a clone's customization. It
// listens on a vsock port (or a unix socket in tests) and forks one process per
// connection, so that a command that crashes or hangs, or a host that sends garbage,
// never takes the listener down. See include/vmfork/agent/protocol.h for the protocol.

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <linux/vm_sockets.h>
#include <poll.h>
#include <string>
#include <string_view>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agent.h"
#include "vmfork/system_error.h"

#ifndef VMFORK_VERSION
#define VMFORK_VERSION "unknown"
#endif

namespace vmfork::agent {

namespace {

constexpr std::chrono::milliseconds error_send_timeout{1000};
// After an error the agent stops writing and reads what the host still sends, for at
// most this long, before it closes: closing a socket with unread input can reset the
// connection and discard the Error reply the host has not read yet.
constexpr std::chrono::milliseconds linger_timeout{1000};
constexpr std::size_t linger_max_bytes = std::size_t{4} << 20U;

struct Listen {
    std::string unix_path;
    unsigned vsock_port = default_vsock_port;
};

void usage(FILE* out) {
    std::fprintf(out,
                 "Usage: vmfork-agent [OPTIONS]\n"
                 "\n"
                 "The vmfork guest agent: runs commands for `vmfork exec` and applies a clone's\n"
                 "identity (hostname, machine-id, clock, RNG, /etc/vmfork/clone.d hooks).\n"
                 "\n"
                 "Options:\n"
                 "  --vsock-port N     listen on vsock port N of any CID for the host (CID 2)\n"
                 "                     only (default %u)\n"
                 "  --unix PATH        listen on a unix stream socket instead (tests)\n"
                 "  --root DIR         prefix of /etc/machine-id and /etc/vmfork/clone.d "
                 "(default /)\n"
                 "  --no-clock         never step the wall clock (tests)\n"
                 "  --idle-timeout S   seconds to wait for a request (default 30)\n"
                 "  --hook-timeout S   seconds each clone.d hook may run (default 30)\n"
                 "  --help             show this help\n"
                 "  --version          show the version\n",
                 default_vsock_port);
}

[[noreturn]] void usage_error(const std::string& text) {
    std::fprintf(stderr, "vmfork-agent: %s\n", text.c_str());
    usage(stderr);
    std::exit(2);
}

unsigned parse_number(std::string_view option, const char* text, unsigned max) {
    char* end = nullptr;
    errno = 0;
    const unsigned long value = std::strtoul(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || text[0] == '-' || value > max) {
        usage_error(std::string(option) + " expects a number up to " + std::to_string(max) +
                    ", not '" + text + "'");
    }
    return static_cast<unsigned>(value);
}

UniqueFd listen_unix(const std::string& path) {
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) {
        throw SystemError::from_errno("socket(AF_UNIX)");
    }
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.size() >= sizeof(addr.sun_path)) {
        throw SystemError(ENAMETOOLONG, "unix socket path " + path);
    }
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
        throw SystemError::from_errno("bind " + path);
    }
    if (::listen(fd.get(), 16) != 0) {
        throw SystemError::from_errno("listen on " + path);
    }
    return fd;
}

UniqueFd listen_vsock(unsigned port) {
    UniqueFd fd(::socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) {
        throw SystemError::from_errno("socket(AF_VSOCK) (is the virtio-vsock driver loaded? "
                                      "`modprobe vmw_vsock_virtio_transport`)");
    }
    sockaddr_vm addr{};
    addr.svm_family = AF_VSOCK;
    addr.svm_cid = VMADDR_CID_ANY;
    addr.svm_port = port;
    if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
        throw SystemError::from_errno("bind vsock port " + std::to_string(port));
    }
    if (::listen(fd.get(), 16) != 0) {
        throw SystemError::from_errno("listen on vsock port " + std::to_string(port));
    }
    return fd;
}

// Half-closes conn and reads it to its end (bounded), so that the close that follows
// does not reset the connection before the host has read our last message.
//
// Not on a connection that is no longer connected: a clone's transport reset leaves
// its copies of the parent's connections in that state, and a shutdown() there still
// sends a SHUTDOWN (seen from Debian's 6.12 guest kernel), now with the clone's new
// CID, which the host matches to the parent's connection on the same host port and
// ends. A plain close() sends nothing.
void linger(int conn) {
    char probe = 0;
    if (::recv(conn, &probe, 1, MSG_PEEK | MSG_DONTWAIT) < 0 &&
        (errno == ENOTCONN || errno == ECONNRESET)) {
        return;
    }
    ::shutdown(conn, SHUT_WR);
    const auto deadline = Clock::now() + linger_timeout;
    std::array<char, 16384> sink{};
    std::size_t total = 0;
    while (total < linger_max_bytes) {
        const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now());
        if (left.count() <= 0) {
            return;
        }
        pollfd pfd{conn, POLLIN, 0};
        if (::poll(&pfd, 1, static_cast<int>(left.count())) <= 0) {
            return;
        }
        const ssize_t n = ::recv(conn, sink.data(), sink.size(), MSG_DONTWAIT);
        if (n <= 0) {
            return;
        }
        total += static_cast<std::size_t>(n);
    }
}

void send_error(int conn, int err, const std::string& what) {
    try {
        send_message(conn, Message::control(MessageType::Error, error_body(err, what)),
                     Clock::now() + error_send_timeout);
    } catch (const ProtocolError&) {
        // The host is gone or not reading: nothing more to tell it.
    }
}

// One connection, in its own process: one request (after at most one Hello).
void serve(UniqueFd conn, const Options& options) {
    bool greeted = false;
    try {
        for (;;) {
            Message request;
            try {
                request = receive_message(conn.get(), Clock::now() + options.idle_timeout);
            } catch (const ProtocolError& e) {
                // A host that says Hello and closes has checked that the agent is up.
                if (greeted && e.err() == ECONNRESET &&
                    std::string_view(e.what()) == "connection closed by the peer") {
                    return;
                }
                throw;
            }
            const Clock::time_point received = Clock::now();
            switch (request.type) {
            case MessageType::Hello:
                if (greeted) {
                    throw ProtocolError(EPROTO, "a second Hello on one connection");
                }
                greeted = true;
                send_message(
                    conn.get(),
                    Message::control(MessageType::HelloReply, Json{{"agent", "vmfork-agent"},
                                                                   {"version", VMFORK_VERSION},
                                                                   {"protocol", version}}),
                    Clock::now() + options.send_timeout);
                continue;
            case MessageType::Exec:
                run_exec(conn.get(), ExecRequest::from_json(request.body), options);
                break;
            case MessageType::Identity: {
                const IdentityReply reply =
                    apply_identity(Identity::from_json(request.body), received, options);
                send_message(conn.get(),
                             Message::control(MessageType::IdentityReply, reply.to_json()),
                             Clock::now() + options.send_timeout);
                break;
            }
            default:
                throw ProtocolError(EPROTO, std::string("unexpected ") + type_name(request.type) +
                                                " message: expected Hello, Exec or Identity");
            }
            linger(conn.get());
            return;
        }
    } catch (const ProtocolError& e) {
        log(e.what());
        send_error(conn.get(), e.err(), e.what());
    } catch (const SystemError& e) {
        log(e.what());
        send_error(conn.get(), e.error(), e.what());
    } catch (const std::exception& e) {
        log(e.what());
        send_error(conn.get(), EIO, e.what());
    }
    linger(conn.get());
}

void on_sigchld(int /*signo*/) {
    // Only interrupts poll() in the accept loop, which then reaps.
}

void reap_children() {
    int status = 0;
    while (::waitpid(-1, &status, WNOHANG) > 0) {
    }
}

[[noreturn]] void run(const Listen& listen, const Options& options) {
    std::signal(SIGPIPE, SIG_IGN);
    struct sigaction action {};
    action.sa_handler = on_sigchld; // no SA_RESTART: poll() returns EINTR
    sigemptyset(&action.sa_mask);
    ::sigaction(SIGCHLD, &action, nullptr);

    const UniqueFd server =
        listen.unix_path.empty() ? listen_vsock(listen.vsock_port) : listen_unix(listen.unix_path);
    log(listen.unix_path.empty() ? "listening on vsock port " + std::to_string(listen.vsock_port)
                                 : "listening on " + listen.unix_path);
    for (;;) {
        reap_children();
        pollfd pfd{server.get(), POLLIN, 0};
        if (::poll(&pfd, 1, 1000) <= 0) {
            continue; // timeout or EINTR (SIGCHLD): reap and wait again
        }
        sockaddr_vm peer{};
        socklen_t peer_len = sizeof(peer);
        UniqueFd conn(
            ::accept4(server.get(), reinterpret_cast<sockaddr*>(&peer), &peer_len, SOCK_CLOEXEC));
        if (!conn) {
            if (errno != EINTR && errno != EAGAIN && errno != ECONNABORTED) {
                log("accept: " + std::string(std::strerror(errno)));
                ::usleep(100'000); // EMFILE and the like: do not spin
            }
            continue;
        }
        // Only the host: with vsock loopback (or a connection to the guest's own CID)
        // a local user could otherwise run commands as root here. Closing says no.
        if (listen.unix_path.empty() && peer.svm_cid != VMADDR_CID_HOST) {
            log("refused a connection from CID " + std::to_string(peer.svm_cid) +
                ": only the host (CID 2) may connect");
            continue;
        }
        const pid_t pid = ::fork();
        if (pid < 0) {
            log("fork: " + std::string(std::strerror(errno)));
            continue; // closing conn tells the host
        }
        if (pid == 0) {
            ::close(server.get());
            std::signal(SIGCHLD, SIG_DFL);
            try {
                serve(std::move(conn), options);
            } catch (const std::exception& e) {
                log(e.what());
                ::_exit(1);
            }
            ::_exit(0);
        }
    }
}

} // namespace

Pipe make_pipe() {
    std::array<int, 2> fds{-1, -1};
    if (::pipe2(fds.data(), O_CLOEXEC) != 0) {
        throw SystemError::from_errno("pipe2");
    }
    return {UniqueFd(fds[0]), UniqueFd(fds[1])};
}

Child::~Child() {
    if (!reaped_) {
        kill_group();
        int status = 0;
        while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
        }
    }
}

bool Child::try_reap() {
    if (reaped_) {
        return true;
    }
    const pid_t r = ::waitpid(pid_, &status_, WNOHANG);
    if (r < 0 && errno != EINTR) {
        throw SystemError::from_errno("waitpid");
    }
    reaped_ = r == pid_;
    return reaped_;
}

void Child::wait() {
    while (!reaped_) {
        if (::waitpid(pid_, &status_, 0) == pid_) {
            reaped_ = true;
        } else if (errno != EINTR) {
            throw SystemError::from_errno("waitpid");
        }
    }
}

void Child::kill_group() const noexcept {
    ::kill(-pid_, SIGKILL);
    ::kill(pid_, SIGKILL); // in case the child has not reached its setpgid yet
}

void reset_signals_in_child() {
    for (const int signo : {SIGPIPE, SIGCHLD, SIGINT, SIGQUIT, SIGTERM, SIGHUP}) {
        std::signal(signo, SIG_DFL);
    }
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
}

void write_or_ignore(int fd, const void* data, std::size_t len) {
    [[maybe_unused]] const ssize_t n = ::write(fd, data, len);
}

void log(const std::string& text) {
    const std::string line = "vmfork-agent[" + std::to_string(::getpid()) + "]: " + text + "\n";
    // One write, so that lines of concurrent connections do not interleave.
    write_or_ignore(STDERR_FILENO, line.data(), line.size());
}

} // namespace vmfork::agent

int main(int argc, char** argv) {
    using namespace vmfork::agent;
    Listen listen;
    Options options;
    for (int i = 1; i < argc; i++) {
        const std::string_view arg = argv[i];
        auto value = [&]() -> const char* {
            if (i + 1 >= argc) {
                usage_error(std::string(arg) + " needs a value");
            }
            return argv[++i];
        };
        if (arg == "--help" || arg == "-h") {
            usage(stdout);
            return 0;
        }
        if (arg == "--version") {
            std::printf("vmfork-agent %s (protocol %u)\n", VMFORK_VERSION, unsigned{version});
            return 0;
        }
        if (arg == "--vsock-port") {
            listen.vsock_port = parse_number(arg, value(), UINT32_MAX - 1);
        } else if (arg == "--unix") {
            listen.unix_path = value();
        } else if (arg == "--root") {
            options.root = value();
        } else if (arg == "--no-clock") {
            options.set_clock = false;
        } else if (arg == "--idle-timeout") {
            options.idle_timeout = std::chrono::seconds(parse_number(arg, value(), 86400));
        } else if (arg == "--hook-timeout") {
            options.hook_timeout = std::chrono::seconds(parse_number(arg, value(), 86400));
        } else {
            usage_error("unknown option '" + std::string(arg) + "'");
        }
    }
    try {
        run(listen, options);
    } catch (const std::exception& e) {
        log(e.what());
        return 1;
    }
}
