// SPDX-License-Identifier: GPL-2.0
#include "vmfork/vmm/memory.h"

#include <sys/mman.h>

#include "vmfork/kvm.h"

namespace vmfork {

GuestMemory::GuestMemory(MemoryObject object)
    : object_(std::move(object)),
      map_(object_.size(), PROT_READ | PROT_WRITE, MAP_SHARED, object_.fd(), 0,
           "guest memory (vmfork object " + std::to_string(object_.id()) + ")") {}

void GuestMemory::attach(const Vm& vm) const {
    vm.set_user_memory_region(0, 0, size(), map_.get());
}

std::byte* GuestMemory::at(std::uint64_t gpa, std::uint64_t len) const {
    if (gpa > size() || len > size() - gpa) {
        throw std::out_of_range("guest-physical range " + std::to_string(gpa) + "+" +
                                std::to_string(len) + " is outside guest RAM");
    }
    return map_.data() + gpa;
}

} // namespace vmfork
