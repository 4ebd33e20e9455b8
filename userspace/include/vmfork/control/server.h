// SPDX-License-Identifier: GPL-2.0
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <list>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "vmfork/control/protocol.h"
#include "vmfork/unique_fd.h"

namespace vmfork::control {

// What a handler returns: the reply body, and whether the server stops after sending it.
struct Outcome {
    Json reply;
    bool stop = false;
};

using Handler = std::function<Outcome(const Request&)>;

// Maps op names to handlers. handle() never throws: unknown ops get EOPNOTSUPP,
// RequestError its errno, SystemError its errno, any other exception EIO.
class Dispatcher {
public:
    void add(const std::string& op, Handler handler);
    [[nodiscard]] Outcome handle(const Message& message) const;

private:
    std::map<std::string, Handler> handlers_;
};

// A unix stream socket server. Each connection may carry several requests; a client
// that sends nothing for client_timeout, or a malformed message, gets an error reply
// (when possible) and is disconnected. With workers == 1 connections are served one at
// a time in run()'s thread; with more, each in a thread of its own, up to workers at
// once (the rest wait in the backlog), so a long request (a fork waits for its clones)
// does not hold up the others: the handlers must then be thread-safe.
class Server {
public:
    // Binds path (which must not exist: the caller removes a stale one under its name
    // lock), mode 0600 unless mode is given.
    Server(const std::string& path, Dispatcher dispatcher, unsigned mode = 0600,
           std::chrono::milliseconds client_timeout = std::chrono::seconds(10),
           unsigned workers = 1);
    ~Server(); // waits for the connection threads, unlinks the socket path
    Server(const Server&) = delete;
    Server& operator=(const Server&) = delete;
    Server(Server&&) = delete;
    Server& operator=(Server&&) = delete;

    // Serves until a handler's Outcome says stop, or stop() is called (from any thread
    // or a signal handler: it writes an eventfd). Returns then.
    void run();
    void stop() noexcept;
    [[nodiscard]] const std::string& path() const noexcept { return path_; }

private:
    void serve(int conn);
    // workers > 1: serves conn in a thread of its own once fewer than workers run.
    void serve_in_thread(UniqueFd conn);
    void join_finished();

    std::string path_;
    Dispatcher dispatcher_;
    std::chrono::milliseconds client_timeout_;
    UniqueFd listen_;
    UniqueFd wake_; // eventfd
    std::atomic<bool> stopping_{false};
    unsigned workers_;
    std::mutex threads_mu_;
    std::condition_variable thread_done_;
    std::list<std::thread> threads_;        // guarded by threads_mu_
    std::vector<std::thread::id> finished_; // guarded by threads_mu_: to join
    unsigned running_ = 0;                  // guarded by threads_mu_
};

// A client of one VMM: connect, then call() as often as needed.
class Client {
public:
    // Throws SystemError (ENOENT, ECONNREFUSED...) with the errno of connect().
    static Client connect(const std::string& path);
    // Sends {"op": op, "args": args} and returns the reply's result on "ok": true.
    // Throws SystemError(errno from the reply, error text) on "ok": false, and
    // ProtocolError on a transport or protocol failure.
    // NOLINTNEXTLINE(modernize-use-nodiscard): a caller may only need the success
    Json call(const std::string& op, const Json& args = Json::object(),
              std::chrono::milliseconds timeout = std::chrono::seconds(30)) const;
    [[nodiscard]] int fd() const noexcept { return fd_.get(); }

private:
    explicit Client(UniqueFd fd) : fd_(std::move(fd)) {}
    UniqueFd fd_;
};

} // namespace vmfork::control
