// SPDX-License-Identifier: GPL-2.0
#include "vmfork/bench/stats.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "vmfork/system_error.h"

namespace vmfork::bench {

double quantile(const std::vector<double>& sorted, double q) {
    if (sorted.size() == 1) {
        return sorted.front();
    }
    const double pos = std::clamp(q, 0.0, 1.0) * static_cast<double>(sorted.size() - 1);
    const auto lo = static_cast<std::size_t>(std::floor(pos));
    const auto hi = std::min(lo + 1, sorted.size() - 1);
    const double frac = pos - static_cast<double>(lo);
    return sorted[lo] + (sorted[hi] - sorted[lo]) * frac;
}

Summary summarize(std::vector<double> values) {
    Summary s;
    if (values.empty()) {
        return s;
    }
    std::sort(values.begin(), values.end());
    s.n = values.size();
    s.min = values.front();
    s.max = values.back();
    s.p10 = quantile(values, 0.1);
    s.median = quantile(values, 0.5);
    s.p90 = quantile(values, 0.9);
    return s;
}

Meminfo Meminfo::parse(std::string_view text) {
    Meminfo m;
    std::istringstream in{std::string(text)};
    std::string line;
    while (std::getline(in, line)) {
        if (line.empty()) {
            continue;
        }
        const auto colon = line.find(':');
        if (colon == std::string::npos || colon == 0) {
            throw std::invalid_argument("meminfo: no 'Name:' in line '" + line + "'");
        }
        std::istringstream fields(line.substr(colon + 1));
        std::uint64_t value = 0;
        std::string unit;
        if (!(fields >> value)) {
            throw std::invalid_argument("meminfo: no value in line '" + line + "'");
        }
        fields >> unit;
        if (unit == "kB") {
            value *= 1024;
        } else if (!unit.empty()) {
            throw std::invalid_argument("meminfo: unknown unit in line '" + line + "'");
        }
        m.bytes_[line.substr(0, colon)] = value;
    }
    return m;
}

Meminfo Meminfo::read(const std::string& path) {
    std::ifstream f(path);
    if (!f) {
        throw SystemError::from_errno("cannot open " + path);
    }
    std::stringstream ss;
    ss << f.rdbuf();
    return parse(ss.str());
}

std::optional<std::uint64_t> Meminfo::find(const std::string& field) const {
    const auto it = bytes_.find(field);
    if (it == bytes_.end()) {
        return std::nullopt;
    }
    return it->second;
}

std::uint64_t Meminfo::bytes(const std::string& field) const {
    const auto v = find(field);
    if (!v) {
        throw std::out_of_range("meminfo has no field " + field);
    }
    return *v;
}

std::uint64_t Meminfo::used() const {
    const std::uint64_t total = bytes("MemTotal");
    const std::uint64_t cached = bytes("Cached");
    const std::uint64_t shmem = find("Shmem").value_or(0);
    const std::uint64_t free_like = bytes("MemFree") + find("Buffers").value_or(0) +
                                    (cached > shmem ? cached - shmem : 0) +
                                    find("SReclaimable").value_or(0);
    return total > free_like ? total - free_like : 0;
}

std::string csv_field(std::string_view s) {
    if (s.find_first_of(",\"\r\n") == std::string_view::npos) {
        return std::string(s);
    }
    std::string out = "\"";
    for (const char c : s) {
        if (c == '"') {
            out += '"';
        }
        out += c;
    }
    out += '"';
    return out;
}

std::string samples_csv(const std::vector<Sample>& samples) {
    std::ostringstream out;
    out << "figure,strategy,mode,size_bytes,x,repeat,value\n";
    out.precision(12);
    for (const auto& s : samples) {
        out << csv_field(s.figure) << ',' << csv_field(s.strategy) << ',' << csv_field(s.mode)
            << ',' << s.size << ',' << s.x << ',' << s.repeat << ',' << s.value << '\n';
    }
    return out.str();
}

nlohmann::json sample_json(const Sample& s) {
    return {
        {"figure", s.figure}, {"strategy", s.strategy}, {"mode", s.mode},  {"size_bytes", s.size},
        {"x", s.x},           {"repeat", s.repeat},     {"value", s.value}};
}

nlohmann::json summary_json(const Summary& s) {
    return {{"n", s.n},           {"min", s.min}, {"p10", s.p10},
            {"median", s.median}, {"p90", s.p90}, {"max", s.max}};
}

std::vector<double> select(const std::vector<Sample>& samples, std::string_view figure,
                           std::string_view strategy, std::string_view mode, std::uint64_t size,
                           std::uint64_t x) {
    std::vector<double> v;
    for (const auto& s : samples) {
        if (s.figure == figure && s.strategy == strategy && s.mode == mode && s.size == size &&
            s.x == x) {
            v.push_back(s.value);
        }
    }
    return v;
}

bool Target::measured() const {
    return std::isfinite(value);
}

bool Target::pass() const {
    return measured() && (at_most ? value <= limit : value >= limit);
}

std::string Target::verdict() const {
    if (!measured()) {
        return "n/a";
    }
    return pass() ? "PASS" : "MISS";
}

namespace {

std::string three_digits(double v, const char* unit) {
    std::array<char, 64> buf{};
    const double a = std::fabs(v);
    const int decimals = a >= 100 ? 0 : a >= 10 ? 1 : 2;
    std::snprintf(buf.data(), buf.size(), "%.*f %s", decimals, v, unit);
    return buf.data();
}

} // namespace

std::string format_us(double us) {
    if (!std::isfinite(us)) {
        return "-";
    }
    const double a = std::fabs(us);
    if (a < 1) {
        return three_digits(us * 1000, "ns");
    }
    if (a < 1000) {
        return three_digits(us, "us");
    }
    if (a < 1e6) {
        return three_digits(us / 1000, "ms");
    }
    return three_digits(us / 1e6, "s");
}

std::string format_bytes(double bytes) {
    if (!std::isfinite(bytes)) {
        return "-";
    }
    const double a = std::fabs(bytes);
    if (a < 1024.0 * 1024) {
        return three_digits(bytes / 1024, "KiB");
    }
    if (a < 1024.0 * 1024 * 1024) {
        return three_digits(bytes / (1024.0 * 1024), "MiB");
    }
    return three_digits(bytes / (1024.0 * 1024 * 1024), "GiB");
}

} // namespace vmfork::bench
