// Frame encoding, the hello document and the checking frame reader of gate protocol version 2.
#include "chatai/proto/frames.hpp"

#include <algorithm>

#include "chatai/core/json.hpp"

namespace chatai::proto {

namespace {

void put_u32(std::string& out, std::uint32_t v) {
  out += static_cast<char>(v >> 24);
  out += static_cast<char>(v >> 16);
  out += static_cast<char>(v >> 8);
  out += static_cast<char>(v);
}

std::uint32_t get_u32(std::string_view bytes) noexcept {
  const auto b = [&](std::size_t i) { return static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[i])); };
  return b(0) << 24 | b(1) << 16 | b(2) << 8 | b(3);
}

bool known_kind(std::uint8_t k) noexcept {
  return k >= static_cast<std::uint8_t>(frame_kind::hello) && k <= static_cast<std::uint8_t>(frame_kind::goaway);
}

}  // namespace

void append_frame(std::string& out, frame_kind kind, std::uint32_t id, std::string_view payload) {
  out += static_cast<char>(kind);
  put_u32(out, id);
  put_u32(out, static_cast<std::uint32_t>(payload.size()));
  out.append(payload);
}

void append_frames(std::string& out, frame_kind kind, std::uint32_t id, std::string_view bytes,
                   std::uint32_t max_payload) {
  while (!bytes.empty()) {
    const auto n = std::min<std::size_t>(bytes.size(), max_payload);
    append_frame(out, kind, id, bytes.substr(0, n));
    bytes.remove_prefix(n);
  }
}

void append_window(std::string& out, std::uint32_t id, std::uint32_t credit) {
  std::string payload;
  put_u32(payload, credit);
  append_frame(out, frame_kind::window, id, payload);
}

void append_end(std::string& out, std::uint32_t id, int exit_status) {
  append_frame(out, frame_kind::end, id, std::string(1, static_cast<char>(exit_status)));
}

std::uint32_t window_credit(const frame_view& f) noexcept { return get_u32(f.payload); }

int end_status(const frame_view& f) noexcept { return static_cast<unsigned char>(f.payload[0]); }

std::string encode_hello(const hello& h) {
  return "{\"v\":" + std::to_string(h.version) + ",\"max_requests\":" + std::to_string(h.max_requests) +
         ",\"window\":" + std::to_string(h.window) + ",\"max_payload\":" + std::to_string(h.max_payload) + "}";
}

result<hello> parse_hello(std::string_view payload) {
  auto doc = json::parse(payload);
  if (!doc) return error(errc::parse_error, "the gate's hello is not JSON: " + doc.err().message());
  if (!doc->IsObject()) return error(errc::parse_error, "the gate's hello is not a JSON object");
  json::reader r(*doc, "hello");
  std::int64_t version = 0, max_requests = 0, window = 0, max_payload = 0;
  r.required_in_range("v", version, 2, 2);
  r.required_in_range("max_requests", max_requests, 1, 1 << 20);
  r.required_in_range("window", window, 1, 1 << 30);
  r.required_in_range("max_payload", max_payload, 1024, max_frame_payload);
  if (auto st = r.finish(); !st) return error(errc::parse_error, st.err().message());
  hello h;
  h.version = static_cast<int>(version);
  h.max_requests = static_cast<std::uint32_t>(max_requests);
  h.window = static_cast<std::uint32_t>(window);
  h.max_payload = static_cast<std::uint32_t>(max_payload);
  return h;
}

status frame_reader::check(const frame_view& f) const {
  const auto bad = [&](std::string_view what) {
    return error(errc::parse_error, "frame " + std::to_string(static_cast<int>(f.kind)) + " of request " +
                                        std::to_string(f.id) + ": " + std::string(what));
  };
  const bool session_frame = f.kind == frame_kind::hello || f.kind == frame_kind::goaway;
  if (session_frame != (f.id == 0)) return bad(session_frame ? "must have id 0" : "must not have id 0");
  switch (f.kind) {
    case frame_kind::window:
      if (f.payload.size() != 4) return bad("a window frame holds 4 bytes");
      if (window_credit(f) == 0) return bad("a window frame grants no credit");
      break;
    case frame_kind::end:
      if (f.payload.size() != 1 || static_cast<unsigned char>(f.payload[0]) > 2) return bad("an end frame holds 0, 1 or 2");
      break;
    case frame_kind::cancel:
      if (!f.payload.empty()) return bad("a cancel frame is empty");
      break;
    case frame_kind::open:
      if (f.payload.empty()) return bad("an open frame is not empty");
      break;
    default: break;
  }
  return {};
}

status frame_reader::feed(std::string_view bytes, const std::function<status(const frame_view&)>& on_frame) {
  if (!broken_.empty()) return error(errc::parse_error, broken_);
  while (!bytes.empty() || buffer_.size() >= frame_head_bytes) {
    // Frames that arrive whole are read in place; only a frame cut by the feed is copied.
    std::string_view avail = bytes;
    if (!buffer_.empty()) {
      const std::size_t want_head = frame_head_bytes > buffer_.size() ? frame_head_bytes - buffer_.size() : 0;
      const std::size_t take_head = std::min(want_head, bytes.size());
      buffer_.append(bytes.substr(0, take_head));
      bytes.remove_prefix(take_head);
      if (buffer_.size() < frame_head_bytes) return {};
      const std::size_t total = frame_head_bytes + get_u32(std::string_view(buffer_).substr(5, 4));
      if (total - frame_head_bytes <= max_payload_) {
        const std::size_t take = std::min(total - buffer_.size(), bytes.size());
        buffer_.append(bytes.substr(0, take));
        bytes.remove_prefix(take);
        if (buffer_.size() < total) return {};
      }
      avail = buffer_;
    }
    if (avail.size() < frame_head_bytes) {
      buffer_.assign(avail);
      return {};
    }
    const auto kind = static_cast<std::uint8_t>(avail[0]);
    const std::uint32_t length = get_u32(avail.substr(5, 4));
    frame_view f{static_cast<frame_kind>(kind), get_u32(avail.substr(1, 4)), {}};
    status st;
    if (!known_kind(kind)) st = error(errc::parse_error, "frame of unknown kind " + std::to_string(kind));
    else if (length > max_payload_)
      st = error(errc::parse_error, "frame payload of " + std::to_string(length) + " bytes, above the limit of " +
                                        std::to_string(max_payload_));
    if (!st) {
      broken_ = st.err().message();
      buffer_.clear();
      return st;
    }
    if (avail.size() < frame_head_bytes + length) {
      buffer_.assign(avail);
      return {};
    }
    f.payload = avail.substr(frame_head_bytes, length);
    if (auto checked = check(f); !checked) {
      broken_ = checked.err().message();
      buffer_.clear();
      return checked;
    }
    const bool from_buffer = avail.data() == buffer_.data();
    status delivered = on_frame(f);
    if (from_buffer) buffer_.clear();
    else bytes.remove_prefix(frame_head_bytes + length);
    if (!delivered) return delivered;
  }
  return {};
}

}  // namespace chatai::proto
