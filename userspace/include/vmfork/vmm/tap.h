// SPDX-License-Identifier: GPL-2.0
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "vmfork/unique_fd.h"

namespace vmfork {

// An IPv4 address with its prefix length, as "10.0.0.1/24".
struct Ipv4Prefix {
    std::uint32_t address = 0; // host byte order
    unsigned prefix = 0;

    // Parses "A.B.C.D/N"; throws SystemError(EINVAL) naming the text.
    static Ipv4Prefix parse(const std::string& text);
    [[nodiscard]] std::string str() const;
    bool operator==(const Ipv4Prefix&) const = default;
};

// A tap interface of the network namespace this process is in (/dev/net/tun, IFF_TAP,
// no packet info, a 12-byte virtio-net header in front of every frame, no offloads):
// created, or attached to when it exists and is free. Creating one needs CAP_NET_ADMIN
// there; without it the error says so. The interface goes when the last fd on it
// closes (unless made persistent elsewhere, with `ip tuntap`).
class Tap {
public:
    // name: the interface name, or a template with %d ("vmf%d": the kernel picks).
    explicit Tap(const std::string& name);

    // 1 to 15 characters, no '/' or blank (what the CLI checks before any VMM starts).
    static bool valid_name(const std::string& name);

    [[nodiscard]] int fd() const { return fd_.get(); }
    [[nodiscard]] const std::string& name() const { return name_; }
    // The host side's IPv4 address (the first), if it has one.
    [[nodiscard]] std::optional<Ipv4Prefix> address() const;
    // Gives the host side this address and brings the link up.
    void set_address(const Ipv4Prefix& a) const;
    void set_up() const;

private:
    UniqueFd fd_;
    std::string name_;
};

} // namespace vmfork
