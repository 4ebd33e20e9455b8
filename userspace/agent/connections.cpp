// SPDX-License-Identifier: GPL-2.0
//
// A clone's TCP connections to other machines are its parent's: their peers know one
// machine, not several, and the clone's network leads elsewhere (a namespace of its
// own, docs/networks.md). Each is reset here (sock_diag's SOCK_DESTROY, as `ss -K`
// does), so that its program gets ECONNABORTED at once instead of waiting on a peer
// that will never answer it, and no peer ever gets one stream from two machines.
// Connections within the guest (loopback) are whole in every clone and stay.

#include <arpa/inet.h>
#include <array>
#include <cerrno>
#include <cstring>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>
#include <vector>

#include "agent.h"
#include "vmfork/system_error.h"
#include "vmfork/unique_fd.h"

namespace vmfork::agent {

namespace {

struct DiagRequest {
    nlmsghdr header;
    inet_diag_req_v2 body;
};

bool loopback(int family, const inet_diag_sockid& id) {
    if (family == AF_INET) {
        return (ntohl(id.idiag_src[0]) >> 24) == 127;
    }
    // ::1, or an IPv4-mapped 127.x.y.z.
    const bool v6_loopback = id.idiag_src[0] == 0 && id.idiag_src[1] == 0 && id.idiag_src[2] == 0 &&
                             id.idiag_src[3] == htonl(1);
    const bool mapped = id.idiag_src[0] == 0 && id.idiag_src[1] == 0 &&
                        id.idiag_src[2] == htonl(0xffff) && (ntohl(id.idiag_src[3]) >> 24) == 127;
    return v6_loopback || mapped;
}

void send_request(int fd, std::uint16_t type, std::uint16_t flags, const inet_diag_req_v2& body) {
    DiagRequest req{};
    req.header.nlmsg_len = sizeof(req);
    req.header.nlmsg_type = type;
    req.header.nlmsg_flags = flags;
    req.body = body;
    if (::send(fd, &req, sizeof(req), 0) != static_cast<ssize_t>(sizeof(req))) {
        throw SystemError::from_errno("sock_diag send");
    }
}

// The TCP sockets of family that are connected (any state but LISTEN and CLOSE) and
// not on loopback.
std::vector<inet_diag_msg> connections(int fd, std::uint8_t family) {
    inet_diag_req_v2 body{};
    body.sdiag_family = family;
    body.sdiag_protocol = IPPROTO_TCP;
    body.idiag_states = ~((1U << TCP_LISTEN) | (1U << TCP_CLOSE)) & ((1U << 12) - 1);
    send_request(fd, SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, body);
    std::vector<inet_diag_msg> found;
    alignas(nlmsghdr) std::array<char, 16384> buf{};
    for (;;) {
        const ssize_t n = ::recv(fd, buf.data(), buf.size(), 0);
        if (n < 0) {
            throw SystemError::from_errno("sock_diag dump");
        }
        auto len = static_cast<unsigned>(n);
        for (auto* h = reinterpret_cast<nlmsghdr*>(buf.data()); NLMSG_OK(h, len);
             h = NLMSG_NEXT(h, len)) {
            if (h->nlmsg_type == NLMSG_DONE) {
                return found;
            }
            if (h->nlmsg_type == NLMSG_ERROR) {
                const auto* e = static_cast<const nlmsgerr*>(NLMSG_DATA(h));
                throw SystemError(-e->error, "sock_diag dump (modprobe tcp_diag)");
            }
            inet_diag_msg m{};
            std::memcpy(&m, NLMSG_DATA(h), sizeof(m));
            if (!loopback(family, m.id)) {
                found.push_back(m);
            }
        }
    }
}

// SOCK_DESTROY of one socket; 0 or the errno of the kernel's answer.
int destroy(int fd, const inet_diag_msg& m) {
    inet_diag_req_v2 body{};
    body.sdiag_family = m.idiag_family;
    body.sdiag_protocol = IPPROTO_TCP;
    body.idiag_states = 1U << m.idiag_state;
    body.id = m.id;
    send_request(fd, SOCK_DESTROY, NLM_F_REQUEST | NLM_F_ACK, body);
    alignas(nlmsghdr) std::array<char, 1024> buf{};
    const ssize_t n = ::recv(fd, buf.data(), buf.size(), 0);
    if (n < static_cast<ssize_t>(NLMSG_LENGTH(sizeof(nlmsgerr)))) {
        return n < 0 ? errno : EIO;
    }
    const auto* h = reinterpret_cast<const nlmsghdr*>(buf.data());
    if (h->nlmsg_type != NLMSG_ERROR) {
        return EIO;
    }
    const int err = -static_cast<const nlmsgerr*>(NLMSG_DATA(h))->error;
    return err == ENOENT ? 0 : err; // gone meanwhile: as good as reset
}

} // namespace

StepReport reset_connections() {
    const char* step = "connections";
    try {
        UniqueFd fd(::socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG));
        if (!fd) {
            throw SystemError::from_errno("socket(NETLINK_SOCK_DIAG)");
        }
        unsigned reset = 0;
        for (const std::uint8_t family : {AF_INET, AF_INET6}) {
            for (const inet_diag_msg& m : connections(fd.get(), family)) {
                if (const int err = destroy(fd.get(), m); err != 0) {
                    return {step, false, false, err,
                            "SOCK_DESTROY (CONFIG_INET_DIAG_DESTROY): " +
                                std::string(std::strerror(err))};
                }
                ++reset;
            }
        }
        return {step, true, false, 0,
                "reset " + std::to_string(reset) + " TCP connection(s) of the parent's"};
    } catch (const SystemError& e) {
        return {step, false, false, e.error(), e.what()};
    }
}

} // namespace vmfork::agent
