// SPDX-License-Identifier: GPL-2.0
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <string>

#include "vmfork/mapping.h"
#include "vmfork/memory_object.h"

namespace vmfork {

class Vm;

// Guest RAM: usually one vmfork object, mmap'd MAP_SHARED once, that the guest sees in
// up to two memslots around the 32-bit MMIO hole: [0, low_size()) in slot 0 and, for RAM
// past low_ram_max, [high_ram_base, high_ram_base + high_size()) in slot 1 (object
// offset low_size()). For the baselines of `vmfork bench` also plain memory: an
// anonymous or memfd mapping this owns, or memory the caller keeps mapped (borrow()).
class GuestMemory {
public:
    // RAM below the MMIO hole (3 GiB .. 4 GiB: IOAPIC, LAPIC, device windows).
    static constexpr std::uint64_t low_ram_max = 3ULL << 30;
    // Where RAM past low_ram_max continues.
    static constexpr std::uint64_t high_ram_base = 4ULL << 30;

    // No RAM yet (a machine made ahead of its memory); move RAM in before attach().
    GuestMemory() noexcept = default;
    explicit GuestMemory(MemoryObject object);
    // Plain memory: the whole mapping is guest RAM (a multiple of 4 KiB).
    explicit GuestMemory(Mapping mapping);
    // Plain memory at [addr, addr + size) that the caller keeps mapped for as long as
    // this lives (e.g. the inherited RAM of a fork()ed process).
    static GuestMemory borrow(std::byte* addr, std::uint64_t size) noexcept;

    // KVM_SET_USER_MEMORY_REGION: slot 0 at gpa 0 and, with high RAM, slot 1.
    void attach(const Vm& vm) const;

    [[nodiscard]] std::uint64_t size() const noexcept { return size_; }
    [[nodiscard]] std::uint64_t low_size() const noexcept { return std::min(size_, low_ram_max); }
    [[nodiscard]] std::uint64_t high_size() const noexcept { return size_ - low_size(); }
    [[nodiscard]] bool has_object() const noexcept { return object_.has_value(); }
    // The vmfork object; throws SystemError(EINVAL) for plain memory.
    [[nodiscard]] MemoryObject& object();
    [[nodiscard]] const MemoryObject& object() const;

    // Host pointer to [gpa, gpa + len); throws std::out_of_range unless the range lies
    // in one RAM region.
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
    std::optional<MemoryObject> object_;
    Mapping map_;               // empty when borrowed
    std::byte* base_ = nullptr; // map_.data() or the borrowed address
    std::uint64_t size_ = 0;
};

} // namespace vmfork
