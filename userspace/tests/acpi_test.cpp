// SPDX-License-Identifier: GPL-2.0
// The ACPI tables (layout, checksums, pointers, what iasl makes of them, agreement of
// the DSDT with platform.h) and the ACPI PM device (poweroff, reset, saved state).
#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <gtest/gtest.h>
#include <stdexcept>
#include <string>
#include <string_view>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

#include "vmfork/vm_state.h"
#include "vmfork/vmm/devices/acpi_pm.h"
#include "vmfork/vmm/devices/acpi_tables.h"
#include "vmfork/vmm/platform.h"

namespace vmfork {
namespace {

using Bytes = std::vector<std::uint8_t>;

std::uint64_t le(const Bytes& b, std::size_t at, unsigned size) {
    if (at + size > b.size()) {
        throw std::out_of_range("read past the tables at " + std::to_string(at));
    }
    std::uint64_t v = 0;
    for (unsigned i = 0; i < size; ++i) {
        v |= static_cast<std::uint64_t>(b[at + i]) << (8 * i);
    }
    return v;
}

std::string str(const Bytes& b, std::size_t at, std::size_t size) {
    return {b.begin() + static_cast<std::ptrdiff_t>(at),
            b.begin() + static_cast<std::ptrdiff_t>(at + size)};
}

std::uint8_t sum(const Bytes& b, std::size_t at, std::size_t size) {
    std::uint8_t s = 0;
    for (std::size_t i = 0; i < size; ++i) {
        s = static_cast<std::uint8_t>(s + b.at(at + i));
    }
    return s;
}

// A table found through a pointer: its offset in the blob and its bytes.
struct Table {
    std::size_t offset = 0;
    Bytes bytes;
};

// The table at guest-physical address addr, after checking its header.
Table table_at(const Bytes& blob, std::uint64_t addr, std::string_view signature) {
    EXPECT_GE(addr, platform::acpi_base);
    EXPECT_EQ(addr % 16, 0U) << signature << " is 16-byte aligned";
    const std::size_t off = addr - platform::acpi_base;
    EXPECT_EQ(str(blob, off, 4), signature);
    const auto length = static_cast<std::size_t>(le(blob, off + 4, 4));
    EXPECT_GE(length, 36U);
    EXPECT_LE(off + length, blob.size()) << signature << " ends inside the tables";
    EXPECT_EQ(sum(blob, off, length), 0) << signature << " checksum";
    EXPECT_EQ(str(blob, off + 10, 6), "VMFORK") << signature << " OEM ID";
    return {off, Bytes(blob.begin() + static_cast<std::ptrdiff_t>(off),
                       blob.begin() + static_cast<std::ptrdiff_t>(off + length))};
}

// Every table of one build, found from the RSDP.
struct Tables {
    Bytes blob;
    Table xsdt, fadt, madt, dsdt;
};

Tables parse(std::uint32_t vcpus) {
    Tables t;
    t.blob = build_acpi_tables({.vcpus = vcpus});
    const Bytes& b = t.blob;
    EXPECT_LE(b.size(), platform::acpi_max_size);
    EXPECT_EQ(str(b, 0, 8), "RSD PTR ");
    EXPECT_EQ(sum(b, 0, 20), 0) << "RSDP checksum (first 20 bytes)";
    EXPECT_EQ(b.at(15), 2) << "RSDP revision";
    EXPECT_EQ(le(b, 16, 4), 0U) << "no RSDT";
    EXPECT_EQ(le(b, 20, 4), 36U) << "RSDP length";
    EXPECT_EQ(sum(b, 0, 36), 0) << "RSDP extended checksum";

    t.xsdt = table_at(b, le(b, 24, 8), "XSDT");
    EXPECT_EQ(t.xsdt.bytes.size(), 36U + 2 * 8) << "the XSDT lists the FADT and the MADT";
    t.fadt = table_at(b, le(t.xsdt.bytes, 36, 8), "FACP");
    t.madt = table_at(b, le(t.xsdt.bytes, 44, 8), "APIC");
    t.dsdt = table_at(b, le(t.fadt.bytes, 140, 8), "DSDT");
    return t;
}

TEST(AcpiTables, PointersLengthsAndChecksums) {
    for (const std::uint32_t n : {1U, 2U, 4U, 64U, 255U, 256U}) {
        SCOPED_TRACE("vcpus " + std::to_string(n));
        const Tables t = parse(n);
        EXPECT_EQ(t.fadt.bytes.size(), 276U);
        const auto dsdt = acpi_dsdt();
        EXPECT_TRUE(std::equal(dsdt.begin(), dsdt.end(), t.dsdt.bytes.begin(), t.dsdt.bytes.end()))
            << "the FADT points to the built-in DSDT";
        // No table overlaps another.
        std::vector<std::pair<std::size_t, std::size_t>> spans = {
            {0, 36},
            {t.xsdt.offset, t.xsdt.bytes.size()},
            {t.fadt.offset, t.fadt.bytes.size()},
            {t.madt.offset, t.madt.bytes.size()},
            {t.dsdt.offset, t.dsdt.bytes.size()}};
        std::sort(spans.begin(), spans.end());
        for (std::size_t i = 1; i < spans.size(); ++i) {
            EXPECT_LE(spans[i - 1].first + spans[i - 1].second, spans[i].first);
        }
    }
}

TEST(AcpiTables, BadVcpuCountsAreErrors) {
    EXPECT_THROW((void)build_acpi_tables({.vcpus = 0}), std::invalid_argument);
    EXPECT_THROW((void)build_acpi_tables({.vcpus = VmState::max_vcpus + 1}), std::invalid_argument);
    EXPECT_NO_THROW((void)build_acpi_tables({.vcpus = VmState::max_vcpus}));
}

// A GAS for an 8-bit I/O register at port.
void expect_io_register(const Bytes& fadt, std::size_t at, std::uint16_t port) {
    EXPECT_EQ(fadt.at(at), 1) << "SystemIO at " << at;
    EXPECT_EQ(fadt.at(at + 1), 8) << "bit width at " << at;
    EXPECT_EQ(fadt.at(at + 2), 0) << "bit offset at " << at;
    EXPECT_EQ(fadt.at(at + 3), 1) << "byte access at " << at;
    EXPECT_EQ(le(fadt, at + 4, 8), port) << "port at " << at;
}

TEST(AcpiTables, FadtIsHardwareReduced) {
    const Bytes f = parse(2).fadt.bytes;
    EXPECT_EQ(f.at(8), 6) << "FADT revision";
    EXPECT_EQ(f.at(131), 4) << "FADT minor revision";
    const auto flags = static_cast<std::uint32_t>(le(f, 112, 4));
    EXPECT_TRUE(flags & (1U << 20)) << "HW_REDUCED_ACPI";
    EXPECT_TRUE(flags & (1U << 10)) << "RESET_REG_SUP";
    const auto iapc = static_cast<std::uint16_t>(le(f, 109, 2));
    EXPECT_TRUE(iapc & (1U << 1)) << "8042 present";
    EXPECT_TRUE(iapc & (1U << 2)) << "VGA not present";
    EXPECT_FALSE(iapc & (1U << 3)) << "MSI allowed";
    EXPECT_TRUE(iapc & (1U << 5)) << "CMOS RTC not present";
    EXPECT_EQ(le(f, 36, 4), 0U) << "no FACS";
    EXPECT_EQ(le(f, 40, 4), 0U) << "32-bit DSDT pointer unused";
    EXPECT_EQ(le(f, 46, 2), 0U) << "no SCI";
    EXPECT_EQ(le(f, 132, 8), 0U) << "no X_FACS";
    expect_io_register(f, 116, platform::acpi_reset_port);
    EXPECT_EQ(f.at(128), platform::acpi_reset_value);
    expect_io_register(f, 244, platform::acpi_sleep_control_port);
    expect_io_register(f, 256, platform::acpi_sleep_status_port);
    for (std::size_t at = 56; at < 88; ++at) {
        EXPECT_EQ(f.at(at), 0) << "no fixed-hardware register block, byte " << at;
    }
    for (std::size_t at = 148; at < 244; ++at) {
        EXPECT_EQ(f.at(at), 0) << "no extended fixed-hardware register block, byte " << at;
    }
}

TEST(AcpiTables, MadtHasOneLocalApicPerVcpu) {
    for (const std::uint32_t n : {1U, 3U, 254U, 255U, 256U}) {
        SCOPED_TRACE("vcpus " + std::to_string(n));
        const Bytes m = parse(n).madt.bytes;
        EXPECT_EQ(le(m, 36, 4), platform::lapic_addr);
        EXPECT_EQ(le(m, 40, 4), 0U) << "no PCAT_COMPAT";
        std::vector<std::uint32_t> ids;
        unsigned ioapics = 0, others = 0;
        std::size_t at = 44;
        while (at < m.size()) {
            const std::uint8_t type = m.at(at), len = m.at(at + 1);
            ASSERT_GE(len, 2) << "entry at " << at;
            ASSERT_LE(at + len, m.size()) << "entry at " << at;
            if (type == 0) {
                ASSERT_EQ(len, 8);
                EXPECT_EQ(m.at(at + 2), m.at(at + 3)) << "UID = APIC ID";
                EXPECT_EQ(le(m, at + 4, 4), 1U) << "enabled";
                EXPECT_LT(m.at(at + 3), 0xff) << "not the broadcast ID";
                ids.push_back(m.at(at + 3));
            } else if (type == 9) {
                ASSERT_EQ(len, 16);
                EXPECT_EQ(le(m, at + 4, 4), le(m, at + 12, 4)) << "UID = x2APIC ID";
                EXPECT_EQ(le(m, at + 8, 4), 1U) << "enabled";
                EXPECT_GE(le(m, at + 4, 4), 0xffU) << "x2APIC entries only past the xAPIC IDs";
                ids.push_back(static_cast<std::uint32_t>(le(m, at + 4, 4)));
            } else if (type == 1) {
                ASSERT_EQ(len, 12);
                ++ioapics;
                EXPECT_EQ(m.at(at + 2), platform::ioapic_id);
                EXPECT_EQ(le(m, at + 4, 4), platform::ioapic_addr);
                EXPECT_EQ(le(m, at + 8, 4), platform::ioapic_gsi_base);
            } else {
                ++others;
            }
            at += len;
        }
        EXPECT_EQ(at, m.size()) << "the entries fill the MADT";
        EXPECT_EQ(ioapics, 1U);
        EXPECT_EQ(others, 0U) << "no overrides (KVM routes GSI n to pin n)";
        ASSERT_EQ(ids.size(), n);
        for (std::uint32_t i = 0; i < n; ++i) {
            EXPECT_EQ(ids[i], i);
        }
    }
}

bool contains(std::span<const std::uint8_t> hay, const Bytes& needle) {
    return std::search(hay.begin(), hay.end(), needle.begin(), needle.end()) != hay.end();
}

void append_le(Bytes& b, std::uint64_t v, unsigned size) {
    for (unsigned i = 0; i < size; ++i) {
        b.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
    }
}

// An ISA IRQ descriptor without flags: IRQ gsi.
Bytes irq_no_flags(std::uint32_t gsi) {
    Bytes b = {0x22};
    append_le(b, 1U << gsi, 2);
    return b;
}

// An I/O port descriptor: a fixed range of len ports (16-bit decode).
Bytes io(std::uint16_t port, std::uint8_t len) {
    Bytes b = {0x47, 0x01};
    append_le(b, port, 2);
    append_le(b, port, 2);
    b.push_back(0); // alignment
    b.push_back(len);
    return b;
}

// An extended interrupt descriptor: one GSI, consumer, exclusive, active high.
Bytes interrupt(std::uint32_t gsi, bool edge) {
    Bytes b = {0x89, 0x06, 0x00, static_cast<std::uint8_t>(edge ? 0x03 : 0x01), 0x01};
    append_le(b, gsi, 4);
    return b;
}

// What the DSDT holds is what platform.h says: read from the AML bytes.
TEST(AcpiTables, DsdtAgreesWithPlatform) {
    const auto aml = acpi_dsdt();
    ASSERT_GE(aml.size(), 36U);
    const Bytes dsdt(aml.begin(), aml.end());
    EXPECT_EQ(str(dsdt, 0, 4), "DSDT");
    EXPECT_EQ(le(dsdt, 4, 4), dsdt.size());
    EXPECT_EQ(sum(dsdt, 0, dsdt.size()), 0);

    Bytes com1 = io(platform::com1_port, platform::com1_ports);
    const Bytes com1_irq = irq_no_flags(platform::com1_gsi);
    com1.insert(com1.end(), com1_irq.begin(), com1_irq.end());
    EXPECT_TRUE(contains(aml, com1)) << "COM1's ports and IRQ";

    Bytes kbd = io(platform::i8042_data_port, 1);
    const Bytes cmd = io(platform::i8042_command_port, 1);
    const Bytes kbd_irq = irq_no_flags(platform::i8042_gsi);
    kbd.insert(kbd.end(), cmd.begin(), cmd.end());
    kbd.insert(kbd.end(), kbd_irq.begin(), kbd_irq.end());
    EXPECT_TRUE(contains(aml, kbd)) << "the i8042's ports and IRQ";

    EXPECT_TRUE(contains(aml, interrupt(platform::ged_gsi, true))) << "the GED's GSI";

    for (unsigned i = 0; i < platform::virtio_mmio_slots; ++i) {
        Bytes slot = {0x86, 0x09, 0x00, 0x01}; // Memory32Fixed, read-write
        append_le(slot, platform::virtio_mmio_addr(i), 4);
        append_le(slot, platform::virtio_mmio_slot_size, 4);
        const Bytes irq = interrupt(platform::virtio_mmio_gsi(i), false);
        slot.insert(slot.end(), irq.begin(), irq.end());
        EXPECT_TRUE(contains(aml, slot)) << "virtio-mmio slot " << i;
    }

    Bytes s5 = {'_', 'S', '5', '_', 0x12, 0x07, 0x04, 0x0a, platform::acpi_s5_sleep_type};
    EXPECT_TRUE(contains(aml, s5))
        << "_S5_ = Package {" << int{platform::acpi_s5_sleep_type} << ", ...}";

    Bytes pinf = {'P', 'I', 'N', 'F', 0x00, 0x0c}; // SystemMemory, DWord address
    append_le(pinf, platform::platform_info_addr, 4);
    EXPECT_TRUE(contains(aml, pinf)) << "the platform-info byte's OperationRegion";

    Bytes addr = {'A', 'D', 'D', 'R', 0x12, 0x08, 0x02, 0x0c}; // Package {DWord, Zero}
    append_le(addr, platform::vmgenid_addr, 4);
    addr.push_back(0x00);
    static_assert(platform::vmgenid_addr >> 32 == 0);
    EXPECT_TRUE(contains(aml, addr)) << "VGEN.ADDR = the generation ID's address";
}

// ---- iasl: the tables as ACPICA's disassembler sees them ----------------------------

class TempDir {
public:
    TempDir() {
        std::string templ =
            (std::filesystem::temp_directory_path() / "vmfork-acpi.XXXXXX").string();
        if (!::mkdtemp(templ.data())) {
            throw std::runtime_error("mkdtemp failed");
        }
        path_ = templ;
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    ~TempDir() {
        std::error_code ec;
        std::filesystem::remove_all(path_, ec);
    }
    [[nodiscard]] const std::filesystem::path& path() const { return path_; }

private:
    std::filesystem::path path_;
};

void write_file(const std::filesystem::path& path, const Bytes& bytes) {
    std::ofstream f(path, std::ios::binary);
    f.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
    ASSERT_TRUE(f.good()) << path;
}

std::string read_file(const std::filesystem::path& path) {
    std::ifstream f(path);
    return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

// What iasl -d writes into a disassembly about a bad table (it still exits 0): "Incorrect
// checksum", "**** ACPI table terminates in the middle of a data structure!", "Invalid
// zero length subtable", ...
bool complains(const std::string& dsl) {
    for (const char* s : {"Incorrect", "Invalid", "**** ", "Error", "Warning"}) {
        if (dsl.find(s) != std::string::npos) {
            return true;
        }
    }
    return false;
}

// Runs command in dir; returns its exit status and output (stdout and stderr).
std::pair<int, std::string> run(const std::filesystem::path& dir, const std::string& command) {
    const std::string cmd = "cd '" + dir.string() + "' && " + command + " 2>&1";
    FILE* p = ::popen(cmd.c_str(), "r");
    if (!p) {
        return {-1, "popen failed"};
    }
    std::string out;
    std::array<char, 4096> buf{};
    while (std::fgets(buf.data(), buf.size(), p)) {
        out += buf.data();
    }
    const int status = ::pclose(p);
    return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

// Runs `iasl -d name` in dir.
std::pair<int, std::string> disassemble(const std::filesystem::path& dir, const std::string& name) {
    return run(dir, "'" VMFORK_IASL "' -d " + name);
}

// Every table but the RSDP, which has no table header: iasl 20200925 (bookworm) says
// "Binary file does not contain a valid ACPI table" for any RSDP (PointersLengthsAndChecksums
// checks it).
TEST(AcpiTables, IaslDisassemblesEveryTable) {
    if (::access(VMFORK_IASL, X_OK) != 0) {
        GTEST_SKIP() << "no iasl at " VMFORK_IASL " (apt-get install acpica-tools)";
    }
    const Tables t = parse(4);
    const TempDir dir;
    const std::vector<std::pair<std::string, const Bytes*>> files = {{"xsdt", &t.xsdt.bytes},
                                                                     {"facp", &t.fadt.bytes},
                                                                     {"apic", &t.madt.bytes},
                                                                     {"dsdt", &t.dsdt.bytes}};
    for (const auto& [name, bytes] : files) {
        write_file(dir.path() / (name + ".dat"), *bytes);
        const auto [rc, out] = disassemble(dir.path(), name + ".dat");
        EXPECT_EQ(rc, 0) << name << ":\n" << out;
        EXPECT_EQ(out.find("Error"), std::string::npos) << name << ":\n" << out;
        const std::string dsl = read_file(dir.path() / (name + ".dsl"));
        EXPECT_FALSE(dsl.empty()) << name << ": no disassembly";
        EXPECT_FALSE(complains(dsl)) << name << ":\n" << dsl;
        if (name == "apic") {
            std::size_t lapics = 0;
            for (std::size_t at = dsl.find("Processor Local APIC"); at != std::string::npos;
                 at = dsl.find("Processor Local APIC", at + 1)) {
                ++lapics;
            }
            EXPECT_EQ(lapics, 4U) << dsl;
            EXPECT_NE(dsl.find("I/O APIC"), std::string::npos) << dsl;
        }
        if (name == "facp") {
            for (const char* line :
                 {"Hardware Reduced (V5) : 1", "Reset Register Supported (V2) : 1",
                  "8042 Present on ports 60/64 (V2) : 1", "CMOS RTC Not Present (V5) : 1",
                  "VGA Not Present (V4) : 1", "MSI Not Supported (V4) : 0",
                  "Value to cause reset : 01", "Address : 0000000000000600",
                  "Address : 0000000000000601", "Address : 0000000000000602"}) {
                EXPECT_NE(dsl.find(line), std::string::npos) << line << " in\n" << dsl;
            }
        }
        if (name == "dsdt") {
            for (const char* id : {"VMGENCTR", "ACPI0013", "LNRO0005", "PNP0501", "PNP0303"}) {
                EXPECT_NE(dsl.find(id), std::string::npos) << id << " in\n" << dsl;
            }
        }
    }
}

TEST(AcpiTables, IaslDisassemblesX2apicEntries) {
    if (::access(VMFORK_IASL, X_OK) != 0) {
        GTEST_SKIP() << "no iasl at " VMFORK_IASL " (apt-get install acpica-tools)";
    }
    const Tables t = parse(VmState::max_vcpus);
    const TempDir dir;
    write_file(dir.path() / "apic.dat", t.madt.bytes);
    const auto [rc, out] = disassemble(dir.path(), "apic.dat");
    EXPECT_EQ(rc, 0) << out;
    EXPECT_EQ(out.find("Error"), std::string::npos) << out;
    const std::string dsl = read_file(dir.path() / "apic.dsl");
    EXPECT_NE(dsl.find("[Processor Local x2APIC]"), std::string::npos) << dsl;
    EXPECT_NE(dsl.find("Processor x2Apic ID : 000000FF"), std::string::npos) << dsl;
    EXPECT_FALSE(complains(dsl)) << dsl;
}

// The DSDT run by ACPICA's AML interpreter (the one in Linux) in acpiexec, on a
// hardware-reduced FADT; fill is the value acpiexec gives every byte of an operation
// region (here: the platform-info byte).
std::string acpiexec(const std::string& commands, std::uint8_t fill = 0) {
    const TempDir dir;
    const auto aml = acpi_dsdt();
    write_file(dir.path() / "dsdt.aml", Bytes(aml.begin(), aml.end()));
    const auto [rc, out] =
        run(dir.path(), "timeout 60 '" VMFORK_ACPIEXEC "' -r -fv " + std::to_string(fill) +
                            " -b '" + commands + "' dsdt.aml");
    EXPECT_EQ(rc, 0) << out;
    return out;
}

TEST(AcpiTables, AcpiexecRunsTheDsdt) {
    if (::access(VMFORK_ACPIEXEC, X_OK) != 0) {
        GTEST_SKIP() << "no acpiexec at " VMFORK_ACPIEXEC " (apt-get install acpica-tools)";
    }
    std::string out = acpiexec("evaluate \\_SB.VGEN.ADDR");
    char addr[64];
    std::snprintf(addr, sizeof(addr), "[Integer] = %016llX",
                  static_cast<unsigned long long>(platform::vmgenid_addr));
    EXPECT_NE(out.find("Contains 2 Elements"), std::string::npos) << out;
    EXPECT_NE(out.find(addr), std::string::npos) << out;

    out = acpiexec("evaluate \\_S5_");
    EXPECT_NE(out.find("[Integer] = 0000000000000005"), std::string::npos) << out;

    // The GED's event method, as Linux's evged calls it: with the GSI.
    out = acpiexec("evaluate \\_SB.GED._EVT " + std::to_string(platform::ged_gsi));
    EXPECT_NE(out.find("Notify on [VGEN]"), std::string::npos) << out;
    EXPECT_NE(out.find("Value 0x80"), std::string::npos) << out;
    out = acpiexec("evaluate \\_SB.GED._EVT 3");
    EXPECT_EQ(out.find("Notify"), std::string::npos) << "only the GED's GSI notifies:\n" << out;

    // The virtio-mmio slots are present as the platform-info byte says.
    for (const std::uint8_t present : {0x00, 0x05, 0x80, 0xff}) {
        std::string cmds;
        for (unsigned i = 0; i < platform::virtio_mmio_slots; ++i) {
            cmds += "evaluate \\_SB.VR0" + std::to_string(i) + "._STA;";
        }
        out = acpiexec(cmds, present);
        std::size_t at = 0;
        for (unsigned i = 0; i < platform::virtio_mmio_slots; ++i) {
            at = out.find("[Integer] = ", at);
            ASSERT_NE(at, std::string::npos) << out;
            at += 12;
            const bool on = present & (1U << i);
            EXPECT_EQ(out.substr(at, 16), on ? "000000000000000F" : "0000000000000000")
                << "slot " << i << " with presence byte " << int{present};
        }
    }
}

// ---- the ACPI PM device -------------------------------------------------------------

struct PmFixture : ::testing::Test {
    unsigned poweroffs = 0;
    unsigned resets = 0;
    AcpiPm pm{[this] { ++poweroffs; }, [this] { ++resets; }};

    void out(std::uint16_t port, std::uint8_t v) { pm.pio_out(port, std::array{v}, 0); }
    std::uint8_t in(std::uint16_t port) {
        std::array<std::uint8_t, 1> v{0x5a};
        pm.pio_in(port, v, 0);
        return v[0];
    }
};

constexpr std::uint8_t slp(std::uint8_t type) {
    return static_cast<std::uint8_t>(AcpiPm::slp_en | (type << AcpiPm::slp_typ_shift));
}

TEST_F(PmFixture, LinuxPoweroffSequence) {
    // acpi_hw_extended_sleep(): clear WAK_STS, then SLP_TYP (from _S5_) | SLP_EN.
    out(platform::acpi_sleep_status_port, AcpiPm::wak_sts);
    EXPECT_EQ(poweroffs, 0U);
    out(platform::acpi_sleep_control_port, slp(platform::acpi_s5_sleep_type));
    EXPECT_EQ(poweroffs, 1U);
    EXPECT_EQ(resets, 0U);
    EXPECT_EQ(in(platform::acpi_sleep_status_port), 0) << "no wake from S5";
}

TEST_F(PmFixture, SleepTypeWithoutSlpEnDoesNothing) {
    out(platform::acpi_sleep_control_port, platform::acpi_s5_sleep_type << AcpiPm::slp_typ_shift);
    EXPECT_EQ(poweroffs, 0U);
    EXPECT_EQ(in(platform::acpi_sleep_control_port), 0);
}

TEST_F(PmFixture, OtherSleepStatesWakeAtOnce) {
    out(platform::acpi_sleep_control_port, slp(3));
    EXPECT_EQ(poweroffs, 0U);
    EXPECT_EQ(in(platform::acpi_sleep_status_port), AcpiPm::wak_sts);
    out(platform::acpi_sleep_status_port, 0x00);
    EXPECT_EQ(in(platform::acpi_sleep_status_port), AcpiPm::wak_sts) << "only 1 clears";
    out(platform::acpi_sleep_status_port, AcpiPm::wak_sts);
    EXPECT_EQ(in(platform::acpi_sleep_status_port), 0);
}

TEST_F(PmFixture, ResetRegister) {
    out(platform::acpi_reset_port, 0x02);
    EXPECT_EQ(resets, 0U);
    out(platform::acpi_reset_port, platform::acpi_reset_value);
    EXPECT_EQ(resets, 1U);
    EXPECT_EQ(poweroffs, 0U);
    EXPECT_EQ(in(platform::acpi_reset_port), 0);
}

TEST_F(PmFixture, WideAccessIsOneBytePerPort) {
    pm.pio_out(platform::acpi_sleep_status_port, std::array<std::uint8_t, 2>{0x00, 0x01}, 0);
    EXPECT_EQ(resets, 1U);
    std::array<std::uint8_t, 4> v{};
    pm.pio_in(AcpiPm::base, v, 0);
    EXPECT_EQ(v, (std::array<std::uint8_t, 4>{0, 0, 0, 0xff})) << "past the device: all-ones";
}

TEST_F(PmFixture, SaveRestoreRoundTrip) {
    EXPECT_EQ(pm.section(), "acpi-pm");
    out(platform::acpi_sleep_control_port, slp(1));
    StateWriter w;
    pm.save(w);

    AcpiPm other({}, {});
    StateReader r(w.data(), "acpi-pm");
    other.restore(r);
    std::array<std::uint8_t, 1> v{};
    other.pio_in(platform::acpi_sleep_status_port, v, 0);
    EXPECT_EQ(v[0], AcpiPm::wak_sts);
    // No callbacks: writes that would call them are harmless.
    other.pio_out(platform::acpi_reset_port, std::array{platform::acpi_reset_value}, 0);
}

TEST_F(PmFixture, MalformedStateIsRejected) {
    const std::vector<std::vector<std::uint8_t>> bad = {{}, {0x80, 0x00}, {0x01}, {0x7f}};
    out(platform::acpi_sleep_control_port, slp(1));
    for (const auto& state : bad) {
        StateReader r(state, "acpi-pm");
        EXPECT_THROW(pm.restore(r), std::invalid_argument) << state.size() << " bytes";
        EXPECT_EQ(in(platform::acpi_sleep_status_port), AcpiPm::wak_sts) << "left as it was";
    }
}

} // namespace
} // namespace vmfork
