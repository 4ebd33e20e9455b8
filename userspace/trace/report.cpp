// SPDX-License-Identifier: GPL-2.0
#include "report.h"

#include <algorithm>
#include <array>
#include <ctime>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

namespace vmfork::trace {

namespace {

std::string local_time(const char* format) {
    const std::time_t now = std::time(nullptr);
    std::tm tm{};
    localtime_r(&now, &tm);
    std::array<char, 64> buf{};
    std::strftime(buf.data(), buf.size(), format, &tm);
    return buf.data();
}

double per_second(std::uint64_t n, double seconds) {
    return seconds > 0 ? static_cast<double>(n) / seconds : 0.0;
}

// Objects by COW breaks, most first (ties: lower id first).
std::vector<std::pair<std::uint64_t, std::uint64_t>> by_cow(const Snapshot& s) {
    std::vector<std::pair<std::uint64_t, std::uint64_t>> v(s.cow_by_object.begin(),
                                                           s.cow_by_object.end());
    std::stable_sort(v.begin(), v.end(),
                     [](const auto& a, const auto& b) { return a.second > b.second; });
    return v;
}

void write(std::FILE* out, const std::string& text) {
    std::fwrite(text.data(), 1, text.size(), out);
    std::fflush(out);
}

// On stderr in both formats: stdout carries only the data.
void banner(unsigned interval_s) {
    std::fprintf(stderr,
                 "Tracing vmfork forks, COW breaks and resets, every %u s. Hit Ctrl-C to end.\n",
                 interval_s);
    std::fflush(stderr);
}

class TextReporter : public Reporter {
public:
    TextReporter(std::FILE* out, unsigned top) : out_(out), top_(top) {}

    void started(unsigned interval_s) override { banner(interval_s); }

    void interval(const Snapshot& d, double seconds, bool partial) override {
        const auto& c = d.counters;
        std::string t = fmt::format(
            "\n{}{}  forks {} (live {}, template {})  COW breaks {} ({:.0f}/s)  resets {}  "
            "objects +{} -{}\n",
            local_time("%H:%M:%S"), partial ? fmt::format(" ({:.1f} s)", seconds) : "", d.forks(),
            c.forks_live, c.forks_template, c.cow_breaks, per_second(c.cow_breaks, seconds),
            c.resets, c.creates, c.releases);
        if (!d.cow_by_object.empty()) {
            t += fmt::format("  {:>10} {:>10} {:>10}\n", "OBJECT", "COW/s", "COW");
            const auto objs = by_cow(d);
            for (std::size_t i = 0; i < objs.size() && i < top_; i++) {
                t += fmt::format("  {:>10} {:>10.0f} {:>10}\n", objs[i].first,
                                 per_second(objs[i].second, seconds), objs[i].second);
            }
            if (objs.size() > top_) {
                t += fmt::format("  ({} more objects)\n", objs.size() - top_);
            }
        }
        t += hists(d, false);
        write(out_, t);
    }

