// SPDX-License-Identifier: GPL-2.0
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "tracefs.h"

namespace vmfork::trace {

// A field as the BPF program reads it: at this offset, of this size.
struct ExpectedField {
    std::string name;
    std::size_t offset;
    std::size_t size;
};

struct ExpectedEvent {
    std::string name;
    std::vector<ExpectedField> fields;
};

// Checks that the layout the BPF programs assume (bpf/vmfork_trace.h) is the layout
// of the module's events in tracefs, before anything is loaded: the programs read
// their context at fixed offsets (no BTF), so a module with other events would be
// misread silently.
class FormatChecker {
public:
    explicit FormatChecker(const Tracefs& tracefs) : tracefs_(tracefs) {}

    // The events of vmfork_trace.bpf.c and the fields it relies on, from the
    // offsetof/sizeof of the context structs in bpf/vmfork_trace.h.
    static const std::vector<ExpectedEvent>& vmfork_events();

    // Throws TraceError when the module's events are missing (module not loaded)
    // or any field differs; the message lists every difference.
    void check(const std::string& system, const std::vector<ExpectedEvent>& events) const;

private:
    const Tracefs& tracefs_;
};

} // namespace vmfork::trace
