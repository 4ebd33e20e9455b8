// SPDX-License-Identifier: GPL-2.0
#pragma once

#include <cstdio>
#include <memory>

#include "snapshot.h"

namespace vmfork::trace {

// How vmfork-trace prints: a line (text) or an object (JSON) per interval, then the
// totals. Every call writes complete lines and flushes.
class Reporter {
public:
    virtual ~Reporter() = default;
    // Once everything is attached: a banner on stderr ("... Hit Ctrl-C to end.").
    virtual void started(unsigned interval_s) = 0;
    // One interval: delta holds its events; seconds its length; partial when it was
    // cut short by Ctrl-C.
    virtual void interval(const Snapshot& delta, double seconds, bool partial) = 0;
    // The totals since the start.
    virtual void summary(const Snapshot& total, double seconds, unsigned intervals) = 0;

    // Text for a terminal (top_objects: objects listed per interval, by COW rate).
    static std::unique_ptr<Reporter> text(std::FILE* out, unsigned top_objects);
    // One JSON object per line: {"type":"interval",...} and {"type":"summary",...}.
    static std::unique_ptr<Reporter> json(std::FILE* out);
};

} // namespace vmfork::trace
