// SPDX-License-Identifier: GPL-2.0
#pragma once

#include <mutex>
#include <vector>

#include "vmfork/vmm/device_state.h"

namespace vmfork::testing {

// An IrqLine that records every level it is given.
class FakeIrqLine : public IrqLine {
public:
    void set_level(bool high) override {
        const std::scoped_lock lock(mutex_);
        levels_.push_back(high);
    }
    // The current level (low if never driven).
    [[nodiscard]] bool high() const {
        const std::scoped_lock lock(mutex_);
        return !levels_.empty() && levels_.back();
    }
    [[nodiscard]] std::vector<bool> levels() const {
        const std::scoped_lock lock(mutex_);
        return levels_;
    }
    void clear() {
        const std::scoped_lock lock(mutex_);
        levels_.clear();
    }

private:
    mutable std::mutex mutex_;
    std::vector<bool> levels_;
};

} // namespace vmfork::testing
