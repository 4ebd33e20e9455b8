// SPDX-License-Identifier: GPL-2.0
#include <gtest/gtest.h>

#include "vmfork/vmm/guests/builtin/report_verifier.h"

namespace vmfork {
namespace {

std::uint64_t checksum_at(std::uint64_t cpu, std::uint64_t step) {
    return ReportVerifier::advance(vmfork_guest_seed(cpu), 0, step);
}

// The report a correct guest makes on cpu at step.
vmfork_guest_slot report(std::uint64_t cpu, std::uint64_t step, CloneIdentity id, std::uint64_t tsc,
                         std::uint64_t changes = 0) {
    vmfork_guest_slot r{};
    r.cpu = cpu;
    r.step = step;
    r.checksum = checksum_at(cpu, step);
    r.xmm = step * VMFORK_GUEST_XMM_INC;
    r.tsc = tsc;
    r.apic_ldr = vmfork_guest_apic_ldr(cpu);
    r.dr0 = vmfork_guest_dr0(cpu);
    r.lstar = vmfork_guest_lstar(cpu);
    r.generation = id.generation;
    r.id = id.id;
    r.identity_changes = changes;
    return r;
}

constexpr CloneIdentity boot_id{0, 7};
constexpr CloneIdentity clone_id{1, 8};

TEST(ReportVerifier, ABootedGuestThatComputesCorrectlyPasses) {
    ReportVerifier v(2, boot_id);
    for (std::uint64_t s = 100; s <= 500; s += 100) {
        v.check(report(0, s, boot_id, s));
        v.check(report(1, s, boot_id, s));
    }
    const auto sum = v.summary();
    EXPECT_EQ(sum.reports, 10U);
    EXPECT_EQ(sum.own, 10U);
    EXPECT_EQ(sum.failures, 0U) << (sum.errors.empty() ? "" : sum.errors[0]);
    EXPECT_EQ(sum.positions[1].step, 500U);
    EXPECT_EQ(sum.positions[1].checksum, checksum_at(1, 500));
}

TEST(ReportVerifier, EachKindOfWrongValueIsOneFailure) {
    struct Case {
        const char* what;
        void (*spoil)(vmfork_guest_slot&);
    };
    const Case cases[] = {
        {"checksum", [](vmfork_guest_slot& r) { r.checksum ^= 1; }},
        {"xmm15", [](vmfork_guest_slot& r) { r.xmm = 0; }},
        {"LAPIC LDR", [](vmfork_guest_slot& r) { r.apic_ldr = 0; }},
        {"DR0", [](vmfork_guest_slot& r) { r.dr0 = 0; }},
        {"LSTAR", [](vmfork_guest_slot& r) { r.lstar = 0; }},
        {"generation", [](vmfork_guest_slot& r) { r.generation = 3; }},
        {"id", [](vmfork_guest_slot& r) { r.id = 99; }},
        {"tsc", [](vmfork_guest_slot& r) { r.tsc = 1; }},
    };
    for (const auto& c : cases) {
        SCOPED_TRACE(c.what);
        ReportVerifier v(1, boot_id);
        v.check(report(0, 100, boot_id, 1000));
        auto bad = report(0, 200, boot_id, 2000);
        c.spoil(bad);
        v.check(bad);
        const auto sum = v.summary();
        EXPECT_EQ(sum.failures, 1U);
        ASSERT_EQ(sum.errors.size(), 1U);
        EXPECT_NE(sum.errors[0].find("step 200"), std::string::npos) << sum.errors[0];
    }
}

TEST(ReportVerifier, AStepGoingBackOrAnUnknownCpuFails) {
    ReportVerifier v(1, boot_id);
    v.check(report(0, 200, boot_id, 10));
    v.check(report(0, 100, boot_id, 20));
    v.check(report(3, 300, boot_id, 30));
    const auto sum = v.summary();
    EXPECT_EQ(sum.failures, 2U);
}

TEST(ReportVerifier, ACloneIsCheckedFromItsParentThroughTheForkTimeRam) {
    const std::vector<GuestPosition> parent{{100, checksum_at(0, 100), 50}};
    const std::vector<std::uint64_t> tsc{500};
    const std::vector<vmfork_guest_slot> ram{report(0, 150, boot_id, 0)};
    ReportVerifier v(parent, ram, tsc, clone_id);
    // The iteration running at the fork began in the parent: its identity and TSC are
    // the parent's, and that is right.
    v.check(report(0, 151, boot_id, 400));
    v.check(report(0, 200, clone_id, 600, 1));
    v.check(report(0, 300, clone_id, 700, 1));
    auto sum = v.summary();
    EXPECT_EQ(sum.failures, 0U) << (sum.errors.empty() ? "" : sum.errors[0]);
    EXPECT_EQ(sum.own, 2U);

    // Rewind (a reset): the clone replays from the fork point.
    v.rewind();
    v.check(report(0, 200, clone_id, 600, 1));
    sum = v.summary();
    EXPECT_EQ(sum.failures, 0U) << (sum.errors.empty() ? "" : sum.errors[0]);
}

TEST(ReportVerifier, ACloneMustSeeItsIdentityAndNotReplayTheParent) {
    const std::vector<GuestPosition> parent{{100, checksum_at(0, 100), 0}};
    const std::vector<vmfork_guest_slot> ram{report(0, 150, boot_id, 0)};
    {
        ReportVerifier v(parent, ram, {}, clone_id);
        v.check(report(0, 200, boot_id, 1, 1)); // the parent's identity in an own report
        EXPECT_EQ(v.summary().failures, 1U);
    }
    {
        ReportVerifier v(parent, ram, {}, clone_id);
        v.check(report(0, 200, clone_id, 1, 0)); // never noticed the change
        EXPECT_EQ(v.summary().failures, 1U);
    }
    {
        ReportVerifier v(parent, ram, {}, clone_id);
        v.check(report(0, 120, clone_id, 1, 1)); // before the fork point: a replay
        EXPECT_EQ(v.summary().failures, 1U);
    }
}

TEST(ReportVerifier, ForkTimeRamIsCheckedAgainstTheParent) {
    const std::vector<GuestPosition> parent{{100, checksum_at(0, 100), 0}};
    // Paused between the checksum store and the step store: step k - 1, checksum(k).
    auto torn = report(0, 150, boot_id, 0);
    torn.checksum = checksum_at(0, 151);
    ReportVerifier ok(parent, {torn}, {}, clone_id);
    EXPECT_EQ(ok.summary().failures, 0U);
    EXPECT_EQ(ok.summary().positions[0].step, 151U);

    auto wrong = report(0, 150, boot_id, 0);
    wrong.checksum ^= 0x10;
    EXPECT_EQ(ReportVerifier(parent, {wrong}, {}, clone_id).summary().failures, 1U);
    auto before = report(0, 50, boot_id, 0);
    EXPECT_EQ(ReportVerifier(parent, {before}, {}, clone_id).summary().failures, 1U);
}

TEST(ReportVerifier, EachNewWrongPageTheGuestFindsIsAFailure) {
    ReportVerifier v(2, boot_id);
    auto r = report(0, 100, boot_id, 1);
    r.fill_checked = 64;
    v.check(r);
    EXPECT_EQ(v.summary().failures, 0U);
    EXPECT_EQ(v.summary().ram_checked, 64U);
    r = report(0, 200, boot_id, 2);
    r.fill_checked = 128;
    r.fill_errors = 1;
    r.fill_first_bad = 0x345000;
    v.check(r);
    auto sum = v.summary();
    ASSERT_EQ(sum.failures, 1U);
    EXPECT_NE(sum.errors[0].find("0x345000"), std::string::npos) << sum.errors[0];
    r = report(0, 300, boot_id, 3);
    r.fill_errors = 1; // the same page, still counted in the guest
    v.check(r);
    auto other = report(1, 300, boot_id, 3);
    other.fill_errors = 5; // only vCPU 0 checks RAM: other slots carry nothing
    v.check(other);
    EXPECT_EQ(v.summary().failures, 1U);
    r = report(0, 400, boot_id, 4);
    r.fill_errors = 3;
    v.check(r);
    EXPECT_EQ(v.summary().failures, 2U);
}

} // namespace
} // namespace vmfork
