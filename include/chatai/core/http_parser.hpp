// Incremental HTTP/1.1 parsers, free of I/O: requests for the server, responses for the client.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace chatai::http {

// One header field as received (name case preserved).
struct header {
  std::string name;
  std::string value;
};

// An ordered list of header fields with case-insensitive lookup.
// Thread safety: a value type.
class headers {
 public:
  void add(std::string name, std::string value);
  // Replaces every field named `name` by one with `value`.
  void set(std::string_view name, std::string value);
  // The first field's value, or nullptr when absent.
  const std::string* find(std::string_view name) const;
  // True when the comma-separated list in any `name` field holds `token` (case-insensitive).
  bool has_token(std::string_view name, std::string_view token) const;

  std::size_t size() const noexcept { return fields_.size(); }
  bool empty() const noexcept { return fields_.empty(); }
  auto begin() const noexcept { return fields_.begin(); }
  auto end() const noexcept { return fields_.end(); }
  void clear() noexcept { fields_.clear(); }

 private:
  std::vector<header> fields_;
};

// ASCII case-insensitive equality, as header names and tokens compare.
bool iequals(std::string_view a, std::string_view b) noexcept;

// One parsed request; the body is complete and already de-chunked. Trailer fields of chunked
// bodies are checked for syntax and dropped.
struct request {
  std::string method;
  std::string target;  // as sent: path and query
  std::string path;    // target up to '?'
  std::string query;   // after '?', without it
  int version_minor = 1;  // HTTP/1.x
  http::headers headers;
  std::string body;
  bool keep_alive = true;  // HTTP/1.1 unless "Connection: close"; HTTP/1.0 only with "keep-alive"
  std::string remote_address;  // the peer's address literal (set by the server, not the parser)
};

struct parser_limits {
  std::size_t max_header_bytes = 16 * 1024;     // request line and all fields (also trailers)
  std::size_t max_body_bytes = 8 * 1024 * 1024;  // de-chunked body
};

enum class parse_state {
  need_more,  // all buffered bytes consumed; feed more
  complete,   // one message is ready
  failed,     // the input is not acceptable; see failure()
};

// Why a request was refused, as the HTTP status the server answers with (400, 413, 414, 431,
// 501, 505) and a short message for the error body.
struct parse_failure {
  int status = 0;
  std::string message;
};

// Parses requests from a byte stream, one after another (pipelining): bytes after a complete
// request stay buffered for the next call. Lines may end in CRLF or in a bare LF: RFC 9112
// section 2.2 lets a recipient accept a bare LF, and as an origin server that never forwards
// the framing it reads, chatai cannot be desynchronised from a proxy by doing so. A CR not
// followed by LF, obsolete line folding, whitespace before a field's colon, control characters,
// Content-Length together with Transfer-Encoding, and differing Content-Length values are
// refused with 400.
// Thread safety: not thread-safe; one parser per connection.
class request_parser {
 public:
  explicit request_parser(parser_limits limits = {});

  // Appends received bytes.
  void feed(std::string_view bytes);

  // Parses as far as the buffered bytes go. On `complete`, `out` receives the request and the
  // parser is ready for the next one. After `failed`, the parser stays failed.
  parse_state parse(request& out);

  const parse_failure& failure() const noexcept { return failure_; }
  // Bytes fed and not yet consumed by a complete request.
  std::size_t buffered() const noexcept { return buffer_.size() - consumed_; }

 private:
  enum class phase { request_line, fields, body_length, chunk_size, chunk_data, chunk_data_end, trailers };

  parse_state fail(int status, std::string message);
  parse_state on_line(std::string_view line, request& out);
  parse_state start_body(request& out);
  void finish_message(request& out);
  void compact();

  parser_limits limits_;
  std::string buffer_;
  std::size_t consumed_ = 0;  // bytes of buffer_ already parsed
  std::size_t scanned_ = 0;   // bytes after consumed_ known to hold no line end
  phase phase_ = phase::request_line;
  request current_;
  std::size_t head_bytes_ = 0;
  std::uint64_t remaining_ = 0;  // body or chunk bytes still to read
  parse_failure failure_;
};

// The status line and fields of a response.
struct response_head {
  int version_minor = 1;
  int status = 0;
  std::string reason;
  http::headers headers;
};

// Parses one response, delivering body bytes as they arrive. Interim 1xx responses (other than
// 101) are skipped. Bodies are framed by Content-Length, chunked encoding, or the end of the
// connection (finish_at_eof()); responses to HEAD, 204 and 304 have none.
// Thread safety: not thread-safe.
class response_parser {
 public:
  using body_sink = std::function<bool(std::string_view)>;

  explicit response_parser(bool head_request = false, std::size_t max_header_bytes = 64 * 1024);

  // Consumes `bytes`. Body bytes go to `sink`; when it returns false, feed() stops and
  // returns `failed` with aborted() true.
  parse_state feed(std::string_view bytes, const body_sink& sink);
  // The peer closed the connection: completes a read-until-close body, fails otherwise.
  parse_state finish_at_eof();

  bool head_complete() const noexcept { return head_done_; }
  const response_head& head() const noexcept { return head_; }
  bool aborted() const noexcept { return aborted_; }
  const std::string& error_message() const noexcept { return error_; }
  // Whether bytes came after the end of the response (the server sent more than it was asked
  // for); they are dropped.
  bool bytes_after_end() const noexcept { return bytes_after_end_; }

 private:
  enum class phase { status_line, fields, body_length, body_until_close, chunk_size, chunk_data, chunk_data_end,
                     trailers, done, failed };

  parse_state fail(std::string message);
  parse_state on_line(std::string_view line);
  parse_state start_body();

  bool head_request_;
  std::size_t max_header_bytes_;
  std::string buffer_;  // an incomplete line
  phase phase_ = phase::status_line;
  response_head head_;
  bool head_done_ = false;
  bool aborted_ = false;
  bool bytes_after_end_ = false;
  std::size_t head_bytes_ = 0;
  std::uint64_t remaining_ = 0;
  std::string error_;
};

// The standard reason phrase for a status code ("Not Found"), or "Unknown".
std::string_view reason_phrase(int status) noexcept;

}  // namespace chatai::http
