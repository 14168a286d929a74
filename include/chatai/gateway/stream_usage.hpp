// Usage in a response on its way to the client: the token counts of a streamed or whole body,
// and the removal of the final usage chunk from a stream whose client did not ask for it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "chatai/gate/usage.hpp"

namespace chatai::gateway {

// Fed the body piece by piece (events may be split anywhere); returns what goes on to the
// client. For a stream with keep_usage_chunk false, an event whose data is a JSON object with
// "choices":[] and a "usage" object (the chunk stream_options.include_usage adds) is dropped;
// every other byte passes unchanged and complete events are never held back.
// Thread safety: not thread-safe; one per response.
class usage_filter {
 public:
  usage_filter(bool event_stream, bool keep_usage_chunk)
      : event_stream_(event_stream), keep_usage_chunk_(keep_usage_chunk), scanner_(event_stream) {}

  std::string feed(std::string_view bytes);
  // The end of the body: returns what was held back (an unterminated last event).
  std::string finish();

  std::optional<std::int64_t> prompt_tokens() const noexcept { return scanner_.prompt_tokens(); }
  std::optional<std::int64_t> completion_tokens() const noexcept { return scanner_.completion_tokens(); }

 private:
  bool event_stream_;
  bool keep_usage_chunk_;
  gate::usage_scanner scanner_;
  std::string pending_;  // the start of an event not yet complete
};

// True when one server-sent event (its lines, without the blank line that ends it) carries
// only usage: data that is a JSON object with an empty "choices" array and a "usage" object.
bool is_usage_only_event(std::string_view event);

}  // namespace chatai::gateway
