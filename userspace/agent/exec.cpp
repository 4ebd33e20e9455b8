// SPDX-License-Identifier: GPL-2.0
//
// Exec: a command in its own process group with pipes for its standard streams, and one
// poll loop that moves bytes between those pipes and the connection. The loop never
// blocks on either side: output waits in a bounded queue while the host is slow (the
// command then blocks on its full pipe), Stdin waits in a bounded buffer while the
// command does not read, so a host that writes and reads at once cannot deadlock us.

#include <array>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <optional>
#include <poll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

#include "agent.h"
#include "vmfork/system_error.h"

namespace vmfork::agent {

namespace {

// Output queued for a slow host, and Stdin queued for a command that does not read:
// beyond these the agent stops reading the pipes (or the connection).
constexpr std::size_t queue_limit = std::size_t{256} << 10U;
// After the command exits, its pipes are read until end of file; a background process
// that keeps them open is given this long of silence before the agent stops reading.
constexpr int drain_quiet_ms = 1000;
// Without a pidfd (kernel < 5.3) the loop polls waitpid() this often.
constexpr int reap_tick_ms = 100;

// How the child tells why it could not run the command (the status pipe is close-on-exec,
// so end of file means execvp succeeded).
struct ExecFailure {
    int stage; // 0: chdir, 1: execvp
    int err;
};

void set_nonblocking(int fd) {
    const int flags = ::fcntl(fd, F_GETFL);
    if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) {
        throw SystemError::from_errno("fcntl(O_NONBLOCK)");
    }
}

// In the child, between fork and exec: only calls that cannot leave the agent's state
// half-changed matter here, and the connection process is single-threaded, so setenv is
// safe.
[[noreturn]] void exec_child(const ExecRequest& request, int in, int out, int err, int status) {
    ::setpgid(0, 0);
    reset_signals_in_child();
    if (::dup2(in, STDIN_FILENO) < 0 || ::dup2(out, STDOUT_FILENO) < 0 ||
        ::dup2(err, STDERR_FILENO) < 0) {
        const ExecFailure failure{1, errno};
        write_or_ignore(status, &failure, sizeof(failure));
        ::_exit(127);
    }
    if (request.cwd && ::chdir(request.cwd->c_str()) != 0) {
        const ExecFailure failure{0, errno};
        write_or_ignore(status, &failure, sizeof(failure));
        ::_exit(127);
    }
    for (const auto& [key, value] : request.env) {
        ::setenv(key.c_str(), value.c_str(), 1);
    }
    std::vector<char*> argv;
    argv.reserve(request.argv.size() + 1);
    for (const std::string& arg : request.argv) {
        argv.push_back(const_cast<char*>(arg.c_str()));
    }
    argv.push_back(nullptr);
    ::execvp(argv[0], argv.data());
    const ExecFailure failure{1, errno};
    write_or_ignore(status, &failure, sizeof(failure));
    ::_exit(127);
}

// Bytes waiting to go out on the connection, already framed.
class OutQueue {
public:
    void push(const Message& message) {
        const std::vector<std::uint8_t> bytes = encode(message);
        if (sent_ == buffer_.size()) {
            buffer_.clear();
            sent_ = 0;
        }
        buffer_.insert(buffer_.end(), bytes.begin(), bytes.end());
    }
    [[nodiscard]] std::size_t size() const noexcept { return buffer_.size() - sent_; }
    // Sends what the socket takes now; true if anything was sent.
    bool send_some(int conn) {
        bool progress = false;
        while (size() > 0) {
            const ssize_t n =
                ::send(conn, buffer_.data() + sent_, size(), MSG_NOSIGNAL | MSG_DONTWAIT);
            if (n > 0) {
                sent_ += static_cast<std::size_t>(n);
                progress = true;
                continue;
            }
            if (n < 0 && errno == EINTR) {
                continue;
            }
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                break;
            }
            const int err = errno;
            throw ProtocolError(err, std::string("cannot send the command's output: ") +
                                         std::strerror(err));
        }
        if (sent_ > (std::size_t{1} << 20U) && sent_ * 2 > buffer_.size()) {
            buffer_.erase(buffer_.begin(), buffer_.begin() + static_cast<std::ptrdiff_t>(sent_));
            sent_ = 0;
        }
        return progress;
    }

private:
    std::vector<std::uint8_t> buffer_;
    std::size_t sent_ = 0;
};

