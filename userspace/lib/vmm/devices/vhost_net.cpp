// SPDX-License-Identifier: GPL-2.0
#include "vmfork/vmm/devices/vhost_net.h"

// The uAPI's legacy vring_init() is not valid C++; only the ring layout is needed.
#define VIRTIO_RING_NO_LEGACY
#include <cstdio>
#include <linux/vhost.h>
#include <linux/virtio_ring.h>

#include "vmfork/random.h"
#include "vmfork/system_error.h"

namespace vmfork {

namespace {

// linux/virtio_net.h is not valid C++ (a field named class): its one bit used here.
constexpr unsigned virtio_net_f_mac = 5;

} // namespace

VhostNet::VhostNet(const GuestMemory& memory, IrqLine& irq, Tap tap, const Mac& mac)
    : VirtioMmio(irq, "virtio-net"), memory_(memory), tap_(std::move(tap)), mac_(mac) {}

VhostNet::~VhostNet() {
    const std::lock_guard lock(mu_);
    vhost_.reset();
}

VhostNet::Mac VhostNet::random_mac() {
    Mac m{};
    random_bytes(std::as_writable_bytes(std::span(m)), "a MAC address");
    m[0] = static_cast<std::uint8_t>((m[0] & 0xfe) | 0x02); // unicast, locally administered
    return m;
}

std::string VhostNet::mac_string(const Mac& mac) {
    std::array<char, 18> s{};
    std::snprintf(s.data(), s.size(), "%02x:%02x:%02x:%02x:%02x:%02x", mac[0], mac[1], mac[2],
                  mac[3], mac[4], mac[5]);
    return s.data();
}

VhostNet::Mac VhostNet::mac() const {
    const std::lock_guard lock(mu_);
    return mac_;
}

std::uint64_t VhostNet::device_features() const {
    return feature_version_1 | (1ULL << virtio_net_f_mac) | (1ULL << VIRTIO_RING_F_INDIRECT_DESC);
}

void VhostNet::read_config(std::uint64_t offset, std::span<std::uint8_t> data) const {
    // struct virtio_net_config: mac[6], then fields of features not offered.
    for (std::size_t i = 0; i < data.size(); ++i) {
        const std::uint64_t at = offset + i;
        data[i] = at < mac_.size() ? mac_[at] : 0;
    }
}

void VhostNet::activate(std::uint64_t features, const std::vector<VirtQueueConfig>& queues) {
    bases_ = {};
    start_vhost(features, queues);
}

void VhostNet::restored(std::uint64_t features, const std::vector<VirtQueueConfig>& queues) {
    start_vhost(features, queues);
}

void VhostNet::start_vhost(std::uint64_t features, const std::vector<VirtQueueConfig>& queues) {
    vhost_.reset();
    if (queues.size() != 2) {
        throw SystemError(EINVAL, "virtio-net: queues");
    }
    const std::array<VhostBackend::Ring, 2> rings{{{queues[0], bases_[0]}, {queues[1], bases_[1]}}};
    // The tap reads and writes the virtio-net header itself (IFF_VNET_HDR): vhost must
    // not add one.
    vhost_ = std::make_unique<VhostBackend>(default_path, "modprobe vhost_net", memory_, features,
                                            1ULL << VHOST_NET_F_VIRTIO_NET_HDR, rings);
    set_backend(tap_.fd());
    vhost_->start_interrupts(mu_, [this] { interrupt_locked(int_vring); });
    vhost_->kick_all(); // whatever the guest queued before the start (or the fork)
}

void VhostNet::set_backend(int fd) {
    for (unsigned i = 0; i < 2; ++i) {
        vhost_vring_file f{.index = i, .fd = fd};
        vhost_->ioctl(VHOST_NET_SET_BACKEND, &f,
                      "VHOST_NET_SET_BACKEND " + std::string(fd < 0 ? "none" : tap_.name()));
    }
}

void VhostNet::pause() {
    const std::lock_guard lock(mu_);
    if (!vhost_) {
        return;
    }
    set_backend(-1); // vhost stops and flushes: nothing in flight into guest memory
    for (unsigned i = 0; i < 2; ++i) {
        bases_[i] = vhost_->ring_base(i);
    }
}

void VhostNet::resume() {
    const std::lock_guard lock(mu_);
    if (!vhost_) {
        return;
    }
    set_backend(tap_.fd());
    vhost_->kick_all();
}

void VhostNet::notify(unsigned queue) {
    if (vhost_) {
        vhost_->kick(queue);
    }
}

void VhostNet::reset_device() {
    vhost_.reset();
    bases_ = {};
}

void VhostNet::save_device(StateWriter& out) const {
    out.u16(bases_[0]);
    out.u16(bases_[1]);
    out.bytes(mac_);
}

void VhostNet::restore_device(StateReader& in) {
    bases_[0] = in.u16();
    bases_[1] = in.u16();
    const auto mac = in.bytes(mac_.size());
    if (mac.size() != mac_.size()) {
        in.fail("a MAC address of " + std::to_string(mac.size()) + " bytes");
    }
    std::copy(mac.begin(), mac.end(), mac_.begin());
}

} // namespace vmfork
