// SPDX-License-Identifier: GPL-2.0
#pragma once

#include <cstddef>
#include <span>

namespace vmfork {

// Fills out with bytes from the kernel's CRNG (getrandom(2), blocking until it is
// seeded), retrying short reads and EINTR. Throws SystemError naming what the bytes
// were for.
void random_bytes(std::span<std::byte> out, const char* what);

} // namespace vmfork
