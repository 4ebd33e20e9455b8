// SPDX-License-Identifier: GPL-2.0
#include "format_checker.h"

#include <cerrno>
#include <cstddef>
#include <fmt/format.h>
#include <sys/stat.h>

#include "trace_error.h"
#include "vmfork_trace.h"

namespace vmfork::trace {

namespace {

#define VMFORK_FIELD(ctx, member)                                                                  \
    ExpectedField {                                                                                \
#member, offsetof(ctx, member), sizeof(ctx::member)                                        \
    }
#define VMFORK_COMMON_FIELDS(ctx)                                                                  \
    ExpectedField{"common_type", offsetof(ctx, common.common_type),                                \
                  sizeof(vmfork_trace_common::common_type)},                                       \
        ExpectedField {                                                                            \
        "common_pid", offsetof(ctx, common.common_pid), sizeof(vmfork_trace_common::common_pid)    \
    }

} // namespace

const std::vector<ExpectedEvent>& FormatChecker::vmfork_events() {
    static const std::vector<ExpectedEvent> events{
        {"vmfork_create",
         {VMFORK_COMMON_FIELDS(vmfork_trace_create_ctx), VMFORK_FIELD(vmfork_trace_create_ctx, id),
          VMFORK_FIELD(vmfork_trace_create_ctx, size)}},
        {"vmfork_fork",
         {VMFORK_COMMON_FIELDS(vmfork_trace_fork_ctx),
          VMFORK_FIELD(vmfork_trace_fork_ctx, parent_id),
          VMFORK_FIELD(vmfork_trace_fork_ctx, child_id),
          VMFORK_FIELD(vmfork_trace_fork_ctx, resident_pages),
          VMFORK_FIELD(vmfork_trace_fork_ctx, duration_ns),
          VMFORK_FIELD(vmfork_trace_fork_ctx, flags)}},
        {"vmfork_cow",
         {VMFORK_COMMON_FIELDS(vmfork_trace_cow_ctx), VMFORK_FIELD(vmfork_trace_cow_ctx, id),
          VMFORK_FIELD(vmfork_trace_cow_ctx, pgoff)}},
        {"vmfork_reset",
         {VMFORK_COMMON_FIELDS(vmfork_trace_reset_ctx), VMFORK_FIELD(vmfork_trace_reset_ctx, id),
          VMFORK_FIELD(vmfork_trace_reset_ctx, dropped_pages),
          VMFORK_FIELD(vmfork_trace_reset_ctx, duration_ns)}},
        {"vmfork_release",
         {VMFORK_COMMON_FIELDS(vmfork_trace_release_ctx),
          VMFORK_FIELD(vmfork_trace_release_ctx, id),
          VMFORK_FIELD(vmfork_trace_release_ctx, resident_pages),
          VMFORK_FIELD(vmfork_trace_release_ctx, private_pages)}},
    };
    return events;
}

void FormatChecker::check(const std::string& system,
                          const std::vector<ExpectedEvent>& events) const {
    const auto dir = tracefs_.system_dir(system);
    struct stat st {};
    if (::stat(dir.c_str(), &st) != 0) {
        const int err = errno;
        if (err == EACCES) {
            throw TraceError(fmt::format("{}: permission denied", dir.string()),
                             "run vmfork-trace as root", err);
        }
        throw TraceError(fmt::format("the vmfork module is not loaded (no {})", dir.string()),
                         "load the module with insmod kmod/vmfork.ko (or modprobe vmfork)", err);
    }

    std::string problems;
    for (const auto& ev : events) {
        EventFormat format;
        try {
            format = tracefs_.read_format(system, ev.name);
        } catch (const std::exception& e) {
            problems += fmt::format("\n  {}:{}: {}", system, ev.name, e.what());
            continue;
        }
        for (const auto& want : ev.fields) {
            const auto* have = format.field(want.name);
            if (have == nullptr) {
                problems += fmt::format("\n  {}:{}: no field {}", system, ev.name, want.name);
            } else if (have->offset != want.offset || have->size != want.size) {
                problems += fmt::format(
                    "\n  {}:{}: field {} is at offset {} size {}, the BPF program reads "
                    "offset {} size {}",
                    system, ev.name, want.name, have->offset, have->size, want.offset, want.size);
            }
        }
    }
    if (!problems.empty()) {
        throw TraceError(
            fmt::format("the module's trace events do not match what vmfork-trace was built "
                        "for (bpf/vmfork_trace.h):{}",
                        problems),
            "build vmfork-trace from the same tree as the loaded vmfork.ko");
    }
}

} // namespace vmfork::trace
