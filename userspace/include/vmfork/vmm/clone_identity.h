// SPDX-License-Identifier: GPL-2.0
#pragma once

#include <cstdint>

namespace vmfork {

// Who a VM is: generation 0 for a booted VM, its parent's + 1 for a clone; id unique
// per VM (its memory object's id). The guest profile shows it to the guest before the
// vCPUs run (the built-in guest: its identity page; Linux: VMGenID and the vsock CID).
struct CloneIdentity {
    std::uint64_t generation = 0;
    std::uint64_t id = 0;
};

} // namespace vmfork
