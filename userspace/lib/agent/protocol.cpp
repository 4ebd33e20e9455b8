// SPDX-License-Identifier: GPL-2.0
#include "vmfork/agent/protocol.h"

#include <algorithm>
#include <array>
#include <cerrno>
#include <sys/wait.h>

#include "vmfork/wire.h"

namespace vmfork::agent {

namespace {

// Deeper JSON is refused: nlohmann copies and serialises values recursively, and a
// 64 KiB payload of '[' would otherwise nest 65536 levels deep.
constexpr int max_depth = 32;
constexpr std::size_t max_name = 64;
constexpr std::size_t max_id = 128;
constexpr std::size_t max_argv = 4096;

bool known_type(std::uint16_t type) {
    return type >= static_cast<std::uint16_t>(MessageType::Hello) &&
           type <= static_cast<std::uint16_t>(MessageType::IdentityReply);
}

static_assert(header_size == wire::header_size);

[[noreturn]] void fail(int err, const std::string& what) {
    throw ProtocolError(err, what);
}

const wire::Format format{magic, version, max_payload, known_type, "agent", fail};

Message decode_payload(std::uint16_t raw_type, std::span<const std::uint8_t> payload) {
    Message message;
    message.type = static_cast<MessageType>(raw_type);
    if (is_data(message.type)) {
        message.data.assign(payload.begin(), payload.end());
        return message;
    }
    message.body = wire::parse_object(format, payload, max_depth,
                                      std::string(type_name(message.type)) + " payload");
    return message;
}

// --- typed fields ----------------------------------------------------------------------

[[noreturn]] void bad_field(const std::string& field, const std::string& expected) {
    throw ProtocolError(EINVAL, "field '" + field + "' must be " + expected);
}

void require_object(const Json& body, const char* what) {
    if (!body.is_object()) {
        throw ProtocolError(EINVAL, std::string(what) + " must be a JSON object");
    }
}

// Rejects keys outside the known ones: a typo must not be ignored silently.
void check_only(const Json& body, std::initializer_list<const char*> keys, const char* what) {
    for (const auto& [key, value] : body.items()) {
        const bool known =
            std::any_of(keys.begin(), keys.end(), [&key = key](const char* k) { return key == k; });
        if (!known) {
            throw ProtocolError(EINVAL,
                                "unknown field '" + key.substr(0, max_name) + "' in " + what);
        }
    }
}

const Json* optional_field(const Json& body, const std::string& key) {
    const auto it = body.find(key);
    return it == body.end() ? nullptr : &*it;
}

const Json& required_field(const Json& body, const std::string& key) {
    const Json* value = optional_field(body, key);
    if (value == nullptr) {
        throw ProtocolError(EINVAL, "missing field '" + key + "'");
    }
    return *value;
}

std::string string_field(const Json& value, const std::string& key, std::size_t max) {
    const auto* s = value.get_ptr<const std::string*>();
    if (s == nullptr || s->size() > max) {
        bad_field(key, "a string of at most " + std::to_string(max) + " bytes");
    }
    return *s;
}

std::uint64_t u64_field(const Json& value, const std::string& key) {
    // From the wire a non-negative integer is number_unsigned; built in code from an int
    // it is number_integer.
    const bool non_negative =
        value.is_number_unsigned() || (value.is_number_integer() && value.get<std::int64_t>() >= 0);
    if (!non_negative) {
        bad_field(key, "a non-negative integer");
    }
    return value.get<std::uint64_t>();
}

int int_field(const Json& value, const std::string& key, int min, int max) {
    if (!value.is_number_integer() || value.get<std::int64_t>() < min ||
        value.get<std::int64_t>() > max) {
        bad_field(key, "an integer in " + std::to_string(min) + ".." + std::to_string(max));
    }
    return static_cast<int>(value.get<std::int64_t>());
}

bool bool_field(const Json& value, const std::string& key) {
    if (!value.is_boolean()) {
        bad_field(key, "true or false");
    }
    return value.get<bool>();
}

bool valid_vm_name(const std::string& name) {
    return !name.empty() && name.size() <= max_name && name[0] != '.' && name[0] != '-' &&
           std::all_of(name.begin(), name.end(), [](char c) {
               return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '.' || c == '_' || c == '-';
           });
}

bool has_nul(const std::string& s) {
    return s.find('\0') != std::string::npos;
}

} // namespace

bool is_data(MessageType type) noexcept {
    return type == MessageType::Stdin || type == MessageType::Stdout || type == MessageType::Stderr;
}

const char* type_name(MessageType type) noexcept {
    switch (type) {
    case MessageType::Hello:
        return "Hello";
    case MessageType::HelloReply:
        return "HelloReply";
    case MessageType::Exec:
        return "Exec";
    case MessageType::Stdin:
        return "Stdin";
    case MessageType::Stdout:
        return "Stdout";
    case MessageType::Stderr:
        return "Stderr";
    case MessageType::Exit:
        return "Exit";
    case MessageType::Error:
        return "Error";
    case MessageType::Identity:
        return "Identity";
    case MessageType::IdentityReply:
        return "IdentityReply";
    }
    return "unknown";
}

Message Message::control(MessageType type, Json body) {
    Message message;
    message.type = type;
    message.body = std::move(body);
    return message;
}

Message Message::bytes(MessageType type, std::string_view data) {
    Message message;
    message.type = type;
    message.data.assign(data);
    return message;
}

std::vector<std::uint8_t> encode(const Message& message) {
    if (!known_type(static_cast<std::uint16_t>(message.type))) {
        throw ProtocolError(EPROTO, "unknown message type " +
                                        std::to_string(static_cast<unsigned>(message.type)));
    }
    std::string json;
    std::string_view payload;
    if (is_data(message.type)) {
        payload = message.data;
    } else {
        if (!message.body.is_object()) {
            throw ProtocolError(EPROTO, std::string(type_name(message.type)) + " body is a JSON " +
                                            message.body.type_name() + ", not an object");
        }
        try {
            json = message.body.dump(-1, ' ', false, Json::error_handler_t::strict);
        } catch (const Json::exception& e) {
            throw ProtocolError(EPROTO, std::string("cannot encode the message: ") + e.what());
        }
        payload = json;
    }
    return wire::encode(format, static_cast<std::uint16_t>(message.type), payload);
}

void Decoder::feed(std::span<const std::uint8_t> bytes) {
    // Consumed bytes are dropped here, not in next(): 10 MiB of output in 64 KiB frames
    // would otherwise move the rest of the buffer once per frame.
    if (start_ > 0 && start_ >= buffer_.size() / 2) {
        buffer_.erase(buffer_.begin(), buffer_.begin() + static_cast<std::ptrdiff_t>(start_));
        start_ = 0;
    }
    buffer_.insert(buffer_.end(), bytes.begin(), bytes.end());
}

std::optional<Message> Decoder::next() {
    if (pending() < header_size) {
        return std::nullopt;
    }
    const std::span<const std::uint8_t> rest = std::span(buffer_).subspan(start_);
    const wire::Header header = wire::parse_header(format, rest.first<header_size>());
    const std::size_t total = header_size + header.length;
    if (rest.size() < total) {
        return std::nullopt;
    }
    Message message = decode_payload(header.type, rest.subspan(header_size, header.length));
    start_ += total;
    if (start_ == buffer_.size()) {
        buffer_.clear();
        start_ = 0;
    }
    return message;
}

void send_message(int fd, const Message& message, Clock::time_point deadline) {
    wire::send_all(format, fd, encode(message), deadline);
}

Message receive_message(int fd, Clock::time_point deadline) {
    const auto [header, payload] = wire::receive(format, fd, deadline);
    return decode_payload(header.type, payload);
}

// --- bodies ------------------------------------------------------------------------------

Json ExecRequest::to_json() const {
    Json body{{"argv", argv}, {"stdin", with_stdin}};
    if (!env.empty()) {
        body["env"] = env;
    }
    if (cwd) {
        body["cwd"] = *cwd;
    }
    return body;
}

ExecRequest ExecRequest::from_json(const Json& body) {
    require_object(body, "Exec");
    check_only(body, {"argv", "env", "stdin", "cwd"}, "Exec");
    ExecRequest request;
    const Json& argv = required_field(body, "argv");
    if (!argv.is_array() || argv.empty() || argv.size() > max_argv) {
        bad_field("argv", "a non-empty array of strings");
    }
    for (const Json& arg : argv) {
        const auto* s = arg.get_ptr<const std::string*>();
        if (s == nullptr || has_nul(*s)) {
            bad_field("argv", "a non-empty array of strings without NUL");
        }
        request.argv.push_back(*s);
    }
    if (request.argv[0].empty()) {
        bad_field("argv", "an array whose first string (the command) is not empty");
    }
    if (const Json* env = optional_field(body, "env")) {
        if (!env->is_object()) {
            bad_field("env", "an object of strings");
        }
        for (const auto& [key, value] : env->items()) {
            const auto* s = value.get_ptr<const std::string*>();
            if (key.empty() || key.find('=') != std::string::npos || has_nul(key) || s == nullptr ||
                has_nul(*s)) {
                bad_field("env", "an object of strings, names without '=' or NUL");
            }
            request.env[key] = *s;
        }
    }
    if (const Json* with_stdin = optional_field(body, "stdin")) {
        request.with_stdin = bool_field(*with_stdin, "stdin");
    }
    if (const Json* cwd = optional_field(body, "cwd")) {
        request.cwd = string_field(*cwd, "cwd", 4096);
        if (request.cwd->empty() || has_nul(*request.cwd)) {
            bad_field("cwd", "a non-empty path");
        }
    }
    return request;
}

int ExitStatus::shell_status() const noexcept {
    if (signal) {
        return 128 + *signal;
    }
    return code.value_or(255);
}

Json ExitStatus::to_json() const {
    if (signal) {
        return Json{{"signal", *signal}};
    }
    return Json{{"code", code.value_or(255)}};
}

ExitStatus ExitStatus::from_json(const Json& body) {
    require_object(body, "Exit");
    check_only(body, {"code", "signal"}, "Exit");
    ExitStatus status;
    const Json* code = optional_field(body, "code");
    const Json* signal = optional_field(body, "signal");
    if ((code == nullptr) == (signal == nullptr)) {
        throw ProtocolError(EINVAL, "Exit must have one of 'code' and 'signal'");
    }
    if (code != nullptr) {
        status.code = int_field(*code, "code", 0, 255);
    } else {
        status.signal = int_field(*signal, "signal", 1, 127);
    }
    return status;
}

ExitStatus ExitStatus::from_wait_status(int status) {
    ExitStatus exit;
    if (WIFSIGNALED(status)) {
        exit.signal = WTERMSIG(status);
    } else {
        exit.code = WEXITSTATUS(status);
    }
    return exit;
}

Json Identity::to_json() const {
    return Json{{"name", name}, {"generation", generation}, {"parent", parent},
                {"id", id},     {"time_ns", time_ns},       {"entropy", to_hex(entropy)}};
}

Identity Identity::from_json(const Json& body) {
    require_object(body, "Identity");
    check_only(body, {"name", "generation", "parent", "id", "time_ns", "entropy"}, "Identity");
    Identity identity;
    identity.name = string_field(required_field(body, "name"), "name", max_name);
    if (!valid_vm_name(identity.name)) {
        bad_field("name", "a VM name: 1..64 characters of [A-Za-z0-9._-], not starting with "
                          "'.' or '-'");
    }
    identity.generation = u64_field(required_field(body, "generation"), "generation");
    identity.parent = string_field(required_field(body, "parent"), "parent", max_name);
    if (!identity.parent.empty() && !valid_vm_name(identity.parent)) {
        bad_field("parent", "empty or a VM name");
    }
    identity.id = string_field(required_field(body, "id"), "id", max_id);
    if (has_nul(identity.id)) {
        bad_field("id", "a string without NUL");
    }
    identity.time_ns = u64_field(required_field(body, "time_ns"), "time_ns");
    identity.entropy = from_hex(
        string_field(required_field(body, "entropy"), "entropy", 2 * max_entropy), "entropy");
    if (identity.entropy.size() < min_entropy) {
        bad_field("entropy", std::to_string(min_entropy) + ".." + std::to_string(max_entropy) +
                                 " bytes as hex");
    }
    return identity;
}

Json StepReport::to_json() const {
    Json body{{"step", step}, {"ok", ok}};
    if (skipped) {
        body["skipped"] = true;
    }
    if (err != 0) {
        body["errno"] = err;
    }
    if (!detail.empty()) {
        body[ok ? "detail" : "error"] = detail;
    }
    return body;
}

StepReport StepReport::from_json(const Json& body) {
    require_object(body, "a step report");
    StepReport report;
    report.step = string_field(required_field(body, "step"), "step", max_name);
    report.ok = bool_field(required_field(body, "ok"), "ok");
    if (const Json* skipped = optional_field(body, "skipped")) {
        report.skipped = bool_field(*skipped, "skipped");
    }
    if (const Json* err = optional_field(body, "errno")) {
        report.err = int_field(*err, "errno", 0, 4095);
    }
    if (const Json* detail = optional_field(body, report.ok ? "detail" : "error")) {
        report.detail = string_field(*detail, "detail", max_payload);
    }
    return report;
}

Json HookReport::to_json() const {
    Json body = status.to_json();
    body["path"] = path;
    body["ok"] = ok;
    if (timed_out) {
        body["timed_out"] = true;
    }
    if (!output.empty()) {
        body["output"] = output;
    }
    return body;
}

HookReport HookReport::from_json(const Json& body) {
    require_object(body, "a hook report");
    HookReport report;
    report.path = string_field(required_field(body, "path"), "path", 4096);
    report.ok = bool_field(required_field(body, "ok"), "ok");
    Json status = Json::object();
    for (const char* key : {"code", "signal"}) {
        if (const Json* value = optional_field(body, key)) {
            status[key] = *value;
        }
    }
    report.status = ExitStatus::from_json(status);
    if (const Json* timed_out = optional_field(body, "timed_out")) {
        report.timed_out = bool_field(*timed_out, "timed_out");
    }
    if (const Json* output = optional_field(body, "output")) {
        report.output = string_field(*output, "output", max_payload);
    }
    return report;
}

Json IdentityReply::to_json() const {
    Json body{{"ok", ok}, {"steps", Json::array()}, {"hooks", Json::array()}, {"ms", ms}};
    for (const StepReport& step : steps) {
        body["steps"].push_back(step.to_json());
    }
    for (const HookReport& hook : hooks) {
        body["hooks"].push_back(hook.to_json());
    }
    return body;
}

IdentityReply IdentityReply::from_json(const Json& body) {
    require_object(body, "IdentityReply");
    IdentityReply reply;
    reply.ok = bool_field(required_field(body, "ok"), "ok");
    reply.ms = u64_field(required_field(body, "ms"), "ms");
    const Json& steps = required_field(body, "steps");
    const Json& hooks = required_field(body, "hooks");
    if (!steps.is_array() || !hooks.is_array()) {
        bad_field("steps", "an array, and so must 'hooks'");
    }
    for (const Json& step : steps) {
        reply.steps.push_back(StepReport::from_json(step));
    }
    for (const Json& hook : hooks) {
        reply.hooks.push_back(HookReport::from_json(hook));
    }
    return reply;
}

const StepReport* IdentityReply::find(std::string_view step) const {
    const auto it = std::find_if(steps.begin(), steps.end(),
                                 [&](const StepReport& s) { return s.step == step; });
    return it == steps.end() ? nullptr : &*it;
}

std::string to_hex(std::string_view bytes) {
    constexpr std::string_view digits = "0123456789abcdef";
    std::string out;
    out.reserve(bytes.size() * 2);
    for (const char c : bytes) {
        const auto b = static_cast<unsigned char>(c);
        out += digits[b >> 4U];
        out += digits[b & 0xfU];
    }
    return out;
}

std::string from_hex(std::string_view text, const std::string& field) {
    if (text.size() % 2 != 0) {
        bad_field(field, "hex digit pairs");
    }
    auto nibble = [&](char c) -> unsigned {
        if (c >= '0' && c <= '9') {
            return static_cast<unsigned>(c - '0');
        }
        if (c >= 'a' && c <= 'f') {
            return static_cast<unsigned>(c - 'a' + 10);
        }
        if (c >= 'A' && c <= 'F') {
            return static_cast<unsigned>(c - 'A' + 10);
        }
        bad_field(field, "hex digit pairs");
    };
    std::string out(text.size() / 2, '\0');
    for (std::size_t i = 0; i < out.size(); ++i) {
        out[i] = static_cast<char>((nibble(text[2 * i]) << 4U) | nibble(text[2 * i + 1]));
    }
    return out;
}

Json error_body(int err, const std::string& what) {
    const std::string text =
        Json::parse(Json(what).dump(-1, ' ', false, Json::error_handler_t::replace))
            .get<std::string>();
    return Json{{"errno", err}, {"error", text}};
}

} // namespace vmfork::agent
