// SPDX-License-Identifier: GPL-2.0
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace vmfork {

// What varies between VMs in the ACPI tables; the rest is the platform
// (vmfork/vmm/platform.h).
struct AcpiConfig {
    // vCPUs, with APIC ID = ACPI processor UID = index: 1..VmState::max_vcpus.
    std::uint32_t vcpus = 1;
};

// The ACPI tables of a hardware-reduced ACPI 6.4 platform, laid out to be copied to
// guest-physical platform::acpi_base (pointers inside are absolute): the RSDP (revision
// 2) first, then the XSDT, the DSDT, the FADT and the MADT, each 16-byte aligned. The
// MADT has a Processor Local APIC entry per vCPU (a Local x2APIC entry from APIC ID 255
// on, whose xAPIC ID would be the broadcast ID), the IOAPIC, and no interrupt source
// overrides: KVM's default routing sends GSI n to IOAPIC pin n, ISA IRQ n included.
// Throws std::invalid_argument on a bad config.
[[nodiscard]] std::vector<std::uint8_t> build_acpi_tables(const AcpiConfig& config);

// The DSDT (lib/vmm/devices/acpi/dsdt.asl, compiled by iasl at build time).
[[nodiscard]] std::span<const std::uint8_t> acpi_dsdt() noexcept;

} // namespace vmfork
