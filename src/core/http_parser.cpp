// HTTP/1.1 message framing: request and response parsers over buffered bytes.
#include "chatai/core/http_parser.hpp"

#include <algorithm>
#include <cstring>
#include <limits>
#include <utility>

namespace chatai::http {

namespace {

// A chunk-size line with its extensions; longer ones are refused.
constexpr std::size_t max_chunk_line_bytes = 4096;
// Compaction of the request buffer waits until this much has been consumed.
constexpr std::size_t compact_threshold = 16 * 1024;

char lower(char c) noexcept { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool is_token_char(unsigned char c) noexcept {
  if (c >= '0' && c <= '9') return true;
  if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') return true;
  return std::strchr("!#$%&'*+-.^_`|~", c) != nullptr && c != 0;
}

bool is_token(std::string_view s) noexcept {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return is_token_char(static_cast<unsigned char>(c)); });
}

// Field values: visible ASCII, space, tab and obs-text; no other control characters.
bool is_field_value(std::string_view s) noexcept {
  return std::all_of(s.begin(), s.end(), [](char ch) {
    const auto c = static_cast<unsigned char>(ch);
    return c == '\t' || (c >= 0x20 && c != 0x7f);
  });
}

std::string_view trim(std::string_view s) noexcept {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Calls fn for each trimmed, non-empty element of a comma-separated list.
template <class Fn>
void for_each_element(std::string_view list, Fn&& fn) {
  while (true) {
    const auto comma = list.find(',');
    const auto element = trim(list.substr(0, comma));
    if (!element.empty()) fn(element);
    if (comma == std::string_view::npos) return;
    list.remove_prefix(comma + 1);
  }
}

// Strips the CR of a CRLF ending. False when a CR appears anywhere else in the line.
bool strip_line(std::string_view& line) noexcept {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  return line.find('\r') == std::string_view::npos;
}

// Parses "name: value" into `out`. Returns an error message, or nullptr when it is valid.
const char* parse_field(std::string_view line, headers* out) {
  if (line.front() == ' ' || line.front() == '\t') return "obsolete line folding in a header field";
  const auto colon = line.find(':');
  if (colon == std::string_view::npos) return "header field without a colon";
  const auto name = line.substr(0, colon);
  if (!is_token(name)) return "invalid header field name";
  const auto value = trim(line.substr(colon + 1));
  if (!is_field_value(value)) return "control character in a header field value";
  if (out) out->add(std::string(name), std::string(value));
  return nullptr;
}

// Parses a chunk-size line ("1a;name=value"). Returns an error message, or nullptr.
const char* parse_chunk_size(std::string_view line, std::uint64_t& size) {
  size = 0;
  std::size_t i = 0;
  for (; i < line.size(); ++i) {
    const char c = line[i];
    int digit;
    if (c >= '0' && c <= '9') digit = c - '0';
    else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f') digit = (c | 0x20) - 'a' + 10;
    else break;
    if (size > (std::numeric_limits<std::uint64_t>::max() >> 4)) return "chunk size too large";
    size = (size << 4) | static_cast<std::uint64_t>(digit);
  }
  if (i == 0) return "invalid chunk size";
  const auto rest = trim(line.substr(i));
  if (rest.empty()) return nullptr;
  if (rest.front() != ';' || !is_field_value(rest)) return "invalid chunk extension";
  return nullptr;
}

// The value of all Content-Length fields, which must agree. Values above `cap` come back as
// cap + 1.
enum class length_kind { absent, valid, invalid };
length_kind content_length(const headers& fields, std::uint64_t cap, std::uint64_t& out) {
  bool seen = false;
  bool invalid = false;
  std::uint64_t value = 0;
  for (const auto& f : fields) {
    if (!iequals(f.name, "content-length")) continue;
    if (trim(f.value).empty()) return length_kind::invalid;
    for_each_element(f.value, [&](std::string_view element) {
      std::uint64_t v = 0;
      for (const char c : element) {
        if (c < '0' || c > '9') {
          invalid = true;
          return;
        }
        v = std::min<std::uint64_t>(v * 10 + static_cast<std::uint64_t>(c - '0'), cap + 1);
      }
      if (seen && v != value) invalid = true;
      seen = true;
      value = v;
    });
  }
  if (invalid) return length_kind::invalid;
  out = value;
  return seen ? length_kind::valid : length_kind::absent;
}

// Transfer-Encoding: whether any is present and whether its last coding is "chunked".
struct transfer_coding {
  bool present = false;
  bool chunked_last = false;
  bool only_chunked = true;  // exactly one coding, "chunked"
};

transfer_coding transfer_encoding(const headers& fields) {
  transfer_coding tc;
  std::size_t count = 0;
  for (const auto& f : fields) {
    if (!iequals(f.name, "transfer-encoding")) continue;
    tc.present = true;
    for_each_element(f.value, [&](std::string_view element) {
      ++count;
      tc.chunked_last = iequals(element, "chunked");
    });
  }
  tc.only_chunked = count == 1 && tc.chunked_last;
  return tc;
}

}  // namespace

bool iequals(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (lower(a[i]) != lower(b[i])) return false;
  }
  return true;
}