class Session {
public:
    Session(int conn, const ExecRequest& request, const Options& options)
        : conn_(conn), request_(request), options_(options) {}

    void run();

private:
    void read_connection();
    void read_output(UniqueFd& pipe, MessageType type);
    void write_stdin();

    int conn_;
    const ExecRequest& request_;
    const Options& options_;
    Decoder decoder_;
    OutQueue out_;
    UniqueFd stdout_;
    UniqueFd stderr_;
    UniqueFd stdin_;
    std::string stdin_buffer_;
    bool stdin_eof_ = false;
};

void Session::read_connection() {
    std::array<std::uint8_t, 65536> buffer{};
    const ssize_t n = ::recv(conn_, buffer.data(), buffer.size(), MSG_DONTWAIT);
    if (n == 0) {
        throw ProtocolError(ECONNRESET,
                            "the host closed the connection while '" + request_.argv[0] + "' ran");
    }
    if (n < 0) {
        if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) {
            return;
        }
        const int err = errno;
        throw ProtocolError(err, std::string("cannot read the connection: ") + std::strerror(err));
    }
    decoder_.feed(std::span(buffer.data(), static_cast<std::size_t>(n)));
    while (std::optional<Message> message = decoder_.next()) {
        if (message->type != MessageType::Stdin) {
            throw ProtocolError(EPROTO, std::string("unexpected ") + type_name(message->type) +
                                            " message while a command runs");
        }
        if (!request_.with_stdin) {
            throw ProtocolError(EPROTO, "Stdin for a command started without stdin");
        }
        if (stdin_eof_) {
            throw ProtocolError(EPROTO, "Stdin after its end of file");
        }
        if (message->data.empty()) {
            stdin_eof_ = true;
        } else if (stdin_) {
            stdin_buffer_ += message->data;
        } // else the command closed its stdin: what it would not read is dropped
    }
}

void Session::read_output(UniqueFd& pipe, MessageType type) {
    std::array<char, max_payload> buffer{};
    const ssize_t n = ::read(pipe.get(), buffer.data(), buffer.size());
    if (n > 0) {
        out_.push(
            Message::bytes(type, std::string_view(buffer.data(), static_cast<std::size_t>(n))));
    } else if (n == 0) {
        pipe.reset();
    } else if (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK) {
        throw SystemError::from_errno(std::string("read the command's ") +
                                      (type == MessageType::Stdout ? "stdout" : "stderr"));
    }
}

void Session::write_stdin() {
    while (!stdin_buffer_.empty()) {
        const ssize_t n = ::write(stdin_.get(), stdin_buffer_.data(), stdin_buffer_.size());
        if (n > 0) {
            stdin_buffer_.erase(0, static_cast<std::size_t>(n));
            continue;
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            return;
        }
        // EPIPE: the command closed its stdin (`head -c 10`). Not an error of ours.
        stdin_buffer_.clear();
        stdin_.reset();
        return;
    }
}

