// SPDX-License-Identifier: GPL-2.0
#pragma once

// What the libnl-genl-3 clients of the "vmfork" family share (internal to the library).

#include <array>
#include <cstdint>
#include <memory>
#include <string>

#include <linux/vmfork.h>
#include <netlink/genl/genl.h>
#include <netlink/msg.h>
#include <netlink/netlink.h>
#include <netlink/socket.h>

#include "vmfork/netlink_socket.h"

namespace vmfork::netlink {

// libnl returns its own NLE_* codes; the errno one stands for, for SystemError.
int errno_of(int nle);

// Throws SystemError with errno_of(nle) and libnl's text after what.
[[noreturn]] void fail(int nle, const std::string& what);

struct MsgDeleter {
    void operator()(nl_msg* m) const noexcept { nlmsg_free(m); }
};
struct CbDeleter {
    void operator()(nl_cb* c) const noexcept { nl_cb_put(c); }
};
using Msg = std::unique_ptr<nl_msg, MsgDeleter>;
using Cb = std::unique_ptr<nl_cb, CbDeleter>;

// A generic netlink socket, connected, with a receive timeout of timeout_s (0: none).
NlSock connect(time_t timeout_s);

// The family's id; ENOENT "is the vmfork module loaded?" when it is not registered.
int resolve_family(nl_sock* sock);

// Parses a vmfork message's attributes against the family's types (u64 except the
// pid); false when the message is malformed.
using Attrs = std::array<nlattr*, VMFORK_A_MAX + 1>;
bool parse(nlmsghdr* h, Attrs& a);

// An attribute's value, 0 when absent.
std::uint64_t u64(const Attrs& a, int type);
std::uint32_t u32(const Attrs& a, int type);

// The genl command of a message.
std::uint8_t command(nlmsghdr* h);

} // namespace vmfork::netlink