void headers::add(std::string name, std::string value) { fields_.push_back({std::move(name), std::move(value)}); }

void headers::set(std::string_view name, std::string value) {
  std::erase_if(fields_, [&](const header& h) { return iequals(h.name, name); });
  fields_.push_back({std::string(name), std::move(value)});
}

const std::string* headers::find(std::string_view name) const {
  for (const auto& f : fields_) {
    if (iequals(f.name, name)) return &f.value;
  }
  return nullptr;
}

bool headers::has_token(std::string_view name, std::string_view token) const {
  bool found = false;
  for (const auto& f : fields_) {
    if (!iequals(f.name, name)) continue;
    for_each_element(f.value, [&](std::string_view element) { found = found || iequals(element, token); });
  }
  return found;
}

// ---------------------------------------------------------------------------------------------
// request_parser

request_parser::request_parser(parser_limits limits) : limits_(limits) {}

void request_parser::feed(std::string_view bytes) { buffer_.append(bytes); }

parse_state request_parser::fail(int status, std::string message) {
  failure_ = {status, std::move(message)};
  phase_ = phase::request_line;
  consumed_ = buffer_.size();
  return parse_state::failed;
}

void request_parser::compact() {
  if (consumed_ == buffer_.size()) {
    buffer_.clear();
    consumed_ = 0;
  } else if (consumed_ >= compact_threshold) {
    buffer_.erase(0, consumed_);
    consumed_ = 0;
  }
}

parse_state request_parser::parse(request& out) {
  if (failure_.status != 0) return parse_state::failed;
  while (true) {
    const std::size_t available = buffer_.size() - consumed_;
    if (phase_ == phase::body_length || phase_ == phase::chunk_data) {
      const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(remaining_, available));
      current_.body.append(buffer_, consumed_, n);
      consumed_ += n;
      remaining_ -= n;
      if (remaining_ > 0) {
        compact();
        return parse_state::need_more;
      }
      if (phase_ == phase::chunk_data) {
        phase_ = phase::chunk_data_end;
        continue;
      }
      finish_message(out);
      return parse_state::complete;
    }

    const bool in_head = phase_ == phase::request_line || phase_ == phase::fields || phase_ == phase::trailers;
    const auto newline = buffer_.find('\n', consumed_ + scanned_);
    if (newline == std::string::npos) {
      scanned_ = available;
      if (in_head && head_bytes_ + available > limits_.max_header_bytes) {
        return phase_ == phase::request_line ? fail(414, "request line too long")
                                             : fail(431, "request header fields too large");
      }
      if (!in_head && available > max_chunk_line_bytes) return fail(400, "chunk framing line too long");
      compact();
      return parse_state::need_more;
    }
    const std::size_t line_bytes = newline + 1 - consumed_;
    std::string_view line(buffer_.data() + consumed_, newline - consumed_);
    if (in_head) {
      head_bytes_ += line_bytes;
      if (head_bytes_ > limits_.max_header_bytes) {
        return phase_ == phase::request_line ? fail(414, "request line too long")
                                             : fail(431, "request header fields too large");
      }
    }
    consumed_ = newline + 1;
    scanned_ = 0;
    if (!strip_line(line)) return fail(400, "bare CR in the message head");
    const auto st = on_line(line, out);
    if (st != parse_state::need_more) {
      if (st == parse_state::complete) compact();
      return st;
    }
  }
}

