// The token counts of a response as the gate and the gateway both read them: the usage that
// every response carries (prepare_body makes streams report it) is found as the bytes stream
// past. Never any prompt or completion text.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace chatai::proto {

// Finds "usage":{"prompt_tokens":..,"completion_tokens":..} in a response body fed piece by
// piece: in each server-sent event of a stream, or in a JSON body. A JSON body of at most 1 MiB
// is parsed whole; of a longer one (a batch of embeddings) only the last 64 KiB are kept, and
// the object of the last "usage" key there is read: OpenAI-shaped answers end with their
// usage. Only the counts are kept, and only counts in [0, 2^40]: any other is taken for absent.
// Thread safety: not thread-safe; one per response.
class usage_scanner {
 public:
  explicit usage_scanner(bool event_stream) : event_stream_(event_stream) {}

  void feed(std::string_view bytes);
  // Scans what is left (a JSON body ends with the response).
  void finish();

  std::optional<std::int64_t> prompt_tokens() const noexcept { return prompt_tokens_; }
  std::optional<std::int64_t> completion_tokens() const noexcept { return completion_tokens_; }

 private:
  void scan_json(std::string_view text);
  void scan_tail();

  bool event_stream_;
  bool overflow_ = false;
  std::string pending_;
  std::string tail_;  // a long JSON body's last bytes
  std::optional<std::int64_t> prompt_tokens_;
  std::optional<std::int64_t> completion_tokens_;
};

}  // namespace chatai::proto
