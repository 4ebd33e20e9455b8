// SPDX-License-Identifier: GPL-2.0
#include "vmfork/control/server.h"

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <utility>

#include "vmfork/system_error.h"

namespace vmfork::control {

namespace {

// How long an error reply to a misbehaving client may take before we give up on it.
constexpr auto error_reply_timeout = std::chrono::milliseconds(200);
// Back-off after accept() fails for lack of resources (EMFILE...).
constexpr int accept_backoff_ms = 100;

// sockaddr_un for path; throws SystemError(ENAMETOOLONG) with context when it does not fit.
sockaddr_un unix_address(const std::string& path, const std::string& context) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.empty()) {
        throw SystemError(EINVAL, context + ": empty socket path");
    }
    if (path.size() >= sizeof(addr.sun_path)) {
        throw SystemError(ENAMETOOLONG, context + ": socket path of " +
                                            std::to_string(path.size()) + " bytes (at most " +
                                            std::to_string(sizeof(addr.sun_path) - 1) + ")");
    }
    std::memcpy(static_cast<char*>(addr.sun_path), path.c_str(), path.size() + 1);
    return addr;
}

const sockaddr* as_sockaddr(const sockaddr_un& addr) {
    return reinterpret_cast<const sockaddr*>(&addr); // NOLINT: the sockets API
}

// The reply as it will go on the wire: an error reply if it cannot be encoded (not an
// object, invalid UTF-8, too large), so the client always hears back.
Message reply_message(Json body) {
    Message reply{MessageType::Reply, std::move(body)};
    try {
        static_cast<void>(encode(reply));
    } catch (const ProtocolError& e) {
        reply.body = error_reply(e.err(), std::string("cannot encode the reply: ") + e.what());
    }
    return reply;
}

void send_best_effort(int conn, Json body, Clock::time_point deadline) noexcept {
    try {
        send_message(conn, reply_message(std::move(body)), deadline);
    } catch (...) { // NOLINT(bugprone-empty-catch): the client is going away anyway
    }
}

// What woke the wait for a client's next message.
enum class Wait { Readable, Woken, TimedOut };

Wait wait_readable(int conn, int wake, Clock::time_point deadline) {
    for (;;) {
        const auto now = Clock::now();
        if (deadline <= now) {
            return Wait::TimedOut;
        }
        const auto remaining = std::chrono::ceil<std::chrono::milliseconds>(deadline - now);
        const auto timeout =
            static_cast<int>(std::min<std::chrono::milliseconds::rep>(remaining.count(), 1 << 30));
        std::array<pollfd, 2> fds{{{wake, POLLIN, 0}, {conn, POLLIN, 0}}};
        const int ready = ::poll(fds.data(), fds.size(), timeout);
        if (ready < 0) {
            if (errno == EINTR) {
                continue;
            }
            throw SystemError::from_errno("poll on a control connection");
        }
        if ((fds[0].revents & POLLIN) != 0) {
            return Wait::Woken;
        }
        if (fds[1].revents != 0) {
            return Wait::Readable; // data, or a hangup/error that receive_message reports
        }
    }
}

} // namespace

void Dispatcher::add(const std::string& op, Handler handler) {
    handlers_[op] = std::move(handler);
}

Outcome Dispatcher::handle(const Message& message) const {
    try {
        try {
            if (message.type != MessageType::Request) {
                return {error_reply(EPROTO, "expected a request message"), false};
            }
            const Request request = Request::parse(message.body);
            const auto handler = handlers_.find(request.op);
            if (handler == handlers_.end()) {
                return {error_reply(EOPNOTSUPP, "unknown request '" + request.op + "'"), false};
            }
            return handler->second(request);
        } catch (const RequestError& e) {
            return {error_reply(e.err(), e.what()), false};
        } catch (const SystemError& e) {
            return {error_reply(e.error(), e.what()), false};
        } catch (const ProtocolError& e) {
            return {error_reply(e.err(), e.what()), false};
        } catch (const std::exception& e) {
            return {error_reply(EIO, e.what()), false};
        } catch (...) {
            return {error_reply(EIO, "request failed with an unknown exception"), false};
        }
    } catch (...) {
        // Building the error reply itself failed (out of memory): an empty body still
        // encodes, and the client sees a reply without "ok" as a protocol error.
        return {Json::object(), false};
    }
}

