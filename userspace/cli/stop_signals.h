// SPDX-License-Identifier: GPL-2.0
#pragma once

#include <cerrno>
#include <chrono>
#include <csignal>
#include <ctime>
#include <sys/signalfd.h>

#include "vmfork/system_error.h"
#include "vmfork/unique_fd.h"

namespace vmfork::cli {

// Blocks SIGINT and SIGTERM for the life of the object, so that a loop receives them
// with wait() as its sleep, or polls fd() beside its own: a Ctrl-C ends it cleanly.
class StopSignals {
public:
    StopSignals() {
        sigemptyset(&set_);
        sigaddset(&set_, SIGINT);
        sigaddset(&set_, SIGTERM);
        pthread_sigmask(SIG_BLOCK, &set_, &old_);
    }
    ~StopSignals() { pthread_sigmask(SIG_SETMASK, &old_, nullptr); }
    StopSignals(const StopSignals&) = delete;
    StopSignals& operator=(const StopSignals&) = delete;
    StopSignals(StopSignals&&) = delete;
    StopSignals& operator=(StopSignals&&) = delete;

    // Sleeps up to d; true if a stop signal came.
    [[nodiscard]] bool wait(std::chrono::milliseconds d) const {
        const timespec ts{static_cast<time_t>(d.count() / 1000),
                          static_cast<long>(d.count() % 1000) * 1000000};
        return sigtimedwait(&set_, nullptr, &ts) > 0;
    }

    // A signalfd that becomes readable when a stop signal is pending.
    [[nodiscard]] int fd() {
        if (!fd_) {
            fd_.reset(signalfd(-1, &set_, SFD_CLOEXEC | SFD_NONBLOCK));
            if (!fd_) {
                throw SystemError::from_errno("signalfd for SIGINT and SIGTERM");
            }
        }
        return fd_.get();
    }

private:
    sigset_t set_{};
    sigset_t old_{};
    UniqueFd fd_;
};

} // namespace vmfork::cli
