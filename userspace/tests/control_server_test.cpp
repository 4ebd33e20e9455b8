// SPDX-License-Identifier: GPL-2.0
#include "vmfork/control/server.h"

#include <array>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <exception>
#include <functional>
#include <future>
#include <gtest/gtest.h>
#include <memory>
#include <stdexcept>
#include <string>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <thread>
#include <unistd.h>
#include <vector>

#include "thrown_errno.h"
#include "vmfork/system_error.h"

namespace vmfork::control {
namespace {

using namespace std::chrono_literals;

// How long a test waits for something that should happen at once.
constexpr auto prompt = 5s;

bool exists(const std::string& path) {
    struct stat st {};
    return ::lstat(path.c_str(), &st) == 0;
}

// gate: what the "slow" op waits for (at most 10 s).
Dispatcher test_dispatcher(const std::shared_future<void>& gate) {
    Dispatcher d;
    d.add("slow", [gate](const Request&) {
        const bool released = gate.wait_for(10s) == std::future_status::ready;
        return Outcome{ok_reply(Json{{"released", released}})};
    });
    d.add("echo", [](const Request& r) { return Outcome{ok_reply(r.args)}; });
    d.add("stop", [](const Request&) { return Outcome{ok_reply(Json{{"bye", true}}), true}; });
    d.add("fail", [](const Request&) -> Outcome { throw std::runtime_error("it broke"); });
    d.add("sys_fail", [](const Request&) -> Outcome { throw SystemError(ENOSPC, "disk full"); });
    d.add("count", [](const Request& r) {
        r.check_only({"count"});
        return Outcome{ok_reply(Json{{"count", r.u64("count", 1, 1, 64)}})};
    });
    d.add("bad_text", [](const Request&) {
        return Outcome{ok_reply(Json{{"text", std::string("\xff\xfe")}})};
    });
    return d;
}

std::vector<std::uint8_t> header_announcing(std::uint32_t length) {
    std::vector<std::uint8_t> bytes = encode(Message{});
    bytes.resize(header_size);
    for (unsigned i = 0; i < 4; i++) {
        bytes[8 + i] = static_cast<std::uint8_t>(length >> (8U * i));
    }
    return bytes;
}

void write_all(int fd, const void* data, std::size_t size) {
    ASSERT_EQ(::send(fd, data, size, MSG_NOSIGNAL), static_cast<ssize_t>(size));
}

// A Server on a fresh temporary directory, run() in a thread.
class ControlServer : public ::testing::Test {
protected:
    void SetUp() override {
        std::string templ = "/tmp/vmfork-server-test.XXXXXX";
        ASSERT_NE(::mkdtemp(templ.data()), nullptr);
        dir_ = templ;
        path_ = dir_ + "/ctl.sock";
    }

    void TearDown() override {
        if (server_) {
            server_->stop();
        }
        if (finished_.valid()) {
            // run() must neither throw nor ignore stop().
            EXPECT_NO_THROW(EXPECT_TRUE(run_returned()));
        }
        join();
        server_.reset();
        EXPECT_FALSE(exists(path_)) << "the destructor must unlink the socket";
        ::unlink(path_.c_str());
        ::rmdir(dir_.c_str());
    }

    void start(std::chrono::milliseconds client_timeout = 10s, unsigned workers = 1) {
        server_ = std::make_unique<Server>(path_, test_dispatcher(gate_.get_future().share()), 0600,
                                           client_timeout, workers);
        std::promise<void> done;
        finished_ = done.get_future();
        thread_ = std::thread([this, done = std::move(done)]() mutable {
            try {
                server_->run();
                done.set_value();
            } catch (...) {
                done.set_exception(std::current_exception());
            }
        });
    }

    // Whether run() returned within timeout; rethrows what it threw.
    bool run_returned(std::chrono::milliseconds timeout = prompt) {
        if (finished_.wait_for(timeout) != std::future_status::ready) {
            return false;
        }
        finished_.get();
        return true;
    }

    void join() {
        if (thread_.joinable()) {
            thread_.join();
        }
    }