// NOLINTNEXTLINE(modernize-pass-by-value): the signature is the header's
Server::Server(const std::string& path, Dispatcher dispatcher, unsigned mode,
               std::chrono::milliseconds client_timeout, unsigned workers)
    : path_(path), dispatcher_(std::move(dispatcher)), client_timeout_(client_timeout),
      workers_(std::max(workers, 1U)) {
    const sockaddr_un addr = unix_address(path_, "cannot listen on " + path_);
    wake_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!wake_) {
        throw SystemError::from_errno("eventfd for the control server");
    }
    listen_.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!listen_) {
        throw SystemError::from_errno("socket for " + path_);
    }
    if (::bind(listen_.get(), as_sockaddr(addr), sizeof(addr)) < 0) {
        throw SystemError::from_errno("cannot bind " + path_);
    }
    // From here on the path is ours: remove it again if the rest fails.
    if (::chmod(path_.c_str(), static_cast<mode_t>(mode)) < 0) {
        const int err = errno;
        ::unlink(path_.c_str());
        throw SystemError(err, "cannot chmod " + path_);
    }
    if (::listen(listen_.get(), SOMAXCONN) < 0) {
        const int err = errno;
        ::unlink(path_.c_str());
        throw SystemError(err, "cannot listen on " + path_);
    }
}

Server::~Server() {
    // The connection threads see stopping_ (and the eventfd) at their next wait; one in
    // a handler finishes it first.
    stop();
    std::list<std::thread> threads;
    {
        const std::lock_guard lock(threads_mu_);
        threads.swap(threads_);
    }
    for (auto& t : threads) {
        t.join();
    }
    // Constructed means bound: the path is this server's.
    ::unlink(path_.c_str());
}

void Server::join_finished() {
    std::list<std::thread> done;
    {
        const std::lock_guard lock(threads_mu_);
        for (const auto id : finished_) {
            const auto it = std::find_if(threads_.begin(), threads_.end(),
                                         [id](const std::thread& t) { return t.get_id() == id; });
            if (it != threads_.end()) {
                done.splice(done.end(), threads_, it);
            }
        }
        finished_.clear();
    }
    for (auto& t : done) {
        t.join(); // it has only its return left
    }
}

void Server::serve_in_thread(UniqueFd conn) {
    {
        std::unique_lock lock(threads_mu_);
        // The rest wait in the listen backlog; stop() is seen within the poll period.
        while (running_ >= workers_ && !stopping_.load()) {
            thread_done_.wait_for(lock, std::chrono::milliseconds(accept_backoff_ms));
        }
        if (stopping_.load()) {
            return;
        }
        ++running_;
        threads_.emplace_back([this, fd = std::move(conn)]() mutable {
            try {
                serve(fd.get());
            } catch (...) { // NOLINT(bugprone-empty-catch): one broken connection is not fatal
            }
            fd.reset();
            const std::lock_guard done_lock(threads_mu_);
            --running_;
            finished_.push_back(std::this_thread::get_id());
            thread_done_.notify_all();
        });
    }
    join_finished();
}

void Server::run() {
    while (!stopping_.load()) {
        std::array<pollfd, 2> fds{{{wake_.get(), POLLIN, 0}, {listen_.get(), POLLIN, 0}}};
        if (::poll(fds.data(), fds.size(), -1) < 0) {
            if (errno == EINTR) {
                continue;
            }
            throw SystemError::from_errno("poll on " + path_);
        }
        if ((fds[0].revents & POLLIN) != 0) {
            return;
        }
        if (fds[1].revents == 0) {
            continue;
        }
        UniqueFd conn(::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC));
        if (!conn) {
            switch (errno) {
            case EINTR:
            case EAGAIN:
            case ECONNABORTED:
            case EPROTO:
                continue; // the client went away before we took it
            case EMFILE:
            case ENFILE:
            case ENOBUFS:
            case ENOMEM: {
                // Transient: wait a little (still listening for stop()) and try again.
                pollfd wake{wake_.get(), POLLIN, 0};
                ::poll(&wake, 1, accept_backoff_ms);
                continue;
            }
            default:
                throw SystemError::from_errno("accept on " + path_);
            }
        }
        if (workers_ > 1) {
            serve_in_thread(std::move(conn));
            continue;
        }
        try {
            serve(conn.get());
        } catch (...) { // NOLINT(bugprone-empty-catch): one broken connection is not fatal
        }
    }
}

