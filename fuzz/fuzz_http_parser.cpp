// libFuzzer target: the HTTP request and response parsers on arbitrary bytes, whole and split.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "chatai/core/http_parser.hpp"

namespace {

struct outcome {
  std::vector<std::string> requests;  // method, target and body of each complete request
  int failure_status = 0;
};

// Parses `data` fed in pieces of `step` bytes (0: all at once).
outcome parse_requests(std::string_view data, std::size_t step) {
  chatai::http::request_parser parser({.max_header_bytes = 2048, .max_body_bytes = 4096});
  outcome result;
  std::size_t offset = 0;
  do {
    const std::size_t n = step == 0 ? data.size() : std::min(step, data.size() - offset);
    parser.feed(data.substr(offset, n));
    offset += n;
    chatai::http::request req;
    chatai::http::parse_state st;
    while ((st = parser.parse(req)) == chatai::http::parse_state::complete) {
      result.requests.push_back(req.method + ' ' + req.target + ' ' + std::to_string(req.keep_alive) + ' ' + req.body);
    }
    if (st == chatai::http::parse_state::failed) {
      result.failure_status = parser.failure().status;
      return result;
    }
  } while (offset < data.size());
  return result;
}

std::string parse_response(std::string_view data, std::size_t step) {
  chatai::http::response_parser parser(false, 2048);
  std::string body;
  const auto sink = [&](std::string_view bytes) {
    body.append(bytes);
    return true;
  };
  std::size_t offset = 0;
  chatai::http::parse_state st = chatai::http::parse_state::need_more;
  while (offset < data.size() && st == chatai::http::parse_state::need_more) {
    const std::size_t n = step == 0 ? data.size() : std::min(step, data.size() - offset);
    st = parser.feed(data.substr(offset, n), sink);
    offset += n;
  }
  if (st == chatai::http::parse_state::need_more) st = parser.finish_at_eof();
  return std::to_string(static_cast<int>(st)) + ' ' + std::to_string(parser.head().status) + ' ' + body;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  // The first byte picks the piece size of the split run; the rest is the stream.
  const std::size_t step = 1 + data[0] % 17;
  const std::string_view input(reinterpret_cast<const char*>(data) + 1, size - 1);

  // Splitting the input must never change what the parsers make of it.
  const auto whole = parse_requests(input, 0);
  const auto split = parse_requests(input, step);
  if (whole.requests != split.requests || whole.failure_status != split.failure_status) __builtin_trap();
  if (parse_response(input, 0) != parse_response(input, step)) __builtin_trap();
  return 0;
}
