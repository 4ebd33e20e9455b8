// SPDX-License-Identifier: GPL-2.0
#pragma once

#include <cstdint>

// The fixed facts of the x86 machine every vmfork VM is: where the firmware tables,
// interrupt controllers and devices are. The ACPI tables describe exactly this (the
// DSDT, lib/vmm/devices/acpi/dsdt.asl, repeats the numbers; the unit tests check that
// the two agree).
namespace vmfork::platform {

// e820 reserved range below 1 MiB (EBDA and BIOS area); the ACPI tables live in it.
inline constexpr std::uint64_t bios_reserved_start = 0x9fc00;
// One past the end of the reserved BIOS range.
inline constexpr std::uint64_t bios_reserved_end = 0x100000;

// The RSDP, followed by the other ACPI tables (boot_params.acpi_rsdp_addr).
inline constexpr std::uint64_t acpi_base = 0xe0000;
// Room for the tables from acpi_base: up to the generation page.
inline constexpr std::uint64_t acpi_max_size = 0x10000;

// The generation page (4 KiB, no ACPI table in it): VMGenID's ID at its start.
inline constexpr std::uint64_t genid_page = 0xf0000;
// Size of the generation page.
inline constexpr std::uint64_t genid_page_size = 0x1000;
// The 16-byte VM generation ID (the DSDT's VGEN.ADDR).
inline constexpr std::uint64_t vmgenid_addr = genid_page;
// Size of the VM generation ID.
inline constexpr std::uint64_t vmgenid_size = 16;
// The platform-info byte: bit i set = virtio-mmio slot i has a device (its _STA).
inline constexpr std::uint64_t platform_info_addr = genid_page + 0x100;

// The in-kernel IOAPIC (KVM's): its MMIO base.
inline constexpr std::uint32_t ioapic_addr = 0xfec00000;
// The IOAPIC's ID.
inline constexpr std::uint8_t ioapic_id = 0;
// The first GSI of the IOAPIC.
inline constexpr std::uint32_t ioapic_gsi_base = 0;
// IOAPIC pins: GSIs 0..23 (KVM's default routing maps GSI n to pin n).
inline constexpr std::uint32_t ioapic_pins = 24;
// The local APICs' MMIO base.
inline constexpr std::uint32_t lapic_addr = 0xfee00000;

// COM1, a 16550A: its first I/O port.
inline constexpr std::uint16_t com1_port = 0x3f8;
// COM1's I/O ports (0x3f8-0x3ff).
inline constexpr std::uint16_t com1_ports = 8;
// COM1's interrupt (edge, active high).
inline constexpr std::uint32_t com1_gsi = 4;

// The i8042's data port.
inline constexpr std::uint16_t i8042_data_port = 0x60;
// The i8042's command/status port.
inline constexpr std::uint16_t i8042_command_port = 0x64;
// The i8042's keyboard interrupt (edge, active high).
inline constexpr std::uint32_t i8042_gsi = 1;

// The ACPI Generic Event Device's interrupt (edge, active high): notifies VMGenID.
inline constexpr std::uint32_t ged_gsi = 10;

// The ACPI PM device (hardware-reduced sleep and reset registers): its first port.
inline constexpr std::uint16_t acpi_pm_port = 0x600;
// The ACPI PM device's I/O ports.
inline constexpr std::uint16_t acpi_pm_ports = 3;
// FADT SLEEP_CONTROL_REG (8 bits): SLP_TYP in bits 2-4, SLP_EN bit 5.
inline constexpr std::uint16_t acpi_sleep_control_port = 0x600;
// FADT SLEEP_STATUS_REG (8 bits): WAK_STS bit 7, write 1 to clear.
inline constexpr std::uint16_t acpi_sleep_status_port = 0x601;
// FADT RESET_REG (8 bits).
inline constexpr std::uint16_t acpi_reset_port = 0x602;
// FADT RESET_VALUE: writing it to the reset register resets the VM.
inline constexpr std::uint8_t acpi_reset_value = 0x01;
// The SLP_TYP of S5 (soft off), as the DSDT's _S5_ package says.
inline constexpr std::uint8_t acpi_s5_sleep_type = 5;

// The virtio-mmio window: slot 0's registers.
inline constexpr std::uint64_t virtio_mmio_base = 0xd0000000;
// Size of one virtio-mmio slot.
inline constexpr std::uint64_t virtio_mmio_slot_size = 0x1000;
// virtio-mmio slots in the DSDT (and bits of the platform-info byte).
inline constexpr unsigned virtio_mmio_slots = 8;
// The slot of the network device (virtio-net); disks have slots 1 to net_slot - 1.
inline constexpr unsigned net_slot = 7;
// Slot 0's interrupt; slot i is on virtio_mmio_gsi_base + i (level, active high).
inline constexpr std::uint32_t virtio_mmio_gsi_base = 16;

// The registers of virtio-mmio slot i.
constexpr std::uint64_t virtio_mmio_addr(unsigned slot) {
    return virtio_mmio_base + slot * virtio_mmio_slot_size;
}

// The interrupt of virtio-mmio slot i.
constexpr std::uint32_t virtio_mmio_gsi(unsigned slot) {
    return virtio_mmio_gsi_base + slot;
}

static_assert(acpi_base + acpi_max_size <= genid_page, "the ACPI tables overlap the genid page");
static_assert(genid_page >= bios_reserved_start &&
                  genid_page + genid_page_size <= bios_reserved_end,
              "the generation page must be reserved (not e820 RAM)");
static_assert(platform_info_addr + 1 <= genid_page + genid_page_size &&
                  platform_info_addr >= vmgenid_addr + vmgenid_size,
              "the platform-info byte is in the generation page, after the ID");
static_assert(virtio_mmio_gsi(virtio_mmio_slots - 1) < ioapic_gsi_base + ioapic_pins,
              "every virtio-mmio slot has an IOAPIC pin");

} // namespace vmfork::platform