parse_state request_parser::on_line(std::string_view line, request& out) {
  switch (phase_) {
    case phase::request_line: {
      if (line.empty()) return parse_state::need_more;  // RFC 9112 2.2: ignore blank lines first
      const auto sp1 = line.find(' ');
      const auto sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
      if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos) {
        return fail(400, "malformed request line");
      }
      const auto method = line.substr(0, sp1);
      const auto target = line.substr(sp1 + 1, sp2 - sp1 - 1);
      const auto version = line.substr(sp2 + 1);
      if (!is_token(method)) return fail(400, "invalid method");
      if (target.empty() || (target.front() != '/' && target != "*")) return fail(400, "invalid request target");
      for (const char ch : target) {
        const auto c = static_cast<unsigned char>(ch);
        if (c <= 0x20 || c >= 0x7f) return fail(400, "invalid character in the request target");
      }
      if (version.size() != 8 || version.substr(0, 5) != "HTTP/" || version[6] != '.' ||
          version[5] < '0' || version[5] > '9' || version[7] < '0' || version[7] > '9') {
        return fail(400, "malformed HTTP version");
      }
      if (version[5] != '1' || version[7] > '1') return fail(505, "only HTTP/1.0 and HTTP/1.1 are supported");
      current_.method.assign(method);
      current_.target.assign(target);
      const auto question = target.find('?');
      current_.path.assign(target.substr(0, question));
      current_.query.assign(question == std::string_view::npos ? std::string_view{} : target.substr(question + 1));
      current_.version_minor = version[7] - '0';
      phase_ = phase::fields;
      return parse_state::need_more;
    }
    case phase::fields:
      if (line.empty()) return start_body(out);
      if (const char* problem = parse_field(line, &current_.headers)) return fail(400, problem);
      return parse_state::need_more;
    case phase::trailers:
      if (line.empty()) {
        finish_message(out);
        return parse_state::complete;
      }
      if (const char* problem = parse_field(line, nullptr)) return fail(400, problem);
      return parse_state::need_more;
    case phase::chunk_size: {
      std::uint64_t size = 0;
      if (const char* problem = parse_chunk_size(line, size)) return fail(400, problem);
      if (size == 0) {
        phase_ = phase::trailers;
        return parse_state::need_more;
      }
      if (size > limits_.max_body_bytes - current_.body.size()) return fail(413, "request body too large");
      remaining_ = size;
      phase_ = phase::chunk_data;
      return parse_state::need_more;
    }
    case phase::chunk_data_end:
      if (!line.empty()) return fail(400, "chunk data longer than its size");
      phase_ = phase::chunk_size;
      return parse_state::need_more;
    case phase::body_length:
    case phase::chunk_data:
      break;
  }
  return fail(400, "unexpected parser state");
}

parse_state request_parser::start_body(request& out) {
  auto& req = current_;
  req.keep_alive = req.version_minor == 1 ? !req.headers.has_token("connection", "close")
                                          : req.headers.has_token("connection", "keep-alive");
  const auto te = transfer_encoding(req.headers);
  std::uint64_t length = 0;
  const auto cl = content_length(req.headers, limits_.max_body_bytes, length);
  if (te.present) {
    if (req.version_minor == 0) return fail(400, "Transfer-Encoding in an HTTP/1.0 request");
    if (cl != length_kind::absent) return fail(400, "both Content-Length and Transfer-Encoding");
    if (!te.chunked_last) return fail(501, "unsupported transfer coding");
    if (!te.only_chunked) return fail(501, "only the chunked transfer coding is supported");
    phase_ = phase::chunk_size;
    return parse_state::need_more;
  }
  if (cl == length_kind::invalid) return fail(400, "invalid or conflicting Content-Length");
  if (length > limits_.max_body_bytes) return fail(413, "request body too large");
  if (length == 0) {
    finish_message(out);
    return parse_state::complete;
  }
  req.body.reserve(static_cast<std::size_t>(length));
  remaining_ = length;
  phase_ = phase::body_length;
  return parse_state::need_more;
}

void request_parser::finish_message(request& out) {
  out = std::move(current_);
  current_ = request{};
  phase_ = phase::request_line;
  head_bytes_ = 0;
  remaining_ = 0;
}

// ---------------------------------------------------------------------------------------------
// response_parser

response_parser::response_parser(bool head_request, std::size_t max_header_bytes)
    : head_request_(head_request), max_header_bytes_(max_header_bytes) {}

parse_state response_parser::fail(std::string message) {
  error_ = std::move(message);
  phase_ = phase::failed;
  return parse_state::failed;
}