void Server::serve(int conn) {
    while (!stopping_.load()) {
        const Wait wait = wait_readable(conn, wake_.get(), Clock::now() + client_timeout_);
        if (wait == Wait::Woken) {
            return;
        }
        Message request;
        try {
            if (wait == Wait::TimedOut) {
                throw ProtocolError(ETIMEDOUT, "no request within " +
                                                   std::to_string(client_timeout_.count()) +
                                                   " ms: disconnecting");
            }
            request = receive_message(conn, Clock::now() + client_timeout_);
        } catch (const ProtocolError& e) {
            // ECONNRESET: the client closed the connection, nobody is left to tell.
            if (e.err() != ECONNRESET) {
                send_best_effort(conn, error_reply(e.err(), e.what()),
                                 Clock::now() + std::min<std::chrono::milliseconds>(
                                                    client_timeout_, error_reply_timeout));
            }
            return;
        }
        Outcome outcome = dispatcher_.handle(request);
        if (outcome.stop) {
            stop(); // wakes run() and every other connection
            send_best_effort(conn, std::move(outcome.reply), Clock::now() + client_timeout_);
            return;
        }
        send_message(conn, reply_message(std::move(outcome.reply)), Clock::now() + client_timeout_);
    }
}

void Server::stop() noexcept {
    // Async-signal-safe: an atomic store and write(2), errno preserved.
    const int saved_errno = errno;
    stopping_.store(true);
    const std::uint64_t one = 1;
    if (::write(wake_.get(), &one, sizeof(one)) < 0) {
        // EAGAIN: the counter is already non-zero, the loop wakes anyway. Nothing else
        // can be done in a signal handler. (A cast to void does not silence
        // warn_unused_result under _FORTIFY_SOURCE.)
    }
    errno = saved_errno;
}

Client Client::connect(const std::string& path) {
    const std::string context = "cannot connect to " + path;
    const sockaddr_un addr = unix_address(path, context);
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) {
        throw SystemError::from_errno(context);
    }
    while (::connect(fd.get(), as_sockaddr(addr), sizeof(addr)) < 0) {
        if (errno != EINTR) {
            throw SystemError::from_errno(context);
        }
    }
    return Client(std::move(fd));
}

Json Client::call(const std::string& op, const Json& args,
                  std::chrono::milliseconds timeout) const {
    const auto deadline = Clock::now() + timeout;
    send_message(fd_.get(), Message{MessageType::Request, Json{{"op", op}, {"args", args}}},
                 deadline);
    Message reply = receive_message(fd_.get(), deadline);
    if (reply.type != MessageType::Reply) {
        throw ProtocolError(EPROTO, "expected a reply to '" + op + "', got a request");
    }
    const auto ok = reply.body.find("ok");
    if (ok == reply.body.end() || !ok->is_boolean()) {
        throw ProtocolError(EPROTO, "reply to '" + op + "' has no boolean 'ok'");
    }
    if (ok->get<bool>()) {
        reply.body.erase("ok");
        return std::move(reply.body);
    }
    int err = EIO;
    const auto err_field = reply.body.find("errno");
    if (err_field != reply.body.end() && err_field->is_number_integer() &&
        err_field->get<std::int64_t>() > 0 && err_field->get<std::int64_t>() < 4096) {
        err = static_cast<int>(err_field->get<std::int64_t>());
    }
    std::string text = "'" + op + "' failed";
    const auto error_field = reply.body.find("error");
    if (error_field != reply.body.end() && error_field->is_string()) {
        text = error_field->get<std::string>();
    }
    // The text of a SystemError on the server already ends in its strerror.
    throw SystemError::relayed(err, text);
}

} // namespace vmfork::control
