// SPDX-License-Identifier: GPL-2.0
#include "vmfork/vmm/tap.h"

#include <arpa/inet.h>
#include <array>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdexcept>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "vmfork/ioctl.h"
#include "vmfork/system_error.h"

namespace vmfork {

namespace {

// virtio 1.x: struct virtio_net_hdr_mrg_rxbuf, whatever the features.
constexpr int vnet_header_size = 12;

ifreq request_for(const std::string& name) {
    ifreq ifr{};
    std::strncpy(ifr.ifr_name, name.c_str(), IFNAMSIZ - 1);
    return ifr;
}

UniqueFd inet_socket() {
    UniqueFd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (!s) {
        throw SystemError::from_errno("socket(AF_INET) for the tap's address");
    }
    return s;
}

sockaddr_in inet_address(std::uint32_t host_order) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(host_order);
    return a;
}

} // namespace

Ipv4Prefix Ipv4Prefix::parse(const std::string& text) {
    const auto slash = text.find('/');
    in_addr a{};
    Ipv4Prefix p;
    try {
        if (slash == std::string::npos ||
            ::inet_pton(AF_INET, text.substr(0, slash).c_str(), &a) != 1) {
            throw std::invalid_argument(text);
        }
        std::size_t used = 0;
        const std::string len = text.substr(slash + 1);
        p.prefix = static_cast<unsigned>(std::stoul(len, &used));
        if (used != len.size() || p.prefix < 1 || p.prefix > 30) {
            throw std::invalid_argument(text);
        }
    } catch (const std::logic_error&) {
        throw SystemError(EINVAL, "'" + text +
                                      "' is not an IPv4 address with a prefix length "
                                      "of 1 to 30, like 172.30.0.1/24");
    }
    p.address = ntohl(a.s_addr);
    return p;
}

std::string Ipv4Prefix::str() const {
    in_addr a{htonl(address)};
    std::array<char, INET_ADDRSTRLEN> buf{};
    ::inet_ntop(AF_INET, &a, buf.data(), buf.size());
    return std::string(buf.data()) + "/" + std::to_string(prefix);
}

bool Tap::valid_name(const std::string& name) {
    return !name.empty() && name.size() < IFNAMSIZ &&
           name.find_first_of("/ \t") == std::string::npos;
}

Tap::Tap(const std::string& name) {
    if (!valid_name(name)) {
        throw SystemError(EINVAL, "'" + name + "' is not a network interface name (1 to " +
                                      std::to_string(IFNAMSIZ - 1) +
                                      " characters, no '/' or space)");
    }
    fd_ = UniqueFd(::open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK));
    if (!fd_) {
        throw SystemError::from_errno("open /dev/net/tun (modprobe tun)");
    }
    ifreq ifr = request_for(name);
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    // NOLINTNEXTLINE(cppcoreguidelines-pro-type-vararg): the ioctl ABI
    if (::ioctl(fd_.get(), TUNSETIFF, &ifr) < 0) {
        const int err = errno;
        if (err == EPERM) {
            throw SystemError(err, "tap " + name +
                                       ": creating a tap needs CAP_NET_ADMIN in this network "
                                       "namespace (run vmfork as root, or make the tap "
                                       "beforehand with `ip tuntap add " +
                                       name + " mode tap vnet_hdr user USER`)");
        }
        if (err == EBUSY) {
            throw SystemError(err, "tap " + name +
                                       " is in use (a tap serves one VM): name "
                                       "another with --net tap,NAME");
        }
        throw SystemError(err, "tap " + name + ": TUNSETIFF");
    }
    name_ = ifr.ifr_name; // a template's %d filled in
    const int header = vnet_header_size;
    xioctl(fd_.get(), TUNSETVNETHDRSZ, &header, "tap " + name_ + ": TUNSETVNETHDRSZ");
    const unsigned long offloads = 0; // the device offers none of virtio-net's offloads
    xioctl(fd_.get(), TUNSETOFFLOAD, offloads, "tap " + name_ + ": TUNSETOFFLOAD");
}

std::optional<Ipv4Prefix> Tap::address() const {
    const UniqueFd s = inet_socket();
    ifreq ifr = request_for(name_);
    // NOLINTNEXTLINE(cppcoreguidelines-pro-type-vararg): the ioctl ABI
    if (::ioctl(s.get(), SIOCGIFADDR, &ifr) < 0) {
        if (errno == EADDRNOTAVAIL) {
            return std::nullopt;
        }
        throw SystemError::from_errno("tap " + name_ + ": SIOCGIFADDR");
    }
    Ipv4Prefix p;
    sockaddr_in a{};
    std::memcpy(&a, &ifr.ifr_addr, sizeof(a));
    p.address = ntohl(a.sin_addr.s_addr);
    ifr = request_for(name_);
    xioctl(s.get(), SIOCGIFNETMASK, &ifr, "tap " + name_ + ": SIOCGIFNETMASK");
    std::memcpy(&a, &ifr.ifr_netmask, sizeof(a));
    p.prefix = static_cast<unsigned>(__builtin_popcount(a.sin_addr.s_addr));
    return p;
}

void Tap::set_address(const Ipv4Prefix& p) const {
    const UniqueFd s = inet_socket();
    ifreq ifr = request_for(name_);
    sockaddr_in a = inet_address(p.address);
    std::memcpy(&ifr.ifr_addr, &a, sizeof(a));
    xioctl(s.get(), SIOCSIFADDR, &ifr, "tap " + name_ + ": SIOCSIFADDR " + p.str());
    ifr = request_for(name_);
    a = inet_address(p.prefix == 0 ? 0 : ~0U << (32 - p.prefix));
    std::memcpy(&ifr.ifr_netmask, &a, sizeof(a));
    xioctl(s.get(), SIOCSIFNETMASK, &ifr, "tap " + name_ + ": SIOCSIFNETMASK " + p.str());
    set_up();
}

void Tap::set_up() const {
    const UniqueFd s = inet_socket();
    ifreq ifr = request_for(name_);
    xioctl(s.get(), SIOCGIFFLAGS, &ifr, "tap " + name_ + ": SIOCGIFFLAGS");
    ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP);
    xioctl(s.get(), SIOCSIFFLAGS, &ifr, "tap " + name_ + ": SIOCSIFFLAGS up");
}

} // namespace vmfork
