// The gate's reading of a request of gate protocol version 1: a JSON header line, then exactly
// body_length bytes. Every field is checked against an anchored allowlist before anything uses it.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "chatai/core/status.hpp"
#include "chatai/gate/config.hpp"
#include "chatai/proto/wire.hpp"

namespace chatai::gate {

// A request header line that passed every check (see chatai/proto/wire.hpp).
using request_head = proto::request_head;

struct gate_request {
  request_head head;
  std::string body;
  std::string model;  // the body's "model"; empty when it has none
};

// The HTTP status the gate answers a refused request with: 413 for errc::out_of_range,
// 404 for errc::not_found, 408 for errc::timeout, 400 for anything else.
int http_status_for(errc code) noexcept;

// Checks one header line (without its newline) against the protocol and the config: strict
// JSON (valid UTF-8, no control characters, unknown or duplicate keys refused, types exact),
// v == 1, anchored allowlists for ids, routes, methods and headers, body_length within
// config.max_body_bytes (above it: errc::out_of_range).
result<request_head> parse_head(std::string_view line, const gate_config& config);

// Checks a body against its head: for POST it must be a JSON object without a key given
// twice; its "model", when
// given, must be a non-empty printable string. Returns the model name ("" when absent).
result<std::string> check_body(const request_head& head, std::string_view body);

// Reads one request from `fd`: the header line (at most config.max_header_bytes), then exactly
// body_length bytes; anything sent after the body is refused. Fewer bytes before EOF or the
// deadline are errors (errc::invalid_argument, errc::timeout), nothing is read past a limit.
result<gate_request> read_request(int fd, const gate_config& config);

// The same over bytes already in memory (the fuzz target and tests use it): `input` must hold
// the whole request and nothing after it.
result<gate_request> parse_request(std::string_view input, const gate_config& config);

// The body rule of the protocol (stream_options.include_usage set for streams).
using proto::prepare_body;
using proto::prepared_body;

}  // namespace chatai::gate
