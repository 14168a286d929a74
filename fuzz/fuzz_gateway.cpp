// libFuzzer target: what the gateway reads from the cluster on arbitrary bytes: a response body
// through the usage filter (split at two points), the gate's status document, and its config.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "chatai/gateway/config.hpp"
#include "chatai/gateway/models.hpp"
#include "chatai/gateway/stream_usage.hpp"

namespace {

std::string filter(std::string_view input, bool event_stream, bool keep, std::size_t a, std::size_t b) {
  chatai::gateway::usage_filter f(event_stream, keep);
  std::string out = f.feed(input.substr(0, a));
  out += f.feed(input.substr(a, b - a));
  out += f.feed(input.substr(b));
  out += f.finish();
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const std::size_t a = size == 0 ? 0 : data[0] % (size + 1);
  const std::size_t b = a + (size - a) / 2;

  // Nothing is changed unless a usage chunk is dropped, and where the stream is split never matters.
  if (filter(input, true, true, a, b) != input || filter(input, false, false, a, b) != input) std::abort();
  const std::string stripped = filter(input, true, false, a, b);
  if (stripped.size() > input.size() || stripped != filter(input, true, false, size / 3, size / 2)) std::abort();

  (void)chatai::gateway::models_from_status(input);
  (void)chatai::gateway::parse_config(input, "fuzz");
  return 0;
}
