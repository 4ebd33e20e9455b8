// SPDX-License-Identifier: GPL-2.0
#include "vmfork/netlink_stats.h"

#include <cerrno>
#include <string>

#include "netlink_common.h"
#include "vmfork/system_error.h"

namespace vmfork {

namespace {

using netlink::Cb;
using netlink::fail;
using netlink::Msg;
using netlink::u64;

// Every reply is awaited at most this long: a kernel that does not answer is an error.
constexpr time_t reply_timeout_s = 5;

// The state of one request while its replies come in.
struct Exchange {
    int error = 0; // errno of an NLMSG_ERROR, 0: none
    bool done = false;
    std::vector<ObjectStats> objects;
    ModuleCounters counters;
    bool got_counters = false;
};

int on_valid(nl_msg* msg, void* arg) {
    auto* x = static_cast<Exchange*>(arg);
    netlink::Attrs a;
    nlmsghdr* h = nlmsg_hdr(msg);
    if (!netlink::parse(h, a)) {
        x->error = EPROTO;
        return NL_STOP;
    }
    const auto cmd = netlink::command(h);
    if (cmd == VMFORK_CMD_GET_COUNTERS) {
        x->counters = {u64(a, VMFORK_A_OBJECTS), u64(a, VMFORK_A_LAYERS), u64(a, VMFORK_A_PAGES)};
        x->got_counters = true;
        return NL_OK;
    }
    if (cmd != VMFORK_CMD_GET_STATS || a[VMFORK_A_ID] == nullptr) {
        return NL_OK; // not ours to read
    }
    ObjectStats s;
    s.id = u64(a, VMFORK_A_ID);
    s.parent_id = u64(a, VMFORK_A_PARENT_ID);
    s.creator_pid = netlink::u32(a, VMFORK_A_CREATOR_PID);
    s.depth = u64(a, VMFORK_A_DEPTH);
    s.size = u64(a, VMFORK_A_SIZE);
    s.resident_pages = u64(a, VMFORK_A_RESIDENT_PAGES);
    s.shared_pages = u64(a, VMFORK_A_SHARED_PAGES);
    s.private_pages = u64(a, VMFORK_A_PRIVATE_PAGES);
    s.cow_breaks = u64(a, VMFORK_A_COW_BREAKS);
    s.forks = u64(a, VMFORK_A_FORKS);
    s.resets = u64(a, VMFORK_A_RESETS);
    s.flags = u64(a, VMFORK_A_FLAGS);
    s.chain_length = u64(a, VMFORK_A_CHAIN_LENGTH);
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

NetlinkStats::NetlinkStats() : sock_(netlink::connect(reply_timeout_s)) {
    family_ = netlink::resolve_family(sock_.get());
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
