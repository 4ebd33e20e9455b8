// SPDX-License-Identifier: GPL-2.0
#pragma once

#include <vector>

namespace vmfork {

class GuestMemory;
class Vcpu;

// Puts a guest into fresh RAM and sets the vCPUs' initial state (CPUID is already
// set). Each guest profile has its own (guests/builtin/loader.h, boot/linux_loader.h).
class BootLoader {
public:
    BootLoader() = default;
    BootLoader(const BootLoader&) = delete;
    BootLoader& operator=(const BootLoader&) = delete;
    BootLoader(BootLoader&&) = delete;
    BootLoader& operator=(BootLoader&&) = delete;
    virtual ~BootLoader() = default;
    virtual void load(const GuestMemory& memory, const std::vector<const Vcpu*>& vcpus) = 0;
};

} // namespace vmfork