    // The server still answers a new client.
    void expect_alive() {
        const Client client = Client::connect(path_);
        EXPECT_EQ(client.call("echo", Json{{"alive", true}}, prompt), Json({{"alive", true}}));
    }

    // Calls "slow" on a connection of its own, in a thread; the reply's "released".
    std::future<bool> call_slow() {
        return std::async(std::launch::async, [this] {
            const Client c = Client::connect(path_);
            return c.call("slow", Json::object(), 20s).at("released").get<bool>();
        });
    }

    std::promise<void> gate_;
    std::string dir_;
    std::string path_;
    std::unique_ptr<Server> server_;
    std::thread thread_;
    std::future<void> finished_;
};

TEST_F(ControlServer, Echo) {
    start();
    const Client client = Client::connect(path_);
    const Json args{{"a", 1}, {"b", {{"c", "d"}}}, {"text", "h\u00e9"}};
    EXPECT_EQ(client.call("echo", args, prompt), args);
    EXPECT_EQ(client.call("echo", Json::object(), prompt), Json::object());
}

TEST_F(ControlServer, SocketModeAndPath) {
    start();
    EXPECT_EQ(server_->path(), path_);
    struct stat st {};
    ASSERT_EQ(::stat(path_.c_str(), &st), 0);
    EXPECT_TRUE(S_ISSOCK(st.st_mode));
    EXPECT_EQ(st.st_mode & 07777, 0600U);
}

TEST_F(ControlServer, ManyRequestsOnOneConnection) {
    start();
    const Client client = Client::connect(path_);
    for (int i = 0; i < 20; i++) {
        EXPECT_EQ(client.call("echo", Json{{"i", i}}, prompt), Json({{"i", i}}));
    }
}

TEST_F(ControlServer, UnknownOpIsEopnotsupp) {
    start();
    const Client client = Client::connect(path_);
    try {
        client.call("no_such_op", Json::object(), prompt);
        FAIL() << "no error";
    } catch (const SystemError& e) {
        EXPECT_EQ(e.error(), EOPNOTSUPP);
        EXPECT_NE(std::string(e.what()).find("unknown request 'no_such_op'"), std::string::npos)
            << e.what();
    }
    // The connection stays usable after an error reply.
    EXPECT_EQ(client.call("echo", Json{{"x", 1}}, prompt), Json({{"x", 1}}));
}

TEST_F(ControlServer, BadRequestsAreEinval) {
    start();
    const Client client = Client::connect(path_);
    EXPECT_EQ(thrown_errno<SystemError>([&] { client.call("Echo", Json::object(), prompt); }),
              EINVAL);
    EXPECT_EQ(thrown_errno<SystemError>([&] { client.call("echo", Json::array(), prompt); }),
              EINVAL);
    EXPECT_EQ(thrown_errno<SystemError>([&] {
                  client.call("count", Json{{"count", 0}}, prompt);
              }),
              EINVAL);
    EXPECT_EQ(thrown_errno<SystemError>([&] {
                  client.call("count", Json{{"count", -1}}, prompt);
              }),
              EINVAL);
    EXPECT_EQ(thrown_errno<SystemError>([&] {
                  client.call("count", Json{{"other", 1}}, prompt);
              }),
              EINVAL);
    EXPECT_EQ(client.call("count", Json{{"count", 64}}, prompt), Json({{"count", 64}}));
}

TEST_F(ControlServer, HandlerExceptionsBecomeErrorReplies) {
    start();
    {
        const Client client = Client::connect(path_);
        try {
            client.call("fail", Json::object(), prompt);
            FAIL() << "no error";
        } catch (const SystemError& e) {
            EXPECT_EQ(e.error(), EIO);
            EXPECT_NE(std::string(e.what()).find("it broke"), std::string::npos) << e.what();
        }
        try {
            client.call("sys_fail", Json::object(), prompt);
            FAIL() << "no error";
        } catch (const SystemError& e) {
            EXPECT_EQ(e.error(), ENOSPC);
            // The server's strerror is not repeated.
            EXPECT_EQ(std::string(e.what()), SystemError(ENOSPC, "disk full").what());
        }
        EXPECT_EQ(
            thrown_errno<SystemError>([&] { client.call("bad_text", Json::object(), prompt); }),
            EPROTO);
    } // one connection at a time: close it before the next client
    expect_alive();
}

TEST_F(ControlServer, GarbageGetsEprotoAndTheServerSurvives) {
    start();
    {
        const Client client = Client::connect(path_);
        const std::string garbage = "garbage garbage garbage";
        write_all(client.fd(), garbage.data(), garbage.size());
        const Message reply = receive_message(client.fd(), Clock::now() + prompt);
        EXPECT_EQ(reply.type, MessageType::Reply);
        EXPECT_EQ(reply.body["ok"], false);
        EXPECT_EQ(reply.body["errno"], EPROTO);
        EXPECT_TRUE(reply.body["error"].is_string());
        // Then the server hangs up.
        const int err = thrown_errno<ProtocolError>(
            [&] { receive_message(client.fd(), Clock::now() + prompt); });
        EXPECT_EQ(err, ECONNRESET);
    }
    expect_alive();
}

TEST_F(ControlServer, OversizedHeaderGetsEmsgsize) {
    start();
    {
        const Client client = Client::connect(path_);
        const auto header = header_announcing(max_payload + 1);
        write_all(client.fd(), header.data(), header.size());
        const Message reply = receive_message(client.fd(), Clock::now() + prompt);
        EXPECT_EQ(reply.body["ok"], false);
        EXPECT_EQ(reply.body["errno"], EMSGSIZE);
    }
    expect_alive();
}

TEST_F(ControlServer, InvalidUtf8PayloadGetsEproto) {
    start();
    const Client client = Client::connect(path_);
    const std::string payload = "{\"op\":\"\xff\xfe\"}";
    auto bytes = header_announcing(static_cast<std::uint32_t>(payload.size()));
    bytes.insert(bytes.end(), payload.begin(), payload.end());
    write_all(client.fd(), bytes.data(), bytes.size());
    const Message reply = receive_message(client.fd(), Clock::now() + prompt);
    EXPECT_EQ(reply.body["ok"], false);
    EXPECT_EQ(reply.body["errno"], EPROTO);
    EXPECT_NE(reply.body["error"].get<std::string>().find("not valid JSON"), std::string::npos)
        << reply.body;
}

TEST_F(ControlServer, ReplyTypeMessageGetsEproto) {
    start();
    const Client client = Client::connect(path_);
    send_message(client.fd(), Message{MessageType::Reply, Json{{"op", "echo"}}},
                 Clock::now() + prompt);
    const Message reply = receive_message(client.fd(), Clock::now() + prompt);
    EXPECT_EQ(reply.body["ok"], false);
    EXPECT_EQ(reply.body["errno"], EPROTO);
}

TEST_F(ControlServer, ClientsThatHangUpDoNotKillTheServer) {
    start();
    for (int i = 0; i < 3; i++) {
        // Connects and closes at once.
        static_cast<void>(Client::connect(path_));
        // Half a header, then gone.
        {
            const Client client = Client::connect(path_);
            const auto header = header_announcing(10);
            write_all(client.fd(), header.data(), header_size / 2);
        }
        // A whole header, half the payload.
        {
            const Client client = Client::connect(path_);
            const auto header = header_announcing(10);
            write_all(client.fd(), header.data(), header.size());
            write_all(client.fd(), "{\"op\"", 5);
        }
        // A request, without reading the reply.
        {
            const Client client = Client::connect(path_);
            send_message(client.fd(), Message{MessageType::Request, Json{{"op", "echo"}}},
                         Clock::now() + prompt);
        }
    }
    expect_alive();
}

TEST_F(ControlServer, IdleClientGetsEtimedoutAndIsDisconnected) {
    start(100ms);
    {
        const Client client = Client::connect(path_);
        const Message reply = receive_message(client.fd(), Clock::now() + prompt);
        EXPECT_EQ(reply.body["ok"], false);
        EXPECT_EQ(reply.body["errno"], ETIMEDOUT);
        EXPECT_EQ(thrown_errno<ProtocolError>(
                      [&] { receive_message(client.fd(), Clock::now() + prompt); }),
                  ECONNRESET);
    }
    expect_alive();
}

TEST_F(ControlServer, StopOpRepliesThenRunReturns) {
    start();
    {
        const Client client = Client::connect(path_);
        EXPECT_EQ(client.call("stop", Json::object(), prompt), Json({{"bye", true}}));
        // The server closes the connection after the reply.
        EXPECT_EQ(thrown_errno<ProtocolError>(
                      [&] { receive_message(client.fd(), Clock::now() + prompt); }),
                  ECONNRESET);
    }
    EXPECT_TRUE(run_returned());
    join();
    server_.reset();
    EXPECT_FALSE(exists(path_));
    EXPECT_EQ(thrown_errno<SystemError>([&] { static_cast<void>(Client::connect(path_)); }),
              ENOENT);
}

TEST_F(ControlServer, StopFromAnotherThreadWhileIdle) {
    start();
    EXPECT_FALSE(run_returned(0ms));
    server_->stop();
    EXPECT_TRUE(run_returned());
}

TEST_F(ControlServer, StopFromAnotherThreadWhileAClientIsConnected) {
    start(); // client_timeout 10 s: stop() must not wait for it
    const Client client = Client::connect(path_);
    EXPECT_EQ(client.call("echo", Json::object(), prompt), Json::object());
    // The server now waits for this client's next request.
    const auto before = Clock::now();
    server_->stop();
    EXPECT_TRUE(run_returned());
    EXPECT_LT(Clock::now() - before, 2s);
}

TEST_F(ControlServer, StopBeforeRun) {
    server_ = std::make_unique<Server>(path_, test_dispatcher(gate_.get_future().share()));
    server_->stop();
    server_->run(); // returns at once
    SUCCEED();
}

TEST_F(ControlServer, BindFailsOnAnExistingPath) {
    start();
    EXPECT_EQ(thrown_errno<SystemError>([&] { Server other(path_, Dispatcher{}); }), EADDRINUSE);
    // The failed server did not remove the path of the running one.
    expect_alive();
}

TEST_F(ControlServer, PathTooLong) {
    const std::string long_path = dir_ + "/" + std::string(sizeof(sockaddr_un{}.sun_path), 'x');
    try {
        Server server(long_path, Dispatcher{});
        FAIL() << "no error";
    } catch (const SystemError& e) {
        EXPECT_EQ(e.error(), ENAMETOOLONG);
        EXPECT_NE(std::string(e.what()).find(long_path), std::string::npos) << e.what();
    }
    EXPECT_EQ(thrown_errno<SystemError>([&] { static_cast<void>(Client::connect(long_path)); }),
              ENAMETOOLONG);
}

TEST_F(ControlServer, ConnectToAMissingPathIsEnoent) {
    try {
        static_cast<void>(Client::connect(path_));
        FAIL() << "no error";
    } catch (const SystemError& e) {
        EXPECT_EQ(e.error(), ENOENT);
        EXPECT_NE(std::string(e.what()).find("cannot connect to " + path_), std::string::npos)
            << e.what();
    }
}

TEST_F(ControlServer, ConnectToADeadServerIsEconnrefused) {
    {
        const UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
        ASSERT_TRUE(fd);
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        ASSERT_LT(path_.size(), sizeof(addr.sun_path));
        path_.copy(static_cast<char*>(addr.sun_path), path_.size());
        ASSERT_EQ(::bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)), 0);
    } // closed without unlinking: a VMM that died
    ASSERT_TRUE(exists(path_));
    EXPECT_EQ(thrown_errno<SystemError>([&] { static_cast<void>(Client::connect(path_)); }),
              ECONNREFUSED);
    ::unlink(path_.c_str());
}

