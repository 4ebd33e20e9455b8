// SPDX-License-Identifier: GPL-2.0
#include "netlink_common.h"

#include <cerrno>
#include <sys/socket.h>
#include <sys/time.h>

#include <netlink/genl/ctrl.h>

#include "vmfork/system_error.h"

namespace vmfork {

void NlSockDeleter::operator()(nl_sock* s) const noexcept {
    nl_socket_free(s);
}

namespace netlink {

int errno_of(int nle) {
    switch (nle < 0 ? -nle : nle) {
    case NLE_OBJ_NOTFOUND:
        return ENOENT;
    case NLE_PERM:
        return EPERM;
    case NLE_NOACCESS:
        return EACCES;
    case NLE_INVAL:
    case NLE_MSG_TRUNC:
    case NLE_MSG_TOOSHORT:
        return EINVAL;
    case NLE_NOMEM:
        return ENOMEM;
    case NLE_OPNOTSUPP:
        return EOPNOTSUPP;
    case NLE_AGAIN:
        return ETIMEDOUT;
    case NLE_MSG_OVERFLOW:
        return ENOBUFS;
    default:
        return EIO;
    }
}

void fail(int nle, const std::string& what) {
    throw SystemError::relayed(errno_of(nle), what + ": " + nl_geterror(nle));
}

NlSock connect(time_t timeout_s) {
    NlSock sock(nl_socket_alloc());
    if (!sock) {
        throw SystemError(ENOMEM, "allocating a netlink socket");
    }
    if (const int err = genl_connect(sock.get()); err < 0) {
        fail(err, "connecting to generic netlink");
    }
    if (timeout_s > 0) {
        const timeval tv{timeout_s, 0};
        if (setsockopt(nl_socket_get_fd(sock.get()), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) !=
            0) {
            throw SystemError::from_errno("setting the netlink receive timeout");
        }
    }
    return sock;
}

int resolve_family(nl_sock* sock) {
    const int family = genl_ctrl_resolve(sock, VMFORK_GENL_NAME);
    if (family == -NLE_OBJ_NOTFOUND) {
        throw SystemError(ENOENT, "generic netlink family \"" VMFORK_GENL_NAME
                                  "\" (is the vmfork module loaded?)");
    }
    if (family < 0) {
        fail(family, "resolving the generic netlink family " VMFORK_GENL_NAME);
    }
    return family;
}

namespace {

std::array<nla_policy, VMFORK_A_MAX + 1> make_policy() {
    std::array<nla_policy, VMFORK_A_MAX + 1> p{};
    for (auto& a : p) {
        a.type = NLA_U64;
    }
    p[VMFORK_A_UNSPEC].type = NLA_UNSPEC;
    p[VMFORK_A_PAD].type = NLA_UNSPEC;
    p[VMFORK_A_CREATOR_PID].type = NLA_U32;
    return p;
}

} // namespace

bool parse(nlmsghdr* h, Attrs& a) {
    static auto policy = make_policy();
    a.fill(nullptr);
    return genlmsg_parse(h, 0, a.data(), VMFORK_A_MAX, policy.data()) >= 0;
}

std::uint64_t u64(const Attrs& a, int type) {
    return a[type] != nullptr ? nla_get_u64(a[type]) : 0;
}

std::uint32_t u32(const Attrs& a, int type) {
    return a[type] != nullptr ? nla_get_u32(a[type]) : 0;
}

std::uint8_t command(nlmsghdr* h) {
    return static_cast<const genlmsghdr*>(nlmsg_data(h))->cmd;
}

} // namespace netlink

} // namespace vmfork
