// SPDX-License-Identifier: GPL-2.0
//
// The run-time ACPI tables (RSDP, XSDT, FADT, MADT) around the build-time DSDT. Field
// layouts are the ACPI 6.4 specification's (chapter 5.2); every multi-byte field is
// little-endian and unaligned, so the tables are written byte by byte, never as structs.
#include "vmfork/vmm/devices/acpi_tables.h"

#include <cstddef>
#include <stdexcept>
#include <string>
#include <string_view>

#include "vmfork/vm_state.h"
#include "vmfork/vmm/platform.h"

// From dsdt_blob.S (.incbin of iasl's output).
extern "C" const std::uint8_t vmfork_acpi_dsdt_start[];
extern "C" const std::uint8_t vmfork_acpi_dsdt_end[];

namespace vmfork {

namespace {

constexpr std::string_view oem_id = "VMFORK";
constexpr std::string_view oem_table_id = "VMFORKVM";
constexpr std::uint32_t oem_revision = 1;
constexpr std::string_view creator_id = "VMFK";
constexpr std::uint32_t creator_revision = 1;
constexpr std::size_t header_size = 36;
constexpr std::size_t table_align = 16;

// FADT revision 6, minor 4: ACPI 6.4. MADT revision 5: ACPI 6.2 to 6.4.
constexpr std::uint8_t fadt_revision = 6;
constexpr std::uint8_t fadt_minor_revision = 4;
constexpr std::size_t fadt_size = 276;
constexpr std::uint8_t madt_revision = 5;

// FADT flags.
constexpr std::uint32_t fadt_pwr_button = 1U << 4; // no fixed power button
constexpr std::uint32_t fadt_slp_button = 1U << 5; // no fixed sleep button
constexpr std::uint32_t fadt_reset_reg_sup = 1U << 10;
constexpr std::uint32_t fadt_hw_reduced_acpi = 1U << 20;
// FADT IA-PC boot architecture flags.
constexpr std::uint16_t iapc_8042 = 1U << 1;
constexpr std::uint16_t iapc_vga_not_present = 1U << 2;
constexpr std::uint16_t iapc_cmos_rtc_not_present = 1U << 5;

// MADT structures.
constexpr std::uint8_t madt_local_apic = 0;
constexpr std::uint8_t madt_io_apic = 1;
constexpr std::uint8_t madt_local_x2apic = 9;
constexpr std::uint32_t madt_lapic_enabled = 1;
// An xAPIC ID of 0xff is the broadcast ID: from there on, x2APIC entries.
constexpr std::uint32_t max_xapic_id = 0xfe;

// Generic Address Structure: address space and access size codes.
constexpr std::uint8_t gas_system_io = 1;
constexpr std::uint8_t gas_byte_access = 1;

// A table under construction, appended to the bytes that go to acpi_base.
class Writer {
public:
    explicit Writer(std::vector<std::uint8_t>& out) : out_(out), start_(out.size()) {}

    void u8(std::uint8_t v) { put(v, 1); }
    void u16(std::uint16_t v) { put(v, 2); }
    void u32(std::uint32_t v) { put(v, 4); }
    void u64(std::uint64_t v) { put(v, 8); }
    void zeros(std::size_t n) { out_.insert(out_.end(), n, 0); }
    // A fixed-size character field, space-padded.
    void chars(std::string_view s, std::size_t size) {
        for (std::size_t i = 0; i < size; ++i) {
            out_.push_back(static_cast<std::uint8_t>(i < s.size() ? s[i] : ' '));
        }
    }
    // An 8-bit register in I/O space.
    void io_register(std::uint16_t port) {
        u8(gas_system_io);
        u8(8); // bit width
        u8(0); // bit offset
        u8(gas_byte_access);
        u64(port);
    }
    // The common header of a system description table; finish() fills in the length
    // and checksum.
    void header(std::string_view signature, std::uint8_t revision) {
        chars(signature, 4);
        u32(0); // length
        u8(revision);
        u8(0); // checksum
        chars(oem_id, 6);
        chars(oem_table_id, 8);
        u32(oem_revision);
        chars(creator_id, 4);
        u32(creator_revision);
    }
    [[nodiscard]] std::size_t size() const { return out_.size() - start_; }
    // Sets the length and the checksum in the header: the table's bytes sum to zero.
    void finish() {
        const auto length = static_cast<std::uint32_t>(size());
        for (unsigned i = 0; i < 4; ++i) {
            out_[start_ + 4 + i] = static_cast<std::uint8_t>(length >> (8 * i));
        }
        set_checksum(9, size());
    }
    // Sets byte at so that the first len bytes sum to zero.
    void set_checksum(std::size_t at, std::size_t len) {
        out_[start_ + at] = 0;
        std::uint8_t sum = 0;
        for (std::size_t i = 0; i < len; ++i) {
            sum = static_cast<std::uint8_t>(sum + out_[start_ + i]);
        }
        out_[start_ + at] = static_cast<std::uint8_t>(-sum);
    }

private:
    void put(std::uint64_t v, unsigned size) {
        for (unsigned i = 0; i < size; ++i) {
            out_.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
        }
    }
    std::vector<std::uint8_t>& out_;
    std::size_t start_;
};

constexpr std::size_t align_up(std::size_t n) {
    return (n + table_align - 1) / table_align * table_align;
}

// Where each table goes, as offsets from acpi_base: all sizes are known up front, so
// every table is written once, pointers included.
struct Layout {
    static constexpr std::size_t rsdp_size = 36;
    static constexpr std::size_t xsdt_entries = 2; // FADT, MADT
    std::size_t xsdt = align_up(rsdp_size);
    std::size_t dsdt = align_up(xsdt + header_size + 8 * xsdt_entries);
    std::size_t fadt;
    std::size_t madt;