TEST(ControlDispatcher, HandlesEveryFailure) {
    Dispatcher d = test_dispatcher(std::shared_future<void>());
    d.add("request_error", [](const Request&) -> Outcome { throw RequestError(ERANGE, "r"); });
    d.add("protocol_error", [](const Request&) -> Outcome { throw ProtocolError(EBADMSG, "p"); });
    d.add("int", [](const Request&) -> Outcome { throw 42; });
    const auto handle = [&](const Json& body, MessageType type = MessageType::Request) {
        const Outcome outcome = d.handle(Message{type, body});
        EXPECT_FALSE(outcome.stop);
        EXPECT_EQ(outcome.reply["ok"], false) << body;
        return outcome.reply["errno"];
    };
    EXPECT_EQ(handle(Json{{"op", "echo"}}, MessageType::Reply), EPROTO);
    EXPECT_EQ(handle(Json{{"op", "nope"}}), EOPNOTSUPP);
    EXPECT_EQ(handle(Json{{"op", "echo"}, {"junk", 1}}), EINVAL);
    EXPECT_EQ(handle(Json::object()), EINVAL);
    EXPECT_EQ(handle(Json{{"op", "request_error"}}), ERANGE);
    EXPECT_EQ(handle(Json{{"op", "protocol_error"}}), EBADMSG);
    EXPECT_EQ(handle(Json{{"op", "sys_fail"}}), ENOSPC);
    EXPECT_EQ(handle(Json{{"op", "fail"}}), EIO);
    EXPECT_EQ(handle(Json{{"op", "int"}}), EIO);
    const Outcome stop = d.handle(Message{MessageType::Request, Json{{"op", "stop"}}});
    EXPECT_TRUE(stop.stop);
    EXPECT_EQ(stop.reply, Json({{"ok", true}, {"bye", true}}));
}