void Session::run() {
    Pipe out = make_pipe();
    Pipe err = make_pipe();
    Pipe status = make_pipe();
    std::optional<Pipe> in;
    UniqueFd null_in;
    if (request_.with_stdin) {
        in = make_pipe();
    } else {
        null_in.reset(::open("/dev/null", O_RDONLY | O_CLOEXEC));
        if (!null_in) {
            throw SystemError::from_errno("open /dev/null");
        }
    }
    const pid_t pid = ::fork();
    if (pid < 0) {
        throw SystemError::from_errno("fork for '" + request_.argv[0] + "'");
    }
    if (pid == 0) {
        exec_child(request_, in ? in->read.get() : null_in.get(), out.write.get(), err.write.get(),
                   status.write.get());
    }
    Child child(pid);
    ::setpgid(pid, pid); // both sides: the group exists before either goes on
    out.write.reset();
    err.write.reset();
    status.write.reset();
    null_in.reset();

    ExecFailure failure{};
    ssize_t n = 0;
    do {
        n = ::read(status.read.get(), &failure, sizeof(failure));
    } while (n < 0 && errno == EINTR);
    if (n == static_cast<ssize_t>(sizeof(failure))) {
        child.wait();
        const std::string what =
            failure.stage == 0
                ? "cannot change to directory '" + *request_.cwd + "' for '" + request_.argv[0] +
                      "': " + std::strerror(failure.err)
                : (failure.err == ENOENT
                       ? "no such command: '" + request_.argv[0] + "'"
                       : "cannot run '" + request_.argv[0] + "': " + std::strerror(failure.err));
        send_message(conn_, Message::control(MessageType::Error, error_body(failure.err, what)),
                     Clock::now() + options_.send_timeout);
        return;
    }

    stdout_ = std::move(out.read);
    stderr_ = std::move(err.read);
    set_nonblocking(stdout_.get());
    set_nonblocking(stderr_.get());
    if (in) {
        in->read.reset();
        stdin_ = std::move(in->write);
        set_nonblocking(stdin_.get());
    }
    const UniqueFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
    auto last_send = Clock::now();

    for (;;) {
        if (stdin_ && stdin_eof_ && stdin_buffer_.empty()) {
            stdin_.reset(); // the command sees end of file
        }
        if (child.reaped() && !stdout_ && !stderr_ && out_.size() == 0) {
            break;
        }
        enum { Conn, Out, Err, In, Pid, Count };
        std::array<pollfd, Count> fds{};
        fds[Conn] = {conn_,
                     static_cast<short>((stdin_buffer_.size() < queue_limit ? POLLIN : 0) |
                                        (out_.size() > 0 ? POLLOUT : 0)),
                     0};
        const bool want_output = out_.size() < queue_limit;
        fds[Out] = {want_output ? stdout_.get() : -1, POLLIN, 0};
        fds[Err] = {want_output ? stderr_.get() : -1, POLLIN, 0};
        fds[In] = {!stdin_buffer_.empty() ? stdin_.get() : -1, POLLOUT, 0};
        fds[Pid] = {child.reaped() ? -1 : pidfd.get(), POLLIN, 0};
        int timeout = 1000;
        if (!child.reaped() && !pidfd) {
            timeout = reap_tick_ms;
        } else if (child.reaped()) {
            timeout = drain_quiet_ms;
        }
        const int ready = ::poll(fds.data(), fds.size(), timeout);
        if (ready < 0) {
            if (errno == EINTR) {
                continue;
            }
            throw SystemError::from_errno("poll");
        }
        if (ready == 0 && child.reaped()) {
            // Only background processes hold the pipes: stop waiting for them.
            stdout_.reset();
            stderr_.reset();
        }
        if (out_.size() > 0) {
            if (out_.send_some(conn_)) {
                last_send = Clock::now();
            }
            if (out_.size() > 0 && Clock::now() - last_send > options_.send_timeout) {
                throw ProtocolError(ETIMEDOUT, "the host stopped reading the output");
            }
        } else {
            last_send = Clock::now();
        }
        if ((fds[Conn].revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
            read_connection();
        }
        if ((fds[Out].revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
            read_output(stdout_, MessageType::Stdout);
        }
        if ((fds[Err].revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
            read_output(stderr_, MessageType::Stderr);
        }
        if ((fds[In].revents & (POLLOUT | POLLERR | POLLHUP)) != 0) {
            write_stdin();
        }
        if (!child.reaped() && (!pidfd || (fds[Pid].revents & POLLIN) != 0)) {
            child.try_reap();
        }
    }
    send_message(
        conn_,
        Message::control(MessageType::Exit, ExitStatus::from_wait_status(child.status()).to_json()),
        Clock::now() + options_.send_timeout);
}

} // namespace

void run_exec(int conn, const ExecRequest& request, const Options& options) {
    Session(conn, request, options).run();
}

} // namespace vmfork::agent
