// SPDX-License-Identifier: GPL-2.0
#include "vmfork/vmm/memory.h"

#include <cerrno>
#include <sys/mman.h>

#include "vmfork/kvm.h"
#include "vmfork/system_error.h"

namespace vmfork {

GuestMemory::GuestMemory(MemoryObject object)
    : object_(std::move(object)),
      map_(object_->size(), PROT_READ | PROT_WRITE, MAP_SHARED, object_->fd(), 0,
           "guest memory (vmfork object " + std::to_string(object_->id()) + ")"),
      base_(map_.data()), size_(object_->size()) {}

GuestMemory::GuestMemory(Mapping mapping)
    : map_(std::move(mapping)), base_(map_.data()), size_(map_.size()) {}

GuestMemory GuestMemory::borrow(std::byte* addr, std::uint64_t size) noexcept {
    GuestMemory m;
    m.base_ = addr;
    m.size_ = size;
    return m;
}

void GuestMemory::attach(const Vm& vm) const {
    if (base_ == nullptr) {
        throw SystemError(EINVAL, "no guest RAM to attach");
    }
    vm.set_user_memory_region(0, 0, low_size(), base_);
    if (high_size() != 0) {
        vm.set_user_memory_region(1, high_ram_base, high_size(), base_ + low_size());
    }
}

MemoryObject& GuestMemory::object() {
    if (!object_) {
        throw SystemError(EINVAL, "guest RAM is plain memory, not a vmfork object");
    }
    return *object_;
}

const MemoryObject& GuestMemory::object() const {
    if (!object_) {
        throw SystemError(EINVAL, "guest RAM is plain memory, not a vmfork object");
    }
    return *object_;
}

std::byte* GuestMemory::at(std::uint64_t gpa, std::uint64_t len) const {
    if (gpa <= low_size() && len <= low_size() - gpa) {
        return base_ + gpa;
    }
    if (gpa >= high_ram_base && gpa - high_ram_base <= high_size() &&
        len <= high_size() - (gpa - high_ram_base)) {
        return base_ + low_size() + (gpa - high_ram_base);
    }
    throw std::out_of_range("guest-physical range " + std::to_string(gpa) + "+" +
                            std::to_string(len) + " is outside guest RAM");
}

} // namespace vmfork