    explicit Layout(std::size_t dsdt_size)
        : fadt(align_up(dsdt + dsdt_size)), madt(align_up(fadt + fadt_size)) {}
    static std::uint64_t address(std::size_t offset) { return platform::acpi_base + offset; }
};

// Pads out to the next table's offset.
void start_table(std::vector<std::uint8_t>& out, std::size_t offset) {
    if (align_up(out.size()) != offset) {
        throw std::logic_error("ACPI table layout: a table at " + std::to_string(out.size()) +
                               " bytes, expected " + std::to_string(offset));
    }
    out.resize(offset, 0);
}

// RSDP revision 2: only the XSDT (no RSDT).
void write_rsdp(Writer& w, std::uint64_t xsdt) {
    w.chars("RSD PTR ", 8);
    w.u8(0); // checksum of the first 20 bytes
    w.chars(oem_id, 6);
    w.u8(2);  // revision
    w.u32(0); // RSDT address
    w.u32(Layout::rsdp_size);
    w.u64(xsdt);
    w.u8(0); // extended checksum, of all 36 bytes
    w.zeros(3);
    w.set_checksum(8, 20);
    w.set_checksum(32, Layout::rsdp_size);
}

void write_xsdt(Writer& w, const Layout& layout) {
    w.header("XSDT", 1);
    w.u64(Layout::address(layout.fadt));
    w.u64(Layout::address(layout.madt));
    w.finish();
}

void write_fadt(Writer& w, std::uint64_t dsdt) {
    w.header("FACP", fadt_revision);
    w.u32(0);   // FIRMWARE_CTRL: no FACS (hardware-reduced)
    w.u32(0);   // DSDT: X_DSDT instead
    w.u8(0);    // reserved (INT_MODEL in ACPI 1.0)
    w.u8(0);    // Preferred_PM_Profile: unspecified
    w.u16(0);   // SCI_INT: no SCI (hardware-reduced)
    w.u32(0);   // SMI_CMD: no SMM
    w.zeros(4); // ACPI_ENABLE, ACPI_DISABLE, S4BIOS_REQ, PSTATE_CNT
    w.zeros(std::size_t{8} *
            4);    // PM1a/b event, PM1a/b control, PM2 control, PM timer, GPE0/1 blocks
    w.zeros(8);    // their lengths, GPE1_BASE, CST_CNT
    w.u16(0x0fff); // P_LVL2_LAT: > 100, no C2
    w.u16(0x0fff); // P_LVL3_LAT: > 1000, no C3
    w.zeros(4);    // FLUSH_SIZE, FLUSH_STRIDE
    w.zeros(5);    // DUTY_OFFSET, DUTY_WIDTH, DAY_ALRM, MON_ALRM, CENTURY
    // An 8042 (Linux registers it without it, but only through the DSDT), no VGA, MSI
    // allowed, no CMOS RTC (the wall clock is kvmclock).
    w.u16(iapc_8042 | iapc_vga_not_present | iapc_cmos_rtc_not_present);
    w.u8(0); // reserved
    w.u32(fadt_hw_reduced_acpi | fadt_reset_reg_sup | fadt_pwr_button | fadt_slp_button);
    w.io_register(platform::acpi_reset_port); // RESET_REG
    w.u8(platform::acpi_reset_value);
    w.u16(0); // ARM_BOOT_ARCH
    w.u8(fadt_minor_revision);
    w.u64(0);                     // X_FIRMWARE_CTRL
    w.u64(dsdt);                  // X_DSDT
    w.zeros(std::size_t{8} * 12); // X_PM1a/b event, X_PM1a/b control, X_PM2, X_PM_TMR, X_GPE0/1
    w.io_register(platform::acpi_sleep_control_port); // SLEEP_CONTROL_REG
    w.io_register(platform::acpi_sleep_status_port);  // SLEEP_STATUS_REG
    w.chars("VMFORKVM", 8);                           // Hypervisor Vendor Identity
    if (w.size() != fadt_size) {
        throw std::logic_error("FADT layout: " + std::to_string(w.size()) + " bytes");
    }
    w.finish();
}

void write_madt(Writer& w, std::uint32_t vcpus) {
    w.header("APIC", madt_revision);
    w.u32(platform::lapic_addr);
    w.u32(0); // flags: no PCAT_COMPAT (no 8259s for the guest)
    for (std::uint32_t id = 0; id < vcpus; ++id) {
        if (id <= max_xapic_id) {
            w.u8(madt_local_apic);
            w.u8(8);
            w.u8(static_cast<std::uint8_t>(id)); // ACPI processor UID
            w.u8(static_cast<std::uint8_t>(id)); // APIC ID
            w.u32(madt_lapic_enabled);
        } else {
            w.u8(madt_local_x2apic);
            w.u8(16);
            w.u16(0);  // reserved
            w.u32(id); // x2APIC ID
            w.u32(madt_lapic_enabled);
            w.u32(id); // ACPI processor UID
        }
    }
    w.u8(madt_io_apic);
    w.u8(12);
    w.u8(platform::ioapic_id);
    w.u8(0); // reserved
    w.u32(platform::ioapic_addr);
    w.u32(platform::ioapic_gsi_base);
    // No interrupt source overrides. ISA IRQ 0 stays on GSI 0, unlike QEMU's IRQ0 ->
    // GSI 2: QEMU installs its own GSI routing (GSI 0 -> IOAPIC pin 2), KVM's default
    // (arch/x86/kvm/irq_comm.c) sends GSI n to pin n, and the in-kernel PIT raises GSI 0
    // (which a hardware-reduced Linux does not use: it sets up no PIT or HPET timer).
    // An override of IRQ 0 would also be taken for the SCI's, as SCI_INT is 0.
    // The other ISA interrupts (COM1, i8042, GED) are edge/active high, the ISA default;
    // the level-triggered virtio-mmio GSIs (16 and up) are no ISA IRQs and get their
    // trigger mode from their _CRS.
    w.finish();
}

} // namespace

std::span<const std::uint8_t> acpi_dsdt() noexcept {
    return {vmfork_acpi_dsdt_start, vmfork_acpi_dsdt_end};
}

std::vector<std::uint8_t> build_acpi_tables(const AcpiConfig& config) {
    if (config.vcpus < 1 || config.vcpus > VmState::max_vcpus) {
        throw std::invalid_argument("ACPI tables for " + std::to_string(config.vcpus) +
                                    " vCPUs: must be 1 to " + std::to_string(VmState::max_vcpus));
    }
    const std::span<const std::uint8_t> dsdt = acpi_dsdt();
    const Layout layout(dsdt.size());
    std::vector<std::uint8_t> out;

    Writer rsdp(out);
    write_rsdp(rsdp, Layout::address(layout.xsdt));

    start_table(out, layout.xsdt);
    Writer xsdt(out);
    write_xsdt(xsdt, layout);

    start_table(out, layout.dsdt);
    out.insert(out.end(), dsdt.begin(), dsdt.end());

    start_table(out, layout.fadt);
    Writer fadt(out);
    write_fadt(fadt, Layout::address(layout.dsdt));

    start_table(out, layout.madt);
    Writer madt(out);
    write_madt(madt, config.vcpus);

    if (out.size() > platform::acpi_max_size) {
        throw std::logic_error("the ACPI tables take " + std::to_string(out.size()) +
                               " bytes, more than the room at acpi_base");
    }
    return out;
}

} // namespace vmfork
