// The frames of gate protocol version 2: many requests multiplexed over one long-lived
// channel (the gate's `session` command), each frame a 9-byte head and a payload.
//
// A frame: kind (1 byte), request id (4 bytes, big-endian), payload length (4 bytes,
// big-endian), payload. Request ids are chosen by the client, never 0 (0 is the session's own)
// and never reused within a session.
//
// The session, as both sides see it:
//   gate -> client  hello   id 0  {"v":2,"max_requests":N,"window":W,"max_payload":P}: the
//                                 first frame, sent before anything is read. A gate that sends
//                                 none does not speak version 2 (it exits with exit_usage).
//   client -> gate  open    id    the first bytes of a version 1 request (its header line, its
//                                 newline and the start of the body); `data` frames carry the rest.
//   client -> gate  data    id    more bytes of the request.
//   client -> gate  window  id    4 bytes, big-endian: the gate may send that many more
//                                 response bytes for the request. Each request starts with W.
//   client -> gate  cancel  id    the client has left the request (as end-of-file on stdin in
//                                 version 1); the gate still ends it with `end`.
//   gate -> client  data    id    the next bytes of the response, never beyond the window.
//   gate -> client  end     id    1 byte, the request's exit status (exit_ok, exit_incomplete):
//                                 its last frame; the id is then free of the gate's side.
//   gate -> client  goaway  id 0  open no new requests on this session (it rotates, or has been
//                                 idle); the ones in flight go on to their end, and so do ones
//                                 opened before the client read the goaway. The client then
//                                 closes the channel. Opens long after goaway get 503 and `end`.
// The request bytes are checked by the gate exactly as on stdin in version 1; the response
// bytes are what version 1 writes to stdout.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "chatai/core/status.hpp"

namespace chatai::proto {

enum class frame_kind : std::uint8_t { hello = 1, open = 2, data = 3, window = 4, cancel = 5, end = 6, goaway = 7 };

// The bytes of a frame's head.
inline constexpr std::size_t frame_head_bytes = 9;
// The largest payload either side sends or accepts.
inline constexpr std::uint32_t max_frame_payload = 64 * 1024;

// A frame whose payload lives in the reader's buffer (valid during the callback only).
struct frame_view {
  frame_kind kind = frame_kind::data;
  std::uint32_t id = 0;
  std::string_view payload;
};

// Appends one frame to `out`. The payload must be at most max_frame_payload bytes.
void append_frame(std::string& out, frame_kind kind, std::uint32_t id, std::string_view payload = {});
// Appends `bytes` as as many `kind` frames as it takes (at most `max_payload` bytes each); an
// empty `bytes` appends nothing.
void append_frames(std::string& out, frame_kind kind, std::uint32_t id, std::string_view bytes,
                   std::uint32_t max_payload = max_frame_payload);
void append_window(std::string& out, std::uint32_t id, std::uint32_t credit);
void append_end(std::string& out, std::uint32_t id, int exit_status);

// The credit of a `window` frame, the status of an `end` frame (the reader has checked their sizes).
std::uint32_t window_credit(const frame_view& f) noexcept;
int end_status(const frame_view& f) noexcept;

// What a hello frame announces.
struct hello {
  int version = 2;
  std::uint32_t max_requests = 0;  // requests in flight at once on the session
  std::uint32_t window = 0;        // each request's first window of response bytes
  std::uint32_t max_payload = max_frame_payload;
};
std::string encode_hello(const hello& h);
// Strict: a JSON object with exactly the four members, v == 2, every number in range.
result<hello> parse_hello(std::string_view payload);

// Splits a byte stream into frames and checks each: a known kind; the session's id (0) for
// hello and goaway and a request's (not 0) for the others; a payload within `max_payload`;
// window payloads of 4 bytes and a credit above 0, end payloads of 1 byte holding 0, 1 or 2,
// cancel payloads empty, open payloads not empty. The first bad frame is an error for good
// (errc::parse_error): the stream cannot be trusted past it. At most one frame is held.
// Thread safety: none; one reader per stream.
class frame_reader {
 public:
  explicit frame_reader(std::uint32_t max_payload = max_frame_payload) : max_payload_(max_payload) {}

  // Calls `on_frame` for each complete frame in `bytes` and the bytes before them, in order.
  // An error from `on_frame` stops the feed and is returned (the reader stays usable).
  status feed(std::string_view bytes, const std::function<status(const frame_view&)>& on_frame);

  // Bytes of a frame begun but not complete.
  std::size_t buffered() const noexcept { return buffer_.size(); }

 private:
  status check(const frame_view& f) const;

  std::uint32_t max_payload_;
  std::string buffer_;
  std::string broken_;  // the first error, once one was found
};

}  // namespace chatai::proto
