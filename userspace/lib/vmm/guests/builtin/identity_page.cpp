// SPDX-License-Identifier: GPL-2.0
#include "vmfork/vmm/guests/builtin/identity_page.h"

#include <cstddef>
#include <cstdint>

#include "guest_abi.h"
#include "vmfork/vmm/memory.h"

namespace vmfork {

void IdentityPage::write(const CloneIdentity& identity) const {
    memory_.write(VMFORK_GUEST_IDENTITY + offsetof(vmfork_guest_identity, id), identity.id);
    __atomic_thread_fence(__ATOMIC_RELEASE);
    memory_.write(VMFORK_GUEST_IDENTITY + offsetof(vmfork_guest_identity, generation),
                  identity.generation);
}

CloneIdentity IdentityPage::read() const {
    return {
        memory_.read<std::uint64_t>(VMFORK_GUEST_IDENTITY +
                                    offsetof(vmfork_guest_identity, generation)),
        memory_.read<std::uint64_t>(VMFORK_GUEST_IDENTITY + offsetof(vmfork_guest_identity, id))};
}

} // namespace vmfork
