// SPDX-License-Identifier: GPL-2.0
#include "vmfork/netlink_events.h"

#include <array>
#include <cerrno>
#include <string>
#include <sys/socket.h>

#include <netlink/genl/ctrl.h>

#include "netlink_common.h"
#include "vmfork/system_error.h"

namespace vmfork {

namespace {

// Room for bursts (a fork storm sends one message per fork): 1 MiB of queue.
constexpr int receive_buffer = 1 << 20;

bool to_event(nlmsghdr* h, ModuleEvent& e) {
    netlink::Attrs a;
    if (!netlink::parse(h, a) || a[VMFORK_A_ID] == nullptr) {
        return false;
    }
    e = {};
    e.id = netlink::u64(a, VMFORK_A_ID);
    switch (netlink::command(h)) {
    case VMFORK_CMD_EVENT_FORK:
        e.kind = ModuleEvent::Kind::fork;
        e.child_id = netlink::u64(a, VMFORK_A_CHILD_ID);
        e.pid = netlink::u32(a, VMFORK_A_CREATOR_PID);
        e.flags = netlink::u64(a, VMFORK_A_FLAGS);
        e.resident_pages = netlink::u64(a, VMFORK_A_RESIDENT_PAGES);
        e.duration_ns = netlink::u64(a, VMFORK_A_DURATION_NS);
        return true;
    case VMFORK_CMD_EVENT_RESET:
        e.kind = ModuleEvent::Kind::reset;
        e.dropped_pages = netlink::u64(a, VMFORK_A_DROPPED_PAGES);
        e.duration_ns = netlink::u64(a, VMFORK_A_DURATION_NS);
        return true;
    case VMFORK_CMD_EVENT_RELEASE:
        e.kind = ModuleEvent::Kind::release;
        e.resident_pages = netlink::u64(a, VMFORK_A_RESIDENT_PAGES);
        e.private_pages = netlink::u64(a, VMFORK_A_PRIVATE_PAGES);
        return true;
    default:
        return false; // a command this version does not know
    }
}

} // namespace

NetlinkEvents::NetlinkEvents() : sock_(netlink::connect(0)) {
    family_ = netlink::resolve_family(sock_.get());
    const int group =
        genl_ctrl_resolve_grp(sock_.get(), VMFORK_GENL_NAME, VMFORK_GENL_MCGRP_EVENTS);
    if (group < 0) {
        netlink::fail(group, "resolving the multicast group " VMFORK_GENL_NAME
                             "/" VMFORK_GENL_MCGRP_EVENTS);
    }
    if (const int err = nl_socket_add_membership(sock_.get(), group); err < 0) {
        if (netlink::errno_of(err) == EPERM) {
            throw SystemError(EPERM, "joining the " VMFORK_GENL_NAME "/" VMFORK_GENL_MCGRP_EVENTS
                                     " group needs CAP_SYS_ADMIN (it announces every "
                                     "user's objects): run as root");
        }
        netlink::fail(err, "joining the " VMFORK_GENL_NAME "/" VMFORK_GENL_MCGRP_EVENTS " group");
    }
    if (const int err = nl_socket_set_buffer_size(sock_.get(), receive_buffer, 0); err < 0) {
        netlink::fail(err, "setting the netlink receive buffer");
    }
}

NetlinkEvents::~NetlinkEvents() = default;
NetlinkEvents::NetlinkEvents(NetlinkEvents&&) noexcept = default;
NetlinkEvents& NetlinkEvents::operator=(NetlinkEvents&&) noexcept = default;

int NetlinkEvents::fd() const {
    return nl_socket_get_fd(sock_.get());
}

std::vector<ModuleEvent> NetlinkEvents::drain() {
    // Read with recv() rather than libnl's nl_recvmsgs(): libnl turns ENOBUFS (events
    // dropped) into the same code as ENOMEM, and the caller must tell them apart.
    std::vector<ModuleEvent> events;
    alignas(nlmsghdr) std::array<char, 16384> buf{};
    for (;;) {
        const ssize_t n = recv(fd(), buf.data(), buf.size(), MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == ENOBUFS) {
                ++overruns_;
                continue;
            }
            if (errno == EAGAIN) {
                return events;
            }
            throw SystemError::from_errno("reading vmfork netlink events");
        }
        auto* h = reinterpret_cast<nlmsghdr*>(buf.data());
        int left = static_cast<int>(n);
        for (; nlmsg_ok(h, left); h = nlmsg_next(h, &left)) {
            ModuleEvent e;
            if (h->nlmsg_type == family_ && to_event(h, e)) {
                events.push_back(e);
            }
        }
    }
}

} // namespace vmfork