    void summary(const Snapshot& s, double seconds, unsigned intervals) override {
        const auto& c = s.counters;
        std::string t =
            fmt::format("\n=== vmfork-trace totals: {:.1f} s, {} intervals ===\n"
                        "forks {} (live {}, template {}), COW breaks {} ({:.0f}/s), resets {} "
                        "(dropped {} pages), objects created {}, released {}\n",
                        seconds, intervals, s.forks(), c.forks_live, c.forks_template, c.cow_breaks,
                        per_second(c.cow_breaks, seconds), c.resets, c.reset_dropped_pages,
                        c.creates, c.releases);
        if (c.cow_unattributed != 0) {
            t += fmt::format("({} COW breaks of objects past the first {} are not listed by "
                             "object)\n",
                             c.cow_unattributed, VMFORK_TRACE_MAX_OBJECTS);
        }
        if (!s.cow_by_object.empty()) {
            t += fmt::format("COW breaks by object (top {} of {}):\n",
                             std::min<std::size_t>(top_, s.cow_by_object.size()),
                             s.cow_by_object.size());
            t += fmt::format("  {:>10} {:>10} {:>10}\n", "OBJECT", "COW/s", "COW");
            const auto objs = by_cow(s);
            for (std::size_t i = 0; i < objs.size() && i < top_; i++) {
                t += fmt::format("  {:>10} {:>10.0f} {:>10}\n", objs[i].first,
                                 per_second(objs[i].second, seconds), objs[i].second);
            }
        }
        t += hists(s, true);
        write(out_, t);
    }

private:
    static std::string hists(const Snapshot& s, bool with_max) {
        std::string t;
        const std::array<std::pair<vmfork_trace_hist_id, const char*>, 3> names{{
            {VMFORK_TRACE_HIST_LIVE_FORK, "live fork"},
            {VMFORK_TRACE_HIST_TEMPLATE_FORK, "template fork"},
            {VMFORK_TRACE_HIST_RESET, "reset"},
        }};
        for (const auto& [id, name] : names) {
            const auto& h = s.hist(id);
            if (h.count() == 0) {
                continue;
            }
            t += fmt::format(
                "{} latency (us): {} samples, mean {:.1f} us, p50 <= {} us, "
                "p99 <= {} us{}\n",
                name, h.count(),
                static_cast<double>(h.sum_ns()) / static_cast<double>(h.count()) / 1000.0,
                h.percentile_us(50), h.percentile_us(99),
                with_max ? fmt::format(", max {:.1f} us", static_cast<double>(h.max_ns()) / 1000.0)
                         : "");
            t += h.render("  ");
        }
        return t;
    }

    std::FILE* out_;
    unsigned top_;
};

class JsonReporter : public Reporter {
public:
    explicit JsonReporter(std::FILE* out) : out_(out) {}

    void started(unsigned interval_s) override { banner(interval_s); }

    void interval(const Snapshot& d, double seconds, bool partial) override {
        auto j = body(d, seconds, false);
        j["type"] = "interval";
        j["partial"] = partial;
        emit(j);
    }

    void summary(const Snapshot& s, double seconds, unsigned intervals) override {
        auto j = body(s, seconds, true);
        j["type"] = "summary";
        j["intervals"] = intervals;
        emit(j);
    }

private:
    static nlohmann::json body(const Snapshot& s, double seconds, bool with_max) {
        const auto& c = s.counters;
        nlohmann::json j;
        j["time"] = local_time("%Y-%m-%dT%H:%M:%S%z");
        j["seconds"] = seconds;
        j["forks"] = s.forks();
        j["forks_live"] = c.forks_live;
        j["forks_template"] = c.forks_template;
        j["cow_breaks"] = c.cow_breaks;
        j["cow_breaks_per_s"] = per_second(c.cow_breaks, seconds);
        j["cow_unattributed"] = c.cow_unattributed;
        j["resets"] = c.resets;
        j["reset_dropped_pages"] = c.reset_dropped_pages;
        j["objects_created"] = c.creates;
        j["objects_released"] = c.releases;
        auto objs = nlohmann::json::array();
        for (const auto& [id, n] : by_cow(s)) {
            objs.push_back({{"id", id}, {"cow_breaks", n}, {"per_s", per_second(n, seconds)}});
        }
        j["cow_by_object"] = std::move(objs);
        j["fork_latency_us"] = {
            {"live", s.hist(VMFORK_TRACE_HIST_LIVE_FORK).to_json(with_max)},
            {"template", s.hist(VMFORK_TRACE_HIST_TEMPLATE_FORK).to_json(with_max)}};
        j["reset_latency_us"] = s.hist(VMFORK_TRACE_HIST_RESET).to_json(with_max);
        return j;
    }

    void emit(const nlohmann::json& j) { write(out_, j.dump() + "\n"); }

    std::FILE* out_;
};

} // namespace

std::unique_ptr<Reporter> Reporter::text(std::FILE* out, unsigned top_objects) {
    return std::make_unique<TextReporter>(out, top_objects);
}

std::unique_ptr<Reporter> Reporter::json(std::FILE* out) {
    return std::make_unique<JsonReporter>(out);
}

} // namespace vmfork::trace
