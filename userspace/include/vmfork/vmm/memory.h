// SPDX-License-Identifier: GPL-2.0
#pragma once

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

#include "vmfork/mapping.h"
#include "vmfork/memory_object.h"

namespace vmfork {

class Vm;

// Guest RAM: one vmfork object, mmap'd MAP_SHARED, at guest-physical 0 in memslot 0.
class GuestMemory {
public:
    explicit GuestMemory(MemoryObject object);

    // KVM_SET_USER_MEMORY_REGION: slot 0, gpa 0, the whole object.
    void attach(const Vm& vm) const;

    [[nodiscard]] std::uint64_t size() const noexcept { return object_.size(); }
    [[nodiscard]] MemoryObject& object() noexcept { return object_; }
    [[nodiscard]] const MemoryObject& object() const noexcept { return object_; }

    // Host pointer to [gpa, gpa + len); throws std::out_of_range outside RAM.
    [[nodiscard]] std::byte* at(std::uint64_t gpa, std::uint64_t len) const;
    template <typename T> [[nodiscard]] T read(std::uint64_t gpa) const {
        T v{};
        std::memcpy(&v, at(gpa, sizeof(T)), sizeof(T));
        return v;
    }
    template <typename T> void write(std::uint64_t gpa, const T& v) const {
        std::memcpy(at(gpa, sizeof(T)), &v, sizeof(T));
    }

private:
    MemoryObject object_;
    Mapping map_;
};

} // namespace vmfork