parse_state response_parser::feed(std::string_view bytes, const body_sink& sink) {
  std::size_t i = 0;
  while (true) {
    switch (phase_) {
      case phase::done:
        bytes_after_end_ = bytes_after_end_ || i < bytes.size();
        return parse_state::complete;
      case phase::failed: return parse_state::failed;
      case phase::body_length:
      case phase::chunk_data:
      case phase::body_until_close: {
        if (i == bytes.size()) return parse_state::need_more;
        std::size_t n = bytes.size() - i;
        if (phase_ != phase::body_until_close) n = static_cast<std::size_t>(std::min<std::uint64_t>(remaining_, n));
        if (!sink(bytes.substr(i, n))) {
          aborted_ = true;
          return fail("the body consumer stopped the transfer");
        }
        i += n;
        if (phase_ == phase::body_until_close) continue;
        remaining_ -= n;
        if (remaining_ == 0) phase_ = phase_ == phase::chunk_data ? phase::chunk_data_end : phase::done;
        continue;
      }
      default: break;
    }

    const bool in_head = phase_ == phase::status_line || phase_ == phase::fields || phase_ == phase::trailers;
    const std::size_t limit = in_head ? max_header_bytes_ : max_chunk_line_bytes;
    const auto newline = bytes.find('\n', i);
    const auto piece = bytes.substr(i, newline == std::string_view::npos ? std::string_view::npos : newline - i);
    if ((in_head ? head_bytes_ : 0) + buffer_.size() + piece.size() > limit) {
      return fail(in_head ? "response head too large" : "chunk framing line too long");
    }
    buffer_.append(piece);
    if (newline == std::string_view::npos) return parse_state::need_more;
    i = newline + 1;
    if (in_head) head_bytes_ += buffer_.size() + 1;
    std::string_view line(buffer_);
    if (!strip_line(line)) return fail("bare CR in the response");
    const auto st = on_line(line);
    buffer_.clear();
    if (st == parse_state::failed) return st;
  }
}

parse_state response_parser::finish_at_eof() {
  switch (phase_) {
    case phase::body_until_close:
      phase_ = phase::done;
      return parse_state::complete;
    case phase::done: return parse_state::complete;
    case phase::failed: return parse_state::failed;
    default: return fail(head_done_ ? "connection closed before the end of the body" : "connection closed before a response");
  }
}

parse_state response_parser::on_line(std::string_view line) {
  switch (phase_) {
    case phase::status_line: {
      if (line.empty()) return parse_state::need_more;
      // "HTTP/1.1 200 OK": the reason phrase may be empty or absent.
      if (line.size() < 12 || line.substr(0, 7) != "HTTP/1." || line[7] < '0' || line[7] > '9' || line[8] != ' ' ||
          (line.size() > 12 && line[12] != ' ')) {
        return fail("malformed status line");
      }
      int status = 0;
      for (std::size_t k = 9; k < 12; ++k) {
        if (line[k] < '0' || line[k] > '9') return fail("malformed status code");
        status = status * 10 + (line[k] - '0');
      }
      if (status < 100) return fail("malformed status code");
      head_ = response_head{};
      head_.version_minor = line[7] - '0';
      head_.status = status;
      head_.reason.assign(line.size() > 13 ? line.substr(13) : std::string_view{});
      phase_ = phase::fields;
      return parse_state::need_more;
    }
    case phase::fields:
      if (line.empty()) {
        if (head_.status < 200 && head_.status != 101) {
          phase_ = phase::status_line;
          head_bytes_ = 0;
          return parse_state::need_more;
        }
        head_done_ = true;
        return start_body();
      }
      if (const char* problem = parse_field(line, &head_.headers)) return fail(problem);
      return parse_state::need_more;
    case phase::trailers:
      if (line.empty()) {
        phase_ = phase::done;
        return parse_state::complete;
      }
      if (const char* problem = parse_field(line, nullptr)) return fail(problem);
      return parse_state::need_more;
    case phase::chunk_size: {
      std::uint64_t size = 0;
      if (const char* problem = parse_chunk_size(line, size)) return fail(problem);
      remaining_ = size;
      phase_ = size == 0 ? phase::trailers : phase::chunk_data;
      return parse_state::need_more;
    }
    case phase::chunk_data_end:
      if (!line.empty()) return fail("chunk data longer than its size");
      phase_ = phase::chunk_size;
      return parse_state::need_more;
    default: break;
  }
  return fail("unexpected parser state");
}

parse_state response_parser::start_body() {
  const int status = head_.status;
  if (head_request_ || status == 204 || status == 304 || status == 101) {
    phase_ = phase::done;
    return parse_state::complete;
  }
  const auto te = transfer_encoding(head_.headers);
  if (te.present) {
    phase_ = te.chunked_last ? phase::chunk_size : phase::body_until_close;
    return parse_state::need_more;
  }
  std::uint64_t length = 0;
  const auto cl = content_length(head_.headers, std::numeric_limits<std::uint64_t>::max() - 1, length);
  if (cl == length_kind::invalid) return fail("invalid or conflicting Content-Length");
  if (cl == length_kind::absent) {
    phase_ = phase::body_until_close;
    return parse_state::need_more;
  }
  if (length == 0) {
    phase_ = phase::done;
    return parse_state::complete;
  }
  remaining_ = length;
  phase_ = phase::body_length;
  return parse_state::need_more;
}

std::string_view reason_phrase(int status) noexcept {
  switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 499: return "Client Closed Request";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
  }
}

}  // namespace chatai::http
