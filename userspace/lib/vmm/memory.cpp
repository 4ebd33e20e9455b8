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
    vm.set_user_memory_region(0, 0, size(), base_);
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
    if (gpa > size() || len > size() - gpa) {
        throw std::out_of_range("guest-physical range " + std::to_string(gpa) + "+" +
                                std::to_string(len) + " is outside guest RAM");
    }
    return base_ + gpa;
}

} // namespace vmfork
