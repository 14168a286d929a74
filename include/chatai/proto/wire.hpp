// The gate protocol's wire format, shared by the tunnel (client), the gate (server) and the
// gateway: the commands, the exit statuses, the request of version 1, the field rules every
// side applies, the body rule that makes every stream report its usage, and the status
// document. Version 2's frames are in frames.hpp. No dependency beyond chatai::core.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "chatai/core/json.hpp"
#include "chatai/core/status.hpp"

namespace chatai::proto {

// What the client asks sshd to run (SSH_ORIGINAL_COMMAND).
enum class command { keep_alive, status, request, session };

// "keep-alive", "status", "request" or "session".
std::string_view command_name(command c) noexcept;

// The command of SSH_ORIGINAL_COMMAND, matched exactly: no arguments, no whitespace. nullptr
// (no command at all) and anything else are errc::invalid_argument.
result<command> parse_command(const char* original_command);

// Exit statuses of the gate (the program, and a request's `end` frame in version 2).
inline constexpr int exit_ok = 0;          // the answer was written whole
inline constexpr int exit_incomplete = 1;  // the answer was cut short or could not be written
inline constexpr int exit_usage = 2;       // no command, an unknown command or a bad config: nothing done

// The field rules, anchored.
bool valid_request_id(std::string_view id) noexcept;  // [A-Za-z0-9._:-]{1,128}
bool valid_user_tag(std::string_view user) noexcept;  // [A-Za-z0-9._:@+=-]{0,128}
// [A-Za-z0-9._:-]{1,128}, and neither "." nor "..".
bool valid_service_id(std::string_view id) noexcept;
bool valid_model_name(std::string_view name) noexcept;  // printable ASCII without space, 1..256
bool valid_affinity(std::string_view key) noexcept;     // [0-9a-f]{0,32}
// `user` made a valid tag: cut to 128 bytes, every other character replaced by '_'.
std::string user_tag(std::string_view user);

// A request of version 1 as the client writes it: the header line
// {"v":1,"id","user","service","method","path","headers":{...},"body_length":N}, with
// "affinity" too when it has one, its newline, then the body.
// Thread safety: a value type.
struct request {
  std::string id;
  std::string user;
  std::string service;
  std::string method = "POST";
  std::string path = "/v1/chat/completions";
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  // The same for requests of one conversation (affinity_key): among backends equally loaded
  // the gate sends them to the same one, which holds the conversation's prefix in its cache.
  std::string affinity;
};

// A conversation's affinity: a hash (16 hex digits) of the user tag and of a chat request's
// messages up to and including the first user message (the start every later turn resends),
// or of the first 1,024 bytes of a completion's prompt; empty for other bodies. Cheap: it reads
// the body the caller has parsed already.
std::string affinity_key(std::string_view user, std::string_view path, const rapidjson::Value& body);

// The bytes the gate reads: the header line, its newline, then the body.
std::string encode_request(const request& r);

// The header line of a request once the gate has checked it (the gate's request.hpp holds the
// checks, which depend on its config). Header names are lower case.
// Thread safety: a value type.
struct request_head {
  std::string id;
  std::string user;
  std::string service;
  std::string method;
  std::string path;
  std::vector<std::pair<std::string, std::string>> headers;
  std::int64_t body_length = 0;
  std::string affinity;  // empty: none
};

// A body as it goes to the backend.
struct prepared_body {
  std::string body;
  bool stream = false;  // the request asked for a stream
};

// For a streaming request ("stream": true), sets stream_options.include_usage so that every
// request is counted (one include_usage member, true); any other body is passed unchanged,
// byte for byte. A stream_options that is not an object, or an include_usage that is not a
// boolean, is an error. The gateway applies it before sending, and the gate again.
result<prepared_body> prepare_body(std::string_view body);

// The status document (the `status` command's answer), version 1.
// Thread safety: value types.
struct service_status {
  std::string id;
  std::vector<std::string> models;
  bool can_scale_from_zero = false;
  std::int64_t ready = 0, starting = 0, draining = 0, pending = 0;  // backends
  std::int64_t open_breakers = 0;
  std::int64_t in_flight = 0;
};

struct status_document {
  std::int64_t generation = 0;
  std::vector<service_status> services;
};

// {"v":1,"generation":G,"services":[{"id","models","can_scale_from_zero","backends":{"ready",
// "starting","draining","pending"},"open_breakers","in_flight"}]}
std::string encode_status(const status_document& doc);
// Reads a status document; members it does not know are ignored (a newer gate may add some),
// the ones it knows must have their types. Every field but "services" and a service's "id"
// may be missing.
result<status_document> parse_status(std::string_view text);

}  // namespace chatai::proto
