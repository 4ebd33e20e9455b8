// SPDX-License-Identifier: GPL-2.0
#include "tracefs.h"

#include <cerrno>
#include <charconv>
#include <cstring>
#include <fmt/format.h>
#include <fstream>
#include <sstream>
#include <sys/stat.h>

#include "trace_error.h"
#include "vmfork/system_error.h"

namespace vmfork::trace {

namespace {

std::string_view trim(std::string_view s) {
    const auto first = s.find_first_not_of(" \t\r\n");
    if (first == std::string_view::npos) {
        return {};
    }
    const auto last = s.find_last_not_of(" \t\r\n");
    return s.substr(first, last - first + 1);
}

// The value of "key:value;" in a field line, e.g. "offset" -> "32".
std::string_view attribute(std::string_view line, std::string_view key) {
    const std::string needle = std::string(key) + ":";
    std::size_t pos = 0;
    while ((pos = line.find(needle, pos)) != std::string_view::npos) {
        // Only at the start of an attribute (not "common_offset:" inside a name).
        if (pos == 0 || line[pos - 1] == '\t' || line[pos - 1] == ' ' || line[pos - 1] == ';') {
            break;
        }
        pos += needle.size();
    }
    if (pos == std::string_view::npos) {
        return {};
    }
    const auto begin = pos + needle.size();
    const auto end = line.find(';', begin);
    return trim(line.substr(begin, end == std::string_view::npos ? end : end - begin));
}

std::size_t to_size(std::string_view s, std::string_view what, std::string_view line) {
    std::size_t v = 0;
    const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (s.empty() || ec != std::errc() || p != s.data() + s.size()) {
        throw std::runtime_error(fmt::format("bad {} in format line \"{}\"", what, trim(line)));
    }
    return v;
}

FormatField parse_field(std::string_view line) {
    const auto decl = attribute(line, "field");
    // "unsigned long long duration_ns", "char comm[16]", "const char * name"
    auto d = decl;
    if (const auto bracket = d.find('['); bracket != std::string_view::npos) {
        d = trim(d.substr(0, bracket));
    }
    const auto sep = d.find_last_of(" \t*");
    if (d.empty() || sep == std::string_view::npos || sep + 1 >= d.size()) {
        throw std::runtime_error(fmt::format("bad field declaration in \"{}\"", trim(line)));
    }
    FormatField f;
    f.name = std::string(d.substr(sep + 1));
    f.type = std::string(trim(decl.substr(0, decl.size() - (d.size() - sep - 1))));
    f.offset = to_size(attribute(line, "offset"), "offset", line);
    f.size = to_size(attribute(line, "size"), "size", line);
    f.is_signed = attribute(line, "signed") == "1";
    return f;
}

} // namespace

EventFormat EventFormat::parse(std::string_view text) {
    EventFormat ev;
    std::size_t pos = 0;
    while (pos < text.size()) {
        auto end = text.find('\n', pos);
        if (end == std::string_view::npos) {
            end = text.size();
        }
        const auto line = trim(text.substr(pos, end - pos));
        pos = end + 1;
        if (line.starts_with("name:")) {
            ev.name_ = std::string(trim(line.substr(5)));
        } else if (line.starts_with("field:")) {
            ev.fields_.push_back(parse_field(line));
        } else if (line.starts_with("print fmt:")) {
            break;
        }
    }
    if (ev.name_.empty() || ev.fields_.empty()) {
        throw std::runtime_error("not a tracefs event format (no name or no fields)");
    }
    return ev;
}

const FormatField* EventFormat::field(std::string_view name) const noexcept {
    for (const auto& f : fields_) {
        if (f.name == name) {
            return &f;
        }
    }
    return nullptr;
}

Tracefs Tracefs::find() {
    std::ifstream mounts("/proc/self/mounts");
    if (!mounts) {
        throw SystemError::from_errno("reading /proc/self/mounts");
    }
    std::string line;
    std::filesystem::path found;
    while (std::getline(mounts, line)) {
        std::istringstream fields(line);
        std::string source, dir, type;
        if (!(fields >> source >> dir >> type) || type != "tracefs") {
            continue;
        }
        if (dir == "/sys/kernel/tracing" || found.empty()) {
            found = dir;
        }
    }
    if (found.empty()) {
        throw TraceError("tracefs is not mounted (no tracefs in /proc/self/mounts)",
                         "mount it: mount -t tracefs nodev /sys/kernel/tracing");
    }
    return Tracefs(found);
}

Tracefs::Tracefs(std::filesystem::path root) : root_(std::move(root)) {
    struct stat st {};
    const auto events = root_ / "events";
    if (::stat(events.c_str(), &st) != 0) {
        const int err = errno;
        if (err == EACCES) {
            throw TraceError(fmt::format("{}: permission denied", events.string()),
                             "run vmfork-trace as root", err);
        }
        throw TraceError(fmt::format("{} is not a tracefs mount (no {}: {})", root_.string(),
                                     events.string(), std::strerror(err)),
                         "mount tracefs: mount -t tracefs nodev /sys/kernel/tracing", err);
    }
}

std::filesystem::path Tracefs::system_dir(std::string_view system) const {
    return root_ / "events" / system;
}

EventFormat Tracefs::read_format(std::string_view system, std::string_view event) const {
    const auto path = system_dir(system) / event / "format";
    std::ifstream in(path);
    if (!in) {
        throw SystemError::from_errno(fmt::format("reading {}", path.string()));
    }
    std::ostringstream text;
    text << in.rdbuf();
    try {
        return EventFormat::parse(text.str());
    } catch (const std::runtime_error& e) {
        throw std::runtime_error(fmt::format("{}: {}", path.string(), e.what()));
    }
}

} // namespace vmfork::trace
