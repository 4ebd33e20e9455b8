// SPDX-License-Identifier: GPL-2.0
#pragma once

#include <cstddef>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace vmfork::trace {

// One field line of a tracefs event format file:
//   field:unsigned long long duration_ns;	offset:32;	size:8;	signed:0;
struct FormatField {
    std::string name;
    std::string type;
    std::size_t offset = 0;
    std::size_t size = 0;
    bool is_signed = false;
};

// <tracefs>/events/<system>/<event>/format, parsed.
class EventFormat {
public:
    // Parses the text of a format file; throws std::runtime_error on a malformed one.
    static EventFormat parse(std::string_view text);

    [[nodiscard]] const std::string& name() const noexcept { return name_; }
    [[nodiscard]] const std::vector<FormatField>& fields() const noexcept { return fields_; }
    // nullptr if the event has no field called name.
    [[nodiscard]] const FormatField* field(std::string_view name) const noexcept;

private:
    std::string name_;
    std::vector<FormatField> fields_;
};

// A tracefs mount: where the event directories and their format files are.
class Tracefs {
public:
    // The mounted tracefs (from /proc/self/mounts, /sys/kernel/tracing preferred);
    // throws TraceError "tracefs is not mounted" with the mount command to run.
    static Tracefs find();
    // A given directory (--tracefs); throws TraceError if it has no events/.
    explicit Tracefs(std::filesystem::path root);

    [[nodiscard]] const std::filesystem::path& root() const noexcept { return root_; }
    [[nodiscard]] std::filesystem::path system_dir(std::string_view system) const;
    // Reads and parses events/<system>/<event>/format; throws vmfork::SystemError.
    [[nodiscard]] EventFormat read_format(std::string_view system, std::string_view event) const;

private:
    std::filesystem::path root_;
};

} // namespace vmfork::trace
