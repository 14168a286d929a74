// libFuzzer target: the gate's strict request reader on arbitrary bytes (the header line, the
// body, the allowlists), the body rewrite for streams, and the usage scanner.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "chatai/gate/request.hpp"
#include "chatai/gate/usage.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const chatai::gate::gate_config config = [] {
    chatai::gate::gate_config c;
    c.max_body_bytes = 64 * 1024;
    return c;
  }();
  const std::string_view input(reinterpret_cast<const char*>(data), size);

  auto request = chatai::gate::parse_request(input, config);
  if (request) {
    // What passed must satisfy what the gate relies on later.
    if (static_cast<std::size_t>(request->head.body_length) != request->body.size()) std::abort();
    for (const char c : request->head.path + request->head.service + request->head.id)
      if (static_cast<unsigned char>(c) <= 0x20 || c == '@' || c == '?' || c == '\\') std::abort();
    auto prepared = chatai::gate::prepare_body(request->body);
    if (prepared && prepared->stream && prepared->body.find("include_usage") == std::string::npos) std::abort();
  }
  if (auto prepared = chatai::gate::prepare_body(input); prepared && !prepared->stream && prepared->body != input)
    std::abort();

  for (const bool event_stream : {true, false}) {
    chatai::gate::usage_scanner scanner(event_stream);
    scanner.feed(input.substr(0, size / 2));
    scanner.feed(input.substr(size / 2));
    scanner.finish();
  }
  return 0;
}
