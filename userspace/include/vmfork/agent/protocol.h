// SPDX-License-Identifier: GPL-2.0
#pragma once

// The protocol between the host (a VMM, `vmfork exec`) and vmfork-agent in a guest, over
// a stream socket (AF_VSOCK in a guest, AF_UNIX in tests). Framed like the control
// protocol, with a payload that is a JSON object for control messages and raw bytes for
// the data of a command's standard streams:
//
//   header: u32 magic "VMFA" | u16 version | u16 type | u32 payload length | u32 zero
//   payload: at most max_payload bytes
//
// One request per connection: the host sends Exec or Identity (optionally preceded by
// one Hello), the agent answers and closes. An Exec is answered by Stdout/Stderr frames
// as the command writes, then Exit; the host may send Stdin frames meanwhile (an empty
// one is end of file). Anything malformed gets an Error reply when the peer can still
// read one, and the connection is closed.

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace vmfork::agent {

using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr std::uint32_t magic = 0x41464d56; // "VMFA" in memory order
constexpr std::uint16_t version = 1;
constexpr std::size_t header_size = 16;
constexpr std::size_t max_payload = std::size_t{64} * 1024;
// The vsock port the agent listens on unless told otherwise.
constexpr std::uint32_t default_vsock_port = 52;
// Bounds of Identity's host entropy, in bytes.
constexpr std::size_t min_entropy = 32;
constexpr std::size_t max_entropy = 64;

enum class MessageType : std::uint16_t {
    Hello = 1,          // host -> agent: {"version": 1}
    HelloReply = 2,     // {"agent": "vmfork-agent", "version": "x.y.z", "protocol": 1}
    Exec = 3,           // host -> agent: ExecRequest
    Stdin = 4,          // host -> agent: bytes; zero-length is end of file
    Stdout = 5,         // bytes
    Stderr = 6,         // bytes
    Exit = 7,           // {"code": N} or {"signal": N}
    Error = 8,          // {"errno": N, "error": "text"}
    Identity = 9,       // host -> agent: Identity
    IdentityReply = 10, // IdentityReply
};

// Stdin, Stdout and Stderr carry bytes; every other type a JSON object.
bool is_data(MessageType type) noexcept;
const char* type_name(MessageType type) noexcept;

struct Message {
    MessageType type = MessageType::Hello;
    Json body = Json::object(); // control messages
    std::string data;           // data messages (any bytes)

    static Message control(MessageType type, Json body);
    static Message bytes(MessageType type, std::string_view data);
};

// A protocol violation or a transport failure. err is an errno value: EPROTO for a
// malformed message, EMSGSIZE for an oversized one, ECONNRESET for a truncated one (or a
// peer that closed), ETIMEDOUT for a deadline that passed, EINVAL for a well-formed
// message whose fields are wrong (an Exec without argv).
class ProtocolError : public std::runtime_error {
public:
    ProtocolError(int err, const std::string& what) : std::runtime_error(what), err_(err) {}
    [[nodiscard]] int err() const noexcept { return err_; }

private:
    int err_;
};

// Header + payload. Throws ProtocolError(EMSGSIZE) above max_payload, EPROTO for a
// control body that is not a JSON object.
std::vector<std::uint8_t> encode(const Message& message);

// Incremental decoder for a byte stream: feed() what arrived, next() returns each
// complete message in order. A malformed header or payload throws ProtocolError; the
// stream cannot be resynchronised after that (close the connection).
class Decoder {
public:
    void feed(std::span<const std::uint8_t> bytes);
    std::optional<Message> next();
    // Bytes of a message begun but not complete (0 at a message boundary).
    [[nodiscard]] std::size_t pending() const noexcept { return buffer_.size() - start_; }

private:
    std::vector<std::uint8_t> buffer_;
    std::size_t start_ = 0; // consumed bytes at the front, dropped in batches
};

// Blocking message I/O on a connected stream socket, bounded by deadline.
void send_message(int fd, const Message& message, Clock::time_point deadline);
// Throws ProtocolError: ECONNRESET if the peer closed before a whole message (EOF at a
// message boundary too), ETIMEDOUT, EPROTO/EMSGSIZE if malformed.
Message receive_message(int fd, Clock::time_point deadline);

// --- message bodies -------------------------------------------------------------------
// from_json() checks types and ranges and throws ProtocolError(EINVAL) naming the field.

struct ExecRequest {
    std::vector<std::string> argv;          // argv[0] is looked up in PATH
    std::map<std::string, std::string> env; // added to (or replacing) the agent's
    bool with_stdin = false;                // "stdin": false: the command reads /dev/null
    std::optional<std::string> cwd;         // default: the agent's (/)

    [[nodiscard]] Json to_json() const;
    static ExecRequest from_json(const Json& body);
};

// How a command ended: an exit code or the signal that killed it.
struct ExitStatus {
    std::optional<int> code;
    std::optional<int> signal;

    // As a shell reports it: the code, or 128 + the signal.
    [[nodiscard]] int shell_status() const noexcept;
    [[nodiscard]] Json to_json() const;
    static ExitStatus from_json(const Json& body);
    // From a waitpid() status.
    static ExitStatus from_wait_status(int status);
};

// A clone's identity, as its VMM tells the agent right after the clone starts.
struct Identity {
    std::string name; // becomes the hostname: a VM name, 1..64 of [A-Za-z0-9._-]
    std::uint64_t generation = 0;
    std::string parent;        // the parent VM's name (empty for none)
    std::string id;            // the clone's unique id (opaque text, at most 128 bytes)
    std::uint64_t time_ns = 0; // the host's CLOCK_REALTIME when it sent this
    std::string entropy;       // min_entropy..max_entropy bytes from the host's RNG

    [[nodiscard]] Json to_json() const; // entropy as hex
    static Identity from_json(const Json& body);
};

// One customization step: {"step": "hostname", "ok": true, ...}. A step that did not
// apply (no /etc/machine-id, --no-clock) is ok with skipped; a failed one has errno.
struct StepReport {
    std::string step;
    bool ok = false;
    bool skipped = false;
    int err = 0;        // errno of a failed step
    std::string detail; // what was done, or why it failed

    [[nodiscard]] Json to_json() const;
    static StepReport from_json(const Json& body);
};

// One hook of /etc/vmfork/clone.d: its exit code or signal.
struct HookReport {
    std::string path;
    ExitStatus status;
    bool ok = false; // exit code 0
    bool timed_out = false;
    std::string output; // the start of what it wrote to stdout and stderr

    [[nodiscard]] Json to_json() const;
    static HookReport from_json(const Json& body);
};

struct IdentityReply {
    bool ok = false; // every step and every hook ok
    std::vector<StepReport> steps;
    std::vector<HookReport> hooks;
    std::uint64_t ms = 0; // time the agent took

    [[nodiscard]] Json to_json() const;
    static IdentityReply from_json(const Json& body);
    // The report of step, or nullptr.
    [[nodiscard]] const StepReport* find(std::string_view step) const;
};

// Bytes as lower-case hex digit pairs, and back (ProtocolError(EINVAL) for bad text).
std::string to_hex(std::string_view bytes);
std::string from_hex(std::string_view text, const std::string& field);

// An Error message body; invalid UTF-8 in what (bytes quoted from a peer) is replaced.
Json error_body(int err, const std::string& what);

} // namespace vmfork::agent
