// SPDX-License-Identifier: GPL-2.0
#pragma once

#include "vmfork/vmm/clone_identity.h"

namespace vmfork {

class GuestMemory;

// The built-in guest's identity page (VMFORK_GUEST_IDENTITY, guest_abi.h): the clone
// identity in guest RAM, which the guest reads on every step and which it takes a new
// generation in as the sign that it is a clone now.
class IdentityPage {
public:
    explicit IdentityPage(GuestMemory& memory) : memory_(memory) {}
    // id first, generation last: the guest takes a new generation as the signal.
    void write(const CloneIdentity& identity) const;
    [[nodiscard]] CloneIdentity read() const;

private:
    GuestMemory& memory_;
};

} // namespace vmfork
