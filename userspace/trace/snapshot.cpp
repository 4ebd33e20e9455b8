// SPDX-License-Identifier: GPL-2.0
#include "snapshot.h"

namespace vmfork::trace {

Snapshot Snapshot::since(const Snapshot& earlier) const {
    Snapshot d;
    d.at = at;
    const auto& a = counters;
    const auto& b = earlier.counters;
    d.counters.creates = a.creates - b.creates;
    d.counters.forks_live = a.forks_live - b.forks_live;
    d.counters.forks_template = a.forks_template - b.forks_template;
    d.counters.cow_breaks = a.cow_breaks - b.cow_breaks;
    d.counters.resets = a.resets - b.resets;
    d.counters.reset_dropped_pages = a.reset_dropped_pages - b.reset_dropped_pages;
    d.counters.releases = a.releases - b.releases;
    d.counters.cow_unattributed = a.cow_unattributed - b.cow_unattributed;
    for (std::size_t i = 0; i < hists.size(); i++) {
        d.hists[i] = hists[i].since(earlier.hists[i]);
    }
    for (const auto& [id, n] : cow_by_object) {
        const auto it = earlier.cow_by_object.find(id);
        const auto before = it == earlier.cow_by_object.end() ? 0 : it->second;
        if (n > before) {
            d.cow_by_object.emplace(id, n - before);
        }
    }
    return d;
}

} // namespace vmfork::trace
