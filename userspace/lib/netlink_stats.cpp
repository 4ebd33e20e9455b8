// SPDX-License-Identifier: GPL-2.0
#include "vmfork/netlink_stats.h"

#include <array>
#include <cerrno>
#include <string>
#include <sys/socket.h>
#include <sys/time.h>

#include <linux/vmfork.h>
#include <netlink/genl/ctrl.h>
#include <netlink/genl/genl.h>
#include <netlink/msg.h>
#include <netlink/netlink.h>
#include <netlink/socket.h>

#include "vmfork/system_error.h"

namespace vmfork {

namespace {

// Every reply is awaited at most this long: a kernel that does not answer is an error.
constexpr time_t reply_timeout_s = 5;

// libnl returns its own NLE_* codes; the errno they stand for, for SystemError.
int errno_of(int nle) {
    switch (-nle) {
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
    default:
        return EIO;
    }
}

[[noreturn]] void fail(int nle, const std::string& what) {
    throw SystemError::relayed(errno_of(nle), what + ": " + nl_geterror(nle));
}

struct MsgDeleter {
    void operator()(nl_msg* m) const noexcept { nlmsg_free(m); }
};
struct CbDeleter {
    void operator()(nl_cb* c) const noexcept { nl_cb_put(c); }
};
using Msg = std::unique_ptr<nl_msg, MsgDeleter>;
using Cb = std::unique_ptr<nl_cb, CbDeleter>;

// The state of one request while its replies come in.
struct Exchange {
    int error = 0; // errno of an NLMSG_ERROR, 0: none
    bool done = false;
    std::vector<ObjectStats> objects;
    ModuleCounters counters;
    bool got_counters = false;
};

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

std::uint64_t u64(nlattr* const* attrs, int type) {
    return attrs[type] != nullptr ? nla_get_u64(attrs[type]) : 0;
}

int on_valid(nl_msg* msg, void* arg) {
    auto* x = static_cast<Exchange*>(arg);
    static auto policy = make_policy();
    std::array<nlattr*, VMFORK_A_MAX + 1> a{};
    nlmsghdr* h = nlmsg_hdr(msg);
    if (genlmsg_parse(h, 0, a.data(), VMFORK_A_MAX, policy.data()) < 0) {
        x->error = EPROTO;
        return NL_STOP;
    }
    const auto* g = static_cast<genlmsghdr*>(nlmsg_data(h));
    if (g->cmd == VMFORK_CMD_GET_COUNTERS) {
        x->counters = {u64(a.data(), VMFORK_A_OBJECTS), u64(a.data(), VMFORK_A_LAYERS),
                       u64(a.data(), VMFORK_A_PAGES)};
        x->got_counters = true;
        return NL_OK;
    }
    if (g->cmd != VMFORK_CMD_GET_STATS || a[VMFORK_A_ID] == nullptr) {
        return NL_OK; // not ours to read
    }
    ObjectStats s;
    s.id = u64(a.data(), VMFORK_A_ID);
    s.parent_id = u64(a.data(), VMFORK_A_PARENT_ID);
    s.creator_pid = a[VMFORK_A_CREATOR_PID] != nullptr ? nla_get_u32(a[VMFORK_A_CREATOR_PID]) : 0;
    s.depth = u64(a.data(), VMFORK_A_DEPTH);
    s.size = u64(a.data(), VMFORK_A_SIZE);
    s.resident_pages = u64(a.data(), VMFORK_A_RESIDENT_PAGES);
    s.shared_pages = u64(a.data(), VMFORK_A_SHARED_PAGES);
    s.private_pages = u64(a.data(), VMFORK_A_PRIVATE_PAGES);
    s.cow_breaks = u64(a.data(), VMFORK_A_COW_BREAKS);
    s.forks = u64(a.data(), VMFORK_A_FORKS);
    s.resets = u64(a.data(), VMFORK_A_RESETS);
    s.flags = u64(a.data(), VMFORK_A_FLAGS);
    s.chain_length = u64(a.data(), VMFORK_A_CHAIN_LENGTH);
    x->objects.push_back(s);
    return NL_OK;
}

int on_error(sockaddr_nl* /*who*/, nlmsgerr* e, void* arg) {
    auto* x = static_cast<Exchange*>(arg);
    x->error = -e->error;
    x->done = true;
    return NL_STOP;
}

int on_end(nl_msg* /*msg*/, void* arg) {
    static_cast<Exchange*>(arg)->done = true;
    return NL_STOP;
}

// Sends a request for cmd and reads every reply until its ack or NLMSG_DONE.
Exchange exchange(nl_sock* sock, int family, std::uint8_t cmd, int flags,
                  std::optional<std::uint64_t> id, const std::string& what) {
    Msg msg(nlmsg_alloc());
    if (!msg) {
        throw SystemError(ENOMEM, what);
    }
    if (genlmsg_put(msg.get(), NL_AUTO_PORT, NL_AUTO_SEQ, family, 0, flags, cmd,
                    VMFORK_GENL_VERSION) == nullptr ||
        (id && nla_put_u64(msg.get(), VMFORK_A_ID, *id) < 0)) {
        throw SystemError(EMSGSIZE, what);
    }
    Cb cb(nl_cb_alloc(NL_CB_DEFAULT));
    if (!cb) {
        throw SystemError(ENOMEM, what);
    }
    Exchange x;
    nl_cb_set(cb.get(), NL_CB_VALID, NL_CB_CUSTOM, on_valid, &x);
    nl_cb_set(cb.get(), NL_CB_ACK, NL_CB_CUSTOM, on_end, &x);
    nl_cb_set(cb.get(), NL_CB_FINISH, NL_CB_CUSTOM, on_end, &x);
    nl_cb_err(cb.get(), NL_CB_CUSTOM, on_error, &x);

    if (const int err = nl_send_auto(sock, msg.get()); err < 0) {
        fail(err, what);
    }
    while (!x.done) {
        const int err = nl_recvmsgs(sock, cb.get());
        if (x.error != 0) {
            break;
        }
        if (err < 0) {
            fail(err, what);
        }
    }
    return x;
}

} // namespace

void NetlinkStats::SockDeleter::operator()(nl_sock* s) const noexcept {
    nl_socket_free(s);
}

NetlinkStats::NetlinkStats() : sock_(nl_socket_alloc()) {
    if (!sock_) {
        throw SystemError(ENOMEM, "allocating a netlink socket");
    }
    if (const int err = genl_connect(sock_.get()); err < 0) {
        fail(err, "connecting to generic netlink");
    }
    const timeval tv{reply_timeout_s, 0};
    if (setsockopt(nl_socket_get_fd(sock_.get()), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) != 0) {
        throw SystemError::from_errno("setting the netlink receive timeout");
    }
    family_ = genl_ctrl_resolve(sock_.get(), VMFORK_GENL_NAME);
    if (family_ == -NLE_OBJ_NOTFOUND) {
        throw SystemError(ENOENT, "generic netlink family \"" VMFORK_GENL_NAME
                                  "\" (is the vmfork module loaded?)");
    }
    if (family_ < 0) {
        fail(family_, "resolving the generic netlink family " VMFORK_GENL_NAME);
    }
}

NetlinkStats::~NetlinkStats() = default;
NetlinkStats::NetlinkStats(NetlinkStats&&) noexcept = default;
NetlinkStats& NetlinkStats::operator=(NetlinkStats&&) noexcept = default;

std::vector<ObjectStats> NetlinkStats::dump() {
    auto x = exchange(sock_.get(), family_, VMFORK_CMD_GET_STATS, NLM_F_DUMP, std::nullopt,
                      "vmfork netlink GET_STATS dump");
    if (x.error != 0) {
        throw SystemError(x.error, "vmfork netlink GET_STATS dump");
    }
    return std::move(x.objects);
}

std::optional<ObjectStats> NetlinkStats::get(std::uint64_t id) {
    const std::string what = "vmfork netlink GET_STATS of object " + std::to_string(id);
    auto x = exchange(sock_.get(), family_, VMFORK_CMD_GET_STATS, 0, id, what);
    if (x.error == ENOENT) {
        return std::nullopt;
    }
    if (x.error != 0) {
        throw SystemError(x.error, what);
    }
    if (x.objects.size() != 1) {
        throw SystemError(EPROTO, what + ": expected one reply");
    }
    return x.objects.front();
}

ModuleCounters NetlinkStats::counters() {
    auto x = exchange(sock_.get(), family_, VMFORK_CMD_GET_COUNTERS, 0, std::nullopt,
                      "vmfork netlink GET_COUNTERS");
    if (x.error != 0) {
        throw SystemError(x.error, "vmfork netlink GET_COUNTERS");
    }
    if (!x.got_counters) {
        throw SystemError(EPROTO, "vmfork netlink GET_COUNTERS: no reply");
    }
    return x.counters;
}

} // namespace vmfork
