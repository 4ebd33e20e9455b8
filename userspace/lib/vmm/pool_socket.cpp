// SPDX-License-Identifier: GPL-2.0
#include "vmfork/vmm/pool_socket.h"

#include <array>
#include <cerrno>
#include <cstring>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "vmfork/system_error.h"

namespace vmfork::pool_socket {

namespace {

sockaddr_un address(const std::string& path) {
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    if (path.size() >= sizeof(a.sun_path)) {
        throw SystemError(ENAMETOOLONG, "socket path too long: " + path);
    }
    std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
    return a;
}

UniqueFd seqpacket() {
    UniqueFd s(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
    if (!s) {
        throw SystemError::from_errno("socket AF_UNIX SOCK_SEQPACKET");
    }
    return s;
}

} // namespace

std::string warm_path(const std::string& pool, unsigned cpus, pid_t pid) {
    return pool + "/warm-" + std::to_string(cpus) + "-" + std::to_string(pid) + ".sock";
}

std::string taken_path(const std::string& pool, pid_t pid) {
    return pool + "/taken-" + std::to_string(pid) + ".sock";
}

UniqueFd listen(const std::string& path) {
    UniqueFd s = seqpacket();
    const sockaddr_un a = address(path);
    ::unlink(path.c_str());
    if (::bind(s.get(), reinterpret_cast<const sockaddr*>(&a), sizeof(a)) < 0) {
        throw SystemError::from_errno("bind " + path);
    }
    if (::chmod(path.c_str(), 0600) < 0 || ::listen(s.get(), 4) < 0) {
        throw SystemError::from_errno("listen " + path);
    }
    return s;
}

UniqueFd connect(const std::string& path) {
    UniqueFd s = seqpacket();
    const sockaddr_un a = address(path);
    while (::connect(s.get(), reinterpret_cast<const sockaddr*>(&a), sizeof(a)) < 0) {
        if (errno != EINTR) {
            return {};
        }
    }
    return s;
}

bool send(int sock, const std::string& text, std::span<const int> fds) {
    if (fds.size() > max_fds || text.size() > max_text) {
        throw SystemError(E2BIG,
                          "a warm-pool message of " + std::to_string(fds.size()) + " descriptors");
    }
    iovec iov{const_cast<char*>(text.data()), text.size()};
    msghdr m{};
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    std::vector<char> control;
    if (!fds.empty()) {
        control.resize(CMSG_SPACE(sizeof(int) * fds.size()));
        m.msg_control = control.data();
        m.msg_controllen = control.size();
        cmsghdr* c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
        std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
    }
    for (;;) {
        if (::sendmsg(sock, &m, MSG_NOSIGNAL) >= 0) {
            return true;
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno == EPIPE || errno == ECONNRESET || errno == ECONNREFUSED) {
            return false;
        }
        throw SystemError::from_errno("send to a warm VMM");
    }
}

std::optional<Message> receive(int sock, std::string& why) {
    ucred cred{};
    socklen_t len = sizeof(cred);
    if (::getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
        why = std::string("SO_PEERCRED: ") + std::strerror(errno);
        return std::nullopt;
    }
    if (cred.uid != ::geteuid() && cred.uid != 0) {
        why = "a connection of uid " + std::to_string(cred.uid);
        return std::nullopt;
    }
    std::array<char, max_text + 1> buf{};
    iovec iov{buf.data(), buf.size()};
    std::vector<char> control(CMSG_SPACE(sizeof(int) * max_fds));
    msghdr m{};
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_control = control.data();
    m.msg_controllen = control.size();
    ssize_t n = -1;
    do {
        n = ::recvmsg(sock, &m, MSG_CMSG_CLOEXEC);
    } while (n < 0 && errno == EINTR);
    Message msg;
    for (cmsghdr* c = CMSG_FIRSTHDR(&m); n >= 0 && c != nullptr; c = CMSG_NXTHDR(&m, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            const std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            std::vector<int> raw(count);
            std::memcpy(raw.data(), CMSG_DATA(c), count * sizeof(int));
            for (const int fd : raw) {
                msg.fds.emplace_back(fd);
            }
        }
    }
    if (n < 0) {
        why = std::string("recvmsg: ") + std::strerror(errno);
        return std::nullopt;
    }
    if ((m.msg_flags & (MSG_CTRUNC | MSG_TRUNC)) != 0) {
        why = "a message too long, or with too many descriptors";
        return std::nullopt;
    }
    if (n == 0) {
        why = "a connection closed without a message";
        return std::nullopt;
    }
    msg.text.assign(buf.data(), static_cast<std::size_t>(n));
    return msg;
}

} // namespace vmfork::pool_socket