TEST_F(ControlServer, WorkersAnswerOthersWhileOneRequestIsSlow) {
    start(10s, 4);
    auto slow = call_slow();
    std::this_thread::sleep_for(100ms); // the slow request is in its handler
    const Client other = Client::connect(path_);
    EXPECT_EQ(other.call("echo", Json{{"n", 1}}, 2s), Json({{"n", 1}}));
    EXPECT_EQ(slow.wait_for(0s), std::future_status::timeout) << "still in its handler";
    gate_.set_value();
    EXPECT_TRUE(slow.get());
}

TEST_F(ControlServer, OneWorkerHoldsOthersWhileARequestIsSlow) {
    start(10s, 1);
    auto slow = call_slow();
    std::this_thread::sleep_for(100ms);
    const Client other = Client::connect(path_); // accepted into the backlog only
    EXPECT_EQ(thrown_errno<ProtocolError>(
                  [&] { static_cast<void>(other.call("echo", Json::object(), 300ms)); }),
              ETIMEDOUT);
    gate_.set_value();
    EXPECT_TRUE(slow.get());
}

TEST_F(ControlServer, ManyClientsAtOnceWithWorkers) {
    start(10s, 4);
    std::vector<std::future<int>> clients;
    for (int i = 0; i < 8; i++) {
        clients.push_back(std::async(std::launch::async, [this, i] {
            const Client c = Client::connect(path_);
            int ok = 0;
            for (int j = 0; j < 20; j++) {
                ok += c.call("echo", Json{{"i", i}, {"j", j}}, prompt) == Json{{"i", i}, {"j", j}};
            }
            return ok;
        }));
    }
    for (auto& c : clients) {
        EXPECT_EQ(c.get(), 20);
    }
}

TEST_F(ControlServer, StopOpInAWorkerEndsRunAndTheSlowRequestFinishes) {
    start(10s, 4);
    auto slow = call_slow();
    std::this_thread::sleep_for(100ms);
    const Client client = Client::connect(path_);
    EXPECT_EQ(client.call("stop", Json::object(), prompt), Json({{"bye", true}}));
    EXPECT_TRUE(run_returned());
    gate_.set_value(); // the destructor waits for the handler still running
    EXPECT_TRUE(slow.get());
}

} // namespace
} // namespace vmfork::control
